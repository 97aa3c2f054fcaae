"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

# --- http dispatch, server, client ---
from ._dispatch import dispatch

__all__ = [
    # http dispatch, server, client
    "dispatch",
]
