"""``rtclient demo`` and ``rtclient emulator``: the command line.

``rtclient demo`` runs the whole story offline in a few seconds: it starts the embedded
emulator, connects over real WebRTC on loopback, registers three tools on a thread
pool, asks a question that makes the model call all three *in parallel* - the tools
finish at the same instant while the user starts speaking, and server VAD's reply to
the user starts while the tools' follow-up ``response.create`` is on the wire, the
RCA's race: the create is rejected, re-armed and served after the VAD reply. The race
is staged by the emulator (``Faults.hold_turn_response``) so it happens on every run.
Then the user barges in on a long answer (``response.cancel``, ``status=cancelled``)
and asks again right away. It prints a coloured timeline (milliseconds since the demo's
start) of the gate's decisions with the RCA's log tags, and a summary; piped into
``head`` it stops printing quietly. ``--api`` runs the same against the real API
(``OPENAI_API_KEY``), where the race happens only when the timing makes it.

``rtclient demo --live`` tells GPT-Live's story instead (:mod:`rtclient.cli_live`):
three delegations on a thread pool - a slow one with spoken progress, a failing one,
a fine one - each ended exactly once, nothing lost, against the emulator.

The timeline is in the server's order: the server events it shows and the gate's lines
about them come from one stream, rtclient's log, written on the loop thread as each
event is handled (the ``[SERVER_EVENT]`` trace lines, see :mod:`rtclient.logs`) - not
from an event subscriber, whose thread lags the loop's and used to print an event
after the gate's reaction to a later one.

Ctrl-C prints one line (``rtclient: interrupted``) and exits with status 130, at any
moment: :func:`main` installs its handler before anything slow is imported (the
package's ``__init__`` imports nothing heavy), the first Ctrl-C unwinds (closing the
client, stopping the emulator) with tracebacks, warnings and log records silenced, and
a second one leaves at once.

``rtclient emulator`` is ``python -m rtclient.emulator``: its arguments go to the
emulator's own parser, so both take the same options with the same defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from loguru import logger

from rtclient._bounded import TEXT, clip

_COLOURS = {
    "RESPONSE_CREATE_CHECK": "\033[36m",
    "RESPONSE_CREATE": "\033[1;32m",
    "RESPONSE_QUEUED": "\033[33m",
    "RESPONSE_COALESCED": "\033[1;33m",
    "RESPONSE_CREATED": "\033[32m",
    "RESPONSE_DONE": "\033[34m",
    "RESPONSE_REJECTED": "\033[1;31m",
    "RESPONSE_WATCHDOG": "\033[1;31m",
    "RESPONSE_ROLLBACK": "\033[31m",
    "RESPONSE_CANCEL": "\033[35m",
    "TOOL": "\033[35m",
    "CONNECTION": "\033[2m",
    "SERVER_ERROR": "\033[1;31m",
    "SERVER": "\033[2;37m",
    "USER": "\033[1;36m",
    "MODEL": "\033[1;34m",
    "HANDLER": "\033[35m",
    "DELEGATION": "\033[1;31m",
    "DEMO": "\033[1m",
}
_RESET = "\033[0m"
# The emulator's pace: 6 deltas 30 ms apart per message; the story the user interrupts
# would last 3 s (its first delta comes 100 ms after response.created).
_PACE: dict[str, Any] = {"delay": 0.03, "deltas": 6}
_STORY_PACE: dict[str, Any] = {"delay": 0.1, "deltas": 40}
_SERVER_EVENTS = {
    "session.created",
    "input_audio_buffer.speech_started",
    "response.function_call_arguments.done",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "response.done",
}
_INTERRUPTED_LINE = "rtclient: interrupted"
_EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C


class _Interrupt:
    """Ctrl-C for the command line: the first unwinds, quietly; a second leaves now.

    The handler raises ``KeyboardInterrupt`` in the main thread, as Python's own does,
    but first silences what would print while the demo unwinds: the timeline, warnings
    (a tool stopped mid-call fails), uncaught exceptions in threads, and the standard
    ``logging`` (concurrent.futures and asyncio report through it). :func:`main` then
    prints the one line. A second Ctrl-C - the unwinding is slow, or stuck - prints the
    line if it was not yet, and ends the process on the spot.
    """

    def __init__(self) -> None:
        self.seen = threading.Event()
        self._reported = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        self.seen.clear()
        self._reported = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def report(self) -> int:
        if not self._reported:
            self._reported = True
            print(_INTERRUPTED_LINE, file=sys.stderr, flush=True)
        return _EXIT_INTERRUPTED

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.seen.is_set():
            if not self._reported:
                os.write(2, (_INTERRUPTED_LINE + "\n").encode())
            os._exit(_EXIT_INTERRUPTED)
        self.seen.set()
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        threading.excepthook = lambda args: None
        sys.unraisablehook = lambda unraisable: None
        raise KeyboardInterrupt


_interrupt = _Interrupt()


class Timeline:
    """Prints timestamped, coloured lines from any thread (one lock, one writer).

    Times are milliseconds since :meth:`begin` - the demo's start, which the demo
    records once its slow imports are done - and never go back: the clock is read
    under the lock. A reader that goes away (``rtclient demo | head``) ends the output,
    not the demo: the first ``BrokenPipeError`` points the stream's file descriptor at
    ``os.devnull`` (the recipe of Python's ``signal`` documentation, so nothing fails
    at exit either) and every later line is dropped, whichever thread writes it.
    """

    def __init__(
        self, colour: bool, out: Any = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.colour = colour
        self.out = out or sys.stdout
        self.start: float | None = None
        self.reader_gone = False
        self._clock = clock
        self._lock = threading.Lock()

    def begin(self, text: str) -> None:
        """Record the start (time 0.0) and print ``text`` as the timeline's first line."""
        with self._lock:
            self.start = self._clock()
            self._print(self._format(0.0, "DEMO", text))

    def line(self, tag: str, text: str) -> None:
        with self._lock:
            now = self._clock()
            if self.start is None:
                self.start = now
            self._print(self._format((now - self.start) * 1000, tag, text))

    def text(self, text: str) -> None:
        """An untimed line (the summary)."""
        with self._lock:
            self._print(text)

    def sink(self, message: Any) -> None:
        """A loguru sink: rtclient's own diagnostics, tag first; a ``[SERVER_EVENT]``
        trace line is shown as the demo describes its event (or not at all)."""
        record = message.record
        text = record["message"]
        if text.startswith("[SERVER_EVENT]"):
            event = record["extra"].get("event")
            shown = _event_line(event) if isinstance(event, dict) else None
            if shown is not None:
                self.line("SERVER", shown)
        elif text.startswith("[") and "]" in text:
            tag, _, rest = text[1:].partition("]")
            self.line(tag, rest.strip())
        else:
            self.line(record["level"].name, text)

    def _format(self, ms: float, tag: str, text: str) -> str:
        text = clip(text, TEXT)  # a server's or a model's string, echoed bounded
        label = f"[{tag}]"
        if self.colour:
            label = f"{_COLOURS.get(tag, '')}{label}{_RESET}"
        return f"{ms:9.1f} ms  {label} {text}"

    def _print(self, text: str) -> None:
        if self.reader_gone or _interrupt.seen.is_set():
            return
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            self.reader_gone = True
            _silence(self.out)


