"""A FastAPI application served as a PyWatt module, unchanged.

Run it with either of::

    pywatt run examples/fastapi_app.py
    pywatt run examples.fastapi_app:app
    curl -s localhost:8080/items/42?q=x
    curl -s -X POST -H 'content-type: application/json' -d '{"name":"a","price":2}' \\
        localhost:8080/items

or as a plain script (``python examples/fastapi_app.py``) under an orchestrator.
``/cookies`` sets two cookies: the wire's header map is single-valued, so the
module joins repeated ``Set-Cookie`` values with a newline (which can never
occur inside a header value) and ``pywatt run`` splits them back into separate
header lines. The app's lifespan runs before the module announces itself and
after it stops; its routes are announced as the module's endpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from pywatt_asyncio import asgi_module


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    print("FastAPI startup (this goes to stderr)")
    yield {"items": {}}
    print("FastAPI shutdown")


app = FastAPI(title="pywatt example", lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"message": "Hello from FastAPI on PyWatt!"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: str | None = None) -> dict[str, Any]:
    stored = request.state.items.get(item_id)
    return {"item_id": item_id, "q": q, "item": stored}


@app.post("/items", status_code=201)
async def create_item(item: Item, request: Request) -> dict[str, Any]:
    items: dict[int, Any] = request.state.items
    item_id = len(items) + 1
    items[item_id] = item.model_dump()
    return {"item_id": item_id, **item.model_dump()}


@app.get("/cookies")
async def cookies(response: Response) -> dict[str, str]:
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return {"set": "two cookies"}


if __name__ == "__main__":
    asgi_module(app).run()
