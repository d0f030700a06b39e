"""Consul's JSON, both ways: an agent registration read into an Instance, and instances shown as
Consul's catalog, health and agent endpoints show services. Pure functions; the handlers are in
``consul.py``.

Consul reads body keys in any case and in snake_case (py-consul sends ``name``, ``id``,
``checks``; Go and node-consul send ``Name``, ``ID``, ``Checks``), so keys are matched without
case or underscores. A key Consul does not know is a 400 naming it; one it knows but dnsdisc
does not implement is accepted only at its empty value, else a 400 saying so. Names, IDs and
tags must be DNS labels (case-insensitive, shown in lower case): nothing is rewritten to fit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dnsdisc.api.settings import Identity
from dnsdisc.errors import ValidationError
from dnsdisc.registry.checks import CheckSpec
from dnsdisc.registry.model import CRITICAL, MAX_TAGS, PASSING, REPORTABLE, Instance
from dnsdisc.values import bounded_int, endpoint_address, go_duration, label

if TYPE_CHECKING:  # the state module loads asyncio, which the light CLI commands do without
    from dnsdisc.registry.state import InstanceState

# The Consul version whose API shapes these follow (what /v1/agent/self reports).
CONSUL_VERSION = "1.16.0"

# Fields of Consul's AgentServiceRegistration, by their key without case or "_": the ones read,
# and the ones accepted only empty (what dnsdisc does not do: Connect, proxies, namespaces...).
_SERVICE_READ = {
    "id": "ID", "name": "Name", "tags": "Tags", "address": "Address", "port": "Port",
    "meta": "Meta", "weights": "Weights", "check": "Check", "checks": "Checks",
}  # fmt: skip
_SERVICE_EMPTY = {
    "enabletagoverride": "EnableTagOverride", "kind": "Kind",
    "taggedaddresses": "TaggedAddresses", "proxy": "Proxy", "connect": "Connect",
    "namespace": "Namespace", "partition": "Partition", "socketpath": "SocketPath",
    "locality": "Locality",
}  # fmt: skip
_CHECK_READ = {
    "checkid": "CheckID", "name": "Name", "notes": "Notes", "status": "Status", "ttl": "TTL",
    "http": "HTTP", "tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpcusetls": "GRPCUseTLS",
    "aliasservice": "AliasService", "interval": "Interval", "timeout": "Timeout",
    "deregistercriticalserviceafter": "DeregisterCriticalServiceAfter",
    "successbeforepassing": "SuccessBeforePassing",
    "failuresbeforecritical": "FailuresBeforeCritical", "method": "Method", "header": "Header",
    "body": "Body", "tlsskipverify": "TLSSkipVerify", "tlsservername": "TLSServerName",
    "outputmaxsize": "OutputMaxSize",
}  # fmt: skip
_CHECK_EMPTY = {
    "args": "Args", "script": "Script", "dockercontainerid": "DockerContainerID",
    "shell": "Shell", "h2ping": "H2PING", "h2pingusetls": "H2PingUseTLS",
    "osservice": "OSService", "aliasnode": "AliasNode",
    "failuresbeforewarning": "FailuresBeforeWarning", "serviceid": "ServiceID",
    "type": "Type",
}  # fmt: skip
# The kinds of Consul check dnsdisc runs, by the field that makes each.
_KINDS = ("TTL", "HTTP", "TCP", "UDP", "GRPC", "AliasService")
_EMPTY_VALUES: tuple[object, ...] = (None, "", False, 0, [], {}, "default")


def _key(name: str) -> str:
    return name.lower().replace("_", "")


def _fields(
    body: object, read: Mapping[str, str], empty: Mapping[str, str], where: str
) -> dict[str, Any]:
    """``body``'s keys by their Consul name (``Name``), those dnsdisc reads; a repeated key (in
    two spellings), an unknown one or a non-empty unimplemented one is a 400 naming it."""
    if not isinstance(body, Mapping):
        raise ValidationError(where or "body", f"{where or 'the body'} must be a JSON object")
    out: dict[str, Any] = {}
    for raw, value in body.items():
        key = _key(str(raw))
        if key in read:
            name = read[key]
            if name in out:
                raise ValidationError(f"{where}{name}", f"{where}{name} is given twice")
            out[name] = value
        elif key in empty:
            if value not in _EMPTY_VALUES:
                raise ValidationError(
                    f"{where}{empty[key]}", f"{where}{empty[key]} is not implemented by dnsdisc"
                )
        else:
            raise ValidationError(f"{where}{raw}", f"unknown field {where}{raw}")
    return out


@dataclass(frozen=True, slots=True)
class Registration:
    """A Consul agent registration as dnsdisc keeps it: the instance, the status its TTL check
    starts in (Consul starts one critical unless ``Status`` says otherwise), and the check's
    ID (``service:<ID>``, or ``service:<ID>:1`` when given as ``Checks``)."""

    instance: Instance
    initial_status: str | None
    check_id: str | None


def registration(body: object, default_address: str) -> Registration:
    """Read ``PUT /v1/agent/service/register``'s body. ``default_address``: where the service
    runs when ``Address`` is empty (Consul takes its agent's address; dnsdisc, the caller's)."""
    given = _fields(body, _SERVICE_READ, _SERVICE_EMPTY, "")
    if "Name" not in given:
        raise ValidationError("Name", "Name is required")
    service = label(given["Name"], "Name")
    iid = label(given.get("ID") or service, "ID")
    tags_in = given.get("Tags") or []
    if not isinstance(tags_in, list) or len(tags_in) > MAX_TAGS:
        raise ValidationError("Tags", f"Tags must be a list of at most {MAX_TAGS} DNS labels")
    address = given.get("Address") or default_address
    if "Port" not in given:
        raise ValidationError("Port", "Port is required (1-65535)")
    weights = _fields(
        given.get("Weights") or {}, {"passing": "Passing", "warning": "Warning"}, {}, "Weights."
    )
    body_out: dict[str, Any] = {
        "address": endpoint_address(address, "Address"),
        "port": bounded_int(given["Port"], "Port", 1, 65535),
        "tags": [label(t, "Tags") for t in tags_in],
        "meta": given.get("Meta") or {},
        # Consul's default weight is 1; Weights.Warning is read for its range only, as dnsdisc
        # scales a warning instance by health.warning_weight.
        "weight": bounded_int(weights.get("Passing", 1), "Weights.Passing", 1, 65535),
    }
    bounded_int(weights.get("Warning", 1), "Weights.Warning", 0, 65535)
    checks = _check_list(given)
    initial, check_id = None, None
    ours: list[dict[str, Any]] = []
    for n, (where, check) in enumerate(checks):
        fields = _fields(check, _CHECK_READ, _CHECK_EMPTY, where)
        default_id = f"service:{iid}" if where == "Check." else f"service:{iid}:{n + 1}"
        given_id = fields.get("CheckID") or default_id
        if given_id != default_id:
            raise ValidationError(
                f"{where}CheckID",
                f"{where}CheckID must be {default_id!r}: dnsdisc names an instance's checks "
                "after it (custom check IDs are not implemented)",
            )
        made = _check_into(fields, where, body_out)
        if made is None:  # the TTL: the instance's lease
            if initial is not None:
                raise ValidationError("Checks", "dnsdisc keeps one TTL check per instance")
            initial = (fields.get("Status") or None) or CRITICAL
            check_id = default_id
        else:
            if where != "Check.":
                made["id"] = f"check-{n + 1}"
            ours.append(made)
    if initial is not None and ours:
        raise ValidationError(
            "Checks",
            "a TTL check and active checks on one instance are not combined in dnsdisc: the "
            "heartbeat and the checks would overwrite each other's verdict",
        )
    if len(ours) == 1 and "id" not in ours[0]:
        body_out["check"] = ours[0]
    elif ours:
        body_out["checks"] = ours
    try:
        inst = Instance.from_json(service, iid, body_out)
    except ValidationError as exc:
        raise ValidationError(_consul_name(exc.field), exc.message) from None
    return Registration(inst, initial, check_id)


def _consul_name(fld: str) -> str:
    names = {"meta": "Meta", "address": "Address", "port": "Port", "tags": "Tags"}
    return names.get(fld, fld)


def _check_list(given: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The registration's checks with where each is (``Check.``, ``Checks[0].``)."""
    out: list[tuple[str, object]] = []
    if given.get("Check"):
        out.append(("Check.", given["Check"]))
    several = given.get("Checks") or []
    if not isinstance(several, list) or len(several) > 16:
        raise ValidationError("Checks", "Checks must be a list of at most 16 checks")
    out += [(f"Checks[{n}].", c) for n, c in enumerate(several)]
    return out


