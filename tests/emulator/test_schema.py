"""Every event the emulator emits validates against the ``openai`` package's schema.

One scripted conversation with tools, VAD, a cancel, a barge-in and errors, over both
transports; then every server event (as recorded by the emulator and as received by
the client) must validate against ``RealtimeServerEvent``, every accepted client event
against ``RealtimeClientEvent``, and every refused one must have had an
``invalid_request_error`` carrying its ``event_id``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rtclient.emulator import Emulator, Pace

from .conftest import Client, async_test, connect, tool, user_text
from .schema import assert_client_event, assert_server_event

pytestmark = pytest.mark.timeout(40)

INVALID_EVENTS: list[dict[str, Any]] = [
    {"type": "session.update", "event_id": "bad_session", "session": {"instructions": "x"}},
    {"type": "no.such.event", "event_id": "bad_type"},
    {"type": "conversation.item.create", "event_id": "bad_item", "item": {"type": "message"}},
    {
        "type": "response.create",
        "event_id": "bad_tokens",
        "response": {"max_output_tokens": "lots"},
    },
    {"type": "conversation.item.truncate", "event_id": "bad_truncate", "item_id": "x"},
]


async def _scripted_conversation(emu: Emulator, client: Client) -> None:
    await client.until("session.created")
    session = emu.wait_for_sessions(1)[0]
    tools = [tool("get_weather"), tool("get_time")]
    await client.send(
        {
            "type": "session.update",
            "event_id": "s1",
            "session": {"type": "realtime", "tools": tools},
        }
    )
    await client.until("session.updated")

    # a function-call response, its outputs, then the spoken answer
    await client.send(
        {**user_text('get_weather({"city": "Paris"}) and get_time'), "event_id": "u1"}
    )
    await client.send(
        {"type": "response.create", "event_id": "r1", "response": {"metadata": {"step": "calls"}}}
    )
    await client.send({"type": "response.create", "event_id": "r1_again"})  # rejected
    calls = (await client.until("response.done"))["response"]["output"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    for call in calls:
        await client.send(
            {
                "type": "conversation.item.create",
                "event_id": f"out_{call['name']}",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": "ok",
                },
            }
        )
    await client.send({"type": "response.create", "event_id": "r2"})
    answer = (await client.until("response.done"))["response"]
    assert answer["status"] == "completed"
    spoken = answer["output"][0]
    await client.send(
        {"type": "conversation.item.retrieve", "event_id": "get", "item_id": spoken["id"]}
    )
    await client.until("conversation.item.retrieved")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "event_id": "trunc",
            "item_id": spoken["id"],
            "content_index": 0,
            "audio_end_ms": 10,
        }
    )
    await client.until("conversation.item.truncated")

    # a cancelled response (client), then barge-in (server VAD) on a long one
    session.pace = Pace(delay=0.02, deltas=40, audio_ms_per_delta=2000)
    await client.send({"type": "response.create", "event_id": "r3"})
    await client.until("response.output_audio_transcript.delta")
    await client.send({"type": "response.cancel", "event_id": "c3"})
    await client.send({"type": "output_audio_buffer.clear", "event_id": "clear3"})
    cancelled = (await client.until("response.done"))["response"]
    assert cancelled["status_details"]["reason"] == "client_cancelled"
    await client.send({"type": "response.create", "event_id": "r4"})
    await client.until("response.output_audio_transcript.delta")
    result = await asyncio.to_thread(session.simulate_speech, "what is the time? get_time")
    assert result["interrupted"] is not None and result["response_id"] is not None
    session.pace = Pace(delay=0.002, deltas=3)
    await client.until(
        lambda e: e["type"] == "response.done" and e["response"]["id"] == result["response_id"]
    )

    # out-of-band, item management, audio buffer, errors
    await client.send(
        {
            "type": "response.create",
            "event_id": "oob",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "input": [{"type": "item_reference", "id": spoken["id"]}],
            },
        }
    )
    await client.until(
        lambda e: e["type"] == "response.done" and e["response"]["conversation_id"] is None
    )
    await client.send(
        {"type": "conversation.item.delete", "event_id": "del", "item_id": spoken["id"]}
    )
    await client.until("conversation.item.deleted")
    await client.send({"type": "input_audio_buffer.append", "event_id": "app", "audio": "AAAA"})
    await client.send({"type": "input_audio_buffer.clear", "event_id": "clr"})
    await client.until("input_audio_buffer.cleared")
    await client.send({"type": "response.cancel", "event_id": "nothing"})
    for event in INVALID_EVENTS:
        await client.send(event)
    await client.send({"type": "conversation.item.retrieve", "event_id": "last", "item_id": "none"})
    await client.until(lambda e: e["type"] == "error" and e["error"]["event_id"] == "last")
    await emu.wait_for_async(lambda: session.active_response_id is None)


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
@async_test
async def test_every_event_validates_against_the_openai_schema(
    emu: Emulator, transport: str
) -> None:
    client = await connect(emu, transport)
    try:
        await _scripted_conversation(emu, client)
    finally:
        await client.close()
    session = emu.sessions[0]
    sent = session.server_events
    assert len(sent) > 80
    for event in sent:
        assert_server_event(event)
    received = [e for e in client.received if e.get("type") is not None]
    assert [e["event_id"] for e in received] == [e["event_id"] for e in sent[: len(received)]]
    kinds = {e["type"] for e in sent}
    expected = {
        "session.created", "session.updated", "conversation.item.added",
        "conversation.item.done", "conversation.item.retrieved", "conversation.item.truncated",
        "conversation.item.deleted", "response.created", "response.output_item.added",
        "response.output_item.done", "response.content_part.added", "response.content_part.done",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
        "response.output_audio.done", "response.output_text.delta", "response.output_text.done",
        "response.done", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "input_audio_buffer.cleared", "error",
    }  # fmt: skip
    if transport == "webrtc":
        expected |= {"output_audio_buffer.started", "output_audio_buffer.cleared"}
        assert "response.output_audio.delta" not in kinds  # audio travels on the track
    else:
        expected |= {"response.output_audio.delta"}
        assert not {k for k in kinds if k.startswith("output_audio_buffer.")}
    assert expected <= kinds, expected - kinds

    refused = {
        e["error"]["event_id"]: e["error"]
        for e in sent
        if e["type"] == "error" and e["error"]["type"] == "invalid_request_error"
    }
    for event in INVALID_EVENTS:
        assert refused[event["event_id"]]["type"] == "invalid_request_error"
        with pytest.raises(ValueError):
            assert_client_event(event)
    rule_errors = {"r1_again", "nothing", "last"}
    assert {refused[i]["code"] for i in rule_errors} == {
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_retrieve_invalid_item_id",
    }
    accepted = [
        e for e in session.client_events if e.get("event_id") not in refused.keys() - rule_errors
    ]
    assert len(accepted) >= 15
    for event in accepted:
        assert_client_event(event, item_references=True)


@async_test
async def test_item_reference_is_accepted_although_the_model_rejects_it(emu: Emulator) -> None:
    """The openai model refuses item_reference inputs; that must not leak into the emulator."""
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        await client.send(user_text("hello"))
        item = (await client.until("conversation.item.done"))["item"]
        create = {
            "type": "response.create",
            "event_id": "ref",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "input": [{"type": "item_reference", "id": item["id"]}],
            },
        }
        with pytest.raises(ValueError):
            assert_client_event(create)
        await client.send(create)
        done = (await client.until("response.done"))["response"]
        assert done["output"][0]["content"][0]["text"] == "You said: hello"
        assert not [e for e in client.received if e["type"] == "error"]
        missing = [{"type": "item_reference", "id": "item_nope"}]
        bad = {
            **create,
            "event_id": "bad_ref",
            "response": {"conversation": "none", "input": missing},
        }
        await client.send(bad)
        error = await client.until("error")
        assert error["error"]["event_id"] == "bad_ref"
        assert json.dumps(error)  # a plain JSON error, nothing else
    finally:
        await client.close()
