"""The development host behind ``pywatt run``: several modules, one front door.

Theory of operation
-------------------
A :class:`Host` keeps one *slot* per module id. A slot holds the module's spec, its current
:class:`~pywatt_asyncio._orchestrator.ModuleProcess` and its current secrets. The host is the
front door's :class:`~pywatt_asyncio._frontdoor.Upstream`:

* **Routing.** Each request goes to the module whose announced endpoint matches its path and
  method best (literal segments beat ``{param}`` segments, which beat a rest-of-path
  ``{x:path}``/``*x``); a path announced with other methods only goes to that module (it
  answers 405 itself). With one module everything goes to it (its own 404/405). No match:
  404 from the host. Two modules announcing the same method and path (parameter names
  ignored) is an error naming both, at start-up, and makes a restarted or reloaded process
  be refused.
* **Switching processes.** A restart or reload starts the new process and waits for its
  announce *before* the slot points to it; only then is the old one sent ``shutdown`` (it
  finishes what it has in flight). A request that meets no running process (the module
  crashed and is restarting) is held until the new one is up -- at most
  :data:`MAX_HELD_REQUESTS` per module, each until its deadline -- and answered 503 past
  either bound; a request that reached a process already stopping is handed to the next.
* **Supervision.** A process that exits on its own is a crash: with ``restart`` the slot
  starts a new one after a :class:`~pywatt_proto.Backoff` delay (the failure count starts
  afresh once a process stayed up :data:`HEALTHY_AFTER` seconds); with ``reload`` only, the
  module waits for the next edit (requests get 502 meanwhile); with neither, the host stops
  with status 1. A failure of the host's own side of a link stops it with status 1 too.
* **Module-to-module calls.** :attr:`Host.network` routes them;
  :meth:`Host.process` maps a module id to its running process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pywatt_proto import Backoff
from pywatt_proto._messages import Endpoint, HttpResponse
from pywatt_proto._module import FORWARDED_CLIENT_ENV

from ._apprunner import split_target
from ._config import ModuleSpec
from ._frontdoor import MAX_HTTP_BODY, FrontRequest
from ._network import ModuleNetwork
from ._orchestrator import ModuleProcess, PortPolicy, _note, _synth, child_env
from ._reload import POLL_INTERVAL, FileWatcher

_log = logging.getLogger("pywatt.host")

#: Requests held per module while it has no running process (restart); more get 503.
MAX_HELD_REQUESTS: Final = 1024
#: Delays between restarts of a crashing module: 0.25 s doubling to 10 s, with full jitter,
#: without a limit on attempts (a development host keeps trying while you fix the code).
RESTART_BACKOFF: Final = Backoff(base=0.25, factor=2.0, cap=10.0, max_attempts=None)
#: Seconds a process must stay up for its crash count to start afresh.
HEALTHY_AFTER: Final = 10.0


class HostError(Exception):
    """The host cannot start or go on (the message names the module(s))."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostOptions:
    """How the host runs its modules (seconds for times)."""

    orchestrator_api: str = "http://127.0.0.1:0"
    request_timeout: float = 30.0
    announce_timeout: float = 10.0
    heartbeat_interval: float | None = 5.0
    shutdown_grace: float = 5.0
    port_policy: PortPolicy = field(default_factory=PortPolicy)
    extensions: tuple[str, ...] | None = None
    restart: bool = False
    reload: bool = False


# ------------------------------------------------------------------------------- routing

_LITERAL, _PARAM, _REST = 2, 1, 0
_BRACED = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)?(?::([A-Za-z_]+))?\}$")


def _pattern(path: str) -> tuple[tuple[int, str], ...]:
    """Split an announced path into (kind, literal) segments."""
    out: list[tuple[int, str]] = []
    for seg in path.strip("/").split("/") if path.strip("/") else []:
        m = _BRACED.match(seg)
        if m:
            rest = bool(m.group(1)) or m.group(3) == "path"
            out.append((_REST, "") if rest else (_PARAM, ""))
        elif seg.startswith("*"):
            out.append((_REST, ""))
        elif seg.startswith(":") and len(seg) > 1:
            out.append((_PARAM, ""))
        else:
            out.append((_LITERAL, seg))
    return tuple(out)


