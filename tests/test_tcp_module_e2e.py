"""End to end: ``pywatt run examples/tcp_module.py`` -- the module negotiates a TCP port
with the development orchestrator (``port_request`` / ``port_response`` over stdio), serves
HTTP on it, announces that address as its ``listen`` (bound before the announce), and
answers there as well as through the orchestrator. Also: ``on_startup`` + ``set_listen`` in
both drivers, with the test playing the orchestrator on the module's pipes.

Real processes and sockets; every wait is a blocking read or request with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from modproc import INIT, ModuleProcess

from pywatt_proto import Announce, HttpResponse, PortRequest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tcp_module.py"
READY = re.compile(r"serving .* on http://([\d.]+):(\d+)")
ANNOUNCED = re.compile(r"module announced: (.*) \(listen (\S+)\)")
DEADLINE = 20.0


class Orchestrator:
    """A ``pywatt run`` child process; its stderr is collected by a reader thread."""

    def __init__(self, *extra: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYWATT_LOG_LEVEL="INFO")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pywatt_asyncio._cli import main; sys.exit(main())",
                "run",
                str(EXAMPLE),
                "--http",
                "127.0.0.1:0",
                "--heartbeat-interval",
                "0",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.front = self._wait_ready()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.put(raw.decode("utf-8", "replace"))

    def _wait_ready(self) -> tuple[str, int]:
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queue.Empty:  # pragma: no cover - diagnostic path
                raise AssertionError("pywatt run did not start:\n" + "".join(self.log)) from None
            self.log.append(line)
            match = READY.search(line)
            if match:
                return match.group(1), int(match.group(2))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:  # pragma: no cover - diagnostic path
            self.proc.kill()
            return self.proc.wait()

    def drain_log(self) -> str:
        while not self.lines.empty():
            self.log.append(self.lines.get_nowait())
        return "".join(self.log)


def get(host: str, port: int, path: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture
def orchestrator() -> Iterator[Orchestrator]:
    orch = Orchestrator()
    try:
        yield orch
    finally:
        orch.stop()


def announced(orch: Orchestrator) -> tuple[str, str]:
    """Return (endpoints, listen) of the announce, as ``pywatt run`` logged it."""
    match = ANNOUNCED.search(orch.drain_log())
    assert match, orch.drain_log()
    return match.group(1), match.group(2)


def test_module_announces_the_port_it_serves_http_on(orchestrator: Orchestrator) -> None:
    host, front_port = orchestrator.front
    # pywatt run waits for the announce before serving, so it has been logged already
    endpoints, listen = announced(orchestrator)
    assert endpoints == "GET /hello, GET /tcp"
    tcp_host, tcp_port = listen.rsplit(":", 1)
    assert int(tcp_port) != front_port
    # the announced address answers straight over TCP (bound before the announce)
    assert get(tcp_host, int(tcp_port), "/hello") == (
        200,
        {"message": "Hello from PyWatt over TCP!"},
    )
    # through the orchestrator (HTTP over the module's stdio)
    assert get(host, front_port, "/hello") == (200, {"message": "Hello from PyWatt over TCP!"})
    # the port was negotiated (pywatt run answered the port_request)
    status, info = get(host, front_port, "/tcp")
    assert status == 200 and info == {"listen": listen, "source": "orchestrator"}
    # straight to the module over TCP: the same routes answer
    assert get(tcp_host, int(tcp_port), "/tcp") == (200, info)  # negotiated once
    assert orchestrator.stop() == 0


def test_refused_port_request_falls_back_to_a_free_port() -> None:
    orch = Orchestrator("--port-refuse")
    try:
        host, front_port = orch.front
        status, info = get(host, front_port, "/tcp")
        assert status == 200 and info["source"] == "fallback"
        assert announced(orch)[1] == info["listen"]
        tcp_host, tcp_port = info["listen"].rsplit(":", 1)
        assert 10000 <= int(tcp_port) <= 10999
        assert get(tcp_host, int(tcp_port), "/hello")[0] == 200
    finally:
        assert orch.stop() == 0


# ------------------------------------------- on_startup + set_listen, both drivers

STARTUP_MODULE = """
import sys
from pywatt_{driver} import Module

app = Module()

@app.get("/hello")
{asyn}def hello(request):
    return {{"message": "hi"}}

@app.on_startup
{asyn}def bind_then_announce():
    if app.init.env.get("FAIL"):
        raise RuntimeError("cannot bind")
    result = {wait}app.negotiate_port()
    app.set_listen(f"127.0.0.1:{{result.port}}")

app.run()
"""


def startup_module(tmp_path: Path, driver: str) -> ModuleProcess:
    asyn, wait = ("async ", "await ") if driver == "asyncio" else ("", "")
    script = tmp_path / f"startup_{driver}.py"
    script.write_text(STARTUP_MODULE.format(driver=driver, asyn=asyn, wait=wait))
    return ModuleProcess.python(script)


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_on_startup_negotiates_then_announces_the_listen_it_set(
    tmp_path: Path, driver: str
) -> None:
    mod = startup_module(tmp_path, driver)
    try:
        mod.send(dict(INIT, listen="127.0.0.1:0"))  # no pre-assigned port: negotiate
        ask = mod.next()
        assert isinstance(ask, PortRequest)  # sent before any announce
        mod.request("early", "GET", "/hello")
        early = mod.response("early")
        assert early.status_code == 503  # not announced yet
        mod.send(
            {"op": "port_response", "request_id": ask.request_id, "success": True, "port": 8123}
        )
        ann = mod.next()
        assert isinstance(ann, Announce) and ann.listen == "127.0.0.1:8123"
        mod.request("r1", "GET", "/hello")
        resp = mod.response("r1")
        assert isinstance(resp, HttpResponse) and resp.status_code == 200
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_failing_startup_hook_exits_1_without_announcing(tmp_path: Path, driver: str) -> None:
    mod = startup_module(tmp_path, driver)
    try:
        mod.send(dict(INIT, env={"FAIL": "1"}))
        assert mod.wait() == 1
        assert b'"announce"' not in b"".join(mod.raw_lines)
        assert "cannot bind" in mod.stderr
    finally:
        mod.stop()
