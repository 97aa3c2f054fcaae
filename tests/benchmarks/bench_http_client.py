"""HTTP client benchmark: requests/second over keep-alive, pywatt clients vs httpx.

    python tests/benchmarks/bench_http_client.py --url http://127.0.0.1:8080 [--duration 5]

Without ``--url`` a pywatt-asyncio server is started in a subprocess (see
``bench_http.py``). Each contender runs for ``duration`` seconds in this
process: sequential requests on one keep-alive connection (sync clients), and
``--concurrency`` tasks sharing one client (async clients).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]

from pywatt_asyncio import AsyncClient  # noqa: E402
from pywatt_sync import Client  # noqa: E402


def _sync_loop(call: Callable[[], object], duration: float) -> float:
    call()  # warm the connection
    end = time.perf_counter() + duration
    n = 0
    begin = time.perf_counter()
    while time.perf_counter() < end:
        call()
        n += 1
    return n / (time.perf_counter() - begin)


async def _async_loop(
    call: Callable[[], Awaitable[object]], duration: float, concurrency: int
) -> float:
    await call()
    end = time.perf_counter() + duration
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < end:
            await call()
            count += 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - begin)


def run_client_bench(base_url: str, *, duration: float = 5.0, concurrency: int = 8) -> None:
    """Print requests/second for each client against ``base_url`` + ``/hello``."""
    url = base_url + "/hello"
    results: dict[str, float] = {}
    for rnd in range(2):  # alternate, keep the better of two runs per contender
        with Client(base_url) as ours:
            rps = _sync_loop(lambda: ours.get("/hello").send(), duration)
            results["pywatt_sync.Client"] = max(results.get("pywatt_sync.Client", 0), rps)
        with httpx.Client() as hx:
            rps = _sync_loop(lambda: hx.get(url), duration)
            results["httpx.Client"] = max(results.get("httpx.Client", 0), rps)

        async def asyncs() -> None:
            async with AsyncClient(base_url, max_per_host=concurrency) as ac:
                rps = await _async_loop(lambda: ac.get("/hello").send(), duration, concurrency)
                key = f"pywatt_asyncio.AsyncClient x{concurrency}"
                results[key] = max(results.get(key, 0), rps)
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(limits=limits) as hx:
                rps = await _async_loop(lambda: hx.get(url), duration, concurrency)
                key = f"httpx.AsyncClient x{concurrency}"
                results[key] = max(results.get(key, 0), rps)

        asyncio.run(asyncs())
        print(f"  round {rnd + 1} done", flush=True)
    for name, rps in results.items():
        print(f"  {name:34s} {rps:9.0f} req/s")
    sync_ratio = results["pywatt_sync.Client"] / results["httpx.Client"]
    key_a, key_h = (
        f"pywatt_asyncio.AsyncClient x{concurrency}",
        f"httpx.AsyncClient x{concurrency}",
    )
    print(f"  sync client / httpx.Client = {sync_ratio:.2f}")
    print(f"  async client / httpx.AsyncClient = {results[key_a] / results[key_h]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.url:
        run_client_bench(args.url, duration=args.duration, concurrency=args.concurrency)
        return
    from bench_http import free_port, launch, stop

    port = free_port()
    proc = launch("pywatt-asyncio", port)
    try:
        run_client_bench(
            f"http://127.0.0.1:{port}", duration=args.duration, concurrency=args.concurrency
        )
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
