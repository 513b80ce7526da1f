"""The janus bridge: worker threads -> loop thread, with each command's outcome reported.

The loop is blocked deterministically (a callback on the loop thread waiting on an
Event) wherever a test needs commands to pile up; every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from threads import current_thread_ident, run_at_once, submit_while_closing

from rtclient.core.gate import TICKET_METADATA_KEY, ResponseGate, Ticket, Trigger
from rtclient.errors import BridgeClosedError, BridgeFullError, ClosedError, SendError
from rtclient.runtime.bridge import Bridge
from rtclient.runtime.loop import LoopThread

WAIT = 10.0


class Recorder:
    """A handler that records (payload, thread) and returns a derived value."""

    def __init__(self, fail_on: Callable[[Any], bool] = lambda payload: False) -> None:
        self.calls: list[Any] = []
        self.threads: set[int] = set()
        self.fail_on = fail_on

    def __call__(self, payload: Any) -> Any:
        self.calls.append(payload)
        self.threads.add(threading.get_ident())
        if self.fail_on(payload):
            raise SendError(f"send of {payload!r} failed")
        return ("handled", payload)


@contextmanager
def loop_blocked(loop_thread: LoopThread) -> Iterator[threading.Event]:
    """Park the loop thread inside a callback until the block exits (or ``WAIT`` passes).

    Yields the release Event; the loop is guaranteed to be parked when the body starts.
    """
    entered, release = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        release.wait(WAIT)

    loop_thread.call_soon(block)
    assert entered.wait(WAIT)
    try:
        yield release
    finally:
        release.set()


def in_thread(fn: Callable[[], Any], name: str = "worker") -> Any:
    """Run ``fn`` on a fresh thread and return its result (or raise its exception)."""
    out: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            out.set_result(fn())
        except BaseException as exc:
            out.set_exception(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(WAIT)
    return out.result(0)


# -- basics -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_put_from_a_worker_resolves_with_the_handler_result_on_the_loop_thread(
    lt: LoopThread,
) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler).start()
    worker_ident: list[int] = []

    def work() -> concurrent.futures.Future[Any]:
        worker_ident.append(threading.get_ident())
        return bridge.put("hello")

    future = in_thread(work)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(WAIT) == ("handled", "hello")
    assert handler.threads == {lt.call(current_thread_ident(), timeout=WAIT)}
    assert worker_ident[0] not in handler.threads


@pytest.mark.timeout(30)
def test_handler_exception_propagates_to_the_future_and_the_bridge_survives(
    lt: LoopThread,
) -> None:
    bridge = Bridge(lt, Recorder(fail_on=lambda p: p == "bad")).start()
    bad = in_thread(lambda: bridge.put("bad"))
    error = bad.exception(WAIT)
    assert isinstance(error, SendError) and "'bad'" in str(error)
    assert bridge.put("good").result(WAIT) == ("handled", "good")


@pytest.mark.timeout(30)
def test_order_is_preserved_across_a_burst_from_one_thread(lt: LoopThread) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler, maxsize=5000).start()
    n = 2000

    def burst() -> list[concurrent.futures.Future[Any]]:
        return [bridge.put(i) for i in range(n)]

    futures = in_thread(burst)
    assert [f.result(WAIT) for f in futures] == [("handled", i) for i in range(n)]
    assert handler.calls == list(range(n))


@pytest.mark.timeout(60)
def test_many_threads_on_a_barrier_every_put_completes_exactly_once(lt: LoopThread) -> None:
    threads, per_thread = 8, 500
    seen: Counter[tuple[int, int]] = Counter()
    order: list[tuple[int, int]] = []

    def handler(payload: tuple[int, int]) -> tuple[int, int]:
        seen[payload] += 1  # runs on the loop thread only: no lock needed
        order.append(payload)
        return payload

    bridge = Bridge(lt, handler, maxsize=threads * per_thread).start()
    results = run_at_once(
        threads, lambda t: [bridge.put((t, i)) for i in range(per_thread)], WAIT, "put"
    )
    for t, futures in enumerate(results):
        assert [f.result(WAIT) for f in futures] == [(t, i) for i in range(per_thread)]
    assert len(seen) == threads * per_thread
    assert set(seen.values()) == {1}, "a command was handled twice"
    for t in range(threads):  # each thread's own commands kept their put order
        assert [p for p in order if p[0] == t] == [(t, i) for i in range(per_thread)]


@pytest.mark.timeout(30)
def test_put_from_the_loop_thread_runs_inline_after_what_is_already_queued(
    lt: LoopThread,
) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler).start()
    entered, release = threading.Event(), threading.Event()

    async def on_loop() -> tuple[bool, Any]:
        entered.set()
        release.wait(WAIT)  # parked on purpose: the main thread queues "a" and "b" now
        future = bridge.put("c")  # from the loop thread: performed inline
        return future.done(), future.result(0)

    outcome = lt.submit(on_loop())
    assert entered.wait(WAIT)
    try:
        queued = [bridge.put("a"), bridge.put("b")]
    finally:
        release.set()
    done_inline, result = outcome.result(WAIT)
    assert done_inline and result == ("handled", "c")
    assert [f.result(WAIT) for f in queued] == [("handled", "a"), ("handled", "b")]
    assert handler.calls == ["a", "b", "c"]  # put order holds across the inline path


# -- bounds and shutdown ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_full_queue_raises_bridge_full_and_queues_nothing(lt: LoopThread) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler, maxsize=4).start()
    with loop_blocked(lt):
        accepted = [bridge.put(i) for i in range(4)]
        for _ in range(3):
            with pytest.raises(BridgeFullError, match="full"):
                bridge.put("overflow")
        assert not any(f.done() for f in accepted)
    assert [f.result(WAIT) for f in accepted] == [("handled", i) for i in range(4)]
    assert handler.calls == [0, 1, 2, 3]  # the refused puts left nothing behind
    assert bridge.put(4).result(WAIT) == ("handled", 4)  # room again once drained


@pytest.mark.timeout(30)
def test_put_after_close_raises_bridge_closed(lt: LoopThread) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler).start()
    assert bridge.put("before").result(WAIT) == ("handled", "before")
    bridge.close()
    assert bridge.closed
    with pytest.raises(BridgeClosedError):
        bridge.put("after")
    with pytest.raises(BridgeClosedError):
        in_thread(lambda: bridge.put("after, from a worker"))

    async def from_loop() -> None:
        bridge.put("after, from the loop")

    with pytest.raises(BridgeClosedError):
        lt.call(from_loop(), timeout=WAIT)
    bridge.close()  # idempotent
    assert handler.calls == ["before"]
    assert issubclass(BridgeClosedError, ClosedError)


@pytest.mark.timeout(30)
def test_put_on_a_bridge_never_opened_raises_bridge_closed(lt: LoopThread) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler)
    with pytest.raises(BridgeClosedError):
        bridge.put("x")

    async def from_loop() -> None:
        bridge.put("y")

    with pytest.raises(BridgeClosedError):
        lt.call(from_loop(), timeout=WAIT)
    assert handler.calls == []


@pytest.mark.timeout(30)
def test_close_fails_every_queued_command(lt: LoopThread) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler).start()
    entered, release = threading.Event(), threading.Event()

    async def park_then_close() -> None:
        entered.set()
        release.wait(WAIT)
        # Still in the same step: the drain callback queued by the puts has not run.
        await bridge.aclose()

    closing = lt.submit(park_then_close())
    assert entered.wait(WAIT)
    try:
        queued = [bridge.put(i) for i in range(10)]
    finally:
        release.set()
    closing.result(WAIT)
    errors = [f.exception(WAIT) for f in queued]
    assert all(isinstance(e, BridgeClosedError) for e in errors), errors
    assert handler.calls == []
    with pytest.raises(BridgeClosedError):
        bridge.put("late")


@pytest.mark.timeout(30)
def test_stopping_the_loop_thread_closes_the_bridge() -> None:
    loop_thread = LoopThread("test-bridge-stop").start()
    handler = Recorder()
    bridge = Bridge(loop_thread, handler).start()
    assert bridge.put(1).result(WAIT) == ("handled", 1)
    loop_thread.stop()
    assert bridge.closed
    with pytest.raises(BridgeClosedError):
        bridge.put(2)
    bridge.close()  # after the loop is gone: a no-op, not an error


def _put_from_worker_during_stop(
    bridge: Bridge[Any], then: Callable[[], None] | None = None, n: int = 5
) -> list[Any]:
    """On a fresh thread: put ``n`` commands (or record the refusal), then ``then()``."""

    def work() -> list[Any]:
        outcomes: list[Any] = []
        for i in range(n):
            try:
                outcomes.append(bridge.put(i))
            except BridgeClosedError as exc:
                outcomes.append(exc)
        if then is not None:
            then()
        return outcomes

    return in_thread(work, name="late-putter")


def _assert_all_failed_closed(outcomes: list[Any]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, concurrent.futures.Future):
            concurrent.futures.wait([outcome], WAIT)
            assert outcome.done(), "a command put during stop was never resolved"
            outcome = outcome.exception(0)
        assert isinstance(outcome, BridgeClosedError), outcome


@pytest.mark.timeout(30)
def test_loop_thread_stop_fails_commands_queued_while_it_stops() -> None:
    """Puts that land after stop began (no drain is scheduled any more) are failed, not lost."""
    loop_thread = LoopThread("test-bridge-stop-queued").start()
    handler = Recorder()
    bridge = Bridge(loop_thread, handler).start()
    outcomes: list[Any] = []

    async def late_puts() -> None:  # a stop hook registered after the bridge's own
        outcomes.extend(_put_from_worker_during_stop(bridge))

    loop_thread.add_stop_hook(late_puts)
    loop_thread.stop()
    assert len(outcomes) == 5
    _assert_all_failed_closed(outcomes)
    assert handler.calls == []


@pytest.mark.timeout(30)
def test_close_from_a_worker_while_the_loop_stops_still_fails_queued_commands() -> None:
    """A client closing its bridge while a shared loop thread stops: nothing may hang.

    bridge.close() from a worker sees the loop no longer running and only marks the
    bridge closed; the stop hook must still fail what was queued and close janus.
    """
    loop_thread = LoopThread("test-bridge-close-vs-stop").start()
    handler = Recorder()
    bridge = Bridge(loop_thread, handler).start()
    outcomes: list[Any] = []

    async def late_puts_then_close() -> None:
        outcomes.extend(_put_from_worker_during_stop(bridge, then=bridge.close))

    loop_thread.add_stop_hook(late_puts_then_close)
    loop_thread.stop()
    assert bridge.closed
    assert len(outcomes) == 5
    _assert_all_failed_closed(outcomes)
    assert handler.calls == []


def _put_close_race_round(lt: LoopThread, name: str, workers: int, per_worker: int) -> None:
    handler = Recorder()
    bridge = Bridge(lt, handler, maxsize=workers * per_worker, name=name).start()
    futures, refused = submit_while_closing(
        workers, per_worker, bridge.put, lambda: bridge.close(timeout=WAIT), WAIT
    )
    assert all(isinstance(e, BridgeClosedError) for e in refused), refused
    concurrent.futures.wait(futures, WAIT)
    handled = failed = 0
    for f in futures:
        assert f.done(), "a put that raced close never resolved"
        if f.exception(0) is None:
            handled += 1
        else:
            assert isinstance(f.exception(0), BridgeClosedError)
            failed += 1
    assert handled == len(handler.calls)  # every success was really performed, once
    assert handled + failed + len(refused) <= workers * per_worker


@pytest.mark.timeout(60)
def test_puts_racing_close_all_resolve(lt: LoopThread) -> None:
    """Threads put on a Barrier while close runs: each put is refused or its future resolves."""
    for round_ in range(20):
        _put_close_race_round(lt, f"race-{round_}", workers=8, per_worker=300)


# -- the gate's rollback through the bridge ---------------------------------------


def _created(rid: str, ticket: Ticket) -> dict[str, Any]:
    return {
        "type": "response.created",
        "response": {"id": rid, "metadata": {TICKET_METADATA_KEY: ticket.event_id}},
    }


def _done(rid: str) -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": "completed"}}


@pytest.mark.timeout(30)
def test_send_failure_on_the_loop_rolls_the_gate_back_and_refires(lt: LoopThread) -> None:
    """A worker claims a ticket, the loop-side send fails, the gate is rolled back."""
    gate = ResponseGate()
    failing = threading.Event()
    failing.set()
    sent: list[str] = []

    def send(ticket: Ticket) -> None:  # the loop side: the only place a send happens
        if failing.is_set():
            raise SendError("data channel closed")
        sent.append(ticket.event_id)

    bridge = Bridge(lt, send).start()
    trigger = Trigger("tool_call_result:call_1")
    ticket = in_thread(lambda: gate.request(trigger))
    assert ticket is not None and ticket.triggers == (trigger,)
    assert gate.machine.in_flight is ticket
    # while it is in flight another worker's request only queues
    other = Trigger("tool_call_result:call_2")
    assert in_thread(lambda: gate.request(other)) is None

    error = bridge.put(ticket).exception(WAIT)
    assert isinstance(error, SendError)
    refired = gate.rollback(ticket, error)
    # the gate is free of the failed ticket; its trigger re-armed ahead of the queued one
    # and re-fired at once, coalesced with it
    assert refired is not None and refired is not ticket
    assert gate.machine.in_flight is refired
    assert refired.triggers == (trigger, other)
    assert trigger.attempts == 1 and not trigger.future.done()
    assert gate.stats().rollbacks == 1

    failing.clear()
    assert bridge.put(refired).result(WAIT) is None
    assert sent == [refired.event_id]
    gate.on_server_event(_created("resp_1", refired))
    gate.on_server_event(_done("resp_1"))
    assert trigger.future.result(WAIT)["response"]["id"] == "resp_1"
    assert other.future.result(WAIT)["response"]["id"] == "resp_1"
    assert gate.machine.free and gate.stats().lost == 0


@pytest.mark.timeout(30)
def test_rollback_from_the_future_callback_until_the_attempt_bound(lt: LoopThread) -> None:
    """The client's pattern: the outcome future's callback rolls back and re-fires."""
    gate = ResponseGate(max_attempts=3)
    bridge = Bridge(lt, Recorder(fail_on=lambda ticket: True)).start()
    attempts: list[str] = []
    finished: concurrent.futures.Future[None] = concurrent.futures.Future()

    def fire(ticket: Ticket | None) -> None:
        if ticket is None:
            finished.set_result(None)
            return
        attempts.append(ticket.event_id)
        bridge.put(ticket).add_done_callback(
            lambda f: fire(gate.rollback(ticket, f.exception() or RuntimeError("sent")))
        )

    trigger = Trigger("user_turn")
    in_thread(lambda: fire(gate.request(trigger)))
    finished.result(WAIT)
    assert len(attempts) == 3 and len(set(attempts)) == 3  # a fresh ticket each time
    assert isinstance(trigger.future.exception(WAIT), SendError)  # failed, not lost
    assert trigger.state == "failed"
    assert gate.machine.free and not gate.machine.pending
    stats = gate.stats()
    assert stats.rollbacks == 3 and stats.lost == 0
    # the gate is usable again
    assert gate.request("next") is not None


@pytest.mark.timeout(30)
def test_put_refused_by_a_closed_bridge_is_rolled_back_without_retry(lt: LoopThread) -> None:
    gate = ResponseGate()
    bridge = Bridge(lt, Recorder()).start()
    bridge.close()
    trigger = Trigger("tool_call_result:call_9")
    ticket = gate.request(trigger)
    assert ticket is not None
    with pytest.raises(BridgeClosedError) as info:
        bridge.put(ticket)
    assert gate.rollback(ticket, info.value, retry=False) is None
    assert isinstance(trigger.future.exception(WAIT), BridgeClosedError)
    assert gate.machine.free and gate.stats().lost == 0