def route_key(path: str) -> str:
    """Return ``path`` with parameter names dropped (``/a/{id}`` -> ``/a/{}``): two modules
    announcing one method with the same key conflict."""
    parts = [
        seg if kind == _LITERAL else ("{}" if kind == _PARAM else "{*}")
        for kind, seg in _pattern(path)
    ]
    return "/" + "/".join(parts)


def _match(pattern: tuple[tuple[int, str], ...], segs: list[str]) -> tuple[int, ...] | None:
    """Return the specificity of ``pattern`` for ``segs`` (higher wins), None: no match."""
    rank: list[int] = []
    for i, (kind, literal) in enumerate(pattern):
        if kind == _REST:
            return (*rank, _REST)
        if i >= len(segs):
            return None
        if kind == _LITERAL and segs[i] != literal:
            return None
        if kind == _PARAM and not segs[i]:
            return None
        rank.append(kind)
    return (*rank, 3) if len(segs) == len(pattern) else None


@dataclass(frozen=True, slots=True)
class _Route:
    module_id: str
    methods: frozenset[str]
    pattern: tuple[tuple[int, str], ...]


def _target_file(spec: ModuleSpec) -> str | None:
    """The absolute path of a Python file target (None for commands and pkg.mod targets)."""
    if spec.target is None:
        return None
    path = split_target(spec.target)[0]
    return os.path.abspath(path) if path.endswith(".py") else None


def find_conflicts(announced: Mapping[str, Sequence[Endpoint]]) -> list[str]:
    """Return one message per method+path announced by two modules (empty: none)."""
    owner: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for module_id, endpoints in announced.items():
        seen: set[tuple[str, str]] = set()
        for e in endpoints:
            for method in e.methods:
                key = (method.upper(), route_key(e.path))
                if key in seen:
                    continue
                seen.add(key)
                other = owner.setdefault(key, module_id)
                if other != module_id:
                    problems.append(
                        f"{key[0]} {e.path} is announced by both module {other!r} "
                        f"and module {module_id!r}"
                    )
    return problems


# --------------------------------------------------------------------------------- slots


class _Slot:
    """One module id: spec, current process, secrets, held requests (see module docstring)."""

    def __init__(self, spec: ModuleSpec, secrets: dict[str, str]) -> None:
        self.spec = spec
        self.secrets = secrets
        self.proc: ModuleProcess | None = None
        self.ready = asyncio.Event()  # set while self.proc can take requests (or gone)
        self.gone = False  # no process will come any more (host stopping, crashed)
        self.held = 0
        self.failures = 0
        self.switching = False  # a restart or reload is starting a process
        self.crashed = False  # crashed with --reload and no --restart: waits for an edit


