#!/usr/bin/env python
"""live.py - GPT-Live: a delegation result's way to the wire, and many sessions per process.

Two parts, each against the emulator in its own process(es) (``bench/_common.py``):

``--part handoff``  (``--name live_handoff``)
    A ``LiveClient`` (primary WebSocket, silence streaming, a thread pool) answers
    delegations the emulator's model makes (``POST /_emulator/live/{id}/delegate``).
    Measured per delegation: from the moment its handler returns on the pool thread
    (the handler stamps ``perf_counter_ns`` right before ``return``) to the moment the
    ``session.commentary.append`` carrying the result is written to the socket (aiohttp's
    ``send_str`` returned: the transport's write future resolves). Against, in the same
    run and alternating sample by sample on the same loop thread and pool:

    * ``bare``: a pool thread stamps the time and hands the loop a callback with a bare
      ``loop.call_soon_threadsafe``; stamped when the callback starts (the hand-off
      alone);
    * ``bare+write``: the same, and the callback writes the same append with aiohttp's
      ``send_str`` on a WebSocket to the same emulator; stamped when it returned.

    Goal: the client's median within 2x of ``bare+write``'s (the same work: a thread to
    the loop, the loop to the socket) - and reported against ``bare`` too. A
    ``breakdown`` pass then stamps each step of the client's path (bench-only wrappers,
    a few microseconds each) to show where the time goes.

``--part scale``  (``--name live_scale``)
    For each N a fresh process opens N ``LiveClient`` primary WebSocket sessions on one
    shared ``LoopThread`` (silence streaming at 100 ms chunks, as with no microphone:
    ~10 events out and ~10 in per session per second), spread over ``--emulators``
    emulator processes (one Python emulator process serves a few hundred). Measured:
    RSS per session, the process's and the loop thread's CPU, events/s received, how
    fast each session's clock moves against the wall (1.0 = the silence keeps up), then
    the same with delegations (``--delegate-every`` seconds per session, forced inside
    the emulator processes; the handler answers at once). Linear = RSS and CPU per event
    flat as N grows.

    python bench/live.py --part handoff --name live_handoff     # ~1 min
    python bench/live.py --part scale --name live_scale         # ~5 min
    python bench/live.py --part handoff --samples 100            # a smoke run
    python bench/live.py --part scale --sessions 10 --window 3   # a smoke run
    python bench/live.py --replot bench/results/live_scale.json  # fit and plot again

Raise the file limit for 1,000 sessions (each is a socket here and one in an emulator):
the bench raises its soft ``RLIMIT_NOFILE`` to the hard limit itself.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import http.client
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    EmulatorProcess,
    Progress,
    add_result_options,
    int_list,
    machine_info,
    percentile,
    positive_float,
    positive_int,
    proc_cpu_seconds,
    proc_rss_bytes,
    quiet_logs,
    result_path,
    table,
    thread_cpu_seconds,
    write_json,
)

RESULT = "Your parcel left the Oslo depot this morning and arrives on Thursday."
APPEND = "session.commentary.append"
DEFAULT_SESSIONS = [1, 10, 100, 300, 1000]
ns = time.perf_counter_ns


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def summary_us(samples: list[int]) -> dict[str, Any]:
    us = [s / 1000 for s in samples]
    return {
        "n": len(us),
        "p50_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us) if us else None,
        "min_us": min(us) if us else None,
    }


# ============================================================== part 1: the hand-off
class Stamps:
    """Thread-safe stamps by key (a delegation id, or a bare sample's number)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.t: dict[str, dict[str, int]] = {}
        self.done: dict[str, threading.Event] = {}

    def expect(self, key: str) -> threading.Event:
        """The event set when ``key``'s sample is complete (made by whichever side comes
        first: a delegation's handler may finish before its id is known here)."""
        with self.lock:
            return self.done.setdefault(key, threading.Event())

    def stamp(self, key: str, name: str, when: int | None = None) -> None:
        with self.lock:
            self.t.setdefault(key, {})[name] = when if when is not None else ns()

    def finish(self, key: str) -> None:
        self.expect(key).set()

    def take(self, key: str) -> dict[str, int]:
        with self.lock:
            self.done.pop(key, None)
            return self.t.pop(key, {})


class Handoff:
    """One LiveClient, one bare WebSocket, one pool, one loop thread: the samples."""

    def __init__(self, emulator: EmulatorProcess, breakdown: bool) -> None:
        from rtclient import LiveClient, LoopThread

        self.emulator = emulator
        self.stamps = Stamps()
        self.loop_thread = LoopThread("bench-live").start()
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="handler")
        self.pending: dict[str, str] = {}  # delegation id -> sample key
        self.client = LiveClient(
            api_key=API_KEY,
            base_url=emulator.url,
            delegation=self.handle,
            executor=self.pool,
            loop_thread=self.loop_thread,
        ).connect()
        self.session_id = self.client.session_id or ""
        self.written = threading.Event()  # the current sample's append is on the wire
        control = urlsplit(emulator.control)
        self.control = http.client.HTTPConnection(control.hostname, control.port, timeout=10)
        self.control_path = control.path
        self._instrument(breakdown)
        self.ws: Any = None
        self.http: Any = None
        self.loop_thread.call(self._open_bare(), timeout=20)

    # -- the client's path --------------------------------------------------------------
    def handle(self, task: Any) -> str:
        self.stamps.stamp(task.id, "returned")  # the last thing before return
        return RESULT

    def _instrument(self, breakdown: bool) -> None:
        """Bench-only: stamp the append's write (and, for the breakdown, each step)."""
        client = self.client
        transport = client._transport
        stamps = self.stamps
        send = transport.send

        def timed_send(event: dict[str, Any]) -> Any:
            delegation_id = event.get("delegation_id")
            if event.get("type") != APPEND or not delegation_id:
                return send(event)
            if breakdown:
                stamps.stamp(delegation_id, "loop_write")
            written = send(event)
            if breakdown:
                stamps.stamp(delegation_id, "queued_for_writer")

            def on_written(future: Any) -> None:
                stamps.stamp(delegation_id, "written")
                self.written.set()

            written.add_done_callback(on_written)
            return written

        transport.send = timed_send
        if not breakdown:
            return
        core = client._core
        finished = core.finished

        def timed_finished(start: Any, future: Any, error: Any) -> Any:
            work = getattr(start, "work", None)
            key = getattr(work, "id", None)
            if key:
                stamps.stamp(key, "finished_called")
            effects = finished(start, future, error)
            if key:
                stamps.stamp(key, "core_decided")
            return effects

        core.finished = timed_finished
        bridge = client._bridge
        put = bridge.put

        def timed_put(item: tuple[int, dict[str, Any]]) -> Any:
            event = item[1]  # (the connection's generation, the event)
            key = event.get("delegation_id") if event.get("type") == APPEND else None
            if key:
                stamps.stamp(key, "bridge_put")
            future = put(item)
            if key:
                stamps.stamp(key, "bridge_put_returned")
            return future

        bridge.put = timed_put

    def client_sample(self) -> dict[str, int] | None:
        """One delegation, forced by the emulator's control route. The request is sent,
        then this thread waits - holding no GIL - until the append is written, and only
        then reads the answer (the delegation's id): parsing it meanwhile would compete
        with the path being measured."""
        self.written.clear()
        path = f"{self.control_path}/live/{self.session_id}/delegate"
        self.control.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        complete = self.written.wait(10)
        reply = self.control.getresponse()
        key = json.loads(reply.read())["id"]
        sample = self.stamps.take(key)
        return sample if complete else None

    # -- the bare path ------------------------------------------------------------------
    async def _open_bare(self) -> None:
        import aiohttp

        url = self.emulator.url.replace("http://", "ws://") + "/live/sessions"
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, headers={"Authorization": f"Bearer {API_KEY}"})
        audio = {"format": {"type": "audio/pcm", "rate": 24000}}
        start = {"type": "session.start", "session": {"model": "gpt-live-1", "audio": audio}}
        await self.ws.send_str(json.dumps(start))
        while True:
            message = await self.ws.receive_json(timeout=10)
            if message["type"] == "session.started":
                break
        self._drain = asyncio.ensure_future(self._read_forever())

    async def _read_forever(self) -> None:
        async for _ in self.ws:
            pass

    def bare_sample(self, number: int, write: bool) -> dict[str, int] | None:
        key = f"bare{number}"
        done = self.stamps.expect(key)
        loop = self.loop_thread.loop
        stamps = self.stamps
        event = {"type": APPEND, "content": RESULT, "delegation_id": None, "event_id": key}
        ws = self.ws

        def on_loop() -> None:
            stamps.stamp(key, "loop")
            if not write:
                stamps.finish(key)
                return
            text = json.dumps(event)

            def wrote(task: Any) -> None:
                stamps.stamp(key, "written")
                stamps.finish(key)

            loop.create_task(ws.send_str(text)).add_done_callback(wrote)

        def on_pool() -> None:
            stamps.stamp(key, "returned")
            loop.call_soon_threadsafe(on_loop)

        self.pool.submit(on_pool)
        if not done.wait(10):
            self.stamps.take(key)
            return None
        return self.stamps.take(key)

    def close(self) -> None:
        async def close_bare() -> None:
            await self.ws.close()
            await self.http.close()

        try:
            self.loop_thread.call(close_bare(), timeout=10)
        finally:
            self.control.close()
            self.client.close()
            self.pool.shutdown(wait=True)
            self.loop_thread.stop()


