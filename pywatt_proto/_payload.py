"""Payload formats for ``EncodedMessage.data`` and frame payloads (``spec/framed.md``
sections 4 and 5): values to bytes and back per :class:`~pywatt_proto.EncodingFormat`
(Json, Binary, Base64; Auto is refused both ways), the reference's ``to_format``
conversions, and CBOR, which has no format code and travels labelled ``Binary`` by prior
agreement.

Decoding is for hostile input: every decoder raises
:class:`~pywatt_proto.RemoteProtocolError` (never anything else) saying what was wrong,
and the work is bounded by :data:`DEFAULT_MAX_PAYLOAD_SIZE`, :data:`MAX_PAYLOAD_DEPTH`
and, for CBOR, :data:`MAX_CBOR_ITEMS`. CBOR input is checked by a small non-recursive
scanner *before* cbor2 sees it, because tags such as 28/29 (shared references) can build
cyclic or enormous objects from a few bytes. Encoders raise
:class:`~pywatt_proto.LocalProtocolError` for values that cannot be encoded or that the
matching decoder would refuse.
"""

from __future__ import annotations

import base64
import binascii
import math

from . import _json
from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._messages import EncodedMessage, JsonValue

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time; cbor2 is, on first CBOR use
    from typing import Final

#: Largest payload the decoders accept by default. Why 16 MiB: a payload
#: arrives inside one stdio line (default limit 16 MiB) or one frame; decoded
#: Python objects can take ~20x their JSON size, so this keeps one hostile
#: payload well under a gigabyte while allowing any payload a line can carry.
DEFAULT_MAX_PAYLOAD_SIZE: Final = 16 * 1024 * 1024

#: Deepest nesting of arrays/objects (maps) accepted and produced. Why 127:
#: serde_json stops at its 128th nested container, so anything deeper could be
#: written but never read by a reference peer; it also keeps every walk over a
#: value shallow.
MAX_PAYLOAD_DEPTH: Final = 127

#: Most data items one CBOR payload may contain. Why a million: each item can
#: be one input byte that becomes a ~60-byte Python object, so this caps a
#: hostile payload at roughly 100 MB of objects while allowing arrays of a
#: million numbers.
MAX_CBOR_ITEMS: Final = 1_000_000

_I64_MIN: Final = -(2**63)
_U64_MAX: Final = 2**64 - 1
#: Smallest integer CBOR encodes without a bignum tag (major type 1, argument 2**64 - 1).
_CBOR_INT_MIN: Final = -(2**64)


# --------------------------------------------------------------------------- values


def _check_value(value: object, *, cbor: bool) -> None:
    """Check ``value`` against the JSON (or CBOR) data model, without recursion.

    Raises LocalProtocolError naming the first offending part.
    """
    stack: list[tuple[object, int, str]] = [(value, 0, "value")]
    while stack:
        item, depth, where = stack.pop()
        t = type(item)
        if item is None or t is bool or t is str:
            if t is str:
                _check_str(item, where, LocalProtocolError)  # type: ignore[arg-type]
            continue
        if t is int:
            assert isinstance(item, int)
            if not cbor and not _I64_MIN <= item <= _U64_MAX:
                raise LocalProtocolError(f"{where}: integer {item} does not fit i64 or u64")
            continue
        if t is float:
            assert isinstance(item, float)
            if not cbor and not math.isfinite(item):
                raise LocalProtocolError(f"{where}: {item} cannot be written as JSON")
            continue
        if cbor and t is bytes:
            continue
        if t is list or t is tuple or t is dict:
            if depth >= MAX_PAYLOAD_DEPTH:
                raise LocalProtocolError(
                    f"{where}: nested deeper than {MAX_PAYLOAD_DEPTH} arrays/objects"
                )
            if isinstance(item, dict):
                for k, v in item.items():
                    if type(k) is str:
                        _check_str(k, where, LocalProtocolError)
                    elif not (cbor and type(k) is int and _CBOR_INT_MIN <= k <= _U64_MAX):
                        raise LocalProtocolError(
                            f"{where}: map key {k!r} must be a str" + (" or an int" if cbor else "")
                        )
                    stack.append((v, depth + 1, f"{where}[{k!r}]"))
            else:
                assert isinstance(item, list | tuple)
                stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(item))
            continue
        raise LocalProtocolError(f"{where}: {t.__name__} cannot be encoded as a payload value")


