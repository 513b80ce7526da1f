"""race.py - the RCA's race, on real WebRTC against the emulator, under three strategies.

Each trial: the user asks for K parallel calls of one tool (``use collide*K``, the
emulator's scripted model); the K tool threads meet on a ``threading.Barrier(K)``
whose action waits until the calling response is done, so all K finish at the same
instant with nothing in progress - the RCA's "multiple tool calls completing very
close together". Then each strategy asks for the follow-up response its own way:

``naive``      the RCA's original (a baseline that lives only here): each tool thread
               sends its output, reads ``responseInProgress`` (a sync read through a
               serial "responseStateQueue" thread), sends ``response.create`` if it is
               false, and sets the flag *later* on that queue (``.async``); the flag is
               set at ``response.created`` and cleared at ``response.done``, where a
               queued trigger sends one create.
``gate``       rtclient as shipped: the tool is registered with
               ``RealtimeClient(tools=..., executor=...)``; its ToolRunner asks the
               ResponseGate for one follow-up per response.
``serialize``  the RCA's Option 2: every decision runs on the loop thread (scheduled with
               ``LoopThread.call_soon``) over a loop-thread-only busy flag and a queue;
               the flag is set at send and at ``response.created``, cleared at
               ``response.done``, where queued triggers send one create.
``sideband``   the gate on a sideband: a browser (a bare aiortc peer, its call created
               server-side with ``rtclient.create_call``) holds the call, and
               ``RealtimeClient(call_id=...)`` attaches over WebSocket with the tool.
               The browser starts responses of its own at random moments
               (``--browser-rate`` per session per second, ``tool_choice: "none"``), so
               the sideband's creates can cross them on the wire. Opt-in:
               ``--strategies gate,sideband``.

The emulator (a separate process) is the referee: it counts every
``conversation_already_has_active_response``. Per strategy and K the bench reports
rejections, lost triggers (a tool output with no accepted ``response.create`` after it
on the wire), creates per batch, duplicate creates, latency from the last tool output
to the next ``response.create`` on the wire (both timestamped on the loop thread by
wrapping the transport's ``send``), and wall time. ``--vad-noise`` makes the user
"speak" at random moments (server VAD creates responses on its own).

    python bench/race.py                       # 1000 trials x K=2..64 x 3 strategies
    python bench/race.py --trials 200 --k 2,8  # a subset
    python bench/race.py --vad-noise           # with server-VAD responses at random
    python bench/race.py --strategies gate,sideband --name race_sideband
    python bench/race.py --replot bench/results/race.json  # redraw a plot, no run

Results go to ``bench/results/local/`` (gitignored) unless ``--name NAME`` asks for the
committed ``bench/results/NAME.json`` and ``NAME.png``; a run of one K prints its table
and draws no plot.

Bench-only private access (documented gaps, see bench/README.md): ``client._bridge``
(naive/serialize put raw ``response.create`` events, which ``send_event`` refuses),
``client._transport.send`` and ``client._transport._on_message`` (wrapped to timestamp
sends and to run serialize's handler on the loop thread), ``client._loop_thread``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import json
import queue
import random
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    BrowserPeer,
    EmulatorProcess,
    Progress,
    add_result_options,
    http_json,
    int_list,
    machine_info,
    non_negative_float,
    non_negative_int,
    percentile,
    positive_float,
    positive_int,
    proc_cpu_seconds,
    proc_rss_bytes,
    quiet_logs,
    referee_counts,
    result_path,
    table,
    write_json,
)

from rtclient import LoopThread, RealtimeClient

ACTIVE = "conversation_already_has_active_response"
STRATEGIES = ("naive", "gate", "serialize")  # the default; "sideband" is opt-in
KS = (2, 4, 8, 16, 32, 64)
VAD = {"type": "server_vad", "create_response": True, "interrupt_response": False}
TOOL_SCHEMA = {
    "type": "function",
    "name": "collide",
    "description": "Finish at the same instant as the other calls of this batch.",
    "parameters": {"type": "object", "properties": {"i": {"type": "integer"}}, "required": []},
}
BENCH_META = "bench_create"
TRIAL_TIMEOUT = 20.0
_ids = itertools.count(1)


# ----------------------------------------------------------------------------- a trial
@dataclass(eq=False)
class Trial:
    k: int
    barrier: threading.Barrier
    calling_done: threading.Event = field(default_factory=threading.Event)
    calls: int = -1  # function calls in the calling response (-1: not seen yet)
    handled: int = 0  # naive/serialize: tool results whose create decision is made
    wire: list[tuple[int, str, str]] = field(default_factory=list)  # (ns, kind, id)
    creates: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # created or errored
    errored: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    leftover: int = 0  # triggers still queued when the trial settled (never served)
    void: bool = False


@dataclass
class Outcome:
    void: bool = False
    stuck: bool = False
    followups: int = 0
    rejected_followups: int = 0
    accepted_followups: int = 0
    lost: int = 0
    latency_ms: float | None = None
    rejected_creates: int = 0  # our creates rejected (initial or follow-up)


def analyse(trial: Trial) -> Outcome:
    """What the wire says: creates after the first output are follow-ups; an output is
    served if an accepted create follows it on the wire; latency is from the last
    output to the first create after it."""
    out = Outcome(void=trial.void, rejected_creates=len(trial.rejected))
    wire = list(trial.wire)
    outputs = [n for n, (_, kind, _) in enumerate(wire) if kind == "output"]
    if not outputs:
        out.void = True
        return out
    first, last = outputs[0], outputs[-1]
    follow = [(n, eid) for n, (_, kind, eid) in enumerate(wire) if kind == "create" and n > first]
    out.followups = len(follow)
    out.rejected_followups = sum(1 for _, eid in follow if eid in trial.rejected)
    accepted = [n for n, eid in follow if eid not in trial.errored]
    out.accepted_followups = len(accepted)
    last_accepted = max(accepted) if accepted else -1
    out.lost = sum(1 for n in outputs if n > last_accepted) + trial.leftover
    after = [n for n, _ in follow if n > last]
    if after:
        out.latency_ms = (wire[after[0]][0] - wire[last][0]) / 1e6
    return out


# -------------------------------------------------------------------------- strategies
class Strategy:
    """How follow-up creates are decided. Default: the gate (nothing to do here)."""

    name = "gate"
    registers_tool = True

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    @property
    def client(self) -> RealtimeClient:
        client = self.lane.client
        assert client is not None
        return client

    def put_raw(self, event: dict[str, Any]) -> Any:
        """Bench-only: a raw event onto the client's bridge (send_event refuses creates)."""
        bridge = self.client._bridge
        assert bridge is not None
        return bridge.put(event)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Bench-only: run ``fn`` on the client's loop thread."""
        loop_thread = self.client._loop_thread
        assert loop_thread is not None
        loop_thread.call_soon(fn)

    def install(self) -> None: ...

    def reset(self, open_responses: int) -> None: ...

    def on_result(self, trial: Trial, call_id: str, output: str) -> None: ...

    def on_created(self) -> None: ...

    def on_done(self) -> None: ...

    def after(self, fn: Callable[[], None]) -> None:
        """Run bench bookkeeping once the strategy has processed the current event."""
        fn()

    def settled(self, trial: Trial) -> bool:
        return True

    def describe(self) -> str:
        return ""

    def leftover(self) -> int:
        """Triggers still queued once everything settled: nobody will serve them."""
        return 0

    def close(self) -> None: ...

    def create_event(self) -> dict[str, Any]:
        eid = f"evt_bench_{next(_ids)}"
        response = {"metadata": {BENCH_META: eid}}
        return {"type": "response.create", "event_id": eid, "response": response}


