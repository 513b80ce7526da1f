"""The session's rules (the API's), over the WebSocket endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rtclient.emulator import Emulator, ModelRequest, Pace, TextReply, ToolCall

from .conftest import Client, MakeEmulator, async_test, connect, tool, user_text
from .wsclient import WsClient

pytestmark = pytest.mark.timeout(30)

TEXT = {"output_modalities": ["text"]}


async def _error_for(client: Client, event: dict[str, Any]) -> dict[str, Any]:
    await client.send(event)
    error = await client.until("error")
    assert error["error"]["event_id"] == event.get("event_id")
    return dict(error["error"])


@async_test
async def test_session_update(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        error = await _error_for(
            client,
            {"type": "session.update", "event_id": "typeless", "session": {"instructions": "x"}},
        )
        assert error == {
            "type": "invalid_request_error",
            "code": "missing_required_parameter",
            "message": "Missing required parameter: 'session.type'.",
            "param": "session.type",
            "event_id": "typeless",
        }
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "short answers",
                    "audio": {"output": {"voice": "cedar"}, "input": {"turn_detection": None}},
                },
            }
        )
        updated = (await client.until("session.updated"))["session"]
        assert updated["instructions"] == "short answers"
        assert updated["audio"]["output"]["voice"] == "cedar"
        assert updated["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert updated["audio"]["input"]["turn_detection"] is None
        assert emu.sessions[0].config["instructions"] == "short answers"
    finally:
        await client.close()


@async_test
async def test_conversation_items(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send(user_text("first"))
        first = (await client.until("conversation.item.done"))["item"]
        assert first["id"].startswith("item_") and first["status"] == "completed"
        await client.send({**user_text("zeroth"), "previous_item_id": "root"})
        zeroth = await client.until("conversation.item.added")
        assert zeroth["previous_item_id"] is None
        assert [i["content"][0]["text"] for i in emu.sessions[0].items()] == ["zeroth", "first"]

        error = await _error_for(
            client, {**user_text("x"), "event_id": "orphan", "previous_item_id": "item_nope"}
        )
        assert error["code"] == "item_create_invalid_previous_item_id"
        output = {"type": "function_call_output", "call_id": "call_nope", "output": "x"}
        error = await _error_for(
            client, {"type": "conversation.item.create", "event_id": "stray", "item": output}
        )
        assert error["code"] == "invalid_tool_call_id" and "call_nope" in error["message"]
        for kind in ("delete", "retrieve"):
            event = {"type": f"conversation.item.{kind}", "event_id": kind, "item_id": "item_nope"}
            assert (await _error_for(client, event))["code"] == f"item_{kind}_invalid_item_id"
        truncate = {
            "type": "conversation.item.truncate",
            "event_id": "cut",
            "item_id": first["id"],
            "content_index": 0,
            "audio_end_ms": 0,
        }
        assert (await _error_for(client, truncate))["code"] == "item_truncate_invalid_item_id"

        await client.send({"type": "conversation.item.delete", "item_id": first["id"]})
        assert (await client.until("conversation.item.deleted"))["item_id"] == first["id"]
        assert len(emu.sessions[0].items()) == 1
    finally:
        await client.close()


@async_test
async def test_truncating_an_assistant_audio_item(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send({"type": "response.create"})
        item = (await client.until("response.done"))["response"]["output"][0]
        audio_ms = emu.pace.audio_ms_per_delta * emu.pace.deltas
        too_far = {
            "type": "conversation.item.truncate",
            "event_id": "far",
            "item_id": item["id"],
            "content_index": 0,
            "audio_end_ms": audio_ms + 1,
        }
        assert (await _error_for(client, too_far))["param"] == "audio_end_ms"
        await client.send({**too_far, "event_id": "ok", "audio_end_ms": 20})
        truncated = await client.until("conversation.item.truncated")
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (item["id"], 20)
        assert emu.sessions[0].items()[0]["content"][0]["transcript"] == ""
    finally:
        await client.close()


@async_test
async def test_response_cancel(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(pace=Pace(delay=0.02, deltas=30))
    client = await connect(emu, "websocket")
    try:
        error = await _error_for(client, {"type": "response.cancel", "event_id": "idle"})
        assert error["code"] == "response_cancel_not_active"
        assert error["message"] == "Cancellation failed: no active response found"

        side = {"conversation": "none", "metadata": {"n": "1"}, **TEXT}
        await client.send({"type": "response.create", "response": side})
        oob = (await client.until("response.created"))["response"]
        error = await _error_for(client, {"type": "response.cancel", "event_id": "default"})
        assert error["code"] == "response_cancel_not_active"  # nothing in the default conversation
        await client.send({"type": "response.cancel", "response_id": oob["id"]})
        done = (await client.until("response.done"))["response"]
        assert (done["id"], done["status"]) == (oob["id"], "cancelled")
        assert done["metadata"] == {"n": "1"}
        assert emu.stats()["cancelled"] == 1
    finally:
        await client.close()


@async_test
async def test_text_response_event_order_and_metadata(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        await client.send(user_text("hello"))
        meta = {"request": "42"}
        await client.send({"type": "response.create", "response": {**TEXT, "metadata": meta}})
        done = (await client.until("response.done"))["response"]
        deltas = "response.output_text.delta"
        kinds = [k for k in client.types() if k != deltas]
        assert kinds == [
            "session.created",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        assert client.types().count(deltas) == emu.pace.deltas
        created = next(e for e in client.received if e["type"] == "response.created")["response"]
        assert created["status"] == "in_progress" and created["metadata"] == meta
        assert done["metadata"] == meta and done["status"] == "completed"
        text = "".join(e["delta"] for e in client.received if e["type"] == deltas)
        assert text == done["output"][0]["content"][0]["text"] == "You said: hello"
        assert done["usage"]["output_tokens"] == emu.pace.deltas
    finally:
        await client.close()


@async_test
async def test_function_call_event_order(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": [tool("f")]}}
        )
        await client.send(user_text("f f"))
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))["response"]
        start = client.types().index("response.created")
        one_call = [
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
        ]
        assert client.types()[start:] == ["response.created", *one_call, *one_call, "response.done"]
        assert [o["type"] for o in done["output"]] == ["function_call", "function_call"]
        args_done = [
            e for e in client.received if e["type"] == "response.function_call_arguments.done"
        ]
        assert [(e["call_id"], e["name"], e["output_index"]) for e in args_done] == [
            (o["call_id"], "f", i) for i, o in enumerate(done["output"])
        ]
    finally:
        await client.close()


@async_test
async def test_max_output_tokens_makes_the_response_incomplete(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send(user_text("a rather long sentence"))
        await client.send({"type": "response.create", "response": {**TEXT, "max_output_tokens": 1}})
        done = (await client.until("response.done"))["response"]
        assert done["status"] == "incomplete"
        assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
        assert done["output"][0]["status"] == "incomplete"
    finally:
        await client.close()


@async_test
async def test_client_junk_gets_invalid_request_errors(emu: Emulator) -> None:
    client = await WsClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send_text("{not json")
        error = (await client.until("error"))["error"]
        assert (error["type"], error["code"], error["event_id"]) == (
            "invalid_request_error", "invalid_json", None,
        )  # fmt: skip
        error = await _error_for(client, {"type": "response.creat", "event_id": "typo"})
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "invalid_value", "type",
        )  # fmt: skip
        assert emu.sessions[0].client_events[0] == {"type": None, "raw": "{not json"}
        assert emu.sessions[0].counters["errors"] == 2
    finally:
        await client.close()


@async_test
async def test_session_expires(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(max_session_seconds=0.3)
    client = await connect(emu, "websocket")
    try:
        error = (await client.until("error", timeout=5))["error"]
        assert error["code"] == "session_expired"
        assert error["message"] == "Your session hit the maximum duration of 0.3 seconds."
        await client.wait_closed()
        assert emu.sessions[0].closed
    finally:
        await client.close()


@async_test
async def test_a_pluggable_model_sync_and_async(make_emulator: MakeEmulator) -> None:
    seen: list[ModelRequest] = []

    async def model(request: ModelRequest) -> list[Any]:
        seen.append(request)
        await asyncio.sleep(0)
        if request.conversation == "none":
            raise RuntimeError("no side answers")
        return [TextReply("first"), ToolCall("lookup", {"q": 1}), TextReply("last")]

    emu = make_emulator(model=model)
    client = await connect(emu, "websocket")
    try:
        await client.send(user_text("hi"))
        await client.send({"type": "response.create", "response": {**TEXT, "metadata": {"m": "1"}}})
        done = (await client.until("response.done"))["response"]
        assert [o["type"] for o in done["output"]] == ["message", "function_call", "message"]
        assert done["output"][1]["arguments"] == '{"q":1}'
        assert seen[0].items[-1]["content"][0]["text"] == "hi"
        assert seen[0].metadata == {"m": "1"} and seen[0].origin == "client"

        await client.send({"type": "response.create", "response": {**TEXT, "conversation": "none"}})
        failed = (await client.until("response.done"))["response"]
        assert failed["status"] == "failed"
        assert failed["status_details"]["error"]["message"] == "no side answers"

        emu.sessions[0].model = lambda request: [TextReply("swapped")]
        await client.send({"type": "response.create", "response": TEXT})
        done = (await client.until("response.done"))["response"]
        assert done["output"][0]["content"][0]["text"] == "swapped"
    finally:
        await client.close()


@async_test
async def test_response_tools_override_session_tools(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": [tool("a")]}}
        )
        await client.send(user_text("a b"))
        await client.send({"type": "response.create", "response": {**TEXT, "tools": [tool("b")]}})
        done = (await client.until("response.done"))["response"]
        assert [o["name"] for o in done["output"]] == ["b"]
        await client.send(user_text("nothing here"))
        await client.send(
            {"type": "response.create", "response": {**TEXT, "tool_choice": "required"}}
        )
        done = (await client.until("response.done"))["response"]
        assert [o["name"] for o in done["output"]] == ["a"]
    finally:
        await client.close()
