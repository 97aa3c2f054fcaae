"""Serve ``GET /hello`` over HTTP with the asyncio driver.

python examples/http_server.py --host 127.0.0.1 --port 8080 [--access-log]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from pywatt_asyncio import serve
from pywatt_proto import Request, Router

router = Router()


@router.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    return {"message": "hello, world"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-log", action="store_true", help="log requests to stderr")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(router, args.host, args.port, access_log=args.access_log))


if __name__ == "__main__":
    main()
