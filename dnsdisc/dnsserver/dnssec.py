"""Online DNSSEC signing (RFC 4033-4035) of answers whose records change per query.

A balanced answer is a subset of an RRset in some order. An RRSIG covers an RRset in canonical
order (RFC 4034 6.3), so the order does not matter, but each distinct subset needs its own
signature: signatures are made when a subset is first answered and kept by the exact records
they cover (``Signer.rrsig``), so a balanced service costs one signature per subset it hands
out, then none. The cryptography (dnspython's key classes on ``cryptography``, as
``dns.dnssec.sign`` uses them) and the canonical rdata forms are dnspython's; the data an RRSIG
signs is put together here, in one pass (``_signed_records``); this module decides what to sign,
with which key, for how long.

Keys: a KSK (flags 257, the SEP bit: the parent's DS and a validator's trust anchor name it)
signs the DNSKEY RRset, and CDS and CDNSKEY (RFC 7344 4.1: a parent takes them signed by a
key its DS names); a ZSK (256) signs everything else. A key is ``published`` (in DNSKEY,
not signing: a new ZSK waiting for caches to learn it), ``active`` (signing), or ``retired``
(in DNSKEY, not signing: an old ZSK kept until the signatures it made have expired from
caches). ``server/dnssec.py`` makes the keys, keeps them, and moves them through a rollover.

Validity: inception an hour in the past (clock skew), rounded down to the hour so that every
process of a node, and every node, makes signatures with the same validity in the same hour;
expiration ``VALIDITY`` later; a cached signature is made again once half of its validity has
passed.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.dnssec
import dns.dnssecalgs
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
from cryptography.hazmat.primitives import serialization

from dnsdisc.dnsserver import wire

ECDSAP256SHA256, ED25519 = 13, 15
ALGORITHMS = {"ECDSAP256SHA256": ECDSAP256SHA256, "ED25519": ED25519}
PUBLISHED, ACTIVE, RETIRED = "published", "active", "retired"
RRSIG, NSEC, DNSKEY, CDS, CDNSKEY = 46, 47, 48, 59, 60
# What the KSK signs: DNSKEY, and CDS/CDNSKEY, which a parent takes only signed by a key its
# DS RRset names (RFC 7344 4.1), the KSK; the ZSK signs the rest.
KSK_SIGNS = frozenset({DNSKEY, CDS, CDNSKEY})
NXNAME = 128  # RFC 9824: the NSEC of a name that does not exist says so with this type
VALIDITY = 14 * 86400  # s a signature is valid for, by default (dnssec.signature_validity)
SKEW = 3600  # s its inception lies in the past
CACHE_ENTRIES = 200_000  # signatures kept; past it the cache starts again
# A signed zone's signatures (zonesign.py), kept apart from the answers' cache: (owner, type)
# -> the records signed, until when the signatures are kept, the RRSIG bodies, and the mark of
# the latest transfer that carried them (``zone_transfer``).
ZoneKept = dict[tuple[bytes, int], tuple[frozenset[bytes], float, list[bytes], int]]
_MARKS = itertools.count(1)

# dnspython's key handling, untyped there.
_MAKE_DNSKEY: Any = dns.dnssec.make_dnskey
_ALGORITHM_CLS: Any = dns.dnssecalgs.get_algorithm_cls_from_dnskey
_RRSIG_HEAD = struct.Struct("!HBBIIIH")  # type covered .. key tag (RFC 4034 3.1)


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """One signing key as it is kept and sent to the DNS processes."""

    private: bytes = b""  # PKCS#8 DER
    algorithm: int = ECDSAP256SHA256
    ksk: bool = False
    state: str = ACTIVE
    created: float = 0.0  # when it was made (seconds since the epoch)
    changed: float = 0.0  # when it entered ``state``


class _Loaded:
    """A key ready to sign: its private key object, its DNSKEY rdata and key tag."""

    def __init__(self, key: ZoneKey) -> None:
        self.key = key
        self.private: Any = serialization.load_der_private_key(key.private, password=None)
        self.dnskey: Any = _MAKE_DNSKEY(
            self.private.public_key(), key.algorithm, flags=257 if key.ksk else 256
        )
        self.rdata: bytes = self.dnskey.to_digestable()
        self.tag: int = dns.dnssec.key_id(self.dnskey)
        # What signs: dnspython's, as dns.dnssec.sign uses it (ECDSA deterministic from 2.7).
        self.signing: Any = _ALGORITHM_CLS(self.dnskey)(key=self.private)


class Signer:
    """Signs RRsets with the active keys, keeping what it signed by the records it covered."""

    def __init__(
        self,
        keys: Sequence[ZoneKey],
        clock: Any = time.time,
        previous: Signer | None = None,
        max_ttl: int = 0,
        validity: int = VALIDITY,
    ) -> None:
        self.keys = [_Loaded(k) for k in keys]
        self.clock = clock
        self.max_ttl = max_ttl  # 0: TTLs as they are
        self.validity = validity  # s a signature is valid for
        self.cache: dict[tuple[bytes, int, frozenset[bytes]], tuple[float, list[bytes]]] = {}
        # By apex, the signatures of the RRsets its signed transfers carry (``zone_rrsigs``):
        # one zone's worth, without the answers' bound. A zone that needs more signatures than
        # that cache keeps (100,000 instances: 305,008) was signed again on every transfer, and
        # each transfer emptied the cache the answers use.
        self.zones: dict[bytes, ZoneKept] = {}
        self.signed = 0  # signatures made (the cache's misses)
        if (
            previous is not None
            and previous.signing() == self.signing()
            and (previous.max_ttl, previous.validity) == (max_ttl, validity)
        ):
            # A step that changed only which keys are published (a rollover's first and last):
            # every signature made is still right; the DNSKEY RRset's differs by its content.
            self.cache, self.zones, self.signed = previous.cache, previous.zones, previous.signed

    def capped(self, body: bytes) -> bytes:
        """A record body (type, class, TTL, length, rdata) with its TTL at most ``max_ttl``,
        the largest a rollover waits for (as BIND caps dynamic updates at max-zone-ttl): a
        signed record must not stay in caches after the key that signed it is gone."""
        cap = self.max_ttl
        if cap and int.from_bytes(body[4:8]) > cap:
            return body[:4] + cap.to_bytes(4) + body[8:]
        return body

    def signing(self) -> frozenset[bytes]:
        """The private halves of the keys that sign."""
        return frozenset(k.key.private for k in self.keys if k.key.state == ACTIVE)

    @property
    def active(self) -> bool:
        return any(k.key.state == ACTIVE for k in self.keys)

    # -- the keys' own records -----------------------------------------------------------------

    def dnskey_bodies(self, ttl: int) -> list[bytes]:
        """The DNSKEY RRset: every key but those not yet made public (all states are)."""
        return [wire.rr_body(DNSKEY, ttl, k.rdata) for k in self.keys]

    def cds_bodies(self, apex: bytes, ttl: int) -> tuple[list[bytes], list[bytes]]:
        """CDS (SHA-256 digest) and CDNSKEY records of the active KSKs (RFC 7344): what the
        parent's DS should say."""
        name = dns.name.from_wire(apex, 0)[0]
        cds, cdnskey = [], []
        for k in self.keys:
            if k.key.ksk and k.key.state == ACTIVE:
                ds = dns.dnssec.make_ds(name, k.dnskey, "SHA256")
                cds.append(wire.rr_body(CDS, ttl, ds.to_digestable()))
                cdnskey.append(wire.rr_body(CDNSKEY, ttl, k.rdata))
        return cds, cdnskey

    def ds_texts(self, apex_text: str) -> list[str]:
        """The DS records of the active KSKs for the parent, in zone-file form."""
        name = dns.name.from_text(apex_text)
        out = []
        for k in self.keys:
            if k.key.ksk and k.key.state == ACTIVE:
                ds = dns.dnssec.make_ds(name, k.dnskey, "SHA256")
                out.append(f"{name.to_text()} IN DS {ds.to_text()}")
        return out

    # -- signing -------------------------------------------------------------------------------

    def held(self, owner: bytes, rtype: int, bodies: Sequence[bytes]) -> list[bytes] | None:
        """The RRSIG bodies kept for this exact RRset (as ``rrsigs`` would return them), or
        None when ``rrsigs`` would have to sign: what costs nothing asked without signing."""
        records = frozenset(bodies)
        now = self.clock()
        held = self.cache.get((owner, rtype, records))
        if held is not None and held[0] > now:
            return held[1]
        for kept in self.zones.values():
            entry = kept.get((owner, rtype))
            if entry is not None and entry[1] > now and entry[0] == records:
                return entry[2]
        return None

    def rrsigs(self, owner: bytes, apex: bytes, rtype: int, bodies: Sequence[bytes]) -> list[bytes]:
        """RRSIG record bodies covering the RRset of ``owner`` (lower-case wire) and ``rtype``
        made of ``bodies`` (record bodies: type, class, TTL, length, rdata), one per active key
        of the right kind (the KSKs for DNSKEY, CDS and CDNSKEY, the ZSKs for the rest)."""
        records = frozenset(bodies)
        cache_key = (owner, rtype, records)
        now = self.clock()
        held = self.cache.get(cache_key)
        if held is not None and held[0] > now:
            return held[1]
        kept = self.zones.get(apex)
        entry = kept.get((owner, rtype)) if kept is not None else None
        if entry is not None and entry[1] > now and entry[0] == records:
            return entry[2]  # a whole RRset a signed transfer carries
        until, out = self._sign(owner, apex, rtype, bodies, now)
        if len(self.cache) >= CACHE_ENTRIES:
            self.cache.clear()
        self.cache[cache_key] = (until, out)
        return out

    @staticmethod
    def zone_transfer() -> int:
        """The mark of a signed transfer starting now (``zone_rrsigs``, ``zone_signed``): later
        transfers have larger ones."""
        return next(_MARKS)

    def zone_rrsigs(
        self, owner: bytes, apex: bytes, rtype: int, bodies: Sequence[bytes], mark: int
    ) -> list[bytes]:
        """``rrsigs`` for the signed transfer ``mark`` of ``apex``'s zone (zonesign.py): kept by
        (owner, type) in ``zones``, apart from the answers' cache (taken from it when an answer
        signed the same records), replaced when the records change; ``zone_signed`` then drops
        what the zone no longer carries."""
        records = frozenset(bodies)
        now = self.clock()
        kept = self.zones.setdefault(apex, {})
        key = (owner, rtype)
        entry = kept.get(key)
        if entry is not None and entry[1] > now and entry[0] == records:
            if entry[3] < mark:
                kept[key] = (records, entry[1], entry[2], mark)
            return entry[2]
        held = self.cache.get((owner, rtype, records))
        until, out = (
            held
            if held is not None and held[0] > now
            else self._sign(owner, apex, rtype, bodies, now)
        )
        if entry is None or entry[3] <= mark:  # not over what a later transfer carries
            kept[key] = (records, until, out, mark)
        return out

    def zone_signed(self, apex: bytes, mark: int, carried: int) -> None:
        """The signed transfer ``mark`` of ``apex``'s zone went out whole, ``carried`` RRsets:
        the signatures of those neither it nor a later transfer carried are not kept for it any
        longer (their names gone, or their records changed)."""
        kept = self.zones.get(apex)
        if kept is not None and len(kept) > carried:
            self.zones[apex] = {key: entry for key, entry in kept.items() if entry[3] >= mark}

    def _sign(
        self, owner: bytes, apex: bytes, rtype: int, bodies: Sequence[bytes], now: float
    ) -> tuple[float, list[bytes]]:
        """New signatures of the RRset, and until when they may be kept."""
        inception = int(now - SKEW) // 3600 * 3600
        expiration = inception + self.validity
        ttl = int.from_bytes(bodies[0][4:8]) if bodies else 0
        records = _signed_records(owner, rtype, ttl, bodies)
        signer = apex.lower()
        labels = _labels(owner)
        out = []
        for k in self.keys:
            if k.key.state != ACTIVE or k.key.ksk != (rtype in KSK_SIGNS):
                continue
            head = _RRSIG_HEAD.pack(
                rtype, k.key.algorithm, labels, ttl, expiration, inception, k.tag
            )
            head += signer
            signature = k.signing.sign(head + records)
            out.append(wire.rr_body(RRSIG, ttl, head + signature))
            self.signed += 1
        # Made again once half its validity has passed: never served within days of expiry.
        return inception + self.validity / 2, out


