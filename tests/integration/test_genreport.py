"""ISC's genreport (the EDNS compliance battery behind DNS flag day), default and full mode, sent
with dig exactly as genreport spells each probe, and judged as genreport judges it.

genreport itself is not packaged for Debian; its probes are plain dig queries, so this runs them
against the server and checks the reply the way genreport's report line would (``ok`` or the
names of what was wrong): tests/support/genreport.py, shared with the signed zone's run in
test_dnssec_validators.py. The server has ``dns.nsid`` set, so that the probes asking for NSID
(RFC 5001) also check it comes back, naming the process that answered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.genreport import NSID, PROBES, ZONE, judge, probe
from tests.support.helpers import LOOPBACK_CHECKS, DnsdiscProcess, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsdiscProcess]:
    tmp = tmp_path_factory.mktemp("genreport")
    conf = tmp / "nsid.yaml"
    conf.write_text(LOOPBACK_CHECKS + f"dns:\n  nsid: {NSID}\n")
    with running(tmp, extra_args=["--config", str(conf)]) as srv:
        yield srv


@pytest.mark.parametrize("name", list(PROBES))
def test_genreport_probe_says_ok(server: DnsdiscProcess, name: str) -> None:
    args, out = probe(server, name)
    assert judge(name, args, out) == [], out


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
