"""Module calls and the provider registry, the orchestrator's side (spec/modules.md).

:class:`PendingCalls` is the orchestrator's table of the calls read from one sender and not
yet answered (deadline, bound, duplicate ids). :func:`call_delivery` turns a call's payload
into the POST body and headers delivered to the target, :func:`reply_from_http` turns the
target's HTTP answer into the reply payload or a :class:`~pywatt_proto.RouteError`, and
:func:`call_answer` builds the ``routed_module_response``. :class:`ProviderRegistry` keeps
the service providers; health is asked from the caller (the host knows the processes).
``OrchestratorConnection`` uses all of them; the caller's side is in ``_calls.py``. Pure
(time comes in as ``now``); every table is bounded (spec/limits.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._calls import (
    DEFAULT_CALL_TIMEOUT,
    MAX_CALL_TIMEOUT,
    CallRejectedError,
    DeadlineTable,
    TargetFailedError,
    UnknownEndpointError,
    decode_json_payload,
    payload_argument,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._json import dump_value, loads
from ._messages import (
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
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
    import uuid
    from typing import Final

#: Calls the orchestrator holds for one sender; one more is answered ``rejected``. Equal to
#: the sender's own bound (``MAX_CALLS_IN_FLIGHT``), so a well-behaved sender is never refused.
MAX_PENDING_CALLS: Final = 4096
#: Providers one registry holds; one more registration answers success=false.
MAX_PROVIDERS: Final = 1024
#: Header naming the calling module on a delivered call.
SOURCE_HEADER: Final = "x-pywatt-source-module"
#: Header carrying the call's request_id on a delivered call.
CALL_ID_HEADER: Final = "x-pywatt-call-id"
#: Longest ``message`` text put into an error answer (it is for people, not for data).
_MAX_MESSAGE: Final = 200


# ---------------------------------------------------------------------------
# Delivery and answers
# ---------------------------------------------------------------------------


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
    value, timeout_ms = payload_argument(payload)
    if isinstance(value, bytes):
        ctype, body = "application/octet-stream", value
    else:
        ctype, body = "application/json", dump_value(value).encode("utf-8")
    headers = {"content-type": ctype, CALL_ID_HEADER: request_id, SOURCE_HEADER: source_module_id}
    return headers, body, timeout_ms


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _error_text(body: bytes | None) -> str:
    """A short reason from a target's error body: its ``{"error": text}`` if it has one."""
    if not body:
        return ""
    try:
        value = loads(body)
    except (RemoteProtocolError, ValueError, RecursionError):
        value = None
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
                data = dump_value(decode_json_payload(body)).encode("utf-8")
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


def call_answer(
    call: RouteToModule | PendingCall, outcome: EncodedMessage | RouteError
) -> RoutedModuleResponse:
    """Return the ``routed_module_response`` answering ``call``: the reply payload, or the
    error (section 5: the ``pywatt_error`` member, and the same object as the Json payload).
    Never raises."""
    if isinstance(outcome, EncodedMessage):
        payload, error = outcome, None
    else:
        from ._codec import encode_route_error

        data = ('{"pywatt_error":' + encode_route_error(outcome) + "}").encode("utf-8")
        payload, error = EncodedMessage(data=data, format=EncodingFormat.JSON), outcome
    return RoutedModuleResponse(
        source_module_id=call.target_module_id,
        request_id=call.request_id,
        payload=payload,
        error=error,
    )


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


class PendingCalls(DeadlineTable[PendingCall]):
    """The orchestrator's table of one sender's unanswered calls by request id (bounded;
    ``pop``, ``get_timer``, ``expire`` and ``clear`` are :class:`DeadlineTable`'s).

    Args:
        max_pending: calls held at most; ``admit`` refuses more.
    """

    __slots__ = ("_max",)

    def __init__(self, *, max_pending: int = MAX_PENDING_CALLS) -> None:
        super().__init__()
        self._max = max_pending

    def admit(
        self, msg: RouteToModule, now: float, timeout_ms: int | None
    ) -> PendingCall | RouteError:
        """Record ``msg``; return its entry, or the ``rejected`` error to answer at once (the
        id is already pending, or ``max_pending`` is reached). Never raises."""
        key = str(msg.request_id)
        if key in self:
            return RouteError(kind=CallRejectedError.kind, message="request_id already in flight")
        if len(self) >= self._max:
            return RouteError(kind=CallRejectedError.kind, message="too many calls in flight")
        seconds = DEFAULT_CALL_TIMEOUT if timeout_ms is None else timeout_ms / 1000.0
        entry = PendingCall(
            request_id=msg.request_id,
            target_module_id=msg.target_module_id,
            target_endpoint=msg.target_endpoint,
            deadline=now + min(seconds, MAX_CALL_TIMEOUT),
        )
        self.add(key, entry.deadline, entry)
        return entry


# ---------------------------------------------------------------------------
# Orchestrator side: the provider registry
# ---------------------------------------------------------------------------


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
