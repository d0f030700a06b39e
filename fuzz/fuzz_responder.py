"""Coverage-guided fuzzing of the DNS responder with atheris (libFuzzer for Python).

The target is ``Responder.respond(data, tcp)``, the function every UDP datagram and every TCP
frame goes through. It must never raise, must never count an internal error (``errors`` goes up
when it had to catch an exception: that is a bug even though the packet gets SERVFAIL), and
whatever it sends back must be a DNS message that fits the transport.

Input layout: the first byte selects the mode (bit 0: TCP, bit 1: the responder with
``forwarding=True``); the rest is the packet.

    .venv/bin/python fuzz/fuzz_responder.py fuzz/corpus -max_total_time=600

seeds ``fuzz/corpus`` (any named corpus directory that is missing or empty) with valid queries
first; ``--make-corpus DIR`` only writes the seeds. See docs/fuzzing.md.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import atheris
import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
import dns.reversename

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# dnsdisc is imported under instrumentation so libFuzzer sees its branch coverage.
with atheris.instrument_imports(include=["dnsdisc"]):
    from dnsdisc.config import zones
    from dnsdisc.config.load import Config
    from dnsdisc.dnsserver.answer import FORWARD, Responder
    from dnsdisc.health.monitor import HealthMonitor
    from dnsdisc.registry.model import Instance, ServiceSettings
    from dnsdisc.registry.registry import Registry
    from dnsdisc.server.parts import attach, build_index

DOMAIN = "svc.internal."
UDP_LEGACY = 512
EDNS_MAX = 1232


def build_responders() -> tuple[Responder, Responder]:
    """An index holding the repo's zones and a handful of services: IPv4 and IPv6, tags, meta,
    drained instances, several policies, and one service big enough to truncate over UDP."""
    config = Config(reverse_zones=("10.in-addr.arpa.",))
    zone_data = zones.load_dir(ROOT / "zones", config.domain, config.defaults)
    index = build_index(config, zone_data)
    registry = Registry(defaults=config.defaults, reserved={"ns"})
    # attach keeps ``target.index`` current (a reload may swap it); here it never changes.
    attach(registry, SimpleNamespace(index=index), HealthMonitor(registry, config.health))
    for svc_settings, instances in zone_data.services:
        registry.add_static(svc_settings, instances)

    async def fill() -> None:
        async def add(service: str, iid: str, **body: object) -> None:
            await registry.put_instance(Instance.from_json(service, iid, body))

        await add(
            "web", "web-1", address="10.0.0.1", port=8080, tags=["blue"],
            meta={"version": "1.2", "team": "a b"},
        )  # fmt: skip
        await add("web", "web-2", address="10.0.0.2", port=8080, weight=50, tags=["green"])
        await add("web", "web-6", address="2001:db8::6", port=8081, protocol="udp", tags=["blue"])
        await add("web", "web-0", address="10.0.0.9", port=8080, weight=0)
        await add("api", "api-1", address="10.1.0.1", port=443, priority=0, tags=["primary"])
        await add("api", "api-2", address="fd00::2", port=443, priority=10, tags=["replica"])
        await registry.put_service(ServiceSettings.from_json("api", {"policy": "priority"}))
        for i in range(60):
            await add("big", f"b-{i}", address=f"10.2.{i // 250}.{i % 250 + 1}", port=1000 + i)
        await registry.put_service(
            ServiceSettings.from_json("big", {"policy": "round_robin", "meta": {"k": "v" * 200}})
        )
        await add("lonely", "l-1", address="10.3.0.1", port=1, weight=0)

    asyncio.run(fill())
    return Responder(index, random.Random(7)), Responder(index, random.Random(7), forwarding=True)


PLAIN, FORWARDING = build_responders()


def check(data: bytes, tcp: bool, responder: Responder) -> None:
    before = responder.errors
    reply = responder.respond(data, tcp)
    if responder.errors != before:
        raise AssertionError(f"responder caught an internal error ({responder.errors} so far)")
    if reply is None or reply is FORWARD:
        return
    assert isinstance(reply, bytes), type(reply)
    assert len(reply) >= 12, reply
    # Never longer than a TCP frame can say (transport packs the length in two bytes), and over
    # UDP never beyond our EDNS size, or 512 when the reply (so the query) has no OPT record.
    assert len(reply) <= 65535, len(reply)
    qid, flags = struct.unpack_from("!HH", reply)
    assert qid == struct.unpack_from("!H", data)[0], "reply id differs from the query's"
    assert flags & 0x8000, "reply without QR"
    header_only = len(reply) == 12
    msg = dns.message.from_wire(reply, question_only=header_only)
    if not tcp:
        limit = EDNS_MAX if msg.edns >= 0 else UDP_LEGACY
        assert len(reply) <= limit, (len(reply), limit)
    if not header_only and struct.unpack_from("!H", reply, 4)[0] == 1:
        # The question goes back exactly as the client sent it (it is never compressed).
        end = 12
        while reply[end] != 0:
            end += reply[end] + 1
        end += 5
        assert reply[12:end] == data[12:end], "question not copied byte for byte"


def TestOneInput(data: bytes) -> None:
    if len(data) < 1:
        return
    mode = data[0]
    check(data[1:], bool(mode & 1), FORWARDING if mode & 2 else PLAIN)


# -- seed corpus --------------------------------------------------------------------------------

SEED_NAMES = [
    "web.svc.internal.",
    "WeB.Svc.Internal.",
    "web-1.web.svc.internal.",
    "blue.web.svc.internal.",
    "_web._tcp.svc.internal.",
    "_web._udp.svc.internal.",
    "_web._blue.svc.internal.",
    "api.svc.internal.",
    "big.svc.internal.",
    "lonely.svc.internal.",
    "www.svc.internal.",
    "postgres.svc.internal.",
    "_ldap._tcp.svc.internal.",
    "svc.internal.",
    "ns.svc.internal.",
    "_tcp.svc.internal.",
    "missing.svc.internal.",
    "billing.partners.internal.",
    "partners.internal.",
    "nope.partners.internal.",
    "example.com.",
]
SEED_TYPES = ["A", "AAAA", "SRV", "TXT", "PTR", "SOA", "NS", "MX", "CNAME", "ANY"]


def seeds() -> list[bytes]:
    out: list[bytes] = []
    rng = random.Random(1)
    for i, name in enumerate(SEED_NAMES):
        for j, rdtype in enumerate(SEED_TYPES):
            edns = (i + j) % 3  # none, EDNS 0, EDNS 0 with DO and a small payload
            q = dns.message.make_query(
                name,
                rdtype,
                use_edns=0 if edns else -1,
                payload=512 if edns == 2 else 1232,
                want_dnssec=edns == 2,
            )
            q.id = rng.randrange(65536)
            out.append(bytes([(i + j) % 4]) + q.to_wire())
    for address in ("10.0.0.1", "2001:db8::6", "10.9.9.9", "192.0.2.1"):
        q = dns.message.make_query(dns.reversename.from_address(address), "PTR", use_edns=0)
        out.append(b"\x00" + q.to_wire())
    # A few unusual but well-formed ones: EDNS version 1, class CH, NOTIFY, a response.
    q = dns.message.make_query("web.svc.internal.", "A", use_edns=1)
    out.append(b"\x00" + q.to_wire())
    q = dns.message.make_query("version.bind.", "TXT", rdclass="CH")
    out.append(b"\x00" + q.to_wire())
    q = dns.message.make_query("web.svc.internal.", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    out.append(b"\x00" + q.to_wire())
    r = dns.message.make_response(dns.message.make_query("web.svc.internal.", "A"))
    r.flags |= dns.flags.AA
    out.append(b"\x01" + r.to_wire())
    return out


def write_seeds(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    items = seeds()
    for n, item in enumerate(items):
        (directory / f"seed-{n:03d}").write_bytes(item)
    return len(items)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--make-corpus"]:
        target = Path(args[1] if len(args) > 1 else ROOT / "fuzz" / "corpus")
        print(f"wrote {write_seeds(target)} seeds to {target}")
        return
    for arg in args:
        if arg.startswith("-artifact_prefix=") and arg.endswith("/"):
            Path(arg.partition("=")[2]).mkdir(parents=True, exist_ok=True)
        # Corpus directories are the positional arguments; seed the missing or empty ones.
        if not arg.startswith("-"):
            path = Path(arg)
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                write_seeds(path)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
