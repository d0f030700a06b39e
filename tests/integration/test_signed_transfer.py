"""Signed zone transfers (#24: "zone transfers carry signed data") from a real dnsdisc with
``dnssec.enabled``: an AXFR that dnspython validates whole (every RRset's RRSIG against the
zone's DNSKEY, an NSEC chain complete and closed in canonical order, names from RFC 4034 6.1's
example among them), an IXFR answered with the whole zone signed; then NSD and Knot as
secondaries of the signed zones and a validating unbound in front of each (dnsdisc's DS records
as trust anchors) that answers with AD from the secondary alone: a service's addresses, and
names and types that do not exist, proved by the NSEC chain dnsdisc sent, before and after a
registration reaches the secondaries by NOTIFY.

Every process is started here on loopback ports, its files under tmp_path, and ended by its
PID (the helpers do it)."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from tests.support.frontends import Resolver, unbound
from tests.support.helpers import ROOT, DnsdiscProcess, free_port, running
from tests.support.secondaries import KEY_NAME, Secondary, knot, nsd
from tests.support.signedzone import check_signed_zone

DOMAIN = "svc.internal."
REVERSE = "10.in-addr.arpa."
# A zone file's zone inside the domain: the domain's zone delegates it (NS, and DS signed).
CORP = "corp.svc.internal."
ZONES = (DOMAIN, REVERSE, CORP)
SECRET = base64.b64encode(b"signed-transfer-test-key-32-byte").decode()
KEY = dns.tsig.Key(f"{KEY_NAME}.", SECRET, "hmac-sha256")
# RFC 4034 6.1's example of canonical order, under our domain (a zone file's records): case
# folded, \001 before z's other children, \200 after them.
RFC_NAMES = ["a", "yljkjljk.a", "Z.a", "zABC.a", "z", "\\001.z", "\\200.z"]
ZONE_FILE = "records:\n" + "".join(
    f"  - {{name: '{name}', type: TXT, value: 'rfc 4034'}}\n" for name in RFC_NAMES
)


@contextmanager
def _signed_primary(tmp_path: Path, notify: tuple[int, ...] = ()) -> Iterator[
    tuple[DnsdiscProcess, list[str]]
]:  # fmt: skip
    """dnsdisc signing svc.internal and 10.in-addr.arpa, transferring to the key's holders and
    notifying ``notify`` (ports on 127.0.0.1); with its DS records as `dnsdisc dnssec ds`
    prints them."""
    zones_dir = tmp_path / "zones"
    zones_dir.mkdir()
    (zones_dir / "rfc.yaml").write_text(ZONE_FILE)
    (zones_dir / "corp.yaml").write_text(
        f"origin: {CORP}\nrecords:\n  - {{name: x, type: TXT, value: corp}}\n"
    )
    conf = tmp_path / "dnsdisc.yaml"
    secondaries = ", ".join(f"'127.0.0.1:{port}'" for port in notify)
    conf.write_text(
        "dnssec:\n  enabled: true\n  dnskey_ttl: 60\n"
        "reverse_zones: [10.in-addr.arpa]\n"
        "transfer:\n"
        "  allow: [127.0.0.2/32]\n"
        "  tsig_keys:\n"
        f"    {KEY_NAME}: {{algorithm: hmac-sha256, secret: '{SECRET}'}}\n"
        f"  notify: [{secondaries}]\n"
    )
    args = ["--config", str(conf), "--workers", "1", "--zones", str(zones_dir)]
    with running(tmp_path, extra_args=args) as server:
        ds = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "dnssec", "ds", "--config", str(conf),
             "--data-dir", str(server.data_dir), "--zones", str(zones_dir)],
            capture_output=True, text=True, timeout=30, check=True, cwd=ROOT,
        ).stdout.splitlines()  # fmt: skip
        assert any(line.startswith(f"{DOMAIN} IN DS ") for line in ds), ds
        yield server, ds


def _register(server: DnsdiscProcess) -> None:
    for n in range(3):
        server.register("web", f"w{n}", address=f"10.0.0.{n + 1}", port=8080 + n,
                        meta={"v": str(n)})  # fmt: skip
    server.register("web", "w6", address="2001:db8::6", port=8443)
    # More than one message: 120 instances (an A, SRV, PTR, NSEC and RRSIGs each).
    ops = [
        {"op": "register", "service": "bulk", "id": f"i{n}",
         "body": {"address": f"10.20.0.{n + 1}", "port": 80}}
        for n in range(120)
    ]  # fmt: skip
    assert server.http("POST", "/v1/batch", {"ops": ops}).status == 200


def _xfr(server: DnsdiscProcess, zone: dns.zone.Zone, serial: int | None = None) -> None:
    """AXFR (or IXFR from ``serial``) into ``zone`` with the key; every message's TSIG checked."""
    query, _ = dns.xfr.make_query(zone, serial=serial, keyring=KEY)
    dns.query.inbound_xfr(server.dns_host, zone, query, port=server.dns_port, timeout=10)


