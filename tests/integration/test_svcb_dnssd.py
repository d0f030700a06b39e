"""HTTPS records (RFC 9460) and unicast DNS-SD (RFC 6763) against a running server, read by
real clients: dig and kdig print the records, dnspython parses the SvcParams and walks the
DNS-SD PTR chain as a browser does. (No Debian package browses unicast DNS-SD without a
daemon: avahi-browse needs avahi-daemon on D-Bus with wide-area on and the system resolver
pointed at us; mDNSResponder's dns-sd is not in Debian. dnspython is the browsing client.)"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rdtypes.svcbbase as svcbbase

from tests.support.helpers import ROOT, DnsdiscProcess, require_tool, running

KEY = svcbbase.ParamKey


def _tool(tool: str, server: DnsdiscProcess, *args: str) -> str:
    result = subprocess.run(
        [require_tool(tool), f"@{server.dns_host}", "-p", str(server.dns_port), *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _web(server: DnsdiscProcess, **settings: object) -> None:
    server.register("web", "web-1", address="10.0.0.1", port=8443)
    server.register("web", "web-2", address="10.0.0.2", port=8443, priority=1)
    server.register("web", "web-6", address="2001:db8::6", port=8444)
    body = {"https": {"alpn": ["h2", "h3"]}, "ttl": 0, **settings}
    result = server.http("PUT", "/v1/services/web", body)
    assert result.status in (200, 201), result


def _https(server: DnsdiscProcess, name: str = "web.svc.internal", **kw: object) -> list[object]:
    msg = server.query(name, "HTTPS", **kw)  # type: ignore[arg-type]
    return [rr for rrset in msg.answer if rrset.rdtype == dns.rdatatype.HTTPS for rr in rrset]


def test_dig_and_kdig_show_the_https_records(server: DnsdiscProcess) -> None:
    _web(server)
    lines = sorted(_tool("dig", server, "+short", "HTTPS", "web.svc.internal").splitlines())
    assert lines == [
        '1 web-1.web.svc.internal. alpn="h2,h3" port=8443 ipv4hint=10.0.0.1',
        '1 web-6.web.svc.internal. alpn="h2,h3" port=8444 ipv6hint=2001:db8::6',
        '2 web-2.web.svc.internal. alpn="h2,h3" port=8443 ipv4hint=10.0.0.2',
    ]
    out = _tool("kdig", server, "+short", "web-2.web.svc.internal", "HTTPS")
    assert out.split() == [
        "2",
        "web-2.web.svc.internal.",
        "alpn=h2,h3",
        "port=8443",
        "ipv4hint=10.0.0.2",
    ]


def test_dnspython_parses_the_svcparams_and_the_glue(server: DnsdiscProcess) -> None:
    _web(server)
    rrs = {rr.target.to_text(): rr for rr in _https(server)}  # type: ignore[attr-defined]
    one = rrs["web-1.web.svc.internal."]
    assert one.priority == 1  # type: ignore[attr-defined]
    assert one.params[KEY.ALPN].ids == (b"h2", b"h3")  # type: ignore[attr-defined]
    assert one.params[KEY.PORT].port == 8443  # type: ignore[attr-defined]
    assert one.params[KEY.IPV4HINT].addresses == ("10.0.0.1",)  # type: ignore[attr-defined]
    assert rrs["web-2.web.svc.internal."].priority == 2  # type: ignore[attr-defined]
    six = rrs["web-6.web.svc.internal."].params  # type: ignore[attr-defined]
    assert six[KEY.IPV6HINT].addresses == ("2001:db8::6",)
    msg = server.query("web.svc.internal", "HTTPS", tcp=True)
    glue = sorted(rr.to_text() for rrset in msg.additional for rr in rrset if rrset.rdtype != 41)
    assert glue == ["10.0.0.1", "10.0.0.2", "2001:db8::6"]


def test_health_and_max_answers_decide_https_like_a(server: DnsdiscProcess) -> None:
    _web(server, max_answers=1)
    firsts: Counter[str] = Counter()
    for _ in range(300):
        rrs = _https(server)
        assert len(rrs) == 1
        firsts[rrs[0].target.to_text()] += 1  # type: ignore[attr-defined]
        assert len(server.addresses("web.svc.internal")) == 1
    assert set(firsts) == {
        "web-1.web.svc.internal.",
        "web-2.web.svc.internal.",
        "web-6.web.svc.internal.",
    }
    result = server.http(
        "PUT", "/v1/services/web/instances/web-1/maintenance", {"enabled": True, "reason": "x"}
    )
    assert result.status == 200, result
    targets = {rr.target.to_text() for _ in range(100) for rr in _https(server)}  # type: ignore[attr-defined]
    assert "web-1.web.svc.internal." not in targets
    assert "10.0.0.1" not in {a for _ in range(50) for a in server.addresses("web.svc.internal")}
    # The priority policy keeps the first tier only; web-1 is out, so web-6 alone.
    server.http("PUT", "/v1/services/web", {"https": {"alpn": ["h3"]}, "policy": "priority"})
    assert {rr.target.to_text() for rr in _https(server)} == {"web-6.web.svc.internal."}  # type: ignore[attr-defined]


def test_a_dnssd_browse_walk_with_dig_and_dnspython(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("reverse_zones: [10.in-addr.arpa]\ndefaults:\n  dnssd: true\n")
    with running(tmp_path, extra_args=["--config", str(config)]) as server:
        server.register("web", "web-1", address="10.0.0.1", port=80, meta={"path": "/app"})
        server.register("web", "web-2", address="10.0.0.2", port=80)
        server.register("ntp", "ntp-1", address="10.0.1.1", port=123, protocol="udp")
        # Where to browse, from the reverse zone of the client's network (RFC 6763 11).
        assert _tool("dig", server, "+short", "b._dns-sd._udp.10.in-addr.arpa", "PTR").split() == [
            "svc.internal."
        ]
        types = _tool("dig", server, "+short", "_services._dns-sd._udp.svc.internal", "PTR")
        assert sorted(types.split()) == ["_ntp._udp.svc.internal.", "_web._tcp.svc.internal."]
        found = {}
        for stype in sorted(types.split()):
            ptr = server.query(stype, "PTR")
            for rr in (rr for rrset in ptr.answer for rr in rrset):
                inst = rr.target.to_text()
                srv = server.query(inst, "SRV").answer[0][0]
                txt = server.query(inst, "TXT").answer[0][0]
                found[inst] = (srv.target.to_text(), srv.port, txt.strings)
        assert found == {
            "web-1._web._tcp.svc.internal.": ("web-1.web.svc.internal.", 80, (b"path=/app",)),
            "web-2._web._tcp.svc.internal.": ("web-2.web.svc.internal.", 80, (b"",)),
            "ntp-1._ntp._udp.svc.internal.": ("ntp-1.ntp.svc.internal.", 123, (b"",)),
        }
        # The SRV target resolves, and kdig reads the instance's TXT as dig does.
        assert server.addresses("web-1.web.svc.internal") == ["10.0.0.1"]
        out = _tool("kdig", server, "+short", "web-1._web._tcp.svc.internal", "TXT")
        assert out.strip() == '"path=/app"'
        # Only handed-out instances are browsable.
        server.http(
            "PUT", "/v1/services/web/instances/web-2/maintenance", {"enabled": True, "reason": "x"}
        )
        assert _tool("dig", server, "+short", "_web._tcp.svc.internal", "PTR").split() == [
            "web-1._web._tcp.svc.internal."
        ]
        assert "NXDOMAIN" in _tool("dig", server, "web-2._web._tcp.svc.internal", "SRV")
        # ANY stays one RRset (RFC 8482) on the new names, over UDP and TCP.
        for tcp in (False, True):
            for name in ("_services._dns-sd._udp.svc.internal", "web-1._web._tcp.svc.internal"):
                assert len(server.query(name, "ANY", tcp=tcp).answer) == 1


def test_config_errors_exit_2_naming_file_and_key(tmp_path: Path) -> None:
    for body, key in (
        ("services:\n  web:\n    https:\n      alpn: ['h2,h3']\n", "services.web.https.alpn"),
        ("services:\n  web:\n    https:\n      alpns: [h2]\n", "services.web.https.alpns"),
        ("defaults:\n  https: h2\n", "defaults.https"),
    ):
        config = tmp_path / "c.yaml"
        config.write_text(body)
        result = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert result.returncode == 2, result.stderr
        assert f"{config}: {key}:" in result.stderr


def test_api_errors_are_400_naming_the_field(server: DnsdiscProcess) -> None:
    for body, field in (
        ({"https": {"alpn": ["h2", "h2"]}}, "https.alpn"),
        ({"https": {"no_default_alpn": True}}, "https.no_default_alpn"),
        ({"https": {"port": 70000}}, "https.port"),
        ({"https": {"ech": "%%%"}}, "https.ech"),
        ({"dnssd": 1}, "dnssd"),
    ):
        result = server.http("PUT", "/v1/services/web", body)
        assert result.status == 400, (body, result)
        assert result.body["field"] == field


def test_https_query_message_is_an_ordinary_query() -> None:
    """HTTPS is type 65, which dnspython and dig name; a sanity check that the tests ask it."""
    assert dns.rdatatype.from_text("HTTPS") == 65
    assert dns.message.make_query("x.", "HTTPS").question[0].rdtype == 65
