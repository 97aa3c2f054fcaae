"""Incremental framing for the two PyWatt transports, with hard memory bounds.

* **stdio** -- one compact UTF-8 JSON document per ``\\n``-ended line (``spec/stdio.md``).
* **framed** (TCP / Unix socket) -- a 5-byte header (big-endian u32 payload length, one
  format byte), then the payload (``spec/framed.md``).

Both decoders have the same shape: ``receive_data(chunk)`` takes bytes however the
transport split them, ``receive_eof()`` is the only end-of-stream signal
(``receive_data(b"")`` is a usage error), and ``next_line()`` / ``next_frame()`` return,
in stream order, an item, :data:`NEED_DATA` or :data:`END_OF_INPUT`. Malformed input is a
:class:`~pywatt_proto.RemoteProtocolError` subclass raised by ``next_*`` at its position
in the stream, after every good item before it.

Each chunk is scanned once (only new bytes are searched for ``\\n``; a frame's bytes are
copied once), so byte-by-byte feeding is linear, and an oversized item is detected while it
arrives. Bytes past a limit are dropped, never buffered: ``buffered_size`` never exceeds
the complete items waiting plus one limit of partial input. The frame decoder never
allocates the announced length up front (the reference does, up to 4 GiB). Results are
identical however the input is split. Nothing here interprets a line or payload (UTF-8 and
JSON are the codec's job).
"""

from __future__ import annotations

import enum
import struct
from collections import deque

from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up cost)
    from typing import Final

#: Largest stdio line (bytes before the ``\n``, a ``\r`` included) a decoder
#: accepts by default. Why 16 MiB: the reference caps the init line at 1 MiB
#: but no other line, and HTTP bodies travel as JSON arrays of byte values
#: (``"255,"`` is 4 bytes per body byte), so a 4 MiB HTTP body becomes a line
#: of about 16 MiB. That is a realistic upper end for request/response bodies
#: sent over a module's stdin/stdout; anything bigger belongs on a socket.
DEFAULT_MAX_LINE_SIZE: Final = 16 * 1024 * 1024

#: Largest frame payload (header excluded) accepted by default. Why 64 MiB:
#: the reference advertises 64 MiB for TCP and 128 MiB for Unix sockets but
#: enforces neither; taking the smaller one means we accept every frame a
#: reference peer promises to accept on either transport's TCP form, while one
#: hostile header can cost at most 64 MiB per connection instead of 4 GiB.
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024

#: The length field is an unsigned 32-bit integer, so no frame can be bigger.
MAX_FRAME_SIZE_LIMIT: Final = 0xFFFF_FFFF

#: 4-byte big-endian payload length + 1 format byte.
FRAME_HEADER_SIZE: Final = 5

_HEADER: Final = struct.Struct(">IB")
_NEWLINE: Final = b"\n"
_CR: Final = 0x0D

#: Format bytes that may appear in a frame header (0 = Auto is never valid on the wire).
_WIRE_FORMATS: Final = {
    int(f): f for f in (EncodingFormat.JSON, EncodingFormat.BINARY, EncodingFormat.BASE64)
}


class NeedData(enum.Enum):
    """Type of :data:`NEED_DATA`: the decoder needs more bytes before it can answer."""

    NEED_DATA = "NEED_DATA"


class EndOfInput(enum.Enum):
    """Type of :data:`END_OF_INPUT`: the stream ended cleanly and nothing is left."""

    END_OF_INPUT = "END_OF_INPUT"


#: Returned by ``next_line`` / ``next_frame`` when more bytes are needed.
NEED_DATA: Final = NeedData.NEED_DATA
#: Returned by ``next_line`` / ``next_frame`` once the stream has ended and been drained.
END_OF_INPUT: Final = EndOfInput.END_OF_INPUT


#: Bytes of an over-long line kept for the receiver (its first and its last bytes), so that it
#: can still find out what the line was about (``pywatt_proto._bodies.scan_request_id``).
OVERSIZED_WINDOW: Final = 4096


