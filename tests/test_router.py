"""Router behaviour through the public API and both drivers' dispatch functions."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import (
    UNMATCHED_LABEL,
    ApiResponse,
    AuthError,
    Endpoint,
    Headers,
    HTTPException,
    LocalProtocolError,
    QueryParams,
    RemoteProtocolError,
    Request,
    Response,
    RouteDefinitionError,
    Router,
    api_error,
    api_response,
    json_response,
    redirect,
    text_response,
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.002
        return self.t


def run_sync(router: Router, req: Request) -> Response:
    return pywatt_sync.dispatch(router, req, Clock())


def run_async(router: Router, req: Request) -> Response:
    return asyncio.run(pywatt_asyncio.dispatch(router, req, Clock()))


def run_eager(router: Router, req: Request) -> Response:
    from pywatt_asyncio._dispatch import dispatch_eager

    async def main() -> Response:
        outcome = dispatch_eager(router, req, Clock())
        return outcome if isinstance(outcome, Response) else await outcome

    return asyncio.run(main())


DRIVERS = [
    pytest.param(run_sync, id="sync"),
    pytest.param(run_async, id="asyncio"),
    pytest.param(run_eager, id="asyncio-eager"),
]


def req(method: str, target: str, body: bytes = b"", headers: Any = ()) -> Request:
    return Request.from_target(method, target, headers, body)


def body_json(resp: Response) -> Any:
    return json.loads(resp.body)


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize("run", DRIVERS)
def test_typed_path_parameters(run: Callable[[Router, Request], Response]) -> None:
    r = Router()
    seen: dict[str, object] = {}

    @r.get("/items/{id:int}")
    def item(request: Request) -> dict[str, object]:
        seen.update(request.path_params)
        return {"id": request.path_params["id"]}

    @r.get("/f/{x:float}")
    def fl(request: Request) -> Any:
        return {"x": request.path_params["x"]}

    @r.get("/u/{u:uuid}")
    def uu(request: Request) -> Any:
        return str(request.path_params["u"])

    @r.get("/files/{rest:path}")
    def files(request: Request) -> Any:
        return request.path_params["rest"]

    @r.get("/names/{name}")
    def names(request: Request) -> Any:
        return request.path_params["name"]

    resp = run(r, req("GET", "/items/42"))
    assert resp.status == 200 and body_json(resp) == {"id": 42}
    assert seen == {"id": 42} and isinstance(seen["id"], int)
    assert run(r, req("GET", "/items/abc")).status == 404
    assert run(r, req("GET", "/items/-1")).status == 404
    assert body_json(run(r, req("GET", "/f/2.5"))) == {"x": 2.5}
    u = uuid.uuid4()
    assert run(r, req("GET", f"/u/{u}")).body == str(u).encode()
    assert run(r, req("GET", "/u/nope")).status == 404
    assert run(r, req("GET", "/files/a/b/c.txt")).body == b"a/b/c.txt"
    # percent-decoded after matching; an encoded slash stays inside the segment
    assert run(r, req("GET", "/names/a%20b")).body == b"a b"
    assert run(r, req("GET", "/names/a%2Fb")).body == b"a/b"
    assert run(r, req("GET", "/names/a/b")).status == 404


def test_literal_routes_win_and_registration_order() -> None:
    r = Router()
    r.add_route("/items/{name}", lambda q: "pattern")
    r.add_route("/items/new", lambda q: "literal")
    r.add_route("/x/{a}", lambda q: "first")
    r.add_route("/x/{b:int}", lambda q: "second", ("POST",))
    assert run_sync(r, req("GET", "/items/new")).body == b"literal"
    assert run_sync(r, req("GET", "/items/other")).body == b"pattern"
    assert run_sync(r, req("GET", "/x/5")).body == b"first"
    assert run_sync(r, req("POST", "/x/5")).body == b"second"


def test_literal_path_is_percent_normalised() -> None:
    r = Router()
    r.add_route("/caf\u00e9", lambda q: "ok")
    r.add_route("/hello", lambda q: "hi")
    assert run_sync(r, req("GET", "/caf%C3%A9")).body == b"ok"
    assert run_sync(r, req("GET", "/hel%6Co")).body == b"hi"
    assert run_sync(r, req("GET", "/hello/")).status == 404


@pytest.mark.parametrize("run", DRIVERS)
def test_404_and_405_with_allow(run: Callable[[Router, Request], Response]) -> None:
    r = Router()
    r.add_route("/a", lambda q: "a", ("GET", "POST"))
    r.add_route("/b/{n:int}", lambda q: "b", ("DELETE",))
    resp = run(r, req("GET", "/missing"))
    assert resp.status == 404
    assert body_json(resp) == {
        "status": "error",
        "data": None,
        "message": "Endpoint not found: GET /missing",
    }
    assert resp.header("content-type") == "application/json"
    resp = run(r, req("PUT", "/a"))
    assert resp.status == 405
    assert resp.header("allow") == "GET, HEAD, OPTIONS, POST"
    assert body_json(resp)["message"] == "Method PUT not allowed for endpoint /a"
    resp = run(r, req("GET", "/b/3"))
    assert resp.status == 405 and resp.header("Allow") == "DELETE, OPTIONS"
    assert run(r, req("GET", "/b/x")).status == 404


def test_automatic_options() -> None:
    r = Router()
    r.add_route("/a", lambda q: "a", ("GET",))
    resp = run_sync(r, req("OPTIONS", "/a"))
    assert resp.status == 204 and resp.header("allow") == "GET, HEAD, OPTIONS"
    r.add_route("/o", lambda q: "custom", ("OPTIONS",))
    assert run_sync(r, req("OPTIONS", "/o")).body == b"custom"


@pytest.mark.parametrize("run", DRIVERS)
def test_head_served_by_get(run: Callable[[Router, Request], Response]) -> None:
    r = Router()
    r.add_route("/h", lambda q: {"hello": "world"})
    get = run(r, req("GET", "/h"))
    head = run(r, req("HEAD", "/h"))
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(get.body))
    assert head.header("content-type") == "application/json"
    r.add_route("/h2", lambda q: Response(status=200, headers=(("x-own", "1"),)), ("HEAD",))
    assert run(r, req("HEAD", "/h2")).header("x-own") == "1"


# ---------------------------------------------------------------- request parts


def test_query_parsing() -> None:
    q = req("GET", "/p?a=1&a=2&b=hello%20world&c=x+y&empty=&%C3%A9=%E2%9C%93").query
    assert q.get_all("a") == ["1", "2"]
    assert q.get("a") == "1"
    assert q.get("b") == "hello world"
    assert q.get("c") == "x y"
    assert q.get("empty") == ""
    assert q.get("\u00e9") == "\u2713"
    assert q.get("missing") is None and "a" in q and "zz" not in q
    assert q.to_dict()["a"] == ["1", "2"]
    assert req("GET", "/p").query == QueryParams()
    many = "&".join(f"k{i}=v" for i in range(1500))
    with pytest.raises(RemoteProtocolError) as info:
        _ = req("GET", "/p?" + many).query
    assert info.value.error_status_hint == 400


def test_too_many_query_fields_answered_400() -> None:
    r = Router()
    r.add_route("/q", lambda q: dict(q.query.items()))
    many = "&".join(f"k{i}=v" for i in range(1500))
    assert run_sync(r, req("GET", "/q?" + many)).status == 400


def test_request_target_forms() -> None:
    r = req("GET", "http://example.com/a/b?x=1")
    assert (r.path, r.query_string) == ("/a/b", "x=1")
    assert req("GET", "https://example.com").path == "/"
    # the query of an absolute-form target with no path was dropped
    assert req("GET", "http://example.com?x=1").target == "/?x=1"
    assert req("GET", "HTTP://example.com:8080#f").target == "/"
    assert req("OPTIONS", "*").path == "*"
    assert req("get", "/a?").method == "GET"
    with pytest.raises(RemoteProtocolError):
        req("GET", "nope")
    assert req("GET", "/p?z=1").target == "/p?z=1"


def test_headers_case_insensitive_multi() -> None:
    h = Headers([("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    assert h.get("content-type") == "text/plain"
    assert h.get("CONTENT-TYPE") == "text/plain"
    assert h.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert "SET-COOKIE" in h and "x" not in h
    assert list(h) == ["content-type", "set-cookie"]
    assert len(h) == 3
    assert Headers.from_raw([(b"X-A", b"1")]) == Headers({"x-a": "1"})
    assert h.get("missing", "d") == "d"


def test_request_json_helper() -> None:
    r = Router()
    r.add_route("/echo", lambda q: {"got": q.json()}, ("POST",))
    assert body_json(run_sync(r, req("POST", "/echo", b'{"a":1}'))) == {"got": {"a": 1}}
    bad = run_sync(r, req("POST", "/echo", b"{nope"))
    assert bad.status == 400 and body_json(bad)["message"] == "Invalid JSON body"
    deep = run_sync(r, req("POST", "/echo", b"[" * 100_000))  # was RecursionError: 500
    assert deep.status == 400 and body_json(deep)["message"] == "Invalid JSON body"
    empty = run_sync(r, req("POST", "/echo"))
    assert body_json(empty)["message"] == "Request body is required"


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize("run", DRIVERS)
def test_return_value_conversions(run: Callable[[Router, Request], Response]) -> None:
    r = Router()
    values: dict[str, object] = {
        "/dict": {"a": 1},
        "/list": [1, "\u00e9"],
        "/str": "caf\u00e9",
        "/bytes": b"\x00\x01",
        "/none": None,
        "/tuple": ({"made": True}, 201),
        "/tuple3": ("t", 202, {"x-extra": "1"}),
        "/api": ApiResponse(data={"k": "v"}, status_code=201),
        "/bad": object(),
    }
    for path, value in values.items():
        r.add_route(path, lambda q, v=value: v)
    d = run(r, req("GET", "/dict"))
    assert (d.status, d.body, d.header("content-type")) == (200, b'{"a":1}', "application/json")
    assert run(r, req("GET", "/list")).body == '[1,"\u00e9"]'.encode()
    s = run(r, req("GET", "/str"))
    assert s.body == "caf\u00e9".encode() and s.header("content-type").startswith("text/plain")  # type: ignore[union-attr]
    b = run(r, req("GET", "/bytes"))
    assert b.body == b"\x00\x01" and b.header("content-type") == "application/octet-stream"
    assert run(r, req("GET", "/none")).status == 204
    t = run(r, req("GET", "/tuple"))
    assert t.status == 201 and body_json(t) == {"made": True}
    t3 = run(r, req("GET", "/tuple3"))
    assert (t3.status, t3.body, t3.header("x-extra")) == (202, b"t", "1")
    a = run(r, req("GET", "/api"))
    assert a.status == 201
    assert a.body == b'{"status":"success","data":{"k":"v"},"message":null}'
    bad = run(r, req("GET", "/bad"))
    assert bad.status == 500 and body_json(bad)["message"] == "Internal server error"


def test_helpers() -> None:
    assert json_response({"a": 1}, 201, {"x": "y"}).header("x") == "y"
    t = text_response("hi", headers=[("set-cookie", "a"), ("set-cookie", "b")])
    assert t.header_all("Set-Cookie") == ["a", "b"]
    red = redirect("/elsewhere", 302)
    assert red.status == 302 and red.header("location") == "/elsewhere"
    with pytest.raises(LocalProtocolError):
        redirect("/x", 200)
    ok = api_response({"n": 1})
    assert ok.body == b'{"status":"success","data":{"n":1},"message":null}'
    err = api_error("nope", 404)
    assert err.body == b'{"status":"error","data":null,"message":"nope"}'
    assert err.header("x-error-code") == "NOT_FOUND"
    assert api_response(status_code=400, message="m").json()["status"] == "error"
    with pytest.raises(LocalProtocolError):
        Response(status=700)
    with pytest.raises(LocalProtocolError):
        Response(headers=(("bad name", "v"),))
    with pytest.raises(LocalProtocolError):
        Response(headers=(("x", "a\r\nb"),))
    assert Response().with_header("a", "1").with_header(
        "A", "2", replace_existing=True
    ).headers == (("A", "2"),)


# ---------------------------------------------------------------- middleware & errors


@pytest.mark.parametrize("run", DRIVERS)
def test_middleware_order_and_short_circuit(run: Callable[[Router, Request], Response]) -> None:
    r = Router()
    order: list[str] = []

    @r.middleware
    def outer(request: Request, call_next: Callable[[Request], Any]) -> Any:
        order.append("outer")
        if request.headers.get("x-block"):
            return text_response("blocked", 403)
        request.state["user"] = "bob"
        resp = call_next(request)
        if asyncio.iscoroutine(resp):

            async def later() -> Response:
                got: Response = await resp
                return got.with_header("x-outer", "1")

            return later()
        return resp.with_header("x-outer", "1")

    @r.middleware
    def inner(request: Request, call_next: Callable[[Request], Any]) -> Any:
        order.append("inner")
        return call_next(request)

    r.add_route("/m", lambda q: {"user": q.state["user"]})
    resp = run(r, req("GET", "/m"))
    assert body_json(resp) == {"user": "bob"} and resp.header("x-outer") == "1"
    assert order == ["outer", "inner"]
    order.clear()
    blocked = run(r, req("GET", "/m", headers={"X-Block": "1"}))
    assert blocked.status == 403 and order == ["outer"]
    # middleware also wraps 404s
    assert run(r, req("GET", "/nope")).header("x-outer") == "1"


@pytest.mark.parametrize("run", DRIVERS)
def test_error_handlers_by_type_and_status(run: Callable[[Router, Request], Response]) -> None:
    r = Router()

    class Base(Exception):
        pass

    class Child(Base):
        pass

    def raise_child(q: Request) -> Any:
        raise Child("secret detail")

    def raise_value(q: Request) -> Any:
        raise ValueError("secret detail")

    def raise_http(q: Request) -> Any:
        raise HTTPException(409, "taken", headers=[("x-h", "1")])

    r.add_route("/child", raise_child)
    r.add_route("/value", raise_value)
    r.add_route("/http", raise_http)
    r.add_error_handler(Base, lambda q, e: text_response(f"base:{type(e).__name__}", 418))

    @r.error_handler(404)
    def nf(request: Request, exc: BaseException) -> Any:
        return ({"custom": "nf"}, 404)

    assert run(r, req("GET", "/child")).body == b"base:Child"
    v = run(r, req("GET", "/value"))
    assert v.status == 500 and b"secret" not in v.body
    h = run(r, req("GET", "/http"))
    assert (h.status, body_json(h)["message"], h.header("x-h")) == (409, "taken", "1")
    assert body_json(run(r, req("GET", "/zzz"))) == {"custom": "nf"}

    @r.error_handler(500)
    def five(request: Request, exc: BaseException) -> Any:
        raise RuntimeError("handler broke")

    broken = run(r, req("GET", "/value"))
    assert broken.status == 500 and b"broke" not in broken.body


def test_async_handlers_and_middleware() -> None:
    r = Router()

    async def handler(q: Request) -> Any:
        await asyncio.sleep(0)
        return {"async": True}

    async def mw(q: Request, call_next: Callable[[Request], Any]) -> Any:
        resp = await call_next(q)
        return resp.with_header("x-mw", "1")

    async def on_err(q: Request, e: BaseException) -> Any:
        return text_response("handled", 400)

    async def boom(q: Request) -> Any:
        raise KeyError("x")

    async def late_boom(q: Request) -> Any:
        await asyncio.sleep(0)
        raise KeyError("y")

    r.add_route("/a", handler)
    r.add_route("/boom", boom)
    r.add_route("/late", late_boom)
    r.middleware(mw)
    r.add_error_handler(KeyError, on_err)
    resp = run_async(r, req("GET", "/a"))
    assert body_json(resp) == {"async": True} and resp.header("x-mw") == "1"
    assert run_async(r, req("GET", "/boom")).status == 400
    for path in ("/boom", "/late"):
        assert run_eager(r, req("GET", path)).status == 400
    direct = Router()
    direct.add_route("/a", handler)
    direct.add_route("/late", late_boom)
    assert body_json(run_eager(direct, req("GET", "/a"))) == {"async": True}
    assert run_eager(direct, req("GET", "/late")).status == 500
    # the blocking driver refuses coroutines with a 500 instead of leaking them
    plain = Router()
    plain.add_route("/a", handler)
    assert run_sync(plain, req("GET", "/a")).status == 500


# ---------------------------------------------------------------- auth


def make_auth(
    log: list[tuple[str, float]],
) -> Callable[[Request, str, float], Mapping[str, object]]:
    def authenticate(request: Request, label: str, now: float) -> Mapping[str, object]:
        log.append((label, now))
        token = request.headers.get("authorization")
        if token == "Bearer good":
            return {"sub": "alice"}
        if token == "Bearer forbidden":
            raise AuthError("role", status=403)
        raise AuthError("jwt: signature mismatch (internal detail)")

    return authenticate


@pytest.mark.parametrize("run", DRIVERS)
def test_auth_hook(run: Callable[[Router, Request], Response]) -> None:
    log: list[tuple[str, float]] = []
    r = Router(authenticator=make_auth(log))
    r.add_route("/secure", lambda q: dict(q.claims), auth="jwt")
    r.add_route("/open", lambda q: dict(q.claims))
    ok = run(r, req("GET", "/secure", headers={"Authorization": "Bearer good"}))
    assert body_json(ok) == {"sub": "alice"}
    assert log and log[0][0] == "jwt" and log[0][1] > 100.0
    bad = run(r, req("GET", "/secure"))
    assert bad.status == 401
    assert bad.header("www-authenticate") == 'Bearer error="invalid_token"'
    assert b"signature" not in bad.body and b"internal" not in bad.body
    assert body_json(bad)["message"] == "Unauthorized"
    forbidden = run(r, req("GET", "/secure", headers={"Authorization": "Bearer forbidden"}))
    assert forbidden.status == 403 and forbidden.header("www-authenticate") is None
    assert run(r, req("GET", "/open")).body == b"{}"
    head = run(r, req("HEAD", "/secure"))
    assert head.status == 401 and head.body == b""
    log.clear()
    run(r, req("GET", "/open"))
    assert log == []


def test_state_set_by_middleware_reaches_authenticated_handler() -> None:
    r = Router(authenticator=lambda q, label, now: {"sub": "x"})

    @r.middleware
    def tag(request: Request, call_next: Callable[[Request], Any]) -> Any:
        request.state["tag"] = "mw"
        return call_next(request)

    r.add_route("/s", lambda q: {"tag": q.state["tag"], "sub": q.claims["sub"]}, auth="jwt")
    assert body_json(run_sync(r, req("GET", "/s"))) == {"tag": "mw", "sub": "x"}


def test_auth_without_authenticator_fails_closed() -> None:
    r = Router()
    r.add_route("/secure", lambda q: "secret", auth="jwt")
    resp = run_sync(r, req("GET", "/secure"))
    assert resp.status == 500 and b"secret" not in resp.body
    r.set_authenticator(lambda q, label, now: {"ok": True})
    assert run_sync(r, req("GET", "/secure")).body == b"secret"


def test_auth_error_handler_by_type() -> None:
    r = Router(authenticator=make_auth([]))
    r.add_route("/s", lambda q: "x", auth="jwt")
    r.add_error_handler(AuthError, lambda q, e: text_response("custom auth", 401))
    assert run_sync(r, req("GET", "/s")).body == b"custom auth"


# ---------------------------------------------------------------- registration, endpoints


def test_registration_errors() -> None:
    r = Router()
    r.add_route("/a", lambda q: None, ("GET",))
    with pytest.raises(RouteDefinitionError):
        r.add_route("/a", lambda q: None, ("get",))
    with pytest.raises(RouteDefinitionError):
        r.add_route("no-slash", lambda q: None)
    with pytest.raises(RouteDefinitionError):
        r.add_route("/x/{id:bogus}", lambda q: None)
    with pytest.raises(RouteDefinitionError):
        r.add_route("/x/{a}/{a}", lambda q: None)
    with pytest.raises(RouteDefinitionError):
        r.add_route("/x/{a", lambda q: None)
    with pytest.raises(RouteDefinitionError):
        r.add_route("/y", lambda q: None, ())
    r.add_route("/a", lambda q: None, ("POST",))  # same path, other method is fine


def test_endpoints_for_announce() -> None:
    r = Router()

    @r.get("/items", auth="jwt")
    def a(q: Request) -> Any:
        return []

    @r.post("/items", auth="jwt")
    def b(q: Request) -> Any:
        return []

    @r.route("/health", methods=["GET", "HEAD"])
    def c(q: Request) -> Any:
        return "ok"

    r.put("/x/{id:int}")(lambda q: None)
    r.delete("/x/{id:int}")(lambda q: None)
    r.patch("/x/{id:int}")(lambda q: None)
    eps = r.endpoints()
    first = eps[0]
    assert first.path == "/items" and first.auth == "jwt"
    assert eps[0] == ("/items", ("GET", "POST"), "jwt")
    assert eps[1] == ("/health", ("GET", "HEAD"), None)
    assert eps[2] == ("/x/{id:int}", ("PUT", "DELETE", "PATCH"), None)
    assert [rt.name for rt in r.routes][:3] == ["a", "b", "c"]
    announced = r.announce_endpoints()
    assert announced[0] == Endpoint(path="/items", methods=("GET", "POST"), auth="jwt")
    assert len(announced) == 3


# ---------------------------------------------------------------- metrics


def test_metrics_per_route() -> None:
    r = Router()
    r.add_route("/ok/{n:int}", lambda q: "ok")

    def fail(q: Request) -> Any:
        raise RuntimeError

    r.add_route("/fail", fail)
    clock = iter([1.0, 1.003, 2.0, 2.2, 3.0, 3.0005, 4.0, 4.0001]).__next__
    pywatt_sync.dispatch(r, req("GET", "/ok/1"), clock)
    pywatt_sync.dispatch(r, req("GET", "/fail"), clock)
    pywatt_sync.dispatch(r, req("GET", "/ok/2"), clock)
    pywatt_sync.dispatch(r, req("GET", "/random/path"), clock)
    m = r.metrics
    assert (m.requests_received, m.responses_sent, m.errors_encountered) == (4, 4, 1)
    stats = m.routes()
    ok = stats["GET /ok/{n:int}"]
    assert (ok.requests, ok.responses, ok.errors, dict(ok.statuses)) == (2, 2, 0, {200: 2})
    buckets = dict(ok.latency_buckets)
    assert buckets[0.005] == 2 and sum(buckets.values()) == 2
    assert ok.avg_response_time_ms == pytest.approx(1.75)
    fail_stats = stats["GET /fail"]
    assert fail_stats.errors == 1 and dict(fail_stats.latency_buckets)[0.25] == 1
    assert stats[UNMATCHED_LABEL].statuses == {404: 1}
    text = m.render_prometheus()
    assert 'pywatt_http_requests_total{route="GET /fail"} 1' in text
    assert 'le="+Inf"} 2' in text
    assert m.avg_response_time_ms == pytest.approx((3 + 200 + 0.5 + 0.1) / 4, rel=1e-6)


def test_metrics_label_set_is_bounded() -> None:
    r = Router()
    r.add_route("/a", lambda q: "a")
    for i in range(50):
        run_sync(r, req(f"M{i}", f"/p{i}"))
        run_sync(r, req(f"M{i}", "/a"))
    assert set(r.metrics.routes()) == {UNMATCHED_LABEL, "* /a"}
