"""``dnsdisc serve``: its flags, made from the config schema (name, metavar, choices, help), and
running the server with the config they and the file make. The server (aiohttp, the event loop)
is imported only once that config is built, so that --help does not load it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dnsdisc import logs
from dnsdisc.config.load import Config, build, default_of
from dnsdisc.config.schema import FLAGS, Flag, Key
from dnsdisc.errors import ConfigError, StoreError

_Subparsers = argparse._SubParsersAction  # argparse names this type only privately


def add_parser(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("serve", help="run the DNS responder and the HTTP side-port")
    add_config_arguments(s)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config and the flags made from the config schema (``serve``'s, and the commands that
    read the server's config: ``dnssec ds``)."""
    p.add_argument("--config", type=Path, help="YAML config file (see examples/dnsdisc.yaml)")
    for key, flag in FLAGS:
        if flag.switch:
            p.add_argument(flag.name, action="store_true", help=_help(key, flag))
        else:
            p.add_argument(
                flag.name, metavar=flag.metavar, choices=flag.choices, help=_help(key, flag)
            )


def _help(key: Key, flag: Flag) -> str:
    if "{default}" not in flag.help:
        return flag.help
    default = default_of(key)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
    return flag.help.format(default=shown)


def run(args: argparse.Namespace) -> int:
    flags = {flag.dest: getattr(args, flag.dest) for _, flag in FLAGS}

    def load() -> Config:
        # The file is read again on every reload; the flags apply on top each time.
        return build(args.config, **flags)

    try:
        config = load()
    except ConfigError as exc:
        return _failed(f"config error: {exc}", exc.exit_status)
    logs.setup(config.log_level, config.log_format)
    from dnsdisc.server import app  # imported late: aiohttp and the loop are not needed for --help

    try:
        app.run(config, load)
    except ConfigError as exc:
        return _failed(f"config error: {exc}", exc.exit_status)
    except StoreError as exc:
        return _failed(f"store error: {exc}", exc.exit_status)
    except OSError as exc:
        return _failed(f"cannot start: {exc}", 1)
    except KeyboardInterrupt:
        return 130
    return 0


def _failed(message: str, status: int) -> int:
    print(f"dnsdisc: {message}", file=sys.stderr)
    return status
