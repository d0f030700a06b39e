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
from dnsdisc.registry.model import (
    CRITICAL,
    MAX_TAGS,
    PASSING,
    REPORTABLE,
    Instance,
)
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
    "http": "HTTP", "tcp": "TCP", "interval": "Interval", "timeout": "Timeout",
    "deregistercriticalserviceafter": "DeregisterCriticalServiceAfter",
    "successbeforepassing": "SuccessBeforePassing",
    "failuresbeforecritical": "FailuresBeforeCritical", "method": "Method",
    "outputmaxsize": "OutputMaxSize",
}  # fmt: skip
_CHECK_EMPTY = {
    "header": "Header", "body": "Body", "tlsskipverify": "TLSSkipVerify",
    "tlsservername": "TLSServerName", "args": "Args", "script": "Script", "grpc": "GRPC",
    "grpcusetls": "GRPCUseTLS", "dockercontainerid": "DockerContainerID", "shell": "Shell",
    "h2ping": "H2PING", "h2pingusetls": "H2PingUseTLS", "udp": "UDP", "osservice": "OSService",
    "aliasnode": "AliasNode", "aliasservice": "AliasService",
    "failuresbeforewarning": "FailuresBeforeWarning", "serviceid": "ServiceID",
    "type": "Type",
}  # fmt: skip
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
    if checks:
        where, check = checks[0]
        fields = _fields(check, _CHECK_READ, _CHECK_EMPTY, where)
        default_id = f"service:{iid}" if where == "Check." else f"service:{iid}:1"
        check_id = fields.get("CheckID") or default_id
        if check_id != default_id:
            raise ValidationError(
                f"{where}CheckID",
                f"{where}CheckID must be {default_id!r}: dnsdisc names an instance's check "
                "after it (custom check IDs are not implemented)",
            )
        initial = _check_into(fields, where, body_out)
    try:
        inst = Instance.from_json(service, iid, body_out)
    except ValidationError as exc:
        raise ValidationError(_consul_name(exc.field), exc.message) from None
    return Registration(inst, initial, check_id)


def _consul_name(fld: str) -> str:
    names = {"meta": "Meta", "address": "Address", "port": "Port", "tags": "Tags"}
    return names.get(fld, fld)


def _check_list(given: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The registration's checks with where each is (``Check.``, ``Checks[0].``); dnsdisc keeps
    one per instance."""
    out: list[tuple[str, object]] = []
    if given.get("Check"):
        out.append(("Check.", given["Check"]))
    several = given.get("Checks") or []
    if not isinstance(several, list):
        raise ValidationError("Checks", "Checks must be a list of checks")
    out += [(f"Checks[{n}].", c) for n, c in enumerate(several)]
    if len(out) > 1:
        raise ValidationError(
            "Checks", "dnsdisc keeps one check per instance: give one Check (or one in Checks)"
        )
    return out


def _check_into(fields: Mapping[str, Any], where: str, body: dict[str, Any]) -> str | None:
    """Put a Consul check into a registration ``body``: a TTL as the instance's lease, HTTP or
    TCP as its active check. The status a TTL check starts in."""
    kinds = [k for k in ("TTL", "HTTP", "TCP") if fields.get(k)]
    if len(kinds) != 1:
        raise ValidationError(
            f"{where.rstrip('.')}", f"{where.rstrip('.')} needs exactly one of TTL, HTTP or TCP"
        )
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
    if (fields.get("Method") or "GET") != "GET":
        raise ValidationError(f"{where}Method", f"{where}Method: dnsdisc's HTTP checks use GET")
    if kind == "TTL":
        body["ttl"] = go_duration(fields["TTL"], f"{where}TTL", 0.001)
        return status or CRITICAL
    check: dict[str, Any] = {"type": kind.lower()}
    target = fields[kind]
    if not isinstance(target, str):
        raise ValidationError(f"{where}{kind}", f"{where}{kind} must be a string")
    if kind == "HTTP":
        url = urlsplit(target)
        if url.scheme != "http":
            raise ValidationError(
                f"{where}HTTP", f"{where}HTTP must be an http:// URL (https checks come later)"
            )
        host, port = url.hostname or "", _url_port(url.port if _has_port(url) else 80, where)
        check["path"] = (url.path or "/") + (f"?{url.query}" if url.query else "")
    else:
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        port = _url_port(int(port_text) if port_text.isdigit() else -1, where, "TCP")
    if not _same_address(host, body["address"]):
        raise ValidationError(
            f"{where}{kind}",
            f"{where}{kind}: dnsdisc checks the instance at its own Address "
            f"({body['address']}); the check's host {host!r} is not it",
        )
    check["port"] = port
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
    body["check"] = check
    return None


def _has_port(url: Any) -> bool:
    try:
        return url.port is not None
    except ValueError:
        return True  # a port that is not a number: reported by _url_port


def _url_port(port: int | None, where: str, kind: str = "HTTP") -> int:
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
    return f"service:{state.instance.id}"


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
    """The instance's check (its dnsdisc status), and Consul's maintenance check while it is in
    maintenance: a client that folds the checks gets dnsdisc's effective status."""
    inst = state.instance
    base = {
        "Node": who.node,
        "ServiceID": inst.id,
        "ServiceName": inst.service,
        "ServiceTags": list(inst.tags),
        "CreateIndex": index,
        "ModifyIndex": index,
    }
    out = [
        {
            **base,
            "CheckID": check_id(state),
            "Name": f"Service '{inst.service}' check",
            "Status": state.status,
            "Notes": "",
            "Output": state.output,
            "Type": _check_type(inst),
        }
    ]
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
