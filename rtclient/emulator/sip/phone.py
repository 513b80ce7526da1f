"""The caller's end of a phone call: a media leg into the call's session.

The emulator speaks no SIP; what matters to the app - the session gets the caller's
audio and the caller gets the model's voice - is made the way a WebRTC call does it:
a loopback aiortc connection that the emulator's own :class:`~..peer.Peer` answers. So
a phone call's session hears and speaks exactly as a WebRTC call's does (the same
frame counting, the same GPT-Live audio clock, the same speaking track), just without
a data channel: its events reach the app only over sidebands.

The phone sends 20 ms frames (48 kHz mono PCM16) in real time for as long as the call
is up - silence between utterances, as an RTP stream does - so a GPT-Live session's
clock keeps moving. What the caller says is queued audio: generated (:func:`tone`) or
read from a file (:func:`read_audio`). The model's voice arrives on the other track
and is counted (:attr:`Phone.frames_heard`, 20 ms each).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import struct
from pathlib import Path
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtclient.transports._loopback import loopback_only

from ..peer import Peer

SAMPLE_RATE = 48000
FRAME_SECONDS = 0.020
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_SECONDS)
FRAME_BYTES = FRAME_SAMPLES * 2
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_SILENCE = bytes(FRAME_BYTES)


def tone(milliseconds: int, frequency: float = 220.0) -> bytes:
    """``milliseconds`` of a voiced sound (a tone with two overtones, faded in and
    out), 48 kHz mono PCM16: what a caller "says" when no file is given."""
    count = SAMPLE_RATE * milliseconds // 1000
    fade = min(count // 2, SAMPLE_RATE // 50)
    samples = []
    for n in range(count):
        t = n / SAMPLE_RATE
        wave = sum(
            math.sin(2 * math.pi * frequency * k * t) / k for k in (1, 2, 3)
        )  # fmt: skip
        envelope = min(1.0, n / fade, (count - n) / fade) if fade else 1.0
        samples.append(int(7000 * envelope * wave))
    return struct.pack(f"<{count}h", *samples)


def read_audio(path: str | Path) -> bytes:
    """A sound file (WAV, or anything ffmpeg reads) as 48 kHz mono PCM16."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[bytes] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(bytes(out.planes[0])[: out.samples * 2])
        for out in resampler.resample(None):
            chunks.append(bytes(out.planes[0])[: out.samples * 2])
    return b"".join(chunks)


def milliseconds_of(pcm: bytes) -> int:
    return len(pcm) * 1000 // (SAMPLE_RATE * 2)


class CallerVoice(MediaStreamTrack):
    """The phone's microphone: queued speech, else silence, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._speech = bytearray()
        self._queued = 0  # bytes of speech ever queued
        self._played = 0  # ... and sent
        self._promised: list[tuple[int, asyncio.Future[None]]] = []
        self._pts = 0
        self._next_at: float | None = None
        self.frames_sent = 0

    def say(self, pcm: bytes) -> asyncio.Future[None]:
        """Queue ``pcm`` after what is queued; the future is done once it is all sent."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech.extend(pcm)
        self._queued += len(pcm)
        self._promised.append((self._queued, done))
        self._settle()
        return done

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._next_at is None or self._next_at < now - 0.1:
            self._next_at = now
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at += FRAME_SECONDS
        chunk = bytes(self._speech[:FRAME_BYTES])
        del self._speech[:FRAME_BYTES]
        self._played += len(chunk)
        self._settle()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk.ljust(FRAME_BYTES, b"\0") if chunk else _SILENCE)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        for _, done in self._promised:
            if not done.done():
                done.set_exception(ConnectionError("the phone hung up"))
        self._promised.clear()

    def _settle(self) -> None:
        while self._promised and self._promised[0][0] <= self._played:
            _, done = self._promised.pop(0)
            if not done.done():
                done.set_result(None)


class Phone:
    """The caller: one aiortc peer connection into the call's session, on the
    emulator's loop. ``dial(peer)`` connects it; ``say(pcm)`` speaks; ``hang_up()``."""

    def __init__(self) -> None:
        self.voice = CallerVoice()
        self.frames_heard = 0
        self.closed = False
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_state)

    async def dial(self, peer: Peer, timeout: float = 10.0) -> None:
        """Offer audio to ``peer`` (the call's session) and wait until media flows."""
        self._pc.addTransceiver(self.voice, direction="sendrecv")
        with loopback_only():
            await self._pc.setLocalDescription(await self._pc.createOffer())
            answer = await peer.answer(self._pc.localDescription.sdp)
            await self._pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(asyncio.shield(self._connected), timeout)

    async def say(self, pcm: bytes) -> None:
        """Speak ``pcm`` (48 kHz mono PCM16); returns once the last frame was sent."""
        await self.voice.say(pcm)

    async def hang_up(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.voice.stop()
        for task in list(self._tasks):
            task.cancel()
        await self._pc.close()

    def _on_track(self, track: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._listen(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames_heard += 1

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and not self._connected.done():
            self._connected.set_result(None)
        elif state in ("failed", "closed"):
            if not self._connected.done():
                self._connected.set_exception(ConnectionError(f"the call's media {state}"))
                self._connected.exception()  # retrieved: dial() may no longer be waiting
            if not self.closed and self._closing is None:
                self._closing = asyncio.get_running_loop().create_task(self.hang_up())
