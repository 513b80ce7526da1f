"""Fencing: a holder that loses Redis, or sleeps past its lease, never answers beside the
worker that took its call over (``examples/calls_fence.py``).

The deployment of ``tests/test_cluster_examples.py`` - redis-server, the emulator,
gunicorn with 3 workers of the Flask example, aiortc browsers - with every worker's
Redis reached through a TCP proxy (``tests/partition.py``) that can cut one worker off:
its process alive, its sideband up, its Redis silent. The emulator is the referee: it
records every event each connection sent (rtclient's event ids carry the sender's pid).

Each test holds a tool call in the holder (the carrier answers only once the test opens
its gate), then cuts the holder off (or SIGSTOPs it) until another worker has taken the
call over, then opens the gate: the old holder's tool returns too - it would answer -
but it has fenced itself: it sends nothing, detaches, and the referee shows exactly one
output for the call and one create for the question. The measured distribution over
hundreds of faults: ``bench/chaos.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    Browser,
    EmulatorServer,
    Gunicorn,
    RedisServer,
    flask_app,
    outputs,
    process_state,
    redis_server_missing,
    sender_pid,
    sideband_creates,
    wait_until,
)
from partition import Proxy

from rtclient import LoopThread

_MISSING = redis_server_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

LEASE_TTL = 2.0  # the registry's default deadline: 0.75 * TTL = 1.5 s
TRACK = 'Where is it? track_parcel({"order_id": 7})'
TRACKED = 'Tool results: track_parcel -> {"order_id": 7, "carrier": "DHL", "parcel": "out for'


class Cluster:
    """redis-server, the emulator, the proxy, 3 gunicorn workers; the carrier's gate."""

    def __init__(self, tmp: Path) -> None:
        self.redis = RedisServer(tmp)
        self.emulator = EmulatorServer(tmp)
        self.server: Gunicorn | None = None
        self.proxy = Proxy(self.redis.port, self._pids).start()
        self.gate = tmp / "carrier-open"  # track_parcel answers once it exists
        self.app = flask_app(
            self.redis, self.emulator, tmp, workers=3, lease_ttl=LEASE_TTL,
            redis_url=f"redis://127.0.0.1:{self.proxy.port}/0",
            SHOP_CARRIER_GATE=str(self.gate),
        )  # fmt: skip
        self.server = self.app.server
        self.reg = self.app.registry

    def _pids(self) -> set[int]:
        return self.server.worker_pids() if self.server is not None else set()

    def answered_by(self) -> list[int]:
        """The workers whose track_parcel returned, in order (the tool notes each run)."""
        runs = Path(f"{self.gate}.answered")
        return [int(x) for x in runs.read_text().split()] if runs.exists() else []

    def stop(self) -> None:
        for part in (self.server, self.proxy, self.emulator, self.redis):
            if part is not None:
                part.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("fencing"))
    try:
        made.app.wait_ready()
        yield made
    finally:
        made.stop()


@pytest.fixture
def browser(cluster: Cluster, lt: LoopThread) -> Iterator[Browser]:
    user = Browser(lt, cluster.app.url)
    try:
        yield user
    finally:
        user.close()


def hold_a_tool_call(cluster: Cluster, user: Browser) -> tuple[int, int, dict[str, Any], Any]:
    """A call with one answered round, then a track_parcel running in its holder (the
    gate shut). Returns (holder pid, epoch, the running call's record, the answer)."""
    reg = cluster.reg
    cluster.gate.touch()
    user.start_call()
    assert user.ask('lookup_order({"order_id": 7})').startswith("Tool results: lookup_order")
    reg.wait_settled(user.call_id)
    holder, epoch = reg.holder_pid(user.call_id), int(reg.call(user.call_id)["epoch"])
    cluster.gate.unlink()
    pending = user.ask_later(TRACK)
    running = wait_until(
        lambda: [
            r
            for r in reg.tools(user.call_id).values()
            if r.get("name") == "track_parcel" and r["state"] == "arguments"
        ],
        20,
        "track_parcel running in the holder",
    )[0]
    return holder, epoch, running, pending


def successor(cluster: Cluster, call_id: str, epoch: int, old: int) -> dict[str, str]:
    """The call's record once another worker has attached to it (generous bound: this
    is not a speed test; bench/chaos.py measures it)."""
    return wait_until(
        lambda: cluster.reg.attached_after(call_id, epoch, old),
        10 * LEASE_TTL,
        f"a worker other than {old} taking {call_id} over",
    )


def fences(cluster: Cluster, pid: int) -> int:
    """How many times worker ``pid`` has fenced a holder (its heartbeat)."""
    info = cluster.reg.worker(pid)
    assert info is not None, f"worker {pid} has no heartbeat"
    return int(info["fenced"])


def detached(
    cluster: Cluster, pid: int, call_id: str, after: float, fenced_before: int
) -> dict[str, Any]:
    """Worker ``pid``'s first heartbeat after ``after`` that shows it fenced once more
    and no longer holding ``call_id``."""

    def check() -> dict[str, Any] | None:
        info = cluster.reg.worker(pid)
        if info is None or info["seen_at"] <= after:
            return None
        return info if info["fenced"] > fenced_before and call_id not in info["calls"] else None

    return wait_until(check, 10 * LEASE_TTL, f"worker {pid} fenced, {call_id} detached")