class Gate(Strategy):
    name = "gate"

    def reset(self, open_responses: int) -> None:
        self.expected = self.client.stats()["accepted"] + 2  # send_text + one follow-up

    def describe(self) -> str:
        stats = self.client.stats()
        return f"expected={self.expected} {stats} {self.client.gate!r}"

    def settled(self, trial: Trial) -> bool:
        stats = self.client.stats()
        expected = self.expected - (1 if trial.void and trial.calls <= 0 else 0)
        return stats["accepted"] >= expected and stats["outstanding"] == 0


class Naive(Strategy):
    """The RCA's code, transliterated: check (sync read), send, set the flag later."""

    name = "naive"
    registers_tool = False

    def install(self) -> None:
        # responseStateQueue: a serial queue; .sync = submit().result(), .async = submit()
        self.state_q = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="naive-state")
        self.in_progress = False
        self.queue: list[str] = []

    def reset(self, open_responses: int) -> None:
        def do() -> None:
            self.in_progress = open_responses > 0
            self.queue.clear()

        self.state_q.submit(do).result(10)

    def leftover(self) -> int:
        return int(self.state_q.submit(lambda: len(self.queue)).result(10))

    def describe(self) -> str:
        return f"in_progress={self.in_progress} queue={len(self.queue)}"

    def _check(self) -> bool:  # checkResponseInProgress()
        return bool(self.state_q.submit(lambda: self.in_progress).result(10))

    def _did_send(self) -> None:  # didSendResponseCreate(): responseStateQueue.async
        def set_flag() -> None:
            self.in_progress = True

        self.state_q.submit(set_flag)

    def _send_create(self) -> bool:  # sendEvent(["type": "response.create"]) -> Bool
        try:
            self.put_raw(self.create_event()).result(10)
            return True
        except Exception:
            return False

    def on_result(self, trial: Trial, call_id: str, output: str) -> None:
        self.client.submit_tool_output(call_id, output)  # sync, as sendEvent is
        trigger = f"tool_call_result:{call_id}"
        if self._check():
            self.state_q.submit(self.queue.append, trigger)  # queueResponseCreate
        elif self._send_create():
            self._did_send()
        self.state_q.submit(self.lane.handled, trial)  # after the queue ops above

    def on_created(self) -> None:  # handleResponseCreatedEvent
        def set_flag() -> None:
            self.in_progress = True

        self.state_q.submit(set_flag)

    def on_done(self) -> None:  # handleResponseDoneEvent: clear, then send a queued one
        def done() -> None:
            self.in_progress = False
            if self.queue:
                self.queue.clear()
                if self._send_create():
                    self._did_send()

        self.state_q.submit(done)

    def after(self, fn: Callable[[], None]) -> None:
        self.state_q.submit(fn)

    def settled(self, trial: Trial) -> bool:
        return trial.calls >= 0 and trial.handled >= trial.calls

    def close(self) -> None:
        self.state_q.shutdown(wait=True)


