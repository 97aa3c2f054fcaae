"""What handlers may return and read (issue 14.9): JSON for datetime/UUID/Decimal/enums/
dataclasses/pydantic models, an error listing the supported types, ``Response(headers=
{...})``, ``request.query["x"]`` and typed path parameters."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import subprocess
import sys
import uuid
from typing import Any

import pytest

from pywatt_proto import QueryParams, Request, Response, Router


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass
class Note:
    id: uuid.UUID
    created: datetime.datetime
    tags: set[str]
    colour: Colour


def _answer(router: Router, target: str) -> Response:
    from pywatt_sync import dispatch

    return dispatch(router, Request.from_target("GET", target), lambda: 0.0)


def test_json_answers_encode_common_python_values() -> None:
    router = Router()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    nid = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @router.get("/values")
    def values(request: Request) -> dict[str, Any]:
        return {
            "at": when,
            "day": datetime.date(2026, 1, 2),
            "time": datetime.time(3, 4),
            "id": nid,
            "price": decimal.Decimal("1.10"),
            "colour": Colour.RED,
            "number": Colour.BLUE,
            "note": Note(nid, when, {"a"}, Colour.BLUE),
            "frozen": frozenset({1}),
        }

    @router.get("/dataclass")
    def bare(request: Request) -> Note:
        return Note(nid, when, set(), Colour.RED)

    @router.get("/number")
    def number(request: Request) -> int:
        return 42

    r = _answer(router, "/values")
    assert r.status == 200 and r.header("content-type") == "application/json"
    assert r.json() == {
        "at": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "time": "03:04:00",
        "id": str(nid),
        "price": "1.10",
        "colour": "red",
        "number": 2,
        "note": {
            "id": str(nid),
            "created": "2026-01-02T03:04:05+00:00",
            "tags": ["a"],
            "colour": 2,
        },
        "frozen": [1],
    }
    assert _answer(router, "/dataclass").json()["colour"] == "red"
    assert (_answer(router, "/number").status, _answer(router, "/number").body) == (200, b"42")


def test_pydantic_models_are_encoded_when_pydantic_is_installed() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        name: str
        when: datetime.date

    router = Router()
    router.add_route("/one", lambda request: Item(name="x", when=datetime.date(2026, 1, 1)))
    router.add_route(
        "/many", lambda request: {"items": [Item(name="y", when=datetime.date(2026, 1, 2))]}
    )
    assert _answer(router, "/one").json() == {"name": "x", "when": "2026-01-01"}
    assert _answer(router, "/many").json() == {"items": [{"name": "y", "when": "2026-01-02"}]}


def test_pydantic_is_never_imported_by_encoding() -> None:
    code = (
        "import sys, datetime\n"
        "from pywatt_proto import Router, Request\n"
        "from pywatt_sync import dispatch\n"
        "r = Router()\n"
        "r.add_route('/x', lambda q: {'a': datetime.date(2026, 1, 1)})\n"
        "r.add_route('/bad', lambda q: object())\n"
        "assert dispatch(r, Request.from_target('GET', '/x'), lambda: 0.0).status == 200\n"
        "assert dispatch(r, Request.from_target('GET', '/bad'), lambda: 0.0).status == 500\n"
        "print(sorted(m for m in ('pydantic', 'dataclasses', 'decimal') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unsupported_return_value_lists_the_supported_types() -> None:
    router = Router()
    with pytest.raises(TypeError) as info:
        router.to_response(object())
    message = str(info.value)
    assert message.startswith("cannot convert object to a response")
    for name in ("dict", "Response", "datetime", "UUID", "Decimal", "dataclass", "pydantic"):
        assert name in message
    with pytest.raises(TypeError, match="supported"):
        router.to_response({"x": object()})
    with pytest.raises(ValueError):
        router.to_response({"x": decimal.Decimal("NaN")})


def test_response_headers_accept_a_mapping_or_pairs() -> None:
    r = Response(headers={"x-a": "1", "content-type": "text/plain"})
    assert r.headers == (("x-a", "1"), ("content-type", "text/plain"))
    assert Response(headers=[("x-b", "2")]).headers == (("x-b", "2"),)  # type: ignore[arg-type]
    assert Response(headers={"x-a": "1"}) == Response(headers=(("x-a", "1"),))
    with pytest.raises(Exception, match="invalid header name"):
        Response(headers={"bad name": "v"})


def test_query_reads_like_a_multi_dict() -> None:
    q = Request.from_target("GET", "/p?a=1&b=2&a=3&c=").query
    assert q["a"] == "1" and q["c"] == ""
    with pytest.raises(KeyError):
        q["missing"]
    assert q.getlist("a") == ["1", "3"] and q.get_all("a") == ["1", "3"]
    assert list(q) == ["a", "b", "c"] and q.keys() == ["a", "b", "c"]
    assert q.values() == ["1", "2", ""]
    assert q.multi_items() == [("a", "1"), ("b", "2"), ("a", "3"), ("c", "")]
    assert dict(zip(q.keys(), q.values(), strict=True)) == {"a": "1", "b": "2", "c": ""}
    assert "b" in q and len(q) == 4
    assert list(QueryParams()) == []


def test_typed_path_params() -> None:
    router = Router()
    seen: list[object] = []

    @router.get("/items/{id:int}/{u:uuid}/{name}")
    def item(request: Request) -> dict[str, Any]:
        item_id: int = request.path_param("id", int)  # typed: no cast
        ident: uuid.UUID = request.path_param("u", uuid.UUID)
        name: str = request.path_param("name", str)
        seen.append(item_id + 1)
        with pytest.raises(TypeError, match=r"declare it as \{name:int\}"):
            request.path_param("name", int)
        with pytest.raises(KeyError):
            request.path_param("nope", str)
        return {"id": item_id, "u": ident, "name": name}

    u = "12345678-1234-5678-1234-567812345678"
    r = _answer(router, f"/items/7/{u}/bob")
    assert r.json() == {"id": 7, "u": u, "name": "bob"} and seen == [8]


def test_mypy_accepts_typed_accessors_without_casts(tmp_path: Any) -> None:
    mypy = pytest.importorskip("mypy.api")
    src = tmp_path / "handler.py"
    src.write_text(
        "import uuid\n"
        "from pywatt_proto import Request\n"
        "def h(request: Request) -> int:\n"
        "    u: uuid.UUID = request.path_param('u', uuid.UUID)\n"
        "    s: str = request.query['x']\n"
        "    return request.path_param('id', int) + len(s) + u.int % 2\n"
        "from pywatt_proto import Response\n"
        "def r() -> Response:\n"
        "    return Response(status=201, headers={'x-a': '1'}, body=b'ok')\n"
    )
    out, err, status = mypy.run(["--strict", "--no-incremental", str(src)])
    assert status == 0, out + err
