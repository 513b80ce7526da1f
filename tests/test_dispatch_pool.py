"""The dispatch pool: every client of a loop thread shares a few dispatcher threads.

First the pool alone (real threads, a real loop thread for its stall check): each lane
in order and never on two threads at once, a stuck lane parks only itself, a spill
when every worker is stuck, no thread once the last lane is gone. Then through real
clients on one shared loop thread against the emulator: a blocked callback of one
client does not hold up another's, the blocking-call guard still knows a callback's
thread, and the thread count does not grow with the number of clients.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger
from threads import run_at_once

from rtclient import LoopThread, RealtimeClient, WrongThreadError
from rtclient.emulator import Emulator, Pace
from rtclient.runtime.pool import NAME, DispatchPool, Lane, dispatch_pool

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


def dispatcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NAME]


class Recorder:
    """A lane's handler: records what it ran, notices two threads in one lane."""

    def __init__(self, lane_id: int, block: threading.Event | None = None) -> None:
        self.lane_id = lane_id
        self.block = block
        self.seen: list[int] = []
        self.inside = 0
        self.overlaps = 0
        self.threads: set[str] = set()
        self.lane: Lane | None = None
        self.in_lane: list[bool] = []
        self.finished = threading.Event()
        self.started = threading.Event()

    def __call__(self, item: Any) -> None:
        self.inside += 1
        self.overlaps += self.inside > 1
        try:
            if item == "stop":
                assert self.lane is not None
                self.lane.finish()
                self.finished.set()
                return
            self.started.set()
            self.threads.add(threading.current_thread().name)
            assert self.lane is not None
            self.in_lane.append(self.lane.in_thread())
            if self.block is not None:
                assert self.block.wait(WAIT)
            self.seen.append(item)
        finally:
            self.inside -= 1


@pytest.fixture
def pool(lt: LoopThread) -> Iterator[DispatchPool]:
    yield DispatchPool(lt, workers=2, stall=0.05)


def open_lane(pool: DispatchPool, recorder: Recorder) -> Lane:
    recorder.lane = pool.lane(recorder)
    return recorder.lane


def test_each_lane_keeps_its_order_and_runs_on_one_thread_at_a_time(pool: DispatchPool) -> None:
    recorders = [Recorder(i) for i in range(40)]
    lanes = [open_lane(pool, r) for r in recorders]

    def produce(p: int) -> None:  # 4 producers, each owning 10 lanes, put at once
        for n in range(300):
            for lane in lanes[p * 10 : (p + 1) * 10]:
                lane.put(n)

    run_at_once(4, produce)
    for lane, r in zip(lanes, recorders, strict=True):
        lane.put("stop")
        assert r.finished.wait(WAIT)
        assert r.seen == list(range(300)), f"lane {r.lane_id} out of order"
        assert r.overlaps == 0 and all(r.in_lane)
    assert pool.threads == 0  # the last lane finished: the workers ended
    pool.join_retired(WAIT)
    assert dispatcher_threads() == []


def test_a_stuck_lane_parks_only_itself(pool: DispatchPool) -> None:
    release = threading.Event()
    stuck, other = Recorder(0, block=release), Recorder(1)
    stuck_lane, other_lane = open_lane(pool, stuck), open_lane(pool, other)
    stuck_lane.put("a")
    stuck_lane.put("b")  # queued behind the stuck item: in order, after it
    assert stuck.started.wait(WAIT)
    for n in range(100):
        other_lane.put(n)
    other_lane.put("stop")
    assert other.finished.wait(WAIT)  # served while the stuck lane's thread waits
    assert other.seen == list(range(100)) and stuck.seen == []
    assert pool.spills == 0  # the second worker sufficed
    release.set()
    stuck_lane.put("stop")
    assert stuck.finished.wait(WAIT)
    assert stuck.seen == ["a", "b"]
    pool.join_retired(WAIT)
    assert dispatcher_threads() == []


def test_when_every_worker_is_stuck_the_pool_spills_and_shrinks_back(lt: LoopThread) -> None:
    pool = DispatchPool(lt, workers=1, stall=0.05)
    warned = threading.Event()  # the loop thread's records reach sinks through a relay

    def sink(message: Any) -> None:
        if "[DISPATCH] a dispatcher thread has run one callback" in message.record["message"]:
            warned.set()

    sink_id = logger.add(sink, level="WARNING")
    logger.enable("rtclient")
    try:
        release = threading.Event()
        stuck, others = Recorder(0, block=release), [Recorder(i) for i in range(1, 6)]
        stuck_lane = open_lane(pool, stuck)
        other_lanes = [open_lane(pool, r) for r in others]
        stuck_lane.put("a")
        assert stuck.started.wait(WAIT)  # the only worker is now stuck
        for lane in other_lanes:
            lane.put(1)
            lane.put("stop")
        for r in others:  # served by a spilled worker, after about one stall
            assert r.finished.wait(WAIT) and r.seen == [1]
        assert pool.spills >= 1
        assert warned.wait(WAIT)
        release.set()
        stuck_lane.put("stop")
        assert stuck.finished.wait(WAIT) and stuck.seen == ["a"]
        pool.join_retired(WAIT)
        assert pool.threads == 0 and dispatcher_threads() == []
    finally:
        logger.remove(sink_id)
        logger.disable("rtclient")


