"""scale.py - many sessions in one process on one loop thread: what each one costs.

For each N in 1, 10, 50, 100, a fresh child process (so its memory baseline is clean)
connects N ``RealtimeClient`` sessions sharing one ``LoopThread`` to the emulator, which
runs in its own process (so the client's CPU and RSS are measured alone), then:

``setup``     connects the N sessions (8 at a time) and times it;
``memory``    RSS after setup minus RSS before, per session;
``idle``      CPU over a window with nothing happening;
``silent``    steady event load: every session asks for a text response as soon as
              its previous one is done (closed loop; ~25 server events per response);
``speaking``  the same with ``output_modalities: ["audio"]``: the emulator speaks, so
              every session also receives and decodes Opus audio (50 frames/s when it
              keeps up); ``on_audio`` counts the frames.

CPU is reported as % of one core per session (the process total over the window,
divided by N), plus the loop thread's own share (the one thread everything shares:
its saturation is the ceiling). Events/s are server events the clients received.

    python bench/scale.py                    # N = 1,10,50,100; 8 s windows
    python bench/scale.py --sessions 1,10 --window 5
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    RESULTS_DIR,
    EmulatorProcess,
    Progress,
    machine_info,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
    quiet_logs,
    table,
    thread_cpu_seconds,
    write_json,
)

PACE = {"delay": 0.05, "deltas": 20, "audio_ms_per_delta": 60}  # ~1 s, 1.2 s of speech
PHASES = ("idle", "silent", "speaking")


# --------------------------------------------------------------------- the worker (N)
class Session:
    """One client and its closed-loop driver."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.frames = 0
        self.mode: str | None = None  # "text" / "audio" / None (stopped)
        self.lock = threading.Lock()

    def on_audio(self, frame: Any) -> None:
        self.frames += 1

    def on_done(self, event: dict[str, Any]) -> None:
        self.ask()

    def ask(self) -> None:
        mode = self.mode
        if mode is None or self.client.closed:
            return
        try:
            self.client.request_response(output_modalities=[mode])
        except Exception:
            pass  # closing


def worker(n: int, url: str, window: float, settle: float, emulator_pid: int) -> dict[str, Any]:
    """Run in a fresh process: connect n sessions, measure the phases, report."""
    quiet_logs()
    from rtclient import LoopThread, RealtimeClient

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    result: dict[str, Any] = {"sessions": n}
    with LoopThread("bench-loop") as loop_thread:
        assert loop_thread._thread is not None and loop_thread._thread.native_id is not None
        loop_tid = loop_thread._thread.native_id  # bench-only: the loop thread's CPU
        # warm up: lazy imports, codecs, the first HTTP session (not counted)
        warm = RealtimeClient(
            api_key=API_KEY, base_url=url, loopback_only=True, loop_thread=loop_thread
        )
        warm.connect()
        warm.close()
        time.sleep(0.5)
        rss0 = proc_rss_bytes()
        sessions: list[Session] = []

        def connect_one(_: int) -> tuple[Session, float]:
            holder: dict[str, Session] = {}
            client = RealtimeClient(
                api_key=API_KEY,
                base_url=url,
                loopback_only=True,
                loop_thread=loop_thread,
                on_audio=lambda frame: holder["s"].on_audio(frame),
            )
            session = holder["s"] = Session(client)
            client.on("response.done", session.on_done)
            t0 = time.perf_counter()
            client.connect(timeout=60)
            return session, time.perf_counter() - t0

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(min(n, 8)) as pool:
            done = list(pool.map(connect_one, range(n)))
        setup = time.perf_counter() - t0
        sessions = [s for s, _ in done]
        latencies = [dt * 1000 for _, dt in done]
        time.sleep(settle)
        rss1 = proc_rss_bytes()
        result.update(
            setup_s=setup,
            setup_per_session_ms=setup * 1000 / n,
            connect_p50_ms=percentile(latencies, 50),
            connect_p90_ms=percentile(latencies, 90),
            rss_before_mb=rss0 / 2**20,
            rss_after_setup_mb=rss1 / 2**20,
            rss_per_session_kb=(rss1 - rss0) / n / 1024,
        )
        say("P setup")

        def measure(phase: str) -> dict[str, Any]:
            events0 = sum(s.client.stats()["events_received"] for s in sessions)
            frames0 = sum(s.frames for s in sessions)
            cpu0, loop0 = proc_cpu_seconds(), thread_cpu_seconds(loop_tid)
            emu0 = proc_cpu_seconds(emulator_pid)
            t0 = time.perf_counter()
            time.sleep(window)
            dt = time.perf_counter() - t0
            cpu = proc_cpu_seconds() - cpu0
            loop_cpu = thread_cpu_seconds(loop_tid) - loop0
            emu = proc_cpu_seconds(emulator_pid) - emu0
            events = sum(s.client.stats()["events_received"] for s in sessions) - events0
            frames = sum(s.frames for s in sessions) - frames0
            return {
                "cpu_pct": cpu / dt * 100,
                "cpu_pct_per_session": cpu / dt * 100 / n,
                "loop_thread_pct": loop_cpu / dt * 100,
                "emulator_cpu_pct": emu / dt * 100,
                "events_per_s": events / dt,
                "audio_frames_per_s": frames / dt,
                "audio_frames_per_s_per_session": frames / dt / n,
                "rss_mb": proc_rss_bytes() / 2**20,
            }

        result["idle"] = measure("idle")
        say("P idle")
        for phase, mode in (("silent", "text"), ("speaking", "audio")):
            rng = random.Random(n)
            for s in sessions:
                s.mode = mode
            for s in sessions:  # staggered starts, then each keeps itself busy
                time.sleep(rng.uniform(0, 1.0 / n))
                s.ask()
            time.sleep(settle)  # reach steady state
            result[phase] = measure(phase)
            for s in sessions:
                s.mode = None
            time.sleep(settle + 1.5)  # the last responses finish and their audio drains
            say(f"P {phase}")
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(min(n, 8)) as pool:
            list(pool.map(lambda s: s.client.close(), sessions))
        result["close_s"] = time.perf_counter() - t0
        result["lost"] = sum(s.client.stats()["lost"] for s in sessions)
        result["rejections_client"] = sum(s.client.stats()["rejections"] for s in sessions)
    return result


