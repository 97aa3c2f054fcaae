"""A Flask application served as a PyWatt module, unchanged.

Run it with either of::

    pywatt run examples/flask_app.py
    pywatt run examples.flask_app:app
    curl -s localhost:8080/hello
    curl -s localhost:8080/items/7?q=x
    curl -s -X POST --data-binary 'ping' localhost:8080/echo

or as a plain script (``python examples/flask_app.py``) under an orchestrator.
``/cookies`` sets two cookies: the wire's header map is single-valued, so the
module joins repeated ``Set-Cookie`` values with a newline (which can never
occur inside a header value) and ``pywatt run`` splits them back into separate
header lines. Views run on the module's worker threads; the app's URL rules
are announced as the module's endpoints.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from pywatt_sync import wsgi_module

app = Flask(__name__)


@app.get("/hello")
def hello() -> Any:
    return jsonify(message="Hello from Flask on PyWatt!")


@app.get("/items/<int:item_id>")
def read_item(item_id: int) -> Any:
    return jsonify(item_id=item_id, q=request.args.get("q"))


@app.post("/echo")
def echo() -> Response:
    return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")


@app.get("/cookies")
def cookies() -> Response:
    resp = jsonify(set="two cookies")
    resp.set_cookie("a", "1")
    resp.set_cookie("b", "2")
    return resp


if __name__ == "__main__":
    wsgi_module(app).run()
