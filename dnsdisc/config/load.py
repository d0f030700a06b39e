"""Configuration: YAML file, environment and flags -> one frozen Config, by the schema's table.

Precedence: command-line flags, then the environment (DNSDISC_TOKEN), then the file, then the
defaults below. Every error names the file, the key and what was expected, and is raised as
ConfigError; only the CLI turns it into an exit status.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dnsdisc.api.acl import EVERYTHING, NOTHING, Acl, Rights, Token, digest
from dnsdisc.api.settings import HttpLimits, Identity
from dnsdisc.config import schema
from dnsdisc.config.cpus import auto_workers
from dnsdisc.config.parsers import At, check_keys, mapping
from dnsdisc.dnsserver.settings import DnsSettings, RateLimit, TransferSettings, TsigKey
from dnsdisc.errors import ConfigError
from dnsdisc.health.settings import HealthSettings
from dnsdisc.netaddr import (
    DEFAULT_DNS,
    DEFAULT_DOMAIN,
    DEFAULT_HTTP,
    HostPort,
    NetRules,
    is_loopback,
    parse_hostport,
)
from dnsdisc.registry.limits import Limits
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.registry.queries import QueryDef
from dnsdisc.store.settings import EtcdSettings
from dnsdisc.tls import TlsFiles

# A host name's first label that can be a Consul node name as it is.
_NODE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# The server listens where its clients look by default.
_DNS_LISTEN = parse_hostport(DEFAULT_DNS, "", "dns.listen")
_HTTP_LISTEN = parse_hostport(DEFAULT_HTTP, "", "http.listen")
# The parts' own settings hold the defaults; each Config field below that mirrors one takes it
# from there, so that a default is written once.
_DNS = DnsSettings()
_HTTP = HttpLimits()
# The cookie secret of this start when none is configured: every DNS process gets it.
_START_SECRET = os.urandom(16)
# NSD's rrl-ratelimit default: identical responses per second per client prefix.
DEFAULT_RRL_RATE = 200


@dataclass(frozen=True, slots=True)
class Config:
    """The whole config, frozen. The field defaults are the config's defaults."""

    domain: str = DEFAULT_DOMAIN
    dns_listen: tuple[HostPort, ...] = (_DNS_LISTEN,)
    # DNS over TLS (RFC 7858): none by default; given, dns_tls names the certificate.
    dns_tls_listen: tuple[HostPort, ...] = _DNS.tls_listen
    dns_tls: TlsFiles | None = _DNS.tls
    # DNS cookies (RFC 7873/9018); the secret is the same in every DNS process of this server,
    # and on every node that is given the same one. None: random, made once per start.
    dns_cookies: bool = _DNS.cookies
    cookie_secret: bytes | None = field(default=None, repr=False)
    http_listen: HostPort = _HTTP_LISTEN
    token: str | None = field(default=None, repr=False)
    # Tokens with rules, and the rules of requests without a token (None: acl not configured).
    acl_tokens: tuple[Token, ...] = ()
    acl_anonymous: Rights | None = None
    # Names a request's Host may carry (IP literals always may); None: see allowed_hosts().
    http_allowed_hosts: tuple[str, ...] | None = None
    # Listening beyond loopback without any authentication is refused unless this says so.
    http_allow_insecure: bool = False
    acl_given: bool = False  # an acl section holds either key: its rules replace the legacy ones
    # The HTTP API over TLS: None is plain HTTP.
    http_tls: TlsFiles | None = None
    # The HTTP port's limits (``api.guard``): a request's headers, then its body, are due within
    # these seconds; an idle kept-alive connection is closed after keepalive_timeout; connections
    # over a cap are closed at once.
    http_header_timeout: float = _HTTP.header_timeout
    http_body_timeout: float = _HTTP.body_timeout
    http_keepalive_timeout: float = _HTTP.keepalive_timeout
    http_max_connections: int = _HTTP.max_connections
    http_max_connections_per_client: int = _HTTP.max_connections_per_client
    storage: str = "sqlite"
    data_dir: Path = Path("dnsdisc-data")
    consul_datacenter: str = "dc1"
    consul_node: str | None = None  # None: see consul_identity()
    # The audit trail of HTTP write attempts (api.audit); None: none kept.
    audit_log: Path | None = None
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    zones_dir: Path = Path("zones")
    zones_dir_required: bool = False
    log_level: str = _DNS.log_level
    log_format: str = _DNS.log_format
    query_log: bool = _DNS.query_log
    ns_label: str = "ns"
    ns_addresses: tuple[str, ...] = ()
    hostmaster: str = "hostmaster"
    negative_ttl: int = 5
    reverse_zones: tuple[str, ...] = ()
    # Zone name -> its networks, as (zone, network) pairs: where clients are (locality).
    locality_networks: tuple[tuple[str, str], ...] = ()
    tcp_idle_timeout: float = _DNS.tcp_idle_timeout
    tcp_max_connections: int = _DNS.tcp_max_connections
    tcp_max_connections_per_client: int = _DNS.tcp_max_connections_per_client
    # ANY: "minimal" (one RRset, RFC 8482) or "full" (every RRset of the name).
    dns_any: str = "minimal"
    udp_batch: bool = _DNS.udp_batch
    udp_receive_buffer: int = _DNS.udp_receive_buffer
    reply_cache_bytes: int = _DNS.reply_cache_bytes
    udp_answer_limit: int = _DNS.udp_answer_limit
    # DNS worker processes sharing the DNS port; 0: DNS is answered in the main process.
    workers: int = field(default_factory=auto_workers)
    event_loop: str = "auto"
    recursors: tuple[HostPort, ...] = ()
    recursor_timeout: float = _DNS.recursor_timeout
    recursion_allow: NetRules = _DNS.recursion_allow
    # NSID text (RFC 5001); None: no NSID option in replies.
    dns_nsid: str | None = None
    # Zone transfers and NOTIFY (dnsserver.settings.TransferSettings): nobody without a key.
    transfer_allow: NetRules = _DNS.transfer.allow
    transfer_tsig_keys: tuple[TsigKey, ...] = ()
    transfer_notify: tuple[HostPort, ...] = ()
    transfer_catalog: str | None = None  # "name." as the config spells domains
    # DNSSEC (dnsserver/dnssec.py, server/dnssec.py): online signing with keys made at first
    # start. A ZSK rollover waits dnskey_ttl + propagation_delay before the new key signs, and
    # zone_max_ttl + propagation_delay more before the old one leaves (RFC 7583's timings, named
    # as Knot names them): the largest TTL a service may have is 86400.
    dnssec_enabled: bool = False
    dnssec_algorithm: str = "ECDSAP256SHA256"
    dnssec_dnskey_ttl: int = 3600
    dnssec_propagation_delay: int = 3600
    dnssec_zone_max_ttl: int = 86400
    # s an RRSIG is valid for (Knot's rrsig-lifetime); made again after half of it.
    dnssec_signature_validity: int = 14 * 86400
    # New signatures each DNS process may make per second (dnsserver/signing.py); 0: no bound.
    dnssec_max_signatures: int = _DNS.dnssec_max_signatures
    # None: not configured, on by default when DNS listens beyond loopback (see dns_settings);
    # responses_per_second 0: configured off.
    rate_limit: RateLimit | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    limits: Limits = field(default_factory=Limits)
    defaults: ServiceSettings = field(default_factory=lambda: ServiceSettings("default"))
    services: Mapping[str, ServiceSettings] = field(default_factory=dict)
    # Named queries defined in the file (registry/queries.py): read-only over the API.
    queries: tuple[QueryDef, ...] = ()
    source: str = ""

    def dns_settings(self) -> DnsSettings:
        """What the DNS face needs of this config, and all that a worker process is sent."""
        return DnsSettings(
            listen=self.dns_listen,
            tls_listen=self.dns_tls_listen,
            tls=self.dns_tls,
            cookies=self.dns_cookies,
            cookie_secret=self.cookie_secret or _START_SECRET,
            tcp_idle_timeout=self.tcp_idle_timeout,
            tcp_max_connections=self.tcp_max_connections,
            tcp_max_connections_per_client=self.tcp_max_connections_per_client,
            any_full=self.dns_any == "full",
            udp_batch=self.udp_batch,
            udp_receive_buffer=self.udp_receive_buffer,
            reply_cache_bytes=self.reply_cache_bytes,
            udp_answer_limit=self.udp_answer_limit,
            recursors=self.recursors,
            recursor_timeout=self.recursor_timeout,
            recursion_allow=self.recursion_allow,
            rate_limit=self.effective_rate_limit(),
            query_log=self.query_log,
            nsid=self.dns_nsid,
            transfer=TransferSettings(
                self.transfer_allow,
                self.transfer_tsig_keys,
                self.transfer_notify,
                self.transfer_catalog.rstrip(".") if self.transfer_catalog else None,
            ),
            dnskey_ttl=self.dnssec_dnskey_ttl,
            zone_max_ttl=self.dnssec_zone_max_ttl,
            signature_validity=self.dnssec_signature_validity,
            dnssec_max_signatures=self.dnssec_max_signatures,
            log_level=self.log_level,
            log_format=self.log_format,
        )

    def acl(self) -> Acl:
        """Who may do what on the HTTP API. Without an ``acl`` section, the rules of before
        (``Acl.legacy``); with one, its tokens, ``http.token`` as a token named "token" with
        every right, and ``acl.anonymous`` (default: nothing) for requests without a token."""
        if not self.acl_given:
            return Acl.legacy(self.token)
        tokens = self.acl_tokens
        if self.token is not None:
            tokens += (Token("token", digest(self.token), EVERYTHING),)
        return Acl(tokens, self.acl_anonymous or NOTHING)

    def allowed_hosts(self) -> tuple[str, ...]:
        """``http.allowed_hosts``, else localhost, this machine's names and the HTTP listen
        address if it is a name."""
        if self.http_allowed_hosts is not None:
            return self.http_allowed_hosts
        names = ["localhost", socket.gethostname(), socket.getfqdn()]
        try:
            ipaddress.ip_address(self.http_listen.host)
        except ValueError:
            names.append(self.http_listen.host)
        return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names if n))

    def consul_identity(self) -> Identity:
        """The datacenter and node the Consul subset reports; the node defaults to the first
        label of this host's name where that is a DNS label, else "dnsdisc"."""
        node = self.consul_node
        if node is None:
            first = socket.gethostname().partition(".")[0].lower()
            node = first if _NODE.fullmatch(first) else "dnsdisc"
        return Identity(self.consul_datacenter, node)

    def effective_rate_limit(self) -> RateLimit | None:
        """The configured rate limit (None when set to 0); unconfigured, the default limit when
        DNS listens on any address but loopback (a wildcard included), as NSD does, and none on
        loopback-only listens (tests, a local stub), where spoofed sources cannot reach it."""
        given = self.rate_limit
        if given is not None and given.responses_per_second != schema.AUTO_RATE:
            return given if given.responses_per_second else None
        if all(is_loopback(hp.host) for hp in self.dns_listen):
            return None
        if given is not None:  # slip or prefixes given: they shape the default limit
            return replace(given, responses_per_second=DEFAULT_RRL_RATE)
        return RateLimit(DEFAULT_RRL_RATE)

    def nameserver_addresses(self) -> tuple[str, ...]:
        """NS glue: configured, else the specific DNS listen addresses, else loopback."""
        if self.ns_addresses:
            return self.ns_addresses
        found = []
        for hp in self.dns_listen:
            try:
                ip = ipaddress.ip_address(hp.host)
            except ValueError:
                continue
            if not ip.is_unspecified:
                found.append(str(ip))
        return tuple(dict.fromkeys(found)) or ("127.0.0.1",)


