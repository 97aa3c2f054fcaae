"""IPC benchmark: a module serving ``GET /hello`` over its stdin/stdout, against floors.

Run: ``.venv/bin/python tests/benchmarks/bench_ipc.py [N] [--startup-only]`` (default N = 20000).

For each subject a child process is started and driven by a bare driver in this process
that writes ``http_request`` lines and reads response lines, keeping 1 and then 64 requests
in flight. Subjects:

* ``asyncio-module``: ``pywatt_asyncio.Module`` with one route (the SDK's full path: core,
  router, dispatch, stdout guard);
* ``floor-stdlib``: a minimal blocking loop (``readline`` -> ``json.loads`` -> ``json.dumps``
  -> ``write``), the least a Python module must do per request;
* ``floor-asyncio``: the same loop on asyncio pipe streams.

Targets: each driver >= 0.8x its floor at both depths (asyncio module vs asyncio floor);
start-up to first response <= 2x the bare stdlib module's (``sync-module`` vs ``floor-stdlib``).

Start-up (spawn, write init + one ``http_request``, time until the response line) is measured
twice, every subject interleaved with the others round by round (``--startup-rounds``, default
15) and each ratio taken as the median of per-round ratios (a shared machine drifts):

* **compiled** -- as a pip-installed wheel runs: bytecode for everything is cached in a
  temporary ``PYTHONPYCACHEPREFIX`` directory (``compileall`` of the three packages, then one
  unmeasured run per subject caches the stdlib and dependencies there too), so nothing is
  compiled at start-up and no ``__pycache__`` is written into the tree. The ``sync-module``
  ratio here is the one checked against 2.0; the asyncio module is printed against the bare
  floor and against ``floor-asyncio`` (importing asyncio alone costs more than the target
  allows, so that ratio is context).
* **cold** -- for information: ``PYTHONDONTWRITEBYTECODE=1`` and no pycache prefix, so the
  project's ``.py`` files are compiled on every start unless the tree holds ``__pycache__``
  directories already (this environment never writes them).

``--startup-only`` skips the throughput part.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INIT = (
    json.dumps(
        {
            "orchestrator_api": "http://127.0.0.1:9900",
            "module_id": "bench",
            "env": {},
            "listen": "127.0.0.1:0",
            "pywatt_extensions": ["heartbeat_ack", "http_response_op"],
        }
    ).encode()
    + b"\n"
)

ASYNCIO_MODULE = textwrap.dedent(
    """
    from pywatt_asyncio import Module
    app = Module()

    @app.get("/hello")
    async def hello(request):
        return {"message": "hello"}

    app.run()
    """
)

FLOOR_STDLIB = textwrap.dedent(
    """
    import json, sys
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    inp.readline()
    out.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
              b'[{"path":"/hello","methods":["GET"]}]}\\n')
    out.flush()
    body = list(json.dumps({"message": "hello"}).encode())
    for line in inp:
        req = json.loads(line)
        if req.get("op") != "http_request":
            continue
        resp = {"op": "http_response", "request_id": req["request_id"], "status_code": 200,
                "headers": {"content-type": "application/json"}, "body": body}
        out.write(json.dumps(resp, separators=(",", ":")).encode() + b"\\n")
        out.flush()
    """
)

FLOOR_ASYNCIO = textwrap.dedent(
    """
    import asyncio, json, sys

    async def main():
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
        await reader.readline()
        transport.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
                        b'[{"path":"/hello","methods":["GET"]}]}\\n')
        body = list(json.dumps({"message": "hello"}).encode())

        async def handle(req):
            resp = {"op": "http_response", "request_id": req["request_id"], "status_code": 200,
                    "headers": {"content-type": "application/json"}, "body": body}
            transport.write(json.dumps(resp, separators=(",", ":")).encode() + b"\\n")

        tasks = set()
        while line := await reader.readline():
            req = json.loads(line)
            if req.get("op") == "http_request":
                t = asyncio.ensure_future(handle(req))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

    asyncio.run(main())
    """
)

SYNC_MODULE = textwrap.dedent(
    """
    from pywatt_sync import Module
    app = Module()

    @app.get("/hello")
    def hello(request):
        return {"message": "hello"}

    app.run()
    """
)

#: name -> (program text, floor it is compared with or None for a floor)
SUBJECTS: dict[str, tuple[str, str | None]] = {
    "floor-stdlib": (FLOOR_STDLIB, None),
    "floor-asyncio": (FLOOR_ASYNCIO, None),
    "asyncio-module": (ASYNCIO_MODULE, "floor-asyncio"),
    "sync-module": (SYNC_MODULE, "floor-stdlib"),
}


#: Measurements per (subject, depth); the best is reported.
REPEATS = 3


def request_line(i: int) -> bytes:
    return (
        b'{"op":"http_request","request_id":"r%d","method":"GET","uri":"/hello",'
        b'"headers":{"host":"bench"},"body":null}\n' % i
    )


def child_env(**extra: str) -> dict[str, str]:
    """The children's environment: this tree first, quiet logs, no ``__pycache__`` written."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYWATT_LOG_LEVEL="WARNING")
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def spawn(program: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env() if env is None else dict(env),
        cwd=ROOT,  # "-c" puts the working directory first on sys.path: measure this tree
        bufsize=0,
    )


