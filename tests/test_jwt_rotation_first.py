"""module_jwt loads its keys at start-up: a rotation that comes before the first request
still keeps the key in force before it usable (it used to be lost: the keys were first
read at the first request, from a cache already holding the new value)."""

from __future__ import annotations

from typing import Any

import pytest
from test_jwt_helpers import KEY, OTHER_KEY

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request
from pywatt_proto.jwt import encode
from pywatt_sync.testing import TestClient


def bearer(key: bytes) -> dict[str, str]:
    return {"authorization": "Bearer " + encode({"sub": "ann"}, key)}


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_rotation_before_the_first_request_keeps_the_previous_key(driver: str) -> None:
    mod: Any = pywatt_sync if driver == "sync" else pywatt_asyncio
    app = mod.Module(secrets=["JWT_SECRET"])
    auth = mod.module_jwt(app, {"JWT_SECRET": None})

    def me(request: Request) -> dict[str, Any]:
        return {"sub": request.claims["sub"]}

    if driver == "sync":
        app.get("/me", auth="jwt")(me)
    else:

        async def me_async(request: Request) -> dict[str, Any]:
            return me(request)

        app.get("/me", auth="jwt")(me_async)

    with TestClient(app, secrets={"JWT_SECRET": KEY.decode()}) as client:
        assert client.rotate({"JWT_SECRET": OTHER_KEY.decode()}) == ("success", None)
        assert client.get("/me", headers=bearer(OTHER_KEY)).json() == {"sub": "ann"}
        assert client.get("/me", headers=bearer(KEY)).json() == {"sub": "ann"}
        auth.retire_previous()
        assert client.get("/me", headers=bearer(KEY)).status_code == 401


def test_an_unusable_key_at_start_up_does_not_stop_the_module() -> None:
    app = pywatt_sync.Module(secrets=["JWT_SECRET"])
    pywatt_sync.module_jwt(app, {"JWT_SECRET": None})

    @app.get("/me", auth="jwt")
    def me(request: Request) -> dict[str, Any]:
        return {}

    with TestClient(app, secrets={"JWT_SECRET": "short"}) as client:
        assert client.get("/me", headers=bearer(KEY)).status_code == 503
