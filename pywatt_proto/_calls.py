"""Module-to-module calls and the service-provider registry: the pure parts (spec/modules.md).

Module side
-----------
:class:`CallTracker` is the sender's table of calls in flight. ``start`` builds the
``route_to_module`` message (a fresh UUID ``request_id``; the argument wrapped in a ``Message``
envelope as the reference writes it, with the caller's timeout in
``metadata.properties.pywatt_timeout_ms``), ``on_response`` turns the matching
``routed_module_response`` into :class:`CallReplied` (the decoded reply value) or
:class:`CallFailed` (a :class:`CallError` subclass per error kind), and ``handle_timer(now)``
fails the calls whose deadline passed -- the backstop for an orchestrator that never answers.
Many calls may be in flight; answers may come in any order.

:class:`ServiceRequests` pairs ``register_service_provider`` / ``discover_service_providers``
with their answers first-in-first-out per op (the messages carry no correlation field). A
request whose deadline passed keeps its place, so a late answer is consumed by it and never
shifts the pairing.

Orchestrator side
-----------------
:class:`PendingCalls` is the orchestrator's table of calls read from one sender and not yet
answered (deadline, bound, duplicates). :func:`call_delivery` turns a call's payload into the
POST body and headers delivered to the target, :func:`reply_from_http` turns the target's HTTP
answer into the reply payload or a :class:`~pywatt_proto.RouteError`, and
:func:`error_answer` builds the immediate error answer. :class:`ProviderRegistry` keeps the
providers; health is asked from the caller (the host knows the processes).

Nothing here reads a clock or does I/O: every method that needs time takes ``now``. Every table
is bounded (constants below, spec/limits.md).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._json import dump_value, loads, normalize_value
from ._messages import (
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
    JsonValue,
    RegisterServiceProvider,
    RegisterServiceProviderResponse,
    RoutedModuleResponse,
    RouteError,
    RouteToModule,
    ServiceProviderInfo,
)
from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random
    import uuid
    from typing import Final, TypeAlias

__all__ = [
    "CALL_ID_HEADER",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_SERVICE_TIMEOUT",
    "MAX_CALL_TIMEOUT",
    "MAX_CALLS_IN_FLIGHT",
    "MAX_PENDING_CALLS",
    "MAX_PENDING_SERVICE_REQUESTS",
    "MAX_PROVIDERS",
    "SOURCE_HEADER",
    "TIMEOUT_PROPERTY",
    "CallDeadlineError",
    "CallError",
    "CallFailed",
    "CallRejectedError",
    "CallReplied",
    "CallTracker",
    "PendingCall",
    "PendingCalls",
    "ProviderRegistry",
    "RoutedMessage",
    "ServiceAnswered",
    "ServiceFailed",
    "ServiceRegistryError",
    "ServiceRequests",
    "TargetFailedError",
    "UnknownEndpointError",
    "UnknownModuleError",
    "call_delivery",
    "call_error",
    "decode_reply",
    "error_answer",
    "reply_from_http",
    "routed_message",
    "service_result",
]

# ---------------------------------------------------------------------------
# Limits and names (spec/limits.md section 1, spec/modules.md)
# ---------------------------------------------------------------------------

#: Calls a module has in flight; one more raises CallRejectedError and sends nothing. Four
#: times the module's request bound (1,024): a gateway fans one request out to a few calls.
MAX_CALLS_IN_FLIGHT: Final = 4096
#: Calls the orchestrator holds for one sender; one more is answered ``rejected``. Equal to
#: the sender's own bound, so a well-behaved sender is never refused.
MAX_PENDING_CALLS: Final = 4096
#: Seconds a call may take when the caller gives no timeout (the reference's 30 s).
DEFAULT_CALL_TIMEOUT: Final = 30.0
#: Longest deadline honoured: a forgotten call cannot hold a table slot for long.
MAX_CALL_TIMEOUT: Final = 300.0
#: Registration/discovery requests awaiting their answer, per op (a loop gone wrong stops here).
MAX_PENDING_SERVICE_REQUESTS: Final = 64
#: Seconds to wait for a registration/discovery answer (the reference's 30 s).
DEFAULT_SERVICE_TIMEOUT: Final = 30.0
#: Providers one registry holds; one more registration answers success=false.
MAX_PROVIDERS: Final = 1024
#: Header naming the calling module on a delivered call.
SOURCE_HEADER: Final = "x-pywatt-source-module"
#: Header carrying the call's request_id on a delivered call.
CALL_ID_HEADER: Final = "x-pywatt-call-id"
#: ``metadata.properties`` member of the call envelope: the caller's deadline in ms.
TIMEOUT_PROPERTY: Final = "pywatt_timeout_ms"

#: Longest ``message`` text put into an error answer (it is for people, not for data).
_MAX_MESSAGE: Final = 200
_JSON_TYPES: Final = ("application/json",)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class CallError(Exception):
    """A module call failed. ``kind`` is the wire kind (spec/modules.md section 5).

    Attributes: ``kind``, ``message``, ``status`` (the target's HTTP status or None),
    ``target`` (module id) and ``endpoint`` of the call.
    """

    kind = "failed"

    def __init__(
        self, message: str, *, target: str = "", endpoint: str = "", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        self.endpoint = endpoint
        self.status = status

    def __str__(self) -> str:
        where = f"{self.target}{self.endpoint}" if self.target else ""
        return f"{self.kind}: {self.message}" + (f" ({where})" if where else "")


class UnknownModuleError(CallError):
    """No module with that id is known to the orchestrator."""

    kind = "unknown_module"


class UnknownEndpointError(CallError):
    """The target has no route for the endpoint (it answered 404 or 405)."""

    kind = "unknown_endpoint"


class TargetFailedError(CallError):
    """The target answered a non-2xx status (``status``) or exited / was not running."""

    kind = "target_failed"


class CallDeadlineError(CallError, TimeoutError):
    """No answer within the call's deadline."""

    kind = "deadline"


class CallRejectedError(CallError):
    """The call could not be made: too many in flight, a bad payload, or stopping."""

    kind = "rejected"


_KINDS: Final[dict[str, type[CallError]]] = {
    cls.kind: cls
    for cls in (
        UnknownModuleError,
        UnknownEndpointError,
        TargetFailedError,
        CallDeadlineError,
        CallRejectedError,
    )
}


def call_error(err: RouteError, *, target: str = "", endpoint: str = "") -> CallError:
    """Return the exception for wire error ``err`` (a plain :class:`CallError` for a kind
    this version does not know). Never raises."""
    cls = _KINDS.get(err.kind, CallError)
    exc = cls(err.message, target=target, endpoint=endpoint, status=err.status)
    if cls is CallError:
        exc.kind = err.kind
    return exc


class ServiceRegistryError(Exception):
    """A registration or discovery failed: ``success`` false (the orchestrator's ``error``
    text), or no answer within the deadline."""


# ---------------------------------------------------------------------------
# Events (handed to the driver by ModuleConnection.next_event)
# ---------------------------------------------------------------------------


@record
class CallReplied:
    """Call ``request_id`` was answered; ``value`` is the decoded reply (JSON value or bytes)."""

    request_id: str
    value: object


@record
class CallFailed:
    """Call ``request_id`` failed; ``error`` is the exception to raise in the caller."""

    request_id: str
    error: CallError


@record
class ServiceAnswered:
    """The registration/discovery with ``token`` was answered (``response.success`` may be
    False)."""

    token: int
    response: RegisterServiceProviderResponse | DiscoverServiceProvidersResponse


@record
class ServiceFailed:
    """The registration/discovery with ``token`` got no answer in time (or input closed)."""

    token: int
    reason: str


@record
class RoutedMessage:
    """A one-way ``routed_module_message`` as handlers see it: ``value`` is the decoded
    argument (envelope unwrapped, spec/modules.md section 2)."""

    source_module_id: str
    request_id: str
    value: object


# ---------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------


def _envelope_content(value: object) -> tuple[bool, object, int | None]:
    """``(is_envelope, argument, timeout_ms)`` of a decoded JSON payload value."""
    if type(value) is dict and type(value.get("id")) is str and "content" in value:
        timeout_ms: int | None = None
        meta = value.get("metadata")
        if type(meta) is dict:
            props = meta.get("properties")
            if type(props) is dict:
                raw = props.get(TIMEOUT_PROPERTY)
                if type(raw) is int and raw >= 1:
                    timeout_ms = raw
        return True, value["content"], timeout_ms
    return False, value, None


def _decode_json(data: bytes) -> JsonValue:
    try:
        value: JsonValue = normalize_value(loads(data))
    except RemoteProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"JSON payload is invalid: {exc}") from None
    return value


