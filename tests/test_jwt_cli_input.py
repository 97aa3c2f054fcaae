"""``python -m pywatt_proto.jwt``: exactly one token in, ``encode --expires-in``.

In-process through ``main(argv, stdin=..., stdout=...)``, plus one real
subprocess that reads raw stdin bytes (``\\r\\n`` included).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_jwt_helpers import KEY, NOW, raw_token

from pywatt_proto.jwt import JwtValidator, encode
from pywatt_proto.jwt._cli import main

ROOT = Path(__file__).resolve().parents[1]
KEY_ARGS = ["--key-env", "PYWATT_JWT_TEST_KEY"]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYWATT_JWT_TEST_KEY", KEY.decode())


def run(argv: list[str], stdin: str = "") -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, out.getvalue()
    return code, json.loads(lines[0])


def verify_stdin(stdin: str) -> tuple[int, dict[str, Any]]:
    return run(["verify", *KEY_ARGS, "--now", str(NOW)], stdin)


TOKEN = encode({"sub": "u"}, KEY)


def test_verify_accepts_one_line_with_one_line_end() -> None:
    for stdin in (TOKEN, TOKEN + "\n", TOKEN + "\r\n"):
        assert verify_stdin(stdin) == (0, {"valid": True, "claims": {"sub": "u"}}), repr(stdin)


def test_verify_anything_else_is_part_of_the_token() -> None:
    # the old CLI stripped all surrounding whitespace, so each of these passed
    for stdin in (
        " " + TOKEN,
        "\t" + TOKEN + "\n",
        TOKEN + " \n",
        TOKEN + "\n\n",
        TOKEN + "\r\n\r\n",
        TOKEN + "\n" + TOKEN + "\n",
        TOKEN[:10] + " " + TOKEN[10:],
        TOKEN + "\r",
    ):
        code, out = verify_stdin(stdin)
        assert (code, out["valid"], out["reason"]) == (1, False, "malformed"), repr(stdin)


def test_verify_empty_input_says_no_token() -> None:
    for stdin in ("", "\n", "\r\n"):
        code, out = verify_stdin(stdin)
        assert (code, out["valid"], out["reason"]) == (1, False, "malformed")
        assert out["error"] == "no token"
    code, out = run(["verify", "", *KEY_ARGS])
    assert (code, out["error"]) == (1, "no token")


def test_verify_takes_the_token_as_an_argument() -> None:
    code, out = run(["verify", TOKEN, *KEY_ARGS, "--now", str(NOW)], "ignored")
    assert (code, out) == (0, {"valid": True, "claims": {"sub": "u"}})
    code, out = run(["verify", TOKEN + "\n", *KEY_ARGS, "--now", str(NOW)])
    assert (code, out["reason"]) == (1, "malformed")  # an argument is taken as it is


def test_huge_stdin_is_read_bounded_and_refused_as_size() -> None:
    code, out = verify_stdin("a" * 10_000_000)
    assert (code, out["reason"]) == (1, "size")


def test_decode_reads_the_same_way() -> None:
    code, out = run(["decode"], TOKEN + "\r\n")
    assert (code, out["claims"]) == (0, {"sub": "u"})
    code, out = run(["decode"], " " + TOKEN)
    assert (code, out["reason"]) == (1, "malformed")
    code, out = run(["decode"], "")
    assert (code, out["error"]) == (1, "no token")


def test_encode_expires_in() -> None:
    out = io.StringIO()
    argv = ["encode", '{"sub":"u"}', *KEY_ARGS, "--expires-in", "60", "--now", str(NOW + 0.7)]
    assert main(argv, stdout=out) == 0
    claims = JwtValidator(KEY).validate(out.getvalue().strip(), NOW)
    assert claims == {"sub": "u", "exp": NOW + 60}
    assert type(claims["exp"]) is int  # a Rust issuer/validator reads exp as an integer


def test_encode_expires_in_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["encode", *KEY_ARGS, "--now", str(NOW)]
    assert main([*base, '{"exp": 5}', "--expires-in", "60"]) == 2
    assert "already have exp" in capsys.readouterr().err
    assert main([*base, "{}", "--expires-in", "0"]) == 2
    assert "positive" in capsys.readouterr().err


def test_max_depth_is_configurable() -> None:
    deep = raw_token({"alg": "HS256"}, b'{"a":' + b"[" * 63 + b"]" * 63 + b"}")  # 64 levels
    args = ["verify", *KEY_ARGS, "--now", str(NOW)]
    assert run(args, deep)[0] == 0  # the default (128) takes it
    code, out = run([*args, "--max-depth", "16"], deep)
    assert (code, out["reason"]) == (1, "size")
    code, out = run(["decode", "--max-depth", "16"], deep)
    assert (code, out["reason"]) == (1, "size")


def test_real_stdin_bytes() -> None:
    env = {**os.environ, "PYWATT_JWT_TEST_KEY": KEY.decode()}
    argv = [sys.executable, "-m", "pywatt_proto.jwt", "verify", *KEY_ARGS, "--now", str(NOW)]
    for data, valid in ((TOKEN + "\r\n", True), (TOKEN + "\n\n", False), (b"\xff", False)):
        raw = data.encode() if isinstance(data, str) else data
        proc = subprocess.run(argv, input=raw, capture_output=True, env=env, cwd=ROOT, timeout=60)
        out = json.loads(proc.stdout)
        assert out["valid"] is valid, (data, proc.stdout, proc.stderr)
        assert proc.returncode == (0 if valid else 1)


def test_non_finite_times_and_bad_policies_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before: --now nan crashed (or accepted an expired token), --now inf crashed encode,
    # --leeway -1 / --max-size 0 crashed verify, all with a traceback and exit status 1.
    expired = encode({"exp": 100}, KEY)
    for bad in (["--now", "nan"], ["--now=-inf"], ["--leeway", "nan"]):
        with pytest.raises(SystemExit) as info:
            main(["verify", expired, *KEY_ARGS, *bad])
        assert info.value.code == 2
        assert "not a finite number of seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["encode", "{}", *KEY_ARGS, "--now", "inf", "--expires-in", "5"])
    assert info.value.code == 2
    for bad, message in (["--leeway=-1"], "leeway"), (["--max-size", "0"], "max_size"):
        big_stdin = io.StringIO("x" * 100_000)
        assert main(["verify", *KEY_ARGS, "--now", str(NOW), *bad], stdin=big_stdin) == 2
        assert message in capsys.readouterr().err
        assert big_stdin.tell() == 0  # the policy is refused before stdin is read
