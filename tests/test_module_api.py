"""Module API of both drivers (issue 14): thread pool for ``def`` handlers on asyncio,
registration errors with the user's line, on_shutdown, health/metrics/version.

Modules are served in-process over two pipes: the whole input (init, requests, EOF) is
written first, the output read after ``serve_stdio`` returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import pytest

from pywatt_proto import LocalProtocolError, RouteDefinitionError

INIT = {
    "orchestrator_api": "http://127.0.0.1:1",
    "module_id": "t",
    "env": {},
    "listen": "127.0.0.1:0",
    "pywatt_extensions": ["http_response_op", "heartbeat_ack"],
}


def init_line(**extra: Any) -> bytes:
    return json.dumps({**INIT, **extra}).encode() + b"\n"


def http_line(rid: str, uri: str) -> bytes:
    msg = {"op": "http_request", "request_id": rid, "method": "GET", "uri": uri}
    return json.dumps({**msg, "headers": {}, "body": None}).encode() + b"\n"


HEARTBEAT = b'{"op":"heartbeat"}\n'


def serve(
    app: Any, script: bytes, after_announce: bytes = b"", timeout: float = 20.0
) -> tuple[int, list[dict[str, Any]]]:
    """Serve ``script``, then (once the announce is out) ``after_announce``, then EOF,
    with either driver's Module; return (exit code, every output line)."""
    from pywatt_asyncio import Module as AsyncModule

    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    result: list[int] = []

    def run() -> None:
        try:
            if isinstance(app, AsyncModule):

                async def main() -> int:
                    coro = app.serve_stdio(read_fd=r_in, write_fd=w_out, guard=False)
                    return await asyncio.wait_for(coro, timeout)

                result.append(asyncio.run(main()))
            else:
                result.append(app.serve_stdio(read_fd=r_in, write_fd=w_out, guard=False))
        finally:
            os.close(w_out)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    os.write(w_in, script)
    out: list[dict[str, Any]] = []
    with os.fdopen(r_out, "rb") as fh:
        if after_announce:
            for raw in fh:
                out.append(json.loads(raw))
                if out[-1].get("op") == "announce":
                    break
            os.write(w_in, after_announce)
        os.close(w_in)
        out.extend(json.loads(raw) for raw in fh)
    thread.join(timeout)
    os.close(r_in)
    assert result, "serve_stdio did not return"
    return result[0], out


def answers(out: list[dict[str, Any]]) -> dict[str, tuple[int, bytes]]:
    return {
        m["request_id"]: (m["status_code"], bytes(m["body"] or b""))
        for m in out
        if m.get("op") == "http_response"
    }


# ------------------------------------------------------------------ 14.1 def in a thread pool


def test_def_handlers_run_concurrently_off_the_loop() -> None:
    """Four blocking ``def`` handlers wait for each other (a barrier of 4): on the loop
    the first would wait alone until its barrier timed out; in the pool all four meet.
    A heartbeat that arrives meanwhile is acknowledged before any of them answers, and an
    ``async def`` route queued behind them runs and releases them."""
    from pywatt_asyncio import Module

    app = Module()
    barrier = threading.Barrier(4, timeout=5)
    release = threading.Event()

    @app.get("/block")
    def block(request: object) -> str:
        barrier.wait()  # BrokenBarrierError (a 500) unless all four run at once
        return "released" if release.wait(5) else "stuck"

    @app.get("/release")
    async def do_release(request: object) -> str:
        await asyncio.sleep(0.05)  # let the blocked handlers reach the barrier
        release.set()
        return "ok"

    script = (
        init_line()
        + b"".join(http_line(f"b{i}", "/block") for i in range(4))
        + HEARTBEAT
        + http_line("rel", "/release")
    )
    started = time.monotonic()
    code, out = serve(app, script)
    elapsed = time.monotonic() - started
    assert code == 0
    got = answers(out)
    assert got == {
        **{f"b{i}": (200, b"released") for i in range(4)},
        "rel": (200, b"ok"),
    }
    ops = [m.get("op") for m in out]
    first_block = min(i for i, m in enumerate(out) if str(m.get("request_id")).startswith("b"))
    assert ops.index("heartbeat_ack") < first_block
    assert elapsed < 4  # nobody waited for a barrier timeout


def test_def_handler_past_its_deadline_is_answered_504() -> None:
    """A blocking ``def`` handler no longer blocks the loop, so the core's 504 fires at
    the deadline (before: the loop was stuck in the handler and a late 200 was sent)."""
    from pywatt_asyncio import Module

    app = Module(request_timeout=0.2)
    release = threading.Event()

    @app.get("/slow")
    def slow(request: object) -> str:
        release.wait(3)
        return "late"

    try:
        code, out = serve(app, init_line() + http_line("s", "/slow"))
    finally:
        release.set()
    assert code == 0
    assert answers(out)["s"][0] == 504


