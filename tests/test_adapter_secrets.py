"""FastAPI/Flask apps served as modules (issue 14.2, 14.3): routes read at announce time,
orchestrator secrets through ``pywatt_asyncio.secrets`` / ``pywatt_sync.secrets``, the ASGI
lifespan after init, JWT middleware that starts without a key (503 until the secret arrives).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from flask import Flask
from test_jwt_helpers import KEY, OTHER_KEY
from test_module_api import answers, http_line, init_line, serve

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import ModuleConnection
from pywatt_proto.jwt import encode


def secret_line(name: str, value: str) -> bytes:
    return json.dumps({"op": "secret", "name": name, "value": value}).encode() + b"\n"


def announced(out: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    msg = next(m for m in out if m.get("op") == "announce")
    return [(e["path"], e["methods"]) for e in msg["endpoints"]]


# ------------------------------------------------------------------ 14.2 routes at announce


def test_fastapi_routes_added_after_asgi_module_are_announced() -> None:
    app = FastAPI()
    module = pywatt_asyncio.asgi_module(app)

    @app.get("/late")  # the usual order in a FastAPI file: the module first, routes after
    async def late() -> dict[str, str]:
        return {"ok": "late"}

    code, out = serve(module, init_line(), http_line("r", "/late"))
    assert code == 0
    assert ("/late", ["GET"]) in announced(out)
    assert answers(out)["r"] == (200, b'{"ok":"late"}')


def test_flask_routes_added_after_wsgi_module_are_announced() -> None:
    app = Flask(__name__)
    module = pywatt_sync.wsgi_module(app)

    @app.get("/late")
    def late() -> str:
        return "late"

    code, out = serve(module, init_line(), http_line("r", "/late"))
    assert code == 0
    assert ("/late", ["GET"]) in announced(out)
    assert answers(out)["r"] == (200, b"late")


# ------------------------------------------------------------------ 14.3 secrets, lifespan


def test_fastapi_lifespan_runs_after_init_and_reads_secrets() -> None:
    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        seen["db"] = pywatt_asyncio.secrets["DB_URL"]  # prefetched before the lifespan
        seen["other"] = await pywatt_asyncio.secrets.fetch("OTHER")  # asked now
        seen["missing"] = pywatt_asyncio.secrets.get("NOPE", "default")

        @app.get("/from-lifespan")  # added during startup: still announced
        async def from_lifespan() -> str:
            return "yes"

        yield {"db": seen["db"]}
        seen["shutdown"] = True

    app = FastAPI(lifespan=lifespan)

    @app.get("/db")
    async def db(request: Request) -> dict[str, str]:
        return {"state": request.state.db, "now": pywatt_asyncio.secrets["DB_URL"]}

    module = pywatt_asyncio.asgi_module(app, secrets=["DB_URL"])
    script = init_line() + secret_line("DB_URL", "postgres://db") + secret_line("OTHER", "o")
    code, out = serve(module, script, http_line("r", "/db") + http_line("l", "/from-lifespan"))
    assert code == 0
    assert seen == {"db": "postgres://db", "other": "o", "missing": "default", "shutdown": True}
    ops = [m.get("op") for m in out]
    assert ops[:2] == ["get_secret", "announce"]  # DB_URL prefetched; OTHER was pushed
    assert ("/from-lifespan", ["GET"]) in announced(out)
    got = answers(out)
    assert got["r"] == (200, b'{"state":"postgres://db","now":"postgres://db"}')
    assert got["l"] == (200, b'"yes"')


def test_flask_view_reads_secrets() -> None:
    app = Flask(__name__)

    @app.get("/k")
    def k() -> str:
        return pywatt_sync.secrets["API_KEY"] + "/" + pywatt_sync.secrets.fetch("LATER")

    module = pywatt_sync.wsgi_module(app, secrets=["API_KEY"])
    script = (
        init_line()
        + secret_line("API_KEY", "abc")
        + secret_line("LATER", "xyz")
        + http_line("r", "/k")
    )
    code, out = serve(module, script)
    assert code == 0
    assert answers(out)["r"] == (200, b"abc/xyz")


def test_secrets_outside_a_serving_module_say_so() -> None:
    with pytest.raises(pywatt_asyncio.SecretsNotAvailable, match="no pywatt module"):
        pywatt_asyncio.secrets["X"]
    with pytest.raises(LookupError):
        pywatt_sync.secrets.get("X")
    assert "secret" not in repr(pywatt_sync.secrets).lower().replace("secrets", "")


class _Holder:
    """A module stand-in for the registry: only ``connection`` is read."""

    def __init__(self, conn: ModuleConnection) -> None:
        self.connection: ModuleConnection | None = conn


@contextlib.contextmanager
def serving_connection() -> Any:
    """A real ModuleConnection past init, registered as this process's serving module."""
    from pywatt_proto._serving import clear_serving, set_serving

    conn = ModuleConnection()
    conn.receive_data(init_line(), 0.0)
    while conn.next_event().__class__.__name__ != "NeedData":
        pass
    holder = _Holder(conn)
    set_serving(holder)
    try:
        yield conn
    finally:
        clear_serving(holder)


def push_secret(conn: ModuleConnection, name: str, value: str) -> None:
    conn.receive_data(secret_line(name, value), 1.0)
    while conn.next_event().__class__.__name__ != "NeedData":
        pass


def test_asgi_jwt_middleware_without_a_key_answers_503_until_the_secret_arrives() -> None:
    app = FastAPI()
    app.add_middleware(pywatt_asyncio.JwtAsgiMiddleware, secrets=["JWT_SECRET"])

    @app.get("/me")
    async def me(request: Request) -> Any:
        return request.state.claims

    client = TestClient(app)
    token = encode({"sub": "a"}, KEY)
    auth = {"Authorization": f"Bearer {token}"}
    with serving_connection() as conn:
        r = client.get("/me", headers=auth)
        assert (r.status_code, r.json()) == (503, {"error": "internal"})
        push_secret(conn, "JWT_SECRET", KEY.decode())
        assert client.get("/me", headers=auth).json() == {"sub": "a"}
        assert client.get("/me").status_code == 401
        # a rotated value reaches the module's cache: tokens signed with it pass
        push_secret(conn, "JWT_SECRET", OTHER_KEY.decode())
        rotated = {"Authorization": f"Bearer {encode({'sub': 'b'}, OTHER_KEY)}"}
        assert client.get("/me", headers=rotated).json() == {"sub": "b"}


def test_flask_jwt_without_a_key_answers_503_until_the_secret_arrives() -> None:
    app = Flask(__name__)
    pywatt_sync.FlaskJwt(app, secrets=["JWT_SECRET"])

    @app.get("/me")
    def me() -> Any:
        from flask import g

        return dict(g.claims)

    client = app.test_client()
    auth = {"Authorization": f"Bearer {encode({'sub': 'a'}, KEY)}"}
    with serving_connection() as conn:
        assert client.get("/me", headers=auth).status_code == 503
        push_secret(conn, "JWT_SECRET", KEY.decode())
        assert client.get("/me", headers=auth).json == {"sub": "a"}