def _silence(stream: Any) -> None:
    """After a ``BrokenPipeError``: send what is still buffered, and all later output, to
    ``os.devnull``, so that neither a later write nor the flush at exit fails again."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture): nothing is left to fail at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _sample_tools(
    barrier: threading.Barrier | None, spoken: threading.Event | None
) -> list[Callable[..., Any]]:
    from rtclient.tools import tool

    def collide() -> None:
        if barrier is not None:
            barrier.wait(10)  # the three finish at the same instant: the RCA's race
        if spoken is not None:
            spoken.wait(10)  # ... once the user's turn is committed (see _story)

    @tool
    def get_weather(city: str = "Paris") -> dict[str, Any]:
        """Current weather for a city."""
        collide()
        return {"city": city, "sky": "clear", "temp_c": 21}

    @tool
    def get_time(zone: str = "Europe/Paris") -> str:
        """Current local time in a time zone."""
        collide()
        return f"14:05 in {zone}"

    @tool
    def get_news(topic: str = "science") -> list[str]:
        """Top headlines on a topic."""
        collide()
        return [f"{topic}: a calm day"]

    return [get_weather, get_time, get_news]


def demo(args: argparse.Namespace) -> int:
    if args.live and (args.api or args.audio_in or args.audio_out):
        print(
            "--live tells its story against the emulator only, with no audio files: the "
            "real GPT-Live model delegates when it hears a request (use LiveClient with a "
            "microphone)",
            file=sys.stderr,
        )
        return 2
    # The slow imports (aiortc, openai's types) come first: the timeline starts after.
    from rtclient import RealtimeClient, logs

    if not args.api:
        import rtclient.emulator  # noqa: F401
    if args.live:
        from rtclient import cli_live

    colour = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    timeline = Timeline(colour)
    with contextlib.suppress(ValueError):
        logger.remove(0)  # loguru's default stderr handler: the timeline replaces it
    level = logger.level("DEBUG" if args.verbose else "INFO").no

    def shown(record: Any) -> bool:  # the chosen level, and the server events we show
        if record["level"].no >= level:
            return True
        return bool(record["message"].startswith("[SERVER_EVENT]"))

    show = cli_live.sink_for(timeline) if args.live else timeline.sink
    sink = logger.add(show, level="TRACE", filter=shown, format="{message}")
    logs.enable()
    try:
        if args.live:
            return cli_live.run(args, timeline)
        return _demo(args, timeline, RealtimeClient)
    finally:
        logs.disable()
        logger.remove(sink)


def _demo(args: argparse.Namespace, timeline: Timeline, client_class: Any) -> int:
    timeline.begin("start (times are milliseconds since this line)")
    emulator = None
    if args.api:
        if not os.environ.get("OPENAI_API_KEY"):
            print("--api needs OPENAI_API_KEY", file=sys.stderr)
            return 2
        options: dict[str, Any] = {}
    else:
        from rtclient.emulator import Emulator, Pace

        vad = {"type": "server_vad", "create_response": True, "interrupt_response": True}
        emulator = Emulator(
            turn_detection=vad,
            pace=Pace(**_PACE),
            on_client_event=lambda session, event: _show_client_event(timeline, event),
        ).start()
        timeline.line("DEMO", f"emulator on {emulator.url} (WebRTC over loopback)")
        options = {"api_key": "sk-demo", "base_url": emulator.url, "loopback_only": True}
    barrier = None if args.api else threading.Barrier(3)
    spoken = None if args.api else threading.Event()
    latencies: dict[str, float] = {}
    try:
        with ThreadPoolExecutor(4, thread_name_prefix="tool") as pool:
            try:
                client = client_class(
                    tools=_sample_tools(barrier, spoken),
                    executor=pool,
                    audio_in=args.audio_in,
                    audio_out=args.audio_out,
                    session={"output_modalities": ["audio"]} if args.audio_out else None,
                    **options,
                )
                t0 = time.perf_counter()
                with client:
                    latencies["connect"] = time.perf_counter() - t0
                    if spoken is not None:
                        client.on("input_audio_buffer.committed", lambda e: spoken.set(), raw=True)
                    _story(client, emulator, timeline, latencies)
                    stats = client.stats()
            finally:  # tools still waiting (an interrupted story) end now: the pool can too
                if barrier is not None:
                    barrier.abort()
                if spoken is not None:
                    spoken.set()
    finally:
        if emulator is not None:
            rejected = emulator.stats()["rejections"]
            heard = sum(session.count("audio_frames_in") for session in emulator.sessions)
            emulator.stop()
        else:
            rejected = stats.get("rejections", 0) if "stats" in locals() else 0
    _summary(timeline, stats, rejected, latencies, staged=emulator is not None)
    if args.audio_in and emulator is not None:
        timeline.text(f"  your audio: {heard} frames of 20 ms reached the server")
    if args.audio_out:
        timeline.text(f"  the model's audio: recorded to {args.audio_out}")
    return 0 if stats["lost"] == 0 and stats["failed"] == 0 else 1


def _event_line(event: dict[str, Any]) -> str | None:
    """How the timeline shows a server event, or None for one it leaves out. Runs on
    rtclient's log thread, in the order the client handled the events."""
    kind = event.get("type")
    if kind not in _SERVER_EVENTS:
        return None
    if kind != "response.done":
        detail = event.get("name") or event.get("response_id") or ""
        return f"{kind} {detail}".rstrip()
    from rtclient.core.events import response_text

    response = event.get("response") or {}
    status, rid = response.get("status"), response.get("id")
    if status != "completed":
        reason = (response.get("status_details") or {}).get("reason")
        why = f" ({reason})" if reason else ""
        return f"response.done {rid} status={status}{why}"
    if not response.get("metadata"):  # not one of ours (they carry the gate's ticket)
        return f"response.done {rid} status={status}, server VAD's: {response_text(event)}"
    return None


