"""Every error dnsdisc raises on purpose derives from DnsdiscError.

Each class carries what it means on every face as class attributes: ``http_status`` for the
HTTP API, ``rcode`` for a DNS reply, ``exit_status`` for the command line. A subclass inherits
its parent's unless it says otherwise, so a new error (``EtcdRequestError(StoreError)``) maps by
its ancestry, never by a table keyed on exact types; ``http_status_of`` and ``rcode_of`` are the
one place that reads them. Callers raise by meaning and never pick a status themselves.
"""

from __future__ import annotations

from typing import ClassVar

# DNS response codes used here (RFC 1035 4.1.1); the DNS face imports these from its wire module.
_SERVFAIL, _FORMERR = 2, 1


class DnsdiscError(Exception):
    """Base class of dnsdisc's own errors: a server-side fault unless a subclass says otherwise."""

    http_status: ClassVar[int] = 500
    rcode: ClassVar[int] = _SERVFAIL
    exit_status: ClassVar[int] = 1


class ValidationError(DnsdiscError, ValueError):
    """A value from a client or a file is not acceptable; ``field`` names the offending key."""

    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FieldError(DnsdiscError):
    """An error with a message for the client and the ``field`` (key, header) it is about."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFoundError(FieldError, LookupError):
    """The service or instance named does not exist."""

    http_status = 404


class ConflictError(FieldError):
    """The change is well-formed but collides with something the server owns (a static instance,
    a reserved name)."""

    http_status = 409


class AuthError(FieldError):
    """The request may not do this; ``field`` names what it lacked (``Authorization``, or the
    ``service`` it has no right on)."""

    http_status = 403


class UnauthenticatedError(AuthError):
    """No credentials where some are needed, or credentials no token has: 401, with
    ``WWW-Authenticate: Bearer``."""

    http_status = 401


class ThrottledError(AuthError):
    """Too many failed authentications from this client address of late: 429."""

    http_status = 429


class CrossSiteError(FieldError):
    """A request a web page could have made a browser send: a write that is not JSON (415), or
    a ``Host`` this server does not answer to (421, DNS rebinding)."""

    http_status = 415


class MisdirectedError(CrossSiteError):
    http_status = 421


class LimitError(ConflictError):
    """The change would take the registry past one of its configured caps; ``field`` is the
    cap's config key (``limits.instances_per_service``). 409 like any conflict with the server's
    state: it succeeds once room is made or the cap is raised."""


class StoreError(DnsdiscError):
    """The durable store could not commit; nothing was acknowledged. Every kind of it (a
    refusal, a timeout, a lost quorum) is the server's trouble, not the client's: 503."""

    http_status = 503


class StoreUnavailableError(StoreError):
    """A shared store (etcd) cannot be reached within its timeout: the write was not taken and
    may be retried; reads go on from this node's last view."""


class StoreStaleError(StoreUnavailableError):
    """This node knows it cannot reach a shared store (it reports stale): the write was refused
    before anything was sent, so it will never be applied."""

    outcome: ClassVar[str] = "not_applied"


class StoreOutcomeUnknownError(StoreUnavailableError):
    """A write reached (or may have reached) a store member and no answer came in time: it may
    still be applied. The HTTP body says so (``"outcome": "unknown"``); read back to know."""

    outcome: ClassVar[str] = "unknown"


class ConfigError(DnsdiscError):
    """A config or zone file is wrong. The message names the file, the key and what was expected.
    The server stops with exit status 2; a reload that meets one is refused with a 400."""

    http_status = 400
    exit_status = 2

    def __init__(self, source: str, key: str, expected: str) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {expected}")
        self.source = source
        self.key = key
        self.expected = expected


class MalformedQueryError(DnsdiscError):
    """The DNS header is readable but the rest is not a well-formed query: FORMERR."""

    http_status = 400
    rcode = _FORMERR


def http_status_of(exc: BaseException) -> int:
    """The HTTP status for an error: its class's, inherited along the MRO; 500 for a foreign one.
    An error that only says where another happened (a batch's operation) carries it as
    ``cause``, and has its status."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DnsdiscError):
        return http_status_of(cause)
    return exc.http_status if isinstance(exc, DnsdiscError) else 500


def rcode_of(exc: BaseException) -> int:
    """The DNS rcode for an error raised while answering: its class's; SERVFAIL for others."""
    return exc.rcode if isinstance(exc, DnsdiscError) else _SERVFAIL
