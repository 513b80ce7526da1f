"""A server-side WebSocket as a session channel: ordered sends, flushed on close.

Every session kind (Realtime, Live) sends its events through one of these: sends are
queued and written by one task in order, and ``close()`` lets what was queued go out
before the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from loguru import logger


class WebSocketLink:
    """A WebSocket as a session :class:`~.session.Channel`: ordered, flushed on close."""

    kind = "websocket"

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(
            self._write(), name="emulator-ws-writer"
        )

    def send_text(self, text: str) -> None:
        self._queue.put_nowait(text)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while (text := await self._queue.get()) is not None:
                if self._ws.closed:
                    continue
                await self._ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("emulator: websocket send failed: {}", exc)
        finally:
            await self._ws.close()
