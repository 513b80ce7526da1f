"""The command line: the offline demo end to end, and the emulator from a shell."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import urllib.request
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rtclient.cli import Timeline, main
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(120)

LINE = re.compile(r"^\s*(\d+\.\d) ms  \[([A-Z_]+)\] (.*)$", re.MULTILINE)
TOOL_RESULTS = (
    'Tool results: get_weather -> {"city": "Paris", "sky": "clear", "temp_c": 21}; '
    'get_time -> 14:05 in Europe/Paris; get_news -> ["science: a calm day"].'
)


def _timeline(out: str) -> list[tuple[float, str, str]]:
    return [(float(ms), tag, text) for ms, tag, text in LINE.findall(out)]


def _summary(out: str, row: str) -> int:
    found = re.search(rf"^  {re.escape(row)}\s+(\d+)$", out, re.MULTILINE)
    assert found is not None, row
    return int(found.group(1))


def test_demo_runs_offline_and_reports_no_loss(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--color", "never"]) == 0
    out = capsys.readouterr().out
    for tag in ("[RESPONSE_CREATE]", "[RESPONSE_CREATED]", "[RESPONSE_DONE]", "[USER]"):
        assert tag in out
    assert "\033[" not in out  # --color never
    lost = re.search(r"lost triggers\s+(\d+)", out)
    assert lost is not None and lost.group(1) == "0"
    assert "3 tool calls" in out
    times = [float(m) for m in re.findall(r"^\s*(\d+\.\d) ms  \[", out, re.MULTILINE)]
    assert len(times) > 20 and times == sorted(times)  # lines from many threads, in order


def test_demo_colours_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--color", "always"]) == 0
    assert "\033[1;32m[RESPONSE_CREATE]" in capsys.readouterr().out


def test_demo_with_real_audio_in_and_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tone, recording = tmp_path / "you.wav", tmp_path / "model.wav"
    with wave.open(str(tone), "wb") as w:  # 1 s of a 440 Hz tone, 48 kHz mono
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 48000)))
                for n in range(48000)
            )
        )

    assert (
        main(["demo", "--color", "never", "--audio-in", str(tone), "--audio-out", str(recording)])
        == 0
    )

    out = capsys.readouterr().out
    heard = re.search(r"your audio: (\d+) frames", out)
    assert heard is not None and int(heard.group(1)) > 0
    assert f"recorded to {recording}" in out
    with wave.open(str(recording), "rb") as w:
        assert w.getnframes() > 0


def test_the_api_demo_without_a_key_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["demo", "--api"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--api"], ["--audio-in", "x.wav"], ["--audio-out", "y.wav"]])
def test_the_live_story_is_offline_and_has_no_audio_files(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--live", *extra]) == 2
    assert "against the emulator only" in capsys.readouterr().err


def test_emulator_command_serves_stats_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtclient", "emulator", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:  # the listening line arrives once it serves
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/v1", line)
            if found:
                url = found.group(1)
                break
        assert url is not None
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as resp:
            stats = json.load(resp)
        assert stats["sessions"] == 0 and stats["rejections"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0


def _assert_the_story(out: str) -> None:
    lines = _timeline(out)
    texts = [f"[{tag}] {text}" for _, tag, text in lines]

    def index(pattern: str) -> int:
        found = [i for i, line in enumerate(texts) if re.search(pattern, line)]
        assert len(found) == 1, (pattern, found)
        return found[0]

    # The race: our tools' follow-up create reaches the server after the user's turn,
    # whose VAD response therefore starts first: the create is rejected, re-armed, and
    # sent again once the VAD response is done - which answers the user, while the
    # re-armed create answers with the tool results.
    claims = [
        i
        for i, line in enumerate(texts)
        if "[RESPONSE_CREATE]" in line and "claimed for tool_calls:" in line
    ]
    rejected = index(r"^\[RESPONSE_REJECTED\] \S+ rejected .*; re-armed$")
    assert len(claims) == 2 and claims[0] < rejected < claims[1]
    vad = re.search(r"\[RESPONSE_QUEUED\] waiting for (resp_\w+) to finish", out)
    assert vad is not None
    index(rf"^\[SERVER_ERROR\] conversation_already_has_active_response .*{vad.group(1)}")
    index(
        rf"^\[SERVER\] response.done {vad.group(1)} status=completed, server VAD's: You said: hmm"
    )
    index(rf"^\[DEMO\] answer: {re.escape(TOOL_RESULTS)}$")
    assert _summary(out, "active-response rejections") == 1
    assert _summary(out, "re-armed after rejection") == 1
    assert _summary(out, "lost triggers") == 0

    # The barge-in: the cancel reaches the server, the story ends cancelled, and the
    # question asked right after is answered.
    cancel = re.search(r"\[RESPONSE_CANCEL\] response.cancel (resp_\w+) reached the server", out)
    assert cancel is not None
    story = cancel.group(1)
    done = index(rf"^\[SERVER\] response.done {story} status=cancelled \(client_cancelled\)$")
    assert index(rf"^\[RESPONSE_CANCEL\] response.cancel {story} ") < done
    assert done < index(r"^\[DEMO\] answer: You said: Just the weather, please\.$")


def test_demo_tells_its_story_every_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The race and its re-arm are staged by the emulator, not left to luck: 5 runs in
    a row, each with the rejection, the re-arm, the cancel and the right answers."""
    for _ in range(5):
        assert main(["demo", "--color", "never"]) == 0
        _assert_the_story(capsys.readouterr().out)


