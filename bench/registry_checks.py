"""In-process cost of the registry's write checks and the PTR rule (issue #16 items 12, 16, 17):
the limits check of one write into a 10,000-instance service with 32 tags, the address check,
and the PTR decision over 100k addresses. Best of several runs; prints microseconds/milliseconds.

    .venv/bin/python bench/registry_checks.py
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import serves_ptr
from dnsdisc.registry.limits import Limits, check_instance, tag_counts
from dnsdisc.registry.model import Instance
from dnsdisc.values import endpoint_address, ip_address

N = 10_000


def best(fn: Callable[[], object], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = random.Random(1)
    tags = [f"t{i}" for i in range(32)]
    held = [
        Instance("web", f"i{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 80,
                 tags=(tags[i % 32],))
        for i in range(N)
    ]  # fmt: skip
    limits = Limits()
    counts = tag_counts(held)  # the registry keeps these per service as instances come and go
    old = held[5]
    same = Instance("web", "i5", old.address, 81, tags=old.tags)
    newtag = Instance("web", "i5", old.address, 81, tags=(*old.tags, "t7"))
    fresh = Instance("web", "new", "10.99.9.9", 80, tags=("t1",))

    def total() -> int:
        return N

    per = best(lambda: [check_instance(limits, same, counts, N, old, total) for _ in range(1000)])
    print(f"limits, re-registration with the same tags: {per * 1e3:.1f} us")
    one = best(lambda: check_instance(limits, newtag, counts, N, old, total))
    print(f"limits, re-registration bringing a tag ({N:,} instances): {one * 1e3:.2f} ms")
    one = best(lambda: check_instance(limits, fresh, counts, N, None, total))
    print(f"limits, new instance with a tag ({N:,} instances): {one * 1e3:.2f} ms")

    public = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        for _ in range(100_000)
    ]
    private = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
               for _ in range(100_000)]  # fmt: skip
    zones = {wire.text_to_wire("svc.internal.")}
    for label, addrs in (("random IPv4", public), ("10/8", private)):
        revs = [wire.reverse_pointer(a) for a in addrs]
        pairs = list(zip(addrs, revs, strict=True))
        took = best(lambda p=pairs: [serves_ptr(x, y, zones) for x, y in p], 3)
        print(f"serves_ptr over 100k {label}: {took * 1e3:.0f} ms")
    took_new = best(lambda: [endpoint_address(a) for a in public], 3)
    took_old = best(lambda: [ip_address(a) for a in public], 3)
    print(
        f"endpoint_address / ip_address over 100k IPv4: {took_new * 1e3:.0f} / "
        f"{took_old * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
