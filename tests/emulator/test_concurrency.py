"""Many sessions in one emulator process."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator

from .conftest import async_test, user_text
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(60)

SESSIONS = 50


@async_test
async def test_fifty_concurrent_sessions_each_complete_a_response(emu: Emulator) -> None:
    clients: list[RawClient] = []
    gate = asyncio.Semaphore(10)  # connect in waves: 2 cores host both sides here

    async def converse(index: int, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with gate:
            client = await RawClient.connect(emu.url, http=http, audio=False, timeout=20)
        clients.append(client)
        await client.until("session.created", timeout=20)
        await client.send(user_text(f"client {index}"))
        await client.send(
            {
                "type": "response.create",
                "event_id": f"c{index}",
                "response": {"output_modalities": ["text"]},
            }
        )
        done = await client.until("response.done", timeout=20)
        return dict(done["response"])

    try:
        async with aiohttp.ClientSession() as http:
            responses = await asyncio.gather(*(converse(i, http) for i in range(SESSIONS)))
        for index, response in enumerate(responses):
            assert response["status"] == "completed"
            assert response["output"][0]["content"][0]["text"] == f"You said: client {index}"
        stats = emu.stats()
        assert stats["sessions"] == SESSIONS and stats["active_sessions"] == SESSIONS
        assert (stats["responses"], stats["completed"], stats["rejections"]) == (SESSIONS,) * 2 + (
            0,
        )
        assert len({c.call_id for c in clients}) == SESSIONS
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert await emu.wait_for_async(lambda: emu.stats()["active_sessions"] == 0, timeout=20)