def _labels(owner: bytes) -> int:
    """An RRSIG's Labels field for the wire name ``owner``: its labels but the root, and but a
    leading ``*`` (RFC 4034 3.1.3)."""
    count = pos = 0
    while owner[pos]:
        count += 1
        pos += owner[pos] + 1
    return count - 1 if owner[:2] == b"\x01*" else count


def _signed_records(owner: bytes, rtype: int, ttl: int, bodies: Sequence[bytes]) -> bytes:
    """The RRset part of the data an RRSIG signs (RFC 4034 3.1.8.1): each record in canonical
    form (owner lower-cased, the original TTL, rdata as 6.2 has it: dnspython's digestable
    form), each once, in canonical order (6.3). Joined in one pass: dnspython's sign() appends
    to a bytes object record by record, quadratic in the RRset (15 s for the SRV RRset of a
    service of 20,000 instances, which a zone transfer signs whole)."""
    kind = dns.rdatatype.RdataType.make(rtype)
    forms = {
        dns.rdata.from_wire(
            dns.rdataclass.IN, kind, body, 10, int.from_bytes(body[8:10])
        ).to_digestable()
        for body in bodies
    }
    fixed = owner.lower() + struct.pack("!HHI", rtype, dns.rdataclass.IN, ttl)
    return b"".join(fixed + len(form).to_bytes(2) + form for form in sorted(forms))


