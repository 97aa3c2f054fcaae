"""The contract both drivers keep: one suite, run against each as a real child process.

The same module (same routes, same behaviour) is written once per driver --
``pywatt_asyncio.Module`` with ``async def`` handlers and ``pywatt_sync.Module``
with plain ``def`` handlers -- and started as ``python <script>`` with pipes.
The test is a scripted fake orchestrator speaking raw lines (so it can also
send broken ones); ``tests/modproc.py`` decodes what the module writes.

What is pinned: handshake order (prefetched secret before the announce) and
announce contents, extension negotiation, heartbeat acks, request/response
correlation (also out of order), concurrent handlers, lazy secrets and their
cache, rotation acks and cache eviction, 404/405, bad lines skipped (400 when a
request id can be recovered), binary bodies, shutdown answering in-flight work
and refusing new work (503), exit on end of input, and a stdout that carries
nothing but protocol lines even when handlers ``print()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modproc import INIT, REPO, WAIT, ModuleProcess

from pywatt_proto import (
    Announce,
    GetSecret,
    HeartbeatAck,
    HttpResponse,
    RotationAck,
    decode_module_line,
)

ALL_BYTES = bytes(range(256))

_COMMON = """
rotations = []

app = Module(secrets=["DB_URL"])


@app.get("/hello")
{a}def hello(request):
    return {{"message": "hello", "db": {aw}app.secret("DB_URL")}}


@app.get("/items/{{item_id:int}}")
{a}def item(request):
    return {{"id": request.path_params["item_id"], "q": request.query.get("q")}}


@app.post("/echo")
{a}def echo(request):
    return request.body


