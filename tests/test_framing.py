"""Line and frame decoders: every input fed whole, byte by byte and in random splits."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

import pytest

from pywatt_proto import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_SIZE,
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
    LocalProtocolError,
    RemoteProtocolError,
    TruncatedInput,
    encode_frame,
    encode_line,
)
from pywatt_proto.testing import SPLITTERS, FakeClock, byte_by_byte, random_splits, whole

Splitter = Callable[[bytes], list[bytes]]

# ----------------------------------------------------------------------------- helpers


def drain_lines(dec: LineDecoder) -> list[object]:
    """Take items until NEED_DATA/END_OF_INPUT; errors are recorded by class."""
    out: list[object] = []
    while True:
        try:
            item = dec.next_line()
        except RemoteProtocolError as exc:
            out.append(type(exc))
            continue
        if item is NEED_DATA or item is END_OF_INPUT:
            out.append(item)
            return out
        out.append(item)


def run_lines(data: bytes, split: Splitter, *, eof: bool = True, limit: int = 64) -> list[object]:
    dec = LineDecoder(max_line_size=limit)
    items: list[object] = []
    for chunk in split(data):
        dec.receive_data(chunk)
        got = drain_lines(dec)
        assert got[-1] is NEED_DATA
        items.extend(got[:-1])
        assert dec.buffered_size <= limit
    if eof:
        dec.receive_eof()
        got = drain_lines(dec)
        assert got[-1] is END_OF_INPUT
        items.extend(got[:-1])
        assert dec.buffered_size == 0
    return items


def drain_frames(dec: FrameDecoder) -> list[object]:
    out: list[object] = []
    while True:
        try:
            item = dec.next_frame()
        except RemoteProtocolError as exc:
            out.append(type(exc))
            return out
        out.append(item)
        if item is NEED_DATA or item is END_OF_INPUT:
            return out


def run_frames(data: bytes, split: Splitter, *, eof: bool = True, limit: int = 64) -> list[object]:
    dec = FrameDecoder(max_frame_size=limit)
    items: list[object] = []
    failed = False
    for chunk in split(data):
        dec.receive_data(chunk)
        if failed:
            continue
        got = drain_frames(dec)
        items.extend(x for x in got if x is not NEED_DATA)
        failed = isinstance(got[-1], type)
        assert dec.buffered_size <= FRAME_HEADER_SIZE + limit
    if eof:
        dec.receive_eof()
        if not failed:
            got = drain_frames(dec)
            items.extend(got)
    return items


ALL_SPLITS = pytest.mark.parametrize("split", SPLITTERS, ids=["whole", "bytes", "random"])


# ----------------------------------------------------------------------------- testing helpers


def test_splitters_rejoin_to_input() -> None:
    data = bytes(range(256)) * 3
    rng = random.Random(7)
    for chunks in (whole(data), byte_by_byte(data), random_splits(data, rng)):
        assert b"".join(chunks) == data
        assert all(chunks)
    assert whole(b"") == [] and byte_by_byte(b"") == []
    assert all(len(c) <= 5 for c in random_splits(data, rng, max_chunk=5))
    assert random_splits(data, random.Random(1)) == random_splits(data, random.Random(1))
    with pytest.raises(ValueError):
        random_splits(data, rng, max_chunk=0)


def test_fake_clock() -> None:
    clock = FakeClock()
    assert clock.now() == 0.0
    assert clock.advance(1.5) == 1.5
    clock.set(10.0)
    assert clock.now() == 10.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(9.0)
    with pytest.raises(ValueError):
        FakeClock(float("nan"))
    assert clock.now() == 10.0
    assert "10.0" in repr(clock)


# ----------------------------------------------------------------------------- lines


@ALL_SPLITS
def test_lines_basic(split: Splitter) -> None:
    data = b'{"op":"heartbeat"}\n{"op":"shutdown"}\r\n\n\r\nx\n'
    assert run_lines(data, split) == [b'{"op":"heartbeat"}', b'{"op":"shutdown"}', b"x"]


@ALL_SPLITS
def test_line_leftover_stays_buffered(split: Splitter) -> None:
    dec = LineDecoder()
    for chunk in split(b"one\ntw"):
        dec.receive_data(chunk)
    assert dec.next_line() == b"one"
    assert dec.next_line() is NEED_DATA
    assert dec.buffered_size == 2
    dec.receive_data(b"o\n")
    assert dec.next_line() == b"two"
    assert dec.next_line() is NEED_DATA
    assert dec.buffered_size == 0


@ALL_SPLITS
def test_line_truncated_at_eof(split: Splitter) -> None:
    assert run_lines(b"a\npartial", split) == [b"a", TruncatedInput]


def test_truncated_error_details() -> None:
    dec = LineDecoder()
    dec.receive_data(b"abc")
    dec.receive_eof()
    with pytest.raises(TruncatedInput) as info:
        dec.next_line()
    assert info.value.buffered == 3
    assert info.value.error_status_hint == 400
    assert isinstance(info.value, RemoteProtocolError)
    assert dec.next_line() is END_OF_INPUT
    assert dec.next_line() is END_OF_INPUT


@ALL_SPLITS
def test_line_exactly_at_limit_passes(split: Splitter) -> None:
    line = b"x" * 64
    assert run_lines(line + b"\n", split) == [line]
    # The \r counts toward the limit (it is stripped only after the check).
    assert run_lines(line + b"\r\n", split) == [LineTooLong]


@ALL_SPLITS
def test_line_too_long_resyncs(split: Splitter) -> None:
    data = b"ok1\n" + b"y" * 200 + b"\nok2\n" + b"z" * 65 + b"\n" + b"w" * 100
    assert run_lines(data, split) == [b"ok1", LineTooLong, b"ok2", LineTooLong, LineTooLong]


def test_line_too_long_detected_before_newline_and_not_buffered() -> None:
    dec = LineDecoder(max_line_size=10)
    dec.receive_data(b"a\n" + b"b" * 10)
    assert dec.next_line() == b"a"
    assert dec.next_line() is NEED_DATA
    dec.receive_data(b"b")  # 11 bytes without a newline: over the limit now
    assert dec.buffered_size == 0
    with pytest.raises(LineTooLong) as info:
        dec.next_line()
    assert info.value.limit == 10
    assert info.value.error_status_hint == 413
    dec.receive_data(b"c" * 1000)  # still the same line: discarded
    assert dec.buffered_size == 0
    assert dec.next_line() is NEED_DATA
    dec.receive_data(b"c\nnext\n")
    assert dec.next_line() == b"next"


def test_line_eof_while_discarding_is_clean() -> None:
    dec = LineDecoder(max_line_size=4)
    dec.receive_data(b"123456")
    dec.receive_eof()
    with pytest.raises(LineTooLong):
        dec.next_line()
    assert dec.next_line() is END_OF_INPUT


def test_line_decoder_usage_errors() -> None:
    dec = LineDecoder()
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        dec.receive_data("text")  # type: ignore[arg-type]
    dec.receive_data(bytearray(b"a\n"))
    dec.receive_data(memoryview(b"b\n"))
    dec.receive_eof()
    dec.receive_eof()  # idempotent
    assert dec.eof_received
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"more")
    assert [dec.next_line(), dec.next_line(), dec.next_line()] == [b"a", b"b", END_OF_INPUT]
    with pytest.raises(ValueError):
        LineDecoder(max_line_size=0)
    with pytest.raises(ValueError):
        LineDecoder(max_line_size=True)
    assert LineDecoder().max_line_size == DEFAULT_MAX_LINE_SIZE == 16 * 1024 * 1024
    assert "LineDecoder" in repr(dec)


def test_encode_line() -> None:
    assert encode_line(b'{"op":"heartbeat"}') == b'{"op":"heartbeat"}\n'
    assert encode_line(bytearray(b"{}")) == b"{}\n"
    for bad in (b"", b"a\nb", b"{}\r"):
        with pytest.raises(LocalProtocolError):
            encode_line(bad)
    with pytest.raises(LocalProtocolError) as info:
        encode_line(b"x" * 11, max_line_size=10)
    assert info.value.error_status_hint == 413
    with pytest.raises(LocalProtocolError):
        encode_line("{}")  # type: ignore[arg-type]


@ALL_SPLITS
def test_encode_line_round_trip(split: Splitter) -> None:
    lines = [b"{}", b'{"a":"\\n"}', b"x" * 64, "\u00e9\u2028".encode()]
    data = b"".join(encode_line(x, max_line_size=64) for x in lines)
    assert run_lines(data, split) == lines


def test_line_decoder_is_linear_when_fed_byte_by_byte() -> None:
    # A 2 MiB line fed one byte at a time, then a 2 MiB line in 4 KiB chunks:
    # a decoder that rescans its whole buffer per chunk would take minutes.
    size = 2 * 1024 * 1024
    dec = LineDecoder(max_line_size=size)
    line = b"a" * (size - 1)
    start = time.perf_counter()
    for i in range(0, len(line), 4096):
        dec.receive_data(line[i : i + 4096])
    dec.receive_data(b"\n")
    assert dec.next_line() == line
    small = b"b" * 300_000
    for i in range(len(small)):
        dec.receive_data(small[i : i + 1])
    dec.receive_data(b"\n")
    assert dec.next_line() == small
    assert time.perf_counter() - start < 5.0


# ----------------------------------------------------------------------------- frames


def frame(payload: bytes, code: int = 1, length: int | None = None) -> bytes:
    return struct.pack(">IB", len(payload) if length is None else length, code) + payload


@ALL_SPLITS
def test_frames_basic(split: Splitter) -> None:
    data = frame(b'{"op":"heartbeat"}') + frame(b"", 2) + frame(b"QUJD", 3)
    assert run_frames(data, split) == [
        Frame(format=EncodingFormat.JSON, payload=b'{"op":"heartbeat"}'),
        Frame(format=EncodingFormat.BINARY, payload=b""),
        Frame(format=EncodingFormat.BASE64, payload=b"QUJD"),
        END_OF_INPUT,
    ]


@ALL_SPLITS
def test_frame_leftover_stays_buffered(split: Splitter) -> None:
    dec = FrameDecoder()
    data = frame(b"abc") + frame(b"defg")[:7]
    for chunk in split(data):
        dec.receive_data(chunk)
    assert dec.next_frame() == Frame(format=EncodingFormat.JSON, payload=b"abc")
    assert dec.next_frame() is NEED_DATA
    assert dec.buffered_size == 7
    dec.receive_data(b"fg")
    assert dec.next_frame() == Frame(format=EncodingFormat.JSON, payload=b"defg")
    assert dec.buffered_size == 0


@ALL_SPLITS
@pytest.mark.parametrize("code", [0, 4, 5, 128, 255])
def test_invalid_format_code_is_fatal(split: Splitter, code: int) -> None:
    data = frame(b"ok") + frame(b"xx", code) + frame(b"later")
    assert run_frames(data, split) == [
        Frame(format=EncodingFormat.JSON, payload=b"ok"),
        InvalidFormatCode,
    ]


def test_invalid_format_code_raised_before_payload() -> None:
    dec = FrameDecoder()
    dec.receive_data(frame(b"", 0, length=1000))  # header only; payload not yet sent
    with pytest.raises(InvalidFormatCode) as info:
        dec.next_frame()
    assert info.value.code == 0
    with pytest.raises(InvalidFormatCode):  # fatal: raised again
        dec.next_frame()
    dec.receive_data(b"z" * 5000)
    assert dec.buffered_size == 0


@ALL_SPLITS
def test_frame_too_large(split: Splitter) -> None:
    data = frame(b"x" * 64) + frame(b"y" * 65) + frame(b"z")
    assert run_frames(data, split) == [
        Frame(format=EncodingFormat.JSON, payload=b"x" * 64),
        FrameTooLarge,
    ]


def test_frame_too_large_detected_from_header_alone() -> None:
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">IB", 0xFFFFFFFF, 1))
    with pytest.raises(FrameTooLarge) as info:
        dec.next_frame()
    assert (info.value.size, info.value.limit) == (0xFFFFFFFF, DEFAULT_MAX_FRAME_SIZE)
    assert info.value.error_status_hint == 413
    dec.receive_data(b"\0" * 100)
    assert dec.buffered_size == 0
    dec.receive_eof()
    with pytest.raises(FrameTooLarge):
        dec.next_frame()


@ALL_SPLITS
@pytest.mark.parametrize("cut", [1, 4, 5, 6, 8])
def test_frame_truncated(split: Splitter, cut: int) -> None:
    data = frame(b"a") + frame(b"four")[:cut]
    assert run_frames(data, split) == [
        Frame(format=EncodingFormat.JSON, payload=b"a"),
        TruncatedInput,
    ]


def test_frame_decoder_usage_errors() -> None:
    dec = FrameDecoder()
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"")
    dec.receive_eof()
    assert dec.eof_received
    dec.receive_eof()
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"x")
    assert dec.next_frame() is END_OF_INPUT
    for bad in (-1, 2**32, 1.5):
        with pytest.raises(ValueError):
            FrameDecoder(max_frame_size=bad)  # type: ignore[arg-type]
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE == 64 * 1024 * 1024
    assert "FrameDecoder" in repr(dec)


def test_encode_frame() -> None:
    assert encode_frame(EncodingFormat.JSON, b"{}") == b"\x00\x00\x00\x02\x01{}"
    assert encode_frame(EncodingFormat.BASE64, b"") == b"\x00\x00\x00\x00\x03"
    with pytest.raises(LocalProtocolError):
        encode_frame(EncodingFormat.AUTO, b"{}")
    with pytest.raises(LocalProtocolError):
        encode_frame(1, b"{}")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode_frame(EncodingFormat.JSON, "{}")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(EncodingFormat.JSON, b"x" * 11, max_frame_size=10)
    assert info.value.error_status_hint == 413


def test_frame_validates_itself() -> None:
    with pytest.raises(LocalProtocolError):
        Frame(format=EncodingFormat.AUTO, payload=b"")
    with pytest.raises(LocalProtocolError):
        Frame(format=1, payload=b"")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Frame(format=EncodingFormat.JSON, payload=bytearray())  # type: ignore[arg-type]


@ALL_SPLITS
def test_frame_round_trip(split: Splitter) -> None:
    frames = [
        Frame(format=EncodingFormat.JSON, payload=b'{"id":"x"}'),
        Frame(format=EncodingFormat.BINARY, payload=bytes(range(64))),
        Frame(format=EncodingFormat.BASE64, payload=b""),
    ]
    data = b"".join(encode_frame(f.format, f.payload, max_frame_size=64) for f in frames)
    assert run_frames(data, split) == [*frames, END_OF_INPUT]


def test_frame_decoder_is_linear_when_fed_byte_by_byte() -> None:
    payload = b"p" * 300_000
    dec = FrameDecoder()
    start = time.perf_counter()
    for chunk in byte_by_byte(encode_frame(EncodingFormat.BINARY, payload)):
        dec.receive_data(chunk)
    assert dec.next_frame() == Frame(format=EncodingFormat.BINARY, payload=payload)
    assert time.perf_counter() - start < 5.0
