"""DNS worker processes sharing the DNS port (SO_REUSEPORT): every worker answers from the
newest acknowledged state, counters are summed over them, and a worker that dies or hangs is
replaced without anyone seeing an old answer."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

from dnsdisc.dnsserver.face import SO_RCVBUFFORCE
from tests.support.helpers import DnsdiscProcess, metric, require_tool, running, wait_until

SPREAD = 16  # source ports per check: all on one worker of two has odds of 2**-15


def spread_answers(server: DnsdiscProcess, name: str) -> list[set[str]]:
    """The A records of ``name`` as seen from SPREAD different source ports at once (the
    kernel picks the worker by the client's address and port)."""
    wire = dns.message.make_query(name, "A").to_wire()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SPREAD)]
    try:
        for s in socks:
            s.settimeout(2.0)
            s.sendto(wire, ("127.0.0.1", server.dns_port))
        seen = []
        for s in socks:
            msg = dns.message.from_wire(s.recv(4096))
            seen.append(
                {
                    rr.to_text()
                    for rrset in msg.answer
                    for rr in rrset
                    if rrset.rdtype == dns.rdatatype.A
                }
            )
        return seen
    finally:
        for s in socks:
            s.close()


def answered_all(server: DnsdiscProcess, name: str, expected: set[str]) -> bool:
    try:
        return spread_answers(server, name) == [expected] * SPREAD
    except TimeoutError:
        return False


