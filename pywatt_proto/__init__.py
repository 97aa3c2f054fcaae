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
# --- module / orchestrator state machines ---
# --- router ---
# --- circuit breaker, backoff, port negotiation ---
# --- http-over-tcp helpers ---

__all__ = [
    "AuthError",
    "EncodingFormat",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]
