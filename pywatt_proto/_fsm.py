"""``Machine``: the one state-machine kernel every pywatt_proto machine uses.

A machine is a table ``(state, input) -> next state`` over two enums, written once at the
top of the file that owns it and exported as ``<NAME>_MACHINE`` beside its enums. Every
state change asks :meth:`Machine.next`, so a missing pair fails the same way everywhere
(``LocalProtocolError`` naming the machine, state and input; the caller's state unchanged),
and the documentation is generated from the same table (:meth:`Machine.table`, printed in
spec/ and checked by tests/test_spec_tables.py; :meth:`Machine.diagram` for Mermaid).
"""

from __future__ import annotations

from ._errors import LocalProtocolError

TYPE_CHECKING = False  # mypy reads it as True; typing is not imported (start-up time)
if TYPE_CHECKING:
    import enum
    from collections.abc import Mapping
    from typing import Generic, TypeVar

    _S = TypeVar("_S", bound=enum.Enum)
    _I = TypeVar("_I", bound=enum.Enum)

    class _Generic(Generic[_S, _I]):
        pass

else:

    class _Generic:
        def __class_getitem__(cls, _params: object) -> type:
            return cls

    _S = _I = None


class Machine(_Generic[_S, _I]):
    """A named transition table ``(state, input) -> next state`` (see the module docstring).

    ``transitions`` is the table itself, in the order it was written (the order the
    generated documentation lists it).
    """

    __slots__ = ("name", "transitions")

    def __init__(self, name: str, transitions: Mapping[tuple[_S, _I], _S]) -> None:
        self.name = name
        self.transitions: Mapping[tuple[_S, _I], _S] = dict(transitions)

    def next(self, state: _S, inp: _I) -> _S:
        """Return the state ``inp`` leads to from ``state``.

        Raises LocalProtocolError (``"<name>: no transition from <STATE> on <INPUT>"``) when
        the pair is not in the table; nothing is changed then.
        """
        try:
            return self.transitions[(state, inp)]
        except KeyError:
            raise LocalProtocolError(
                f"{self.name}: no transition from {state.name} on {inp.name}"
            ) from None

    def allows(self, state: _S, inp: _I) -> bool:
        """Return True if ``inp`` is legal in ``state``."""
        return (state, inp) in self.transitions

    def table(self) -> str:
        """Return the table as Markdown (``| from | input | to |``, one row per pair, in the
        table's order), the form spec/ prints."""
        rows = ["| from | input | to |", "|---|---|---|"]
        rows += [f"| {s.name} | {i.name} | {n.name} |" for (s, i), n in self.transitions.items()]
        return "\n".join(rows) + "\n"

    def diagram(self) -> str:
        """Return the table as a Mermaid ``stateDiagram-v2``."""
        lines = ["stateDiagram-v2"]
        lines += [f"    {s.name} --> {n.name}: {i.name}" for (s, i), n in self.transitions.items()]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, {len(self.transitions)} transitions)"
