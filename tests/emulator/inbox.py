"""What the emulator's test clients share: server events in arrival order, awaitable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class Inbox:
    """Received events, kept in ``received`` and queued for ``next``/``until``/``gather``.

    Subclasses feed it with :meth:`_deliver` and resolve ``_closed`` when the transport
    ends.
    """

    def __init__(self) -> None:
        self.received: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _deliver(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            event = {"type": None, "raw": message}
        self.received.append(event)
        self._queue.put_nowait(event)

    async def next(self, timeout: float = 5.0) -> Event:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def until(self, predicate: Callable[[Event], bool] | str, timeout: float = 5.0) -> Event:
        """Consume events up to the first matching one (a type name or a predicate)."""
        match = _matcher(predicate)

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
        match = _matcher(predicate)

        async def scan() -> list[Event]:
            while len(found := [e for e in self.received if match(e)]) < count:
                await self._queue.get()
            return found

        return await asyncio.wait_for(scan(), timeout)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]


def _matcher(predicate: Callable[[Event], bool] | str) -> Callable[[Event], bool]:
    if isinstance(predicate, str):
        return lambda e: e.get("type") == predicate
    return predicate