def _check_str(
    text: str, where: str, error: type[LocalProtocolError] | type[RemoteProtocolError]
) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{where}: string contains a lone surrogate") from None


# --------------------------------------------------------------------------- JSON


def _encode_json(value: object) -> bytes:
    _check_value(value, cbor=False)
    # serde_json's layout: compact, keys sorted, ryu floats, serde string escapes.
    return _json.dump_value(value).encode("utf-8")


def _decode_json(data: bytes) -> JsonValue:
    try:
        # serde_json's reader rules (strict UTF-8, no BOM, no NaN, lone surrogates,
        # depth), then serde's Value conversion (out-of-range integers become floats).
        value: JsonValue = _json.normalize_value(_json.loads(data))
    except RemoteProtocolError as exc:  # loads raises nothing else (huge integers included)
        raise RemoteProtocolError(f"JSON payload is invalid: {exc.message}") from None
    return value


# --------------------------------------------------------------------------- Base64


def _decode_base64(data: bytes) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"Base64 payload is invalid: {exc}") from None
    # Strict: padding present and unused bits zero, i.e. the canonical encoding.
    if base64.b64encode(raw) != data:
        raise RemoteProtocolError("Base64 payload is not in canonical padded form")
    return raw


# --------------------------------------------------------------------------- CBOR

# Tags the decoder accepts: 2 and 3 are unsigned/negative bignums.
_ALLOWED_TAGS: Final = frozenset({2, 3})
_SIMPLE_OK: Final = frozenset({20, 21, 22})  # false, true, null
_FLOAT_INFO: Final = frozenset({25, 26, 27})  # half, single, double
_ARG_SIZES: Final = {24: 1, 25: 2, 26: 4, 27: 8}


def _cbor_error(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"CBOR payload: {msg}")


def _scan_cbor(data: bytes) -> None:
    """Check that ``data`` is one well-formed CBOR item within our data model.

    Non-recursive; O(len(data)). Raises RemoteProtocolError on the first problem.
    """
    n = len(data)
    pos = 0
    items = 0
    # Open containers: [remaining items or -1 if indefinite, is_map, items seen]
    stack: list[list[int]] = []
    # Set when the next item must be a byte string (after a bignum tag) or a
    # chunk of an indefinite string of the given major type.
    need_major: int | None = None
    chunk_major: list[int | None] = []  # per open container: major type of string chunks
    done = False
    while True:
        if done:
            break
        if pos >= n:
            raise _cbor_error("truncated")
        ib = data[pos]
        pos += 1
        major, info = ib >> 5, ib & 31
        in_map_key = bool(stack) and stack[-1][1] == 1 and stack[-1][2] % 2 == 0
        if ib == 0xFF:
            if not stack or stack[-1][0] != -1 or need_major is not None:
                raise _cbor_error("unexpected break")
            if stack[-1][1] == 1 and stack[-1][2] % 2 == 1:
                raise _cbor_error("map ended between a key and its value")
            stack.pop()
            chunk_major.pop()
            done = _item_done(stack)
            continue
        if stack and chunk_major[-1] is not None and major != chunk_major[-1]:
            raise _cbor_error("indefinite-length string chunk has the wrong type")
        if need_major is not None and major != need_major:
            raise _cbor_error("bignum tag must be followed by a byte string")
        need_major = None
        items += 1
        if items > MAX_CBOR_ITEMS:
            raise _cbor_error(f"more than {MAX_CBOR_ITEMS} data items")
        if info in _ARG_SIZES:
            size = _ARG_SIZES[info]
            if pos + size > n:
                raise _cbor_error("truncated")
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        elif info < 24:
            arg = info
        elif info == 31:
            arg = -1
        else:
            raise _cbor_error(f"reserved additional information {info}")
        if in_map_key and major not in (0, 1, 3):
            raise _cbor_error("map keys must be text strings or integers")
        if major in (0, 1):
            if arg < 0:
                raise _cbor_error("integers cannot have indefinite length")
        elif major in (2, 3):
            if arg < 0:
                if stack and chunk_major[-1] is not None:
                    raise _cbor_error("nested indefinite-length string")
                _push(stack, chunk_major, -1, False, major)
                continue
            if arg > n - pos:
                raise _cbor_error("string longer than the remaining input")
            pos += arg
        elif major in (4, 5):
            if len(stack) >= MAX_PAYLOAD_DEPTH:
                raise _cbor_error(f"nested deeper than {MAX_PAYLOAD_DEPTH} arrays/maps")
            count = arg if arg < 0 or major == 4 else 2 * arg
            if count > n - pos:
                raise _cbor_error("container claims more items than the input holds")
            if count == 0:
                done = _item_done(stack)
                continue
            _push(stack, chunk_major, count, major == 5, None)
            continue
        elif major == 6:
            if arg not in _ALLOWED_TAGS:
                raise _cbor_error(f"tag {arg} is not supported")
            need_major = 2
            items -= 1  # the tag and its byte string form one item
            continue
        else:  # major 7
            if info in _FLOAT_INFO or (info < 24 and info in _SIMPLE_OK):
                pass
            else:
                raise _cbor_error(f"simple value {arg} is not supported")
        done = _item_done(stack)
    if pos != n:
        raise _cbor_error(f"{n - pos} bytes of trailing data")


