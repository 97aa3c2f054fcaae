"""IPC benchmark, blocking half: ``pywatt_sync.Module`` over stdin/stdout vs a stdlib floor.

Run as a script (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_ipc_sync.py [--requests N] [--rounds R]

Each contender is a child process speaking the stdio protocol; this process is
the orchestrator. It sends the init line, waits for the announce, then pushes
N ``http_request`` lines for ``GET /hello`` keeping exactly D requests in flight
(D = 1 and 64) and times until the N-th response line arrives.

Contenders, alternated round by round so machine load hits both alike:

* ``pywatt-sync``  -- ``pywatt_sync.Module`` with one ``@app.get("/hello")``
  handler returning a dict: the reader thread, the core, the router, the
  worker pool, the ordered writer.
* ``pywatt-asyncio`` (``--with-asyncio``, for context) -- the same module on
  ``pywatt_asyncio.Module`` with an ``async def`` handler.
* ``stdlib-floor`` -- a single-threaded loop with no pywatt code: read a line,
  ``json.loads``, look the path up in a dict, ``json.dumps`` a flat
  ``http_response``, write the line. No validation, no limits, no
  concurrency: the least work that still answers the protocol.

Both answer with the flat ``http_response`` op (the init offers the
``http_response_op`` extension) and the same JSON body. Prints requests/second
(best round) and the ratio pywatt / floor per depth; the target is >= 0.8.

To show where a gap comes from, it also times in this process, without pipes
or threads: (a) the pure per-request work pywatt does (core parse, router
dispatch, core encode: what any driver must do) and (b) the floor's json work,
and (c) a bare two-thread handoff (reader -> worker -> back), the cost the
blocking driver's architecture adds on the critical path at depth 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

INIT = {
    "orchestrator_api": "http://127.0.0.1:9900",
    "module_id": "bench",
    "env": {},
    "listen": "127.0.0.1:4102",
    "pywatt_extensions": ["http_response_op", "heartbeat_ack"],
}

PYWATT_SYNC = """
from pywatt_sync import Module

app = Module()


@app.get("/hello")
def hello(request):
    return {"message": "hello"}


app.run()
"""

PYWATT_ASYNCIO = """
from pywatt_asyncio import Module

app = Module()


@app.get("/hello")
async def hello(request):
    return {"message": "hello"}


app.run()
"""

STDLIB_FLOOR = """
import json
import sys

BODY = list(json.dumps({"message": "hello"}, separators=(",", ":")).encode())
ROUTES = {("GET", "/hello"): BODY}
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdin.readline()  # init
stdout.write(b'{"op":"announce","listen":"127.0.0.1:4102","endpoints":'
             b'[{"path":"/hello","methods":["GET"]}]}\\n')
stdout.flush()
for line in stdin:
    msg = json.loads(line)
    if msg.get("op") != "http_request":
        continue
    body = ROUTES.get((msg["method"], msg["uri"].partition("?")[0]))
    out = {"op": "http_response", "request_id": msg["request_id"],
           "status_code": 200 if body is not None else 404,
           "headers": {"content-type": "application/json"}, "body": body}
    stdout.write(json.dumps(out, separators=(",", ":")).encode() + b"\\n")
    stdout.flush()
"""


def request_lines(n: int) -> list[bytes]:
    """Return N encoded ``http_request`` lines with distinct ids."""
    headers = {"host": "127.0.0.1:8080", "user-agent": "bench", "accept": "*/*"}
    return [
        json.dumps(
            {
                "op": "http_request",
                "request_id": f"req-{i:08d}",
                "method": "GET",
                "uri": "/hello",
                "headers": headers,
                "body": None,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for i in range(n)
    ]


def run_once(script: Path, lines: list[bytes], depth: int) -> float:
    """Start the module, drive ``lines`` at ``depth`` in flight; return requests/second."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYWATT_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    stdin.write(json.dumps(INIT).encode() + b"\n")
    stdin.flush()
    announce = stdout.readline()
    assert b'"announce"' in announce, announce
    n = len(lines)
    slots = threading.Semaphore(depth)
    errors: list[bytes] = []

    def read_responses() -> None:
        for _ in range(n):
            line = stdout.readline()
            if b'"status_code":200' not in line:
                errors.append(line)
            slots.release()

    reader = threading.Thread(target=read_responses)
    start = time.perf_counter()
    reader.start()
    for line in lines:
        slots.acquire()
        stdin.write(line)
        stdin.flush()
    reader.join()
    elapsed = time.perf_counter() - start
    stdin.close()
    proc.wait(30)
    if errors:
        raise RuntimeError(f"{len(errors)} bad responses, first: {errors[0][:200]!r}")
    return n / elapsed


