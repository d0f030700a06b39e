"""zones: every example file in zones/ loads; bad files are errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsdisc.config import zones
from dnsdisc.dnsserver import wire
from dnsdisc.errors import ConfigError
from dnsdisc.registry.model import ServiceSettings
from tests.support.helpers import ROOT

DEFAULTS = ServiceSettings("default")


def test_every_example_zone_file_loads() -> None:
    files = sorted((ROOT / "zones").glob("*.yaml"))
    assert files, "the repo ships example zone files"
    data = zones.load_dir(ROOT / "zones", "svc.internal.", DEFAULTS, required=True)
    owners = {wire.wire_to_text(r.owner) for r in data.records}
    assert {"www.svc.internal.", "mail.svc.internal.", "api.partners.internal."} <= owners
    types = {r.rtype for r in data.records}
    assert {wire.A, wire.AAAA, wire.CNAME, wire.TXT, wire.SRV, wire.MX} <= types
    assert [wire.wire_to_text(a) for a in data.apexes] == ["partners.internal."]
    ((postgres, instances),) = data.services
    assert postgres.name == "postgres" and postgres.ttl == 30
    assert [i.id for i in instances] == ["pg-1", "pg-2"]
    assert all(i.static for i in instances)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "z.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("records:\n  - {name: a, type: A, value: 300.1.1.1}\n", "records[0]"),
        ("records:\n  - {name: a, type: SOA, value: x}\n", "records[0].type"),
        ("records:\n  - {name: a, type: A}\n", "records[0].value"),
        ("records:\n  - {name: a, type: A, value: 1.2.3.4, colour: red}\n", "records[0].colour"),
        ("records:\n  - {name: a.example.org., type: A, value: 1.2.3.4}\n", "records[0].name"),
        ("records:\n  - {name: a, type: BOGUS, value: x}\n", "records[0]"),
        ("ttl: -1\n", "ttl"),
        ("colour: red\n", "colour"),
        (
            "services:\n  db:\n    instances:\n      d-1: {address: 10.0.0.1}\n",
            "services.db.instances.d-1.port",
        ),
        ("services:\n  db:\n    policy: fastest\n", "services.db.policy"),
        ("services:\n  db:\n    locality: near\n", "services.db.locality"),
        (
            "services:\n  db:\n    instances:\n      d-1: {address: 10.0.0.1, port: 1, zone: a_b}\n",
            "services.db.instances.d-1.zone",
        ),
        ("origin: other.example.\nservices:\n  db: {}\n", "services"),
    ],
)
def test_bad_zone_files(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        zones.load_dir(write(tmp_path, text), "svc.internal.", DEFAULTS)
    assert f"z.yaml: {key}:" in str(info.value)


def test_a_zone_file_places_instances_in_zones_and_sets_locality(tmp_path: Path) -> None:
    text = (
        "services:\n  db:\n    locality: spill\n    policy: consistent\n    instances:\n"
        "      d-1: {address: 10.0.0.1, port: 5432, zone: EU-1a}\n"
        "      d-2: {address: 10.0.0.2, port: 5432}\n"
    )
    ((settings, instances),) = zones.load_dir(
        write(tmp_path, text), "svc.internal.", DEFAULTS
    ).services
    assert settings.locality == "spill" and settings.policy == "consistent"
    assert [(i.id, i.zone) for i in instances] == [("d-1", "eu-1a"), ("d-2", None)]


def test_a_zone_files_service_may_have_https_and_dnssd(tmp_path: Path) -> None:
    text = "services:\n  web:\n    https: {alpn: [h2]}\n    dnssd: true\n    instances: {}\n"
    ((settings, _),) = zones.load_dir(write(tmp_path, text), "svc.internal.", DEFAULTS).services
    assert settings.https is not None and settings.https.alpn == ("h2",) and settings.dnssd
    bad = "services:\n  web:\n    https: {alpn: [nope nope]}\n"
    with pytest.raises(ConfigError, match="https"):
        zones.load_dir(write(tmp_path, bad), "svc.internal.", DEFAULTS)


def test_cname_must_stand_alone(tmp_path: Path) -> None:
    text = (
        "records:\n  - {name: a, type: CNAME, value: b}\n  - {name: a, type: A, value: 1.2.3.4}\n"
    )
    with pytest.raises(ConfigError, match="CNAME"):
        zones.load_dir(write(tmp_path, text), "svc.internal.", DEFAULTS)


def test_missing_zone_dir_is_fine_unless_required(tmp_path: Path) -> None:
    assert zones.load_dir(tmp_path / "none", "svc.internal.", DEFAULTS).records == []
    with pytest.raises(ConfigError):
        zones.load_dir(tmp_path / "none", "svc.internal.", DEFAULTS, required=True)


# -- found in review: each of these failed before its fix --------------------------------------


def test_cname_loop_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text(
        "records:\n  - {name: a, type: CNAME, value: b}\n  - {name: b, type: CNAME, value: a}\n"
    )
    with pytest.raises(ConfigError, match="loops"):
        zones.load_dir(tmp_path, "svc.internal.", ServiceSettings("default"))
