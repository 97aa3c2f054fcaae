"""The HTTP clients: fluent requests, JSON helpers, retries and a circuit breaker.

python examples/http_server.py --port 8080 &
python examples/http_client.py --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pywatt_asyncio import AsyncClient
from pywatt_proto import Backoff, CircuitBreaker, HTTPClientError, RetryPolicy
from pywatt_sync import Client


def blocking(base_url: str) -> None:
    retry = RetryPolicy(backoff=Backoff(base=0.05, cap=1.0, max_attempts=3))
    with Client(base_url, timeout=10.0, retry=retry) as client:
        resp = client.get("/hello").query(lang="en", tags=["a", "b"]).header("x-demo", "1").send()
        print("blocking:", resp.status, resp.json())
        print("blocking get_json:", client.get_json("/hello"))
        missing = client.get("/missing").send()
        print("blocking 404 body:", missing.json())


async def concurrent(base_url: str) -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, name="demo")
    async with AsyncClient(base_url, breaker=breaker, max_per_host=4) as client:
        answers = await asyncio.gather(*(client.get("/hello") for _ in range(8)))
        print("asyncio:", [a.status for a in answers], "breaker:", breaker.state.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    try:
        blocking(args.url)
        asyncio.run(concurrent(args.url))
    except HTTPClientError as exc:
        print(f"request failed: {exc!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
