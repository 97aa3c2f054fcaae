"""The ``pywatt`` command: a development orchestrator.

``pywatt run TARGET`` starts TARGET as a module child process (through
``python -m pywatt_asyncio._apprunner TARGET``), performs the handshake over its
stdin/stdout, serves HTTP/1.1 on ``--http`` (default 127.0.0.1:8080) and forwards every
request over IPC. TARGET is a module file (``examples/hello.py``), a
``package.module:app`` reference, or ``file.py:attr``; ASGI and WSGI apps are wrapped by
the adapters. SIGHUP re-reads ``--env-file``/``--secret`` and pushes the changed values to
the module as one rotation (``secret`` lines, then ``rotated``).

Everything the command says goes to stderr; the child's stderr passes through.
Exit status: 0 after Ctrl-C/SIGTERM and a clean module stop, 1 if the module crashed or
failed to start, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pywatt_proto import LocalProtocolError

from ._frontdoor import ModuleUpstream, serve_http
from ._orchestrator import (
    ModuleProcess,
    PortPolicy,
    _note,
    child_env,
    install_stop_signals,
    python_argv,
)

__all__ = ["main", "parse_env_file"]

_log = logging.getLogger("pywatt.cli")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_env_file(path: str) -> dict[str, str]:
    """Return NAME=VALUE pairs of a dotenv-style file.

    Blank lines and ``#`` comments are skipped, an ``export`` prefix is allowed, and a value
    in matching single or double quotes is unquoted. Raises ``OSError`` / ``ValueError``.
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export ") :].lstrip()
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ValueError(f"{path}:{lineno}: expected NAME=VALUE")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[name] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pywatt", description="PyWatt development orchestrator")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a module behind a local HTTP server")
    run.add_argument("target", help="module file (x.py), package.module:app, or x.py:app")
    run.add_argument(
        "--http",
        type=_host_port,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="address of the HTTP server (default 127.0.0.1:8080; port 0 = any)",
    )
    run.add_argument(
        "--secret",
        type=_name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="serve a secret to the module (repeatable)",
    )
    run.add_argument("--env-file", action="append", default=[], help="secrets from a .env file")
    run.add_argument("--module-id", default=None, help="module_id sent in init")
    run.add_argument("--request-timeout", type=float, default=30.0, help="seconds before 504")
    run.add_argument("--announce-timeout", type=float, default=10.0)
    run.add_argument("--heartbeat-interval", type=float, default=5.0, help="0 disables")
    run.add_argument("--shutdown-grace", type=float, default=5.0)
    run.add_argument("--port-delay", type=float, default=0.0, help="delay port_response (tests)")
    run.add_argument("--port-refuse", action="store_true", help="refuse port_request (tests)")
    run.add_argument("--log-level", default=os.environ.get("PYWATT_LOG_LEVEL", "INFO"))
    return p


def _load_secrets(args: argparse.Namespace) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for path in args.env_file:
        secrets.update(parse_env_file(path))
    secrets.update(dict(args.secret))
    return secrets


def _rotate_on_sighup(module: ModuleProcess, args: argparse.Namespace) -> None:
    """SIGHUP: re-read the secrets; push changed ones to the module as one rotation."""
    current = _load_secrets(args)
    counter = 0

    def on_hup() -> None:
        nonlocal current, counter
        try:
            fresh = _load_secrets(args)
        except (OSError, ValueError) as exc:
            print(f"pywatt: cannot reload secrets: {exc}", file=sys.stderr, flush=True)
            return
        changed = {k: v for k, v in fresh.items() if current.get(k) != v}
        current = fresh
        if not changed:
            print("pywatt: SIGHUP: no secret changed", file=sys.stderr, flush=True)
            return
        counter += 1
        rotation_id = f"rotation-{counter}"
        _note(f"pywatt: rotating {', '.join(sorted(changed))} ({rotation_id})")
        try:
            module.rotate(changed, rotation_id)
        except LocalProtocolError as exc:
            print(f"pywatt: rotation not sent: {exc}", file=sys.stderr, flush=True)

    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)


async def _run(args: argparse.Namespace) -> int:
    secrets = _load_secrets(args)
    host, port = args.http
    target: str = args.target
    module_id = args.module_id or os.path.splitext(os.path.basename(target.split(":")[0]))[0]
    module = ModuleProcess(
        python_argv(target),
        module_id=module_id or "module",
        orchestrator_api=f"http://{host}:{port}",
        secrets=secrets,
        env=child_env(),
        request_timeout=args.request_timeout,
        announce_timeout=args.announce_timeout,
        heartbeat_interval=args.heartbeat_interval or None,
        shutdown_grace=args.shutdown_grace,
        port_policy=PortPolicy(delay=args.port_delay, refuse=args.port_refuse),
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await module.start()
    except (RuntimeError, OSError) as exc:
        print(f"pywatt: module failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        server = await serve_http(ModuleUpstream(module, module_id), host, port)
    except OSError as exc:
        print(f"pywatt: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        await module.shutdown()
        return 1
    _rotate_on_sighup(module, args)
    bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
    _note(f"pywatt: serving {target} on http://{bound[0]}:{bound[1]} (Ctrl-C to stop)")
    exited = asyncio.ensure_future(module.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if stopped.done():
        print("pywatt: stopping module", file=sys.stderr, flush=True)
        code = await module.shutdown()
        print(f"pywatt: module stopped (status {code})", file=sys.stderr, flush=True)
        result = 0
    else:
        stopped.cancel()
        result = 1
    # Let responses already produced (including the 502s) reach their clients.
    await asyncio.sleep(0.05)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pywatt`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=str(args.log_level).upper(),
        format="pywatt: %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:
        print(f"pywatt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
