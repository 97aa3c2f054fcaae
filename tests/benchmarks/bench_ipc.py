"""IPC benchmark: a module serving ``GET /hello`` over its stdin/stdout, against floors.

Run: ``.venv/bin/python tests/benchmarks/bench_ipc.py [N] [--rounds R] [--startup-only]
[--no-startup] [--wire reference|flat|both] [--only SUBJECTS] [--context]`` (default
N = 20000 requests per depth).

For each subject a child process is started and driven by a bare driver in this process
that writes ``http_request`` lines and reads response lines, keeping 1 and then 64 requests
in flight. The driver writes **one request line per write** (an orchestrator forwarding
independent HTTP clients does not batch them), and subjects run round by round, interleaved,
each ratio the median of per-round ratios (a shared machine drifts).

Two wires, one table each:

* **reference** (the one that counts): the init offers no extensions, as the reference
  orchestrator's does, so every answer is the stdout wrapper
  ``{"content":{...},"metadata":{"id":<fresh uuid4>,...}}`` (keys sorted, spec/stdio.md);
* **flat**: the init offers ``http_response_op``, answers are the flat op.

Subjects:

* ``asyncio-module``: ``pywatt_asyncio.Module`` with one route (core, router, dispatch);
* ``sync-module``: ``pywatt_sync.Module`` with the same route;
* ``floor-stdlib``: a naive blocking loop writing the same answer shape: ``json.loads`` of
  the line, a dict, ``str(uuid.uuid4())`` for the wrapper's id, ``json.dumps``, one write
  and flush per answer -- what a module written without pywatt does per request;
* ``floor-asyncio``: the same on asyncio pipe streams (one ``transport.write`` per answer).

Context floors, with ``--context`` (throughput only, no target): ``floor-thread`` runs
floor-stdlib's loop in a second thread beside a main thread waiting on a condition (the
blocking module's shape), ``floor-protocol`` is the least an asyncio-loop module does (one
``asyncio.Protocol`` on the stdin pipe, no tasks or streams). They show what depth 1 costs a
module's structure rather than its code (docs/performance.md).

Targets: both modules >= 0.8x the naive stdlib floor at both depths on the reference wire
(the asyncio module is also shown against the asyncio floor, for context); start-up to first
response of the blocking module <= 2x the bare stdlib module's (``sync-module`` vs
``floor-stdlib``).

Start-up (spawn, write init + one ``http_request``, time until the response line; reference
wire) is measured twice, every subject interleaved with the others round by round
(``--startup-rounds``, default 15) and each ratio taken as the median of per-round ratios:

* **compiled** -- as a pip-installed wheel runs: bytecode for everything is cached in a
  temporary ``PYTHONPYCACHEPREFIX`` directory (``compileall`` of the three packages, then one
  unmeasured run per subject caches the stdlib and dependencies there too), so nothing is
  compiled at start-up and no ``__pycache__`` is written into the tree. The ``sync-module``
  ratio here is the one checked against 2.0; the asyncio module is printed against the bare
  floor and against ``floor-asyncio`` (importing asyncio alone costs more than the target
  allows, so that ratio is context).
* **cold** -- for information: ``PYTHONDONTWRITEBYTECODE=1`` and no pycache prefix.
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def init_line(flat: bool) -> bytes:
    """The init line: no extensions on the reference wire, ``http_response_op`` on the flat."""
    blob: dict[str, object] = {
        "orchestrator_api": "http://127.0.0.1:9900",
        "module_id": "bench",
        "env": {},
        "listen": "127.0.0.1:0",
    }
    if flat:
        blob["pywatt_extensions"] = ["http_response_op"]
    return json.dumps(blob).encode() + b"\n"


INIT = init_line(flat=False)

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

# The floors answer in the shape the init asked for: the wrapper unless the init offers
# http_response_op (then the flat op). Body and headers as the module's handler produces them.
FLOOR_STDLIB = textwrap.dedent(
    """
    import json, sys, uuid
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    init = json.loads(inp.readline())
    flat = "http_response_op" in init.get("pywatt_extensions", ())
    source = init.get("module_id") or "unknown_module"
    out.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
              b'[{"path":"/hello","methods":["GET"]}]}\\n')
    out.flush()
    body = list(json.dumps({"message": "hello"}).encode())
    for line in inp:
        req = json.loads(line)
        if req.get("op") != "http_request":
            continue
        rid = req["request_id"]
        content = {"body": body, "headers": {"content-type": "application/json"},
                   "request_id": rid, "status_code": 200}
        if flat:
            resp = {"op": "http_response", **content}
        else:
            resp = {"content": content, "metadata": {
                "id": str(uuid.uuid4()), "properties": {"correlation_id": rid},
                "source": source}}
        out.write(json.dumps(resp, separators=(",", ":")).encode() + b"\\n")
        out.flush()
    """
)

FLOOR_ASYNCIO = textwrap.dedent(
    """
    import asyncio, json, sys, uuid

    async def main():
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
        init = json.loads(await reader.readline())
        flat = "http_response_op" in init.get("pywatt_extensions", ())
        source = init.get("module_id") or "unknown_module"
        transport.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
                        b'[{"path":"/hello","methods":["GET"]}]}\\n')
        body = list(json.dumps({"message": "hello"}).encode())

        async def handle(req):
            rid = req["request_id"]
            content = {"body": body, "headers": {"content-type": "application/json"},
                       "request_id": rid, "status_code": 200}
            if flat:
                resp = {"op": "http_response", **content}
            else:
                resp = {"content": content, "metadata": {
                    "id": str(uuid.uuid4()), "properties": {"correlation_id": rid},
                    "source": source}}
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

