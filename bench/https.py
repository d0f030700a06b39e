"""Registrations/s over https against plain HTTP, on the same machine in the same run.

    .venv/bin/python bench/https.py [--count 2000] [--clients 16] [--rounds 3] [--workers 1]

Makes a CA and a server certificate with openssl, then alternates two dnsdisc servers (SQLite
store, durable commits), one plain and one with ``http.tls``, each fresh per round. Each round
registers ``--count`` instances with ``--clients`` concurrent aiohttp clients twice: on kept-alive
connections (a registering agent's usual case), and with a new connection per PUT (the CLI's
case: one TLS handshake per registration). Prints each round and the medians, and the ratio
https / http of each. Servers are stopped by PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.certs import Ca  # noqa: E402
from tests.support.helpers import DnsdiscProcess  # noqa: E402


async def register_all(
    base: str, count: int, clients: int, tag: str, ctx: ssl.SSLContext | None, keep_alive: bool
) -> float:
    """Registrations/s of ``count`` PUTs from ``clients`` concurrent clients."""
    todo = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            body = {"address": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", "port": 80}
            url = f"{base}/v1/services/{tag}{n // 10}/instances/i{n % 10}"
            async with session.put(url, json=body, ssl=ctx if ctx is not None else False) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {url}: {resp.status}")

    connector = aiohttp.TCPConnector(limit=clients, force_close=not keep_alive)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return count / (time.perf_counter() - started)


def one_round(
    work: Path, n: int, tls: bool, pki: tuple[Path, Path, Path], args: argparse.Namespace
) -> tuple[float, float]:
    ca, cert, key = pki
    config = work / f"r{n}-{tls}.yaml"
    config.write_text(
        f"http:\n  tls:\n    cert_file: {cert}\n    key_file: {key}\n" if tls else "{}\n"
    )
    ctx = ssl.create_default_context(cafile=str(ca)) if tls else None
    server = DnsdiscProcess(
        work / f"r{n}-{'https' if tls else 'http'}",
        extra_args=["--config", str(config), "--workers", str(args.workers)],
        ssl_context=ctx,
        loopback_checks=False,
    ).start(timeout=30)
    try:
        base = server.http_url
        kept = asyncio.run(register_all(base, args.count, args.clients, "k", ctx, True))
        fresh = asyncio.run(register_all(base, args.count, args.clients, "f", ctx, False))
        return kept, fresh
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dnsdisc-https-") as tmp:
        work = Path(tmp)
        authority = Ca.make(work / "pki")
        pair = authority.issue(work / "pki", "server", "bench")
        pki = (authority.cert, pair.cert, pair.key)
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for n in range(args.rounds):
            for tls in (False, True) if n % 2 == 0 else (True, False):
                kept, fresh = one_round(work, n, tls, pki, args)
                results[tls].append((kept, fresh))
                print(
                    f"round {n + 1} {'https' if tls else 'http '}: {kept:7.0f}/s kept-alive, "
                    f"{fresh:7.0f}/s new connection per PUT",
                    flush=True,
                )
    med = {
        tls: tuple(statistics.median(r[i] for r in results[tls]) for i in (0, 1)) for tls in results
    }
    print(f"\n{args.count} registrations x {args.rounds} rounds, {args.clients} clients, "
          f"--workers {args.workers} (medians)\n")  # fmt: skip
    print("| connections | http /s | https /s | https / http |")
    print("|---|---|---|---|")
    for i, what in enumerate(("kept alive", "new per PUT")):
        plain, tls = med[False][i], med[True][i]
        print(f"| {what} | {plain:.0f} | {tls:.0f} | {tls / plain:.2f}x |")


if __name__ == "__main__":
    main()
