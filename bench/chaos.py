"""Chaos: holders cut off from Redis and workers paused around the lease TTL; two holders
never answer one call.

The deployment of the README's "Calls across worker processes" on loopback:
Debian's ``redis-server``, the emulator, gunicorn serving ``examples/flask_app.py``
with ``--workers`` processes, ``--calls`` browsers (raw aiortc peers,
``tests/cluster.py``) whose calls live through every fault, and a TCP proxy
(``tests/partition.py``, asyncio, 127.0.0.1) between every worker and Redis. Each
trial asks one question on one call (round robin; ``lookup_order`` or the slow
``track_parcel``, ``--carrier-seconds``), each with its own order id, then, after a
random delay (0 .. TTL/2: before, during or after the tool round), injects one fault
for a random time around the TTL (uniform 0.5 .. 1.5 TTL):

- ``partition``: the proxy cuts the call's holder off from Redis (its process alive,
  its sideband up, its Redis silent), then heals;
- ``pause``: a random worker (the holder or not) is SIGSTOPped, then SIGCONTed.

Then it waits for the question's outcome: *answered* (the browser hears the follow-up
naming its order id) or *reported lost* (a typed ``CallsPossiblyLost`` whose gap
covers the question; the successor never guesses). Measured per fault that moved a
call: ``takeover_s``, from the fault's start to the successor's sideband ready.

At the end the emulator - the referee, which records every event each connection sent
- is read: per tool call, how many ``function_call_output`` items (more than one is a
*double output*); per question (the events between one user message and the next),
how many sideband ``response.create`` (more than one: a *double create*); and per
order id, how many answers the browser heard (more than one: a *double answer*).

    python bench/chaos.py --name chaos    # 100 partitions + 100 pauses -> results/chaos.json, .png
    python bench/chaos.py --partitions 5 --pauses 5   # a smoke run -> results/local/chaos.json
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # the cluster harness, its proxy and peer

from _common import (  # noqa: E402
    Progress,
    add_result_options,
    machine_info,
    non_negative_int,
    percentile,
    positive_float,
    positive_int,
    result_path,
    table,
    write_json,
)
from cluster import (  # noqa: E402
    Browser,
    EmulatorServer,
    Gunicorn,
    RedisServer,
    Registry,
    flask_app,
    outputs,
    redis_server_missing,
    sender_pid,
    wait_until,
)
from partition import Proxy  # noqa: E402

from rtclient import LoopThread  # noqa: E402

ANSWER = re.compile(r'"order_id": (\d+)')
FIRST_ORDER = 1000  # question n asks about order FIRST_ORDER + n: its answer names it


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=non_negative_int, default=100)
    parser.add_argument("--pauses", type=non_negative_int, default=100)
    parser.add_argument("--ttl", type=positive_float, default=2.0, help="lease TTL, s")
    parser.add_argument("--workers", type=positive_int, default=3)
    parser.add_argument("--calls", type=positive_int, default=2, help="browsers, one call each")
    parser.add_argument("--carrier-seconds", type=positive_float, default=0.5)
    parser.add_argument("--seed", type=int, default=19)
    add_result_options(parser, "chaos")
    return parser.parse_args()


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "p50": round(percentile(values, 50) or 0.0, 3),
        "p90": round(percentile(values, 90) or 0.0, 3),
        "max": round(max(values), 3),
    }


@dataclass
class Heard:
    """What one browser heard: every tool round's answer, by the order id it names."""

    browser: Browser
    seen: int = 0  # events of ``inbox.received`` already read
    answers: Counter[int] = field(default_factory=Counter)

    def update(self, lt: LoopThread) -> None:
        inbox = self.browser.inbox
        assert inbox is not None

        async def new_events() -> list[dict[str, Any]]:
            return list(inbox.received[self.seen :])

        events = lt.call(new_events(), timeout=10)
        self.seen += len(events)
        for e in events:
            text = str(e.get("transcript", ""))
            if e.get("type") == "response.output_audio_transcript.done" and text.startswith(
                "Tool results"
            ):
                for order in {int(m) for m in ANSWER.findall(text)}:
                    self.answers[order] += 1


