"""An instance's role in its service's answers, as health decides it and the answer builder
reads it: left out, handed out, or handed out only behind the healthy ones (a service failing
open, where the fallback members go last and, in SRV, at a worse priority)."""

from __future__ import annotations

OUT, IN, FALLBACK = 0, 1, 2
