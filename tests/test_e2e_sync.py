"""End to end, blocking side: real HTTP -> ``pywatt run`` -> a pywatt_sync / WSGI module.

Each test starts the development orchestrator (``python -m pywatt_asyncio._cli
run TARGET --http 127.0.0.1:0``) as a child process, reads the bound address
from its stderr, talks HTTP to it with httpx, then stops it with SIGTERM and
expects a clean exit. A second group starts a target under the app runner
directly (``python -m pywatt_asyncio._apprunner TARGET``) and checks the wire.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from modproc import INIT, WAIT, ModuleProcess, Orchestrator

from pywatt_proto import Announce, HttpResponse

ALL_BYTES = bytes(range(256))


@pytest.fixture
def blocking() -> Iterator[Orchestrator]:
    orch = Orchestrator("examples/blocking.py")
    yield orch
    orch.stop()


def test_blocking_example_over_http(blocking: Orchestrator) -> None:
    with httpx.Client(base_url=blocking.url, timeout=WAIT) as client:
        resp = client.get("/hello")
        assert resp.status_code == 200 and resp.json()["message"].startswith("Hello")
        assert client.get("/hello/ada").json() == {"message": "Hello, ada!"}
        resp = client.post(
            "/echo", content=ALL_BYTES, headers={"content-type": "application/octet-stream"}
        )
        assert resp.content == ALL_BYTES
        assert client.get("/sum", params={"a": 2, "b": 40}).json() == {"sum": 42}
        assert client.get("/sum", params={"a": "x"}).status_code == 400
        assert client.get("/nope").status_code == 404
        assert client.delete("/hello").status_code == 405


def test_blocking_example_concurrent_requests(blocking: Orchestrator) -> None:
    def fetch(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=blocking.url, timeout=WAIT) as client:
            path = "/slow" if i % 2 else f"/hello/n{i}"
            resp = client.get(path)
            return resp.status_code, resp.text

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(fetch, range(32)))
    assert all(status == 200 for status, _ in results)
    assert [text for status, text in results[1::2]] == ["done"] * 16
    assert all(f'"Hello, n{i}!"' in results[i][1] for i in range(0, 32, 2))


def test_blocking_example_stops_cleanly_and_prints_to_stderr() -> None:
    orch = Orchestrator("examples/blocking.py")
    try:
        with httpx.Client(base_url=orch.url, timeout=WAIT) as client:
            assert client.get("/slow").text == "done"
    finally:
        code = orch.stop()
    assert code == 0
    assert "slow handler finished" in orch.stderr  # the handler's print()
    assert "module stopped (status 0)" in orch.stderr


@pytest.mark.parametrize("target", ["examples.flask_app:app", "examples/flask_app.py"])
def test_flask_example_over_http(target: str) -> None:
    orch = Orchestrator(target)
    try:
        with httpx.Client(base_url=orch.url, timeout=WAIT) as client:
            assert client.get("/hello").json() == {"message": "Hello from Flask on PyWatt!"}
            assert client.get("/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
            assert client.get("/items/seven").status_code == 404  # Flask's own 404
            resp = client.post(
                "/echo", content=ALL_BYTES, headers={"content-type": "application/octet-stream"}
            )
            assert resp.content == ALL_BYTES
            resp = client.get("/cookies")
            cookies = resp.headers.get_list("set-cookie")
            assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]
    finally:
        assert orch.stop() == 0


# -- the wire, under the app runner -------------------------------------------------------


def test_flask_module_wire_announce_and_set_cookie_join() -> None:
    mod = ModuleProcess(
        [sys.executable, "-m", "pywatt_asyncio._apprunner", "examples.flask_app:app"]
    )
    try:
        mod.send(INIT)
        announce = mod.next()
        assert isinstance(announce, Announce)
        assert {(e.path, tuple(e.methods)) for e in announce.endpoints} >= {
            ("/hello", ("GET",)),
            ("/items/{item_id:int}", ("GET",)),
            ("/echo", ("POST",)),
            ("/cookies", ("GET",)),
        }
        mod.request("c", "GET", "/cookies")
        resp = mod.response("c")
        # Single-valued wire map: repeated Set-Cookie values joined with "\n".
        assert [c.split(";")[0] for c in resp.headers["set-cookie"].split("\n")] == ["a=1", "b=2"]
        mod.request("h", "HEAD", "/hello")
        head = mod.response("h")
        assert head.status_code == 200 and not head.body
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()


def test_wsgi_import_time_print_goes_to_stderr(tmp_path: Path) -> None:
    app_file = tmp_path / "noisy_wsgi.py"
    app_file.write_text(
        textwrap.dedent(
            """
            print("import-time print from a WSGI app")

            def app(environ, start_response):
                print("request-time print", environ["PATH_INFO"])
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"quiet"]
            """
        )
    )
    mod = ModuleProcess([sys.executable, "-m", "pywatt_asyncio._apprunner", str(app_file)])
    try:
        mod.send(INIT)
        assert isinstance(mod.next(), Announce)
        mod.request("q", "GET", "/anything/at/all")
        resp = mod.response("q")
        assert isinstance(resp, HttpResponse)
        assert (resp.status_code, resp.body) == (200, b"quiet")
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert len(mod.raw_lines) == 2  # the announce and the response: nothing else on stdout
    assert "import-time print from a WSGI app" in mod.stderr
    assert "request-time print /anything/at/all" in mod.stderr
