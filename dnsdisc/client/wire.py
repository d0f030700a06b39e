"""The HTTP API as the client speaks it, without I/O: the path of each resource, what a request
carries (JSON body, headers), and what a reply means (JSON, dnsdisc's error body, the shape a
call expects). The transport (``rest.Client.request``) sends and receives; this decides."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from dnsdisc.client.errors import ClientError

HEALTHY = ("passing", "warning")  # the states whose instances are handed out


def path(service: str, instance: str | None = None, action: str | None = None) -> str:
    """``/v1/services/{service}[/instances/{instance}[/{action}]]``."""
    # Quoted whole: a name with '/' or '..' must reach the server as one (invalid) label.
    out = "/v1/services/" + urllib.parse.quote(service, safe="")
    if instance is not None:
        out += "/instances/" + urllib.parse.quote(instance, safe="")
    if action is not None:
        out += "/" + action
    return out


def encode(body: Any, token: str | None) -> tuple[bytes | None, dict[str, str]]:
    """A request's data (JSON, or None without a body) and its headers."""
    data = None if body is None else json.dumps(body, allow_nan=False).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return data, headers


_DEFAULT_PORTS = {"http": 80, "https": 443}


def keeps_auth(old_url: str, new_url: str) -> bool:
    """Whether a redirect from ``old_url`` to ``new_url`` may carry the token, by the rule of
    requests (``should_strip_auth``): only to the same origin (scheme, host, port; a default
    port written or not is the same), or from http to https on the same host with default ports.
    Another host, another port or any other scheme change (https -> http) drops it."""
    old, new = urllib.parse.urlsplit(old_url), urllib.parse.urlsplit(new_url)
    if old.hostname != new.hostname:
        return False
    if old.scheme == "http" and new.scheme == "https":
        return old.port in (80, None) and new.port in (443, None)
    if old.scheme != new.scheme:
        return False
    default = (_DEFAULT_PORTS.get(old.scheme), None)
    return old.port == new.port or (old.port in default and new.port in default)


def decode(raw: bytes, status: int, method: str, where: str, url: str) -> Any:
    """A 2xx reply's parsed JSON (None for an empty one, as with 204)."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ClientError(
            f"the reply to {method} {where} is not JSON: {raw[:80]!r}", status, url=url
        ) from None


def refused(status: int, reason: str, raw: bytes, url: str) -> ClientError:
    """The error for a non-2xx reply: dnsdisc's ``{"error", "field"}`` body when there is one."""
    message, fld = "", ""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("error") or "")
        fld = str(body.get("field") or "")
    if not message:  # not dnsdisc's error body: something else answers on that port
        message = reason or "request failed"
        if raw:
            message += f": {raw[:80]!r}"
    return ClientError(message, status, fld, url)


def as_object(reply: Any, url: str) -> dict[str, Any]:
    """A reply that must be a JSON object."""
    if not isinstance(reply, dict):
        raise ClientError(f"unexpected reply from {url}: {reply!r:.80}", url=url)
    return reply


def as_list(reply: dict[str, Any], key: str, url: str) -> list[dict[str, Any]]:
    """``reply[key]``, which must be a list of JSON objects."""
    items = reply.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ClientError(f"unexpected reply from {url}: no {key!r} list", url=url)
    return items


def instance_body(address: str, port: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The body of a registration: ``fields`` are the instance's other keys."""
    return {"address": address, "port": port, **fields}
