"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

__all__: list[str] = []