# Context floors (``--context``), for what depth 1 costs a module's structure rather than its
# code. floor-thread: floor-stdlib's loop in a second thread while the main thread waits on a
# condition with a 20 ms timeout (the blocking module's reader/monitor shape). floor-protocol:
# the least an asyncio-loop module does -- one Protocol on the stdin pipe, no tasks, no
# streams, one transport.write per answer.
FLOOR_THREAD = (
    "import threading\ndef serve():\n"
    + textwrap.indent(FLOOR_STDLIB, "    ")
    + textwrap.dedent(
        """
        worker = threading.Thread(target=serve, daemon=True)
        worker.start()
        cond = threading.Condition()
        with cond:
            while worker.is_alive():
                cond.wait(0.02)
        """
    )
)

FLOOR_PROTOCOL = textwrap.dedent(
    """
    import asyncio, json, sys, uuid

    class Lines(asyncio.Protocol):
        def __init__(self, transport, done):
            self.out, self.done, self.buf, self.flat, self.source = transport, done, b"", None, ""

        def data_received(self, data):
            *lines, self.buf = (self.buf + data).split(b"\\n")
            for line in lines:
                req = json.loads(line)
                if self.flat is None:  # the init
                    self.flat = "http_response_op" in req.get("pywatt_extensions", ())
                    self.source = req.get("module_id") or "unknown_module"
                    self.out.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
                                   b'[{"path":"/hello","methods":["GET"]}]}\\n')
                    continue
                if req.get("op") != "http_request":
                    continue
                rid = req["request_id"]
                content = {"body": BODY, "headers": {"content-type": "application/json"},
                           "request_id": rid, "status_code": 200}
                if self.flat:
                    resp = {"op": "http_response", **content}
                else:
                    resp = {"content": content, "metadata": {
                        "id": str(uuid.uuid4()), "properties": {"correlation_id": rid},
                        "source": self.source}}
                self.out.write(json.dumps(resp, separators=(",", ":")).encode() + b"\\n")

        def connection_lost(self, exc):
            self.done.set_result(None)

    BODY = list(json.dumps({"message": "hello"}).encode())

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
        await loop.connect_read_pipe(lambda: Lines(transport, done), sys.stdin)
        await done

    asyncio.run(main())
    """
)

#: Context floors (``--context``): name -> (program text, floor it is compared with).
CONTEXT: dict[str, tuple[str, str | None]] = {
    "floor-thread": (FLOOR_THREAD, "floor-stdlib"),
    "floor-protocol": (FLOOR_PROTOCOL, "floor-stdlib"),
}