class Serialize(Strategy):
    """RCA Option 2: one loop-thread-only flag and queue; every decision on the loop."""

    name = "serialize"
    registers_tool = False

    def install(self) -> None:
        self.busy = False  # loop thread only
        self.pending = 0  # loop thread only
        self.open: set[str] = set()  # responses open, as the loop thread saw them
        transport = self.client._transport  # bench-only: run our handler on the loop thread
        assert transport is not None
        original = transport._on_message

        def on_message(text: str) -> None:
            if '"response.' in text[:40]:
                self._loop_event(text)
            original(text)

        transport._on_message = on_message

    def _loop_event(self, text: str) -> None:
        head = text[:40]
        if "response.created" in head:
            event = json.loads(text)
            self.open.add(event["response"]["id"])
            self.busy = True
        elif "response.done" in head:
            event = json.loads(text)
            self.open.discard(event["response"]["id"])
            self.busy = False
            if self.pending:
                self.pending = 0
                self._send()

    def _send(self) -> None:  # on the loop thread: the bridge performs the put inline
        self.busy = True
        try:
            self.put_raw(self.create_event())
        except Exception:
            self.busy = False

    def reset(self, open_responses: int) -> None:
        done = threading.Event()

        def do() -> None:
            self.pending = 0
            self.busy = bool(self.open)
            done.set()

        self.call_soon(do)
        done.wait(10)

    def on_result(self, trial: Trial, call_id: str, output: str) -> None:
        self.client.submit_tool_output(call_id, output)

        def decide() -> None:
            if self.busy:
                self.pending += 1
            else:
                self._send()
            self.lane.handled(trial)

        self.call_soon(decide)

    def leftover(self) -> int:
        return self.pending

    def describe(self) -> str:
        return f"busy={self.busy} pending={self.pending} open={sorted(self.open)}"

    def settled(self, trial: Trial) -> bool:
        return trial.calls >= 0 and trial.handled >= trial.calls


class Sideband(Gate):
    """The gate, on a sideband to a call a browser holds (see Lane.connect)."""

    name = "sideband"


STRATEGY_TYPES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "gate": Gate,
    "serialize": Serialize,
    "sideband": Sideband,
}


