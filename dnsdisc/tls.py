"""TLS contexts for our listeners (the HTTP side-port, DNS over TLS), made in one place so every
face refuses the same old protocol versions and reports a bad file the same way.

A context is made from files whenever the config is (re)loaded; a listener swaps to the new one
only once it was made without error, so a bad new certificate leaves the old one serving.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsdisc.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A listener's certificate chain and key, and the CA its clients' certificates must chain
    to (mutual TLS), as the config names them. The files are read each time a context is made."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def context(self, source: str = "", key: str = "tls") -> ssl.SSLContext:
        ca = str(self.client_ca_file) if self.client_ca_file is not None else None
        return server_context(str(self.cert_file), str(self.key_file), ca, source=source, key=key)


def server_context(
    cert_file: str,
    key_file: str,
    client_ca_file: str | None = None,
    *,
    source: str = "",
    key: str = "tls",
) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer; with ``client_ca_file``, clients must present a
    certificate that CA signed. ``source``/``key`` name the config place in a ConfigError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            source, f"{key}.cert_file", f"a certificate and key that can be loaded ({exc})"
        ) from exc
    if client_ca_file:
        try:
            ctx.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                source, f"{key}.client_ca_file", f"a CA certificate file ({exc})"
            ) from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ContextSwitch:
    """The one context a listener was started with, handing each new handshake the context
    made last: a reload swaps certificates without closing the listening socket, and the
    connections already open keep theirs.

    The switch happens in the server-name callback, which OpenSSL calls on every ClientHello,
    with or without SNI. The new context lends its certificate, key and trusted CAs; whether a
    client certificate is asked for stays the first context's, so turning mutual TLS on or off
    takes a restart (``mutual`` says which it is)."""

    def __init__(self, first: ssl.SSLContext) -> None:
        self.listening = first
        self.current = first
        self.mutual = first.verify_mode == ssl.CERT_REQUIRED
        first.sni_callback = self._pick

    def swap(self, context: ssl.SSLContext) -> None:
        self.current = context

    def _pick(self, conn: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if self.current is not context:
            conn.context = self.current