@app.get("/big/{{size:int}}")
{a}def big(request):
    return bytes(range(256)) * (request.path_params["size"] // 256)


@app.get("/print")
{a}def printer(request):
    print("printed-from-handler")
    return "printed"


@app.get("/secret/{{name}}")
{a}def secret(request):
    return {{"value": {aw}app.secret(request.path_params["name"])}}


@app.get("/wait")
{a}def wait(request):
    {wait_gate}
    return "released"


@app.get("/release")
{a}def release(request):
    GATE.set()
    return "ok"


@app.on_rotation
def rotated(keys):
    rotations.append(list(keys))


@app.get("/rotations")
{a}def get_rotations(request):
    return rotations


app.run()
"""

SCRIPTS = {
    "asyncio": "import asyncio\nfrom pywatt_asyncio import Module\nGATE = asyncio.Event()\n"
    + _COMMON.format(a="async ", aw="await ", wait_gate="await asyncio.wait_for(GATE.wait(), 30)"),
    "sync": "import threading\nfrom pywatt_sync import Module\nGATE = threading.Event()\n"
    + _COMMON.format(a="", aw="", wait_gate="assert GATE.wait(30)"),
}

ENDPOINTS = {
    ("/hello", ("GET",)),
    ("/items/{item_id:int}", ("GET",)),
    ("/echo", ("POST",)),
    ("/big/{size:int}", ("GET",)),
    ("/print", ("GET",)),
    ("/secret/{name}", ("GET",)),
    ("/wait", ("GET",)),
    ("/release", ("GET",)),
    ("/rotations", ("GET",)),
}


@pytest.fixture(params=sorted(SCRIPTS))
def script(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"contract_{request.param}.py"
    path.write_text(textwrap.dedent(SCRIPTS[request.param]))
    return path


def start(script: Path, init: dict[str, Any] | None = None) -> tuple[ModuleProcess, Announce]:
    """Start the module, do the handshake, return it with its announce."""
    mod = ModuleProcess.python(script)
    mod.send(init or INIT)
    first = mod.next()
    assert first == GetSecret(name="DB_URL"), "prefetched secret is requested before announcing"
    mod.send({"op": "secret", "name": "DB_URL", "value": "postgres://db"})
    announce = mod.next()
    assert isinstance(announce, Announce)
    return mod, announce


@pytest.fixture
def module(script: Path) -> Iterator[ModuleProcess]:
    mod, _ = start(script)
    yield mod
    mod.stop()
    assert_clean_stdout(mod)


def assert_clean_stdout(mod: ModuleProcess) -> None:
    for line in mod.raw_lines:
        assert line.endswith(b"\n")
        decode_module_line(line.rstrip(b"\n"))  # raises if anything but protocol got in


def body_json(resp: HttpResponse) -> Any:
    assert resp.body is not None
    return json.loads(resp.body)


# -- handshake ------------------------------------------------------------------------


def test_handshake_and_announce_contents(script: Path) -> None:
    mod, announce = start(script)
    try:
        assert announce.listen == "127.0.0.1:4102"
        assert {(e.path, tuple(e.methods)) for e in announce.endpoints} == ENDPOINTS
        assert all(e.auth is None for e in announce.endpoints)
        assert tuple(announce.extensions) == ()  # none offered, none used
    finally:
        mod.stop()


def test_extensions_negotiated_and_flat_responses(script: Path) -> None:
    init = dict(INIT, pywatt_extensions=["http_response_op", "heartbeat_ack", "future_thing"])
    mod, announce = start(script, init)
    try:
        assert sorted(announce.extensions) == ["heartbeat_ack", "http_response_op"]
        mod.request("r1", "GET", "/hello")
        line = mod.raw_line()
        assert line.startswith(b'{"op":"http_response"')
        resp = decode_module_line(line.rstrip(b"\n"))
        assert isinstance(resp, HttpResponse) and resp.request_id == "r1"
    finally:
        mod.stop()


def test_default_response_shape_is_reference_wrapper(module: ModuleProcess) -> None:
    module.request("w1", "GET", "/hello")
    line = module.raw_line()
    obj = json.loads(line)
    assert set(obj) == {"content", "metadata"}
    assert obj["metadata"]["properties"]["correlation_id"] == "w1"
    assert obj["metadata"]["source"] == "contract-mod"
    assert obj["content"]["request_id"] == "w1"


# -- requests -------------------------------------------------------------------------


def test_heartbeat_is_acknowledged(module: ModuleProcess) -> None:
    module.send({"op": "heartbeat"})
    assert module.next() == HeartbeatAck()


def test_request_response_correlation(module: ModuleProcess) -> None:
    for i in range(10):
        module.request(f"id-{i}", "GET", f"/items/{i}?q=v{i}")
    for i in reversed(range(10)):
        resp = module.response(f"id-{i}")
        assert resp.status_code == 200
        assert body_json(resp) == {"id": i, "q": f"v{i}"}
    module.request("h", "GET", "/hello")
    assert body_json(module.response("h")) == {"message": "hello", "db": "postgres://db"}


def test_many_pipelined_requests_each_answered_once(module: ModuleProcess) -> None:
    count = 300
    lines = [
        json.dumps(
            {
                "op": "http_request",
                "request_id": f"p{i}",
                "method": "GET",
                "uri": f"/items/{i}",
                "headers": {},
                "body": None,
            }
        )
        for i in range(count)
    ]
    module.send_raw("\n".join(lines))  # one write: the module sees them all at once
    seen: dict[str, Any] = {}
    for _ in range(count):
        resp = module.expect(HttpResponse)
        assert resp.request_id not in seen
        seen[resp.request_id] = body_json(resp)
    assert seen == {f"p{i}": {"id": i, "q": None} for i in range(count)}


def test_large_concurrent_responses_never_interleave(module: ModuleProcess) -> None:
    sizes = {f"big{i}": 256 * (200 + 37 * i) for i in range(24)}  # ~50 KiB .. ~260 KiB
    module.send_raw(
        "\n".join(
            json.dumps(
                {"op": "http_request", "request_id": rid, "method": "GET", "uri": f"/big/{size}"}
                | {"headers": {}, "body": None}
            )
            for rid, size in sizes.items()
        )
    )
    for _ in sizes:
        resp = module.expect(HttpResponse)  # every line decodes: nothing was interleaved
        assert resp.body == bytes(range(256)) * (sizes[resp.request_id] // 256)


def test_concurrent_requests_answer_out_of_order(module: ModuleProcess) -> None:
    module.request("waiter", "GET", "/wait")
    module.request("releaser", "GET", "/release")
    first = module.expect(HttpResponse)
    assert first.request_id == "releaser", "a waiting handler must not block the next request"
    second = module.response("waiter")
    assert (second.status_code, second.body) == (200, b"released")


def test_binary_body_round_trip(module: ModuleProcess) -> None:
    module.request("bin", "POST", "/echo", {"content-type": "application/octet-stream"}, ALL_BYTES)
    resp = module.response("bin")
    assert resp.status_code == 200
    assert resp.body == ALL_BYTES


def test_not_found_and_method_not_allowed(module: ModuleProcess) -> None:
    module.request("nf", "GET", "/nope")
    assert module.response("nf").status_code == 404
    module.request("na", "DELETE", "/hello")
    resp = module.response("na")
    assert resp.status_code == 405
    assert "GET" in resp.headers["allow"]


def test_bad_lines_are_skipped(module: ModuleProcess) -> None:
    module.send_raw("this is not json", "{}", '{"op":"no_such_op"}', "[1,2,3]")
    module.send_raw('{"op":"http_request","request_id":"broken"}')  # fields missing
    assert module.response("broken").status_code == 400
    module.request("after", "GET", "/hello")
    assert module.response("after").status_code == 200


# -- secrets and rotation --------------------------------------------------------------


def test_secret_fetched_once_then_cached(module: ModuleProcess) -> None:
    module.request("s1", "GET", "/secret/API_KEY")
    assert module.next() == GetSecret(name="API_KEY")
    module.send({"op": "secret", "name": "API_KEY", "value": "k-1"})
    assert body_json(module.response("s1")) == {"value": "k-1"}
    module.request("s2", "GET", "/secret/API_KEY")
    resp = module.next()  # no second get_secret: the response comes straight away
    assert isinstance(resp, HttpResponse) and resp.request_id == "s2"
    assert body_json(resp) == {"value": "k-1"}


def test_rotation_is_acknowledged_and_evicts(module: ModuleProcess) -> None:
    module.send({"op": "rotated", "keys": ["DB_URL"], "rotation_id": "rot-7"})
    assert module.expect(RotationAck) == RotationAck(
        rotation_id="rot-7", status="success", message=None
    )
    module.request("rot", "GET", "/rotations")
    assert body_json(module.response("rot")) == [["DB_URL"]]
    module.request("h", "GET", "/hello")  # DB_URL was evicted: asked for again
    assert module.expect(GetSecret) == GetSecret(name="DB_URL")
    module.send({"op": "secret", "name": "DB_URL", "value": "postgres://rotated"})
    assert body_json(module.response("h"))["db"] == "postgres://rotated"


# -- stopping ---------------------------------------------------------------------------


def test_shutdown_answers_in_flight_and_refuses_new(script: Path) -> None:
    mod, _ = start(script)
    try:
        mod.request("inflight", "GET", "/secret/GO")  # blocks until GO arrives
        assert mod.next() == GetSecret(name="GO")
        mod.send({"op": "shutdown"})
        mod.request("late", "GET", "/hello")
        assert mod.response("late").status_code == 503
        mod.send({"op": "secret", "name": "GO", "value": "yes"})
        resp = mod.response("inflight")
        assert (resp.status_code, body_json(resp)) == (200, {"value": "yes"})
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert_clean_stdout(mod)


def test_sigterm_is_a_graceful_shutdown(script: Path) -> None:
    mod, _ = start(script)
    try:
        mod.request("inflight", "GET", "/secret/GO")
        assert mod.next() == GetSecret(name="GO")
        mod.proc.send_signal(signal.SIGTERM)
        # No event tells the test when the signal was handled: poll with fresh requests
        # until one is refused, so the in-flight one is known to be answered after it.
        for attempt in range(200):
            mod.request(f"late{attempt}", "GET", "/hello")
            if mod.response(f"late{attempt}").status_code == 503:
                break
        else:
            raise AssertionError("SIGTERM never stopped new requests")
        mod.send({"op": "secret", "name": "GO", "value": "yes"})
        assert mod.response("inflight").status_code == 200
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert_clean_stdout(mod)


def test_end_of_input_exits_cleanly(script: Path) -> None:
    mod, _ = start(script)
    try:
        mod.close_stdin()
        assert mod.wait() == 0
        assert len(mod.raw_lines) == 2  # get_secret + announce, nothing after
    finally:
        mod.stop()


def test_end_of_input_answers_in_flight_first(script: Path) -> None:
    mod, _ = start(script)
    try:
        mod.request("waiter", "GET", "/wait")
        mod.request("releaser", "GET", "/release")
        mod.close_stdin()
        assert mod.response("waiter").body == b"released"
        assert mod.response("releaser").status_code == 200
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert_clean_stdout(mod)


_LATE_SECRET = """
app = Module(secret_timeout=600)


@app.get("/late")
{a}def late(request):
    {pause}  # input closes meanwhile (if not, the secret is failed at end of input instead)
    try:
        return {aw}app.secret("LATE")
    except SecretUnavailable as exc:
        return {{"unavailable": str(exc)}}


app.run()
"""


@pytest.mark.parametrize(
    "head, a, pause",
    [
        ("import asyncio\nfrom pywatt_asyncio import Module", "async ", "await asyncio.sleep(0.3)"),
        ("import time\nfrom pywatt_sync import Module", "", "time.sleep(0.3)"),
    ],
    ids=["asyncio", "sync"],
)
def test_secret_asked_after_end_of_input_fails_at_once(
    tmp_path: Path, head: str, a: str, pause: str
) -> None:
    # Nobody can answer a get_secret once stdin is closed: the handler hears so at once
    # (not after secret_timeout) and nothing is written for it.
    path = tmp_path / "late_secret.py"
    source = _LATE_SECRET.format(a=a, aw="await " if a else "", pause=pause)
    path.write_text(head + "\nfrom pywatt_proto import SecretUnavailable\n" + source)
    mod = ModuleProcess.python(path)
    try:
        mod.send(INIT)
        assert isinstance(mod.next(), Announce)
        mod.request("late", "GET", "/late")
        mod.close_stdin()
        assert body_json(mod.response("late")) == {"unavailable": "LATE: input closed"}
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert_clean_stdout(mod)
    assert len(mod.raw_lines) == 2  # announce and the answer: no get_secret


def test_print_goes_to_stderr_not_the_protocol(script: Path) -> None:
    mod, _ = start(script)
    try:
        mod.request("p", "GET", "/print")
        resp = mod.response("p")
        assert (resp.status_code, resp.body) == (200, b"printed")
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()
    assert_clean_stdout(mod)
    assert "printed-from-handler" in mod.stderr


_BIG = """
app = Module()


@app.get("/big")
{a}def big(request):
    return b"x" * (1024 * 1024)


app.run()
"""


def big_answers_then_shutdown(tmp_path: Path, head: str, a: str) -> subprocess.Popen[bytes]:
    """A module asked for six 1 MiB answers (~25 MiB of lines) and then to shut down."""
    path = tmp_path / "big.py"
    path.write_text(head + "\n" + _BIG.format(a=a))
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(INIT).encode() + b"\n")
    proc.stdin.flush()
    assert b'"announce"' in proc.stdout.readline()
    for i in range(6):
        line = {"op": "http_request", "request_id": f"b{i}", "method": "GET", "uri": "/big"}
        proc.stdin.write(json.dumps(line | {"headers": {}, "body": None}).encode() + b"\n")
    proc.stdin.write(b'{"op":"shutdown"}\n')
    proc.stdin.close()
    return proc


def stop_big(proc: subprocess.Popen[bytes]) -> bytes:
    """Kill the module if it still runs; return its stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    proc.kill()
    proc.wait()
    proc.stdout.close()
    with proc.stderr:
        return proc.stderr.read()


BIG_DRIVERS = pytest.mark.parametrize(
    "head, a",
    [("from pywatt_asyncio import Module", "async "), ("from pywatt_sync import Module", "")],
    ids=["asyncio", "sync"],
)


@BIG_DRIVERS
def test_shutdown_waits_for_a_slow_reader_while_output_moves(
    tmp_path: Path, head: str, a: str
) -> None:
    # Read at ~2.5 MB/s: longer than the final flush's 5 s, but never 5 s without
    # progress, so every answer arrives whole before the module exits.
    proc = big_answers_then_shutdown(tmp_path, head, a)
    assert proc.stdout is not None
    try:
        data = bytearray()
        while chunk := os.read(proc.stdout.fileno(), 64 * 1024):
            data += chunk
            time.sleep(0.025)
        assert proc.wait(WAIT) == 0
    finally:
        stop_big(proc)
    answers = [decode_module_line(raw) for raw in bytes(data).splitlines()]
    assert sorted(r.request_id for r in answers if isinstance(r, HttpResponse)) == [
        f"b{i}" for i in range(6)
    ]


@BIG_DRIVERS
def test_reader_that_stopped_reading_cannot_keep_the_module_alive(
    tmp_path: Path, head: str, a: str
) -> None:
    # Nobody reads: after 5 s without progress the module gives up on the rest, says
    # so, and does not report a clean stop.
    proc = big_answers_then_shutdown(tmp_path, head, a)
    try:
        assert proc.wait(WAIT) == 1
    finally:
        err = stop_big(proc)
    assert b"protocol output stalled for 5.0 s" in err
