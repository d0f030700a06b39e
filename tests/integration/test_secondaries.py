"""dnsdisc as the primary of real secondaries (#23): NSD and Knot transfer svc.internal and a
reverse zone with TSIG, answer what dnsdisc answers for every name, and follow a registration
and a deregistration through NOTIFY and IXFR within 2 s; BIND, given only the catalog zone,
provisions the member zones from it (RFC 9432) and answers for them. Every secondary is started
here in the foreground on a loopback port, its files under tmp_path, and ended by its PID.

dnsdisc's transfer.allow leaves 127.0.0.1 out, where every secondary is: only the key lets them
transfer (an unsigned ``dig AXFR`` from there is REFUSED)."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from tests.support.helpers import DnsdiscProcess, free_port, require_tool, running
from tests.support.secondaries import KEY_NAME, Secondary, bind, knot, nsd

DOMAIN = "svc.internal."
REVERSE = "10.in-addr.arpa."
CATALOG = "catalog.invalid."
ZONES = (DOMAIN, REVERSE)
SECRET = base64.b64encode(b"secondaries-test-key-32-bytes!!!").decode()
KEY = dns.tsig.Key(f"{KEY_NAME}.", SECRET, "hmac-sha256")
# The bound on registration -> visible on a secondary (NOTIFY, then IXFR).
PROPAGATION = 2.0

Answers = dict[tuple[str, str], set[str]]


@contextmanager
def _primary(tmp_path: Path, notify: Sequence[int]) -> Iterator[DnsdiscProcess]:
    """dnsdisc serving svc.internal, 10.in-addr.arpa and the catalog, notifying ``notify``
    (ports on 127.0.0.1). transfer.allow is another address: from 127.0.0.1 only the key works."""
    conf = tmp_path / "dnsdisc.yaml"
    secondaries = ", ".join(f"'127.0.0.1:{port}'" for port in notify)
    conf.write_text(
        "reverse_zones: [10.in-addr.arpa]\n"
        "transfer:\n"
        "  allow: [127.0.0.2/32]\n"
        "  tsig_keys:\n"
        f"    {KEY_NAME}: {{algorithm: hmac-sha256, secret: '{SECRET}'}}\n"
        f"  notify: [{secondaries}]\n"
        f"  catalog: {CATALOG}\n"
    )
    with running(tmp_path, extra_args=["--config", str(conf), "--workers", "1"]) as server:
        yield server


def _register_some(server: DnsdiscProcess) -> None:
    """Services with every kind of record the zone gets from them: A and AAAA, SRV, TXT from
    meta, PTR in the reverse zone."""
    for n in range(3):
        server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=8080 + n)
    server.register("web", "w6", address="2001:db8::6", port=8443)
    server.register("db", "d0", address="10.0.1.1", port=5432, meta={"role": "primary"})


def _register_many(server: DnsdiscProcess, service: str, count: int, third: int) -> None:
    """``count`` instances of ``service`` at 10.``third``.x.y, 128 to a commit (/v1/batch):
    enough of them that a transfer takes several messages, each signed."""
    ops = [
        {"op": "register", "service": service, "id": f"i{n}",
         "body": {"address": f"10.{third}.{n // 250}.{n % 250 + 1}", "port": 80}}
        for n in range(count)
    ]  # fmt: skip
    for at in range(0, count, 128):
        result = server.http("POST", "/v1/batch", {"ops": ops[at : at + 128]})
        assert result.status == 200, result


def _axfr(server: DnsdiscProcess, zone: str) -> dns.zone.Zone:
    """The zone by AXFR from 127.0.0.1 with the key (every message's signature checked)."""
    z = dns.zone.Zone(zone)
    query, _ = dns.xfr.make_query(z, keyring=KEY)
    dns.query.inbound_xfr(server.dns_host, z, query, port=server.dns_port, timeout=5)
    return z


def _rdatas(reply: dns.message.Message, name: str, rdtype: int) -> set[str]:
    return {
        rd.to_text()
        for rrset in reply.answer
        if rrset.rdtype == rdtype and rrset.name.to_text().lower() == name
        for rd in rrset
    }


def _assert_same_records(server: DnsdiscProcess, secondaries: Sequence[Secondary]) -> int:
    """Every (name, type) of dnsdisc's AXFR of each zone: the rdata sets the secondaries answer
    over TCP equal dnsdisc's own (over TCP: all members, no UDP cap) and the AXFR's. Returns
    how many (name, type) pairs were compared."""
    compared = 0
    for apex in ZONES:
        zone = _axfr(server, apex)
        assert zone.origin is not None
        for rel, node in zone.nodes.items():
            name = rel.derelativize(zone.origin).to_text().lower()
            for rds in node.rdatasets:
                rdtype = dns.rdatatype.to_text(rds.rdtype)
                expected = {rd.to_text(origin=zone.origin, relativize=False) for rd in rds}
                ours = _rdatas(server.query(name, rdtype, tcp=True), name, rds.rdtype)
                assert ours == expected, (name, rdtype, "dnsdisc over TCP vs its AXFR")
                for secondary in secondaries:
                    theirs = _rdatas(secondary.query(name, rdtype), name, rds.rdtype)
                    assert sorted(theirs) == sorted(ours), (secondary.name, name, rdtype)
                compared += 1
    return compared


def _wait_in_sync(server: DnsdiscProcess, secondaries: Sequence[Secondary], timeout: float) -> None:
    """Until every secondary answers every zone's SOA with dnsdisc's serial."""
    deadline = time.monotonic() + timeout
    want = int(server.query(DOMAIN, "SOA").answer[0][0].serial)
    while time.monotonic() < deadline:
        if all(s.serial(zone) == want for s in secondaries for zone in ZONES):
            return
        time.sleep(0.05)
    state = {s.name: [s.serial(zone) for zone in ZONES] for s in secondaries}
    logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in secondaries)
    raise AssertionError(f"not at serial {want} within {timeout} s: {state}\n{logs}")