def test_demo_times_are_measured_from_its_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--color", "never"]) == 0
    lines = _timeline(capsys.readouterr().out)
    # the first line is the start the demo records (after its imports), printed as 0.0;
    # every later time is measured from it, in print order
    assert lines[0] == (0.0, "DEMO", "start (times are milliseconds since this line)")
    assert "emulator on" in lines[1][2] or "emulator on" in lines[2][2]
    times = [ms for ms, _, _ in lines]
    assert times == sorted(times)


def test_timeline_times_count_from_begin_not_from_construction() -> None:
    now = [1000.0]
    out = io.StringIO()
    timeline = Timeline(False, out, clock=lambda: now[0])
    now[0] = 1002.5  # e.g. the slow imports, between construction and the demo's start
    timeline.begin("start")
    now[0] = 1002.75
    timeline.line("USER", "hi")
    timeline.text("untimed")
    assert out.getvalue().splitlines() == [
        "      0.0 ms  [DEMO] start",
        "    250.0 ms  [USER] hi",
        "untimed",
    ]


def test_demo_piped_into_head_ends_quietly() -> None:
    """`rtclient demo | head -3`: head exits after three lines; the demo's next write
    meets a closed pipe. It must end with status 0 and nothing on stderr."""
    demo = shlex.join([sys.executable, "-m", "rtclient", "demo", "--color", "never"])
    # as a user runs it: without the suite's asyncio debug mode, whose slow-callback
    # warnings (stderr) a loaded machine would produce
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {demo} | head -3"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 3
    assert "[DEMO] start" in proc.stdout.splitlines()[0]


def test_a_closed_pipe_silences_the_timeline_from_any_thread() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    timeline = Timeline(False, ClosedPipe())
    timeline.begin("start")  # raises nothing
    assert timeline.reader_gone
    timeline.line("USER", "nobody reads this")
    timeline.text("nor this")


# -- the timeline is in the server's order, with the gate's true state (issue 19) ---------

_GATE_LINE = re.compile(
    r"^\[(?:RESPONSE_CREATED|RESPONSE_DONE)\] (resp_\w+)"
    r"|^\[(?:RESPONSE_REJECTED)\] (\S+) rejected"
    r"|^\[SERVER_ERROR\] .*\(event_id=(\S+)\)$"
)


def _server_index(events: list[dict[str, Any]], tag: str, text: str) -> int | None:
    """The position, in what the emulator sent, of the event a timeline line is about."""

    def first(match: Callable[[dict[str, Any]], bool]) -> int:
        found = [i for i, e in enumerate(events) if match(e)]
        assert found, (tag, text)
        return found[0]

    if tag == "SERVER":
        kind, _, detail = text.partition(" ")
        detail = detail.split(" ")[0]

        def about(e: dict[str, Any]) -> bool:
            ids = (e.get("name"), e.get("response_id"), (e.get("response") or {}).get("id"))
            return e.get("type") == kind and (not detail or detail in ids)

        return first(about)
    gate = _GATE_LINE.search(f"[{tag}] {text}")
    if gate is None:
        return None  # the demo's own lines, the user's, the client's sends
    response_id, ticket, event_id = gate.groups()
    if response_id is not None:
        kind = "response.created" if tag == "RESPONSE_CREATED" else "response.done"
        return first(lambda e: e.get("type") == kind and e["response"]["id"] == response_id)
    ours = ticket or event_id
    return first(lambda e: e.get("type") == "error" and e["error"].get("event_id") == ours)


