"""An idle session costs nothing on the loop: the confirm watchdog's timer is armed
only while a create is unconfirmed, and a closed session's timers are cancelled (a
pending one would hold the whole client until it fired)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from rtclient import LoopThread, RealtimeClient
from rtclient.effects import Later
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(turn_detection=None, pace=Pace(delay=0.002, deltas=2)) as emu:
        yield emu


def watched(client: RealtimeClient) -> threading.Event:
    """Set when a watchdog timer of ``client`` has fired and decided (loop thread)."""
    fired = threading.Event()
    fire = client._fire_timer

    def fire_and_tell(later: Later, core: Any) -> None:
        fire(later, core)
        if later.kind == "watchdog":
            fired.set()

    client._fire_timer = fire_and_tell  # type: ignore[method-assign]
    return fired


def test_an_idle_session_has_no_timer_and_a_create_arms_one(
    emulator: Emulator, lt: LoopThread
) -> None:
    client = RealtimeClient(
        api_key="sk-test", base_url=emulator.url, transport="websocket", loop_thread=lt,
        confirm_timeout=0.3,
    ).connect()  # fmt: skip
    try:
        fired = watched(client)
        assert lt.call(_timers(client)) == []  # connected and idle: nothing scheduled
        client.request_response().result(WAIT)
        assert [t.kind for t in lt.call(_timers(client))] == ["watchdog"]  # one, not more
        assert fired.wait(WAIT)  # at the deadline: confirmed long ago, so it stops
        assert lt.call(_timers(client)) == []
        assert client.stats()["confirm_timeouts"] == 0
    finally:
        client.close()


def test_a_closed_session_is_not_held_by_its_timers(emulator: Emulator, lt: LoopThread) -> None:
    client = RealtimeClient(
        api_key="sk-test", base_url=emulator.url, transport="websocket", loop_thread=lt
    ).connect()
    client.request_response().result(WAIT)  # arms the watchdog for confirm_timeout (15 s)
    assert lt.call(_timers(client)) != []
    client.close()
    assert lt.call(_timers(client)) == []  # cancelled with the session
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None


async def _timers(client: RealtimeClient) -> list[Any]:
    """On the loop: the session's pending timers (their ``Later`` effects)."""
    return [later for later, handle in client._timers.items() if not handle.cancelled()]
