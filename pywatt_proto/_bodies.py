"""HTTP bodies on the stdio line: the two wire forms, their size rule, and bounded scans.

On the reference wire a body (``Vec<u8>``) is a JSON array of byte values (up to 4 bytes of
line per body byte and, read naively, one Python int per byte); with the ``base64_bodies``
extension (``spec/extensions.md``) it is one base64 string. This module holds what both
forms need: the size rule (``spec/limits.md`` section 1.1, :func:`max_body_size`), the
fast array codec (:func:`encode_byte_array` / :func:`decode_byte_array`: ``translate``
passes and the C JSON scanner, no Python object per byte; the alternatives measured are in
``tests/benchmarks/bench_bodies.py``), the base64 form, :func:`scan_request_id` (the
``request_id`` of a line too large or broken to decode, from its first and last bytes) and
:class:`SkippedLineLog` (when to log skipped lines). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import binascii
import json
import re

from ._errors import RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Callable
    from typing import Any, Final

#: The extension name (spec/extensions.md): bodies travel as base64 strings.
EXT_BASE64_BODIES: Final = "base64_bodies"

#: Line limit in the reference form (every line of a connection without ``base64_bodies``).
REFERENCE_LINE_LIMIT: Final = 16 * 1024 * 1024
#: Line limit once ``base64_bodies`` is in use: room for a 64 MiB body (89,478,488 base64
#: bytes) plus :data:`LINE_ROOM`, rounded up to 96 MiB.
BASE64_LINE_LIMIT: Final = 96 * 1024 * 1024
#: Bytes of a line reserved for everything but the body (op, ids, method, uri, headers,
#: the wrapper's metadata). The front door caps a request head at 16 KiB and JSON escaping
#: at most doubles a header byte, so a request whose body is within the body limit fits its
#: line; anything larger is still refused by the writers' length check (hint 413).
LINE_ROOM: Final = 64 * 1024


def max_body_size(line_limit: int, base64: bool) -> int:
    """Return the largest body that always fits a line of ``line_limit`` bytes.

    Worst case per form: the array form costs 4 bytes per body byte (``255,`` -- the
    brackets fit in the comma the last element does not have), the base64 form 4 bytes per
    3 (rounded up to whole groups). :data:`LINE_ROOM` is left for the rest of the line.
    Returns 0 when ``line_limit`` leaves no room. Pure; never raises for ints.
    """
    room = line_limit - LINE_ROOM
    if room <= 0:
        return 0
    return (room // 4) * 3 if base64 else room // 4


#: Largest body in the reference form: 4,177,920 bytes (3.98 MiB).
MAX_REFERENCE_BODY: Final = max_body_size(REFERENCE_LINE_LIMIT, False)
#: Largest body with ``base64_bodies``: 75,448,320 bytes (71.95 MiB).
MAX_BASE64_BODY: Final = max_body_size(BASE64_LINE_LIMIT, True)

# ---------------------------------------------------------------------------
# the reference form: a JSON array of byte values
# ---------------------------------------------------------------------------

# Digit tables for encode_byte_array: hundreds, tens and ones digit of each byte value, with
# NUL for a leading zero (NUL bytes are deleted afterwards, so "7" is written, not "007").
_HUNDREDS: Final = bytes(48 + v // 100 if v >= 100 else 0 for v in range(256))
_TENS: Final = bytes(48 + v // 10 % 10 if v >= 10 else 0 for v in range(256))
_ONES: Final = bytes(48 + v % 10 for v in range(256))


def encode_byte_array(data: bytes | bytearray | memoryview) -> bytes:
    """Return ``data`` as the compact JSON array of its byte values (``b"[1,2,255]"``).

    The bytes serde_json writes for a ``Vec<u8>``. Built with three ``translate`` passes
    into a 4-bytes-per-byte layout (``H T O ,``) and one pass deleting the NULs that stand
    for leading zeros: no Python object per byte. Never raises for bytes-like input.
    """
    n = len(data)
    if not n:
        return b"[]"
    raw = data if type(data) is bytes else bytes(data)
    out = bytearray(4 * n + 1)
    out[0] = 0x5B  # [
    out[1::4] = raw.translate(_HUNDREDS)
    out[2::4] = raw.translate(_TENS)
    out[3::4] = raw.translate(_ONES)
    out[4::4] = b"," * n  # the last one lands on out[-1] and becomes the "]"
    out[-1] = 0x5D
    return bytes(out.translate(None, b"\x00"))


# The hook-free C scanner (scan_plain(text, 0) -> (value, end)): objects are plain dicts (last
# duplicate wins), a digits-and-commas array a list of (cached small) ints; the byte-array
# decoder and the codec's canonical http_request reader use it on text already matched.
scan_plain: Callable[[str, int], tuple[Any, int]] = getattr(  # noqa: B009
    json.JSONDecoder(strict=True), "scan_once"
)
_DIGITS_AND_COMMAS: Final = b"0123456789,"


def decode_byte_array(text: bytes | bytearray | memoryview) -> bytes | None:
    """Return the bytes of a compact JSON byte array (``b"[1,2,255]"``), else None.

    Accepts exactly what serde_json writes (no whitespace, no leading zeros, values
    0..255). None means "not in that shape" -- the general decoder then gives the precise
    answer or error (it also accepts whitespace). Never raises.
    """
    raw = bytes(text)
    if len(raw) < 2 or raw[0] != 0x5B or raw[-1] != 0x5D:
        return None
    if len(raw) == 2:
        return b""
    inner = raw[1:-1]
    if inner.translate(None, _DIGITS_AND_COMMAS):  # anything but digits and commas
        return None
    try:
        values = scan_plain(raw.decode("ascii"), 0)[0]
        return bytes(values)  # ValueError for values > 255
    except (ValueError, StopIteration):  # leading zeros, empty items, huge values
        return None


# ---------------------------------------------------------------------------
# the base64_bodies form
# ---------------------------------------------------------------------------


def encode_base64_body(data: bytes | bytearray | memoryview) -> bytes:
    """Return ``data`` as standard padded base64 (RFC 4648 section 4), no line breaks.

    ASCII bytes that need no JSON escaping, so the JSON string is ``b'"' + result + b'"'``.
    Never raises for bytes-like input.
    """
    return binascii.b2a_base64(data, newline=False)


def decode_base64_body(text: bytes | bytearray | memoryview | str, field: str = "body") -> bytes:
    """Return the bytes of a base64 body (standard alphabet, padded, nothing else).

    Raises RemoteProtocolError (``field`` set, status hint 400) for any other character,
    missing or misplaced padding, or a length that is not a multiple of 4.
    """
    try:
        if isinstance(text, str):
            text = text.encode("ascii")
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise RemoteProtocolError(f"{field}: invalid base64 body ({exc})", field=field) from None


# ---------------------------------------------------------------------------
# bounded scans of lines that cannot be (or were not) decoded
# ---------------------------------------------------------------------------

#: Bytes of a line's start (and, for oversized lines, its end) that the scans look at.
SCAN_WINDOW: Final = 4096
# A request_id the scan may return: a plain JSON string (no escapes, no control characters).
_RID: Final = rb'"request_id"\s*:\s*"([^"\\\x00-\x1f]{0,1024})"'
_RID_FIRST: Final = re.compile(_RID)
_RID_LAST: Final = re.compile(rb"(?s:.*)" + _RID)  # greedy prefix: the last occurrence
_OPS: Final = {
    name: re.compile(rb'"op"\s*:\s*"' + name.encode() + rb'"')
    for name in ("http_request", "http_response")
}
_WRAPPER_START: Final = re.compile(rb'\s*\{\s*"content"\s*:')
_WRAPPER_RID_FIRST: Final = re.compile(rb'\s*\{\s*"content"\s*:\s*\{\s*' + _RID)


def scan_request_id(head: bytes, tail: bytes = b"", *, op: str = "http_request") -> str | None:
    """Return the ``request_id`` of a line from its first and last bytes, or None.

    ``head`` / ``tail`` are the line's first and last :data:`SCAN_WINDOW` bytes (``tail``
    empty when ``head`` is the whole line); nothing else is read, whatever the line's size,
    and nothing is decoded, so nesting, huge numbers or invalid UTF-8 elsewhere in the line
    do not matter.

    * ``op`` lines (``"op":"http_request"`` / ``"op":"http_response"`` in ``head``): the
      first ``"request_id":"..."`` in ``head`` -- serde writes it right after ``op``.
    * with ``op="http_response"``, also the reference's stdout wrapper (a line starting
      ``{"content":``): its ``content`` keys are sorted, body first, so the id is the last
      ``"request_id"`` of the line (``tail``, or ``head`` when that is the whole line);
      a wrapper whose content starts with ``request_id`` is read from ``head``.

    Escaped ids are not recognised. Never raises; ``head`` and ``tail`` are unchanged.
    """
    head = head[:SCAN_WINDOW]
    tail = tail[-SCAN_WINDOW:]
    found: re.Match[bytes] | None
    if _OPS[op].search(head) is not None:
        found = _RID_FIRST.search(head)
    elif op == "http_response" and _WRAPPER_START.match(head) is not None:
        found = _WRAPPER_RID_FIRST.match(head) or _RID_LAST.match(tail or head)
    else:
        return None
    if found is None:
        return None
    try:
        return found.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------
# logging policy for skipped lines
# ---------------------------------------------------------------------------


class LogThrottle:
    """When to log a repeated warning in full and when to summarise (pure; ``now`` given).

    The first ``burst`` warnings of a period are logged as given; later ones are only
    counted, and a summary (``summary`` formatted with ``count`` and ``span``, the seconds
    since the first one counted) is due at most once per ``interval`` seconds.
    ``interval`` seconds without a warning end the period: the summary still owed is given
    with the next warning, and the burst allowance starts again. :meth:`flush` returns the
    summary still owed (for end of input, or from a driver's timer). Memory: a few
    numbers, whatever the input. Used for skipped input lines (:class:`SkippedLineLog`)
    and the front door's accept errors.
    """

    __slots__ = ("_burst", "_count", "_interval", "_last", "_logged", "_since", "_text")

    def __init__(self, summary: str, *, burst: int = 5, interval: float = 10.0) -> None:
        """Log ``burst`` warnings in full per period, then one summary per ``interval`` s.

        Raises ValueError for a negative ``burst`` or a non-positive ``interval``.
        """
        if burst < 0 or interval <= 0:
            raise ValueError("burst >= 0 and interval > 0 are required")
        self._text = summary
        self._burst = burst
        self._interval = interval
        self._logged = 0  # warnings logged in full in this period
        self._last: float | None = None  # time of the latest warning
        self._since = 0.0  # time of the first warning counted since the last summary
        self._count = 0  # warnings counted and not yet summarised

    @property
    def due(self) -> float | None:
        """Return when the summary of the warnings counted is due, or None if none is owed."""
        return self._since + self._interval if self._count else None

    def note(self, now: float, message: str) -> list[str]:
        """Count one warning; return the messages to log now (often none).

        A warning logged in full gives ``message``; a due summary gives the summary text.
        Leaves the counters updated; never raises.
        """
        out: list[str] = []
        if self._last is not None and now - self._last >= self._interval:
            if self._count:
                out.append(self._summary(now))
            self._logged = 0
        self._last = now
        if self._logged < self._burst:
            self._logged += 1
            out.append(message)
            return out
        if not self._count:
            self._since = now
        self._count += 1
        if now - self._since >= self._interval:
            out.append(self._summary(now))
        return out

    def flush(self, now: float) -> str | None:
        """Return the summary of warnings counted and not yet reported, or None; resets it."""
        return self._summary(now) if self._count else None

    def _summary(self, now: float) -> str:
        text = self._text.format(count=self._count, span=max(now - self._since, 0.0))
        self._count = 0
        return text


class SkippedLineLog(LogThrottle):
    """:class:`LogThrottle` for skipped input lines: a line logged in full is
    ``"<reason>: <excerpt>"``, its text cut to ``max_chars``; the summary reads
    ``"skipped 600 more malformed lines in the last 10 s"``.
    """

    __slots__ = ("_max_chars",)

    def __init__(self, *, burst: int = 5, interval: float = 10.0, max_chars: int = 200) -> None:
        """Log ``burst`` lines in full per period, then one summary per ``interval`` s.

        Raises ValueError for a negative ``burst``, a non-positive ``interval`` or a
        ``max_chars`` under 16.
        """
        if max_chars < 16:
            raise ValueError("burst >= 0, interval > 0 and max_chars >= 16 are required")
        super().__init__(
            "skipped {count} more malformed lines in the last {span:.0f} s",
            burst=burst,
            interval=interval,
        )
        self._max_chars = max_chars

    def excerpt(self, line: bytes) -> str:
        """Return ``line`` as printable text cut to ``max_chars`` (with its size when cut)."""
        text = repr(line[: self._max_chars])
        if len(line) > self._max_chars:
            return f"{text}... ({len(line)} bytes)"
        return text

    def skipped(self, now: float, line: bytes, reason: str) -> list[str]:
        """Count one skipped line; return the messages to log now (often none).

        A line logged in full gives ``"<reason>: <excerpt>"``; a due summary gives the
        summary text. Leaves the counters updated; never raises.
        """
        return self.note(now, f"{reason}: {self.excerpt(line)}")