class Chaos:
    """The deployment and what the trials need of it."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.redis = RedisServer(tmp)
        self.emulator = EmulatorServer(tmp)
        self.server: Gunicorn | None = None
        self.proxy = Proxy(self.redis.port, self.pids).start()
        self.app = flask_app(
            self.redis, self.emulator, tmp, workers=args.workers, lease_ttl=args.ttl,
            redis_url=f"redis://127.0.0.1:{self.proxy.port}/0",
            SHOP_CARRIER_SECONDS=str(args.carrier_seconds),
        )  # fmt: skip
        self.server = self.app.server
        self.reg = self.app.registry
        self.lt = LoopThread("chaos-browsers").start()
        self.heard: list[Heard] = []

    def pids(self) -> set[int]:
        return self.server.worker_pids() if self.server is not None else set()

    def open_calls(self) -> None:
        self.app.wait_ready(120)
        for n in range(self.args.calls):
            browser = Browser(self.lt, self.app.url)
            browser.start_call()
            assert browser.ask(f'lookup_order({{"order_id": {n + 1}}})').startswith("Tool res")
            self.heard.append(Heard(browser))

    def stop(self) -> None:
        for heard in self.heard:
            heard.browser.close()
        self.lt.stop()
        for part in (self.server, self.proxy, self.emulator, self.redis):
            if part is not None:
                part.stop()


def covering_report(reg: Registry, call_id: str, asked_at: float) -> dict[str, Any] | None:
    """A takeover report whose gap covers a question asked at ``asked_at``."""
    for report in reg.reports(call_id, "calls_possibly_lost"):
        if report["gap_start"] <= asked_at + 1.0 and report["gap_end"] >= asked_at:
            return report
    return None


def trial(chaos: Chaos, n: int, kind: str, rng: random.Random) -> dict[str, Any]:
    args, reg = chaos.args, chaos.reg
    heard = chaos.heard[n % len(chaos.heard)]
    call_id = heard.browser.call_id
    calls = [h.browser.call_id for h in chaos.heard]
    try:  # the previous question on this call settled (a lost one never does)
        reg.wait_settled(call_id, timeout=10)
    except AssertionError:
        pass
    epochs = {c: int(reg.call(c)["epoch"]) for c in calls}
    holder = reg.holder_pid(call_id)
    tool = rng.choice(("lookup_order", "track_parcel"))
    order = FIRST_ORDER + n
    asked_at = time.time()
    heard.browser.send_question(f'{tool}({{"order_id": {order}}})')
    time.sleep(rng.uniform(0, args.ttl / 2))  # the fault lands before, in or after the round
    duration = rng.uniform(0.5, 1.5) * args.ttl
    target = holder if kind == "partition" else rng.choice(sorted(chaos.pids()))
    fault_at = time.time()
    if kind == "partition":
        chaos.proxy.cut(target)
    else:
        os.kill(target, signal.SIGSTOP)
    try:
        time.sleep(duration)
    finally:
        if kind == "partition":
            chaos.proxy.heal(target)
        else:
            os.kill(target, signal.SIGCONT)

    def answered() -> bool:
        heard.update(chaos.lt)
        return heard.answers[order] >= 1

    try:
        wait_until(answered, 6 * args.ttl + 15, f"question {n} answered")
        outcome = "answered"
    except AssertionError:
        found = covering_report(reg, call_id, asked_at)
        outcome = "reported" if found is not None else "unaccounted"
    chaos.app.wait_ready(120)  # every worker back, checked in
    takeovers = []
    for c in calls:
        later = [
            r
            for r in reg.reports(c, "calls_possibly_lost")
            if r["epoch"] > epochs[c] and r["gap_end"] >= fault_at
        ]
        if later:
            first = min(later, key=lambda r: r["epoch"])
            takeovers.append(
                {
                    "call": calls.index(c),
                    "takeover_s": round(first["gap_end"] - fault_at, 3),
                    "waited_s": first["waited_s"],
                    "handover": first["handover"],
                    "epochs": max(r["epoch"] for r in later) - epochs[c],
                    "from_holder": c == call_id,
                }
            )
    return {
        "trial": n + 1,
        "kind": kind,
        "tool": tool,
        "order": order,
        "call": n % len(chaos.heard),
        "target_was_holder": target == holder,
        "duration_s": round(duration, 3),
        "delay_s": round(fault_at - asked_at, 3),
        "outcome": outcome,
        "takeovers": takeovers,
    }


def referee(chaos: Chaos) -> dict[str, Any]:
    """Doubles, from the emulator's record of every call and what the browsers heard,
    per question (by the order id its user message names)."""
    per_order: dict[int, dict[str, int]] = {}
    for heard in chaos.heard:
        heard.update(chaos.lt)
        events = chaos.emulator.call(heard.browser.call_id)["client_events"]
        starts = [
            (i, int(m.group(1)))
            for i, e in enumerate(events)
            if e.get("type") == "conversation.item.create"
            and (e.get("item") or {}).get("role") == "user"
            and sender_pid(e) is None
            and (m := ANSWER.search(str(e["item"]["content"])))
        ]
        first_output: dict[str, int] = {}  # tool call id -> the question it answered
        output_count: Counter[str] = Counter()
        for (start, order), (end, _) in zip(starts, [*starts[1:], (len(events), 0)], strict=True):
            window = events[start:end]
            creates = sum(1 for e in window if e.get("type") == "response.create" and sender_pid(e))
            per_order[order] = {"creates": creates, "double_outputs": 0, "answers": 0}
            for e in outputs(window):
                first_output.setdefault(e["item"]["call_id"], order)
                output_count[e["item"]["call_id"]] += 1
        for call, count in output_count.items():
            if count > 1:
                per_order[first_output[call]]["double_outputs"] += 1
        for order, count in heard.answers.items():
            per_order.setdefault(order, {"creates": 0, "double_outputs": 0, "answers": 0})
            per_order[order]["answers"] = count
    rejections = sum(
        int(chaos.emulator.call(h.browser.call_id)["counters"].get("rejections", 0))
        for h in chaos.heard
    )
    workers = [chaos.reg.worker(pid) or {"fenced": 0, "refused": 0} for pid in sorted(chaos.pids())]
    return {
        "per_order": per_order,
        "creates_per_question": dict(
            sorted(Counter(q["creates"] for q in per_order.values()).items())
        ),
        "rejections": rejections,
        "holders_fenced": sum(int(w.get("fenced", 0)) for w in workers),
        "sends_refused_by_fence": sum(int(w.get("refused", 0)) for w in workers),
    }


def kind_table(rows: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [r for r in rows if r["kind"] == kind]
    takeovers = [t for r in mine for t in r["takeovers"]]
    return {
        "trials": len(mine),
        "answered": sum(r["outcome"] == "answered" for r in mine),
        "reported_lost": sum(r["outcome"] == "reported" for r in mine),
        "unaccounted": sum(r["outcome"] == "unaccounted" for r in mine),
        "holder_hit": sum(r["target_was_holder"] for r in mine),
        "takeovers": len(takeovers),
        "takeover_s": summary([t["takeover_s"] for t in takeovers]),
        "waited_s": summary([t["waited_s"] for t in takeovers]),
        "handovers": dict(Counter(t["handover"] for t in takeovers)),
    }


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    colors = {"partition": "tab:red", "pause": "tab:blue"}
    bound = result["takeover_bound"]["bound_s"]
    fig, (cdf, scatter, bars) = plt.subplots(1, 3, figsize=(17, 5.2))
    for kind, color in colors.items():
        values = sorted(t["takeover_s"] for r in rows if r["kind"] == kind for t in r["takeovers"])
        if values:
            ys = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
            cdf.step(
                [values[0], *values], ys, where="post", color=color, label=f"{kind} ({len(values)})"
            )
        points = [
            (r["duration_s"], t["takeover_s"])
            for r in rows
            if r["kind"] == kind
            for t in r["takeovers"]
        ]
        if points:
            scatter.scatter(*zip(*points, strict=True), s=14, color=color, alpha=0.7, label=kind)
    cdf.axvline(bound, color="grey", linestyle=":", label=f"bound {bound:.2f} s")
    cdf.set_xlabel("takeover: fault -> successor's sideband ready (s)")
    cdf.set_ylabel("fraction of takeovers")
    cdf.set_title("takeover time CDF")
    scatter.axhline(bound, color="grey", linestyle=":", label="bound")
    scatter.axvline(result["config"]["ttl_s"], color="black", linewidth=0.6, label="TTL")
    scatter.set_xlabel("fault length (s): cut or paused")
    scatter.set_ylabel("takeover (s)")
    scatter.set_title("takeover vs how long the fault lasted")
    kinds = list(colors)
    table_ = result["table"]
    labels = ["answered", "reported_lost", "double_outputs", "double_creates", "double_answers"]
    width = 0.38
    for i, kind in enumerate(kinds):
        values = [table_[kind].get(k, 0) for k in labels]
        xs = [j + (i - 0.5) * width for j in range(len(labels))]
        bars.bar(xs, values, width, color=colors[kind], label=kind)
        for x, v in zip(xs, values, strict=True):
            bars.text(x, v, str(v), ha="center", va="bottom", fontsize=8)
    bars.set_xticks(range(len(labels)), [lbl.replace("_", "\n") for lbl in labels])
    bars.set_title("questions and doubles per fault kind (doubles must be 0)")
    for ax in (cdf, scatter, bars):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    conf = result["config"]
    fig.suptitle(
        f"chaos.py: {conf['partitions']} partitions + {conf['pauses']} pauses, "
        f"{conf['workers']} workers, lease TTL {conf['ttl_s']:g} s, fence after "
        f"{conf['fence_after_s']:g} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> int:
    args = parse_args()
    missing = redis_server_missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    out = result_path(args.name, "chaos")
    rng = random.Random(args.seed)
    kinds = ["partition"] * args.partitions + ["pause"] * args.pauses
    rng.shuffle(kinds)
    started = time.monotonic()
    chaos = Chaos(args, Path(tempfile.mkdtemp(prefix="chaos-")))
    rows: list[dict[str, Any]] = []
    progress = Progress(len(kinds), "chaos")
    try:
        chaos.open_calls()
        for n, kind in enumerate(kinds):
            row = trial(chaos, n, kind, rng)
            rows.append(row)
            moved = ", ".join(f"{t['takeover_s']:.2f}s" for t in row["takeovers"]) or "-"
            progress.advance(note=f"{kind} {row['outcome']} takeover {moved}")
        progress.close()
        counts = referee(chaos)
    finally:
        chaos.stop()

    fence_after = 0.75 * args.ttl  # the registry's default (calls_registry.CallRegistry)
    drift = 0.01
    takeover_after = fence_after * (1 + drift) / (1 - drift)
    tick = args.ttl / 4
    per_order = counts.pop("per_order")
    none = {"creates": 0, "double_outputs": 0, "answers": 0}
    table_ = {kind: kind_table(rows, kind) for kind in ("partition", "pause")}
    for kind, figures in table_.items():
        mine = [per_order.get(r["order"], none) for r in rows if r["kind"] == kind]
        figures["double_outputs"] = sum(q["double_outputs"] for q in mine)
        figures["double_creates"] = sum(1 for q in mine if q["creates"] > 1)
        figures["double_answers"] = sum(1 for q in mine if q["answers"] > 1)
    for row in rows:
        row.update(per_order.get(row["order"], none))
    counts["double_outputs"] = sum(q["double_outputs"] for q in per_order.values())
    counts["double_creates"] = sum(1 for q in per_order.values() if q["creates"] > 1)
    counts["double_answers"] = sum(1 for q in per_order.values() if q["answers"] > 1)
    all_takeovers = [t["takeover_s"] for r in rows for t in r["takeovers"]]
    waits = [t["waited_s"] for r in rows for t in r["takeovers"]]
    attach_allowance = 0.25
    result = {
        "bench": "chaos",
        "machine": machine_info(),
        "config": {
            "partitions": args.partitions,
            "pauses": args.pauses,
            "workers": args.workers,
            "calls": args.calls,
            "ttl_s": args.ttl,
            "tick_s": tick,
            "fence_after_s": fence_after,
            "clock_drift": drift,
            "takeover_after_s": round(takeover_after, 4),
            "fault_s": [0.5 * args.ttl, 1.5 * args.ttl],
            "delay_s": [0.0, args.ttl / 2],
            "carrier_seconds": args.carrier_seconds,
            "seed": args.seed,
        },
        "table": table_,
        **counts,
        "takeover_s": summary(all_takeovers),
        "waited_s": summary(waits),
        "takeover_bound": {
            "formula": "TTL + tick + max(0, D(1+rho)/(1-rho) - (TTL - tick)) + attach",
            "bound_s": round(
                args.ttl + tick + max(0.0, takeover_after - (args.ttl - tick)) + attach_allowance,
                3,
            ),
            "attach_allowance_s": attach_allowance,
            "worst_measured_s": max(all_takeovers) if all_takeovers else None,
        },
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    path = write_json(out.stem, result, out.parent)
    png = plot(result, out.with_suffix(".png"))
    cols = [("kind", "kind"), ("trials", "trials"), ("double_outputs", "double outputs"),
            ("double_creates", "double creates"), ("double_answers", "double answers"),
            ("answered", "answered"), ("reported_lost", "reported lost"),
            ("unaccounted", "unaccounted"), ("takeovers", "takeovers"), ("p50", "p50 s"),
            ("p90", "p90 s"), ("max", "worst s")]  # fmt: skip
    print(
        table(
            [
                {"kind": k, **v, **{q: v["takeover_s"].get(q) for q in ("p50", "p90", "max")}}
                for k, v in table_.items()
            ],
            cols,
        )
    )
    print(
        f"holders fenced {counts['holders_fenced']}, sends refused by a fence "
        f"{counts['sends_refused_by_fence']}, rejections {counts['rejections']}, creates per "
        f"question {counts['creates_per_question']}, takeover bound "
        f"{result['takeover_bound']['bound_s']} s (worst {fmt_s(all_takeovers)}), "
        f"wall {result['wall_s']} s -> {path}, {png}"
    )
    ok = (
        counts["double_outputs"] == counts["double_creates"] == counts["double_answers"] == 0
        and all(v["unaccounted"] == 0 for v in table_.values())
        and counts["rejections"] == 0
    )
    return 0 if ok else 1


def fmt_s(values: list[float]) -> str:
    return f"{max(values):.2f} s" if values else "-"


if __name__ == "__main__":
    raise SystemExit(main())
