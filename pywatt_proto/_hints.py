"""Texts both drivers show people (one copy of each; pure strings, no I/O)."""

from __future__ import annotations

#: Logged when the first stdin line is not an init: what was expected instead.
NOT_AN_INIT = (
    "the first line on stdin must be the orchestrator's init: one JSON object with "
    '"orchestrator_api", "module_id", "env" and "listen". This is a PyWatt module; '
    "run it with `pywatt run FILE`"
)


def terminal_stdin(program: str) -> str:
    """The one line a module prints when started with a terminal on stdin."""
    return f"this is a PyWatt module, run it with `pywatt run {program}`"


def rotation_failed(exc: BaseException) -> str:
    """The ``rotation_ack`` message for a failed rotation callback: the exception's type
    only. Its text may carry a secret, so it stays in the module's own log."""
    return f"rotation callback failed ({type(exc).__name__}); details are in the module's log"
