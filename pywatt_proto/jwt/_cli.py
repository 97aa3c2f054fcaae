"""Command line: ``python -m pywatt_proto.jwt encode|decode|verify`` (spec/jwt.md §6).

Exit status 0 ok/valid, 1 invalid (one JSON line says why), 2 usage error (stderr). The
clock is read here, and only here, when ``--now`` is not given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._encode import JwtSigner
from ._errors import JwtError
from ._validator import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_TOKEN_SIZE,
    JwtValidator,
    decode_unverified,
)


class _UsageError(Exception):
    pass


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pywatt_proto.jwt", description="HS256 JSON Web Tokens (strict)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def key_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--key-env", metavar="NAME", help="environment variable with the key")
        group.add_argument("--key-file", metavar="PATH", help="file whose raw bytes are the key")

    enc = sub.add_parser("encode", help="sign a claims JSON object (argument or stdin)")
    enc.add_argument("claims", nargs="?", help="claims JSON object (default: read stdin)")
    key_args(enc)
    enc.add_argument("--kid", help="key id to put in the header")
    enc.add_argument("--header", metavar="JSON", help="extra header parameters (JSON object)")
    enc.add_argument(
        "--expires-in", type=int, metavar="SECONDS", help="add exp = now + SECONDS (> 0)"
    )
    enc.add_argument("--now", type=_seconds, help="current time, seconds (default: the clock)")

    dec = sub.add_parser("decode", help="print header and claims WITHOUT verifying")
    dec.add_argument("token", nargs="?", help="token (default: the first line of stdin)")
    dec.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH, help="JSON nesting")

    ver = sub.add_parser("verify", help="verify a token (argument or the first line of stdin)")
    ver.add_argument("token", nargs="?", help="token (default: the first line of stdin)")
    key_args(ver)
    ver.add_argument("--now", type=_seconds, help="current time, seconds (default: the clock)")
    ver.add_argument("--leeway", type=_seconds, default=DEFAULT_LEEWAY, help="seconds of leeway")
    ver.add_argument("--audience", action="append", help="accepted audience (repeatable)")
    ver.add_argument("--issuer", action="append", help="accepted issuer (repeatable)")
    ver.add_argument("--require", action="append", default=[], help="required claim (repeatable)")
    ver.add_argument("--max-size", type=int, default=DEFAULT_MAX_TOKEN_SIZE, help="bytes")
    ver.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH, help="JSON nesting")
    return parser


def _read_token(arg: str | None, stdin: TextIO, limit: int) -> str:
    """Return the one token: ``arg``, else stdin minus one trailing line end.

    At most ``limit`` + 3 characters are read (a longer token is refused as
    ``size`` by the validator anyway), so a huge stdin costs bounded memory.
    Raises :class:`JwtError` (``malformed``) when the token is empty or stdin is not text.
    """
    if arg is not None:
        token = arg
    else:
        try:
            token = stdin.read(limit + 3)
        except UnicodeDecodeError:
            raise JwtError("malformed", "stdin is not UTF-8 text") from None
        if token.endswith("\r\n"):
            token = token[:-2]
        elif token.endswith("\n"):
            token = token[:-1]
    if not token:
        raise JwtError("malformed", "no token")
    return token


def _now(args: argparse.Namespace) -> float:
    if args.now is not None:
        return float(args.now)
    return datetime.datetime.now(datetime.timezone.utc).timestamp()  # noqa: UP017


def _read_key(args: argparse.Namespace) -> bytes:
    if args.key_env is not None:
        value = os.environ.get(args.key_env)
        if value is None:
            raise _UsageError(f"environment variable {args.key_env} is not set")
        return value.encode("utf-8", "surrogateescape")
    try:
        with open(args.key_file, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _UsageError(f"cannot read key file: {exc.strerror}") from None


def _emit(out: TextIO, obj: object) -> None:
    out.write(json.dumps(obj) + "\n")


def _verify(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    key = _read_key(args)
    try:
        validator = JwtValidator(
            key,
            leeway=args.leeway,
            audience=args.audience,
            issuer=args.issuer,
            required=args.require,
            max_size=args.max_size,
            max_depth=args.max_depth,
        )
        token = _read_token(args.token, stdin, args.max_size)
        claims: dict[str, Any] = validator.validate(token, _now(args))
    except JwtError as exc:
        _emit(out, {"valid": False, "reason": exc.reason, "error": exc.message})
        return 1
    except ValueError as exc:  # the policy: --leeway, --max-size, --max-depth
        raise _UsageError(str(exc)) from None
    _emit(out, {"valid": True, "claims": claims})
    return 0


def _encode(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    key = _read_key(args)
    text = args.claims if args.claims is not None else stdin.read()
    try:
        claims = json.loads(text)
        headers = json.loads(args.header) if args.header else None
    except ValueError as exc:
        raise _UsageError(f"not JSON: {exc}") from None
    if not isinstance(claims, dict) or (headers is not None and not isinstance(headers, dict)):
        raise _UsageError("claims and --header must be JSON objects")
    if args.kid is not None:
        headers = {**(headers or {}), "kid": args.kid}
    if args.expires_in is not None:
        if args.expires_in <= 0:
            raise _UsageError("--expires-in must be a positive number of seconds")
        if "exp" in claims:
            raise _UsageError("the claims already have exp; drop it or --expires-in")
        claims["exp"] = int(_now(args)) + args.expires_in
    try:
        token = JwtSigner(key, headers=headers).sign(claims)
    except JwtError as exc:
        raise _UsageError(f"{exc.reason}: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    out.write(token + "\n")
    return 0


def _decode(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    try:
        token = _read_token(args.token, stdin, DEFAULT_MAX_TOKEN_SIZE)
        parts = decode_unverified(token, max_depth=args.max_depth)
    except JwtError as exc:
        _emit(out, {"verified": False, "valid": False, "reason": exc.reason, "error": exc.message})
        return 1
    _emit(
        out,
        {
            "verified": False,
            "warning": "UNVERIFIED: signature and claims were not checked",
            "header": parts.header,
            "claims": parts.claims,
        },
    )
    return 0


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Run the command line; returns the exit status (0 ok/valid, 1 invalid, 2 usage)."""
    args = _parser().parse_args(argv)
    inp = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    handler = {"encode": _encode, "decode": _decode, "verify": _verify}[args.command]
    try:
        return handler(args, inp, out)
    except _UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
