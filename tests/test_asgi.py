"""ASGI adapter: real FastAPI/Starlette apps and raw ASGI callables, in-process.

Everything goes through the public names: ``pywatt_proto.Request.from_target`` builds
the request exactly as a module builds it from an ``http_request`` line, and
``pywatt_asyncio.AsgiApp`` runs the app. End-to-end runs over real pipes are in
``test_contract.py`` / ``test_e2e_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from modproc import INIT, WAIT, ModuleProcess, Orchestrator

import pywatt_proto as pw
from pywatt_asyncio import AsgiApp, LifespanFailed, asgi_module, dispatch
from pywatt_proto import Announce

ALL_BYTES = bytes(range(256))


async def call(
    app: AsgiApp,
    method: str,
    uri: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> pw.Response:
    req = pw.Request.from_target(method, uri, headers or {}, body or b"")
    return await app.handle(req)


def make_fastapi() -> tuple[FastAPI, dict[str, Any]]:
    events: dict[str, Any] = {"startup": 0, "shutdown": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events["startup"] += 1
        yield {"greeting": "hello from lifespan"}
        events["shutdown"] += 1

    api = FastAPI(lifespan=lifespan)

    @api.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None) -> Any:
        return {"item_id": item_id, "q": q}

    @api.get("/multi")
    async def multi(request: Request) -> Any:
        return {"tags": request.query_params.getlist("tag")}

    @api.get("/files/{name:path}")
    async def files(name: str, request: Request) -> Any:
        return {"name": name, "raw_path": request.scope["raw_path"].decode()}

    @api.post("/echo")
    async def echo(request: Request) -> Response:
        data = await request.body()
        return Response(content=data, media_type="application/octet-stream")

    @api.get("/headers")
    async def headers(request: Request) -> Any:
        return {"x-custom": request.headers.get("x-custom"), "ua": request.headers["user-agent"]}

    @api.get("/cookies")
    async def cookies(request: Request) -> Response:
        resp = JSONResponse({"session": request.cookies.get("session")})
        resp.set_cookie("a", "1", expires="Wed, 21 Oct 2037 07:28:00 GMT")
        resp.set_cookie("b", "2")
        return resp

    @api.get("/state")
    async def state(request: Request) -> Any:
        return {"greeting": request.state.greeting}

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @api.get("/boom")
    async def boom() -> Any:
        raise RuntimeError("secret internals")

    return api, events


@pytest.fixture
async def fastapi_app() -> AsyncIterator[tuple[AsgiApp, dict[str, Any]]]:
    api, events = make_fastapi()
    app = AsgiApp(api)
    await app.startup()
    yield app, events
    await app.shutdown()


async def test_lifespan_runs_once_and_state_reaches_requests() -> None:
    api, events = make_fastapi()
    app = AsgiApp(api)
    await app.startup()
    assert events == {"startup": 1, "shutdown": 0}
    resp = await call(app, "GET", "/state")
    assert resp.status == 200 and resp.body == b'{"greeting":"hello from lifespan"}'
    await app.shutdown()
    assert events == {"startup": 1, "shutdown": 1}


async def test_path_and_query_parameters(fastapi_app: tuple[AsgiApp, dict[str, Any]]) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/items/42?q=caf%C3%A9")
    assert resp.status == 200
    assert resp.body == '{"item_id":42,"q":"café"}'.encode()
    resp = await call(app, "GET", "/items/notanint")
    assert resp.status == 422
    resp = await call(app, "GET", "/multi?tag=a&tag=b&tag=c%20d")
    assert resp.body == b'{"tags":["a","b","c d"]}'


async def test_percent_decoded_path_and_raw_path(
    fastapi_app: tuple[AsgiApp, dict[str, Any]],
) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/files/a%20b/c%C3%A9.txt")
    assert resp.status == 200
    assert resp.body == '{"name":"a b/cé.txt","raw_path":"/files/a%20b/c%C3%A9.txt"}'.encode()


async def test_binary_body_all_byte_values(fastapi_app: tuple[AsgiApp, dict[str, Any]]) -> None:
    app, _ = fastapi_app
    resp = await call(app, "POST", "/echo", {"content-type": "application/octet-stream"}, ALL_BYTES)
    assert resp.status == 200
    assert resp.body == ALL_BYTES
    assert dict(resp.headers)["content-length"] == "256"


async def test_request_headers_reach_app(fastapi_app: tuple[AsgiApp, dict[str, Any]]) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/headers", {"X-Custom": "v1", "User-Agent": "pywatt-test"})
    assert resp.body == b'{"x-custom":"v1","ua":"pywatt-test"}'


async def test_cookies_in_and_multiple_set_cookie_out(
    fastapi_app: tuple[AsgiApp, dict[str, Any]],
) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/cookies", {"cookie": "session=abc; other=x"})
    assert resp.body == b'{"session":"abc"}'
    cookies = [v for k, v in resp.headers if k.lower() == "set-cookie"]
    assert len(cookies) == 2
    assert cookies[0].startswith("a=1;") and "expires=Wed, 21 Oct 2037" in cookies[0]
    assert cookies[1].startswith("b=2;")


async def test_streaming_response_is_collected(
    fastapi_app: tuple[AsgiApp, dict[str, Any]],
) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/stream")
    assert resp.status == 200
    assert resp.body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"


async def test_not_found_and_method_not_allowed(
    fastapi_app: tuple[AsgiApp, dict[str, Any]],
) -> None:
    app, _ = fastapi_app
    assert (await call(app, "GET", "/nope")).status == 404
    assert (await call(app, "DELETE", "/echo")).status == 405


async def test_app_exception_is_500_without_internals(
    fastapi_app: tuple[AsgiApp, dict[str, Any]],
) -> None:
    app, _ = fastapi_app
    resp = await call(app, "GET", "/boom")
    assert resp.status == 500
    assert b"secret" not in resp.body
    # the app keeps serving
    assert (await call(app, "GET", "/items/1")).status == 200


# -- raw ASGI apps: exact scope fields and protocol edge cases --------------------------


class ScopeRecorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")  # ASGI: server must carry on
        self.scopes.append(dict(scope))
        message = await receive()
        self.bodies.append(message["body"])
        assert message["more_body"] is False
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"part1,", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2"})


async def test_http_scope_fields_exact() -> None:
    rec = ScopeRecorder()
    app = AsgiApp(rec, root_path="/mnt")
    await app.startup()  # lifespan unsupported -> carries on
    assert app.state is None
    resp = await call(
        app,
        "post",
        "/mnt/a%2Fb/%E2%82%AC?x=1&y=%20",
        {"Host": "example.org:8443", "X-Mixed-Case": "Value"},
        b"payload",
    )
    assert (resp.status, resp.headers, resp.body) == (201, (("x-a", "1"),), b"part1,part2")
    scope = rec.scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/mnt/a/b/€"
    assert scope["raw_path"] == b"/mnt/a%2Fb/%E2%82%AC"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == "/mnt"
    assert [tuple(h) for h in scope["headers"]] == [
        (b"host", b"example.org:8443"),
        (b"x-mixed-case", b"Value"),
    ]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in scope["headers"])
    assert scope["client"] is None
    assert list(scope["server"]) == ["example.org", 8443]
    assert "state" not in scope
    assert rec.bodies == [b"payload"]
    await app.shutdown()


async def test_invalid_request_header_is_a_remote_error() -> None:
    app = AsgiApp(ScopeRecorder(), lifespan="off")
    with pytest.raises(pw.RemoteProtocolError):
        await call(app, "GET", "/", {"bad name": "v"})
    with pytest.raises(pw.RemoteProtocolError):
        await call(app, "GET", "/", {"x-ok": "line\r\nbreak"})


async def test_second_receive_waits_for_response_then_disconnects() -> None:
    seen: list[str] = []

    async def app_(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await receive()
        waiter = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        seen.append("pending" if not waiter.done() else "early")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        seen.append((await waiter)["type"])

    resp = await call(AsgiApp(app_, lifespan="off"), "GET", "/")
    assert resp.body == b"ok"
    assert seen == ["pending", "http.disconnect"]


async def test_oversize_response_is_502() -> None:
    async def big(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(10):
            await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    resp = await call(AsgiApp(big, lifespan="off", max_body=512), "GET", "/")
    assert resp.status == 502
    resp = await call(AsgiApp(big, lifespan="off", max_body=1000), "GET", "/")
    assert resp.status == 200 and len(resp.body) == 1000


@pytest.mark.parametrize(
    "messages",
    [
        [],  # returns without answering
        [{"type": "http.response.body", "body": b"x"}],  # body before start
        [{"type": "http.response.start", "status": "200", "headers": []}],  # bad status type
        [{"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]}],
        [{"type": "http.response.start", "status": 200}],  # never finished
        [{"type": "websocket.accept"}],
    ],
)
async def test_protocol_misuse_gives_500(messages: list[dict[str, Any]]) -> None:
    async def bad(scope: Any, receive: Any, send: Any) -> None:
        for m in messages:
            await send(m)

    resp = await call(AsgiApp(bad, lifespan="off"), "GET", "/")
    assert resp.status == 500


async def test_lifespan_startup_failed_raises() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "db down"})

    with pytest.raises(LifespanFailed, match="db down"):
        await AsgiApp(failing).startup()


async def test_lifespan_on_requires_support() -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

    await AsgiApp(http_only).startup()  # auto: fine
    with pytest.raises(LifespanFailed):
        await AsgiApp(http_only, lifespan="on").startup()


async def test_lifespan_shutdown_failed_raises() -> None:
    async def app_(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})

    app = AsgiApp(app_)
    await app.startup()
    assert app.state == {}
    with pytest.raises(LifespanFailed, match="flush failed"):
        await app.shutdown()


async def test_requests_run_concurrently() -> None:
    gate = asyncio.Event()

    async def app_(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            await gate.wait()
        else:
            gate.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    app = AsgiApp(app_, lifespan="off")
    first = asyncio.ensure_future(call(app, "GET", "/wait"))
    second = await call(app, "GET", "/go")
    assert second.body == b"/go"
    assert (await first).body == b"/wait"


# -- as a module process: lifespan order, failure, announce, real HTTP --------------------

LIFESPAN_APP = """
import contextlib
import pathlib
import sys

