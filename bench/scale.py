"""scale.py - many sessions in one process on one loop thread: what each one costs.

For each N a fresh child process (so its memory baseline is clean) connects N
``RealtimeClient`` sessions sharing one ``LoopThread`` to the emulator, which runs in its
own process (so the client's CPU and RSS are measured alone), then:

``setup``     connects the N sessions (``--concurrency`` at a time) and times it;
``memory``    RSS after setup minus RSS before, per session; OS threads per session;
``idle``      CPU over a window with nothing happening;
``chatty``    steady event load: every session asks for a text response as soon as
              its previous one is done (closed loop; ~35 server events/s per session
              at the emulator's pace). Events/s received, the loop thread's and the
              process's CPU per event, and where the loop thread would saturate.

CPU is % of one core: the process total over the window, per session, plus the loop
thread's own share (the one thread everything shares). A cost per event that stays
flat as N grows is linear; one that rises is not.

``--transport websocket`` is ``RealtimeClient(transport="websocket",
loop_thread=shared)``: the sideband's transport (default N = 1,10,100,1000,3000,10000).
``--transport webrtc`` adds ICE, DTLS, SCTP and an audio receiver per session (default
N = 1,10,100,300,1000). Each run also measures what a thread per client would cost (as
every ``RealtimeClient`` had before the clients of a loop thread shared one dispatcher
pool): memory and start time of K idle threads, and a hand-off of events to one consumer
thread against one thread per session.

``--baseline REF`` runs every N twice, interleaved: with rtclient as it is (``after``)
and as of git ``REF`` (``before``, exported with ``git archive`` to a temporary
directory and put first on the worker's ``PYTHONPATH``) - a before/after comparison
on the same machine in the same minutes. ``--emulators K`` spreads the sessions over K
emulator processes (round robin) when one emulator is the limit; the soft limit on open
files is raised to the hard one in every process (a WebSocket is one descriptor).

``--audio`` compares, on N speaking WebRTC sessions (default 10: the emulator, one
Python process encoding Opus, keeps up with ~20), the CPU of receiving the model's
audio three ways, alternated round by round: ``no_decode`` (no ``on_audio``: rtclient
ends aiortc's decoding once the call is up), ``blackhole`` (aiortc's way, decoded into a
``MediaBlackhole``: rtclient's behaviour before) and ``on_audio`` (decoded and handed
to a callback).

    python bench/scale.py --transport websocket --baseline bc05414 --name scale_websocket
    python bench/scale.py --transport webrtc --name scale_webrtc         # ~4 min
    python bench/scale.py --audio --name scale_audio                     # ~2 min
    python bench/scale.py --sessions 1,10 --window 4                     # a smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import io
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
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
    int_list,
    machine_info,
    non_negative_float,
    percentile,
    positive_float,
    positive_int,
    proc_cpu_seconds,
    proc_rss_bytes,
    quiet_logs,
    raise_open_files_limit,
    result_path,
    table,
    thread_cpu_seconds,
    write_json,
)

PACE = {"delay": 0.05, "deltas": 20, "audio_ms_per_delta": 60}  # ~1 s, 1.2 s of speech
DEFAULT_SESSIONS = {
    "websocket": [1, 10, 100, 1000, 3000, 10000],
    "webrtc": [1, 10, 100, 300, 1000],
}
DEFAULT_CONCURRENCY = {"websocket": 32, "webrtc": 8}
AUDIO_VARIANTS = ("no_decode", "blackhole", "on_audio")
THREAD_PROBE = 1000  # idle threads started by the thread probe


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def dispatcher_threads() -> int:
    return sum(t.name == "rtclient-dispatcher" for t in threading.enumerate())


def pool_state(loop_thread: Any) -> dict[str, Any] | None:
    """The loop thread's dispatch pool (None before it existed: a thread per client)."""
    try:
        from rtclient.runtime.pool import dispatch_pool
    except ImportError:
        return None
    pool = dispatch_pool(loop_thread)
    return {"threads": pool.threads, "spills": pool.spills}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------- the worker (N)
