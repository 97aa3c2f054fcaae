"""ModuleNetwork's decisions, with stand-in processes (no children): who answers a call when
the target is unknown, not running, or its link fails."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from pywatt_asyncio._network import ModuleNetwork
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Init, TcpListen
from pywatt_proto._module import ModuleConnection
from pywatt_proto._orchestrator import CallRequested, OrchestratorConnection
from pywatt_proto.testing import ConnectionPair, FakeClock


class FakeProcess:
    """What ModuleNetwork uses of a ModuleProcess: module_id, conn, running, flush, exchange."""

    def __init__(self, module_id: str, *, fail: BaseException | None = None) -> None:
        self.module_id = module_id
        self.running = True
        self.fail = fail
        self.flushed = 0
        self.conn: Any = None

    def flush(self) -> None:
        self.flushed += 1

    async def exchange(self, *args: object) -> Any:
        assert self.fail is not None
        raise self.fail


def _caller() -> tuple[ConnectionPair, FakeProcess]:
    init = Init(
        orchestrator_api="x", module_id="src", env={}, listen=TcpListen(host="127.0.0.1", port=1)
    )
    pair = ConnectionPair(
        ModuleConnection(rng=random.Random(1)),
        OrchestratorConnection(init=init, heartbeat_interval=None),
        FakeClock(),
    )
    pair.start()
    pair.pump()
    proc = FakeProcess("src")
    proc.conn = pair.orchestrator
    return pair, proc


def _requests(pair: ConnectionPair) -> list[CallRequested]:
    out = []
    while (ev := pair.orchestrator.next_event()) is not NEED_DATA and ev is not END_OF_INPUT:
        if isinstance(ev, CallRequested):
            out.append(ev)
    return out


def _answers(pair: ConnectionPair) -> list[dict[str, Any]]:
    return [json.loads(x)["pywatt_error"] for x in pair.orchestrator.data_to_send().splitlines()]


async def test_unknown_not_running_and_failing_targets_are_answered_at_once() -> None:
    pair, src = _caller()
    broken = FakeProcess("broken", fail=RuntimeError("link refused the request"))
    stopped = FakeProcess("stopped")
    stopped.running = False
    net = ModuleNetwork(
        lookup=lambda mid: {"broken": broken}.get(mid),  # "stopped" is known, not running
        known={"broken", "stopped"}.__contains__,
    )
    for target in ("ghost", "stopped", "broken"):
        pair.module.start_call(target, "/x", 1, 0.0)
    pair.orchestrator.receive_data(pair.module.data_to_send(), 0.0)
    for ev in _requests(pair):
        net.on_event(src, ev)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the delivery task to "broken" runs
    await asyncio.sleep(0)
    kinds = [(a["kind"], a["message"]) for a in _answers(pair)]
    assert kinds == [
        ("unknown_module", "no module named 'ghost'"),
        ("target_failed", "stopped is not running"),
        ("target_failed", "broken: link refused the request"),
    ]
    assert pair.orchestrator.calls_pending == 0
    assert not net.healthy("stopped") and net.healthy("broken")
