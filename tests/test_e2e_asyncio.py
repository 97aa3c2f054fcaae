"""End to end: ``pywatt run`` with real child processes and real HTTP clients (httpx)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
HELLO = str(ROOT / "examples" / "hello.py")
READY = re.compile(r"serving .* on (http://[\d.]+:\d+)")


class Running:
    """A ``pywatt run`` process, its base URL and everything it wrote to stderr."""

    def __init__(self, target: str, *args: str, ready: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pywatt_asyncio._cli",
                "run",
                target,
                "--http",
                "127.0.0.1:0",
                *list(args),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.lines: list[str] = []
        self._url: str | None = None
        self._seen = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()
        if ready:
            self.url = self.wait_for(READY).group(1)

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._seen:
                self.lines.append(raw.decode(errors="replace"))
                self._seen.notify_all()
        with self._seen:
            self.lines.append("<EOF>")
            self._seen.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines:
                    m = pattern.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "<EOF>"):
                    raise AssertionError(f"{pattern.pattern!r} not seen in:\n{self.stderr}")
                self._seen.wait(left)

    @property
    def stderr(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stdout(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


@pytest.fixture(scope="module")
def hello() -> Iterator[Running]:
    run = Running(HELLO)
    yield run
    assert run.stop() == 0
    assert run.stdout() == b""  # the dev orchestrator never writes to stdout


def write_module(tmp_path: Path, body: str) -> str:
    path = tmp_path / "mod.py"
    path.write_text(
        "import asyncio, os, sys\nfrom pywatt_asyncio import Module\napp = Module()\n"
        + textwrap.dedent(body)
    )
    return str(path)


# ------------------------------------------------------------------ hello


def test_hello_routes(hello: Running) -> None:
    r = httpx.get(hello.url + "/hello")
    assert r.status_code == 200 and r.json() == {"message": "Hello from PyWatt!"}
    assert r.headers["content-type"] == "application/json"
    assert httpx.get(hello.url + "/hello/ada").json() == {"message": "Hello, ada!"}
    assert httpx.get(hello.url + "/missing").status_code == 404
    assert httpx.post(hello.url + "/hello").status_code == 405


def test_all_256_byte_values_round_trip(hello: Running) -> None:
    body = bytes(range(256)) * 64
    r = httpx.post(
        hello.url + "/echo", content=body, headers={"content-type": "application/x-bytes"}
    )
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == "application/x-bytes"


def test_large_bodies(hello: Running) -> None:
    body = os.urandom(1024 * 1024)
    r = httpx.post(hello.url + "/echo", content=body, timeout=30)
    assert r.status_code == 200 and r.content == body
    # Over the reference form's limit: the module selected base64_bodies (offered by default),
    # so the body travels as base64 and round-trips (tests/test_bodies_e2e.py: the limits).
    bigger = os.urandom(4 * 1024 * 1024 + 1)
    r = httpx.post(hello.url + "/echo", content=bigger, timeout=60)
    assert r.status_code == 200 and r.content == bigger


def test_1000_concurrent_requests_no_mismatch(hello: Running) -> None:
    # 1,000 client threads (urllib: a real HTTP/1.1 client) released at once by a barrier,
    # each with its own connection and a unique token that must come back in its response.
    # (httpx's async pool degrades badly at this fan-out on small machines.)
    n = 1000
    results: list[tuple[int, bytes] | BaseException | None] = [None] * n
    tokens = [f"token-{i}-{os.urandom(6).hex()}".encode() for i in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        req = urllib.request.Request(hello.url + "/echo", data=tokens[i], method="POST")
        try:
            barrier.wait(30)
            with urllib.request.urlopen(req, timeout=60) as resp:
                results[i] = (resp.status, resp.read())
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    mismatched = [(i, r) for i, r in enumerate(results) if r != (200, tokens[i])]
    assert mismatched == []


# ------------------------------------------------------------- failure modes


def test_module_crash_answers_502_to_in_flight(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        @app.get("/slow")
        async def slow(request):
            await asyncio.sleep(30)
            return "never"

        @app.get("/crash")
        async def crash(request):
            await asyncio.sleep(0.3)
            os._exit(3)
        """,
    )
    run = Running(target)

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=run.url, timeout=20) as client:
            reqs = [client.get("/slow") for _ in range(5)] + [client.get("/crash")]
            return [r.status_code for r in await asyncio.gather(*reqs)]

    assert asyncio.run(main()) == [502] * 6
    run.wait_for(re.compile(r"module exited unexpectedly with status 3"))
    assert run.proc.wait(10) == 1


