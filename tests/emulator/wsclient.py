"""A bare aiohttp WebSocket Realtime client, same surface as RawClient."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from .inbox import Event, Inbox


class WsClient(Inbox):
    def __init__(
        self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse[bool]
    ) -> None:
        super().__init__()
        self._http = http
        self.ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, *, api_key: str = "sk-test", model: str = "gpt-realtime", **query: str
    ) -> WsClient:
        http = aiohttp.ClientSession()
        params = {"model": model, **query} if model else dict(query)
        try:
            ws = await http.ws_connect(
                url.replace("http://", "ws://") + "/realtime",
                params=params,
                headers={"Authorization": f"Bearer {api_key}"},
            )
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                self._deliver(message.data)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def send(self, event: Event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()
