"""Registrations per second through ``POST /v1/batch`` against single ``PUT``s, on SQLite.

    .venv/bin/python bench/batch.py [--instances 20000] [--clients 4]

Starts dnsdisc (SQLite, on loopback ports), registers ``--instances`` instances with
``--clients`` concurrent keep-alive HTTP clients, first as batches of 128, then (into another
service) one PUT each for a tenth as many; prints instances per second for both. The server is
stopped by its PID; data goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DnsdiscProcess  # noqa: E402


def body(n: int) -> dict[str, object]:
    return {"address": f"10.{n // 65536}.{(n // 256) % 256}.{n % 256 or 1}", "port": 80}


async def batches(url: str, total: int, clients: int) -> float:
    ops = [
        {"op": "register", "service": "batched", "id": f"i{n}", "body": body(n)}
        for n in range(total)
    ]
    chunks = [ops[i : i + 128] for i in range(0, total, 128)]
    async with aiohttp.ClientSession() as session:

        async def worker(mine: list[list[dict[str, object]]]) -> None:
            for chunk in mine:
                async with session.post(f"{url}/v1/batch", json={"ops": chunk}) as resp:
                    assert resp.status == 200, await resp.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker(chunks[k::clients]) for k in range(clients)))
        return total / (time.perf_counter() - started)


async def singles(url: str, total: int, clients: int) -> float:
    async with aiohttp.ClientSession() as session:

        async def worker(mine: range) -> None:
            for n in mine:
                path = f"{url}/v1/services/single/instances/i{n}"
                async with session.put(path, json=body(n)) as resp:
                    assert resp.status in (200, 201), await resp.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker(range(k, total, clients)) for k in range(clients)))
        return total / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instances", type=int, default=20000)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    server = DnsdiscProcess(tmp / "node")
    try:
        server.start()
        batched = asyncio.run(batches(server.http_url, args.instances, args.clients))
        single = asyncio.run(singles(server.http_url, args.instances // 10, args.clients))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"| how | instances/s |\n|---|---:|\n| batches of 128 | {batched:,.0f} |")
    print(f"| one PUT each | {single:,.0f} |\n\nbatches / single: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