def _push(
    stack: list[list[int]], chunk_major: list[int | None], count: int, is_map: bool, cm: int | None
) -> None:
    stack.append([count, 1 if is_map else 0, 0])
    chunk_major.append(cm)


def _item_done(stack: list[list[int]]) -> bool:
    """Record that one item completed; return True when the top-level item is complete.

    Definite containers whose last item just completed are closed (and count
    as a completed item of their parent).
    """
    while stack:
        top = stack[-1]
        top[2] += 1
        if top[0] == -1 or top[2] < top[0]:
            return False
        stack.pop()
    return True


def encode_cbor(value: object) -> bytes:
    """Return the CBOR encoding of ``value`` (send it labelled ``EncodingFormat.BINARY``).

    Accepts None, bool, int (any size), float, str, bytes, list, tuple and
    dict with str or int keys, nested at most :data:`MAX_PAYLOAD_DEPTH` deep.

    Raises:
        LocalProtocolError: the value is outside that data model.
    """
    _check_value(value, cbor=True)
    import cbor2  # only CBOR users pay for it (a module with a channel loads this file)

    try:
        return bytes(cbor2.dumps(value))
    except Exception as exc:  # pragma: no cover - pre-checked; cbor2 errors vary by version
        raise LocalProtocolError(f"value cannot be written as CBOR: {exc}") from None


