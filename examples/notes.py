"""Notes: an unchanged Starlette app served as a configured module that uses a secret.

Run it next to the hello module, behind one front door::

    NOTES_TOKEN=s3cret pywatt run --secret NOTES_TOKEN examples/hello.py examples/notes.py:module
    curl -s localhost:8080/hello                                      # served by "hello"
    curl -s localhost:8080/notes -H 'authorization: Bearer s3cret' -d 'buy milk'   # by "notes"

``module`` is what ``pywatt run`` serves: the ASGI adapter configured with the secret it
fetches before announcing. ``kill -HUP`` on ``pywatt run`` after changing ``NOTES_TOKEN`` in
a ``--secrets-file`` rotates it; ``on_rotation`` is told which names changed.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pywatt_asyncio import asgi_module

notes: list[str] = []


async def notes_view(request: Request) -> JSONResponse:
    token = await module.secret("NOTES_TOKEN")
    if request.headers.get("authorization") != f"Bearer {token}":
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    if request.method == "POST":
        notes.append((await request.body()).decode("utf-8", "replace"))
    return JSONResponse({"notes": notes})


app = Starlette(routes=[Route("/notes", notes_view, methods=["GET", "POST"])])
module = asgi_module(app, secrets=["NOTES_TOKEN"])


@module.on_rotation
def rotated(keys: tuple[str, ...]) -> None:
    print(f"rotated: {', '.join(keys)}")  # goes to stderr: stdout is the protocol channel


if __name__ == "__main__":
    module.run()
