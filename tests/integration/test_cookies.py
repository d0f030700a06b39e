"""DNS cookies (RFC 7873, RFC 9018; #17) against running servers: dig's cookie check, one
secret across worker processes and nodes, the rate limit exempting a valid server cookie, and
BADCOOKIE and FORMERR where RFC 7873 puts them."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode

from tests.support.helpers import DnsdiscProcess, require_tool, running

NAME = "web.svc.internal."
SECRET = "00112233445566778899aabbccddeeff"
CLIENT = bytes.fromhex("0102030405060708")


def _query(cookie: bytes | None, qid: int = 0) -> dns.message.Message:
    options = [dns.edns.GenericOption(dns.edns.COOKIE, cookie)] if cookie is not None else []
    q = dns.message.make_query(NAME, "A", use_edns=0, options=options)
    q.id = qid
    return q


def _cookie_of(reply: dns.message.Message) -> bytes | None:
    for option in reply.options:
        if option.otype == dns.edns.COOKIE:
            return option.to_wire()
    return None


def _ask(server: DnsdiscProcess, cookie: bytes | None) -> dns.message.Message:
    import dns.query

    return dns.query.udp(_query(cookie), "127.0.0.1", port=server.dns_port, timeout=3)


def test_dig_gets_a_good_cookie_and_every_process_and_node_with_the_secret_takes_it(
    tmp_path: Path,
) -> None:
    dig = require_tool("dig")
    env = {"DNSDISC_COOKIE_SECRET": SECRET}
    args = ["--workers", "2", "--storage", "memory"]
    with (
        running(tmp_path, "a", extra_args=args, env=env) as a,
        running(tmp_path, "b", extra_args=args, env=env) as b,
        running(tmp_path, "c", extra_args=args) as c,  # a random secret of its own
    ):
        a.register("web", "w1", address="10.0.0.1", port=80)
        b.register("web", "w1", address="10.0.0.1", port=80)
        c.register("web", "w1", address="10.0.0.1", port=80)
        out = subprocess.run(
            [dig, "@127.0.0.1", "-p", str(a.dns_port), "+cookie", "+time=3", "+tries=1", NAME],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        found = re.search(r"; COOKIE: ([0-9a-f]{16})([0-9a-f]{32}) \(good\)", out)
        assert found is not None, out
        cookie = bytes.fromhex(found.group(1) + found.group(2))
        assert cookie[8:12] == b"\x01\x00\x00\x00"  # RFC 9018 version 1
        # Back with it: echoed by every worker of a (queries from many source ports) and by
        # node b, which has the same secret; node c makes its own.
        for _ in range(20):
            assert _cookie_of(_ask(a, cookie)) == cookie
        assert _cookie_of(_ask(b, cookie)) == cookie
        other = _cookie_of(_ask(c, cookie))
        assert other is not None and other[:8] == cookie[:8] and other != cookie
        again = subprocess.run(
            [dig, "@127.0.0.1", "-p", str(b.dns_port), f"+cookie={cookie.hex()}", "+time=3",
             "+tries=1", NAME],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        assert f"; COOKIE: {cookie.hex()} (good)" in again, again
        assert SECRET not in a.log() + b.log()


def _burst(server: DnsdiscProcess, cookie: bytes | None, count: int) -> dict[str, int]:
    """``count`` identical queries sent at once from one socket; what came back, by kind."""
    seen = {"answer": 0, "tc": 0, "badcookie": 0}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", server.dns_port))
        for n in range(count):
            s.send(_query(cookie, n + 1).to_wire())
        s.settimeout(0.5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = dns.message.from_wire(s.recv(4096))
            except TimeoutError:
                break
            if reply.rcode() == dns.rcode.BADCOOKIE:
                seen["badcookie"] += 1
                assert _cookie_of(reply) is not None
            elif reply.flags & dns.flags.TC:
                seen["tc"] += 1
            elif reply.answer:
                seen["answer"] += 1
    return seen


def test_a_valid_server_cookie_is_not_rate_limited_and_a_client_cookie_gets_badcookie(
    tmp_path: Path,
) -> None:
    config = tmp_path / "dnsdisc.yaml"
    config.write_text("rate_limit: {responses_per_second: 5, slip: 2}\n")
    args = ["--config", str(config), "--workers", "1", "--storage", "memory"]
    with running(tmp_path, extra_args=args) as server:
        server.register("web", "w1", address="10.0.0.1", port=80)
        cookie = _cookie_of(_ask(server, CLIENT))
        assert cookie is not None and len(cookie) == 24
        time.sleep(1.1)  # a fresh second of the rate limit for each burst
        valid = _burst(server, cookie, 60)
        time.sleep(1.1)
        client_only = _burst(server, CLIENT, 60)
        time.sleep(1.1)
        none = _burst(server, None, 60)
    assert valid == {"answer": 60, "tc": 0, "badcookie": 0}, valid
    # Limited: a few answered, every second limited reply slipped, as BADCOOKIE when the
    # client sent a cookie and as TC when it did not.
    assert client_only["answer"] <= 12 and client_only["tc"] == 0, client_only
    assert client_only["badcookie"] >= 20, client_only
    assert none["answer"] <= 12 and none["badcookie"] == 0 and none["tc"] >= 20, none


def test_a_cookie_of_a_wrong_length_gets_formerr_and_changes_nothing(tmp_path: Path) -> None:
    with running(tmp_path, extra_args=["--workers", "1", "--storage", "memory"]) as server:
        server.register("web", "w1", address="10.0.0.1", port=80)
        good = _query(CLIENT).to_wire()
        at = good.index(CLIENT)
        for size in (0, 7, 9, 41):
            # The option's length field and the OPT's RDLENGTH, rewritten for ``size`` bytes.
            body = bytes(range(size))
            bad = good[: at - 6] + (4 + size).to_bytes(2, "big") + good[at - 4 : at - 2]
            bad += size.to_bytes(2, "big") + body
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(bad, ("127.0.0.1", server.dns_port))
                reply = s.recv(4096)
            assert reply[:2] == bad[:2] and reply[3] & 0x0F == dns.rcode.FORMERR, (size, reply)
        assert server.addresses(NAME) == ["10.0.0.1"]
        # The server answers on, with a good cookie too.
        assert _cookie_of(_ask(server, CLIENT)) is not None
