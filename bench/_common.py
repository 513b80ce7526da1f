"""Shared helpers for the benches: an emulator in its own process, a progress bar,
process CPU/RSS readings, percentiles, tables and JSON output.

Everything stays on loopback: the emulator binds 127.0.0.1 and every client the benches
make passes ``loopback_only=True``.

Where results go: ``--name NAME`` writes ``bench/results/NAME.json`` (and its plot), the
committed figures the READMEs quote; without it a run writes to ``bench/results/local/``
(gitignored), so a smoke run never overwrites them (:func:`add_result_options`). Bad
options (``--trials 0``, a negative count) are usage errors (exit status 2).

Run as a script, this module *is* the emulator process the benches start::

    python bench/_common.py serve '{"pace": {"delay": 0.0, "deltas": 1}}'

It prints one JSON line ``{"url": ..., "control": ..., "pid": ...}`` on stdout once it
serves, and stops when its stdin closes (so it never outlives the bench that started
it); with ``"live_bench": true`` a line ``delegate SECONDS`` on its stdin makes every
GPT-Live session's model delegate that often (:class:`LiveDelegations`). Running it
here rather than through ``python -m rtclient.emulator`` lets a bench
turn off the emulator's record of server events and trim the records of closed
sessions, so a 10,000-trial run does not grow the referee to gigabytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"  # the committed results (written only with --name)
LOCAL_RESULTS_DIR = RESULTS_DIR / "local"  # everything else (gitignored)
API_KEY = "sk-bench"  # the emulator accepts any non-empty standard key
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- the emulator process
class EmulatorProcess:
    """``rtclient.emulator.Emulator`` in a child process (its CPU is not the client's).

    ``options`` go to ``Emulator(...)``: ``pace`` as a dict of :class:`Pace` fields,
    ``turn_detection`` (None = VAD off, the default here), ``max_session_seconds``,
    and ``think_s`` (see :class:`ThinkingModel`).
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("turn_detection", None)
        options.setdefault("pace", {"delay": 0.0, "deltas": 1})
        self.options = options
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.control = ""
        self.pid = 0

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", json.dumps(self.options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready: dict[str, Any] = {}

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line:
                ready.update(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready:
            self.stop()
            raise RuntimeError("the emulator process did not start")
        self.url, self.control, self.pid = ready["url"], ready["control"], ready["pid"]
        return self

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the child's signal to stop
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait(5)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control routes (rtclient/emulator/server.py)
    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = http_json(f"{self.control}/stats")
        return stats

    def speech(self, call_id: str, text: str = "uh-huh", duration_ms: int = 200) -> Any:
        body = {"text": text, "duration_ms": duration_ms}
        return http_json(f"{self.control}/calls/{call_id}/speech", body)

    def command(self, line: str) -> None:
        """A line for the emulator process's stdin (``live_bench``: ``delegate 5``)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)


class BrowserPeer:
    """A browser played by a bare aiortc peer (bench-only; no rtclient client code).

    As an app would: the peer makes its offer (the ``oai-events`` channel, no audio
    track), the *server side* - :func:`rtclient.create_call`, standard key - posts it
    with the session and tools, and the peer applies the answer. It can then send
    events on its channel (``send``, thread-safe) and counts what it receives. Its
    aiortc lives on ``loop_thread`` (not the clients'), ICE on 127.0.0.1 only.
    """

    def __init__(self, loop_thread: Any, url: str) -> None:
        self.loop_thread = loop_thread
        self.url = url
        self.call_id = ""
        self.received = 0
        self._pc: Any = None
        self._channel: Any = None

    def open(
        self, session: dict[str, Any], tools: Sequence[Any] = (), timeout: float = 15.0
    ) -> BrowserPeer:
        from rtclient import create_call

        offer: str = self.loop_thread.call(self._offer(), timeout=timeout)
        answer = create_call(
            offer, session=session, tools=tools, api_key=API_KEY, base_url=self.url,
            timeout=timeout, loop_thread=self.loop_thread,
        )  # fmt: skip
        self.call_id = answer.call_id
        self.loop_thread.call(self._answer(answer.sdp, timeout), timeout=timeout + 1)
        return self

    async def _offer(self) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection

        from rtclient.transports._loopback import loopback_only  # bench-only: keep ICE on 127.0.0.1

        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._channel = self._pc.createDataChannel("oai-events")
        self._channel.on("message", self._count)
        with loopback_only():
            await self._pc.setLocalDescription(await self._pc.createOffer())
        return str(self._pc.localDescription.sdp)

    async def _answer(self, sdp: str, timeout: float) -> None:
        import asyncio

        from aiortc import RTCSessionDescription

        from rtclient.transports._loopback import loopback_only

        opened = asyncio.Event()
        if self._channel.readyState == "open":
            opened.set()
        self._channel.on("open", opened.set)
        with loopback_only():
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await asyncio.wait_for(opened.wait(), timeout)

    def _count(self, message: Any) -> None:
        self.received += 1

    def send(self, event: dict[str, Any]) -> None:
        """Send on the data channel from any thread (dropped if it is not open)."""
        text = json.dumps(event)

        def send() -> None:
            if self._channel is not None and self._channel.readyState == "open":
                self._channel.send(text)

        self.loop_thread.call_soon(send)

    def close(self, timeout: float = 10.0) -> None:
        if self._pc is not None:
            self.loop_thread.call(self._pc.close(), timeout=timeout)
            self._pc = None


def http_json(url: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def referee_counts(stats: dict[str, Any], call_ids: Iterable[str | None]) -> dict[str, int]:
    """Sum the emulator's per-session counters over the sessions of these calls."""
    wanted = {c for c in call_ids if c}
    totals: dict[str, int] = {}
    for session in stats.get("by_session", {}).values():
        if session.get("call_id") in wanted:
            for key, value in session.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
    return totals


class ThinkingModel:
    """The emulator's ScriptedModel, plus ``think_s`` of "thinking" before it answers
    tool results. The response is active (``response.created`` is out) while it thinks,
    as a real one is for seconds; everything else is the scripted model unchanged."""

    def __init__(self, think_s: float) -> None:
        from rtclient.emulator import ScriptedModel

        self.inner = ScriptedModel()
        self.think_s = think_s

    async def __call__(self, request: Any) -> Any:
        import asyncio

        from rtclient.emulator import TextReply

        outputs = self.inner(request)
        if (
            self.think_s > 0
            and len(outputs) == 1
            and isinstance(outputs[0], TextReply)
            and outputs[0].text.startswith("Tool results:")
        ):
            await asyncio.sleep(self.think_s)
        return outputs


class LiveDelegations:
    """Bench-only, in the emulator process (``live_bench``): every ``every_s`` seconds
    each running GPT-Live session's model delegates (``session.force_delegation``),
    the sessions staggered over the period. ``every_s`` 0 stops it. Driven by lines on
    the emulator process's stdin (``delegate 5``), so the client process measured does
    no HTTP of its own."""

    def __init__(self, emulator: Any) -> None:
        import random

        self.emulator = emulator
        self.every_s = 0.0
        self.forced = 0
        self._due: dict[str, float] = {}
        self._random = random.Random(7)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-delegations", daemon=True)
        self._thread.start()

    def set(self, every_s: float) -> None:
        self.every_s = every_s
        self._due.clear()
        self._changed.set()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            every = self.every_s
            if every <= 0:
                self._changed.wait()
                self._changed.clear()
                continue
            now = time.monotonic()
            for session in self.emulator.live_sessions:
                if not session.started or session.closed:
                    continue
                due = self._due.setdefault(session.id, now + self._random.uniform(0, every))
                if now >= due:
                    self._due[session.id] = due + every
                    try:
                        session.force_delegation("bench")
                        self.forced += 1
                    except Exception:
                        pass  # it closed meanwhile
            self._changed.wait(0.02)
            self._changed.clear()


def _serve(options: dict[str, Any]) -> int:
    from loguru import logger

    logger.remove()  # quiet: the bench prints its own output
    raise_open_files_limit()
    from rtclient.emulator import Emulator, Pace

    pace = options.pop("pace", {})
    think_s = float(options.pop("think_s", 0.0))
    live_bench = bool(options.pop("live_bench", False))
    model = ThinkingModel(think_s) if think_s > 0 else None
    emulator = Emulator(
        0, pace=Pace(**pace), model=model, record_server_events=False, **options
    )  # binds 127.0.0.1
    with emulator:
        print(
            json.dumps({"url": emulator.url, "control": emulator.control_url, "pid": os.getpid()}),
            flush=True,
        )
        stop = threading.Event()

        def janitor() -> None:
            # Bench-only: drop what closed sessions recorded (their client events and
            # conversation). Counters stay, so stats() still adds every session up.
            # This reaches into emulator internals; tests must not copy it.
            while not stop.wait(2.0):
                for session in emulator.sessions:
                    if session.closed and session._client_events:
                        with emulator._recorder.lock:
                            session._client_events.clear()
                            session._errors.clear()
                        session.conversation._items.clear()
                if live_bench:  # every input audio chunk is kept as a client event
                    for live in emulator.live_sessions:
                        with emulator._recorder.lock:
                            live._client_events.clear()
                            del live._transcript[:-100]

        threading.Thread(target=janitor, daemon=True).start()
        delegations = LiveDelegations(emulator) if live_bench else None
        for line in sys.stdin:  # until the parent closes our stdin (or exits)
            words = line.split()
            if delegations is not None and words[:1] == ["delegate"]:
                delegations.set(float(words[1]))
        stop.set()
        if delegations is not None:
            delegations.stop()
    return 0


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (a WebSocket
    session is one descriptor; 10,000 need more than the usual soft 1,024). Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# ------------------------------------------------------------------- process readings
def proc_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) of this process or of ``pid``.

    Ours comes from getrusage (microseconds, dead threads included). Another process's
    is the sum of its live threads' scheduler run time (/proc/PID/task/*/schedstat,
    nanoseconds) - /proc/PID/stat counts in 10 ms ticks, too coarse for idle sessions.
    """
    if pid is None or pid == os.getpid():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total / 1e9


def proc_rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def thread_cpu_seconds(native_id: int) -> float:
    """Scheduler run time of one thread of this process (e.g. the loop thread)."""
    with open(f"/proc/self/task/{native_id}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


# ------------------------------------------------------------------------ progress bar
class Progress:
    """A one-line progress bar on stderr (``\\r``-redrawn, at most ~10 times a second)."""

    def __init__(self, total: int, label: str = "", width: int = 30) -> None:
        self.total = max(1, total)
        self.label = label
        self.width = width
        self.done = 0
        self.note = ""
        self._start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        with self._lock:
            self.done += n
            if note is not None:
                self.note = note
            now = time.monotonic()
            if now - self._last < (0.1 if self._tty else 5.0) and self.done < self.total:
                return
            self._last = now
            self._draw(now)

    def set_note(self, note: str) -> None:
        with self._lock:
            self.note = note
            self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total)
        filled = int(frac * self.width)
        elapsed = now - self._start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        line = (
            f"{self.label} [{bar}] {self.done}/{self.total} {frac:5.1%} "
            f"{elapsed:5.0f}s eta {eta:4.0f}s {self.note}"
        )
        end = "\r" if self._tty else "\n"
        sys.stderr.write(line[:150].ljust(150 if self._tty else 0) + end)
        sys.stderr.flush()

    def close(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            if self._tty:
                sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------------------ numbers
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text (and Markdown-compatible) table: columns are (key, header)."""
    cells = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


# ------------------------------------------------------------------ options and output
def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1 (``--trials 0`` is a usage error)."""
    value = _parse(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _parse(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    value = _parse(float, text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _parse(float, text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def int_list(text: str) -> list[int]:
    """``"2,8,64"`` -> ``[2, 8, 64]``: at least one value, each >= 1, no repeats."""
    values = [positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one value, e.g. 2,8")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a value is repeated in {text!r}")
    return values


def result_name(text: str) -> str:
    """A result's file name stem: letters, digits, ``_``, ``-`` and ``.``; no path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text) or text == "local":
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a result name (letters, digits, _ - . and no path)"
        )
    return text


def _parse(kind: type[int] | type[float], text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_result_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--name``: where this run's results go (see :func:`result_path`)."""
    parser.add_argument(
        "--name", type=result_name, default=None, metavar="NAME",
        help="write bench/results/NAME.json (and its plot): the committed results the "
        f"READMEs quote. Without it: bench/results/local/{default}.json (gitignored)",
    )  # fmt: skip


def result_path(name: str | None, default: str, suffix: str = ".json") -> Path:
    """``bench/results/<name><suffix>`` when a name was given, else
    ``bench/results/local/<default><suffix>``: a smoke run never overwrites the
    committed results."""
    directory = RESULTS_DIR if name else LOCAL_RESULTS_DIR
    return directory / f"{name or default}{suffix}"


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    out = out_dir or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def machine_info() -> dict[str, Any]:
    import platform

    import aiortc

    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def quiet_logs() -> None:
    """rtclient logs nothing unless enabled; keep loguru's default sink off anyway."""
    from loguru import logger

    logger.remove()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        sys.exit(_serve(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
    print(__doc__)
