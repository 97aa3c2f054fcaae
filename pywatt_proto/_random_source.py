"""``RandomSource``: what the retry and jitter code needs from a random source.

Its own module because a ``typing.Protocol`` needs :mod:`typing` at run time: the modules
that use it (``_backoff``, ``_client_common``) import it for annotations only, so a module
that connects a framed channel at start-up does not load ``typing`` for it.
"""

from __future__ import annotations

from typing import Protocol


class RandomSource(Protocol):
    """What :class:`~pywatt_proto.Backoff` needs from a random source (``random.Random`` fits)."""

    def random(self) -> float:
        """Return a float uniformly distributed in ``[0.0, 1.0)``."""
        ...
