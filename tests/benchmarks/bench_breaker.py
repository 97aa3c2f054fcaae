"""Benchmark: the cost of one protected call through a closed circuit breaker.

Run: ``.venv/bin/python tests/benchmarks/bench_breaker.py [--n N] [--repeat R]``

For each flavour it times a loop of N calls of a trivial function, R rounds
with every flavour run once per round (so load bursts hit all alike), keeps
each flavour's best (the least disturbed) loop, and prints ns per call.
Overhead = protected - unprotected, measured in the same run. The target is
pywatt's overhead <= half of pybreaker's (ratio <= 0.50).

* sync: ``pywatt_sync.Breaker`` (``call``, decorator, ``guard()``) vs
  ``pybreaker.CircuitBreaker`` (``call``, decorator, ``calling()``).
* async: ``pywatt_asyncio.Breaker`` (``call``, decorator, ``guard()``) vs
  pybreaker's ``calling()`` context manager around the ``await`` (pybreaker
  has no asyncio support; its ``call`` would count the coroutine object as a
  success before it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import pybreaker

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import CircuitBreaker


def round_robin(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every flavour once per round, ``repeat`` rounds, keep each one's best:
    a burst of load on the machine then hits all flavours alike."""
    best = dict.fromkeys(runs, float("inf"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            for name, run in runs.items():
                best[name] = min(best[name], run())
    finally:
        gc.enable()
    return best


def sync_loop(n: int, body: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            body()
        return (time.perf_counter() - t0) / n

    return run


def sync_suite(n: int, repeat: int) -> dict[str, float]:
    def f() -> None:
        return None

    pw = pywatt_sync.Breaker(CircuitBreaker())
    pw_f = pw(f)
    pb = pybreaker.CircuitBreaker()
    pb_f = pb(f)
    pw_call, pb_call, pw_guard, pb_calling = pw.call, pb.call, pw.guard, pb.calling

    def pw_guarded() -> None:
        with pw_guard():
            f()

    def pb_guarded() -> None:
        with pb_calling():
            f()

    bodies: dict[str, Callable[[], object]] = {
        "unprotected f()": f,
        "pywatt  breaker.call(f)": lambda: pw_call(f),
        "pywatt  @breaker": pw_f,
        "pywatt  with guard()": pw_guarded,
        "pybreaker cb.call(f)": lambda: pb_call(f),
        "pybreaker @cb": pb_f,
        "pybreaker with calling()": pb_guarded,
    }
    # the lambdas add one Python call frame; time a bare lambda for a fair baseline
    bodies["unprotected lambda: f()"] = lambda: f()
    return round_robin(repeat, {name: sync_loop(n, body) for name, body in bodies.items()})


def async_suite(n: int, repeat: int) -> dict[str, float]:
    async def af() -> None:
        return None

    pw = pywatt_asyncio.Breaker(CircuitBreaker())
    pw_af = pw(af)
    pb = pybreaker.CircuitBreaker()
    pw_call, pw_guard, pb_calling = pw.call, pw.guard, pb.calling

    async def timed(body: Callable[[], Awaitable[object]]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await body()
        return (time.perf_counter() - t0) / n

    async def pw_guarded() -> None:
        async with pw_guard():
            await af()

    async def pb_guarded() -> None:
        with pb_calling():
            await af()

    async def unprotected() -> None:
        await af()

    async def pw_called() -> None:
        await pw_call(af)

    async def pw_decorated() -> None:
        await pw_af()

    bodies: dict[str, Callable[[], Awaitable[object]]] = {
        "unprotected await af()": unprotected,
        "pywatt  await breaker.call(af)": pw_called,
        "pywatt  @breaker": pw_decorated,
        "pywatt  async with guard()": pw_guarded,
        "pybreaker with calling(): await": pb_guarded,
    }

    async def main() -> dict[str, float]:
        best = dict.fromkeys(bodies, float("inf"))
        gc.collect()
        gc.disable()
        try:
            for _ in range(repeat):
                for name, body in bodies.items():
                    best[name] = min(best[name], await timed(body))
        finally:
            gc.enable()
        return best

    return asyncio.run(main())


def report(title: str, results: dict[str, float], base: str, ours: str, theirs: str) -> float:
    print(f"\n{title}")
    b = results[base]
    for name, t in results.items():
        print(f"  {name:36s} {t * 1e9:8.1f} ns/call   overhead {(t - b) * 1e9:8.1f} ns")
    ours_ov = results[ours] - b
    theirs_ov = results[theirs] - b
    ratio = ours_ov / theirs_ov
    print(
        f"  => pywatt overhead {ours_ov * 1e9:.1f} ns vs pybreaker {theirs_ov * 1e9:.1f} ns: "
        f"ratio {ratio:.2f} (target <= 0.50) {'OK' if ratio <= 0.5 else 'MISSED'}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="calls per timed loop")
    parser.add_argument("--repeat", type=int, default=7, help="timed loops per flavour (best kept)")
    args = parser.parse_args()
    sync = sync_suite(args.n, args.repeat)
    report(
        "sync, closed state (breaker.call vs cb.call; lambda baseline)",
        sync,
        "unprotected lambda: f()",
        "pywatt  breaker.call(f)",
        "pybreaker cb.call(f)",
    )
    report(
        "sync, closed state (decorators; direct-call baseline)",
        sync,
        "unprotected f()",
        "pywatt  @breaker",
        "pybreaker @cb",
    )
    report(
        "sync, closed state (context managers)",
        sync,
        "unprotected f()",
        "pywatt  with guard()",
        "pybreaker with calling()",
    )
    asy = async_suite(args.n // 2, args.repeat)
    report(
        "async, closed state (await breaker.call vs pybreaker calling())",
        asy,
        "unprotected await af()",
        "pywatt  await breaker.call(af)",
        "pybreaker with calling(): await",
    )
    report(
        "async, closed state (decorator vs pybreaker calling())",
        asy,
        "unprotected await af()",
        "pywatt  @breaker",
        "pybreaker with calling(): await",
    )


if __name__ == "__main__":
    main()
