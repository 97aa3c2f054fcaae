"""The ``pywatt`` command: a development host for PyWatt modules.

``pywatt run [OPTIONS] [TARGET ...] [-- COMMAND [ARG ...]]`` starts every module as a child
process the way the real orchestrator does (init on stdin, the protocol on stdout, stderr
passed through with a ``[module-id]`` prefix), serves one HTTP/1.1 front door on ``--http``
(default 127.0.0.1:8080) and routes each request to the module that announced its endpoint
(:mod:`pywatt_asyncio._host`). Targets, options, the config file (:mod:`pywatt_asyncio._config`)
and the exit statuses are documented once, in ``pywatt run --help`` (``_EPILOG``).
Everything the command says goes to stderr; stdout stays empty.
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
from dataclasses import replace

from ._config import (
    ConfigError,
    HostSettings,
    ModuleSpec,
    SecretSources,
    load_config,
    spec_for_command,
    spec_for_target,
)
from ._frontdoor import FrontDoorLimits, serve_http
from ._host import Host, HostError, HostOptions, describe
from ._orchestrator import PortPolicy, _note

_log = logging.getLogger("pywatt.cli")

_EPILOG = """\
targets:
  x.py                  a module file; its 'app' (or 'application', or its only Module) is served
  x.py:NAME, pkg.mod:NAME
                        that object: a pywatt_asyncio/pywatt_sync Module (or subclass, such as
                        asgi_module(app, secrets=[...])), or a bare ASGI or WSGI app
  -- CMD [ARG ...]      any executable module (Rust, Go, a script): started with init on stdin