class Session:
    """One client and its closed-loop driver."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.frames = 0
        self.dones = 0  # response.done callbacks run
        self.mode: str | None = None  # "text" / "audio" / None (stopped)

    def on_audio(self, frame: Any) -> None:
        self.frames += 1

    def on_done(self, event: Any) -> None:
        self.dones += 1
        self.ask()

    def ask(self) -> None:
        mode = self.mode
        if mode is None or self.client.closed:
            return
        try:
            self.client.request_response(output_modalities=[mode])
        except Exception:
            pass  # closing


class GcMeter:
    """Time this process spends in the cyclic garbage collector, per phase: a full
    collection (generation 2) visits every tracked object - the whole heap of N
    sessions - while holding the GIL, so every thread waits for it."""

    def __init__(self) -> None:
        self.phase: dict[str, Any] = {}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def start(self) -> None:
        self.phase = {"collections": 0, "full": 0, "seconds": 0.0, "longest_s": 0.0}

    def stop(self) -> dict[str, Any]:
        phase, self.phase = self.phase, {}
        return phase

    def _callback(self, stage: str, info: dict[str, Any]) -> None:
        if stage == "start":
            self._started = time.perf_counter()
            return
        phase = self.phase
        if not phase:
            return
        took = time.perf_counter() - self._started
        phase["collections"] += 1
        phase["full"] += info["generation"] == 2
        phase["seconds"] += took
        phase["longest_s"] = max(phase["longest_s"], took)


class Meter:
    """CPU of this process, of the loop thread and of the emulator over a window."""

    def __init__(self, loop_tid: int, emulator_pids: list[int], sessions: list[Session]) -> None:
        self.loop_tid = loop_tid
        self.emulator_pids = emulator_pids
        self.sessions = sessions

    def emulator_cpu(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.emulator_pids)

    def events(self) -> int:
        return sum(s.client.stats()["events_received"] for s in self.sessions)

    def measure(self, window: float, extra: Any = None) -> dict[str, Any]:
        n = len(self.sessions)
        events0, frames0 = self.events(), sum(s.frames for s in self.sessions)
        extra0 = extra() if extra else 0
        cpu0, loop0 = proc_cpu_seconds(), thread_cpu_seconds(self.loop_tid)
        emu0 = self.emulator_cpu()
        t0 = time.perf_counter()
        time.sleep(window)
        dt = time.perf_counter() - t0
        cpu = proc_cpu_seconds() - cpu0
        loop_cpu = thread_cpu_seconds(self.loop_tid) - loop0
        emu = self.emulator_cpu() - emu0
        events = self.events() - events0
        frames = sum(s.frames for s in self.sessions) - frames0
        result = {
            "cpu_pct": cpu / dt * 100,
            "cpu_pct_per_session": cpu / dt * 100 / n,
            "loop_thread_pct": loop_cpu / dt * 100,
            "emulator_cpu_pct": emu / dt * 100,
            "events_per_s": events / dt,
            "audio_frames_per_s_per_session": frames / dt / n,
            "process_us_per_event": cpu / events * 1e6 if events else None,
            "loop_us_per_event": loop_cpu / events * 1e6 if events else None,
            "rss_mb": proc_rss_bytes() / 2**20,
            "os_threads": os_threads(),
            "loadavg": os.getloadavg()[0],
        }
        if extra:
            result["rtp_packets_per_s_per_session"] = (extra() - extra0) / dt / n
        return result


def connect_all(
    n: int,
    options: dict[str, Any],
    loop_thread: Any,
    concurrency: int,
    with_audio: bool,
    urls: list[str] | None = None,
) -> tuple[list[Session], list[float], float]:
    """Connect n clients, ``concurrency`` at a time; session i on ``urls[i % len]``."""
    from rtclient import RealtimeClient

    def connect_one(i: int) -> tuple[Session, float]:
        holder: dict[str, Session] = {}
        extra: dict[str, Any] = {}
        if with_audio:
            extra["on_audio"] = lambda frame: holder["s"].on_audio(frame)
        if urls:
            extra["base_url"] = urls[i % len(urls)]
        client = RealtimeClient(**{**options, **extra}, loop_thread=loop_thread)
        session = holder["s"] = Session(client)
        client.on("response.done", session.on_done, raw=True)
        t0 = time.perf_counter()
        client.connect(timeout=120)
        return session, (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(min(n, concurrency)) as pool:
        done = list(pool.map(connect_one, range(n)))
    return [s for s, _ in done], [ms for _, ms in done], time.perf_counter() - t0


def close_all(sessions: list[Session], concurrency: int) -> float:
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(min(len(sessions), concurrency)) as pool:
        list(pool.map(lambda s: s.client.close(), sessions))
    return time.perf_counter() - t0


STEADY_MAX_S = 90.0  # at most this long for the closed loop to reach its steady state


def run_closed_loop(sessions: list[Session], mode: str, settle: float, seed: int) -> None:
    """Start the closed loop; return at its steady state: ``settle`` seconds after half
    the sessions have finished a response (with thousands of sessions the emulator is
    saturated and the first responses all end late - until then no callback runs), or
    after :data:`STEADY_MAX_S`."""
    rng = random.Random(seed)
    for s in sessions:
        s.mode = mode
    dones0 = sum(s.dones for s in sessions)
    for s in sessions:  # staggered starts over ~0.5 s, then each keeps itself busy
        time.sleep(rng.uniform(0, 1.0 / len(sessions)))
        s.ask()
    deadline = time.monotonic() + STEADY_MAX_S
    while sum(s.dones for s in sessions) - dones0 < len(sessions) / 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # polling a counter, bounded: a bench, not a test
    time.sleep(settle)


def stop_closed_loop(sessions: list[Session], settle: float) -> None:
    """Stop asking; wait (bounded) until no request is outstanding and no event arrives."""
    for s in sessions:
        s.mode = None
    deadline = time.monotonic() + 60
    last = -1
    while time.monotonic() < deadline:
        time.sleep(max(settle, 0.5))  # the last responses finish (and their audio drains)
        events = sum(s.client.stats()["events_received"] for s in sessions)
        if events == last and not any(s.client.stats()["outstanding"] for s in sessions):
            return
        last = events


def scale_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: connect n sessions, measure the phases, report."""
    quiet_logs()
    raise_open_files_limit()
    import rtclient
    from rtclient import LoopThread, RealtimeClient

    n, transport = int(cfg["n"]), cfg["transport"]
    urls: list[str] = cfg["urls"]
    options: dict[str, Any] = {"api_key": API_KEY, "base_url": urls[0], "transport": transport}
    if transport == "webrtc":
        options["loopback_only"] = True
    result: dict[str, Any] = {
        "sessions": n,
        "transport": transport,
        "code": cfg.get("code", "after"),
        "rtclient": str(Path(rtclient.__file__).parent),
        "emulators": len(urls),
    }
    with LoopThread("bench-loop") as loop_thread:
        assert loop_thread._thread is not None and loop_thread._thread.native_id is not None
        loop_tid = loop_thread._thread.native_id  # bench-only: the loop thread's CPU
        # warm up: lazy imports, codecs, the first HTTP session (not counted)
        RealtimeClient(**options, loop_thread=loop_thread).connect().close()
        gc.collect()
        time.sleep(0.5)
        rss0, threads0 = proc_rss_bytes(), os_threads()
        tracked0 = len(gc.get_objects())
        gc_meter = GcMeter()
        gc_meter.start()
        sessions, latencies, setup = connect_all(
            n, options, loop_thread, cfg["concurrency"], with_audio=False, urls=urls
        )
        result["gc_setup"] = gc_meter.stop()
        time.sleep(cfg["settle"])
        rss1, threads1 = proc_rss_bytes(), os_threads()
        dispatchers = dispatcher_threads()
        result["gc_tracked_per_session"] = (len(gc.get_objects()) - tracked0) / n
        if cfg.get("gc_freeze"):
            gc.freeze()  # the sessions' objects out of the collector's sight
        result.update(
            setup_s=setup,
            setup_per_session_ms=setup * 1000 / n,
            connect_p50_ms=percentile(latencies, 50),
            connect_p90_ms=percentile(latencies, 90),
            rss_before_mb=rss0 / 2**20,
            rss_after_setup_mb=rss1 / 2**20,
            rss_per_session_kb=(rss1 - rss0) / n / 1024,
            os_threads=threads1,
            threads_per_session=(threads1 - threads0) / n,
            dispatcher_threads=dispatchers,
        )
        say("P setup")
        meter = Meter(loop_tid, cfg["emulator_pids"], sessions)
        gc_meter.start()
        result["idle"] = meter.measure(cfg["window"])
        result["idle"]["gc"] = gc_meter.stop()
        say("P idle")
        run_closed_loop(sessions, "text", cfg["settle"], seed=n)
        gc_meter.start()
        result["chatty"] = meter.measure(cfg["window"])
        result["chatty"]["gc"] = gc_meter.stop()
        result["chatty"]["clients_closed"] = sum(s.client.closed for s in sessions)
        result["chatty"]["pool"] = pool_state(loop_thread)
        stop_closed_loop(sessions, cfg["settle"])
        result["os_threads_after_load"] = os_threads()  # every callback has run by now
        say("P chatty")
        result["close_s"] = close_all(sessions, cfg["concurrency"])
        result["lost"] = sum(s.client.stats()["lost"] for s in sessions)
        result["rejections_client"] = sum(s.client.stats()["rejections"] for s in sessions)
    return result