def _check_into(
    fields: Mapping[str, Any], where: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """A Consul check as dnsdisc's: a TTL becomes the instance's lease (in ``body``; None is
    returned), HTTP(S), TCP, UDP, gRPC and AliasService an active check (returned), aimed at
    the check's own host where that is not the instance's address."""
    kinds = [k for k in _KINDS if fields.get(k)]
    here = where.rstrip(".")
    if len(kinds) != 1:
        raise ValidationError(here, f"{here} needs exactly one of {', '.join(_KINDS)}")
    kind = kinds[0]
    if "DeregisterCriticalServiceAfter" in fields:
        body["deregister_after"] = go_duration(
            fields["DeregisterCriticalServiceAfter"],
            f"{where}DeregisterCriticalServiceAfter",
            0.001,
        )
    status = fields.get("Status") or None
    if status is not None and status not in REPORTABLE:
        raise ValidationError(f"{where}Status", f"{where}Status must be one of {REPORTABLE}")
    if kind == "TTL":
        body["ttl"] = go_duration(fields["TTL"], f"{where}TTL", 0.001)
        return None
    if kind == "AliasService":
        check: dict[str, Any] = {"type": "alias", "service": fields[kind]}
    else:
        check = _network_check(kind, fields, where, body["address"])
    if "Interval" in fields:
        check["interval"] = go_duration(fields["Interval"], f"{where}Interval", 0.001)
    if "Timeout" in fields:
        check["timeout"] = go_duration(fields["Timeout"], f"{where}Timeout", 0.001)
    for consul_key, ours in (("SuccessBeforePassing", "rise"), ("FailuresBeforeCritical", "fall")):
        if fields.get(consul_key):
            check[ours] = bounded_int(fields[consul_key], f"{where}{consul_key}", 0, 100)
    try:
        CheckSpec.from_json(check)
    except ValidationError as exc:
        raise ValidationError(f"{where}{kind}", exc.message) from None
    return check


def _network_check(
    kind: str, fields: Mapping[str, Any], where: str, address: str
) -> dict[str, Any]:
    target = fields[kind]
    if not isinstance(target, str):
        raise ValidationError(f"{where}{kind}", f"{where}{kind} must be a string")
    http_only = ("Method", "Header", "Body")
    for key in http_only:
        if fields.get(key) and kind != "HTTP":
            raise ValidationError(f"{where}{key}", f"{where}{key} applies to HTTP checks")
    check: dict[str, Any]
    if kind == "HTTP":
        url = urlsplit(target)
        if url.scheme not in ("http", "https"):
            raise ValidationError(f"{where}HTTP", f"{where}HTTP must be an http(s):// URL")
        host, port = url.hostname or "", _url_port(url.port if _has_port(url) else None, where)
        if port is None:
            port = 443 if url.scheme == "https" else 80
        check = {
            "type": url.scheme,
            "path": (url.path or "/") + (f"?{url.query}" if url.query else ""),
            "method": fields.get("Method") or "GET",
        }
        if fields.get("Header"):
            check["headers"] = _headers(fields["Header"], where)
        if fields.get("Body"):
            check["body"] = fields["Body"]
        if url.scheme == "https":
            check.update(_tls(fields, where))
    else:
        rest = target
        service = ""
        if kind == "GRPC" and "/" in target:
            rest, _, service = target.partition("/")
        host, _, port_text = rest.rpartition(":")
        host = host.strip("[]")
        port = _url_port(int(port_text) if port_text.isdigit() else -1, where, kind)
        check = {"type": kind.lower()}
        if kind == "GRPC":
            if service:
                check["grpc_service"] = service
            if fields.get("GRPCUseTLS"):
                check["tls"] = True
                check.update(_tls(fields, where))
    if not _same_address(host, address):
        try:
            check["address"] = endpoint_address(host, f"{where}{kind}")
        except ValidationError:
            raise ValidationError(
                f"{where}{kind}",
                f"{where}{kind}: the check's host {host!r} must be an IP address "
                "(or the service's Address)",
            ) from None
    check["port"] = port
    return check


def _headers(value: object, where: str) -> dict[str, str]:
    """Consul's ``Header`` (name -> list of values) as one string per name."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{where}Header", f"{where}Header must map names to values")
    out = {}
    for name, values in value.items():
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{where}Header", f"{where}Header values must be strings")
        out[str(name)] = ", ".join(values)
    return out


def _tls(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fields.get("TLSSkipVerify"):
        out["tls_skip_verify"] = True
    if fields.get("TLSServerName"):
        out["tls_server_name"] = fields["TLSServerName"]
    return out


def _has_port(url: Any) -> bool:
    try:
        return url.port is not None
    except ValueError:
        return True  # a port that is not a number: reported by _url_port


def _url_port(port: int | None, where: str, kind: str = "HTTP") -> int | None:
    """The port given (None: none given, for a URL); a bad one is a 400."""
    if port is None and kind == "HTTP":
        return None
    if port is None or not 1 <= port <= 65535:
        raise ValidationError(f"{where}{kind}", f"{where}{kind} has no valid port")
    return port


def _same_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(address)
    except ValueError:
        return False


# -- what the reads show -------------------------------------------------------------------


def check_id(state: InstanceState) -> str:
    """A one-check instance's check ID: ``service:<ID>``, or ``service:<ID>:1`` when it was
    registered as the one entry of Consul's ``Checks``."""
    inst = state.instance
    if inst.checks and inst.checks[0].id == "check-1":
        return f"service:{inst.id}:1"
    return f"service:{inst.id}"


def _check_type(inst: Instance) -> str:
    if inst.check is not None:
        return inst.check.type
    return "ttl" if inst.ttl is not None else ""


def node_json(state: InstanceState, who: Identity, index: int) -> dict[str, Any]:
    """The "node" an instance runs on. dnsdisc has no nodes: it is the dnsdisc node that
    answers, at the instance's address (so tools that read Node.Address get the instance)."""
    address = state.instance.address
    return {
        "ID": "",
        "Node": who.node,
        "Address": address,
        "Datacenter": who.datacenter,
        "TaggedAddresses": {"lan": address, "wan": address},
        "Meta": {},
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def service_json(state: InstanceState, who: Identity, index: int) -> dict[str, Any]:
    inst = state.instance
    return {
        "ID": inst.id,
        "Service": inst.service,
        "Tags": list(inst.tags),
        "Address": inst.address,
        "Port": inst.port,
        "Meta": dict(inst.meta),
        "Weights": {"Passing": inst.weight, "Warning": inst.weight},
        "EnableTagOverride": False,
        "Datacenter": who.datacenter,
        "Kind": "",
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def checks_json(state: InstanceState, who: Identity, index: int) -> list[dict[str, Any]]:
    """The instance's checks as Consul lists them: one (``service:<ID>``) with its dnsdisc
    status, or one per active check (``service:<ID>:<n>``) with its own; and Consul's
    maintenance check while it is in maintenance. A client that folds them gets dnsdisc's
    effective status."""
    inst = state.instance
    base = {
        "Node": who.node,
        "ServiceID": inst.id,
        "ServiceName": inst.service,
        "ServiceTags": list(inst.tags),
        "CreateIndex": index,
        "ModifyIndex": index,
    }
    out: list[dict[str, Any]] = []
    if len(inst.checks) > 1:
        for n, spec in enumerate(inst.checks, 1):
            held = state.check_states.get(spec.id)
            out.append({
                **base,
                "CheckID": f"service:{inst.id}:{n}",
                "Name": f"Service '{inst.service}' check {spec.id}",
                # Where this node has not run it (an etcd follower, just after a start):
                # the instance's own status, not a critical that is nobody's verdict.
                "Status": held.status if held is not None else state.status,
                "Notes": "",
                "Output": held.output if held is not None else state.output,
                "Type": spec.type,
            })  # fmt: skip
    else:
        out.append({
            **base,
            "CheckID": check_id(state),
            "Name": f"Service '{inst.service}' check",
            "Status": state.status,
            "Notes": "",
            "Output": state.output,
            "Type": _check_type(inst),
        })  # fmt: skip
    if state.maintenance is not None:
        out.append(
            {
                **base,
                "CheckID": f"_service_maintenance:{inst.id}",
                "Name": "Service Maintenance Mode",
                "Status": CRITICAL,
                "Notes": state.maintenance,
                "Output": "",
                "Type": "maintenance",
            }
        )
    return out


def catalog_json(state: InstanceState, who: Identity, index: int) -> dict[str, Any]:
    """An entry of ``GET /v1/catalog/service/{name}``."""
    inst = state.instance
    return {
        "ID": "",
        "Node": who.node,
        "Address": inst.address,
        "Datacenter": who.datacenter,
        "TaggedAddresses": {"lan": inst.address, "wan": inst.address},
        "NodeMeta": {},
        "ServiceKind": "",
        "ServiceID": inst.id,
        "ServiceName": inst.service,
        "ServiceTags": list(inst.tags),
        "ServiceAddress": inst.address,
        "ServiceWeights": {"Passing": inst.weight, "Warning": inst.weight},
        "ServiceMeta": dict(inst.meta),
        "ServicePort": inst.port,
        "ServiceEnableTagOverride": False,
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def passing(state: InstanceState) -> bool:
    """Consul's ``?passing``: every check passing (so neither warning nor maintenance)."""
    return state.effective_status == PASSING


def update_fields(body: object) -> dict[str, Any]:
    """``PUT /v1/agent/check/update/{check}``'s body: ``Status`` and ``Output``."""
    return _fields(body, {"status": "Status", "output": "Output"}, {}, "")