def _payload_argument(payload: EncodedMessage) -> tuple[object, int | None]:
    fmt = payload.format
    if fmt is EncodingFormat.JSON:
        _, value, timeout_ms = _envelope_content(_decode_json(payload.data))
        return value, timeout_ms
    if fmt is EncodingFormat.BINARY:
        return payload.data, None
    if fmt is EncodingFormat.BASE64:
        import base64
        import binascii

        try:
            return base64.b64decode(payload.data, validate=True), None
        except (binascii.Error, ValueError):
            raise RemoteProtocolError("Base64 payload is invalid", field="payload") from None
    raise RemoteProtocolError(
        f"payload format {fmt.wire_name} cannot be delivered", field="payload"
    )


def call_delivery(
    payload: EncodedMessage, *, source_module_id: str, request_id: str
) -> tuple[dict[str, str], bytes, int | None]:
    """Return ``(headers, body, timeout_ms)`` of the POST that delivers a call (section 3).

    ``body`` is the argument: compact JSON for a ``Json`` payload (the envelope's ``content``,
    or the whole value when it is not an envelope), raw bytes for ``Binary``/``Base64``.
    ``timeout_ms`` is the caller's deadline from the envelope, or None.

    Raises ``RemoteProtocolError`` for an ``Auto`` or undecodable payload (answer the call
    ``rejected``).
    """
    value, timeout_ms = _payload_argument(payload)
    if isinstance(value, bytes):
        ctype, body = "application/octet-stream", value
    else:
        ctype, body = "application/json", dump_value(value).encode("utf-8")
    headers = {"content-type": ctype, CALL_ID_HEADER: request_id, SOURCE_HEADER: source_module_id}
    return headers, body, timeout_ms