def audio_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """N speaking WebRTC sessions, receiving the model's audio the way ``variant`` says."""
    quiet_logs()
    from rtclient import LoopThread, RealtimeClient
    from rtclient.transports.webrtc import WebRTCTransport

    n, variant = int(cfg["n"]), cfg["variant"]
    WebRTCTransport.decode_unconsumed_audio = variant == "blackhole"
    options = {"api_key": API_KEY, "base_url": cfg["url"], "loopback_only": True}
    result: dict[str, Any] = {"sessions": n, "variant": variant}
    with LoopThread("bench-loop") as loop_thread:
        assert loop_thread._thread is not None and loop_thread._thread.native_id is not None
        loop_tid = loop_thread._thread.native_id
        RealtimeClient(**options, loop_thread=loop_thread).connect().close()
        threads0 = os_threads()
        sessions, _, _ = connect_all(n, options, loop_thread, 8, with_audio=variant == "on_audio")
        result["threads_per_session"] = (os_threads() - threads0) / n

        async def rtp_packets() -> int:  # bench-only: the receivers' inbound-rtp stats
            total = 0
            for s in sessions:
                for receiver in s.client._transport._pc.getReceivers():
                    stats = await receiver.getStats()
                    total += sum(
                        x.packetsReceived for x in stats.values() if x.type == "inbound-rtp"
                    )
            return total

        meter = Meter(loop_tid, [cfg["emulator_pid"]], sessions)
        run_closed_loop(sessions, "audio", cfg["settle"], seed=n)
        result["speaking"] = meter.measure(
            cfg["window"], extra=lambda: loop_thread.call(rtp_packets(), timeout=30)
        )
        stop_closed_loop(sessions, cfg["settle"])
        close_all(sessions, 8)
    return result


