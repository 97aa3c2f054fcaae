"""HTTP server benchmark: wrk against GET /hello on loopback, servers in subprocesses.

    python tests/benchmarks/bench_http.py [--duration 10] [--rounds 1] [--no-client]

Contenders, run alternately in one process tree (each server in its own
subprocess so the load generator never shares its GIL):

* ``pywatt-asyncio``  -- ``pywatt_asyncio.start_server`` with a Router.
* ``h11-floor``       -- a minimal asyncio Protocol driving h11 directly (below):
                         parse, json.dumps the body, answer; no routing, no limits.
* ``uvicorn-h11``     -- uvicorn ``--http h11 --loop asyncio --no-access-log`` with a
                         raw ASGI app returning the same body.
* ``pywatt-sync``     -- ``pywatt_sync.start_server`` (threads).

Then the client benchmark of ``bench_http_client.py`` runs against a fresh
pywatt-asyncio server. Targets: pywatt-asyncio >= 0.9x h11-floor and >= 1.3x
uvicorn-h11; pywatt-sync >= 0.6x pywatt-asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # this checkout first, for in-process imports
BODY = {"message": "hello, world"}


# --------------------------------------------------------------------------- servers


def serve_pywatt_asyncio(port: int) -> None:
    from pywatt_asyncio import serve
    from pywatt_proto import Request, Router

    router = Router()

    @router.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return dict(BODY)

    asyncio.run(serve(router, "127.0.0.1", port))


def serve_pywatt_sync(port: int) -> None:
    from pywatt_proto import Request, Router
    from pywatt_sync import serve

    router = Router()

    @router.get("/hello")
    def hello(request: Request) -> dict[str, str]:
        return dict(BODY)

    serve(router, "127.0.0.1", port)


def serve_h11_floor(port: int) -> None:
    """The h11 floor: the least an asyncio server on h11 must do per request."""
    import h11

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.conn = h11.Connection(h11.SERVER)

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.EndOfMessage):
                    body = json.dumps(BODY, separators=(",", ":")).encode()
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                    out = conn.send(h11.Response(status_code=200, headers=headers))
                    out += conn.send(h11.Data(data=body))
                    out += conn.send(h11.EndOfMessage())
                    self.transport.write(out)
                    if conn.our_state is h11.MUST_CLOSE:
                        self.transport.close()
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    self.transport.close()
                    return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Floor, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


async def uvicorn_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI app for uvicorn: GET /hello -> the same JSON body."""
    if scope["type"] != "http":
        return
    body = json.dumps(BODY, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


SERVERS = {
    "pywatt-asyncio": serve_pywatt_asyncio,
    "h11-floor": serve_h11_floor,
    "pywatt-sync": serve_pywatt_sync,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(name: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}")
    if name == "uvicorn-h11":
        cmd = [sys.executable, "-m", "uvicorn", "bench_http:uvicorn_app", "--http", "h11",
               "--loop", "asyncio", "--no-access-log", "--log-level", "warning",
               "--port", str(port)]  # fmt: skip
    else:
        cmd = [sys.executable, str(Path(__file__)), "--serve", name, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def _loadavg() -> str:
    """Return the 1-minute load average (Linux), to judge how noisy a round was."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def cpu_seconds(pid: int) -> float:
    """Return user+system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    port: int, duration: float, threads: int, connections: int, pid: int | None = None
) -> dict[str, float]:
    cpu0 = cpu_seconds(pid) if pid else float("nan")
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
         f"http://127.0.0.1:{port}/hello"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "cpu_us": cpu / total * 1e6 if total else float("nan"),
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="subset of contenders")
    parser.add_argument("--no-client", action="store_true", help="skip the client benchmark")
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    names = args.only or ["pywatt-asyncio", "h11-floor", "uvicorn-h11", "pywatt-sync"]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s GET /hello, "
          f"{args.rounds} round(s), CPUs: {os.cpu_count()}, load {_loadavg()}",
          flush=True)  # fmt: skip
    for rnd in range(args.rounds):
        # Reverse the order every other round, so drifting machine load (shared,
        # noisy hosts) does not always favour the contender that runs first.
        for name in names if rnd % 2 == 0 else names[::-1]:
            port = free_port()
            proc = launch(name, port)
            try:
                run_wrk(port, 1.0, args.threads, args.connections)  # warm-up
                res = run_wrk(port, args.duration, args.threads, args.connections, proc.pid)
            finally:
                stop(proc)
            results[name].append(res)
            print(f"  round {rnd + 1} {name:15s} {res['rps']:10.0f} req/s  "
                  f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                  f"server CPU {res['cpu_us']:5.1f} us/req  load {_loadavg()}"
                  + (f"  non-2xx {res['non2xx']:.0f}" if res["non2xx"] else ""),
                  flush=True)  # fmt: skip
    best = {n: max(r["rps"] for r in rs) for n, rs in results.items()}
    med = {n: statistics.median(r["rps"] for r in rs) for n, rs in results.items()}
    cpu = {n: statistics.median(r["cpu_us"] for r in rs) for n, rs in results.items()}
    print("\nsummary (median of rounds):")
    for n in names:
        print(f"  {n:15s} {med[n]:10.0f} req/s (best {best[n]:.0f})  "
              f"server CPU {cpu[n]:5.1f} us/req")  # fmt: skip

    def ratio(a: str, b: str, target: float, op: str = ">=") -> None:
        """Print a/b three ways: ratio of the medians, median of the per-round ratios
        (a and b ran back to back, so they saw similar load; the verdict uses it), and
        the equal-CPU ratio (b's CPU per request / a's)."""
        if a in med and b in med:
            r = med[a] / med[b]
            p = statistics.median(
                x["rps"] / y["rps"] for x, y in zip(results[a], results[b], strict=True)
            )
            c = cpu[b] / cpu[a]
            ok = p >= target
            print(f"  {a} / {b} = {r:.2f}, per-round median {p:.2f}, by CPU {c:.2f}  "
                  f"(target {op} {target}) {'OK' if ok else 'MISSED'}")  # fmt: skip

    ratio("pywatt-asyncio", "h11-floor", 0.9)
    ratio("pywatt-asyncio", "uvicorn-h11", 1.3)
    ratio("pywatt-sync", "pywatt-asyncio", 0.6)
    if not args.no_client:
        from bench_http_client import run_client_bench

        print("\nclient benchmark (keep-alive, against pywatt-asyncio server):", flush=True)
        port = free_port()
        proc = launch("pywatt-asyncio", port)
        try:
            run_client_bench(f"http://127.0.0.1:{port}", duration=min(args.duration, 5.0))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
