"""Serve ``GET /hello`` over HTTP with the blocking (threads) driver.

python examples/http_server_sync.py --host 127.0.0.1 --port 8080 [--access-log]
"""

from __future__ import annotations

import argparse

from pywatt_proto import Request, Router
from pywatt_sync import serve

router = Router()


@router.get("/hello")
def hello(request: Request) -> dict[str, str]:
    return {"message": "hello, world"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-log", action="store_true", help="log requests to stderr")
    parser.add_argument("--workers", type=int, default=256, help="connection threads at most")
    args = parser.parse_args()
    serve(router, args.host, args.port, access_log=args.access_log, max_workers=args.workers)


if __name__ == "__main__":
    main()
