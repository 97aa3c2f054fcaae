"""A blocking PyWatt module: plain ``def`` handlers on a bounded thread pool.

Run it behind the development orchestrator::

    pywatt run examples/blocking.py
    curl -s localhost:8080/hello
    curl -s localhost:8080/hello/ada
    curl -s -X POST --data-binary 'ping' localhost:8080/echo
    curl -s 'localhost:8080/sum?a=2&b=40'

Handlers may block (a database driver, ``time.sleep``, ``requests``): each runs
on one of the module's worker threads, and when all are busy the module stops
reading new requests instead of dropping them. ``print()`` is safe: the
module's stdout is the protocol channel, so pywatt sends it to stderr.
"""

from __future__ import annotations

import threading
import time

from pywatt_proto import HTTPException, Request, Response
from pywatt_sync import Module

app = Module()
_hits = 0
_hits_lock = threading.Lock()


@app.get("/hello")
def hello(request: Request) -> dict[str, object]:
    global _hits
    with _hits_lock:
        _hits += 1
        hits = _hits
    return {"message": "Hello from a blocking PyWatt module!", "hits": hits}


@app.get("/hello/{name}")
def hello_name(request: Request) -> dict[str, object]:
    return {"message": f"Hello, {request.path_params['name']}!"}


@app.post("/echo")
def echo(request: Request) -> Response:
    content_type = request.headers.get("content-type") or "application/octet-stream"
    return Response(status=200, headers=(("content-type", content_type),), body=request.body)


@app.get("/sum")
def add(request: Request) -> dict[str, int]:
    try:
        a, b = int(request.query.get("a") or 0), int(request.query.get("b") or 0)
    except ValueError:
        raise HTTPException(400, "a and b must be integers") from None
    return {"sum": a + b}


@app.get("/slow")
def slow(request: Request) -> str:
    time.sleep(0.1)  # blocking is fine here: this runs on a worker thread
    print("slow handler finished")  # goes to stderr, never into the protocol
    return "done"


if __name__ == "__main__":
    app.run()
