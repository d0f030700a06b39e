"""Real secondaries of a dnsdisc primary: NSD, Knot and BIND, each started by a test in the
foreground as its own process on a loopback port, with its config, zone files and state under
the test's directory, and ended by its PID. Each transfers from the primary with a TSIG key and
takes its NOTIFYs signed with the same key."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.helpers import DnsDaemon, free_port, require_tool, run_daemon

KEY_NAME = "xfr-key"
ALGORITHM = "hmac-sha256"


@dataclass
class Secondary(DnsDaemon):
    """A secondary nameserver started by a test, answering on 127.0.0.1:``port``."""

    def query(
        self, name: str, rdtype: str = "A", *, tcp: bool = True, timeout: float = 2.0
    ) -> dns.message.Message:
        # An authoritative question (no RD); over TCP by default so that no answer is truncated.
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        q.flags = 0
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, "127.0.0.1", port=self.port, timeout=timeout)

    def serial(self, zone: str) -> int | None:
        """The serial of ``zone`` as this secondary answers it; None while it has no copy."""
        try:
            reply = self.query(zone, "SOA", timeout=1.0)
        except (dns.exception.DNSException, OSError):
            return None
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.SOA and reply.rcode() == dns.rcode.NOERROR:
                return int(rrset[0].serial)
        return None

    def probe(self) -> None:
        # Any answer will do (a REFUSED or SERVFAIL: the zones may not be transferred yet).
        self.query(".", "SOA", tcp=False, timeout=0.3)


def _started(
    name: str, cmd: list[str], port: int, log_path: Path
) -> contextlib.AbstractContextManager[Secondary]:
    return run_daemon(Secondary, name, cmd, port, log_path)


@contextlib.contextmanager
def nsd(
    tmp_path: Path, primary_port: int, zones: Sequence[str], secret: str, port: int = 0
) -> Iterator[Secondary]:
    """NSD transferring ``zones`` from 127.0.0.1:``primary_port``, signed with the key."""
    path = require_tool("nsd")
    work = tmp_path / "nsd"
    work.mkdir()
    port = port or free_port()
    server = [
        f"ip-address: 127.0.0.1@{port}",
        "do-ip6: no",
        # Root in the foreground, nothing outside ``work``: no chroot, no user switch, no
        # database file (4.x keeps zones in memory and writes zone files), no control socket.
        'username: ""',
        'chroot: ""',
        f'zonesdir: "{work}"',
        'database: ""',
        f'zonelistfile: "{work}/zone.list"',
        f'xfrdfile: "{work}/xfrd.state"',
        f'xfrdir: "{work}"',
        f'pidfile: "{work}/nsd.pid"',
        "verbosity: 2",  # 2 logs each transfer and NOTIFY
        "server-count: 1",
        "tcp-count: 10",
        "xfrd-reload-timeout: 0",  # serve a transferred zone at once, not up to 1 s later
    ]
    config = "server:\n" + "".join(f"  {s}\n" for s in server)
    config += "remote-control:\n  control-enable: no\n"
    config += f'key:\n  name: "{KEY_NAME}"\n  algorithm: {ALGORITHM}\n  secret: "{secret}"\n'
    for zone in zones:
        config += (
            f'zone:\n  name: "{zone}"\n  zonefile: "{zone}.zone"\n'
            f"  request-xfr: 127.0.0.1@{primary_port} {KEY_NAME}\n"
            f"  allow-notify: 127.0.0.1 {KEY_NAME}\n"
        )
    conf = work / "nsd.conf"
    conf.write_text(config)
    with _started("nsd", [path, "-d", "-c", str(conf)], port, work / "nsd.log") as s:
        yield s


@contextlib.contextmanager
def knot(
    tmp_path: Path,
    primary_port: int,
    zones: Sequence[str],
    secret: str,
    port: int = 0,
    source: str = "",
) -> Iterator[Secondary]:
    """Knot DNS transferring ``zones`` from 127.0.0.1:``primary_port``, signed with the key,
    from the address ``source`` when given (another loopback address: the primary counts
    transfers running at once per client address, and another secondary may be at 127.0.0.1);
    its log (info: each transfer, AXFR or IXFR) goes to stderr, into the log file."""
    path = require_tool("knotd")
    work = tmp_path / "knot"
    work.mkdir()
    port = port or free_port()
    zone_list = "".join(f"  - domain: {zone}\n" for zone in zones)
    config = f"""\
server:
  listen: 127.0.0.1@{port}
  rundir: "{work}"
  pidfile: "{work}/knot.pid"
  background-workers: 1
  tcp-workers: 1
  udp-workers: 1
control:
  listen: "{work}/knot.sock"
log:
  - target: stderr
    any: info
database:
  storage: "{work}"
key:
  - id: {KEY_NAME}
    algorithm: {ALGORITHM}
    secret: {secret}
remote:
  - id: primary
    address: 127.0.0.1@{primary_port}
    key: {KEY_NAME}
{f"    via: {source}{chr(10)}" if source else ""}acl:
  - id: notify-from-primary
    address: 127.0.0.1
    key: {KEY_NAME}
    action: notify
template:
  - id: default
    storage: "{work}"
    master: primary
    acl: notify-from-primary
zone:
{zone_list}"""
    conf = work / "knot.conf"
    conf.write_text(config)
    with _started("knot", [path, "-c", str(conf)], port, work / "knot.log") as s:
        yield s


@contextlib.contextmanager
def bind(
    tmp_path: Path, primary_port: int, catalog: str, secret: str, port: int = 0
) -> Iterator[Secondary]:
    """BIND 9 with the catalog zone ``catalog`` alone as a secondary: the member zones it lists
    are provisioned by named from it (RFC 9432), transferred from the same primary and key."""
    path = require_tool("named")
    work = tmp_path / "bind"
    work.mkdir()
    port = port or free_port()
    primary = f"127.0.0.1 port {primary_port} key {KEY_NAME}"
    config = f"""\
key "{KEY_NAME}" {{ algorithm {ALGORITHM}; secret "{secret}"; }};
controls {{ }};
options {{
  directory "{work}";
  pid-file none;
  session-keyfile none;
  managed-keys-directory "{work}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  // BIND 9.18.28 on refuses a zone with an RRset of over 100 records (CVE-2024-1737), which a
  // service of more instances is: a secondary of dnsdisc needs the limit raised (0: none).
  max-records-per-type 0;
  catalog-zones {{
    zone "{catalog}" default-primaries {{ {primary}; }};
  }};
}};
zone "{catalog}" {{
  type secondary;
  file "{catalog}.db";
  primaries {{ {primary}; }};
}};
"""
    conf = work / "named.conf"
    conf.write_text(config)
    # -g: foreground, logging to stderr; no -u: stays root, which owns ``work``.
    with _started("bind", [path, "-g", "-c", str(conf)], port, work / "named.log") as s:
        yield s