def test_a_pool_starts_again_after_its_last_lane_and_drops_late_items(
    pool: DispatchPool,
) -> None:
    first = Recorder(0)
    lane = open_lane(pool, first)
    lane.put(1)
    lane.put("stop")
    assert first.finished.wait(WAIT)
    lane.put(2)  # after its stop: dropped, and no thread starts for it
    pool.join_retired(WAIT)
    assert first.seen == [1] and dispatcher_threads() == []
    second = Recorder(1)
    again = open_lane(pool, second)
    again.put(3)
    again.put("stop")
    assert second.finished.wait(WAIT) and second.seen == [3]
    pool.join_retired(WAIT)
    assert dispatcher_threads() == []


# ------------------------------------------------------------------ through clients


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(turn_detection=None, pace=Pace(delay=0.002, deltas=2)) as emu:
        yield emu


def ws(emu: Emulator, loop_thread: LoopThread) -> RealtimeClient:
    return RealtimeClient(
        api_key="sk-test", base_url=emu.url, transport="websocket", loop_thread=loop_thread
    )


def test_a_blocked_callback_of_one_client_does_not_hold_up_another(
    emulator: Emulator, lt: LoopThread
) -> None:
    release, blocked, slow_done, quick_three = (threading.Event() for _ in range(4))
    slow_seen: list[str] = []
    quick_done: list[str] = []
    with ws(emulator, lt) as slow, ws(emulator, lt) as quick:

        def on_slow(event: dict[str, Any]) -> None:
            slow_seen.append(event["type"])
            if event["type"] == "response.created":
                blocked.set()
                assert release.wait(WAIT)
            elif event["type"] == "response.done":
                slow_done.set()

        def on_quick(event: dict[str, Any]) -> None:
            quick_done.append(event["response"]["id"])
            if len(quick_done) == 3:
                quick_three.set()

        slow.on("*", on_slow, raw=True)
        slow_ticket = slow.request_response()
        assert blocked.wait(WAIT)
        quick.on("response.done", on_quick, raw=True)
        for _ in range(3):  # three whole responses while the other client's callback waits
            quick.request_response().result(WAIT)
        assert quick_three.wait(WAIT)
        assert slow_seen == ["response.created"]  # still parked there
        release.set()
        slow_ticket.result(WAIT)
        assert slow_done.wait(WAIT)  # the slow client's events then arrive, in order
        order = [t for t in slow_seen if t in ("response.created", "response.done")]
        assert order == ["response.created", "response.done"]


def test_a_callback_may_not_block_on_its_own_client_but_may_on_another(
    emulator: Emulator, lt: LoopThread
) -> None:
    """The guard knows which client's work a pool thread is running: waiting for
    your own client there could never end; waiting for another client can."""
    outcome: dict[str, Any] = {}
    finished = threading.Event()
    with ws(emulator, lt) as first, ws(emulator, lt) as second:

        def on_done(event: dict[str, Any]) -> None:
            if finished.is_set():
                return
            try:
                first.ask("again", timeout=WAIT)
            except WrongThreadError as exc:
                outcome["own"] = str(exc)
            outcome["other"] = second.ask("hello", timeout=WAIT).text
            finished.set()

        first.on("response.done", on_done, raw=True)
        first.request_response()
        assert finished.wait(WAIT)
    assert outcome["own"].startswith("ask() would block the dispatcher thread")
    assert outcome["other"]


def test_dispatcher_threads_do_not_grow_with_clients(emulator: Emulator, lt: LoopThread) -> None:
    clients = [ws(emulator, lt).connect() for _ in range(24)]
    idents: set[int] = set()
    lock = threading.Lock()

    def on_any(event: dict[str, Any]) -> None:
        with lock:
            idents.add(threading.get_ident())

    try:
        for client in clients:
            client.on("*", on_any, raw=True)
        for _ in range(3):  # every client busy at once, three rounds
            tickets = [client.request_response() for client in clients]
            for ticket in tickets:
                ticket.result(WAIT)
        pool = dispatch_pool(lt)
        assert len(idents) <= pool.size + pool.spills and pool.spills == 0
        assert 1 <= len(dispatcher_threads()) <= pool.size  # 24 clients, at most 2 threads
    finally:
        for client in clients:
            client.close()
    assert dispatcher_threads() == []  # the last close ended them


def test_callbacks_that_wait_for_each_other_all_get_a_thread(
    emulator: Emulator, lt: LoopThread
) -> None:
    """Eight clients' callbacks block until all eight run at once: a fixed pool of two
    would never get there; the pool spills until they do, then shrinks back."""
    clients = [ws(emulator, lt).connect() for _ in range(8)]
    meet = threading.Barrier(len(clients), timeout=WAIT)
    all_met = threading.Event()

    def on_done(event: dict[str, Any]) -> None:
        if meet.wait() == 0:  # one of the eight, once all eight are inside a callback
            all_met.set()

    try:
        for client in clients:
            client.on("response.done", on_done, raw=True)
        for client in clients:
            client.request_response()
        assert all_met.wait(WAIT)
        assert dispatch_pool(lt).spills >= len(clients) - 2
    finally:
        for client in clients:
            client.close()
    assert dispatcher_threads() == []
