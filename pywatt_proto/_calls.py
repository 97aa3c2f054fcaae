"""Module-to-module calls and the service-provider registry, the caller's side (spec/modules.md).

:class:`CallTracker` is the sender's table of calls in flight: ``start`` builds the
``route_to_module`` message (a fresh UUID ``request_id``, the argument in a ``Message`` envelope
as the reference writes it, the caller's timeout in ``metadata.properties``), ``on_response``
turns the matching ``routed_module_response`` into :class:`CallReplied` or :class:`CallFailed`
(a :class:`CallError` subclass per error kind), and ``handle_timer(now)`` fails the calls whose
deadline passed. :class:`ServiceRequests` pairs registry requests with their answers
first-in-first-out per op (the messages carry no correlation field). The orchestrator's side
is ``_routing.py``. Pure (time comes in as ``now``); every table is bounded (spec/limits.md).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Generic, TypeVar  # not on the start-up path: loaded on the first call

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
    from typing import Final

_E = TypeVar("_E")

# ---------------------------------------------------------------------------
# Limits and names (spec/limits.md section 1, spec/modules.md)
# ---------------------------------------------------------------------------

#: Calls a module has in flight; one more raises CallRejectedError and sends nothing. Four
#: times the module's request bound (1,024): a gateway fans one request out to a few calls.
MAX_CALLS_IN_FLIGHT: Final = 4096
#: Seconds a call may take when the caller gives no timeout (the reference's 30 s).
DEFAULT_CALL_TIMEOUT: Final = 30.0
#: Longest deadline honoured: a forgotten call cannot hold a table slot for long.
MAX_CALL_TIMEOUT: Final = 300.0
#: Registration/discovery requests awaiting their answer, per op (a loop gone wrong stops here).
MAX_PENDING_SERVICE_REQUESTS: Final = 64
#: Seconds to wait for a registration/discovery answer (the reference's 30 s).
DEFAULT_SERVICE_TIMEOUT: Final = 30.0
#: ``metadata.properties`` member of the call envelope: the caller's deadline in ms.
TIMEOUT_PROPERTY: Final = "pywatt_timeout_ms"


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
# Payloads (both sides: ``_routing`` delivers and answers calls with these)
# ---------------------------------------------------------------------------


def decode_json_payload(data: bytes) -> JsonValue:
    """Return the value of a ``Json`` payload (serde's reader rules and Value conversion).
    Raises ``RemoteProtocolError`` for invalid JSON."""
    try:
        value: JsonValue = normalize_value(loads(data))
    except (ValueError, RecursionError) as exc:  # loads raises RemoteProtocolError itself
        raise RemoteProtocolError(f"JSON payload is invalid: {exc}") from None
    return value


def payload_argument(payload: EncodedMessage) -> tuple[object, int | None]:
    """Return ``(argument, timeout_ms)`` of a call's payload: a Json ``Message`` envelope's
    ``content`` and its ``TIMEOUT_PROPERTY``, another Json value whole, Binary/Base64 bytes.
    Raises ``RemoteProtocolError`` for an ``Auto`` or undecodable payload."""
    fmt = payload.format
    if fmt is EncodingFormat.JSON:
        value = decode_json_payload(payload.data)
        if type(value) is dict and type(value.get("id")) is str and "content" in value:
            meta = value.get("metadata")
            props = meta.get("properties") if type(meta) is dict else None
            raw = props.get(TIMEOUT_PROPERTY) if type(props) is dict else None
            return value["content"], raw if type(raw) is int and raw >= 1 else None
        return value, None
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


def routed_message(
    source_module_id: str, request_id: str, payload: EncodedMessage
) -> RoutedMessage:
    """Return the :class:`RoutedMessage` a one-way handler receives.

    Raises ``RemoteProtocolError`` for a payload that cannot be decoded.
    """
    value, _ = payload_argument(payload)
    return RoutedMessage(source_module_id=source_module_id, request_id=request_id, value=value)


def decode_reply(payload: EncodedMessage) -> object:
    """Return the reply value of a successful call: ``Json`` -> the JSON value, ``Binary`` ->
    bytes, ``Base64`` -> the decoded bytes.

    Raises ``RemoteProtocolError`` for an ``Auto`` or undecodable payload.
    """
    fmt = payload.format
    if fmt is EncodingFormat.JSON:
        return decode_json_payload(payload.data)
    return payload_argument(payload)[0]


# ---------------------------------------------------------------------------
# Calls by id with deadlines (both sides)
# ---------------------------------------------------------------------------


class DeadlineTable(Generic[_E]):
    """Entries by key, each with a deadline; the earliest deadline is found at once.

    A heap of ``(deadline, key)`` with lazy deletion: an entry removed by :meth:`pop`
    stays in the heap until it reaches the top, and the heap is rebuilt when such entries
    outnumber the live ones, so it holds at most twice the entries plus 64. The bound on
    the entries is the caller's. Used by :class:`CallTracker` (the caller's calls) and
    ``_routing.PendingCalls`` (the orchestrator's).
    """

    __slots__ = ("_entries", "_heap")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, _E]] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: str, deadline: float, entry: _E) -> None:
        """Record ``entry`` under ``key`` (replacing one there) until ``deadline``."""
        self._entries[key] = (deadline, entry)
        heapq.heappush(self._heap, (deadline, key))

    def pop(self, key: str) -> _E | None:
        """Remove and return the entry ``key`` (None if there is none)."""
        item = self._entries.pop(key, None)
        if item is None:
            return None
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(deadline, k) for k, (deadline, _) in self._entries.items()]
            heapq.heapify(self._heap)
        return item[1]

    def get_timer(self) -> float | None:
        """Return the earliest deadline (same clock as ``now``), or None."""
        heap, entries = self._heap, self._entries
        while heap:
            deadline, key = heap[0]
            item = entries.get(key)
            if item is not None and item[0] == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def expire(self, now: float) -> list[tuple[str, _E]]:
        """Remove and return ``(key, entry)`` for every deadline at or before ``now``."""
        out: list[tuple[str, _E]] = []
        heap, entries = self._heap, self._entries
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            item = entries.get(key)
            if item is not None and item[0] == deadline:
                del entries[key]
                out.append((key, item[1]))
        return out

    def clear(self) -> list[tuple[str, _E]]:
        """Remove and return ``(key, entry)`` for every entry."""
        out = [(key, entry) for key, (_, entry) in self._entries.items()]
        self._entries.clear()
        self._heap.clear()
        return out


# ---------------------------------------------------------------------------
# Module side: the sender's calls in flight
# ---------------------------------------------------------------------------


@record
class _Call:
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
        self._calls: DeadlineTable[_Call] = DeadlineTable()
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
        self._calls.add(str(rid), now + seconds, _Call(target=target, endpoint=endpoint))
        return msg

    def _forget(self, key: str) -> None:
        gone = self._gone
        gone[key] = None
        if len(gone) > self._max:
            gone.popitem(last=False)

    def on_response(
        self, msg: RoutedModuleResponse
    ) -> CallReplied | CallFailed | RoutedModuleResponse | None:
        """Match a ``routed_module_response``; return its event, None for a call this tracker
        already failed or cancelled (drop it quietly), or ``msg`` itself when no call with
        that id was made (an unknown answer). Never raises."""
        key = str(msg.request_id)
        call = self._calls.pop(key)
        if call is None:
            if key not in self._gone:
                return msg
            del self._gone[key]
            return None
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
        found = self._calls.pop(request_id) is not None
        if found:
            self._forget(request_id)
        return found

    def get_timer(self) -> float | None:
        """Return the earliest call deadline (same clock as ``now``), or None."""
        return self._calls.get_timer()

    def handle_timer(self, now: float) -> list[CallFailed]:
        """Fail every call whose deadline is at or before ``now`` (``CallDeadlineError``)."""
        out: list[CallFailed] = []
        for key, call in self._calls.expire(now):
            self._forget(key)
            exc = CallDeadlineError(
                "no answer within the deadline", target=call.target, endpoint=call.endpoint
            )
            out.append(CallFailed(request_id=key, error=exc))
        return out

    def fail_all(self, reason: str) -> list[CallFailed]:
        """Fail every call in flight with ``CallRejectedError(reason)`` (input closed)."""
        return [
            CallFailed(
                request_id=key,
                error=CallRejectedError(reason, target=c.target, endpoint=c.endpoint),
            )
            for key, c in self._calls.clear()
        ]


# ---------------------------------------------------------------------------
# Module side: registration / discovery, first-in-first-out per op
# ---------------------------------------------------------------------------


@record(frozen=False)
class _Waiting:
    """One registry request awaiting its answer (``alive`` False once reported failed)."""

    token: int
    deadline: float
    alive: bool = True


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
        # per op, in send order
        self._queues: dict[str, deque[_Waiting]] = {
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
        queue.append(_Waiting(token=self._next, deadline=now + self._timeout))
        return self._next

    def on_response(
        self, msg: RegisterServiceProviderResponse | DiscoverServiceProvidersResponse
    ) -> ServiceAnswered | None:
        """Pair an answer with the oldest request of its op. Returns None when nothing is
        pending (unsolicited) or the paired request already timed out. Never raises."""
        queue = self._queues[self._op(msg)]
        if not queue:
            return None
        entry = queue.popleft()
        if not entry.alive:
            return None
        return ServiceAnswered(token=entry.token, response=msg)

    def get_timer(self) -> float | None:
        """Return the earliest deadline of a live request, or None."""
        # deadlines grow along a queue (constant timeout): its first live entry is its earliest
        live = (next((e.deadline for e in q if e.alive), None) for q in self._queues.values())
        return min((d for d in live if d is not None), default=None)

    def handle_timer(self, now: float) -> list[ServiceFailed]:
        """Report every live request whose deadline is at or before ``now`` (once)."""
        out: list[ServiceFailed] = []
        for queue in self._queues.values():
            for entry in queue:
                if entry.alive and entry.deadline <= now:
                    entry.alive = False
                    out.append(ServiceFailed(token=entry.token, reason="no answer in time"))
        return out

    def fail_all(self, reason: str) -> list[ServiceFailed]:
        """Report every live request as failed and forget all of them (input closed)."""
        out = [
            ServiceFailed(token=e.token, reason=reason)
            for q in self._queues.values()
            for e in q
            if e.alive
        ]
        for q in self._queues.values():
            q.clear()
        return out


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
