"""A minimal asyncio PyWatt module.

Run it behind the development orchestrator::

    pywatt run examples/hello.py
    curl -s localhost:8080/hello
    curl -s localhost:8080/hello/ada
    curl -s -X POST --data-binary 'ping' localhost:8080/echo

``print()`` is safe here: the module's stdout is the protocol channel, so pywatt sends
anything printed to stderr instead.
"""

from __future__ import annotations

from pywatt_asyncio import Module
from pywatt_proto import Request, Response

app = Module()


@app.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    return {"message": "Hello from PyWatt!"}


@app.get("/hello/{name}")
async def hello_name(request: Request) -> dict[str, object]:
    return {"message": f"Hello, {request.path_params['name']}!"}


@app.post("/echo")
async def echo(request: Request) -> Response:
    content_type = request.headers.get("content-type") or "application/octet-stream"
    return Response(status=200, headers=(("content-type", content_type),), body=request.body)


if __name__ == "__main__":
    app.run()
