"""Configuration: YAML file, environment and flags -> one frozen Config.

Precedence: command-line flags, then the environment (DNSDISC_TOKEN), then the file, then the
defaults below. Every error names the file, the key and what was expected, and is raised as
ConfigError; only the CLI turns it into an exit status.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dnsdisc.dnsserver.settings import DnsSettings, RateLimit
from dnsdisc.errors import ConfigError, ValidationError
from dnsdisc.health.settings import HealthSettings
from dnsdisc.netaddr import DEFAULT_DOMAIN, HostPort, parse_hostport
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.store.settings import EtcdSettings
from dnsdisc.values import bounded_int, ip_address, label, seconds

MAX_DOMAIN_WIRE = 125
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
STORAGES = ("sqlite", "memory", "etcd")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
MAX_WORKERS = 64


def auto_workers() -> int:
    """``workers: auto``: a DNS worker process per CPU this process may use; none (answer in
    the main process) when there is only one. A container's CPU quota (cgroup v2 ``cpu.max``)
    counts, not only the host's CPUs it may be scheduled on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota = cgroup_cpus(Path("/sys/fs/cgroup/cpu.max").read_text())
    except OSError:
        quota = None
    if quota is not None:
        cpus = min(cpus, quota)
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


def cgroup_cpus(cpu_max: str) -> int | None:
    """CPUs a cgroup v2 ``cpu.max`` line allows ("200000 100000" -> 2), None without a quota."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if period > 0 else None


_HTTP_LISTEN = HostPort("127.0.0.1", 8054)


@dataclass(frozen=True, slots=True)
class Config:
    domain: str = DEFAULT_DOMAIN
    dns_listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 8053),)
    http_listen: HostPort = _HTTP_LISTEN
    token: str | None = None
    storage: str = "sqlite"
    data_dir: Path = Path("dnsdisc-data")
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    zones_dir: Path = Path("zones")
    zones_dir_required: bool = False
    log_level: str = "info"
    log_format: str = "text"
    query_log: bool = False
    ns_label: str = "ns"
    ns_addresses: tuple[str, ...] = ()
    hostmaster: str = "hostmaster"
    negative_ttl: int = 5
    reverse_zones: tuple[str, ...] = ()
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    # UDP read and answered in batches (recvmmsg/sendmmsg) where the platform has them.
    udp_batch: bool = True
    # Bytes of queries each UDP socket may hold while its process is busy or not scheduled; 0: the
    # system's default (often 208 KiB: a few hundred queries, a few tens of ms at 10k/s).
    udp_receive_buffer: int = 1 << 20
    # DNS worker processes sharing the DNS port; 0: DNS is answered in the main process.
    workers: int = field(default_factory=auto_workers)
    event_loop: str = "auto"
    recursors: tuple[HostPort, ...] = ()
    recursor_timeout: float = 2.0
    rate_limit: RateLimit | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    defaults: ServiceSettings = field(default_factory=lambda: ServiceSettings("default"))
    services: Mapping[str, ServiceSettings] = field(default_factory=dict)
    source: str = ""

    def dns_settings(self) -> DnsSettings:
        """What the DNS face needs of this config, and all that a worker process is sent."""
        return DnsSettings(
            listen=self.dns_listen,
            tcp_idle_timeout=self.tcp_idle_timeout,
            tcp_max_connections=self.tcp_max_connections,
            udp_batch=self.udp_batch,
            udp_receive_buffer=self.udp_receive_buffer,
            recursors=self.recursors,
            recursor_timeout=self.recursor_timeout,
            rate_limit=self.rate_limit,
            query_log=self.query_log,
            log_level=self.log_level,
            log_format=self.log_format,
        )

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


def normalize_domain(text: object, source: str, key: str) -> str:
    """A domain as 'a.b.' : labels lower-cased, trailing dot added."""
    if not isinstance(text, str) or not text.strip("."):
        raise ConfigError(source, key, "expected a domain name such as svc.internal")
    labels = text.rstrip(".").split(".")
    try:
        for lab in labels:
            label(lab, key)
    except ValidationError as exc:
        raise ConfigError(
            source, key, f"expected a domain name of DNS labels: {exc.message}"
        ) from None
    name = ".".join(lab.lower() for lab in labels) + "."
    # Generated names such as _<63 chars>._<63 chars>.<domain> must fit DNS's 255 octets.
    if len(name) + 1 > MAX_DOMAIN_WIRE:
        raise ConfigError(
            source, key, f"expected a domain of at most {MAX_DOMAIN_WIRE - 2} characters"
        )
    return name


_KEYS = {
    "domain",
    "dns",
    "http",
    "storage",
    "data_dir",
    "etcd",
    "zones_dir",
    "log_level",
    "log_format",
    "query_log",
    "nameserver",
    "negative_ttl",
    "reverse_zones",
    "defaults",
    "services",
    "recursors",
    "recursor_timeout",
    "rate_limit",
    "health",
    "event_loop",
}
_DNS_KEYS = {
    "listen",
    "tcp_idle_timeout",
    "tcp_max_connections",
    "udp_batch",
    "udp_receive_buffer",
    "workers",
}
_HTTP_KEYS = {"listen", "token"}
_NS_KEYS = {"label", "addresses", "hostmaster"}
_RRL_KEYS = {"responses_per_second", "slip", "ipv4_prefix", "ipv6_prefix"}
_ETCD_KEYS = {
    "endpoints",
    "prefix",
    "timeout",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password",
}
_HEALTH_KEYS = {"warning_weight", "flap_window", "flap_threshold", "flap_stable", "flap_hold"}


def _mapping(value: object, source: str, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, "expected a mapping of keys to values")
    return value


def check_keys(data: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(
                source,
                f"{prefix}{key}",
                f"unknown key; expected one of: {', '.join(sorted(allowed))}",
            )


def _settings(
    name: str, value: object, base: ServiceSettings, source: str, key: str
) -> ServiceSettings:
    try:
        return ServiceSettings.from_json(name, _mapping(value, source, key), base)
    except ValidationError as exc:
        raise ConfigError(source, f"{key}.{exc.field}", exc.message) from None


def _health(data: Mapping[str, Any], source: str) -> HealthSettings:
    base = HealthSettings()
    factor = data.get("warning_weight", base.warning_weight)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1:
        raise ConfigError(source, "health.warning_weight", "expected a number above 0, at most 1")
    hold = data.get("flap_hold", base.flap_hold)
    if hold not in ("out", "in"):
        raise ConfigError(source, "health.flap_hold", "expected out or in")
    durations = {}
    for key in ("flap_window", "flap_stable"):
        try:
            durations[key] = seconds(data.get(key, getattr(base, key)), f"health.{key}", 0, 86400)
        except ValidationError as exc:
            raise ConfigError(source, f"health.{key}", exc.message) from None
    return HealthSettings(
        warning_weight=float(factor),
        flap_window=durations["flap_window"],
        flap_threshold=config_int(
            data.get("flap_threshold", base.flap_threshold),
            source,
            "health.flap_threshold",
            2,
            1000,
        ),
        flap_stable=durations["flap_stable"],
        flap_hold=hold,
    )


def etcd_endpoint(value: object, source: str, key: str) -> str:
    """An etcd client URL, http(s)://HOST:PORT, without a path (the v3 API paths are added)."""
    if not isinstance(value, str):
        raise ConfigError(source, key, "expected URLs like http://127.0.0.1:2379")
    scheme, sep, rest = value.partition("://")
    rest = rest.rstrip("/")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise ConfigError(source, key, f"{value!r} is not a URL like http://127.0.0.1:2379")
    hp = parse_hostport(rest, source, key)
    return f"{scheme}://{hp}"


