"""Test helpers for code built on :mod:`pywatt_proto` (public, importable by users).

The core never reads a clock or touches a socket, so time and the way bytes arrive can be
driven exactly from a test: :class:`FakeClock` (a manually advanced ``now``);
:func:`whole`, :func:`byte_by_byte`, :func:`random_splits` (the three ways every parser
test feeds its input, h11 ``tests/test_io.py`` style: each returns the chunks to pass to
``receive_data``, which join back to the input); :class:`ConnectionPair` (both sides of the
stdio link wired together with no I/O).
"""

from __future__ import annotations

import math
import random

from ._framing import END_OF_INPUT, NEED_DATA
from ._module import ModuleConnection, ModuleEvent
from ._orchestrator import OrchestratorConnection, OrchestratorEvent

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_PUMP_ROUNDS",
    "SPLITTERS",
    "ConnectionPair",
    "FakeClock",
    "byte_by_byte",
    "random_splits",
    "whole",
]


class FakeClock:
    """A clock that only moves when told to.

    ``now()`` returns the current reading in seconds (a float, like
    ``time.monotonic()``). The clock never goes backwards: :meth:`advance`
    refuses negative steps and :meth:`set` refuses earlier times, because the
    core's timers assume a monotonic source.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        """Start the clock at ``start`` seconds (default 0.0).

        Raises:
            ValueError: ``start`` is not a finite number.
        """
        if not math.isfinite(start):
            raise ValueError(f"clock start must be finite, got {start!r}")
        self._now = float(start)

    def now(self) -> float:
        """Return the current reading in seconds."""
        return self._now

    def advance(self, dt: float) -> float:
        """Move the clock forward by ``dt`` seconds and return the new reading.

        Raises:
            ValueError: ``dt`` is negative or not finite; the clock is unchanged.
        """
        if not math.isfinite(dt) or dt < 0:
            raise ValueError(f"can only advance by a finite, non-negative step, got {dt!r}")
        self._now += dt
        return self._now

    def set(self, t: float) -> None:
        """Jump the clock to ``t`` seconds.

        Raises:
            ValueError: ``t`` is earlier than the current reading or not finite;
                the clock is unchanged.
        """
        if not math.isfinite(t) or t < self._now:
            raise ValueError(f"clock cannot go backwards: now={self._now!r}, requested {t!r}")
        self._now = float(t)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


def whole(data: bytes) -> list[bytes]:
    """Return ``data`` as a single chunk (``[]`` for empty input)."""
    return [bytes(data)] if data else []


def byte_by_byte(data: bytes) -> list[bytes]:
    """Return ``data`` split into one-byte chunks."""
    return [data[i : i + 1] for i in range(len(data))]


def random_splits(data: bytes, rng: random.Random, *, max_chunk: int | None = None) -> list[bytes]:
    """Return ``data`` cut at random points chosen by ``rng``.

    Chunks are never empty. With ``max_chunk`` given, no chunk is longer than
    that; otherwise chunk lengths range up to the whole remaining input.
    The same ``rng`` state always gives the same cuts, so failures replay.

    Raises:
        ValueError: ``max_chunk`` is given and smaller than 1.
    """
    if max_chunk is not None and max_chunk < 1:
        raise ValueError(f"max_chunk must be at least 1, got {max_chunk}")
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        remaining = len(data) - pos
        limit = remaining if max_chunk is None else min(remaining, max_chunk)
        size = rng.randint(1, limit)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def _seeded_random_splits(data: bytes) -> list[bytes]:
    return random_splits(data, random.Random(len(data)))


#: The three standard ways to feed a parser, for ``pytest.mark.parametrize``.
#: Each takes the bytes and returns the chunk list; the random one uses a
#: fixed seed so a failure replays.
SPLITTERS = (whole, byte_by_byte, _seeded_random_splits)


# --------------------------------------------------------------------------- connection pair

#: Rounds ``ConnectionPair.pump`` makes before giving up (a ping-pong that never settles is
#: a bug in a core, not something to loop on forever).
MAX_PUMP_ROUNDS = 1000


class ConnectionPair:
    """A :class:`ModuleConnection` and an :class:`OrchestratorConnection` talking directly.

    ``start()`` queues the orchestrator's init; ``pump()`` moves bytes both ways (feeding
    each side what the other queued, stamped with ``clock.now()``) until neither has
    anything to send, and returns the events each side produced, in order. Tests then act
    on events (``module.send_response``, ``orchestrator.answer_port``, ...) and pump again.
    """

    def __init__(
        self,
        module: ModuleConnection,
        orchestrator: OrchestratorConnection,
        clock: FakeClock | None = None,
    ) -> None:
        self.module = module
        self.orchestrator = orchestrator
        self.clock = clock if clock is not None else FakeClock()

    def start(self) -> None:
        """Queue the init line (``orchestrator.start(now)``)."""
        self.orchestrator.start(self.clock.now())

    def handle_timers(self) -> None:
        """Run both sides' ``handle_timer`` at the current time if their timer is due."""
        now = self.clock.now()
        for side in (self.module, self.orchestrator):
            due = side.get_timer()
            if due is not None and due <= now:
                side.handle_timer(now)

    def pump(self) -> tuple[list[ModuleEvent], list[OrchestratorEvent]]:
        """Exchange bytes until both sides are quiet; return (module events, orch events).

        Raises ``RuntimeError`` if the exchange does not settle in ``MAX_PUMP_ROUNDS``.
        """
        m_events: list[ModuleEvent] = []
        o_events: list[OrchestratorEvent] = []
        for _ in range(MAX_PUMP_ROUNDS):
            _drain(self.module, m_events)
            _drain(self.orchestrator, o_events)
            to_module = self.orchestrator.data_to_send()
            to_orch = self.module.data_to_send()
            if not to_module and not to_orch:
                return m_events, o_events
            now = self.clock.now()
            if to_module:
                self.module.receive_data(to_module, now)
            if to_orch:
                self.orchestrator.receive_data(to_orch, now)
        raise RuntimeError("ConnectionPair.pump did not settle")


def _drain(side: ModuleConnection | OrchestratorConnection, out: list[Any]) -> None:
    """Append every event ``side`` has ready to ``out``."""
    while True:
        ev = side.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return
        out.append(ev)
