"""The etcd key schema and its encoding on the JSON gateway.

Keys under the prefix (values are JSON; the schema is documented in docs/etcd.md):

    <prefix>/services/<service>        service settings (ServiceSettings.to_json without name)
    <prefix>/instances/<service>/<id>  the instance definition (Instance.definition), attached to
                                       an etcd lease of the instance's ttl when it has one
    <prefix>/status/<service>/<id>     {"status", "output", "maintenance"}: the shared verdict,
                                       on the instance's lease so both go together
    <prefix>/queries/<name>            a named query's definition (QueryDef.definition)
    <prefix>/leader                    the node that runs active checks, on a short lease

The gateway carries keys and values base64-encoded; the ``*_request`` and ``created_compare``
helpers build the pieces of a ``/v3/kv/txn`` body.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

from dnsdisc.errors import ValidationError
from dnsdisc.values import label

log = logging.getLogger("dnsdisc.store.etcd")  # one logger for the whole backend

# A named query's name as a key may hold it: a DNS label, or a template's prefix (which may end
# with "-"). The registry validates the rest with the definition.
_QUERY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def range_end(prefix: str) -> str:
    # etcd's "all keys with this prefix": the prefix with its last byte incremented.
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


class Keys:
    """The keys of one registry, all under ``prefix`` (kept with exactly one trailing /)."""

    __slots__ = ("prefix", "skipped")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/") + "/"
        self.skipped = 0  # keys under the prefix ignored as unreadable (bad name or value)

    def service(self, service: str) -> str:
        return f"{self.prefix}services/{service}"

    def instance(self, service: str, iid: str = "") -> str:
        return f"{self.prefix}instances/{service}/{iid}"

    def status(self, service: str, iid: str = "") -> str:
        return f"{self.prefix}status/{service}/{iid}"

    def query(self, name: str = "") -> str:
        return f"{self.prefix}queries/{name}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    def everything(self) -> dict[str, str]:
        """The range (``key``, ``range_end``) of every key under the prefix."""
        return {"key": b64(self.prefix), "range_end": b64(range_end(self.prefix))}

    def parse(self, key: str) -> tuple[str, str, str] | None:
        """(kind, service, id) of one of our keys; None for anything else under the prefix.
        A named query's key parses as ("queries", name, "")."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        if parts[0] == "queries" and len(parts) == 2:
            if _QUERY_NAME.fullmatch(parts[1]):
                return "queries", parts[1], ""
            self.skipped += 1
            log.warning("etcd: ignoring key %r: not a valid query name", key)
            return None
        try:
            if parts[0] == "services" and len(parts) == 2:
                return "services", label(parts[1], "service"), ""
            if parts[0] in ("instances", "status") and len(parts) == 3:
                return parts[0], label(parts[1], "service"), label(parts[2], "id")
        except ValidationError:
            self.skipped += 1
            log.warning("etcd: ignoring key %r: not a valid service or instance name", key)
        return None


def decode_value(key: str, kv: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON object a gateway key-value holds; None (and a warning) for anything else."""
    try:
        value = json.loads(unb64(kv.get("value", "")))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("etcd: ignoring key %r: its value is not a JSON object", key)
        return None
    return value


def put_request(key: str, value: Any, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(json.dumps(value, sort_keys=True))}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def created_compare(key: str, result: str) -> dict[str, Any]:
    """A txn comparison of ``key``'s create revision with 0: EQUAL means absent."""
    return {"key": b64(key), "target": "CREATE", "result": result, "create_revision": "0"}


def delete_request(key: str, prefix: bool = False) -> dict[str, Any]:
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(range_end(key))
    return {"request_delete_range": body}
