"""A bare aiortc Realtime client for testing the emulator (no rtclient client code).

It does what the API's WebRTC guide says a client does: create the ``oai-events`` data
channel and an audio transceiver before the offer, POST the offer, apply the answer.
ICE gathering runs inside ``loopback_only()`` so its candidates are 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtclient.transports._loopback import loopback_only

from .inbox import Event, Inbox


async def make_offer(
    audio: bool = True, track: MediaStreamTrack | None = None
) -> tuple[RTCPeerConnection, Any, str]:
    """A peer with ``oai-events`` (+ audio: ``track``'s, or none sent) and its
    loopback-only SDP offer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("oai-events")
    if audio or track is not None:
        pc.addTransceiver(track or "audio", direction="sendrecv")
    with loopback_only():
        await pc.setLocalDescription(await pc.createOffer())
    return pc, channel, pc.localDescription.sdp


async def post_call(
    http: aiohttp.ClientSession,
    url: str,
    offer: str,
    *,
    api_key: str = "sk-test",
    form: str = "sdp",
    session: dict[str, Any] | None = None,
    content_type: str | None = None,
) -> tuple[int, str, dict[str, str]]:
    """POST {url}/realtime/calls; returns (status, body, headers)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data: Any
    if form == "multipart":
        data = aiohttp.FormData()
        data.add_field("sdp", offer, content_type="application/sdp")
        if session is not None:
            data.add_field("session", json.dumps(session), content_type="application/json")
    else:
        data = offer
        headers["Content-Type"] = content_type or "application/sdp"
    async with http.post(f"{url}/realtime/calls", data=data, headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


class RawClient(Inbox):
    """One connected call: send events, await server events in order."""

    def __init__(self, pc: RTCPeerConnection, channel: Any, call_id: str) -> None:
        super().__init__()
        self.pc = pc
        self.channel = channel
        self.call_id = call_id
        self.audio_frames = 0
        self._audio = asyncio.Event()
        self._open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        channel.on("message", self._deliver)
        channel.on("open", lambda: _resolve(self._open))
        channel.on("close", lambda: _resolve(self._closed))
        pc.on("track", self._on_track)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        http: aiohttp.ClientSession | None = None,
        api_key: str = "sk-test",
        form: str = "sdp",
        session: dict[str, Any] | None = None,
        audio: bool = True,
        timeout: float = 10.0,
    ) -> RawClient:
        pc, channel, offer = await make_offer(audio)
        own_http = http is None
        http = http or aiohttp.ClientSession()
        try:
            status, body, headers = await post_call(
                http, url, offer, api_key=api_key, form=form, session=session
            )
        finally:
            if own_http:
                await http.close()
        if status != 201:
            await pc.close()
            raise RuntimeError(f"call refused: {status} {body}")
        call_id = headers["Location"].rsplit("/", 1)[-1]
        return await cls.answered(pc, channel, call_id, body, timeout=timeout)

    @classmethod
    async def answered(
        cls, pc: RTCPeerConnection, channel: Any, call_id: str, answer: str, *, timeout: float
    ) -> RawClient:
        """Finish a call whose offer someone else posted (an app server's create_call)."""
        client = cls(pc, channel, call_id)
        with loopback_only():
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(asyncio.shield(client._open), timeout)
        return client

    def _on_track(self, track: Any) -> None:
        async def count() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    self.audio_frames += 1
                    self._audio.set()

        task = asyncio.get_running_loop().create_task(count())
        self._tasks.add(task)

    async def wait_audio_frames(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` audio frames arrived on the model's track."""

        async def wait() -> None:
            while self.audio_frames < count:
                self._audio.clear()
                await self._audio.wait()

        await asyncio.wait_for(wait(), timeout)

    async def send(self, event: Event) -> None:
        self.channel.send(json.dumps(event))

    def send_raw(self, text: str) -> None:
        self.channel.send(text)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
