"""PEP 562 lazy exports, shared by the three packages' ``__init__`` files.

A package lists ``name -> (relative module, attribute)`` and gets the module-level
``__getattr__``/``__dir__`` pair that imports a name's module on first access, so importing the
package costs nothing for the areas a program does not use.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # mypy reads it as True; typing is not imported (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, object], table: Mapping[str, tuple[str, str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for the package whose globals are ``namespace``.

    ``__getattr__(name)`` imports ``table[name]``'s module relative to the package, stores the
    value in ``namespace`` (later lookups skip it) and returns it; it raises
    ``AttributeError`` for a name not in ``table``. ``__dir__()`` lists globals and lazy names.
    """
    package = str(namespace["__name__"])

    def __getattr__(name: str) -> object:
        try:
            module, attr = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
