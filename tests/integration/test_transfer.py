"""Zone transfers from a real dnsdisc (#23): AXFR and IXFR with dnspython and dig, access by
network and by TSIG, the errors a bad signature gets, the catalog zone, the serial moving with
changes, NOTIFY to a listening secondary, and a flood of transfers that leaves DNS answering."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest

from tests.support.helpers import DnsdiscProcess, free_port, require_tool, running, wait_until

DOMAIN = "svc.internal."
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEY = dns.tsig.Key("xfr-key.", SECRET, "hmac-sha256")
OTHER = dns.tsig.Key("xfr-key.", base64.b64encode(b"x" * 32).decode(), "hmac-sha256")


def _config(tmp_path: Path, notify: int | None = None, allow: str = "127.0.0.2/32") -> Path:
    conf = tmp_path / "dnsdisc.yaml"
    lines = [
        "reverse_zones: [10.in-addr.arpa]",
        "transfer:",
        f"  allow: [{allow}]",
        "  tsig_keys:",
        f"    xfr-key: {{algorithm: hmac-sha256, secret: '{SECRET}'}}",
        "  catalog: catalog.invalid",
    ]
    if notify is not None:
        lines.append(f"  notify: ['127.0.0.1:{notify}']")
    conf.write_text("\n".join(lines) + "\n")
    return conf


@contextmanager
def _server(tmp_path: Path, workers: str = "1", **kw: object) -> Iterator[DnsdiscProcess]:
    conf = _config(tmp_path, **kw)  # type: ignore[arg-type]
    args = ["--config", str(conf), "--workers", workers]
    with running(tmp_path, extra_args=args) as server:
        yield server


def _axfr(
    server: DnsdiscProcess,
    zone: str = DOMAIN,
    source: str = "127.0.0.2",
    keyring: dns.tsig.Key | None = None,
    serial: int | None = None,
) -> dns.zone.Zone:
    """The zone as dnspython's secondary code takes it in (AXFR, or IXFR from ``serial``);
    with ``keyring`` every message's signature is checked."""
    z = dns.zone.Zone(zone)
    query, _ = dns.xfr.make_query(z, serial=serial, keyring=keyring)
    dns.query.inbound_xfr(server.dns_host, z, query, port=server.dns_port, source=source,
                          timeout=5)  # fmt: skip
    return z


def _serial(server: DnsdiscProcess, zone: str = DOMAIN) -> int:
    return int(server.query(zone, "SOA").answer[0][0].serial)


