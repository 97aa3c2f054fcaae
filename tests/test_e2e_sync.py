"""End to end, blocking side: real HTTP -> ``pywatt run`` -> a pywatt_sync / WSGI module.

Each test starts the development orchestrator (``python -m pywatt_asyncio._cli
run TARGET --http 127.0.0.1:0``) as a child process, reads the bound address
from its stderr, talks HTTP to it with httpx, then stops it with SIGTERM and
expects a clean exit. A second group starts a target under the app runner
directly (``python -m pywatt_asyncio._apprunner TARGET``) and checks the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from modproc import INIT, WAIT, ModuleProcess, Orchestrator

import pywatt_proto as pw
from pywatt_proto import Announce, HttpResponse
from pywatt_sync import Module

ALL_BYTES = bytes(range(256))


@pytest.fixture
def blocking() -> Iterator[Orchestrator]:
    orch = Orchestrator("examples/blocking.py")
    yield orch
    orch.stop()


def test_blocking_example_over_http(blocking: Orchestrator) -> None:
    with httpx.Client(base_url=blocking.url, timeout=WAIT) as client:
        resp = client.get("/hello")
        assert resp.status_code == 200 and resp.json()["message"].startswith("Hello")
        assert client.get("/hello/ada").json() == {"message": "Hello, ada!"}
        resp = client.post(
            "/echo", content=ALL_BYTES, headers={"content-type": "application/octet-stream"}
        )
        assert resp.content == ALL_BYTES
        assert client.get("/sum", params={"a": 2, "b": 40}).json() == {"sum": 42}
        assert client.get("/sum", params={"a": "x"}).status_code == 400
        assert client.get("/nope").status_code == 404
        assert client.delete("/hello").status_code == 405


def test_blocking_example_concurrent_requests(blocking: Orchestrator) -> None:
    def fetch(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=blocking.url, timeout=WAIT) as client:
            path = "/slow" if i % 2 else f"/hello/n{i}"
            resp = client.get(path)
            return resp.status_code, resp.text

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(fetch, range(32)))
    assert all(status == 200 for status, _ in results)
    assert [text for status, text in results[1::2]] == ["done"] * 16
    assert all(f'"Hello, n{i}!"' in results[i][1] for i in range(0, 32, 2))


def test_blocking_example_stops_cleanly_and_prints_to_stderr() -> None:
    orch = Orchestrator("examples/blocking.py")
    try:
        with httpx.Client(base_url=orch.url, timeout=WAIT) as client:
            assert client.get("/slow").text == "done"
    finally:
        code = orch.stop()
    assert code == 0
    assert "slow handler finished" in orch.stderr  # the handler's print()
    assert "module stopped (status 0)" in orch.stderr


@pytest.mark.parametrize("target", ["examples.flask_app:app", "examples/flask_app.py"])
def test_flask_example_over_http(target: str) -> None:
    orch = Orchestrator(target)
    try:
        with httpx.Client(base_url=orch.url, timeout=WAIT) as client:
            assert client.get("/hello").json() == {"message": "Hello from Flask on PyWatt!"}
            assert client.get("/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
            assert client.get("/items/seven").status_code == 404  # Flask's own 404
            resp = client.post(
                "/echo", content=ALL_BYTES, headers={"content-type": "application/octet-stream"}
            )
            assert resp.content == ALL_BYTES
            resp = client.get("/cookies")
            cookies = resp.headers.get_list("set-cookie")
            assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]
    finally:
        assert orch.stop() == 0


# -- the wire, under the app runner -------------------------------------------------------


def test_flask_module_wire_announce_and_set_cookie_join() -> None:
    mod = ModuleProcess(
        [sys.executable, "-m", "pywatt_asyncio._apprunner", "examples.flask_app:app"]
    )
    try:
        mod.send(INIT)
        announce = mod.next()
        assert isinstance(announce, Announce)
        assert {(e.path, tuple(e.methods)) for e in announce.endpoints} >= {
            ("/hello", ("GET",)),
            ("/items/{item_id:int}", ("GET",)),
            ("/echo", ("POST",)),
            ("/cookies", ("GET",)),
        }
        mod.request("c", "GET", "/cookies")
        resp = mod.response("c")
        # Single-valued wire map: repeated Set-Cookie values joined with "\n".
        assert [c.split(";")[0] for c in resp.headers["set-cookie"].split("\n")] == ["a=1", "b=2"]
        mod.request("h", "HEAD", "/hello")
        head = mod.response("h")
        assert head.status_code == 200 and not head.body
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()


def test_wsgi_import_time_print_goes_to_stderr(tmp_path: Path) -> None:
    app_file = tmp_path / "noisy_wsgi.py"
    app_file.write_text(
        textwrap.dedent(
            """
            print("import-time print from a WSGI app")

            def app(environ, start_response):
                print("request-time print", environ["PATH_INFO"])
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"quiet"]
            """
        )
    )
    mod = ModuleProcess([sys.executable, "-m", "pywatt_asyncio._apprunner", str(app_file)])
    try:
        mod.send(INIT)
        assert isinstance(mod.next(), Announce)
        mod.request("q", "GET", "/anything/at/all")
        resp = mod.response("q")
        assert isinstance(resp, HttpResponse)
        assert (resp.status_code, resp.body) == (200, b"quiet")
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert len(mod.raw_lines) == 2  # the announce and the response: nothing else on stdout
    assert "import-time print from a WSGI app" in mod.stderr
    assert "request-time print /anything/at/all" in mod.stderr


# -- in-process: pywatt_sync.Module.serve_stdio on os.pipe() pairs ------------------------


class PipeModule:
    """Run ``module.serve_stdio`` in a thread over two pipes; talk to it with lines."""

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

    def send(self, *lines: str) -> None:
        os.write(self.to_mod_w, "".join(line + "\n" for line in lines).encode())

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            readable, _, _ = select.select([self.from_mod_r], [], [], WAIT)
            assert readable, "no output from the module"
            chunk = os.read(self.from_mod_r, 65536)
            assert chunk, "module output closed"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def pending(self) -> bool:
        """Return whether output is waiting (non-blocking)."""
        return bool(self.buffer) or bool(select.select([self.from_mod_r], [], [], 0)[0])

    def close_output(self) -> None:
        """Stop reading the module's output (its writes then fail with EPIPE)."""
        os.close(self.from_mod_r)

    def finish(self) -> int:
        os.close(self.to_mod_w)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        for fd in (self.to_mod_r, self.from_mod_w, self.from_mod_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        return self.result[0]


INIT_LINE = json.dumps(INIT)


def _req(rid: str, path: str) -> str:
    return json.dumps(
        {"op": "http_request", "request_id": rid, "method": "GET", "uri": path, "headers": {}}
    )


def test_heartbeat_is_acknowledged_while_the_only_worker_blocks() -> None:
    # One worker, no queue: /hello is taken with the read (the one request the reader may
    # hold) and waits for the worker; the heartbeat behind it is still answered at once.
    app = Module(max_workers=1, max_queued=0)
    running, release = threading.Event(), threading.Event()

    @app.get("/block")
    def block(request: pw.Request) -> str:
        running.set()
        assert release.wait(WAIT)
        return "unblocked"

    @app.get("/hello")
    def hello(request: pw.Request) -> str:
        return "hello"

    pm = PipeModule(app)
    pm.send(INIT_LINE)
    assert b'"announce"' in pm.line()
    pm.send(_req("b", "/block"), _req("h", "/hello"), '{"op":"heartbeat"}')
    assert running.wait(WAIT)
    assert pm.line() == b'{"op":"heartbeat_ack"}\n'
    assert not release.is_set()
    release.set()
    lines = [pm.line() for _ in range(2)]
    assert sum(b'"request_id":"b"' in line for line in lines) == 1
    assert sum(b'"request_id":"h"' in line and b'"status_code":200' in line for line in lines) == 1
    assert pm.finish() == 0


def test_output_failure_stops_with_status_1() -> None:
    app = Module()

    @app.get("/hello")
    def hello(request: pw.Request) -> str:
        return "hello"

    pm = PipeModule(app)
    pm.send(INIT_LINE)
    assert b'"announce"' in pm.line()
    pm.close_output()  # the orchestrator stops reading: writes fail with EPIPE
    pm.send(_req("x", "/hello"))
    pm.thread.join(WAIT)
    assert pm.result == [1]
    os.close(pm.to_mod_w)


def test_serve_twice_in_one_process() -> None:
    app = Module()

    @app.get("/hello")
    def hello(request: pw.Request) -> str:
        return "hello"

    for _ in range(2):
        pm = PipeModule(app)
        pm.send(INIT_LINE)
        assert b'"announce"' in pm.line()
        pm.send(_req("r", "/hello"))
        assert b'"request_id":"r"' in pm.line()
        assert pm.finish() == 0
    assert app.connection is None
    with pytest.raises(RuntimeError):
        app.secret("X")


def test_negotiate_port_through_the_module() -> None:
    app = Module()

    @app.get("/port")
    def port(request: pw.Request) -> dict[str, int]:
        return {"port": app.negotiate_port().port}

    pm = PipeModule(app)
    pm.send(json.dumps(dict(INIT, listen="127.0.0.1:0")))  # no pre-assigned port
    assert b'"announce"' in pm.line()
    pm.send(_req("p", "/port"))
    port_request = json.loads(pm.line())
    assert port_request["op"] == "port_request"
    pm.send(
        json.dumps(
            {
                "op": "port_response",
                "request_id": port_request["request_id"],
                "success": True,
                "port": 18123,
                "error_message": None,
            }
        )
    )
    answer = json.loads(pm.line())
    assert bytes(answer["content"]["body"]) == b'{"port":18123}'
    assert pm.finish() == 0


def test_deadlines_fire_from_the_timer_loop() -> None:
    app = Module(request_timeout=1.5, secret_timeout=0.1)
    release = threading.Event()

    @app.get("/stuck")
    def stuck(request: pw.Request) -> str:
        assert release.wait(WAIT)
        return "too late"

    @app.get("/secret")
    def secret(request: pw.Request) -> str:
        try:
            return app.secret("NEVER_ANSWERED")
        except pw.SecretUnavailable:
            return "unavailable"

    pm = PipeModule(app)
    pm.send(INIT_LINE)
    assert b'"announce"' in pm.line()
    pm.send(_req("s", "/stuck"))
    timed_out = json.loads(pm.line())  # the core's 504, sent by the timer loop
    assert (timed_out["content"]["request_id"], timed_out["content"]["status_code"]) == ("s", 504)
    release.set()  # the handler's late answer is dropped
    pm.send(_req("k", "/secret"))
    assert json.loads(pm.line()) == {"op": "get_secret", "name": "NEVER_ANSWERED"}
    answer = json.loads(pm.line())
    assert answer["content"]["request_id"] == "k"
    assert bytes(answer["content"]["body"]) == b"unavailable"
    assert pm.finish() == 0


def test_output_backlog_pauses_reading_until_drained() -> None:
    app = Module(max_output_backlog=16 * 1024)
    payload = bytes(range(256)) * 8  # 2 KiB body: about 7 KiB on the wire

    @app.get("/big")
    def big(request: pw.Request) -> bytes:
        return payload

    pm = PipeModule(app)
    pm.send(INIT_LINE)
    assert b'"announce"' in pm.line()
    count = 300  # more than the module's slots (80), so the reader must come back for more
    writer = threading.Thread(
        target=pm.send, args=tuple(_req(f"b{i}", "/big") for i in range(count)), daemon=True
    )
    writer.start()  # nobody reads the module's output for now
    for _ in range(4000):  # bounded wait for the reader to pause
        if app.reading_paused:
            break
        time.sleep(0.005)
    assert app.reading_paused, "the reader must stop taking input while output is stuck"
    assert app.output_backlog > 16 * 1024
    seen = set()
    for _ in range(count):  # reading the output lets the module resume and finish
        answer = json.loads(pm.line())
        assert bytes(answer["content"]["body"]) == payload
        seen.add(answer["content"]["request_id"])
    assert seen == {f"b{i}" for i in range(count)}
    writer.join(WAIT)
    assert not app.reading_paused
    assert pm.finish() == 0


def test_end_of_input_exits_with_status_3_while_a_handler_hangs(tmp_path: Path) -> None:
    # Issue 11, defect 1, as a process: the handler never returns; its request is answered
    # 504, end of input then stops the module (the stuck daemon thread does not keep it
    # alive) and the exit status says a handler thread was abandoned.
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading\n"
        "from pywatt_sync import Module\n"
        "app = Module(request_timeout=0.5)\n"
        "@app.get('/hang')\n"
        "def hang(request):\n"
        "    threading.Event().wait()\n"
        "app.run()\n"
    )
    mod = ModuleProcess.python(script)
    try:
        mod.send(INIT)
        mod.expect(pw.Announce)
        mod.request("h", "GET", "/hang")
        assert mod.response("h").status_code == 504
        mod.close_stdin()
        assert mod.wait() == 3
        assert "still running past their 504" in mod.stderr
    finally:
        mod.stop()
