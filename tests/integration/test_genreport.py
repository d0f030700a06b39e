"""ISC's genreport (the EDNS compliance battery behind DNS flag day), default and full mode, sent
with dig exactly as genreport spells each probe, and judged as genreport judges it.

genreport itself is not packaged for Debian; its probes are plain dig queries, so this runs them
against the server and checks the reply the way genreport's report line would (``ok`` or the
names of what was wrong). The server has ``dns.nsid`` set, so that the probes asking for NSID
(RFC 5001) also check it comes back, naming the process that answered."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.helpers import LOOPBACK_CHECKS, DnsdiscProcess, require_tool, running

ZONE = "svc.internal"
NSID = "genreport"
# name -> dig arguments (genreport's table, EDNS and FULL groups, <zone> filled in).
PROBES = {
    "dns": "+noedns +noad +norec SOA <zone>",
    "aa": "+noedns +noad +norec +aaflag SOA <zone>",
    "ad": "+noedns +ad +norec SOA <zone>",
    "cd": "+noedns +noad +norec +cd SOA <zone>",
    "ra": "+noedns +noad +norec +raflag SOA <zone>",
    "rd": "+noedns +noad +rec SOA <zone>",
    "tc": "+noedns +noad +norec +tcflag SOA <zone>",
    "zflag": "+noedns +noad +norec +zflag SOA <zone>",
    "opcode": "+noedns +noad +norec +header-only +opcode=15",
    "opcodeflg": "+noedns +header-only +opcode=15 +tcflag +rec +raflag +cd +ad +aaflag +zflag",
    "type666": "+noedns +noad +norec TYPE666 <zone>",
    "tcp": "+noedns +noad +norec +tcp SOA <zone>",
    "edns": "+edns=0 +nocookie +noad +norec SOA <zone>",
    "edns1": "+edns=1 +noednsneg +nocookie +noad +norec SOA <zone>",
    "edns@512": "+edns=0 +nocookie +noad +norec +dnssec +ignore +bufsize=512 DNSKEY <zone>",
    "ednsopt": "+edns=0 +nocookie +noad +norec +ednsopt=100 SOA <zone>",
    "edns1opt": "+edns=1 +noednsneg +nocookie +noad +norec +ednsopt=100 SOA <zone>",
    "do": "+edns=0 +nocookie +noad +norec +dnssec SOA <zone>",
    "edns1do": "+edns=1 +noednsneg +nocookie +noad +norec +dnssec SOA <zone>",
    "ednsflags": "+edns=0 +nocookie +noad +norec +ednsflags=0x0080 SOA <zone>",
    "optlist": "+edns=0 +noad +norec +nsid +subnet=0.0.0.0/0 +expire "
    "+cookie=0102030405060708 SOA <zone>",
    "ednsnsid": "+edns=0 +nocookie +noad +norec +nsid SOA <zone>",
    "ednscookie": "+edns=0 +noad +norec +cookie=0102030405060708 SOA <zone>",
    "ednsexpire": "+edns=0 +nocookie +noad +norec +expire SOA <zone>",
    "ednssubnet": "+edns=0 +nocookie +noad +norec +subnet=0.0.0.0/0 SOA <zone>",
    "edns1nsid": "+edns=1 +noednsneg +nocookie +noad +norec +nsid SOA <zone>",
    "edns1cookie": "+edns=1 +noednsneg +noad +norec +cookie=0102030405060708 SOA <zone>",
    "edns1expire": "+edns=1 +noednsneg +nocookie +noad +norec +expire SOA <zone>",
    "edns1subnet": "+edns=1 +noednsneg +nocookie +noad +norec +subnet=0.0.0.0/0 SOA <zone>",
    "ednstcp": "+edns=0 +nocookie +noad +norec +dnssec +bufsize=512 +tcp DNSKEY <zone>",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsdiscProcess]:
    tmp = tmp_path_factory.mktemp("genreport")
    conf = tmp / "nsid.yaml"
    conf.write_text(LOOPBACK_CHECKS + f"dns:\n  nsid: {NSID}\n")
    with running(tmp, extra_args=["--config", str(conf)]) as srv:
        yield srv


def judge(name: str, args: str, out: str) -> list[str]:
    """The tags genreport's ``process()`` would add for this reply (empty: ``ok``), read from
    dig's output: opcode, rcode, every header flag, the OPT record and the SOA."""
    opts = set(args.split())
    header = re.search(r"opcode: (\w+), status: (\w+), id: \d+", out)
    flags_line = re.search(r";; flags:([^;]*);", out)
    if header is None or flags_line is None:
        return ["noreply"]
    opcode, status = header.groups()
    flags = set(flags_line.group(1).split())
    opt = re.search(r"; EDNS: version: (\d+), flags:([^;]*);( MBZ: (0x[0-9a-f]+) ;)?", out)
    want_opcode = 15 if "+opcode=15" in opts else 0
    version = 1 if "+edns=1" in opts else 0
    want_do = "+dnssec" in opts
    edns = "+noedns" not in opts
    tags: list[str] = []
    if (opcode == "QUERY") != (want_opcode == 0):
        tags.append(opcode.lower())
    if version == 0 and want_opcode == 0 and status != "NOERROR":
        tags.append(status.lower())
    if want_opcode and status != "NOTIMP":
        tags.append(status.lower())
    if version and status != "BADVERS":
        tags.append(status.lower())
    if opt is not None and opt.group(1) != "0":
        tags.append("version-not-zero")
    if opt is None and edns:
        tags.append("noopt")
    if opt is not None and not edns:
        tags.append("opt")
    answer = out.split(";; ANSWER SECTION:", 1)[1] if ";; ANSWER SECTION:" in out else ""
    seen_soa = re.search(r"\tIN\tSOA\t", answer) is not None
    soa_probe = args.endswith("SOA " + ZONE)
    if soa_probe and version == 0 and status == "NOERROR" and not seen_soa:
        tags.append("nosoa")
    if soa_probe and seen_soa and (version or status != "NOERROR"):
        tags.append("soa")
    if "; OPT=100" in out:
        tags.append("echoed")
    if opt is not None and want_do and "do" not in opt.group(2).split():
        tags.append("nodo")
    if "aa" not in flags and version == 0 and status == "NOERROR" and not want_opcode:
        tags.append("noaa")
    if "aa" in flags and want_opcode:
        tags.append("aa")
    if "ra" in flags and want_opcode:
        tags.append("ra")
    if "rd" in flags and (want_opcode or "+rec" not in opts):
        tags.append("rd")
    if "rd" not in flags and "+rec" in opts and not want_opcode:
        tags.append("nord")
    if "ad" in flags and (want_opcode or ("+ad" not in opts and not want_do)):
        tags.append("ad")
    if "cd" in flags and (want_opcode or "+cd" not in opts):
        tags.append("cd")
    if "z" in flags or re.search(r"flags:[^;]*\bz\b", flags_line.group(0)):
        tags.append("z")
    if opt is not None and opt.group(4) is not None and int(opt.group(4), 16):
        tags.append("mbz")
    # Cookies (RFC 7873): a client cookie gets itself back with a server cookie, which dig
    # checks ("good"); the BADVERS reply to a version-1 query carries one as well.
    sent = re.search(r"\+cookie=([0-9a-f]+)", args)
    if sent is not None and not re.search(
        rf"; COOKIE: {sent.group(1)}[0-9a-f]{{16,64}} \(good\)", out
    ):
        tags.append("nocookie")
    # NSID: asked, it comes back (BADVERS replies to version 1 need not carry it), naming us.
    if "+nsid" in opts and version == 0 and not re.search(rf'; NSID: [0-9a-f ]+ \("{NSID}/', out):
        tags.append("nonsid")
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
    if "+ignore" in opts and size is not None and int(size.group(1)) > 512:
        tags.append("toobig")
    return tags