def test_hanging_handler_gets_504(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        import time

        @app.get("/hang")
        async def hang(request):
            await asyncio.sleep(60)

        @app.get("/block")
        async def block(request):
            time.sleep(2.5)  # blocks the module's loop (async def runs on it): the deadline fires
            return "late"

        @app.get("/ok")
        async def ok(request):
            return "ok"
        """,
    )
    run = Running(
        target, "--request-timeout", "1", "--shutdown-grace", "1", "--heartbeat-interval", "0.2"
    )
    try:
        t0 = time.monotonic()
        assert httpx.get(run.url + "/hang", timeout=10).status_code == 504
        assert httpx.get(run.url + "/block", timeout=10).status_code == 504
        assert time.monotonic() - t0 < 6
        time.sleep(2)  # the late answer of /block arrives and is dropped
        # while its loop was blocked the module missed heartbeats (it acks them otherwise)
        run.wait_for(re.compile(r"module missed \d+ heartbeats"))
        r = httpx.get(run.url + "/ok", timeout=10)
        assert (r.status_code, r.text) == (200, "ok")
    finally:
        # /hang still runs in the module, so it cannot stop within the grace: it is killed,
        # and a killed module makes the exit status non-zero (issue 11, defect 14)
        assert run.stop() == 1, run.stderr
    assert re.search(r"mod: module was killed after the 1 s grace period", run.stderr)


def test_module_that_never_announces(tmp_path: Path) -> None:
    path = tmp_path / "mute.py"
    path.write_text("import time\ntime.sleep(60)\n")
    run = Running(str(path), "--announce-timeout", "1", ready=False)
    assert run.proc.wait(15) == 1
    assert "did not announce in time" in run.stderr


def test_shutdown_with_requests_in_flight(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        @app.get("/slow")
        async def slow(request):
            await asyncio.sleep(1.0)
            return {"done": True}
        """,
    )
    run = Running(target)
    results: list[int] = []

    def call() -> None:
        results.append(httpx.get(run.url + "/slow", timeout=10).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    assert run.stop() == 0
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200]
    assert "shutdown requested" in run.stderr


