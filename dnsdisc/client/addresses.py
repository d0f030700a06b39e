"""Where the client looks: ``HOST:PORT`` with a default port, and the HTTP API's base URL.

Not ``dnsdisc.netaddr.parse_hostport``: that one names a config key and needs a port; these
take a default port and raise ValueError, which the CLI reports as a usage error."""

from __future__ import annotations


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, or a host alone (``default_port``). ValueError otherwise."""
    expected = (
        f"expected HOST:PORT, e.g. 127.0.0.1:{default_port} or [::1]:{default_port}, got {text!r}"
    )
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(expected)
        port_text = rest[1:] if rest else str(default_port)
    elif text.count(":") > 1:
        raise ValueError(f"IPv6 hosts need brackets, e.g. [::1]:{default_port}; got {text!r}")
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = str(default_port)
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(expected)
    return host, int(port_text)


def base_url(http: str) -> str:
    """The API's base URL from ``HOST:PORT`` (plain HTTP) or ``http(s)://HOST:PORT``."""
    scheme, sep, rest = http.strip().partition("://")
    if not sep:
        scheme, rest = "http", http
    if scheme not in ("http", "https"):
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT, got {http!r}")
    rest = rest.rstrip("/")
    if "/" in rest:
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT without a path, got {http!r}")
    host, port = split_hostport(rest, 8054 if scheme == "http" else 443)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"
