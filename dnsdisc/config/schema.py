"""The config schema: every key of the config file, declared once, in KEYS.

A Key names its place in the file (``dns.workers``), the Config field it sets, its parser, whether
a reload applies it (``live``) or it waits for a restart (``restart``: it needs the listeners or
the store reopened), and its ``dnsdisc serve`` flag and environment variable if it has them.
Everything else is read off this table: the keys each section of the file allows, how the loader
reads a file and applies the environment and the flags (load.py), the CLI's flags, and which
fields a reload keeps. Defaults live in the Config dataclass (load.py); a flag's help may show one
as ``{default}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from dnsdisc.config import acl
from dnsdisc.config import parsers as p
from dnsdisc.dnsserver.settings import RateLimit
from dnsdisc.errors import ConfigError
from dnsdisc.store.settings import EtcdSettings
from dnsdisc.tls import TlsFiles

Reload = Literal["live", "restart"]
Parse = Callable[[object, p.At], object]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
STORAGES = ("sqlite", "memory", "etcd")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
ANY_MODES = ("minimal", "full")
DNSSEC_ALGORITHMS = ("ECDSAP256SHA256", "ED25519")


@dataclass(frozen=True, slots=True)
class Flag:
    """A key's ``dnsdisc serve`` option. ``choices`` are left to argparse (a bad one is a usage
    error); a ``switch`` takes no value and is given when true; ``parse`` reads the command
    line's spelling where it differs from the file's."""

    name: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    parse: Parse | None = None

    @property
    def dest(self) -> str:
        """The flag's name in argparse's namespace and among build()'s keywords."""
        return self.name.removeprefix("--").replace("-", "_")

    def given(self, value: object) -> bool:
        """Whether argparse's value means the flag was given."""
        return value is True if self.switch else value is not None


