"""End to end: a real module process connects the framed channel its init offers.

The test plays the orchestrator: it writes the init line on the module's stdin with a
``tcp_channel`` (or ``ipc_channel``) pointing at a listener the test runs, accepts the
module's connection, and talks frames built and parsed with pywatt_proto's own framing and
codec. Socket timeouts are safety nets for a hung child, never timing logic.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modproc import INIT, WAIT, ModuleProcess

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    Announce,
    EncodingFormat,
    Frame,
    FrameDecoder,
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Message,
    Shutdown,
    decode_envelope,
    encode,
    encode_frame,
)

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello.py"
HELLO_SYNC_SCRIPT = """
import sys
from pywatt_sync import Module
app = Module()

@app.get("/hello")
def hello(request):
    return {"message": "Hello from PyWatt!"}

app.run()
"""


class Peer:
    """The orchestrator's end of one accepted framed connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(WAIT)
        self.decoder = FrameDecoder()

    def send(self, msg: Any) -> None:
        self.sock.sendall(encode_frame(EncodingFormat.JSON, encode(msg)))

    def send_frame(self, fmt: EncodingFormat, payload: bytes) -> None:
        self.sock.sendall(encode_frame(fmt, payload))

    def frame(self) -> Frame | None:
        """Return the next frame, or None once the module closed the connection."""
        while True:
            frame = self.decoder.next_frame()
            if isinstance(frame, Frame):
                return frame
            if frame is END_OF_INPUT:
                return None
            assert frame is NEED_DATA
            data = self.sock.recv(65536)
            if data:
                self.decoder.receive_data(data)
            else:
                self.decoder.receive_eof()

    def message(self) -> Message:
        frame = self.frame()
        assert frame is not None, "module closed the channel"
        assert frame.format is EncodingFormat.JSON
        return decode_envelope(frame.payload, content="module_to_orchestrator")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _init_line(**extra: Any) -> str:
    return json.dumps({**INIT, **extra}, separators=(",", ":"))


@contextlib.contextmanager
def tcp_listener() -> Iterator[socket.socket]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(WAIT)
    try:
        yield srv
    finally:
        srv.close()


