"""The core embeds in a third runtime: a trio module built from nothing but pywatt_proto.

pywatt ships no trio driver. The script below is one: about a hundred lines
of trio that read stdin into a :class:`pywatt_proto.ModuleConnection`, run
handlers found by a :class:`pywatt_proto.Router` in a nursery, write what the
core hands back (one writer, under a lock, in order) and arm the one timer the
core asks for. It runs as a child process and the test drives it over real
pipes exactly like the asyncio/blocking contract tests do. If the core had
hidden I/O, a clock, or asyncio/thread assumptions, this would not work.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from modproc import INIT, ModuleProcess

from pywatt_proto import Announce, HeartbeatAck, decode_module_line

TRIO_MODULE = """
import math
import os
import sys

import trio

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    HTTPException,
    ModuleConnection,
    ModuleState,
    RequestReceived,
    Router,
    SecretFailed,
    SecretUpdated,
)

# The stdout guard, trio-style: keep the real stdout for the protocol, send fd 1 to stderr.
PROTO_FD = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr

router = Router()
GATE = trio.Event()
secret_events = {}  # secret name -> trio.Event set when the core reports it


@router.get("/hello")
async def hello(request):
    print("printed-from-trio-handler")
    return {"runtime": "trio", "message": "hello"}


@router.get("/items/{item_id:int}")
def item(request):
    return {"id": request.path_params["item_id"], "q": request.query.get("q")}


@router.get("/wait")
async def wait(request):
    with trio.fail_after(30):
        await GATE.wait()
    return "released"


@router.get("/release")
def release(request):
    GATE.set()
    return "ok"


@router.get("/secret/{name}")
async def secret(request):
    name = request.path_params["name"]
    value = conn.get_secret(name, trio.current_time())
    while value is None:
        event = secret_events.setdefault(name, trio.Event())
        await flush()
        kick.set()
        await event.wait()
        value = conn.cached_secret(name)
    return {"value": value}


conn = ModuleConnection(endpoints=router.announce_endpoints())
out = trio.lowlevel.FdStream(PROTO_FD)
out_lock = trio.Lock()
kick = trio.Event()  # "the core's timer may have changed"
closed = trio.Event()  # the core reached CLOSED: every request answered


async def flush():
    async with out_lock:  # take the bytes under the lock: output keeps the core's order
        data = conn.data_to_send()
        if data:
            await out.send_all(data)
    if conn.state is ModuleState.CLOSED:
        closed.set()


async def dispatch(request):
    now = trio.current_time()
    plan = router.plan(request, now)
    try:
        if plan.response is not None:
            response = plan.response
        else:
            handler_request = router.enter(plan, plan.request)
            result = plan.route.handler(handler_request)
            if hasattr(result, "__await__"):
                result = await result
            response = router.to_response(result)
    except Exception as exc:
        response = router.error_response(exc)
    return router.finish(plan, response, trio.current_time())


async def serve(event):
    response = await dispatch(event.to_router_request())
    conn.send_response(event.request_id, response.status, response.headers, response.body)
    await flush()
    kick.set()


async def timer():
    global kick
    while conn.state is not ModuleState.CLOSED:
        deadline = conn.get_timer()
        with trio.move_on_at(math.inf if deadline is None else deadline):
            await kick.wait()
        kick = trio.Event()
        if deadline is not None and trio.current_time() >= deadline:
            conn.handle_timer(trio.current_time())
            await pump(nursery)


async def pump(nursery):
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is END_OF_INPUT:
            break
        if isinstance(event, RequestReceived):
            nursery.start_soon(serve, event)
        elif isinstance(event, (SecretUpdated, SecretFailed)):
            secret_events.pop(event.name, trio.Event()).set()
    await flush()


async def read_stdin():
    stdin = trio.lowlevel.FdStream(os.dup(0))
    while True:
        chunk = await stdin.receive_some(65536)
        if chunk:
            conn.receive_data(chunk, trio.current_time())
        else:
            conn.receive_eof()
        await pump(nursery)
        kick.set()
        if not chunk:
            return


async def main():
    global nursery
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer)
        nursery.start_soon(read_stdin)
        await closed.wait()
        nursery.cancel_scope.cancel()


trio.run(main)
"""


@pytest.fixture
def trio_module(tmp_path: Path) -> Iterator[ModuleProcess]:
    script = tmp_path / "trio_module.py"
    script.write_text(textwrap.dedent(TRIO_MODULE))
    mod = ModuleProcess.python(script)
    mod.send(INIT)
    announce = mod.next()
    assert isinstance(announce, Announce)
    assert {e.path for e in announce.endpoints} == {
        "/hello",
        "/items/{item_id:int}",
        "/wait",
        "/release",
        "/secret/{name}",
    }
    yield mod
    mod.stop()
    for line in mod.raw_lines:
        decode_module_line(line.rstrip(b"\n"))


def test_trio_module_serves_requests(trio_module: ModuleProcess) -> None:
    trio_module.send({"op": "heartbeat"})
    assert trio_module.next() == HeartbeatAck()
    for i in range(5):
        trio_module.request(f"r{i}", "GET", f"/items/{i}?q=x")
    for i in range(5):
        resp = trio_module.response(f"r{i}")
        assert resp.body is not None and json.loads(resp.body) == {"id": i, "q": "x"}
    trio_module.request("h", "GET", "/hello")
    resp = trio_module.response("h")
    assert resp.body is not None and json.loads(resp.body)["runtime"] == "trio"
    trio_module.request("nf", "GET", "/nope")
    assert trio_module.response("nf").status_code == 404


def test_trio_module_runs_handlers_concurrently(trio_module: ModuleProcess) -> None:
    trio_module.request("waiter", "GET", "/wait")
    trio_module.request("releaser", "GET", "/release")
    assert trio_module.response("releaser").status_code == 200
    assert trio_module.response("waiter").body == b"released"


def test_trio_module_secret_round_trip(trio_module: ModuleProcess) -> None:
    from pywatt_proto import GetSecret

    trio_module.request("s", "GET", "/secret/TOKEN")
    assert trio_module.expect(GetSecret) == GetSecret(name="TOKEN")
    trio_module.send({"op": "secret", "name": "TOKEN", "value": "t-1"})
    resp = trio_module.response("s")
    assert resp.body is not None and json.loads(resp.body) == {"value": "t-1"}


def test_trio_module_shutdown_and_stderr(trio_module: ModuleProcess) -> None:
    trio_module.request("h", "GET", "/hello")
    assert trio_module.response("h").status_code == 200
    trio_module.send({"op": "shutdown"})
    assert trio_module.wait() == 0
    assert "printed-from-trio-handler" in trio_module.stderr