def _serial(server: DnsdiscProcess) -> int:
    return int(server.query(DOMAIN, "SOA").answer[0][0].serial)


def test_a_signed_axfr_validates_whole_and_an_ixfr_gets_the_whole_zone(tmp_path: Path) -> None:
    with _signed_primary(tmp_path) as (server, _):
        _register(server)
        zone = dns.zone.Zone(DOMAIN, relativize=False)
        _xfr(server, zone)
        checked = check_signed_zone(zone)
        # Every name: the apex, ns, the zone file's 7, web's 7, bulk's 122 and corp's cut.
        assert checked.names == 138 and len(checked.ksk_tags) == len(checked.zsk_tags) == 1
        assert checked.cuts == [dns.name.from_text(CORP)]
        assert checked.nsec_ttls == {5}  # the SOA's MINIMUM and TTL (negative_ttl)
        web = zone.get_rdataset(f"web.{DOMAIN}", "A")
        assert web is not None and {rd.to_text() for rd in web} == {"10.0.0.1", "10.0.0.2",
                                                                     "10.0.0.3"}  # fmt: skip
        # RFC 4034's names follow one another in its order (a.D and its children, then z.D
        # and its children: nothing of ours sorts inside either run).
        origin = dns.name.from_text(DOMAIN)
        for run in (RFC_NAMES[:4], RFC_NAMES[4:]):
            names = [dns.name.from_text(n, origin) for n in run]
            for name, following in itertools.pairwise(names):
                nsec = zone.get_rdataset(name, "NSEC")
                assert nsec is not None and nsec[0].next == following, (name, nsec)
        reverse = dns.zone.Zone(REVERSE, relativize=False)
        _xfr(server, reverse)
        assert check_signed_zone(reverse).names == 1 + 3 + 120  # the apex, web's and bulk's PTRs
        log = server.log()
        assert f"signed AXFR of {DOMAIN} (serial" in log, log[-2000:]

        # An IXFR from an older serial (in the journal) gets the whole zone, signed.
        before = _serial(server)
        server.register("web", "w9", address="10.0.0.9", port=8089)
        deadline = time.monotonic() + 5
        while _serial(server) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _serial(server) != before
        _xfr(server, zone, serial=before)
        check_signed_zone(zone)
        assert zone.get_soa().serial == _serial(server)
        assert zone.get_rdataset(f"w9.web.{DOMAIN}", "A") is not None
        assert f"signed IXFR (whole zone) of {DOMAIN}" in server.log()


def _ask(resolver: Resolver, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
    return dns.query.tcp(q, "127.0.0.1", port=resolver.port, timeout=5)


def _secure(reply: dns.message.Message, rcode: int = dns.rcode.NOERROR) -> bool:
    return bool(reply.flags & dns.flags.AD) and reply.rcode() == rcode


def _in_sync(server: DnsdiscProcess, secondaries: list[Secondary], timeout: float) -> None:
    want = _serial(server)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.serial(zone) == want for s in secondaries for zone in ZONES):
            return
        time.sleep(0.05)
    state = {s.name: [s.serial(zone) for zone in ZONES] for s in secondaries}
    logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in secondaries)
    raise AssertionError(f"not at serial {want} within {timeout} s: {state}\n{logs}")


