"""The model's voice on the WebRTC audio track, and its playback clock.

:class:`AudioPlayback` is the server-side output audio buffer: each transcript delta adds
some milliseconds of speech, played out in real time; it knows which response is
speaking, when the buffer drains (``output_audio_buffer.stopped``) and how to clear it
(``output_audio_buffer.clear`` / barge-in). Its clock is the event loop's, so the
events' timing does not depend on the encoder keeping up.

:class:`SpeakerTrack` is the aiortc track fed from it. Its ``recv()`` awaits while the
buffer is empty, so an idle session hands aiortc no frame and encodes no Opus (~4% of a
core per speaking session here); while speaking it yields 20 ms frames of a 400 Hz tone
at real-time pace.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import struct
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

SAMPLE_RATE = 48000
FRAME_SECONDS = 0.020
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_SECONDS)
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_TONE = b"".join(
    struct.pack("<h", int(6000 * math.sin(2 * math.pi * 400 * n / SAMPLE_RATE)))
    for n in range(FRAME_SAMPLES)
)


class AudioPlayback:
    """The output audio buffer of one session (lives on the emulator's loop)."""

    def __init__(self, on_drained: Callable[[str], None]) -> None:
        self._on_drained = on_drained
        self._speaking = asyncio.Event()
        self._response_id: str | None = None
        self._ends_at = 0.0
        self._generating = False
        self._idle_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self.frames_sent = 0
        """20 ms frames the track has handed to the encoder (paced by the clock)."""
        self.milliseconds_buffered = 0
        """Milliseconds of speech the responses have buffered (played, or cleared)."""

    @property
    def response_id(self) -> str | None:
        """The response whose audio is buffered or playing, if any."""
        return self._response_id

    def is_playing(self) -> bool:
        return self._response_id is not None

    def start(self, response_id: str) -> None:
        """A response's audio content part begins; it owns the buffer until drained."""
        self._cancel_idle()
        previous, self._response_id = self._response_id, response_id
        if previous is not None and previous != response_id:
            self._on_drained(previous)  # the new response's speech follows the old one
        self._generating = True
        self._ends_at = max(self._ends_at, asyncio.get_running_loop().time())

    def add(self, response_id: str, milliseconds: int) -> None:
        """Buffer ``milliseconds`` more of ``response_id``'s speech."""
        if self._response_id != response_id:
            return  # cleared meanwhile: the rest of that response is discarded
        self.milliseconds_buffered += milliseconds
        now = asyncio.get_running_loop().time()
        self._ends_at = max(self._ends_at, now) + milliseconds / 1000
        self._speaking.set()
        self._schedule_idle(now)

    def finish(self, response_id: str) -> None:
        """The response generates no more audio; drain what is buffered."""
        if self._response_id != response_id:
            return
        self._generating = False
        self._schedule_idle(asyncio.get_running_loop().time())

    def clear(self) -> str | None:
        """Drop the buffer now; returns the response that was speaking, if any."""
        cleared = self._response_id
        self._cancel_idle()
        self._response_id = None
        self._generating = False
        self._ends_at = 0.0
        self._speaking.clear()
        return cleared

    def close(self) -> None:
        self.clear()
        self._closed = True
        self._speaking.set()  # wake a waiting recv() so it sees the end

    @property
    def closed(self) -> bool:
        return self._closed

    def speaking_now(self) -> bool:
        return self._ends_at > asyncio.get_running_loop().time()

    async def wait_speaking(self) -> None:
        """Return once there is audio to play (or the playback closed)."""
        if not self._closed and not self.speaking_now():
            self._speaking.clear()
        await self._speaking.wait()

    def _schedule_idle(self, now: float) -> None:
        self._cancel_idle()
        self._idle_handle = asyncio.get_running_loop().call_later(
            max(0.0, self._ends_at - now), self._went_idle
        )

    def _cancel_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _went_idle(self) -> None:
        self._idle_handle = None
        self._speaking.clear()
        if self._generating or self._response_id is None:
            return  # more audio is coming (a slow pace starved the buffer)
        drained, self._response_id = self._response_id, None
        self._on_drained(drained)


class SpeakerTrack(MediaStreamTrack):
    """An audio track that produces frames only while the playback is speaking."""

    kind = "audio"

    def __init__(self, playback: AudioPlayback) -> None:
        super().__init__()
        self._playback = playback
        self._pts = 0
        self._next_at: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live" or self._playback.closed:
                raise MediaStreamError
            if self._playback.speaking_now():
                break
            self._next_at = None  # silence: restart the real-time clock on resume
            await self._playback.wait_speaking()
        now = loop.time()
        if self._next_at is None or self._next_at < now - 0.1:
            self._next_at = now
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at += FRAME_SECONDS
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(_TONE)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += FRAME_SAMPLES
        self._playback.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._playback.close()
