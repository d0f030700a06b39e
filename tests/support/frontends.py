"""Resolvers in front of dnsdisc, for tests and measurements: unbound (stub-zone), dnsmasq
(per-domain server) and a network namespace where dnsdisc owns port 53 for the glibc stub
resolver. Every process is started here, listens on loopback (or inside the namespace made here)
and is stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest

from tests.support.helpers import (
    IN_CI,
    ROOT,
    DnsDaemon,
    DnsdiscProcess,
    end_process,
    free_port,
    require_tool,
    run_daemon,
)

DOMAIN = "svc.internal"


@dataclass
class Resolver(DnsDaemon):
    """A recursive resolver started by a test, listening on 127.0.0.1:``port``."""

    def query(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 5.0
    ) -> dns.message.Message:
        # make_query sets RD: this is a stub's question to a recursive resolver.
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, "127.0.0.1", port=self.port, timeout=timeout)

    def probe(self) -> None:
        # Any reply means the listener is up; what it says is the tests' business.
        self.query(f"{DOMAIN}.", "SOA", timeout=0.5)


def started(
    name: str, cmd: list[str], port: int, log_path: Path
) -> contextlib.AbstractContextManager[Resolver]:
    return run_daemon(Resolver, name, cmd, port, log_path)


def upstream_addr(server: DnsdiscProcess) -> str:
    return f"{server.dns_host}@{server.dns_port}"


@contextlib.contextmanager
def unbound(
    tmp_path: Path,
    server: DnsdiscProcess,
    *extra: str,
    name: str = "unbound",
    cache: bool = False,
    trust_anchors: Sequence[str] = (),
    upstream: str | None = None,
) -> Iterator[Resolver]:
    """unbound with svc.internal and 10.in-addr.arpa stubbed to ``server``, or to ``upstream``
    ("host@port": a secondary of ``server``) when given; with ``trust_anchors`` (DS records in
    zone-file form) a validating one."""
    path = require_tool("unbound")
    workdir = tmp_path / name
    workdir.mkdir()
    port = free_port()
    ip6 = "yes" if ":" in server.dns_host else "no"
    settings = [
        "verbosity: 2",  # 2 is where unbound logs a failed 0x20 check (VERB_DETAIL)
        "use-syslog: no",
        'logfile: ""',
        'chroot: ""',
        'username: ""',
        f'directory: "{workdir}"',
        f'pidfile: "{workdir}/unbound.pid"',
        "do-daemonize: no",
        "num-threads: 1",
        "interface: 127.0.0.1",
        f"port: {port}",
        "do-ip4: yes",
        f"do-ip6: {ip6}",
        # The stub is on loopback, which unbound refuses to query by default.
        "do-not-query-localhost: no",
        "access-control: 127.0.0.0/8 allow",
        # No validator unless given anchors: none to fetch, and the zone is unsigned then.
        *(
            [
                'module-config: "validator iterator"',
                *(f'trust-anchor: "{a}"' for a in trust_anchors),
            ]
            if trust_anchors
            else ['module-config: "iterator"', f'domain-insecure: "{DOMAIN}"']
        ),
        # Everything outside the two stubbed zones is refused locally, so nothing ever leaves
        # loopback for the root servers. 10.in-addr.arpa is one of unbound's default static
        # local zones (RFC 1918 reverse); transparent replaces it so PTR queries reach the stub.
        'local-zone: "." refuse',
        f'local-zone: "{DOMAIN}." transparent',
        'local-zone: "10.in-addr.arpa." transparent',
        # Unless asked to cache, every query goes to dnsdisc, so a cached answer cannot hide a
        # wrong one.
        *([] if cache else ["cache-max-ttl: 0", "cache-max-negative-ttl: 0"]),
        *extra,
    ]
    config = "server:\n" + "".join(f"  {s}\n" for s in settings)
    config += "remote-control:\n  control-enable: no\n"
    for zone in (DOMAIN, "10.in-addr.arpa"):
        stub = upstream or upstream_addr(server)
        config += f'stub-zone:\n  name: "{zone}"\n  stub-addr: {stub}\n'
    conf = workdir / "unbound.conf"
    conf.write_text(config)
    with started(name, [path, "-d", "-c", str(conf)], port, workdir / "unbound.log") as r:
        yield r


@contextlib.contextmanager
def pdns_recursor(
    tmp_path: Path, server: DnsdiscProcess, *, source: str = "127.0.0.1"
) -> Iterator[Resolver]:
    """PowerDNS Recursor forwarding svc.internal to ``server`` from the address ``source``
    (dnsdisc tells requesters apart by it), caching as it does by default: an answer with TTL 0
    or 1 is kept for a second (``minimum-ttl-override``)."""
    path = require_tool("pdns_recursor")
    workdir = tmp_path / "pdns-recursor"
    workdir.mkdir()
    (workdir / "recursor.conf").write_text("")
    port = free_port()
    cmd = [
        path,
        f"--config-dir={workdir}",
        f"--socket-dir={workdir}",
        "--daemon=no",
        "--disable-syslog",
        "--threads=1",
        "--local-address=127.0.0.1",
        f"--local-port={port}",
        f"--query-local-address={source}",
        f"--forward-zones={DOMAIN}={upstream_addr(server).replace('@', ':')}",
        # Loopback is refused as an upstream by default; nothing else may be asked.
        "--dont-query=",
        "--dnssec=off",
        "--allow-from=127.0.0.0/8",
        "--loglevel=5",
    ]
    with started("pdns_recursor", cmd, port, workdir / "pdns.log") as r:
        yield r


@contextlib.contextmanager
def knot_resolver(
    tmp_path: Path, server: DnsdiscProcess, *, source: str = "127.0.0.1", min_ttl: int = 5
) -> Iterator[Resolver]:
    """knot-resolver (kresd) stubbing svc.internal to ``server`` from the address ``source``,
    with its cache: it keeps every answer for at least ``min_ttl`` seconds (its default, 5)."""
    path = require_tool("kresd")
    workdir = tmp_path / "kresd"
    workdir.mkdir()
    port = free_port()
    host, _, upstream_port = upstream_addr(server).partition("@")
    config = textwrap.dedent(
        f"""\
        net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
        net.outgoing_v4('{source}')
        cache.open(10 * MB, 'lmdb://{workdir}/cache')
        cache.min_ttl({min_ttl})
        -- No trust anchor: nothing to validate, nothing fetched from the Internet.
        policy.add(policy.suffix(policy.STUB({{'{host}@{upstream_port}'}}),
                                 {{todname('{DOMAIN}.')}}))
        policy.add(policy.all(policy.REFUSE))
        """
    )
    (workdir / "kresd.conf").write_text(config)
    cmd = [path, "-n", "-q", "-c", str(workdir / "kresd.conf"), str(workdir)]
    with started("kresd", cmd, port, workdir / "kresd.log") as r:
        yield r


@dataclass
class Haproxy:
    """HAProxy started by a test, with its runtime API on a unix socket."""

    proc: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path

    def command(self, line: str) -> str:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def servers(self, backend: str) -> list[dict[str, str]]:
        """``show servers state``: one dict per server slot, by the header's column names."""
        lines = [x for x in self.command(f"show servers state {backend}").splitlines() if x]
        header = lines[1].lstrip("# ").split()
        return [dict(zip(header, line.split(), strict=False)) for line in lines[2:]]