from fastapi import FastAPI

MARKS = pathlib.Path(sys.argv[1])


@contextlib.asynccontextmanager
async def lifespan(app):
    if MARKS.joinpath("fail").exists():
        raise RuntimeError("startup refused")
    MARKS.joinpath("started").write_text("yes")
    print("lifespan startup ran")
    yield {"token": "from-lifespan"}
    MARKS.joinpath("stopped").write_text("yes")


app = FastAPI(lifespan=lifespan)


@app.get("/state")
async def state(request: __import__("fastapi").Request):
    return {"token": request.state.token}


if __name__ == "__main__":
    from pywatt_asyncio import asgi_module

    asgi_module(app).run()
"""


def _lifespan_module(tmp_path: Path) -> ModuleProcess:
    script = tmp_path / "lifespan_app.py"
    script.write_text(LIFESPAN_APP)
    return ModuleProcess.python(script, str(tmp_path))


def test_lifespan_startup_before_announce_shutdown_at_exit(tmp_path: Path) -> None:
    mod = _lifespan_module(tmp_path)
    try:
        mod.send(INIT)
        announce = mod.next()
        assert isinstance(announce, Announce)
        assert (tmp_path / "started").exists(), "startup must finish before the announce"
        assert not (tmp_path / "stopped").exists()
        assert [(e.path, tuple(e.methods)) for e in announce.endpoints if e.path == "/state"] == [
            ("/state", ("GET",))
        ]
        mod.request("s", "GET", "/state")
        assert mod.response("s").body == b'{"token":"from-lifespan"}'
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert (tmp_path / "stopped").exists(), "shutdown runs when the module stops"
    assert "lifespan startup ran" in mod.stderr
    assert len(mod.raw_lines) == 2


def test_lifespan_startup_failure_exits_without_announcing(tmp_path: Path) -> None:
    (tmp_path / "fail").write_text("1")
    mod = _lifespan_module(tmp_path)
    try:
        mod.send(INIT)
        assert mod.wait() == 1
    finally:
        mod.stop()
    assert mod.raw_lines == []
    assert "startup refused" in mod.stderr


def test_bare_asgi_callable_announces_catch_all(tmp_path: Path) -> None:
    script = tmp_path / "bare_asgi.py"
    script.write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http'\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': scope['path'].encode()})\n"
    )
    mod = ModuleProcess([sys.executable, "-m", "pywatt_asyncio._apprunner", str(script)])
    try:
        mod.send(INIT)
        announce = mod.next()
        assert isinstance(announce, Announce)
        assert {e.path for e in announce.endpoints} == {"/", "/{path:path}"}
        mod.request("x", "PATCH", "/any/where%20else")
        assert mod.response("x").body == b"/any/where else"
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()


@pytest.mark.parametrize("target", ["examples/fastapi_app.py", "examples.fastapi_app:app"])
def test_fastapi_example_over_http(target: str) -> None:
    orch = Orchestrator(target)
    try:
        with httpx.Client(base_url=orch.url, timeout=WAIT) as client:
            assert client.get("/hello").json() == {"message": "Hello from FastAPI on PyWatt!"}
            created = client.post("/items", json={"name": "pen", "price": 1.5})
            assert created.status_code == 201
            item_id = created.json()["item_id"]
            got = client.get(f"/items/{item_id}", params={"q": "x"}).json()
            assert got == {"item_id": item_id, "q": "x", "item": {"name": "pen", "price": 1.5}}
            assert client.get("/items/abc").status_code == 422
            cookies = client.get("/cookies").headers.get_list("set-cookie")
            assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]
    finally:
        assert orch.stop() == 0
    assert "FastAPI startup" in orch.stderr
    assert "FastAPI shutdown" in orch.stderr


# -- asgi_module: announce and routing ----------------------------------------------------


def test_asgi_module_announces_app_routes_and_mounts() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        pass

    app = Starlette(
        routes=[
            Route("/x/{n:int}", plain, methods=["GET", "POST"]),
            Mount("/sub", routes=[Route("/y", plain)]),
            Mount("/static", app=raw_app),
        ]
    )
    table = {e.path: e.methods for e in asgi_module(app).endpoints()}
    assert table == {
        "/x/{n:int}": ("GET", "POST"),
        "/sub/y": ("GET",),
        "/static/{path:path}": ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
    }


async def test_asgi_module_decorator_routes_win_over_the_app() -> None:
    api, _ = make_fastapi()
    mod = asgi_module(api, lifespan="off")

    @mod.get("/health")
    async def health(request: pw.Request) -> dict[str, str]:
        return {"status": "module"}

    assert mod.endpoints()[0] == pw.Endpoint(path="/health", methods=("GET",))
    resp = await dispatch(mod.router, pw.Request.from_target("GET", "/health"), time.monotonic)
    assert resp.json() == {"status": "module"}
    resp = await dispatch(mod.router, pw.Request.from_target("GET", "/items/5"), time.monotonic)
    assert resp.json() == {"item_id": 5, "q": None}
    # HEAD goes to the app too (FastAPI answers 405 for GET-only routes, as under uvicorn);
    # the router strips the body of every HEAD answer.
    resp = await dispatch(mod.router, pw.Request.from_target("HEAD", "/items/5"), time.monotonic)
    assert (resp.status, resp.header("allow"), resp.body) == (405, "GET", b"")


# -- gateway edge cases (pywatt_proto's public conversion helpers) -----------------------


async def test_scope_host_forms_and_non_latin1_header() -> None:
    rec = ScopeRecorder()
    app = AsgiApp(rec, lifespan="off")
    await call(app, "GET", "/", {"host": "[::1]:8443", "x-euro": "€"})
    await call(app, "GET", "/", {"host": "example.org:notaport"})
    await call(app, "GET", "/")
    v6, bad_port, no_host = rec.scopes
    assert list(v6["server"]) == ["[::1]", 8443]
    assert [tuple(h) for h in v6["headers"]][1] == (b"x-euro", "€".encode())
    assert list(bad_port["server"]) == ["example.org", 80]
    assert no_host["server"] is None


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.response.start", "status": 200, "headers": [(b"only-name",)]}],
        [{"type": "http.response.start", "status": 200, "headers": [(1, 2)]}],
        [
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-n", b"v")] * (pw.MAX_RESPONSE_HEADERS + 1),
            }
        ],
        [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": "text, not bytes"},
        ],
        [{"type": "http.response.start", "status": 99, "headers": []}],
    ],
)
async def test_bad_response_messages_give_500(messages: list[dict[str, Any]]) -> None:
    async def bad(scope: Any, receive: Any, send: Any) -> None:
        for m in messages:
            await send(m)

    assert (await call(AsgiApp(bad, lifespan="off"), "GET", "/")).status == 500


def test_response_collector_refuses_use_after_finish() -> None:
    collector = pw.ResponseCollector(max_body=10)
    collector.start(200, [("content-type", "text/plain")])
    collector.body(b"0123456789")
    resp = collector.finish()
    assert (resp.status, resp.body) == (200, b"0123456789")
    with pytest.raises(pw.LocalProtocolError):
        collector.start(200, [])
    with pytest.raises(pw.LocalProtocolError):
        collector.body(b"x")
    with pytest.raises(pw.LocalProtocolError):
        pw.ResponseCollector().finish()  # never started


_PROPERTY_API = FastAPI()


@_PROPERTY_API.post("/files/{name:path}")
async def _property_files(name: str, request: Request) -> dict[str, Any]:
    return {"name": name, "size": len(await request.body())}


@settings(max_examples=150, deadline=None)
@given(
    # "/" excluded: the decoded ASGI path cannot tell %2F from / (raw_path can).
    name=st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
        min_size=1,
        max_size=20,
    ).filter(lambda s: s not in (".", "..")),
    body=st.binary(max_size=512),
)
def test_property_path_text_and_body_survive_asgi(name: str, body: bytes) -> None:
    app = AsgiApp(_PROPERTY_API, lifespan="off")
    resp = asyncio.run(call(app, "POST", "/files/" + quote(name, safe=""), {}, body))
    assert resp.status == 200, resp.body
    assert json.loads(resp.body) == {"name": name, "size": len(body)}
