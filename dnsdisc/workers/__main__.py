"""Start one DNS worker: ``python -m dnsdisc.workers FEED_FD FENCE_FD|- asyncio|uvloop [N]``.

Only the main process starts it (``supervisor``), passing it the worker's end of the feed socket,
the fence's memfd ("-": none), the event loop to run and the worker's number N (its name in NSID
replies is ``wN``, as its log lines call it "DNS worker N"); the worker itself is ``replica``.
"""

from __future__ import annotations

import asyncio
import sys

from dnsdisc.dnsserver import nsid
from dnsdisc.workers.replica import serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if (
        len(args) not in (3, 4)
        or (len(args) == 4 and not args[3].isdigit())
        or not args[0].isdigit()
        or not (args[1].isdigit() or args[1] == "-")
        or args[2] not in ("asyncio", "uvloop")
    ):
        raise SystemExit(
            "usage: python -m dnsdisc.workers FEED_FD FENCE_FD|- asyncio|uvloop [N] "
            "(started by dnsdisc)"
        )
    fd, fence = int(args[0]), int(args[1]) if args[1] != "-" else None
    if len(args) == 4:
        # Before the DNS face is built (``serve``): its NSID says which process answered.
        nsid.name_process(f"w{int(args[3])}")
    if args[2] == "uvloop":
        import uvloop

        uvloop.run(serve(fd, fence))
    else:
        asyncio.run(serve(fd, fence))


if __name__ == "__main__":
    main()