class Driver:
    """Writes request lines and counts response lines on one child's pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.rfd, selectors.EVENT_READ)
        self.buf = b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def read_lines(self) -> list[bytes]:
        self.sel.select(30)
        chunk = os.read(self.rfd, 1 << 20)
        if not chunk:
            raise RuntimeError("module closed its stdout")
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    def handshake(self) -> None:
        self.write(INIT)
        while not any(b'"announce"' in line for line in self.read_lines()):
            pass

    def run(self, n: int, depth: int, start: int) -> float:
        """Drive ``n`` requests with ``depth`` in flight; return requests/second."""
        sent = done = 0
        t0 = time.perf_counter()
        first = min(depth, n)
        self.write(b"".join(request_line(start + i) for i in range(first)))
        sent = first
        while done < n:
            lines = [x for x in self.read_lines() if b"request_id" in x]
            done += len(lines)
            more = min(len(lines), n - sent)
            if more:
                self.write(b"".join(request_line(start + sent + i) for i in range(more)))
                sent += more
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def startup_once(program: str, env: Mapping[str, str]) -> float:
    """Seconds from spawn to the first response line."""
    t0 = time.perf_counter()
    d = Driver(spawn(program, env))
    d.write(INIT + request_line(0))
    while not any(b"request_id" in x for x in d.read_lines()):
        pass
    elapsed = time.perf_counter() - t0
    d.close()
    return elapsed


def startup_rounds(env: Mapping[str, str], rounds: int) -> dict[str, list[float]]:
    """Start every subject once per round, in a rotating order; per-subject times by round."""
    names = list(SUBJECTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(startup_once(SUBJECTS[name][0], env))
    return times


def compiled_env(cache: str) -> dict[str, str]:
    """A child environment whose bytecode lives in ``cache`` (filled by :func:`fill_cache`)."""
    env = child_env(PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def fill_cache(cache: str) -> None:
    """Compile the packages into ``cache``, then run each subject once (caches what it imports).

    With a pycache prefix Python looks for every module's bytecode there, the stdlib's too,
    so the unmeasured runs matter as much as ``compileall``; nothing is written to the tree.
    """
    env = compiled_env(cache)
    packages = [str(ROOT / p) for p in ("pywatt_proto", "pywatt_sync", "pywatt_asyncio")]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *packages],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for program, _floor in SUBJECTS.values():
        startup_once(program, env)


def ratio_median(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of ``name``'s time / ``base``'s time in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))


def report_startup(label: str, times: dict[str, list[float]], check: bool) -> bool:
    """Print one mode's figures; return False if ``check`` and the sync module misses 2.0."""
    print(f"start-up to first response, {label}: median (min-max) of {len(times['floor-stdlib'])}")
    ok = True
    for name, (_program, _floor) in SUBJECTS.items():
        ts = times[name]
        line = (
            f"  {name:14s} {statistics.median(ts) * 1000:6.1f} ms "
            f"({min(ts) * 1000:5.1f}-{max(ts) * 1000:5.1f})"
        )
        if name != "floor-stdlib":
            line += f"   {ratio_median(times, name, 'floor-stdlib'):5.2f}x floor-stdlib"
        if name == "sync-module" and check:
            line += " (target <= 2.0)"
            ok = ratio_median(times, name, "floor-stdlib") <= 2.0
        if name == "asyncio-module":
            line += f", {ratio_median(times, name, 'floor-asyncio'):5.2f}x floor-asyncio (context)"
        if name == "floor-asyncio":
            line += " (context: importing asyncio alone)"
        print(line)
    return ok


def startup(rounds: int) -> bool:
    """Measure start-up compiled (checked) and cold (information); return the verdict."""
    cache = tempfile.mkdtemp(prefix="bench_ipc_pycache_")
    try:
        fill_cache(cache)
        compiled = startup_rounds(compiled_env(cache), rounds)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    ok = report_startup("compiled (.pyc cached, as installed)", compiled, check=True)
    cold = startup_rounds(child_env(), rounds)
    report_startup("cold (no .pyc for the project)", cold, check=False)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("n", nargs="?", type=int, default=20000, help="requests per depth")
    parser.add_argument("--startup-rounds", type=int, default=15)
    parser.add_argument("--startup-only", action="store_true")
    args = parser.parse_args()
    n = args.n
    ok = True
    if not args.startup_only:
        ok = throughput(n)
    ok &= startup(args.startup_rounds)
    print("all targets met" if ok else "SOME TARGETS MISSED")


def throughput(n: int) -> bool:
    """Run the throughput part; print it and return whether every ratio meets 0.8."""
    results: dict[tuple[str, int], float] = {}
    for name, (program, _floor) in SUBJECTS.items():
        d = Driver(spawn(program))
        d.handshake()
        d.run(min(n, 2000), 64, 10_000_000)  # warm-up
        for depth in (1, 64):
            # best of REPEATS: the machine is shared, and the best run is the least disturbed
            results[(name, depth)] = max(
                d.run(n, depth, depth * 1_000_000 + k * 100_000) for k in range(REPEATS)
            )
        d.close()
    print(f"IPC benchmark, N={n} requests per depth, best of {REPEATS} (requests/second)")
    ok = True
    for name, (_program, floor) in SUBJECTS.items():
        for depth in (1, 64):
            rps = results[(name, depth)]
            line = f"  {name:16s} depth {depth:3d}: {rps:10.0f} req/s"
            if floor is not None:
                ratio = rps / results[(floor, depth)]
                ok &= ratio >= 0.8
                line += f"   {ratio:5.2f}x {floor} (target >= 0.80)"
            print(line)
    return ok


if __name__ == "__main__":
    main()
