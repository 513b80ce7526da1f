"""The server side of one WebRTC call, over aiortc, on loopback only.

The client offers the ``oai-events`` data channel and one audio m-line; we answer with
``iceServers=[]`` (an unreachable STUN server costs 5 s per side) and gather ICE
candidates inside :func:`rtclient.transports._loopback.loopback_only`, so every candidate we offer
is 127.0.0.1 and no packet of ours leaves the machine. Our audio sender is fed by a
:class:`SpeakerTrack` that is silent (no frames, no Opus) unless a response speaks.
Incoming audio is drained and dropped: the emulator's VAD is simulated, not heard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from loguru import logger

from rtclient.transports._loopback import loopback_only

from .audio import AudioPlayback, SpeakerTrack
from .session import Channel

EVENTS_LABEL = "oai-events"
_CLOSE_GRACE_S = 1.0


class DataChannelLink:
    """The ``oai-events`` channel as a session :class:`~.session.Channel`."""

    kind = "webrtc"

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def send_text(self, text: str) -> None:
        if self._channel.readyState == "open":
            self._channel.send(text)

    def close(self) -> None:
        """Close once what was sent is handed to SCTP, so the last events arrive."""
        channel = self._channel
        if channel.readyState != "open":
            return
        if channel.bufferedAmount == 0:
            channel.close()
        else:
            channel.once("bufferedamountlow", channel.close)


class CallSession(Protocol):
    """What a call needs from the session it carries (a Realtime or a Live one)."""

    @property
    def call_id(self) -> str | None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def playback(self) -> AudioPlayback | None: ...

    def attach(self, channel: Channel) -> None: ...

    def detach(self, channel: Channel) -> None: ...

    def handle_text(self, text: str | bytes, channel: Channel | None = None) -> None: ...

    def terminate(self, reason: str) -> None: ...

    def record_audio_frame(self, frame: av.AudioFrame) -> None: ...


class Peer:
    """One call: an aiortc peer connection bound to one session."""

    def __init__(self, session: CallSession, on_closed: Callable[[Peer], None]) -> None:
        self.session = session
        self.call_id: str = session.call_id or ""
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._link: DataChannelLink | None = None
        self._channel_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drains: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._pc.on("datachannel", self._on_datachannel)
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> str:
        """Accept ``offer_sdp``; returns the SDP answer (raises on a bad offer)."""
        with loopback_only():
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if self.session.playback is not None and any(
                t.kind == "audio" for t in self._pc.getTransceivers()
            ):
                self._pc.addTrack(SpeakerTrack(self.session.playback))
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
        return str(self._pc.localDescription.sdp)

    def close_soon(self, grace: float = _CLOSE_GRACE_S) -> asyncio.Task[None]:
        """End the call (idempotent); waits up to ``grace`` for the channel to close."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._close(grace), name=f"emulator-close-{self.call_id}"
            )
        return self._closing

    async def _close(self, grace: float) -> None:
        self.session.terminate("call ended")
        if grace > 0 and self._link is not None and not self._channel_closed.done():
            with contextlib.suppress(asyncio.TimeoutError):  # not builtin before 3.11
                await asyncio.wait_for(asyncio.shield(self._channel_closed), grace)
        for task in list(self._drains):
            task.cancel()
        await self._pc.close()
        self._on_closed(self)

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != EVENTS_LABEL:
            logger.debug("emulator: ignoring data channel {!r}", channel.label)
            return
        link = DataChannelLink(channel)
        self._link = link

        def on_close() -> None:
            if not self._channel_closed.done():
                self._channel_closed.set_result(None)
            self.session.detach(link)
            self.close_soon(grace=0)

        channel.on("message", lambda message: self.session.handle_text(message, link))
        channel.on("close", on_close)
        self.session.attach(link)

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            task = asyncio.get_running_loop().create_task(_drain(track, self.session))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self.close_soon(grace=0)


async def _drain(track: Any, session: CallSession) -> None:
    """Hand the caller's audio frames to the session (a Realtime session counts and
    drops them; aiortc would otherwise queue them forever)."""
    with contextlib.suppress(MediaStreamError):
        while True:
            session.record_audio_frame(await track.recv())