def test_def_handler_threads_are_bounded() -> None:
    from pywatt_asyncio import Module

    app = Module(max_threads=2)
    peak = 0
    running = 0
    lock = threading.Lock()

    @app.get("/w")
    def work(request: object) -> str:
        nonlocal peak, running
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return "ok"

    code, out = serve(app, init_line() + b"".join(http_line(f"r{i}", "/w") for i in range(8)))
    assert code == 0 and peak == 2
    assert {v[0] for v in answers(out).values()} == {200} and len(answers(out)) == 8
    with pytest.raises(ValueError):
        Module(max_threads=0)


# ------------------------------------------------------------------ 14.8 registration errors


def _modules() -> list[Any]:
    import pywatt_asyncio
    import pywatt_sync

    return [pywatt_asyncio.Module(), pywatt_sync.Module()]


@pytest.mark.parametrize("app", _modules(), ids=["asyncio", "sync"])
@pytest.mark.parametrize(
    ("pattern", "spelled"),
    [
        ("/users/<int:id>", "/users/{id:int}"),
        ("/users/<id>/posts/<path:rest>", "/users/{id}/posts/{rest:path}"),
        ("/users/:id", "/users/{id}"),
        ("/users/:id/posts/:post", "/users/{id}/posts/{post}"),
    ],
)
def test_other_frameworks_patterns_show_the_pywatt_spelling(
    app: Any, pattern: str, spelled: str
) -> None:
    with pytest.raises(RouteDefinitionError) as info:
        line = _line_of_next_statement()
        app.get(pattern)
    message = str(info.value)
    assert repr(spelled) in message
    assert f"{__file__}:{line}" in message and info.value.location == f"{__file__}:{line}"
    assert not isinstance(info.value, LocalProtocolError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert app.endpoints() == ()


def _line_of_next_statement(skip: int = 1) -> int:
    """Return the caller's line number plus ``skip``."""
    import sys

    return sys._getframe(1).f_lineno + skip


@pytest.mark.parametrize("app", _modules(), ids=["asyncio", "sync"])
def test_handlers_that_cannot_take_the_request_fail_at_the_decorator(app: Any) -> None:
    with pytest.raises(RouteDefinitionError, match="takes no positional argument") as info:
        line = _line_of_next_statement(2)

        @app.get("/none")
        def no_args() -> str:
            return "x"

    assert f"{__file__}:{line}:" in str(info.value)
    with pytest.raises(RouteDefinitionError, match="needs 2 positional"):

        @app.get("/two")
        def two(request: object, other: object) -> str:
            return "x"

    with pytest.raises(RouteDefinitionError, match="keyword-only"):

        @app.get("/kw")
        def kw(request: object, *, db: object) -> str:
            return "x"

    with pytest.raises(RouteDefinitionError, match="not callable"):
        app.get("/nc")("not a function")

    # what is accepted: one positional, defaults, *args, callables, partials
    import functools

    @app.get("/ok1")
    def ok1(request: object, extra: int = 1) -> str:
        return "x"

    @app.get("/ok2")
    def ok2(*args: object) -> str:
        return "x"

    class Callable_:
        def __call__(self, request: object) -> str:
            return "x"

    app.get("/ok3")(Callable_())
    app.get("/ok4")(functools.partial(lambda a, b: "x", 1))
    assert [e.path for e in app.endpoints()] == ["/ok1", "/ok2", "/ok3", "/ok4"]


def test_async_def_on_the_blocking_module_is_a_registration_error() -> None:
    import functools

    import pywatt_sync

    app = pywatt_sync.Module()
    with pytest.raises(RouteDefinitionError, match=r"'async def'.*pywatt_sync") as info:
        line = _line_of_next_statement(2)

        @app.get("/a")
        async def handler(request: object) -> str:
            return "x"

    assert f"{__file__}:{line}:" in str(info.value)

    async def two(a: object, b: object) -> str:
        return "x"

    with pytest.raises(RouteDefinitionError, match="async def"):
        app.get("/p")(functools.partial(two, 1))

    async def async_middleware(request: object, call_next: Any) -> object:
        return call_next(request)

    with pytest.raises(RouteDefinitionError, match=r"middleware .*'async def'"):
        app.middleware(async_middleware)
    assert app.endpoints() == ()


@pytest.mark.parametrize("app", _modules(), ids=["asyncio", "sync"])
def test_duplicate_routes_name_the_second_decorator(app: Any) -> None:
    @app.get("/x")
    def first(request: object) -> str:
        return "x"

    with pytest.raises(RouteDefinitionError, match="duplicate route") as info:
        line = _line_of_next_statement(2)

        @app.get("/x")
        def second(request: object) -> str:
            return "y"

    assert f"{__file__}:{line}:" in str(info.value)


@pytest.mark.parametrize("app", _modules(), ids=["asyncio", "sync"])
def test_middleware_and_error_handlers_are_checked_too(app: Any) -> None:
    with pytest.raises(RouteDefinitionError, match=r"middleware\(request, call_next\)") as info:
        line = _line_of_next_statement(2)

        @app.middleware
        def one_arg(request: object) -> object:
            return request

    assert f"{__file__}:{line}:" in str(info.value)
    with pytest.raises(RouteDefinitionError, match=r"error handler\(request, exc\)"):

        @app.error_handler(404)
        def no_exc(request: object) -> str:
            return "x"

    @app.middleware
    def fine(request: object, call_next: Any) -> object:
        return call_next(request)

    @app.error_handler(ValueError)
    def fine_too(request: object, exc: BaseException) -> str:
        return "x"


# ------------------------------------------------------------------ 14.10 on_shutdown


def test_on_shutdown_hooks_run_after_serving_asyncio() -> None:
    from pywatt_asyncio import Module

    app = Module()
    calls: list[str] = []

    @app.get("/x")
    async def x(request: object) -> str:
        calls.append("request")
        return "x"

    @app.on_shutdown
    async def close_db() -> None:
        await asyncio.sleep(0)
        calls.append("async hook")

    @app.on_shutdown
    def broken() -> None:
        raise RuntimeError("boom")

    @app.on_shutdown
    def close_client() -> None:
        calls.append("def hook")

    code, out = serve(app, init_line() + http_line("r", "/x"))
    assert code == 0 and answers(out) == {"r": (200, b"x")}
    assert calls == ["request", "async hook", "def hook"]


def test_on_shutdown_hooks_run_after_serving_sync() -> None:
    from pywatt_sync import Module

    app = Module()
    calls: list[str] = []

    @app.get("/x")
    def x(request: object) -> str:
        calls.append("request")
        return "x"

    @app.on_shutdown
    def broken() -> None:
        raise RuntimeError("boom")

    @app.on_shutdown
    def close_client() -> None:
        calls.append("hook")

    code, out = serve(app, init_line() + http_line("r", "/x"))
    assert code == 0 and answers(out) == {"r": (200, b"x")}
    assert calls == ["request", "hook"]


# ------------------------------------------------------------------ 14.12 health, metrics, version


def test_health_handler_uses_the_clock_it_is_given() -> None:
    from pywatt_proto import Request
    from pywatt_proto._routes import health_handler

    handler = health_handler(lambda: 1700000000.75)
    assert handler(Request(method="GET", path="/health")).json() == {
        "status": "OK",
        "timestamp": 1700000000,
    }


@pytest.mark.parametrize("driver", ["pywatt_asyncio", "pywatt_sync"])
def test_health_metrics_and_version(driver: str) -> None:
    import importlib

    Module = importlib.import_module(driver).Module
    app = Module(health=True, metrics=True, version="v1")

    @app.get("/hello")
    def hello(request: object) -> dict[str, str]:
        return {"message": "hello"}

    @app.get("/")
    def root(request: object) -> str:
        return "root"

    assert [(e.path, e.methods) for e in app.endpoints()] == [
        ("/v1/health", ("GET",)),
        ("/v1/metrics", ("GET",)),
        ("/v1/hello", ("GET",)),
        ("/v1", ("GET",)),
    ]
    before = int(time.time())
    script = init_line() + b"".join(
        http_line(rid, uri)
        for rid, uri in [
            ("h", "/v1/health"),
            ("x", "/v1/hello"),
            ("old", "/hello"),
            ("r", "/v1"),
            ("m", "/v1/metrics"),
        ]
    )
    code, out = serve(app, script)
    after = int(time.time())
    assert code == 0
    announce = next(m for m in out if m.get("op") == "announce")
    assert [e["path"] for e in announce["endpoints"]] == [
        "/v1/health",
        "/v1/metrics",
        "/v1/hello",
        "/v1",
    ]
    got = answers(out)
    health = json.loads(got["h"][1])
    assert health["status"] == "OK" and before <= health["timestamp"] <= after
    assert type(health["timestamp"]) is int
    assert got["x"] == (200, b'{"message":"hello"}')
    assert got["old"][0] == 404 and got["r"] == (200, b"root")
    assert got["m"][0] == 200
    metrics = got["m"][1].decode()
    assert 'pywatt_http_requests_total{route="GET /v1/hello"} 1' in metrics
    content_type = next(m for m in out if m.get("request_id") == "m")["headers"]["content-type"]
    assert content_type.startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("driver", ["pywatt_asyncio", "pywatt_sync"])
def test_builtin_paths_are_configurable_and_off_by_default(driver: str) -> None:
    import importlib

    Module = importlib.import_module(driver).Module
    assert Module().endpoints() == ()
    app = Module(health="/healthz", metrics="/stats")
    assert [e.path for e in app.endpoints()] == ["/healthz", "/stats"]
    for bad in ("", "/", "a/b", "{v}"):
        with pytest.raises(RouteDefinitionError):
            Module(version=bad)
