"""WSGI adapter: a real Flask app and raw PEP 3333 callables, in-process.

``pywatt_proto.Request.from_target`` builds the request exactly as a module builds it
from an ``http_request`` line; ``pywatt_sync.WsgiApp`` runs the app. Runs over
real pipes are in ``test_contract.py`` / ``test_e2e_sync.py``.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, Response, jsonify, make_response, request
from hypothesis import given, settings
from hypothesis import strategies as st

import pywatt_proto as pw
from pywatt_sync import WsgiApp, wsgi_module

ALL_BYTES = bytes(range(256))


def call(
    app: WsgiApp,
    method: str,
    uri: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> pw.Response:
    return app.handle(pw.Request.from_target(method, uri, headers or {}, body or b""))


def make_flask() -> Flask:
    api = Flask("pywatt_test_flask")

    @api.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return jsonify(item_id=item_id, q=request.args.get("q"), tags=request.args.getlist("t"))

    @api.get("/files/<path:name>")
    def files(name: str) -> Any:
        return jsonify(name=name, path=request.path)

    @api.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), mimetype="application/octet-stream")

    @api.post("/form")
    def form() -> Any:
        return jsonify(dict(request.form))

    @api.get("/headers")
    def headers() -> Any:
        return jsonify(custom=request.headers.get("X-Custom"), ua=request.user_agent.string)

    @api.get("/cookies")
    def cookies() -> Response:
        resp = make_response(jsonify(session=request.cookies.get("session")))
        resp.set_cookie("a", "1", expires=2145945600)
        resp.set_cookie("b", "2", httponly=True)
        return resp

    @api.get("/boom")
    def boom() -> Any:
        raise RuntimeError("secret internals")

    @api.get("/url")
    def url() -> Any:
        return jsonify(url=request.url, root=request.root_url)

    return api


@pytest.fixture
def flask_app() -> WsgiApp:
    return WsgiApp(make_flask().wsgi_app)


def test_path_and_query_parameters(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/items/7?q=caf%C3%A9&t=x&t=y")
    assert resp.status == 200
    assert json.loads(resp.body) == {"item_id": 7, "q": "café", "tags": ["x", "y"]}
    assert call(flask_app, "GET", "/items/abc").status == 404


def test_percent_decoded_path(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/files/a%20b/%E2%82%AC.txt")
    assert resp.status == 200
    assert json.loads(resp.body) == {"name": "a b/€.txt", "path": "/files/a b/€.txt"}


def test_binary_body_all_byte_values(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "POST", "/echo", {"content-type": "application/octet-stream"}, ALL_BYTES)
    assert resp.status == 200
    assert resp.body == ALL_BYTES


def test_form_body_uses_content_type_and_length(flask_app: WsgiApp) -> None:
    resp = call(
        flask_app,
        "POST",
        "/form",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "999"},
        b"a=1&b=two+words",
    )
    assert resp.body.strip() == b'{"a":"1","b":"two words"}'


def test_request_headers(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/headers", {"X-Custom": "v1", "user-agent": "pywatt-test"})
    assert resp.body.strip() == b'{"custom":"v1","ua":"pywatt-test"}'


def test_cookies_in_and_multiple_set_cookie_out(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/cookies", {"Cookie": "session=abc; z=1"})
    assert resp.body.strip() == b'{"session":"abc"}'
    cookies = [v for k, v in resp.headers if k.lower() == "set-cookie"]
    assert len(cookies) == 2
    assert cookies[0].startswith("a=1;") and "Expires=" in cookies[0] and ", " in cookies[0]
    assert cookies[1].startswith("b=2;") and "HttpOnly" in cookies[1]


def test_host_header_and_url(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/url?x=1", {"Host": "example.org:8080"})
    assert (
        resp.body.strip()
        == b'{"root":"http://example.org:8080/","url":"http://example.org:8080/url?x=1"}'
    )


def test_not_found_and_method_not_allowed(flask_app: WsgiApp) -> None:
    assert call(flask_app, "GET", "/nope").status == 404
    assert call(flask_app, "GET", "/echo").status == 405


def test_app_exception_is_500_without_internals(flask_app: WsgiApp) -> None:
    resp = call(flask_app, "GET", "/boom")
    assert resp.status == 500
    assert b"secret" not in resp.body
    assert call(flask_app, "GET", "/items/1").status == 200


# -- raw WSGI callables: exact environ and PEP 3333 edge cases -----------------------


def test_environ_fields_exact() -> None:
    seen: list[dict[str, Any]] = []

    def app_(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ)
        body = environ["wsgi.input"].read()
        start_response("201 Created", [("X-A", "1")])
        return [b"got:", body]

    app = WsgiApp(app_, script_name="/mnt", server=("fallback", 9999))
    resp = call(
        app,
        "post",
        "/mnt/a%20b/%E2%82%AC?x=1&y=%20",
        {"Content-Type": "text/plain", "X-Mixed-Case": "Value", "Accept": "*/*"},
        b"payload",
    )
    assert (resp.status, resp.headers, resp.body) == (201, (("X-A", "1"),), b"got:payload")
    env = seen[0]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/mnt"
    assert env["PATH_INFO"] == "/a b/€".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "7"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("fallback", "9999")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_MIXED_CASE"] == "Value"
    assert env["HTTP_ACCEPT"] == "*/*"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert isinstance(env["wsgi.input"], io.BytesIO)
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert all(isinstance(v, str) for k, v in env.items() if k.isupper())


def test_write_callable_and_close_called() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"-iter"

        def close(self) -> None:
            closed.append(True)

    def app_(environ: dict[str, Any], start_response: Any) -> Body:
        write = start_response("200 OK", [])
        write(b"written")
        return Body()

    resp = call(WsgiApp(app_), "GET", "/")
    assert resp.body == b"written-iter"
    assert closed == [True]


def test_close_called_when_iteration_fails() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"
            raise RuntimeError("mid-stream")

        def close(self) -> None:
            closed.append(True)

    def app_(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    assert call(WsgiApp(app_), "GET", "/").status == 500
    assert closed == [True]


def test_start_response_with_exc_info_replaces_headers() -> None:
    def app_(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    resp = call(WsgiApp(app_), "GET", "/")
    assert (resp.status, resp.headers, resp.body) == (503, (("X-Second", "2"),), b"sorry")


def test_exc_info_after_body_reraises() -> None:
    def app_(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())  # must re-raise ValueError
        return [b"unreachable"]

    resp = call(WsgiApp(app_), "GET", "/")
    assert resp.status == 500 and resp.body != b"partialunreachable"


@pytest.mark.parametrize(
    "behaviour",
    ["no_start", "twice", "bad_status", "str_chunk", "bad_header"],
)
def test_pep3333_misuse_gives_500(behaviour: str) -> None:
    def app_(environ: dict[str, Any], start_response: Any) -> list[Any]:
        if behaviour == "twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
        elif behaviour == "bad_status":
            start_response("OK", [])
        elif behaviour == "str_chunk":
            start_response("200 OK", [])
            return ["text"]
        elif behaviour == "bad_header":
            start_response("200 OK", [("Bad Name", "v")])
        return [b"x"]

    assert call(WsgiApp(app_), "GET", "/").status == 500


def test_oversize_response_is_502() -> None:
    def app_(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(10):
            yield b"y" * 100

    assert call(WsgiApp(app_, max_body=999), "GET", "/").status == 502
    resp = call(WsgiApp(app_, max_body=1000), "GET", "/")
    assert resp.status == 200 and len(resp.body) == 1000


def test_invalid_request_header_is_a_remote_error(flask_app: WsgiApp) -> None:
    with pytest.raises(pw.RemoteProtocolError):
        call(flask_app, "GET", "/hello", {"bad name": "v"})


def test_wsgi_module_announces_flask_rules() -> None:
    api = make_flask()

    @api.route("/a/<int:x>/<y>/<path:rest>", methods=["GET", "PUT"])
    def rules(x: int, y: str, rest: str) -> str:
        return "ok"

    @api.get("/u/<uuid:u>/<string(length=2):s>")
    def uuids(u: object, s: str) -> str:
        return "ok"

    table = {e.path: e.methods for e in wsgi_module(api.wsgi_app).endpoints()}
    assert table["/a/{x:int}/{y}/{rest:path}"] == ("GET", "PUT")
    assert table["/u/{u:uuid}/{s}"] == ("GET",)
    assert table["/items/{item_id:int}"] == ("GET",)
    assert table["/echo"] == ("POST",)


def test_wsgi_module_endpoints_for_a_bare_callable() -> None:
    def bare(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    assert {e.path for e in wsgi_module(bare).endpoints()} == {"/", "/{path:path}"}
    explicit = pw.Endpoint(path="/only", methods=("GET",))
    assert wsgi_module(bare, endpoints=[explicit]).endpoints() == (explicit,)


def test_largest_collectable_body_fits_one_protocol_line() -> None:
    def big(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        headers = [(f"X-Extra-{i}", "v" * 100) for i in range(100)]
        start_response("200 OK", headers)
        return [b"\xff" * pw.MAX_RESPONSE_BODY]  # worst case: 4 line bytes per body byte

    resp = call(WsgiApp(big), "GET", "/")
    assert resp.status == 200 and len(resp.body) == pw.MAX_RESPONSE_BODY
    conn = pw.ModuleConnection()
    init = b'{"orchestrator_api":"x","module_id":"m","env":{},"listen":"127.0.0.1:1"}\n'
    conn.receive_data(init, 0.0)
    while conn.next_event() is not pw.NEED_DATA:
        pass
    conn.data_to_send()
    request = b'{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{}}\n'
    conn.receive_data(request, 0.0)
    assert isinstance(conn.next_event(), pw.RequestReceived)
    conn.send_response("r", resp.status, resp.headers, resp.body)
    line = conn.data_to_send()
    assert len(line) <= pw.DEFAULT_MAX_LINE_SIZE
    decoder = pw.LineDecoder(pw.DEFAULT_MAX_LINE_SIZE)
    decoder.receive_data(line)
    assert decoder.next_line() == line.rstrip(b"\n")


def test_remote_addr_and_no_start_response() -> None:
    seen: list[dict[str, Any]] = []

    def app_(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        if environ["PATH_INFO"] == "/silent":
            return []  # never calls start_response: a broken app
        start_response("204 No Content", [])
        return []

    app = WsgiApp(app_)
    request = pw.Request.from_target("GET", "/", {}, b"", client=("10.0.0.7", 51234))
    assert app.handle(request).status == 204
    assert (seen[0]["REMOTE_ADDR"], seen[0]["REMOTE_PORT"]) == ("10.0.0.7", "51234")
    assert call(app, "GET", "/silent").status == 500


@pytest.mark.parametrize("status", ["99 Too Low", "600 Too High", "2000 Long", "abc OK", "200"])
def test_bad_status_lines(status: str) -> None:
    with pytest.raises(pw.LocalProtocolError):
        pw.parse_wsgi_status(status)
    assert pw.parse_wsgi_status("418 I'm a teapot") == 418


@settings(max_examples=150, deadline=None)
@given(
    # "/" is excluded: WSGI's PATH_INFO is decoded, so %2F and / are the same there;
    # control characters too: Werkzeug's path converter does not match "\n".
    name=st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
        min_size=1,
        max_size=20,
    ).filter(lambda s: s not in (".", "..")),
    body=st.binary(max_size=512),
)
def test_property_path_text_and_body_survive_wsgi(name: str, body: bytes) -> None:
    api = Flask("pywatt_property")

    @api.post("/files/<path:name>")
    def files(name: str) -> Any:
        return jsonify(name=name, size=len(request.get_data()))

    app = WsgiApp(api.wsgi_app)
    resp = call(app, "POST", "/files/" + quote(name, safe=""), {}, body)
    assert resp.status == 200, resp.body
    assert json.loads(resp.body) == {"name": name, "size": len(body)}