def gone(pid: int) -> bool:
    """The process has exited (its sockets are closed), even if not yet reaped."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.fixture
def workers(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running(tmp_path, extra_args=["--workers", "2", "--storage", "memory"]) as server:
        wait_until(lambda: len(server.children()) == 2, 5)
        yield server


def test_every_worker_answers_from_the_acknowledged_write(workers: DnsdiscProcess) -> None:
    for n in range(1, 31):
        address = f"10.1.0.{n}"
        workers.register("web", "web-1", address=address, port=80)
        # No wait: the 2xx above came only after both workers had applied the change.
        assert spread_answers(workers, "web.svc.internal") == [{address}] * SPREAD, n
    workers.http("PUT", "/v1/services/web/instances/web-1/maintenance", {"enabled": True})
    msg_sets = spread_answers(workers, "web.svc.internal")
    assert msg_sets == [set()] * SPREAD
    assert workers.http("DELETE", "/v1/services/web/instances/web-1").status == 204
    assert spread_answers(workers, "web.svc.internal") == [set()] * SPREAD
    # Every one of those writes was covered by the workers' fences: none waited for an ACK.
    assert metric(workers, "dnsdisc_worker_confirm_seconds_count") >= 32
    assert metric(workers, "dnsdisc_worker_ack_waits_total") == 0


def test_concurrent_writes_to_one_service_are_all_answered_once_acknowledged(
    workers: DnsdiscProcess,
) -> None:
    # Changes made in one turn of the main process's event loop go to the workers together,
    # one message per turn with each service once: concurrent writes to one service must each
    # still be answered by every worker as soon as their own 2xx is out.
    def write_then_ask(n: int) -> list[set[str]]:
        address = f"10.2.{n // 250}.{n % 250 + 1}"
        workers.register("burst", f"i{n}", address=address, port=80)
        seen = spread_answers(workers, f"i{n}.burst.svc.internal")
        return [s ^ {address} for s in seen]  # empty sets when every worker answered it

    with ThreadPoolExecutor(16) as pool:
        misses = list(pool.map(write_then_ask, range(64)))
    assert misses == [[set()] * SPREAD] * 64
    body = workers.http("GET", "/v1/services/burst").body
    assert len(body["instances"]) == 64


def test_counters_are_summed_over_the_workers(workers: DnsdiscProcess) -> None:
    workers.register("web", "web-1", address="10.0.0.1", port=80)
    before = metric(workers, 'dnsdisc_dns_queries_total{rcode="NOERROR",type="A"}')
    for _ in range(5):
        spread_answers(workers, "web.svc.internal")
    after = metric(workers, 'dnsdisc_dns_queries_total{rcode="NOERROR",type="A"}')
    assert after - before == 5 * SPREAD
    assert metric(workers, "dnsdisc_dns_workers") == 2
    body = workers.http("GET", "/v1/services/web?stats=1").body
    assert body["instances"][0]["answers"] == 5 * SPREAD


def test_a_killed_worker_is_replaced(workers: DnsdiscProcess) -> None:
    workers.register("web", "web-1", address="10.0.0.1", port=80)
    victim = workers.children()[0]
    os.kill(victim, signal.SIGKILL)
    # Once the kernel has closed its socket the survivor takes the whole port: nothing goes
    # unanswered. (Tearing a killed process down occasionally takes this VM seconds; its socket
    # lives until then, so the test waits for that rather than for a fixed time.)
    wait_until(lambda: gone(victim), 15)
    wait_until(lambda: answered_all(workers, "web.svc.internal", {"10.0.0.1"}), 15)
    wait_until(lambda: metric(workers, "dnsdisc_dns_worker_restarts_total") == 1, 10)
    assert len(workers.children()) == 2 and victim not in workers.children()
    # The replacement started from a full snapshot and follows new writes.
    assert spread_answers(workers, "web.svc.internal") == [{"10.0.0.1"}] * SPREAD
    workers.register("web", "web-2", address="10.0.0.2", port=80)
    assert spread_answers(workers, "web.svc.internal") == [{"10.0.0.1", "10.0.0.2"}] * SPREAD
    assert "exited with status -9; starting a new one" in workers.log()


def test_a_stopped_worker_applies_the_acknowledged_write_before_answering(
    workers: DnsdiscProcess,
) -> None:
    # The write does not wait for a worker that cannot run: the change is in its feed socket and
    # its fence says so. Queries that reach it meanwhile wait in its socket; once it runs again it
    # applies the change before answering them.
    workers.register("web", "web-1", address="10.0.0.1", port=80)
    stopped = workers.children()[0]
    os.kill(stopped, signal.SIGSTOP)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SPREAD)]
    try:
        workers.register("web", "web-1", address="10.0.0.2", port=80)
        wire = dns.message.make_query("web.svc.internal", "A").to_wire()
        for s in socks:
            s.sendto(wire, ("127.0.0.1", workers.dns_port))
        time.sleep(0.5)
        waiting = []
        for s in socks:  # the survivor has answered by now; the stopped worker has not
            s.setblocking(False)
            try:
                s.recv(4096, socket.MSG_PEEK)
            except BlockingIOError:
                waiting.append(s)
        assert waiting, "no query reached the stopped worker"
        os.kill(stopped, signal.SIGCONT)
        seen = []
        for s in socks:
            s.settimeout(5.0)
            msg = dns.message.from_wire(s.recv(4096))
            seen.append({rr.to_text() for rrset in msg.answer for rr in rrset})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
        for s in socks:
            s.close()
    assert seen == [{"10.0.0.2"}] * SPREAD
    assert not gone(stopped) and "did not confirm" not in workers.log()
    assert metric(workers, "dnsdisc_worker_ack_waits_total") == 0  # the write did not wait


def test_a_stopped_worker_is_replaced_within_seconds_though_nothing_is_written(
    workers: DnsdiscProcess,
) -> None:
    """#16 item 7: a SIGSTOPped worker owed nothing while nothing was written, so nobody noticed,
    and it lost its share of the queries for as long as it stayed stopped. The supervisor's
    pings find it: it is killed after LIVENESS_TIMEOUT (2.5 s) and replaced, and /readyz says
    503 until the replacement answers."""
    workers.register("web", "web-1", address="10.0.0.1", port=80)
    hung = workers.children()[0]
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    unready = []
    try:
        while not gone(hung) and time.monotonic() - started < 20:
            unready.append(workers.http("GET", "/readyz").status == 503)
            time.sleep(0.05)
        killed_after = time.monotonic() - started

        def replaced() -> bool:
            children = workers.children()
            return len(children) == 2 and hung not in children

        while time.monotonic() - started < 30:
            status = workers.http("GET", "/readyz").status
            unready.append(status == 503)
            if status == 200 and replaced():
                break
            time.sleep(0.05)
        ready_after = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
        if not gone(hung):
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGKILL)
    print(
        f"stopped worker killed after {killed_after:.2f} s, ready again after {ready_after:.2f} s"
    )
    # LIVENESS_TIMEOUT (2.5 s) and a tick; without the pings, never, or 5 s if a write was owed.
    assert killed_after < 4.5, killed_after
    assert "has not answered for" in workers.log()
    # The stopped worker was counted out before it was gone, and until its replacement answered.
    assert any(unready), "/readyz never said 503 while a worker did not answer"
    body = workers.http("GET", "/readyz").body
    assert body["dns_workers"] == {"answering": 2, "configured": 2}
    wait_until(lambda: answered_all(workers, "web.svc.internal", {"10.0.0.1"}), 15)
    assert metric(workers, "dnsdisc_dns_worker_restarts_total") == 1
    # The replacement follows new writes.
    workers.register("web", "web-1", address="10.0.0.2", port=80)
    assert spread_answers(workers, "web.svc.internal") == [{"10.0.0.2"}] * SPREAD


def test_workers_exit_with_a_killed_main_process(tmp_path: Path) -> None:
    server = DnsdiscProcess(tmp_path / "node", extra_args=["--workers", "2"]).start()
    try:
        wait_until(lambda: len(server.children()) == 2, 5)
        children = server.children()
        server.kill()
        # The feed ends with the main process, and so do they: no orphan keeps the port.
        wait_until(lambda: all(gone(pid) for pid in children), 5)
        server.start()  # the same port is free again
        server.register("web", "web-1", address="10.0.0.1", port=80)
        assert spread_answers(server, "web.svc.internal") == [{"10.0.0.1"}] * SPREAD
    finally:
        server.stop()


def test_another_server_on_the_port_is_an_error(workers: DnsdiscProcess, tmp_path: Path) -> None:
    """SO_REUSEPORT must not let a second dnsdisc quietly share the first one's port."""
    second = DnsdiscProcess(
        tmp_path / "second", dns_port=workers.dns_port, extra_args=["--workers", "2"]
    )
    with pytest.raises(RuntimeError, match="cannot start"):
        second.start()
    assert second.proc is not None and second.proc.returncode == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("count", [0, 2])
