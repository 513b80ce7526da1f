"""Idle timeouts (``turn_detection.idle_timeout_ms``), as the API documents them."""

from __future__ import annotations

from typing import Any

import pytest

from rtclient.emulator import Faults, Pace

from .conftest import MakeEmulator, async_test, connect, user_text
from .schema import assert_server_event

pytestmark = pytest.mark.timeout(30)

IDLE_MS = 120


def _idle_vad(timeout_ms: int = IDLE_MS) -> dict[str, Any]:
    return {"type": "server_vad", "idle_timeout_ms": timeout_ms}


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
@async_test
async def test_silence_after_a_response_is_committed_and_answered(
    make_emulator: MakeEmulator, transport: str
) -> None:
    """After the response (and, over WebRTC, its audio) ends, ``idle_timeout_ms`` of
    silence: ``timeout_triggered``, the silence committed as a turn, a response."""
    emu = make_emulator(turn_detection=_idle_vad(), pace=Pace(delay=0.002, deltas=2))
    client = await connect(emu, transport)
    try:
        await client.until("session.created")
        await client.send(user_text("hello"))
        await client.send({"type": "response.create", "event_id": "ask"})
        first = (await client.until("response.done"))["response"]
        trigger = await client.until("input_audio_buffer.timeout_triggered")
        idle = (await client.until("response.done"))["response"]
        kinds = [e["type"] for e in client.received]
        at = kinds.index("input_audio_buffer.timeout_triggered")
        if transport == "webrtc":  # counted from the end of playback
            stopped = kinds.index("output_audio_buffer.stopped")
            assert client.received[stopped]["response_id"] == first["id"] and stopped < at
        assert kinds[at + 1 : at + 5] == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
        ]
        assert_server_event(trigger)
        assert trigger["audio_end_ms"] - trigger["audio_start_ms"] == IDLE_MS
        assert client.received[at + 1]["item_id"] == trigger["item_id"]
        silence = client.received[at + 2]["item"]
        assert silence["role"] == "user" and silence["content"][0]["type"] == "input_audio"
        assert idle["metadata"] is None and idle["status"] == "completed"
        assert idle["output"][0]["content"][0]["transcript"] == "Are you still there?"
        session = emu.sessions[-1]
        assert session.count("idle_timeouts") >= 1 and session.count("rejections") == 0
        assert emu.stats()["idle_timeouts"] == session.count("idle_timeouts")
    finally:
        await client.close()


@async_test
async def test_the_staged_idle_timeout_rejects_the_crossing_create(
    make_emulator: MakeEmulator,
) -> None:
    """``Faults(idle_timeout_on_create=True)``: the idle response starts just before the
    create is handled; the create is rejected naming it; the next one, after its done,
    is not staged again."""
    emu = make_emulator(
        turn_detection=_idle_vad(60_000),
        faults=Faults(idle_timeout_on_create=True),
        pace=Pace(delay=0.002, deltas=2),
    )
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        await client.send({"type": "response.create", "event_id": "first"})
        await client.until("response.done")  # the count begins
        await client.send({"type": "response.create", "event_id": "crossing"})
        error = (await client.until("error"))["error"]
        idle = (await client.until("response.created"))["response"]
        assert error["code"] == "conversation_already_has_active_response"
        assert error["event_id"] == "crossing" and idle["id"] in error["message"]
        await client.until(
            lambda e: e["type"] == "response.done" and e["response"]["id"] == idle["id"]
        )
        await client.send({"type": "response.create", "event_id": "again"})
        again = (await client.until("response.done"))["response"]
        assert again["status"] == "completed"
        session = emu.sessions[-1]
        assert session.count("idle_timeouts") == 1 and session.count("rejections") == 1
    finally:
        await client.close()
