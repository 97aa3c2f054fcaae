"""What handlers may return beyond plain JSON: the router's JSON ``default`` hook.

``json`` encodes dict/list/str/int/float/bool/None. Handlers written for FastAPI return
more: timestamps, ids, money, enums, dataclasses, pydantic models. :func:`json_default`
turns each of those into something ``json`` encodes (the encoder calls it again on what
it returns, so nested values work), and :func:`fallback_json` lets a handler return
such a value directly (a JSON 200), or says which types are supported.

No imports: a value can only be a ``datetime``/``UUID``/``Decimal``/dataclass/pydantic
model if its module is already in ``sys.modules``, so the checks look there and never
load anything (pydantic is never imported by pywatt; tests/test_startup.py checks the
start-up path).

Encodings (FastAPI's / pydantic's JSON mode where they agree):
``datetime``/``date``/``time`` -> ISO 8601 text (``isoformat()``); ``UUID`` -> its
canonical text; ``Decimal`` -> its exact text (``"1.10"``, as pydantic v2 writes it; a
float would lose digits); ``Enum`` -> its ``value``; dataclass -> object of its fields;
pydantic model -> ``model_dump(mode="json")`` (v1: ``dict()``); ``set``/``frozenset`` ->
array.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Callable

#: Named in the error for a value that has no conversion.
SUPPORTED_RESULTS = (
    "dict, list, str, bytes, None, int, float, bool, Response, ApiResponse, "
    "(body, status) or (body, status, headers), or a value JSON can encode: "
    "datetime, date, time, UUID, Decimal, Enum, a dataclass, a pydantic model, set"
)


def json_default(obj: object) -> object:
    """Return a JSON-encodable stand-in for ``obj`` (the ``default`` of the router's encoder).

    Raises:
        TypeError: ``obj`` has no JSON form; the message names its type and the
            supported ones.
    """
    modules = sys.modules
    datetime = modules.get("datetime")
    if datetime is not None and isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()  # datetime is a date subclass
    uuid = modules.get("uuid")
    if uuid is not None and isinstance(obj, uuid.UUID):
        return str(obj)
    decimal = modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        if not obj.is_finite():
            raise ValueError(f"Decimal {obj} is not JSON (NaN and infinities have no JSON form)")
        return str(obj)
    enum = modules.get("enum")
    if enum is not None and isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return list(obj)
    dataclasses = modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    pydantic = modules.get("pydantic")
    if pydantic is not None:
        base = getattr(pydantic, "BaseModel", None)
        if isinstance(base, type) and isinstance(obj, base):
            dump = getattr(obj, "model_dump", None)
            return dump(mode="json") if dump is not None else obj.dict()  # type: ignore[attr-defined]
    raise TypeError(  # the stdlib's wording, then what is supported
        f"Object of type {type(obj).__name__} is not JSON serializable; "
        f"supported: {SUPPORTED_RESULTS}"
    )


def fallback_json(result: object, encode: Callable[[object], bytes]) -> bytes:
    """Return the JSON body for a handler result no other rule converted.

    ``encode`` is the router's JSON encoder (``value -> bytes``, with :func:`json_default`).

    Raises:
        TypeError: ``result`` is not a number and :func:`json_default` has no form for it;
            the message lists every supported return type.
    """
    if not isinstance(result, int | float):
        try:
            json_default(result)
        except TypeError:
            raise TypeError(
                f"cannot convert {type(result).__name__} to a response; return {SUPPORTED_RESULTS}"
            ) from None
    return encode(result)
