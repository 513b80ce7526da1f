"""The one-active-response rule over real WebRTC (raw aiortc client, loopback only)."""

from __future__ import annotations

import json

import pytest

from rtclient.emulator import Emulator, Faults, Pace

from .conftest import MakeEmulator, async_test, tool, user_text
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(30)

SLOW = Pace(delay=0.02, deltas=25)  # ~0.5 s per message: long enough to race against


def _active_error_message(response_id: str) -> str:
    return (
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one."
    )


async def _flush(client: RawClient, marker: str) -> None:
    """A round trip: every event sent before the marker's error has arrived."""
    await client.send({"type": "conversation.item.retrieve", "item_id": marker, "event_id": marker})
    await client.until(lambda e: e.get("type") == "error" and e["error"]["event_id"] == marker)


@async_test
async def test_two_creates_back_to_back_get_one_response_and_one_rejection(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        for candidate in client.pc.localDescription.sdp.splitlines():
            if candidate.startswith("a=candidate"):
                assert " 127.0.0.1 " in candidate
        await client.send(user_text("hello"))
        await client.send({"type": "response.create", "event_id": "evt_first"})
        await client.send({"type": "response.create", "event_id": "evt_second"})
        await client.until("response.done")
        await _flush(client, "marker")

        created = [e for e in client.received if e["type"] == "response.created"]
        done = [e for e in client.received if e["type"] == "response.done"]
        errors = [
            e
            for e in client.received
            if e["type"] == "error" and e["error"]["event_id"] != "marker"
        ]
        assert len(created) == 1 and len(done) == 1
        assert done[0]["response"]["status"] == "completed"
        assert len(errors) == 1
        error = errors[0]["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": _active_error_message(created[0]["response"]["id"]),
            "param": None,
            "event_id": "evt_second",
        }
        stats = emu.stats()
        assert (stats["creates"], stats["rejections"], stats["responses"]) == (2, 1, 1)
    finally:
        await client.close()


@async_test
async def test_the_answer_offers_loopback_candidates_only(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    try:
        answer = client.pc.remoteDescription.sdp
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate")]
        assert candidates
        assert all(line.split()[4] == "127.0.0.1" for line in candidates), candidates
    finally:
        await client.close()


@async_test
async def test_out_of_band_responses_run_beside_the_active_one(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(pace=SLOW)
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send(user_text("tell me a story"))
        await client.send(
            {
                "type": "response.create",
                "event_id": "main",
                "response": {"output_modalities": ["text"]},
            }
        )
        first = await client.until("response.created")
        oob = {
            "conversation": "none",
            "metadata": {"purpose": "classifier"},
            "output_modalities": ["text"],
        }
        await client.send({"type": "response.create", "event_id": "side", "response": oob})
        side = await client.until(
            lambda e: (
                e["type"] == "response.created" and e["response"]["id"] != first["response"]["id"]
            )
        )
        assert side["response"]["conversation_id"] is None
        assert side["response"]["metadata"] == {"purpose": "classifier"}
        assert first["response"]["conversation_id"].startswith("conv_")
        dones = await client.gather("response.done", 2, timeout=10)
        by_id = {d["response"]["id"]: d["response"] for d in dones}
        assert by_id[side["response"]["id"]]["metadata"] == {"purpose": "classifier"}
        assert by_id[side["response"]["id"]]["conversation_id"] is None
        assert all(r["status"] == "completed" for r in by_id.values())
        assert not [e for e in client.received if e["type"] == "error"]
        oob_items = {item["id"] for item in by_id[side["response"]["id"]]["output"]}
        added = {e["item"]["id"] for e in client.received if e["type"] == "conversation.item.added"}
        assert oob_items and not oob_items & added  # out-of-band output joins no conversation
    finally:
        await client.close()


@async_test
async def test_create_right_after_cancel_is_rejected_until_done(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(pace=SLOW, faults=Faults(delay_cancel=0.2))
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send(user_text("hello"))
        await client.send({"type": "response.create", "event_id": "one"})
        created = await client.until("response.created")
        await client.send({"type": "response.cancel", "event_id": "stop"})
        await client.send({"type": "response.create", "event_id": "too_soon"})
        error = await client.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "too_soon"
        assert error["error"]["message"] == _active_error_message(created["response"]["id"])
        done = await client.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {
            "type": "cancelled",
            "reason": "client_cancelled",
        }
        await client.send({"type": "response.create", "event_id": "after_done"})
        again = await client.until("response.created")
        assert again["response"]["id"] != created["response"]["id"]
    finally:
        await client.close()


@async_test
async def test_sixty_four_parallel_calls_in_one_response(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        session = {"type": "realtime", "output_modalities": ["text"], "tools": [tool("lookup")]}
        await client.send({"type": "session.update", "session": session})
        await client.send(user_text("lookup*64"))
        await client.send({"type": "response.create", "event_id": "calls"})
        done = (await client.until("response.done", timeout=15))["response"]
        calls = done["output"]
        assert len(calls) == 64
        assert all(c["type"] == "function_call" and c["name"] == "lookup" for c in calls)
        assert len({c["call_id"] for c in calls}) == 64
        assert sorted(json.loads(c["arguments"])["i"] for c in calls) == list(range(64))
        streamed = [
            e for e in client.received if e["type"] == "response.function_call_arguments.done"
        ]
        assert [e["call_id"] for e in streamed] == [c["call_id"] for c in calls]

        for call in calls:
            output = f"out{json.loads(call['arguments'])['i']}"
            item = {"type": "function_call_output", "call_id": call["call_id"], "output": output}
            await client.send({"type": "conversation.item.create", "item": item})
        await client.send({"type": "response.create", "event_id": "answer"})
        answer = (await client.until("response.done", timeout=15))["response"]
        text = answer["output"][0]["content"][0]["text"]
        assert all(f"lookup -> out{i}" in text for i in range(64))
        assert not [e for e in client.received if e["type"] == "error"]
    finally:
        await client.close()
