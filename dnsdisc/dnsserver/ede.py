"""Extended DNS Errors (RFC 8914): why a reply says what it says, as an EDNS option.

Only replies to queries with EDNS carry one (a client without EDNS has no OPT record to read
it from). The codes dnsdisc gives, and when:

- ``NOT_AUTHORITATIVE`` (20) with REFUSED: the name is outside our zones and is not forwarded;
- ``PROHIBITED`` (18) with REFUSED: recursion was asked by a client ``recursion_allow`` leaves
  out;
- ``NO_REACHABLE_AUTHORITY`` (22) / ``NETWORK_ERROR`` (23) with SERVFAIL: no recursor answered
  in time / the recursors could not be reached (refused, unreachable);
- ``STALE_ANSWER`` (3): the answer comes from data this node cannot refresh now (the shared
  store is out of reach);
- ``OTHER`` (0) with the text ``no healthy instance``: NODATA because every instance of the
  service is out of the hand-out (health). RFC 8914 has no code for it: the closest, Filtered
  (17) and Not Ready (14), say something else to a client (a blocklist; a server starting), so
  the text carries the meaning, under "Other" as the RFC provides;
- ``OTHER`` (0) with the text ``signing is over its budget``, with SERVFAIL: the answer to a DO
  query needs new DNSSEC signatures and this process has made as many as ``dnssec.max_signatures``
  allows this second (signing.py). No code fits: Not Ready (14) says the server is starting,
  and the others are a resolver's (DNSSEC Bogus, Signature Expired...).
"""

from __future__ import annotations

import struct

OPTION = 15  # the EDE option code

OTHER = 0
STALE_ANSWER = 3
PROHIBITED = 18
NOT_AUTHORITATIVE = 20
NO_REACHABLE_AUTHORITY = 22
NETWORK_ERROR = 23

_HEAD = struct.Struct("!HHH")  # option code, option length, INFO-CODE


def option(code: int, text: str = "") -> bytes:
    """The whole option (code, length, INFO-CODE, EXTRA-TEXT in UTF-8, not NUL-terminated as
    RFC 8914 2 asks)."""
    extra = text.encode()
    return _HEAD.pack(OPTION, 2 + len(extra), code) + extra


# The options made on the answer path, made once.
NOT_AUTHORITATIVE_OPTION = option(NOT_AUTHORITATIVE)
PROHIBITED_OPTION = option(PROHIBITED, "recursion is not offered to this client")
TRANSFER_OPTION = option(PROHIBITED, "zone transfers are over TCP only")
STALE_OPTION = option(STALE_ANSWER, "the shared store is unreachable")
UNHEALTHY_OPTION = option(OTHER, "no healthy instance")
SIGNING_OPTION = option(OTHER, "signing is over its budget")