@contextlib.contextmanager
def unix_listener() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="pywatt-ch-") as tmp:
        path = str(Path(tmp) / "orch.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen()
        srv.settimeout(WAIT)
        try:
            yield srv, path
        finally:
            srv.close()


def _start_module(script: Path | None, init: str) -> ModuleProcess:
    if script is None:
        mod = ModuleProcess([sys.executable, "-c", HELLO_SYNC_SCRIPT])
    else:
        mod = ModuleProcess.python(script)
    mod.send_raw(init)
    return mod


def _conversation(mod: ModuleProcess, peer: Peer) -> None:
    """Heartbeat -> ack, GET /hello -> the router's answer, shutdown -> exit 0."""
    mod.expect(Announce)
    peer.send(Heartbeat())
    ack = peer.message()
    assert ack.content == HeartbeatAck()
    assert ack.metadata.id is None  # {} on the wire

    peer.send(HttpRequest(request_id="r-1", method="GET", uri="/hello", headers={}, body=None))
    resp = peer.message()
    assert isinstance(resp.content, HttpResponse)
    assert resp.content.request_id == "r-1"
    assert resp.content.status_code == 200
    assert json.loads(resp.content.body or b"") == {"message": "Hello from PyWatt!"}
    assert resp.id != ack.id

    # An unknown route goes through the same router (404), not a canned reply.
    peer.send(HttpRequest(request_id="r-2", method="GET", uri="/nope", headers={}, body=None))
    resp = peer.message()
    assert isinstance(resp.content, HttpResponse)
    assert (resp.content.request_id, resp.content.status_code) == ("r-2", 404)

    peer.send(Shutdown())
    assert mod.wait() == 0
    assert peer.frame() is None  # the module closed its end


@pytest.mark.parametrize("script", [HELLO, None], ids=["asyncio", "sync"])
def test_tcp_channel_heartbeat_request_shutdown(script: Path | None) -> None:
    with tcp_listener() as srv:
        host, port = srv.getsockname()
        mod = _start_module(
            script,
            _init_line(
                tcp_channel={"address": f"{host}:{port}", "tls_enabled": False, "required": True}
            ),
        )
        try:
            conn, _ = srv.accept()
            peer = Peer(conn)
            try:
                _conversation(mod, peer)
            finally:
                peer.close()
        finally:
            mod.stop()


@pytest.mark.parametrize("script", [HELLO, None], ids=["asyncio", "sync"])
def test_ipc_channel_heartbeat_request_shutdown(script: Path | None) -> None:
    with unix_listener() as (srv, path):
        mod = _start_module(script, _init_line(ipc_channel={"socket_path": path, "required": True}))
        try:
            conn, _ = srv.accept()
            peer = Peer(conn)
            try:
                _conversation(mod, peer)
            finally:
                peer.close()
        finally:
            mod.stop()


def test_envelope_and_base64_frames_are_accepted() -> None:
    """spec/framed.md section 3: a reader SHOULD accept an envelope too; section 5: JSON
    bytes labelled Base64 are converted."""
    import base64

    with tcp_listener() as srv:
        host, port = srv.getsockname()
        mod = _start_module(
            HELLO,
            _init_line(
                tcp_channel={"address": f"{host}:{port}", "tls_enabled": False, "required": False}
            ),
        )
        try:
            conn, _ = srv.accept()
            peer = Peer(conn)
            try:
                mod.expect(Announce)
                wrapped = (
                    b'{"id":"0b7f1b1e-3c1d-4a57-9a53-7f9f3c0e8d11",'
                    b'"content":{"op":"heartbeat"},"metadata":{}}'
                )
                peer.send_frame(EncodingFormat.JSON, wrapped)
                assert peer.message().content == HeartbeatAck()
                peer.send_frame(EncodingFormat.BASE64, base64.b64encode(b'{"op":"heartbeat"}'))
                assert peer.message().content == HeartbeatAck()
                # The stdio side keeps working alongside the channel.
                mod.request("s-1", "GET", "/hello")
                assert mod.response("s-1").status_code == 200
            finally:
                peer.close()
        finally:
            mod.stop()


def test_bad_format_byte_closes_the_channel_but_not_the_module() -> None:
    with tcp_listener() as srv:
        host, port = srv.getsockname()
        mod = _start_module(
            HELLO,
            _init_line(
                tcp_channel={"address": f"{host}:{port}", "tls_enabled": False, "required": True}
            ),
        )
        try:
            conn, _ = srv.accept()
            peer = Peer(conn)
            try:
                mod.expect(Announce)
                peer.sock.sendall(b"\x00\x00\x00\x02\x07{}")  # format byte 7
                assert peer.frame() is None  # closed, not reconnected
                mod.request("s-1", "GET", "/hello")
                assert mod.response("s-1").status_code == 200
                assert "invalid frame format byte 7" in mod.stderr
            finally:
                peer.close()
            mod.close_stdin()
            assert mod.wait() == 0
        finally:
            mod.stop()


def _wait_for_stderr(mod: ModuleProcess, text: str) -> None:
    """Wait until the module wrote ``text`` to stderr (``WAIT`` is only a safety net)."""
    deadline = time.monotonic() + WAIT
    while text not in mod.stderr:
        assert mod.proc.poll() is None, mod.stderr
        assert time.monotonic() < deadline, f"{text!r} never appeared:\n{mod.stderr}"
        time.sleep(0.01)


def _refused_address() -> str:
    """An address nobody listens on (a port just released)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        host, port = srv.getsockname()
    return f"{host}:{port}"


@pytest.mark.parametrize("script", [HELLO, None], ids=["asyncio", "sync"])
def test_required_channel_refused_exits_nonzero(script: Path | None) -> None:
    address = _refused_address()
    mod = _start_module(
        script,
        _init_line(tcp_channel={"address": address, "tls_enabled": False, "required": True}),
    )
    try:
        code = mod.wait()
        assert code != 0
        assert f"required TCP channel {address} could not be connected" in mod.stderr
    finally:
        mod.stop()


def test_optional_channel_refused_warns_and_continues() -> None:
    address = _refused_address()
    mod = _start_module(
        HELLO,
        _init_line(tcp_channel={"address": address, "tls_enabled": False, "required": False}),
    )
    try:
        mod.expect(Announce)
        _wait_for_stderr(mod, "continuing on stdio")
        assert f"TCP channel {address} could not be connected" in mod.stderr
        mod.request("s-1", "GET", "/hello")
        assert mod.response("s-1").status_code == 200
        mod.close_stdin()
        assert mod.wait() == 0
    finally:
        mod.stop()


# ---------------------------------------------------------------------------
# The drivers in-process (no module around them): reconnect after a loss.


def _answer_and_reconnect(srv: socket.socket, start: Any, respond: Any) -> None:
    """Shared script: heartbeat, a request answered by ``respond``, drop, reconnect."""
    conn, _ = srv.accept()
    peer = Peer(conn)
    try:
        peer.send(Heartbeat())
        assert peer.message().content == HeartbeatAck()
        peer.send(HttpRequest(request_id="d-1", method="GET", uri="/x", headers={}, body=None))
        resp = peer.message()
        assert isinstance(resp.content, HttpResponse)
        assert (resp.content.request_id, resp.content.status_code) == ("d-1", 201)
    finally:
        peer.close()  # the module side sees the loss and reconnects
    conn, _ = srv.accept()
    peer = Peer(conn)
    try:
        peer.send(Heartbeat())
        assert peer.message().content == HeartbeatAck()
    finally:
        peer.close()


def test_sync_channel_driver_answers_and_reconnects() -> None:
    import threading

    from pywatt_proto import ChannelKind, ChannelTarget, RequestReceived, TcpListen
    from pywatt_sync._channel import SyncChannel

    with tcp_listener() as srv:
        host, port = srv.getsockname()
        target = ChannelTarget(kind=ChannelKind.TCP, address=TcpListen(host=host, port=port))

        def on_event(ch: SyncChannel, event: object) -> None:
            if isinstance(event, RequestReceived):
                # answered from another thread, as a worker pool would
                threading.Thread(
                    target=ch.send_response, args=(event.request_id, 201, {}, b"made")
                ).start()

        channel = SyncChannel(target, on_event=on_event)
        result: list[str | None] = []
        starter = threading.Thread(target=lambda: result.append(channel.start()))
        starter.start()
        try:
            _answer_and_reconnect(srv, None, None)
            starter.join(WAIT)
            assert result == [None]
            assert channel.conn.connections == 2
            assert channel.wait_drained(WAIT)
        finally:
            channel.close()
        assert channel.conn.state.name == "CLOSED"


def test_asyncio_channel_driver_answers_and_reconnects() -> None:
    import asyncio
    import threading

    from pywatt_asyncio._channel import AsyncChannel
    from pywatt_proto import ChannelKind, ChannelTarget, RequestReceived, TcpListen

    with tcp_listener() as srv:
        host, port = srv.getsockname()
        target = ChannelTarget(kind=ChannelKind.TCP, address=TcpListen(host=host, port=port))
        errors: list[BaseException] = []
        peer_thread = threading.Thread(
            target=lambda: _capture(errors, _answer_and_reconnect, srv, None, None)
        )
        peer_thread.start()

        async def main() -> int:
            tasks: set[asyncio.Task[bool]] = set()

            def on_event(ch: AsyncChannel, event: object) -> None:
                if isinstance(event, RequestReceived):
                    t = asyncio.ensure_future(ch.send_response(event.request_id, 201, {}, b"made"))
                    tasks.add(t)

            channel = AsyncChannel(target, on_event=on_event)
            assert await channel.start() is None
            await asyncio.get_running_loop().run_in_executor(None, peer_thread.join, WAIT)
            connections = channel.conn.connections
            await channel.aclose()
            return connections

        assert asyncio.run(main()) == 2
        assert errors == []


def _capture(errors: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_tls_channel_never_falls_back_to_plain_text() -> None:
    """``tls_enabled: true`` against a peer that does not speak TLS: every attempt starts
    with a TLS handshake record (0x16), none with a plain frame; the required channel then
    fails start-up."""
    import threading

    first_bytes: list[bytes] = []

    def serve(srv: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                with conn:
                    conn.settimeout(WAIT)
                    first_bytes.append(conn.recv(1))

    with tcp_listener() as srv:
        host, port = srv.getsockname()
        thread = threading.Thread(target=serve, args=(srv,), daemon=True)
        thread.start()
        mod = _start_module(
            HELLO,
            _init_line(
                tcp_channel={"address": f"{host}:{port}", "tls_enabled": True, "required": True}
            ),
        )
        try:
            assert mod.wait() == 1
            assert f"required TCP channel {host}:{port} could not be connected" in mod.stderr
        finally:
            mod.stop()
    # Every attempt failed only after the listener had recorded its first byte and closed.
    assert first_bytes and all(b == b"\x16" for b in first_bytes)
