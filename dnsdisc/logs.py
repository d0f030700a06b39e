"""Logging setup: one line per event, as text (default) or as JSON for log shippers.

Messages carry strings clients chose (service names, ids, query names, paths, check output), so
both formats escape control characters in the message: a client cannot end a line, forge the
next one or send escape sequences to a terminal. Tracebacks keep their lines (they are ours).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what ends a line or
# drives a terminal somewhere.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape(text: str) -> str:
    """``text`` with control characters written as ``\\n``, ``\\x1b``...: one printable line."""
    return _CONTROLS.sub(_escaped, text)


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = escape(record.message)
        return super().formatMessage(safe)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": escape(record.getMessage()),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would add a line per API request; ours logs the changes themselves.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
