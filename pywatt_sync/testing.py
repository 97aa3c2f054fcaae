"""``TestClient``: call a module's routes from a test, in-process, through the whole module path.

::

    from pywatt_sync.testing import TestClient

    def test_hello():
        with TestClient(app, secrets={"DB_URL": "sqlite://"}) as client:
            response = client.get("/hello")
            assert response.status_code == 200
            assert response.json() == {"message": "hello"}

Theory of operation
-------------------
The client plays the orchestrator without starting a process: it runs the module's own
``serve_stdio`` on a thread (an ``asyncio.run`` of it for ``pywatt_asyncio`` modules)
over two ``os.pipe()`` pairs and drives :class:`~pywatt_proto.OrchestratorConnection`
from the calling thread. So every request takes the production path: init, secret
prefetch, ``on_startup`` hooks and the announce when the client starts; each request an
``http_request`` line through the module's core, router, middleware and authenticator.
Secrets are served from ``secrets`` (:meth:`TestClient.rotate` rotates them) and are
redacted from log records while the module runs, not after.

``app`` is a module of either driver (``asgi_module``/``wsgi_module`` ones included) or a
bare ASGI application (an ``async def`` ``__call__``, wrapped with ``asgi_module``) or
WSGI application (any other callable, wrapped with ``wsgi_module``).

Requests are sent one at a time. A handler that raises is answered 500 and logged, as in
production; with ``raise_server_exceptions=True`` the client raises the exception instead
(as Starlette's test client does): the first one a ``pywatt`` logger records at ERROR
during the request (a Flask app answers its own errors unless ``app.testing = True``).
An answer later than ``timeout`` is a 504 from the orchestrator core, as under
``pywatt run``; a module that stops raises :class:`ModuleStopped`. The client holds one
response at a time; the module's own limits apply (``spec/limits.md``).
"""

from __future__ import annotations

import contextlib
import inspect
import json as _json
import os
import select
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from pywatt_asyncio._orchestrator import _answer, allocate_port
from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    AnnounceTimedOut,
    CallRequested,
    Init,
    OrchestratorConnection,
    PortRequested,
    ProviderDiscoveryRequested,
    ProviderRegistrationRequested,
    ProviderRegistry,
    RequestFailed,
    ResponseReceived,
    RotationAcknowledged,
    TcpListen,
)
from pywatt_proto._secrets import redactor

__all__ = ["ModuleStopped", "TestClient", "TestResponse"]

#: Seconds the client waits for the announce, for each answer and for the module to stop.
DEFAULT_TIMEOUT = 30.0
_READ_CHUNK = 65536
_HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


class ModuleStopped(RuntimeError):
    """The module under test stopped (or never announced); ``code`` is its exit status
    (None when it is still running but did not announce in time)."""

    code: int | None

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class ResponseHeaders(Mapping[str, str]):
    """A response's headers: a read-only mapping with case-insensitive names."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {k.lower(): v for k, v in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._items!r})"


class TestResponse:
    """What :class:`TestClient` returns: ``status_code``, ``headers``, ``content``,
    ``text``, ``json()`` (as Starlette's and Flask's test responses)."""

    __test__ = False  # not a pytest test class
    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = ResponseHeaders(headers)
        self.content = content

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """Return the body parsed as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return _json.loads(self.content)

    @property
    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    def __repr__(self) -> str:
        return f"<TestResponse [{self.status_code}]>"


def _as_module(app: Any) -> Any:
    """Return ``app`` if it is a pywatt module, else wrap an ASGI or WSGI application."""
    if callable(getattr(app, "serve_stdio", None)):
        return app
    if not callable(app):
        raise TypeError(f"TestClient needs a pywatt module or an ASGI/WSGI app, got {app!r}")
    call = app if inspect.isfunction(app) else getattr(app, "__call__", app)  # noqa: B004
    if inspect.iscoroutinefunction(call):
        from pywatt_asyncio import asgi_module

        return asgi_module(app)
    from ._wsgi import wsgi_module

    return wsgi_module(app)


# File descriptors the module was given, kept open for a while after it stopped: a thread
# of the stopped module may still be about to read or write one (the blocking driver's
# leader re-checks its state only after its read returns). Closed, such a number could be
# reused by the next client's pipe and the stray thread would take its init line. While
# quarantined the read end is at end of input and the write end points at /dev/null, so a
# stray call returns at once; entries are closed on a later start, after QUARANTINE
# seconds (so at most the fds of the clients started in that time are held).
QUARANTINE = 10.0
_quarantine: list[tuple[float, int]] = []
_quarantine_lock = threading.Lock()


