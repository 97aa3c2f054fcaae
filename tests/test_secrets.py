"""Issue 14.13: secrets handled like secrets.

Every secret value a module receives (prefetched, fetched, rotated) is redacted from every
log record -- any logger, message, arguments, traceback -- without configuration; typed
getters ``app.secret(name, type=int)``; ``SecretValue`` masks its repr.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request, SecretRedactor, SecretValue, convert_secret
from pywatt_proto._secrets import MASK, MAX_REDACTED_VALUES
from pywatt_sync.testing import TestClient

DB_URL = "postgres://notes:hunter2-very-secret@db/notes"
ROTATED = "postgres://notes:rotated-s3cret-value@db/notes"
API_KEY = "k-3f9a8b7c6d5e"
TYPED = {"PORT": "8080", "DEBUG": " Yes ", "RATIO": "0.25", "BAD": "maybe-not", "TOKEN": API_KEY}

app_log = logging.getLogger("notes.db")  # an application logger, not a pywatt one


def sync_module() -> pywatt_sync.Module:
    app = pywatt_sync.Module(secrets=["DB_URL"])

    @app.get("/connect")
    def connect(request: Request) -> str:
        url = app.secret("DB_URL")
        app_log.info("connecting to %s", url)  # as arguments
        app_log.warning(f"retrying {url}")  # already formatted
        logging.getLogger().error("root logger: %r", {"url": url})
        return "ok"

    @app.get("/fail")
    def fail(request: Request) -> str:
        raise ConnectionError(f"cannot reach {app.secret('DB_URL')}")  # logged with traceback

    @app.get("/typed")
    def typed(request: Request) -> dict[str, Any]:
        token = app.secret("TOKEN", type=SecretValue)
        app_log.info("token object: %r / %s", token, token)
        try:
            app.secret("BAD", type=bool)
        except ValueError as exc:
            bad = str(exc)
        return {
            "port": app.secret("PORT", type=int),
            "debug": app.secret("DEBUG", type=bool),
            "ratio": app.secret("RATIO", type=float),
            "token": token.reveal(),
            "bad": bad,
        }

    return app


def async_module() -> pywatt_asyncio.Module:
    app = pywatt_asyncio.Module(secrets=["DB_URL"])

    @app.get("/connect")
    async def connect(request: Request) -> str:
        url = await app.secret("DB_URL")
        app_log.info("connecting to %s", url)
        app_log.warning(f"retrying {url}")
        logging.getLogger().error("root logger: %r", {"url": url})
        return "ok"

    @app.get("/fail")
    async def fail(request: Request) -> str:
        raise ConnectionError(f"cannot reach {await app.secret('DB_URL')}")

    @app.get("/typed")
    async def typed(request: Request) -> dict[str, Any]:
        token = await app.secret("TOKEN", type=SecretValue)
        app_log.info("token object: %r / %s", token, token)
        try:
            await app.secret("BAD", type=bool)
        except ValueError as exc:
            bad = str(exc)
        return {
            "port": await app.secret("PORT", type=int),
            "debug": await app.secret("DEBUG", type=bool),
            "ratio": await app.secret("RATIO", type=float),
            "token": token.reveal(),
            "bad": bad,
        }

    return app


@pytest.mark.parametrize("make", [sync_module, async_module], ids=["sync", "asyncio"])
def test_secret_values_never_reach_the_logs(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(make(), secrets={"DB_URL": DB_URL, **TYPED}) as client:
        assert client.get("/connect").text == "ok"
        assert client.get("/fail").status_code == 500
        assert client.rotate({"DB_URL": ROTATED}) == ("success", None)
        assert client.get("/connect").text == "ok"
        app_log.info("old value again: %s", DB_URL)  # rotated out, still a secret
        text = caplog.text  # formatted as a handler formats them, tracebacks included
    assert DB_URL not in text and ROTATED not in text
    assert "hunter2" not in text and "rotated-s3cret" not in text
    assert f"connecting to {MASK}" in text
    assert f"retrying {MASK}" in text
    assert "root logger: {'url': '" + MASK + "'}" in text
    assert f"ConnectionError: cannot reach {MASK}" in text  # the traceback, redacted
    assert f"old value again: {MASK}" in text
    assert [r for r in caplog.records if r.exc_info], "the failure was logged with its traceback"


@pytest.mark.parametrize("make", [sync_module, async_module], ids=["sync", "asyncio"])
def test_typed_getters(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(make(), secrets={"DB_URL": DB_URL, **TYPED}) as client:
        body = client.get("/typed").json()
    assert body == {
        "port": 8080,
        "debug": True,
        "ratio": 0.25,
        "token": API_KEY,
        "bad": "secret 'BAD' is not a valid bool (true/false, 1/0, yes/no, on/off)",
    }
    assert f"token object: SecretValue('{MASK}') / {MASK}" in caplog.text
    assert API_KEY not in caplog.text


def test_convert_secret() -> None:
    assert convert_secret("N", "42", int) == 42
    assert convert_secret("N", "42", None) == "42"
    assert convert_secret("N", "42", str) == "42"
    for word in ("1", "true", "TRUE", "yes", "on", " y "):
        assert convert_secret("B", word, bool) is True
    for word in ("0", "false", "No", "off", ""):
        assert convert_secret("B", word, bool) is False
    assert convert_secret("L", "a,b", lambda s: s.split(",")) == ["a", "b"]
    with pytest.raises(ValueError, match="secret 'N' is not a valid int") as info:
        convert_secret("N", "sekrit-value", int)
    assert "sekrit-value" not in str(info.value) and info.value.__cause__ is None


def test_secret_value_is_masked() -> None:
    value = SecretValue("hunter2hunter2")
    assert repr(value) == f"SecretValue('{MASK}')"
    assert str(value) == f"{value}" == f"{value:>3}".strip() == MASK
    assert value.reveal() == value.get_secret_value() == "hunter2hunter2"
    assert value == SecretValue("hunter2hunter2") and value != SecretValue("other")
    assert len({value, SecretValue("hunter2hunter2")}) == 1
    with pytest.raises(TypeError):
        pickle.dumps(value)


def test_redactor_rules() -> None:
    r = SecretRedactor()
    assert not r.add("abc")  # too short to redact
    assert r.add("abcd-secret") and r.add("abcd-secret-longer")
    assert not r.add("abcd-secret")
    assert r.redact("x abcd-secret-longer y abcd-secret z") == f"x {MASK} y {MASK} z"
    assert r.redact("abc") == "abc"
    for i in range(MAX_REDACTED_VALUES + 10):
        r.add(f"value-{i:06d}")
    assert len(r) == MAX_REDACTED_VALUES  # bounded; the oldest are forgotten first
    assert r.redact("abcd-secret") == "abcd-secret"
    assert r.redact(f"value-{MAX_REDACTED_VALUES + 9:06d}") == MASK
    r.discard([f"value-{MAX_REDACTED_VALUES + 9:06d}"])
    assert r.redact(f"value-{MAX_REDACTED_VALUES + 9:06d}") != MASK