STEPS = ["returned", "finished_called", "core_decided", "bridge_put", "bridge_put_returned",
         "loop_write", "queued_for_writer", "written"]  # fmt: skip
PATHS = ("client", "bare", "bare+write")


def one_round(bench: Handoff, count: int, progress: Progress) -> tuple[dict[str, list[int]], int]:
    """``count`` samples of each path, interleaved (the order rotates sample by sample,
    so no path always follows another): the same loop, pool and background load."""
    samples: dict[str, list[int]] = {name: [] for name in PATHS}
    missing = 0
    for number in range(count):
        for path in PATHS[number % 3 :] + PATHS[: number % 3]:
            if path == "client":
                got = bench.client_sample()
                value = got["written"] - got["returned"] if got and "written" in got else None
            else:
                got = bench.bare_sample(number, path == "bare+write")
                end = "written" if path == "bare+write" else "loop"
                value = got[end] - got["returned"] if got else None
            if value is None:
                missing += 1
            else:
                samples[path].append(value)
        progress.advance(1)
    return samples, missing


def breakdown_round(bench: Handoff, count: int, progress: Progress) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for _ in range(count):
        got = bench.client_sample() or {}
        for a, b in itertools.pairwise(STEPS):
            if a in got and b in got and got[b] >= got[a]:
                steps.setdefault(f"{a} -> {b}", []).append(got[b] - got[a])
        progress.advance(1)
    return steps


