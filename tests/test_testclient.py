"""``pywatt_sync.testing.TestClient`` (re-exported by ``pywatt_asyncio.testing``).

The same module is served in-process by both drivers and by the ASGI/WSGI adapters;
every request takes the module's full path (core, router, middleware, auth).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest
from test_jwt_helpers import KEY, OTHER_KEY

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request, Response
from pywatt_proto.jwt import encode
from pywatt_sync.testing import ModuleStopped, TestClient, TestResponse


def sync_module() -> pywatt_sync.Module:
    app = pywatt_sync.Module(secrets=["DB_URL", "JWT_SECRET"])
    pywatt_sync.module_jwt(app, {"JWT_SECRET": None})

    @app.middleware
    def stamp(request: Request, call_next: Any) -> Response:
        response: Response = call_next(request)
        return Response(
            status=response.status,
            headers=(*response.headers, ("x-stamp", "1")),
            body=response.body,
        )

    @app.get("/hello")
    def hello(request: Request) -> dict[str, Any]:
        return {"db": app.secret("DB_URL"), "pid": os.getpid()}

    @app.get("/items/{item_id:int}")
    def item(request: Request) -> dict[str, Any]:
        return {"id": request.path_params["item_id"], "q": request.query.get("q")}

    @app.post("/echo")
    def echo(request: Request) -> Response:
        ctype = request.headers.get("content-type") or ""
        return Response(status=201, headers=(("content-type", ctype),), body=request.body)

    @app.get("/me", auth="jwt")
    def me(request: Request) -> dict[str, Any]:
        return {"sub": request.claims["sub"]}

    @app.get("/boom")
    def boom(request: Request) -> None:
        raise RuntimeError("boom")

    return app


def async_module() -> pywatt_asyncio.Module:
    app = pywatt_asyncio.Module(secrets=["DB_URL", "JWT_SECRET"])
    pywatt_asyncio.module_jwt(app, {"JWT_SECRET": None})

    @app.middleware
    async def stamp(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        return Response(
            status=response.status,
            headers=(*response.headers, ("x-stamp", "1")),
            body=response.body,
        )

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, Any]:
        return {"db": await app.secret("DB_URL"), "pid": os.getpid()}

    @app.get("/items/{item_id:int}")
    async def item(request: Request) -> dict[str, Any]:
        return {"id": request.path_params["item_id"], "q": request.query.get("q")}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        ctype = request.headers.get("content-type") or ""
        return Response(status=201, headers=(("content-type", ctype),), body=request.body)

    @app.get("/me", auth="jwt")
    async def me(request: Request) -> dict[str, Any]:
        return {"sub": request.claims["sub"]}

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("boom")

    return app


SECRETS = {"DB_URL": "sqlite:///notes.db", "JWT_SECRET": KEY.decode()}


@pytest.mark.parametrize("make", [sync_module, async_module], ids=["sync", "asyncio"])
def test_full_module_path_in_process(make: Any) -> None:
    with TestClient(make(), secrets=SECRETS) as client:
        r = client.get("/hello")
        assert r.status_code == 200
        assert r.json() == {"db": "sqlite:///notes.db", "pid": os.getpid()}  # no child process
        assert r.headers["X-Stamp"] == "1"  # middleware ran; names are case-insensitive
        assert r.headers["content-type"] == "application/json"

        r = client.get("/items/7?q=a b", params={"x": "1"})
        assert r.json() == {"id": 7, "q": "a b"}
        assert client.get("/items/seven").status_code == 404

        r = client.post("/echo", json={"a": [1, 2]})
        assert (r.status_code, r.json()) == (201, {"a": [1, 2]})
        assert r.headers["content-type"] == "application/json"
        r = client.put("/echo", content=b"\x00\xff")
        assert r.status_code == 405
        r = client.post("/echo", data={"k": "v w"})
        assert (r.text, r.headers["content-type"]) == ("k=v+w", "application/x-www-form-urlencoded")
        assert client.delete("/hello").status_code == 405

        assert client.get("/me").status_code == 401
        good = {"authorization": "Bearer " + encode({"sub": "ann"}, KEY)}
        assert client.get("/me", headers=good).json() == {"sub": "ann"}

        assert client.get("/boom").status_code == 500  # answered as in production
        assert client.get("/hello").status_code == 200  # and the module keeps serving

        # secrets rotate as an orchestrator rotates them
        assert client.rotate({"JWT_SECRET": OTHER_KEY.decode()}) == ("success", None)
        new = {"authorization": "Bearer " + encode({"sub": "bob"}, OTHER_KEY)}
        assert client.get("/me", headers=new).json() == {"sub": "bob"}
    assert client.announce is None  # stopped with the block


def test_asyncio_testing_reexports_the_same_client() -> None:
    from pywatt_asyncio import testing

    assert testing.TestClient is TestClient
    assert testing.TestResponse is TestResponse


def test_asgi_and_wsgi_apps_and_adapters() -> None:
    fastapi = pytest.importorskip("fastapi")
    flask = pytest.importorskip("flask")

    api = fastapi.FastAPI()

    @api.get("/items/{item_id}")
    async def read(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    web = flask.Flask(__name__)

    @web.post("/items")
    def create() -> tuple[dict[str, Any], int]:
        return {"got": flask.request.get_json()}, 201

    for app in (api, pywatt_asyncio.asgi_module(api)):
        with TestClient(app) as client:
            assert client.get("/items/3").json() == {"id": 3}
            assert client.get("/items/x").status_code == 422
    for app in (web, pywatt_sync.wsgi_module(web)):
        with TestClient(app) as client:
            r = client.post("/items", json={"a": 1})
            assert (r.status_code, r.json()) == (201, {"got": {"a": 1}})


def test_starts_lazily_and_can_restart() -> None:
    app = sync_module()
    client = TestClient(app, secrets=SECRETS)
    assert client.announce is None
    assert client.get("/items/1").status_code == 200  # started by the first request
    paths = {e.path for e in client.announce.endpoints}
    assert {"/hello", "/items/{item_id:int}", "/me"} <= paths
    client.close()
    with TestClient(app, secrets=SECRETS) as again:  # the same app serves again
        assert again.get("/items/2").json()["id"] == 2


def test_failed_start_up_raises() -> None:
    app = pywatt_sync.Module()

    @app.on_startup
    def fail() -> None:
        raise RuntimeError("no database")

    with pytest.raises(ModuleStopped) as info, TestClient(app):
        pass
    assert info.value.code == 1


def test_slow_handler_is_answered_504() -> None:
    app = pywatt_sync.Module()
    release = threading.Event()

    @app.get("/slow")
    def slow(request: Request) -> str:
        release.wait(10)
        return "late"

    try:
        with TestClient(app, timeout=0.5) as client:
            assert client.get("/slow").status_code == 504
            release.set()
    finally:
        release.set()


@pytest.mark.parametrize("make", [sync_module, async_module], ids=["sync", "asyncio"])
def test_raise_server_exceptions(make: Any) -> None:
    with TestClient(make(), secrets=SECRETS, raise_server_exceptions=True) as client:
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")
        assert client.get("/hello").status_code == 200  # nothing left over
        assert client.get("/nowhere").status_code == 404  # HTTP errors are answers


def test_raise_server_exceptions_from_a_wsgi_app() -> None:
    flask = pytest.importorskip("flask")
    web = flask.Flask(__name__)
    web.testing = True  # Flask lets the exception out to the server (PROPAGATE_EXCEPTIONS)

    @web.get("/boom")
    def boom() -> str:
        raise KeyError("missing")

    with TestClient(web, raise_server_exceptions=True) as client, pytest.raises(KeyError):
        client.get("/boom")


def test_module_calls_are_delivered_to_peer_modules() -> None:
    pricing = pywatt_sync.Module()

    @pricing.post("/price")
    def price(request: Request) -> dict[str, Any]:
        source = request.headers.get("x-pywatt-source-module")
        return {"sku": request.json()["sku"], "price": 3, "caller": source}

    gateway = pywatt_asyncio.Module()

    @gateway.get("/quote/{sku}")
    async def quote(request: Request) -> Any:
        return await gateway.call_module("pricing", "/price", {"sku": request.path_params["sku"]})

    @gateway.get("/missing")
    async def missing(request: Request) -> Any:
        try:
            await gateway.call_module("billing", "/x", {})
        except Exception as exc:
            return {"error": type(exc).__name__}
        return {}

    with TestClient(gateway, module_id="gateway", modules={"pricing": pricing}) as client:
        assert client.get("/quote/a1").json() == {"sku": "a1", "price": 3, "caller": "gateway"}
        assert client.get("/missing").json() == {"error": "UnknownModuleError"}


def test_port_request_is_answered_as_pywatt_run_does() -> None:
    # A port already taken is not offered: another free one is (allocate_port).
    app = pywatt_sync.Module()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]

        @app.get("/port")
        def port(request: Request) -> dict[str, int]:
            return {"port": app.negotiate_port(busy).port}

        with TestClient(app) as client:
            got = client.get("/port").json()["port"]
    assert got != busy
    assert got > 0


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_an_asyncio_module_answers_500_to_a_handler_raising_systemexit(
    exc_type: type[BaseException],
) -> None:
    """As the blocking module and uvicorn do: the handler is not the process (an async
    handler's exception used to leave the event loop and stop the module)."""
    import asyncio

    app = pywatt_asyncio.Module()

    @app.get("/async")
    async def leave_async(request: Request) -> str:
        await asyncio.sleep(0)
        raise exc_type(3)

    @app.get("/plain")
    def leave(request: Request) -> str:
        raise exc_type(3)

    @app.get("/hello")
    async def hello(request: Request) -> str:
        return "hi"

    with TestClient(app) as client:
        assert client.get("/async").status_code == 500
        assert client.get("/plain").status_code == 500
        assert client.get("/hello").text == "hi"
