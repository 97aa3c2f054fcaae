"""Fuzz targets for the stdio line decoder and the framed-channel frame decoder.

Property for every target: any bytes, cut at any points, either decode or
raise the documented :class:`RemoteProtocolError` subclass -- never another
exception, never a hang (every loop here is bounded by the input size), and
never more buffered than the limit allows (checked through the public
``buffered_size``). The decoded items must also equal what a simple,
obviously-correct model computes from the whole input, so splitting can never
change a result.

Run longer with ``PYWATT_FUZZ_EXAMPLES=100000 pytest fuzz/test_fuzz_framing.py``.
"""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import (
    END_OF_INPUT,
    FRAME_HEADER_SIZE,
    NEED_DATA,
    EncodingFormat,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    InvalidFormatCode,
    LineDecoder,
    LineTooLong,
    RemoteProtocolError,
    TruncatedInput,
    encode_frame,
    encode_line,
)

# Inputs are built from pieces that make the interesting cases likely:
# newlines, carriage returns, runs long enough to cross the limit.
_line_piece = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"{}"]),
    st.integers(1, 80).map(lambda n: b"a" * n),
)
_line_input = st.lists(_line_piece, max_size=25).map(b"".join)


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    """Cut ``data`` at ``points`` (positions taken modulo the length), no empty chunks."""
    if not data:
        return []
    cuts = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


_points = st.lists(st.integers(0, 10_000), max_size=30)


def _expected_lines(data: bytes, limit: int, eof: bool) -> list[object]:
    """Model of the line rules in spec/limits.md, computed on the whole input."""
    *complete, tail = data.split(b"\n")
    out: list[object] = []
    for seg in complete:
        if len(seg) > limit:
            out.append(LineTooLong)
        else:
            line = seg[:-1] if seg.endswith(b"\r") else seg
            if line:
                out.append(line)
    if len(tail) > limit:
        out.append(LineTooLong)
    elif tail and eof:
        out.append(TruncatedInput)
    return out


def _take_lines(dec: LineDecoder, budget: int) -> tuple[list[object], object]:
    out: list[object] = []
    for _ in range(budget):  # bounded: each call consumes one queued item
        try:
            item = dec.next_line()
        except (LineTooLong, TruncatedInput) as exc:
            assert exc.error_status_hint in (400, 413)
            out.append(type(exc))
            continue
        if item is NEED_DATA or item is END_OF_INPUT:
            return out, item
        assert isinstance(item, bytes) and item
        out.append(item)
    raise AssertionError("next_line() did not reach NEED_DATA/END_OF_INPUT")


@given(data=_line_input, points=_points, limit=st.integers(1, 64), eof=st.booleans())
def test_fuzz_line_decoder(data: bytes, points: list[int], limit: int, eof: bool) -> None:
    dec = LineDecoder(max_line_size=limit)
    got: list[object] = []
    budget = len(data) + 3
    for chunk in _cut(data, points):
        dec.receive_data(chunk)
        # Unfinished part is bounded even before anything is taken.
        assert dec.buffered_size <= limit + len(data)
        items, signal = _take_lines(dec, budget)
        got.extend(items)
        assert signal is NEED_DATA
        assert dec.buffered_size <= limit
    if eof:
        dec.receive_eof()
        items, signal = _take_lines(dec, budget)
        got.extend(items)
        assert signal is END_OF_INPUT
        assert dec.buffered_size == 0
    assert got == _expected_lines(data, limit, eof)


@given(data=st.binary(max_size=300), points=_points, limit=st.integers(1, 64))
def test_fuzz_line_decoder_raw_bytes(data: bytes, points: list[int], limit: int) -> None:
    # Unstructured bytes: only the documented errors, bounded buffer.
    dec = LineDecoder(max_line_size=limit)
    for chunk in _cut(data, points):
        dec.receive_data(chunk)
        _take_lines(dec, len(data) + 3)
        assert dec.buffered_size <= limit
    dec.receive_eof()
    assert _take_lines(dec, len(data) + 3)[1] is END_OF_INPUT


@given(
    lines=st.lists(
        st.binary(min_size=1, max_size=40).filter(
            lambda b: b"\n" not in b and not b.endswith(b"\r")
        ),
        max_size=20,
    ),
    points=_points,
)
def test_fuzz_line_round_trip(lines: list[bytes], points: list[int]) -> None:
    wire = b"".join(encode_line(x, max_line_size=40) for x in lines)
    dec = LineDecoder(max_line_size=40)
    got: list[object] = []
    for chunk in _cut(wire, points):
        dec.receive_data(chunk)
        got.extend(_take_lines(dec, len(wire) + 3)[0])
    dec.receive_eof()
    items, signal = _take_lines(dec, 3)
    assert signal is END_OF_INPUT and not items
    assert got == lines