def run_handoff(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logs()
    pooled: dict[str, list[int]] = {name: [] for name in PATHS}
    rounds: list[dict[str, Any]] = []
    missing = 0
    progress = Progress(args.samples * (args.rounds + 1), "live handoff")
    with EmulatorProcess() as emulator:
        for number in range(args.rounds + 1):
            breakdown = number == args.rounds  # the last round: stamps at every step
            bench = Handoff(emulator, breakdown)
            try:
                for _ in range(30):  # warm up: imports, first paths
                    bench.client_sample()
                    bench.bare_sample(0, True)
                    bench.bare_sample(0, False)
                gc.collect()
                if breakdown:
                    progress.set_note("breakdown")
                    steps = breakdown_round(bench, args.samples, progress)
                else:
                    progress.set_note(f"round {number + 1}")
                    samples, lost = one_round(bench, args.samples, progress)
                    missing += lost
                    for name, values in samples.items():
                        pooled[name] += values
                    p50 = {name: summary_us(values)["p50_us"] for name, values in samples.items()}
                    rounds.append({
                        "p50_us": p50,
                        "client_over_bare_write_p50": p50["client"] / p50["bare+write"],
                        "client_over_bare_p50": p50["client"] / p50["bare"],
                        "loadavg": os.getloadavg()[0],
                    })  # fmt: skip
                stats = bench.client.stats()
            finally:
                bench.close()
    progress.close()
    latency = {name: summary_us(values) for name, values in pooled.items()}
    ratio = {
        "client_over_bare_write_p50": latency["client"]["p50_us"] / latency["bare+write"]["p50_us"],
        "client_over_bare_p50": latency["client"]["p50_us"] / latency["bare"]["p50_us"],
    }
    return {
        "part": "handoff",
        "samples": args.samples,
        "rounds": args.rounds,
        "missing": missing,
        "result_text_chars": len(RESULT),
        "latency": latency,
        "ratio": ratio,
        "per_round": rounds,
        "goal_ratio": 2.0,
        "breakdown_us": {k: summary_us(v) for k, v in steps.items()},
        "client_stats": {k: stats[k] for k in ("delegations", "appends_sent", "lost")},
        "box_us": {k: box_us(vals) for k, vals in pooled.items()},
    }


def box_us(samples: list[int]) -> dict[str, float | None]:
    """What the plot draws per path: the 5th, 25th, 50th, 75th and 95th percentiles."""
    us = [v / 1000 for v in samples]
    return {f"p{q}": percentile(us, q) for q in (5, 25, 50, 75, 95)}


# ================================================================ part 2: the scale
def scale_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: N LiveClient sessions on one loop thread, measured."""
    quiet_logs()
    raise_file_limit()
    from rtclient import LiveClient, LoopThread

    n, urls = int(cfg["n"]), list(cfg["urls"])
    answered = [0]
    lock = threading.Lock()

    def handle(task: Any) -> str:
        with lock:
            answered[0] += 1
        return "Done: the parcel is on its way."

    result: dict[str, Any] = {"sessions": n, "emulators": len(urls)}
    pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="handler")
    with LoopThread("bench-live") as loop_thread:
        assert loop_thread._thread is not None and loop_thread._thread.native_id is not None
        loop_tid = loop_thread._thread.native_id

        def make(i: int) -> Any:
            return LiveClient(
                api_key=API_KEY, base_url=urls[i % len(urls)], delegation=handle,
                executor=pool, loop_thread=loop_thread, connect_timeout=120,
            )  # fmt: skip

        make(0).connect().close()  # warm up
        gc.collect()
        time.sleep(0.5)
        rss0, threads0 = proc_rss_bytes(), len(os.listdir("/proc/self/task"))
        t0 = time.perf_counter()
        latencies: list[float] = []

        def connect(i: int) -> Any:
            client = make(i)
            began = time.perf_counter()
            client.connect(timeout=120)
            latencies.append((time.perf_counter() - began) * 1000)
            return client

        with concurrent.futures.ThreadPoolExecutor(min(n, 32)) as connecting:
            clients = list(connecting.map(connect, range(n)))
        setup = time.perf_counter() - t0
        time.sleep(cfg["settle"])
        gc.collect()
        rss1, threads1 = proc_rss_bytes(), len(os.listdir("/proc/self/task"))
        result.update(
            setup_s=setup,
            connect_p50_ms=percentile(latencies, 50),
            rss_per_session_kb=(rss1 - rss0) / n / 1024,
            rss_after_setup_mb=rss1 / 2**20,
            rss_before_mb=rss0 / 2**20,
            threads_per_session=(threads1 - threads0) / n,
        )
        say("P setup")

        def measure(window: float) -> dict[str, Any]:
            def totals() -> tuple[int, int, int]:
                stats = [c.stats() for c in clients]
                return (
                    sum(s["events_received"] for s in stats),
                    sum(s["silence_sent_ms"] for s in stats),
                    sum(s["appends_sent"] for s in stats),
                )

            events0, silence0, appends0 = totals()
            answered0 = answered[0]
            cpu0, loop0 = proc_cpu_seconds(), thread_cpu_seconds(loop_tid)
            emus0 = [proc_cpu_seconds(pid) for pid in cfg["emulator_pids"]]
            began = time.perf_counter()
            time.sleep(window)
            dt = time.perf_counter() - began
            cpu, loop_cpu = proc_cpu_seconds() - cpu0, thread_cpu_seconds(loop_tid) - loop0
            pids = cfg["emulator_pids"]
            emus = [proc_cpu_seconds(p) - c for p, c in zip(pids, emus0, strict=True)]
            events1, silence1, appends1 = totals()
            events = events1 - events0
            return {
                "events_per_s": events / dt,
                "events_per_s_per_session": events / dt / n,
                "clock_rate": (silence1 - silence0) / 1000 / dt / n,
                "cpu_pct": cpu / dt * 100,
                "loop_thread_pct": loop_cpu / dt * 100,
                "emulator_cpu_pct": sum(emus) / dt * 100,
                "process_us_per_event": cpu / events * 1e6 if events else None,
                "loop_us_per_event": loop_cpu / events * 1e6 if events else None,
                "delegations_answered_per_s": (answered[0] - answered0) / dt,
                "appends_per_s": (appends1 - appends0) / dt,
                "loadavg": os.getloadavg()[0],
            }

        result["streaming"] = measure(cfg["window"])
        say("P streaming")  # the coordinator has the emulators delegate from now on
        time.sleep(cfg["settle"])
        result["delegating"] = measure(cfg["window"])
        say("P delegating")  # ... and stop
        time.sleep(cfg["settle"])  # the last answers land
        stats = [c.stats() for c in clients]
        result["lost"] = sum(s["lost"] + s["undelivered_results"] for s in stats)
        result["delegations"] = sum(s["delegations"] for s in stats)
        result["delegations_answered"] = sum(s["delegations_answered"] for s in stats)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(min(n, 32)) as closing:
            list(closing.map(lambda c: c.close(), clients))
        result["close_s"] = time.perf_counter() - t0
    pool.shutdown(wait=True)
    return result


def run_worker(
    cfg: dict[str, Any], progress: Progress, label: str, emulators: list[EmulatorProcess]
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith("P "):
            phase = line[2:].strip()
            if phase in ("streaming", "delegating"):  # start / stop the delegations
                every = cfg["every"] if phase == "streaming" else 0
                for emulator in emulators:
                    emulator.command(f"delegate {every}")
            progress.advance(1, f"{label} {phase}")
        elif line.startswith("R "):
            result = json.loads(line[2:])
    proc.wait()
    if result is None:  # recorded, not raised: the sizes measured so far are kept
        return {"sessions": cfg["n"], "failed": f"the worker exited with {proc.returncode}"}
    return result


def fit_rss(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares of the setup's RSS growth against N, over the sizes whose sessions
    all kept their clocks at real time (clock rate >= 0.95; N >= 10: one session's
    figure is mostly noise): fixed + marginal x N, and the largest miss of the line in %
    of the point - small = linear. A size that could not stream in real time buffers
    audio, which is not the per-session cost."""
    fitted = [
        r for r in results
        if "failed" not in r and r["sessions"] >= 10 and r["streaming"]["clock_rate"] >= 0.95
    ]  # fmt: skip
    points = [(r["sessions"], r["rss_after_setup_mb"] - r["rss_before_mb"]) for r in fitted]
    if len(points) < 2:
        return {}
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    fixed = my - slope * mx
    misses = [abs(fixed + slope * x - y) / abs(y) * 100 for x, y in points if y]
    return {
        "sizes": [x for x, _ in points],
        "fixed_mb": fixed,
        "marginal_kb_per_session": slope * 1024,
        "residual_pct": max(misses) if misses else None,
    }


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_file_limit()
    sizes = args.sessions or DEFAULT_SESSIONS
    progress = Progress(len(sizes) * 3, "live scale")
    results = []
    emulators = [
        EmulatorProcess(live_bench=True, max_session_seconds=3600) for _ in range(args.emulators)
    ]
    try:
        for emulator in emulators:
            emulator.start()
        for n in sizes:
            progress.set_note(f"N={n}")
            cfg = {
                "n": n, "urls": [e.url for e in emulators], "window": args.window,
                "settle": args.settle, "every": args.delegate_every,
                "emulator_pids": [e.pid for e in emulators],
            }  # fmt: skip
            results.append(run_worker(cfg, progress, f"N={n}", emulators))
    finally:
        for emulator in emulators:
            emulator.stop()
    progress.close()
    return {
        "part": "scale",
        "file_limit": limit,
        "emulators": args.emulators,
        "window_s": args.window,
        "delegate_every_s": args.delegate_every,
        "results": results,
        "fit": fit_rss(results),
    }


# ========================================================================= output
HANDOFF_COLUMNS = [
    ("path", "path"), ("n", "samples"), ("p50_us", "p50 us"), ("p90_us", "p90 us"),
    ("p99_us", "p99 us"), ("mean_us", "mean us"),
]  # fmt: skip
SCALE_COLUMNS = [
    ("sessions", "N"), ("setup_s", "setup s"), ("connect_p50_ms", "connect p50 ms"),
    ("rss_per_session_kb", "RSS/session KB"), ("threads_per_session", "threads/session"),
    ("s_events", "streaming ev/s"), ("s_clock", "clock rate"), ("s_cpu", "process %"),
    ("s_loop", "loop %"), ("s_emu", "emulators %"), ("s_us", "process us/ev"),
    ("d_events", "delegating ev/s"), ("d_answered", "delegations/s"),
    ("d_clock", "clock rate delegating"), ("d_us", "process us/ev delegating"), ("lost", "lost"),
]  # fmt: skip


def handoff_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"path": name, **values} for name, values in payload["latency"].items()]
    rows += [{"path": f"breakdown: {k}", **v} for k, v in payload["breakdown_us"].items()]
    return rows


