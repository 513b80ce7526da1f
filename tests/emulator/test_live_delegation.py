"""Delegation on the emulator's GPT-Live side: the client's, and a Responses backend's."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator
from rtclient.emulator.live import LiveRules

from .conftest import MakeEmulator, async_test
from .inbox import Event
from .live_schema import assert_all_live
from .liveclient import LiveWs

pytestmark = pytest.mark.timeout(60)

RESPONSES = {
    "type": "responses",
    "responses": {
        "model": "gpt-5.5",
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
            {"type": "web_search"},
        ],
    },
}


def append(kind: str, content: str, delegation_id: str | None, event_id: str) -> Event:
    return {
        "type": f"session.{kind}.append",
        "event_id": event_id,
        "content": content,
        "delegation_id": delegation_id,
    }


def inner(event: Event) -> dict[str, Any]:
    return event["event"] if event.get("type") == "response.event" else {}


def is_inner(kind: str) -> Any:
    return lambda e: inner(e).get("type") == kind


async def delegated(client: LiveWs, emu: Emulator, words: str) -> Event:
    """The user says ``words`` (with the audio for them); returns the delegation event."""
    emu.live_sessions[0].simulate_speech(words)
    await client.audio(200 * len(words.split()))
    return await client.until("session.delegation.created")


@async_test
async def test_a_client_delegation_round_trip_is_recorded_exactly(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation={"type": "client", "acknowledgement_delay_ms": 500})
        created = await delegated(client, emu, "please delegate the booking")
        delegation = created["delegation"]
        assert delegation["type"] == "delegation" and delegation["target"] == "client"
        assert "response_id" not in delegation
        assert created["offset_ms"] == 800  # the end of what the user said
        assert "booking" not in json.dumps(created)  # metadata only, no task text
        heard = "".join(
            e["delta"]
            for e in client.received
            if e["type"] == "session.input_transcript.delta" and e["end_ms"] <= created["offset_ms"]
        )
        assert heard == "please delegate the booking"  # the app's view of the task

        dlg = delegation["id"]
        await client.send(append("thinking", "Checking the calendar.", dlg, "p1"))
        await client.send(append("commentary", "Booked for 9 am.", dlg, "r1"))
        await client.audio(40)
        thought = await client.until("session.thinking.appended")
        said = await client.until("session.commentary.appended")
        assert (thought["client_event_id"], said["client_event_id"]) == ("p1", "r1")
        assert thought["start_ms"] == said["start_ms"] == 800
        await client.audio(1000)
        await client.until(lambda e: e.get("delta") == " am.")
        spoken = "".join(
            e["delta"] for e in client.received if e["type"] == "session.output_transcript.delta"
        )
        assert spoken == "Booked for 9 am."  # the acknowledgement was cancelled by the append
        record = emu.live_sessions[0].delegations()["delegations"]
        assert [d["id"] for d in record] == [dlg]
        assert record[0]["task"] == "please delegate the booking"
        assert [(a["kind"], a["content"], a["status"]) for a in record[0]["appends"]] == [
            ("thinking", "Checking the calendar.", "landed"),
            ("commentary", "Booked for 9 am.", "landed"),
        ]
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_the_model_acknowledges_a_delegation_nobody_answers_yet(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await delegated(client, emu, "delegate")
        await client.audio(400)
        await client.until(lambda e: e.get("delta") == " moment.")
        spoken = [e for e in client.received if e["type"] == "session.output_transcript.delta"]
        assert "".join(e["delta"] for e in spoken) == "One moment."
        assert spoken[0]["start_ms"] == 200
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["instructions", "thinking", "commentary"])
@async_test
async def test_an_append_over_the_token_limit_is_refused(emu: Emulator, kind: str) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await client.send(append(kind, "x" * 2000, None, "fits"))  # 500 tokens
        await client.send(append(kind, "x" * 2001, None, "too_long"))
        error = await client.until("error")
        assert error["error"]["code"] == "string_above_max_length"
        assert error["error"]["param"] == "content"
        assert error["client_event_id"] == error["error"]["client_event_id"] == "too_long"
        await client.audio(20)
        landed = await client.until(f"session.{kind}.appended")
        assert landed["client_event_id"] == "fits"
        assert [a["client_event_id"] for a in emu.live_sessions[0].appends()] == ["fits"]
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_unknown_and_finished_delegations_are_refused(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        session = emu.live_sessions[0]
        await client.send(append("commentary", "Hi.", "dlg_never_made", "u1"))
        unknown = await client.until("error")
        assert (unknown["error"]["code"], unknown["client_event_id"]) == (
            "delegation_not_found",
            "u1",
        )
        assert unknown["error"]["param"] == "delegation_id"

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{emu.control_url}/live/{session.id}/delegate") as response:
                forced = await response.json()
            dlg = forced["id"]
            await client.until("session.delegation.created")
            await client.send(append("commentary", "First result.", dlg, "c1"))
            async with http.post(
                f"{emu.control_url}/live/{session.id}/delegations/{dlg}/finish"
            ) as response:
                assert response.status == 200
        await client.send(append("commentary", "Second result.", dlg, "c2"))
        finished = await client.until("error")
        assert (finished["error"]["code"], finished["client_event_id"]) == (
            "delegation_not_active",
            "c2",
        )
        assert [a["client_event_id"] for a in session.appends(dlg)] == ["c1"]

        session.rules = session.rules.replace(unknown_delegation="accept")
        await client.send(append("thinking", "Old result.", "dlg_from_before", "f1"))
        await client.audio(20)
        await client.until(lambda e: e.get("client_event_id") == "f1")
        assert list(session.delegations()["foreign"]) == ["dlg_from_before"]
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_a_delegation_can_finish_with_its_first_commentary(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(live_rules=LiveRules(finish_on_commentary=True))
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        dlg = (await delegated(client, emu, "delegate it"))["delegation"]["id"]
        await client.send(append("thinking", "Working.", dlg, "p1"))
        await client.send(append("commentary", "The answer.", dlg, "a1"))
        await client.send(append("commentary", "The answer, again.", dlg, "a2"))
        twice = await client.until("error")
        assert (twice["error"]["code"], twice["client_event_id"]) == ("delegation_not_active", "a2")
        appends = emu.live_sessions[0].appends(dlg)
        assert [a["client_event_id"] for a in appends] == ["p1", "a1"]
    finally:
        await client.close()


@async_test
async def test_responses_delegation_runs_function_calls_for_the_app(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation=RESPONSES)
        created = await delegated(client, emu, 'get_weather({"city": "Oslo"}) please')
        delegation = created["delegation"]
        assert delegation["target"] == "responses" and delegation["response_id"].startswith("resp_")
        done = await client.until(is_inner("response.completed"))
        assert done["delegation_id"] == delegation["id"]
        assert inner(done)["response"]["id"] == delegation["response_id"]
        calls = [
            inner(e)["item"]
            for e in client.received
            if is_inner("response.output_item.done")(e)
            and inner(e)["item"]["type"] == "function_call"
        ]
        assert [(c["name"], json.loads(c["arguments"]), c["status"]) for c in calls] == [
            ("get_weather", {"city": "Oslo"}, "completed")
        ]
        sequence = [inner(e)["sequence_number"] for e in client.received if inner(e)]
        assert sequence == list(range(len(sequence)))

        # a delegation_id is refused under Responses delegation; outputs need a real call
        await client.send(append("commentary", "x", delegation["id"], "no_id"))
        assert (await client.until("error"))["error"]["code"] == "invalid_request_error"
        await client.send(
            {"type": "response.item.create", "event_id": "bad_call", "item": {
                "type": "function_call_output", "call_id": "call_nope", "output": "?"}}
        )  # fmt: skip
        bad = await client.until("error")
        assert (bad["error"]["param"], bad["client_event_id"]) == ("item.call_id", "bad_call")

        await client.send({"type": "response.create", "event_id": "too_soon"})
        partial = await client.until("error")
        assert (partial["error"]["code"], partial["client_event_id"]) == (
            "tool_outputs_incomplete",
            "too_soon",
        )
        output = {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "4 C"}
        await client.send({"type": "response.item.create", "event_id": "out", "item": output})
        await client.send({"type": "response.item.create", "event_id": "dup", "item": output})
        duplicate = await client.until("error")
        assert (duplicate["error"]["code"], duplicate["client_event_id"]) == (
            "tool_output_already_given",
            "dup",
        )
        await client.send({"type": "response.create", "event_id": "go"})
        await client.send({"type": "response.create", "event_id": "race"})
        raced = await client.until("error")
        assert raced["error"]["code"] == "conversation_already_has_active_response"
        assert raced["client_event_id"] == raced["error"]["client_event_id"] == "race"
        final = await client.until(is_inner("response.completed"))
        assert final["client_event_id"] == "go" and final["delegation_id"] == delegation["id"]
        assert inner(final)["response"]["id"] in raced["error"]["message"]
        text = [
            inner(e)["text"] for e in client.received if is_inner("response.output_text.done")(e)
        ]
        assert text == ["Tool results: get_weather -> 4 C."]
        await client.audio(2000)
        await client.until(lambda e: e.get("delta") == " C.")
        counters = emu.live_sessions[0].counters
        assert (counters["creates"], counters["rejections"], counters["responses"]) == (3, 1, 2)
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_the_app_can_start_backend_work_itself(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation=RESPONSES)
        await client.send(
            {"type": "response.item.create", "item": {"type": "message", "role": "user",
             "content": "Say hello."}}
        )  # fmt: skip
        await client.send({"type": "response.create", "event_id": "mine"})
        done = await client.until(is_inner("response.completed"))
        assert done["delegation_id"] is None and done["client_event_id"] == "mine"
        text = [
            inner(e)["text"] for e in client.received if is_inner("response.output_text.done")(e)
        ]
        assert text == ["You said: Say hello."]
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_session_close_lets_a_running_backend_response_finish(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation=RESPONSES)
        await client.send({"type": "response.create", "event_id": "work"})
        await client.send({"type": "session.close", "event_id": "bye"})
        await client.send(append("thinking", "too late", None, "late"))
        closed = await client.until("session.closed")
        assert closed["client_event_id"] == "bye"
        order = [inner(e).get("type") or e["type"] for e in client.received]
        assert order.index("response.completed") < order.index("session.closed")
        late = [e for e in client.received if e.get("client_event_id") == "late"]
        assert [e["error"]["code"] for e in late] == ["context_injection_incomplete"]
    finally:
        await client.close()
    assert_all_live(client.received)
