"""model: strict validation at construction."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from dnsdisc.errors import ValidationError
from dnsdisc.registry.checks import CheckSpec, RemoteCheckRules
from dnsdisc.registry.model import HeartbeatReport, Instance, ServiceSettings


def test_instance_pickles_every_field() -> None:
    # Instances travel to the DNS workers pickled, by a hand-written __reduce__.
    inst = Instance.from_json(
        "web",
        "a",
        {
            "address": "10.0.0.1", "port": 81, "weight": 7, "priority": 2, "protocol": "udp",
            "tags": ["x"], "meta": {"k": "v"}, "ttl": 30, "deregister_after": 90,
            "check": {"type": "http", "path": "/up", "interval": 5},
        },
        static=True,
    )  # fmt: skip
    assert isinstance(inst.check, CheckSpec)
    copy = pickle.loads(pickle.dumps(inst, pickle.HIGHEST_PROTOCOL))
    assert copy == inst and copy is not inst


def test_instance_defaults_and_normalisation() -> None:
    inst = Instance.from_json(
        "Web", "W-1", {"address": "2001:DB8::0:1", "port": 80, "tags": ["a", "A", "b"]}
    )
    assert (inst.service, inst.id) == ("web", "w-1")
    assert inst.address == "2001:db8::1" and inst.is_ipv6
    assert (inst.weight, inst.priority, inst.protocol, inst.ttl) == (100, 0, "tcp", None)
    assert inst.tags == ("a", "b")
    assert Instance.from_json("web", "w-1", inst.definition()) == inst


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"port": 80}, "address"),
        ({"address": "10.0.0.1"}, "port"),
        ({"address": "10.0.0.1", "port": "80"}, "port"),
        ({"address": "10.0.0.1", "port": True}, "port"),
        ({"address": "10.0.0.1", "port": 80.0}, "port"),
        ({"address": "10.0.0.1", "port": 0}, "port"),
        ({"address": "10.0.0.1", "port": 65536}, "port"),
        ({"address": "10.0.0.1", "port": 80, "weight": 65536}, "weight"),
        ({"address": "10.0.0.1", "port": 80, "priority": -1}, "priority"),
        ({"address": "10.0.0.1", "port": 80, "protocol": "TCP"}, "protocol"),
        ({"address": "10.0.0.256", "port": 80}, "address"),
        ({"address": "fe80::1%eth0", "port": 80}, "address"),
        ({"address": 167772161, "port": 80}, "address"),
        ({"address": "10.0.0.1", "port": 80, "tags": "a"}, "tags"),
        ({"address": "10.0.0.1", "port": 80, "tags": ["a_b"]}, "tags"),
        ({"address": "10.0.0.1", "port": 80, "meta": {"k": 1}}, "meta"),
        ({"address": "10.0.0.1", "port": 80, "meta": {"a=b": "c"}}, "meta"),
        ({"address": "10.0.0.1", "port": 80, "meta": {"k": "v" * 300}}, "meta"),
        ({"address": "10.0.0.1", "port": 80, "ttl": 0}, "ttl"),
        ({"address": "10.0.0.1", "port": 80, "ttl": float("nan")}, "ttl"),
        ({"address": "10.0.0.1", "port": 80, "ttl": "5"}, "ttl"),
        ({"address": "10.0.0.1", "port": 80, "extra": 1}, "extra"),
    ],
)
def test_instance_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Instance.from_json("web", "w-1", body)
    assert info.value.field == field


def test_service_settings_replace_with_defaults() -> None:
    base = ServiceSettings("web", policy="weighted", ttl=30)
    s = ServiceSettings.from_json("web", {"max_answers": 2}, base)
    assert (s.policy, s.ttl, s.max_answers) == ("weighted", 30, 2)
    with pytest.raises(ValidationError, match="round_robin"):
        ServiceSettings.from_json("web", {"policy": "nope"})
    with pytest.raises(ValidationError) as info:
        ServiceSettings.from_json("web", {"max_answers": 0})
    assert info.value.field == "max_answers"


# -- found in review: each of these failed before its fix --------------------------------------


def test_huge_numbers_are_validation_errors_not_crashes() -> None:
    big = 10**400
    with pytest.raises(ValidationError) as info:
        Instance.from_json("web", "w-1", {"address": "10.0.0.1", "port": 80, "ttl": big})
    assert info.value.field == "ttl"
    with pytest.raises(ValidationError):
        HeartbeatReport.from_json({"load": big})
    with pytest.raises(ValidationError):
        ServiceSettings.from_json("web", {"slow_start": big})


def test_checks_registered_over_the_api_are_held_to_the_remote_rules() -> None:
    import pytest

    from dnsdisc.errors import ValidationError
    from dnsdisc.netaddr import DEFAULT_CHECK_NETWORKS, NetRules

    rules = RemoteCheckRules(NetRules.parse(DEFAULT_CHECK_NETWORKS, "", "health.check_networks"))

    def inst(at: str, **check: object) -> Instance:
        return Instance.from_json("web", "w", {"address": at, "port": 80, "check": check})

    rules.admit(inst("10.0.0.1", type="tcp"))
    rules.admit(Instance.from_json("web", "w", {"address": "127.0.0.1", "port": 80}))
    assert inst("10.0.0.1", type="tcp", interval=0.5).check.timeout == 0.5  # type: ignore[union-attr]
    for bad in (
        inst("169.254.169.254", type="tcp"),
        inst("::ffff:127.0.0.1", type="http"),
        inst("10.0.0.1", type="tcp", interval=0.06),
        inst("10.0.0.1", type="tcp", interval=2, timeout=3),
        # A check's own target is held to the same rules as the instance's address.
        inst("10.0.0.1", type="http", address="169.254.169.254"),
        inst("10.0.0.1", type="udp", address="127.0.0.1", port=53),
        inst("10.0.0.1", type="dns", address="::1", name="x.example"),
        inst("10.0.0.1", type="grpc", address="127.0.0.53"),
        # Nothing registered over the API runs a command or reads a file on the server.
        inst("10.0.0.1", type="exec", command=["/bin/true"]),
        inst("10.0.0.1", type="https", ca_file="/etc/shadow"),
    ):
        with pytest.raises(ValidationError) as info:
            rules.admit(bad)
        assert info.value.field == "check"
    several = Instance.from_json("web", "w", {"address": "10.0.0.1", "port": 80, "checks": [
        {"type": "tcp"}, {"type": "http", "address": "127.0.0.1"}]})  # fmt: skip
    with pytest.raises(ValidationError) as info:
        rules.admit(several)
    assert info.value.field == "checks" and "checks[1]" in info.value.message
    # Alias checks reach no address: allowed.
    rules.admit(inst("10.0.0.1", type="alias", service="db"))
