"""Big bodies through real processes (issue 13, issue 11 defects 5 and 16).

* a 64 MiB body round-trips through ``pywatt run`` and each module driver with the
  ``base64_bodies`` extension (offered by default), and the peak memory of the host and of
  the module stays within the multiples spec/limits.md states;
* with the extension turned off (``--extensions none``) the host's body limit is the
  reference form's, and over-limit requests and responses are answered at once (413 / 500),
  never 504 after the deadline;
* a module fed hundreds of malformed lines logs a few in full, then a summary.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pywatt_proto._bodies import MAX_BASE64_BODY, MAX_REFERENCE_BODY

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"serving .* on (http://[\d.]+:\d+)")
MIB = 1024 * 1024
_HTTP = ("--http", "127.0.0.1:0")
#: spec/limits.md section 1.1: peak memory growth per process, in bodies, for one request.
MODULE_MULTIPLE = 4.0
HOST_MULTIPLE = 7.0

MODULES = {
    "asyncio": """
        from pywatt_asyncio import Module
        from pywatt_proto import Response
        app = Module()

        @app.post("/echo")
        async def echo(request):
            return Response(status=200, headers=(("content-type", "x/y"),), body=request.body)

        @app.get("/big")
        async def big(request):
            return Response(status=200, body=b"\\xff" * (5 * 1024 * 1024))

        if __name__ == "__main__":
            app.run()
    """,
    "sync": """
        from pywatt_sync import Module
        from pywatt_proto import Response
        app = Module()

        @app.post("/echo")
        def echo(request):
            return Response(status=200, headers=(("content-type", "x/y"),), body=request.body)

        @app.get("/big")
        def big(request):
            return Response(status=200, body=b"\\xff" * (5 * 1024 * 1024))

        if __name__ == "__main__":
            app.run()
    """,
}


def _peak(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _resident(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            out += [int(x) for x in fh.read().split()]
    return out


class Host:
    """``pywatt run`` on one module file; its URL and its stderr."""

    def __init__(self, target: Path, *args: str) -> None:
        """``pywatt run TARGET ARGS``; a target named ``-`` puts ARGS first (``-- COMMAND``)."""
        first = [] if target.name == "-" else [str(target)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pywatt_asyncio._cli", "run", *_HTTP, *first, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(target.parent),
            env=dict(os.environ, PYWATT_LOG_LEVEL="WARNING"),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()
        self.url = self._wait(READY).group(1)

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()

    def _wait(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = pattern.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError("".join(self.lines))
                self._cond.wait(left)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung host
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=sorted(MODULES))
def module_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / f"echo_{request.param}.py"
    path.write_text(textwrap.dedent(MODULES[request.param]))
    yield path


def test_64_mib_round_trip_with_bounded_memory(module_file: Path) -> None:
    host = Host(module_file)
    try:
        (module_pid,) = _children(host.proc.pid)
        base = {pid: _resident(pid) for pid in (host.proc.pid, module_pid)}
        body = os.urandom(64 * MIB)
        r = httpx.post(host.url + "/echo", content=body, timeout=120)
        assert r.status_code == 200 and r.content == body
        growth = {pid: (_peak(pid) - base[pid]) / len(body) for pid in base}
        assert growth[module_pid] <= MODULE_MULTIPLE, growth
        assert growth[host.proc.pid] <= HOST_MULTIPLE, growth
    finally:
        host.stop()


def test_without_the_extension_over_limit_is_answered_at_once(module_file: Path) -> None:
    host = Host(module_file, "--extensions", "none", "--request-timeout", "60")
    try:
        with httpx.Client(timeout=60) as client:
            body = b"\xff" * MAX_REFERENCE_BODY  # the worst case fits the 16 MiB line
            r = client.post(host.url + "/echo", content=body)
            assert r.status_code == 200 and r.content == body
            start = time.monotonic()
            r = client.post(host.url + "/echo", content=b"\xff" * (MAX_REFERENCE_BODY + 1))
            assert r.status_code == 413
            r = client.get(host.url + "/big")  # 5 MiB of 0xFF: a 20 MiB line
            assert r.status_code == 500
            assert time.monotonic() - start < 30  # never the 60 s deadline's 504
    finally:
        host.stop()


def test_with_the_extension_the_reference_limits_do_not_apply(module_file: Path) -> None:
    host = Host(module_file)
    try:
        with httpx.Client(timeout=60) as client:
            r = client.get(host.url + "/big")  # a 20 MiB line in the reference form
            assert r.status_code == 200 and r.content == b"\xff" * (5 * MIB)
            body = b"\xff" * (MAX_REFERENCE_BODY + 1)
            r = client.post(host.url + "/echo", content=body)
            assert r.status_code == 200 and r.content == body
        # The host's body limit is the negotiated form's: a declared length over it is
        # refused at once, before the body is read.
        address, port = host.url.removeprefix("http://").rsplit(":", 1)
        start = time.monotonic()
        with socket.create_connection((address, int(port)), timeout=10) as sock:
            head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            sock.sendall(head % (MAX_BASE64_BODY + 1))
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert time.monotonic() - start < 10
    finally:
        host.stop()


@pytest.mark.parametrize("driver", sorted(MODULES))
def test_malformed_lines_are_logged_a_few_then_summarised(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text(textwrap.dedent(MODULES[driver]))
    init = b'{"orchestrator_api":"http://x","module_id":"m","env":{},"listen":"127.0.0.1:0"}\n'
    junk = b"".join(b"junk line %d %s\n" % (i, b"x" * 500) for i in range(600))
    proc = subprocess.run(
        [sys.executable, str(path)],
        input=init + junk,
        capture_output=True,
        timeout=60,
        env=dict(os.environ, PYWATT_LOG_LEVEL="WARNING"),
    )
    lines = [x for x in proc.stderr.decode(errors="replace").splitlines() if "skipped" in x]
    assert 2 <= len(lines) <= 8, proc.stderr.decode(errors="replace")[-2000:]
    assert all(len(x) < 600 for x in lines)  # each truncated
    assert any(re.search(r"skipped \d+ more malformed lines", x) for x in lines)


def test_the_host_logs_a_few_bad_module_lines_then_a_summary(tmp_path: Path) -> None:
    raw = tmp_path / "noisy.py"
    raw.write_text(
        textwrap.dedent(
            """
            import sys
            sys.stdin.readline()
            out = sys.stdout.buffer
            out.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":[]}\\n')
            for i in range(600):
                out.write(b"not json %d %s\\n" % (i, b"y" * 500))
            out.flush()
            sys.stdin.read()  # until the host stops us
            """
        )
    )
    host = Host(raw.parent / "-", "--", sys.executable, str(raw))
    try:
        time.sleep(1.0)
    finally:
        host.stop()
    text = "".join(host.lines)
    bad = [x for x in host.lines if "bad line" in x]
    assert 2 <= len(bad) <= 8, text[-3000:]
    assert all(len(x) < 600 for x in bad)
    assert re.search(r"skipped \d+ more malformed lines", text), text[-3000:]