#: name -> (program text, floor it is compared with or None for a floor)
SUBJECTS: dict[str, tuple[str, str | None]] = {
    "floor-stdlib": (FLOOR_STDLIB, None),
    "floor-asyncio": (FLOOR_ASYNCIO, None),  # context for the asyncio module
    "asyncio-module": (ASYNCIO_MODULE, "floor-stdlib"),
    "sync-module": (SYNC_MODULE, "floor-stdlib"),
}


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

    def handshake(self, init: bytes = INIT) -> None:
        self.write(init)
        while not any(b'"announce"' in line for line in self.read_lines()):
            pass

    def cpu(self) -> float:
        """CPU seconds (user + system) the child has used so far; 0.0 where /proc is missing."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def run(self, n: int, depth: int, start: int) -> float:
        """Drive ``n`` requests with ``depth`` in flight, one write per request line;
        return requests/second."""
        write = self.write
        t0 = time.perf_counter()
        first = min(depth, n)
        for i in range(first):
            write(request_line(start + i))
        sent = first
        done = 0
        while done < n:
            got = sum(1 for x in self.read_lines() if b"request_id" in x)
            done += got
            more = min(got, n - sent)
            for i in range(more):
                write(request_line(start + sent + i))
            sent += more
        elapsed = time.perf_counter() - t0
        return n / elapsed

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
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--wire", choices=("reference", "flat", "both"), default="both")
    parser.add_argument("--startup-rounds", type=int, default=15)
    parser.add_argument("--startup-only", action="store_true")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument(
        "--only", help="comma-separated subjects to run (the floors a module needs are added)"
    )
    parser.add_argument(
        "--context",
        action="store_true",
        help="also run the context floors (floor-thread, floor-protocol; throughput only)",
    )
    args = parser.parse_args()
    if args.context:
        SUBJECTS.update(CONTEXT)
    if args.only:
        keep = set(args.only.split(","))
        keep |= {SUBJECTS[name][1] for name in keep if SUBJECTS[name][1] is not None}
        if "asyncio-module" in keep:
            keep.add("floor-asyncio")
        for name in list(SUBJECTS):
            if name not in keep:
                del SUBJECTS[name]
    ok = True
    if not args.startup_only:
        if args.wire in ("reference", "both"):
            ok &= throughput(args.n, args.rounds, flat=False)
        if args.wire in ("flat", "both"):
            throughput(args.n, args.rounds, flat=True)  # context: not a target
    if not args.no_startup:
        for name in CONTEXT:  # throughput context only
            SUBJECTS.pop(name, None)
        ok &= startup(args.startup_rounds)
    print("all targets met" if ok else "SOME TARGETS MISSED")


def throughput(n: int, rounds: int, flat: bool) -> bool:
    """Run one wire's table; print it and return whether every module ratio meets 0.8.

    Every subject's child is started once; each round runs every subject at both depths,
    the subjects' order rotating; a ratio is the median of the per-round ratios.
    """
    names = list(SUBJECTS)
    drivers = {}
    for name in names:
        d = Driver(spawn(SUBJECTS[name][0]))
        d.handshake(init_line(flat))
        d.run(min(n, 2000), 64, 90_000_000)  # warm-up
        drivers[name] = d
    cpu: dict[tuple[str, int], list[float]] = {
        (name, depth): [] for name in names for depth in (1, 64)
    }
    rps: dict[tuple[str, int], list[float]] = {
        (name, depth): [] for name in names for depth in (1, 64)
    }
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for depth in (1, 64):
                base = (r + 1) * 1_000_000 + depth * 10_000
                d = drivers[name]
                cpu0 = d.cpu()
                rps[(name, depth)].append(d.run(n, depth, base))
                cpu[(name, depth)].append((d.cpu() - cpu0) / n * 1e6)
    for d in drivers.values():
        d.close()
    wire = (
        "flat http_response op (extension)" if flat else "reference wire (wrapper, no extensions)"
    )
    print(f"IPC {wire}: N={n} per depth, {rounds} rounds, one write per request line")
    print(
        "  (req/s and the child's CPU time per request: median of rounds; ratio: median of"
        " per-round req/s ratios, min-max; CPU time is the steadier figure on a busy machine)"
    )
    ok = True
    for name, (_program, floor) in SUBJECTS.items():
        for depth in (1, 64):
            mine = rps[(name, depth)]
            line = (
                f"  {name:16s} depth {depth:3d}: {statistics.median(mine):9.0f} req/s"
                f" {statistics.median(cpu[(name, depth)]):6.1f} us CPU/req"
            )
            if floor is not None:
                ratios = [a / b for a, b in zip(mine, rps[(floor, depth)], strict=True)]
                ratio = statistics.median(ratios)
                if name not in CONTEXT:
                    ok &= ratio >= 0.8
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                target = "context" if name in CONTEXT else "target >= 0.80"
                line += f"   {ratio:5.2f}x {floor} ({spread}, {target})"
                if name == "asyncio-module" and ("floor-asyncio", depth) in rps:
                    same = [a / b for a, b in zip(mine, rps[("floor-asyncio", depth)], strict=True)]
                    line += f", {statistics.median(same):5.2f}x floor-asyncio"
            print(line)
    return ok


if __name__ == "__main__":
    main()