def parse_etcd_prefix(value: object, source: str, key: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > 200
        or not value.isprintable()
        or " " in value
    ):
        raise ConfigError(source, key, "expected a key prefix like /dnsdisc (starts with /)")
    # One spelling: "/dnsdisc/" and "/dnsdisc" must name the same keys on every node.
    return value.rstrip("/") or "/"


def _etcd(
    data: Mapping[str, Any], source: str, base: EtcdSettings, base_dir: Path | None
) -> EtcdSettings:
    changes: dict[str, Any] = {}
    if "endpoints" in data:
        items = data["endpoints"]
        items = items if isinstance(items, list) else [items]
        if not items:
            raise ConfigError(source, "etcd.endpoints", "expected at least one URL")
        changes["endpoints"] = tuple(
            dict.fromkeys(etcd_endpoint(x, source, "etcd.endpoints") for x in items)
        )
    if "prefix" in data:
        changes["prefix"] = parse_etcd_prefix(data["prefix"], source, "etcd.prefix")
    if "timeout" in data:
        try:
            changes["timeout"] = seconds(data["timeout"], "etcd.timeout", 0.1, 60)
        except ValidationError as exc:
            raise ConfigError(source, "etcd.timeout", exc.message) from None
    for key in ("ca_file", "cert_file", "key_file"):
        if key in data:
            value = data[key]
            if not isinstance(value, str) or not value:
                raise ConfigError(source, f"etcd.{key}", "expected a file path")
            p = Path(value).expanduser()
            changes[key] = p if p.is_absolute() or base_dir is None else base_dir / p
    for key in ("username", "password"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(source, f"etcd.{key}", "expected a non-empty string")
            changes[key] = data[key]
    cfg = replace(base, **changes)
    if (cfg.cert_file is None) != (cfg.key_file is None):
        raise ConfigError(source, "etcd.cert_file", "cert_file and key_file go together")
    if (cfg.username is None) != (cfg.password is None):
        raise ConfigError(source, "etcd.username", "username and password go together")
    return cfg


def _choice(value: object, choices: tuple[str, ...], source: str, key: str) -> str:
    if value not in choices:
        raise ConfigError(source, key, f"expected one of: {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def _flag(value: object, source: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, key, "expected true or false")
    return value


def workers_count(value: object, source: str, key: str) -> int:
    if value == "auto":
        return auto_workers()
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WORKERS:
        raise ConfigError(
            source, key, f"expected auto or a number of processes from 0 to {MAX_WORKERS}"
        )
    return value


def config_int(value: object, source: str, key: str, lo: int, hi: int) -> int:
    try:
        return bounded_int(value, key, lo, hi)
    except ValidationError as exc:
        raise ConfigError(source, key, exc.message) from None


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
    data = _mapping(data, source, "(top level)")
    check_keys(data, _KEYS, source, "")
    cfg = Config(source=source)
    changes: dict[str, Any] = {}

    def path_of(key: str) -> Path:
        value = data[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(source, key, "expected a directory path")
        p = Path(value).expanduser()
        # Relative paths in a file are relative to the file, not to wherever the server starts.
        return p if p.is_absolute() or base_dir is None else base_dir / p

    if "domain" in data:
        changes["domain"] = normalize_domain(data["domain"], source, "domain")
    dns = _mapping(data.get("dns"), source, "dns")
    check_keys(dns, _DNS_KEYS, source, "dns.")
    if "listen" in dns:
        listen = dns["listen"]
        items = listen if isinstance(listen, list) else [listen]
        if not items:
            raise ConfigError(source, "dns.listen", "expected at least one HOST:PORT")
        changes["dns_listen"] = tuple(parse_hostport(x, source, "dns.listen") for x in items)
    if "tcp_idle_timeout" in dns:
        changes["tcp_idle_timeout"] = float(
            config_int(dns["tcp_idle_timeout"], source, "dns.tcp_idle_timeout", 1, 3600)
        )
    if "tcp_max_connections" in dns:
        changes["tcp_max_connections"] = config_int(
            dns["tcp_max_connections"], source, "dns.tcp_max_connections", 1, 100000
        )
    if "udp_batch" in dns:
        changes["udp_batch"] = _flag(dns["udp_batch"], source, "dns.udp_batch")
    if "udp_receive_buffer" in dns:
        changes["udp_receive_buffer"] = config_int(
            dns["udp_receive_buffer"], source, "dns.udp_receive_buffer", 0, 1 << 30
        )
    if "workers" in dns:
        changes["workers"] = workers_count(dns["workers"], source, "dns.workers")
    if "event_loop" in data:
        changes["event_loop"] = _choice(data["event_loop"], EVENT_LOOPS, source, "event_loop")
    http = _mapping(data.get("http"), source, "http")
    check_keys(http, _HTTP_KEYS, source, "http.")
    if "listen" in http:
        changes["http_listen"] = parse_hostport(http["listen"], source, "http.listen")
    if http.get("token") is not None:
        if not isinstance(http["token"], str) or not http["token"]:
            raise ConfigError(source, "http.token", "expected a non-empty string")
        changes["token"] = http["token"]
    if "storage" in data:
        changes["storage"] = _choice(data["storage"], STORAGES, source, "storage")
    if "data_dir" in data:
        changes["data_dir"] = path_of("data_dir")
    etcd = _mapping(data.get("etcd"), source, "etcd")
    check_keys(etcd, _ETCD_KEYS, source, "etcd.")
    if etcd:
        changes["etcd"] = _etcd(etcd, source, cfg.etcd, base_dir)
    if "zones_dir" in data:
        changes["zones_dir"] = path_of("zones_dir")
        changes["zones_dir_required"] = True
    if "log_level" in data:
        changes["log_level"] = _choice(data["log_level"], LOG_LEVELS, source, "log_level")
    if "query_log" in data:
        changes["query_log"] = _flag(data["query_log"], source, "query_log")
    if "log_format" in data:
        changes["log_format"] = _choice(data["log_format"], LOG_FORMATS, source, "log_format")
    ns = _mapping(data.get("nameserver"), source, "nameserver")
    check_keys(ns, _NS_KEYS, source, "nameserver.")
    for key in ("label", "hostmaster"):
        if key in ns:
            try:
                changes["ns_label" if key == "label" else key] = label(ns[key], f"nameserver.{key}")
            except ValidationError as exc:
                raise ConfigError(source, f"nameserver.{key}", exc.message) from None
    if "addresses" in ns:
        if not isinstance(ns["addresses"], list):
            raise ConfigError(source, "nameserver.addresses", "expected a list of IP addresses")
        try:
            changes["ns_addresses"] = tuple(
                ip_address(a, "nameserver.addresses") for a in ns["addresses"]
            )
        except ValidationError as exc:
            raise ConfigError(source, "nameserver.addresses", exc.message) from None
    if "negative_ttl" in data:
        changes["negative_ttl"] = config_int(data["negative_ttl"], source, "negative_ttl", 0, 86400)
    if "reverse_zones" in data:
        zones = data["reverse_zones"]
        if not isinstance(zones, list):
            raise ConfigError(
                source, "reverse_zones", "expected a list of names like 10.in-addr.arpa"
            )
        norm = []
        for z in zones:
            name = normalize_domain(z, source, "reverse_zones")
            if not name.endswith(("in-addr.arpa.", "ip6.arpa.")):
                raise ConfigError(
                    source, "reverse_zones", f"{z!r} is not under in-addr.arpa or ip6.arpa"
                )
            norm.append(name)
        changes["reverse_zones"] = tuple(norm)
    if "recursors" in data:
        recursors = data["recursors"]
        if not isinstance(recursors, list):
            raise ConfigError(source, "recursors", "expected a list of HOST:PORT upstream servers")
        changes["recursors"] = tuple(parse_hostport(r, source, "recursors") for r in recursors)
    if "recursor_timeout" in data:
        changes["recursor_timeout"] = float(
            config_int(data["recursor_timeout"], source, "recursor_timeout", 1, 60)
        )
    rrl = _mapping(data.get("rate_limit"), source, "rate_limit")
    check_keys(rrl, _RRL_KEYS, source, "rate_limit.")
    if rrl:
        rate = config_int(
            rrl.get("responses_per_second", 0), source, "rate_limit.responses_per_second", 0, 10**6
        )
        if rate:
            changes["rate_limit"] = RateLimit(
                rate,
                config_int(rrl.get("slip", 2), source, "rate_limit.slip", 0, 100),
                config_int(rrl.get("ipv4_prefix", 24), source, "rate_limit.ipv4_prefix", 8, 32),
                config_int(rrl.get("ipv6_prefix", 56), source, "rate_limit.ipv6_prefix", 16, 128),
            )
    health = _mapping(data.get("health"), source, "health")
    check_keys(health, _HEALTH_KEYS, source, "health.")
    if health:
        changes["health"] = _health(health, source)
    defaults = _settings("default", data.get("defaults"), cfg.defaults, source, "defaults")
    changes["defaults"] = defaults
    services = _mapping(data.get("services"), source, "services")
    parsed = {}
    for name, body in services.items():
        try:
            svc_name = label(name, "services")
        except ValidationError as exc:
            raise ConfigError(source, f"services.{name}", exc.message) from None
        parsed[svc_name] = _settings(
            svc_name, body, defaults.with_name(svc_name), source, f"services.{name}"
        )
    changes["services"] = parsed
    return replace(cfg, **changes)


def build(
    config_file: Path | None,
    *,
    dns: str | None = None,
    http: str | None = None,
    domain: str | None = None,
    data_dir: str | None = None,
    zones: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    query_log: bool | None = None,
    storage: str | None = None,
    workers: str | None = None,
    event_loop: str | None = None,
    etcd_endpoints: str | None = None,
    etcd_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The effective config: the file (if any), then the environment, then the flags."""
    env = os.environ if environ is None else environ
    cfg = load_file(config_file) if config_file is not None else Config()
    changes: dict[str, Any] = {}
    if env.get("DNSDISC_TOKEN"):
        changes["token"] = env["DNSDISC_TOKEN"]
    if dns is not None:
        changes["dns_listen"] = (parse_hostport(dns, "", "--dns"),)
    if http is not None:
        changes["http_listen"] = parse_hostport(http, "", "--http")
    if domain is not None:
        changes["domain"] = normalize_domain(domain, "", "--domain")
    if data_dir is not None:
        changes["data_dir"] = Path(data_dir)
    if zones is not None:
        changes["zones_dir"] = Path(zones)
        changes["zones_dir_required"] = True
    if log_level is not None:
        changes["log_level"] = _choice(log_level, LOG_LEVELS, "", "--log-level")
    if query_log:
        changes["query_log"] = True
    if log_format is not None:
        changes["log_format"] = _choice(log_format, LOG_FORMATS, "", "--log-format")
    if storage is not None:
        changes["storage"] = _choice(storage, STORAGES, "", "--storage")
    if workers is not None:
        changes["workers"] = workers_count(workers, "", "--workers")
    if event_loop is not None:
        changes["event_loop"] = _choice(event_loop, EVENT_LOOPS, "", "--event-loop")
    etcd: dict[str, Any] = {}
    if etcd_endpoints is not None:
        urls = [u for u in etcd_endpoints.split(",") if u.strip()]
        if not urls:
            raise ConfigError("", "--etcd-endpoints", "expected URLs like http://127.0.0.1:2379")
        etcd["endpoints"] = tuple(
            dict.fromkeys(etcd_endpoint(u.strip(), "", "--etcd-endpoints") for u in urls)
        )
    if etcd_prefix is not None:
        etcd["prefix"] = parse_etcd_prefix(etcd_prefix, "", "--etcd-prefix")
    if etcd:
        changes["etcd"] = replace(cfg.etcd, **etcd)
    return replace(cfg, **changes)
