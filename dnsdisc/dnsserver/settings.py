"""What the DNS face is told: listeners, TCP limits, UDP batching, forwarding, rate limit and
query log. Built from the config by the composition root and, with workers, sent to each worker
process, which gets nothing else of the config (no API token, no store credentials).

The log level and format ride along because a worker process sets up its own logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dnsdisc.netaddr import HostPort, NetRules
from dnsdisc.tls import TlsFiles

if TYPE_CHECKING:
    # Only named here: importing it loads dnspython's DNSSEC code and cryptography, which the
    # client commands (that read the config) must not pay for.
    from dnsdisc.dnsserver.dnssec import ZoneKey

# Who may use ``recursors``: loopback and private ranges (RFC 1918, shared 100.64/10, ULA,
# link-local), as a resolver's default allow list would; never the whole Internet.
RECURSION_ALLOW = (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10",
)  # fmt: skip

# Bytes of replies (with their keys and orders) one process keeps by default. 64 MiB: a
# question's layout with its name listed takes ~1.8 kB, so 10,000 services' A and SRV (20,000
# questions) did not fit in 32 MiB beside their named queries, and each pass over them evicted
# and encoded again (bench/spread.py: 77,667 evictions, CPU per query 1.12x that of 64 MiB).
REPLY_CACHE_BYTES = 64 << 20
# New DNSSEC signatures one DNS process may make per second by default (dnsserver/signing.py):
# about half of one core (an NSEC's costs ~460 µs with dnspython; at 2,000 a second a flood of
# names that do not exist took the whole core, docs/benchmarks.md). Kept ones cost nothing.
MAX_SIGNATURES = 1000


def _recursion_allow() -> NetRules:
    return NetRules.parse(RECURSION_ALLOW, "", "recursion_allow")


@dataclass(frozen=True, slots=True)
class RateLimit:
    responses_per_second: int
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56


# TSIG algorithms a transfer key may name (RFC 8945 6; the names as dnspython and BIND spell
# them). HMAC-MD5 is left out: deprecated (RFC 8945 6) and refused by current secondaries.
TSIG_ALGORITHMS = ("hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str  # a domain name, lower-case, no trailing dot
    algorithm: str  # one of TSIG_ALGORITHMS
    secret: bytes = field(repr=False)


def _nobody() -> NetRules:
    return NetRules(())


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Zone transfers (AXFR/IXFR) and NOTIFY: who may transfer without a key (``allow``), the
    keys that let anyone holding one transfer (TSIG), the secondaries told of changes, and the
    name of the catalog zone listing our zones (None: none served)."""

    allow: NetRules = field(default_factory=_nobody)
    tsig_keys: tuple[TsigKey, ...] = ()
    notify: tuple[HostPort, ...] = ()
    catalog: str | None = None


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 8053),)
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    tcp_max_connections_per_client: int = 20
    # DNS over TLS (RFC 7858): these addresses answer as TCP does, inside TLS made from ``tls``.
    tls_listen: tuple[HostPort, ...] = ()
    tls: TlsFiles | None = None
    # DNS cookies (RFC 7873, server cookies as RFC 9018 makes them) with this 16-byte secret.
    cookies: bool = True
    cookie_secret: bytes = field(default=b"", repr=False)
    any_full: bool = False
    # UDP read and answered in batches (recvmmsg/sendmmsg) where the platform has them.
    udp_batch: bool = True
    # Bytes of queries each UDP socket may hold while its process is busy or not scheduled; 0: the
    # system's default (often 208 KiB: a few hundred queries, a few tens of ms at 10k/s).
    udp_receive_buffer: int = 1 << 20
    # Bytes of encoded replies (with their keys) each DNS process keeps; 0: none.
    reply_cache_bytes: int = REPLY_CACHE_BYTES
    # Records of a balanced A/AAAA answer over UDP when its service sets no max_answers; 0: no cap.
    # 16 AAAA records fit a 512-byte reply, so a capped address answer needs no TC.
    udp_answer_limit: int = 16
    recursors: tuple[HostPort, ...] = ()
    recursor_timeout: float = 2.0
    recursion_allow: NetRules = field(default_factory=_recursion_allow)
    rate_limit: RateLimit | None = None
    query_log: bool = False
    # NSID (RFC 5001): this text, with the answering process's name, when a query asks for it.
    nsid: str | None = None
    transfer: TransferSettings = field(default_factory=TransferSettings)
    # DNSSEC: the zone keys answers to DO queries are signed with (none: unsigned), and the TTL
    # of their DNSKEY RRset. Read from the data directory by the main process (server/dnssec.py).
    dnssec_keys: tuple[ZoneKey, ...] = field(default=(), repr=False)
    dnskey_ttl: int = 3600
    # The largest TTL a signed record is given (dnssec.zone_max_ttl): a ZSK rollover keeps the
    # old key published that long after its last signature, so nothing may be cached longer.
    zone_max_ttl: int = 86400
    # s an RRSIG is valid for; a kept one is made again after half of it (dnssec.Signer).
    signature_validity: int = 14 * 86400
    # New signatures each DNS process may make per second (signing.Budget); 0: no bound.
    dnssec_max_signatures: int = MAX_SIGNATURES
    log_level: str = "info"
    log_format: str = "text"
