"""Fault injection: each knob, per session and as the emulator's default."""

from __future__ import annotations

import json

import aiohttp
import pytest

from rtclient.emulator import Emulator, Faults

from .conftest import MakeEmulator, async_test, connect, user_text
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(30)

TEXT = {"output_modalities": ["text"]}


@async_test
async def test_delayed_response_created_still_holds_the_conversation(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(faults=Faults(delay_response_created=0.3))
    client = await RawClient.connect(emu.url)
    try:
        await client.send({"type": "response.create", "event_id": "first", "response": TEXT})
        await client.send({"type": "response.create", "event_id": "second", "response": TEXT})
        await client.until("response.done")
        kinds = client.types()
        assert kinds.index("error") < kinds.index("response.created")
        assert kinds.count("response.created") == 1
    finally:
        await client.close()


@async_test
async def test_dropped_response_created_then_done_anyway(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults=Faults(drop_response_created=True))
    client = await RawClient.connect(emu.url)
    try:
        await client.send({"type": "response.create", "event_id": "x", "response": TEXT})
        done = await client.until("response.done")
        assert done["response"]["status"] == "completed"
        assert "response.created" not in client.types()
        assert "response.output_item.added" in client.types()
    finally:
        await client.close()


@async_test
async def test_delayed_response_done_keeps_the_response_active(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults=Faults(delay_response_done=0.5))
    client = await connect(emu, "websocket")
    try:
        await client.send({"type": "response.create", "event_id": "x", "response": TEXT})
        await client.until("response.output_item.done")
        await client.send({"type": "response.create", "event_id": "early", "response": TEXT})
        error = await client.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        await client.until("response.done")
    finally:
        await client.close()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
@async_test
async def test_junk_before_each_response(make_emulator: MakeEmulator, transport: str) -> None:
    faults = Faults(malformed_json=True, unknown_event=True, oversized_event_bytes=150_000)
    emu = make_emulator(faults=faults)
    client = await connect(emu, transport)
    try:
        await client.until("session.created")
        await client.send({"type": "response.create", "event_id": "x", "response": TEXT})
        await client.until("response.done")
        junk = client.received[1:4]
        assert junk[0]["type"] is None  # not JSON
        with pytest.raises(ValueError):
            json.loads(junk[0]["raw"])
        assert junk[1]["type"] == "emulator.unknown_event"
        assert junk[2]["type"] == "rate_limits.updated"
        assert len(json.dumps(junk[2])) >= 150_000
        assert client.received[4]["type"] == "response.created"
    finally:
        await client.close()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
@async_test
async def test_close_after_n_events(make_emulator: MakeEmulator, transport: str) -> None:
    emu = make_emulator(faults=Faults(close_after_events=4))
    client = await connect(emu, transport)
    try:
        await client.send(user_text("hello"))  # session.created, item.added, item.done
        await client.send({"type": "response.create", "event_id": "x"})  # response.created
        await client.wait_closed()
        assert client.types() == [
            "session.created",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
        ]
        assert await emu.wait_for_async(lambda: emu.stats()["active_sessions"] == 0)
    finally:
        await client.close()


@async_test
async def test_fail_a_chosen_client_event_type(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults=Faults(fail_event_type="conversation.item.create"))
    client = await connect(emu, "websocket")
    try:
        await client.send({**user_text("hello"), "event_id": "doomed"})
        error = (await client.until("error"))["error"]
        assert error["event_id"] == "doomed"
        assert (error["type"], error["code"]) == ("server_error", "emulator_injected_failure")
        await client.send({"type": "response.create", "event_id": "fine", "response": TEXT})
        done = (await client.until("response.done"))["response"]
        assert done["output"][0]["content"][0]["text"] == "Hello! How can I help?"
        assert "conversation.item.added" not in client.types()[:3]
    finally:
        await client.close()


@async_test
async def test_faults_change_on_a_live_session_in_process_and_over_http(emu: Emulator) -> None:
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        session = emu.sessions[0]
        session.set_faults(drop_response_created=True)
        await client.send({"type": "response.create", "event_id": "a", "response": TEXT})
        await client.until("response.done")
        assert "response.created" not in client.types()

        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{emu.control_url}/calls/{session.id}/faults",
                json={"drop_response_created": False, "unknown_event": True},
            ) as response:
                assert response.status == 200
            async with http.post(
                f"{emu.control_url}/calls/{session.id}/faults", json={"no_such_knob": 1}
            ) as response:
                assert response.status == 400
            async with http.post(
                f"{emu.control_url}/faults", json={"delay_cancel": 0.5}
            ) as response:
                assert (await response.json())["faults"]["delay_cancel"] == 0.5
        assert session.faults.unknown_event and not session.faults.drop_response_created
        assert emu.faults.delay_cancel == 0.5 and session.faults.delay_cancel == 0.0
        await client.send({"type": "response.create", "event_id": "b", "response": TEXT})
        await client.until("response.done")
        assert "emulator.unknown_event" in client.types()
        assert client.types().count("response.created") == 1
    finally:
        await client.close()
