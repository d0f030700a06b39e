"""``dnsdisc dnssec``: the zone keys.

- ``ds``: the DS records the parent zones should hold for our zones' KSKs, one per line in
  zone-file form. It reads the same config (file and flags) as ``serve`` and the keys ``serve``
  keeps (in the data directory, or in etcd); with no keys there yet it makes them, as the
  server's first start would, so that the parent can be told before the first start.
- ``keys``: each key's role, tag, state and timeline, from a running server
  (``GET /v1/dnssec``).
- ``rollover``: start a ZSK rollover on a running server (``POST /v1/dnssec/rollover``, the
  operator right); its steps then follow by themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dnsdisc.cli import commands
from dnsdisc.cli.serve import _failed, add_config_arguments
from dnsdisc.config.load import build
from dnsdisc.config.schema import FLAGS
from dnsdisc.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from dnsdisc.client import Client

_Subparsers = argparse._SubParsersAction  # argparse names this type only privately


def add_parser(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "dnssec", help="DNSSEC keys: DS records for the parent zones, key states, rollover"
    )
    actions = d.add_subparsers(dest="dnssec_command", required=True)
    ds = actions.add_parser("ds", help="print the DS records of every zone, for their parents")
    add_config_arguments(ds)
    common, as_json = commands.client_options()
    keys = actions.add_parser(
        "keys", parents=[common, as_json], help="each key's state and timeline (running server)"
    )
    keys.set_defaults(run=_keys)
    roll = actions.add_parser(
        "rollover",
        parents=[common, as_json],
        help="start a ZSK rollover on the running server (pre-publish; operator right)",
    )
    roll.set_defaults(run=_rollover)


def run(args: argparse.Namespace) -> int:
    if args.dnssec_command != "ds":
        return commands.run(args)
    flags = {flag.dest: getattr(args, flag.dest) for _, flag in FLAGS}
    from dnsdisc.dnsserver import wire
    from dnsdisc.dnsserver.dnssec import Signer
    from dnsdisc.server import dnssec
    from dnsdisc.server.parts import build_index, load_zones

    try:
        config = build(args.config, **flags)
        keys = dnssec.keys_for(config)
        index = build_index(config, load_zones(config))
    except ConfigError as exc:
        return _failed(f"config error: {exc}", exc.exit_status)
    except OSError as exc:
        return _failed(f"cannot read or write the keys: {exc}", 1)
    except StoreError as exc:
        return _failed(f"cannot read or write the keys: {exc}", 1)
    signer = Signer(keys)
    for apex in index.zones:
        for line in signer.ds_texts(wire.wire_to_text(apex)):
            print(line)
    if not config.dnssec_enabled:
        print("dnsdisc: note: dnssec.enabled is off: answers are not signed", file=sys.stderr)
    return 0


def keys_table(state: dict[str, Any]) -> str:
    if not state.get("enabled"):
        return "DNSSEC is off (dnssec.enabled)"
    rows = [
        (k["role"], k["tag"], k["algorithm"], k["state"], k["publish"], k["activate"] or "-",
         k["inactive"] or "-", k["delete"] or "-")
        for k in state["keys"]
    ]  # fmt: skip
    header = ("ROLE", "TAG", "ALGORITHM", "STATE", "PUBLISH", "ACTIVATE", "INACTIVE", "DELETE")
    table = commands.format_table(header, rows)
    rollover = state["rollover"]
    if rollover["under_way"]:
        table += f"\nrollover under way: next step at {rollover['next_step']}"
    return table


def _keys(client: Client, args: argparse.Namespace) -> str:
    state = client.request("GET", "/v1/dnssec")
    return json.dumps(state, indent=2) if args.json else keys_table(state)


def _rollover(client: Client, args: argparse.Namespace) -> str:
    state = client.request("POST", "/v1/dnssec/rollover", {})
    return json.dumps(state, indent=2) if args.json else keys_table(state)
