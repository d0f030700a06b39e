"""config: the example file loads, flags override, and every error names file, key and expectation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dnsdisc.config.load import Config, build, from_mapping, load_file
from dnsdisc.errors import ConfigError
from dnsdisc.netaddr import HostPort
from tests.support.helpers import ROOT

EXAMPLE = ROOT / "examples" / "dnsdisc.yaml"


def test_example_config_loads() -> None:
    cfg = load_file(EXAMPLE)
    assert cfg.domain == "svc.internal."
    assert cfg.dns_listen == (HostPort("127.0.0.1", 8053),)
    assert cfg.http_listen == HostPort("127.0.0.1", 8054)
    assert cfg.zones_dir.resolve() == (ROOT / "zones").resolve()
    assert cfg.services["web"].policy == "weighted"
    assert cfg.services["web"].max_answers == 1
    assert cfg.defaults.policy == "weighted"


def test_defaults_without_a_file() -> None:
    cfg = build(None, environ={})
    assert cfg == Config()
    assert cfg.storage == "sqlite" and cfg.token is None


def test_flags_override_file_and_env_sets_token(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("domain: a.example\nhttp: {token: fromfile}\n")
    cfg = build(
        path, dns="[::1]:5300", domain="B.Example", data_dir="d", environ={"DNSDISC_TOKEN": "env"}
    )
    assert cfg.domain == "b.example."
    assert cfg.dns_listen == (HostPort("::1", 5300),)
    assert cfg.token == "env"
    assert cfg.data_dir == Path("d")


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"dns": {"listen": "nope"}}, "dns.listen", "HOST:PORT"),
        ({"dns": {"lisen": "x"}}, "dns.lisen", "unknown key"),
        ({"domain": "bad_domain"}, "domain", "domain name"),
        ({"storage": "redis"}, "storage", "sqlite, memory"),
        ({"log_level": "loud"}, "log_level", "debug"),
        ({"defaults": {"policy": "fastest"}}, "defaults.policy", "round_robin"),
        ({"defaults": {"ttl": -1}}, "defaults.ttl", "from 0"),
        ({"services": {"web": {"max_answers": "1"}}}, "services.web.max_answers", "integer"),
        ({"services": {"Bad_Name": {}}}, "services.Bad_Name", "DNS label"),
        ({"services": {"web": {"colour": "red"}}}, "services.web.colour", "unknown field"),
        ({"queries": {"q": {"service": "web", "colour": "red"}}}, "queries.q.colour", "unknown"),
        ({"queries": {"Bad_Name": {"service": "web"}}}, "queries.Bad_Name", "DNS label"),
        ({"queries": {"q": {"service": "a", "failover": ["a"]}}}, "queries.q.failover", "loop"),
        ({"negative_ttl": True}, "negative_ttl", "integer"),
        ({"reverse_zones": ["example.com"]}, "reverse_zones", "in-addr.arpa"),
        (
            {"locality": {"networks": {"eu-1a": ["10.1.0.0/33"]}}},
            "locality.networks.eu-1a",
            "network",
        ),
        (
            {"locality": {"networks": {"eu_1a": ["10.1.0.0/16"]}}},
            "locality.networks.eu_1a",
            "label",
        ),
        (
            {"locality": {"networks": {"a": ["10.0.0.0/8"], "b": ["10.0.0.0/8"]}}},
            "locality.networks.b",
            "twice",
        ),
        ({"locality": {"networks": {"a": "10.0.0.0/8"}}}, "locality.networks.a", "list"),
        ({"nameserver": {"addresses": ["x"]}}, "nameserver.addresses", "not an IPv4"),
        ({"http": {"token": 5}}, "http.token", "string"),
        ([1, 2], "(top level)", "mapping"),
        ({"storage": "etc"}, "storage", "sqlite, memory, etcd"),
        ({"etcd": {"endpoint": "x"}}, "etcd.endpoint", "unknown key"),
        ({"etcd": {"endpoints": ["127.0.0.1:2379"]}}, "etcd.endpoints", "not a URL"),
        ({"etcd": {"endpoints": ["http://h:2379/v3"]}}, "etcd.endpoints", "not a URL"),
        ({"etcd": {"endpoints": []}}, "etcd.endpoints", "at least one"),
        ({"etcd": {"prefix": "dnsdisc"}}, "etcd.prefix", "starts with /"),
        ({"etcd": {"timeout": 0}}, "etcd.timeout", "more than 0.1"),
        ({"etcd": {"cert_file": "c.pem"}}, "etcd.cert_file", "go together"),
        ({"etcd": {"username": "u"}}, "etcd.username", "go together"),
        ({"etcd": {"password": 5, "username": "u"}}, "etcd.password", "string"),
        (
            {"storage": "etcd", "dnssec": {"enabled": True, "propagation_delay": 0}},
            "dnssec.propagation_delay",
            "at least 1 with storage: etcd",
        ),
    ],
)
def test_errors_name_file_key_and_expectation(data: object, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, "conf.yaml")
    message = str(info.value)
    assert message.startswith(f"conf.yaml: {key}:"), message
    assert fragment in message


def test_etcd_settings_from_the_file_and_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "storage: etcd\n"
        "etcd:\n"
        "  endpoints: [http://10.0.0.1:2379, 'https://[fd00::1]:2379/', http://10.0.0.1:2379]\n"
        "  prefix: /dnsdisc/prod/\n"
        "  timeout: 1.5\n"
        "  ca_file: ca.pem\n"
        "  cert_file: /etc/dnsdisc/client.pem\n"
        "  key_file: /etc/dnsdisc/client.key\n"
        "  username: dnsdisc\n"
        "  password: secret\n"
    )
    cfg = build(path, environ={})
    assert cfg.storage == "etcd"
    assert cfg.etcd.endpoints == ("http://10.0.0.1:2379", "https://[fd00::1]:2379")
    assert cfg.etcd.prefix == "/dnsdisc/prod" and cfg.etcd.timeout == 1.5
    assert cfg.etcd.ca_file == tmp_path / "ca.pem"  # relative to the file, like data_dir
    assert cfg.etcd.key_file == Path("/etc/dnsdisc/client.key")
    assert (cfg.etcd.username, cfg.etcd.password) == ("dnsdisc", "secret")
    flags = build(
        path,
        storage="etcd",
        etcd_endpoints="http://127.0.0.1:2379,http://127.0.0.1:2381",
        etcd_prefix="/other",
        environ={},
    )
    assert flags.etcd.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.1:2381")
    assert flags.etcd.prefix == "/other" and flags.etcd.username == "dnsdisc"
    with pytest.raises(ConfigError, match=r"^--etcd-endpoints: "):
        build(None, etcd_endpoints="localhost:2379", environ={})
    with pytest.raises(ConfigError, match=r"^--storage: expected one of: sqlite, memory, etcd"):
        build(None, storage="redis", environ={})


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("dns: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_file(path)


def test_auto_workers_respects_a_container_cpu_quota() -> None:
    from dnsdisc.config.cpus import auto_workers, cgroup_cpus

    assert cgroup_cpus("max 100000\n") is None
    assert cgroup_cpus("200000 100000\n") == 2
    assert cgroup_cpus("150000 100000") == 2  # 1.5 CPUs: round up
    assert cgroup_cpus("50000 100000") == 1
    assert cgroup_cpus("garbage") is None
    assert 0 <= auto_workers() <= 64 and auto_workers() != 1  # one CPU answers in-process


def test_udp_receive_buffer_defaults_to_a_mebibyte_and_must_be_a_size() -> None:
    assert Config().udp_receive_buffer == 1 << 20
    assert from_mapping({"dns": {"udp_receive_buffer": 0}}, "c.yaml").udp_receive_buffer == 0
    for bad in (-1, "big", 2**31, 1.5):
        with pytest.raises(ConfigError, match=r"dns\.udp_receive_buffer: "):
            from_mapping({"dns": {"udp_receive_buffer": bad}}, "conf.yaml")


def test_udp_batch_is_on_by_default_and_must_be_a_boolean() -> None:
    assert Config().udp_batch is True
    assert from_mapping({"dns": {"udp_batch": False}}, "conf.yaml").udp_batch is False
    with pytest.raises(ConfigError, match=r"dns\.udp_batch: expected true or false"):
        from_mapping({"dns": {"udp_batch": "no"}}, "conf.yaml")


# -- the schema: each key declared once --------------------------------------------------------

# A good and a bad value of every key in the schema, and what a key needs beside it to be read.
SAMPLES: dict[str, tuple[object, object]] = {
    "dns.listen": (["127.0.0.1:5353"], "nope"),
    "dns.tls_listen": (["127.0.0.1:8853"], "nope"),
    "dns.tls.cert_file": ("c.pem", ""),
    "dns.tls.key_file": ("k.pem", 5),
    "dns.cookies": (False, "yes"),
    "dns.cookie_secret": ("00112233445566778899aabbccddeeff", "0011"),
    "dns.tcp_idle_timeout": (30, 0),
    "dns.tcp_max_connections": (10, 0),
    "dns.tcp_max_connections_per_client": (5, 0),
    "dns.any": ("full", "some"),
    "dns.udp_batch": (False, "no"),
    "dns.udp_receive_buffer": (0, -1),
    "dns.reply_cache_bytes": (1 << 20, -1),
    "dns.udp_answer_limit": (3, 1001),
    "dns.workers": (63, 65),
    "http.listen": ("127.0.0.1:9000", "127.0.0.1"),
    "http.token": ("secret", 5),
    "http.header_timeout": (5, 0),
    "http.body_timeout": (2.5, "soon"),
    "http.keepalive_timeout": (30, -1),
    "http.max_connections": (100, 0),
    "http.max_connections_per_client": (10, 0),
    "http.tls.cert_file": ("c.pem", ""),
    "http.tls.key_file": ("k.pem", 5),
    "http.tls.client_ca_file": ("ca.pem", ""),
    "http.allowed_hosts": (["dnsdisc.example.com"], "dnsdisc.example.com"),
    "http.allow_insecure": (True, "yes"),
    "acl.tokens": (
        [{"name": "web-team", "secret_sha256": "ab" * 32, "rules": [{"services": "web*"}]}],
        [{"name": "web team", "secret_sha256": "ab" * 32}],
    ),
    "acl.anonymous": ([{"metrics": True}], [{"services": "*", "access": "own"}]),
    "domain": ("example.org", "bad_domain"),
    "data_dir": ("data", ""),
    "zones_dir": ("zones", 5),
    "audit_log": ("audit.jsonl", ""),
    "consul.datacenter": ("eu-west", "eu west"),
    "consul.node": ("dnsdisc-2", ""),
    "storage": ("memory", "redis"),
    "event_loop": ("asyncio", "trio"),
    "etcd.endpoints": (["http://10.0.0.1:2379"], ["10.0.0.1:2379"]),
    "etcd.prefix": ("/x", "x"),
    "etcd.timeout": (1.5, 0),
    "etcd.ca_file": ("ca.pem", ""),
    "etcd.cert_file": ("c.pem", ""),
    "etcd.key_file": ("k.pem", 5),
    "etcd.username": ("u", ""),
    "etcd.password": ("p", 5),
    "log_level": ("debug", "loud"),
    "log_format": ("json", "xml"),
    "query_log": (True, "yes"),
    "nameserver.label": ("dns", "bad_label"),
    "nameserver.addresses": (["10.0.0.1"], ["x"]),
    "nameserver.hostmaster": ("admin", "a b"),
    "negative_ttl": (60, -1),
    "reverse_zones": (["10.in-addr.arpa"], ["example.com"]),
    "locality.networks": ({"eu-1a": ["10.1.0.0/16"]}, {"eu-1a": ["10.1.0.1/16"]}),
    "recursors": (["127.0.0.1:5300"], "127.0.0.1:5300"),
    "recursor_timeout": (5, 0),
    "recursion_allow": (["192.0.2.0/24"], ["10.0.0.1/8"]),
    "dns.nsid": ("node1", 5),
    "transfer.allow": (["192.0.2.0/24"], "192.0.2.0/24"),
    "transfer.tsig_keys": (
        {"xfr": {"algorithm": "hmac-sha256", "secret": "MDEyMzQ1Njc4OWFiY2RlZg=="}},
        {"xfr": {"algorithm": "hmac-md5", "secret": "MDEyMzQ1Njc4OWFiY2RlZg=="}},
    ),
    "transfer.notify": (["127.0.0.1:5300"], ["nowhere"]),
    "transfer.catalog": ("catalog.invalid", "bad name!"),
    "dnssec.enabled": (True, "yes"),
    "dnssec.algorithm": ("ED25519", "RSASHA1"),
    "dnssec.dnskey_ttl": (60, 0),
    "dnssec.propagation_delay": (1, -1),
    "dnssec.zone_max_ttl": (300, "long"),
    "dnssec.max_signatures": (500, -1),
    "dnssec.signature_validity": (7 * 86400, 3600),
    "rate_limit.responses_per_second": (100, -1),
    "rate_limit.slip": (1, 101),
    "rate_limit.ipv4_prefix": (16, 33),
    "rate_limit.ipv6_prefix": (48, 8),
    "health.warning_weight": (0.5, 0),
    "health.flap_window": (120, -1),
    "health.flap_threshold": (3, 1),
    "health.flap_stable": (10, 0),
    "health.flap_hold": ("in", "sideways"),
    "health.protection": ({"expire_fraction": 0.6}, {"expire_fraction": 2}),
    "health.check_networks": (["127.0.0.0/8", "!0.0.0.0/0"], ["10.0.0.0/33"]),
    "health.min_check_interval": (0.1, 0),
    "health.checks_per_second": (50, 0),
    "health.max_concurrent_checks": (10, 0),
    "health.max_concurrent_checks_per_service": (2, 0),
    "limits.services": (10, 0),
    "limits.instances_per_service": (10, 0),
    "limits.instances": (10, "many"),
    "limits.tags_per_service": (10, -1),
    "limits.meta_bytes": (0, 1.5),
    "defaults": ({"policy": "random"}, {"policy": "fastest"}),
    "services": ({"web": {"ttl": 10}}, {"Bad_Name": {}}),
    "queries": ({"web": {"service": "web", "tags": ["!old"]}}, {"web": {"service": "web", "x": 1}}),
}
NEEDS = {
    "dns.tls_listen": {"dns.tls.cert_file": "c.pem", "dns.tls.key_file": "k.pem"},
    "dns.tls.cert_file": {"dns.tls.key_file": "k.pem"},
    "dns.tls.key_file": {"dns.tls.cert_file": "c.pem"},
    "http.tls.cert_file": {"http.tls.key_file": "k.pem"},
    "http.tls.key_file": {"http.tls.cert_file": "c.pem"},
    "http.tls.client_ca_file": {"http.tls.cert_file": "c.pem", "http.tls.key_file": "k.pem"},
    "etcd.cert_file": {"etcd.key_file": "k.pem"},
    "etcd.key_file": {"etcd.cert_file": "c.pem"},
    "etcd.username": {"etcd.password": "p"},
    "etcd.password": {"etcd.username": "u"},
    "rate_limit.slip": {"rate_limit.responses_per_second": 100},
    "rate_limit.ipv4_prefix": {"rate_limit.responses_per_second": 100},
    "rate_limit.ipv6_prefix": {"rate_limit.responses_per_second": 100},
}


def _config_file(tmp_path: Path, values: dict[str, object]) -> Path:
    import yaml

    data: dict[str, Any] = {}
    for path, value in values.items():
        *sections, name = path.split(".")
        place = data
        for section in sections:
            place = place.setdefault(section, {})
        place[name] = value
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


def test_locality_networks_may_overlap_and_the_zones_are_labels(tmp_path: Path) -> None:
    file = _config_file(
        tmp_path,
        {
            "locality.networks": {
                "EU-1b": ["10.2.0.0/16"],
                "eu-1c": ["10.2.7.0/24", "2001:db8::/32"],
            }
        },
    )
    assert load_file(file).locality_networks == (
        ("eu-1b", "10.2.0.0/16"),
        ("eu-1c", "10.2.7.0/24"),
        ("eu-1c", "2001:db8::/32"),
    )


def test_a_bare_yaml_off_is_locality_off(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("defaults:\n  locality: off\nservices:\n  web:\n    locality: pin\n")
    cfg = load_file(file)
    assert cfg.defaults.locality == "off" and cfg.services["web"].locality == "pin"


def test_every_key_of_the_schema_is_read_from_a_file_and_its_errors_name_file_and_key(
    tmp_path: Path,
) -> None:
    from dnsdisc.config.schema import KEYS

    assert set(SAMPLES) == {key.path for key in KEYS}
    for key in KEYS:
        good, bad = SAMPLES[key.path]
        file = _config_file(tmp_path, {key.path: good, **NEEDS.get(key.path, {})})
        cfg = load_file(file)
        assert getattr(cfg, key.config_field) != getattr(Config(), key.config_field), key.path
        file = _config_file(tmp_path, {key.path: bad, **NEEDS.get(key.path, {})})
        with pytest.raises(ConfigError) as info:
            load_file(file)
        assert (info.value.source, info.value.key.partition(".")[0]) == (
            str(file),
            key.path.partition(".")[0],
        )
        assert info.value.key.startswith(key.path), (key.path, str(info.value))


def test_unknown_keys_are_those_the_schema_does_not_declare() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"nameserver": {"glue": []}}, "c.yaml")
    assert str(info.value) == (
        "c.yaml: nameserver.glue: unknown key; expected one of: addresses, hostmaster, label"
    )
    with pytest.raises(ConfigError) as info:
        from_mapping({"http": {"tls": {"cert": "c.pem"}}}, "c.yaml")
    assert str(info.value) == (
        "c.yaml: http.tls.cert: unknown key; expected one of: cert_file, client_ca_file, key_file"
    )
    with pytest.raises(ConfigError, match=r"c.yaml: http.tls: expected a mapping"):
        from_mapping({"http": {"tls": "c.pem"}}, "c.yaml")


def test_tls_files_go_together_and_flags_complete_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http.tls.cert_file: cert_file and key_file go"):
        from_mapping({"http": {"tls": {"cert_file": "c.pem"}}}, "c.yaml")
    file = _config_file(tmp_path, {"http.tls.cert_file": "c.pem", "http.tls.key_file": "k.pem"})
    cfg = build(file, http_tls_client_ca="ca.pem")
    assert cfg.http_tls is not None
    assert cfg.http_tls.cert_file == tmp_path / "c.pem"
    assert cfg.http_tls.client_ca_file == Path("ca.pem")
    assert Config().http_tls is None
    with pytest.raises(ConfigError, match=r"c.yaml: dns.tls_listen: DNS over TLS needs dns.tls"):
        from_mapping({"dns": {"tls_listen": ["127.0.0.1:8853"]}}, "c.yaml")
    cfg = from_mapping(
        {"dns": {"tls_listen": ["127.0.0.1:8853"], "tls": {"cert_file": "c", "key_file": "k"}}},
        "c.yaml",
    )
    dns = cfg.dns_settings()
    assert dns.tls_listen == (HostPort("127.0.0.1", 8853),) and dns.tls == cfg.dns_tls


def test_no_http_api_beyond_loopback_without_authentication(tmp_path: Path) -> None:
    file = _config_file(tmp_path, {"http.listen": "0.0.0.0:8054"})
    with pytest.raises(ConfigError) as err:
        build(file, environ={})
    assert (err.value.source, err.value.key) == (str(file), "http.listen")
    assert "DNSDISC_TOKEN" in str(err.value) and "allow_insecure" in str(err.value)
    with pytest.raises(ConfigError, match=r"http\.listen: the HTTP API would listen on"):
        build(None, environ={}, http="[::]:8054")
    # Any authentication, or saying so, lets it start; loopback needs none.
    assert build(file, environ={"DNSDISC_TOKEN": "t"}).token == "t"
    assert build(file, environ={}, http_allow_insecure=True).http_allow_insecure
    assert build(None, environ={}, http="localhost:8054").token is None
    acl = _config_file(
        tmp_path,
        {
            "http.listen": "0.0.0.0:8054",
            "acl.tokens": [{"name": "ops", "secret_sha256": "ab" * 32}],
        },
    )
    assert build(acl, environ={}).acl_tokens


def test_the_cookie_secret_is_given_or_one_per_start_and_never_shown() -> None:
    secret = "00112233445566778899aabbccddeeff"
    cfg = build(None, environ={"DNSDISC_COOKIE_SECRET": secret})
    assert cfg.dns_settings().cookie_secret == bytes.fromhex(secret)
    assert secret not in repr(cfg) and secret not in repr(cfg.dns_settings())
    random = Config().dns_settings().cookie_secret
    assert len(random) == 16 and random == Config().dns_settings().cookie_secret
    with pytest.raises(ConfigError, match=r"DNSDISC_COOKIE_SECRET: expected 32 hex digits"):
        build(None, environ={"DNSDISC_COOKIE_SECRET": "zz" * 16})


def test_every_flag_of_the_schema_is_in_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    from dnsdisc import cli
    from dnsdisc.config.schema import FLAGS

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    for _, flag in FLAGS:
        shown = flag.metavar or ("{" + ",".join(flag.choices) + "}" if flag.choices else "")
        assert f"{flag.name} {shown}".strip() in out, flag.name
        assert "{default}" not in out
    assert "(default 127.0.0.1:8053)" in out and "default http://127.0.0.1:2379)" in out


def test_no_key_flag_variable_or_field_is_declared_twice() -> None:
    from dnsdisc.config.schema import KEYS

    paths = [key.path for key in KEYS]
    flags = [key.flag.name for key in KEYS if key.flag]
    dests = [key.flag.dest for key in KEYS if key.flag]
    envs = [key.env for key in KEYS if key.env]
    fields = [key.field for key in KEYS]
    for names in (paths, flags, dests, envs, fields):
        assert len(names) == len(set(names)), names
    assert not {"environ", "config_file"} & set(dests)  # build()'s own keywords
    # Every Config field is set by a key (source says where the config came from).
    set_by_keys = {key.config_field for key in KEYS} | {f for key in KEYS for f, _ in key.also}
    assert set_by_keys == {f.name for f in dataclasses.fields(Config)} - {"source"}


def test_sections_are_consistent() -> None:
    from dnsdisc.config.schema import GROUPS, KEYS, SECTIONS

    for key in KEYS:
        # A section's keys set parts of the field its path names; the others, fields of their own.
        field = key.section.replace(".", "_")
        assert ("." in key.field) == (field in SECTIONS), key.path
        if field in SECTIONS:
            assert key.config_field == field
    for name, section in SECTIONS.items():
        modes = {key.reload for key in KEYS if key.config_field == name}
        assert len(modes) == 1, name  # a reload swaps the field whole
        if section.gate is not None:
            assert GROUPS[name][0].name == section.gate


def test_the_fields_a_reload_keeps_until_a_restart() -> None:
    from dnsdisc.config.schema import RESTART_FIELDS

    assert set(RESTART_FIELDS) == {
        "domain",
        "dns_listen",
        "dns_tls_listen",
        "dns_tls",
        "dns_cookies",
        "cookie_secret",
        "http_allow_insecure",
        "audit_log",
        "http_listen",
        "http_header_timeout",
        "http_body_timeout",
        "http_keepalive_timeout",
        "http_max_connections",
        "http_max_connections_per_client",
        "storage",
        "data_dir",
        "etcd",
        "recursors",
        "rate_limit",
        "tcp_idle_timeout",
        "tcp_max_connections",
        "tcp_max_connections_per_client",
        "dns_any",
        "recursion_allow",
        "dns_nsid",
        "transfer_allow",
        "transfer_tsig_keys",
        "transfer_notify",
        "transfer_catalog",
        "dnssec_enabled",
        "dnssec_algorithm",
        "dnssec_dnskey_ttl",
        "dnssec_propagation_delay",
        "dnssec_zone_max_ttl",
        "dnssec_max_signatures",
        "dnssec_signature_validity",
        "udp_batch",
        "udp_receive_buffer",
        "reply_cache_bytes",
        "udp_answer_limit",
        "workers",
        "event_loop",
    }


def test_rate_limit_keys_are_not_read_while_it_is_off() -> None:
    with pytest.raises(ConfigError, match=r"rate_limit\.slip"):  # not off: it shapes the default
        from_mapping({"rate_limit": {"slip": "x"}}, "c.yaml")
    off = from_mapping({"rate_limit": {"responses_per_second": 0, "slip": "x"}}, "c.yaml")
    assert off.rate_limit is not None and off.rate_limit.responses_per_second == 0
    cfg = from_mapping({"rate_limit": {"responses_per_second": 5, "slip": 0}}, "c.yaml")
    assert cfg.rate_limit is not None
    assert (cfg.rate_limit.responses_per_second, cfg.rate_limit.slip) == (5, 0)


def test_build_takes_only_the_schemas_flags() -> None:
    with pytest.raises(TypeError, match="unknown flags: colour"):
        build(None, colour="red", environ={})
    assert build(None, query_log=False, environ={}).query_log is False  # a switch not given


# -- found in review: each of these failed before its fix --------------------------------------


def test_domain_length_is_bounded_so_generated_names_fit() -> None:
    with pytest.raises(ConfigError, match="domain"):
        from_mapping({"domain": ".".join(["a" * 40] * 4)}, "c.yaml")
    assert from_mapping({"domain": ".".join(["a" * 40] * 3)}).domain.count(".") == 3


def test_rate_limit_is_on_by_default_only_beyond_loopback() -> None:
    from dnsdisc.config.load import DEFAULT_RRL_RATE
    from dnsdisc.dnsserver.settings import RateLimit

    def rrl(text: dict[str, Any]) -> object:
        return from_mapping(text, "c.yaml").dns_settings().rate_limit

    assert rrl({}) is None  # the default listen is loopback
    assert rrl({"dns": {"listen": ["127.0.0.2:53", "[::1]:53", "localhost:53"]}}) is None
    for listen in ("0.0.0.0:53", "[::]:53", "192.0.2.1:53", "dns.example:53"):
        got = rrl({"dns": {"listen": ["127.0.0.1:53", listen]}})
        assert got is not None and got.responses_per_second == DEFAULT_RRL_RATE, listen  # type: ignore[attr-defined]
    # Configured wins either way: off on a public address, on at loopback.
    assert rrl({"dns": {"listen": "0.0.0.0:53"}, "rate_limit": {"responses_per_second": 0}}) is None
    on = rrl({"rate_limit": {"responses_per_second": 7}})
    assert on is not None and on.responses_per_second == 7  # type: ignore[attr-defined]
    # Slip and prefixes without a rate shape the default limit (on beyond loopback only).
    shaped = {"rate_limit": {"slip": 0, "ipv4_prefix": 16}}
    assert rrl(shaped) is None
    got = rrl({**shaped, "dns": {"listen": "0.0.0.0:53"}})
    assert got == RateLimit(DEFAULT_RRL_RATE, slip=0, ipv4_prefix=16)


def test_dns_settings_carry_the_edge_keys() -> None:
    cfg = from_mapping(
        {
            "dns": {"any": "full", "tcp_max_connections_per_client": 3},
            "recursion_allow": ["192.0.2.0/24", "2001:db8::1"],
        },
        "c.yaml",
    )
    dns = cfg.dns_settings()
    assert dns.any_full and dns.tcp_max_connections_per_client == 3
    assert str(dns.recursion_allow) == "192.0.2.0/24 2001:db8::1/128"
    assert dns.recursion_allow.allows("2001:db8::1") and not dns.recursion_allow.allows("10.0.0.1")
    assert not Config().dns_settings().any_full
    assert Config().dns_settings().recursion_allow.allows("10.1.2.3")
    assert not Config().dns_settings().recursion_allow.allows("192.0.2.1")
