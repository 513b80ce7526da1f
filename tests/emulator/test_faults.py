"""Fault injection: each knob, per session and as the emulator's default."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator, Faults, Session

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


VAD = {"type": "server_vad", "create_response": True, "interrupt_response": True}


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
@async_test
async def test_held_turn_response_starts_first_and_rejects_the_create(
    make_emulator: MakeEmulator, transport: str
) -> None:
    """The race no client can prevent, staged: server VAD's response starts while the
    client's create is on the wire - every time, not by luck."""
    emu = make_emulator(turn_detection=VAD, faults=Faults(hold_turn_response=10.0))
    client = await connect(emu, transport)
    try:
        await client.until("session.created")
        session = emu.sessions[0]
        speech = asyncio.ensure_future(asyncio.to_thread(session.simulate_speech, "hmm"))
        await client.until("input_audio_buffer.committed")
        assert session.active_response_id is None  # held: nothing runs yet
        assert not speech.done()
        await client.send({"type": "response.create", "event_id": "mine", "response": TEXT})
        error = (await client.until("error"))["error"]
        result = await speech
        vad_response = result["response_id"]
        assert vad_response is not None
        assert error["event_id"] == "mine"
        assert error["code"] == "conversation_already_has_active_response"
        assert vad_response in error["message"]
        created = (await client.until("response.created"))["response"]
        assert created["id"] == vad_response
        done = await client.until("response.done")
        assert done["response"]["id"] == vad_response
        assert done["response"]["output"][0]["content"][0]["transcript"] == "You said: hmm"
        assert session.counters["rejections"] == 1
        await client.send({"type": "response.create", "event_id": "again", "response": TEXT})
        served = (await client.until("response.created"))["response"]
        assert served["id"] != vad_response
        await client.until("response.done")
    finally:
        await client.close()


@async_test
async def test_held_turn_response_starts_when_the_hold_ends(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(turn_detection=VAD, faults=Faults(hold_turn_response=0.05))
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        session = emu.sessions[0]
        result = await asyncio.to_thread(session.simulate_speech, "anyone?")
        done = (await client.until("response.done"))["response"]
        assert done["id"] == result["response_id"]
        out_of_band = {"type": "response.create", "response": {**TEXT, "conversation": "none"}}
        session.set_faults(hold_turn_response=10.0)
        speech = asyncio.ensure_future(asyncio.to_thread(session.simulate_speech, "again"))
        await client.until("input_audio_buffer.committed")
        await client.send(out_of_band)  # an out-of-band create does not release the hold
        await client.until(lambda e: e["type"] == "response.done")
        assert not speech.done() and session.active_response_id is None
        await client.close()  # the session ends: the held turn is released, nothing starts
        assert (await speech)["response_id"] is None
    finally:
        await client.close()


@async_test
async def test_on_client_event_sees_the_wire_in_order(make_emulator: MakeEmulator) -> None:
    seen: list[tuple[str, Any]] = []

    def hook(session: Session, event: dict[str, Any]) -> None:
        seen.append((session.id, event.get("type")))
        if event.get("event_id") == "boom":
            raise RuntimeError("a broken hook must not break the session")

    emu = make_emulator(on_client_event=hook)
    client = await connect(emu, "websocket")
    try:
        await client.until("session.created")
        await client.send({**user_text("hello"), "event_id": "boom"})
        await client.send({"type": "response.create", "response": {"bogus": 1}})
        await client.send({"type": "response.create", "response": TEXT})
        await client.until("response.done")
        session_id = emu.sessions[0].id
        assert seen == [
            (session_id, "conversation.item.create"),
            (session_id, "response.create"),  # refused ones too
            (session_id, "response.create"),
        ]
        assert client.types().count("conversation.item.added") == 2  # user + answer
    finally:
        await client.close()
