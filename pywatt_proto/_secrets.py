"""Secrets handled like secrets: typed getters, a masked wrapper, log redaction.

* :func:`convert_secret` turns a secret's text into what ``app.secret(name, type=...)``
  asked for; errors name the secret, never its value.
* :class:`SecretRedactor` replaces every value it was told about by :data:`MASK` in log
  records (message, formatted traceback, stack). The drivers hand it every value the module
  receives (:func:`redact_secret`); the first one wraps ``logging``'s record
  factory, which sees every record of every logger once, at creation (a ``Filter`` misses
  propagated records and later handlers). ``logging`` is imported with the first secret.
  Values are kept while the process runs (a rotated-out key is still a secret), up to
  :data:`MAX_REDACTED_VALUES`; values shorter than :data:`MIN_REDACTED_LENGTH` are not
  redacted (masking every ``"on"`` would destroy the logs and hide nothing).
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # no typing import at run time; mypy reads True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeVar

    T = TypeVar("T")

#: What a secret value is replaced with (in logs, and in a SecretValue's repr/str).
MASK = "**********"
#: Shorter values are not redacted (see the module docstring).
MIN_REDACTED_LENGTH = 4
#: Values remembered for redaction; beyond it the oldest is forgotten. A module holds a
#: few secrets and a handful of rotations of each; 256 bounds a misbehaving orchestrator
#: (and the size of the one pattern every log record is matched against).
MAX_REDACTED_VALUES = 256

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f", ""})


class SecretValue:
    """A secret's text, masked in ``repr``/``str`` (so printing or logging the object
    shows :data:`MASK`); :meth:`reveal` returns the text. Compares by value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret text."""
        return self._value

    get_secret_value = reveal  # pydantic's SecretStr spelling

    def __repr__(self) -> str:
        return f"SecretValue('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a SecretValue is not pickled (it would write the secret out)")


def convert_secret(name: str, value: str, type: Callable[[str], T] | None) -> T | str:
    """Return ``value`` (the text of secret ``name``) converted by ``type``.

    ``None``/``str``: the text; ``bool``: true/false, 1/0, yes/no, on/off (any case,
    surrounding whitespace ignored); ``int``/``float``: parsed (surrounding whitespace
    ignored); :class:`SecretValue`: wrapped; anything else: ``type(value)``.

    Raises:
        ValueError: the text does not convert; the message names the secret and the
            type, never the value (the original error is not chained, it may quote it).
    """
    if type is None or type is str:
        return value
    try:
        if type is bool:
            word = value.strip().lower()
            if word in _TRUE:
                return True  # type: ignore[return-value]
            if word in _FALSE:
                return False  # type: ignore[return-value]
            raise ValueError
        return type(value)
    except (ValueError, TypeError, ArithmeticError):
        what = getattr(type, "__name__", repr(type))
        hint = " (true/false, 1/0, yes/no, on/off)" if type is bool else ""
        raise ValueError(f"secret {name!r} is not a valid {what}{hint}") from None


class SecretRedactor:
    """Replaces known secret values by :data:`MASK` in text and in log records.

    Thread-safe for its use here: :meth:`add` and :meth:`discard` swap in a new value
    set with one attribute store; the pattern is compiled from it on the next use
    (adding many values costs one compile, not one each).
    """

    __slots__ = ("_compiled", "_values")

    def __init__(self) -> None:
        self._values: dict[str, None] = {}  # insertion-ordered set
        # (the value set, its pattern), swapped in with one store
        self._compiled: tuple[dict[str, None], re.Pattern[str] | None] = (self._values, None)

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str) -> bool:
        """Remember ``value``; return True if it is new and long enough to redact."""
        if len(value) < MIN_REDACTED_LENGTH or value in self._values:
            return False
        values = dict(self._values)
        values[value] = None
        while len(values) > MAX_REDACTED_VALUES:
            del values[next(iter(values))]
        self._values = values
        return True

    def discard(self, values: Iterable[str]) -> None:
        """Forget ``values`` (a test client that served them stopped)."""
        gone = set(values)
        kept = {v: None for v in self._values if v not in gone}
        if len(kept) != len(self._values):
            self._values = kept

    def _current(self) -> re.Pattern[str] | None:
        values = self._values
        compiled_for, pattern = self._compiled
        if values is not compiled_for:
            # Longest first, so a value containing another is replaced whole.
            ordered = sorted(values, key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
            self._compiled = (values, pattern)
        return pattern

    def redact(self, text: str) -> str:
        """Return ``text`` with every known value replaced by :data:`MASK`."""
        pattern = self._current()
        return text if pattern is None else pattern.sub(MASK, text)

    def filter(self, record: Any) -> bool:
        """Redact a ``logging.LogRecord`` in place (the formatted message, with no ``args``;
        ``exc_info`` formatted into ``exc_text``; ``stack_info``), each only when it held a
        value; always returns True (keep it)."""
        pattern = self._current()
        if pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it later, as usual
            message = str(record.msg)
        if pattern.search(message):
            record.msg = pattern.sub(MASK, message)
            record.args = None
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None and not record.exc_text:
            import traceback

            text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
            if pattern.search(text):
                record.exc_text = pattern.sub(MASK, text)
        stack = record.stack_info
        if stack and pattern.search(stack):
            record.stack_info = pattern.sub(MASK, stack)
        return True


_REDACTOR = SecretRedactor()
_installed = False


def redactor() -> SecretRedactor:
    """Return the process-wide redactor the drivers feed (one module per process)."""
    return _REDACTOR


def redact_secret(value: str) -> None:
    """Redact ``value`` (a secret the module received) from every log record created from
    now on: the first call wraps ``logging``'s record factory (importing ``logging``)."""
    global _installed
    if not _REDACTOR.add(value) or _installed:
        return
    import logging

    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _REDACTOR.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