def routed_message(
    source_module_id: str, request_id: str, payload: EncodedMessage
) -> RoutedMessage:
    """Return the :class:`RoutedMessage` a one-way handler receives.

    Raises ``RemoteProtocolError`` for a payload that cannot be decoded.
    """
    value, _ = _payload_argument(payload)
    return RoutedMessage(source_module_id=source_module_id, request_id=request_id, value=value)


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or media.endswith("+json")


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _error_text(body: bytes | None) -> str:
    """A short reason from a target's error body: its ``{"error": text}`` if it has one."""
    if not body:
        return ""
    try:
        value = loads(body)
    except (RemoteProtocolError, ValueError, RecursionError):
        return _short(body[:_MAX_MESSAGE].decode("utf-8", "replace"))
    if type(value) is dict:
        for key in ("error", "message", "detail"):
            if type(value.get(key)) is str:
                return _short(value[key])
    return _short(body[:_MAX_MESSAGE].decode("utf-8", "replace"))


def reply_from_http(
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    target: str,
    endpoint: str,
) -> EncodedMessage | RouteError:
    """Return the reply payload for a target's HTTP answer, or the error it means (section 4).

    2xx: ``Json`` (the body re-written compactly) when the media type is JSON and the body is
    valid JSON, ``Json`` ``null`` for an empty body, else ``Binary`` with the body bytes.
    404/405: ``unknown_endpoint``; any other status: ``target_failed``. Never raises.
    """
    if 200 <= status <= 299:
        if not body:
            return EncodedMessage(data=b"null", format=EncodingFormat.JSON)
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if _is_json_type(ctype):
            try:
                data = dump_value(_decode_json(body)).encode("utf-8")
            except (RemoteProtocolError, LocalProtocolError):
                pass
            else:
                return EncodedMessage(data=data, format=EncodingFormat.JSON)
        return EncodedMessage(data=bytes(body), format=EncodingFormat.BINARY)
    reason = _error_text(body)
    if status in (404, 405):
        text = f"{target} has no POST {endpoint} ({status})"
        return RouteError(kind=UnknownEndpointError.kind, message=text, status=status)
    text = f"{target} answered {status}" + (f": {reason}" if reason else "")
    return RouteError(kind=TargetFailedError.kind, message=_short(text), status=status)