# ------------------------------------------------------------------------ coordinator
def run_n(
    n: int, emulator: EmulatorProcess, args: argparse.Namespace, progress: Progress
) -> dict[str, Any]:
    progress.set_note(f"N={n}")
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", str(n), emulator.url,
        str(args.window), str(args.settle), str(emulator.pid),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith("P "):
            progress.advance(1, f"N={n} {line[2:].strip()}")
        elif line.startswith("R "):
            result = json.loads(line[2:])
    proc.wait()
    if result is None:
        raise RuntimeError(f"scale worker for N={n} failed (exit {proc.returncode})")
    return result


def flatten(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        row = {
            "sessions": r["sessions"],
            "setup_s": r["setup_s"],
            "setup_per_session_ms": r["setup_per_session_ms"],
            "connect_p50_ms": r["connect_p50_ms"],
            "rss_per_session_kb": r["rss_per_session_kb"],
        }
        for phase in PHASES:
            p = r[phase]
            row[f"{phase}_cpu_pct_per_session"] = p["cpu_pct_per_session"]
            row[f"{phase}_loop_pct"] = p["loop_thread_pct"]
            row[f"{phase}_events_per_s"] = p["events_per_s"]
            row[f"{phase}_emulator_pct"] = p["emulator_cpu_pct"]
        row["speaking_frames_per_s_per_session"] = r["speaking"]["audio_frames_per_s_per_session"]
        rows.append(row)
    return rows


def fit(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares: process CPU % = fixed + marginal x N, per phase (speaking only
    over the N where the emulator kept up: >= 45 audio frames/s per session)."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        points = [
            (r["sessions"], r[phase]["cpu_pct"])
            for r in results
            if phase != "speaking" or r[phase]["audio_frames_per_s_per_session"] >= 45
        ]
        if len(points) < 2:
            continue
        n = len(points)
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((x - mx) ** 2 for x, _ in points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
        out[phase] = {
            "fixed_pct": my - slope * mx,
            "marginal_pct_per_session": slope,
            "sessions_used": [x for x, _ in points],
        }
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["sessions"] for r in results]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    ax.plot(ns, [r["setup_per_session_ms"] for r in results], "o-", label="setup wall / N")
    ax.plot(ns, [r["connect_p50_ms"] for r in results], "s--", label="one connect() p50")
    ax.set_title("setup (8 connects at a time)")
    ax.set_ylabel("ms")
    ax = axes[0][1]
    ax.plot(ns, [r["rss_per_session_kb"] for r in results], "o-", color="tab:purple")
    ax.axhspan(170, 220, color="grey", alpha=0.2, label="bare aiortc reference 170-220 KB")
    ax.set_ylim(bottom=0)
    ax.set_title("memory per session (RSS after setup - before) / N")
    ax.set_ylabel("KB")
    ax = axes[1][0]
    for phase, colour in zip(PHASES, ("tab:grey", "tab:blue", "tab:red"), strict=True):
        ax.plot(
            ns, [r[phase]["cpu_pct_per_session"] for r in results], "o-", color=colour,
            label=f"{phase}: process CPU / N",
        )  # fmt: skip
        if phase == "speaking":
            starved = [r for r in results if r[phase]["audio_frames_per_s_per_session"] < 45]
            if starved:
                ax.plot(
                    [r["sessions"] for r in starved],
                    [r[phase]["cpu_pct_per_session"] for r in starved],
                    "o", markersize=12, markerfacecolor="none", color="black",
                    label="speaking: emulator saturated (< 45 frames/s/session)",
                )  # fmt: skip
        ax.plot(
            ns, [r[phase]["loop_thread_pct"] / r["sessions"] for r in results], ":",
            color=colour, label=f"{phase}: loop thread / N",
        )  # fmt: skip
    ax.axhline(0.1, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(2.0, color="tab:red", linestyle="--", linewidth=0.8)
    ax.text(1, 0.11, "bare aiortc idle ~0.1%", fontsize=7)
    ax.text(1, 2.1, "Opus receive ~2%", fontsize=7, color="tab:red")
    ax.set_yscale("log")
    ax.legend(fontsize=6.5, loc="lower left")
    ax.set_title("CPU per session (% of one core)")
    ax.set_ylabel("% of a core per session")
    ax = axes[1][1]
    ax.plot(ns, [r["silent"]["events_per_s"] for r in results], "o-", label="silent: events/s")
    ax.plot(ns, [r["speaking"]["events_per_s"] for r in results], "o-", label="speaking: events/s")
    ax.plot(
        ns, [r["speaking"]["audio_frames_per_s"] for r in results], "s--",
        label="speaking: audio frames/s (50/s per session if all keep up)",
    )  # fmt: skip
    ax.plot(ns, [50 * n for n in ns], ":", color="grey", label="50 frames/s x N")
    ax.set_yscale("log")
    ax.set_title("throughput received by the clients")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("concurrent sessions on one loop thread")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend() is None:
            ax.legend(fontsize=7)
    fig.suptitle("scale.py: N sessions in one process, one LoopThread; emulator in its own process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS = [
    ("sessions", "N"),
    ("setup_s", "setup s"),
    ("connect_p50_ms", "connect p50 ms"),
    ("rss_per_session_kb", "RSS/session KB"),
    ("idle_cpu_pct_per_session", "idle %/sess"),
    ("silent_cpu_pct_per_session", "silent %/sess"),
    ("silent_events_per_s", "silent ev/s"),
    ("speaking_cpu_pct_per_session", "speaking %/sess"),
    ("speaking_frames_per_s_per_session", "frames/s/sess"),
    ("speaking_loop_pct", "loop % (speak)"),
    ("speaking_emulator_pct", "emulator % (speak)"),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        n_arg, url, window, settle, pid = argv[1:6]
        result = worker(int(n_arg), url, float(window), float(settle), int(pid))
        print("R " + json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,10,50,100", help="N values")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--name", default="scale")
    args = parser.parse_args(argv)
    ns = [int(x) for x in args.sessions.split(",") if x]
    quiet_logs()
    started = time.perf_counter()
    progress = Progress(len(ns) * 4, "scale")
    results = []
    with EmulatorProcess(pace=PACE) as emulator:
        for n in ns:
            results.append(run_n(n, emulator, args, progress))
    progress.close()
    total = time.perf_counter() - started
    rows = flatten(results)
    fits = fit(results)
    payload = {
        "bench": "scale",
        "window_s": args.window,
        "emulator_pace": PACE,
        "total_wall_s": total,
        "machine": machine_info(),
        "results": results,
        "table": rows,
        "cpu_fit": fits,
    }
    path = write_json(args.name, payload)
    png = RESULTS_DIR / f"{args.name}.png"
    plot(results, png)
    print(table(rows, COLUMNS))
    print("\nprocess CPU = fixed + marginal x N (least squares):")
    fit_rows = [{"phase": phase, **values} for phase, values in fits.items()]
    print(
        table(
            fit_rows,
            [
                ("phase", "phase"),
                ("fixed_pct", "fixed % of a core"),
                ("marginal_pct_per_session", "marginal % per session"),
                ("sessions_used", "N used"),
            ],
        )
    )
    print(f"\ntotal {total:.0f}s; wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
