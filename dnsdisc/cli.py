"""Command line: argv -> config -> app. The only place that exits the process."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dnsdisc import __version__
from dnsdisc.config import DEFAULT_DNS, DEFAULT_DOMAIN, DEFAULT_HTTP, LOG_LEVELS, build
from dnsdisc.errors import ConfigError, StoreError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsdisc", description="An authoritative DNS server for service discovery."
    )
    p.add_argument("--version", action="version", version=f"dnsdisc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the DNS responder and the HTTP side-port")
    s.add_argument("--config", type=Path, help="YAML config file (see examples/dnsdisc.yaml)")
    s.add_argument(
        "--dns",
        metavar="HOST:PORT",
        help=f"DNS listen address, UDP and TCP (default {DEFAULT_DNS})",
    )
    s.add_argument(
        "--http", metavar="HOST:PORT", help=f"HTTP API listen address (default {DEFAULT_HTTP})"
    )
    s.add_argument(
        "--domain",
        metavar="NAME",
        help=f"the domain services live under (default {DEFAULT_DOMAIN})",
    )
    s.add_argument(
        "--data-dir", metavar="DIR", help="where the SQLite registry lives (default ./dnsdisc-data)"
    )
    s.add_argument(
        "--zones", metavar="DIR", help="directory of zone files (default ./zones, if present)"
    )
    s.add_argument(
        "--storage", choices=("sqlite", "memory"), help="sqlite (durable, default) or memory"
    )
    s.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = build(
            args.config,
            dns=args.dns,
            http=args.http,
            domain=args.domain,
            data_dir=args.data_dir,
            zones=args.zones,
            log_level=args.log_level,
            storage=args.storage,
        )
    except ConfigError as exc:
        print(f"dnsdisc: config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from dnsdisc import app  # imported late: aiohttp and the loop are not needed for --help

    try:
        app.run(config)
    except ConfigError as exc:
        print(f"dnsdisc: config error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"dnsdisc: store error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dnsdisc: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