def _rcode_of(server: DnsdiscProcess, wire: bytes) -> dns.message.Message:
    with socket.create_connection((server.dns_host, server.dns_port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        head = sock.recv(2, socket.MSG_WAITALL)
        (length,) = struct.unpack("!H", head)
        data = sock.recv(length, socket.MSG_WAITALL)
    return dns.message.from_wire(data, keyring=lambda *_: False)  # read, not checked


def _names(zone: dns.zone.Zone) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            owner = name.derelativize(zone.origin).to_text().lower()
            out[(owner, dns.rdatatype.to_text(rds.rdtype))] = {
                rd.to_text(origin=zone.origin, relativize=False) for rd in rds
            }
    return out


def test_axfr_holds_what_the_server_answers_and_follows_changes(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        for n in range(4):
            server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=8080 + n)
        server.register("db", "d0", address="10.0.1.1", port=5432, meta={"role": "primary"})
        zone = _axfr(server)
        records = _names(zone)
        # Every name with every record it answers (over TCP: no UDP cap), SOA at the apex.
        assert ("web.svc.internal.", "A") in records and len(
            records[("web.svc.internal.", "A")]
        ) == 4
        for (owner, rtype), rdatas in records.items():
            reply = server.query(owner, rtype, tcp=True)
            answered = {rd.to_text() for rrset in reply.answer for rd in rrset
                        if rrset.rdtype == dns.rdatatype.from_text(rtype)}  # fmt: skip
            assert answered == rdatas, (owner, rtype)
        # The serial moves with a change, and the next AXFR has it.
        before = _serial(server)
        server.http("DELETE", "/v1/services/web/instances/w3")
        wait_until(lambda: _serial(server) != before, 3)
        after = _serial(server)
        assert 0 < (after - before) % 2**32 < 2**31  # RFC 1982: later
        zone = _axfr(server)
        assert len(_names(zone)[("web.svc.internal.", "A")]) == 3
        assert zone.get_soa().serial == after
        # The reverse zone has the PTRs; dig agrees with dnspython.
        reverse = _names(_axfr(server, "10.in-addr.arpa."))
        assert ("1.0.0.10.in-addr.arpa.", "PTR") in reverse
        dig = require_tool("dig")
        out = subprocess.run(
            [dig, "@127.0.0.1", "-b", "127.0.0.2", "-p", str(server.dns_port), DOMAIN, "AXFR",
             "+nocmd", "+nostats"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        assert out.count("\tSOA\t") == 2 and "w0.web.svc.internal." in out


def test_access_by_network_or_tsig_and_the_errors_of_bad_signatures(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        server.register("web", "w0", address="10.0.0.1", port=80)
        # Not in transfer.allow, no key: REFUSED.
        with pytest.raises(dns.xfr.TransferError) as refused:
            _axfr(server, source="127.0.0.1")
        assert refused.value.rcode == dns.rcode.REFUSED
        # With the key, from anywhere; every message's signature checks (dnspython verifies).
        zone = _axfr(server, source="127.0.0.1", keyring=KEY)
        assert ("w0.web.svc.internal.", "A") in _names(zone)
        query = dns.message.make_query(DOMAIN, "AXFR")
        # The wrong secret: NOTAUTH, BADSIG.
        query.use_tsig(OTHER)
        reply = _rcode_of(server, query.to_wire())
        assert reply.rcode() == dns.rcode.NOTAUTH and reply.tsig_error == dns.rcode.BADSIG
        # An unknown key: BADKEY.
        query.use_tsig(dns.tsig.Key("nobody.", SECRET, "hmac-sha256"))
        reply = _rcode_of(server, query.to_wire())
        assert reply.rcode() == dns.rcode.NOTAUTH and reply.tsig_error == dns.rcode.BADKEY
        # Signed an hour ago: BADTIME, with our time in the other data.
        query.use_tsig(KEY)
        with mock.patch("time.time", return_value=time.time() - 3600):
            old = query.to_wire()
        reply = _rcode_of(server, old)
        assert reply.rcode() == dns.rcode.NOTAUTH and reply.tsig_error == dns.rcode.BADTIME
        assert len(reply.tsig[0].other) == 6
        # A MAC cut short (its length field too): never accepted.
        signed = bytearray(query.to_wire())
        macsize_at = signed.rfind(struct.pack("!H", 32))
        cut = bytes(signed[: macsize_at]) + struct.pack("!H", 8) + bytes(
            signed[macsize_at + 2 : macsize_at + 10]) + bytes(signed[macsize_at + 34 :])  # fmt: skip
        rdlen_at = signed.rfind(b"\x00\xfa\x00\xff") + 8
        (rdlen,) = struct.unpack_from("!H", cut, rdlen_at)
        cut = cut[:rdlen_at] + struct.pack("!H", rdlen - 24) + cut[rdlen_at + 2 :]
        reply = _rcode_of(server, cut)
        assert reply.rcode() in (dns.rcode.NOTAUTH, dns.rcode.FORMERR)
        # A zone we do not serve, signed: NOTAUTH.
        query = dns.message.make_query("example.org.", "AXFR")
        query.use_tsig(KEY)
        assert _rcode_of(server, query.to_wire()).rcode() == dns.rcode.NOTAUTH
        # AXFR and IXFR over UDP: REFUSED, saying why (EDE Prohibited) to a query with EDNS.
        for rdtype in ("AXFR", "IXFR"):
            query = dns.message.make_query(DOMAIN, rdtype, use_edns=0)
            reply = dns.query.udp(query, server.dns_host, port=server.dns_port, timeout=3)
            assert reply.rcode() == dns.rcode.REFUSED
            assert [o.code for o in reply.options if o.otype == dns.edns.EDE] == [18]
        # And the server answers on.
        assert server.addresses("web.svc.internal") == ["10.0.0.1"]


def test_ixfr_sends_the_difference_or_the_soa_when_up_to_date(tmp_path: Path) -> None:
    with _server(tmp_path, workers="0") as server:
        server.register("web", "w0", address="10.0.0.1", port=80)
        server.register("web", "w1", address="10.0.0.2", port=80)
        start = _serial(server)
        server.register("web", "w2", address="10.0.0.3", port=80)
        server.http("DELETE", "/v1/services/web/instances/w0")
        wait_until(lambda: _serial(server) != start, 3)
        now = _serial(server)
        query = dns.message.make_query(DOMAIN, "IXFR")
        query.authority.append(_soa_rrset(start))
        query.use_tsig(KEY)
        messages = _exchange_all(server, query)
        answer = [rr for m in messages for rrset in m.answer for rr in _flat(rrset)]
        soas = [i for i, (_, rtype, _) in enumerate(answer) if rtype == "SOA"]
        # Ours, theirs, (removed), ours, (added), ours.
        assert [answer[i][2].split()[2] for i in soas] == [str(now), str(start), str(now), str(now)]
        removed = answer[soas[1] + 1 : soas[2]]
        added = answer[soas[2] + 1 : soas[3]]
        assert ("web.svc.internal.", "A", "10.0.0.1") in removed
        assert ("web.svc.internal.", "A", "10.0.0.3") in added
        assert not any(rec[2] == "10.0.0.2" for rec in removed + added)  # unchanged
        # Up to date: the SOA alone.
        query = dns.message.make_query(DOMAIN, "IXFR")
        query.authority.append(_soa_rrset(now))
        [only] = _exchange_all(server, query, source="127.0.0.2")
        assert [rrset.rdtype for rrset in only.answer] == [dns.rdatatype.SOA]
        # A serial the journal never saw: the whole zone (AXFR form), which dnspython applies.
        zone = _axfr(server, serial=(now - 2**30) % 2**32)
        assert ("w2.web.svc.internal.", "A") in _names(zone)
        # A garbage SOA in the authority section: answered (whole zone), and DNS goes on.
        garbage = bytearray(_ixfr_query(1).to_wire())
        garbage[-10:] = b"\xff" * 10
        _rcode_of(server, bytes(garbage))
        assert sorted(server.addresses("web.svc.internal")) == ["10.0.0.2", "10.0.0.3"]


def test_catalog_zone_lists_every_zone(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        zone = _axfr(server, "catalog.invalid.")
        names = _names(zone)
        assert names[("catalog.invalid.", "NS")] == {"invalid."}
        assert names[("version.catalog.invalid.", "TXT")] == {'"2"'}
        members = {rd for (owner, rtype), rds in names.items() if rtype == "PTR" for rd in rds}
        assert members == {"svc.internal.", "10.in-addr.arpa."}  # not itself


def test_notify_reaches_a_secondary_signed_and_is_retried_until_answered(tmp_path: Path) -> None:
    port = free_port()
    answer = threading.Event()
    with _listening_secondary(port, answer) as got, _server(tmp_path, notify=port) as server:
        got.clear()
        server.register("web", "w0", address="10.0.0.1", port=80)
        wait_until(lambda: DOMAIN in _zones_in(got), 3)
        notify = next(m for m in got if m.question[0].name.to_text() == DOMAIN)
        assert notify.opcode() == dns.opcode.NOTIFY and notify.had_tsig
        assert notify.question[0].rdtype == dns.rdatatype.SOA
        # Not answered: sent again.
        wait_until(lambda: _zones_in(got).count(DOMAIN) >= 2, 4)
        answer.set()
        # Answered: a new change notifies once more per zone, then stops.
        time.sleep(3.5)
        got.clear()
        server.register("web", "w1", address="10.0.0.2", port=80)
        time.sleep(2.5)
        per_zone = _zones_in(got)
        assert per_zone.count(DOMAIN) == 1, per_zone
        assert {"10.in-addr.arpa.", "catalog.invalid."} <= set(per_zone)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_reload_moves_the_serial_on_and_notifies(tmp_path: Path, workers: str) -> None:
    # A reload that changes the zone files (records replaced in place) or the settings (a new
    # index) changes what secondaries hold: the serial goes forward, never back (before, with
    # no service left, a new index showed the zone files' part alone), and a NOTIFY tells them
    # (before, only registry changes did).
    port = free_port()
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "z.yaml").write_text("records:\n  - {name: app, type: A, value: 192.0.2.1}\n")
    with _listening_secondary(port) as heard:
        conf = _config(tmp_path, notify=port)
        conf.write_text(conf.read_text() + "negative_ttl: 5\n")
        args = ["--config", str(conf), "--workers", workers, "--zones", str(zones)]
        with running(tmp_path, extra_args=args) as server:
            for n in range(3):
                server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
            server.http("DELETE", "/v1/services/web")
            wait_until(lambda: server.query("web.svc.internal", "A").rcode() != 0, 3)
            for change in ("records", "settings"):
                before = _serial(server)
                time.sleep(1.2)  # past the NOTIFY rounds of the registrations
                heard.clear()
                if change == "records":
                    (zones / "z.yaml").write_text(
                        "records:\n  - {name: app, type: A, value: 192.0.2.2}\n"
                    )
                else:
                    conf.write_text(conf.read_text().replace("negative_ttl: 5", "negative_ttl: 7"))
                assert server.http("POST", "/v1/reload").body == {"reloaded": True}
                after = _serial(server)
                assert 0 < (after - before) % 2**32 < 2**31, (change, before, after)
                wait_until(lambda: DOMAIN in _zones_in(heard), 3)
            assert server.addresses("app.svc.internal") == ["192.0.2.2"]


@contextmanager
def _listening_secondary(
    port: int, answer: threading.Event | None = None
) -> Iterator[list[dns.message.Message]]:
    """A secondary's NOTIFY port: every NOTIFY it got, in order (signatures checked), answered
    while ``answer`` is set (always without one)."""
    got: list[dns.message.Message] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                continue
            msg = dns.message.from_wire(data, keyring={dns.name.from_text("xfr-key."): KEY})
            got.append(msg)
            if answer is None or answer.is_set():
                sock.sendto(dns.message.make_response(msg).to_wire(), peer)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def _zones_in(got: list[dns.message.Message]) -> list[str]:
    return [m.question[0].name.to_text() for m in got]


def test_a_flood_of_transfers_is_bounded_and_dns_goes_on(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        for n in range(300):
            server.register(
                f"s{n % 30}", f"i{n}", address=f"10.1.{n // 250}.{n % 250 + 1}", port=80
            )

        def one(_: int) -> str:
            try:
                _axfr(server)
                return "ok"
            except dns.xfr.TransferError as exc:
                return dns.rcode.to_text(exc.rcode)
            except (dns.exception.DNSException, OSError) as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(24)))
        assert "ok" in results and set(results) <= {"ok", "REFUSED"}, results
        assert server.addresses("s1.svc.internal", tcp=True)


# -- helpers -------------------------------------------------------------------------------------


def _soa_rrset(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(DOMAIN, 0, "IN", "SOA", f"ns.{DOMAIN} h.{DOMAIN} {serial} 1 1 1 1")


def _ixfr_query(serial: int) -> dns.message.QueryMessage:
    query = dns.message.make_query(DOMAIN, "IXFR")
    query.authority.append(_soa_rrset(serial))
    return query


def _flat(rrset: dns.rrset.RRset) -> Iterator[tuple[str, str, str]]:
    for rd in rrset:
        yield rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()


def _exchange_all(
    server: DnsdiscProcess, query: dns.message.Message, source: str = "127.0.0.1"
) -> list[dns.message.Message]:
    """Every message of a transfer, in order, until the closing SOA."""
    out: list[dns.message.Message] = []
    with socket.create_connection(
        (server.dns_host, server.dns_port), timeout=5, source_address=(source, 0)
    ) as sock:
        wire = query.to_wire()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        soas = 0
        ctx = None
        while True:
            (length,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
            data = sock.recv(length, socket.MSG_WAITALL)
            msg = dns.message.from_wire(
                data, keyring=query.keyring if query.tsig is not None else None,
                request_mac=query.mac or b"", xfr=True, origin=None, tsig_ctx=ctx,
                multi=bool(out), one_rr_per_rrset=True,
            )  # fmt: skip
            ctx = msg.tsig_ctx
            out.append(msg)
            soas += sum(1 for rrset in msg.answer if rrset.rdtype == dns.rdatatype.SOA)
            if soas >= 4 or (soas == 1 and len(msg.answer) == 1 and len(out) == 1):
                return out
