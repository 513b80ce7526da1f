"""GPT-Live's primary WebSocket on the emulator: startup, strict config, commands."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator

from .conftest import MakeEmulator, async_test
from .live_schema import assert_all_live
from .liveclient import LiveWs

pytestmark = pytest.mark.timeout(60)

RESPONSES = {
    "type": "responses",
    "responses": {
        "model": "gpt-5.5",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    },
}


@async_test
async def test_nothing_is_sent_before_session_start_and_it_starts_once(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.send(
            {"type": "session.thinking.append", "event_id": "early", "content": "hi",
             "delegation_id": None}
        )  # fmt: skip
        early = await client.next()
        assert early["type"] == "error"
        assert early["error"]["code"] == "session_not_started"
        assert early["client_event_id"] == early["error"]["client_event_id"] == "early"
        assert emu.live_sessions[0].started is False

        started = await client.start(event_id="go", instructions="Be brief.")
        assert client.received.index(started) == 1  # the error, then this: nothing else
        session = started["session"]
        assert started["client_event_id"] == "go"
        assert session["id"].startswith("live_") and session["status"] == "active"
        assert session["model"] == "gpt-live-1" and session["instructions"] == "Be brief."
        assert session["audio"] == {
            "output": {"voice": "marin"},
            "format": {"type": "audio/pcm", "rate": 24000},
        }
        assert session["delegation"] == {"type": "client", "acknowledgement_delay_ms": 0}
        assert emu.live_session(session["id"]).started

        await client.send(
            {"type": "session.start", "event_id": "again", "session": {"model": "gpt-live-1"}}
        )
        again = await client.until("error")
        assert again["error"]["code"] == "session_already_started"
        assert again["error"]["client_event_id"] == "again"
        assert [e["type"] for e in client.received].count("session.started") == 1
    finally:
        await client.close()
    assert_all_live(client.received)


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"model": "gpt-live-1", "voice": "marin"}, "unknown_parameter", "session.voice"),
        ({"model": "gpt-live-1", "audio": {"output": {"voice": "marin", "speed": 1.2}}},
         "unknown_parameter", "session.audio.output.speed"),
        ({"model": "gpt-live-1", "delegation": {"type": "client", "tools": []}},
         "unknown_parameter", "session.delegation.tools"),
        ({"model": "gpt-live-1", "delegation": {**RESPONSES, "responses": {
            **RESPONSES["responses"], "temperature": 0.2}}},
         "unknown_parameter", "session.delegation.responses.temperature"),
        ({"model": "gpt-live-1", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "hi", "lang": "en"}]}]},
         "unknown_parameter", "session.input[0].content[0].lang"),
        ({"model": "gpt-live-1", "turn_detection": None}, "unknown_parameter",
         "session.turn_detection"),
        ({"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 44100}}},
         "invalid_type", "session.audio.format.rate"),
        ({"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 16000}}},
         "invalid_value", "session.audio.format.rate"),
        ({"model": "gpt-live-1", "store": "yes"}, "invalid_type", "session.store"),
        ({"model": "gpt-live-1", "input": [{"role": "robot", "content": []}]},
         "invalid_value", "session.input[0].role"),
        ({"instructions": "no model"}, "missing_required_parameter", "session.model"),
        ({"model": "gpt-realtime"}, "model_not_found", "session.model"),
        ({"model": "gpt-live-1", "instructions": "x" * 65537}, "string_above_max_length",
         "session.instructions"),
    ],
)  # fmt: skip
@async_test
async def test_strict_config_errors_echo_the_event_id(
    emu: Emulator, session: dict[str, Any], code: str, param: str
) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.send({"type": "session.start", "event_id": "cfg_1", "session": session})
        error = await client.next()
        assert error["type"] == "error", error
        assert (error["error"]["code"], error["error"]["param"]) == (code, param)
        assert error["error"]["client_event_id"] == error["client_event_id"] == "cfg_1"
        assert error["error"]["type"] == "invalid_request_error"
        # refused, not started: a corrected start still works on the same socket
        started = await client.start(event_id="cfg_2")
        assert started["client_event_id"] == "cfg_2"
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_bad_commands_are_errors_with_their_event_id(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        bad = [
            ({"type": "session.commentary.append", "event_id": "b1", "content": "x"},
             "missing_required_parameter", "delegation_id"),
            ({"type": "session.thinking.append", "event_id": "b2", "content": "x",
              "delegation_id": None, "priority": 1}, "unknown_parameter", "priority"),
            ({"type": "conversation.item.create", "event_id": "b3", "item": {}},
             "invalid_value", "type"),
            ({"type": "response.cancel", "event_id": "b4"}, "invalid_value", "type"),
            ({"type": "session.input_audio.append", "event_id": "b5", "audio": "not base64!"},
             "invalid_value", "audio"),
            ({"type": "session.update", "event_id": "b6",
              "session": {"instructions": "new"}}, "unknown_parameter", "session.instructions"),
            ({"type": "response.create", "event_id": "b7"}, "invalid_request_error", None),
            ({"type": "response.item.create", "event_id": "b8", "item": {
                "type": "function_call_output", "call_id": "c", "output": "o"}},
             "invalid_request_error", None),
            ({"type": "decision.create", "event_id": "b9"}, "emulator_unsupported", "type"),
        ]  # fmt: skip
        for event, code, param in bad:
            await client.send(event)
            error = await client.until("error")
            assert (error["error"]["code"], error["error"]["param"]) == (code, param), error
            assert error["client_event_id"] == event["event_id"]
        creates = [e for e in client.received if e.get("client_event_id") in ("b7", "b8")]
        assert creates[0]["error"]["message"] == "response.create requires Responses delegation."
        assert "response.item.create requires Responses delegation." in str(creates[1])
        await client.send({"type": "session.input_audio.mute", "event_id": "m1"})
        assert (await client.until("session.input_audio.muted"))["client_event_id"] == "m1"
        await client.send({"type": "session.input_audio.unmute"})
        unmuted = await client.until("session.input_audio.unmuted")
        assert "client_event_id" not in unmuted
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_session_update_changes_only_the_backend_settings(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation=RESPONSES)
        await client.send(
            {"type": "session.update", "event_id": "u1", "session": {"delegation": {
                "type": "responses", "acknowledgement_delay_ms": 250,
                "responses": {"instructions": "Use tools."}}}}
        )  # fmt: skip
        updated = await client.until("session.updated")
        assert updated["client_event_id"] == "u1"
        delegation = updated["session"]["delegation"]
        assert delegation["acknowledgement_delay_ms"] == 250
        assert delegation["responses"]["instructions"] == "Use tools."
        assert delegation["responses"]["model"] == "gpt-5.5"  # omitted: kept
        assert delegation["responses"]["tools"][0]["name"] == "get_weather"

        await client.send(
            {"type": "session.update", "event_id": "u2",
             "session": {"delegation": {"type": "client"}}}
        )  # fmt: skip
        error = await client.until("error")
        assert (error["error"]["code"], error["client_event_id"]) == ("invalid_value", "u2")
        assert error["error"]["param"] == "session.delegation.type"
        assert emu.live_sessions[0].config["delegation"]["type"] == "responses"  # type: ignore[index]
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_the_handshake_refuses_query_parameters_and_other_keys(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(api_key="sk-right")
    secret = emu.create_client_secret()["value"]
    for api_key, query, status in (
        ("sk-right", {"model": "gpt-live-1"}, 400),
        ("sk-wrong-key-123", {}, 401),
        (secret, {}, 401),  # GPT-Live takes no ephemeral keys
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await LiveWs.connect(emu.url, api_key=api_key, **query)
        assert refused.value.status == status
    assert emu.live_sessions == []
    client = await LiveWs.connect(emu.url, api_key="sk-right")
    await client.start()
    await client.close()
    assert emu.wait_for(lambda: emu.live_sessions[0].closed, 5)
    assert emu.live_sessions[0].close_reason == "connection_lost"
