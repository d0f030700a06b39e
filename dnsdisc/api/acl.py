"""Who may do what on the HTTP API: tokens with rules (``acl.tokens``), the rules of requests
without a token (``acl.anonymous``), and the legacy ``http.token``. Pure: no aiohttp, no I/O.

A rule grants, on the services whose name matches a glob, ``read`` (the GET endpoints),
``write`` (read, and register, deregister, heartbeat, maintenance and settings) or ``deny``
(nothing); the first rule whose glob matches a service decides for it, as in ``check_networks``.
``operator`` grants reload and every other server-wide action; ``metrics`` grants ``/metrics``.

Secrets are kept as their SHA-256 only and compared in constant time; a token is known by its
``name`` everywhere else (logs, errors, the audit trail).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Access = Literal["read", "write", "deny"]
ACCESS: tuple[Access, ...] = ("read", "write", "deny")


@dataclass(frozen=True, slots=True)
class Rule:
    services: str | None = None  # a glob on service names; None: the rule is not about services
    access: Access = "read"
    operator: bool = False
    metrics: bool = False

    def matches(self, service: str) -> bool:
        return self.services is not None and fnmatch.fnmatchcase(service, self.services)


@dataclass(frozen=True, slots=True)
class Rights:
    """What one caller may do: ``rules`` in order."""

    rules: tuple[Rule, ...]

    def access(self, service: str) -> Access:
        for rule in self.rules:
            if rule.matches(service):
                return rule.access
        return "deny"

    def can_read(self, service: str) -> bool:
        return self.access(service) in ("read", "write")

    def can_write(self, service: str) -> bool:
        return self.access(service) == "write"

    def can_read_any(self) -> bool:
        """Whether some rule lets the caller read some service (a template query's right to
        be read: it names services that may not exist yet)."""
        return any(rule.services is not None and rule.access != "deny" for rule in self.rules)

    @property
    def operator(self) -> bool:
        return any(rule.operator for rule in self.rules)

    @property
    def metrics(self) -> bool:
        return any(rule.metrics for rule in self.rules)


EVERYTHING = Rights((Rule("*", "write", operator=True, metrics=True),))
READ_ALL = Rights((Rule("*", "read", metrics=True),))
NOTHING = Rights(())


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret_sha256: bytes = b""  # 32 bytes; empty: the token has no secret (certificates only)
    rights: Rights = NOTHING

    def __repr__(self) -> str:
        return f"Token({self.name!r})"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class Acl:
    """``tokens``, and ``anonymous``: the rights of a request that presents none. Without an
    ``acl`` section the config makes one from ``http.token`` (see ``legacy``)."""

    tokens: tuple[Token, ...] = ()
    anonymous: Rights = NOTHING

    def by_secret(self, secret: str) -> Token | None:
        """The token whose secret this is. Every token's hash is compared, in constant time,
        so how long it takes says nothing of which (or whether one) matched."""
        given = digest(secret)
        found = None
        for token in self.tokens:
            if token.secret_sha256 and hmac.compare_digest(given, token.secret_sha256):
                found = token
        return found

    def by_name(self, names: tuple[str, ...]) -> Token | None:
        """The token named like one of a verified client certificate's names (CN, DNS SANs)."""
        for token in self.tokens:
            if token.name in names:
                return token
        return None

    @classmethod
    def legacy(cls, token: str | None) -> Acl:
        """The rules before ``acl``: without ``http.token`` anyone may do anything (the API is
        meant for loopback); with it, anyone may read and the token may do everything."""
        if token is None:
            return cls((), EVERYTHING)
        return cls((Token("token", digest(token), EVERYTHING),), READ_ALL)
