"""Every error dnsdisc raises on purpose derives from DnsdiscError.

The HTTP face maps these classes to statuses in one table (``http_api.STATUS``), the CLI maps
ConfigError to an exit code, so callers raise by meaning and never pick a status themselves.
"""

from __future__ import annotations


class DnsdiscError(Exception):
    """Base class of dnsdisc's own errors."""


class ValidationError(DnsdiscError, ValueError):
    """A value from a client or a file is not acceptable; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFoundError(DnsdiscError, LookupError):
    """The service or instance named does not exist."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ConflictError(DnsdiscError):
    """The change is well-formed but collides with something the server owns (a static instance,
    a reserved name)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StoreError(DnsdiscError):
    """The durable store could not commit; nothing was acknowledged."""


class StoreUnavailableError(StoreError):
    """A shared store (etcd) cannot be reached within its timeout: the write was not taken and
    may be retried; reads go on from this node's last view."""


class ConfigError(DnsdiscError):
    """A config or zone file is wrong. The message names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {expected}")
        self.source = source
        self.key = key
        self.expected = expected