# ------------------------------------------------------------------------------- a lane
class Lane:
    """One client session running trials one after another (rotated to keep the
    emulator's conversation short)."""

    def __init__(self, bench: Block, index: int) -> None:
        self.bench = bench
        self.index = index
        self.k = bench.k
        self.pool = concurrent.futures.ThreadPoolExecutor(
            self.k, thread_name_prefix=f"tool-{bench.strategy}-{index}"
        )
        self.cond = threading.Condition()
        self.trial: Trial | None = None
        self.open: set[str] = set()
        self.client: RealtimeClient | None = None
        self.browser: BrowserPeer | None = None
        self.strategy: Strategy | None = None
        self.call_ids: list[str] = []
        self.gate_stats: dict[str, int] = {}
        self.session_trials = 0

    # the tool: the same function for every strategy
    def collide(self, i: int = 0) -> int:
        """Finish at the same instant as the other calls of this batch."""
        trial = self.trial
        assert trial is not None
        trial.barrier.wait()
        return i

    def _barrier_action(self) -> None:
        trial = self.trial
        if trial is None or not trial.calling_done.wait(TRIAL_TIMEOUT):
            raise RuntimeError("the calling response did not finish")

    # lifecycle
    def connect(self) -> None:
        bench = self.bench
        strategy_type = STRATEGY_TYPES[bench.strategy]
        session: dict[str, Any] = {"output_modalities": ["text"]}
        if bench.vad:
            session["audio"] = {"input": {"turn_detection": VAD}}
        if not strategy_type.registers_tool:
            session["tools"] = [TOOL_SCHEMA]
        call_id = None
        if strategy_type is Sideband:  # the browser's call, created as an app would
            self.browser = BrowserPeer(bench.browser_loop, bench.url)
            call_id = self.browser.open(session, tools=[self.collide]).call_id
        client = RealtimeClient(
            api_key=API_KEY,
            base_url=bench.url,
            loopback_only=True,
            loop_thread=bench.loop_thread,
            session=session,
            tools=[self.collide] if strategy_type.registers_tool else [],
            executor=self.pool,
            call_id=call_id,
        )
        client.connect(timeout=30)
        self.client = client
        self.call_ids.append(client.call_id or "")
        transport = client._transport  # bench-only: timestamp sends on the loop thread
        assert transport is not None
        original_send = transport.send

        def send(event: Any) -> None:
            original_send(event)
            trial = self.trial
            if trial is None:
                return
            kind = event.get("type")
            if kind == "response.create":
                eid = event.get("event_id", "")
                trial.creates.add(eid)
                trial.wire.append((time.perf_counter_ns(), "create", eid))
            elif kind == "conversation.item.create" and event["item"].get("type") == (
                "function_call_output"
            ):
                trial.wire.append((time.perf_counter_ns(), "output", event["item"]["call_id"]))

        transport.send = send  # type: ignore[method-assign]
        self.strategy = strategy_type(self)
        self.strategy.install()
        client.on("response.created", self._on_created, raw=True)
        client.on("response.done", self._on_done, raw=True)
        client.on("error", self._on_error, raw=True)
        if not strategy_type.registers_tool:
            client.on("response.function_call_arguments.done", self._on_call, raw=True)

    def disconnect(self) -> None:
        client, strategy, browser = self.client, self.strategy, self.browser
        self.client = self.strategy = self.browser = None
        if client is not None:
            for key, value in client.stats().items():
                self.gate_stats[key] = self.gate_stats.get(key, 0) + value
            client.close()
        if browser is not None:
            browser.close()  # the call ends with the browser's peer connection
        if strategy is not None:
            strategy.close()
        self.open.clear()

    # events (dispatcher thread)
    def _on_created(self, event: dict[str, Any]) -> None:
        response = event["response"]
        metadata = response.get("metadata") or {}
        eid = metadata.get(BENCH_META) or metadata.get("rtclient_ticket")
        strategy = self.strategy
        assert strategy is not None
        strategy.on_created()

        def book() -> None:
            with self.cond:
                self.open.add(response["id"])
                if self.trial is not None and eid:
                    self.trial.answered.add(eid)
                self.cond.notify_all()

        strategy.after(book)

    def _on_done(self, event: dict[str, Any]) -> None:
        response = event["response"]
        calls = [o for o in response.get("output") or [] if o.get("type") == "function_call"]
        strategy = self.strategy
        assert strategy is not None
        strategy.on_done()
        trial = self.trial

        metadata = response.get("metadata") or {}
        ours = "rtclient_ticket" in metadata  # our initial create (via the gate)

        def book() -> None:
            with self.cond:
                self.open.discard(response["id"])
                if trial is not None and trial.calls < 0 and (calls or ours):
                    # The calling response; with VAD noise the user may have spoken
                    # first, and then the model answers that instead (a void trial).
                    trial.calls = len(calls)
                    if len(calls) != trial.k:
                        trial.void = True
                        trial.barrier.abort()
                    trial.calling_done.set()
                self.cond.notify_all()

        strategy.after(book)

    def _on_error(self, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        eid = error.get("event_id")
        with self.cond:
            trial = self.trial
            if trial is not None and eid:
                trial.answered.add(eid)
                trial.errored.add(eid)
                if error.get("code") == ACTIVE:
                    trial.rejected.add(eid)
            self.cond.notify_all()

    def _on_call(self, event: dict[str, Any]) -> None:
        trial = self.trial
        if trial is None:
            return
        call_id = event["call_id"]
        try:
            i = int(json.loads(event.get("arguments") or "{}").get("i", 0))
        except (ValueError, AttributeError):
            i = 0
        self.pool.submit(self._run_call, trial, call_id, i)

    def _run_call(self, trial: Trial, call_id: str, i: int) -> None:
        try:
            output = json.dumps(self.collide(i))
        except Exception as exc:  # a broken barrier (void trial)
            output = json.dumps({"error": type(exc).__name__})
        strategy = self.strategy
        try:
            assert strategy is not None
            strategy.on_result(trial, call_id, output)
        except Exception:
            self.handled(trial)

    def handled(self, trial: Trial) -> None:
        with self.cond:
            trial.handled += 1
            self.cond.notify_all()

    # one trial
    def run_trial(self) -> Outcome:
        client, strategy = self.client, self.strategy
        assert client is not None and strategy is not None
        with self.cond:
            open_now = len(self.open)
        strategy.reset(open_now)
        trial = Trial(self.k, threading.Barrier(self.k, action=self._barrier_action, timeout=60))
        with self.cond:
            self.trial = trial
        client.send_text(f"use collide*{self.k}")
        deadline = time.monotonic() + TRIAL_TIMEOUT
        stuck = False
        with self.cond:
            while True:
                ready = (
                    trial.calling_done.is_set()
                    and trial.creates <= trial.answered
                    and not self.open
                    and strategy.settled(trial)
                )
                if ready:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stuck = True
                    self.bench.errors.append(
                        f"stuck trial: calls={trial.calls} handled={trial.handled} "
                        f"unanswered={sorted(trial.creates - trial.answered)} "
                        f"open={sorted(self.open)} void={trial.void} "
                        f"strategy={strategy.describe()}"
                    )
                    break
                self.cond.wait(min(remaining, 0.005))
        trial.leftover = strategy.leftover()
        outcome = analyse(trial)
        outcome.stuck = stuck
        return outcome


# ------------------------------------------------------------ a block (worker process)
class Block:
    """One worker's share of the trials of one (strategy, K), over its lanes."""

    def __init__(self, cmd: dict[str, Any], on_trial: Callable[[], None]) -> None:
        self.strategy: str = cmd["strategy"]
        self.k: int = cmd["k"]
        self.trials: int = cmd["trials"]
        self.url, self.control = cmd["url"], cmd["control"]
        self.vad, self.vad_rate = cmd["vad"], cmd["vad_rate"]
        self.browser_rate: float = cmd.get("browser_rate", 10.0)
        self.loop_thread: LoopThread = cmd["loop_thread"]
        self.browser_loop: LoopThread = cmd["browser_loop"]
        self.lanes = [Lane(self, n) for n in range(max(1, min(cmd["lanes"], self.trials)))]
        self.per_session = max(1, cmd["item_budget"] // (2 * self.k + 2))
        self.on_trial = on_trial
        self.outcomes: list[Outcome] = []
        self.errors: list[str] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._stop_noise = threading.Event()
        self.vad_speeches = 0
        self.browser_creates = 0

    def _take(self) -> bool:
        return next(self._next) < self.trials

    def _run_lane(self, lane: Lane) -> None:
        try:
            while self._take():
                if lane.client is None:
                    lane.connect()
                outcome = lane.run_trial()
                with self._lock:
                    self.outcomes.append(outcome)
                self.on_trial()
                lane.session_trials += 1
                if outcome.stuck or lane.session_trials >= self.per_session:
                    lane.session_trials = 0
                    lane.disconnect()
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            lane.trial = None
            try:
                lane.disconnect()
            finally:
                lane.pool.shutdown(wait=False, cancel_futures=True)

    def _noise(self) -> None:
        """Server VAD at random moments: the user 'speaks' on a random lane's call."""
        rng = random.Random(self.k * 7919 + len(self.strategy))
        rate = self.vad_rate * len(self.lanes)
        while not self._stop_noise.wait(rng.expovariate(rate)):
            client = rng.choice(self.lanes).client
            call_id = client.call_id if client is not None else None
            if not call_id:
                continue
            try:
                http_json(
                    f"{self.control}/calls/{call_id}/speech", {"text": "uh-huh", "duration_ms": 200}
                )
                self.vad_speeches += 1
            except Exception:
                pass  # the session rotated meanwhile

    def _browser_noise(self) -> None:
        """The browsers start responses of their own at random moments (sideband)."""
        rng = random.Random(self.k * 104729 + 17)
        rate = self.browser_rate * len(self.lanes)
        while not self._stop_noise.wait(rng.expovariate(rate)):
            browser = rng.choice(self.lanes).browser
            if browser is None:
                continue
            self.browser_creates += 1
            browser.send(
                {
                    "type": "response.create",
                    "event_id": f"evt_browser_{self.browser_creates}",
                    "response": {"tool_choice": "none", "metadata": {"origin": "browser"}},
                }
            )

    def run(self) -> dict[str, Any]:
        cpu0 = proc_cpu_seconds()
        threads = [
            threading.Thread(target=self._run_lane, args=(lane,), name=f"lane-{lane.index}")
            for lane in self.lanes
        ]
        noises = []
        if self.vad:
            noises.append(threading.Thread(target=self._noise, name="vad-noise"))
        if self.strategy == "sideband" and self.browser_rate > 0:
            noises.append(threading.Thread(target=self._browser_noise, name="browser-noise"))
        for t in threads:
            t.start()
        for noise in noises:
            noise.start()
        for t in threads:
            t.join()
        self._stop_noise.set()
        for noise in noises:
            noise.join()
        gate_stats: dict[str, int] = {}
        for lane in self.lanes:
            for key, value in lane.gate_stats.items():
                gate_stats[key] = gate_stats.get(key, 0) + value
        return {
            "outcomes": [dataclasses.astuple(o) for o in self.outcomes],
            "call_ids": [c for lane in self.lanes for c in lane.call_ids],
            "gate_stats": gate_stats,
            "errors": self.errors[:5],
            "client_cpu_s": proc_cpu_seconds() - cpu0,
            "client_rss_mb": proc_rss_bytes() / 2**20,
            "vad_speeches": self.vad_speeches,
            "browser_creates": self.browser_creates,
        }


def worker_main() -> int:
    """``race.py --worker``: run blocks sent as JSON lines on stdin; report on stdout
    (``P`` per finished trial, then ``R <json>``)."""
    quiet_logs()
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    with LoopThread("bench-loop") as loop_thread, LoopThread("bench-browsers") as browsers:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            cmd["loop_thread"] = loop_thread
            cmd["browser_loop"] = browsers  # the browsers' aiortc, not the clients' loop
            result = Block(cmd, lambda: say("P")).run()
            say("R " + json.dumps(result))
    return 0


# ------------------------------------------------------------- the coordinator's side
class Worker:
    """A ``race.py --worker`` child process (its own loop thread, its own GIL)."""

    def __init__(self, index: int, progress: Progress) -> None:
        self.index = index
        self.progress = progress
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.results: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.weight = 1
        self.reader = threading.Thread(target=self._read, name=f"worker-{index}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("P"):
                self.progress.advance(self.weight)  # tool calls: a fair ETA across K
            elif line.startswith("R "):
                self.results.put(json.loads(line[2:]))
        self.results.put(None)  # the worker exited

    def submit(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.weight = cmd["k"] + 4  # ~cost of a trial, for the progress bar
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        result = self.results.get()
        if result is None:
            raise RuntimeError(f"race worker {self.index} exited (code {self.proc.poll()})")
        return result

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(5)


def summarise(
    strategy: str,
    k: int,
    parts: list[dict[str, Any]],
    wall: float,
    emu_cpu: float,
    referee: dict[str, int],
) -> dict[str, Any]:
    outcomes = [Outcome(*o) for part in parts for o in part["outcomes"]]
    valid = [o for o in outcomes if not o.void and not o.stuck]
    n = len(valid)
    latencies = [o.latency_ms for o in valid if o.latency_ms is not None]
    followups = sum(o.followups for o in valid)
    record: dict[str, Any] = {
        "strategy": strategy,
        "k": k,
        "trials": n,
        "void_trials": sum(1 for o in outcomes if o.void and not o.stuck),
        "stuck_trials": sum(1 for o in outcomes if o.stuck),
        "rejections": referee.get("rejections", 0),
        "rejections_followup": sum(o.rejected_followups for o in valid),
        "trials_with_rejection": sum(1 for o in valid if o.rejected_followups),
        "lost": sum(o.lost for o in valid),
        "trials_with_lost": sum(1 for o in valid if o.lost),
        "creates": followups,
        "creates_per_batch": followups / n if n else None,
        "duplicates": sum(max(0, o.followups - 1) for o in valid),
        "extra_responses": sum(max(0, o.accepted_followups - 1) for o in valid),
        "no_followup": sum(1 for o in valid if o.latency_ms is None),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "cdf_ms": [percentile(latencies, q) for q in range(101)] if latencies else [],
        "wall_s": wall,
        "client_cpu_s": sum(p["client_cpu_s"] for p in parts),
        "emulator_cpu_s": emu_cpu,
        "sessions": sum(len(p["call_ids"]) for p in parts),
        "client_rss_mb_max": max(p.get("client_rss_mb", 0.0) for p in parts),
        "referee": {k: referee.get(k, 0) for k in ("creates", "rejections", "responses", "errors")},
        "vad_speeches": sum(p["vad_speeches"] for p in parts),
        "errors": [e for p in parts for e in p["errors"]][:3],
    }
    if strategy == "sideband":
        # The referee counts per session, and a sideband's session is shared with the
        # browser: its rejections of the browser's own creates are the browser's.
        # Ours are the errors on our connection naming our creates.
        ours = sum(o.rejected_creates for o in outcomes)
        record["rejections"] = ours
        record["browser_creates"] = sum(p.get("browser_creates", 0) for p in parts)
        record["browser_rejections"] = referee.get("rejections", 0) - ours
    if strategy in ("gate", "sideband"):
        stats: dict[str, int] = {}
        for p in parts:
            for key, value in p["gate_stats"].items():
                stats[key] = stats.get(key, 0) + value
        record["client_stats"] = {
            key: stats.get(key, 0)
            for key in ("creates", "coalesced", "rejections", "rearmed", "lost", "failed")
        }
    return record


def run_cell(
    workers: list[Worker],
    emulator: EmulatorProcess,
    strategy: str,
    k: int,
    trials: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    w = len(workers)
    shares = [trials // w + (1 if i < trials % w else 0) for i in range(w)]
    busy = [(worker, n) for worker, n in zip(workers, shares, strict=True) if n > 0]
    emu_cpu0, t0 = emulator.cpu_seconds(), time.perf_counter()
    for worker, n in busy:
        worker.submit(
            {
                "strategy": strategy, "k": k, "trials": n, "url": emulator.url,
                "control": emulator.control, "vad": args.vad_noise, "vad_rate": args.vad_rate,
                "lanes": args.lanes or (2 if k <= 8 else 1), "item_budget": args.item_budget,
                "browser_rate": args.browser_rate,
            }
        )  # fmt: skip
    parts = [worker.result() for worker, _ in busy]
    wall = time.perf_counter() - t0
    emu_cpu = emulator.cpu_seconds() - emu_cpu0
    referee = referee_counts(emulator.stats(), [c for p in parts for c in p["call_ids"]])
    record = summarise(strategy, k, parts, wall, emu_cpu, referee)
    record["emulator_rss_mb"] = emulator.rss_bytes() / 2**20
    return record


# --------------------------------------------------------------------------------- main
COLUMNS = [
    ("strategy", "strategy"),
    ("k", "K"),
    ("trials", "trials"),
    ("rejections", "rejections"),
    ("trials_with_rejection", "trials w/ rej"),
    ("lost", "lost"),
    ("creates_per_batch", "creates/batch"),
    ("duplicates", "dup creates"),
    ("extra_responses", "extra resp"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("wall_s", "wall s"),
]


def plot(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Four panels against K (rejections, lost triggers, creates per batch, latency CDF);
    ticks at the K that ran, in plain numbers. A run of one K has no line to draw across
    K: it is a table (printed), not a plot, and None is returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ks = sorted({r["k"] for r in records})
    if len(ks) < 2:
        return None
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    style = {
        "naive": {"color": "tab:red", "marker": "o", "markersize": 6, "linewidth": 1.5},
        "gate": {"color": "tab:green", "marker": "o", "markersize": 11, "linewidth": 4},
        "serialize": {"color": "tab:blue", "marker": "s", "markersize": 5, "linewidth": 1.5},
        "sideband": {"color": "tab:purple", "marker": "D", "markersize": 7, "linewidth": 2.5},
    }
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (rej, lost), (creates, cdf) = axes
    tops = {"rej": 0.0, "lost": 0.0, "creates": 1.0}
    for strategy in ("gate", "sideband", "naive", "serialize"):  # gate first: drawn under
        rows = sorted((r for r in records if r["strategy"] == strategy), key=lambda r: r["k"])
        if not rows:
            continue
        x = [r["k"] for r in rows]
        kw: dict[str, Any] = {**style[strategy], "label": strategy}
        if len(rows) == 1:
            kw["linestyle"] = "none"  # one K for this strategy: a point, not a line
        per_batch = [r["rejections"] / max(1, r["trials"]) for r in rows]
        lost_rate = [r["lost"] / max(1, r["trials"]) for r in rows]
        made = [(r["k"], r["creates_per_batch"]) for r in rows if r["creates_per_batch"]]
        rej.plot(x, per_batch, **kw)
        lost.plot(x, lost_rate, **kw)
        if made:
            creates.plot([k for k, _ in made], [c for _, c in made], **kw)
        tops["rej"] = max(tops["rej"], *per_batch)
        tops["lost"] = max(tops["lost"], *lost_rate)
        tops["creates"] = max(tops["creates"], *(c for _, c in made))
        qs = [q / 100 for q in range(101)]
        for row, dashes in ((rows[-1], "-"), (rows[0], "--")):
            if row["cdf_ms"] and (dashes == "-" or row is not rows[-1]):
                cdf.plot(
                    [max(v, 1e-3) for v in row["cdf_ms"]], qs, color=style[strategy]["color"],
                    linestyle=dashes, label=f"{strategy} K={row['k']}",
                )  # fmt: skip
    for ax, key, ylabel, heading in (
        (rej, "rej", "rejections per batch", "conversation_already_has_active_response (referee)"),
        (lost, "lost", "lost triggers per batch", "lost triggers (no accepted create after it)"),
    ):
        ax.set_yscale("symlog", linthresh=0.001, linscale=0.5)
        decades = [0.0] + [10.0**e for e in range(-3, 3) if 10.0**e <= max(tops[key], 0.001) * 10]
        ax.set_ylim(-0.0002, decades[-1] * 1.5)
        ax.yaxis.set_major_locator(FixedLocator(decades))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylabel(ylabel)
        ax.set_title(heading)
    creates.set_yscale("log", base=2)
    powers = [2.0**e for e in range(0, 8) if 2.0**e <= tops["creates"] * 2]
    creates.set_ylim(0.8, powers[-1] * 1.2)
    creates.yaxis.set_major_locator(FixedLocator(powers))
    creates.yaxis.set_major_formatter(plain)
    creates.yaxis.set_minor_locator(NullLocator())
    creates.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    creates.set_ylabel("response.create per batch")
    creates.set_title("follow-up creates per batch (1 is right)")
    for ax in (rej, lost, creates):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(ks[0] / 1.3, ks[-1] * 1.3)
        ax.set_xlabel("K: parallel tool calls finishing at the same instant")
        ax.grid(True, alpha=0.3)
        ax.legend()
    cdf.set_xscale("log")
    cdf.xaxis.set_major_formatter(plain)
    cdf.set_xlabel("last tool output -> next response.create on the wire (ms)")
    cdf.set_ylabel("fraction of trials")
    cdf.set_title("follow-up latency CDF (solid: largest K, dashed: smallest K)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def title_of(records: list[dict[str, Any]], vad_noise: bool) -> str:
    trials = {r["k"]: max(x["trials"] for x in records if x["k"] == r["k"]) for r in records}
    title = "race.py: " + ", ".join(f"K={k}: {n}" for k, n in sorted(trials.items())) + " trials"
    return title + (" - with VAD noise" if vad_noise else "")


def print_table(records: list[dict[str, Any]]) -> None:
    columns = list(COLUMNS)
    if any(r["strategy"] == "sideband" for r in records):  # the browser's side of it
        columns[-1:-1] = [
            ("browser_creates", "browser creates"),
            ("browser_rejections", "browser rej"),
        ]
    print(table(records, columns))


def replot(path: Path) -> int:
    """Redraw the plot of a results file (next to it), from its JSON alone."""
    payload = json.loads(path.read_text())
    records = payload["results"]
    png = plot(records, path.with_suffix(".png"), title_of(records, payload["vad_noise"]))
    print_table(records)
    print(f"\nwrote {png}" if png else "\none K: a table, no plot")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trials", type=positive_int, default=None,
        help="trials per strategy and K (default 1000, with the --max-calls cap; "
        "given explicitly, every cell runs exactly this many unless --max-calls is given)",
    )  # fmt: skip
    parser.add_argument(
        "--max-calls", type=non_negative_int, default=None,
        help="cap a cell at this many tool calls (trials = min(N, max_calls // K)); "
        "0 = no cap. Default: 16000 when --trials is not given, which keeps the whole "
        "run under 10 minutes on 2 cores (K=32: 500 trials, K=64: 250)",
    )  # fmt: skip
    parser.add_argument(
        "--k", type=int_list, default=",".join(map(str, KS)), help="K values, e.g. 2,8"
    )
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--workers", type=positive_int, default=2, help="client processes")
    parser.add_argument(
        "--lanes", type=non_negative_int, default=0,
        help="sessions per worker at once (0 = auto: 2 for K <= 8, else 1)",
    )  # fmt: skip
    parser.add_argument("--vad-noise", action="store_true", help="server VAD speaks at random")
    parser.add_argument(
        "--vad-rate", type=positive_float, default=10.0, help="speeches/s per session"
    )
    parser.add_argument(
        "--browser-rate", type=non_negative_float, default=10.0,
        help="sideband: the browser's own response.create per session per second",
    )  # fmt: skip
    parser.add_argument(
        "--item-budget", type=positive_int, default=260,
        help="start a new session once the conversation would hold about this many items",
    )  # fmt: skip
    parser.add_argument(
        "--think-ms", type=non_negative_float, default=5.0,
        help="the emulator's model thinks this long before answering tool results "
        "(its response is active meanwhile, as a real one is for seconds)",
    )  # fmt: skip
    add_result_options(parser, "race (race_vad with --vad-noise)")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON",
        help="only redraw the plot of a results file, next to it (no run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.replot is not None:
        return replot(args.replot)
    if args.max_calls is None:
        args.max_calls = 16000 if args.trials is None else 0
    if args.trials is None:
        args.trials = 1000
    ks: list[int] = args.k
    strategies = [s for s in args.strategies.split(",") if s]
    if not strategies:
        parser.error("--strategies: give at least one")
    for s in strategies:
        if s not in STRATEGY_TYPES:
            parser.error(f"unknown strategy {s!r}")

    def cell_trials(k: int) -> int:
        trials: int = args.trials
        return max(1, min(trials, args.max_calls // k)) if args.max_calls > 0 else trials

    path = result_path(args.name, "race_vad" if args.vad_noise else "race")
    quiet_logs()
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    progress = Progress(
        sum(cell_trials(k) * (k + 4) for k in ks) * len(strategies), "race (tool calls)"
    )
    pace = {"delay": 0.0, "deltas": 1}
    workers: list[Worker] = []
    with EmulatorProcess(pace=pace, think_s=args.think_ms / 1000) as emulator:
        try:
            workers = [Worker(i, progress) for i in range(args.workers)]
            for k in ks:
                for strategy in strategies:
                    progress.set_note(f"{strategy} K={k}")
                    record = run_cell(workers, emulator, strategy, k, cell_trials(k), args)
                    records.append(record)
                    for error in record["errors"]:
                        print(f"\n{strategy} K={k} lane error:\n{error}", file=sys.stderr)
        finally:
            for worker in workers:
                worker.stop()
    progress.close()
    total = time.perf_counter() - started
    payload = {
        "bench": "race",
        "command": "python bench/race.py " + " ".join(argv),
        "vad_noise": args.vad_noise,
        "vad_rate_per_session": args.vad_rate if args.vad_noise else 0,
        "browser_rate_per_session": args.browser_rate if "sideband" in strategies else 0,
        "trials_requested": args.trials,
        "max_calls_per_cell": args.max_calls,
        "workers": args.workers,
        "lanes_per_worker": args.lanes,
        "emulator_pace": pace,
        "think_ms": args.think_ms,
        "total_wall_s": total,
        "machine": machine_info(),
        "results": records,
    }
    path = write_json(path.stem, payload, path.parent)
    png = plot(records, path.with_suffix(".png"), title_of(records, args.vad_noise))
    print_table(records)
    print(f"\ntotal {total:.0f}s; wrote {path}" + (f" and {png}" if png else " (one K: no plot)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
