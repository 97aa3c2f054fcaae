"""pywatt_proto -- the Sans-IO core of the PyWatt module protocol.

Bytes in, typed events out; events in, bytes out. Nothing here performs I/O,
starts threads or reads a clock: time is passed in as ``now`` (seconds, float)
and randomness as an injected ``random.Random``-like source.

This file only re-exports; each area lives in a private module.
"""

#: The public surface, written once: area -> private module -> the names it exports here.
#: ``__all__`` and the lazy imports (PEP 562: a name's module is imported on first access, so
#: importing the package stays cheap) are derived from it; ``__init__.pyi`` is generated from
#: it for type checkers (``python -m pywatt_proto._surface``; a test fails when it is stale).
_SURFACE = {
    "errors and payload formats": {
        "._errors": "AuthError LocalProtocolError ProtocolError RemoteProtocolError",
        "._formats": "EncodingFormat",
    },
    "messages & codec (wire core)": {
        "._codec": "EXTENSIONS_KEY EnvelopeContent decode_encoded_message decode_envelope "
        "decode_init decode_module_line decode_module_to_orchestrator "
        "decode_orchestrator_to_module encode encode_encoded_message encode_envelope",
        "._messages": "Announce DiscoverServiceProviders DiscoverServiceProvidersResponse "
        "EncodedMessage Endpoint GetSecret Heartbeat HeartbeatAck HttpRequest HttpResponse "
        "Identify Init IpcChannelConfig JsonValue ListenAddress Message MessageMetadata "
        "ModuleToOrchestrator OrchestratorToModule PortRequest PortResponse "
        "RegisterServiceProvider RegisterServiceProviderResponse Rotated RotationAck "
        "RoutedModuleMessage RoutedModuleResponse RouteError RouteToModule Secret "
        "SecurityLevel ServiceOperation ServiceOperationResult ServiceProviderInfo "
        "ServiceRequest ServiceResponse ServiceType Shutdown TcpChannelConfig TcpListen "
        "UnixListen parse_listen_address parse_socket_address",
    },
    "framing & payload formats": {
        "._framing": "DEFAULT_MAX_FRAME_SIZE DEFAULT_MAX_LINE_SIZE END_OF_INPUT "
        "FRAME_HEADER_SIZE MAX_FRAME_SIZE_LIMIT NEED_DATA EndOfInput Frame FrameDecoder "
        "FrameTooLarge InvalidFormatCode LineDecoder LineTooLong NeedData TruncatedInput "
        "encode_frame encode_line",
        "._payload": "DEFAULT_MAX_PAYLOAD_SIZE MAX_CBOR_ITEMS MAX_PAYLOAD_DEPTH "
        "convert_encoded_message convert_payload decode_cbor decode_encoded_message_value "
        "decode_payload encode_cbor encode_payload encoded_message_from_value",
    },
    "module / orchestrator state machines": {
        "._fsm": "Machine",
        "._module": "Announced BadLine InitReceived ModuleConnection ModuleEvent "
        "MODULE_MACHINE ModuleInput ModuleState ReadyToAnnounce RequestReceived "
        "RequestTimedOut ResponseTooLarge RotationRequested SecretFailed SecretUnavailable "
        "SecretUpdated ShutdownRequested join_headers",
        "._orchestrator": "AnnounceReceived AnnounceTimedOut BadModuleLine ModuleUnresponsive "
        "OrchestratorConnection OrchestratorEvent ORCHESTRATOR_MACHINE OrchestratorInput "
        "OrchestratorState PortRequested RequestFailed ResponseReceived RotationAcknowledged "
        "SecretRequested ShutdownGraceExpired",
    },
    "module-to-module calls and the provider registry": {
        "._calls": "CallDeadlineError CallError CallRejectedError RoutedMessage "
        "ServiceRegistryError TargetFailedError UnknownEndpointError UnknownModuleError",
        "._routing": "ProviderRegistry",
        "._orchestrator": "CallAbandoned CallRequested ProviderDiscoveryRequested "
        "ProviderRegistrationRequested",
    },
    "router (requests, responses, routes, metrics)": {
        "._router": "LATENCY_BUCKETS MAX_QUERY_FIELDS UNMATCHED_LABEL ApiResponse ErrorHandler "
        "Headers HTTPException Metrics Middleware Plan QueryParams Request Response Route "
        "RouteEndpoint Router RouteStats api_error api_response bytes_response json_response "
        "reason_phrase redirect text_response",
        "._route_checks": "RouteDefinitionError",
    },
    "circuit breaker, backoff, port negotiation": {
        "._backoff": "Backoff RetryState",
        "._random_source": "RandomSource",
        "._breaker": "BREAKER_MACHINE REJECTED BreakerCounters BreakerInput BreakerState "
        "BreakerTransition CircuitBreaker CircuitOpenError",
        "._ports": "NEGOTIATION_MACHINE AttemptFailed AttemptFailure BreakerChanged "
        "FallbackChosen FallbackPolicy NeedFallbackCandidate NegotiationFailed "
        "NegotiationInput NegotiationState PortAssigned PortEvent PortNegotiationConfig "
        "PortNegotiationError PortNegotiator PortResult PortSource UnsolicitedReason "
        "UnsolicitedResponse preassigned_port",
    },
    "HTTP toolkit: server connection (HTTP/1.1 over TCP, Sans-IO)": {
        "._http": "DEFAULT_MAX_BODY_BYTES DEFAULT_MAX_HEADER_BYTES DEFAULT_MAX_PENDING_BYTES "
        "HttpServerConnection ServerEvent ServerLimits ServerPhase format_access_log http_date",
    },
    "HTTP toolkit: client exchange, pool, retries and errors": {
        "._http": "DEFAULT_MAX_RESPONSE_BYTES IDEMPOTENT_METHODS ClientEvent ClientExchange "
        "ClientResponse ConnectionPool Origin RequestSpec RetryPolicy ClientCircuitOpenError "
        "ConnectError ConnectTimeout HTTPClientError HTTPProtocolError HTTPStatusError "
        "HTTPTimeoutError ReadTimeout TotalTimeout",
    },
    "HTTP toolkit: URLs and query strings": {
        "._http": "QueryParamsArg add_query encode_query join_url split_url",
    },
    "ASGI/WSGI gateway (adapters)": {
        "._gateway": "MAX_RESPONSE_BODY MAX_RESPONSE_HEADERS ResponseCollector asgi_http_scope "
        "error_response parse_wsgi_status wsgi_environ",
    },
    "framed TCP / Unix-socket channels (module side)": {
        "._channel": "CONNECT_BACKOFF DEFAULT_CONNECT_TIMEOUT RECONNECT_BACKOFF BadFrame "
        "ChannelConnection ChannelEvent ChannelKind ChannelInput ChannelState ChannelTarget "
        "CHANNEL_MACHINE channel_targets",
    },
    "secrets: typed getters' conversions, masked wrapper, log redaction": {
        "._secrets": "SecretRedactor SecretValue convert_secret redact_secret",
    },
}

from ._lazy import lazy_exports  # noqa: E402

__all__, __getattr__, __dir__ = lazy_exports(globals(), _SURFACE)
