"""config: the example file loads, flags override, and every error names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

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
        ({"negative_ttl": True}, "negative_ttl", "integer"),
        ({"reverse_zones": ["example.com"]}, "reverse_zones", "in-addr.arpa"),
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
    from dnsdisc.config.load import auto_workers, cgroup_cpus

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


# -- found in review: each of these failed before its fix --------------------------------------


def test_domain_length_is_bounded_so_generated_names_fit() -> None:
    with pytest.raises(ConfigError, match="domain"):
        from_mapping({"domain": ".".join(["a" * 40] * 4)}, "c.yaml")
    assert from_mapping({"domain": ".".join(["a" * 40] * 3)}).domain.count(".") == 3
