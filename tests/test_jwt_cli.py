"""``python -m pywatt_proto.jwt`` run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_jwt_helpers import KEY, NOW

from pywatt_proto.jwt import JwtValidator, encode

ROOT = Path(__file__).resolve().parents[1]


def run(
    args: list[str], stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYWATT_JWT_TEST_KEY": KEY.decode(), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pywatt_proto.jwt", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )


def verify(
    token: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    proc = run(
        ["verify", "--key-env", "PYWATT_JWT_TEST_KEY", "--now", str(NOW), *extra], token, env
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def test_verify_valid_token() -> None:
    token = encode({"sub": "u", "aud": "svc", "iss": "me", "exp": NOW + 10}, KEY)
    code, out = verify(token + "\n", "--audience", "svc", "--issuer", "me", "--require", "sub")
    assert code == 0
    assert out == {
        "valid": True,
        "claims": {"sub": "u", "aud": "svc", "iss": "me", "exp": NOW + 10},
    }


def test_verify_invalid_tokens_report_reason() -> None:
    cases = {
        "expired": (encode({"exp": NOW}, KEY), ["--leeway", "0"]),
        "audience": (encode({"aud": "x"}, KEY), ["--audience", "svc"]),
        "signature": (encode({"a": 1}, b"z" * 32), []),
        "malformed": ("not-a-token", []),
    }
    for expected, (token, extra) in cases.items():
        code, out = verify(token, *extra)
        assert code == 1
        assert out["valid"] is False
        assert out["reason"] == expected, out
        assert isinstance(out["error"], str)


def test_verify_refused_keys_are_reported_the_same_way(tmp_path: Path) -> None:
    token = encode({"a": 1}, KEY)
    code, out = verify(token, env={"PYWATT_JWT_TEST_KEY": "short"})
    assert (code, out["valid"], out["reason"]) == (1, False, "size")
    pem = tmp_path / "pub.pem"
    pem.write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n"
        b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        b"-----END PUBLIC KEY-----\n"
    )
    proc = run(["verify", "--key-file", str(pem)], token)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["reason"] == "algorithm"


def test_verify_key_file_is_raw_bytes(tmp_path: Path) -> None:
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(KEY + b"\n")  # the newline is part of the key
    token = encode({"a": 1}, KEY + b"\n")
    proc = run(["verify", "--key-file", str(key_file), "--now", str(NOW)], token)
    assert proc.returncode == 0, proc.stdout
    code, out = verify(token)  # the env key lacks the newline
    assert (code, out["reason"]) == (1, "signature")


def test_verify_uses_the_clock_without_now() -> None:
    proc = run(["verify", "--key-env", "PYWATT_JWT_TEST_KEY"], encode({"exp": 1000}, KEY))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["reason"] == "expired"


def test_usage_errors_exit_2() -> None:
    proc = run(["verify", "--key-env", "PYWATT_JWT_NO_SUCH_VAR"], "x")
    assert proc.returncode == 2
    assert "not set" in proc.stderr
    assert run(["verify"], "x").returncode == 2


def test_encode_from_argument_and_stdin() -> None:
    proc = run(
        [
            "encode",
            '{"sub":"u","exp":99999999999}',
            "--key-env",
            "PYWATT_JWT_TEST_KEY",
            "--kid",
            "k1",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert JwtValidator(KEY).validate(token, NOW) == {"sub": "u", "exp": 99999999999}
    proc2 = run(["encode", "--key-env", "PYWATT_JWT_TEST_KEY"], '{"a": [1, 2]}')
    assert JwtValidator(KEY).validate(proc2.stdout.strip(), NOW) == {"a": [1, 2]}
    bad = run(["encode", "[1]", "--key-env", "PYWATT_JWT_TEST_KEY"])
    assert bad.returncode == 2


def test_decode_is_labelled_unverified() -> None:
    token = encode({"sub": "u"}, b"q" * 32)  # a key we do not have
    proc = run(["decode"], token)
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["verified"] is False
    assert "UNVERIFIED" in out["warning"]
    assert out["header"] == {"alg": "HS256", "typ": "JWT"}
    assert out["claims"] == {"sub": "u"}
    bad = run(["decode", "a.b"])
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["reason"] == "malformed"
