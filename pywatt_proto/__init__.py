"""pywatt_proto -- the Sans-IO core of the PyWatt module protocol.

Bytes in, typed events out; events in, bytes out. Nothing here performs I/O,
starts threads or reads a clock: time is passed in as ``now`` (seconds, float)
and randomness as an injected ``random.Random``-like source.

This file only re-exports; each area lives in a private module.
"""

from ._errors import AuthError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._formats import EncodingFormat

# --- messages & codec (wire core) ---
# --- framing & payload formats ---
from ._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    END_OF_INPUT,
    FRAME_HEADER_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    NEED_DATA,
    EndOfInput,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    InvalidFormatCode,
    LineDecoder,
    LineTooLong,
    NeedData,
    TruncatedInput,
    encode_frame,
    encode_line,
)

# --- module / orchestrator state machines ---
# --- router ---
# --- circuit breaker, backoff, port negotiation ---
# --- http-over-tcp helpers ---

__all__ = [
    # framing & payload formats
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "END_OF_INPUT",
    "FRAME_HEADER_SIZE",
    "MAX_FRAME_SIZE_LIMIT",
    "NEED_DATA",
    "EndOfInput",
    "Frame",
    "FrameDecoder",
    "FrameTooLarge",
    "InvalidFormatCode",
    "LineDecoder",
    "LineTooLong",
    "NeedData",
    "TruncatedInput",
    "encode_frame",
    "encode_line",
    "AuthError",
    "EncodingFormat",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]
