"""The names a verified client certificate (mutual TLS) carries: its subject CN and DNS SANs.

Only a certificate the TLS layer verified against ``http.tls.client_ca_file`` is read; without
mutual TLS, or over plain HTTP, a request has no certificate names.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


def certificate_names(request: web.Request) -> tuple[str, ...]:
    transport = request.transport
    if transport is None:
        return ()
    # The ssl module returns a verified peer's certificate as a dict, and {} or None otherwise.
    cert: Any = transport.get_extra_info("peercert")
    if not cert:
        return ()
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                names.append(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and value not in names:
            names.append(value)
    return tuple(names)
