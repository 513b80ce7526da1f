#!/usr/bin/env python
"""Bench (not a test): the response gate's decision time and the bridge's handoff latency.

    python bench/gate_bench.py            # ~30-60 s
    python bench/gate_bench.py --quick    # a few seconds, for a smoke run

Prints a table and writes ``bench/results/local/gate_bench.json`` (with ``--name NAME``:
the committed ``bench/results/NAME.json``).

What is measured
----------------
1. ``ResponseGate.request()`` uncontended, each call timed on its own with
   ``time.perf_counter_ns`` (median, p99; the timer's own back-to-back cost is reported
   next to it and *not* subtracted), separately for
   - the *claim* path: the gate is free, the call returns a ticket (it is rolled back,
     untimed, so the next sample finds the gate free again);
   - the *queue* path: a create is in flight, the call queues the trigger.
   Triggers are built before timing (``Trigger`` carries a ``Future``). Loguru is left
   as the library ships it - disabled for ``"rtclient"`` (``import rtclient`` calls
   ``logger.disable("rtclient")``), with loguru's default stderr sink in place - and the
   bench checks that no gate record reaches a sink. (The gate skips its log calls
   while logging is off; a breakdown shows the pure machine, the lock and the cost of
   the disabled loguru call it avoids.)
   Target: <= 1 us median.
2. The same call with 2, 8 and 64 threads released together on a ``threading.Barrier``
   (fresh gate per round): per-call latency median/p99 and aggregate throughput.
3. Worker thread -> loop thread handoff: ``Bridge.put`` vs a bare
   ``loop.call_soon_threadsafe`` that resolves a ``concurrent.futures.Future``, sampled
   alternately in the same run on a non-debug loop. "handoff" is from just before the put
   (worker clock) to the start of the handler on the loop thread; "round trip" is until
   the worker holds the result. Target: bridge p50 <= 2x bare p50.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

import rtclient  # noqa: F401 - importing the package disables loguru for "rtclient"
from rtclient.core.gate import GateMachine, ResponseGate, Trigger
from rtclient.runtime.bridge import Bridge
from rtclient.runtime.loop import LoopThread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_result_options, result_path

pc = time.perf_counter_ns
ROLLBACK_ERROR = RuntimeError("bench: undo the claim")


def pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns)) - 1))
    return float(sorted_ns[k])


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {
        "n": len(s),
        "median_us": statistics.median(s) / 1000,
        "p99_us": pct(s, 99) / 1000,
        "min_us": s[0] / 1000,
        "mean_us": statistics.fmean(s) / 1000,
    }


def timer_overhead_ns(n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = pc()
        t1 = pc()
        samples.append(t1 - t0)
    return float(statistics.median(samples))


# -- 1. uncontended ---------------------------------------------------------------


def bench_claim(n: int) -> list[int]:
    gate = ResponseGate(confirm_timeout=1e9)
    triggers = [Trigger(f"t{i}") for i in range(n)]
    out = [0] * n
    gc.collect()
    for i, trigger in enumerate(triggers):
        t0 = pc()
        ticket = gate.request(trigger)
        t1 = pc()
        out[i] = t1 - t0
        assert ticket is not None
        gate.rollback(ticket, ROLLBACK_ERROR, retry=False)  # untimed: free again
    return out


def bench_queue(n: int) -> list[int]:
    gate = ResponseGate(confirm_timeout=1e9)
    assert gate.request("in flight") is not None
    triggers = [Trigger(f"t{i}") for i in range(n)]
    out = [0] * n
    gc.collect()
    for i, trigger in enumerate(triggers):
        t0 = pc()
        ticket = gate.request(trigger)
        t1 = pc()
        out[i] = t1 - t0
        assert ticket is None
    return out


def batch_mean_ns(n: int, queue_path: bool) -> float:
    """One timer pair around n calls: per-call cost without per-call timer overhead."""
    gate = ResponseGate(confirm_timeout=1e9)
    if queue_path:
        gate.request("in flight")
    triggers = [Trigger(f"t{i}") for i in range(n)]
    request = gate.request
    gc.collect()
    t0 = pc()
    for trigger in triggers:
        request(trigger)
    return (pc() - t0) / n


def breakdown_ns(n: int) -> dict[str, float]:
    """Where a queue-path request() spends its time (mean ns per call, batch-timed)."""
    machine = GateMachine(confirm_timeout=1e9)
    machine.request(Trigger("in flight"), 0.0)
    triggers = [Trigger(f"t{i}") for i in range(n)]
    gc.collect()
    t0 = pc()
    for trigger in triggers:
        machine.request(trigger, 0.0)
    machine_ns = (pc() - t0) / n

    lock = threading.Lock()
    t0 = pc()
    for _ in range(n):
        with lock:
            time.monotonic()
    lock_clock_ns = (pc() - t0) / n

    # what the gate no longer pays while rtclient logging is off: one disabled loguru
    # call, made from a module under "rtclient" (the gate notes 2 per queued decision)
    probe: dict[str, Any] = {"__name__": "rtclient.bench_probe", "logger": logger}
    exec(
        "def log(n):\n"
        "    for _ in range(n):\n"
        "        logger.log('DEBUG', '[{}] {}', 'RESPONSE_CREATE_CHECK', 'msg')\n",
        probe,
    )
    probe["log"](1)  # fill loguru's per-module activation cache
    t0 = pc()
    probe["log"](n)
    disabled_log_ns = (pc() - t0) / n
    return {
        "machine_request_ns": machine_ns,
        "lock_plus_monotonic_ns": lock_clock_ns,
        "one_disabled_loguru_call_ns": disabled_log_ns,
    }


def loguru_check() -> dict[str, Any]:
    """Confirm the default: no gate record reaches a sink unless the app enables rtclient."""
    seen: list[str] = []
    sink = logger.add(seen.append, level="TRACE")
    try:
        gate = ResponseGate()
        ticket = gate.request("probe")
        gate.request("probe-2")
        assert ticket is not None
        gate.rollback(ticket, ROLLBACK_ERROR, retry=False)
    finally:
        logger.remove(sink)
    return {"rtclient_disabled": not seen, "records_seen": len(seen)}


# -- 2. contended -----------------------------------------------------------------


def bench_contended(threads: int, rounds: int, calls: int) -> dict[str, Any]:
    barrier = threading.Barrier(threads + 1, timeout=60)
    done = threading.Barrier(threads + 1, timeout=60)
    gates: list[ResponseGate] = []
    per_thread: list[list[int]] = [[] for _ in range(threads)]
    spans: list[list[tuple[int, int]]] = [[] for _ in range(rounds)]
    tickets = [0] * rounds
    lock = threading.Lock()

    def worker(i: int) -> None:
        lat = per_thread[i]
        for r in range(rounds):
            triggers = [Trigger(f"r{r}t{i}c{c}") for c in range(calls)]
            barrier.wait()
            gate = gates[r]
            got = 0
            first = pc()
            for trigger in triggers:
                t0 = pc()
                ticket = gate.request(trigger)
                t1 = pc()
                lat.append(t1 - t0)
                got += ticket is not None
            last = pc()
            with lock:
                spans[r].append((first, last))
                tickets[r] += got
            done.wait()

    pool = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    try:
        for _ in range(rounds):
            gates.append(ResponseGate(confirm_timeout=1e9))
            barrier.wait()
            done.wait()
    finally:
        for t in pool:
            t.join(60)
    assert all(n == 1 for n in tickets), "the gate sent more (or less) than one create per round"
    total_calls = threads * rounds * calls
    wall_ns = sum(max(e for _, e in s) - min(b for b, _ in s) for s in spans)
    merged = [x for lat in per_thread for x in lat]
    res = summary_us(merged)
    res.update(
        threads=threads,
        rounds=rounds,
        calls_per_thread_per_round=calls,
        throughput_calls_per_s=total_calls / (wall_ns / 1e9),
    )
    return res


# -- 3. handoff -------------------------------------------------------------------


def bench_handoff(n: int, warmup: int) -> dict[str, Any]:
    loop_thread = LoopThread("bench-loop", debug=False).start()
    try:
        bridge: Bridge[int] = Bridge(loop_thread, lambda t0: pc()).start()
        loop = loop_thread.loop

        def resolve(future: concurrent.futures.Future[int]) -> None:
            future.set_result(pc())

        def via_bridge() -> tuple[int, int]:
            t0 = pc()
            started = bridge.put(t0).result(10)
            return started - t0, pc() - t0

        def via_bare() -> tuple[int, int]:
            t0 = pc()
            future: concurrent.futures.Future[int] = concurrent.futures.Future()
            loop.call_soon_threadsafe(resolve, future)
            started = future.result(10)
            return started - t0, pc() - t0

        out: dict[str, dict[str, list[int]]] = {
            "bridge": {"handoff": [], "round_trip": []},
            "bare": {"handoff": [], "round_trip": []},
        }

        def worker() -> None:
            pairs: list[tuple[str, Callable[[], tuple[int, int]]]] = [
                ("bridge", via_bridge),
                ("bare", via_bare),
            ]
            for i in range(warmup + n):
                order = pairs if i % 2 == 0 else pairs[::-1]  # alternate who goes first
                for name, fn in order:
                    handoff, round_trip = fn()
                    if i >= warmup:
                        out[name]["handoff"].append(handoff)
                        out[name]["round_trip"].append(round_trip)

        gc.collect()
        thread = threading.Thread(target=worker, name="bench-worker")
        thread.start()
        thread.join(300)
        assert not thread.is_alive()
    finally:
        loop_thread.stop()
    res: dict[str, Any] = {
        name: {kind: summary_us(v) for kind, v in kinds.items()} for name, kinds in out.items()
    }
    for kind in ("handoff", "round_trip"):
        res[f"ratio_p50_{kind}"] = res["bridge"][kind]["median_us"] / res["bare"][kind]["median_us"]
    return res


# -- main -------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sample counts (seconds)")
    add_result_options(parser, "gate_bench")
    args = parser.parse_args()
    out = result_path(args.name, "gate_bench")
    if args.quick:
        n_unc, n_batch, n_handoff, warmup = 20_000, 20_000, 1_000, 100
        contended = {2: (100, 20), 8: (50, 20), 64: (10, 10)}
    else:
        n_unc, n_batch, n_handoff, warmup = 300_000, 300_000, 10_000, 500
        contended = {2: (1000, 50), 8: (500, 50), 64: (100, 25)}

    started = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    log_state = loguru_check()
    overhead = timer_overhead_ns(100_000)
    claim = summary_us(bench_claim(n_unc))
    queue = summary_us(bench_queue(n_unc))
    queue["batch_mean_us"] = batch_mean_ns(n_batch, queue_path=True) / 1000
    parts = breakdown_ns(n_batch)
    cont = {str(t): bench_contended(t, r, c) for t, (r, c) in contended.items()}
    handoff = bench_handoff(n_handoff, warmup)
    elapsed = time.monotonic() - started

    target_decision = max(claim["median_us"], queue["median_us"]) <= 1.0
    target_handoff = handoff["ratio_p50_handoff"] <= 2.0
    result = {
        "env": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_start": load_at_start,
            "switch_interval_s": sys.getswitchinterval(),
            "asyncio_debug_env": os.environ.get("PYTHONASYNCIODEBUG"),
            "loop_debug": False,
            "loguru": log_state,
            "quick": args.quick,
            "elapsed_s": round(elapsed, 1),
        },
        "timer_overhead_ns": overhead,
        "uncontended": {"claim": claim, "queue": queue, "breakdown_ns": parts},
        "contended": cont,
        "handoff": handoff,
        "targets": {
            "decision_median_le_1us": target_decision,
            "bridge_p50_le_2x_bare": target_handoff,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    def row(label: str, s: dict[str, float], extra: str = "") -> str:
        return f"  {label:<34}{s['median_us']:>10.2f}{s['p99_us']:>10.2f}  {extra}"

    disabled = "disabled" if log_state["rtclient_disabled"] else "ENABLED"
    print(
        f"rtclient gate bench (python {result['env']['python']}, {os.cpu_count()} cpus, "
        f"load {load_at_start}, "
        f"loguru {disabled} for 'rtclient', timer overhead {overhead:.0f} ns, {elapsed:.0f}s)"
    )
    print(f"  {'':<34}{'p50 us':>10}{'p99 us':>10}")
    print("ResponseGate.request(), uncontended (per-call timing, timer cost included)")
    print(row("claim path (returns a ticket)", claim))
    print(row("queue path (trigger queued)", queue, f"batch mean {queue['batch_mean_us']:.2f} us"))
    print(
        "  queue path, mean ns/call: pure machine {machine_request_ns:.0f}, lock+clock "
        "{lock_plus_monotonic_ns:.0f} (skipped while logging is off: a disabled loguru call "
        "costs {one_disabled_loguru_call_ns:.0f})".format(**parts)
    )
    print("ResponseGate.request(), threads released on a Barrier")
    for t, c in cont.items():
        print(row(f"{t:>2} threads", c, f"{c['throughput_calls_per_s'] / 1e3:,.0f} k calls/s"))
    print("worker thread -> loop thread (non-debug loop, alternating samples)")
    for kind in ("handoff", "round_trip"):
        print(row(f"bare call_soon_threadsafe {kind}", handoff["bare"][kind]))
        print(
            row(
                f"Bridge.put {kind}",
                handoff["bridge"][kind],
                f"ratio p50 {handoff[f'ratio_p50_{kind}']:.2f}x",
            )
        )
    print("targets")
    print(f"  decision p50 <= 1 us uncontended:  {'met' if target_decision else 'NOT met'}")
    print(f"  bridge handoff p50 <= 2x bare:     {'met' if target_handoff else 'NOT met'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
