"""Audio over the real WebRTC track: record the model to a file, send a file as the user."""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from rtclient import RealtimeClient
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]


def write_tone(path: Path, seconds: float = 0.5, rate: int = 48000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        samples = (
            int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(seconds * rate))
        )
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))


def test_model_audio_is_recorded_to_a_file(
    rt_emulator: Emulator, rt_connect: Connect, tmp_path: Path
) -> None:
    out = tmp_path / "model.wav"
    stopped = threading.Event()
    client = rt_connect(audio_out=str(out))
    client.on("output_audio_buffer.stopped", lambda e: stopped.set())
    client.send_text("say something", respond=False)
    client.request_response(output_modalities=["audio"]).result(20)
    assert stopped.wait(20)  # the emulator has finished playing it out
    client.close()
    with wave.open(str(out), "rb") as w:
        assert w.getnframes() > 0 and w.getframerate() == 48000


def test_a_file_is_sent_as_the_users_audio(
    rt_emulator: Emulator, rt_connect: Connect, tmp_path: Path
) -> None:
    tone = tmp_path / "tone.wav"
    write_tone(tone)
    client = rt_connect(audio_in=str(tone))
    session = rt_emulator.sessions[-1]
    # 0.5 s of tone is 25 Opus frames of 20 ms; the emulator counts what it decodes
    assert rt_emulator.wait_for(lambda: session.count("audio_frames_in") >= 10, 20)
    # and the conversation works with the audio flowing in alongside the channel
    assert client.send_text("hello").result(20)["response"]["status"] == "completed"  # type: ignore[union-attr]


class ToneTrack(MediaStreamTrack):
    """A user's own track (a microphone, say): 20 ms frames of 48 kHz mono PCM, paced."""

    kind = "audio"

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.left = frames
        self.pts = 0
        self.delivered = 0

    async def recv(self) -> av.AudioFrame:
        if self.left == 0:
            self.stop()
            raise MediaStreamError
        self.left -= 1
        await asyncio.sleep(0.02)  # a microphone's pace, not synchronisation
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.pts, Fraction(1, 48000)
        self.pts += 960
        self.delivered += 1
        return frame


def test_a_user_track_is_sent_as_the_users_audio(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    track = ToneTrack(frames=25)
    client = rt_connect(audio_in=track)
    session = rt_emulator.sessions[-1]
    assert rt_emulator.wait_for(lambda: session.count("audio_frames_in") >= 10, 20)
    assert client.send_text("hello").result(20)["response"]["status"] == "completed"  # type: ignore[union-attr]
    assert track.delivered >= 10


def test_no_audio_in_means_no_frames_sent(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    client.send_text("hello").result(20)  # type: ignore[union-attr]
    assert rt_emulator.sessions[-1].count("audio_frames_in") == 0


def write_video_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 16
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame(16, 16, "yuv420p")))
        container.mux(stream.encode())


def test_a_bad_audio_in_file_fails_connect_clearly(
    rt_emulator: Emulator, rt_connect: Connect, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(Exception, match=r"missing\.wav"):
        rt_connect(audio_in=str(missing))
    video = tmp_path / "video.mkv"
    write_video_only(video)
    with pytest.raises(ValueError, match="has no audio stream"):
        rt_connect(audio_in=str(video))
    assert rt_emulator.stats()["sessions"] == 0  # nothing reached the server