def test_the_timeline_is_in_server_order_with_the_gates_true_state(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line about a server event - the demo's [SERVER] lines and the gate's own -
    comes in the order the emulator sent the events (before, the [SERVER] lines came
    from a subscriber thread and lagged the gate's), and the rejection line shows the
    gate as it is after the error: the server VAD reply the error names is active, the
    re-armed trigger pending (before, it showed active=None pending=0)."""
    started: list[Emulator] = []
    start = Emulator.start

    def keep(self: Emulator) -> Emulator:
        started.append(self)
        return start(self)

    monkeypatch.setattr(Emulator, "start", keep)
    assert main(["demo", "--color", "never"]) == 0
    out = capsys.readouterr().out
    (emulator,) = started
    sent = emulator.sessions[-1].server_events

    placed = [
        (index, f"[{tag}] {text}")
        for _, tag, text in _timeline(out)
        if (index := _server_index(sent, tag, text)) is not None
    ]
    assert len(placed) > 20
    for (before, line), (after, next_line) in itertools.pairwise(placed):
        assert before <= after, (line, next_line)

    rejected = re.search(
        r"\[RESPONSE_REJECTED\] (\S+) rejected \(in_flight=(\S+) active=(\S+) "
        r"cancelling=False pending=(\d+)\); re-armed",
        out,
    )
    assert rejected is not None
    ticket, in_flight, active, pending = rejected.groups()
    (error,) = [e for e in sent if e.get("type") == "error"]
    assert error["error"]["event_id"] == ticket
    assert f"in progress: {active}." in error["error"]["message"]  # the VAD reply, named
    (created,) = [
        e for e in sent if e.get("type") == "response.created" and e["response"]["id"] == active
    ]
    assert not created["response"].get("metadata")  # the server's own: server VAD's reply
    assert (in_flight, pending) == ("None", "1")


# -- Ctrl-C: one line, status 130, no traceback, at any moment (issue 19) ----------------


def _interrupted_demo(
    trigger: re.Pattern[str], *, twice: bool = False, args: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    """Run `python -m rtclient demo`, send SIGINT the moment a line of its stdout or of
    its import-time report (stderr, `-X importtime`) matches ``trigger``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "rtclient", "demo", "--color", "never", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = threading.Event()
    collected: dict[str, list[str]] = {"out": [], "err": []}

    def read(stream: Any, name: str) -> None:
        for line in stream:
            collected[name].append(line)
            if not seen.is_set() and trigger.search(line):
                seen.set()
                proc.send_signal(signal.SIGINT)
                if twice:
                    proc.send_signal(signal.SIGINT)

    readers = [
        threading.Thread(target=read, args=(proc.stdout, "out")),
        threading.Thread(target=read, args=(proc.stderr, "err")),
    ]
    for reader in readers:
        reader.start()
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for reader in readers:
            reader.join(10)
    assert seen.is_set(), f"never saw {trigger.pattern}"
    return code, "".join(collected["out"]), "".join(collected["err"])


@pytest.mark.parametrize(
    "moment",
    [
        r"\| +av$",  # while aiortc imports (its media library)
        r"\| +rtclient\.runtime\.bridge$",  # the client's modules
        r"\| +rtclient\.emulator\.model$",  # the emulator's
        r"\[DEMO\] emulator on",  # while WebRTC connects
        r"\[SERVER\] response\.function_call_arguments\.done",  # while the tools run
        r"\[RESPONSE_REJECTED\]",  # while the re-armed follow-up waits
        r"\[USER\] \(barges in\)",  # during the barge-in
    ],
)
def test_ctrl_c_prints_one_line_and_exits_130(moment: str) -> None:
    code, out, err = _interrupted_demo(re.compile(moment))
    report = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert code == 130, (out, report)
    assert report == ["rtclient: interrupted"]
    assert "Traceback" not in out + err


def test_a_second_ctrl_c_leaves_at_once_still_one_line() -> None:
    code, out, err = _interrupted_demo(re.compile(r"\[DEMO\] emulator on"), twice=True)
    report = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert code == 130 and report == ["rtclient: interrupted"]
    assert "Traceback" not in out + err


# -- one emulator command line (issue 19) -------------------------------------------------

EMULATOR_COMMANDS = {
    "rtclient emulator": [sys.executable, "-m", "rtclient", "emulator"],
    "python -m rtclient.emulator": [sys.executable, "-m", "rtclient.emulator"],
}


def _help(command: list[str]) -> str:
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_both_emulator_commands_have_one_set_of_options_with_defaults_shown() -> None:
    helps = {name: _help(command) for name, command in EMULATOR_COMMANDS.items()}
    for name, text in helps.items():
        assert text.startswith(f"usage: {name} "), text
        for shown in (
            "default 127.0.0.1",
            "default 8765",
            "default 0.01",
            "default 4",
            "default 3600.0",
            "default INFO",
            "default: any key",
            "default: on",
        ):
            assert shown in " ".join(text.split()), (name, shown)
    options = [text[text.index("options:") :] for text in helps.values()]
    assert options[0] == options[1]


def _vad_and_deltas(url: str, key: str) -> tuple[Any, int, int]:
    """Over the emulator's WebSocket: the session's turn detection, the text deltas of
    one answer, and the status a wrong key gets."""

    async def talk() -> tuple[Any, int, int]:
        ws_url = url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
        async with aiohttp.ClientSession() as http:
            try:
                await http.ws_connect(ws_url, headers={"Authorization": "Bearer sk-wrong"})
                refused = 0
            except aiohttp.WSServerHandshakeError as exc:
                refused = exc.status
            async with http.ws_connect(ws_url, headers={"Authorization": f"Bearer {key}"}) as ws:
                created = await ws.receive_json(timeout=10)
                assert created["type"] == "session.created"
                vad = created["session"]["audio"]["input"]["turn_detection"]
                await ws.send_json(
                    {"type": "response.create", "response": {"output_modalities": ["text"]}}
                )
                deltas = 0
                while (event := await ws.receive_json(timeout=10))["type"] != "response.done":
                    deltas += event["type"] == "response.output_text.delta"
        return vad, deltas, refused

    return asyncio.run(talk())


@pytest.mark.parametrize("name", list(EMULATOR_COMMANDS))
def test_both_emulator_commands_take_the_same_options(name: str) -> None:
    options = ["--host", "127.0.0.1", "--port", "0", "--api-key", "sk-cli", "--no-vad"]
    options += ["--pace", "0.001", "--deltas", "2", "--max-session-seconds", "60"]
    options += ["--log-level", "DEBUG"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONASYNCIODEBUG": "0"}
    proc = subprocess.Popen(
        [*EMULATOR_COMMANDS[name], *options], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None
        vad, deltas, refused = _vad_and_deltas(url, "sk-cli")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert proc.stderr is not None
        rest = proc.stderr.read()
    assert proc.returncode == 0
    assert vad is None and deltas == 2 and refused == 401
    assert "DEBUG" in rest  # --log-level reached the emulator's handler


# -- rtclient demo --live: GPT-Live's delegation story (issue 17) ------------------------

SLOW_SAID = [
    "I am searching the archive now, box 1 of 5.",
    "Box 4 of 5 has a match, I am checking it.",
]


def test_the_live_demo_tells_the_delegation_story(capsys: pytest.CaptureFixture[str]) -> None:
    """Three delegations on a pool: the slow one's two progress commentaries and its
    result, the failing one's spoken failure notice, the fine one's result - each placed
    once (the emulator's record), in the order the client received them, nothing lost."""
    from rtclient.cli_live import FAILURE, FAILURE_NOTICE, RESULT_SLOW, SAID

    assert main(["demo", "--live", "--color", "never"]) == 0
    out = capsys.readouterr().out
    lines = _timeline(out)
    texts = [f"[{tag}] {text}" for _, tag, text in lines]
    assert [ms for ms, _, _ in lines] == sorted(ms for ms, _, _ in lines)

    def index(pattern: str) -> int:
        found = [i for i, line in enumerate(texts) if re.search(pattern, line)]
        assert len(found) == 1, (pattern, found)
        return found[0]

    created = re.findall(r"\[SERVER\] session\.delegation\.created (dlg_\w+) at \d+ ms", out)
    assert len(created) == len(set(created)) == 3
    slow, failing, fine = created
    for delegation, kind in zip(created, ("slow", "failing", "staging"), strict=True):
        ran = index(rf"^\[HANDLER\] {delegation} \(.*{kind}.*\) runs on delegation_\d: ")
        assert index(rf"^\[SERVER\] session\.delegation\.created {delegation} ") < ran
    # the slow one: two progress commentaries, then its result - each spoken once, in order
    said = [index(rf"^\[HANDLER\] {slow} says \(progress\): '{re.escape(t)}'$") for t in SLOW_SAID]
    spoken = [index(rf"^\[MODEL\] {re.escape(t)}$") for t in [*SLOW_SAID, RESULT_SLOW]]
    assert said[0] < spoken[0] and said[1] < spoken[1] < spoken[2]
    assert index(rf"^\[HANDLER\] {slow} returns its result$") < spoken[2]
    # the failing one: the handler raised; the failure notice was spoken instead
    raised = rf"failed \(error\): RuntimeError: {re.escape(FAILURE)}"
    failed = index(rf"^\[DELEGATION\] {failing} {raised}")
    assert failed < index(rf"^\[MODEL\] {re.escape(FAILURE_NOTICE)}$")
    index(rf"^\[MODEL\] {re.escape(str(SAID['staging check']))}$")
    assert len(re.findall(r"\[SERVER\] session\.commentary\.appended: placed", out)) == 5
    assert index(r"^\[SERVER\] session\.closed \(close_requested\)$") > spoken[2]
    assert not re.search(r"\[(SERVER_ERROR|ERROR|WARNING)\]|\[SERVER\] error|lost:", out)

    summary = out[out.index("\nsummary\n") :]
    assert re.search(rf"^  {slow} archive search \(slow\) +answered after 2 progress updates: "
                     r"3 of 3 appends placed$", summary, re.M)  # fmt: skip
    assert re.search(rf"^  {failing} inventory count \(failing\) +failed \(.*\): the failure "
                     r"notice, 1 of 1 appends placed$", summary, re.M)  # fmt: skip
    assert re.search(rf"^  {fine} staging check +answered at once: 1 of 1", summary, re.M)
    assert _summary(out, "delegations") == 3 and _summary(out, "answered") == 2
    assert _summary(out, "failed (handler raised)") == 1 and _summary(out, "timed out") == 0
    assert _summary(out, "appends sent") == 5
    assert _summary(out, "appends placed (the emulator's record)") == 5
    assert _summary(out, "late or duplicate results") == 0 and _summary(out, "lost") == 0
    assert _summary(out, "silence streamed (ms)") > 0  # the clock moved with no microphone
    assert summary.rstrip().endswith("every append placed exactly once, nothing lost")


def test_the_live_verdict_fails_when_an_append_is_repeated_or_unplaced() -> None:
    """The summary's exit status reads the emulator's record, not the client's word."""
    from rtclient.cli_live import FAILING, FINE, SLOW, Story, summarise

    story = Story()
    story.kind = {"d1": SLOW, "d2": FAILING, "d3": FINE}
    stats = dict.fromkeys(
        ["late_results", "duplicate_results", "results_after_close", "lost",
         "undelivered_results", "appends_unplaced", "delegation_errors",
         "delegation_timeouts", "delegations_answered", "silence_sent_ms"], 0,
    )  # fmt: skip
    stats |= {"delegations": 3, "appends_sent": 3}

    def record(*appends: tuple[str, str, str]) -> dict[str, Any]:
        return {"delegations": [
            {"id": d, "appends": [{"content": c, "status": st} for dd, c, st in appends if dd == d]}
            for d in ("d1", "d2", "d3")
        ]}  # fmt: skip

    good = record(("d1", "a", "landed"), ("d2", "b", "landed"), ("d3", "c", "landed"))
    twice = record(("d1", "a", "landed"), ("d1", "a", "landed"), ("d3", "c", "landed"))
    unplaced = record(("d1", "a", "landed"), ("d2", "b", "incomplete"), ("d3", "c", "landed"))
    out = io.StringIO()
    timeline = Timeline(False, out)
    assert summarise(timeline, story, stats, good) == 0
    assert summarise(timeline, story, stats, twice) == 1
    assert summarise(timeline, story, stats, unplaced) == 1
    assert out.getvalue().count("SOMETHING WAS LOST OR REPEATED") == 2


def test_the_live_demo_piped_into_head_ends_quietly() -> None:
    demo = shlex.join([sys.executable, "-m", "rtclient", "demo", "--live", "--color", "never"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {demo} | head -5"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 5


def test_ctrl_c_during_the_live_story_prints_one_line_and_exits_130() -> None:
    """Interrupted while the slow handler waits on the pool: one line, status 130."""
    code, out, err = _interrupted_demo(
        re.compile(r"\[HANDLER\] dlg_\w+ says \(progress\): 'I am searching"), args=("--live",)
    )
    report = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert code == 130, (out, report)
    assert report == ["rtclient: interrupted"]
    assert "Traceback" not in out + err
