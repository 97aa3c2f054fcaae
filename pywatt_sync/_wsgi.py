"""Serve any PEP 3333 (WSGI) application -- Flask, Django, bottle -- as a PyWatt module.

``wsgi_module(app).run()`` is all a user writes (or ``pywatt run pkg.mod:app``). The CGI
variables and response rules live in :mod:`pywatt_proto._gateway`; this file adds the
process's objects and drives the call:

* ``wsgi.input`` is a :class:`io.BytesIO` of the whole body (``CONTENT_LENGTH`` its real
  length, ``wsgi.input_terminated`` True: reading to EOF is safe); ``wsgi.errors`` is
  :data:`sys.stderr` (stdout is the protocol channel); ``wsgi.multithread`` is True,
  ``wsgi.multiprocess`` and ``wsgi.run_once`` False.
* The response is buffered until the iterable is exhausted, so a second
  ``start_response`` with ``exc_info`` replaces the headers while no body byte was
  produced, and re-raises ``exc_info`` after that (PEP 3333). The iterable's ``close()``
  is always called.

An exception from the app, a bad status line or an oversized body becomes a plain-text
500 (502 for oversize), logged to stderr; the module keeps serving.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final
from wsgiref.types import WSGIApplication

from pywatt_proto._driver import AppRoutes
from pywatt_proto._errors import LocalProtocolError
from pywatt_proto._gateway import (
    MAX_RESPONSE_BODY,
    ResponseCollector,
    error_response,
    parse_wsgi_status,
    wsgi_environ,
)
from pywatt_proto._messages import Endpoint
from pywatt_proto._router import Request, Response

from ._module import Module

_log = logging.getLogger("pywatt.wsgi")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Write = Callable[[bytes], object]


class WsgiApp:
    """Calls one WSGI application per request and collects the whole response.

    ``url_scheme`` fills ``wsgi.url_scheme``; ``script_name`` is the mount
    prefix split off ``PATH_INFO``; ``server`` is the ``SERVER_NAME`` /
    ``SERVER_PORT`` fallback when a request has no ``Host`` header;
    ``max_body`` bounds each response body. Thread-safe: no state is shared
    between calls.
    """

    __slots__ = ("_app", "_max_body", "_script_name", "_server", "_url_scheme")

    def __init__(
        self,
        app: WSGIApplication,
        *,
        url_scheme: str = "http",
        script_name: str = "",
        server: tuple[str, int] = ("localhost", 80),
        max_body: int = MAX_RESPONSE_BODY,
    ) -> None:
        """Wrap ``app``; nothing is called until :meth:`handle`."""
        self._app = app
        self._url_scheme = url_scheme
        self._script_name = script_name
        self._server = server
        self._max_body = max_body

    def environ(self, request: Request) -> dict[str, Any]:
        """Return the full PEP 3333 environ for ``request`` (fresh objects each call).

        Raises:
            RemoteProtocolError: the request has an invalid header (hint 400).
        """
        return {
            **wsgi_environ(request, script_name=self._script_name, server=self._server),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self._url_scheme,
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def handle(self, request: Request) -> Response:
        """Call the app for one request and return its whole response.

        Never raises for app errors (see the module docstring); exceptions
        that are not :class:`Exception` (``KeyboardInterrupt``, ``SystemExit``)
        propagate after ``close()``.

        Raises:
            RemoteProtocolError: the request has an invalid header (hint 400;
                the router answers it before the app is called).
        """
        environ = self.environ(request)
        collector = ResponseCollector(max_body=self._max_body)

        def write(data: bytes) -> None:
            if not isinstance(data, bytes | bytearray):
                raise LocalProtocolError(
                    f"WSGI write() needs bytes, got {type(data).__name__}",
                    error_status_hint=500,
                )
            collector.body(bytes(data))

        def start_response(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: ExcInfo | tuple[None, None, None] | None = None,
            /,
        ) -> Write:
            if exc_info is not None and exc_info[1] is not None:
                try:
                    if collector.body_size > 0:
                        # PEP 3333: headers already sent -> re-raise the app's error.
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None  # break the frame <-> traceback cycle
                collector.start(parse_wsgi_status(status), headers, replace=True)
            else:
                collector.start(parse_wsgi_status(status), headers)
            return write

        result: Iterable[bytes] | None = None
        try:
            result = self._app(environ, start_response)
            for chunk in result:
                if not isinstance(chunk, bytes | bytearray):
                    raise LocalProtocolError(
                        f"WSGI iterable yielded {type(chunk).__name__}, not bytes",
                        error_status_hint=500,
                    )
                if chunk:
                    collector.body(bytes(chunk))
            return collector.finish()
        except Exception as exc:
            _log.exception("WSGI app failed on %s %s", request.method, request.path)
            hint = exc.error_status_hint if isinstance(exc, LocalProtocolError) else 500
            return error_response(hint if collector.failed else 500)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.exception("WSGI iterable close() failed")


# -- serving a WSGI app as a module -----------------------------------------------

# Werkzeug rule converters -> router parameter types ("default"/"string"/"any" -> str).
_CONVERTERS: Final = {"int": "int", "float": "float", "path": "path", "uuid": "uuid"}
_RULE_PARAM = re.compile(r"<(?:([a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def flask_rule_to_pattern(rule: str) -> str:
    """Return a Werkzeug rule (``/items/<int:id>``) in router syntax (``/items/{id:int}``).

    Unknown converters (``string``, ``any(...)``, custom ones) become plain
    ``{name}`` segments. Never raises.
    """

    def repl(match: re.Match[str]) -> str:
        kind = _CONVERTERS.get(match.group(1) or "")
        return f"{{{match.group(2)}:{kind}}}" if kind else f"{{{match.group(2)}}}"

    return _RULE_PARAM.sub(repl, rule)


def flask_endpoints(app: object) -> tuple[Endpoint, ...] | None:
    """Return the endpoints of a Flask/Werkzeug app (its ``url_map``), or None.

    ``HEAD`` and ``OPTIONS``, which Flask adds to every rule, are dropped (the
    router announces neither). Returns None when ``app`` has no ``url_map``.
    """
    url_map = getattr(app, "url_map", None)
    if url_map is None or not hasattr(url_map, "iter_rules"):
        return None
    found: dict[str, list[str]] = {}
    for rule in url_map.iter_rules():
        path = flask_rule_to_pattern(str(rule.rule))
        methods = sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))
        bucket = found.setdefault(path, [])
        bucket.extend(m for m in methods if m not in bucket)
    return tuple(Endpoint(path=p, methods=tuple(ms)) for p, ms in found.items() if ms)


class WsgiModule(AppRoutes, Module):
    """A :class:`Module` whose requests are served by a WSGI application, on its worker
    threads, through catch-all routes (:class:`~pywatt_proto._driver.AppRoutes`: the app
    answers its own 404/405; decorator routes win). The announce lists ``endpoints`` if
    given, else the app's rules (:func:`flask_endpoints`)."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        endpoints: Iterable[Endpoint] | None = None,
        url_scheme: str = "http",
        script_name: str = "",
        max_body: int = MAX_RESPONSE_BODY,
        **module_options: Any,
    ) -> None:
        """Wrap ``app``; ``module_options`` go to :class:`Module` (``secrets``, ...).

        Raises:
            ValueError: an invalid module option.
        """
        super().__init__(**module_options)
        self.wsgi = WsgiApp(app, url_scheme=url_scheme, script_name=script_name, max_body=max_body)
        # Flask's wsgi_app is a bound method of the Flask object that owns url_map.
        self._app_object = getattr(app, "__self__", app)
        self._mount_app(self.wsgi.handle, "wsgi", endpoints)

    def _listed_endpoints(self) -> tuple[Endpoint, ...] | None:
        return flask_endpoints(self._app_object)


def wsgi_module(app: WSGIApplication, **options: Any) -> WsgiModule:
    """Return a module serving the WSGI application ``app`` (see :class:`WsgiModule`).

    ``options``: ``endpoints``, ``url_scheme``, ``script_name``, ``max_body``
    and every :class:`Module` option (``secrets``, ``max_workers``, ...).
    ``wsgi_module(app).run()`` serves stdin/stdout and exits the process.
    """
    return WsgiModule(app, **options)
