"""A bare aiohttp WebSocket Realtime client, same surface as RawClient."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

Event = dict[str, Any]


class WsClient:
    def __init__(
        self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse[bool]
    ) -> None:
        self._http = http
        self.ws = ws
        self.received: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
                try:
                    event = json.loads(message.data)
                except ValueError:
                    event = {"type": None, "raw": message.data}
                self.received.append(event)
                self._queue.put_nowait(event)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def send(self, event: Event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def next(self, timeout: float = 5.0) -> Event:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def until(self, predicate: Callable[[Event], bool] | str, timeout: float = 5.0) -> Event:
        match = (lambda e: e.get("type") == predicate) if isinstance(predicate, str) else predicate

        async def scan() -> Event:
            while True:
                event = await self._queue.get()
                if match(event):
                    return event

        return await asyncio.wait_for(scan(), timeout)

    async def gather(
        self, predicate: Callable[[Event], bool] | str, count: int, timeout: float = 5.0
    ) -> list[Event]:
        """Wait until ``count`` received events match (in any order with the rest)."""
        match = (lambda e: e.get("type") == predicate) if isinstance(predicate, str) else predicate

        async def scan() -> list[Event]:
            while len(found := [e for e in self.received if match(e)]) < count:
                await self._queue.get()
            return found

        return await asyncio.wait_for(scan(), timeout)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()
