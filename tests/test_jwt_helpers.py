"""Helpers for the JWT tests (no tests here): hand-built tokens from raw bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

KEY = b"0123456789abcdef0123456789abcdef"  # exactly 32 bytes
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
NOW = 1_700_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(
    header: bytes | dict[str, Any], payload: bytes | dict[str, Any], key: bytes = KEY
) -> str:
    """Sign arbitrary header/payload bytes (or dicts) with HS256, no checks at all."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":")).encode()
    if isinstance(payload, dict):
        payload = json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64(header)}.{b64(payload)}".encode("ascii")
    sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64(sig)}"


HS256 = {"alg": "HS256", "typ": "JWT"}
