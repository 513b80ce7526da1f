"""dispatch.py - one client's callback is stuck: how late are the other clients' callbacks?

N WebSocket sessions (default 100) share one ``LoopThread`` and so one dispatcher
pool, against the emulator in its own process. N-1 are chatty: each asks for a text
response as soon as its previous one is done (from its ``response.done`` callback),
and a raw ``on("*")`` callback records, for every event, the time from the loop thread
reading it (a bench-only wrapper around ``client._core.receive`` stamps the event) to
the callback starting. The last client's ``response.created`` callback blocks - stuck -
for the whole measured window. Variants, each in a fresh process, alternated over
``--rounds``:

``pool``        as shipped: two dispatcher threads for every client of the loop thread,
                one more (a spill) when every one has been in one callback for 0.25 s
``one_thread``  one dispatcher thread and the spill: the stall check alone bounds it
``no_spill``    one dispatcher thread and never another: a plain shared dispatcher
``no_stuck``    as shipped, with no client stuck: the reference
``before``      (``--baseline REF``) rtclient as of git REF: a dispatcher thread per client

Measured over the window, for the N-1 chatty clients: callback latency p50/p99/max
(events read during the window, however late their callback ran), their events/s,
and the process's threads.

    python bench/dispatch.py --baseline bc05414 --name dispatch_stuck   # ~2 min
    python bench/dispatch.py --rounds 1 --window 2                       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    EmulatorProcess,
    Progress,
    add_result_options,
    machine_info,
    percentile,
    positive_float,
    positive_int,
    quiet_logs,
    result_path,
    table,
    write_json,
)
from scale import (
    PACE,
    close_all,
    connect_all,
    export_baseline,
    os_threads,
    run_closed_loop,
    run_worker,
    stop_closed_loop,
)

# name: (pool workers, pool max workers, a client stuck?); None: not configured (before)
VARIANTS: dict[str, tuple[int | None, int | None, bool]] = {
    "pool": (None, None, True),
    "one_thread": (1, None, True),
    "no_spill": (1, 1, True),
    "no_stuck": (None, None, False),
    "before": (None, None, True),
}
STUCK_S_MAX = 120.0  # a stuck callback is released at the latest after this
CDF_EDGES_MS = [round(10 ** (k / 10), 4) for k in range(-20, 41)]  # 0.01 ms .. 10 s


def cdf(latencies: list[float]) -> list[int]:
    """How many of ``latencies`` are at most each of :data:`CDF_EDGES_MS` (the JSON keeps
    these counts, not every latency: a run has ~250,000)."""
    ordered = sorted(latencies)
    counts, i = [], 0
    for edge in CDF_EDGES_MS:
        while i < len(ordered) and ordered[i] <= edge:
            i += 1
        counts.append(i)
    return counts


def stuck_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: N clients, one of them stuck for the window; latencies."""
    quiet_logs()
    workers, max_workers, stuck = VARIANTS[cfg["variant"]]
    if cfg["variant"] != "before":
        import rtclient.runtime.pool as pool

        pool.WORKERS = workers or pool.WORKERS  # read when the loop thread's pool is made
        pool.MAX_WORKERS = max_workers or pool.MAX_WORKERS
    from rtclient import LoopThread
    from rtclient.effects import Dispatch

    n, window = int(cfg["n"]), float(cfg["window"])
    options = {"api_key": API_KEY, "base_url": cfg["url"], "transport": "websocket"}
    samples: list[tuple[float, float]] = []  # (read at, latency s), chatty clients only
    lock = threading.Lock()

    def stamped(client: Any) -> None:
        """Bench-only: stamp each event the loop thread hands to the dispatcher."""
        receive = client._core.receive

        def receive_and_stamp(text: Any) -> Any:
            effects = receive(text)
            now = time.perf_counter()
            for effect in effects:
                if isinstance(effect, Dispatch):
                    effect.event["_read_at"] = now
            return effects

        client._core.receive = receive_and_stamp

    def on_any(event: dict[str, Any]) -> None:
        read_at = event.get("_read_at")
        if read_at is not None:
            latency = time.perf_counter() - read_at
            with lock:
                samples.append((read_at, latency))

    with LoopThread("bench-loop") as loop_thread:
        sessions, _, _ = connect_all(n, options, loop_thread, 32, with_audio=False)
        chatty, stuck_one = sessions[:-1], sessions[-1]
        for s in sessions:
            stamped(s.client)
        for s in chatty:
            s.client.on("*", on_any, raw=True)
        entered, release = threading.Event(), threading.Event()

        def on_created(event: dict[str, Any]) -> None:
            entered.set()
            release.wait(STUCK_S_MAX)

        if stuck:
            stuck_one.client.on("response.created", on_created, raw=True)
        threads0 = os_threads()
        run_closed_loop(chatty, "text", cfg["settle"], seed=n)
        if stuck:
            stuck_one.client.request_response()
            if not entered.wait(30):
                raise RuntimeError("the stuck client's callback never ran")
        w0 = time.perf_counter()
        time.sleep(window)
        w1 = time.perf_counter()
        threads_in_window = os_threads()
        release.set()
        stop_closed_loop(chatty, cfg["settle"])
        pool_state: dict[str, Any] = {}
        if cfg["variant"] != "before":
            from rtclient.runtime.pool import dispatch_pool

            p = dispatch_pool(loop_thread)
            pool_state = {"workers": p.size, "max_workers": p.max_workers, "spills": p.spills}
        close_all(sessions, 32)
    with lock:
        latencies = [lat * 1000 for at, lat in samples if w0 <= at <= w1]
    return {
        "variant": cfg["variant"],
        "sessions": n,
        "stuck": stuck,
        "window_s": w1 - w0,
        "callbacks": len(latencies),
        "events_per_s": len(latencies) / (w1 - w0),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "threads_before_load": threads0,
        "threads": threads_in_window,
        "pool": pool_state,
        "cdf_at_most_ms": cdf(latencies),
        "loadavg": os.getloadavg()[0],
    }


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(14, 5.5))
    edges = payload["cdf_edges_ms"]
    for variant, rounds in payload["rounds"].items():
        total = sum(r["callbacks"] for r in rounds)
        if not total:
            continue
        at_most = [sum(r["cdf_at_most_ms"][k] for r in rounds) / total for k in range(len(edges))]
        curves.plot(edges, at_most, label=f"{variant} ({total} callbacks)")
    curves.set_xscale("log")
    curves.set_xlabel("event read on the loop thread -> its callback starts (ms)")
    curves.set_ylabel("fraction of callbacks")
    curves.set_title(f"{payload['sessions'] - 1} chatty clients' callbacks, one client stuck")
    curves.grid(True, which="both", alpha=0.3)
    curves.legend(fontsize=8)
    names = [row["variant"] for row in payload["summary"]]
    for k, (key, color) in enumerate((("p50_ms", "tab:blue"), ("p99_ms", "tab:orange"),
                                      ("max_ms", "tab:red"))):  # fmt: skip
        xs = [i + (k - 1) * 0.27 for i in range(len(names))]
        bars.bar(xs, [row[key] or 0 for row in payload["summary"]], 0.27, label=key,
                 color=color)  # fmt: skip
    bars.set_xticks(range(len(names)), names)
    bars.set_yscale("log")
    bars.set_ylabel("ms (median over rounds)")
    bars.set_title("callback latency of the other clients")
    bars.grid(True, axis="y", which="both", alpha=0.3)
    bars.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS = [
    ("variant", "variant"),
    ("stuck", "stuck client"),
    ("callbacks", "callbacks"),
    ("events_per_s", "callbacks/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("threads", "threads"),
    ("spills", "spills"),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print("R " + json.dumps(stuck_worker(json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=positive_int, default=100, help="clients (>= 2)")
    parser.add_argument("--window", type=positive_float, default=5.0, help="seconds stuck")
    parser.add_argument("--settle", type=positive_float, default=2.0)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument(
        "--baseline", metavar="REF", default=None,
        help="also run rtclient as of git REF (a dispatcher thread per client): 'before'",
    )  # fmt: skip
    add_result_options(parser, "dispatch")
    args = parser.parse_args(argv)
    if args.sessions < 2:
        parser.error("--sessions: at least 2 (one stuck, one or more measured)")
    quiet_logs()
    variants = [v for v in VARIANTS if v != "before" or args.baseline]
    baseline: dict[str, Any] | None = None
    baseline_dir: Path | None = None
    if args.baseline:
        baseline_dir, commit = export_baseline(args.baseline)
        baseline = {"ref": args.baseline, "commit": commit}
    started = time.perf_counter()
    machine = machine_info()
    progress = Progress(len(variants) * args.rounds, "dispatch")
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        with EmulatorProcess(pace=PACE) as emulator:
            for r in range(args.rounds):
                for variant in variants if r % 2 == 0 else list(reversed(variants)):
                    cfg = {
                        "mode": "stuck", "variant": variant, "n": args.sessions,
                        "url": emulator.url, "window": args.window, "settle": args.settle,
                    }  # fmt: skip
                    path = str(baseline_dir) if variant == "before" else None
                    rounds[variant].append(
                        run_worker(cfg, progress, f"round {r + 1} {variant}", path, script=__file__)
                    )
                    progress.advance(1, f"round {r + 1} {variant}")
    finally:
        if baseline_dir is not None:
            shutil.rmtree(baseline_dir, ignore_errors=True)
    progress.close()
    total = time.perf_counter() - started

    def median(variant: str, key: str) -> Any:
        values = [x[key] for x in rounds[variant] if x[key] is not None]
        return statistics.median(values) if values else None

    summary = [
        {
            "variant": v,
            "stuck": "yes" if rounds[v][0]["stuck"] else "no",
            "callbacks": round(median(v, "callbacks")),
            "events_per_s": median(v, "events_per_s"),
            "p50_ms": median(v, "p50_ms"),
            "p99_ms": median(v, "p99_ms"),
            "max_ms": median(v, "max_ms"),
            "threads": round(median(v, "threads")),
            "spills": max((x["pool"].get("spills", 0) for x in rounds[v]), default=0)
            if v != "before"
            else None,
        }
        for v in variants
    ]
    payload = {
        "bench": "dispatch",
        "command": "python bench/dispatch.py " + " ".join(argv),
        "sessions": args.sessions,
        "window_s": args.window,
        "rounds_per_variant": args.rounds,
        "emulator_pace": PACE,
        "baseline": baseline,
        "total_wall_s": total,
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cdf_edges_ms": CDF_EDGES_MS,
        "rounds": rounds,
        "summary": summary,
    }
    path = result_path(args.name, "dispatch")
    write_json(path.stem, payload, path.parent)
    png = path.with_suffix(".png")
    plot(payload, png)
    print(table(summary, COLUMNS))
    print(f"\ntotal {total:.0f}s; wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
