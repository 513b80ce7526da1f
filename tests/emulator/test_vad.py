"""Server VAD: simulated speech, auto-created responses, interruption."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator, Pace

from .conftest import MakeEmulator, async_test, connect, tool
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(30)

LONG = Pace(delay=0.02, deltas=50, audio_ms_per_delta=2000)


def _detection(**flags: bool) -> dict[str, Any]:
    return {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", **flags}}},
    }


@async_test
async def test_speech_interrupts_the_running_response_and_answers(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(pace=LONG)
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        session = emu.session(client.call_id)
        await client.send(
            {"type": "response.create", "event_id": "talk", "response": {"metadata": {"k": "v"}}}
        )
        talking = (await client.until("response.created"))["response"]
        await client.until("response.output_audio_transcript.delta")
        session.pace = Pace(delay=0.002, deltas=2)
        result = await asyncio.to_thread(session.simulate_speech, "stop talking", 640)
        assert result["interrupted"] == talking["id"]
        auto_done = await client.until(
            lambda e: e["type"] == "response.done" and e["response"]["id"] == result["response_id"]
        )
        kinds = [e["type"] for e in client.received]
        start = kinds.index("input_audio_buffer.speech_started")
        assert kinds[start:].index("input_audio_buffer.speech_stopped") > 0
        tail = [k for k in kinds[start:] if not k.startswith("response.output_audio")]
        assert tail[:9] == [
            "input_audio_buffer.speech_started",
            "output_audio_buffer.cleared",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
        ]
        cancelled = next(
            e["response"] for e in client.received
            if e["type"] == "response.done" and e["response"]["id"] == talking["id"]
        )  # fmt: skip
        assert cancelled["status"] == "cancelled"
        assert cancelled["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert cancelled["metadata"] == {"k": "v"}
        assert cancelled["output"][0]["status"] == "incomplete"
        stopped = next(
            e for e in client.received if e["type"] == "input_audio_buffer.speech_stopped"
        )
        assert stopped["audio_end_ms"] == 640
        auto = auto_done["response"]
        assert auto["metadata"] is None and auto["status"] == "completed"
        assert auto["output"][0]["content"][0]["transcript"] == "You said: stop talking"
        user_item = next(
            e["item"] for e in client.received
            if e["type"] == "conversation.item.added" and e["item"].get("role") == "user"
        )  # fmt: skip
        assert user_item["id"] == result["item_id"] == stopped["item_id"]
        assert user_item["content"][0] == {"type": "input_audio", "transcript": "stop talking"}
    finally:
        await client.close()


@async_test
async def test_a_client_create_during_a_vad_response_is_rejected(emu: Emulator) -> None:
    """The first known trigger: VAD auto-responds while the client creates."""
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        session = emu.sessions[0]
        session.pace = LONG
        result = await asyncio.to_thread(session.simulate_speech, "hi")
        await client.send({"type": "response.create", "event_id": "mine"})
        error = (await client.until("error"))["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert result["response_id"] in error["message"] and error["event_id"] == "mine"
    finally:
        await client.close()


@async_test
async def test_without_interrupt_response_the_response_keeps_going(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send(
            {"type": "session.update", "session": _detection(interrupt_response=False)}
        )
        await client.until("session.updated")
        session = emu.sessions[0]
        session.pace = Pace(delay=0.02, deltas=10)
        await client.send({"type": "response.create", "event_id": "talk"})
        await client.until("response.created")
        result = await asyncio.to_thread(session.simulate_speech, "hi")
        assert result["interrupted"] is None and result["response_id"] is None
        done = (await client.until("response.done"))["response"]
        assert done["status"] == "completed"
        assert client.types().count("response.created") == 1
    finally:
        await client.close()


@async_test
async def test_without_create_response_no_response_follows(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send({"type": "session.update", "session": _detection(create_response=False)})
        await client.until("session.updated")
        session = emu.sessions[0]
        result = await asyncio.to_thread(session.simulate_speech, "hello there")
        assert result["response_id"] is None and result["item_id"]
        await client.until("conversation.item.done")
        await client.send(
            {
                "type": "response.create",
                "event_id": "manual",
                "response": {"output_modalities": ["text"]},
            }
        )
        done = (await client.until("response.done"))["response"]
        assert done["output"][0]["content"][0]["text"] == "You said: hello there"
        assert client.types().count("response.created") == 1
    finally:
        await client.close()


@async_test
async def test_vad_off_means_no_vad_events_and_manual_commit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(turn_detection=None)
    client = await connect(emu, "websocket")
    try:
        created = await client.until("session.created")
        assert created["session"]["audio"]["input"]["turn_detection"] is None
        session = emu.sessions[0]
        await client.send({"type": "input_audio_buffer.commit", "event_id": "empty"})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "empty")
        result = await asyncio.to_thread(session.simulate_speech, "ignored", 500)
        assert result == {"item_id": None, "response_id": None, "interrupted": None}
        await client.send({"type": "input_audio_buffer.commit", "event_id": "commit"})
        committed = await client.until("input_audio_buffer.committed")
        item = (await client.until("conversation.item.done"))["item"]
        assert item["id"] == committed["item_id"] and item["role"] == "user"
        assert not [t for t in client.types() if "speech" in t]
        assert "response.created" not in client.types()
    finally:
        await client.close()


@async_test
async def test_speech_naming_a_tool_calls_it_over_the_http_control_route(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    try:
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "tools": [tool("lights_on")]},
            }
        )
        await client.until("session.updated")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{emu.control_url}/calls/{client.call_id}/speech",
                json={"text": 'please lights_on({"room": "kitchen"})', "duration_ms": 900},
            ) as response:
                assert response.status == 200
                result = await response.json()
            async with http.post(f"{emu.control_url}/calls/rtc_nope/speech", json={}) as response:
                assert response.status == 404
        done = (await client.until("response.done"))["response"]
        assert done["id"] == result["response_id"]
        assert done["output"][0]["name"] == "lights_on"
        assert done["output"][0]["arguments"] == '{"room":"kitchen"}'
    finally:
        await client.close()