def nsec_rdata(owner: bytes, types: Sequence[int]) -> bytes:
    """An NSEC rdata for compact denial (RFC 9824): the next name is the owner with a
    ``\\000`` label in front, so that it covers nothing but the owner; the bitmap lists
    ``types`` (RRSIG and NSEC added)."""
    next_name = b"\x01\x00" + owner
    return next_name + _bitmap(sorted({*types, RRSIG, NSEC}))


def _bitmap(types: Sequence[int]) -> bytes:
    """The type bitmap of RFC 4034 4.1.2: windows of 256 types, each its used octets."""
    windows: dict[int, bytearray] = {}
    for t in types:
        window, low = divmod(t, 256)
        octets = windows.setdefault(window, bytearray(32))
        octets[low // 8] |= 0x80 >> (low % 8)
    out = bytearray()
    for window in sorted(windows):
        octets = windows[window].rstrip(b"\x00")
        out += bytes([window, len(octets)]) + octets
    return bytes(out)


def new_key(algorithm: int, ksk: bool, now: float, state: str = ACTIVE) -> ZoneKey:
    """A fresh key (``cryptography`` makes it)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    private: Any
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"algorithm {algorithm} is not offered")
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ZoneKey(der, algorithm, ksk, state, now, now)


def key_tag(key: ZoneKey) -> int:
    return _Loaded(key).tag


def fingerprint(key: ZoneKey) -> str:
    """A short name for a key in logs and the API (not its tag: tags may collide), made from
    its public half."""
    return base64.b32encode(hashlib.sha256(_Loaded(key).rdata).digest()[:5]).decode().lower()