def _time_until(
    secondaries: Sequence[Secondary], holds: Callable[[Secondary], bool], timeout: float
) -> dict[str, float]:
    """Seconds until ``holds`` was true of each secondary (each polled every 10 ms); fails with
    their logs when one has not after ``timeout``."""
    start = time.monotonic()
    seen: dict[str, float] = {}
    while time.monotonic() - start < timeout:
        for secondary in secondaries:
            if secondary.name not in seen and holds(secondary):
                seen[secondary.name] = time.monotonic() - start
        if len(seen) == len(secondaries):
            return seen
        time.sleep(0.01)
    late = [s for s in secondaries if s.name not in seen]
    logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in late)
    raise AssertionError(f"{[s.name for s in late]} not within {timeout} s:\n{logs}")


def _addresses(secondary: Secondary, name: str) -> set[str]:
    try:
        return _rdatas(secondary.query(name, "A", timeout=0.5), name, dns.rdatatype.A)
    except (dns.exception.DNSException, OSError):  # busy reloading: a miss, polled again
        return set()


def _knot_ixfrs(knot_secondary: Secondary, zone: str) -> int:
    """Incremental transfers of ``zone`` that Knot (3.x) logged as finished."""
    line = re.compile(rf"\[{re.escape(zone)}\] IXFR, incoming, remote \S+, finished")
    return len(line.findall(knot_secondary.log()))


