"""A module that also serves its routes over plain HTTP on a TCP port it negotiates.

Run it behind the development orchestrator::

    pywatt run examples/tcp_module.py
    curl -s localhost:8080/hello        # over the orchestrator (HTTP over stdio IPC)
    curl -s localhost:8080/tcp          # {"listen":"127.0.0.1:NNNNN","source":"orchestrator"}
    curl -s 127.0.0.1:NNNNN/hello       # the same routes, straight over TCP

Where the port comes from (``Module.negotiate_port()``, see spec/breaker.md section 3):

* the init's ``listen``, when the orchestrator pre-assigned a TCP port (non-zero);
* otherwise a ``port_request``: every attempt has its own request id and only the
  matching ``port_response`` counts; timeouts 3 s, 4 s, 5 s; a circuit breaker (open
  after 5 failed attempts, half-open after 60 s); when the orchestrator does not answer,
  a fallback port from 10000-10999 that was bind-tested first.

The TCP listener is started once, by the first request that needs it (``/tcp``). The reason:
``pywatt_asyncio.Module`` sends its announce as soon as the handshake is done, before any
user code runs, so this module cannot yet put the negotiated address into the announce's
``listen``; ``/tcp`` reports it instead.
"""

from __future__ import annotations

import asyncio
import logging

from pywatt_asyncio import HttpServer, Module, PortResult, start_server
from pywatt_proto import Request

app = Module()
_log = logging.getLogger("tcp_module")

_HOST = "127.0.0.1"
_server: HttpServer | None = None
_result: PortResult | None = None
_starting: asyncio.Lock | None = None


async def tcp_listener() -> tuple[HttpServer, PortResult]:
    """Negotiate a port and serve this module's router on it (once); return both."""
    global _server, _result, _starting
    if _starting is None:
        _starting = asyncio.Lock()
    async with _starting:
        if _server is None or _result is None:
            result = await app.negotiate_port()
            _server = await start_server(app, _HOST, result.port)
            _result = result
            _log.info(
                "serving HTTP on %s:%d (port from %s)", _HOST, result.port, result.source.value
            )
    return _server, _result


@app.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    return {"message": "Hello from PyWatt over TCP!"}


@app.get("/tcp")
async def tcp(request: Request) -> dict[str, str]:
    server, result = await tcp_listener()
    return {"listen": f"{_HOST}:{server.port}", "source": result.source.value}


if __name__ == "__main__":
    app.run()
