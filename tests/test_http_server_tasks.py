"""async handlers on the asyncio HTTP server run inside their own task.

A handler that uses ``asyncio.timeout`` (or anything else that needs
``asyncio.current_task()``) must work, whether it finishes without suspending
or after awaiting.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest

import pywatt_asyncio
from pywatt_proto import Request, Router


def _router() -> Router:
    router = Router()

    @router.get("/no-suspend")
    async def no_suspend(request: Request) -> dict[str, bool]:
        async with asyncio.timeout(5):
            return {"task": asyncio.current_task() is not None}

    @router.get("/suspend")
    async def suspend(request: Request) -> dict[str, bool]:
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
            return {"task": asyncio.current_task() is not None}

    @router.get("/plain")
    def plain(request: Request) -> dict[str, str]:
        return {"kind": "plain"}

    return router


@pytest.fixture
def port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        pywatt_asyncio.start_server(_router(), "127.0.0.1", 0), loop
    ).result(10)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("path", ["/no-suspend", "/suspend"])
def test_async_handler_sees_its_task(port: int, path: str) -> None:
    status, body = _get(port, path)
    assert status == 200, body
    assert json.loads(body) == {"task": True}


def test_plain_handler_still_answers(port: int) -> None:
    status, body = _get(port, "/plain")
    assert status == 200
    assert json.loads(body) == {"kind": "plain"}