def _check_through(resolver: Resolver, secondary: Secondary) -> None:
    """What a validating resolver gets from ``secondary`` alone: AD on data and on denial."""
    tag = f"{secondary.name}: "
    for name, rdtype in (
        (f"web.{DOMAIN}", "A"),
        (f"_web._tcp.{DOMAIN}", "SRV"),
        (f"w0.web.{DOMAIN}", "TXT"),
        (f"zabc.a.{DOMAIN}", "TXT"),
        ("1.0.0.10.in-addr.arpa.", "PTR"),
        (DOMAIN, "DNSKEY"),
        (f"x.{CORP}", "TXT"),  # validated through the DS the domain's zone carries
    ):
        reply = _ask(resolver, name, rdtype)
        assert _secure(reply) and reply.answer, (tag, name, rdtype, reply)
    for name, rdtype in (
        (f"web.{DOMAIN}", "MX"),  # NODATA: the name's NSEC lacks MX
        (f"_tcp.{DOMAIN}", "A"),  # an empty non-terminal: an NSEC whose next name is below it
        (f"z.{DOMAIN}", "A"),  # NODATA beside the RFC's names
    ):
        reply = _ask(resolver, name, rdtype)
        assert _secure(reply) and not reply.answer, (tag, name, rdtype, reply)
    for name in (
        f"nothing.{DOMAIN}",
        f"b.a.{DOMAIN}",  # between yljkjljk.a and z.a
        f"\\002.z.{DOMAIN}",  # between \001.z and \200.z
        f"nothing.web.{DOMAIN}",
        "9.9.9.10.in-addr.arpa.",
    ):
        reply = _ask(resolver, name, "A")
        assert _secure(reply, dns.rcode.NXDOMAIN), (tag, name, reply)
    assert "validation failure" not in resolver.log(), resolver.log()[-3000:]


def test_nsd_and_knot_serve_the_signed_zone_and_unbound_validates_through_them(
    tmp_path: Path,
) -> None:
    nsd_port, knot_port = free_port(), free_port()
    with (
        _signed_primary(tmp_path, notify=(nsd_port, knot_port)) as (server, ds),
        ExitStack() as stack,
    ):
        _register(server)
        zones = [zone.rstrip(".") for zone in ZONES]
        secondaries = [
            stack.enter_context(nsd(tmp_path, server.dns_port, zones, SECRET, port=nsd_port)),
            # From another address: NSD takes both zones at once from 127.0.0.1, and dnsdisc
            # runs at most 2 transfers per client address (whole zones while signing).
            stack.enter_context(
                knot(tmp_path, server.dns_port, zones, SECRET, port=knot_port, source="127.0.0.3")
            ),
        ]
        _in_sync(server, secondaries, 15)
        # The domain's and the reverse zone's DS: corp's is trusted through its parent's.
        anchors = [line.replace(" IN DS ", " DS ") for line in ds if not line.startswith(CORP)]
        resolvers = [
            stack.enter_context(
                # No aggressive use of cached NSEC (RFC 8198): within their 5 s TTL unbound
                # would deny the name registered below from the chain it holds, not ask.
                unbound(
                    tmp_path,
                    server,
                    "aggressive-nsec: no",
                    name=f"unbound-{s.name}",
                    trust_anchors=anchors,
                    upstream=f"127.0.0.1@{s.port}",
                )
            )
            for s in secondaries
        ]
        # Each unbound asks its secondary alone: every AD comes from what the transfers gave it.
        for resolver, secondary in zip(resolvers, secondaries, strict=True):
            _check_through(resolver, secondary)
        # A registration reaches the secondaries (NOTIFY, then the whole zone signed again);
        # a name that did not exist now validates, the chain around it remade.
        server.register("web", "late", address="10.0.0.50", port=8080)
        _in_sync(server, secondaries, 5)
        for resolver, secondary in zip(resolvers, secondaries, strict=True):
            reply = _ask(resolver, f"late.web.{DOMAIN}", "A")
            assert _secure(reply) and reply.answer, (secondary.name, reply)
            _check_through(resolver, secondary)
        assert f"signed IXFR (whole zone) of {DOMAIN}" in server.log(), server.log()[-3000:]