def error_answer(
    source_module_id: str, request_id: uuid.UUID, err: RouteError
) -> RoutedModuleResponse:
    """Return the ``routed_module_response`` reporting ``err`` (section 5): the
    ``pywatt_error`` member, and the same object as the Json payload. Never raises."""
    from ._codec import encode_route_error

    data = ('{"pywatt_error":' + encode_route_error(err) + "}").encode("utf-8")
    return RoutedModuleResponse(
        source_module_id=source_module_id,
        request_id=request_id,
        payload=EncodedMessage(data=data, format=EncodingFormat.JSON),
        error=err,
    )


def decode_reply(payload: EncodedMessage) -> object:
    """Return the reply value of a successful call: ``Json`` -> the JSON value, ``Binary`` ->
    bytes, ``Base64`` -> the decoded bytes.

    Raises ``RemoteProtocolError`` for an ``Auto`` or undecodable payload.
    """
    fmt = payload.format
    if fmt is EncodingFormat.JSON:
        return _decode_json(payload.data)
    return _payload_argument(payload)[0]


# ---------------------------------------------------------------------------
# Module side: the sender's calls in flight
# ---------------------------------------------------------------------------


@record
class _Call:
    deadline: float
    target: str
    endpoint: str


class CallTracker:
    """The calls a module has in flight (see the module docstring).

    Args:
        max_in_flight: calls in flight at most (``CallRejectedError`` beyond).
        rng: randomness for request ids (default: a fresh ``random.Random()``).
    """

    def __init__(
        self, *, max_in_flight: int = MAX_CALLS_IN_FLIGHT, rng: random.Random | None = None
    ) -> None:
        if max_in_flight < 1:
            raise LocalProtocolError("max_in_flight must be at least 1")
        if rng is None:
            import random

            rng = random.Random()
        self._rng = rng
        self._max = max_in_flight
        self._calls: dict[str, _Call] = {}
        # (deadline, request_id); entries of answered calls are skipped lazily and the heap
        # is rebuilt when they outnumber the live ones (so it stays within 2x the bound).
        self._heap: list[tuple[float, str]] = []
        # Ids of calls failed here (deadline, cancel) whose answer may still arrive: dropped
        # quietly. The oldest are forgotten past the in-flight bound.
        self._gone: OrderedDict[str, None] = OrderedDict()

    @property
    def in_flight(self) -> int:
        """Calls started and not yet answered, failed or cancelled."""
        return len(self._calls)

    def start(
        self,
        target: str,
        endpoint: str,
        value: object,
        now: float,
        *,
        timeout: float | None = None,
    ) -> RouteToModule:
        """Start a call; return the ``route_to_module`` to send (``str(msg.request_id)`` is the
        call's id in later events).

        ``value``: bytes are sent as a ``Binary`` payload; anything else must be a JSON value
        and travels in a ``Message`` envelope. ``timeout``: seconds (default 30, at most 300);
        when given it is written into the envelope for the orchestrator.

        Raises ``CallRejectedError`` when ``max_in_flight`` calls are in flight, and
        ``LocalProtocolError`` for an empty target, an endpoint not starting with ``/``, a
        non-positive timeout or a value that is not JSON. Nothing is recorded then.
        """
        import uuid

        if type(target) is not str or not target:
            raise LocalProtocolError("target module id must be a non-empty string")
        if type(endpoint) is not str or not endpoint.startswith("/"):
            raise LocalProtocolError(f"endpoint must be a path starting with '/': {endpoint!r}")
        if timeout is not None and not timeout > 0:
            raise LocalProtocolError(f"timeout must be positive, got {timeout!r}")
        seconds = DEFAULT_CALL_TIMEOUT if timeout is None else min(timeout, MAX_CALL_TIMEOUT)
        rid = uuid.UUID(int=self._rng.getrandbits(128), version=4)
        if isinstance(value, bytes | bytearray | memoryview):
            payload = EncodedMessage(data=bytes(value), format=EncodingFormat.BINARY)
        else:
            props = (
                ""
                if timeout is None
                else f'"properties":{{"{TIMEOUT_PROPERTY}":{max(1, round(seconds * 1000))}}}'
            )
            try:
                content = dump_value(value)
            except (LocalProtocolError, TypeError, ValueError) as exc:
                raise LocalProtocolError(f"call payload is not a JSON value: {exc}") from None
            text = f'{{"id":"{rid}","content":{content},"metadata":{{{props}}}}}'
            payload = EncodedMessage(data=text.encode("utf-8"), format=EncodingFormat.JSON)
        msg = RouteToModule(
            target_module_id=target, target_endpoint=endpoint, request_id=rid, payload=payload
        )
        if len(self._calls) >= self._max:
            raise CallRejectedError(
                f"{self._max} calls already in flight", target=target, endpoint=endpoint
            )
        key = str(rid)
        deadline = now + seconds
        self._calls[key] = _Call(deadline=deadline, target=target, endpoint=endpoint)
        heapq.heappush(self._heap, (deadline, key))
        return msg

    def is_late(self, msg: RoutedModuleResponse) -> bool:
        """True if ``msg`` answers a call this tracker already failed or cancelled (drop it
        quietly; ``on_response`` returns None for it)."""
        return str(msg.request_id) in self._gone

    def _forget(self, key: str) -> None:
        gone = self._gone
        gone[key] = None
        if len(gone) > self._max:
            gone.popitem(last=False)

    def on_response(self, msg: RoutedModuleResponse) -> CallReplied | CallFailed | None:
        """Match a ``routed_module_response``; return its event, or None when no call with
        that id is in flight (a late or unknown answer: drop it). Never raises."""
        key = str(msg.request_id)
        call = self._calls.pop(key, None)
        if call is None:
            self._gone.pop(key, None)
            return None
        self._maybe_compact()
        if msg.error is not None:
            exc = call_error(msg.error, target=call.target, endpoint=call.endpoint)
            return CallFailed(request_id=key, error=exc)
        try:
            value = decode_reply(msg.payload)
        except RemoteProtocolError as err:
            exc = TargetFailedError(
                f"reply payload is invalid: {err.message}",
                target=call.target,
                endpoint=call.endpoint,
            )
            return CallFailed(request_id=key, error=exc)
        return CallReplied(request_id=key, value=value)

    def cancel(self, request_id: str) -> bool:
        """Forget call ``request_id`` (its caller went away); a later answer is dropped.
        Returns True if it was in flight."""
        found = self._calls.pop(request_id, None) is not None
        if found:
            self._forget(request_id)
            self._maybe_compact()
        return found

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._calls) + 64:
            self._heap = [(c.deadline, k) for k, c in self._calls.items()]
            heapq.heapify(self._heap)

    def get_timer(self) -> float | None:
        """Return the earliest call deadline (same clock as ``now``), or None."""
        heap, calls = self._heap, self._calls
        while heap:
            deadline, key = heap[0]
            call = calls.get(key)
            if call is not None and call.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[CallFailed]:
        """Fail every call whose deadline is at or before ``now`` (``CallDeadlineError``)."""
        out: list[CallFailed] = []
        heap, calls = self._heap, self._calls
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            call = calls.get(key)
            if call is None or call.deadline != deadline:
                continue
            del calls[key]
            self._forget(key)
            exc = CallDeadlineError(
                "no answer within the deadline", target=call.target, endpoint=call.endpoint
            )
            out.append(CallFailed(request_id=key, error=exc))
        return out

    def fail_all(self, reason: str) -> list[CallFailed]:
        """Fail every call in flight with ``CallRejectedError(reason)`` (input closed)."""
        out = [
            CallFailed(
                request_id=key,
                error=CallRejectedError(reason, target=c.target, endpoint=c.endpoint),
            )
            for key, c in self._calls.items()
        ]
        self._calls.clear()
        self._heap.clear()
        return out


