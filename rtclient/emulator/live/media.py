"""Live audio as bytes: how long a chunk lasts, silence, and the sideband's PCM16 24 kHz.

A primary WebSocket sends and receives raw audio in its startup format
(``audio/pcm`` at 16 or 24 kHz, ``audio/pcmu`` or ``audio/pcma`` at 8 kHz, mono);
how many milliseconds a chunk holds is what moves the session clock. Sidebands get
the caller's audio reflected, and the model's output, always as PCM16 LE mono at
24 kHz, so a chunk is converted (G.711 decoded, samples repeated or interpolated) -
only while a sideband listens. WebRTC frames come decoded by aiortc and are resampled
with PyAV.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import av

SIDEBAND_RATE = 24000


@dataclass(frozen=True)
class AudioFormat:
    type: str = "audio/pcm"
    rate: int = 24000

    @classmethod
    def of(cls, config: dict[str, Any]) -> AudioFormat:
        """The session's format (``audio.format``; PCM 24 kHz when absent)."""
        given = (config.get("audio") or {}).get("format") or {}
        return cls(str(given.get("type", "audio/pcm")), int(given.get("rate", 24000)))

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def milliseconds(self, size: int) -> float:
        """How long ``size`` bytes of this format play."""
        return size * 1000 / (self.rate * self.bytes_per_sample)

    def silence(self, milliseconds: int) -> bytes:
        """``milliseconds`` of silence in this format (G.711's silence is not 0)."""
        samples = self.rate * milliseconds // 1000
        if self.type == "audio/pcmu":
            return b"\xff" * samples
        if self.type == "audio/pcma":
            return b"\xd5" * samples
        return bytes(2 * samples)

    def to_sideband(self, chunk: bytes) -> bytes:
        """``chunk`` as PCM16 LE mono 24 kHz (what a sideband receives)."""
        if self.type == "audio/pcmu":
            samples = array.array("h", (_ULAW[b] for b in chunk))
        elif self.type == "audio/pcma":
            samples = array.array("h", (_ALAW[b] for b in chunk))
        else:
            samples = array.array("h")
            samples.frombytes(chunk[: len(chunk) // 2 * 2])
            if sys.byteorder == "big":
                samples.byteswap()
        return _pcm16le(_resample(samples, self.rate, SIDEBAND_RATE))


def _resample(samples: array.array[int], rate: int, target: int) -> array.array[int]:
    """Linear interpolation (enough for a reflection nobody listens to closely)."""
    if rate == target or not samples:
        return samples
    count = len(samples) * target // rate
    out = array.array("h", bytes(2 * count))
    last = len(samples) - 1
    for index in range(count):
        position = index * rate / target
        left = int(position)
        right = min(left + 1, last)
        fraction = position - left
        out[index] = int(samples[left] + (samples[right] - samples[left]) * fraction)
    return out


def _pcm16le(samples: array.array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array.array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((byte & 0x0F) << 3) + 0x84
    magnitude <<= (byte & 0x70) >> 4
    return 0x84 - magnitude if byte & 0x80 else magnitude - 0x84


def _alaw(byte: int) -> int:
    byte ^= 0x55
    exponent = (byte & 0x70) >> 4
    magnitude = (byte & 0x0F) << 4
    magnitude = magnitude + 8 if exponent == 0 else (magnitude + 0x108) << (exponent - 1)
    return magnitude if byte & 0x80 else -magnitude


_ULAW = [_ulaw(b) for b in range(256)]
_ALAW = [_alaw(b) for b in range(256)]


class FrameReflector:
    """WebRTC input frames (aiortc's decoded Opus) as sideband PCM16 24 kHz bytes."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SIDEBAND_RATE)

    def convert(self, frame: av.AudioFrame) -> bytes:
        return b"".join(
            bytes(out.planes[0])[: out.samples * 2] for out in self._resampler.resample(frame)
        )