def scale_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in payload["results"]:
        if "failed" in r:
            rows.append({"sessions": r["sessions"], "setup_s": r["failed"]})
            continue
        s, d = r["streaming"], r["delegating"]
        rows.append({
            "sessions": r["sessions"], "setup_s": r["setup_s"],
            "connect_p50_ms": r["connect_p50_ms"], "rss_per_session_kb": r["rss_per_session_kb"],
            "threads_per_session": r["threads_per_session"], "s_events": s["events_per_s"],
            "s_clock": s["clock_rate"], "s_cpu": s["cpu_pct"], "s_loop": s["loop_thread_pct"],
            "s_emu": s["emulator_cpu_pct"], "s_us": s["process_us_per_event"],
            "d_events": d["events_per_s"], "d_answered": d["delegations_answered_per_s"],
            "d_clock": d["clock_rate"], "d_us": d["process_us_per_event"], "lost": r["lost"],
        })  # fmt: skip
    return rows


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if payload["part"] == "handoff":
        fig, ax = plt.subplots(figsize=(9, 5))
        boxes = payload["box_us"]
        names = ["bare", "bare+write", "client"]
        ax.bxp(
            [
                {"label": name, "whislo": boxes[name]["p5"], "q1": boxes[name]["p25"],
                 "med": boxes[name]["p50"], "q3": boxes[name]["p75"],
                 "whishi": boxes[name]["p95"], "fliers": []}
                for name in names
            ],
            showfliers=False,
        )  # fmt: skip
        ax.set_xlabel("box: 25th-75th percentile, whiskers: 5th-95th")
        ax.set_ylabel("microseconds (pool thread -> loop / socket)")
        ax.set_ylim(bottom=0)
        ratio = payload["ratio"]["client_over_bare_write_p50"]
        ax.set_title(
            f"a delegation result to the wire: client p50 = {ratio:.2f}x bare+write "
            f"({payload['samples'] * payload['rounds']} samples each)"
        )
        ax.grid(True, alpha=0.3)
    else:
        results = [r for r in payload["results"] if "failed" not in r]
        ns_ = [r["sessions"] for r in results]
        fig, axes = plt.subplots(1, 3, figsize=(16, 5))
        ax = axes[0]
        ax.plot(ns_, [r["rss_per_session_kb"] for r in results], "o-", color="tab:purple")
        ax.set_ylim(bottom=0)
        ax.set_title("memory per session (KB)")
        ax = axes[1]
        for phase, style in (("streaming", "o-"), ("delegating", "s--")):
            ax.plot(ns_, [r[phase]["events_per_s"] for r in results], style, label=phase)
        ax.set_yscale("log")
        ax.set_title("server events/s received (all sessions)")
        ax.legend(fontsize=8)
        ax = axes[2]
        for phase, style in (("streaming", "o-"), ("delegating", "s--")):
            ax.plot(ns_, [r[phase]["process_us_per_event"] for r in results], style,
                    label=f"process CPU/event, {phase}")  # fmt: skip
            ax.plot(ns_, [r[phase]["clock_rate"] * 100 for r in results], ":",
                    label=f"clock rate x100, {phase}")  # fmt: skip
        ax.set_ylim(bottom=0)
        ax.set_title("us per event (flat = linear); clock rate (100 = real time)")
        ax.legend(fontsize=7)
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("GPT-Live WebSocket sessions in one process, one loop thread")
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(path: Path) -> int:
    """``--replot JSON``: the fit (scale) and the plot again from a result, nothing run."""
    payload = json.loads(path.read_text())
    if payload["part"] == "scale":
        payload["fit"] = fit_rss(payload["results"])
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(table(scale_rows(payload), SCALE_COLUMNS))
        print(f"fit: {payload['fit']}")
    else:
        print(table(handoff_rows(payload), HANDOFF_COLUMNS))
    plot(payload, path.with_suffix(".png"))
    return 0


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        say("R " + json.dumps(scale_worker(json.loads(sys.argv[2]))))
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "--replot":
        return replot(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["handoff", "scale"], required=True)
    parser.add_argument("--samples", type=positive_int, default=1000, help="per path and round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--sessions", type=int_list, default=None)
    parser.add_argument("--emulators", type=positive_int, default=4)
    parser.add_argument("--window", type=positive_float, default=8.0)
    parser.add_argument("--settle", type=positive_float, default=2.0)
    parser.add_argument("--delegate-every", type=positive_float, default=5.0)
    add_result_options(parser, "live")
    args = parser.parse_args()
    default = f"live_{args.part}"
    started = time.perf_counter()
    payload = run_handoff(args) if args.part == "handoff" else run_scale(args)
    payload["wall_s"] = time.perf_counter() - started
    payload["machine"] = machine_info()
    payload["command"] = "python bench/live.py " + " ".join(sys.argv[1:])
    out = result_path(args.name, default)
    write_json(out.stem, payload, out.parent)
    if payload["part"] == "handoff":
        print(table(handoff_rows(payload), HANDOFF_COLUMNS))
        print(f"client p50 / bare+write p50 = {payload['ratio']['client_over_bare_write_p50']:.2f}"
              f"; / bare p50 = {payload['ratio']['client_over_bare_p50']:.2f}")  # fmt: skip
    else:
        print(table(scale_rows(payload), SCALE_COLUMNS))
        print(f"fit: {payload['fit']}")
    try:
        plot(payload, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no plot")
    print(f"wrote {out} ({payload['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
