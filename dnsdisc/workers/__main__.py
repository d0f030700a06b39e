"""Start one DNS worker: ``python -m dnsdisc.workers FEED_FD FENCE_FD|- asyncio|uvloop``.

Only the main process starts it (``supervisor``), passing it the worker's end of the feed socket,
the fence's memfd ("-": none) and the event loop to run; the worker itself is ``replica``.
"""

from __future__ import annotations

import asyncio
import sys

from dnsdisc.workers.replica import serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if (
        len(args) != 3
        or not args[0].isdigit()
        or not (args[1].isdigit() or args[1] == "-")
        or args[2] not in ("asyncio", "uvloop")
    ):
        raise SystemExit(
            "usage: python -m dnsdisc.workers FEED_FD FENCE_FD|- asyncio|uvloop "
            "(started by dnsdisc)"
        )
    fd, fence = int(args[0]), int(args[1]) if args[1] != "-" else None
    if args[2] == "uvloop":
        import uvloop

        uvloop.run(serve(fd, fence))
    else:
        asyncio.run(serve(fd, fence))


if __name__ == "__main__":
    main()
