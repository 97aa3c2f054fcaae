"""Module-to-module call benchmark: calls/s between two modules, next to HTTP over IPC.

Run: ``.venv/bin/python tests/benchmarks/bench_calls.py [N] [--rounds R]`` (default N = 5000,
R = 3).

Two module processes run under this process as their orchestrator (``ModuleProcess`` joined
by ``ModuleNetwork``, what ``pywatt run`` uses): a *target* serving ``POST /echo`` and a
*caller* whose ``POST /burst`` makes N calls ``call_module(target, "/echo", {"i": i})`` keeping
``depth`` of them in flight, and returns the time it took, measured inside the caller.

Baseline, in the same run and interleaved round by round: the orchestrator sends the same N
``POST /echo`` requests straight to the target over IPC (``ModuleProcess.request``), keeping
``depth`` in flight -- the HTTP-over-IPC path a call is built on. A call crosses two stdio
links each way (caller -> orchestrator -> target and back), so a ratio near 0.5 means the
call layer adds little beyond the second hop.

Pairs: asyncio caller -> asyncio target, and blocking caller (``submit_call``) -> blocking
target. Depths 1 and 64. Printed: per-round figures, then the median calls/s, the median
requests/s of the baseline, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pywatt_asyncio._network import ModuleNetwork  # noqa: E402
from pywatt_asyncio._orchestrator import ModuleProcess, child_env  # noqa: E402

ASYNC_TARGET = textwrap.dedent(
    """
    from pywatt_asyncio import Module
    app = Module()

    @app.post("/echo")
    async def echo(request):
        return request.json()

    app.run()
    """
)

ASYNC_CALLER = textwrap.dedent(
    """
    import asyncio, time
    from pywatt_asyncio import Module
    app = Module()

    @app.post("/burst")
    async def burst(request):
        a = request.json()
        n, depth, target = a["n"], a["depth"], a["target"]
        counter = iter(range(n))
        bad = 0

        async def worker():
            nonlocal bad
            for i in counter:
                if (await app.call_module(target, "/echo", {"i": i})) != {"i": i}:
                    bad += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(depth)))
        return {"seconds": time.perf_counter() - t0, "mismatch": bad}

    app.run()
    """
)

SYNC_TARGET = textwrap.dedent(
    """
    from pywatt_sync import Module
    app = Module()

    @app.post("/echo")
    def echo(request):
        return request.json()

    app.run()
    """
)

SYNC_CALLER = textwrap.dedent(
    """
    import time
    from concurrent.futures import FIRST_COMPLETED, wait
    from pywatt_sync import Module
    app = Module()

    @app.post("/burst")
    def burst(request):
        a = request.json()
        n, depth, target = a["n"], a["depth"], a["target"]
        bad = 0
        pending = {}
        t0 = time.perf_counter()
        i = 0
        while i < n or pending:
            while i < n and len(pending) < depth:
                pending[app.submit_call(target, "/echo", {"i": i})] = i
                i += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                if f.result() != {"i": pending.pop(f)}:
                    bad += 1
        return {"seconds": time.perf_counter() - t0, "mismatch": bad}

    app.run()
    """
)

PAIRS = {"asyncio": (ASYNC_CALLER, ASYNC_TARGET), "blocking": (SYNC_CALLER, SYNC_TARGET)}


async def _post(proc: ModuleProcess, path: str, body: object) -> object:
    resp = await proc.request(
        "POST", path, {"content-type": "application/json"}, json.dumps(body).encode()
    )
    if resp.status_code != 200:
        raise RuntimeError(f"{path}: {resp.status_code} {resp.body!r}")
    return json.loads(resp.body or b"null")


async def _calls(caller: ModuleProcess, n: int, depth: int) -> float:
    result = await _post(caller, "/burst", {"n": n, "depth": depth, "target": "target"})
    assert isinstance(result, dict)
    if result["mismatch"]:
        raise RuntimeError(f"{result['mismatch']} mismatched replies")
    return n / float(result["seconds"])


async def _ipc(target: ModuleProcess, n: int, depth: int) -> float:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            if await _post(target, "/echo", {"i": i}) != {"i": i}:
                raise RuntimeError("mismatched reply")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(depth)))
    return n / (time.perf_counter() - t0)


async def run_pair(name: str, n: int, rounds: int, tmp: Path) -> None:
    caller_src, target_src = PAIRS[name]
    network = ModuleNetwork()
    for mid, src in (("caller", caller_src), ("target", target_src)):
        path = tmp / f"{name}_{mid}.py"
        path.write_text(src)
        network.add(
            ModuleProcess(
                [sys.executable, str(path)],
                module_id=mid,
                env=child_env(),
                heartbeat_interval=None,
                request_timeout=600.0,
            )
        )
    await asyncio.gather(*(m.start() for m in network.modules.values()))
    caller, target = network.modules["caller"], network.modules["target"]
    try:
        await _calls(caller, 200, 8)  # warm-up (imports, first calls)
        await _ipc(target, 200, 8)
        for depth in (1, 64):
            calls, ipc, ratios = [], [], []
            for r in range(rounds):
                c = await _calls(caller, n, depth)
                h = await _ipc(target, n, depth)
                calls.append(c)
                ipc.append(h)
                ratios.append(c / h)
                print(
                    f"  {name:8} depth {depth:2} round {r + 1}: calls {c:8.0f}/s   "
                    f"http-over-ipc {h:8.0f}/s   ratio {c / h:.2f}"
                )
            print(
                f"{name:8} depth {depth:2}: calls {statistics.median(calls):8.0f}/s   "
                f"http-over-ipc {statistics.median(ipc):8.0f}/s   "
                f"median ratio {statistics.median(ratios):.2f}"
            )
    finally:
        await asyncio.gather(*(m.shutdown() for m in network.modules.values()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", default="asyncio,blocking")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.pairs.split(","):
            await run_pair(name, args.n, args.rounds, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
