"""DNSSEC keys over time (#24): a stream of queries through a validating, caching unbound sees
not one bogus answer while an instance registers, another goes into maintenance and the ZSK is
rolled over (pre-publish, with short waits so that the whole rollover runs in seconds); the
rollover's API and CLI (``GET /v1/dnssec``, ``POST /v1/dnssec/rollover``, ``dnsdisc dnssec keys``
and ``rollover``: rights, 409s, states); a node restarted mid-rollover takes the remaining steps
on time; and with etcd two nodes sign with the same keys, one node's rollover reaching the
other."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.etcdcluster import EtcdCluster, etcd_node
from tests.support.frontends import unbound
from tests.support.helpers import ROOT, DnsdiscProcess, running, wait_until

# Short waits: a new ZSK signs 3 s after it is published (dnskey_ttl 2 + propagation_delay 1)
# and the old one leaves the DNSKEY RRset 6 s after that (zone_max_ttl 5 + 1): the largest TTL
# served here is the default 5 s of services, the SOA and negative answers.
FAST = "dnssec:\n  enabled: true\n  dnskey_ttl: 2\n  propagation_delay: 1\n  zone_max_ttl: 5\n"
ZONE = "svc.internal."


def ds_lines(conf: Path, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "dnsdisc", "dnssec", "ds", "--config", str(conf), *args],
        capture_output=True, text=True, timeout=30, check=True, cwd=ROOT,
    ).stdout.splitlines()  # fmt: skip
    assert any(line.startswith(f"{ZONE} IN DS ") for line in out), out
    return out


def cli(server: DnsdiscProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DNSDISC_HTTP": f"127.0.0.1:{server.http_port}"}
    env.pop("DNSDISC_TOKEN", None)
    if server.token:
        env["DNSDISC_TOKEN"] = server.token
    return subprocess.run(
        [sys.executable, "-m", "dnsdisc", "dnssec", *args],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
    )  # fmt: skip


def direct(server: DnsdiscProcess, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
    return dns.query.tcp(q, "127.0.0.1", port=server.dns_port, timeout=5)


def zsk_tags(server: DnsdiscProcess) -> set[int]:
    """The key tags of the ZSKs in the DNSKEY RRset, as served."""
    reply = direct(server, ZONE, "DNSKEY")
    [rrset] = [r for r in reply.answer if r.rdtype == dns.rdatatype.DNSKEY]
    return {dns.dnssec.key_id(rd) for rd in rrset if rd.flags == 256}


def signed_by(server: DnsdiscProcess, name: str, rdtype: str = "A") -> set[int]:
    """The key tags of the RRSIGs over the answer to ``name``, as served."""
    reply = direct(server, name, rdtype)
    return {rd.key_tag for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG for rd in r}


def valid_with_served_keys(server: DnsdiscProcess, other: DnsdiscProcess, name: str) -> None:
    """``server``'s signed answer to ``name`` validates against ``other``'s DNSKEY RRset."""
    reply = direct(server, name, "A")
    [rrset] = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
    [sigs] = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
    keys = direct(other, ZONE, "DNSKEY")
    [dnskey] = [r for r in keys.answer if r.rdtype == dns.rdatatype.DNSKEY]
    dns.dnssec.validate(rrset, sigs, {dns.name.from_text(ZONE): dnskey})


@contextmanager
def stream(port: int, queries: list[tuple[str, str]]) -> Iterator[list[tuple[str, str, int, bool]]]:
    """Queries asked over and over through a resolver on ``port`` while the block runs
    (bounded: 60 s, 20,000 queries): (name, type, rcode, AD) of each."""
    seen: list[tuple[str, str, int, bool]] = []
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and len(seen) < 20_000:
            for name, rdtype in queries:
                q = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
                try:
                    reply = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
                except (OSError, dns.exception.DNSException):
                    seen.append((name, rdtype, -1, False))
                    continue
                seen.append((name, rdtype, reply.rcode(), bool(reply.flags & dns.flags.AD)))
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(70)


def test_no_answer_is_bogus_through_a_registration_a_health_change_and_a_rollover(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(FAST)
    with running(tmp_path, extra_args=["--config", str(conf), "--workers", "1"]) as server:
        anchors = [
            line.replace(" IN DS ", " DS ")
            for line in ds_lines(conf, "--data-dir", str(server.data_dir))
        ]
        assert server.http("PUT", "/v1/services/web", {"max_answers": 1}).status in (200, 201)
        for n in range(3):
            server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
        old = zsk_tags(server)
        assert len(old) == 1
        queries = [
            ("web.svc.internal.", "A"),
            ("_web._tcp.svc.internal.", "SRV"),
            ("web.svc.internal.", "MX"),  # NODATA
            ("nothing.svc.internal.", "A"),  # does not exist
            (ZONE, "DNSKEY"),
        ]
        # Caching as resolvers do: the DNSKEY RRset and the answers are kept for their TTLs
        # (2 s and 5 s), so the rollover's waits are what keeps them valid.
        with (
            unbound(tmp_path, server, cache=True, trust_anchors=anchors) as resolver,
            stream(resolver.port, queries) as seen,
        ):
            time.sleep(1.5)
            server.register("web", "w3", address="10.0.0.4", port=80)  # a registration
            time.sleep(1.5)
            result = server.http(
                "PUT", "/v1/services/web/instances/w0/maintenance", {"enabled": True}
            )  # a health change: w0 is no longer handed out
            assert result.status == 200, result
            time.sleep(1.5)
            started = server.http("POST", "/v1/dnssec/rollover", {})
            assert started.status == 202, started
            new = {k["tag"] for k in started.body["keys"] if k["state"] == "published"}
            assert len(new) == 1 and not new & old
            assert zsk_tags(server) == old | new  # pre-published: in DNSKEY, not signing
            assert signed_by(server, "web.svc.internal.") == old
            wait_until(lambda: signed_by(server, "web.svc.internal.") == new, 10)
            assert zsk_tags(server) == old | new  # the old one retired, still published
            wait_until(lambda: zsk_tags(server) == new, 12)  # and gone
            time.sleep(3)  # answers cached before it left expire meanwhile
        bogus = [s for s in seen if s[2] != dns.rcode.NOERROR or not s[3]]
        assert len(seen) > 200, len(seen)
        assert not bogus, (len(bogus), bogus[:10])
        assert "validation failure" not in resolver.log()
        assert sum(s[0] == ZONE for s in seen) >= 10  # the DNSKEY RRset was asked all along
        handed = {a for _ in range(20) for a in server.addresses("web.svc.internal.", "A")}
        assert handed == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}  # w3 in, w0 in maintenance out
        # Every key's step was logged, and the serial moved with each (secondaries are told).
        log = server.log()
        assert log.count("dnssec: keys now") == 3, log


def test_rollover_api_and_cli_rights_conflicts_and_a_restart_mid_rollover(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "dnsdisc.yaml"
    sha = {who: hashlib.sha256(f"{who}-secret".encode()).hexdigest() for who in ("ops", "app")}
    tokens = (
        "acl:\n  tokens:\n"
        f"    - {{name: ops, secret_sha256: '{sha['ops']}', rules: [{{operator: true}}]}}\n"
        f"    - {{name: app, secret_sha256: '{sha['app']}',"
        " rules: [{services: '*', access: write}]}\n"
    )
    conf.write_text(FAST.replace("propagation_delay: 1", "propagation_delay: 4") + tokens)
    server = DnsdiscProcess(tmp_path / "node", extra_args=["--config", str(conf)])
    server.token = "app-secret"
    server.start()
    try:
        state = server.http("GET", "/v1/dnssec")
        assert state.status == 200 and state.body["enabled"] is True, state
        assert [(k["role"], k["state"]) for k in state.body["keys"]] == [
            ("KSK", "active"), ("ZSK", "active")
        ]  # fmt: skip
        assert state.body["rollover"] == {
            "under_way": False, "next_step": None, "publish_wait": 6, "retire_wait": 9
        }  # fmt: skip
        refused = server.http("POST", "/v1/dnssec/rollover", {})
        assert refused.status == 403 and refused.body["field"] == "operator", refused
        assert cli(server, "rollover").returncode == 1
        server.token = None
        assert server.http("POST", "/v1/dnssec/rollover", {}).status == 401
        server.token = "ops-secret"
        out = cli(server, "rollover")
        assert out.returncode == 0, out.stderr
        assert "published" in out.stdout and "rollover under way: next step at" in out.stdout
        again = server.http("POST", "/v1/dnssec/rollover", {})
        assert again.status == 409 and again.body["field"] == "dnssec", again
        assert "under way" in again.body["error"]
        listing = json.loads(cli(server, "keys", "--json").stdout)
        roles = [(k["role"], k["state"]) for k in listing["keys"]]
        assert roles == [("KSK", "active"), ("ZSK", "active"), ("ZSK", "published")], roles
        [new] = [k for k in listing["keys"] if k["state"] == "published"]
        # A restart mid-rollover: the timeline is kept with the keys, so the new node takes
        # the remaining steps at the times planned.
        server.stop()
        server.start()
        assert zsk_tags(server) == {k["tag"] for k in listing["keys"] if k["role"] == "ZSK"}
        wait_until(lambda: signed_by(server, "svc.internal.", "SOA") == {new["tag"]}, 12)
        keys = server.http("GET", "/v1/dnssec").body["keys"]
        assert [k["state"] for k in keys] == ["active", "retired", "active"], keys
        wait_until(lambda: zsk_tags(server) == {new["tag"]}, 15)
        table = cli(server, "keys").stdout
        assert "removed" in table and "under way" not in table, table
    finally:
        server.stop()
    # DNSSEC off: the state says so and a rollover is a conflict, not a crash.
    with running(tmp_path, "plain") as plain:
        assert plain.http("GET", "/v1/dnssec").body == {"enabled": False, "keys": []}
        off = plain.http("POST", "/v1/dnssec/rollover", {})
        assert off.status == 409 and off.body["field"] == "dnssec", off


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_with_etcd_every_node_signs_with_the_same_keys_and_follows_a_rollover(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(FAST)
    a = etcd_node(tmp_path, "a", etcd, "--config", str(conf))
    b = etcd_node(tmp_path, "b", etcd, "--config", str(conf))
    a.start()
    try:
        b.start()
        try:
            a.register("web", "w0", address="10.0.0.1", port=80)
            wait_until(lambda: bool(b.addresses("web.svc.internal.")), 5)
            assert zsk_tags(a) == zsk_tags(b)
            keys_a = direct(a, ZONE, "DNSKEY").answer
            assert keys_a == direct(b, ZONE, "DNSKEY").answer  # the same keys, from etcd
            valid_with_served_keys(b, a, "web.svc.internal.")
            # `dnsdisc dnssec ds` reads them from etcd too: the DS both nodes' DNSKEY match.
            ds = ds_lines(conf, "--storage", "etcd", "--etcd-endpoints", etcd.endpoints,
                          "--etcd-prefix", "/dnsdisc-test", "--data-dir", str(tmp_path / "cli"))  # fmt: skip
            ksk_tags = {
                dns.dnssec.key_id(rd)
                for r in keys_a if r.rdtype == dns.rdatatype.DNSKEY for rd in r if rd.flags == 257
            }  # fmt: skip
            assert {int(line.split()[3]) for line in ds} == ksk_tags
            old = zsk_tags(a)
            started = a.http("POST", "/v1/dnssec/rollover", {})
            assert started.status == 202, started
            [new] = [k["tag"] for k in started.body["keys"] if k["state"] == "published"]
            # B reads the keys again every half propagation_delay: it publishes the new ZSK
            # well before it signs, and both switch together.
            wait_until(lambda: zsk_tags(b) == old | {new}, 2)
            assert b.http("GET", "/v1/dnssec").body["rollover"]["under_way"] is True
            wait_until(lambda: signed_by(b, "web.svc.internal.") == {new}, 10)
            assert signed_by(a, "web.svc.internal.") == {new}
            valid_with_served_keys(b, a, "web.svc.internal.")
            valid_with_served_keys(a, b, "web.svc.internal.")
            wait_until(lambda: zsk_tags(a) == {new} and zsk_tags(b) == {new}, 12)
            # A rollover under way on A is a conflict on B too.
            assert b.http("POST", "/v1/dnssec/rollover", {}).status == 202
            assert a.http("POST", "/v1/dnssec/rollover", {}).status == 409
        finally:
            b.stop()
    finally:
        a.stop()


def soa_serial(server: DnsdiscProcess) -> int:
    [rrset] = [r for r in direct(server, ZONE, "SOA").answer if r.rdtype == dns.rdatatype.SOA]
    return int(rrset[0].serial)


def test_with_etcd_the_serial_does_not_go_back_when_a_node_restarts_after_a_rollover(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    # The serial is the store's revision plus the key steps. Those were counted by each process
    # from its start: a node restarted after a rollover served a lower serial than before (the
    # secondaries then ignored the next changes), and a node started later served less than one
    # running all along.
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(FAST)
    a = etcd_node(tmp_path, "a", etcd, "--config", str(conf))
    b = etcd_node(tmp_path, "b", etcd, "--config", str(conf))
    a.start()
    try:
        a.register("web", "w0", address="10.0.0.1", port=80)
        started = a.http("POST", "/v1/dnssec/rollover", {})
        assert started.status == 202, started
        [new] = [k["tag"] for k in started.body["keys"] if k["state"] == "published"]
        wait_until(lambda: zsk_tags(a) == {new}, 15)  # the whole rollover: three steps
        before = soa_serial(a)
        b.start()  # a node started after it
        try:
            assert soa_serial(b) >= before, (soa_serial(b), before)
        finally:
            b.stop()
        a.stop()
        a.start()
        assert soa_serial(a) >= before, (soa_serial(a), before)
    finally:
        a.stop()