@pytest.mark.parametrize("name", list(PROBES))
def test_genreport_probe_says_ok(server: DnsdiscProcess, name: str) -> None:
    dig = require_tool("dig")
    args = PROBES[name].replace("<zone>", ZONE)
    result = subprocess.run(
        [
            dig,
            f"@{server.dns_host}",
            "-p",
            str(server.dns_port),
            "+time=2",
            "+tries=1",
            *args.split(),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert judge(name, args, result.stdout) == [], result.stdout


def test_the_judge_catches_the_old_opcodeflg_reply() -> None:
    """The reply the server gave before the fix (RD and CD copied into NOTIMP) is not ok."""
    old = (
        ";; ->>HEADER<<- opcode: RESERVED15, status: NOTIMP, id: 1\n"
        ";; flags: qr rd cd; QUERY: 0, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 0\n"
    )
    assert judge("opcodeflg", PROBES["opcodeflg"], old) == ["rd", "cd"]


def test_the_judge_wants_the_client_cookie_back_with_a_server_cookie() -> None:
    head = (
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n"
        ";; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n"
        "; EDNS: version: 0, flags:; udp: 1232\n"
    )
    answer = f";; ANSWER SECTION:\n{ZONE}\t5\tIN\tSOA\tns. h. 1 2 3 4 5\n"
    args = PROBES["ednscookie"].replace("<zone>", ZONE)
    good = "; COOKIE: 0102030405060708" + "01000000" + "ab" * 12 + " (good)\n"
    assert judge("ednscookie", args, head + good + answer) == []
    assert judge("ednscookie", args, head + answer) == ["nocookie"]


def test_the_judge_wants_nsid_back_when_asked() -> None:
    head = (
        ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n"
        ";; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n"
        "; EDNS: version: 0, flags:; udp: 1232\n"
    )
    answer = f";; ANSWER SECTION:\n{ZONE}\t5\tIN\tSOA\tns. h. 1 2 3 4 5\n"
    args = PROBES["ednsnsid"].replace("<zone>", ZONE)
    nsid = f'; NSID: 67 65 6e 72 65 70 6f 72 74 2f 6d 61 69 6e ("{NSID}/main")\n'
    assert judge("ednsnsid", args, head + nsid + answer) == []
    assert judge("ednsnsid", args, head + answer) == ["nonsid"]