Each module gets PYWATT_MODULE_ID (default id: the file's stem) and is served under one front
door: requests go to the module that announced the path (two modules announcing the same
method and path is an error).

secrets:
  --secret NAME=VALUE puts the value on the command line, where every local user can read it
  (ps, /proc). Prefer --secret NAME (the value of this shell's environment variable NAME) or
  --secrets-file FILE (NAME=VALUE lines; keep it readable by you only).
  SIGHUP (kill -HUP <pid>) re-reads every secret source and pushes the changed values to the
  modules as one rotation: 'secret' lines with a rotation_id, then 'rotated'; each module
  answers with rotation_ack (logged).

config file (--config pywatt.toml):
  [host]                       http, request_timeout, shutdown_grace, restart, reload,
                               extensions (command-line options win)
  [[module]]                   one table per module:
  id = "notes"                 target = "notes.py"  |  command = ["./bin/notes", "--flag"]
  env = { K = "v" }            secrets = { DB = "..." }   secret_env = ["API_KEY"]
  secrets_file = ".env"        watch = ["src"]  (what --reload polls)

exit status: 0 clean stop (Ctrl-C or SIGTERM); 1 a module crashed (without --restart
on-failure), failed to start, or had to be killed after the grace period; 2 usage error.
"""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pywatt")
    except Exception:  # not installed as a distribution (a source tree on sys.path)
        return "unknown"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


def _secret(text: str) -> tuple[str, str | None]:
    """``NAME=VALUE`` -> (NAME, VALUE); ``NAME`` -> (NAME, None): the value comes from the
    environment variable NAME. Checked now: a usage error never shows the value."""
    name, sep, value = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE or NAME")
    source = SecretSources(inline=((name, value),)) if sep else SecretSources(from_env=(name,))
    try:
        source.load()
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, value if sep else None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    value = _positive(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return int(text)


def _extensions(text: str) -> tuple[str, ...] | None:
    from pywatt_proto._orchestrator import ORCHESTRATOR_EXTENSIONS

    if text == "all":
        return None
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ORCHESTRATOR_EXTENSIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown extension(s) {', '.join(unknown)}; known: "
            f"{', '.join(ORCHESTRATOR_EXTENSIONS)} (or 'all', 'none')"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pywatt", description="PyWatt development host")
    p.add_argument("--version", action="version", version=f"pywatt {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run modules behind a local HTTP front door",
        usage="pywatt run [OPTIONS] [TARGET ...] [-- COMMAND [ARG ...]]",
        description="Run PyWatt modules behind one local HTTP/1.1 front door.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("targets", nargs="*", metavar="TARGET", help="x.py, x.py:NAME, pkg.mod:NAME")
    run.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="address of the HTTP front door (default 127.0.0.1:8080; port 0 = any)",
    )
    run.add_argument("--config", metavar="FILE", help="pywatt.toml listing the modules")
    run.add_argument("--module-id", help="id of the module (one module only)")
    run.add_argument(
        "--secret",
        type=_secret,
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="serve a secret to every module: NAME takes the value of the environment "
        "variable NAME; the NAME=VALUE form is visible to other local users (repeatable)",
    )
    run.add_argument(
        "--secrets-file",
        action="append",
        default=[],
        metavar="FILE",
        help="serve the NAME=VALUE lines of FILE as secrets (dotenv style; repeatable)",
    )
    run.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="same as --secrets-file (the older name)",
    )
    run.add_argument(
        "--restart",
        choices=("no", "on-failure"),
        help="on-failure: restart a crashed module with exponential backoff "
        "(default no: a crash stops the host with status 1)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        default=None,
        help="restart a module when its source changes (polling); the new process takes "
        "over once it announced, requests are never refused; without --restart, a crashed "
        "module starts again at the next change",
    )
    run.add_argument(
        "--reload-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="watch DIR too (repeatable; default: the target's directory, or the files "
        "named on a command line)",
    )
    run.add_argument(
        "--extensions",
        type=_extensions,
        metavar="LIST",
        help="pywatt extensions offered in init: 'all' (default), 'none' (exactly like the "
        "reference orchestrator) or a comma-separated list",
    )
    run.add_argument("--request-timeout", type=_positive, help="seconds before 504 (30)")
    run.add_argument(
        "--announce-timeout", type=_positive, default=10.0, help="seconds to announce (10)"
    )
    run.add_argument(
        "--heartbeat-interval", type=_positive, default=5.0, help="seconds; 0 disables (5)"
    )
    run.add_argument(
        "--shutdown-grace", type=_positive, help="seconds between shutdown and kill (5)"
    )
    run.add_argument("--no-access-log", action="store_true", help="no line per request")
    run.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS", ""),
        metavar="LIST",
        help="comma-separated client addresses trusted to send x-forwarded-for/-proto "
        "(default: none; '*' trusts all)",
    )
    run.add_argument(
        "--max-header-bytes",
        type=_count,
        metavar="N",
        help="largest request line plus headers the front door reads, 431 beyond (16384)",
    )
    run.add_argument(
        "--read-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="longest wait for each read of a request, and for progress while an answer is "
        "sent; 408 and close (10)",
    )
    run.add_argument(
        "--keepalive-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="idle time between two requests on one connection before it is closed (5)",
    )
    run.add_argument(
        "--max-connections",
        type=_count,
        metavar="N",
        help="open client connections, 503 beyond (default: from the descriptor limit, "
        "at most 4096)",
    )
    run.add_argument(
        "--port-delay",
        type=_positive,
        default=0.0,
        metavar="SECONDS",
        help="answer port_request after this delay (for testing modules; 0)",
    )
    run.add_argument(
        "--port-refuse",
        action="store_true",
        help="refuse every port_request (for testing a module's fallback)",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("PYWATT_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO (default, or $PYWATT_LOG_LEVEL), WARNING, ERROR",
    )
    return p


def _specs(
    args: argparse.Namespace, command: list[str] | None, configured: list[ModuleSpec]
) -> list[ModuleSpec]:
    shared = SecretSources(
        files=tuple(args.env_file) + tuple(args.secrets_file),
        inline=tuple((n, v) for n, v in args.secret if v is not None),
        from_env=tuple(n for n, v in args.secret if v is None),
    )
    specs = [replace(s, secrets=shared.merged(s.secrets)) for s in configured]
    one = len(args.targets) + (command is not None) == 1 and not specs
    mid = args.module_id if one else None
    if args.module_id and not one:
        raise ConfigError("--module-id names one module; use --config for several")
    specs += [spec_for_target(t, module_id=mid, secrets=shared) for t in args.targets]
    if command is not None:
        specs.append(spec_for_command(command, module_id=mid, secrets=shared))
    return [replace(s, watch=s.watch + tuple(args.reload_dir)) for s in specs]


async def _run(args: argparse.Namespace, specs: list[ModuleSpec], st: HostSettings) -> int:
    host_addr, port = args.http or ("127.0.0.1", 8080)
    restart = (args.restart or st.restart or "no") == "on-failure"
    options = HostOptions(
        orchestrator_api=f"http://{host_addr}:{port}",
        request_timeout=args.request_timeout or st.request_timeout or 30.0,
        announce_timeout=args.announce_timeout,
        heartbeat_interval=args.heartbeat_interval or None,
        shutdown_grace=(
            args.shutdown_grace
            if args.shutdown_grace is not None
            else (st.shutdown_grace if st.shutdown_grace is not None else 5.0)
        ),
        port_policy=PortPolicy(delay=args.port_delay, refuse=args.port_refuse),
        extensions=args.extensions,
        restart=restart,
        reload=bool(args.reload if args.reload is not None else st.reload),
    )
    host = Host(specs, options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await host.start()
    except HostError as exc:
        _note(f"pywatt: {exc}")
        return 1
    given = {
        "max_header_bytes": args.max_header_bytes,
        "read_timeout": args.read_timeout,
        "keepalive_timeout": args.keepalive_timeout,
        "max_connections": args.max_connections,
    }
    limits = FrontDoorLimits(**{k: v for k, v in given.items() if v is not None})
    try:
        server = await serve_http(
            host,
            host_addr,
            port,
            limits=limits,
            access_log=not args.no_access_log,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    except OSError as exc:
        _note(f"pywatt: cannot listen on {host_addr}:{port}: {exc}")
        await host.stop()
        return 1
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, host.rotate_secrets)
    bound = server.sockets[0].getsockname()
    _note(f"pywatt: serving {describe(specs)} on http://{bound[0]}:{bound[1]} (Ctrl-C to stop)")
    fatal = asyncio.ensure_future(host.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({fatal, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if stopped.done():
        _note("pywatt: stopping")
        result = 0
    else:
        stopped.cancel()
        result = fatal.result()
    killed = await host.stop()
    if killed and result == 0:
        result = 1
    # Let responses already produced (including the 502s) reach their clients.
    await asyncio.sleep(0.05)
    return result


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``run ... -- CMD ARGS`` at the first ``--`` after ``run``."""
    if "run" in argv and "--" in argv[argv.index("run") :]:
        i = argv.index("--", argv.index("run"))
        return argv[:i], argv[i + 1 :]
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pywatt`` console script; returns the exit status."""
    from ._guard import release_import_guard

    release_import_guard()  # an orchestrator: its stdout is the user's, not a protocol pipe
    raw = list(sys.argv[1:] if argv is None else argv)
    own, command = _split_command(raw)
    parser = _parser()
    args = parser.parse_args(own)
    logging.basicConfig(
        stream=sys.stderr,
        level=str(args.log_level).upper(),
        format="pywatt: %(levelname)s %(name)s: %(message)s",
    )
    if command is not None and not command:
        parser.error("nothing after --: give the module's command line")
    if not args.targets and command is None and not args.config:
        parser.error("nothing to run: give a TARGET, -- COMMAND, or --config FILE")
    try:
        settings, configured = load_config(args.config) if args.config else (HostSettings(), [])
        try:  # [host] values are checked as the options they stand for (the command line wins)
            if args.http is None and settings.http:
                args.http = _host_port(settings.http)
            if args.extensions is None and settings.extensions is not None:
                args.extensions = _extensions(settings.extensions)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{args.config}: [host]: {exc}") from None
        specs = _specs(args, command, configured)
        for spec in specs:  # every secret source readable and valid before anything starts
            spec.secrets.load()
    except (ConfigError, OSError) as exc:
        print(f"pywatt: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, specs, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
