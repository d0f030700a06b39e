"""A real etcd cluster for tests: members from Debian's etcd-server on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.helpers import DnsdiscProcess, free_port, require_tool


def etcd_post(url: str, path: str, body: dict[str, Any], timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Member:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class EtcdCluster:
    """``size`` members; ``start``/``kill``/``restart`` act on the members' own PIDs only."""

    base: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    binary: str = ""

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        self.binary = require_tool("etcd")
        self.base.mkdir(parents=True, exist_ok=True)
        for i in range(self.size):
            self.members.append(
                Member(
                    f"m{i}",
                    f"http://127.0.0.1:{free_port()}",
                    f"http://127.0.0.1:{free_port()}",
                    self.base / f"etcd-m{i}",
                    self.base / f"etcd-m{i}.log",
                )
            )
        for m in self.members:
            self._spawn(m)
        self.wait_healthy(timeout)
        return self

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    def _spawn(self, m: Member) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        cmd = [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"dnsdisc-test-{self.members[0].peer_url[-5:]}",
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        log = open(m.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_healthy(self, timeout: float = 30.0, members: list[Member] | None = None) -> None:
        """Until a quorum read succeeds on every running member named (all by default)."""
        wanted = [m for m in (members or self.members) if self.running(m)]
        deadline = time.monotonic() + timeout
        pending = list(wanted)
        while pending and time.monotonic() < deadline:
            for m in list(pending):
                try:
                    etcd_post(m.client_url, "/v3/kv/range", {"key": "eA=="}, 1.0)
                    pending.remove(m)
                except (OSError, urllib.error.URLError, ValueError):
                    pass
            time.sleep(0.1)
        if pending:
            raise RuntimeError(
                f"etcd members {[m.name for m in pending]} not healthy in {timeout}s:\n"
                + "\n".join(m.log_path.read_text(errors="replace")[-2000:] for m in pending)
            )

    def running(self, m: Member) -> bool:
        return m.proc is not None and m.proc.poll() is None

    def leader(self) -> Member:
        for _ in range(50):
            for m in self.members:
                if not self.running(m):
                    continue
                try:
                    status = etcd_post(m.client_url, "/v3/maintenance/status", {}, 1.0)
                except (OSError, urllib.error.URLError, ValueError):
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return m
            time.sleep(0.1)
        raise RuntimeError("no etcd leader")

    def kill(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(10)

    def freeze(self, m: Member, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT): the member's connections stay open and say nothing, as when
        its host vanishes without closing them."""
        if self.running(m):
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def restart(self, m: Member) -> None:
        if not self.running(m):
            self._spawn(m)  # the data dir holds the membership: the flags above are ignored

    def stop(self) -> None:
        for m in self.members:
            self.kill(m)
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)


def etcd_node(tmp_path: Path, name: str, cluster: EtcdCluster, *extra: str) -> DnsdiscProcess:
    """A dnsdisc node (not started) sharing ``cluster``'s registry under a test prefix."""
    return DnsdiscProcess(
        tmp_path / name,
        extra_args=[
            "--storage", "etcd",
            "--etcd-endpoints", cluster.endpoints,
            "--etcd-prefix", "/dnsdisc-test",
            *extra,
        ],
    )  # fmt: skip
