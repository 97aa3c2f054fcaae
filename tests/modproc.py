"""Test helper: a module running as a real child process, driven over its pipes.

The test plays the orchestrator with raw lines (so it can also send broken
ones) and reads the module's stdout with ``pywatt_proto.decode_module_line``,
which accepts both response shapes (flat ``http_response`` op and the
reference's ``content``/``metadata`` wrapper). Every stdout line the module
ever wrote is kept in ``raw_lines`` so a test can assert the protocol channel
stayed clean. Timeouts here are safety nets for a hung child, never timing
logic: every wait is for a specific line or exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pywatt_proto import HttpResponse, ModuleToOrchestrator, decode_module_line

REPO = Path(__file__).resolve().parent.parent
#: Generous bound for one expected line (a loaded CI machine, Python start-up).
WAIT = 20.0

INIT: dict[str, Any] = {
    "orchestrator_api": "http://127.0.0.1:9900",
    "module_id": "contract-mod",
    "env": {},
    "listen": "127.0.0.1:4102",
}


class ModuleProcess:
    """One module child process with line-level access to its stdin/stdout."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=str(REPO),
        )
        self.raw_lines: list[bytes] = []
        self.stderr_chunks: list[bytes] = []
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._held: list[ModuleToOrchestrator] = []
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    @classmethod
    def python(cls, script: Path | str, *args: str) -> ModuleProcess:
        """Start ``python script args...`` with the repository importable."""
        return cls([sys.executable, str(script), *args])

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        fd = stream.fileno()
        while chunk := os.read(fd, 65536):
            self.stderr_chunks.append(chunk)

    @property
    def stderr(self) -> str:
        """Everything the module wrote to stderr so far."""
        return b"".join(self.stderr_chunks).decode("utf-8", "replace")

    # -- writing --------------------------------------------------------------
    def send_raw(self, *lines: bytes | str) -> None:
        """Write each line (a newline is added) to the module's stdin."""
        assert self.proc.stdin is not None
        for line in lines:
            data = line.encode() if isinstance(line, str) else line
            self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def send(self, *messages: Mapping[str, Any]) -> None:
        """Write each JSON object as one line."""
        self.send_raw(*(json.dumps(m, separators=(",", ":")) for m in messages))

    def request(
        self,
        rid: str,
        method: str,
        uri: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Send one ``http_request`` line."""
        self.send(
            {
                "op": "http_request",
                "request_id": rid,
                "method": method,
                "uri": uri,
                "headers": dict(headers or {}),
                "body": list(body) if body is not None else None,
            }
        )

    def close_stdin(self) -> None:
        """Close the module's stdin (end of input)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    # -- reading --------------------------------------------------------------
    def raw_line(self, timeout: float = WAIT) -> bytes:
        """Return the next stdout line. Raises AssertionError on EOF or timeout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; stderr:\n{self.stderr}") from None
        if line is None:
            self._lines.put(None)
            raise AssertionError(f"module stdout closed; stderr:\n{self.stderr}")
        return line

    def next(self, timeout: float = WAIT) -> ModuleToOrchestrator:
        """Return the next message (held-back ones first)."""
        if self._held:
            return self._held.pop(0)
        return decode_module_line(self.raw_line(timeout).rstrip(b"\n"))

    def expect(self, kind: type[Any], timeout: float = WAIT) -> Any:
        """Return the next message of ``kind``; messages of other kinds are held back."""
        for i, msg in enumerate(self._held):
            if isinstance(msg, kind):
                return self._held.pop(i)
        while True:
            msg = decode_module_line(self.raw_line(timeout).rstrip(b"\n"))
            if isinstance(msg, kind):
                return msg
            self._held.append(msg)

    def response(self, rid: str, timeout: float = WAIT) -> HttpResponse:
        """Return the response to ``rid``; other messages are held back."""
        for i, msg in enumerate(self._held):
            if isinstance(msg, HttpResponse) and msg.request_id == rid:
                return self._held.pop(i)  # type: ignore[return-value]
        while True:
            msg = decode_module_line(self.raw_line(timeout).rstrip(b"\n"))
            if isinstance(msg, HttpResponse) and msg.request_id == rid:
                return msg
            self._held.append(msg)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the process to exit and return its status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"module did not exit; stderr:\n{self.stderr}") from None

    def stop(self) -> None:
        """Close stdin and make sure the process is gone (kill after a grace period)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out_thread.join(5)
        self._err_thread.join(5)


_SERVING = re.compile(r"pywatt: serving .* on (http://\S+) ")


class Orchestrator:
    """``pywatt run TARGET`` as a child process; ``url`` is where it serves HTTP."""

    def __init__(self, target: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pywatt_asyncio._cli", "run", target, "--http", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(REPO),
        )
        self.stderr_lines: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace")
                self.stderr_lines.append(line)
                match = _SERVING.search(line)
                if match:
                    self.url = match.group(1)
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(WAIT) or not self.url:
            self.proc.kill()
            raise AssertionError("pywatt run did not start:\n" + self.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self) -> int:
        """SIGTERM the orchestrator (it shuts the module down) and return its status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()
        self.proc.stdout.close()
        return code