def load_file(path: Path) -> Config:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "(file)", f"not valid YAML: {exc}") from None
    return from_mapping(data, source, path.parent)


def from_mapping(data: object, source: str = "", base_dir: Path | None = None) -> Config:
    """The config a file's YAML holds: each key as the schema declares it, in its order (so a
    key may build on one before it: ``services`` on ``defaults``); the rest defaults."""
    cfg = Config(source=source)
    top = mapping(data, At(source, "(top level)", cfg, base_dir))
    check_keys(top, schema.GROUPS.keys(), source, "")
    for name, keys in schema.GROUPS.items():
        at = At(source, name, cfg, base_dir)
        if keys[0].path == name:  # a key of the top level
            given = [(keys[0], keys[0].parse(top[name], at))] if name in top else []
        else:
            given = _read_section(mapping(top.get(name), at), keys, at)
        cfg = _apply(cfg, given, source)
    return _coherent(cfg, source)


def _read_section(
    data: Mapping[str, Any], keys: tuple[schema.Key, ...], at: At
) -> list[tuple[schema.Key, object]]:
    """The given keys of one top-level section, and of the sections inside it (``http.tls``)."""
    prefix = f"{at.key}."
    inner: dict[str, Mapping[str, Any]] = {}  # "tls" -> the mapping under http.tls
    names = dict.fromkeys(key.path.removeprefix(prefix).partition(".")[0] for key in keys)
    check_keys(data, names, at.source, prefix)
    for name in names:
        nested = [key for key in keys if key.section == f"{at.key}.{name}"]
        if nested:
            inner[name] = mapping(data.get(name), at.to(prefix + name))
            check_keys(inner[name], [key.name for key in nested], at.source, f"{prefix}{name}.")
    section = schema.SECTIONS.get(at.key)
    gate = section.gate if section is not None else None
    given: list[tuple[schema.Key, object]] = []
    for key in keys:
        place = inner[key.section.rpartition(".")[2]] if key.section != at.key else data
        if key.name not in place:
            continue
        value = key.parse(place[key.name], at.to(key.path))
        if key.name == gate and not value:
            # The section is off (given as 0): its other keys are not read. Not given, a
            # default may apply, and the other keys shape it (rate_limit: effective_rate_limit).
            return [(key, value)]
        given.append((key, value))
    return given


