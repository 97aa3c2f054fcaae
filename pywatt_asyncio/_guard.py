"""The stdout guard and ``Module.run()``'s process handling, shared by both drivers (no
asyncio import: the blocking driver uses it).

:func:`guard_stdout` keeps the protocol channel clean. It duplicates the real fd 1 for the
protocol writer and then points fd 1 (and ``sys.stdout``) at stderr, so ``print()``, logging,
C extensions and child processes that write to "stdout" end up on stderr and can never put a
stray byte between two protocol lines. It is process-wide state, installed exactly once
whichever driver asks first.

When it is installed (the exact rule)
-------------------------------------
1. By ``app.run()`` / ``serve_stdio()`` of either driver (``guard=True``, the default),
   always.
2. Earlier, when ``pywatt_asyncio`` or ``pywatt_sync`` is *imported* (:func:`guard_at_import`)
   by a process whose stdin and stdout are both pipes or sockets -- how an orchestrator
   starts a module (``pywatt run`` too) -- so ``print()`` in the module's own import-time
   code (after the pywatt import) and in everything it imports later cannot corrupt the
   protocol. Output written *before* the first pywatt import is not caught: import pywatt
   first in a module's main file.
3. ``PYWATT_STDOUT_GUARD`` overrides rule 2: ``0``/``off`` never guards at import (a
   script in a shell pipeline that imports pywatt only as a library), ``1``/``on``
   always does; unset or ``auto`` is rule 2.

The ``pywatt`` command itself undoes a guard installed at import
(:func:`release_import_guard`): it is an orchestrator, its stdout is the user's.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Callable
    from typing import Final, NoReturn, TextIO

#: Pipe buffer asked for once bodies may be large (``base64_bodies`` selected): a 1 MiB body
#: then crosses in one pipe-full instead of 22 (Linux's default pipe holds 64 KiB), each a
#: wake-up of the other process (docs/performance.md). 1 MiB is Linux's default
#: ``pipe-max-size`` for unprivileged processes.
BIG_PIPE: Final = 1024 * 1024


def grow_pipes(*fds: int, size: int = BIG_PIPE) -> None:
    """Ask for ``size``-byte kernel buffers on the pipes behind ``fds``.

    Linux only (``F_SETPIPE_SZ``); for anything that is not a pipe, on other systems, or when
    the system's limits refuse (``pipe-max-size``, the per-user pipe quota) the fd is left
    as it is. Returns None; never raises.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:  # pragma: no cover - not Linux
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, setsize, size)


#: Environment marker "<pid>:<fd>" left by the guard, so a second guard in the same process
#: (the blocking driver, an adapter) finds the protocol fd instead of duplicating stderr.
#: The pid makes it meaningless in child processes, which do not inherit the fd.
PROTOCOL_FD_ENV: Final = "PYWATT_PROTOCOL_FD"

#: Environment variable overriding the import-time rule: ``0``/``off``, ``1``/``on``, ``auto``.
GUARD_ENV: Final = "PYWATT_STDOUT_GUARD"

_guard_lock = threading.Lock()
_guarded_fd: int | None = None
_import_guard: tuple[int, TextIO] | None = None  # (protocol fd, sys.stdout before) if rule 2


def guard_stdout() -> int:
    """Reserve the real stdout for the protocol and return its (duplicated) fd.

    After the call fd 1 and ``sys.stdout`` write to stderr. Idempotent: later calls return the
    same fd. Raises ``OSError`` if the fds cannot be duplicated.
    """
    global _guarded_fd
    with _guard_lock:
        if _guarded_fd is not None:
            return _guarded_fd
        inherited = _marked_fd()
        if inherited is not None:  # another driver in this process guarded already
            _guarded_fd = inherited
            return inherited
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
        proto_fd = os.dup(1)
        os.dup2(2, 1)
        # fd 1 is now stderr; give sys.stdout a line-buffered writer on it so print()
        # output appears promptly and interleaves sanely with logging.
        try:
            sys.stdout = io.TextIOWrapper(
                open(1, "wb", buffering=0, closefd=False),  # noqa: SIM115
                encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                errors="backslashreplace",
                line_buffering=True,
                write_through=True,
            )
        except (OSError, ValueError):  # pragma: no cover - exotic platforms
            sys.stdout = sys.stderr
        _guarded_fd = proto_fd
        os.environ[PROTOCOL_FD_ENV] = f"{os.getpid()}:{proto_fd}"
        return proto_fd


def _marked_fd() -> int | None:
    """Return the protocol fd recorded by a guard earlier in *this* process, if any."""
    pid, _, fd = os.environ.get(PROTOCOL_FD_ENV, "").partition(":")
    if pid != str(os.getpid()) or not fd.isdigit():
        return None
    try:
        os.fstat(int(fd))
    except OSError:
        return None
    return int(fd)


def _piped(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def guard_at_import() -> int | None:
    """Install the guard if this process looks started by an orchestrator (rules 2 and 3
    in the module docstring); return the protocol fd, or None when it was not installed.

    Never raises: a guard that cannot be installed here is installed (or fails loudly)
    at ``run()``.
    """
    global _import_guard
    mode = os.environ.get(GUARD_ENV, "auto").strip().lower()
    if mode in ("0", "off", "no", "false"):
        return None
    if mode not in ("1", "on", "yes", "true") and not (_piped(0) and _piped(1)):
        return None
    if _guarded_fd is not None or _marked_fd() is not None:
        return guard_stdout()  # already guarded (by the other driver): nothing to undo later
    before = sys.stdout
    try:
        fd = guard_stdout()
    except OSError:
        return None
    _import_guard = (fd, before)
    return fd


def release_import_guard() -> bool:
    """Undo a guard that :func:`guard_at_import` installed (the ``pywatt`` command, an
    orchestrator whose stdout is the user's); return True if there was one.

    Restores fd 1 and ``sys.stdout``; leaves a guard installed by ``run()`` alone.
    """
    global _import_guard, _guarded_fd
    with _guard_lock:
        if _import_guard is None or _guarded_fd != _import_guard[0]:
            return False
        fd, before = _import_guard
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
        os.dup2(fd, 1)
        os.close(fd)
        sys.stdout = before
        _guarded_fd = None
        _import_guard = None
        os.environ.pop(PROTOCOL_FD_ENV, None)
        return True


def run_until_exit(serve: Callable[[], int]) -> NoReturn:
    """``Module.run()`` of both drivers: with a terminal on stdin print how to run the module
    and exit 2; else set up stderr logging if none is configured (``PYWATT_LOG_LEVEL``,
    default INFO; ``logging`` loaded for the first record), ``serve()`` and exit with its
    status (130 on Ctrl-C)."""
    from pywatt_proto._hints import terminal_stdin
    from pywatt_proto._lazylog import basic_config

    if os.isatty(0):  # a person started it by hand: say how to run it instead of waiting
        print(terminal_stdin(sys.argv[0] or "FILE"), file=sys.stderr)
        sys.exit(2)
    basic_config(
        level=os.environ.get("PYWATT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = serve()
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
