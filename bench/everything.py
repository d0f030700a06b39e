"""Everything on (#25): dnsdisc with DNS cookies, ECS from 1,000 subnets on ``locality: spill``
services, ``consistent`` on one service, ``sequence: smooth`` on another, RRL and DNSSEC (DO=1 on
a third of the queries), beside dnsmasq serving the same names and dnsdisc with all of it off,
alternating in one run; with ``--features``, each feature alone against none, and with
``--profile`` a py-spy profile of the DNS worker under each.

    .venv/bin/python bench/everything.py [--workers 1] [--seconds 6] [--rounds 3]
                                         [--features] [--profile DIR] [--only all,off,...]

The data: 4 zones (``locality.networks`` 10.1-4.0.0/16) and three services of 8 instances (2
per zone, weights 10/20/30/40 by zone, ``max_answers: 2``, ttl 5): ``web`` (weighted,
``sequence: smooth``), ``cart`` (``policy: consistent``) and ``api`` (weighted, random), all
``locality: spill`` when everything is on. The query file (binary, dnsperf ``-B``, so every
query carries its own options) cycles 3,000 queries: A and SRV of the three services (90%) and
10 names that do not exist (10%); each from one of 1,000 /24s (ECS, source prefix 24) spread
over the 4 zones; DO=1 on every third; each with a DNS cookie from one of 16 clients, a
client cookie alone on every fourth and the client + server cookie the server handed out
(``dns.cookie_secret`` fixed, probed once at start) on the others. RRL is on at 1,000,000
responses per second: every response is counted, none limited (all the load comes from
127.0.0.1; the limited path is not what is measured).

Servers (one of each, started once, measured in turn, the order reversed every other round):

- ``dnsmasq``: the same A and SRV records (all 8 instances, with their A records as the SRV
  targets' addresses) by ``--host-record``/``--srv-host``, as ``../shared/bench`` runs it; the
  same questions in the same order, EDNS (1232) without options and DO=0;
- ``off``: dnsdisc with cookies, RRL and DNSSEC off, the services weighted, random and
  ``locality: off``; dnsmasq's query file;
- ``all``: dnsdisc with everything on; the full query file.

With ``--features`` also one dnsdisc per feature alone, each with its part of the queries:
``cookies`` (the cookie mix), ``ecs`` (ECS from the 1,000 subnets, the services ``spill``),
``consistent`` (every service ``consistent``), ``smooth`` (every service ``smooth``), ``rrl``,
``do`` (DNSSEC on, DO=1 on every third query). ``--only`` picks servers by name. ``--tree
before=PATH --tree after=PATH``: every dnsdisc started from each checkout (``git worktree``,
with a ``.venv``), named ``all@before``, ``all@after``..., measured in the same rounds.

Figures per run: queries/s (dnsperf), CPU-seconds of every process of the server (utime +
stime from ``/proc/PID/stat``, the dnsdisc main process and its workers) per query in µs, and
queries per server core-second (queries / CPU-seconds). Printed: each run, then the medians and
each server over dnsmasq and over ``off``; the µs per query a feature adds is its median CPU per
query minus ``off``'s.

``--profile DIR``: after the rounds, for each dnsdisc, dnsperf for ``--seconds`` again while
``py-spy record -r 500 -f raw`` samples its first DNS worker (``DIR/<name>.txt``, collapsed
stacks), and prints the share of samples of the top frames (self time) and of the project's
functions (inclusive). Servers are stopped by their PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.edns
import dns.flags
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tcp import dnsperf, dnsperf_parser  # noqa: E402
from tests.support.helpers import DnsdiscProcess, free_port  # noqa: E402

D = "svc.internal."
SERVICES = ("web", "cart", "api")
SECRET = "00112233445566778899aabbccddeeff"
ZONES = """\
locality:
  networks:
    z1: [10.1.0.0/16]
    z2: [10.2.0.0/16]
    z3: [10.3.0.0/16]
    z4: [10.4.0.0/16]
