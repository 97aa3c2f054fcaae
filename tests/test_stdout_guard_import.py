"""The stdout guard at import (issue 14.4): a module started directly with piped stdio, as
an orchestrator starts it, may print() at import time without corrupting the protocol.
The exact rule is in pywatt_asyncio/_guard.py; each of its cases is checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INIT = (
    b'{"orchestrator_api":"http://127.0.0.1:1","module_id":"g","env":{},'
    b'"listen":"127.0.0.1:0","pywatt_extensions":["http_response_op"]}\n'
)
REQUEST = (
    b'{"op":"http_request","request_id":"r1","method":"GET","uri":"/x","headers":{},"body":null}\n'
)


def module_source(driver: str) -> str:
    handler = "async def" if driver == "pywatt_asyncio" else "def"
    return textwrap.dedent(
        f"""
        import {driver}
        print("noise at import time")  # after the pywatt import: caught by the guard

        from {driver} import Module

        app = Module()

        @app.get("/x")
        {handler} x(request):
            print("noise in a handler")
            return "ok"

        print("more noise")
        app.run()
        """
    )


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("PYWATT_STDOUT_GUARD",)}
    out["PYWATT_LOG_LEVEL"] = "WARNING"
    out.update(extra)
    return out


@pytest.mark.parametrize("driver", ["pywatt_asyncio", "pywatt_sync"])
def test_print_at_import_time_goes_to_stderr_when_started_with_pipes(
    driver: str, tmp_path: Path
) -> None:
    path = tmp_path / "mod.py"
    path.write_text(module_source(driver))
    proc = subprocess.run(
        [sys.executable, str(path)],
        input=INIT + REQUEST,
        capture_output=True,  # stdin and stdout are pipes, as under an orchestrator
        timeout=60,
        env=env(),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing else there
    assert [m["op"] for m in lines] == ["announce", "http_response"]
    err = proc.stderr.decode()
    for text in ("noise at import time", "more noise", "noise in a handler"):
        assert text in err


def run_snippet(code: str, stdout: int | None, **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code],
        input=b"",
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        env=env(**extra),
    )


def test_opt_out_keeps_stdout() -> None:
    proc = run_snippet(
        "import pywatt_sync; print('data')", subprocess.PIPE, PYWATT_STDOUT_GUARD="0"
    )
    assert proc.stdout == b"data\n"


def test_stdout_to_a_file_is_not_guarded(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as fh:
        proc = run_snippet("import pywatt_asyncio; print('data')", fh.fileno())
    assert proc.returncode == 0 and out.read_bytes() == b"data\n"


def test_forced_guard_and_what_it_cannot_catch(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    code = "print('before'); import pywatt_asyncio; print('after')"
    with out.open("wb") as fh:
        proc = run_snippet(code, fh.fileno(), PYWATT_STDOUT_GUARD="1")
    assert out.read_bytes() == b"before\n"  # written before the import: not caught
    assert b"after" in proc.stderr


def test_the_pywatt_command_releases_the_import_guard() -> None:
    code = (
        "import pywatt_asyncio, sys\n"
        "from pywatt_asyncio._guard import release_import_guard\n"
        "assert release_import_guard() is True\n"
        "assert release_import_guard() is False\n"
        "print('to the user')\n"
    )
    proc = run_snippet(code, subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"to the user\n"
