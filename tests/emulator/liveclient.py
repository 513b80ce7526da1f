"""Bare GPT-Live clients for the emulator's tests (aiohttp WebSocket, aiortc WebRTC).

They speak the wire protocol directly - no rtclient code - so a test sees exactly what
the emulator sends: ``LiveWs`` is a primary WebSocket or a sideband, ``connect_webrtc``
creates a WebRTC session the way an app backend does (``POST /v1/live/sessions`` JSON)
and returns the call's data channel as a :class:`RawClient`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack

from .inbox import Event, Inbox
from .rawclient import RawClient, make_offer

PCM24_BYTES_PER_MS = 48


def silence(milliseconds: int) -> str:
    """Base64 PCM16 24 kHz silence (the default Live WebSocket format)."""
    return base64.b64encode(bytes(PCM24_BYTES_PER_MS * milliseconds)).decode()


def ws_url(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


class LiveWs(Inbox):
    def __init__(
        self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse[bool]
    ) -> None:
        super().__init__()
        self._http = http
        self.ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, path: str = "/live/sessions", *, api_key: str = "sk-test", **query: str
    ) -> LiveWs:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                ws_url(url, path), params=query, headers={"Authorization": f"Bearer {api_key}"}
            )
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    @classmethod
    async def sideband(cls, url: str, session_id: str, **query: str) -> LiveWs:
        return await cls.connect(url, f"/live/sessions/{session_id}/attach", **query)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._deliver(message.data)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def send(self, event: Event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def start(self, event_id: str = "start", **session: Any) -> Event:
        """``session.start`` (model gpt-live-1 unless given); returns ``session.started``."""
        await self.send(
            {
                "type": "session.start",
                "event_id": event_id,
                "session": {"model": "gpt-live-1", **session},
            }
        )
        return await self.until("session.started")

    async def audio(self, milliseconds: int) -> None:
        """Send ``milliseconds`` of silence as input audio."""
        await self.send({"type": "session.input_audio.append", "audio": silence(milliseconds)})

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()


async def create_webrtc(
    url: str,
    session: dict[str, Any],
    *,
    track: MediaStreamTrack | None = None,
    api_key: str = "sk-test",
) -> tuple[int, Any, Any, Any]:
    """POST the offer as an app backend does: (status, JSON body, pc, channel)."""
    pc, channel, offer = await make_offer(track=track)
    body = {"session": session, "transport": {"type": "webrtc", "sdp": offer}}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/live/sessions", json=body, headers={"Authorization": f"Bearer {api_key}"}
        ) as response:
            return response.status, await response.json(), pc, channel


async def connect_webrtc(
    url: str, session: dict[str, Any], *, track: MediaStreamTrack | None = None
) -> RawClient:
    """A WebRTC Live session whose data channel is open; ``call_id`` is the session id."""
    status, body, pc, channel = await create_webrtc(url, session, track=track)
    if status != 200:
        await pc.close()
        raise RuntimeError(f"refused: {status} {body}")
    return await RawClient.answered(
        pc, channel, body["session"]["id"], body["transport"]["sdp"], timeout=10.0
    )