"""
COOKIES_ON = f"  cookies: true\n  cookie_secret: '{SECRET}'\n"
RRL_ON = "rate_limit:\n  responses_per_second: 1000000\n"
RRL_OFF = "rate_limit:\n  responses_per_second: 0\n"
DNSSEC_ON = "dnssec:\n  enabled: true\n"
CLIENTS = [bytes([n + 1] * 8) for n in range(16)]  # 16 resolvers' client cookies
QUERIES = 3000
SUBNETS = 1000


@dataclass
class Setup:
    """One dnsdisc: which features are on, which the queries use."""

    name: str
    cookies: bool = False
    ecs: bool = False  # ECS in the queries and the services ``spill``
    consistent: str = ""  # which services are ``consistent``: "" none, "cart", "all"
    smooth: str = ""  # which are ``smooth``: "" none, "web", "all"
    rrl: bool = False
    do: bool = False  # DNSSEC on, DO=1 on every third query
    tree: Path | None = None  # another checkout to run (before and after a change)
    server: DnsdiscProcess | None = None
    qfile: Path | None = None
    pids: list[int] = field(default_factory=list)

    def config(self) -> str:
        return (
            ZONES
            + "dns:\n  udp_receive_buffer: 1048576\n"
            + (COOKIES_ON if self.cookies else "  cookies: false\n")
            + (RRL_ON if self.rrl else RRL_OFF)
            + (DNSSEC_ON if self.do else "")
        )

    def service(self, name: str) -> dict[str, object]:
        settings: dict[str, object] = {"max_answers": 2, "ttl": 5, "policy": "weighted"}
        if self.consistent == "all" or self.consistent == name:
            settings["policy"] = "consistent"
        if self.smooth == "all" or self.smooth == name:
            settings["sequence"] = "smooth"
        settings["locality"] = "spill" if self.ecs else "off"
        return settings


EVERYTHING = Setup(
    "all", cookies=True, ecs=True, consistent="cart", smooth="web", rrl=True, do=True
)
FEATURES = [
    Setup("cookies", cookies=True),
    Setup("ecs", ecs=True),
    Setup("consistent", consistent="all"),
    Setup("smooth", smooth="all"),
    Setup("rrl", rrl=True),
    Setup("do", do=True),
]


def subnet(n: int) -> str:
    """The n-th of the 1,000 /24s, in zone 1 + n % 4."""
    return f"10.{1 + n % 4}.{(n // 4) % 256}.0"


def questions() -> list[tuple[str, str]]:
    """The cycle of questions: per 10, 9 of the services (A, SRV) and one that does not exist."""
    asked = []
    for n in range(QUERIES):
        if n % 10 == 9:
            asked.append((f"missing-{(n // 10) % 10}.{D}", "A"))
            continue
        k = n - n // 10
        service = SERVICES[k % 3]
        asked.append(
            (f"{service}.{D}", "A") if (k // 3) % 2 == 0 else (f"_{service}._tcp.{D}", "SRV")
        )
    return asked


def write_queries(path: Path, setup: Setup | None, full_cookies: dict[bytes, bytes]) -> Path:
    """Binary dnsperf input: each query as 2 bytes of length and its wire form. ``setup`` None:
    plain EDNS (dnsmasq, ``off``)."""
    out = bytearray()
    for n, (name, rdtype) in enumerate(questions()):
        options: list[dns.edns.Option] = []
        if setup is not None and setup.ecs:
            options.append(dns.edns.ECSOption(subnet(n % SUBNETS), 24))
        if setup is not None and setup.cookies:
            client = CLIENTS[n % len(CLIENTS)]
            cookie = client if n % 4 == 0 else full_cookies[client]
            options.append(dns.edns.GenericOption(dns.edns.COOKIE, cookie))
        do = setup is not None and setup.do and n % 3 == 0
        q = dns.message.make_query(
            name, rdtype, use_edns=0, payload=1232, options=options, want_dnssec=do
        )
        q.flags = 0  # no RD: a resolver's question to an authority
        wire = q.to_wire()
        out += struct.pack("!H", len(wire)) + wire
    path.write_bytes(bytes(out))
    return path


def server_cookies(port: int) -> dict[bytes, bytes]:
    """The full cookie (client + server) the server hands out for each of CLIENTS."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for client in CLIENTS:
            q = dns.message.make_query(
                "web." + D, "A", use_edns=0,
                options=[dns.edns.GenericOption(dns.edns.COOKIE, client)],
            )  # fmt: skip
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            reply = dns.message.from_wire(s.recv(4096))
            cookie = [o for o in reply.options if o.otype == dns.edns.COOKIE]
            if not cookie:
                raise SystemExit("the server sent no cookie back")
            found[client] = cookie[0].to_wire()
    return found


