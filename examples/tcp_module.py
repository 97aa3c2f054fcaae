"""A module that negotiates a TCP port, serves its routes over plain HTTP on it, and announces
that address as its ``listen``.

Run it behind the development orchestrator::

    pywatt run examples/tcp_module.py   # logs "module announced: ... (listen 127.0.0.1:NNNNN)"
    curl -s localhost:8080/hello        # over the orchestrator (HTTP over stdio IPC)
    curl -s localhost:8080/tcp          # {"listen":"127.0.0.1:NNNNN","source":"orchestrator"}
    curl -s 127.0.0.1:NNNNN/hello       # the same routes, straight over TCP

Order of start-up (bind first, then announce -- the reference announces before its listener
is bound): the ``on_startup`` hook runs after init and before the announce. It

1. gets a port with ``app.negotiate_port()`` (see spec/breaker.md section 3): the init's
   ``listen`` when the orchestrator pre-assigned a TCP port (non-zero); otherwise a
   ``port_request`` -- every attempt has its own request id and only the matching
   ``port_response`` counts; timeouts 3 s, 4 s, 5 s; a circuit breaker (open after 5 failed
   attempts, half-open after 60 s); when the orchestrator does not answer, a fallback port
   from 10000-10999 that was bind-tested first;
2. starts the HTTP server on it (``start_server``), so the port is bound;
3. calls ``app.set_listen(...)``: the announce that follows carries that address.

If any step raises, the module logs it and exits with status 1 without announcing. Requests
that arrive before the announce are answered 503. An orchestrator that never answers the
``port_request`` delays the announce by the three attempts (about 12 s) before the fallback:
longer than ``pywatt run``'s default announce deadline (raise it with ``--announce-timeout``).
``/tcp`` reports the address and where the port came from.
"""

from __future__ import annotations

import logging

from pywatt_asyncio import HttpServer, Module, PortResult, start_server
from pywatt_proto import Request

app = Module()
_log = logging.getLogger("tcp_module")

_HOST = "127.0.0.1"
_server: HttpServer | None = None
_result: PortResult | None = None


@app.on_startup
async def bind_then_announce() -> None:
    """Negotiate a port, serve this module's router on it, announce its address."""
    global _server, _result
    result = await app.negotiate_port()
    _server = await start_server(app, _HOST, result.port)
    _result = result
    app.set_listen(f"{_HOST}:{_server.port}")
    _log.info("serving HTTP on %s:%d (port from %s)", _HOST, _server.port, result.source.value)


@app.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    return {"message": "Hello from PyWatt over TCP!"}


@app.get("/tcp")
async def tcp(request: Request) -> dict[str, str]:
    assert _server is not None and _result is not None  # set before the announce
    return {"listen": f"{_HOST}:{_server.port}", "source": _result.source.value}


if __name__ == "__main__":
    app.run()
