"""serde_json-compatible JSON reading and writing, built on the C ``json`` scanner.

Theory of operation
-------------------
Reading: the stdlib C scanner does the lexing (it is an order of magnitude faster
than anything written in Python), configured so that it behaves like serde_json:

* ``object_pairs_hook`` builds a plain ``dict`` (last duplicate wins, as serde does
  for ``HashMap``/``Value``) and, only when a key repeats, returns a
  :class:`DupDict` that remembers which keys repeated, so the typed decoder can
  reject duplicate *struct fields* the way ``#[derive(Deserialize)]`` does;
* ``parse_constant`` rejects ``NaN``/``Infinity``/``-Infinity``;
* ``parse_float`` re-implements serde_json's default (not correctly rounded)
  float parser, so ``0.9999999999999999`` reads as ``1.0`` and ``1e400`` is an
  error, exactly as in the reference;
* a few cheap pre-checks on the text cover what the C scanner accepts but serde
  does not: a BOM (we decode UTF-8 ourselves, strictly), lone surrogate escapes
  (checked only when a ``\\uD8..\\uDF`` escape occurs), nesting deeper than
  serde's limit (checked only when the text holds enough brackets), and the
  integer ``-0`` (which serde reads as the float ``-0.0``; only when it occurs do
  we use a slower scanner with an integer hook).

Integers outside i64/u64 stay Python ints after the fast scan; :func:`normalize_value`
turns them into floats (serde's rule) where a JSON value is kept, and typed
fields reject them by range anyway.

Writing: the C ``encode_basestring`` escapes exactly like serde (only ``"``,
``\\`` and U+0000-001F; short forms for ``\\b \\t \\n \\f \\r``; lowercase
``\\u00XX``; everything else raw). Floats use ryu's layout (:func:`format_float`),
objects of JSON values are written with sorted keys (serde_json's ``Value`` is a
BTreeMap), and byte strings are written as integer arrays through a table of
pre-rendered byte pairs.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
import math
import re
from collections.abc import Callable

from ._bodies import encode_byte_array
from ._errors import LocalProtocolError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from typing import Any

#: serde_json's recursion limit: the 128th nested array/object is an error, so at
#: most 127 levels (the top-level object counts as one) are accepted.
MAX_DEPTH = 127

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_I32_MAX = 2**31 - 1
_WS = " \t\n\r"
_POW10 = [float(f"1e{i}") for i in range(309)]


class DupDict(dict[str, "Any"]):
    """A parsed JSON object in which some keys occurred more than once (last one kept)."""

    __slots__ = ("dups",)
    dups: frozenset[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        dd = DupDict(d)
        seen: set[str] = set()
        dups: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                dups.add(k)
            seen.add(k)
        dd.dups = frozenset(dups)
        return dd
    return d


class _NumberError(RemoteProtocolError):
    """A number token serde would reject (out of range)."""


def _parse_constant(name: str) -> Any:
    raise RemoteProtocolError(f"expected value: {name} is not JSON")


def serde_number(text: str) -> float | int:
    """Convert a JSON number token the way serde_json's default parser does.

    Returns an int for integers that fit u64 (non-negative) or i64 (negative, not
    ``-0``), otherwise a float computed with serde's algorithm: at most the first
    u64-worth of significant digits, then one multiplication or division by a
    power of ten (so 17+ digit inputs are not always correctly rounded).
    Raises RemoteProtocolError ("number out of range") where serde does.
    """
    positive = text[0] != "-"
    s = text if positive else text[1:]
    n = len(s)
    i = 0
    sig = 0
    exponent = 0
    # integer part
    if s[0] == "0":
        i = 1
    else:
        while i < n and "0" <= s[i] <= "9":
            d = ord(s[i]) - 48
            if sig * 10 + d > _U64_MAX:
                # parse_long_integer: remaining integer digits only scale
                while i < n and "0" <= s[i] <= "9":
                    exponent += 1
                    i += 1
                break
            sig = sig * 10 + d
            i += 1
    is_integer = i == n
    if is_integer and exponent == 0:
        if positive:
            return sig
        if sig != 0 and sig <= 2**63:
            return -sig
        return -float(sig)  # -0 and below i64::MIN are floats in serde
    if i < n and s[i] == ".":
        i += 1
        while i < n and "0" <= s[i] <= "9":
            d = ord(s[i]) - 48
            if sig * 10 + d > _U64_MAX:
                while i < n and "0" <= s[i] <= "9":  # parse_decimal_overflow
                    i += 1
                break
            sig = sig * 10 + d
            exponent -= 1
            i += 1
    if i < n and s[i] in "eE":
        i += 1
        positive_exp = True
        if s[i] in "+-":
            positive_exp = s[i] == "+"
            i += 1
        exp = 0
        while i < n:
            d = ord(s[i]) - 48
            if exp * 10 + d > _I32_MAX:
                # parse_exponent_overflow
                if sig != 0 and positive_exp:
                    raise _NumberError("number out of range")
                return 0.0 if positive else -0.0
            exp = exp * 10 + d
            i += 1
        exponent = exponent + exp if positive_exp else exponent - exp
        exponent = max(-(2**31), min(_I32_MAX, exponent))
    f = float(sig)
    while True:
        a = -exponent if exponent < 0 else exponent
        if a <= 308:
            if exponent >= 0:
                f *= _POW10[a]
                if math.isinf(f):
                    raise _NumberError("number out of range")
            else:
                f /= _POW10[a]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise _NumberError("number out of range")
        f /= 1e308
        exponent += 308
    return f if positive else -f


def _parse_float(text: str) -> float:
    v = serde_number(text)
    return float(v)


def _parse_int_slow(text: str) -> int | float:
    if len(text) < 18 and text != "-0":
        return int(text)
    return serde_number(text)


def _make_scanner(parse_int: Callable[[str], Any] | None) -> Callable[[str, int], Any]:
    dec = json.JSONDecoder(
        object_pairs_hook=_pairs_hook,
        parse_float=_parse_float,
        parse_int=parse_int,
        parse_constant=_parse_constant,
        strict=True,
    )
    scanner: Callable[[str, int], Any] = getattr(dec, "scan_once")  # noqa: B009
    return scanner


_scan_fast = _make_scanner(None)
_scan_slow = _make_scanner(_parse_int_slow)
# "-0" as a whole integer token (serde reads it as the float -0.0).
_NEG_ZERO = re.compile(r"-0(?![.0-9eE])")
# A \u escape of a UTF-16 surrogate; Python pairs them up, so any surrogate left
# in a decoded string after such an escape is a lone one (serde rejects those).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    t = type(value)
    if t is str:
        return _SURROGATE.search(value) is not None
    if t is list:
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(
            _SURROGATE.search(k) is not None or _has_lone_surrogate(v) for k, v in value.items()
        )
    return False


def _depth(value: Any) -> int:
    t = type(value)
    if t is list:
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"at line {line} column {col}"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON document with serde_json's rules; return plain Python values.

    Objects come back as ``dict`` (or :class:`DupDict` when a key repeated), arrays
    as ``list``. Leading and trailing JSON whitespace is allowed, anything else
    after the value is not. Raises RemoteProtocolError on invalid UTF-8, a BOM,
    syntax errors, ``NaN``/``Infinity``, lone surrogate escapes, numbers out of
    range, or nesting deeper than :data:`MAX_DEPTH`.
    """
    if isinstance(data, str):
        text = data
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RemoteProtocolError(f"input is not valid UTF-8: {exc.reason}") from None
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(
                f"input is not valid UTF-8 at byte {exc.start}: {exc.reason}"
            ) from None
    idx = 0
    if text[:1] in _WS and text:
        idx = len(text) - len(text.lstrip(_WS))
    scan = _scan_slow if _NEG_ZERO.search(text) else _scan_fast
    try:
        obj, end = scan(text, idx)
    except StopIteration as exc:
        pos = exc.value if type(exc.value) is int else idx
        if pos >= len(text):
            raise RemoteProtocolError("EOF while parsing a value") from None
        raise RemoteProtocolError(f"expected value {_where(text, pos)}") from None
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(f"{exc.msg} {_where(text, exc.pos)}") from None
    except RecursionError:
        raise RemoteProtocolError("recursion limit exceeded") from None
    except ValueError:
        # int() refuses integer literals over sys.get_int_max_str_digits() digits;
        # rescan with serde's number rules (such integers become floats or are out
        # of range), never letting a plain ValueError escape.
        if scan is _scan_slow:
            raise RemoteProtocolError("number out of range") from None
        try:
            obj, end = _scan_slow(text, idx)
        except (ValueError, StopIteration, RecursionError):
            raise RemoteProtocolError("number out of range") from None
    if end != len(text) and text[end:].strip(_WS):
        raise RemoteProtocolError(f"trailing characters {_where(text, end)}")
    # Depth first: the walks below recurse, and must only see bounded nesting.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        try:
            depth = _depth(obj)
        except RecursionError:
            depth = MAX_DEPTH + 1
        if depth > MAX_DEPTH:
            raise RemoteProtocolError("recursion limit exceeded")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise RemoteProtocolError("lone surrogate in \\u escape")
    return obj