def instances() -> list[tuple[str, str, str, int]]:
    """(service, instance id, address, weight) of every instance."""
    return [
        (service, f"i{zone}{k}", f"10.{10 + s}.{zone}.{k + 1}", 10 * zone)
        for s, service in enumerate(SERVICES)
        for zone in range(1, 5)
        for k in range(2)
    ]


def fill(setup: Setup) -> None:
    server = setup.server
    assert server is not None
    for service in SERVICES:
        server.http("PUT", f"/v1/services/{service}", setup.service(service))
    for service, iid, address, weight in instances():
        zone = f"z{iid[1]}"
        server.register(service, iid, address=address, port=8080, weight=weight, zone=zone)


def dnsmasq_args() -> list[str]:
    """The same records for dnsmasq, as ``../shared/bench/dataset.py`` writes them."""
    z = D.rstrip(".")
    args = [f"--local=/{z}/", "--local-ttl=5"]
    for service, iid, address, weight in instances():
        args.append(f"--host-record={service}.{z},{address}")
        args.append(f"--host-record={iid}.{service}.{z},{address}")
        args.append(f"--srv-host=_{service}._tcp.{z},{iid}.{service}.{z},8080,10,{weight}")
    return args


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def measure(port: int, pids: list[int], qfile: Path, args: argparse.Namespace) -> tuple:
    """(queries/s, µs of server CPU per query, queries per server core-second, lost %)."""
    before = cpu_seconds(pids)
    found = dnsperf(port, qfile, args, "udp", extra=["-B"])
    used = cpu_seconds(pids) - before
    qps = float(found["qps"])
    queries = qps * args.seconds
    return qps, used / queries * 1e6, queries / used if used else 0.0, found["lost"]


