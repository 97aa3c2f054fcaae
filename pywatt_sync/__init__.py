"""pywatt_sync -- the blocking (threads) driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets with blocking I/O and a bounded thread pool.
"""

# --- http dispatch, server, client ---
from ._dispatch import dispatch

__all__ = [
    # http dispatch, server, client
    "dispatch",
]
