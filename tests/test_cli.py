"""The command line: the offline demo end to end, and the emulator from a shell."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path

import pytest

from rtclient.cli import Timeline, main

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


def test_live_demo_without_a_key_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["demo", "--live"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


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