def thread_probe(k: int) -> dict[str, Any]:
    """What a thread per client costs: K idle threads blocked on their own queue (as a
    dispatcher waits for events), and handing events to one consumer thread vs to K."""
    gc.collect()
    rss0 = proc_rss_bytes()
    queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(k)]
    handled = [0] * k

    def consume(i: int) -> None:
        q = queues[i]
        while (item := q.get()) is not None:
            handled[i] += item

    t0 = time.perf_counter()
    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    start_s = time.perf_counter() - t0
    time.sleep(0.5)
    rss1 = proc_rss_bytes()

    def hand_off(targets: int, events: int) -> dict[str, float]:
        """The producer (playing the loop thread) puts ``events`` events round-robin on
        the first ``targets`` queues; consumers take them. Process CPU per event, and
        wall time (when every event was taken)."""
        before = sum(handled)
        cpu0, t0 = proc_cpu_seconds(), time.perf_counter()
        for e in range(events):
            queues[e % targets].put(1)
        while sum(handled) - before < events:
            time.sleep(0.001)
        cpu, wall = proc_cpu_seconds() - cpu0, time.perf_counter() - t0
        return {"cpu_us_per_event": cpu / events * 1e6, "wall_us_per_event": wall / events * 1e6}

    events = 50 * k
    paced: dict[str, Any] = {}
    for targets in (1, k):
        hand_off(targets, k)  # warm
        paced[f"{targets}_consumers"] = hand_off(targets, events)
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()
    return {
        "threads": k,
        "start_us_per_thread": start_s / k * 1e6,
        "rss_kb_per_idle_thread": (rss1 - rss0) / k / 1024,
        "hand_off": paced,
    }