@dataclass(frozen=True, slots=True)
class Key:
    """One config key. ``field`` is the Config field it sets; ``etcd.endpoints`` is a part of one
    (Config.etcd's endpoints, made whole by the Section). ``also`` are fields a given value sets
    besides (a zones_dir named must exist)."""

    path: str
    field: str
    parse: Parse
    reload: Reload
    flag: Flag | None = None
    env: str | None = None
    also: tuple[tuple[str, object], ...] = ()

    @property
    def section(self) -> str:
        """The section of the file the key is in; "" for the top level."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def config_field(self) -> str:
        return self.field.partition(".")[0]


@dataclass(frozen=True, slots=True)
class Section:
    """A section of the file whose keys make one Config field of its name (``etcd:`` makes
    Config.etcd). ``make`` takes the field's value so far, the given keys' values by attribute
    and the file. With a ``gate`` (the section's first key), the section is off unless that key
    is set and not 0, and then its other keys are not read."""

    make: Callable[[Any, dict[str, Any], str], object]
    gate: str | None = None


def _braced(choices: tuple[str, ...]) -> str:
    return "{" + ",".join(choices) + "}"


def _etcd(current: EtcdSettings, parts: dict[str, Any], source: str) -> EtcdSettings:
    etcd = replace(current, **parts)
    if (etcd.cert_file is None) != (etcd.key_file is None):
        raise ConfigError(source, "etcd.cert_file", "cert_file and key_file go together")
    if (etcd.username is None) != (etcd.password is None):
        raise ConfigError(source, "etcd.username", "username and password go together")
    return etcd


# ``rate_limit`` given without ``responses_per_second``: its other keys shape the default limit,
# which is on only when DNS listens beyond loopback (Config.effective_rate_limit).
AUTO_RATE = -1


def _rate_limit(current: RateLimit | None, parts: dict[str, Any], source: str) -> RateLimit:
    parts.setdefault("responses_per_second", AUTO_RATE)
    return RateLimit(**parts)


def _tls(section: str) -> Callable[[TlsFiles | None, dict[str, Any], str], TlsFiles]:
    def make(current: TlsFiles | None, parts: dict[str, Any], source: str) -> TlsFiles:
        def part(name: str) -> Any:
            return parts[name] if name in parts else getattr(current, name, None)

        cert, key = part("cert_file"), part("key_file")
        if cert is None or key is None:
            raise ConfigError(source, f"{section}.cert_file", "cert_file and key_file go together")
        return TlsFiles(cert, key, part("client_ca_file"))

    return make


# Keyed by the Config field each section makes; a section inside another (``http.tls``) makes
# a field named by its path with "_" for "." (``http_tls``).
SECTIONS: Mapping[str, Section] = {
    "etcd": Section(_etcd),
    "rate_limit": Section(_rate_limit, gate="responses_per_second"),
    "health": Section(lambda current, parts, source: replace(current, **parts)),
    "limits": Section(lambda current, parts, source: replace(current, **parts)),
    "http_tls": Section(_tls("http.tls")),
    "dns_tls": Section(_tls("dns.tls")),
}

_AT_MOST_A_DAY = p.duration(0, 86400)

# The order is the order of `dnsdisc serve --help` and of reading a file.
KEYS: tuple[Key, ...] = (
    Key(
        "dns.listen", "dns_listen", p.listen_addresses, "restart",
        Flag("--dns", "DNS listen address, UDP and TCP (default {default})", "HOST:PORT"),
    ),
    Key("dns.tls_listen", "dns_tls_listen", p.listen_addresses, "restart"),
    Key("dns.tls.cert_file", "dns_tls.cert_file", p.file_path, "restart"),
    Key("dns.tls.key_file", "dns_tls.key_file", p.file_path, "restart"),
    Key("dns.cookies", "dns_cookies", p.boolean, "restart"),
    Key(
        "dns.cookie_secret", "cookie_secret", p.secret16, "restart",
        env="DNSDISC_COOKIE_SECRET",
    ),
    Key("dns.tcp_idle_timeout", "tcp_idle_timeout", p.whole_seconds(1, 3600), "restart"),
    Key("dns.tcp_max_connections", "tcp_max_connections", p.integer(1, 100000), "restart"),
    Key(
        "dns.tcp_max_connections_per_client", "tcp_max_connections_per_client",
        p.integer(1, 100000), "restart",
    ),
    Key("dns.any", "dns_any", p.one_of(ANY_MODES), "restart"),
    Key("dns.udp_batch", "udp_batch", p.boolean, "restart"),
    Key("dns.udp_receive_buffer", "udp_receive_buffer", p.integer(0, 1 << 30), "restart"),
    Key("dns.reply_cache_bytes", "reply_cache_bytes", p.integer(0, 1 << 34), "restart"),
    Key("dns.udp_answer_limit", "udp_answer_limit", p.integer(0, 1000), "restart"),
    Key(
        "dns.workers", "workers", p.workers, "restart",
        Flag(
            "--workers",
            "DNS worker processes sharing the DNS port; 0 answers in the main process "
            "(default auto: one per CPU)",
            "N|auto",
        ),
    ),
    Key(
        "http.listen", "http_listen", p.hostport, "restart",
        Flag("--http", "HTTP API listen address (default {default})", "HOST:PORT"),
    ),
    Key("http.token", "token", p.optional_text, "live", env="DNSDISC_TOKEN"),
    Key("http.allowed_hosts", "http_allowed_hosts", p.host_names, "live"),
    Key(
        "http.allow_insecure", "http_allow_insecure", p.boolean, "restart",
        Flag(
            "--http-allow-insecure",
            "let the HTTP API listen beyond loopback with no token, acl.tokens or mutual TLS",
            switch=True,
        ),
    ),
    Key("acl.tokens", "acl_tokens", acl.tokens, "live", also=(("acl_given", True),)),
    Key("acl.anonymous", "acl_anonymous", acl.anonymous, "live", also=(("acl_given", True),)),
    # Re-read on every reload (certificate rotation); turning TLS on or off takes a restart.
    Key(
        "http.tls.cert_file", "http_tls.cert_file", p.file_path, "live",
        Flag(
            "--http-tls-cert", "serve the HTTP API over TLS with this certificate chain (PEM)",
            "FILE", parse=p.path_as_given,
        ),
    ),
    Key(
        "http.tls.key_file", "http_tls.key_file", p.file_path, "live",
        Flag("--http-tls-key", "the private key of --http-tls-cert (PEM)", "FILE",
             parse=p.path_as_given),
    ),
    Key(
        "http.tls.client_ca_file", "http_tls.client_ca_file", p.file_path, "live",
        Flag(
            "--http-tls-client-ca",
            "require HTTP clients to present a certificate this CA signed (mutual TLS)", "FILE",
            parse=p.path_as_given,
        ),
    ),
    Key("http.header_timeout", "http_header_timeout", p.duration(0, 3600), "restart"),
    Key("http.body_timeout", "http_body_timeout", p.duration(0, 3600), "restart"),
    Key("http.keepalive_timeout", "http_keepalive_timeout", p.duration(0, 86400), "restart"),
    Key("http.max_connections", "http_max_connections", p.integer(1, 1_000_000), "restart"),
    Key(
        "http.max_connections_per_client", "http_max_connections_per_client",
        p.integer(1, 1_000_000), "restart",
    ),
    Key(
        "domain", "domain", p.domain, "restart",
        Flag("--domain", "the domain services live under (default {default})", "NAME"),
    ),
    Key(
        "data_dir", "data_dir", p.directory, "restart",
        Flag(
            "--data-dir", "where the SQLite registry lives (default ./{default})", "DIR",
            parse=p.path_as_given,
        ),
    ),
    # The names the Consul-compatible API reports (api/consul.py); the node defaults to the
    # host's name where that is a DNS label.
    Key("consul.datacenter", "consul_datacenter", p.dns_label, "live"),
    Key("consul.node", "consul_node", p.dns_label, "live"),
    Key(
        "audit_log", "audit_log", p.file_path, "restart",
        Flag(
            "--audit-log", "append a JSON line per HTTP write attempt to FILE (mode 0600)", "FILE",
            parse=p.path_as_given,
        ),
    ),
    Key(
        "zones_dir", "zones_dir", p.directory, "live",
        Flag(
            "--zones", "directory of zone files (default ./{default}, if present)", "DIR",
            parse=p.path_as_given,
        ),
        also=(("zones_dir_required", True),),
    ),
    Key(
        "storage", "storage", p.one_of(STORAGES), "restart",
        Flag(
            "--storage",
            "sqlite (durable, default), memory, or etcd (a registry shared by several nodes)",
            _braced(STORAGES),
        ),
    ),
    Key(
        "event_loop", "event_loop", p.one_of(EVENT_LOOPS), "restart",
        Flag("--event-loop", "auto (uvloop where installed, the default)", choices=EVENT_LOOPS),
    ),
    Key(
        "etcd.endpoints", "etcd.endpoints", p.etcd_endpoints, "restart",
        Flag(
            "--etcd-endpoints",
            "etcd client URLs, comma-separated (storage etcd; default {default})",
            "URL,...",
            parse=p.etcd_endpoints_text,
        ),
    ),
    Key(
        "etcd.prefix", "etcd.prefix", p.etcd_prefix, "restart",
        Flag("--etcd-prefix", "key prefix in etcd (default {default})", "PREFIX"),
    ),
    Key("etcd.timeout", "etcd.timeout", p.duration(0.1, 60), "restart"),
    Key("etcd.ca_file", "etcd.ca_file", p.file_path, "restart"),
    Key("etcd.cert_file", "etcd.cert_file", p.file_path, "restart"),
    Key("etcd.key_file", "etcd.key_file", p.file_path, "restart"),
    Key("etcd.username", "etcd.username", p.text, "restart"),
    Key("etcd.password", "etcd.password", p.text, "restart"),
    Key(
        "log_level", "log_level", p.one_of(LOG_LEVELS), "live",
        Flag("--log-level", "default {default}", choices=LOG_LEVELS),
    ),
    Key(
        "log_format", "log_format", p.one_of(LOG_FORMATS), "live",
        Flag("--log-format", "text (default) or json, a line each", choices=LOG_FORMATS),
    ),
    Key(
        "query_log", "query_log", p.boolean, "live",
        Flag("--query-log", "log one line per DNS query", switch=True),
    ),
    Key("nameserver.label", "ns_label", p.dns_label, "live"),
    Key("nameserver.addresses", "ns_addresses", p.ip_addresses, "live"),
    Key("nameserver.hostmaster", "hostmaster", p.dns_label, "live"),
    Key("negative_ttl", "negative_ttl", p.integer(0, 86400), "live"),
    Key("reverse_zones", "reverse_zones", p.reverse_zones, "live"),
    Key("locality.networks", "locality_networks", p.zone_networks, "live"),
    Key("recursors", "recursors", p.upstreams, "restart"),
    Key("recursor_timeout", "recursor_timeout", p.whole_seconds(1, 60), "live"),
    Key("recursion_allow", "recursion_allow", p.networks, "restart"),
    Key("dns.nsid", "dns_nsid", p.optional_text, "restart"),
    Key("transfer.allow", "transfer_allow", p.networks, "restart"),
    Key("transfer.tsig_keys", "transfer_tsig_keys", p.tsig_keys, "restart"),
    Key("transfer.notify", "transfer_notify", p.upstreams, "restart"),
    Key("transfer.catalog", "transfer_catalog", p.optional_domain, "restart"),
    Key("dnssec.enabled", "dnssec_enabled", p.boolean, "restart"),
    Key("dnssec.algorithm", "dnssec_algorithm", p.one_of(DNSSEC_ALGORITHMS), "restart"),
    Key("dnssec.dnskey_ttl", "dnssec_dnskey_ttl", p.integer(1, 86400), "restart"),
    Key("dnssec.propagation_delay", "dnssec_propagation_delay", p.integer(0, 86400), "restart"),
    Key("dnssec.zone_max_ttl", "dnssec_zone_max_ttl", p.integer(0, 2**31 - 1), "restart"),
    Key(
        "dnssec.signature_validity", "dnssec_signature_validity",
        p.integer(3 * 86400, 366 * 86400), "restart",
    ),
    Key("dnssec.max_signatures", "dnssec_max_signatures", p.integer(0, 10**6), "restart"),
    Key(
        "rate_limit.responses_per_second", "rate_limit.responses_per_second",
        p.integer(0, 10**6), "restart",
    ),
    Key("rate_limit.slip", "rate_limit.slip", p.integer(0, 100), "restart"),
    Key("rate_limit.ipv4_prefix", "rate_limit.ipv4_prefix", p.integer(8, 32), "restart"),
    Key("rate_limit.ipv6_prefix", "rate_limit.ipv6_prefix", p.integer(16, 128), "restart"),
    Key("health.warning_weight", "health.warning_weight", p.weight_factor, "live"),
    Key("health.flap_window", "health.flap_window", _AT_MOST_A_DAY, "live"),
    Key("health.flap_threshold", "health.flap_threshold", p.integer(2, 1000), "live"),
    Key("health.flap_stable", "health.flap_stable", _AT_MOST_A_DAY, "live"),
    Key("health.flap_hold", "health.flap_hold", p.flap_hold, "live"),
    Key("health.protection", "health.protection", p.protection, "live"),
    Key("health.check_networks", "health.check_networks", p.net_rules, "live"),
    Key("health.min_check_interval", "health.min_check_interval", p.rate(0.05, 3600), "live"),
    Key("health.checks_per_second", "health.checks_per_second", p.rate(0.1, 10**5), "live"),
    Key(
        "health.max_concurrent_checks", "health.max_concurrent_checks",
        p.integer(1, 100000), "live",
    ),
    Key(
        "health.max_concurrent_checks_per_service", "health.max_concurrent_checks_per_service",
        p.integer(1, 100000), "live",
    ),
    Key("limits.services", "limits.services", p.integer(1, 10**7), "live"),
    Key(
        "limits.instances_per_service", "limits.instances_per_service", p.integer(1, 10**7),
        "live",
    ),
    Key("limits.instances", "limits.instances", p.integer(1, 10**8), "live"),
    Key("limits.tags_per_service", "limits.tags_per_service", p.integer(1, 10**6), "live"),
    Key("limits.meta_bytes", "limits.meta_bytes", p.integer(0, 1 << 20), "live"),
    Key("defaults", "defaults", p.service_defaults, "live"),
    Key("services", "services", p.services, "live"),
    Key("queries", "queries", p.queries, "live"),
)  # fmt: skip


def _groups() -> dict[str, tuple[Key, ...]]:
    groups: dict[str, list[Key]] = {}
    for key in KEYS:
        groups.setdefault(key.path.partition(".")[0], []).append(key)
    return {name: tuple(keys) for name, keys in groups.items()}


# The top level of the file: each name with its key, or its section's keys, in the table's order.
GROUPS: Mapping[str, tuple[Key, ...]] = _groups()

# Fields a reload leaves as they are, with a warning, until a restart.
RESTART_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(key.config_field for key in KEYS if key.reload == "restart")
)

FLAGS: tuple[tuple[Key, Flag], ...] = tuple((key, key.flag) for key in KEYS if key.flag)