def _show_client_event(timeline: Timeline, event: dict[str, Any]) -> None:
    """Client events as the emulator received them (on the emulator's loop)."""
    if event.get("type") == "response.cancel":
        target = event.get("response_id") or "(the active response)"
        timeline.line("RESPONSE_CANCEL", f"response.cancel {target} reached the server")


def _story(client: Any, emulator: Any, timeline: Timeline, latencies: dict[str, float]) -> None:
    question = (
        "What's the weather, the time and the news? use get_weather and get_time and get_news"
    )
    timeline.line("USER", question)
    speech: threading.Thread | None = None
    session: Any = emulator.sessions[-1] if emulator is not None else None
    if emulator is not None:
        # While the three tools run, the user starts talking: server VAD answers the
        # turn with a response of its own. The race of that response with our tools'
        # follow-up create is staged so that it happens on every run: the tools finish
        # once the user's turn is committed, and the emulator holds its VAD response
        # until our create arrives, then starts it first - exactly what the API does
        # when a VAD response starts while a create is on the wire. The create is
        # rejected (no client can prevent that); the gate re-arms it and it is served
        # after the VAD response.
        session.set_faults(hold_turn_response=10.0)

        def user_speaks() -> None:
            if not emulator.wait_for(lambda: session.count("completed") >= 1, 10):
                return  # the first response never finished: nothing to race
            timeline.line("USER", "(speaks) hmm, and tomorrow?")
            try:
                session.simulate_speech("hmm, and tomorrow?")
                session.set_faults(hold_turn_response=0.0)
            except RuntimeError:
                return  # the demo is ending (Ctrl-C): the emulator is stopping

        # a daemon: an interrupted demo does not wait for the user to finish speaking
        speech = threading.Thread(target=user_speaks, name="user", daemon=True)
        speech.start()
    from rtclient.core.events import response_text

    t0 = time.perf_counter()
    answer = client.ask(question, timeout=60)
    latencies["ask with 3 parallel tools"] = time.perf_counter() - t0
    if speech is not None:
        speech.join(10)
    timeline.line("DEMO", f"answer: {answer.text}")
    timeline.line(
        "DEMO",
        f"{len(answer.tool_calls)} tool calls, responses {', '.join(answer.response_ids)}",
    )

    timeline.line("USER", "Tell me a long story.")
    if session is not None:
        from rtclient.emulator import Pace

        session.pace = Pace(**_STORY_PACE)  # long enough to be interrupted, however loaded
    created = threading.Event()
    unsubscribe = client.on("response.created", lambda e: created.set(), raw=True)
    client.send_text("Tell me a long story.", respond=False)
    story = client.request_response(instructions="a long story")
    created.wait(10)
    unsubscribe()
    timeline.line("USER", "(barges in) stop - just the weather, please.")
    t0 = time.perf_counter()
    client.interrupt(wait=False)
    again = client.send_text("Just the weather, please.")  # right after the cancel
    story.result(30)
    if session is not None:
        session.pace = Pace(**_PACE)
    reply = again.result(30)
    latencies["barge-in to new answer"] = time.perf_counter() - t0
    timeline.line("DEMO", f"answer: {response_text(reply)}")


