"""Shared test helpers: a real dnsdisc process on loopback, HTTP and DNS clients for it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"


def readme_block(heading: str, lang: str = "console") -> str:
    """The first fenced ``lang`` block of the README section headed ``## heading``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert block, f"README has a {lang} block under {heading!r}"
    return block.group(1)


def console_steps(block: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def run_step(server: DnsdiscProcess, command: str, timeout: float = 20) -> list[str]:
    """A README console step run against ``server`` (its ports put in for 8054 and 8053): the
    lines it printed; it must exit 0."""
    cmd = command.replace("localhost:8054", f"127.0.0.1:{server.http_port}").replace(
        "-p 8053", f"-p {server.dns_port}"
    )
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout.splitlines()


def require_tool(name: str) -> str:
    """The path of a system tool the test needs. Under CI=true a missing tool fails the test
    (CI installs it, so missing means the setup is broken); elsewhere it skips."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed (the test command installs it: scripts/test.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


# Ports are drawn below the kernel's ephemeral range: a port the kernel picked (bind to 0) is
# free now, but is the kind it hands to the next outgoing connection, and a server started a
# moment later then finds it taken (CI saw an etcd member lose its peer port to the connection
# of another member). Ports handed out stay out of later draws within this test process.
_EPHEMERAL_LOW = _ephemeral_low()
_HANDED: set[int] = set()
_PORTS = random.Random()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``, outside the ephemeral range."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        if _EPHEMERAL_LOW > 12000:
            port = _PORTS.randrange(10000, _EPHEMERAL_LOW)
            if port in _HANDED:
                continue
        else:
            port = 0
        try:
            with socket.socket(family, socket.SOCK_STREAM) as t:
                t.bind((host, port))
                port = t.getsockname()[1]
                with socket.socket(family, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
        except OSError:
            continue
        _HANDED.add(port)
        return int(port)
    raise RuntimeError("no free port")


@dataclass
class HttpResult:
    status: int
    body: Any
    raw: bytes = b""


# Tests register checks over the API against backends on loopback, at short intervals: what the
# default health.check_networks and health.min_check_interval refuse. A test config allows it.
LOOPBACK_CHECKS = (
    "health:\n  check_networks: ['127.0.0.0/8', '::1/128']\n  min_check_interval: 0.05\n"
)


@dataclass
class DnsdiscProcess:
    """A dnsdisc server started by a test; ``stop``/``kill`` act on its PID only. Without a
    ``--config`` of its own, it allows API checks on loopback (``loopback_checks``)."""

    data_dir: Path
    dns_host: str = "127.0.0.1"
    dns_port: int = 0
    http_port: int = 0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    loopback_checks: bool = True
    # Set when the HTTP API is served over TLS: the test's requests go over https with it.
    ssl_context: ssl.SSLContext | None = None
    # Another checkout to run (benchmarks' before and after): its root, with its own .venv.
    tree: Path | None = None

    @property
    def http_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 15.0) -> DnsdiscProcess:
        if not self.dns_port:
            self.dns_port = free_port(self.dns_host)
        if not self.http_port:
            self.http_port = free_port()
        dns_arg = (
            f"[{self.dns_host}]:{self.dns_port}"
            if ":" in self.dns_host
            else f"{self.dns_host}:{self.dns_port}"
        )
        cmd = [
            str(self.tree / ".venv/bin/python") if self.tree else sys.executable,
            "-m",
            "dnsdisc",
            "serve",
            "--dns",
            dns_arg,
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if "--zones" not in self.extra_args:
            # An empty zones dir: tests see only what they register, not the repo's examples.
            empty = self.data_dir.parent / f"{self.data_dir.name}-zones"
            empty.mkdir(parents=True, exist_ok=True)
            cmd += ["--zones", str(empty)]
        if self.loopback_checks and "--config" not in self.extra_args:
            conf = self.data_dir.parent / f"{self.data_dir.name}-checks.yaml"
            conf.write_text(LOOPBACK_CHECKS)
            cmd += ["--config", str(conf)]
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        env = {**os.environ, **self.env}
        env.pop("DNSDISC_TOKEN", None) if "DNSDISC_TOKEN" not in self.env else None
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tree or ROOT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsdisc exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.http("GET", "/readyz").status == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsdisc did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace")
            if self.log_path and self.log_path.exists()
            else ""
        )

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def children(self) -> list[int]:
        """PIDs of the server's child processes (its DNS workers)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    # -- clients -----------------------------------------------------------------------------

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResult:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.http_url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
                content = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            content = err.read()
            status = err.code
        parsed: Any = None
        if content:
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = None
        return HttpResult(status, parsed, content)

    def register(self, service: str, iid: str, **body: Any) -> HttpResult:
        result = self.http("PUT", f"/v1/services/{service}/instances/{iid}", body)
        assert result.status in (200, 201), result
        return result

    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        use_edns: int | bool = -1,
        payload: int = 1232,
        timeout: float = 3.0,
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload)
        q.flags &= ~dns.flags.RD
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, self.dns_host, port=self.dns_port, timeout=timeout)

    def addresses(self, name: str, rdtype: str = "A", **kw: Any) -> list[str]:
        msg = self.query(name, rdtype, **kw)
        return [
            rr.to_text()
            for rrset in msg.answer
            for rr in rrset
            if rrset.rdtype == dns.rdatatype.from_text(rdtype)
        ]


@contextlib.contextmanager
def running(tmp_path: Path, name: str = "node", **kw: Any) -> Iterator[DnsdiscProcess]:
    server = DnsdiscProcess(tmp_path / name, **kw).start()
    try:
        yield server
    finally:
        server.stop()


def metric(server: DnsdiscProcess, name: str) -> float:
    """The sum of the samples of ``name`` (a series, labels included, or a prefix of several)
    in the server's /metrics; 0 when it has none."""
    text = server.http("GET", "/metrics").raw.decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_until(cond: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``cond`` held (polled every 20 ms); fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def end_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a process this test started (by its PID), SIGKILL it if it outlives 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_for(what: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """``what()`` once it is truthy (a DNS timeout meanwhile is only a miss); fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except OSError as exc:  # a DNS timeout while a node is busy
            last = exc
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"not true within {timeout}s (last: {last!r})")


@dataclass
class DnsDaemon:
    """A DNS server a test started (a resolver, a secondary), listening on 127.0.0.1:``port``,
    its output in ``log_path``; ended by its PID."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def probe(self) -> None:
        """Ask one question; any answer means it listens."""
        raise NotImplementedError

    def wait_up(self, timeout: float = 10.0) -> None:
        """Until ``probe`` gets an answer; fails with the log when the process exits first or
        never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(dns.exception.DNSException, OSError):
                self.probe()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        end_process(self.proc)


D = TypeVar("D", bound=DnsDaemon)


@contextlib.contextmanager
def run_daemon(kind: type[D], name: str, cmd: list[str], port: int, log_path: Path) -> Iterator[D]:
    """Start ``cmd`` (a DNS server on ``port``) as a ``kind``, wait until it answers, end it."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    daemon = kind(name, proc, port, log_path)
    try:
        daemon.wait_up()
        yield daemon
    finally:
        daemon.stop()
