"""``pywatt_asyncio.Module`` on pipes: input larger than one read (``READ_CHUNK``)."""

from __future__ import annotations

import asyncio
import json
import os

from pywatt_asyncio import Module
from pywatt_asyncio._stdio import READ_CHUNK
from pywatt_proto import Request

INIT_LINE = (
    b'{"orchestrator_api":"http://127.0.0.1:1","module_id":"t","env":{},'
    b'"listen":"127.0.0.1:0","pywatt_extensions":["http_response_op"]}\n'
)


def test_a_request_line_longer_than_several_reads_is_answered_whole() -> None:
    app = Module()

    @app.post("/len")
    async def length(request: Request) -> dict[str, int]:
        return {"len": len(request.body), "sum": sum(request.body)}

    body = bytes(range(256)) * (3 * READ_CHUNK // 256 + 7)
    line = (
        json.dumps(
            {
                "op": "http_request",
                "request_id": "big",
                "method": "POST",
                "uri": "/len",
                "headers": {},
                "body": list(body),
            }
        ).encode()
        + b"\n"
    )
    assert len(line) > 4 * READ_CHUNK
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()

    def feed() -> None:
        view = memoryview(INIT_LINE + line)
        while view:
            view = view[os.write(w_in, view) :]
        os.close(w_in)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        writer = loop.run_in_executor(None, feed)  # larger than the pipe: written meanwhile
        code = await asyncio.wait_for(
            app.serve_stdio(read_fd=r_in, write_fd=w_out, guard=False), 30
        )
        await writer
        return code

    try:
        assert asyncio.run(main()) == 0
    finally:
        os.close(r_in)
        os.close(w_out)
    with os.fdopen(r_out, "rb") as fh:
        out = [json.loads(x) for x in fh.read().splitlines()]
    (answer,) = [m for m in out if m.get("op") == "http_response"]
    assert answer["status_code"] == 200
    assert json.loads(bytes(answer["body"])) == {"len": len(body), "sum": sum(body)}
