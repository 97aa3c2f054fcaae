"""What a module loads before its first response (start-up cost, checked structurally).

A child process runs a one-route module on a real stdin/stdout, receives init and one
request, and its handler answers with the names in ``sys.modules`` at that moment -- what
start-up to the first response needed. Modules that are only needed off that path (HTTP
server/client, CBOR, TLS/crypto, JWT, logging while nothing is logged, uuid/random for
the reference's response wrapper, dataclasses/inspect/typing machinery) must not be
there. The timing itself is measured by ``tests/benchmarks/bench_ipc.py``; this test
fails when an import on the start-up path comes back, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INIT = {
    "orchestrator_api": "http://127.0.0.1:9900",
    "module_id": "startup",
    "env": {},
    "listen": "127.0.0.1:0",
    "pywatt_extensions": ["heartbeat_ack", "http_response_op"],
}
REQUEST = {
    "op": "http_request",
    "request_id": "r1",
    "method": "GET",
    "uri": "/modules",
    "headers": {"host": "test"},
    "body": None,
}

#: Never on the start-up path of either driver.
NEVER = {
    "h11",
    "cbor2",
    "cryptography",
    "hmac",
    "uuid",
    "random",
    "dataclasses",
    "http",
    "pywatt_proto._http",
    "pywatt_proto._client_common",
    "pywatt_proto._payload",
    "pywatt_proto._channel",
    "pywatt_proto._ports",
    "pywatt_proto.jwt",
}
#: Not on the blocking driver's path either (asyncio brings these itself).
NEVER_SYNC = NEVER | {
    "asyncio",
    "ssl",
    "base64",
    "socket",
    "logging",
    "typing",
    "inspect",
    "traceback",
}


def modules_at_first_response(driver: str, log_level: str) -> set[str]:
    program = textwrap.dedent(
        f"""
        import sys
        from {driver} import Module

        app = Module()

        @app.get("/modules")
        def modules(request):
            return {{"modules": sorted(sys.modules)}}

        app.run()
        """
    )
    stdin = b"".join(json.dumps(x).encode() + b"\n" for x in (INIT, REQUEST))
    env = dict(os.environ, PYWATT_LOG_LEVEL=log_level)
    proc = subprocess.run(
        [sys.executable, "-c", program],
        input=stdin,  # end of input after the request: the module answers it and exits
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("op") == "http_response" and msg["request_id"] == "r1":
            assert msg["status_code"] == 200, msg
            loaded: list[str] = json.loads(bytes(msg["body"]))["modules"]
            assert "pywatt_proto._module" in loaded  # the list is the module's own
            return set(loaded)
    raise AssertionError(f"no response; stdout={proc.stdout!r} stderr={proc.stderr!r}")


def test_blocking_driver_start_up_path() -> None:
    loaded = modules_at_first_response("pywatt_sync", "WARNING")
    assert not loaded & NEVER_SYNC, sorted(loaded & NEVER_SYNC)


def test_blocking_driver_loads_logging_for_the_first_record_it_emits() -> None:
    # At INFO the module logs its announce, so logging is loaded before the request.
    loaded = modules_at_first_response("pywatt_sync", "INFO")
    assert "logging" in loaded
    assert not loaded & NEVER, sorted(loaded & NEVER)


@pytest.mark.parametrize("log_level", ["WARNING", "INFO"])
def test_asyncio_driver_start_up_path(log_level: str) -> None:
    loaded = modules_at_first_response("pywatt_asyncio", log_level)
    assert not loaded & NEVER, sorted(loaded & NEVER)


@pytest.mark.parametrize("driver", ["pywatt_sync", "pywatt_asyncio"])
def test_wrapped_answers_do_not_load_uuid(driver: str) -> None:
    """On the reference wire (no extensions) every answer is the stdout wrapper with a fresh
    UUID; it is formatted from the connection's random source, so ``uuid`` is never loaded.
    The second request's handler reports ``sys.modules`` after the first wrapped answer."""
    program = textwrap.dedent(
        f"""
        import sys
        from {driver} import Module

        app = Module()

        @app.get("/modules")
        def modules(request):
            return {{"modules": sorted(sys.modules)}}

        app.run()
        """
    )
    init = {k: v for k, v in INIT.items() if k != "pywatt_extensions"}
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ, PYWATT_LOG_LEVEL="WARNING"),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        answers = []
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        for rid in ("r1", "r2"):
            proc.stdin.write(json.dumps({**REQUEST, "request_id": rid}).encode() + b"\n")
            proc.stdin.flush()
            while True:
                msg = json.loads(proc.stdout.readline())
                if "content" in msg:
                    assert msg["content"]["request_id"] == rid
                    answers.append(msg)
                    break
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    loaded = set(json.loads(bytes(answers[1]["content"]["body"]))["modules"])
    assert "pywatt_proto._module" in loaded
    assert "uuid" not in loaded