def _retire(fds: Iterable[int]) -> None:
    now = time.monotonic()
    with _quarantine_lock:
        keep = []
        for since, fd in _quarantine:
            if now - since > QUARANTINE:
                with contextlib.suppress(OSError):
                    os.close(fd)
            else:
                keep.append((since, fd))
        keep.extend((now, fd) for fd in fds if fd >= 0)
        _quarantine[:] = keep


class TestClient:
    """Serve ``app`` in-process and send it requests (see the module docstring).

    Args:
        app: the module (either driver), or an ASGI/WSGI application.
        secrets: name -> value the orchestrator serves (``get_secret``, prefetch).
        module_id: the init's ``module_id``.
        env: the init's ``env``.
        base_url: scheme and host of relative URLs (the ``host`` header sent).
        headers: headers sent with every request.
        timeout: seconds to wait for the announce and for each answer (504 past it).
        raise_server_exceptions: raise the exception a handler (or middleware, or the
            ASGI/WSGI app) raised during a request, instead of returning its 500.
        modules: module id -> the modules this one may call (``app.call_module(id, ...)``):
            each a :class:`TestClient` or anything one accepts (wrapped, started and
            stopped with this client). A call is delivered as the orchestrator delivers
            it (a POST to the endpoint, spec/modules.md); a call to another id fails with
            ``unknown_module``.

    The module starts on the first request or on ``with``/:meth:`start`, and stops at
    the end of the ``with`` block or on :meth:`close`.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: Any,
        *,
        secrets: Mapping[str, str] | None = None,
        module_id: str = "test-module",
        env: Mapping[str, str] | None = None,
        base_url: str = "http://testserver",
        headers: _HeaderInput = None,
        timeout: float = DEFAULT_TIMEOUT,
        raise_server_exceptions: bool = False,
        modules: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = _as_module(app)
        self._peers: dict[str, TestClient] = {}
        self._own_peers: list[TestClient] = []
        #: Service providers the module (and its peers) registered; answers discovery too.
        self.registry = ProviderRegistry()
        for peer_id, peer in (modules or {}).items():
            if not isinstance(peer, TestClient):
                peer = TestClient(peer, module_id=peer_id, timeout=timeout)
                self._own_peers.append(peer)
            if peer is self:
                raise ValueError("a TestClient cannot route calls to itself")
            peer.registry = self.registry  # one registry for the module and its peers
            self._peers[peer_id] = peer
        self.raise_server_exceptions = raise_server_exceptions
        self._secrets = dict(secrets or {})
        self._served: set[str] = set(self._secrets.values())
        self._module_id = module_id
        self._env = dict(env or {})
        parts = urlsplit(base_url)
        self._host = parts.netloc or "testserver"
        self._headers = _header_pairs(headers)
        self.timeout = timeout
        self._lock = threading.RLock()
        self._conn: OrchestratorConnection | None = None
        self._thread: threading.Thread | None = None
        self._code: int | None = None
        self._error: BaseException | None = None
        self._to_module = -1  # write end of the module's stdin
        self._from_module = -1  # read end of the module's stdout
        self._module_fds: tuple[int, int] = (-1, -1)
        self._responses: dict[str, TestResponse] = {}
        self._acks: dict[str, tuple[str, str | None]] = {}
        self._rotations = 0

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> TestClient:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def announce(self) -> Any:
        """The module's ``Announce`` (endpoints, listen) once started, else None."""
        return None if self._conn is None else self._conn.announce

    def start(self) -> None:
        """Start the module and wait for its announce (no-op when started).

        Raises:
            ModuleStopped: the module exited or did not announce within ``timeout``.
        """
        with self._lock:
            if self._conn is not None:
                return
            _retire(())  # close fds quarantined long enough
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            os.set_blocking(in_w, False)
            self._to_module, self._from_module = in_w, out_r
            self._module_fds = (in_r, out_w)
            self._code = None
            self._error = None
            self._served.update(self._secrets.values())
            init = Init(
                orchestrator_api="http://127.0.0.1:9900",
                module_id=self._module_id,
                env=self._env,
                listen=TcpListen(host="127.0.0.1", port=0),
            )
            conn = OrchestratorConnection(
                init=init,
                secrets=self._secrets,
                heartbeat_interval=None,
                announce_timeout=self.timeout,
                request_timeout=self.timeout,
                shutdown_grace=self.timeout,
            )
            self._conn = conn
            self._thread = threading.Thread(
                target=self._serve, args=(in_r, out_w), name="pywatt-testclient", daemon=True
            )
            self._thread.start()
            conn.start(time.monotonic())
            try:
                self._pump(lambda: conn.announce is not None)
            except BaseException:
                self._stop()
                raise

    def close(self) -> None:
        """Shut the module down (``shutdown``, then end of input) and wait for it; then the
        peer modules this client started for ``modules``.

        Raises:
            ModuleStopped: the module did not stop within ``timeout``.
        """
        with self._lock:
            try:
                if self._conn is not None:
                    self._stop()
            finally:
                for peer in self._own_peers:
                    peer.close()

    def _serve(self, read_fd: int, write_fd: int) -> None:
        app = self.app
        try:
            if inspect.iscoroutinefunction(app.serve_stdio):
                import asyncio

                code = asyncio.run(app.serve_stdio(read_fd=read_fd, write_fd=write_fd))
            else:
                code = app.serve_stdio(read_fd=read_fd, write_fd=write_fd)
            self._code = int(code)
        except BaseException as exc:  # SystemExit from a handler included
            self._error = exc
            code = exc.code if isinstance(exc, SystemExit) else 1
            self._code = code if isinstance(code, int) else 1
        finally:
            # The module's stdout: replace the pipe's write end by /dev/null (the client
            # sees end of input; a stray late write goes nowhere), quarantined in _stop.
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, write_fd)
            finally:
                os.close(null)

    def _stop(self) -> None:
        conn, thread = self._conn, self._thread
        assert conn is not None and thread is not None
        try:
            if self._code is None:
                with contextlib.suppress(Exception):
                    conn.shutdown(time.monotonic())
                    self._write(conn.data_to_send(), time.monotonic() + self.timeout)
            with contextlib.suppress(OSError):
                os.close(self._to_module)  # end of input
            thread.join(self.timeout)
            if thread.is_alive():
                raise ModuleStopped(f"module did not stop within {self.timeout}s", None)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._from_module)
            if thread.is_alive():  # the module still holds its fds: leave them to it
                _retire(())
            else:
                _retire(self._module_fds)
            self._to_module = self._from_module = -1
            self._module_fds = (-1, -1)
            self._conn = None
            self._thread = None
            self._responses.clear()
            # The values this client served stop being redacted from later log records
            # (a module process would have exited; a test run goes on).
            redactor().discard(self._served)
            self._served.clear()

    # ---------------------------------------------------------------- pumping
    def _write(self, data: bytes, deadline: float) -> None:
        """Write ``data`` to the module's stdin, reading its output meanwhile."""
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModuleStopped("module stopped reading its input", self._code)
            readable, writable, _ = select.select(
                [self._from_module], [self._to_module], [], remaining
            )
            if readable:
                self._read_once()
            if writable:
                try:
                    n = os.write(self._to_module, view)
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._stopped() from None
                view = view[n:]

    def _read_once(self) -> None:
        conn = self._conn
        assert conn is not None
        data = os.read(self._from_module, _READ_CHUNK)
        if data:
            conn.receive_data(data, time.monotonic())
        else:
            conn.receive_eof()
        self._drain_events()

    def _drain_events(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is END_OF_INPUT:
                break
            if isinstance(event, RequestFailed) and event.status == 502:
                continue  # the module went away: reported by _pump as ModuleStopped
            if isinstance(event, ResponseReceived | RequestFailed):  # a 504 as pywatt run's
                r = _answer(event.response if isinstance(event, ResponseReceived) else event)
                self._responses[event.request_id] = TestResponse(
                    r.status_code, r.headers, r.body or b""
                )
            elif isinstance(event, RotationAcknowledged):
                self._acks[event.rotation_id] = (event.status, event.message)
            elif isinstance(event, PortRequested):  # answered as pywatt run does
                rid = event.request.request_id
                try:
                    conn.answer_port(rid, port=allocate_port(event.request.specific_port))
                except OSError as exc:
                    conn.answer_port(rid, error=str(exc))
            elif isinstance(event, CallRequested):
                self._deliver_call(conn, event)
            elif isinstance(event, ProviderRegistrationRequested):
                conn.answer_service(self.registry.register(self._module_id, event.request))
            elif isinstance(event, ProviderDiscoveryRequested):
                # every module of this client is up while it runs
                conn.answer_service(self.registry.discover(event.request, lambda _id: True))
            elif isinstance(event, AnnounceTimedOut):
                raise ModuleStopped(f"module did not announce within {self.timeout}s", None)
            # AnnounceReceived is read from conn.announce; BadModuleLine and others: ignored
        pending = conn.data_to_send()
        if pending:
            self._write(pending, time.monotonic() + self.timeout)

    def _deliver_call(self, conn: OrchestratorConnection, call: CallRequested) -> None:
        """Deliver a module call to the peer named by it and relay the answer."""
        peer = self._peers.get(call.target_module_id)
        if peer is None:
            conn.fail_call(
                call.request_id, "unknown_module", f"no module {call.target_module_id!r}"
            )
            return
        try:
            answer = peer.request(
                "POST", call.target_endpoint, headers=call.headers, content=call.body
            )
        except ModuleStopped as exc:
            conn.fail_call(call.request_id, "target_failed", str(exc))
            return
        conn.answer_call(call.request_id, answer.status_code, dict(answer.headers), answer.content)

    def _pump(self, done: Any) -> None:
        """Read the module's output and act on it until ``done()`` is true."""
        conn = self._conn
        assert conn is not None
        pending = conn.data_to_send()
        if pending:
            self._write(pending, time.monotonic() + self.timeout)
        while not done():
            if conn.state.name in ("EXITED", "FAILED"):
                raise self._stopped()
            timer = conn.get_timer()
            wait = None if timer is None else max(0.0, timer - time.monotonic())
            readable, _, _ = select.select([self._from_module], [], [], wait)
            if readable:
                self._read_once()
            else:
                conn.handle_timer(time.monotonic())
                self._drain_events()

    def _stopped(self) -> ModuleStopped:
        thread = self._thread
        if thread is not None:
            thread.join(self.timeout)
        code = self._code
        why = f": {self._error!r}" if self._error is not None else ""
        return ModuleStopped(f"the module stopped (exit status {code}){why}", code)

    # ---------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        headers: _HeaderInput = None,
        content: bytes | str | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
    ) -> TestResponse:
        """Send one request through the module and return its answer.

        ``url`` is a path (``"/items?x=1"``) or an absolute URL; ``params`` are added to
        its query. The body is ``content``, or ``json`` (compact JSON,
        ``content-type: application/json``), or ``data`` (a form,
        ``application/x-www-form-urlencoded``).

        Raises:
            ModuleStopped: the module stopped (or failed to start).
            ValueError: more than one body argument.
        """
        if sum(x is not None for x in (content, json, data)) > 1:
            raise ValueError("give at most one of content, json and data")
        parts = urlsplit(url)
        target = parts.path or "/"
        query = parts.query
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            extra = urlencode([(str(k), v) for k, v in items])
            query = f"{query}&{extra}" if query else extra
        if query:
            target = f"{target}?{query}"
        pairs = [("host", parts.netloc or self._host), *self._headers, *_header_pairs(headers)]
        body: bytes | None = None
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            pairs.append(("content-type", "application/json"))
        elif data is not None:
            body = urlencode(data).encode()
            pairs.append(("content-type", "application/x-www-form-urlencoded"))
        elif content is not None:
            body = content.encode() if isinstance(content, str) else bytes(content)
        if body is not None:
            pairs.append(("content-length", str(len(body))))
        joined: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        with self._lock:
            self.start()
            conn = self._conn
            assert conn is not None
            if conn.state.name != "RUNNING":
                raise self._stopped()
            errors: list[BaseException] = []
            with (
                _logged_errors(errors) if self.raise_server_exceptions else contextlib.nullcontext()
            ):
                rid = conn.send_request(method.upper(), target, joined, body, time.monotonic())
                self._pump(lambda: rid in self._responses)
            response = self._responses.pop(rid)
            if errors:
                raise errors[0]
            return response

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("GET", url, ...)``."""
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("HEAD", url, ...)``."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("OPTIONS", url, ...)``."""
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("POST", url, ...)``."""
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("PUT", url, ...)``."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("PATCH", url, ...)``."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("DELETE", url, ...)``."""
        return self.request("DELETE", url, **kwargs)

    # ---------------------------------------------------------------- secrets
    def rotate(self, values: Mapping[str, str]) -> tuple[str, str | None]:
        """Rotate secrets as an orchestrator does (``secret`` lines, then ``rotated``)
        and wait for the module's acknowledgement; return ``(status, message)``
        (``"success"`` or ``"error"``).

        Raises:
            ModuleStopped: the module stopped before acknowledging.
        """
        with self._lock:
            self.start()
            conn = self._conn
            assert conn is not None
            self._rotations += 1
            rotation_id = f"rot-{self._rotations}"
            self._served.update(values.values())
            conn.rotate(values, rotation_id)
            self._pump(lambda: rotation_id in self._acks)
            return self._acks.pop(rotation_id)


@contextlib.contextmanager
def _logged_errors(errors: list[BaseException]) -> Iterator[None]:
    """While inside, collect the exceptions logged at ERROR by the ``pywatt`` loggers."""
    import logging

    class Catcher(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                errors.append(record.exc_info[1])

    handler = Catcher(logging.ERROR)
    logging.getLogger("pywatt").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("pywatt").removeHandler(handler)


def _header_pairs(headers: _HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]
