"""Audio as a WebSocket session carries it: PCM16, mono, 24 kHz, in base64 events.

A WebSocket has no media track, so the transport does what WebRTC's stack would:

* :class:`PcmEncoder` turns the user's frames (any rate/layout, from PyAV or a track)
  into the bytes of ``input_audio_buffer.append``, with PyAV's resampler.
* :func:`pcm_frame` turns a ``response.output_audio.delta`` into an ``av.AudioFrame``,
  so ``on_audio`` callbacks get the same type over both transports (here s16 mono
  24 kHz; over WebRTC the decoded Opus, 48 kHz - each frame says its own rate).
* :class:`Playback` is the model's audio as the user hears it. Deltas arrive faster
  than real time; a player plays them in real time from the first one. What is still
  buffered when the user barges in was never heard: ``stop()`` says, per assistant
  item, how many milliseconds were (``conversation.item.truncate``'s
  ``audio_end_ms``), and the rest of those items is dropped.
* :class:`FrameQueue` is a track fed from those frames, so aiortc's ``MediaRecorder``
  writes ``audio_out`` exactly as it does for WebRTC.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

RATE = 24_000
BYTES_PER_SAMPLE = 2
BYTES_PER_MS = RATE * BYTES_PER_SAMPLE // 1000  # 48
_TIME_BASE = fractions.Fraction(1, RATE)
_CUT_ITEMS_KEPT = 16


class PcmEncoder:
    """Any ``av.AudioFrame`` -> PCM16 mono 24 kHz bytes (PyAV's resampler keeps state
    between frames, so one encoder per input stream)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def encode(self, frame: Any) -> bytes:
        return b"".join(
            bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]
            for out in self._resampler.resample(frame)
        )


def pcm_frame(data: bytes, pts: int) -> Any:
    """PCM16 mono 24 kHz bytes as an ``av.AudioFrame`` starting at sample ``pts``."""
    samples = len(data) // BYTES_PER_SAMPLE
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.planes[0].update(data[: samples * BYTES_PER_SAMPLE])
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = _TIME_BASE
    return frame


@dataclass
class _Item:
    item_id: str
    content_index: int
    received_ms: float = 0.0
    ends_at: float = 0.0  # when its last received sample will have been played


@dataclass(frozen=True)
class Cut:
    """An assistant item's audio, cut at what the user heard."""

    item_id: str
    content_index: int
    audio_end_ms: int


class Playback:
    """A real-time play-out clock over received audio (loop thread only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: deque[_Item] = deque()
        self._ends_at = 0.0
        self._cut: deque[str] = deque(maxlen=_CUT_ITEMS_KEPT)

    def add(self, item_id: str, content_index: int, milliseconds: float) -> bool:
        """Queue ``milliseconds`` of ``item_id``; False if that item was cut (drop it)."""
        if item_id in self._cut:
            return False
        now = self._clock()
        while self._items and self._items[0].ends_at <= now:
            self._items.popleft()  # fully played
        item = self._items[-1] if self._items else None
        if item is None or item.item_id != item_id or item.content_index != content_index:
            item = _Item(item_id, content_index)
            self._items.append(item)
        self._ends_at = max(self._ends_at, now) + milliseconds / 1000
        item.received_ms += milliseconds
        item.ends_at = self._ends_at
        return True

    def stop(self) -> list[Cut]:
        """Stop playing now: the items cut short, each with what was heard of it."""
        now = self._clock()
        cuts = []
        for item in self._items:
            unheard_ms = (item.ends_at - now) * 1000
            if unheard_ms > 0:
                heard = max(0.0, item.received_ms - unheard_ms)
                cuts.append(Cut(item.item_id, item.content_index, int(heard)))
                self._cut.append(item.item_id)
        self._items.clear()
        self._ends_at = 0.0
        return cuts


class FrameQueue(MediaStreamTrack):
    """An audio track whose frames are pushed in (``put``); ``stop()`` ends it."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, frame: Any) -> None:
        if self.readyState == "live":
            self._idle.clear()
            self._queue.put_nowait(frame)

    async def recv(self) -> Any:
        if self._queue.empty():
            self._idle.set()
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    async def drained(self, timeout: float) -> None:
        """Wait (bounded) until the consumer has taken every frame put so far."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()