def assert_one_answer_each(
    cluster: Cluster, call_id: str, since: int, old: int, questions: int
) -> list[dict[str, Any]]:
    """The referee's record from event ``since`` on: nothing from the old holder, one
    output per tool call, one sideband create per question. Returns those events."""
    record = cluster.emulator.call(call_id)
    late = record["client_events"][since:]
    assert [e["type"] for e in late if sender_pid(e) == old] == [], "the fenced holder sent"
    answered = [e["item"]["call_id"] for e in outputs(late)]
    assert len(answered) == len(set(answered)) == questions, answered
    creates = sideband_creates({"client_events": late})
    assert len(creates) == questions, [e["event_id"] for e in creates]
    assert record["counters"].get("rejections", 0) == 0
    return late


@pytest.mark.timeout(120)
def test_a_holder_cut_off_from_redis_fences_itself_and_its_successor_answers(
    cluster: Cluster, browser: Browser
) -> None:
    reg, proxy = cluster.reg, cluster.proxy
    holder, epoch, running, pending = hold_a_tool_call(cluster, browser)
    since = len(cluster.emulator.call(browser.call_id)["client_events"])
    fenced_before = fences(cluster, holder)
    assert proxy.cut(holder) >= 1  # its Redis goes silent; its sideband stays up

    info = successor(cluster, browser.call_id, epoch, holder)
    cluster.gate.touch()  # both tools return: the successor's re-run, and the old one's
    assert pending.result(timeout=30).startswith(TRACKED)  # answered once, by the successor
    wait_until(lambda: holder in cluster.answered_by(), 10, "the cut holder's tool returning")
    report = wait_until(
        lambda: [
            r
            for r in reg.reports(browser.call_id, "calls_possibly_lost")
            if r["epoch"] == int(info["epoch"])
        ],
        10,
        "the successor's report",
    )[0]
    # The holder could neither renew nor release: the lease expired; nothing it did
    # was recorded as sent, so the successor ran the call again, once.
    assert report["handover"] == "expired" and report["rerun"] == [running["call_id"]]
    assert report["unconfirmed"] == [] and report["errored"] == []
    assert reg.tools(browser.call_id)[running["call_id"]]["sent_epoch"] == int(info["epoch"])

    healed_at = time.time()
    proxy.heal(holder)  # back in touch: it has detached and holds nothing
    assert detached(cluster, holder, browser.call_id, healed_at, fenced_before)["calls"] == []
    assert browser.connected()  # the call never dropped for the browser
    assert browser.ask('lookup_order({"order_id": 8})').startswith("Tool results: lookup_order")
    reg.wait_settled(browser.call_id)
    late = assert_one_answer_each(cluster, browser.call_id, since, holder, questions=2)
    assert {sender_pid(e) for e in outputs(late)} == {int(info["owner_pid"])}
    assert cluster.app.hangup(browser)[0] == 200


@pytest.mark.timeout(120)
def test_a_holder_paused_past_its_lease_wakes_fenced_and_never_answers(
    cluster: Cluster, browser: Browser
) -> None:
    reg = cluster.reg
    holder, epoch, running, pending = hold_a_tool_call(cluster, browser)
    since = len(cluster.emulator.call(browser.call_id)["client_events"])
    fenced_before = fences(cluster, holder)
    os.kill(holder, signal.SIGSTOP)  # a long GC pause, mid tool call
    try:
        wait_until(lambda: process_state(holder) == "T", 10, f"worker {holder} stopped")
        info = successor(cluster, browser.call_id, epoch, holder)
        cluster.gate.touch()  # the successor's re-run answers; the paused tool is ready too
        assert pending.result(timeout=30).startswith(TRACKED)
        reg.wait_settled(browser.call_id)
    finally:
        woke_at = time.time()
        os.kill(holder, signal.SIGCONT)
    # It wakes past its deadline with its tool's result in hand: the tool returns, and
    # the output it would send is refused; it detaches and says so.
    wait_until(lambda: holder in cluster.answered_by(), 10, "the woken holder's tool returning")
    beat = detached(cluster, holder, browser.call_id, woke_at, fenced_before)
    fenced = wait_until(
        lambda: [r for r in reg.reports(browser.call_id, "holder_fenced") if r["epoch"] == epoch],
        10,
        "the woken holder's fenced report",
    )
    assert fenced[0]["owner"].endswith(f":{holder}") and beat["calls"] == []
    report = [
        r
        for r in reg.reports(browser.call_id, "calls_possibly_lost")
        if r["epoch"] == int(info["epoch"])
    ]
    assert report[0]["rerun"] == [running["call_id"]] and report[0]["handover"] == "expired"

    assert browser.ask('lookup_order({"order_id": 8})').startswith("Tool results: lookup_order")
    reg.wait_settled(browser.call_id)
    late = assert_one_answer_each(cluster, browser.call_id, since, holder, questions=2)
    assert {sender_pid(e) for e in outputs(late)} == {int(info["owner_pid"])}
    assert cluster.app.hangup(browser)[0] == 200
