"""Real threads collide on a Barrier: the gate sends one create per round, always.

And the RCA's naive pattern (check the flag, send, set the flag later on another
thread), driven by the very same harness, *does* double-send - so this harness can
see the bug it claims is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from rtclient.core.gate import TICKET_METADATA_KEY, ResponseGate, Ticket, Trigger

ROUNDS = 1000
BARRIER_TIMEOUT = 30.0


def created(rid: str, ticket: Ticket) -> dict[str, Any]:
    return {
        "type": "response.created",
        "response": {"id": rid, "metadata": {TICKET_METADATA_KEY: ticket.event_id}},
    }


def done(rid: str) -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "status": "completed"}}


def run_rounds(
    threads: int,
    rounds: int,
    attempt: Callable[[int, int], Any],
    settle: Callable[[int, list[Any]], None],
) -> None:
    """Release ``threads`` workers on a Barrier ``rounds`` times; collect their results.

    Between rounds the main thread inspects and settles state (the second barrier keeps
    the workers parked meanwhile), so every round is a fresh, real collision.
    """
    start = threading.Barrier(threads + 1, timeout=BARRIER_TIMEOUT)
    end = threading.Barrier(threads + 1, timeout=BARRIER_TIMEOUT)
    results: list[list[Any]] = [[None] * threads for _ in range(rounds)]

    def worker(i: int) -> None:
        try:
            for r in range(rounds):
                start.wait()
                results[r][i] = attempt(r, i)
                end.wait()
        except threading.BrokenBarrierError:
            pass  # the main thread failed a round and aborted; it reports why

    pool = [threading.Thread(target=worker, args=(i,), name=f"race-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    try:
        for r in range(rounds):
            start.wait()
            end.wait()
            assert all(x is not None for x in results[r])
            settle(r, results[r])
    except BaseException:
        start.abort()  # release the workers so a failing round cannot hang the test
        end.abort()
        raise
    finally:
        for t in pool:
            t.join(BARRIER_TIMEOUT)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("threads", [2, 8, 64])
def test_barrier_race_one_ticket_per_round_then_one_coalesced(threads: int) -> None:
    gate = ResponseGate(confirm_timeout=60.0)
    triggers = [
        [Trigger(f"tool_call_result:r{r}:t{i}") for i in range(threads)] for r in range(ROUNDS)
    ]
    rounds_with_many_tickets = 0

    def attempt(r: int, i: int) -> tuple[Ticket | None]:
        return (gate.request(triggers[r][i]),)

    def settle(r: int, res: list[Any]) -> None:
        nonlocal rounds_with_many_tickets
        tickets = [x[0] for x in res if x[0] is not None]
        if len(tickets) != 1:
            rounds_with_many_tickets += 1
            return
        first = tickets[0]
        assert gate.machine.in_flight is first
        assert len(gate.machine.pending) == threads - 1
        gate.on_server_event(created(f"resp_{r}_a", first))
        fx = gate.on_server_event(done(f"resp_{r}_a"))
        assert first.triggers[0].future.result(0)["response"]["id"] == f"resp_{r}_a"
        coalesced = fx.send
        assert coalesced is not None, "pending triggers were not fired at response.done"
        others = {t for t in triggers[r] if t is not first.triggers[0]}
        assert set(coalesced.triggers) == others, "one coalesced ticket must carry them all"
        gate.on_server_event(created(f"resp_{r}_b", coalesced))
        assert gate.on_server_event(done(f"resp_{r}_b")).send is None
        assert all(t.future.result(0)["response"]["id"] == f"resp_{r}_b" for t in others)

    run_rounds(threads, ROUNDS, attempt, settle)
    assert rounds_with_many_tickets == 0
    stats = gate.stats()
    assert stats.creates == ROUNDS * 2
    assert stats.coalesced == ROUNDS * (threads - 2)
    assert stats.lost == 0 and stats.resolved == ROUNDS * threads


class NaiveResponseState:
    """The RCA's original code, kept only as a test helper to prove the harness bites.

    ``checkResponseInProgress()`` reads a flag; the caller sends; then
    ``didSendResponseCreate()`` sets the flag *asynchronously* on a state queue
    (``responseStateQueue.async``) - so two threads can both read "free".
    """

    def __init__(self) -> None:
        self.response_in_progress = False
        self.state_queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-queue")
        self.sent = 0
        self.queued = 0
        self._count = threading.Lock()

    def check_response_in_progress(self) -> bool:
        return self.response_in_progress

    def did_send_response_create(self) -> None:
        def set_flag() -> None:
            self.response_in_progress = True

        self.state_queue.submit(set_flag)

    def try_create(self) -> None:
        if self.check_response_in_progress():
            with self._count:
                self.queued += 1
            return
        with self._count:  # "sendEvent(response.create)"
            self.sent += 1
        self.did_send_response_create()

    def reset(self) -> None:
        self.state_queue.submit(lambda: None).result(BARRIER_TIMEOUT)  # flush the async set
        self.response_in_progress = False
        self.sent = 0
        self.queued = 0


@pytest.mark.timeout(120)
def test_naive_pattern_double_sends_under_the_same_race() -> None:
    naive = NaiveResponseState()
    double_sends = 0

    def settle(r: int, res: list[Any]) -> None:
        nonlocal double_sends
        assert naive.sent + naive.queued == 8
        if naive.sent > 1:
            double_sends += 1
        naive.reset()

    try:
        run_rounds(8, 200, lambda r, i: naive.try_create() or True, settle)
    finally:
        naive.state_queue.shutdown(wait=True)
    assert double_sends > 0, "the harness failed to reproduce the RCA's race"
