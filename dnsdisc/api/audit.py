"""The audit trail (``audit_log: PATH``): one JSON line per write attempt on the HTTP API, allowed
or denied — when, who (the token's name or the certificate's subject, never a secret), from
where, what (method, path, service, instance), the status, and for a change that succeeded the
instance (or service) before and after.

A line is written with one ``write(2)`` on a file opened for appending, before the response is
sent: once a client has its 2xx, the line is in the kernel's hands, so a ``kill -9`` of the
server cannot lose it. The file is created with mode 0600 and reopened by ``reopen`` (a reload,
SIGHUP), so a rotated file is let go of. With etcd, each node audits the writes it accepted.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = self._open()
        self.written = 0
        self.failures = 0

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # a file made before, by hand or another umask, is made private
        return fd

    def reopen(self) -> None:
        """Let go of a rotated file and start the one at ``path`` (made if missing); if that
        cannot be opened, say so and keep writing to the old one."""
        try:
            fd = self._open()
        except OSError as exc:
            log.error("audit log %s: cannot reopen, writing on to the old file: %s", self.path, exc)
            return
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        os.close(self._fd)

    def record(self, entry: dict[str, Any]) -> None:
        """One line, whole: O_APPEND keeps concurrent lines apart; a failure is logged and
        counted, never raised into the request (the change has been made)."""
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry}
        data = (json.dumps(line, separators=(",", ":"), default=str) + "\n").encode()
        try:
            os.write(self._fd, data)
            self.written += 1
        except OSError as exc:
            self.failures += 1
            log.error("audit log %s: cannot write: %s", self.path, exc)
