"""The command line: the offline demo end to end, and the emulator from a shell."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path

import pytest

from rtclient.cli import main

pytestmark = pytest.mark.timeout(120)


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
