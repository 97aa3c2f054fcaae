"""JWT in a real pywatt module: keys from orchestrator secrets, rotation while running.

The module runs as a child process; ``pywatt run`` (the development orchestrator
command) serves it over HTTP, and ``pywatt_asyncio.ModuleProcess`` drives it
directly to push a secret rotation.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from test_jwt_helpers import KEY, OTHER_KEY

from pywatt_asyncio import ModuleProcess
from pywatt_proto.jwt import JwtKey, encode

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0  # safety net for a slow machine, not timing logic

MODULE_SOURCE = """
from pywatt_{driver} import Module, module_jwt

app = Module(secrets=["JWT_SECRET"])
auth = module_jwt(app, {{"JWT_SECRET": None}}, audience="svc", leeway=0)


@app.get("/me", auth="jwt")
{async_}def me(request):
    return {{"sub": request.claims["sub"]}}


@app.get("/health")
{async_}def health(request):
    return {{"ok": True}}
"""


FASTAPI_SOURCE = """
from fastapi import FastAPI, Request
from pywatt_asyncio import JwtAsgiMiddleware
from pywatt_proto.jwt import JwtValidator, key_from_env

app = FastAPI()
app.add_middleware(
    JwtAsgiMiddleware,
    validator=JwtValidator(key_from_env("JWT_SECRET"), audience="svc", leeway=0),
    public_paths=["/health"],
)


@app.get("/me")
async def me(request: Request):
    return {"sub": request.state.claims["sub"]}


@app.get("/health")
async def health():
    return {"ok": True}
"""

FLASK_SOURCE = """
from flask import Flask, g
from pywatt_proto.jwt import JwtValidator, key_from_env
from pywatt_sync import FlaskJwt

app = Flask(__name__)
FlaskJwt(
    app,
    validator=JwtValidator(key_from_env("JWT_SECRET"), audience="svc", leeway=0),
    public_paths=["/health"],
)


@app.get("/me")
def me():
    return {"sub": g.claims["sub"]}


@app.get("/health")
def health():
    return {"ok": True}
"""


def write_module(tmp_path: Path, driver: str) -> Path:
    path = tmp_path / f"jwt_{driver}_mod.py"
    if driver == "fastapi":
        path.write_text(FASTAPI_SOURCE)
    elif driver == "flask":
        path.write_text(FLASK_SOURCE)
    else:
        path.write_text(
            MODULE_SOURCE.format(driver=driver, async_="async " if driver == "asyncio" else "")
        )
    return path


def token(key: bytes | JwtKey, sub: str = "alice", exp_in: float = 600) -> str:
    import time

    return encode({"sub": sub, "aud": "svc", "exp": time.time() + exp_in}, key)


@pytest.mark.parametrize("driver", ["asyncio", "sync", "fastapi", "flask"])
def test_pywatt_run_serves_a_jwt_protected_module(tmp_path: Path, driver: str) -> None:
    module = write_module(tmp_path, driver)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pywatt_asyncio._cli",
            "run",
            str(module),
            "--http",
            "127.0.0.1:0",
            "--secret",
            f"JWT_SECRET={KEY.decode()}",
            "--heartbeat-interval",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET": KEY.decode()},  # for the ASGI/WSGI apps
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = None
        seen: list[str] = []
        while url is None:
            try:
                line = lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError("pywatt run never served: " + "".join(seen)) from None
            seen.append(line)
            m = re.search(r"serving .* on (http://\S+)", line)
            url = m.group(1) if m else None
        with httpx.Client(base_url=url, timeout=WAIT) as client:
            ok = client.get("/me", headers={"Authorization": f"Bearer {token(KEY)}"})
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"sub": "alice"}
            missing = client.get("/me")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            expired = client.get(
                "/me", headers={"Authorization": f"Bearer {token(KEY, exp_in=-5)}"}
            )
            assert expired.status_code == 401
            assert expired.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert "expired" not in expired.text
            forged = client.get("/me", headers={"Authorization": f"bearer {token(OTHER_KEY)}"})
            assert forged.status_code == 401
            assert client.get("/health").json() == {"ok": True}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _status(mod: ModuleProcess, tok: str) -> int:
    response = await mod.request("GET", "/me", {"authorization": f"Bearer {tok}"}, None)
    return response.status_code


async def _until(mod: ModuleProcess, tok: str, status: int) -> None:
    for _ in range(int(WAIT / 0.02)):
        if await _status(mod, tok) == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"status never became {status}")


@pytest.mark.parametrize("driver", ["asyncio", "sync"])
async def test_rotation_swaps_keys_while_the_module_runs(tmp_path: Path, driver: str) -> None:
    module = write_module(tmp_path, driver)
    new_key = b"n" * 48
    mod = ModuleProcess(
        [sys.executable, "-m", "pywatt_asyncio._apprunner", str(module)],
        secrets={"JWT_SECRET": KEY.decode()},
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        heartbeat_interval=None,
    )
    await mod.start()
    try:
        old, new = token(KEY), token(new_key)
        assert await _status(mod, old) == 200
        assert await _status(mod, new) == 401
        mod.rotate({"JWT_SECRET": new_key.decode()}, "rot-1")
        await _until(mod, new, 200)
        assert await _status(mod, old) == 200  # previous key kept for the grace period
        # a rotated value that is not a usable key is refused; the keys stay
        mod.rotate({"JWT_SECRET": "too-short"}, "rot-2")
        await asyncio.sleep(0.2)
        assert await _status(mod, new) == 200
        response = await mod.request("GET", "/me", {"authorization": f"Bearer {new}"}, None)
        assert json.loads(response.body or b"") == {"sub": "alice"}
    finally:
        await mod.shutdown()
