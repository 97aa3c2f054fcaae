"""Issue 14.5: refusals on ``auth=`` routes are logged at INFO with the reason; a 503
``keys_unavailable`` at WARNING once per cause; never the token, never a traceback.

Both drivers, served in-process by the TestClient (the module's full path).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_jwt_helpers import KEY

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request
from pywatt_proto.jwt import encode
from pywatt_sync.testing import TestClient

SECRET_TOKEN = encode({"sub": "ann", "exp": 1}, KEY)  # expired: refused with reason "expired"


def make(driver: str, prefetch: bool) -> Any:
    mod: Any = pywatt_sync if driver == "sync" else pywatt_asyncio
    app = mod.Module(secrets=["JWT_SECRET"] if prefetch else [])
    mod.module_jwt(app, {"JWT_SECRET": None})
    if driver == "sync":

        @app.get("/me", auth="jwt")
        def me(request: Request) -> dict[str, Any]:
            return {"sub": request.claims["sub"]}

    else:

        @app.get("/me", auth="jwt")
        async def me_async(request: Request) -> dict[str, Any]:
            return {"sub": request.claims["sub"]}

    return app


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pywatt")]


def assert_nothing_leaks(caplog: pytest.LogCaptureFixture) -> None:
    for r in records(caplog):
        text = r.getMessage()
        assert SECRET_TOKEN not in text and SECRET_TOKEN.split(".")[2] not in text, text
        assert KEY.decode() not in text
        assert r.exc_info is None or r.exc_info[0] is None, (r.name, text)  # no traceback


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_refusals_are_logged_at_info_with_the_reason(
    driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(make(driver, True), secrets={"JWT_SECRET": KEY.decode()}) as client:
        caplog.clear()
        assert client.get("/me").status_code == 401
        bearer = {"authorization": f"Bearer {SECRET_TOKEN}"}
        assert client.get("/me", headers=bearer).status_code == 401
        assert client.get("/me", headers={"authorization": "Bearer a b"}).status_code == 400
    jwt = [r for r in records(caplog) if r.name == "pywatt.jwt"]
    assert [(r.levelno, r.getMessage()) for r in jwt] == [
        (logging.INFO, "jwt: refused GET /me: missing_token"),
        (logging.INFO, "jwt: refused GET /me: expired"),
        (logging.INFO, "jwt: refused GET /me: invalid_request"),
    ]
    assert not [r for r in records(caplog) if r.levelno >= logging.WARNING]
    assert_nothing_leaks(caplog)


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_keys_unavailable_is_one_warning_per_cause(
    driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bearer = {"authorization": f"Bearer {SECRET_TOKEN}"}
    with TestClient(make(driver, False)) as client:  # the orchestrator has no JWT_SECRET
        for _ in range(3):
            assert client.get("/me", headers=bearer).status_code == 503
    warnings = [r for r in records(caplog) if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelno) for r in warnings] == [("pywatt.jwt", logging.WARNING)]
    assert "keys_unavailable" in warnings[0].getMessage()
    assert "not received yet: 'JWT_SECRET'" in warnings[0].getMessage()
    assert_nothing_leaks(caplog)

    caplog.clear()
    short = "too-short"  # a value that is not a usable key: another cause, logged once
    with TestClient(make(driver, True), secrets={"JWT_SECRET": short}) as client:
        for _ in range(3):
            assert client.get("/me", headers=bearer).status_code == 503
    warnings = [r for r in records(caplog) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not a usable key" in warnings[0].getMessage()
    assert short not in warnings[0].getMessage()
    assert_nothing_leaks(caplog)


def fastapi_module(prefetch: bool = True) -> Any:
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()
    api.add_middleware(pywatt_asyncio.JwtAsgiMiddleware, secrets=["JWT_SECRET"])

    @api.get("/me")
    async def me() -> dict[str, str]:
        return {}

    return pywatt_asyncio.asgi_module(api, secrets=["JWT_SECRET"] if prefetch else [])


def flask_module(prefetch: bool = True) -> Any:
    flask = pytest.importorskip("flask")
    web = flask.Flask(__name__)
    pywatt_sync.FlaskJwt(web, secrets=["JWT_SECRET"])

    @web.get("/me")
    def me() -> dict[str, str]:
        return {}

    return pywatt_sync.wsgi_module(web, secrets=["JWT_SECRET"] if prefetch else [])


@pytest.mark.parametrize("make_app", [fastapi_module, flask_module], ids=["asgi", "wsgi"])
def test_middleware_logs_alike(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bearer = {"authorization": f"Bearer {SECRET_TOKEN}"}
    with TestClient(make_app(), secrets={"JWT_SECRET": KEY.decode()}) as client:
        caplog.clear()
        assert client.get("/me").status_code == 401
        assert client.get("/me", headers=bearer).status_code == 401
    jwt = [(r.levelno, r.getMessage()) for r in records(caplog) if r.name == "pywatt.jwt"]
    assert jwt == [
        (logging.INFO, "jwt: refused GET /me: missing_token"),
        (logging.INFO, "jwt: refused GET /me: expired"),
    ]
    assert_nothing_leaks(caplog)

    caplog.clear()
    with TestClient(make_app(prefetch=False)) as client:  # no JWT_SECRET: 503, one warning
        for _ in range(3):
            assert client.get("/me", headers=bearer).status_code == 503
    jwt = [(r.levelno, r.getMessage()) for r in records(caplog) if r.name == "pywatt.jwt"]
    assert [level for level, _ in jwt] == [logging.WARNING], jwt
    assert_nothing_leaks(caplog)
