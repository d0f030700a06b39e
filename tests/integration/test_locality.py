"""Answers that know who is asking (#18), against running servers: ``dig +subnet`` and dnspython
with EDNS Client Subnet for prefer, pin and spill, the fallback when a zone empties (health,
maintenance, drain), the scope echoed, FORMERR for each malformed option; unbound with its
subnetcache module in front, caching per scope; the ``consistent`` policy; and bad input."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.frontends import unbound
from tests.support.helpers import (
    DnsdiscProcess,
    console_steps,
    readme_block,
    require_tool,
    run_step,
    running,
)

NAME = "web.svc.internal."
CONFIG = """\
locality:
  networks:
    eu-1a: [10.1.0.0/16, "2001:db8:1::/48", 127.0.1.0/24]
    eu-1b: [10.2.0.0/16, 127.0.2.0/24]
    eu-1c: [10.3.0.0/16]
health:
  check_networks: ['127.0.0.0/8']
  min_check_interval: 0.05
"""
INSTANCES = (
    ("a1", "127.0.0.11", "eu-1a"),
    ("a2", "127.0.0.12", "eu-1a"),
    ("b1", "127.0.0.21", "eu-1b"),
    ("b2", "127.0.0.22", "eu-1b"),
)
A_HOSTS = {"127.0.0.11", "127.0.0.12"}
B_HOSTS = {"127.0.0.21", "127.0.0.22"}


@pytest.fixture
def zoned(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(CONFIG)
    with running(tmp_path, extra_args=["--config", str(conf)]) as server:
        for iid, host, zone in INSTANCES:
            server.register("web", iid, address=host, port=80, zone=zone)
        yield server


def put_settings(server: DnsdiscProcess, **body: object) -> None:
    result = server.http("PUT", "/v1/services/web", body)
    assert result.status == 200, result


def ask(
    server: DnsdiscProcess, subnet: str | None, rdtype: str = "A", **kw: object
) -> dns.message.Message:
    options = []
    if subnet is not None:
        address, _, prefix = subnet.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    q = dns.message.make_query(NAME, rdtype, use_edns=0, options=options, **kw)  # type: ignore[arg-type]
    return dns.query.udp(q, "127.0.0.1", port=server.dns_port, timeout=3)


def addresses(msg: dns.message.Message) -> set[str]:
    return {rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address")}


def scope(msg: dns.message.Message) -> int:
    (option,) = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    return int(option.scopelen)


def answered(server: DnsdiscProcess) -> int:
    """Queries the server has answered, from /metrics (every process's)."""
    text = server.http("GET", "/metrics").raw.decode()
    found = re.search(r"^dnsdisc_dns_answer_seconds_count (\S+)$", text, re.M)
    assert found is not None, text
    return int(float(found.group(1)))


def dig(server: DnsdiscProcess, *args: str) -> str:
    path = require_tool("dig")
    return subprocess.run(
        [path, "@127.0.0.1", "-p", str(server.dns_port), "+time=3", "+tries=1", *args],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip


def test_dig_subnet_prefer_pin_and_the_scope_echoed(zoned: DnsdiscProcess) -> None:
    # Off (the default): one answer for everyone, echoed with scope 0.
    out = dig(zoned, "+subnet=10.1.3.0/24", NAME)
    assert len(re.findall(r"^web\.svc\.internal\.\s+\d+\s+IN\s+A\s", out, re.M)) == 4, out
    assert "CLIENT-SUBNET: 10.1.3.0/24/0" in out, out

    put_settings(zoned, locality="prefer")
    out = dig(zoned, "+subnet=10.1.3.0/24", "+short", NAME)
    assert set(out.split()) == A_HOSTS, out
    out = dig(zoned, "+subnet=10.2.3.0/24", NAME)
    assert "CLIENT-SUBNET: 10.2.3.0/24/16" in out, out  # the deciding network, /16
    assert set(re.findall(r"\sA\s+(127\.\S+)", out)) == B_HOSTS, out
    # Unknown clients: everything, for their own source prefix.
    out = dig(zoned, "+subnet=192.0.2.0/24", NAME)
    assert (
        len(re.findall(r"^web\.svc\.internal\.\s+\d+\s+IN\s+A\s", out, re.M)) == 4
        and "192.0.2.0/24/24" in out
    ), out
    # eu-1c has no instance: prefer falls back to everything; pin answers NODATA.
    assert len(addresses(ask(zoned, "10.3.0.0/24"))) == 4
    put_settings(zoned, locality="pin")
    msg = ask(zoned, "10.3.0.0/24")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority
    assert scope(msg) == 16
    assert addresses(ask(zoned, "10.1.0.0/24")) == A_HOSTS
    # SRV keeps the zone's records, with their priority and weight.
    out = dig(zoned, "+subnet=10.2.0.0/24", "+short", "_web._tcp.svc.internal.", "SRV")
    assert sorted(line.split()[3].split(".")[0] for line in out.splitlines()) == ["b1", "b2"]
    # The packet's own source address counts where there is no ECS: 127.0.0.1 is nowhere.
    assert len(addresses(ask(zoned, None))) == 4


def test_a_zone_that_empties_falls_back_by_health_maintenance_and_drain(
    zoned: DnsdiscProcess,
) -> None:
    put_settings(zoned, locality="prefer")
    assert addresses(ask(zoned, "10.1.0.0/24")) == A_HOSTS
    # Maintenance on a1: eu-1a keeps a2 (min 1), then a2 drained: the zone has nothing.
    result = zoned.http("PUT", "/v1/services/web/instances/a1/maintenance", {"enabled": True})
    assert result.status == 200, result
    assert addresses(ask(zoned, "10.1.0.0/24")) == {"127.0.0.12"}
    zoned.register("web", "a2", address="127.0.0.12", port=80, zone="eu-1a", weight=0)
    assert addresses(ask(zoned, "10.1.0.0/24")) == B_HOSTS  # everything handed out
    # Health: a check that fails takes b1 out; eu-1b still prefers its own (b2).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the TCP check fails
    zoned.register(
        "web", "b1", address="127.0.0.21", port=port, zone="eu-1b",
        check={"type": "tcp", "interval": 0.1, "timeout": 0.1},
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while addresses(ask(zoned, "10.2.0.0/24")) != {"127.0.0.22"}:
        assert time.monotonic() < deadline, "b1 was never taken out"
        time.sleep(0.1)
    # a2 back in rotation: eu-1b (b2 alone) still answers at home with min 1, and with min 2
    # falls back to every instance handed out (a2 and b2; a1 is in maintenance, b1 critical).
    zoned.register("web", "a2", address="127.0.0.12", port=80, zone="eu-1a")
    assert addresses(ask(zoned, "10.2.0.0/24")) == {"127.0.0.22"}
    put_settings(zoned, locality="prefer", locality_min_healthy=2)
    assert addresses(ask(zoned, "10.2.0.0/24")) == {"127.0.0.12", "127.0.0.22"}


def test_a_reload_moves_networks_between_zones(tmp_path: Path, zoned: DnsdiscProcess) -> None:
    put_settings(zoned, locality="pin")
    assert addresses(ask(zoned, "10.3.0.0/24")) == set()  # eu-1c: no instance, NODATA
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(
        CONFIG.replace("eu-1c: [10.3.0.0/16]", "eu-1c: []\n    eu-1x: [10.3.0.0/16]").replace(
            "eu-1b: [10.2.0.0/16,", "eu-1b: [10.2.0.0/16, 10.3.0.0/17,"
        )
    )
    assert zoned.http("POST", "/v1/reload", {}).status == 200
    # 10.3.0.0/17 is eu-1b now, the rest of 10.3/16 eu-1x (no instance): pin answers NODATA.
    msg = ask(zoned, "10.3.0.0/24")
    assert addresses(msg) == B_HOSTS and scope(msg) == 17
    assert addresses(ask(zoned, "10.3.200.0/24")) == set()
    # A bad map is refused by the reload, which changes nothing.
    conf.write_text(CONFIG.replace("eu-1c: [10.3.0.0/16]", "eu-1c: [10.3.0.1/16]"))
    bad = zoned.http("POST", "/v1/reload", {})
    assert bad.status >= 400 and "locality.networks.eu-1c" in bad.raw.decode(), bad
    assert addresses(ask(zoned, "10.3.0.0/24")) == B_HOSTS


def test_each_malformed_client_subnet_gets_formerr(zoned: DnsdiscProcess) -> None:
    bad = {
        "family 3": b"\x00\x03\x18\x00\x0a\x01\x03",
        "source prefix /33": b"\x00\x01\x21\x00\x0a\x01\x03\x04\x05",
        "address too short": b"\x00\x01\x18\x00\x0a\x01",
        "address too long": b"\x00\x01\x10\x00\x0a\x01\x03",
        "bits past the prefix": b"\x00\x01\x17\x00\x0a\x01\x03",
        "IPv6 /129": b"\x00\x02\x81\x00" + bytes(17),
    }
    for why, option in bad.items():
        q = dns.message.make_query(
            NAME, "A", use_edns=0, options=[dns.edns.GenericOption(8, option)]
        )
        for send in (dns.query.udp, dns.query.tcp):
            reply = send(q, "127.0.0.1", port=zoned.dns_port, timeout=3)
            assert reply.rcode() == dns.rcode.FORMERR, (why, send)
    # The server is well: a good query is answered.
    assert len(addresses(ask(zoned, "10.1.0.0/24"))) == 4


def test_spill_keeps_as_much_local_as_capacity_allows(zoned: DnsdiscProcess) -> None:
    # Equal capacity, 80/20 demand: eu-1a answers 0.5/0.8 = 62.5% at home, the rest from
    # eu-1b, which has a surplus and keeps all of its own.
    put_settings(zoned, locality="spill", max_answers=1)
    rng = random.Random(18)
    home = {"a": Counter(), "b": Counter()}
    for n in range(3000):
        zone = "a" if rng.random() < 0.8 else "b"
        subnet = f"10.{1 if zone == 'a' else 2}.{n % 200}.0/24"
        (got,) = addresses(ask(zoned, subnet))
        if n >= 500:  # after the demand window has seen the mix
            home[zone][got in (A_HOSTS if zone == "a" else B_HOSTS)] += 1
    a_home = home["a"][True] / sum(home["a"].values())
    assert a_home == pytest.approx(0.625, abs=0.05), home  # prefer: 1.0; off: 0.5
    assert home["b"][False] == 0, home
    # Traffic per zone follows capacity: half each.
    total_a = home["a"][True] + home["b"][False]
    total = sum(home["a"].values()) + sum(home["b"].values())
    assert total_a / total == pytest.approx(0.5, abs=0.05)


def test_consistent_sticks_moves_a_tenth_and_follows_weights(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        for i in range(10):
            server.register("web", f"w{i}", address=f"127.0.1.{i + 1}", port=80)
        put_settings(server, policy="consistent", max_answers=1)
        subnets = [f"10.{n // 250}.{n % 250}.0/24" for n in range(1000)]
        first = {s: addresses(ask(server, s)) for s in subnets}
        assert all(len(a) == 1 for a in first.values())
        again = {s: addresses(ask(server, s)) for s in subnets[:200]}
        assert again == {s: first[s] for s in subnets[:200]}  # sticky
        msg = ask(server, subnets[0])
        assert scope(msg) == 24  # the sticky prefix
        # Remove w3: only its subnets move, about a tenth.
        assert server.http("DELETE", "/v1/services/web/instances/w3").status in (200, 204)
        moved = sum(addresses(ask(server, s)) != first[s] for s in subnets)
        held = sum(first[s] == {"127.0.1.4"} for s in subnets)
        assert moved == held and 50 <= moved <= 160, (moved, held)

    with running(tmp_path, "weights") as server:
        for i, weight in enumerate((10, 20, 30, 40)):
            server.register("web", f"w{i}", address=f"127.0.1.{i + 1}", port=80, weight=weight)
        put_settings(server, policy="consistent", max_answers=1)
        got = Counter(
            next(iter(addresses(ask(server, f"10.{n // 250}.{n % 250}.0/24")))) for n in range(2000)
        )
        expected = {f"127.0.1.{i + 1}": 2000 * w / 100 for i, w in enumerate((10, 20, 30, 40))}
        chi2 = sum((got[a] - e) ** 2 / e for a, e in expected.items())
        assert chi2 < 16.3, got  # 3 degrees of freedom, p = 0.001


def test_unbound_with_subnetcache_gives_each_client_its_zone_and_caches_per_scope(
    tmp_path: Path, zoned: DnsdiscProcess
) -> None:
    put_settings(zoned, locality="prefer", ttl=60)
    extra = (
        'module-config: "subnetcache iterator"',
        "send-client-subnet: 127.0.0.1",
        "client-subnet-always-forward: yes",
        "max-client-subnet-ipv4: 24",
    )
    with unbound(tmp_path, zoned, *extra, cache=True) as resolver:

        def from_client(source: str) -> set[str]:
            q = dns.message.make_query(NAME, "A")
            reply = dns.query.udp(q, "127.0.0.1", port=resolver.port, timeout=5, source=source)
            return addresses(reply)

        before = answered(zoned)
        assert from_client("127.0.1.5") == A_HOSTS
        assert from_client("127.0.2.5") == B_HOSTS
        assert from_client("127.0.3.5") == A_HOSTS | B_HOSTS  # no zone: everything
        asked = answered(zoned)
        assert asked - before >= 3
        # Another host in each /24 is answered from unbound's cache (the scope is /24), and
        # still gets its own zone's answer.
        assert from_client("127.0.1.77") == A_HOSTS
        assert from_client("127.0.2.77") == B_HOSTS
        assert answered(zoned) == asked, "unbound did not cache per scope"
        # A client of another /24 of a zone is not served eu-1a's cached answer for
        # 127.0.1.0/24: unbound asks again, and it gets everything (no zone).
        assert from_client("127.0.4.5") == A_HOSTS | B_HOSTS
        assert answered(zoned) > asked


def test_bad_input_is_refused_and_named(tmp_path: Path, zoned: DnsdiscProcess) -> None:
    bad = zoned.http(
        "PUT", "/v1/services/web/instances/x", {"address": "10.0.0.1", "port": 1, "zone": "eu_1a"}
    )
    assert bad.status == 400 and bad.body["field"] == "zone", bad
    bad = zoned.http("PUT", "/v1/services/web", {"locality": "near"})
    assert bad.status == 400 and bad.body["field"] == "locality", bad
    bad = zoned.http("PUT", "/v1/services/web", {"sticky_prefix": 33})
    assert bad.status == 400 and bad.body["field"] == "sticky_prefix", bad
    assert zoned.http("GET", "/v1/services/web/instances/x").status == 404  # nothing changed
    assert zoned.http("GET", "/v1/services/web").body["locality"] == "off"
    conf = tmp_path / "bad.yaml"
    conf.write_text("locality:\n  networks:\n    eu-1a: [10.1.0.0/33]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dnsdisc", "serve", "--config", str(conf), "--data-dir",
         str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert str(conf) in proc.stderr and "locality.networks.eu-1a" in proc.stderr, proc.stderr


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    require_tool("curl")
    conf = tmp_path / "locality.yaml"
    conf.write_text(readme_block("Answers by where the client is", "yaml"))
    with running(tmp_path, extra_args=["--config", str(conf)]) as server:
        steps = console_steps(readme_block("Answers by where the client is"))
        assert len(steps) >= 8
        for command, expected in steps:
            got = run_step(server, command, timeout=60)
            if "uniq -c" not in command:
                assert sorted(got) == sorted(expected), command
                continue
            # The spill counts vary around the ones shown: the same (client, answer) pairs (off
            # would add eu-1b clients answered by eu-1a), each within 35 (about 4 sd; prefer
            # would be 120 off).
            shown = {tuple(line.split()[1:]): int(line.split()[0]) for line in expected}
            counted = {tuple(line.split()[1:]): int(line.split()[0]) for line in got}
            assert counted.keys() == shown.keys(), got
            for pair, n in shown.items():
                assert abs(counted[pair] - n) <= 35, (got, expected)