def profile(setup: Setup, out: Path, args: argparse.Namespace) -> Path:
    """Collapsed stacks of the first DNS worker under ``args.seconds`` of this setup's queries."""
    assert setup.server is not None and setup.qfile is not None
    worker = (setup.server.children() or [setup.pids[0]])[0]
    path = out / f"{setup.name}.txt"
    spy = subprocess.Popen(
        [str(ROOT / ".venv/bin/py-spy"), "record", "-r", "500", "-d", str(args.seconds),
         "-p", str(worker), "-f", "raw", "-o", str(path), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)
    dnsperf(setup.server.dns_port, setup.qfile, args, "udp", extra=["-B"])
    spy.wait(timeout=args.seconds + 30)
    return path


def frame_name(frame: str) -> str:
    """``respond (dnsdisc/dnsserver/answer.py:123)`` -> ``answer.respond``."""
    func, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return f"{file}.{func}" if file else func


def shares(path: Path, top: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Self-time shares of the top frames, and inclusive shares of dnsdisc's functions."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frame_name(frames[-1])] += n
        for name in {frame_name(f) for f in frames if "dnsdisc/" in f}:
            inclusive[name] += n
    if not total:
        return [], []
    return (
        [(name, n / total) for name, n in leaf.most_common(top)],
        [(name, n / total) for name, n in inclusive.most_common(top)],
    )


def main() -> None:
    p = dnsperf_parser(__doc__, seconds=6)
    p.add_argument("--features", action="store_true", help="also each feature alone")
    p.add_argument("--profile", type=Path, help="py-spy profiles of each dnsdisc into DIR")
    p.add_argument("--only", help="servers to run, by name, separated by commas")
    p.add_argument(
        "--tree", action="append", default=[], metavar="LABEL=PATH",
        help="run each dnsdisc from this checkout too (its .venv), as NAME@LABEL",
    )  # fmt: skip
    args = p.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    setups = [Setup("off"), EVERYTHING] + (FEATURES if args.features else [])
    wanted = set(args.only.split(",")) if args.only else None
    setups = [s for s in setups if wanted is None or s.name in wanted]
    trees: dict[str, Path | None] = {"": None}
    if args.tree:
        trees = {label: Path(path).resolve() for label, path in (t.split("=") for t in args.tree)}
    setups = [
        replace(s, name=f"{s.name}@{label}" if label else s.name, tree=tree)
        for label, tree in trees.items()
        for s in setups
    ]
    tmp = Path(tempfile.mkdtemp())
    plain = write_queries(tmp / "plain.bin", None, {})
    dnsmasq = None
    dnsmasq_port = free_port()
    runs: list[str] = []
    results: dict[str, list[tuple]] = {}
    try:
        if wanted is None or "dnsmasq" in wanted:
            cmd = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon",
                   "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
                   "--pid-file=", "--listen-address=127.0.0.1", "--bind-interfaces",
                   f"--port={dnsmasq_port}", *dnsmasq_args()]  # fmt: skip
            dnsmasq = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            runs.append("dnsmasq")
        for setup in setups:
            (tmp / f"{setup.name}.yaml").write_text(setup.config())
            setup.server = DnsdiscProcess(
                tmp / setup.name,
                extra_args=[
                    "--workers", args.workers, "--config", str(tmp / f"{setup.name}.yaml")
                ],
                tree=setup.tree,
            )  # fmt: skip
            setup.server.start(timeout=60)
            fill(setup)
            assert setup.server.proc is not None
            setup.pids = [setup.server.proc.pid, *setup.server.children()]
            full = server_cookies(setup.server.dns_port) if setup.cookies else {}
            if setup.name.partition("@")[0] == "off":
                setup.qfile = plain
            else:
                setup.qfile = write_queries(tmp / f"{setup.name}.bin", setup, full)
            # Warm: every subset signed, every layout cached, before the rounds.
            warm = argparse.Namespace(**{**vars(args), "seconds": 2})
            dnsperf(setup.server.dns_port, setup.qfile, warm, "udp", extra=["-B"])
            runs.append(setup.name)
        by_name = {s.name: s for s in setups}
        for n in range(args.rounds):
            for name in runs if n % 2 == 0 else list(reversed(runs)):
                if name == "dnsmasq":
                    assert dnsmasq is not None
                    got = measure(dnsmasq_port, [dnsmasq.pid], plain, args)
                else:
                    s = by_name[name]
                    assert s.server is not None and s.qfile is not None
                    got = measure(s.server.dns_port, s.pids, s.qfile, args)
                results.setdefault(name, []).append(got)
                print(f"round {n + 1} {name:10}: {got[0]:9.0f} q/s, {got[1]:6.1f} µs CPU/query, "
                      f"{got[2]:9.0f} q per core-s (lost {got[3]}%)", flush=True)  # fmt: skip
        profiles = {}
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for s in setups:
                profiles[s.name] = profile(s, args.profile, args)
    finally:
        for s in setups:
            if s.server is not None:
                s.server.stop()
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, runs, results)
    for name, path in profiles.items():
        top, ours = shares(path)
        print(f"\n{name}: top frames (self) " + ", ".join(f"{f} {s:.0%}" for f, s in top))
        print(f"{name}: dnsdisc (inclusive) " + ", ".join(f"{f} {s:.0%}" for f, s in ours))


def report(args: argparse.Namespace, runs: list[str], results: dict[str, list[tuple]]) -> None:
    med = {
        name: tuple(statistics.median(r[i] for r in results[name]) for i in range(3))
        for name in runs
    }
    print(f"\nUDP, dnsdisc workers {args.workers}, {args.rounds} rounds of {args.seconds} s "
          "(medians; ratios of medians)\n")  # fmt: skip
    print("| server | q/s | µs CPU/query | q per core-s | q/s / dnsmasq | per core / dnsmasq "
          "| q/s / off | µs/query over off |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in runs:
        qps, us, per_core = med[name]
        cells = [f"{qps:.0f}", f"{us:.1f}", f"{per_core:.0f}"]
        if "dnsmasq" in med:
            cells += [f"{qps / med['dnsmasq'][0]:.2f}x", f"{per_core / med['dnsmasq'][2]:.2f}x"]
        else:
            cells += ["", ""]
        label = name.partition("@")[2]
        off = "off@" + label if label else "off"  # the same checkout's
        if off in med and name != "dnsmasq":
            cells += [f"{qps / med[off][0]:.2f}x", f"{us - med[off][1]:+.1f}"]
        else:
            cells += ["", ""]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name in runs:
        if "dnsmasq" in results and name.partition("@")[0] == "all":
            same = [
                (a[0] / m[0], a[2] / m[2])
                for a, m in zip(results[name], results["dnsmasq"], strict=True)
            ]
            print(f"\n{name} / dnsmasq in each round (q/s, per core): "
                  + ", ".join(f"{q:.2f}x {c:.2f}x" for q, c in same))  # fmt: skip


if __name__ == "__main__":
    main()
