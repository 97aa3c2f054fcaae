"""Loggers that import :mod:`logging` only when a record is emitted (driver start-up time).

``logging`` costs a blocking module several milliseconds of start-up although a healthy
module at level WARNING logs nothing. The drivers log through :class:`LazyLogger` (the
``logging.Logger`` methods they use; records name the caller's line) and configure stderr
logging with :func:`basic_config`: at once if ``logging`` is already imported, else on the
first record at or above the level (records below it are dropped without importing
anything, as the configured root logger would drop them).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

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

    def _emit(self, level: int, msg: object, args: tuple[object, ...], kw: dict[str, Any]) -> None:
        if not self._dropped(level):
            kw.setdefault("stacklevel", 3)  # the caller's line, not LazyLogger's
            self._real().log(level, msg, *args, **kw)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level`` (``logging.Logger.log``)."""
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at DEBUG."""
        self._emit(10, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at INFO."""
        self._emit(20, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at WARNING."""
        self._emit(30, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at ERROR."""
        self._emit(40, msg, args, kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at ERROR with the exception being handled (``exc_info`` defaults to True)."""
        kwargs.setdefault("exc_info", True)
        self._emit(40, msg, args, kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at CRITICAL."""
        self._emit(50, msg, args, kwargs)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"
