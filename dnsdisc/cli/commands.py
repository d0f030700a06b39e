"""The client commands (register, deregister, services, instances, heartbeat, maintenance):
clients of a running server over its HTTP API (``dnsdisc.client``, urllib only). They import
neither aiohttp nor the server machinery, so they start fast, and every failure is one line on
stderr with exit status 1 (2 for usage errors)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dnsdisc.netaddr import DEFAULT_HTTP

if TYPE_CHECKING:
    from dnsdisc.client import Client

# dnsdisc.client (urllib, http.client) is imported inside the commands, so that `serve` and
# --help do not pay for it.
_Subparsers = argparse._SubParsersAction  # argparse names this type only privately


def _http_address(text: str) -> str:
    from dnsdisc.client import base_url

    try:
        base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text  # as given: without a scheme, --cacert or --cert may still make it https


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _meta_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def client_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parent parsers of every client command: where the server is and how to reach it
    (``--http``, ``--cacert``, ``--cert``, ``--key``), and ``--json``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_http_address,
        help=f"the server's HTTP API (default $DNSDISC_HTTP, else {DEFAULT_HTTP}); "
        "$DNSDISC_TOKEN, when set, is sent as 'Authorization: Bearer <token>'; "
        "https://HOST:PORT for TLS",
    )
    common.add_argument(
        "--cacert",
        metavar="FILE",
        help="check the server's certificate against this CA (PEM; default $DNSDISC_CACERT, "
        "else the system's CAs); implies https",
    )
    common.add_argument(
        "--cert",
        metavar="FILE",
        help="client certificate for mutual TLS (PEM; default $DNSDISC_CERT); implies https",
    )
    common.add_argument(
        "--key",
        metavar="FILE",
        help="the private key of --cert, if not in that file (default $DNSDISC_KEY)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the server's JSON reply")
    return common, as_json


def add_parsers(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    common, as_json = client_options()
    ids = argparse.ArgumentParser(add_help=False)
    ids.add_argument("service", help="service name (a DNS label)")
    ids.add_argument("id", help="instance id (a DNS label)")

    r = sub.add_parser(
        "register",
        parents=[common, as_json],
        help="register or replace an instance (or many, from a file)",
        description="Register an instance, or replace the one with this id. Fields left out "
        "take the server's defaults. With --file, every instance the file lists, in batches "
        "of 128 (each batch all or nothing).",
    )
    r.add_argument("service", nargs="?", help="service name (a DNS label)")
    r.add_argument("id", nargs="?", help="instance id (a DNS label)")
    r.add_argument(
        "--file",
        metavar="FILE",
        help="YAML or JSON: a list of instances, each with service, id and the instance's "
        "fields (address, port, weight, ...); '-' reads standard input",
    )
    r.add_argument("--address", metavar="IP", help="IPv4 or IPv6 address (required)")
    r.add_argument("--port", type=int, help="port, 1-65535 (required)")
    r.add_argument("--weight", type=int, help="0-65535 (default 100; 0 = drained)")
    r.add_argument("--priority", type=int, help="SRV priority, lower is preferred (default 0)")
    r.add_argument("--protocol", choices=("tcp", "udp"), help="default tcp")
    r.add_argument(
        "--zone", metavar="LABEL", help="the locality zone it runs in (see locality.networks)"
    )
    r.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="a tag; repeat for more"
    )
    r.add_argument(
        "--meta",
        action="append",
        default=[],
        type=_meta_pair,
        metavar="KEY=VALUE",
        help="metadata (served as TXT); repeat for more",
    )
    r.add_argument(
        "--ttl", type=_number, metavar="SECONDS", help="heartbeat lease: critical without one"
    )
    check = r.add_mutually_exclusive_group()
    check.add_argument("--check-http", metavar="PATH", help="active check: HTTP GET of PATH")
    check.add_argument("--check-tcp", action="store_true", help="active check: TCP connect")
    r.add_argument("--check-interval", type=_number, metavar="SECONDS", help="default 10")
    r.add_argument("--check-timeout", type=_number, metavar="SECONDS", help="default 2")
    r.add_argument("--check-port", type=int, help="default: the instance's port")
    r.add_argument(
        "--deregister-after",
        type=_number,
        metavar="SECONDS",
        help="remove the instance after it stayed critical this long",
    )
    r.set_defaults(run=_register, subparser=r)

    d = sub.add_parser("deregister", parents=[ids, common], help="remove an instance")
    d.set_defaults(run=_deregister, subparser=d)

    ls = sub.add_parser(
        "services",
        parents=[common, as_json],
        help="list the services: policy, instances, healthy ones",
    )
    ls.set_defaults(run=_services, subparser=ls)

    li = sub.add_parser(
        "instances",
        parents=[common, as_json],
        help="list a service's instances and their health",
    )
    li.add_argument("service", help="service name")
    li.set_defaults(run=_instances, subparser=li)

    ex = sub.add_parser(
        "explain",
        parents=[common, as_json],
        help="what the next answer to a client would be, and why",
        description="Each instance with the step that kept or removed it and its exact chance "
        "of coming first and of being in the next answer to the client.",
    )
    ex.add_argument("service", help="service name")
    ex.add_argument("--type", default="A", choices=("A", "AAAA", "SRV"), help="default A")
    ex.add_argument("--client", metavar="IP", help="the client's address (default: unknown)")
    ex.add_argument("--ecs", metavar="CIDR", help="the client subnet a resolver would send")
    ex.add_argument("--tag", help="the answer of <tag>.<service> instead")
    ex.set_defaults(run=_explain, subparser=ex)

    h = sub.add_parser(
        "heartbeat", parents=[ids, common, as_json], help="renew an instance's lease"
    )
    h.add_argument("--status", choices=("passing", "warning", "critical"), help="report a state")
    h.add_argument("--load", type=_number, help="report a load (least_loaded policy)")
    h.add_argument(
        "--latency-ms", type=_number, metavar="MS", help="report a latency (latency policy)"
    )
    h.set_defaults(run=_heartbeat, subparser=h)

    m = sub.add_parser(
        "maintenance",
        parents=[ids, common, as_json],
        help="take an instance out of the answers, or put it back",
    )
    switch = m.add_mutually_exclusive_group(required=True)
    switch.add_argument("--enable", action="store_true", help="out of the answers")
    switch.add_argument("--disable", action="store_true", help="back into the answers")
    m.add_argument("--reason", metavar="TEXT", help="why (with --enable)")
    m.set_defaults(run=_maintenance, subparser=m)


def register_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The instance body's optional fields from ``register``'s flags (only those given)."""
    usage: Callable[[str], Any] = args.subparser.error
    fields: dict[str, Any] = {}
    for name in ("weight", "priority", "protocol", "zone", "ttl", "deregister_after"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.tag:
        fields["tags"] = list(args.tag)
    if args.meta:
        meta: dict[str, str] = {}
        for key, value in args.meta:
            if key in meta:
                usage(f"--meta: key {key!r} given twice")
            meta[key] = value
        fields["meta"] = meta
    tuning = {
        "interval": args.check_interval,
        "timeout": args.check_timeout,
        "port": args.check_port,
    }
    if args.check_http is not None or args.check_tcp:
        spec: dict[str, Any] = (
            {"type": "http", "path": args.check_http}
            if args.check_http is not None
            else {"type": "tcp"}
        )
        spec.update({k: v for k, v in tuning.items() if v is not None})
        fields["check"] = spec
    elif any(v is not None for v in tuning.values()):
        usage("--check-interval, --check-timeout and --check-port need --check-http or --check-tcp")
    return fields


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def status_text(instance: dict[str, Any]) -> str:
    """An instance's health as a word; maintenance carries its reason."""
    health = instance.get("health") or {}
    status = str(health.get("status", "?"))
    if status == "maintenance" and health.get("maintenance"):
        return f"maintenance ({health['maintenance']})"
    return status


def healthy_count(instances: Sequence[dict[str, Any]]) -> int:
    """Instances handed out: passing or warning."""
    from dnsdisc.client import HEALTHY

    return sum(1 for i in instances if (i.get("health") or {}).get("status") in HEALTHY)


def services_table(services: Sequence[dict[str, Any]]) -> str:
    """``services`` are service details (``GET /v1/services/{name}``, with their instances)."""
    if not services:
        return "no services"
    rows = [
        (s["name"], s["policy"], len(s["instances"]), healthy_count(s["instances"]))
        for s in services
    ]
    return format_table(("NAME", "POLICY", "INSTANCES", "HEALTHY"), rows)


def instances_table(service: str, instances: Sequence[dict[str, Any]]) -> str:
    if not instances:
        return f"{service} has no instances"
    rows = [
        (
            i["id"],
            i["address"],
            i["port"],
            i["weight"],
            i["priority"],
            i.get("zone") or "-",
            ",".join(i.get("tags") or ()) or "-",
            status_text(i),
        )
        for i in instances
    ]
    header = ("ID", "ADDRESS", "PORT", "WEIGHT", "PRIORITY", "ZONE", "TAGS", "STATUS")
    return format_table(header, rows)


def _endpoint(instance: dict[str, Any]) -> str:
    address = str(instance.get("address", "?"))
    shown = f"[{address}]" if ":" in address else address
    return f"{shown}:{instance.get('port', '?')}"


def _as_json(reply: Any) -> str:
    return json.dumps(reply, indent=2)


def _register(client: Client, args: argparse.Namespace) -> str:
    if args.file is not None:
        return _register_file(client, args)
    usage: Callable[[str], Any] = args.subparser.error
    missing = [
        name if name in ("service", "id") else f"--{name}"
        for name in ("service", "id", "address", "port")
        if getattr(args, name) is None
    ]
    if missing:  # in argparse's words, as when these were required arguments
        usage(f"the following arguments are required: {', '.join(missing)} (or --file)")
    fields = register_fields(args)
    reply = client.register(args.service, args.id, args.address, args.port, **fields)
    if args.json:
        return _as_json(reply)
    return (
        f"registered {reply['service']}/{reply['id']} at {_endpoint(reply)}: {status_text(reply)}"
    )


# Instances registered per request by ``register --file`` (the server's batch limit).
BATCH = 128


def _register_file(client: Client, args: argparse.Namespace) -> str:
    """Every instance of the file, in batches (each all or nothing). A file that is not a list
    of {service, id, ...} stops before anything is sent."""
    import sys

    import yaml

    usage: Callable[[str], Any] = args.subparser.error
    given = [n for n in ("service", "id", "address", "port") if getattr(args, n) is not None]
    if given:
        usage(f"--file lists the instances: no {given[0]} beside it")
    try:
        if args.file == "-":
            data = yaml.safe_load(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as f:
                data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        usage(f"cannot read {args.file}: {exc}")
    if not isinstance(data, list) or not data:
        usage(f"{args.file}: expected a list of instances, each with service, id, address, port")
    ops = []
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or "service" not in entry or "id" not in entry:
            usage(f"{args.file}: entry {n} needs service and id")
        body = {k: v for k, v in entry.items() if k not in ("service", "id")}
        ops.append({"op": "register", "service": entry["service"], "id": entry["id"], "body": body})
    from dnsdisc.client import ClientError

    done = 0
    for start in range(0, len(ops), BATCH):
        chunk = ops[start : start + BATCH]
        try:
            client.batch(chunk)
        except ClientError as exc:
            # The server names the op in the batch ("op 3: ..."): entry start + 3 of the file.
            message = f"{exc.message} (in the batch of entries {start}-{start + len(chunk) - 1}"
            raise ClientError(
                f"{message}; {done} registered before it)", exc.status, exc.field, exc.url
            ) from None
        done += len(chunk)
    return f"registered {done} instances from {args.file}"


def _deregister(client: Client, args: argparse.Namespace) -> str:
    client.deregister(args.service, args.id)
    return f"deregistered {args.service.lower()}/{args.id.lower()}"


def _services(client: Client, args: argparse.Namespace) -> str:
    from dnsdisc.client import ClientError

    if args.json:
        return _as_json(client.request("GET", "/v1/services"))
    details = []
    # The list carries instance counts but not health: one request per service for that.
    for svc in client.services():
        try:
            details.append(client.service(svc["name"]))
        except ClientError as exc:
            if exc.status != 404:  # deleted since the list was read
                raise
    return services_table(details)


def _instances(client: Client, args: argparse.Namespace) -> str:
    reply = client.service(args.service)
    if args.json:
        return _as_json(reply)
    return instances_table(reply["name"], reply["instances"])


def _explain(client: Client, args: argparse.Namespace) -> str:
    reply = client.explain(args.service, args.type, args.client, args.ecs, args.tag)
    if args.json:
        return _as_json(reply)
    return explain_text(reply)


def explain_text(reply: dict[str, Any]) -> str:
    head = (
        f"{reply['name']} {reply['type']}: policy {reply['policy']}, max_answers "
        f"{reply['max_answers'] or 'all'}, ttl {reply['ttl']}, sequence {reply['sequence']}, "
        f"locality {reply['locality']}"
    )
    if reply.get("client_zone"):
        head += f", client in {reply['client_zone']}"
    if reply.get("ecs_scope") is not None:
        head += f", ECS scope /{reply['ecs_scope']}"
    if reply.get("method", "exact") != "exact":
        head += f" ({reply['method']}, within {reply['error_bound']:.3f})"
    rows = [
        (
            i["id"],
            i["address"],
            i["weight"],
            "yes" if i["included"] else f"no: {i['reason']}",
            f"{i['p_first']:.3f}",
            f"{i['p_in_answer']:.3f}",
        )
        for i in reply["instances"]
    ]
    return head + "\n" + format_table(("ID", "ADDRESS", "WEIGHT", "IN", "P_FIRST", "P_IN"), rows)


def _heartbeat(client: Client, args: argparse.Namespace) -> str:
    reply = client.heartbeat(args.service, args.id, args.status, args.load, args.latency_ms)
    if args.json:
        return _as_json(reply)
    return f"{reply['service']}/{reply['id']}: {status_text(reply)}"


def _maintenance(client: Client, args: argparse.Namespace) -> str:
    if args.disable and args.reason is not None:
        args.subparser.error("--reason goes with --enable")
    reply = client.maintenance(args.service, args.id, enabled=args.enable, reason=args.reason)
    if args.json:
        return _as_json(reply)
    return f"{reply['service']}/{reply['id']}: {status_text(reply)}"


def run(args: argparse.Namespace) -> int:
    """Run a client command: its output on stdout, or one line on stderr and exit status 1."""
    from dnsdisc.client import Client, ClientError, base_url

    http = args.http or os.environ.get("DNSDISC_HTTP") or DEFAULT_HTTP
    try:
        base_url(http)
    except ValueError as exc:  # only $DNSDISC_HTTP gets here: --http was checked by argparse
        print(f"dnsdisc: error: DNSDISC_HTTP: {exc}", file=sys.stderr)
        return 2
    env = os.environ.get
    try:
        client = Client(
            http,
            env("DNSDISC_TOKEN") or None,
            cacert=args.cacert or env("DNSDISC_CACERT") or None,
            cert=args.cert or env("DNSDISC_CERT") or None,
            key=args.key or env("DNSDISC_KEY") or None,
        )
    except ValueError as exc:  # a CA, certificate or key file that cannot be loaded
        print(f"dnsdisc: error: {exc}", file=sys.stderr)
        return 2
    command: Callable[[Client, argparse.Namespace], str] = args.run
    try:
        output = command(client, args)
    except ClientError as exc:
        if not exc.status:
            print(f"dnsdisc: {exc}", file=sys.stderr)
        else:
            print(f"dnsdisc: error: {exc}", file=sys.stderr)
            if exc.status == 401 and client.token is None:
                print("dnsdisc: the server wants a token: set DNSDISC_TOKEN", file=sys.stderr)
        return exc.exit_status
    except (KeyError, TypeError, AttributeError) as exc:
        # A 2xx reply without the fields dnsdisc sends: something else answers on that port.
        print(f"dnsdisc: error: unexpected reply from {client.url}: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(output)
        sys.stdout.flush()
    except BrokenPipeError:  # `dnsdisc services | head -1`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