class Host:
    """Several module processes behind one front door (see the module docstring).

    Build it, ``await start()`` (raises :class:`HostError`), serve it with
    :func:`~pywatt_asyncio._frontdoor.serve_http`, ``await wait()`` for a fatal condition
    (returns the exit status) or ``await stop()`` (returns True if a module had to be killed).
    """

    def __init__(self, specs: Sequence[ModuleSpec], options: HostOptions = HostOptions()) -> None:
        ids = [s.module_id for s in specs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise HostError(f"two modules have the id {dupes[0]!r}; give each its own id")
        if not specs:
            raise HostError("no module to run")
        self.options = options
        self._specs = list(specs)
        self._slots: dict[str, _Slot] = {}
        self._routes: list[_Route] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._retired: set[ModuleProcess] = set()  # replaced processes still stopping
        self._stopping = False
        self._killed: list[str] = []
        self._fatal: asyncio.Future[int] | None = None
        self._rotations = 0
        self._rng = random.Random()
        #: Routes module-to-module calls between the running processes and keeps the
        #: provider registry (spec/modules.md); health = the module's process is running.
        self.network = ModuleNetwork(lookup=self.process, known=self._slots.__contains__)

    # ------------------------------------------------------------------ lookups
    def process(self, module_id: str) -> ModuleProcess | None:
        """Return the running process of ``module_id`` (None: unknown, or not running now)."""
        slot = self._slots.get(module_id)
        if slot is None or slot.proc is None or not slot.proc.running:
            return None
        return slot.proc

    # ------------------------------------------------------------------ start
    async def _launch(self, slot: _Slot) -> ModuleProcess:
        """Start a process for ``slot`` and wait for its announce (not installed yet).

        Raises ``HostError`` (the child was killed then).
        """
        spec, o = slot.spec, self.options
        env = child_env() if spec.target is not None else dict(os.environ)
        env.update(spec.env)
        env["PYWATT_MODULE_ID"] = spec.module_id
        env[FORWARDED_CLIENT_ENV] = "1"  # its requests come through our front door
        proc = ModuleProcess(
            spec.argv,
            module_id=spec.module_id,
            orchestrator_api=o.orchestrator_api,
            secrets=slot.secrets,
            env=env,
            init_env=spec.env,
            request_timeout=o.request_timeout,
            announce_timeout=o.announce_timeout,
            heartbeat_interval=o.heartbeat_interval,
            shutdown_grace=o.shutdown_grace,
            port_policy=o.port_policy,
            extensions=o.extensions,
            stderr_prefix=f"[{spec.module_id}] ",
        )
        proc.network = self.network  # module calls and the provider registry
        try:
            await proc.start()
        except (RuntimeError, OSError) as exc:
            raise HostError(f"module {slot.spec.module_id} failed to start: {exc}") from None
        return proc

    async def start(self) -> None:
        """Start every module (concurrently) and build the routing table.

        Raises :class:`HostError` when one fails to start (with ``reload``, such a module
        waits for the next edit instead) or two announce the same method and path (every
        started module is stopped then).
        """
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        for spec in self._specs:
            try:
                secrets = spec.secrets.load()
            except (OSError, ValueError) as exc:
                raise HostError(f"module {spec.module_id}: {exc}") from None
            self._slots[spec.module_id] = _Slot(spec, secrets)
        results = await asyncio.gather(
            *(self._launch(slot) for slot in self._slots.values()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        started = [r for r in results if isinstance(r, ModuleProcess)]
        if self.options.reload and all(isinstance(e, HostError) for e in errors):
            # --reload: a module that fails to start waits for the next edit (uvicorn's way)
            for slot, result in zip(self._slots.values(), results, strict=True):
                if isinstance(result, HostError):
                    _note(f"pywatt: {result}; waiting for a change to start it (--reload)")
                    slot.crashed = True
                    slot.ready.set()
            errors = []
        if not errors:
            problems = find_conflicts({p.module_id: p.endpoints for p in started})
            if problems:
                errors = [HostError("; ".join(problems))]
        if errors:
            await asyncio.gather(*(p.shutdown() for p in started))
            for err in errors:
                if not isinstance(err, HostError):
                    raise err
            raise HostError("; ".join(str(e) for e in errors))
        for proc in started:
            self._install(self._slots[proc.module_id], proc)
        if self.options.reload:
            for slot in self._slots.values():
                self._spawn(self._reload_loop(slot))

    def _install(self, slot: _Slot, proc: ModuleProcess) -> None:
        slot.proc = proc
        slot.crashed = False
        slot.ready.set()
        self._routes = [
            _Route(mid, frozenset(m.upper() for m in e.methods), _pattern(e.path))
            for mid, s in self._slots.items()
            if s.proc is not None
            for e in s.proc.endpoints
        ]
        self._spawn(self._watch(slot, proc))

    def _conflicts_with_others(self, slot: _Slot, proc: ModuleProcess) -> list[str]:
        announced = {
            mid: s.proc.endpoints
            for mid, s in self._slots.items()
            if s is not slot and s.proc is not None
        }
        announced[slot.spec.module_id] = proc.endpoints
        return find_conflicts(announced)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a defect of the host itself: never silent
            _log.error("internal error in the host", exc_info=exc)
            self._end(1)

    def _end(self, status: int) -> None:
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(status)

    async def wait(self) -> int:
        """Return the exit status once the host cannot go on (a crash without restart, a
        failure of the host itself)."""
        assert self._fatal is not None, "start() first"
        return await asyncio.shield(self._fatal)

    # ------------------------------------------------------------------ supervision
    async def _watch(self, slot: _Slot, proc: ModuleProcess) -> None:
        await proc.wait()
        if slot.proc is not proc or self._stopping:
            return  # replaced (reload) or the host is stopping
        slot.ready.clear()
        mid = slot.spec.module_id
        if proc.failure is not None:
            _note(f"pywatt: {mid}: stopping: internal failure of the host's link (see above)")
        elif self.options.restart:
            loop = asyncio.get_running_loop()
            if proc.announced_at is not None and loop.time() - proc.announced_at >= HEALTHY_AFTER:
                slot.failures = 0
            await self._restart(slot)
            return
        elif self.options.reload:
            # uvicorn's way: the host stays up and the next edit starts the module again
            _note(f"pywatt: {mid}: module crashed; waiting for a change to start it (--reload)")
            slot.crashed = True
            slot.ready.set()  # held requests get their 502 now
            return
        else:
            _note(f"pywatt: {mid}: module crashed; stopping (--restart on-failure restarts it)")
        slot.gone = True
        slot.ready.set()
        self._end(1)

    async def _restart(self, slot: _Slot) -> None:
        mid = slot.spec.module_id
        slot.switching = True
        try:
            while not self._stopping and (slot.proc is None or not slot.proc.running):
                slot.failures += 1
                delay = RESTART_BACKOFF.delay(slot.failures, self._rng)
                _note(f"pywatt: {mid}: restarting in {delay:.2f} s (failure {slot.failures})")
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                try:
                    proc = await self._launch(slot)
                except HostError as exc:
                    _note(f"pywatt: {exc}")
                    continue
                problems = self._conflicts_with_others(slot, proc)
                if problems:
                    _note(f"pywatt: {mid}: new process refused: {'; '.join(problems)}")
                    await proc.shutdown()
                    continue
                _note(f"pywatt: {mid}: module restarted (pid {proc.pid})")
                self._install(slot, proc)
        finally:
            slot.switching = False

    async def _reload_loop(self, slot: _Slot) -> None:
        watcher = await asyncio.to_thread(FileWatcher, slot.spec.watch)
        # Modules side by side in one directory: an edit of another module's own file
        # reloads that module only (a shared helper file reloads every module using the tree).
        others = {
            f for s in self._specs if s is not slot.spec and (f := _target_file(s)) is not None
        }
        mine = _target_file(slot.spec)
        while not self._stopping:
            await asyncio.sleep(POLL_INTERVAL)
            changed = await asyncio.to_thread(watcher.changed)
            changed = [p for p in changed if p == mine or p not in others]
            if not changed or self._stopping:
                continue
            shown = ", ".join(os.path.relpath(p) for p in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            _note(f"pywatt: {slot.spec.module_id}: {shown}{more} changed; reloading")
            await self.reload(slot.spec.module_id)

    async def reload(self, module_id: str) -> bool:
        """Start a new process for ``module_id``; once it announced, switch to it and stop
        the old one. Returns False (the old process keeps serving) if it fails to start or
        its endpoints conflict with another module's.
        """
        slot = self._slots[module_id]
        if slot.switching:
            return False
        slot.switching = True
        try:
            try:
                proc = await self._launch(slot)
            except HostError as exc:
                keep = " (the old process keeps serving)" if self.process(module_id) else ""
                _note(f"pywatt: reload failed: {exc}{keep}")
                return False
            problems = self._conflicts_with_others(slot, proc)
            if problems or self._stopping:
                if problems:
                    _note(f"pywatt: {module_id}: reload refused: {'; '.join(problems)}")
                await proc.shutdown()
                return False
            old = slot.proc
            self._install(slot, proc)
            _note(f"pywatt: {module_id}: reloaded (pid {proc.pid})")
            if old is not None:
                self._retired.add(old)
                self._spawn(self._retire(old))
            return True
        finally:
            slot.switching = False

    async def _retire(self, proc: ModuleProcess) -> None:
        try:
            await proc.shutdown()
            if proc.killed:
                self._killed.append(proc.module_id)
        finally:
            self._retired.discard(proc)

    # ------------------------------------------------------------------ requests
    def _choose(self, method: str, target: str) -> _Slot | None:
        if len(self._slots) == 1:
            return next(iter(self._slots.values()))
        path = target.split("?", 1)[0].split("#", 1)[0]
        segs = path.strip("/").split("/") if path.strip("/") else []
        want = {method.upper()}
        if method.upper() == "HEAD":
            want.add("GET")
        best: tuple[tuple[int, ...], str] | None = None
        fallback: tuple[tuple[int, ...], str] | None = None
        for route in self._routes:
            rank = _match(route.pattern, segs)
            if rank is None:
                continue
            if route.methods & want:
                if best is None or rank > best[0]:
                    best = (rank, route.module_id)
            elif fallback is None or rank > fallback[0]:
                fallback = (rank, route.module_id)
        chosen = best or fallback
        return self._slots[chosen[1]] if chosen is not None else None

    def body_limit(self, method: str, target: str) -> int:
        """Return the body limit of the module that would serve this request: it follows
        the body form that module negotiated (spec/limits.md section 1.1); the reference
        form's limit while no process of it runs."""
        slot = self._choose(method, target)
        if slot is None or slot.proc is None or not slot.proc.running:
            return MAX_HTTP_BODY
        return slot.proc.body_limit

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        """Route one request; return the answer and the id of the module that served it
        (None: the host answered 404 itself). Never raises for a module failure."""
        slot = self._choose(request.method, request.target)
        if slot is None:
            return _synth("", 404, "no module serves this path"), None
        return await self._deliver(slot, request), slot.spec.module_id

    async def _deliver(self, slot: _Slot, request: FrontRequest) -> HttpResponse:
        """Send ``request`` to the slot's process, held while it restarts (module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.request_timeout
        while True:
            proc = slot.proc
            if proc is not None and proc.running:
                resp = await proc.send(
                    request.method, request.target, request.headers, request.body
                )
                if resp is not None:
                    return resp
            if slot.gone or slot.crashed:
                return _synth("", 502, "module is not running")
            if slot.proc is proc:
                slot.ready.clear()  # wake again when a new process is installed
            if slot.held >= MAX_HELD_REQUESTS:
                return _synth("", 503, "module is restarting")
            slot.held += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await slot.ready.wait()
            except TimeoutError:
                return _synth("", 503, "module is restarting")
            finally:
                slot.held -= 1

    # ------------------------------------------------------------------ secrets
    def rotate_secrets(self) -> None:
        """Re-read every module's secrets; push the changed ones to each running module as
        one rotation (``secret`` lines, then ``rotated``). Problems are reported, not
        raised."""
        for mid, slot in self._slots.items():
            try:
                fresh = slot.spec.secrets.load()
            except (OSError, ValueError) as exc:
                _note(f"pywatt: {mid}: cannot reload secrets: {exc}")
                continue
            changed = {k: v for k, v in fresh.items() if slot.secrets.get(k) != v}
            slot.secrets = fresh
            if not changed:
                _note(f"pywatt: {mid}: SIGHUP: no secret changed")
                continue
            proc = self.process(mid)
            if proc is None:
                continue  # the next process starts with the new values
            self._rotations += 1
            rotation_id = f"rotation-{self._rotations}"
            _note(f"pywatt: {mid}: rotating {', '.join(sorted(changed))} ({rotation_id})")
            try:
                proc.rotate(changed, rotation_id)
            except Exception as exc:
                _note(f"pywatt: {mid}: rotation not sent: {exc}")

    # ------------------------------------------------------------------ stop
    async def stop(self) -> bool:
        """Send ``shutdown`` to every module, wait (the grace period kills the stubborn ones)
        and report each; return True if any module had to be killed."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        procs = [s.proc for s in self._slots.values() if s.proc is not None]
        for slot in self._slots.values():
            slot.gone = True
            slot.ready.set()
        procs += list(self._retired)
        codes = await asyncio.gather(*(p.shutdown() for p in procs))
        for proc, code in zip(procs, codes, strict=True):
            if proc.killed:
                self._killed.append(proc.module_id)
                _note(
                    f"pywatt: {proc.module_id}: module was killed after the "
                    f"{self.options.shutdown_grace:g} s grace period (status {code})"
                )
            else:
                _note(f"pywatt: {proc.module_id}: module stopped (status {code})")
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return bool(self._killed)


def describe(specs: Sequence[ModuleSpec]) -> str:
    """One line naming what is served (``hello.py`` or ``a (a.py), b (./b)``)."""
    if len(specs) == 1:
        return specs[0].describe()
    return ", ".join(f"{s.module_id} ({s.describe()})" for s in specs)
