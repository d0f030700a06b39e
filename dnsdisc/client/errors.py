"""The client's errors, all ``ClientError``s, and the few words that say why a request got no
reply (shared by the HTTP API and the DNS lookups)."""

from __future__ import annotations

import http.client
import socket
import urllib.error

from dnsdisc.errors import DnsdiscError


class ClientError(DnsdiscError):
    """A request the server refused (``status`` its HTTP status, ``field`` the key it named), or
    one that could not be made at all (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, field: str = "", url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.url = url

    def __str__(self) -> str:
        if not self.status:
            return self.message
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message} (HTTP {self.status})"


class Unreachable(ClientError):
    """No HTTP reply: connection refused, timed out, name not found, not an HTTP server."""


class ResolveError(ClientError):
    """A DNS lookup failed (timeout, SERVFAIL, REFUSED), or ``pick`` found nothing to pick."""


def reason_of(exc: BaseException) -> str:
    """Why a request got no reply, in a few words."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP reply ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
