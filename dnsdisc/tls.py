"""TLS contexts for our listeners (the HTTP side-port, DNS over TLS), made in one place so every
face refuses the same old protocol versions and reports a bad file the same way.

A context is made from files whenever the config is (re)loaded; a listener swaps to the new one
only once it was made without error, so a bad new certificate leaves the old one serving.
"""

from __future__ import annotations

import ssl

from dnsdisc.errors import ConfigError


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