@contextlib.contextmanager
def haproxy(
    tmp_path: Path, server: DnsdiscProcess, service: str, slots: int = 5
) -> Iterator[Haproxy]:
    """HAProxy discovering ``service``'s instances from its SRV name (``server-template``),
    re-resolving every second."""
    path = require_tool("haproxy")
    workdir = tmp_path / "haproxy"
    workdir.mkdir()
    sock = workdir / "admin.sock"
    config = textwrap.dedent(
        f"""\
        global
            stats socket {sock} mode 600 level admin
        defaults
            mode tcp
            timeout connect 1s
            timeout client 5s
            timeout server 5s
        resolvers dnsdisc
            nameserver d1 {server.dns_host}:{server.dns_port}
            accepted_payload_size 1232
            hold valid 1s
            hold obsolete 1s
            resolve_retries 1
            timeout resolve 1s
            timeout retry 1s
        backend {service}
            server-template srv {slots} _{service}._tcp.{DOMAIN} resolvers dnsdisc init-addr none
        frontend front
            bind 127.0.0.1:{free_port()}
            default_backend {service}
        """
    )
    (workdir / "haproxy.cfg").write_text(config)
    log_path = workdir / "haproxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [path, "-f", str(workdir / "haproxy.cfg"), "-db"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        yield Haproxy(proc, sock, log_path)
    finally:
        end_process(proc)


