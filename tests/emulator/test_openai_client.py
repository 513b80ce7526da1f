"""The official ``openai`` client talks to the emulator's WebSocket endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI
from openai.resources.realtime.realtime import RealtimeConnection

from rtclient.emulator import Emulator

from .conftest import MakeEmulator
from .schema import assert_server_event

pytestmark = pytest.mark.timeout(30)


def _until(connection: RealtimeConnection, event_type: str, seen: list[Any]) -> Any:
    for event in connection:
        seen.append(event)
        if event.type == event_type:
            return event
    raise AssertionError(f"connection closed before {event_type}")


def test_a_conversation_with_a_function_call_and_the_rejection(emu: Emulator) -> None:
    client = OpenAI(base_url=emu.url, api_key="sk-test", max_retries=0)
    seen: list[Any] = []
    with client.realtime.connect(model="gpt-realtime") as connection:
        created = _until(connection, "session.created", seen)
        assert created.session.model == "gpt-realtime"
        connection.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
            }
        )
        _until(connection, "session.updated", seen)
        connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": 'get_weather({"city": "Oslo"})'}],
            }
        )
        connection.response.create(event_id="evt_calls", response={"metadata": {"turn": "1"}})
        connection.response.create(event_id="evt_again")
        done = _until(connection, "response.done", seen)
        errors = [e for e in seen if e.type == "error"]
        assert len(errors) == 1
        assert errors[0].error.code == "conversation_already_has_active_response"
        assert errors[0].error.event_id == "evt_again"
        assert done.response.id in errors[0].error.message
        assert done.response.metadata == {"turn": "1"}
        (call,) = done.response.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Oslo"}

        connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": "12 C, rain"}
        )
        connection.response.create(event_id="evt_answer")
        text = _until(connection, "response.output_text.done", seen)
        assert text.text == "Tool results: get_weather -> 12 C, rain."
        final = _until(connection, "response.done", seen)
        assert final.response.status == "completed"

    assert emu.wait_for(lambda: emu.stats()["active_sessions"] == 0, timeout=5)
    stats = emu.stats()
    assert (stats["creates"], stats["rejections"], stats["responses"]) == (3, 1, 2)
    for event in emu.sessions[0].server_events:
        assert_server_event(event)


def test_a_wrong_key_is_refused_before_the_upgrade(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(api_key="sk-right")
    client = OpenAI(base_url=emu.url, api_key="sk-wrong-key-123", max_retries=0)
    with pytest.raises(Exception) as refused:
        client.realtime.connect(model="gpt-realtime").enter()
    assert "401" in str(refused.value)
    assert emu.stats()["sessions"] == 0
