"""The official ``openai`` client (sync) runs GPT-Live sessions on the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import pytest
from aiortc.mediastreams import AudioStreamTrack
from openai import OpenAI
from openai.types.live import SessionStartedEvent

from rtclient.emulator import Emulator

from .conftest import MakeEmulator, async_test
from .live_schema import assert_all_live
from .liveclient import silence
from .rawclient import RawClient, make_offer

pytestmark = pytest.mark.timeout(60)


def until(connection: Iterable[Any], event_type: str, seen: list[Any]) -> Any:
    for event in connection:
        seen.append(event)
        if event.type == event_type:
            return event
    raise AssertionError(f"connection closed before {event_type}")


def test_a_client_delegation_round_trip_with_a_sideband(emu: Emulator) -> None:
    client = OpenAI(base_url=emu.url, api_key="sk-test", max_retries=0)
    seen: list[Any] = []
    with client.live.connect() as connection:
        connection.session.start(session={"model": "gpt-live-1"}, event_id="start")
        started = until(connection, "session.started", seen)
        assert isinstance(started, SessionStartedEvent) and seen == [started]
        assert started.client_event_id == "start" and started.session.status == "active"
        live = emu.live_session(started.session.id)

        live.simulate_speech("please delegate the lookup")
        connection.session.input_audio.append(audio=silence(800))
        created = until(connection, "session.delegation.created", seen)
        assert created.delegation.target == "client" and created.offset_ms == 800

        with client.live.sideband.connect(
            session_id=started.session.id, graceful_close=True
        ) as sideband:
            assert emu.wait_for(lambda: live.counters.get("sidebands") == 1)
            connection.session.commentary.append(
                content="Found it: aisle 4.", delegation_id=created.delegation.id, event_id="answer"
            )
            connection.session.input_audio.append(audio=silence(20))
            appended = until(connection, "session.commentary.appended", seen)
            seen_by_sideband: list[Any] = []
            also = until(sideband, "session.commentary.appended", seen_by_sideband)
            assert appended.client_event_id == also.client_event_id == "answer"
            assert appended.start_ms == 800
        connection.session.close(event_id="bye")
        closed = until(connection, "session.closed", seen)
        assert closed.reason == "close_requested" and closed.client_event_id == "bye"

    appends = live.appends(created.delegation.id)
    assert [(a["content"], a["status"]) for a in appends] == [("Found it: aisle 4.", "landed")]
    assert emu.wait_for(lambda: live.closed, 5)
    assert_all_live(live.server_events)


def test_responses_delegation_and_the_rejected_second_create(emu: Emulator) -> None:
    client = OpenAI(base_url=emu.url, api_key="sk-test", max_retries=0)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    seen: list[Any] = []
    with client.live.connect() as connection:
        connection.session.start(
            session={
                "model": "gpt-live-1",
                "delegation": {
                    "type": "responses",
                    "responses": {"model": "gpt-5.5", "tools": tools},
                },
            }
        )
        started = until(connection, "session.started", seen)
        live = emu.live_session(started.session.id)
        live.simulate_speech('lookup({"sku": 42})', with_audio=True)
        call = None
        for event in connection:
            seen.append(event)
            if (
                event.type == "response.event"
                and event.event["type"] == "response.output_item.done"
            ):
                call = event.event["item"]
            if event.type == "response.event" and event.event["type"] == "response.completed":
                break
        assert call is not None and call["status"] == "completed"
        assert json.loads(call["arguments"]) == {"sku": 42}

        connection.response.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": "in stock"}
        )
        connection.response.create(event_id="continue")
        connection.response.create(event_id="again")
        error = until(connection, "error", seen)
        assert error.error.code == "conversation_already_has_active_response"
        assert error.error.client_event_id == "again"
        text = None
        for event in connection:
            seen.append(event)
            if (
                event.type == "response.event"
                and event.event["type"] == "response.output_text.done"
            ):
                text = event.event["text"]
            if event.type == "response.event" and event.event["type"] == "response.completed":
                assert event.client_event_id == "continue"
                break
        assert text == "Tool results: lookup -> in stock."
    counters = live.counters
    assert (counters["creates"], counters["rejections"], counters["responses"]) == (2, 1, 2)
    assert_all_live(live.server_events)


@async_test
async def test_the_official_client_creates_a_webrtc_session(emu: Emulator) -> None:
    client = OpenAI(base_url=emu.url, api_key="sk-test", max_retries=0)
    pc, channel, offer = await make_offer(track=AudioStreamTrack())
    created = await asyncio.to_thread(
        client.live.create,
        session={"model": "gpt-live-1"},
        transport={"type": "webrtc", "sdp": offer},
    )
    assert created.session.id.startswith("live_") and created.transport.type == "webrtc"
    call = await RawClient.answered(
        pc, channel, created.session.id, created.transport.sdp, timeout=10
    )
    try:
        started = await call.until("session.started")
        assert started["session"]["id"] == created.session.id
    finally:
        await call.close()
    assert_all_live(call.received)


def test_a_wrong_key_is_refused_before_the_upgrade(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(api_key="sk-right")
    client = OpenAI(base_url=emu.url, api_key="sk-wrong-key-123", max_retries=0)
    with pytest.raises(Exception) as refused:
        client.live.connect().enter()
    assert "401" in str(refused.value)
    assert emu.live_sessions == []