@contextlib.contextmanager
def dnsmasq(tmp_path: Path, server: DnsdiscProcess) -> Iterator[Resolver]:
    """dnsmasq forwarding svc.internal and 10.in-addr.arpa to ``server``, nothing else."""
    path = require_tool("dnsmasq")
    workdir = tmp_path / "dnsmasq"
    workdir.mkdir()
    port = free_port()
    upstream = f"{server.dns_host}#{server.dns_port}"
    cmd = [
        path,
        "--keep-in-foreground",
        "--log-facility=-",
        "--log-queries",
        # Neither the host's config, resolv.conf nor /etc/hosts: only the servers below.
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        f"--pid-file={workdir}/dnsmasq.pid",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--server=/{DOMAIN}/{upstream}",
        f"--server=/10.in-addr.arpa/{upstream}",
        # Every query goes to dnsdisc, so a cached answer cannot hide a wrong one.
        "--cache-size=0",
        "--no-negcache",
    ]
    with started("dnsmasq", cmd, port, workdir / "dnsmasq.log") as r:
        yield r


@dataclass
class Namespace:
    name: str
    ip: str

    def run(self, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.ip, "netns", "exec", self.name, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-c", textwrap.dedent(code), *args)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh network namespace whose /etc/resolv.conf points at 127.0.0.1 (its own lo)."""
    ip = require_tool("ip")
    if os.geteuid() != 0:
        message = "network namespaces need root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    name = f"dnsdisc-test-{os.getpid()}-{secrets.token_hex(3)}"
    etc = Path("/etc/netns") / name
    added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, timeout=10)
    if added.returncode != 0:
        message = f"cannot create a network namespace: {added.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    ns = Namespace(name, ip)
    try:
        # `ip netns exec` bind-mounts /etc/netns/<name>/* over /etc/*, for its children only.
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(
            f"nameserver 127.0.0.1\nsearch {DOMAIN}\noptions attempts:2 timeout:2\n"
        )
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")
        for cmd in (
            ("ip", "link", "set", "lo", "up"),
            # glibc's AI_ADDRCONFIG (which getent ahostsv4 uses) ignores 127.0.0.1, and with no
            # other IPv4 address it answers "not found" without asking DNS. A TEST-NET-1 address
            # on this namespace's lo keeps everything inside the namespace.
            ("ip", "addr", "add", "192.0.2.1/32", "dev", "lo"),
        ):
            done = ns.run(*cmd, timeout=10)
            assert done.returncode == 0, done.stderr
        yield ns
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=10)
        shutil.rmtree(etc, ignore_errors=True)