# ---------------------------------------------------------------------------
# Module side: registration / discovery, first-in-first-out per op
# ---------------------------------------------------------------------------


class ServiceRequests:
    """Registration and discovery requests awaiting their answers (spec/modules.md section 7).

    ``start(msg, now)`` returns a token; ``on_response`` pairs an answer with the oldest
    request of its op. A request past its deadline is reported once by ``handle_timer`` and
    keeps its slot until an answer consumes it (then nothing is reported).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_SERVICE_TIMEOUT,
        max_pending: int = MAX_PENDING_SERVICE_REQUESTS,
    ) -> None:
        self._timeout = timeout
        self._max = max_pending
        self._next = 0
        # per op: [token, deadline, alive] in send order
        self._queues: dict[str, deque[list[float | int | bool]]] = {
            "register": deque(),
            "discover": deque(),
        }

    @staticmethod
    def _op(msg: object) -> str:
        if isinstance(msg, RegisterServiceProvider | RegisterServiceProviderResponse):
            return "register"
        return "discover"

    @property
    def pending(self) -> int:
        """Requests whose answer has not arrived (timed-out ones included)."""
        return sum(len(q) for q in self._queues.values())

    def start(self, msg: RegisterServiceProvider | DiscoverServiceProviders, now: float) -> int:
        """Record a request about to be sent; return its token.

        Raises ``LocalProtocolError`` when ``max_pending`` requests of that op await answers.
        """
        queue = self._queues[self._op(msg)]
        if len(queue) >= self._max:
            raise LocalProtocolError(f"{self._max} {self._op(msg)} requests awaiting an answer")
        self._next += 1
        queue.append([self._next, now + self._timeout, True])
        return self._next

    def on_response(
        self, msg: RegisterServiceProviderResponse | DiscoverServiceProvidersResponse
    ) -> ServiceAnswered | None:
        """Pair an answer with the oldest request of its op. Returns None when nothing is
        pending (unsolicited) or the paired request already timed out. Never raises."""
        queue = self._queues[self._op(msg)]
        if not queue:
            return None
        token, _, alive = queue.popleft()
        if not alive:
            return None
        return ServiceAnswered(token=int(token), response=msg)

    def get_timer(self) -> float | None:
        """Return the earliest deadline of a live request, or None."""
        best: float | None = None
        for queue in self._queues.values():
            for _token, deadline, alive in queue:
                if alive:  # deadlines grow along a queue (constant timeout)
                    if best is None or float(deadline) < best:
                        best = float(deadline)
                    break
        return best

    def handle_timer(self, now: float) -> list[ServiceFailed]:
        """Report every live request whose deadline is at or before ``now`` (once)."""
        out: list[ServiceFailed] = []
        for queue in self._queues.values():
            for entry in queue:
                if entry[2] and float(entry[1]) <= now:
                    entry[2] = False
                    out.append(ServiceFailed(token=int(entry[0]), reason="no answer in time"))
        return out

    def fail_all(self, reason: str) -> list[ServiceFailed]:
        """Report every live request as failed and forget all of them (input closed)."""
        out = [
            ServiceFailed(token=int(e[0]), reason=reason)
            for q in self._queues.values()
            for e in q
            if e[2]
        ]
        for q in self._queues.values():
            q.clear()
        return out


# ---------------------------------------------------------------------------
# Orchestrator side: one sender's pending calls
# ---------------------------------------------------------------------------


@record
class PendingCall:
    """A call the orchestrator read from a sender and has not answered yet."""

    request_id: uuid.UUID
    target_module_id: str
    target_endpoint: str
    deadline: float


class PendingCalls:
    """The orchestrator's table of one sender's unanswered calls (bounded, deadlines).

    Args:
        max_pending: calls held at most; ``add`` refuses more.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING_CALLS) -> None:
        self._max = max_pending
        self._calls: dict[str, PendingCall] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def add(
        self, msg: RouteToModule, now: float, timeout_ms: int | None
    ) -> PendingCall | RouteError:
        """Record ``msg``; return its entry, or the ``rejected`` error to answer at once (the
        id is already pending, or ``max_pending`` is reached). Never raises."""
        key = str(msg.request_id)
        if key in self._calls:
            return RouteError(kind=CallRejectedError.kind, message="request_id already in flight")
        if len(self._calls) >= self._max:
            return RouteError(kind=CallRejectedError.kind, message="too many calls in flight")
        seconds = DEFAULT_CALL_TIMEOUT if timeout_ms is None else timeout_ms / 1000.0
        entry = PendingCall(
            request_id=msg.request_id,
            target_module_id=msg.target_module_id,
            target_endpoint=msg.target_endpoint,
            deadline=now + min(seconds, MAX_CALL_TIMEOUT),
        )
        self._calls[key] = entry
        heapq.heappush(self._heap, (entry.deadline, key))
        return entry

    def pop(self, request_id: str) -> PendingCall | None:
        """Remove and return the pending call ``request_id`` (None if not pending)."""
        entry = self._calls.pop(request_id, None)
        if entry is not None and len(self._heap) > 2 * len(self._calls) + 64:
            self._heap = [(c.deadline, k) for k, c in self._calls.items()]
            heapq.heapify(self._heap)
        return entry

    def get_timer(self) -> float | None:
        """Return the earliest deadline, or None."""
        heap = self._heap
        while heap:
            deadline, key = heap[0]
            entry = self._calls.get(key)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def expire(self, now: float) -> list[PendingCall]:
        """Remove and return every call whose deadline is at or before ``now``."""
        out: list[PendingCall] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            entry = self._calls.get(key)
            if entry is not None and entry.deadline == deadline:
                del self._calls[key]
                out.append(entry)
        return out

    def clear(self) -> list[PendingCall]:
        """Remove and return every pending call."""
        out = list(self._calls.values())
        self._calls.clear()
        self._heap.clear()
        return out