def _apply(cfg: Config, given: Iterable[tuple[schema.Key, object]], source: str) -> Config:
    """``cfg`` with the given keys' values; the parts of a section's field are made whole by
    the section."""
    changes: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in given:
        name, _, part = key.field.partition(".")
        if part:
            parts.setdefault(name, {})[part] = value
        else:
            changes[name] = value
        changes.update(key.also)
    for name, values in parts.items():
        changes[name] = schema.SECTIONS[name].make(getattr(cfg, name), values, source)
    return replace(cfg, **changes)


def build(
    config_file: Path | None, *, environ: Mapping[str, str] | None = None, **flags: object
) -> Config:
    """The effective config: the file (if any), then the environment, then the flags. ``flags``
    are keyed by the flags' dest (``etcd_endpoints``), as argparse gives them: None if not given
    (False for a switch)."""
    unknown = flags.keys() - {flag.dest for _, flag in schema.FLAGS}
    if unknown:
        raise TypeError(f"build() got unknown flags: {', '.join(sorted(unknown))}")
    env = os.environ if environ is None else environ
    cfg = load_file(config_file) if config_file is not None else Config()
    given: dict[schema.Key, object] = {}
    for key in schema.KEYS:
        if key.env is not None and env.get(key.env):
            given[key] = key.parse(env[key.env], At("", key.env, cfg))
    for key, flag in schema.FLAGS:
        value = flags.get(flag.dest)
        if flag.given(value):
            given[key] = (flag.parse or key.parse)(value, At("", flag.name, cfg))
    return _secure(_coherent(_apply(cfg, given.items(), ""), cfg.source), cfg.source)


