"""JWT middleware with real apps: pywatt Router, FastAPI/Starlette (ASGI), Flask (WSGI)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from flask import Flask, g
from test_jwt_helpers import KEY

from pywatt_asyncio import JwtAsgiMiddleware
from pywatt_asyncio import jwt_authenticator as async_jwt_authenticator
from pywatt_proto import AuthError, Router
from pywatt_proto import Request as PwRequest
from pywatt_proto.jwt import (
    JwtAuthenticator,
    JwtSecretAuthenticator,
    JwtValidator,
    PublicPaths,
    auth_error_response,
    encode,
    parse_bearer,
)
from pywatt_sync import FlaskJwt, JwtWsgiMiddleware, wsgi_claims
from pywatt_sync import jwt_authenticator as sync_jwt_authenticator

NOW = time.time()
VALIDATOR = JwtValidator(KEY, audience="svc", leeway=0)
GOOD = encode({"sub": "alice", "aud": "svc", "exp": NOW + 600}, KEY)
EXPIRED = encode({"sub": "alice", "aud": "svc", "exp": NOW - 600}, KEY)
FORGED = encode({"sub": "mallory", "aud": "svc", "exp": NOW + 600}, b"m" * 32)
CHALLENGE_INVALID = 'Bearer error="invalid_token"'


# ---------------------------------------------------------------- core bearer parsing


@pytest.mark.parametrize(
    "value", [f"Bearer {GOOD}", f"bearer {GOOD}", f"BEARER  {GOOD} ", f"  BeArEr {GOOD}"]
)
def test_bearer_scheme_is_case_insensitive(value: str) -> None:
    assert parse_bearer(value) == GOOD


@pytest.mark.parametrize(
    ("value", "reason", "status", "challenge"),
    [
        (None, "missing_token", 401, "Bearer"),
        (f"Basic {GOOD}", "missing_token", 401, "Bearer"),
        (f"Bearer{GOOD}", "missing_token", 401, "Bearer"),
        ("Bearer", "invalid_request", 400, 'Bearer error="invalid_request"'),
        ("Bearer   ", "invalid_request", 400, 'Bearer error="invalid_request"'),
        ("Bearer a b", "invalid_request", 400, 'Bearer error="invalid_request"'),
        (f"Bearer\t{GOOD}", "missing_token", 401, "Bearer"),
        (f"Bearer \t{GOOD}", "invalid_request", 400, 'Bearer error="invalid_request"'),
        (f"Bearer {GOOD}\n", "invalid_request", 400, 'Bearer error="invalid_request"'),
    ],
)
def test_bearer_failures(value: str | None, reason: str, status: int, challenge: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_bearer(value)
    assert (info.value.reason, info.value.status, info.value.www_authenticate) == (
        reason,
        status,
        challenge,
    )


def test_bearer_parsing_is_linear_in_the_header_length() -> None:
    # Before: the credentials regex backtracked quadratically on a run of blanks inside
    # the value (a 32 KB header cost ~2.5 s of CPU; this one, minutes).
    started = time.perf_counter()
    for value in ("Bearer x" + " \t" * 100_000 + "!", "Bearer " + " " * 200_000 + "x!"):
        with pytest.raises(AuthError):
            parse_bearer(value)
    assert time.perf_counter() - started < 2.0


def test_error_response_does_not_leak() -> None:
    status, headers, body = auth_error_response(AuthError("expired"))
    assert status == 401
    assert ("www-authenticate", CHALLENGE_INVALID) in headers
    assert body == b'{"error":"unauthorized"}'
    assert b"expired" not in body


def test_public_paths() -> None:
    public = PublicPaths(["/health", "/static/*"])
    assert "/health" in public
    assert "/static/a/b.css" in public
    assert "/healthz" not in public
    assert "/api" not in public
    assert 3 not in public


# ---------------------------------------------------------------- pywatt router hook


def _router(authenticator: Any) -> Router:
    router = Router(authenticator=authenticator)

    @router.get("/me", auth="jwt")
    def me(request: PwRequest) -> dict[str, object]:
        return {"sub": request.claims["sub"]}

    @router.get("/health")
    def health(request: PwRequest) -> str:
        return "ok"

    return router


def _call(router: Router, headers: dict[str, str], path: str = "/me", now: float = NOW) -> Any:
    plan = router.plan(PwRequest.from_target("GET", path, headers), now)
    try:
        request = router.enter(plan, plan.request)
    except AuthError as exc:
        return router.error_response(exc)
    assert plan.route is not None
    return router.to_response(plan.route.handler(request))


def test_router_authenticator_hands_claims_to_handler() -> None:
    router = _router(JwtAuthenticator(VALIDATOR))
    ok = _call(router, {"Authorization": f"Bearer {GOOD}"})
    assert ok.status == 200
    assert ok.body == b'{"sub":"alice"}'
    assert _call(router, {}, path="/health").status == 200


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"authorization": f"Bearer {EXPIRED}"}, CHALLENGE_INVALID),
        ({"authorization": f"Bearer {FORGED}"}, CHALLENGE_INVALID),
    ],
)
def test_router_authenticator_refuses(headers: dict[str, str], challenge: str) -> None:
    response = _call(_router(JwtAuthenticator(VALIDATOR)), headers)
    assert response.status == 401
    assert response.header("www-authenticate") == challenge
    assert b"expired" not in response.body and b"signature" not in response.body


def test_router_authenticator_reads_epoch_clock_not_router_now() -> None:
    # the drivers pass a monotonic reading as `now`; the driver helpers use time.time
    for factory in (async_jwt_authenticator, sync_jwt_authenticator):
        router = _router(factory(VALIDATOR))
        ok = _call(router, {"Authorization": f"Bearer {GOOD}"}, now=12.5)
        assert ok.status == 200
    # without a clock, `now` is taken as epoch time
    late = _call(
        _router(JwtAuthenticator(VALIDATOR)), {"Authorization": f"Bearer {GOOD}"}, now=NOW + 601
    )
    assert late.status == 401


def test_router_authenticator_labels_and_duplicate_headers() -> None:
    auth = JwtAuthenticator(VALIDATOR, labels=["admin"])
    assert _call(_router(auth), {"Authorization": f"Bearer {GOOD}"}).status == 500
    request = PwRequest.from_target(
        "GET", "/me", [("authorization", f"Bearer {GOOD}"), ("authorization", f"Bearer {GOOD}")]
    )
    with pytest.raises(AuthError) as info:
        JwtAuthenticator(VALIDATOR)(request, "jwt", NOW)
    assert info.value.status == 400


# ---------------------------------------------------------------- ASGI: FastAPI


def fastapi_client() -> TestClient:
    app = FastAPI()
    app.add_middleware(JwtAsgiMiddleware, validator=VALIDATOR, public_paths=["/health", "/pub/*"])

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {
            "claims": request.state.claims,
            "same": request.state.jwt_claims == request.state.claims,
        }

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        return {"ok": True, "has_claims": hasattr(request.state, "claims")}

    @app.get("/pub/x")
    async def pub() -> str:
        return "public"

    return TestClient(app)


def test_fastapi_valid_token_reaches_handler_with_claims() -> None:
    client = fastapi_client()
    r = client.get("/me", headers={"Authorization": f"bearer {GOOD}"})
    assert r.status_code == 200
    assert r.json() == {"claims": {"sub": "alice", "aud": "svc", "exp": NOW + 600}, "same": True}


def test_fastapi_public_paths_skip_auth() -> None:
    client = fastapi_client()
    assert client.get("/health").json() == {"ok": True, "has_claims": False}
    assert client.get("/pub/x").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        ({}, 401, "Bearer"),
        ({"Authorization": f"Basic {GOOD}"}, 401, "Bearer"),
        ({"Authorization": f"Bearer {EXPIRED}"}, 401, CHALLENGE_INVALID),
        ({"Authorization": f"Bearer {FORGED}"}, 401, CHALLENGE_INVALID),
        ({"Authorization": "Bearer not.a.token"}, 401, CHALLENGE_INVALID),
        ({"Authorization": "Bearer"}, 400, 'Bearer error="invalid_request"'),
    ],
)
def test_fastapi_refusals(headers: dict[str, str], status: int, challenge: str) -> None:
    r = fastapi_client().get("/me", headers=headers)
    assert r.status_code == status
    assert r.headers["www-authenticate"] == challenge
    assert r.json() in ({"error": "unauthorized"}, {"error": "invalid_request"})


def test_fastapi_rotation_while_running() -> None:
    validator = JwtValidator(KEY, leeway=0)
    app = FastAPI()
    app.add_middleware(JwtAsgiMiddleware, validator=validator)

    @app.get("/me")
    async def me(request: Request) -> Any:
        return request.state.claims

    client = TestClient(app)
    new_key = b"n" * 32
    token = encode({"v": 2}, new_key)
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    validator.set_keys(new_key)
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).json() == {"v": 2}


async def test_asgi_websocket_gets_claims_or_is_closed_1008() -> None:
    # Raw ASGI (no TestClient): the scope the app sees, and what is sent on refusal.
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    mw = JwtAsgiMiddleware(inner, VALIDATOR)
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    shared_state = {"from_lifespan": 1}
    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"authorization", f"Bearer {GOOD}".encode())],
        "state": shared_state,
    }
    await mw(scope, receive, send)
    assert seen[0]["state"]["claims"]["sub"] == "alice"
    assert seen[0]["state"]["from_lifespan"] == 1
    assert shared_state == {"from_lifespan": 1}  # the server's dict is not mutated
    assert sent == []
    await mw({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert len(seen) == 1
    two = [(b"authorization", f"Bearer {GOOD}".encode())] * 2
    await mw({"type": "http", "path": "/x", "headers": two}, receive, send)
    assert sent[1]["status"] == 400


def test_asgi_lifespan_passes_through() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(JwtAsgiMiddleware, validator=VALIDATOR)

    @app.get("/me")
    async def me(request: Request) -> Any:
        return request.state.claims["sub"]

    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/me", headers={"Authorization": f"Bearer {GOOD}"}).json() == "alice"
    assert events == ["startup", "shutdown"]


# ---------------------------------------------------------------- WSGI: Flask


def flask_app() -> Flask:
    app = Flask(__name__)
    FlaskJwt(app, validator=VALIDATOR, public_paths=["/health"])

    @app.get("/me")
    def me() -> Any:
        from flask import request

        return {"g": g.claims, "environ": wsgi_claims(request.environ), "jwt": g.jwt_claims}

    @app.get("/health")
    def health() -> Any:
        return {"claims": getattr(g, "claims", None)}

    return app


def test_flask_valid_token_claims_on_g_and_environ() -> None:
    client = flask_app().test_client()
    r = client.get("/me", headers={"Authorization": f"BEARER {GOOD}"})
    assert r.status_code == 200
    claims = {"sub": "alice", "aud": "svc", "exp": NOW + 600}
    assert r.get_json() == {"g": claims, "environ": claims, "jwt": claims}


def test_flask_public_path_and_refusals() -> None:
    client = flask_app().test_client()
    assert client.get("/health").get_json() == {"claims": None}
    for headers, challenge in (
        ({}, "Bearer"),
        ({"Authorization": f"Bearer {EXPIRED}"}, CHALLENGE_INVALID),
        ({"Authorization": f"Bearer {FORGED}"}, CHALLENGE_INVALID),
    ):
        r = client.get("/me", headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == challenge
        assert r.get_json() == {"error": "unauthorized"}


def test_wsgi_middleware_ignores_spoofed_environ_claims() -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(wsgi_claims(environ))
        start_response("200 OK", [])
        return [b"ok"]

    mw = JwtWsgiMiddleware(app, VALIDATOR, public_paths=["/open"])
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    body = mw(
        {"PATH_INFO": "/open", "pywatt.jwt.claims": {"sub": "root"}},
        start_response,
    )
    assert list(body) == [b"ok"]
    assert seen == [None]
    body = mw({"PATH_INFO": "/x", "HTTP_AUTHORIZATION": "Bearer"}, start_response)
    assert list(body) == [b'{"error":"invalid_request"}']
    assert statuses == ["200 OK", "400 Bad Request"]


def test_wsgi_middleware_status_line_has_the_standard_reason() -> None:
    # keys from a module's secrets, outside any module: 503 keys_unavailable
    mw = JwtWsgiMiddleware(lambda environ, start_response: [], secrets=["JWT_SECRET"])
    statuses: list[str] = []
    mw({"PATH_INFO": "/x"}, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["503 Service Unavailable"]


# ---------------------------------------------------------------- keys from secrets


def test_secret_authenticator_fails_closed_until_keys_arrive() -> None:
    store: dict[str, str] = {}
    auth = JwtSecretAuthenticator({"jwt": "k1"}, lookup=store.get, audience="svc", leeway=0)
    router = _router(auth)
    headers = {"Authorization": f"Bearer {GOOD}"}
    first = _call(router, headers)
    assert first.status == 503
    assert auth.validator is None
    store["jwt"] = "short"  # not a usable key: still unavailable, never open
    assert _call(router, headers).status == 503
    store["jwt"] = KEY.decode()
    assert _call(router, headers).status == 200
    assert auth.validator is not None
    assert auth.names == ("jwt",)


def test_secret_authenticator_rotation_and_retirement() -> None:
    auth = JwtSecretAuthenticator(["jwt"], audience="svc", leeway=0)
    assert auth.update("jwt", KEY)
    router = _router(auth)
    new_key = b"r" * 40
    new = encode({"sub": "bob", "aud": "svc", "exp": NOW + 600}, new_key)
    assert _call(router, {"Authorization": f"Bearer {new}"}).status == 401
    assert auth.update("jwt", new_key)
    assert _call(router, {"Authorization": f"Bearer {new}"}).status == 200
    assert _call(router, {"Authorization": f"Bearer {GOOD}"}).status == 200  # grace
    auth.retire_previous()
    assert _call(router, {"Authorization": f"Bearer {GOOD}"}).status == 401
    with pytest.raises(ValueError):
        JwtSecretAuthenticator(["jwt"], leeway=-1)


def test_authenticator_reads_plain_mapping_headers_case_insensitively() -> None:
    class Req:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    auth = JwtAuthenticator(VALIDATOR)
    assert auth(Req({"AUTHORIZATION": f"Bearer {GOOD}"}), "jwt", NOW)["sub"] == "alice"
    assert auth(Req({"authorization": f"Bearer {GOOD}"}), "jwt", NOW)["sub"] == "alice"
    with pytest.raises(AuthError):
        auth(Req({"x": "y"}), "jwt", NOW)


def test_error_response_for_server_errors_has_no_challenge() -> None:
    status, headers, body = auth_error_response(
        AuthError("keys_unavailable", www_authenticate="", status=503)
    )
    assert (status, body) == (503, b'{"error":"internal"}')
    assert all(name != "www-authenticate" for name, _ in headers)
