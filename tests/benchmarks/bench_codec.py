"""Codec benchmark: decode + encode of a typical ``http_request`` line.

Run as a script (not collected by pytest)::

    .venv/bin/python tests/benchmarks/bench_codec.py [--seconds N]

For each case it times, in the same process,

* pywatt: ``decode_orchestrator_to_module(line)`` then ``encode(msg)``;
* the floor: bare ``json.loads(line)`` then ``json.dumps(obj, separators=(",", ":"))``
  of the same object (no validation, no typing, no serde rules),

and prints microseconds per round trip and the ratio pywatt / floor. The target is
a ratio of at most 2.0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from pywatt_proto import HttpRequest, decode_orchestrator_to_module, encode

HEADERS = {
    "host": "127.0.0.1:4102",
    "user-agent": "curl/8.5.0",
    "accept": "application/json",
    "content-type": "application/json",
    "x-request-id": "7f9c2ba4-e88f-4e5b-9f1a-2c8b6f0d1e3a",
}


def _line(body: bytes | None) -> bytes:
    msg = HttpRequest(
        request_id="7f9c2ba4-e88f-4e5b-9f1a-2c8b6f0d1e3a",
        method="POST" if body else "GET",
        uri="/api/items?limit=10&offset=20",
        headers=HEADERS,
        body=body,
    )
    return encode(msg)


def _interleaved(ours: object, floor: object, seconds: float) -> tuple[float, float]:
    """Time both callables in alternating rounds; return the best per-call time of each.

    Alternating keeps both sides exposed to the same machine load, so the ratio stays
    meaningful on a busy host.
    """
    t_ours, t_floor = timeit.Timer(ours), timeit.Timer(floor)  # type: ignore[arg-type]
    n, per_batch = t_floor.autorange()
    rounds = max(5, min(41, int(seconds / max(per_batch, 1e-9))))
    best_ours = best_floor = float("inf")
    for _ in range(rounds):
        best_ours = min(best_ours, t_ours.timeit(n) / n)
        best_floor = min(best_floor, t_floor.timeit(n) / n)
    return best_ours, best_floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="rough time per case")
    args = parser.parse_args()
    rng = random.Random(1)
    cases = {
        "no body": None,
        "1 KiB body (text)": bytes(
            rng.choice(b'abcdefghijklmnopqrstuvwxyz {}:,"0123456789') for _ in range(1024)
        ),
        "1 KiB body (random bytes)": bytes(rng.randrange(256) for _ in range(1024)),
    }
    worst = 0.0
    for name, body in cases.items():
        line = _line(body)
        obj = json.loads(line)
        # both sides must agree on the bytes for the comparison to be fair
        assert encode(decode_orchestrator_to_module(line)) == line
        assert json.dumps(obj, separators=(",", ":")).encode() == line

        def ours(line: bytes = line) -> bytes:
            return encode(decode_orchestrator_to_module(line))

        def floor(line: bytes = line) -> str:
            return json.dumps(json.loads(line), separators=(",", ":"))

        t_ours, t_floor = _interleaved(ours, floor, args.seconds)
        ratio = t_ours / t_floor
        worst = max(worst, ratio)
        print(
            f"{name:28s} {len(line):6d} B  pywatt {t_ours * 1e6:8.2f} us  "
            f"json floor {t_floor * 1e6:8.2f} us  ratio {ratio:5.2f}"
        )
    print(f"worst ratio {worst:.2f} (target <= 2.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
