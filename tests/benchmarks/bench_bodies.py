"""Body benchmark: POST echo through a module over stdio, 1 KiB / 64 KiB / 1 MiB bodies.

Run: ``.venv/bin/python tests/benchmarks/bench_bodies.py [--rounds 3] [--seconds 0.6]``

A bare driver in this process writes ``http_request`` lines carrying the body and reads the
echoed ``http_response`` lines, one request at a time (each answer is read whole before the
next request is written). Subjects, all child processes started once:

* ``naive``: the floor -- a stdlib module speaking the reference form the obvious way
  (``json.loads`` -> ``bytes(list)`` -> ``list(bytes)`` -> ``json.dumps``), no extensions;
* ``asyncio-ref`` / ``sync-ref``: ``pywatt_asyncio.Module`` / ``pywatt_sync.Module`` with an
  echo route, offered no ``base64_bodies`` (bodies are byte arrays, the fast array codec);
* ``asyncio-b64`` / ``sync-b64``: the same modules offered ``base64_bodies`` (they select it).

Every subject runs a batch of echoes for ``--seconds`` per round, subjects alternating within
each round; a subject's ratio is the median over rounds of (its rate / the floor's rate in the
same round). Targets (issue 13): with the extension >= 10x the floor at 64 KiB and >= 20x at
1 MiB; without it >= 1.5x at 64 KiB.

``--codec`` also prints the in-process codec options that were measured to choose the array
codec (``pywatt_proto._bodies``): encoders (``json.dumps(list)``, a 65,536-entry pair table,
the ``translate`` encoder kept) and decoders (the C JSON scanner kept, ``bytes.split`` with a
lookup table).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import selectors
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"1 KiB": 1024, "64 KiB": 64 * 1024, "1 MiB": 1024 * 1024}

NAIVE = textwrap.dedent(
    """
    import json, sys
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    inp.readline()
    out.write(b'{"op":"announce","listen":"127.0.0.1:0","endpoints":'
              b'[{"path":"/echo","methods":["POST"]}]}\\n')
    out.flush()
    for line in inp:
        req = json.loads(line)
        if req.get("op") != "http_request":
            continue
        body = bytes(req["body"] or [])
        resp = {"op": "http_response", "request_id": req["request_id"], "status_code": 200,
                "headers": {"content-type": "application/octet-stream"}, "body": list(body)}
        out.write(json.dumps(resp, separators=(",", ":")).encode() + b"\\n")
        out.flush()
    """
)

MODULE = textwrap.dedent(
    """
    from pywatt_{driver} import Module
    from pywatt_proto import Response
    app = Module()
    HEADERS = (("content-type", "application/octet-stream"),)

    @app.post("/echo")
    {kw}def echo(request):
        return Response(status=200, headers=HEADERS, body=request.body)

    app.run()
    """
)


def init_line(extensions: list[str]) -> bytes:
    init = {
        "orchestrator_api": "http://127.0.0.1:9900",
        "module_id": "bench",
        "env": {},
        "listen": "127.0.0.1:0",
        "pywatt_extensions": extensions,
    }
    return json.dumps(init).encode() + b"\n"


#: name -> (program, extensions offered, body form it expects: "b64" or "ref")
SUBJECTS: dict[str, tuple[str, list[str], str]] = {
    "naive": (NAIVE, [], "ref"),
    "asyncio-ref": (MODULE.format(driver="asyncio", kw="async "), ["http_response_op"], "ref"),
    "sync-ref": (MODULE.format(driver="sync", kw=""), ["http_response_op"], "ref"),
    "asyncio-b64": (
        MODULE.format(driver="asyncio", kw="async "),
        ["base64_bodies", "http_response_op"],
        "b64",
    ),
    "sync-b64": (
        MODULE.format(driver="sync", kw=""),
        ["base64_bodies", "http_response_op"],
        "b64",
    ),
}


def request_line(rid: int, body: bytes, form: str) -> bytes:
    if form == "b64":
        text = b'"' + base64.b64encode(body) + b'"'
    else:
        text = json.dumps(list(body), separators=(",", ":")).encode()
    head = (
        b'{"op":"http_request","request_id":"r%d","method":"POST","uri":"/echo",'
        b'"headers":{"content-type":"application/octet-stream"},"body":' % rid
    )
    return head + text + b"}\n"


class Child:
    """One subject process and the pipes of its stdin/stdout."""

    def __init__(self, name: str) -> None:
        program, extensions, self.form = SUBJECTS[name]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYWATT_LOG_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        os.set_blocking(self.wfd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.rfd, selectors.EVENT_READ)
        self.sel.register(self.wfd, selectors.EVENT_WRITE)
        self.buf = bytearray()
        self.exchange(init_line(extensions))  # the announce
        self.lines: dict[int, bytes] = {}

    def exchange(self, data: bytes) -> bytes:
        """Write ``data`` while reading; return the first complete line read."""
        view = memoryview(data)
        searched = 0  # bytes of buf already searched for the newline
        self.sel.modify(self.wfd, selectors.EVENT_WRITE)
        writing = True
        while True:
            if not view and writing:
                self.sel.unregister(self.wfd)
                writing = False
            nl = self.buf.find(b"\n", searched)
            if nl >= 0 and not view:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                self.sel.register(self.wfd, selectors.EVENT_WRITE)
                return line
            searched = len(self.buf)
            for key, _ in self.sel.select():
                if key.fd == self.wfd and view:
                    view = view[os.write(self.wfd, view[: 1 << 20]) :]
                elif key.fd == self.rfd:
                    chunk = os.read(self.rfd, 1 << 20)
                    if not chunk:
                        raise RuntimeError("subject exited")
                    self.buf += chunk

    def check(self, body: bytes) -> None:
        """One echo, decoded and compared with ``body``."""
        answer = json.loads(self.exchange(request_line(0, body, self.form)))
        got = answer["body"]
        got = base64.b64decode(got) if isinstance(got, str) else bytes(got)
        assert answer["status_code"] == 200 and got == body, f"bad echo from {self.proc.args}"

    def batch(self, line: bytes, seconds: float) -> float:
        """Echo ``line`` repeatedly for about ``seconds``; return echoes per second."""
        n = 0
        start = time.perf_counter()
        while True:
            self.exchange(line)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and n >= 3:
                return n / elapsed

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench(rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    children = {name: Child(name) for name in SUBJECTS}
    ratios: dict[str, dict[str, float]] = {}
    try:
        for label, size in SIZES.items():
            body = os.urandom(size)
            lines = {}
            for name, child in children.items():
                child.check(body)
                lines[name] = request_line(1, body, child.form)
            per_round: dict[str, list[float]] = {n: [] for n in SUBJECTS if n != "naive"}
            floor_rates = []
            for r in range(rounds):
                order = list(SUBJECTS) if r % 2 == 0 else list(reversed(SUBJECTS))
                rates = {n: children[n].batch(lines[n], seconds) for n in order}
                floor_rates.append(rates["naive"])
                for n in per_round:
                    per_round[n].append(rates[n] / rates["naive"])
            floor = statistics.median(floor_rates)
            print(f"\n{label} body: naive floor {floor:,.0f} echoes/s ({1e3 / floor:.2f} ms each)")
            ratios[label] = {}
            for n, values in per_round.items():
                ratio = statistics.median(values)
                ratios[label][n] = ratio
                spread = ", ".join(f"{v:.1f}" for v in values)
                print(f"  {n:12s} {ratio:6.1f}x the floor  (rounds: {spread})")
    finally:
        for child in children.values():
            child.close()
    return ratios


def _codec_rows(data: bytes) -> dict[str, Callable[[], object]]:
    """The array codec options measured for one body (``pywatt_proto._bodies`` keeps two)."""
    from pywatt_proto._bodies import decode_byte_array, encode_byte_array

    scan = json.JSONDecoder(strict=True).scan_once
    text = encode_byte_array(data)
    inner = text[1:-1]
    table = {str(i).encode(): i for i in range(256)}
    pairs = [f"{i & 255},{i >> 8}" for i in range(65536)]  # little-endian hosts
    even = len(data) & ~1
    return {
        "encode json.dumps(list)": lambda: json.dumps(list(data), separators=(",", ":")),
        "encode pair table": lambda: ",".join(
            map(pairs.__getitem__, memoryview(data)[:even].cast("H"))
        ),
        "encode translate (kept)": lambda: encode_byte_array(data),
        "decode json.loads": lambda: bytes(json.loads(text)),
        "decode split + table": lambda: bytes(map(table.__getitem__, inner.split(b","))),
        "decode C scanner (kept)": lambda: decode_byte_array(text),
        "decode json scan_once": lambda: bytes(scan(text.decode(), 0)[0]),
    }


def codec_options() -> None:
    sys.path.insert(0, str(ROOT))
    print("\narray codec options, in process (median of 5, microseconds per body):")
    for label, size in SIZES.items():
        print(f"  {label}:")
        for name, fn in _codec_rows(os.urandom(size)).items():
            times = []
            reps = max(1, 200_000 // size)
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                times.append((time.perf_counter() - t) / reps * 1e6)
            print(f"    {name:26s} {statistics.median(times):10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.6, help="per subject per round")
    parser.add_argument("--codec", action="store_true", help="also print the codec options")
    args = parser.parse_args()
    ratios = bench(args.rounds, args.seconds)
    targets = [
        ("64 KiB", "b64", 10.0),
        ("1 MiB", "b64", 20.0),
        ("64 KiB", "ref", 1.5),
    ]
    print("\ntargets (issue 13):")
    for label, form, want in targets:
        for driver in ("asyncio", "sync"):
            got = ratios[label][f"{driver}-{form}"]
            verdict = "ok" if got >= want else "MISSED"
            print(f"  {driver}-{form} at {label}: {got:.1f}x (>= {want}x) {verdict}")
    if args.codec:
        codec_options()
    return 0


if __name__ == "__main__":
    sys.exit(main())