@contextlib.contextmanager
def dnsdisc_in(
    ns: Namespace,
    tmp_path: Path,
    registrations: Sequence[tuple[str, str, dict[str, Any]]],
    *,
    http_port: int = 8054,
) -> Iterator[subprocess.Popen[bytes]]:
    """dnsdisc inside ``ns`` on 127.0.0.1:53 (resolv.conf cannot name another port), filled
    with ``registrations``: (method, path, body) sent from inside the namespace, where the HTTP
    port lives."""
    data = tmp_path / "ns-data"
    zones = tmp_path / "ns-zones"
    zones.mkdir(exist_ok=True)
    log_path = tmp_path / "ns-dnsdisc.log"
    cmd = [
        ns.ip,
        "netns",
        "exec",
        ns.name,
        sys.executable,
        "-m",
        "dnsdisc",
        "serve",
        "--dns",
        "127.0.0.1:53",
        "--http",
        f"127.0.0.1:{http_port}",
        "--data-dir",
        str(data),
        "--zones",
        str(zones),
        "--domain",
        DOMAIN,
        "--storage",
        "memory",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        setup = ns.python(
            """
            import json, sys, time, urllib.request
            base = f"http://127.0.0.1:{sys.argv[1]}"
            deadline = time.monotonic() + 15
            while True:
                try:
                    if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
            for method, path, body in json.loads(sys.argv[2]):
                req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                             method=method,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status in (200, 201), resp.status
            """,
            str(http_port),
            json.dumps(list(registrations)),
        )
        assert setup.returncode == 0, f"{setup.stderr}\n{log_path.read_text(errors='replace')}"
        # `ip netns exec` execs the program, so this PID is dnsdisc's and stopping it stops
        # dnsdisc. Checked once dnsdisc answers, i.e. after ip's exec.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"dnsdisc" in cmdline and b"netns" not in cmdline, cmdline
        yield proc
    finally:
        end_process(proc)


def getaddrinfo_firsts(ns: Namespace, n: int, host: str = f"web.{DOMAIN}") -> Counter[str]:
    """How often each address came first over ``n`` plain getaddrinfo() calls made inside
    ``ns``: what a legacy client that takes the first address would connect to."""
    done = ns.python(
        """
        import collections, json, socket, sys
        counts = collections.Counter()
        for _ in range(int(sys.argv[1])):
            infos = socket.getaddrinfo(sys.argv[2], 80, proto=socket.IPPROTO_TCP)
            counts[infos[0][4][0]] += 1
        print(json.dumps(counts))
        """,
        str(n),
        host,
    )
    if done.returncode != 0:
        raise RuntimeError(f"getaddrinfo loop failed: {done.stderr}")
    return Counter(json.loads(done.stdout))


def loopback_for_port_53(tries: int = 50) -> str:
    """A random 127.0.0.0/8 address whose port 53 is free for UDP and TCP, for a dnsdisc that a
    client with no port setting (resolv.conf) must reach. Needs root (a port below 1024)."""
    import random
    import socket

    for _ in range(tries):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((host, 53))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((host, 53))
        except OSError:
            continue
        return host
    raise RuntimeError("no loopback address with port 53 free")


@dataclass
class Prometheus:
    """Prometheus started by a test, its web UI and API on 127.0.0.1:``port``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get("/-/ready", timeout=1)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"prometheus was not ready within {timeout}s:\n{self.log()}")

    def targets(self) -> list[dict[str, Any]]:
        """The active targets of /api/v1/targets (labels, discoveredLabels, health, ...)."""
        status, body = self.get("/api/v1/targets?state=active")
        assert status == 200, (status, body)
        return list(json.loads(body)["data"]["activeTargets"])


@contextlib.contextmanager
def prometheus(
    tmp_path: Path, config: dict[str, Any], *, nameserver: str | None = None
) -> Iterator[Prometheus]:
    """Prometheus with ``config`` (written as JSON, which is YAML), its TSDB in a temp dir.

    With ``nameserver``, it runs in a private mount namespace (``unshare --mount``) where a
    resolv.conf naming only that address is bind-mounted over /etc/resolv.conf: its DNS service
    discovery reads /etc/resolv.conf itself (miekg/dns), which has no port setting, and has no
    per-config server option, so this is the one way to point it at a DNS server (on port 53)
    without touching the machine's resolv.conf. Its scrapes resolve target names through the
    same file. Needs root (a mount namespace)."""
    path = require_tool("prometheus")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    cmd = [
        path,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=debug",
    ]
    if nameserver is not None:
        unshare, mount = require_tool("unshare"), require_tool("mount")
        if os.geteuid() != 0:
            message = "a private mount namespace needs root"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")
        # unshare and sh exec (no fork), so the PID is Prometheus's. Propagation private: the
        # bind mount stays inside this namespace.
        script = f'{mount} --bind "$0" /etc/resolv.conf && exec "$@"'
        private = [unshare, "--mount", "--propagation", "private"]
        cmd = [*private, "sh", "-c", script, str(resolv), *cmd]
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    prom = Prometheus(proc, port, log_path)
    try:
        prom.wait_ready()
        exe = os.readlink(f"/proc/{proc.pid}/exe")
        assert Path(exe).name == "prometheus", exe  # ending this PID ends Prometheus
        yield prom
    finally:
        end_process(proc)