def test_print_inside_handler_goes_to_stderr(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        print("import-time print")

        @app.get("/p")
        async def p(request):
            print("hello from a handler")
            print("{\\"op\\":\\"shutdown\\"}")  # would be a protocol line on a shared stdout
            sys.stdout.write("raw write\\n")
            os.write(1, b"fd write\\n")
            import subprocess
            subprocess.run(["echo", "from a child process"], check=True)
            return "ok"
        """,
    )
    run = Running(target, "--heartbeat-interval", "0.1")
    try:
        for _ in range(3):
            r = httpx.get(run.url + "/p", timeout=10)
            assert (r.status_code, r.text) == (200, "ok")
        time.sleep(0.6)  # several heartbeats, each acknowledged between the printed lines
        run.wait_for(re.compile("hello from a handler"))
        run.wait_for(re.compile("fd write"))
        run.wait_for(re.compile("from a child process"))
        assert "import-time print" in run.stderr
        assert "bad line from module" not in run.stderr
        assert "missed" not in run.stderr
    finally:
        assert run.stop() == 0


def test_secrets_and_ports(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nexport API_KEY='k-123'\n")
    target = write_module(
        tmp_path,
        """
        @app.get("/secret/{name}")
        async def secret(request):
            return {"value": await app.secret(request.path_params["name"])}

        @app.get("/port")
        async def port(request):
            result = await app.negotiate_port()
            return {"port": result.port, "source": result.source.value}
        """,
    )
    run = Running(target, "--secret", "DB=pg://x", "--env-file", str(env))
    try:
        assert httpx.get(run.url + "/secret/DB").json() == {"value": "pg://x"}
        assert httpx.get(run.url + "/secret/API_KEY").json() == {"value": "k-123"}
        got = httpx.get(run.url + "/port", timeout=10).json()
        assert got["source"] == "orchestrator" and 0 < got["port"] < 65536
    finally:
        assert run.stop() == 0


# ------------------------------------------------ in-process driver (pipes, no orchestrator)

INIT_LINE = (
    b'{"orchestrator_api":"http://127.0.0.1:1","module_id":"t","env":{},'
    b'"listen":"127.0.0.1:0","pywatt_extensions":["http_response_op"]}\n'
)


def http_line(rid: str, uri: str) -> bytes:
    return (
        b'{"op":"http_request","request_id":"%s","method":"GET","uri":"%s","headers":{},'
        b'"body":null}\n' % (rid.encode(), uri.encode())
    )


def serve_script(app: object, script: bytes, timeout: float = 10.0) -> tuple[int, list[Any]]:
    """Run ``app.serve_stdio`` on pipes fed ``script`` then EOF; return (code, output)."""
    import json

    from pywatt_asyncio import Module

    assert isinstance(app, Module)
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.write(w_in, script)
    os.close(w_in)

    async def main() -> int:
        return await asyncio.wait_for(
            app.serve_stdio(read_fd=r_in, write_fd=w_out, guard=False), timeout
        )

    try:
        code = asyncio.run(main())
    finally:
        os.close(r_in)
        os.close(w_out)
    with os.fdopen(r_out, "rb") as fh:
        out = [json.loads(x) for x in fh.read().splitlines()]
    return code, out


def test_eof_with_requests_in_flight_answers_them_then_exits_0() -> None:
    from pywatt_asyncio import Module

    app = Module()

    @app.get("/slow")
    async def slow(request: object) -> str:
        await asyncio.sleep(0.2)
        return "done"

    code, out = serve_script(app, INIT_LINE + http_line("a", "/slow") + http_line("b", "/slow"))
    assert code == 0
    assert out[0]["op"] == "announce"
    assert sorted((m["request_id"], m["status_code"], bytes(m["body"])) for m in out[1:]) == [
        ("a", 200, b"done"),
        ("b", 200, b"done"),
    ]


def test_async_handlers_run_in_a_task_and_plain_ones_in_a_thread() -> None:
    """An ``async def`` handler has a current task from its first line (asyncio.timeout
    needs one); a plain ``def`` handler runs on a pool thread, off the loop (issue 14.1)."""
    from pywatt_asyncio import Module

    app = Module()

    @app.get("/a")
    async def in_task(request: object) -> dict[str, bool]:
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        return {"task": asyncio.current_task() is not None}

    @app.get("/s")
    def in_thread(request: object) -> dict[str, bool]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return {"task": False, "pool": threading.current_thread().name.startswith("pywatt")}
        return {"task": True, "pool": False}

    code, out = serve_script(app, INIT_LINE + http_line("a", "/a") + http_line("s", "/s"))
    assert code == 0
    assert sorted((m["request_id"], m["status_code"], bytes(m["body"])) for m in out[1:]) == [
        ("a", 200, b'{"task":true}'),
        ("s", 200, b'{"task":false,"pool":true}'),
    ]


def test_concurrency_bound_queues_instead_of_dropping() -> None:
    from pywatt_asyncio import Module

    app = Module(max_concurrency=2)
    running = 0
    peak = 0

    @app.get("/w")
    async def work(request: object) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return "ok"

    script = INIT_LINE + b"".join(http_line(f"r{i}", "/w") for i in range(10))
    code, out = serve_script(app, script)
    assert code == 0 and peak == 2
    assert sorted(m["request_id"] for m in out[1:]) == sorted(f"r{i}" for i in range(10))
    assert {m["status_code"] for m in out[1:]} == {200}


@pytest.mark.parametrize("fail", [False, True])
def test_rotation_callbacks_ack_success_and_error(fail: bool) -> None:
    from pywatt_asyncio import Module

    app = Module()
    seen: list[tuple[str, ...]] = []

    @app.on_rotation
    async def on_rotation(keys: tuple[str, ...]) -> None:
        seen.append(keys)
        if fail:
            raise ValueError("cannot reconnect with password hunter2")

    script = INIT_LINE + b'{"op":"rotated","keys":["DB"],"rotation_id":"rot-1"}\n'
    code, out = serve_script(app, script)
    assert code == 0 and seen == [("DB",)]
    ack = out[-1]
    assert ack["op"] == "rotation_ack" and ack["rotation_id"] == "rot-1"
    if fail:
        assert ack["status"] == "error"
        # the exception text may carry a secret: it stays in the module's log (issue 11.15)
        assert ack["message"] == (
            "rotation callback failed (ValueError); details are in the module's log"
        )
        assert "hunter2" not in ack["message"]
    else:
        assert ack["status"] == "success" and "message" not in ack


def test_secret_without_answer_raises_secret_unavailable() -> None:
    from pywatt_asyncio import Module
    from pywatt_proto import SecretUnavailable

    app = Module(secret_timeout=0.1)

    @app.get("/s")
    async def s(request: object) -> str:
        try:
            return await app.secret("MISSING")
        except SecretUnavailable:
            return "unavailable"

    code, out = serve_script(app, INIT_LINE + http_line("x", "/s"))
    assert code == 0
    assert out[1] == {"op": "get_secret", "name": "MISSING"}
    assert bytes(out[2]["body"]) == b"unavailable"


def test_refused_port_request_falls_back_to_a_free_port(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        @app.get("/port")
        async def port(request):
            result = await app.negotiate_port()
            return {"port": result.port, "source": result.source.value}
        """,
    )
    run = Running(target, "--port-refuse", "--port-delay", "0.1")
    try:
        got = httpx.get(run.url + "/port", timeout=10).json()
        assert got["source"] == "fallback" and 10000 <= got["port"] <= 10999
    finally:
        assert run.stop() == 0


