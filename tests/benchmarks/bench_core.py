"""Pure-core benchmark: one module request through pywatt_proto, in process, no I/O.

Run as a script (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_core.py [--requests N] [--rounds R] [--depth D]

The loop is what a driver does per request on the stdio link, minus the reads and writes:
``ModuleConnection.receive_data`` (chunks of ``depth`` lines) -> ``next_event`` ->
``RequestReceived.to_router_request`` -> the router (``plan`` / ``enter`` / handler /
``to_response`` / ``finish``, written inline here with the Router's public methods, no
middleware, as the blocking driver's dispatch does) -> ``send_response`` -> ``data_to_send``.

The baseline, in the same run, is the compute of bench_ipc.py's stdlib floor for the same
lines: ``json.loads`` of each line, the response dict, ``json.dumps`` of it (body list
precomputed, as the floor does). Both are timed in CPU time of this process (the machine is
shared), rounds interleaved; the best round of each is printed with the ratio core / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from pywatt_proto import NEED_DATA, ModuleConnection, RequestReceived, Router
from pywatt_proto._router import Request, Response

INIT = (
    b'{"orchestrator_api":"x","module_id":"bench","env":{},"listen":"127.0.0.1:0",'
    b'"pywatt_extensions":["heartbeat_ack","http_response_op"]}\n'
)
#: The reference wire: no extensions, so every answer is the stdout wrapper (--wrapper).
INIT_WRAPPER = b'{"orchestrator_api":"x","module_id":"bench","env":{},"listen":"127.0.0.1:0"}\n'


def request_line(i: int) -> bytes:
    return (
        b'{"op":"http_request","request_id":"r%d","method":"GET","uri":"/hello",'
        b'"headers":{"host":"bench"},"body":null}\n' % i
    )


def chunks_for(start: int, n: int, depth: int) -> list[bytes]:
    return [b"".join(request_line(start + k + i) for i in range(depth)) for k in range(0, n, depth)]


def make_core(init: bytes = INIT) -> tuple[ModuleConnection, Router]:
    router = Router()

    @router.get("/hello")
    def hello(request: Request) -> Any:
        return {"message": "hello"}

    conn = ModuleConnection(endpoints=router.announce_endpoints(), request_timeout=30.0)
    conn.receive_data(init, 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()
    return conn, router


def dispatch(router: Router, request: Request, now: Callable[[], float]) -> Response:
    """The router steps of a driver's dispatch (no middleware registered here)."""
    plan = router.plan(request, now())
    if plan.response is not None:
        response = plan.response
    else:
        try:
            req = router.enter(plan, plan.request)
            response = router.to_response(plan.route.handler(req))  # type: ignore[union-attr]
        except Exception as exc:
            handler = router.error_handler_for(exc)
            if handler is not None:
                response = router.to_response(handler(plan.request, exc))
            else:
                response = router.error_response(exc)
    return router.finish(plan, response, now())


def run_core(conn: ModuleConnection, router: Router, chunks: list[bytes]) -> int:
    clock = time.monotonic
    sent = 0
    for chunk in chunks:
        conn.receive_data(chunk, clock())
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, RequestReceived)
            resp = dispatch(router, event.to_router_request(), clock)
            conn.send_response(event.request_id, resp.status, resp.headers, resp.body)
        sent += conn.data_to_send().count(b"\n")
    return sent


def run_floor(chunks: list[bytes], wrapper: bool = False) -> int:
    body = list(json.dumps({"message": "hello"}).encode())
    sent = 0
    for chunk in chunks:
        for line in chunk.splitlines():
            req = json.loads(line)
            if req.get("op") != "http_request":
                continue
            rid = req["request_id"]
            resp: dict[str, Any] = {
                "body": body,
                "headers": {"content-type": "application/json"},
                "request_id": rid,
                "status_code": 200,
            }
            if wrapper:
                meta = {"id": str(uuid.uuid4()), "properties": {"correlation_id": rid}}
                resp = {"content": resp, "metadata": {**meta, "source": "bench"}}
            else:
                resp = {"op": "http_response", **resp}
            out = json.dumps(resp, separators=(",", ":")).encode() + b"\n"
            sent += out.count(b"\n")
    return sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--depth", type=int, default=64, help="lines per receive_data chunk")
    ap.add_argument(
        "--wrapper",
        action="store_true",
        help="the reference wire: answers in the stdout wrapper (both sides), not the flat op",
    )
    args = ap.parse_args()
    n = args.requests - args.requests % args.depth
    conn, router = make_core(INIT_WRAPPER if args.wrapper else INIT)
    core_times: list[float] = []
    floor_times: list[float] = []
    for r in range(args.rounds):
        chunks = chunks_for(r * n, n, args.depth)
        t0 = time.process_time()
        core_bytes = run_core(conn, router, chunks)
        t1 = time.process_time()
        floor_bytes = run_floor(chunks, args.wrapper)
        t2 = time.process_time()
        assert core_bytes == floor_bytes == n, "every request must be answered once"
        core_times.append((t1 - t0) / n * 1e6)
        floor_times.append((t2 - t1) / n * 1e6)
    core, floor = min(core_times), min(floor_times)
    wire = "wrapper (reference wire)" if args.wrapper else "flat op"
    print(f"requests/round {n}, depth {args.depth}, rounds {args.rounds}, {wire} (best, CPU time)")
    print(f"core  {core:6.2f} us/request   (rounds: {' '.join(f'{x:.2f}' for x in core_times)})")
    print(f"floor {floor:6.2f} us/request   (rounds: {' '.join(f'{x:.2f}' for x in floor_times)})")
    print(f"core/floor {core / floor:.2f}x")


if __name__ == "__main__":
    main()