def normalize_value(value: Any) -> Any:
    """Return ``value`` (a parsed JSON value) as serde_json's ``Value`` would hold it.

    Duplicate-key objects become plain dicts; integers outside i64/u64 become floats
    (serde's conversion). Raises RemoteProtocolError if such an integer overflows f64.
    """
    t = type(value)
    if t is int:
        if _I64_MIN <= value <= _U64_MAX:
            return value
        return serde_number(str(value))
    if t is list:
        return [normalize_value(v) for v in value]
    if t is dict or t is DupDict:
        return {k: normalize_value(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------

#: serde's string escaping (the C accelerated function, identical rules).
dump_str: Callable[[str], str] = json.encoder.encode_basestring


def format_float(x: float) -> str:
    """Format a float as serde_json (ryu) does: ``100.0``, ``1e16``, ``1e-7``, ``-0.0``.

    NaN and infinities become ``null``. Decimal notation is used for
    1e-5 <= |x| < 1e16, exponent notation (no ``+``, no padding) otherwise.
    """
    r = repr(x)
    if "e" not in r:
        if r[-1] in "nf":  # nan, inf, -inf
            return "null"
        return r
    mant, _, exp_text = r.partition("e")
    sign = ""
    if mant[0] == "-":
        sign = "-"
        mant = mant[1:]
    int_part, _, frac = mant.partition(".")
    digits = (int_part + frac).lstrip("0") or "0"
    # value = 0.digits * 10**kk. repr() uses an exponent for kk > 16 and kk < -3; of those,
    # ryu writes only 1e-5 <= |x| < 1e-4 (kk == -4) in decimal notation.
    kk = int(exp_text) + len(int_part)
    digits = digits.rstrip("0") or "0"
    if kk == -4:
        return f"{sign}0.{'0' * -kk}{digits}"
    if len(digits) == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"


def dump_bytes(data: bytes) -> str:
    """Return ``data`` as a JSON array of integers (``[1,2,255]``), serde's ``Vec<u8>``.

    A body shorter than ``_SMALL_BYTES`` is joined from per-byte texts; a longer one is
    written by :func:`pywatt_proto._bodies.encode_byte_array` (no Python object per byte),
    faster from about 48 bytes on (docs/performance.md).
    """
    if len(data) < _SMALL_BYTES:
        return "[" + ",".join(map(_BYTE_TEXT_OF, data)) + "]"
    return encode_byte_array(data).decode("ascii")


#: dump_bytes joins per-byte texts below this many bytes (a handler's typical JSON answer).
_SMALL_BYTES = 48
_BYTE_TEXT_OF = [str(i) for i in range(256)].__getitem__


def dump_value(value: Any) -> str:
    """Return the compact serde_json text of a JSON value (object keys sorted).

    Raises LocalProtocolError for values that are not JSON (sets, objects, non-str
    keys) or integers outside i64/u64.
    """
    t = type(value)
    if t is str:
        return dump_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if t is int:
        if not _I64_MIN <= value <= _U64_MAX:
            raise LocalProtocolError(f"integer {value} does not fit i64 or u64")
        return str(value)
    if t is float:
        return format_float(value)
    if t is list or t is tuple:
        return "[" + ",".join([dump_value(v) for v in value]) + "]"
    if isinstance(value, dict):
        for k in value:
            if type(k) is not str:
                raise LocalProtocolError(f"object key {k!r} is not a str")
        items = [dump_str(k) + ":" + dump_value(value[k]) for k in sorted(value)]
        return "{" + ",".join(items) + "}"
    if isinstance(value, int):  # int subclasses (IntEnum)
        return dump_value(int(value))
    if isinstance(value, float):
        return format_float(float(value))
    raise LocalProtocolError(f"{t.__name__} is not a JSON value")
