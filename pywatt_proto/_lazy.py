"""PEP 562 lazy exports, shared by the three packages' ``__init__`` files.

Each package writes its public surface once, as a table ``{area: {private module: "names"}}``
(names separated by whitespace, each exported under its own name). :func:`lazy_exports`
derives ``__all__`` and the module-level ``__getattr__``/``__dir__`` pair that imports a name's
module on first access, so importing the package costs nothing for the areas a program does
not use. Type checkers read the generated ``__init__.pyi`` next to each ``__init__.py``
instead (explicit re-exports; ``python -m pywatt_proto._surface`` writes them from the same
tables and ``tests/test_lazy_exports.py`` fails when they are stale).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # mypy reads it as True; typing is not imported (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    #: area -> private module (relative, e.g. ``"._codec"``) -> whitespace-separated names.
    Surface = Mapping[str, Mapping[str, str]]


def exported_from(surface: Surface) -> dict[str, str]:
    """Return ``{public name: private module}`` for ``surface``, in table order.

    Raises ``ValueError`` when a name is listed twice (the table is the only place a name is
    written, so a duplicate is a mistake, not an alias). Leaves ``surface`` unchanged.
    """
    found: dict[str, str] = {}
    for modules in surface.values():
        for module, names in modules.items():
            for name in names.split():
                if name in found:
                    raise ValueError(f"{name!r} is listed twice in the export table")
                found[name] = module
    return found


def lazy_exports(
    namespace: dict[str, object], surface: Surface
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """Return ``(__all__, __getattr__, __dir__)`` for the package whose globals are ``namespace``.

    ``__all__`` lists every name of ``surface`` in table order. ``__getattr__(name)`` imports
    the name's module relative to the package, stores the value in ``namespace`` (later
    lookups skip it) and returns it; it raises ``AttributeError`` for a name not in the table.
    ``__dir__()`` lists globals and lazy names. Raises ``ValueError`` as :func:`exported_from`.
    """
    package = str(namespace["__name__"])
    table = exported_from(surface)

    def __getattr__(name: str) -> object:
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return list(table), __getattr__, __dir__