def decode_cbor(data: bytes, *, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> object:
    """Return the value encoded by the CBOR bytes ``data`` (arrays become lists).

    Raises:
        RemoteProtocolError: ``data`` is longer than ``max_size`` (hint 413),
            malformed or truncated, has trailing bytes, nests deeper than
            :data:`MAX_PAYLOAD_DEPTH`, holds more than :data:`MAX_CBOR_ITEMS`
            items, or uses a tag or simple value outside the data model.
    """
    data = _input_bytes(data, max_size, "CBOR")
    _scan_cbor(data)
    import cbor2

    try:
        return cbor2.loads(data)
    except Exception as exc:
        # cbor2 raises CBORDecodeError, ValueError, UnicodeDecodeError... wrap them all.
        raise RemoteProtocolError(f"CBOR payload is invalid: {exc}") from None


# --------------------------------------------------------------------------- generic API


def _input_bytes(data: object, max_size: int, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{what} payload must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_size:
        raise RemoteProtocolError(
            f"{what} payload of {len(raw)} bytes exceeds the limit of {max_size}",
            error_status_hint=413,
        )
    return raw


def _raw_bytes(value: object, fmt: EncodingFormat) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LocalProtocolError(
            f"a {fmt.wire_name} payload takes bytes, got {type(value).__name__}"
        )
    return bytes(value)


def encode_payload(value: object, format: EncodingFormat) -> bytes:
    """Return the payload bytes for ``value`` in ``format``.

    * ``JSON``: ``value`` is a JSON value (None, bool, int within i64/u64,
      finite float, str, list, dict with str keys); returns compact UTF-8
      JSON text with keys sorted, as serde_json writes a ``Value``.
    * ``BINARY``: ``value`` is bytes-like; returned unchanged.
    * ``BASE64``: ``value`` is bytes-like; returns its padded base64 text.

    Raises:
        LocalProtocolError: ``format`` is ``AUTO`` or not an EncodingFormat,
            or ``value`` does not fit the format.
    """
    if format is EncodingFormat.JSON:
        return _encode_json(value)
    if format is EncodingFormat.BINARY:
        return _raw_bytes(value, format)
    if format is EncodingFormat.BASE64:
        return base64.b64encode(_raw_bytes(value, format))
    raise LocalProtocolError(f"cannot encode a payload as {format!r}")


def decode_payload(
    data: bytes, format: EncodingFormat, *, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE
) -> JsonValue | bytes:
    """Return the value carried by payload ``data`` labelled ``format``.

    * ``JSON``: the parsed JSON value (integers beyond i64/u64 become floats,
      as in serde_json; duplicate object keys: the last one wins).
    * ``BINARY``: ``data`` itself, as bytes.
    * ``BASE64``: the decoded bytes (strict: standard alphabet, padding
      required, no whitespace, canonical).

    Raises:
        RemoteProtocolError: ``format`` is ``AUTO`` (or not a known format),
            ``data`` is longer than ``max_size`` (hint 413), or ``data`` is not
            valid for ``format``.
        LocalProtocolError: ``data`` is not bytes-like.
    """
    raw = _input_bytes(data, max_size, "the")
    if format is EncodingFormat.JSON:
        return _decode_json(raw)
    if format is EncodingFormat.BINARY:
        return raw
    if format is EncodingFormat.BASE64:
        return _decode_base64(raw)
    raise RemoteProtocolError(f"payload labelled {format!r} cannot be decoded")


def convert_payload(
    data: bytes,
    source: EncodingFormat,
    target: EncodingFormat,
    *,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> bytes:
    """Return ``data`` (labelled ``source``) re-encoded for ``target`` by the reference's
    ``to_format`` rules (``spec/framed.md`` section 5); a JSON-labelled source must be JSON.

    Raises:
        LocalProtocolError: ``target`` is ``AUTO``; ``data`` is not bytes-like.
        RemoteProtocolError: ``source`` is ``AUTO``; ``data`` is longer than
            ``max_size`` (hint 413) or is not valid for ``source`` (or, for a
            Json target, is not JSON).
    """
    if not isinstance(target, EncodingFormat) or target is EncodingFormat.AUTO:
        raise LocalProtocolError(f"cannot convert a payload to {target!r}")
    if not isinstance(source, EncodingFormat) or source is EncodingFormat.AUTO:
        raise RemoteProtocolError(f"payload labelled {source!r} cannot be converted")
    raw = _input_bytes(data, max_size, "the")
    if source is target:
        return raw
    if source is EncodingFormat.JSON:
        _decode_json(raw)  # a JSON-labelled source must hold JSON; its bytes are kept
    elif source is EncodingFormat.BASE64:
        raw = _decode_base64(raw)
    if target is EncodingFormat.JSON:
        return _encode_json(_decode_json(raw))  # serde re-writes a Value: compact, keys sorted
    return base64.b64encode(raw) if target is EncodingFormat.BASE64 else raw


# --------------------------------------------------------------------------- EncodedMessage


def encoded_message_from_value(
    value: object, format: EncodingFormat = EncodingFormat.JSON
) -> EncodedMessage:
    """Return an :class:`EncodedMessage` carrying ``value`` encoded as ``format``.

    Raises:
        LocalProtocolError: as :func:`encode_payload`.
    """
    return EncodedMessage(data=encode_payload(value, format), format=format)


def decode_encoded_message_value(
    message: EncodedMessage, *, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE
) -> JsonValue | bytes:
    """Return the value carried by ``message`` (see :func:`decode_payload`).

    Raises:
        RemoteProtocolError: as :func:`decode_payload`.
    """
    return decode_payload(message.data, message.format, max_size=max_size)


def convert_encoded_message(
    message: EncodedMessage,
    target: EncodingFormat,
    *,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> EncodedMessage:
    """Return ``message`` converted to ``target`` (see :func:`convert_payload`).

    Raises:
        LocalProtocolError, RemoteProtocolError: as :func:`convert_payload`.
    """
    data = convert_payload(message.data, message.format, target, max_size=max_size)
    return EncodedMessage(data=data, format=target)