class LineTooLong(RemoteProtocolError):
    """A stdio line grew past the decoder's ``max_line_size`` (status hint 413).

    Attributes:
        limit: the ``max_line_size`` that was exceeded.
        head: the line's first bytes (at most :data:`OVERSIZED_WINDOW`).
        tail: the line's last bytes (at most :data:`OVERSIZED_WINDOW`); empty unless the
            decoder reports over-long lines at their end (``oversized_tail=True``).
    """

    limit: int
    head: bytes
    tail: bytes

    def __init__(self, limit: int, head: bytes = b"", tail: bytes = b"") -> None:
        super().__init__(
            f"line exceeds the maximum line size of {limit} bytes", error_status_hint=413
        )
        self.limit = limit
        self.head = head
        self.tail = tail


class FrameTooLarge(RemoteProtocolError):
    """A frame header announced a payload bigger than ``max_frame_size`` (hint 413).

    Attributes:
        size: the payload length announced by the header.
        limit: the ``max_frame_size`` it exceeds.
    """

    size: int
    limit: int

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"frame payload of {size} bytes exceeds the maximum frame size of {limit} bytes",
            error_status_hint=413,
        )
        self.size = size
        self.limit = limit


class InvalidFormatCode(RemoteProtocolError):
    """A frame header carried a format byte other than 1 (Json), 2 (Binary), 3 (Base64).

    Attributes:
        code: the offending format byte (0 = Auto, or 4..255).
    """

    code: int

    def __init__(self, code: int) -> None:
        what = "Auto (0) is not valid on the wire" if code == 0 else "unknown code"
        super().__init__(f"invalid frame format byte {code}: {what}", error_status_hint=400)
        self.code = code


class TruncatedInput(RemoteProtocolError):
    """The stream ended in the middle of a line or frame (status hint 400).

    Attributes:
        buffered: how many bytes of the incomplete item had arrived.
    """

    buffered: int

    def __init__(self, what: str, buffered: int) -> None:
        super().__init__(
            f"input ended inside a {what} ({buffered} bytes of it received)",
            error_status_hint=400,
        )
        self.buffered = buffered


def _chunk(data: bytes | bytearray | memoryview, eof: bool) -> bytes:
    """Return a ``receive_data`` chunk as ``bytes``; LocalProtocolError for an empty chunk,
    non-bytes, or a chunk after ``receive_eof()`` (``eof``)."""
    if type(data) is not bytes or not data:  # bytes is what drivers pass
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"receive_data takes bytes, got {type(data).__name__}")
        if not data:
            raise LocalProtocolError(
                "receive_data(b'') is not an end-of-stream signal; call receive_eof() instead"
            )
        data = bytes(data)
    if eof:
        raise LocalProtocolError("receive_data() called after receive_eof()")
    return data


def _check_limit(name: str, value: int, low: int, high: int | None = None) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value}")


# --------------------------------------------------------------------------- stdio


