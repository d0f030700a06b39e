"""DNSSEC validators and an attacker for the signing tests (#24): a dnsdisc that signs, with its
DS records from ``dnsdisc dnssec ds``; knot-resolver (kresd) validating with them as trust
anchors; and a proxy on loopback that can change the address of an A record on its way from
dnsdisc to a validator. Every process is started here and stopped by its PID; every thread ends
with the proxy, and every wait is bounded."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.support.frontends import DOMAIN, Resolver, started
from tests.support.helpers import ROOT, DnsdiscProcess, free_port, require_tool, running

REVERSE = "10.in-addr.arpa"


@contextlib.contextmanager
def signed_dnsdisc(tmp_path: Path) -> Iterator[tuple[DnsdiscProcess, list[str]]]:
    """dnsdisc signing (``dnssec.enabled``, DNSKEY TTL 60 s) with the reverse zone 10.in-addr.arpa
    and one DNS worker, and the DS lines ``dnsdisc dnssec ds`` prints for it ("<zone> IN DS ...",
    one per zone)."""
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text(f"dnssec:\n  enabled: true\n  dnskey_ttl: 60\nreverse_zones: [{REVERSE}]\n")
    with running(tmp_path, extra_args=["--config", str(conf), "--workers", "1"]) as server:
        ds = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "dnssec", "ds", "--config", str(conf),
             "--data-dir", str(server.data_dir), "--zones", str(tmp_path / "node-zones")],
            capture_output=True, text=True, timeout=30, check=True, cwd=ROOT,
        ).stdout.splitlines()  # fmt: skip
        for zone in (DOMAIN, REVERSE):
            assert any(line.startswith(f"{zone}. IN DS ") for line in ds), ds
        yield server, ds


def anchors(ds: Sequence[str]) -> list[str]:
    """DS lines as trust anchors ("<zone> DS <tag> <alg> <digest type> <digest>"), the form
    both unbound's ``trust-anchor:`` and kresd's ``trust_anchors.add`` read."""
    return [line.replace(" IN DS ", " DS ") for line in ds]


@contextlib.contextmanager
def validating_kresd(
    tmp_path: Path, upstream: str, trust_anchors: Sequence[str], name: str = "kresd"
) -> Iterator[Resolver]:
    """knot-resolver forwarding svc.internal and 10.in-addr.arpa to ``upstream`` ("host@port")
    and validating their answers with ``trust_anchors`` (DS records), caching nothing."""
    path = require_tool("kresd")
    workdir = tmp_path / name
    workdir.mkdir()
    port = free_port()
    zones = ", ".join(f"todname('{z}.')" for z in (DOMAIN, REVERSE))
    adds = "".join(f"trust_anchors.add('{a}')\n" for a in trust_anchors)
    config = textwrap.dedent(
        f"""\
        net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
        cache.open(10 * MB, 'lmdb://{workdir}/cache')
        -- Not the root's anchor, which kresd loads on its own and would try to refresh (RFC
        -- 5011): nothing outside our two zones is asked anywhere (the last rule refuses it).
        trust_anchors.remove('.')
        """
    )
    config += adds
    config += textwrap.dedent(
        f"""\
        -- Every query, and the DNSKEY fetches it makes, goes to dnsdisc: a cached answer
        -- cannot hide a wrong one.
        policy.add(policy.all(policy.FLAGS({{'NO_CACHE'}})))
        -- FORWARD, not STUB (frontends.knot_resolver's), which does not validate (no AD):
        -- the answers and the DNSKEY fetches for them go to dnsdisc and are validated. These
        -- rules come before kresd's own for private reverse zones (RFC 6303), which would
        -- answer NXDOMAIN for 10.in-addr.arpa itself.
        policy.add(policy.suffix(policy.FORWARD({{'{upstream}'}}), {{{zones}}}))
        policy.add(policy.all(policy.REFUSE))
        """
    )
    (workdir / "kresd.conf").write_text(config)
    cmd = [path, "-n", "-q", "-c", str(workdir / "kresd.conf"), str(workdir)]
    with started(name, cmd, port, workdir / "kresd.log") as r:
        yield r


class TamperingProxy:
    """A DNS proxy on 127.0.0.1 (UDP and TCP, one port) between validators and ``upstream``
    (host, port). Every reply is read by dnspython and written again; while ``tamper`` is set,
    the address of each A record owned by ``victim`` is changed first (its last octet's lowest
    bit flipped), its RRSIG left as it was. Only the rdata changes, so a validator that accepts
    the untampered replies through it and refuses the tampered ones is telling the signatures
    apart, not the proxy's encoding."""

    TIMEOUT = 3.0  # s any one exchange with the upstream may take

    def __init__(self, upstream: tuple[str, int], victim: str) -> None:
        self.upstream = upstream
        self.victim = dns.name.from_text(victim)
        self.tamper = False
        self.tampered = 0  # A records changed
        self.relayed = 0  # replies written again
        self.port = free_port()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", self.port))
        self._udp.settimeout(0.2)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("127.0.0.1", self.port))
        self._tcp.listen(16)
        self._tcp.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []  # what broke an exchange, but the network

    @property
    def addr(self) -> str:
        return f"127.0.0.1@{self.port}"

    # -- the rewriting -------------------------------------------------------------------------

    def rewrite(self, reply: bytes) -> bytes:
        """``reply`` read and written again, the victim's A records changed while tampering."""
        msg = dns.message.from_wire(reply)
        count = 0
        if self.tamper:
            for section in (msg.answer, msg.additional):
                for i, rrset in enumerate(section):
                    if rrset.rdtype != dns.rdatatype.A or rrset.name != self.victim:
                        continue
                    changed = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
                    for rd in rrset:
                        raw = bytearray(rd.to_digestable())  # the 4 octets of the address
                        raw[3] ^= 0x01
                        flipped = dns.rdata.from_wire(
                            dns.rdataclass.IN, dns.rdatatype.A, bytes(raw), 0, 4
                        )
                        changed.add(flipped, rrset.ttl)
                        count += 1
                    section[i] = changed
        out = msg.to_wire(max_size=65535)
        with self._lock:
            self.tampered += count
            self.relayed += 1
        return out

    # -- the transports ------------------------------------------------------------------------

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._udp_exchange, args=(query, client), daemon=True)
            t.start()

    def _udp_exchange(self, query: bytes, client: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(self.TIMEOUT)
            try:
                up.sendto(query, self.upstream)
                reply = up.recv(65535)
                self._udp.sendto(self.rewrite(reply), client)
            except OSError:
                return  # the validator times out and asks again, as after a lost datagram
            except Exception as exc:  # kept: the test asserts there is none
                self.errors.append(exc)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._tcp_exchange, args=(conn,), daemon=True)
            t.start()

    def _tcp_exchange(self, conn: socket.socket) -> None:
        try:
            with conn, socket.create_connection(self.upstream, timeout=self.TIMEOUT) as up:
                conn.settimeout(self.TIMEOUT)
                while not self._stop.is_set():
                    query = _read_framed(conn)
                    if query is None:
                        return
                    up.sendall(struct.pack("!H", len(query)) + query)
                    reply = _read_framed(up)
                    if reply is None:
                        return
                    out = self.rewrite(reply)
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return  # the client, or dnsdisc, closed or went quiet
        except Exception as exc:  # kept: the test asserts there is none
            self.errors.append(exc)

    def __enter__(self) -> TamperingProxy:
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._udp.close()
        self._tcp.close()


def _read_framed(sock: socket.socket) -> bytes | None:
    """One RFC 1035 4.2.2 message from ``sock``; None at the end of the stream."""
    head = _read_exactly(sock, 2)
    if head is None:
        return None
    return _read_exactly(sock, struct.unpack("!H", head)[0])


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
