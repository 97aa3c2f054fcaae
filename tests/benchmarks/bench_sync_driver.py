"""What the blocking driver costs per request above the work any driver must do.

Run: ``.venv/bin/python tests/benchmarks/bench_sync_driver.py [N] [--rounds R]``

In one process, without threads or pipes (answers go to /dev/null), one ``GET /hello``
request line at a time (depth 1), each round times:

* **baseline** -- the core and the router alone: ``receive_data``, ``next_event`` until
  ``NEED_DATA``, ``dispatch``, ``send_response``, one ``os.write`` of ``data_to_send()``;
* **driver** -- the same requests through the blocking module's session and its
  ``Pool`` decisions, step by step as a pool thread makes them (READ -> take, RUN -> run,
  FLUSH -> flush through the ordered output), with the scheduler's lock taken and given back
  as the thread does.

Prints both in microseconds per request and their difference (the driver's overhead). The
reference wire (no extensions: the stdout wrapper with a fresh uuid) is used for both.

``--opcodes`` also counts the bytecode instructions each runs per request (``sys.settrace``
with opcode events, 1,000 requests), by function: a figure that does not move with the load of
a shared machine, for comparing two versions of the driver (it weighs every instruction the
same; the timings say what they cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pywatt_proto import NEED_DATA, ModuleConnection
from pywatt_sync import Module, dispatch
from pywatt_sync._module import _Session
from pywatt_sync._stdio import BlockingWriter, OutputQueue

INIT = (
    json.dumps(
        {"orchestrator_api": "x", "module_id": "bench", "env": {}, "listen": "127.0.0.1:1"}
    ).encode()
    + b"\n"
)

app = Module()


@app.get("/hello")
def hello(request: object) -> dict[str, str]:
    return {"message": "hello"}


def request_line(i: int) -> bytes:
    return (
        b'{"op":"http_request","request_id":"r%d","method":"GET","uri":"/hello",'
        b'"headers":{"host":"bench"},"body":null}\n' % i
    )


def baseline(lines: list[bytes], fd: int) -> float:
    conn = ModuleConnection(endpoints=app.endpoints)
    conn.receive_data(INIT, 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()
    t0 = time.perf_counter()
    for line in lines:
        conn.receive_data(line, time.monotonic())
        event = conn.next_event()
        while conn.next_event() is not NEED_DATA:
            pass
        response = dispatch(app.router, event.to_router_request(), time.monotonic)  # type: ignore[union-attr]
        conn.send_response(event.request_id, response.status, response.headers, response.body)  # type: ignore[union-attr]
        os.write(fd, conn.data_to_send())
    return (time.perf_counter() - t0) / len(lines) * 1e6


def driver(lines: list[bytes], fd: int) -> float:
    conn = ModuleConnection(endpoints=app.endpoints)
    session = _Session(app, conn, OutputQueue(BlockingWriter(fd, lambda exc: None)), 0)
    pool, lock = session.pool, session.lock
    lock.acquire()
    session.take(INIT, pool.ready, pool.room(), False)
    session.flush()  # the announce; releases the lock
    lock.acquire()
    t0 = time.perf_counter()
    for line in lines:
        pool.next()  # READ
        lock.release()
        lock.acquire()
        more = session.take(line, pool.ready, pool.room(), pool.all_busy())
        pool.taken(more, False)
        _action, job = pool.next()  # RUN
        lock.release()
        pool.job_done(session.run(job))  # run() returns holding the lock
        pool.next()  # FLUSH
        session.flush()  # releases the lock
        lock.acquire()
        pool.flushed()
    elapsed = time.perf_counter() - t0
    lock.release()
    return elapsed / len(lines) * 1e6


def count_opcodes(
    run: Callable[[list[bytes], int], float], lines: list[bytes], fd: int
) -> Counter[str]:
    """Bytecode instructions ``run`` executes for ``lines``, by ``file:function``."""
    counts: Counter[str] = Counter()

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        run(lines, fd)
    finally:
        sys.settrace(None)
    return counts


def report_opcodes(fd: int, n: int = 1000) -> None:
    """Print the instructions per request of both, and the driver's by function (after one
    untraced run of each: lazy imports and first-use set-up are not counted)."""
    baseline([request_line(-1 - i) for i in range(20)], fd)
    driver([request_line(-1 - i) for i in range(20)], fd)
    base = count_opcodes(baseline, [request_line(-1 - i) for i in range(n)], fd)
    drv = count_opcodes(driver, [request_line(-1 - n - i) for i in range(n)], fd)
    b, d = sum(base.values()) / n, sum(drv.values()) / n
    print(f"bytecode instructions per request ({n} requests)")
    print(f"  baseline: {b:7.1f}   driver: {d:7.1f}   overhead {d - b:6.1f}")
    extra = {name: (count - base.get(name, 0)) / n for name, count in drv.items()}
    for name, per in sorted(extra.items(), key=lambda kv: -kv[1]):
        if per >= 1.0 and not name.startswith("bench_sync_driver"):
            print(f"    {per:6.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("n", nargs="?", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--opcodes", action="store_true", help="also count instructions")
    args = parser.parse_args()
    fd = os.open(os.devnull, os.O_WRONLY)
    if args.opcodes:
        report_opcodes(fd)
    base: list[float] = []
    drv: list[float] = []
    for r in range(args.rounds):
        start = r * 2 * args.n
        base.append(baseline([request_line(start + i) for i in range(args.n)], fd))
        drv.append(driver([request_line(start + args.n + i) for i in range(args.n)], fd))
    b, d = statistics.median(base), statistics.median(drv)
    print(f"depth 1, {args.n} requests x {args.rounds} rounds (median us/request)")
    print(f"  baseline (core + router + one write): {b:6.2f}")
    print(f"  through the blocking driver:          {d:6.2f}   overhead {d - b:5.2f}")


if __name__ == "__main__":
    main()