def test_both_event_loops_answer_udp_and_tcp(tmp_path: Path, loop: str, count: int) -> None:
    args = ["--event-loop", loop, "--workers", str(count), "--storage", "memory"]
    with running(tmp_path, extra_args=args) as server:
        assert f"event loop {loop}" in server.log()
        wait_until(lambda: len(server.children()) == count, 5)
        for pid in server.children():
            # python -m dnsdisc.workers FD FENCE LOOP NUMBER
            assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-3] == loop.encode()
        server.register("web", "web-1", address="10.0.0.1", port=80)
        assert spread_answers(server, "web.svc.internal") == [{"10.0.0.1"}] * SPREAD
        assert server.addresses("web.svc.internal", tcp=True) == ["10.0.0.1"]


@pytest.mark.parametrize("ask", ["none", "1 MiB", "above rmem_max"])
def test_every_udp_socket_gets_the_receive_buffer_asked_for(tmp_path: Path, ask: str) -> None:
    ss = require_tool("ss")
    default = int(Path("/proc/sys/net/core/rmem_default").read_text())
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    asked = {"none": 0, "1 MiB": 1 << 20, "above rmem_max": 2 * cap}[ask]
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(f"dns:\n  udp_receive_buffer: {asked}\n")
    args = ["--workers", "2", "--storage", "memory", "--config", str(config)]
    with running(tmp_path, extra_args=args) as server:
        wait_until(lambda: len(server.children()) == 2, 5)
        out = subprocess.run(
            [ss, "-uanm", "sport", "=", str(server.dns_port)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    sizes = [int(n) for n in re.findall(r"\brb(\d+)", out)]
    # The kernel doubles what it is asked for (room for its bookkeeping). Without privilege
    # (root or CAP_NET_ADMIN, which CI has) it caps the request at rmem_max.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            assert SO_RCVBUFFORCE is not None
            probe.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, asked)
            privileged = True
        except (AssertionError, PermissionError):
            privileged = False
    expected = default if not asked else 2 * (asked if privileged else min(asked, cap))
    assert sizes == [expected, expected], out  # one UDP socket per worker
