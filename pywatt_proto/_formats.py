"""Payload format codes shared by ``EncodedMessage`` and the framed channel.

The numeric value of each member is the format byte written after the 4-byte
length in a frame header; the name is how serde spells it in JSON
(``"Json"``, ``"Binary"``, ``"Base64"``, ``"Auto"``).
"""

from __future__ import annotations

import enum


class EncodingFormat(enum.IntEnum):
    """Payload encoding. ``AUTO`` exists in the reference enum but is never valid on the wire."""

    AUTO = 0
    JSON = 1
    BINARY = 2
    BASE64 = 3

    @property
    def wire_name(self) -> str:
        """Return the serde spelling used in JSON (``"Json"``, ``"Binary"``, ...)."""
        return self.name.capitalize()

    @classmethod
    def from_wire_name(cls, name: str) -> EncodingFormat | None:
        """Return the member spelled ``name`` on the wire, or None if there is none."""
        member = cls.__members__.get(name.upper())
        return member if member is not None and member.wire_name == name else None