class LineDecoder:
    """Split a stdio byte stream into lines, with a hard bound on line length.

    Rules (``spec/stdio.md`` section 1, ``spec/limits.md``): a line ends at ``\\n``, which
    is removed with one ``\\r`` before it; empty lines are skipped.

    * A line longer than ``max_line_size`` bytes (``\\r`` included) raises
      :class:`LineTooLong` from :meth:`next_line` at its position in the stream. It is
      detected as soon as the unfinished line passes the limit and its bytes are dropped
      (only its first and last :data:`OVERSIZED_WINDOW` bytes are kept, as the error's
      ``head`` and ``tail``); decoding resumes after its ``\\n`` (compact JSON holds no
      newline, so the next line is a clean start).
    * ``oversized_tail=True``: such a line is reported when it ends (its ``\\n`` or end of
      input), so the error carries its ``tail`` too (the reference's stdout wrapper puts a
      response's ``request_id`` after its body).
    * ``max_first_line_size`` (default: ``max_line_size``) limits the first non-empty line,
      the handshake.
    * End of input after a partial line makes :meth:`next_line` raise
      :class:`TruncatedInput` once, then return :data:`END_OF_INPUT` (not after a line
      already reported too long).
    """

    __slots__ = (
        "_discarding",
        "_eof",
        "_first_pending",
        "_max_first_line_size",
        "_max_line_size",
        "_oversized_tail",
        "_partial",
        "_pending_head",
        "_pending_limit",
        "_queue",
        "_queued_bytes",
        "_tail",
    )

    def __init__(
        self,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        *,
        max_first_line_size: int | None = None,
        oversized_tail: bool = False,
    ) -> None:
        """Create a decoder for lines of at most ``max_line_size`` bytes.

        ``max_first_line_size``: limit of the first non-empty line (default: the same).
        ``oversized_tail``: report over-long lines at their end, with their last bytes.

        Raises:
            ValueError: a limit is not a positive integer.
        """
        _check_limit("max_line_size", max_line_size, 1)
        if max_first_line_size is not None:
            _check_limit("max_first_line_size", max_first_line_size, 1)
        self._max_line_size = max_line_size
        self._max_first_line_size = max_first_line_size
        self._first_pending = max_first_line_size is not None
        self._oversized_tail = oversized_tail
        # Complete lines, and the errors to raise at their place, waiting for next_line().
        self._queue: deque[bytes | LineTooLong | TruncatedInput] = deque()
        self._queued_bytes = 0
        # The unfinished last line; never longer than the limit in force.
        self._partial = bytearray()
        # True while dropping the rest of an over-long line up to its newline.
        self._discarding = False
        # An over-long line reported at its end (oversized_tail): its head, limit, last bytes.
        self._pending_head: bytes | None = None
        self._pending_limit = 0
        self._tail = b""
        self._eof = False

    @property
    def max_line_size(self) -> int:
        """The longest line, in bytes before the ``\\n``, this decoder accepts."""
        return self._max_line_size

    def set_max_line_size(self, max_line_size: int) -> None:
        """Change the limit for every line not yet complete (the unfinished one included).

        Used once a connection has negotiated a body form that needs longer lines. Returns
        None; raises ValueError (nothing changed) for a limit that is not a positive int.
        """
        _check_limit("max_line_size", max_line_size, 1)
        self._max_line_size = max_line_size

    @property
    def buffered_size(self) -> int:
        """Bytes held: complete lines not yet taken plus the unfinished line.

        The unfinished-line part never exceeds :attr:`max_line_size`; once every
        complete line has been taken, the whole value is at most that.
        """
        return self._queued_bytes + len(self._partial)

    @property
    def eof_received(self) -> bool:
        """Whether :meth:`receive_eof` has been called."""
        return self._eof

    def _limit(self) -> int:
        if self._first_pending:
            assert self._max_first_line_size is not None
            return self._max_first_line_size
        return self._max_line_size

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next chunk of the stream.

        Leaves complete lines queued for :meth:`next_line`; keeps at most
        ``max_line_size`` bytes of an unfinished line. Never raises for bad
        input (those errors come out of :meth:`next_line` in stream order).

        Raises:
            LocalProtocolError: ``data`` is empty or not bytes-like, or
                :meth:`receive_eof` was already called. Nothing is changed.
        """
        chunk = _chunk(data, self._eof)
        pos = 0
        if self._discarding:
            nl = chunk.find(_NEWLINE)
            if self._pending_head is not None:
                end = len(chunk) if nl < 0 else nl
                self._tail = (self._tail + chunk[max(0, end - OVERSIZED_WINDOW) : end])[
                    -OVERSIZED_WINDOW:
                ]
            if nl < 0:
                return
            self._discarding = False
            self._finish_pending()
            pos = nl + 1
        partial = self._partial
        while True:
            nl = chunk.find(_NEWLINE, pos)
            if nl < 0:
                break
            limit = self._limit()
            if len(partial) + (nl - pos) > limit:
                # A whole over-long line arrived with its newline: report, move on.
                self._queue.append(
                    LineTooLong(limit, self._head(chunk, pos, nl), self._tail_of(chunk, pos, nl))
                )
                partial.clear()
                self._first_pending = False
            else:
                if partial:
                    partial += chunk[pos:nl]
                    line = bytes(partial)
                    partial.clear()
                else:
                    line = chunk[pos:nl]
                self._push_line(line)
            pos = nl + 1
        rest = len(chunk) - pos
        if rest:
            limit = self._limit()
            if len(partial) + rest > limit:
                head = self._head(chunk, pos, len(chunk))
                self._first_pending = False
                if self._oversized_tail:
                    self._pending_head = head
                    self._pending_limit = limit
                    self._tail = self._tail_of(chunk, pos, len(chunk))
                else:
                    self._queue.append(LineTooLong(limit, head))
                partial.clear()
                self._discarding = True
            else:
                partial += chunk[pos:]

    def _head(self, chunk: bytes, pos: int, end: int) -> bytes:
        """First OVERSIZED_WINDOW bytes of the unfinished line + chunk[pos:end]."""
        have = bytes(self._partial[:OVERSIZED_WINDOW])
        return have + chunk[pos : min(end, pos + OVERSIZED_WINDOW - len(have))]

    def _tail_of(self, chunk: bytes, pos: int, end: int) -> bytes:
        """Last OVERSIZED_WINDOW bytes of the unfinished line + chunk[pos:end]."""
        take = chunk[max(pos, end - OVERSIZED_WINDOW) : end]
        if len(take) < OVERSIZED_WINDOW and self._partial:
            take = bytes(self._partial[-(OVERSIZED_WINDOW - len(take)) :]) + take
        return take

    def _finish_pending(self) -> None:
        if self._pending_head is not None:
            self._queue.append(LineTooLong(self._pending_limit, self._pending_head, self._tail))
            self._pending_head = None
            self._tail = b""

    def _push_line(self, line: bytes) -> None:
        if line and line[-1] == _CR:
            line = line[:-1]
        if line:
            self._queue.append(line)
            self._queued_bytes += len(line)
            self._first_pending = False

    def receive_eof(self) -> None:
        """Mark the end of the stream (call once, when the peer closed its side).

        An unfinished line is turned into a pending :class:`TruncatedInput`; an over-long
        line still being discarded is reported now if its report waited for its end.
        Calling it again is a no-op.
        """
        if self._eof:
            return
        self._eof = True
        if self._partial:
            self._queue.append(TruncatedInput("line", len(self._partial)))
            self._partial.clear()
        self._finish_pending()
        self._discarding = False

    def next_line(self) -> bytes | NeedData | EndOfInput:
        """Return the next complete line, :data:`NEED_DATA` or :data:`END_OF_INPUT`.

        The line is ``bytes`` without its ``\\n`` (and without one trailing
        ``\\r``); it is never empty.

        Raises:
            LineTooLong: the next line in the stream was over the limit. It has
                been dropped; the next call continues after it.
            TruncatedInput: the stream ended inside a line. The next call
                returns :data:`END_OF_INPUT`.
        """
        if self._queue:
            item = self._queue.popleft()
            if isinstance(item, bytes):
                self._queued_bytes -= len(item)
                return item
            raise item
        return END_OF_INPUT if self._eof else NEED_DATA

    def __repr__(self) -> str:
        return (
            f"LineDecoder(max_line_size={self._max_line_size}, "
            f"buffered={self.buffered_size}, eof={self._eof})"
        )


def encode_line(
    json_bytes: bytes | bytearray | memoryview, *, max_line_size: int = DEFAULT_MAX_LINE_SIZE
) -> bytes:
    """Return ``json_bytes`` followed by ``\\n``, ready to write to the stream.

    Refuses anything a :class:`LineDecoder` with the same limit would not hand
    back unchanged, so a message is never silently lost or split.

    Raises:
        LocalProtocolError: ``json_bytes`` is not bytes, is empty (receivers
            skip empty lines), contains ``\\n`` (it would be split in two),
            or is longer than ``max_line_size`` (status hint 413).
    """
    if not isinstance(json_bytes, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"encode_line takes bytes, got {type(json_bytes).__name__}")
    data = bytes(json_bytes)
    if not data:
        raise LocalProtocolError("cannot send an empty line: receivers skip empty lines")
    if len(data) > max_line_size:
        raise LocalProtocolError(
            f"line of {len(data)} bytes exceeds the maximum line size of {max_line_size}",
            error_status_hint=413,
        )
    if _NEWLINE in data:
        raise LocalProtocolError("a line must not contain a newline byte")
    if data[-1] == _CR:
        # The receiver strips one trailing CR; a JSON document never needs one.
        raise LocalProtocolError("a line must not end with a carriage return")
    return data + _NEWLINE


# --------------------------------------------------------------------------- framed


@record
class Frame:
    """One message on a framed (TCP / Unix socket) channel.

    Attributes:
        format: how ``payload`` is encoded; never ``EncodingFormat.AUTO``.
        payload: the payload bytes (length is not limited here; the encoder
            and decoder apply their own ``max_frame_size``).
    """

    format: EncodingFormat
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.format, EncodingFormat):
            raise LocalProtocolError(
                f"Frame.format must be an EncodingFormat, got {self.format!r}", field="format"
            )
        if self.format is EncodingFormat.AUTO:
            raise LocalProtocolError("a frame cannot have format Auto", field="format")
        if not isinstance(self.payload, bytes):
            raise LocalProtocolError(
                f"Frame.payload must be bytes, got {type(self.payload).__name__}",
                field="payload",
            )
        if len(self.payload) > MAX_FRAME_SIZE_LIMIT:  # pragma: no cover - needs a 4 GiB payload
            raise LocalProtocolError(
                "a frame payload cannot exceed 2**32 - 1 bytes", field="payload"
            )


def encode_frame(
    format: EncodingFormat,
    payload: bytes | bytearray | memoryview,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """Return the 5-byte header followed by ``payload``.

    Raises:
        LocalProtocolError: ``format`` is ``AUTO`` or not an EncodingFormat,
            ``payload`` is not bytes-like, or it is longer than
            ``max_frame_size`` (status hint 413).
        ValueError: ``max_frame_size`` is out of range (0 .. 2**32 - 1).
    """
    _check_limit("max_frame_size", max_frame_size, 0, MAX_FRAME_SIZE_LIMIT)
    if not isinstance(format, EncodingFormat):
        raise LocalProtocolError(f"format must be an EncodingFormat, got {format!r}")
    if format is EncodingFormat.AUTO:
        raise LocalProtocolError("format Auto cannot be sent in a frame")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"payload must be bytes, got {type(payload).__name__}")
    body = bytes(payload)
    if len(body) > max_frame_size:
        raise LocalProtocolError(
            f"frame payload of {len(body)} bytes exceeds the maximum frame size "
            f"of {max_frame_size}",
            error_status_hint=413,
        )
    return _HEADER.pack(len(body), int(format)) + body


class FrameDecoder:
    """Split a framed byte stream into :class:`Frame` objects.

    Rules (``spec/framed.md``, ``spec/limits.md``):

    * A header with format byte 0 (Auto) or 4..255 raises
      :class:`InvalidFormatCode`, and one announcing more than
      ``max_frame_size`` raises :class:`FrameTooLarge`, as soon as its five
      bytes are in, before any of its payload is read.
    * End of input inside a header or payload raises :class:`TruncatedInput`.
    * Every one of these errors is **fatal**: after a bad header nothing
      later in the stream can be trusted to be aligned, so the decoder keeps
      raising the same error from :meth:`next_frame` and drops any further
      bytes it is given (it never buffers them). The driver should close the
      connection. Frames completed before the error are still returned first.
    * An empty payload (length 0) is a valid frame.
    """

    __slots__ = (
        "_eof",
        "_error",
        "_header",
        "_max_frame_size",
        "_payload",
        "_pending_format",
        "_pending_length",
        "_queue",
        "_queued_bytes",
    )

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        """Create a decoder accepting payloads of at most ``max_frame_size`` bytes.

        Raises:
            ValueError: ``max_frame_size`` is not an int in 0 .. 2**32 - 1.
        """
        _check_limit("max_frame_size", max_frame_size, 0, MAX_FRAME_SIZE_LIMIT)
        self._max_frame_size = max_frame_size
        self._queue: deque[Frame] = deque()
        self._queued_bytes = 0
        self._header = bytearray()  # < FRAME_HEADER_SIZE bytes of an unfinished header
        self._payload = bytearray()  # <= max_frame_size bytes of an unfinished payload
        self._pending_format: EncodingFormat | None = None  # set once a header is accepted
        self._pending_length = 0
        # The fatal error, raised once every frame before it has been taken.
        self._error: RemoteProtocolError | None = None
        self._eof = False

    @property
    def max_frame_size(self) -> int:
        """The largest payload, in bytes, this decoder accepts."""
        return self._max_frame_size

    @property
    def buffered_size(self) -> int:
        """Bytes held: complete payloads not yet taken plus the unfinished frame.

        The unfinished frame counts with its header bytes (received but not yet
        returned); that part never exceeds ``FRAME_HEADER_SIZE + max_frame_size``.
        """
        in_header = FRAME_HEADER_SIZE if self._pending_format is not None else len(self._header)
        return self._queued_bytes + in_header + len(self._payload)

    @property
    def eof_received(self) -> bool:
        """Whether :meth:`receive_eof` has been called."""
        return self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next chunk of the stream.

        Leaves complete frames queued for :meth:`next_frame`. After a fatal
        error the bytes are dropped. Never raises for bad input (those errors
        come out of :meth:`next_frame` in stream order).

        Raises:
            LocalProtocolError: ``data`` is empty or not bytes-like, or
                :meth:`receive_eof` was already called. Nothing is changed.
        """
        chunk = _chunk(data, self._eof)
        pos = 0
        end = len(chunk)
        while pos < end and self._error is None:
            if self._pending_format is None:
                if not self._header and end - pos >= FRAME_HEADER_SIZE:
                    # Fast path: the whole header is in this chunk.
                    self._accept_header(*_HEADER.unpack_from(chunk, pos))
                    pos += FRAME_HEADER_SIZE
                    continue
                take = min(FRAME_HEADER_SIZE - len(self._header), end - pos)
                self._header += chunk[pos : pos + take]
                pos += take
                if len(self._header) == FRAME_HEADER_SIZE:
                    header = _HEADER.unpack(self._header)
                    self._header.clear()
                    self._accept_header(*header)
                continue
            need = self._pending_length - len(self._payload)
            if not self._payload and end - pos >= need:
                # Fast path: the whole payload is in this chunk, copy it once.
                self._finish_frame(chunk[pos : pos + need])
                pos += need
            else:
                take = min(need, end - pos)
                self._payload += chunk[pos : pos + take]
                pos += take
                if len(self._payload) == self._pending_length:
                    self._finish_frame(bytes(self._payload))
                    self._payload.clear()

    def _accept_header(self, length: int, code: int) -> None:
        fmt = _WIRE_FORMATS.get(code)
        if fmt is None:
            self._error = InvalidFormatCode(code)
        elif length > self._max_frame_size:
            self._error = FrameTooLarge(length, self._max_frame_size)
        else:
            self._pending_format = fmt
            self._pending_length = length
            if length == 0:
                self._finish_frame(b"")

    def _finish_frame(self, payload: bytes) -> None:
        assert self._pending_format is not None
        self._queue.append(Frame(format=self._pending_format, payload=payload))
        self._queued_bytes += len(payload)
        self._pending_format = None
        self._pending_length = 0

    def receive_eof(self) -> None:
        """Mark the end of the stream (call once, when the peer closed its side).

        An unfinished header or payload becomes a pending
        :class:`TruncatedInput` (unless a fatal error is already pending).
        Calling it again is a no-op.
        """
        if self._eof:
            return
        self._eof = True
        if self._error is None and (self._header or self._pending_format is not None):
            got = len(self._header) + (
                FRAME_HEADER_SIZE + len(self._payload) if self._pending_format is not None else 0
            )
            self._error = TruncatedInput("frame", got)
        self._header.clear()
        self._payload.clear()
        self._pending_format = None

    def next_frame(self) -> Frame | NeedData | EndOfInput:
        """Return the next complete frame, :data:`NEED_DATA` or :data:`END_OF_INPUT`.

        Raises:
            InvalidFormatCode, FrameTooLarge: a bad header came next; fatal, and
                raised again by every later call.
            TruncatedInput: the stream ended inside a frame; raised again by
                every later call.
        """
        if self._queue:
            frame = self._queue.popleft()
            self._queued_bytes -= len(frame.payload)
            return frame
        if self._error is not None:
            # Drop the previous traceback so repeated raises do not grow it.
            raise self._error.with_traceback(None)
        return END_OF_INPUT if self._eof else NEED_DATA

    def __repr__(self) -> str:
        return (
            f"FrameDecoder(max_frame_size={self._max_frame_size}, "
            f"buffered={self.buffered_size}, eof={self._eof})"
        )
