"""Strict base64url without padding (RFC 7515 §2, RFC 4648 §5).

Only the 64 URL-safe characters are accepted, no ``=`` padding, no whitespace,
and the encoding must be canonical: a final character that carries unused bits
must have them zero (RFC 4648 §3.5), so each byte string has exactly one
accepted spelling and a token cannot be altered without changing its bytes'
meaning or failing.
"""

from __future__ import annotations

import binascii

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
# A segment whose length is 2 (mod 4) ends in a character holding 2 data bits and
# 4 unused bits; 3 (mod 4) ends in one holding 4 data bits and 2 unused bits.
# Canonical encodings have those unused bits zero.
_LAST_OF_2 = frozenset(ALPHABET[i] for i in range(0, 64, 16))
_LAST_OF_3 = frozenset(ALPHABET[i] for i in range(0, 64, 4))


def b64url_encode(data: bytes) -> bytes:
    """Return the unpadded base64url encoding of ``data`` (ASCII bytes)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=")


def decode_segment(seg: bytes) -> bytes:
    """Decode a segment already known to hold only :data:`ALPHABET` characters.

    Returns the decoded bytes; raises :class:`ValueError` when the length is
    impossible (1 mod 4) or the encoding is not canonical.
    """
    rem = len(seg) & 3
    if rem == 2:
        if seg[-1] not in _LAST_OF_2:
            raise ValueError("non-canonical base64url (unused bits set)")
        seg += b"=="
    elif rem == 3:
        if seg[-1] not in _LAST_OF_3:
            raise ValueError("non-canonical base64url (unused bits set)")
        seg += b"="
    elif rem == 1:
        raise ValueError("impossible base64url length")
    return binascii.a2b_base64(seg.translate(_TO_STD))


def b64url_decode(data: bytes | str) -> bytes:
    """Decode strict, unpadded, canonical base64url.

    Returns the decoded bytes; raises :class:`ValueError` for any character
    outside the URL-safe alphabet (padding and whitespace included), an
    impossible length, or non-canonical trailing bits.
    """
    if isinstance(data, str):
        if not data.isascii():
            raise ValueError("non-ASCII character in base64url")
        data = data.encode("ascii")
    if data.translate(None, ALPHABET):
        raise ValueError("character outside the base64url alphabet")
    return decode_segment(bytes(data))
