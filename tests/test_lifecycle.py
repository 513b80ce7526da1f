"""The client's lifecycle: close() at any moment of connect() leaves nothing behind.

Real threads released by one ``threading.Barrier``: one connects, one closes after an
offset that sweeps the whole connect (loop thread start, bridge, ICE, session update).
Whatever the interleaving, connect() either succeeds (and the close then ends it) or
raises ClosedError, the client ends ``closed``, and no thread, file descriptor or
emulator session outlives the round. connect() after close() raises ClosedError.
"""

from __future__ import annotations

import gc
import os
import threading

import pytest

from rtclient import ClosedError, RealtimeClient
from rtclient.core.lifecycle import Lifecycle, State
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(120)

ROUNDS = 24
SPREAD_S = 0.12  # close() offsets sweep 0..SPREAD_S: a loopback connect lasts ~0.1 s


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rtclient_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("rtclient") and not t.name.startswith("rtclient-emulator")
    ]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_racing_connect_leaves_nothing_behind(rt_emulator: Emulator) -> None:
    outcomes: dict[str, int] = {"connected": 0, "closed while connecting": 0}
    fds_before = _fds()
    for round_no in range(ROUNDS):
        client = RealtimeClient(api_key="sk-test", base_url=rt_emulator.url, loopback_only=True)
        barrier = threading.Barrier(2, timeout=10)
        offset = SPREAD_S * round_no / (ROUNDS - 1)
        errors: list[BaseException] = []

        def connect(
            client: RealtimeClient = client,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                client.connect(timeout=10)
            except BaseException as exc:
                errors.append(exc)

        def close(
            client: RealtimeClient = client,
            barrier: threading.Barrier = barrier,
            offset: float = offset,
        ) -> None:
            barrier.wait()
            threading.Event().wait(offset)  # an offset into connect(), not a synchronisation
            client.close()

        threads = [threading.Thread(target=connect), threading.Thread(target=close)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), f"round {round_no} hung"
        assert client._life.state is State.CLOSED
        if errors:
            assert len(errors) == 1 and isinstance(errors[0], ClosedError), errors
            outcomes["closed while connecting"] += 1
        else:
            outcomes["connected"] += 1
        assert _rtclient_threads() == [], (round_no, _rtclient_threads())
        with pytest.raises(ClosedError):
            client.connect()
    # every emulator session the rounds opened has ended (hung up or closed)
    ok = rt_emulator.wait_for(lambda: rt_emulator.stats()["active_sessions"] == 0, 20)
    assert ok, (rt_emulator.stats()["active_sessions"], outcomes)
    gc.collect()
    assert _fds() <= fds_before + 2, (fds_before, _fds())
    print(f"close/connect race over {ROUNDS} rounds: {outcomes}")
    assert outcomes["closed while connecting"] > 0  # the sweep really hit connect()


def test_close_before_connect_and_connect_after_close(rt_emulator: Emulator) -> None:
    client = RealtimeClient(api_key="sk-test", base_url=rt_emulator.url, loopback_only=True)
    client.close()
    with pytest.raises(ClosedError):
        client.connect()
    assert "closed" in repr(client)


def test_illegal_moves_raise_and_change_nothing() -> None:
    life = Lifecycle(threading.Lock())
    with pytest.raises(Exception, match="new to open"):
        life.move(State.OPEN)
    assert life.state is State.NEW
    life.move(State.CONNECTING)
    life.move(State.CLOSING)
    with pytest.raises(ClosedError):
        life.move(State.OPEN)
    life.move(State.CLOSED)
    assert life.torn_down.is_set() and life.ending


def test_close_that_gives_up_on_a_slow_loop_start_leaves_nothing_running(
    rt_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close(timeout=0.2) returns while connect() is still starting its loop thread
    (held here until close() has returned); connect() then releases what it built
    itself: no loop thread, no log thread, nothing left running."""
    import rtclient.runtime.session as session

    entered, release = threading.Event(), threading.Event()

    class SlowStart(session.LoopThread):
        def start(self, timeout: float = 10.0) -> session.LoopThread:
            entered.set()
            assert release.wait(10)  # held until close() gave up waiting for connect()
            return super().start(timeout)

    monkeypatch.setattr(session, "LoopThread", SlowStart)
    client = RealtimeClient(api_key="sk-test", base_url=rt_emulator.url, loopback_only=True)
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            client.connect(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    connecting = threading.Thread(target=connect)
    connecting.start()
    assert entered.wait(10)
    client.close(timeout=0.2)  # gives up on connect() after 0.2 s: the state is closed
    assert client._life.state is State.CLOSED and not client._life.connect_finished.is_set()
    release.set()
    connecting.join(30)
    assert not connecting.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ClosedError), errors
    assert _rtclient_threads() == [], _rtclient_threads()