# ----------------------------------------------------------------------------- frames


def _header(length: int, code: int) -> bytes:
    return struct.pack(">IB", length, code)


_frame_piece = st.one_of(
    # well-formed frames of every wire format
    st.tuples(st.sampled_from([1, 2, 3]), st.binary(max_size=70)).map(
        lambda t: _header(len(t[1]), t[0]) + t[1]
    ),
    # headers with any length and any format byte, followed by some bytes
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=20)).map(
        lambda t: _header(t[0], t[1]) + t[2]
    ),
    st.binary(max_size=12),
)
_frame_input = st.lists(_frame_piece, max_size=12).map(b"".join)


def _expected_frames(data: bytes, limit: int, eof: bool) -> list[object]:
    """Model of the frame rules in spec/framed.md and spec/limits.md."""
    out: list[object] = []
    pos = 0
    while True:
        if len(data) - pos < FRAME_HEADER_SIZE:
            if eof and pos < len(data):
                out.append(TruncatedInput)
            return out
        length, code = struct.unpack_from(">IB", data, pos)
        if code not in (1, 2, 3):
            out.append(InvalidFormatCode)
            return out
        if length > limit:
            out.append(FrameTooLarge)
            return out
        start = pos + FRAME_HEADER_SIZE
        if len(data) - start < length:
            if eof:
                out.append(TruncatedInput)
            return out
        out.append(Frame(format=EncodingFormat(code), payload=data[start : start + length]))
        pos = start + length


def _take_frames(dec: FrameDecoder, budget: int) -> tuple[list[object], object]:
    out: list[object] = []
    for _ in range(budget):
        try:
            item = dec.next_frame()
        except (InvalidFormatCode, FrameTooLarge, TruncatedInput) as exc:
            assert isinstance(exc, RemoteProtocolError)
            # Fatal: the same error again, whatever happens next.
            try:
                dec.next_frame()
            except type(exc):
                pass
            else:
                raise AssertionError("a fatal frame error was not repeated") from None
            out.append(type(exc))
            return out, "error"
        if item is NEED_DATA or item is END_OF_INPUT:
            return out, item
        assert isinstance(item, Frame)
        out.append(item)
    raise AssertionError("next_frame() did not reach NEED_DATA/END_OF_INPUT")


@given(data=_frame_input, points=_points, limit=st.integers(0, 64), eof=st.booleans())
def test_fuzz_frame_decoder(data: bytes, points: list[int], limit: int, eof: bool) -> None:
    dec = FrameDecoder(max_frame_size=limit)
    got: list[object] = []
    failed = False
    budget = len(data) + 3
    for chunk in _cut(data, points):
        dec.receive_data(chunk)
        if not failed:
            items, signal = _take_frames(dec, budget)
            got.extend(items)
            failed = signal == "error"
            assert failed or signal is NEED_DATA
        # Never more than one header plus one limit's worth of payload once drained.
        assert dec.buffered_size <= FRAME_HEADER_SIZE + limit
    if eof:
        dec.receive_eof()
        if not failed:
            items, signal = _take_frames(dec, budget)
            got.extend(items)
            assert signal in ("error", END_OF_INPUT)
        assert dec.buffered_size == 0
    assert got == _expected_frames(data, limit, eof)


@given(data=st.binary(max_size=300), points=_points, limit=st.integers(0, 300))
def test_fuzz_frame_decoder_raw_bytes(data: bytes, points: list[int], limit: int) -> None:
    dec = FrameDecoder(max_frame_size=limit)
    for chunk in _cut(data, points):
        dec.receive_data(chunk)
        if _take_frames(dec, len(data) + 3)[1] == "error":
            break
        assert dec.buffered_size <= FRAME_HEADER_SIZE + limit


@given(
    frames=st.lists(
        st.builds(
            Frame,
            format=st.sampled_from(
                [EncodingFormat.JSON, EncodingFormat.BINARY, EncodingFormat.BASE64]
            ),
            payload=st.binary(max_size=64),
        ),
        max_size=12,
    ),
    points=_points,
)
def test_fuzz_frame_round_trip(frames: list[Frame], points: list[int]) -> None:
    wire = b"".join(encode_frame(f.format, f.payload, max_frame_size=64) for f in frames)
    dec = FrameDecoder(max_frame_size=64)
    got: list[object] = []
    for chunk in _cut(wire, points):
        dec.receive_data(chunk)
        got.extend(_take_frames(dec, len(wire) + 3)[0])
    dec.receive_eof()
    items, signal = _take_frames(dec, 3)
    assert signal is END_OF_INPUT and not items
    assert got == frames
