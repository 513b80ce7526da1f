"""GPT-Live's connections: the Realtime transports with Live's endpoints and clock.

The sockets, the data channel, the send contract and the close rules are those of
:mod:`.websocket` and :mod:`.webrtc` (see :mod:`.base`); what GPT-Live changes is
overridden here, and only that:

========================  ==========================================================
primary WebSocket         ``GET {ws base}/live/sessions`` with no query parameters
                          (the model goes in ``session.start``); audio events are
                          ``session.input_audio.append`` / ``session.output_audio.delta``
                          in the session's ``audio.format`` (PCM16 mono 24 kHz here)
sideband                  ``GET {ws base}/live/sessions/{id}/attach`` (``graceful_close``
                          optional); no audio either way
WebRTC                    ``POST {base}/live/sessions``: JSON in (``session``,
                          ``transport.sdp``) and out (``session.id``,
                          ``transport.sdp``), not SDP bodies; no ``audio.format``
hang-up                   ``POST {base}/live/sessions/{id}/hangup``
========================  ==========================================================

**The session clock.** A Live session's timeline moves only while input audio flows:
an appended commentary or result is placed (and spoken, and acknowledged) when the
timeline reaches it, so with no audio it waits - and closing then fails it with
``context_injection_incomplete``. A microphone (or a browser's) streams continuously,
silence included; a server-side client often has no microphone. So the Live
WebSocket transport streams **silence** in real time (``silence_ms`` chunks, paced
by the loop's clock; at most ``MAX_SILENCE_LAG_MS`` of catching up after a late
wake-up) from ``session.started`` to ``session.closed`` whenever no
``audio_in`` is playing - before it, after a file ends, or all along
(``stream_silence=False`` turns it off: the app then keeps the clock moving itself).
Nothing is sent before ``session.started`` - audio neither. Over WebRTC the default
input track is aiortc's paced silence for the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiortc import AudioStreamTrack, MediaStreamTrack

from rtclient.transports import pcm, signaling
from rtclient.transports.webrtc import WebRTCTransport
from rtclient.transports.websocket import WebSocketTransport

DEFAULT_SILENCE_MS = 100
MAX_SILENCE_LAG_MS = 500  # the silence a late wake-up may still catch up on
_STARTED = "session.started"
_CLOSED = "session.closed"
LIVE_AUDIO_FORMAT = {"type": "audio/pcm", "rate": pcm.RATE}


def websocket_session(config: Mapping[str, Any]) -> dict[str, Any]:
    """The session object for a primary WebSocket: ``audio.format`` set to what this
    transport sends and plays (PCM16 mono 24 kHz) unless given; another format is
    refused (``ValueError``) before anything connects."""
    out = dict(config)
    audio = dict(out.get("audio") or {})
    fmt = audio.get("format")
    if fmt is None:
        audio["format"] = dict(LIVE_AUDIO_FORMAT)
    elif not isinstance(fmt, Mapping) or dict(fmt) != LIVE_AUDIO_FORMAT:
        raise ValueError(
            f"the Live WebSocket transport sends and plays PCM16 24 kHz; audio.format {fmt!r} "
            f"is not supported (use {LIVE_AUDIO_FORMAT})"
        )
    out["audio"] = audio
    return out


def webrtc_session(config: Mapping[str, Any]) -> dict[str, Any]:
    """The session object for ``POST /live/sessions``: WebRTC negotiates the media
    format in SDP, so ``audio.format`` is refused (the server would refuse it too)."""
    audio = config.get("audio")
    if isinstance(audio, Mapping) and "format" in audio:
        raise ValueError("audio.format is for a primary WebSocket; WebRTC negotiates it in SDP")
    return dict(config)


class LiveWebSocketTransport(WebSocketTransport):
    """A primary WebSocket to a GPT-Live session, or a sideband on ``session_id``."""

    AUDIO_IN = "session.input_audio.append"
    AUDIO_OUT = "session.output_audio.delta"
    HANGUP_PATH = signaling.LIVE_SESSIONS

    def __init__(
        self,
        *,
        session_id: str | None = None,
        graceful_close: bool = False,
        stream_silence: bool = True,
        silence_ms: int = DEFAULT_SILENCE_MS,
        **options: Any,
    ) -> None:
        if silence_ms < 10:
            raise ValueError("silence_ms must be at least 10")
        options.setdefault("model", "")
        super().__init__(call_id=session_id, **options)
        self._graceful_close = graceful_close
        self._stream_silence = stream_silence and session_id is None
        self._silence_ms = silence_ms
        self._started = False
        self._session_id: str | None = None  # a primary's, from session.started
        self._audio_tasks: list[asyncio.Task[None]] = []
        self.silence_sent_ms = 0  # how much silence kept the clock moving (for stats)
        self.silence_skipped_ms = 0  # silence not sent: the loop was too far behind

    def __repr__(self) -> str:
        kind = f"sideband session={self._call_id}" if self._call_id else "primary"
        return f"<LiveWebSocketTransport {self.base_url} {kind} key={self._key!r}>"

    def _target(self) -> tuple[str, dict[str, str]]:
        if self._call_id is None:
            return signaling.websocket_url(self.base_url, signaling.LIVE_SESSIONS), {}
        path = f"{signaling.LIVE_SESSIONS}/{quote(self._call_id, safe='')}/attach"
        params = {"graceful_close": "true"} if self._graceful_close else {}
        return signaling.websocket_url(self.base_url, path), params

    @staticmethod
    def _check_session(session: Mapping[str, Any] | None) -> None:
        websocket_session(session or {})

    def _audio_ready(self) -> None:
        """Not yet: input audio waits for ``session.started`` (see :meth:`_receive`)."""

    def _plays_audio(self) -> bool:
        """The model's audio is decoded only for someone who takes it (``on_audio``,
        ``audio_out``). GPT-Live's output is one continuous stream - ten deltas a second
        of mostly silence - and the client never truncates it (the model handles
        barge-in), so there is no playback position to keep: a session that wants no
        audio does not base64-decode it here (bench/live.py: that was ~10% of the loop
        thread's time per session)."""
        return self._on_audio_frame is not None or self._recording is not None

    def _receive(self, text: str) -> None:
        # Peek as the base class peeks for audio: only these two types can match.
        if not self._started and _STARTED in text and _is(text, _STARTED):
            self._started = True
            self._learn_session(text)
            self._start_audio()
        elif _CLOSED in text and _is(text, _CLOSED):
            self._stop_audio()
        super()._receive(text)

    def _learn_session(self, text: str) -> None:
        if self._call_id is not None:
            return
        session = json.loads(text).get("session")
        found = session.get("id") if isinstance(session, dict) else None
        self._session_id = found if isinstance(found, str) else None

    @property
    def call_id(self) -> str | None:
        """The session this socket speaks for (a primary's, once started)."""
        return self._call_id or self._session_id

    def _start_audio(self) -> None:
        if self._call_id is not None:
            return  # a sideband carries no audio
        track = self._input_track()
        if track is not None:
            self._audio_tasks.append(self._start(self._pump_audio(track)))
        elif self._stream_silence:
            self._audio_tasks.append(self._start(self._pump_silence()))

    def _stop_audio(self) -> None:
        for task in self._audio_tasks:
            task.cancel()
        self._audio_tasks.clear()

    async def _pump_audio(self, track: MediaStreamTrack) -> None:
        await super()._pump_audio(track)
        if self._stream_silence and not self._closing:
            await self._pump_silence()  # the file ended: the clock must not stop

    async def _pump_silence(self) -> None:
        """PCM16 zeros, ``silence_ms`` at a time, in real time by the loop's clock. A
        late wake-up sends what is due at once, up to ``MAX_SILENCE_LAG_MS``: a loop
        further behind than that (a process holding more sessions than it can stream)
        skips the rest (``silence_skipped_ms``) - the session clock then runs slower
        than real time, which delays placements, instead of a catch-up burst per
        session per wake-up that loads the loop more the further behind it is (measured
        in bench/live.py: memory grew without bound at 1,000 sessions)."""
        loop = asyncio.get_running_loop()
        chunk = base64.b64encode(bytes(pcm.BYTES_PER_MS * self._silence_ms)).decode()
        text = json.dumps({"type": self.AUDIO_IN, "audio": chunk}, separators=(",", ":"))
        began = loop.time()
        step = self._silence_ms
        while not self._closing:
            due_ms = (loop.time() - began) * 1000
            lag = due_ms - self.silence_sent_ms
            if lag > MAX_SILENCE_LAG_MS:
                skipped = (lag - MAX_SILENCE_LAG_MS) // step * step + step
                began += skipped / 1000  # the schedule moves on: that silence is not sent
                due_ms -= skipped
                self.silence_skipped_ms += int(skipped)
            while self.silence_sent_ms <= due_ms:
                try:
                    self._send_text(text, self.AUDIO_IN)
                except Exception:
                    return  # the socket is gone; its loss is reported by the reader
                self.silence_sent_ms += self._silence_ms
            await asyncio.sleep(began + self.silence_sent_ms / 1000 - loop.time())


class LiveWebRTCTransport(WebRTCTransport):
    """A GPT-Live WebRTC session this client creates (``POST /live/sessions``)."""

    HANGUP_PATH = signaling.LIVE_SESSIONS

    def __init__(self, *, stream_silence: bool = True, **options: Any) -> None:
        options.setdefault("model", "")
        super().__init__(**options)
        webrtc_session(self._session)
        self._stream_silence = stream_silence

    async def _signal(self, sdp: str) -> tuple[str, str | None]:
        assert self._http is not None
        session = {"model": self.model, **self._session} if self.model else self._session
        return await signaling.post_live_session(
            self._http, self.base_url, self._key, sdp, session=session
        )

    def _input_track(self) -> MediaStreamTrack:
        if self._audio_in is None and self._stream_silence:
            return AudioStreamTrack()  # paced silence: the session's clock keeps moving
        return super()._input_track()


def _is(text: str, kind: str) -> bool:
    try:
        event = json.loads(text)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("type") == kind