def _summary(
    timeline: Timeline,
    stats: dict[str, int],
    rejected: int,
    latencies: dict[str, float],
    *,
    staged: bool,
) -> None:
    rows: list[tuple[str, float]] = [
        ("response.create sent", stats["creates_sent"]),
        ("triggers coalesced", stats["coalesced"]),
        ("triggers queued", stats["queued"]),
        ("active-response rejections", rejected),
        ("re-armed after rejection", stats["rearmed"]),
        ("lost triggers", stats["lost"]),
        ("tool calls", stats["tool_calls"]),
    ]
    rows += [(f"{name} (ms)", round(seconds * 1000, 1)) for name, seconds in latencies.items()]
    width = max(len(name) for name, _ in rows)
    timeline.text("\nsummary")
    for name, value in rows:
        timeline.text(f"  {name:<{width}}  {value}")
    if rejected:
        how = (
            " (staged here on every run: the emulator starts its VAD response the instant "
            "our create arrives)"
            if staged
            else ""
        )
        timeline.text(
            f"  ({rejected} rejection(s): a server-VAD response started while our create was "
            f"on the wire - no client can prevent that{how}; each was re-armed and served)"
        )


def emulator_command(argv: Sequence[str]) -> int:
    """``rtclient emulator ARGS``: ``python -m rtclient.emulator ARGS``, one parser."""
    from rtclient.emulator.__main__ import main as emulator_main

    return emulator_main(argv, prog="rtclient emulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtclient", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("demo", help="run the offline demo (or --api against the API)")
    d.add_argument(
        "--live",
        action="store_true",
        help="GPT-Live's story instead: three delegations on a thread pool (offline)",
    )
    d.add_argument("--api", action="store_true", help="use the real API (OPENAI_API_KEY)")
    d.add_argument("--audio-in", metavar="FILE", help="send this audio file as the user")
    d.add_argument("--audio-out", metavar="FILE", help="record the model's audio to FILE")
    d.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the timeline (default %(default)s: when stdout is a terminal)",
    )
    d.add_argument("-v", "--verbose", action="store_true", help="show every gate check")
    d.set_defaults(run=demo)
    # Listed here for `rtclient --help`; main() hands its arguments to the emulator's
    # own parser (see `rtclient emulator --help`), which this one never reads.
    commands.add_parser(
        "emulator", help="serve the Realtime emulator (same as python -m rtclient.emulator)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _interrupt.install()  # first: a Ctrl-C during the slow imports below is one line too
    try:
        args_list = list(sys.argv[1:] if argv is None else argv)
        if args_list[:1] == ["emulator"]:
            return emulator_command(args_list[1:])
        args = build_parser().parse_args(args_list)
        result: int = args.run(args)
    except BrokenPipeError:  # the reader went away (`rtclient demo | head`): not an error
        _silence(sys.stdout)
        return 0
    except BaseException:
        if not _interrupt.seen.is_set():
            raise
        return _interrupt.report()  # whatever the unwinding raised, after a Ctrl-C
    finally:
        _interrupt.uninstall()
    return result


if __name__ == "__main__":
    raise SystemExit(main())