def test_sighup_rotates_changed_secrets(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DB=v1\nOTHER=x\n")
    target = write_module(
        tmp_path,
        """
        rotations = []

        @app.on_rotation
        def rotated(keys):
            rotations.append(list(keys))

        @app.get("/db")
        async def db(request):
            return {"value": await app.secret("DB"), "rotations": rotations}
        """,
    )
    run = Running(target, "--env-file", str(env))
    try:
        assert httpx.get(run.url + "/db").json() == {"value": "v1", "rotations": []}
        env.write_text("DB=v2\nOTHER=x\n")
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for(re.compile(r"rotation-1 acknowledged: success"))
        assert httpx.get(run.url + "/db").json() == {"value": "v2", "rotations": [["DB"]]}
    finally:
        assert run.stop() == 0


def test_sigterm_to_the_module_finishes_in_flight_requests(tmp_path: Path) -> None:
    target = write_module(
        tmp_path,
        """
        @app.get("/slow")
        async def slow(request):
            os.kill(os.getpid(), 15)  # SIGTERM to ourselves mid-request
            await asyncio.sleep(0.3)
            return "finished"
        """,
    )
    run = Running(target)
    r = httpx.get(run.url + "/slow", timeout=10)
    assert (r.status_code, r.text) == (200, "finished")
    run.wait_for(re.compile("module exited unexpectedly with status 0"))
    assert run.proc.wait(10) == 1


def test_raw_module_with_invalid_answers_gets_502_and_wrapper_is_accepted(tmp_path: Path) -> None:
    # A hand-written module speaking the wire directly (no SDK): garbage lines, the
    # reference's wrapper shape, an invalid header name and an invalid status.
    path = tmp_path / "raw.py"
    path.write_text(
        textwrap.dedent(
            """
            import json, sys
            out = sys.stdout
            sys.stdin.readline()
            out.write('{"op":"announce","listen":"127.0.0.1:0","endpoints":[]}\\n')
            out.write('this is not json\\n')
            out.flush()
            for line in sys.stdin:
                req = json.loads(line)
                if req.get("op") == "shutdown":
                    break
                if req.get("op") != "http_request":
                    continue
                rid, uri = req["request_id"], req["uri"]
                resp = {"request_id": rid, "status_code": 200, "headers": {}, "body": [111, 107]}
                if uri == "/badheader":
                    resp["headers"] = {"bad header": "x"}
                elif uri == "/badstatus":
                    resp["status_code"] = 42
                if uri == "/wrapped":
                    meta = {"id": "x", "source": "raw", "properties": {"correlation_id": rid}}
                    out.write(json.dumps({"content": resp, "metadata": meta}) + "\\n")
                else:
                    out.write(json.dumps({"op": "http_response", **resp}) + "\\n")
                out.flush()
            """
        )
    )
    # Driven by ModuleProcess + serve_http directly (the module is a plain script).
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_ORCHESTRATOR, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["200:ok", "502", "502"], err.decode()
    assert b"bad line from module" in err


RAW_ORCHESTRATOR = """
import asyncio, sys, logging
from pywatt_asyncio import ModuleProcess
from pywatt_asyncio._frontdoor import serve_http
import httpx

class OneModule:  # the front door's Upstream for one ModuleProcess
    def __init__(self, module):
        self.module = module
    def body_limit(self, method, target):
        return self.module.body_limit
    async def forward(self, r):
        return await self.module.request(r.method, r.target, r.headers, r.body), None

logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="pywatt: %(levelname)s %(name)s: %(message)s")

async def main():
    m = ModuleProcess([sys.executable, sys.argv[1]], heartbeat_interval=None)
    await m.start()
    server = await serve_http(OneModule(m), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        r = await c.get("/wrapped")
        print(f"{r.status_code}:{r.text}")
        print((await c.get("/badheader")).status_code)
        print((await c.get("/badstatus")).status_code)
    server.close()
    await m.shutdown()

asyncio.run(main())
"""


def test_expect_100_continue_is_answered(hello: Running) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(hello.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        first = s.recv(1024)
        assert first.startswith(b"HTTP/1.1 100 ")
        s.sendall(b"ping")
        data = b""
        while not data.endswith(b"ping"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_module_runs_with_regular_files_as_stdin_and_stdout(tmp_path: Path) -> None:
    import json

    inp = tmp_path / "in.jsonl"
    inp.write_bytes(INIT_LINE + http_line("a", "/hello") + b'{"op":"heartbeat"}\n')
    out = tmp_path / "out.jsonl"
    with inp.open("rb") as fin, out.open("wb") as fout:
        proc = subprocess.run(
            [sys.executable, HELLO], stdin=fin, stdout=fout, stderr=subprocess.PIPE, timeout=30
        )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_bytes().splitlines()]
    assert [m["op"] for m in lines] == ["announce", "heartbeat_ack", "http_response"]
    assert bytes(lines[2]["body"]) == b'{"message":"Hello from PyWatt!"}'
