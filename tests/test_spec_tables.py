"""The state tables printed in spec/ are the ones the code generates (spec/framed.md 7.5)."""

from __future__ import annotations

from pathlib import Path

import pywatt_proto

SPEC = Path(__file__).resolve().parent.parent / "spec"


def _block(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    assert begin in text and end in text, f"{path.name} lacks the {name} markers"
    body = text.split(begin, 1)[1].split(end, 1)[0].strip()
    assert body.startswith("```") and body.endswith("```"), "the table is one fenced block"
    return body.strip("`").strip()


def test_framed_md_channel_table_is_generated_from_the_code() -> None:
    printed = _block(SPEC / "framed.md", "channel-transitions")
    assert printed == pywatt_proto.channel_state_diagram().strip()
