"""Command line: argv -> config -> app. The only place that exits the process (``main``'s
return value is the exit status; argparse exits on usage errors, with status 2).

``serve`` (serve.py) runs the server, its flags made from the config schema; the other commands
(commands.py) are clients of a running server over its HTTP API.
"""

from __future__ import annotations

import argparse

from dnsdisc import __version__
from dnsdisc.cli import commands, dnssec, serve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsdisc", description="An authoritative DNS server for service discovery."
    )
    p.add_argument("--version", action="version", version=f"dnsdisc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    dnssec.add_parser(sub)
    commands.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve.run(args)
    if args.command == "dnssec":
        return dnssec.run(args)
    return commands.run(args)