def test_nsd_and_knot_transfer_with_tsig_and_follow_notify_and_ixfr(tmp_path: Path) -> None:
    nsd_port, knot_port = free_port(), free_port()
    with _primary(tmp_path, notify=[nsd_port, knot_port]) as server, ExitStack() as stack:
        _register_some(server)
        _register_many(server, "bulk", 300, 20)  # the first transfer is 5 messages
        zones = [zone.rstrip(".") for zone in ZONES]
        secondaries = [
            stack.enter_context(nsd(tmp_path, server.dns_port, zones, SECRET, port=nsd_port)),
            stack.enter_context(knot(tmp_path, server.dns_port, zones, SECRET, port=knot_port)),
        ]
        _wait_in_sync(server, secondaries, 10)
        # Both went through TSIG, as 127.0.0.1 is not in transfer.allow (NSD's log says so).
        assert "TSIG verified with key xfr-key" in secondaries[0].log()
        compared = _assert_same_records(server, secondaries)
        assert compared > 900, compared  # every instance's A, SRV, PTR; services' A, AAAA, TXT

        # A registration reaches both through NOTIFY and IXFR.
        name = f"web.{DOMAIN}"
        knot_before = _knot_ixfrs(secondaries[1], DOMAIN)
        server.register("web", "w9", address="10.0.0.9", port=8089)
        added = _time_until(secondaries, lambda s: "10.0.0.9" in _addresses(s, name), PROPAGATION)
        _wait_in_sync(server, secondaries, PROPAGATION)
        assert _knot_ixfrs(secondaries[1], DOMAIN) > knot_before, secondaries[1].log()[-2000:]
        # The reverse zone followed too, and the zones hold exactly what dnsdisc serves.
        ptr = secondaries[0].query("9.0.0.10.in-addr.arpa.", "PTR")
        assert _rdatas(ptr, "9.0.0.10.in-addr.arpa.", dns.rdatatype.PTR) == {f"w9.web.{DOMAIN}"}

        # A deregistration too.
        knot_before = _knot_ixfrs(secondaries[1], DOMAIN)
        assert server.http("DELETE", "/v1/services/web/instances/w9").status in (200, 204)
        removed = _time_until(
            secondaries, lambda s: "10.0.0.9" not in _addresses(s, name), PROPAGATION
        )
        _wait_in_sync(server, secondaries, PROPAGATION)
        assert _knot_ixfrs(secondaries[1], DOMAIN) > knot_before, secondaries[1].log()[-2000:]
        # dnsdisc sent differences, not whole zones, to both (its own log says which).
        assert server.log().count(f"IXFR of {DOMAIN} ") >= 4, server.log()[-3000:]
        assert re.search(rf"AXFR of {DOMAIN} \(serial \d+\) to 127.0.0.1: [2-9] messages",
                         server.log())  # fmt: skip

        # 128 registrations in one commit: an IXFR of several messages, each signed.
        knot_before = _knot_ixfrs(secondaries[1], DOMAIN)
        _register_many(server, "more", 128, 21)
        _wait_in_sync(server, secondaries, PROPAGATION)
        assert _knot_ixfrs(secondaries[1], DOMAIN) > knot_before, secondaries[1].log()[-2000:]
        assert re.search(rf"IXFR of {DOMAIN} \(serial \d+\) to 127.0.0.1: [2-9] messages",
                         server.log()), server.log()[-3000:]  # fmt: skip
        # After all of it, every name still answers the same (the last compare covers the
        # registration and deregistration above: one compare of ~900 names costs ~3 s).
        _assert_same_records(server, secondaries)
        print(
            "registration -> visible:",
            {k: f"{v * 1000:.0f} ms" for k, v in added.items()},
            "deregistration -> gone:",
            {k: f"{v * 1000:.0f} ms" for k, v in removed.items()},
        )

        # Without the key, from 127.0.0.1 (not in transfer.allow): REFUSED.
        dig = require_tool("dig")
        out = subprocess.run(
            [dig, "@127.0.0.1", "-p", str(server.dns_port), DOMAIN, "AXFR", "+time=3",
             "+tries=1"],
            capture_output=True, text=True, timeout=15,
        ).stdout  # fmt: skip
        assert "Transfer failed." in out, out
        assert "\tSOA\t" not in out, out


def test_bind_provisions_the_member_zones_from_the_catalog(tmp_path: Path) -> None:
    bind_port = free_port()
    with _primary(tmp_path, notify=[bind_port]) as server:
        _register_some(server)
        _register_many(server, "bulk", 300, 20)  # a transfer of several signed messages
        with bind(tmp_path, server.dns_port, CATALOG.rstrip("."), SECRET, port=bind_port) as named:
            # named is told of the catalog zone only: the members come from its PTR records.
            _wait_in_sync(server, [named], 10)
            log = named.log()
            for zone in ZONES:
                member = zone.rstrip(".")
                assert f"catz: adding zone '{member}' from catalog 'catalog.invalid'" in log, log
            assert _addresses(named, f"web.{DOMAIN}") == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
            _assert_same_records(server, [named])
            # The provisioned members take NOTIFYs (the catalog's default primaries) and follow.
            server.register("api", "a0", address="10.0.2.1", port=9000)
            took = _time_until([named], lambda s: "10.0.2.1" in _addresses(s, f"api.{DOMAIN}"),
                               PROPAGATION)  # fmt: skip
            # And the reverse zone, a transfer of its own.
            _wait_in_sync(server, [named], PROPAGATION)
            ptr = named.query("1.2.0.10.in-addr.arpa.", "PTR")
            assert _rdatas(ptr, "1.2.0.10.in-addr.arpa.", dns.rdatatype.PTR) == {f"a0.api.{DOMAIN}"}
            print("registration -> visible on BIND:", f"{took['bind'] * 1000:.0f} ms")
