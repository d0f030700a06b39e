"""``dnsdisc dnssec ds``: the DS records the parent zones should hold for our zones' KSKs, one
per line in zone-file form. It reads the same config (file and flags) as ``serve`` and the keys
``serve`` keeps in the data directory; with no keys there yet it makes them, as the server's
first start would, so that the parent can be told before the first start."""

from __future__ import annotations

import argparse
import sys

from dnsdisc.cli.serve import _failed, add_config_arguments
from dnsdisc.config.load import build
from dnsdisc.config.schema import FLAGS
from dnsdisc.errors import ConfigError

_Subparsers = argparse._SubParsersAction  # argparse names this type only privately


def add_parser(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dnssec", help="DNSSEC keys: the DS records for the parent zones")
    actions = d.add_subparsers(dest="dnssec_command", required=True)
    ds = actions.add_parser("ds", help="print the DS records of every zone, for their parents")
    add_config_arguments(ds)


def run(args: argparse.Namespace) -> int:
    flags = {flag.dest: getattr(args, flag.dest) for _, flag in FLAGS}
    from dnsdisc.dnsserver import wire
    from dnsdisc.dnsserver.dnssec import Signer
    from dnsdisc.server import dnssec
    from dnsdisc.server.parts import build_index, load_zones

    try:
        config = build(args.config, **flags)
        keys = dnssec.keys_for(config.data_dir, config.dnssec_algorithm)
        index = build_index(config, load_zones(config))
    except ConfigError as exc:
        return _failed(f"config error: {exc}", exc.exit_status)
    except OSError as exc:
        return _failed(f"cannot read or write the keys: {exc}", 1)
    signer = Signer(keys)
    for apex in index.zones:
        for line in signer.ds_texts(wire.wire_to_text(apex)):
            print(line)
    if not config.dnssec_enabled:
        print("dnsdisc: note: dnssec.enabled is off: answers are not signed", file=sys.stderr)
    return 0