# ---------------------------------------------------------------------------
# Orchestrator side: the provider registry
# ---------------------------------------------------------------------------

if TYPE_CHECKING:
    HealthCheck: TypeAlias = Callable[[str], bool]


class ProviderRegistry:
    """Service providers registered by the modules of one orchestrator (section 7).

    Records are kept in registration order; a module registering the same
    ``(service_type, name)`` again replaces its record and keeps its ``provider_id``.
    Health is not stored: ``discover`` asks ``healthy(module_id)`` (the host's view of the
    module's process).

    Args:
        max_providers: records held at most; one more registration answers success=false.
    """

    def __init__(self, *, max_providers: int = MAX_PROVIDERS) -> None:
        self._max = max_providers
        self._records: dict[tuple[str, object, str], ServiceProviderInfo] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._records)

    def register(
        self, module_id: str, req: RegisterServiceProvider
    ) -> RegisterServiceProviderResponse:
        """Record ``req`` for ``module_id``; return the answer to send. Never raises."""
        key = (module_id, req.service_type, req.name)
        old = self._records.get(key)
        if old is None and len(self._records) >= self._max:
            return RegisterServiceProviderResponse(
                success=False, provider_id=None, error=f"registry full ({self._max} providers)"
            )
        if old is None:
            self._next += 1
            provider_id = f"p{self._next}"
        else:
            provider_id = old.provider_id
        self._records[key] = ServiceProviderInfo(
            provider_id=provider_id,
            module_id=module_id,
            service_type=req.service_type,
            name=req.name,
            version=req.version,
            address=req.address,
            metadata=dict(req.metadata or {}),
            is_healthy=True,
        )
        return RegisterServiceProviderResponse(success=True, provider_id=provider_id, error=None)

    def discover(
        self, req: DiscoverServiceProviders, healthy: Callable[[str], bool]
    ) -> DiscoverServiceProvidersResponse:
        """Return the answer to ``req``: every provider of the type (``all_providers``), else
        the first healthy one (or none). ``is_healthy`` is ``healthy(module_id)``."""
        found: list[ServiceProviderInfo] = []
        for rec in self._records.values():
            if rec.service_type != req.service_type:
                continue
            ok = bool(healthy(rec.module_id))
            if req.all_providers:
                found.append(_with_health(rec, ok))
            elif ok:
                found.append(_with_health(rec, ok))
                break
        return DiscoverServiceProvidersResponse(success=True, providers=tuple(found), error=None)


def _with_health(rec: ServiceProviderInfo, ok: bool) -> ServiceProviderInfo:
    if rec.is_healthy is ok:
        return rec
    from ._records import replace

    return replace(rec, is_healthy=ok)


# ---------------------------------------------------------------------------
# Driver helpers (both drivers turn events into results the same way)
# ---------------------------------------------------------------------------


def service_result(event: ServiceAnswered | ServiceFailed) -> str | tuple[ServiceProviderInfo, ...]:
    """Return what ``register_service_provider`` (the provider id) or
    ``discover_service_providers`` (the provider records) give their caller.

    Raises ``ServiceRegistryError`` for a failed event, ``"success":false``, or a successful
    registration without a provider id.
    """
    if isinstance(event, ServiceFailed):
        raise ServiceRegistryError(event.reason)
    resp = event.response
    if not resp.success:
        raise ServiceRegistryError(resp.error or "the orchestrator refused the request")
    if isinstance(resp, RegisterServiceProviderResponse):
        if resp.provider_id is None:
            raise ServiceRegistryError("no provider id returned")
        return resp.provider_id
    return resp.providers