# ------------------------------------------------------------------------ coordinator
def run_worker(
    cfg: dict[str, Any],
    progress: Progress,
    label: str,
    pythonpath: str | None = None,
    script: str = __file__,
) -> dict[str, Any]:
    """Run ``script --worker cfg`` in a new process; ``pythonpath`` first on its path (the
    baseline's rtclient). Its "P ..." lines advance the progress; "R ..." is its result."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(cfg)]
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith("P "):
            progress.advance(1, f"{label} {line[2:].strip()}")
        elif line.startswith("R "):
            result = json.loads(line[2:])
    proc.wait()
    if result is None:
        raise RuntimeError(f"scale worker {label} failed (exit {proc.returncode})")
    return result


def saturation(chatty: dict[str, Any]) -> dict[str, Any]:
    """Where the loop thread (and the process: one GIL) would be 100% busy, at the cost
    per event measured at this load."""
    rate = chatty["events_per_s"]
    loop, cpu = chatty["loop_thread_pct"], chatty["cpu_pct"]
    return {
        "loop_thread_saturates_at_events_per_s": rate / (loop / 100) if loop else None,
        "process_saturates_at_events_per_s": rate / (cpu / 100) if cpu else None,
    }


def export_baseline(ref: str) -> tuple[Path, str]:
    """rtclient as of git ``ref``, exported to a temporary directory: (that directory,
    the commit)."""
    root = str(Path(__file__).resolve().parents[1])
    commit = subprocess.run(
        ["git", "-C", root, "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", root, "archive", commit, "rtclient"], capture_output=True, check=True
    ).stdout
    directory = Path(tempfile.mkdtemp(prefix="rtclient-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory, commit


def flatten(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        idle, chatty = r["idle"], r["chatty"]
        rows.append(
            {
                "sessions": r["sessions"],
                "code": r.get("code", "after"),
                "setup_s": r["setup_s"],
                "connect_p50_ms": r["connect_p50_ms"],
                "rss_per_session_kb": r["rss_per_session_kb"],
                "threads_per_session": r["threads_per_session"],
                "threads": max(r["chatty"]["os_threads"], r["os_threads_after_load"]),
                "idle_cpu_pct": idle["cpu_pct"],
                "idle_cpu_pct_per_session": idle["cpu_pct_per_session"],
                "idle_loop_pct": idle["loop_thread_pct"],
                "chatty_events_per_s": chatty["events_per_s"],
                "chatty_cpu_pct": chatty["cpu_pct"],
                "chatty_loop_pct": chatty["loop_thread_pct"],
                "chatty_emulator_pct": chatty["emulator_cpu_pct"],
                "process_us_per_event": chatty["process_us_per_event"],
                "loop_us_per_event": chatty["loop_us_per_event"],
                "loop_saturates_at": r["saturation"]["loop_thread_saturates_at_events_per_s"],
                "gc_setup_s": r["gc_setup"]["seconds"],
                "gc_longest_s": max(
                    phase["longest_s"]
                    for phase in (r["gc_setup"], r["idle"]["gc"], r["chatty"]["gc"])
                ),
                "close_s": r["close_s"],
                "lost": r["lost"],
            }
        )
    return rows


def fit(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares, per quantity: y = fixed + marginal x N. With ``residual_pct`` the
    largest miss of the line, in % of the point: small = linear."""
    quantities = {
        "rss_mb": lambda r: r["rss_after_setup_mb"] - r["rss_before_mb"],
        "idle_cpu_pct": lambda r: r["idle"]["cpu_pct"],
        "idle_loop_pct": lambda r: r["idle"]["loop_thread_pct"],
        "setup_s": lambda r: r["setup_s"],
        "close_s": lambda r: r["close_s"],
    }
    out: dict[str, Any] = {}
    for name, get in quantities.items():
        points = [(r["sessions"], get(r)) for r in results]
        if len(points) < 2:
            continue
        n = len(points)
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((x - mx) ** 2 for x, _ in points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
        fixed = my - slope * mx
        misses = [abs(fixed + slope * x - y) / abs(y) * 100 for x, y in points if x >= 10 and y]
        out[name] = {
            "fixed": fixed,
            "marginal_per_session": slope,
            "residual_pct": max(misses) if misses else None,
        }
    return out


def plot(payload: dict[str, Any], path: Path) -> None:
    """Four panels against N; with a baseline, its curves dashed and faded ("before")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    series = [("after", payload["results"], "-", 1.0)]
    if payload.get("baseline_results"):
        series.append(("before", payload["baseline_results"], "--", 0.45))
    for code, results, style, alpha in series:
        ns = [r["sessions"] for r in results]
        tag = f" ({code})" if len(series) > 1 else ""
        kw: dict[str, Any] = {"alpha": alpha, "linestyle": style}
        ax = axes[0][0]
        ax.plot(ns, [r["rss_per_session_kb"] for r in results], "o", color="tab:purple",
                label=f"RSS per session{tag}", **kw)  # fmt: skip
        ax.plot(ns, [max(r["chatty"]["os_threads"], r["os_threads_after_load"]) for r in results],
                "s", color="tab:grey", label=f"OS threads in the process{tag}", **kw)  # fmt: skip
        ax = axes[0][1]
        ax.plot(ns, [r["idle"]["cpu_pct"] for r in results], "o", color="tab:blue",
                label=f"process{tag}", **kw)  # fmt: skip
        ax.plot(ns, [r["idle"]["loop_thread_pct"] for r in results], "s", color="tab:red",
                label=f"loop thread{tag}", **kw)  # fmt: skip
        ax = axes[1][0]
        ax.plot(ns, [r["chatty"]["events_per_s"] for r in results], "o", color="tab:blue",
                label=f"events/s received{tag}", **kw)  # fmt: skip
        ax.plot(ns, [r["chatty"]["emulator_cpu_pct"] for r in results], "v", color="tab:green",
                label=f"emulator CPU %{tag}", **kw)  # fmt: skip
        ax.plot(ns, [r["chatty"]["cpu_pct"] for r in results], "^", color="tab:orange",
                label=f"client process CPU %{tag}", **kw)  # fmt: skip
        ax = axes[1][1]
        ax.plot(ns, [r["chatty"]["process_us_per_event"] for r in results], "o",
                color="tab:blue", label=f"process CPU per event{tag}", **kw)  # fmt: skip
        ax.plot(ns, [r["chatty"]["loop_us_per_event"] for r in results], "s", color="tab:red",
                label=f"loop thread CPU per event{tag}", **kw)  # fmt: skip
        ax.plot(ns, [r["close_s"] * 1e6 / r["sessions"] / 100 for r in results], "x",
                color="tab:brown", label=f"close per session, 100 us{tag}", **kw)  # fmt: skip
    axes[0][0].set_title("memory per session (KB) and threads in total")
    axes[0][0].set_yscale("log")
    axes[0][1].set_title("idle CPU of all N sessions (% of one core)")
    axes[0][1].set_yscale("symlog", linthresh=0.1)
    axes[1][0].set_title("chatty (closed loop): events/s, and CPU % at that load")
    axes[1][0].set_yscale("log")
    axes[1][1].set_title("cost per event under load, close per session (flat = linear)")
    axes[1][1].set_ylim(bottom=0)
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("concurrent sessions on one loop thread")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        f"scale.py --transport {payload['transport']}: N sessions in one process, one "
        f"LoopThread; emulator in {payload.get('emulators', 1)} process(es)"
        + (f"; dashed: before ({payload['baseline']['ref']})" if payload.get("baseline") else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_audio(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, variant in enumerate(AUDIO_VARIANTS):
        values = [r["speaking"]["cpu_pct_per_session"] for r in payload["rounds"][variant]]
        ax.scatter([i] * len(values), values, color="tab:blue")
        ax.hlines(statistics.median(values), i - 0.3, i + 0.3, color="black")
    ax.set_xticks(range(len(AUDIO_VARIANTS)), AUDIO_VARIANTS)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("process CPU per speaking session (% of a core)")
    ax.set_title(f"receiving the model's audio: {payload['sessions']} speaking WebRTC sessions")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS = [
    ("sessions", "N"),
    ("code", "code"),
    ("setup_s", "setup s"),
    ("connect_p50_ms", "connect p50 ms"),
    ("rss_per_session_kb", "RSS/session KB"),
    ("threads", "threads"),
    ("idle_cpu_pct", "idle % (all N)"),
    ("chatty_events_per_s", "chatty ev/s"),
    ("chatty_loop_pct", "loop %"),
    ("chatty_cpu_pct", "process %"),
    ("chatty_emulator_pct", "emulator %"),
    ("process_us_per_event", "process us/ev"),
    ("loop_us_per_event", "loop us/ev"),
    ("gc_setup_s", "GC s in setup"),
    ("gc_longest_s", "longest GC s"),
    ("close_s", "close s"),
    ("lost", "lost"),
]


def main_scale(args: argparse.Namespace) -> int:
    transport = args.transport
    ns = args.sessions or DEFAULT_SESSIONS[transport]
    concurrency = args.concurrency or DEFAULT_CONCURRENCY[transport]
    default = "scale_websocket" if transport == "websocket" else "scale_webrtc"
    started = time.perf_counter()
    codes = ["after", "before"] if args.baseline else ["after"]
    progress = Progress(len(ns) * 3 * len(codes) + 1, f"scale {transport}")
    results: dict[str, list[dict[str, Any]]] = {code: [] for code in codes}
    machine = machine_info()
    baseline: dict[str, Any] | None = None
    baseline_dir: Path | None = None
    if args.baseline:
        baseline_dir, commit = export_baseline(args.baseline)
        baseline = {"ref": args.baseline, "commit": commit}
    raise_open_files_limit()
    emulators = [EmulatorProcess(pace=PACE) for _ in range(args.emulators)]
    try:
        for emulator in emulators:
            emulator.start()
        for i, n in enumerate(ns):
            # interleaved, the order alternating with N: neither code always runs first
            for code in codes if i % 2 == 0 else list(reversed(codes)):
                progress.set_note(f"N={n} {code}")
                cfg = {
                    "mode": "scale", "transport": transport, "n": n, "code": code,
                    "urls": [e.url for e in emulators], "window": args.window,
                    "settle": args.settle, "emulator_pids": [e.pid for e in emulators],
                    "concurrency": concurrency, "gc_freeze": args.gc_freeze,
                }  # fmt: skip
                path = str(baseline_dir) if code == "before" else None
                result = run_worker(cfg, progress, f"N={n} {code}", pythonpath=path)
                result["saturation"] = saturation(result["chatty"])
                results[code].append(result)
    finally:
        for emulator in emulators:
            emulator.stop()
        if baseline_dir is not None:
            shutil.rmtree(baseline_dir, ignore_errors=True)
    probe = run_worker({"mode": "threads", "k": THREAD_PROBE}, progress, "thread probe")
    progress.advance(1, "thread probe")
    progress.close()
    total = time.perf_counter() - started
    rows = [row for i in range(len(ns)) for code in codes for row in flatten([results[code][i]])]
    payload = {
        "bench": "scale",
        "transport": transport,
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
        "window_s": args.window,
        "settle_s": args.settle,
        "connect_concurrency": concurrency,
        "emulators": args.emulators,
        "gc_freeze": args.gc_freeze,
        "emulator_pace": PACE,
        "total_wall_s": total,
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "baseline": baseline,
        "results": results["after"],
        "baseline_results": results.get("before", []),
        "table": rows,
        "fit": fit(results["after"]),
        "baseline_fit": fit(results["before"]) if baseline else None,
        "thread_probe": probe,
    }
    path = result_path(args.name, default)
    write_json(path.stem, payload, path.parent)
    png = path.with_suffix(".png")
    plot(payload, png)
    print(table(rows, COLUMNS))
    for code in codes:
        fitted = payload["fit"] if code == "after" else payload["baseline_fit"]
        print(f"\n{code}: y = fixed + marginal x N (least squares; residual: the largest miss):")
        print(
            table(
                [{"quantity": k, **v} for k, v in fitted.items()],
                [
                    ("quantity", "quantity"),
                    ("fixed", "fixed"),
                    ("marginal_per_session", "marginal per session"),
                    ("residual_pct", "residual %"),
                ],
            )
        )
    hand = probe["hand_off"]
    print(
        f"\nthread probe: {probe['threads']} idle threads, "
        f"{probe['rss_kb_per_idle_thread']:.1f} KB and {probe['start_us_per_thread']:.0f} us "
        f"to start each; hand-off per event: 1 consumer "
        f"{hand['1_consumers']['cpu_us_per_event']:.1f} us CPU, {probe['threads']} consumers "
        f"{hand[str(probe['threads']) + '_consumers']['cpu_us_per_event']:.1f} us CPU"
    )
    print(f"\ntotal {total:.0f}s; wrote {path} and {png}")
    return 0


def main_audio(args: argparse.Namespace) -> int:
    n = (args.sessions or [10])[0]
    started = time.perf_counter()
    progress = Progress(len(AUDIO_VARIANTS) * args.rounds, "scale --audio")
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in AUDIO_VARIANTS}
    machine = machine_info()
    with EmulatorProcess(pace=PACE) as emulator:
        for r in range(args.rounds):
            order = AUDIO_VARIANTS if r % 2 == 0 else tuple(reversed(AUDIO_VARIANTS))
            for variant in order:
                cfg = {
                    "mode": "audio", "variant": variant, "n": n, "url": emulator.url,
                    "window": args.window, "settle": args.settle,
                    "emulator_pid": emulator.pid,
                }  # fmt: skip
                rounds[variant].append(run_worker(cfg, progress, f"round {r + 1} {variant}"))
                progress.advance(1, f"round {r + 1} {variant}")
    progress.close()
    total = time.perf_counter() - started
    summary = []
    for variant in AUDIO_VARIANTS:
        speaking = [x["speaking"] for x in rounds[variant]]
        summary.append(
            {
                "variant": variant,
                "cpu_pct_per_session": statistics.median(
                    s["cpu_pct_per_session"] for s in speaking
                ),
                "loop_pct": statistics.median(s["loop_thread_pct"] for s in speaking),
                "threads_per_session": statistics.median(
                    x["threads_per_session"] for x in rounds[variant]
                ),
                "rtp_packets_per_s_per_session": statistics.median(
                    s["rtp_packets_per_s_per_session"] for s in speaking
                ),
                "frames_per_s_per_session": statistics.median(
                    s["audio_frames_per_s_per_session"] for s in speaking
                ),
                "emulator_pct": statistics.median(s["emulator_cpu_pct"] for s in speaking),
                "loadavg": statistics.median(s["loadavg"] for s in speaking),
            }
        )
    payload = {
        "bench": "scale_audio",
        "sessions": n,
        "rounds_per_variant": args.rounds,
        "window_s": args.window,
        "emulator_pace": PACE,
        "total_wall_s": total,
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": rounds,
        "summary": summary,
    }
    path = result_path(args.name, "scale_audio")
    write_json(path.stem, payload, path.parent)
    png = path.with_suffix(".png")
    plot_audio(payload, png)
    print(
        table(
            summary,
            [
                ("variant", "variant"),
                ("cpu_pct_per_session", "CPU %/session (median)"),
                ("loop_pct", "loop %"),
                ("threads_per_session", "threads/session"),
                ("rtp_packets_per_s_per_session", "RTP pkts/s/session"),
                ("frames_per_s_per_session", "decoded frames/s/session"),
                ("emulator_pct", "emulator %"),
                ("loadavg", "load avg"),
            ],
        )
    )
    print(f"\ntotal {total:.0f}s; wrote {path} and {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        cfg = json.loads(argv[1])
        mode = cfg["mode"]
        if mode == "scale":
            result = scale_worker(cfg)
        elif mode == "audio":
            result = audio_worker(cfg)
        else:
            result = thread_probe(int(cfg["k"]))
        print("R " + json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("websocket", "webrtc"), default="websocket")
    parser.add_argument("--audio", action="store_true", help="the audio decode comparison")
    parser.add_argument(
        "--sessions", type=int_list, default=None,
        help="N values (default 1,10,100,300,1000; --audio: the first value, default 10)",
    )  # fmt: skip
    parser.add_argument("--window", type=positive_float, default=8.0, help="seconds measured")
    parser.add_argument(
        "--settle", type=non_negative_float, default=2.0, help="seconds before measuring"
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=None,
        help="connects at a time (default 32 websocket, 8 webrtc)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="--audio: rounds of each variant"
    )
    parser.add_argument(
        "--baseline", metavar="REF", default=None,
        help="also run every N with rtclient as of git REF (before/after in one run)",
    )  # fmt: skip
    parser.add_argument(
        "--gc-freeze", action="store_true",
        help="gc.freeze() once the sessions are connected (the collector skips them)",
    )  # fmt: skip
    parser.add_argument(
        "--emulators", type=positive_int, default=1,
        help="emulator processes the sessions are spread over (default 1)",
    )  # fmt: skip
    add_result_options(parser, "scale_audio or scale_<transport>")
    args = parser.parse_args(argv)
    quiet_logs()
    return main_audio(args) if args.audio else main_scale(args)


if __name__ == "__main__":
    raise SystemExit(main())
