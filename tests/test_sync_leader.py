"""pywatt_sync.Module's stdio loop: handlers run inline on the reading thread, and a
blocked handler is worked around (another thread reads and runs the rest).

Every test drives ``Module.serve_stdio`` over two ``os.pipe()`` pairs through the
public API, and waits on events or on the module's output; timeouts are failure
bounds only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from typing import Any

import pytest
from modproc import INIT, WAIT

import pywatt_proto as pw
from pywatt_sync import Module

INIT_LINE = json.dumps(dict(INIT, pywatt_extensions=["heartbeat_ack", "http_response_op"]))
HEARTBEAT = '{"op":"heartbeat"}'
HEARTBEAT_ACK = {"op": "heartbeat_ack"}


def _req(rid: str, path: str) -> str:
    return json.dumps(
        {"op": "http_request", "request_id": rid, "method": "GET", "uri": path, "headers": {}}
    )


class PipeModule:
    """``module.serve_stdio`` on a thread over two pipes; the test plays the orchestrator."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.to_mod_r, self.to_mod_w = os.pipe()
        self.from_mod_r, self.from_mod_w = os.pipe()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(
                module.serve_stdio(read_fd=self.to_mod_r, write_fd=self.from_mod_w)
            ),
            daemon=True,
        )
        self.thread.start()
        self.buffer = b""
        self.send(INIT_LINE)
        assert self.message()["op"] == "announce"

    def send(self, *lines: str) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.to_mod_w, view) :]

    def message(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next output line, decoded; fails after ``timeout`` seconds without one."""
        give_up = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = give_up - time.monotonic()
            readable, _, _ = select.select([self.from_mod_r], [], [], max(left, 0))
            assert readable, "no output from the module"
            chunk = os.read(self.from_mod_r, 65536)
            assert chunk, "module output closed"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        decoded: dict[str, Any] = json.loads(line)
        return decoded

    def answer(self, timeout: float = WAIT) -> tuple[str, int, bytes]:
        """The next output line, which must be an http_response: (id, status, body)."""
        msg = self.message(timeout)
        assert msg["op"] == "http_response", msg
        return msg["request_id"], msg["status_code"], bytes(msg["body"])

    def pending(self) -> bool:
        return b"\n" in self.buffer or bool(select.select([self.from_mod_r], [], [], 0)[0])

    def finish(self) -> int:
        os.close(self.to_mod_w)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        for fd in (self.to_mod_r, self.from_mod_w, self.from_mod_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        return self.result[0]


def _pool_threads() -> set[threading.Thread]:
    """Pool threads alive (earlier tests' may still be on their way out: compare sets)."""
    return {t for t in threading.enumerate() if t.name == "pywatt-worker"}


def _blocking_app(**options: Any) -> tuple[Module, threading.Semaphore, threading.Event]:
    """A module with /block (signals ``entered``, waits for ``release``) and /fast/<n>."""
    app = Module(**options)
    entered, release = threading.Semaphore(0), threading.Event()

    @app.get("/block/{n:int}")
    def block(request: pw.Request) -> str:
        n = request.path_params["n"]
        entered.release()
        assert release.wait(WAIT)
        return f"block {n}"

    @app.get("/fast/{n:int}")
    def fast(request: pw.Request) -> str:
        n = request.path_params["n"]
        return f"fast {n}"

    return app, entered, release


@pytest.mark.parametrize("order", ["slow-first", "fast-first"])
def test_a_blocked_handler_does_not_hold_back_other_answers(order: str) -> None:
    # Both requests arrive in one write, so one thread reads both. slow-first: the fast
    # one waits in the queue behind the blocked handler until another thread takes it.
    # fast-first: its answer is already made, and must be written although the thread
    # that made it is now blocked.
    app, entered, release = _blocking_app()
    pm = PipeModule(app)
    lines = [_req("s", "/block/1"), _req("f", "/fast/2")]
    pm.send(*(lines if order == "slow-first" else lines[::-1]))
    assert entered.acquire(timeout=WAIT)
    started = time.monotonic()
    assert pm.answer() == ("f", 200, b"fast 2")
    assert not release.is_set()  # answered while the other handler is still blocked
    assert time.monotonic() - started < WAIT / 2  # failure bound only (the tick is 20 ms)
    release.set()
    assert pm.answer() == ("s", 200, b"block 1")
    assert pm.finish() == 0


def test_heartbeats_are_answered_while_every_handler_thread_blocks() -> None:
    app, entered, release = _blocking_app(max_workers=2, max_queued=2)
    before = _pool_threads()
    pm = PipeModule(app)
    pm.send(_req("a", "/block/1"), _req("b", "/block/2"))
    assert entered.acquire(timeout=WAIT)
    assert entered.acquire(timeout=WAIT)  # both handler threads are now blocked
    pm.send(HEARTBEAT)
    assert pm.message() == HEARTBEAT_ACK
    pm.send(_req("c", "/fast/3"), HEARTBEAT)  # queued (no handler thread free) ...
    assert pm.message() == HEARTBEAT_ACK  # ... while input is still read
    assert not pm.pending()
    release.set()
    answers = sorted(pm.answer() for _ in range(3))
    assert answers == [("a", 200, b"block 1"), ("b", 200, b"block 2"), ("c", 200, b"fast 3")]
    assert len(_pool_threads() - before) <= 3  # max_workers + 1
    assert pm.finish() == 0


def test_requests_beyond_the_bound_are_refused_while_every_handler_thread_blocks() -> None:
    # Every worker blocked and the queue full: input is still read (the heartbeat behind
    # the requests is acknowledged) and the requests beyond the bound are answered 503 at
    # once instead of waiting in the pipe (issue 11, defect 1).
    workers, queued = 2, 3
    app, entered, release = _blocking_app(max_workers=workers, max_queued=queued)
    before = _pool_threads()
    pm = PipeModule(app)
    count = 20
    pm.send(*(_req(f"r{i}", f"/block/{i}") for i in range(count)), HEARTBEAT)
    for _ in range(workers):
        assert entered.acquire(timeout=WAIT)
    bound = workers + queued + 1  # in handlers + waiting + the one taken with the read
    refused = [pm.message() for _ in range(count - bound + 1)]  # while the handlers block
    assert refused.count(HEARTBEAT_ACK) == 1
    statuses = {m["request_id"]: m["status_code"] for m in refused if m != HEARTBEAT_ACK}
    assert set(statuses.values()) == {503} and len(statuses) == count - bound
    assert not release.is_set()
    conn = app.connection
    assert conn is not None and conn.in_flight == bound
    assert len(_pool_threads() - before) <= workers + 1
    release.set()
    answers = sorted(pm.answer() for _ in range(bound))
    assert {status for _, status, _ in answers} == {200}
    assert sorted([rid for rid, _, _ in answers] + list(statuses)) == sorted(
        f"r{i}" for i in range(count)
    )
    assert pm.finish() == 0


def _echo(rid: str) -> dict[str, int]:
    n = int(rid[2:])
    return {"n": n, "query": n}


def test_many_concurrent_requests_each_get_their_own_answer() -> None:
    app = Module(max_workers=4, max_queued=8)
    gate = threading.Event()

    @app.get("/echo/{n:int}")
    def echo(request: pw.Request) -> dict[str, int]:
        n = request.path_params["n"]
        assert isinstance(n, int)
        if n % 1000 == 0:  # three handlers (of 4 threads) block until every other answer is out
            assert gate.wait(WAIT)
        return {"n": n, "query": int(request.query.get("q") or "-1")}

    pm = PipeModule(app)
    count = 3000
    lines = [_req(f"id{n}", f"/echo/{n}?q={n}") for n in range(count)]
    writer = threading.Thread(target=pm.send, args=tuple(lines), daemon=True)
    writer.start()  # larger than a pipe: written while the module answers
    seen: dict[str, bytes] = {}
    slow = {f"id{n}" for n in range(0, count, 1000)}
    while len(seen) < count - len(slow):
        rid, status, body = pm.answer()
        assert status == 200 and rid not in seen
        seen[rid] = body
    gate.set()
    while len(seen) < count:
        rid, status, body = pm.answer()
        assert status == 200 and rid not in seen
        seen[rid] = body
    writer.join(WAIT)
    mismatches = [rid for rid, body in seen.items() if json.loads(body) != _echo(rid)]
    assert mismatches == []
    assert sorted(seen) == sorted(f"id{n}" for n in range(count))
    assert pm.finish() == 0


def test_a_handler_waiting_for_a_secret_gets_it_from_the_only_thread_pool_place() -> None:
    # max_workers=1: the thread that read the request is inside the handler, waiting for
    # the secret; another thread must read the answer.
    app = Module(max_workers=1, max_queued=0)

    @app.get("/secret")
    def secret(request: pw.Request) -> str:
        return app.secret("TOKEN")

    pm = PipeModule(app)
    pm.send(_req("k", "/secret"))
    assert pm.message() == {"op": "get_secret", "name": "TOKEN"}
    pm.send(json.dumps({"op": "secret", "name": "TOKEN", "value": "s3cret"}))
    assert pm.answer() == ("k", 200, b"s3cret")
    assert pm.finish() == 0


def test_rotation_callback_runs_while_handlers_block() -> None:
    app, entered, release = _blocking_app(max_workers=1)
    rotated = threading.Event()

    @app.on_rotation
    def on_rotation(keys: tuple[str, ...]) -> None:
        assert keys == ("K",)
        rotated.set()

    pm = PipeModule(app)
    pm.send(_req("a", "/block/1"))
    assert entered.acquire(timeout=WAIT)
    pm.send(json.dumps({"op": "rotated", "keys": ["K"], "rotation_id": "rot-1"}))
    assert rotated.wait(WAIT)
    ack = pm.message()
    assert (ack["op"], ack["rotation_id"], ack["status"]) == ("rotation_ack", "rot-1", "success")
    release.set()
    assert pm.answer() == ("a", 200, b"block 1")
    assert pm.finish() == 0


def test_end_of_input_waits_for_a_blocked_handler() -> None:
    app, entered, release = _blocking_app()
    pm = PipeModule(app)
    pm.send(_req("a", "/block/1"), _req("b", "/fast/2"))
    assert entered.acquire(timeout=WAIT)
    assert pm.answer() == ("b", 200, b"fast 2")
    os.close(pm.to_mod_w)  # end of input with one request in flight
    assert pm.thread.is_alive()
    release.set()
    assert pm.answer() == ("a", 200, b"block 1")
    pm.thread.join(WAIT)
    assert pm.result == [0]
    for fd in (pm.to_mod_r, pm.from_mod_w, pm.from_mod_r):
        with contextlib.suppress(OSError):
            os.close(fd)


# -- issue 11: hung handlers and BaseException handlers ----------------------------------


def test_hung_handlers_do_not_wedge_the_module() -> None:
    # Issue 11, defect 1: every worker stuck in a handler that never returns. Requests the
    # core answered 504 leave the queue, new requests are still read and answered (503
    # while every worker is busy, 200 once one frees), heartbeats are acknowledged, and
    # end of input stops the module although handler threads are still stuck.
    timeout = 0.5
    app = Module(max_workers=2, max_queued=2, request_timeout=timeout)
    gates = {n: threading.Event() for n in range(8)}
    entered = threading.Semaphore(0)

    @app.get("/hang/{n:int}")
    def hang(request: pw.Request) -> str:
        entered.release()
        gates[request.path_params["n"]].wait(WAIT)
        return "late"

    @app.get("/fast/{n:int}")
    def fast(request: pw.Request) -> str:
        return f"fast {request.path_params['n']}"

    pm = PipeModule(app)
    try:
        pm.send(*(_req(f"h{n}", f"/hang/{n}") for n in range(8)))
        assert entered.acquire(timeout=WAIT) and entered.acquire(timeout=WAIT)
        statuses = {}
        for _ in range(8):  # all eight answered: 504 (deadline) or 503 (no room)
            rid, status, _ = pm.answer(timeout=timeout * 8)
            statuses[rid] = status
        assert sorted(statuses) == [f"h{n}" for n in range(8)]
        assert set(statuses.values()) <= {503, 504}
        for round_ in range(3):  # both workers still stuck: the module keeps reading
            pm.send(HEARTBEAT)
            assert pm.message(timeout=timeout * 4) == HEARTBEAT_ACK
            pm.send(*(_req(f"f{round_}-{i}", f"/fast/{i}") for i in range(6)))
            answers = [pm.answer(timeout=timeout * 8) for _ in range(6)]
            assert {status for _, status, _ in answers} <= {503, 504}
        gates[0].set()  # one worker frees: new requests are served again
        pm.send(_req("ok", "/fast/1"))
        deadline = time.monotonic() + WAIT
        while True:
            rid, status, body = pm.answer(timeout=timeout * 8)
            if rid == "ok":
                break
            assert time.monotonic() < deadline
        assert (status, body) == (200, b"fast 1")
        os.close(pm.to_mod_w)  # end of input while one handler thread is still stuck
        pm.thread.join(timeout * 4 + 2)
        assert not pm.thread.is_alive(), "end of input must stop the module"
        assert pm.result and pm.result[0] != 0  # abandoned handler threads: non-zero status
    finally:
        for gate in gates.values():
            gate.set()
        for fd in (pm.to_mod_r, pm.from_mod_w, pm.from_mod_r):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_a_handler_raising_systemexit_is_answered_500(
    exc_type: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 11, defect 13: answered 500 at once and logged; the module goes on.
    app = Module(request_timeout=WAIT * 3)  # a 504 would come far too late for the test

    @app.get("/exit")
    def leave(request: pw.Request) -> str:
        raise exc_type(3)

    @app.get("/fast/{n:int}")
    def fast(request: pw.Request) -> str:
        return f"fast {request.path_params['n']}"

    pm = PipeModule(app)
    with caplog.at_level("ERROR", logger="pywatt"):
        pm.send(_req("x", "/exit"))
        rid, status, _ = pm.answer()
        assert (rid, status) == ("x", 500)
        pm.send(_req("f", "/fast/1"), _req("y", "/exit"), _req("g", "/fast/2"))
        answers = sorted(pm.answer() for _ in range(3))
        assert [(rid, status) for rid, status, _ in answers] == [
            ("f", 200),
            ("g", 200),
            ("y", 500),
        ]
    assert any(exc_type.__name__ in r.getMessage() or r.exc_info for r in caplog.records)
    assert pm.finish() == 0
