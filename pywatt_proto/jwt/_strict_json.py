"""Strict JSON object parsing for JOSE headers and claim sets.

RFC 7515 §4 and RFC 7519 §4 require header and claims to be JSON objects and
say that a parser must either reject duplicate member names or use the last
one; RFC 8725 §3.5 and §3.10 recommend rejecting anything ambiguous, so this
reader rejects duplicates outright.  It also rejects what Python's ``json``
module accepts beyond RFC 8259: ``NaN``/``Infinity``, numbers that overflow to
infinity, lone UTF-16 surrogate escapes (RFC 7493 §2.1), non-UTF-8 bytes and
a byte-order mark.

Depth is bounded before parsing: counting ``{`` and ``[`` is a cheap upper
bound on nesting, so the exact (string-aware) scan only runs for the rare
documents that could exceed the limit.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
from collections.abc import Callable
from typing import Any

from ._errors import JwtError


class _Rejected(ValueError):
    """Raised from inside the decoder hooks; turned into ``malformed``."""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Rejected("duplicate member name in JSON object")
    return obj


def _constant(name: str) -> Any:
    raise _Rejected(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected("number out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_pairs, parse_constant=_constant, parse_float=_float
)
# The decoder's scanner, called directly on the common case (no leading
# whitespace): it skips ``JSONDecoder.decode``'s Python-level wrapping.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_JSON_WS = " \t\n\r"  # RFC 8259 §2 insignificant whitespace
# A complete JSON string, written as an unrolled loop so it cannot backtrack badly.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _depth(data: bytes) -> int:
    depth = deepest = 0
    for ch in _STRING.sub(b"", data):
        if ch == 0x7B or ch == 0x5B:  # { [
            depth += 1
            deepest = max(deepest, depth)
        elif ch == 0x7D or ch == 0x5D:  # } ]
            depth -= 1
    return deepest


def _check_surrogates(data: bytes) -> None:
    pending_high_end = -1  # end offset of an unpaired high-surrogate escape
    for m in _ESCAPE.finditer(data):
        hexdigits = m.group(1)
        unit = int(hexdigits, 16) if hexdigits is not None else -1
        if pending_high_end >= 0:
            if m.start() != pending_high_end or not 0xDC00 <= unit <= 0xDFFF:
                raise _Rejected("unpaired UTF-16 surrogate escape")
            pending_high_end = -1
            continue
        if 0xD800 <= unit <= 0xDBFF:
            pending_high_end = m.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            raise _Rejected("unpaired UTF-16 surrogate escape")
    if pending_high_end >= 0:
        raise _Rejected("unpaired UTF-16 surrogate escape")


def parse_object(data: bytes, max_depth: int, what: str) -> dict[str, Any]:
    """Parse ``data`` (UTF-8 JSON) that must be an object nested at most ``max_depth``.

    Returns the object as a ``dict``.  Raises :class:`JwtError` with reason
    ``size`` when nesting exceeds ``max_depth`` and ``malformed`` for anything
    else that is not a strict RFC 8259 object without duplicate names.
    ``what`` ("header" or "claims") names the part in messages.
    """
    if data.count(b"{") + data.count(b"[") > max_depth and _depth(data) > max_depth:
        raise JwtError("size", f"{what} JSON nests deeper than {max_depth}")
    try:
        text = data.decode("utf-8")
        if b"\\u" in data:
            _check_surrogates(data)
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            value = _DECODER.decode(text)  # leading whitespace, or raises the error
        else:
            if end != len(text) and text[end:].strip(_JSON_WS):
                raise _Rejected("extra data after the JSON value")
    except (ValueError, RecursionError) as exc:
        # ValueError covers UnicodeDecodeError, JSONDecodeError, _Rejected and
        # int() digit-limit errors.
        raise JwtError("malformed", f"{what} is not strict JSON: {_describe(exc)}") from None
    if type(value) is not dict:
        raise JwtError("malformed", f"{what} is not a JSON object")
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "invalid UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(":", 1)[0] if isinstance(exc, json.JSONDecodeError) else str(exc)