def in_process_costs(n: int) -> tuple[float, float, float]:
    """Return microseconds per request: (pywatt core+router, floor json work, thread handoff)."""
    import queue

    from pywatt_proto import NEED_DATA, ModuleConnection, RequestReceived, Router
    from pywatt_sync import dispatch

    router = Router()
    router.add_route("/hello", lambda request: {"message": "hello"}, ("GET",))
    conn = ModuleConnection(endpoints=router.announce_endpoints())
    conn.receive_data(json.dumps(INIT).encode() + b"\n", 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()
    lines = request_lines(n)
    start = time.perf_counter()
    for line in lines:
        conn.receive_data(line, 1.0)
        event = conn.next_event()
        assert isinstance(event, RequestReceived)
        resp = dispatch(router, event.to_router_request(), time.monotonic)
        conn.send_response(event.request_id, resp.status, resp.headers, resp.body)
        conn.data_to_send()
    core = (time.perf_counter() - start) / n * 1e6
    body = list(json.dumps({"message": "hello"}, separators=(",", ":")).encode())
    start = time.perf_counter()
    for line in lines:
        msg = json.loads(line)
        out = {
            "op": "http_response",
            "request_id": msg["request_id"],
            "status_code": 200,
            "headers": {"content-type": "application/json"},
            "body": body,
        }
        json.dumps(out, separators=(",", ":")).encode()
    floor = (time.perf_counter() - start) / n * 1e6
    to_worker: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def worker() -> None:
        for _ in range(n):
            back.put(to_worker.get())

    thread = threading.Thread(target=worker)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        to_worker.put(i)
        back.get()
    handoff = (time.perf_counter() - start) / n * 1e6
    thread.join()
    return core, floor, handoff


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (best is kept)")
    parser.add_argument(
        "--with-asyncio", action="store_true", help="also run pywatt_asyncio.Module (context)"
    )
    args = parser.parse_args()
    lines = request_lines(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {
            "pywatt-sync": Path(tmp) / "pywatt_sync_module.py",
            "stdlib-floor": Path(tmp) / "stdlib_floor.py",
        }
        scripts["pywatt-sync"].write_text(textwrap.dedent(PYWATT_SYNC))
        scripts["stdlib-floor"].write_text(textwrap.dedent(STDLIB_FLOOR))
        if args.with_asyncio:
            scripts["pywatt-asyncio"] = Path(tmp) / "pywatt_asyncio_module.py"
            scripts["pywatt-asyncio"].write_text(textwrap.dedent(PYWATT_ASYNCIO))
        print(f"{args.requests} requests per run, best of {args.rounds} rounds, GET /hello")
        print(f"{'depth':>5}  {'contender':<14} {'req/s':>10}")
        for depth in (1, 64):
            best = {name: 0.0 for name in scripts}
            for _ in range(args.rounds):
                for name, script in scripts.items():
                    best[name] = max(best[name], run_once(script, lines, depth))
            for name in scripts:
                print(f"{depth:>5}  {name:<14} {best[name]:>10.0f}")
            ratio = best["pywatt-sync"] / best["stdlib-floor"]
            verdict = "ok" if ratio >= 0.8 else "BELOW TARGET"
            print(
                f"{depth:>5}  ratio pywatt-sync / floor = {ratio:.2f} (target >= 0.80: {verdict})"
            )
    core, floor, handoff = in_process_costs(min(args.requests, 20000))
    print("in-process cost per request (no pipes, no threads):")
    print(f"  pywatt core parse + router dispatch + core encode: {core:6.1f} us")
    print(f"  floor json.loads + dict lookup + json.dumps:       {floor:6.1f} us")
    print(f"  bare thread round trip (reader -> worker -> back): {handoff:6.1f} us")


if __name__ == "__main__":
    main()
