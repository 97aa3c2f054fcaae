"""``pywatt_asyncio.Module`` runs ``async def`` handlers in eagerly started tasks.

A handler's task takes its first step as soon as the request is read; one that finishes
without waiting is answered at once, one that waits goes on as an ordinary task. Every test
drives ``Module.serve_stdio`` over two ``os.pipe()`` pairs and plays the orchestrator; time
is a fake clock on the event loop (``FakeTimeLoop``), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pywatt_asyncio import Module
from pywatt_proto import Request

INIT_LINE = (
    b'{"orchestrator_api":"http://127.0.0.1:1","module_id":"t","env":{},'
    b'"listen":"127.0.0.1:0","pywatt_extensions":["http_response_op"]}\n'
)


def http_line(rid: str, uri: str) -> bytes:
    return (
        b'{"op":"http_request","request_id":"%s","method":"GET","uri":"%s","headers":{},'
        b'"body":null}\n' % (rid.encode(), uri.encode())
    )


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test says so (plus real time)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset


class Orchestrator:
    """The test's end of the two pipes: writes lines, collects the module's answers."""

    def __init__(self, app: Module) -> None:
        self.app = app
        self.to_mod_r, self.to_mod_w = os.pipe()
        self.from_mod_r, self.from_mod_w = os.pipe()
        self.buf = b""
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.serving: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Orchestrator:
        loop = asyncio.get_running_loop()
        os.set_blocking(self.from_mod_r, False)
        loop.add_reader(self.from_mod_r, self._readable)
        self.serving = asyncio.ensure_future(
            self.app.serve_stdio(read_fd=self.to_mod_r, write_fd=self.from_mod_w, guard=False)
        )
        await self.send(INIT_LINE)
        await self.wait_for(lambda: any(m.get("op") == "announce" for m in self.messages))
        return self

    async def __aexit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        if self.serving is not None and not self.serving.done():
            self.serving.cancel()
            await asyncio.gather(self.serving, return_exceptions=True)
        loop.remove_reader(self.from_mod_r)
        for fd in (self.to_mod_r, self.to_mod_w, self.from_mod_r, self.from_mod_w):
            with contextlib.suppress(OSError):  # -1: input already closed by the test
                os.close(fd)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.from_mod_r, 1 << 20)
        except BlockingIOError:
            return
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        self.messages.extend(json.loads(x) for x in lines if x)
        self.arrived.set()

    async def send(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _write_all, self.to_mod_w, data)

    async def close_input(self) -> int:
        os.close(self.to_mod_w)
        self.to_mod_w = -1
        assert self.serving is not None
        return await asyncio.wait_for(self.serving, 30)

    async def wait_for(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):  # a safety net only: every test wakes up at once
            while not cond():
                self.arrived.clear()
                await self.arrived.wait()

    def responses(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("op") == "http_response"]

    def answer(self, rid: str) -> tuple[int, bytes]:
        (m,) = [m for m in self.responses() if m["request_id"] == rid]
        return m["status_code"], bytes(m["body"])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(test: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=FakeTimeLoop) as runner:
        runner.run(test())


def test_handlers_that_never_wait_are_answered_in_arrival_order() -> None:
    """Handlers that finish without suspending are answered at once, in arrival order."""
    app = Module()

    @app.get("/id/{n}")
    async def ident(request: Request) -> dict[str, str]:
        return {"n": request.path_params["n"]}

    async def main() -> None:
        async with Orchestrator(app) as orch:
            n = 500
            await orch.send(b"".join(http_line(f"r{i}", f"/id/{i}") for i in range(n)))
            await orch.wait_for(lambda: len(orch.responses()) == n)
            got = orch.responses()
            assert [m["request_id"] for m in got] == [f"r{i}" for i in range(n)]
            assert all(
                (m["status_code"], json.loads(bytes(m["body"]))) == (200, {"n": f"{i}"})
                for i, m in enumerate(got)
            )
            assert await orch.close_input() == 0

    run(main)


def test_many_in_flight_mixing_waiting_and_immediate_handlers_have_no_mismatch() -> None:
    app = Module(max_concurrency=16, max_in_flight=4000)
    gate = asyncio.Event()

    @app.get("/now/{n}")
    async def now(request: Request) -> str:
        return request.path_params["n"]

    @app.get("/later/{n}")
    async def later(request: Request) -> str:
        await gate.wait()
        await asyncio.sleep(0)
        return request.path_params["n"]

    async def main() -> None:
        async with Orchestrator(app) as orch:
            n = 3000
            lines = [
                http_line(f"r{i}", f"/{'later' if i % 3 == 0 else 'now'}/{i}") for i in range(n)
            ]
            for k in range(0, n, 250):
                await orch.send(b"".join(lines[k : k + 250]))
            # r0, r3, ..., r45 wait and hold all 16 slots; the 30 immediate ones before r45
            # are answered; r46 and everything behind it wait for a slot, in order.
            await orch.wait_for(lambda: len(orch.responses()) >= 30)
            await asyncio.sleep(0)
            assert [m["request_id"] for m in orch.responses()] == [
                f"r{i}" for i in range(45) if i % 3
            ]
            gate.set()
            await orch.wait_for(lambda: len(orch.responses()) == n)
            got = {m["request_id"]: (m["status_code"], bytes(m["body"])) for m in orch.responses()}
            assert len(got) == n
            assert all(got[f"r{i}"] == (200, str(i).encode()) for i in range(n))
            assert await orch.close_input() == 0

    run(main)


def test_current_task_is_one_real_task_for_the_whole_handler() -> None:
    """The task is current from the first line, the same object after each await, and
    asyncio.timeout / TaskGroup work inside it."""
    app = Module()
    seen: list[bool] = []

    @app.get("/t")
    async def in_task(request: Request) -> dict[str, object]:
        first = asyncio.current_task()
        assert isinstance(first, asyncio.Task)
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        same = asyncio.current_task() is first
        async with asyncio.TaskGroup() as tg:
            child = tg.create_task(asyncio.sleep(0, result=7))
        seen.append(same)
        return {"same": same, "child": child.result(), "done": first.done()}

    async def main() -> None:
        async with Orchestrator(app) as orch:
            await orch.send(http_line("a", "/t"))
            await orch.wait_for(lambda: len(orch.responses()) == 1)
            assert orch.answer("a") == (200, b'{"same":true,"child":7,"done":false}')
            assert seen == [True]
            assert await orch.close_input() == 0

    run(main)


def test_handlers_that_raise_before_or_after_waiting_answer_500_or_their_error_handler() -> None:
    app = Module()

    class Teapot(Exception):
        pass

    @app.error_handler(Teapot)
    async def teapot(request: Request, exc: Exception) -> tuple[str, int]:
        await asyncio.sleep(0)
        return "teapot", 418

    @app.get("/early")
    async def early(request: Request) -> str:
        raise RuntimeError("before any await")

    @app.get("/late")
    async def late(request: Request) -> str:
        await asyncio.sleep(0)
        raise RuntimeError("after an await")

    @app.get("/tea")
    async def tea(request: Request) -> str:
        raise Teapot()

    async def main() -> None:
        async with Orchestrator(app) as orch:
            await orch.send(http_line("e", "/early") + http_line("l", "/late"))
            await orch.send(http_line("t", "/tea"))
            await orch.wait_for(lambda: len(orch.responses()) == 3)
            assert orch.answer("e")[0] == 500
            assert orch.answer("l")[0] == 500
            assert orch.answer("t") == (418, b"teapot")
            assert b"before any await" not in orch.answer("e")[1]  # no internals leak
            assert await orch.close_input() == 0

    run(main)


def test_context_variables_are_private_to_each_request() -> None:
    app = Module()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    release = asyncio.Event()

    @app.get("/ctx/{n}")
    async def ctx(request: Request) -> dict[str, str]:
        before = var.get()
        var.set(request.path_params["n"])
        if request.path_params["n"].startswith("w"):
            await release.wait()
        return {"before": before, "after": var.get()}

    async def main() -> None:
        async with Orchestrator(app) as orch:
            await orch.send(b"".join(http_line(f"w{i}", f"/ctx/w{i}") for i in range(5)))
            await orch.send(b"".join(http_line(f"n{i}", f"/ctx/n{i}") for i in range(5)))
            await orch.wait_for(lambda: len(orch.responses()) == 5)
            release.set()
            await orch.wait_for(lambda: len(orch.responses()) == 10)
            for rid in [f"w{i}" for i in range(5)] + [f"n{i}" for i in range(5)]:
                body = json.loads(orch.answer(rid)[1])
                assert body == {"before": "unset", "after": rid}
            assert var.get() == "unset"
            assert await orch.close_input() == 0

    run(main)


def test_a_waiting_handler_is_cancelled_by_the_504_after_shutdown() -> None:
    """Shutdown waits for in-flight handlers; one that never finishes is answered 504 at
    its deadline, its task is cancelled (its cleanup runs), and the module exits 0."""
    app = Module(request_timeout=30.0)
    cleaned: list[str] = []
    started = asyncio.Event()

    @app.get("/stuck")
    async def stuck(request: Request) -> str:
        try:
            started.set()
            await asyncio.get_running_loop().create_future()  # never resolved
            return "unreachable"
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    @app.get("/quick")
    async def quick(request: Request) -> str:
        return "quick"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, FakeTimeLoop)
        async with Orchestrator(app) as orch:
            await orch.send(http_line("s", "/stuck") + http_line("q", "/quick"))
            await started.wait()
            await orch.send(b'{"op":"shutdown"}\n' + http_line("late", "/quick"))
            await orch.wait_for(lambda: len(orch.responses()) == 2)
            assert orch.answer("q") == (200, b"quick")
            assert orch.answer("late")[0] == 503
            assert cleaned == []
            loop.offset += 31.0  # past the request deadline
            loop.call_soon(lambda: None)  # wake the loop so it sees the due timer
            assert orch.serving is not None
            assert await asyncio.wait_for(asyncio.shield(orch.serving), 30) == 0
            assert orch.answer("s")[0] == 504
            assert cleaned == ["cancelled"]

    run(main)


def test_a_task_factory_on_the_loop_is_used_for_handler_tasks() -> None:
    app = Module()
    made: list[str] = []

    @app.get("/f")
    async def f(request: Request) -> str:
        await asyncio.sleep(0)
        return "ok"

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append(getattr(coro, "__qualname__", "?"))
        return asyncio.Task(coro, loop=loop, **kw)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(factory)
        async with Orchestrator(app) as orch:
            made.clear()
            await orch.send(http_line("a", "/f"))
            await orch.wait_for(lambda: len(orch.responses()) == 1)
            assert orch.answer("a") == (200, b"ok")
            assert made  # the handler's task came from the factory
            assert await orch.close_input() == 0

    run(main)


@pytest.mark.parametrize("sync_handler", [False, True])
def test_a_handler_that_cancels_itself_before_waiting_gets_no_answer_until_504(
    sync_handler: bool,
) -> None:
    """Today's contract: a cancelled handler task is not answered by the driver; the core
    answers 504 at the deadline (eager start keeps that)."""
    app = Module(request_timeout=30.0)

    @app.get("/self")
    async def self_cancel(request: Request) -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        if not sync_handler:
            await asyncio.sleep(0)
        return "not sent"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, FakeTimeLoop)
        async with Orchestrator(app) as orch:
            await orch.send(http_line("c", "/self") + http_line("x", "/missing"))
            await orch.wait_for(lambda: len(orch.responses()) == 1)
            assert orch.answer("x")[0] == 404
            loop.offset += 31.0
            loop.call_soon(lambda: None)
            await orch.wait_for(lambda: len(orch.responses()) == 2)
            assert orch.answer("c")[0] == 504
            assert await orch.close_input() == 0

    run(main)
