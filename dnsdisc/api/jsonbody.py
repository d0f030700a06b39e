"""A request's JSON body, read strictly: what every endpoint that takes one (dnsdisc's own and
the Consul subset) gets, or a 400 naming ``body``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from dnsdisc.errors import ValidationError


def _reject_constant(name: str) -> float:
    # json accepts NaN and Infinity by default; they are not numbers any field here allows.
    raise ValueError(f"{name} is not allowed in JSON")


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise ValidationError("body", "a JSON object body is required")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("body", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("body", "the body is nested too deeply") from None