def _secure(cfg: Config, source: str) -> Config:
    """Secure by default: no HTTP API beyond loopback without authentication, unless asked.
    Checked on the whole config (a token may come from the environment)."""
    mutual = cfg.http_tls is not None and cfg.http_tls.client_ca_file is not None
    if not (
        is_loopback(cfg.http_listen.host)
        or cfg.token is not None
        or cfg.acl_tokens
        or mutual
        or cfg.http_allow_insecure
    ):
        raise ConfigError(
            source,
            "http.listen",
            f"the HTTP API would listen on {cfg.http_listen} with no authentication: anyone who "
            "reaches it could change the registry. Set a token (DNSDISC_TOKEN or http.token), "
            "acl.tokens or http.tls.client_ca_file; or http.allow_insecure: true "
            "(--http-allow-insecure) if the network in front is trusted",
        )
    return cfg


def _coherent(cfg: Config, source: str) -> Config:
    """Keys that make sense only together."""
    if cfg.dns_tls_listen and cfg.dns_tls is None:
        raise ConfigError(
            source, "dns.tls_listen", "DNS over TLS needs dns.tls.cert_file and dns.tls.key_file"
        )
    if cfg.dnssec_enabled and cfg.storage == "etcd" and cfg.dnssec_propagation_delay < 1:
        # A node learns of another's rollover by reading the keys every half of it (0.5 s at
        # least): a smaller delay would let a node publish a new ZSK after it starts signing.
        raise ConfigError(
            source, "dnssec.propagation_delay", "at least 1 with storage: etcd (seconds)"
        )
    return cfg


def default_of(key: schema.Key) -> object:
    """A key's default: its Config field's, or that field's part's (etcd.endpoints)."""
    name, _, part = key.field.partition(".")
    fld = next(f for f in dataclasses.fields(Config) if f.name == name)
    factory = fld.default_factory
    value = fld.default if factory is dataclasses.MISSING else factory()
    return getattr(value, part) if part else value
