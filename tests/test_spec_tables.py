"""The state tables printed in spec/ are the ones the code generates, and every machine
runs on the one kernel (pywatt_proto._fsm.Machine).

Each machine's table is printed between ``<!-- <marker>:begin -->`` and
``<!-- <marker>:end -->`` in a spec/ file, exactly as ``Machine.table()`` writes it, so the
spec cannot drift from the code (regenerate it with ``python tests/test_spec_tables.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import pywatt_proto
from pywatt_proto import LocalProtocolError, Machine

SPEC = Path(__file__).resolve().parent.parent / "spec"

#: marker -> (spec file, machine)
TABLES: dict[str, tuple[str, Machine]] = {  # type: ignore[type-arg]
    "module-transitions": ("stdio.md", pywatt_proto.MODULE_MACHINE),
    "orchestrator-transitions": ("stdio.md", pywatt_proto.ORCHESTRATOR_MACHINE),
    "channel-transitions": ("framed.md", pywatt_proto.CHANNEL_MACHINE),
    "breaker-transitions": ("breaker.md", pywatt_proto.BREAKER_MACHINE),
    "negotiation-transitions": ("breaker.md", pywatt_proto.NEGOTIATION_MACHINE),
}


def _block(text: str, marker: str) -> tuple[int, int]:
    begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
    assert begin in text and end in text, f"the {marker} markers are missing"
    start = text.index(begin) + len(begin)
    return start, text.index(end, start)


@pytest.mark.parametrize("marker", sorted(TABLES))
def test_spec_table_is_generated_from_the_code(marker: str) -> None:
    name, machine = TABLES[marker]
    text = (SPEC / name).read_text(encoding="utf-8")
    start, stop = _block(text, marker)
    assert text[start:stop] == machine.table()


@pytest.mark.parametrize("marker", sorted(TABLES))
def test_every_machine_fails_the_same_way_on_a_missing_transition(marker: str) -> None:
    machine = TABLES[marker][1]
    (state, inp), _ = next(iter(machine.transitions.items()))
    missing = [(s, i) for s in type(state) for i in type(inp) if (s, i) not in machine.transitions]
    assert missing, "every machine has pairs that are not legal"
    s, i = missing[0]
    assert not machine.allows(s, i)
    with pytest.raises(LocalProtocolError, match=f"^{machine.name}: no transition from "):
        machine.next(s, i)
    for (s, i), n in machine.transitions.items():
        assert machine.allows(s, i) and machine.next(s, i) is n


def regenerate() -> None:
    """Rewrite every table block in spec/ from the code."""
    for marker, (name, machine) in TABLES.items():
        path = SPEC / name
        text = path.read_text(encoding="utf-8")
        start, stop = _block(text, marker)
        path.write_text(text[:start] + machine.table() + text[stop:], encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == []:
    regenerate()
