"""End to end: ``pywatt run examples/tcp_module.py`` -- the module negotiates a TCP port
with the development orchestrator (``port_request`` / ``port_response`` over stdio), serves
HTTP on it, and answers there as well as through the orchestrator.

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

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tcp_module.py"
READY = re.compile(r"serving .* on http://([\d.]+):(\d+)")
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


def test_module_negotiates_a_port_and_serves_http_on_it(orchestrator: Orchestrator) -> None:
    host, front_port = orchestrator.front
    # through the orchestrator (HTTP over the module's stdio)
    assert get(host, front_port, "/hello") == (200, {"message": "Hello from PyWatt over TCP!"})
    # the module negotiates its port (pywatt run answers the port_request) and serves on it
    status, info = get(host, front_port, "/tcp")
    assert status == 200 and info["source"] == "orchestrator"
    tcp_host, tcp_port = info["listen"].rsplit(":", 1)
    assert int(tcp_port) != front_port
    # straight to the module over TCP: the same routes answer
    assert get(tcp_host, int(tcp_port), "/hello") == (
        200,
        {"message": "Hello from PyWatt over TCP!"},
    )
    assert get(tcp_host, int(tcp_port), "/tcp") == (200, info)  # negotiated once
    assert orchestrator.stop() == 0
    assert "module announced: GET /hello, GET /tcp" in orchestrator.drain_log()


def test_refused_port_request_falls_back_to_a_free_port() -> None:
    orch = Orchestrator("--port-refuse")
    try:
        host, front_port = orch.front
        status, info = get(host, front_port, "/tcp")
        assert status == 200 and info["source"] == "fallback"
        tcp_host, tcp_port = info["listen"].rsplit(":", 1)
        assert 10000 <= int(tcp_port) <= 10999
        assert get(tcp_host, int(tcp_port), "/hello")[0] == 200
    finally:
        assert orch.stop() == 0
