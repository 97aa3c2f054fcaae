"""Loggers that import :mod:`logging` only when a record is emitted (driver start-up time).

``logging`` (with ``traceback``, ``tokenize``, ``string``, ``weakref``...) costs a blocking
module several milliseconds of start-up although a healthy module at level WARNING logs
nothing. The drivers therefore log through :class:`LazyLogger` and set up stderr logging
with :func:`basic_config`:

* if ``logging`` is already imported when the driver starts (the application or a
  library imported it -- an application that logs does), :func:`basic_config` configures
  it at once, exactly as ``logging.basicConfig`` would;
* otherwise the configuration waits: a record below the configured level is dropped
  without importing anything (the configured root logger would drop it too), and the
  first record at or above it imports ``logging``, applies the configuration if the root
  logger still has no handler, and is logged.

:class:`LazyLogger` has the ``logging.Logger`` methods the drivers use (``debug`` ...
``critical``, ``exception``, ``log``, ``isEnabledFor``); records name the caller's
line, not this module's.

Nothing here performs I/O itself: ``logging`` does, once it is used.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = ["LazyLogger", "basic_config"]

# logging's level numbers, so that a record can be judged before logging is imported.
_LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARN": 30, "WARNING": 30, "INFO": 20}
_LEVELS.update(DEBUG=10, NOTSET=0)

# The configuration basic_config() deferred: (level number, basicConfig keywords) or None.
_pending: tuple[int, dict[str, Any]] | None = None


def basic_config(*, level: str, format: str) -> None:
    """``logging.basicConfig(stream=sys.stderr, level=level, format=format)`` if unconfigured.

    Applied now when ``logging`` is loaded (or ``level`` is not a level name, so that
    ``logging`` reports it), else on the first record at or above ``level``.
    """
    global _pending
    number = _LEVELS.get(level)
    _pending = (number if number is not None else 0, {"level": level, "format": format})
    if number is None or "logging" in sys.modules:
        _apply_pending()


def _apply_pending() -> None:
    global _pending
    import logging

    pending, _pending = _pending, None
    if pending is not None and not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, **pending[1])


class LazyLogger:
    """A stand-in for ``logging.getLogger(name)`` that loads ``logging`` on first real use."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        logger = self._logger
        if logger is None:
            import logging

            if _pending is not None:
                _apply_pending()
            logger = self._logger = logging.getLogger(self.name)
        return logger

    def _dropped(self, level: int) -> bool:
        # Nothing has loaded logging, and the deferred configuration would drop this record.
        return (
            self._logger is None
            and "logging" not in sys.modules
            and _pending is not None
            and level < _pending[0]
        )

    def isEnabledFor(self, level: int) -> bool:
        """Return whether a record at ``level`` would be logged."""
        return not self._dropped(level) and self._real().isEnabledFor(level)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level`` (``logging.Logger.log``)."""
        if not self._dropped(level):
            kwargs.setdefault("stacklevel", 2)  # the caller's line, not this method's
            self._real().log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at DEBUG."""
        if not self._dropped(10):
            kwargs.setdefault("stacklevel", 2)
            self._real().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at INFO."""
        if not self._dropped(20):
            kwargs.setdefault("stacklevel", 2)
            self._real().info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at WARNING."""
        if not self._dropped(30):
            kwargs.setdefault("stacklevel", 2)
            self._real().warning(msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at ERROR."""
        if not self._dropped(40):
            kwargs.setdefault("stacklevel", 2)
            self._real().error(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at ERROR with the exception being handled (``exc_info`` defaults to True)."""
        if not self._dropped(40):
            kwargs.setdefault("stacklevel", 2)
            kwargs.setdefault("exc_info", True)
            self._real().error(msg, *args, **kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at CRITICAL."""
        if not self._dropped(50):
            kwargs.setdefault("stacklevel", 2)
            self._real().critical(msg, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"
