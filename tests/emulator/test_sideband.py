"""More than one connection on one session: a WebRTC call and its sideband WebSockets.

What the emulator promises (and rtclient's sideband tests rely on): every server event
reaches every connection in the same order; client events from any connection act on
the one conversation, with one active response across all of them; an ``error``
caused by a client event goes only to the connection that sent it; an unknown or ended
call is ``404 call_id_not_found``; a hang-up ends every connection.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from rtclient.emulator import Emulator, Pace

from .conftest import MakeEmulator, async_test, user_text
from .inbox import Event
from .rawclient import RawClient
from .wsclient import WsClient

pytestmark = pytest.mark.timeout(30)
AUTH = {"Authorization": "Bearer sk-test"}


async def _attach(emu: Emulator, call_id: str) -> WsClient:
    return await WsClient.connect(emu.url, model="", call_id=call_id)


async def _attach_error(emu: Emulator, call_id: str) -> tuple[int, dict[str, Any]]:
    """The handshake's refusal, read as plain HTTP (a WebSocket client drops the body)."""
    async with aiohttp.ClientSession() as http:
        url = f"{emu.url}/realtime"
        async with http.get(url, params={"call_id": call_id}, headers=AUTH) as response:
            return response.status, dict(json.loads(await response.text())["error"])


def _ids(events: list[Event]) -> list[str]:
    return [str(e.get("event_id")) for e in events if e.get("type") != "error"]


@async_test
async def test_unknown_and_ended_calls_are_call_id_not_found(emu: Emulator) -> None:
    status, error = await _attach_error(emu, "rtc_unknown")
    assert (status, error["code"], error["param"]) == (404, "call_id_not_found", "call_id")
    browser = await RawClient.connect(emu.url)
    try:
        await browser.until("session.created")
        async with aiohttp.ClientSession() as http:
            hangup = f"{emu.url}/realtime/calls/{browser.call_id}/hangup"
            async with http.post(hangup, headers=AUTH) as response:
                assert response.status == 200
            assert await emu.wait_for_async(lambda: emu.stats()["active_sessions"] == 0)
            status, error = await _attach_error(emu, browser.call_id)
            assert (status, error["code"]) == (404, "call_id_not_found")
            async with http.post(hangup, headers=AUTH) as response:
                assert response.status == 404
                assert json.loads(await response.text())["error"]["code"] == "call_id_not_found"
    finally:
        await browser.close()


@async_test
async def test_every_connection_sees_the_same_events_in_the_same_order(emu: Emulator) -> None:
    browser = await RawClient.connect(emu.url)
    await browser.until("session.created")
    first = await _attach(emu, browser.call_id)
    second = await _attach(emu, browser.call_id)
    try:
        await first.send(user_text("from the first sideband"))
        await browser.send(user_text("from the browser"))
        await second.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        for client in (browser, first, second):
            await client.until("response.done")
        assert "session.created" not in first.types() + second.types()  # that went to the call
        start = _ids(first.received)[0]
        on_call = _ids(browser.received)
        on_call = on_call[on_call.index(start) :]
        assert on_call == _ids(first.received) == _ids(second.received)
        assert len(emu.sessions) == 1 and len(emu.sessions[0].items()) == 3
    finally:
        for client in (second, first, browser):
            await client.close()


@async_test
async def test_one_active_response_across_connections_errors_go_to_the_sender(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(turn_detection=None, pace=Pace(delay=0.05, deltas=20))
    browser = await RawClient.connect(emu.url)
    await browser.until("session.created")
    sideband = await _attach(emu, browser.call_id)
    try:
        await browser.send({"type": "response.create", "event_id": "browser_1"})
        created = await sideband.until("response.created")
        await sideband.send({"type": "response.create", "event_id": "side_1"})
        rejection = (await sideband.until("error"))["error"]
        assert rejection["event_id"] == "side_1"
        assert rejection["code"] == "conversation_already_has_active_response"
        assert created["response"]["id"] in rejection["message"]
        await browser.send({"type": "response.create", "event_id": "browser_2"})
        assert (await browser.until("error"))["error"]["event_id"] == "browser_2"
        await sideband.send({"type": "no.such.event", "event_id": "side_2"})
        assert (await sideband.until("error"))["error"]["event_id"] == "side_2"
        await browser.until("response.done")
        await sideband.until("response.done")
        assert [e["error"]["event_id"] for e in browser.received if e["type"] == "error"] == [
            "browser_2"
        ]
        assert [e["error"]["event_id"] for e in sideband.received if e["type"] == "error"] == [
            "side_1",
            "side_2",
        ]
        assert emu.stats()["rejections"] == 2 and emu.stats()["responses"] == 1
    finally:
        await sideband.close()
        await browser.close()


@async_test
async def test_an_error_no_client_event_caused_goes_to_every_connection(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(max_session_seconds=1.0)
    browser = await RawClient.connect(emu.url)
    await browser.until("session.created")
    sideband = await _attach(emu, browser.call_id)
    try:
        for client in (browser, sideband):
            error = (await client.until("error", timeout=10))["error"]
            assert error["code"] == "session_expired" and error["event_id"] is None
        await sideband.wait_closed()
    finally:
        await sideband.close()
        await browser.close()


@async_test
async def test_hangup_ends_the_call_and_every_sideband(emu: Emulator) -> None:
    browser = await RawClient.connect(emu.url)
    await browser.until("session.created")
    sidebands = [await _attach(emu, browser.call_id) for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as http:
            hangup = f"{emu.url}/realtime/calls/{browser.call_id}/hangup"
            async with http.post(hangup, headers=AUTH) as response:
                assert response.status == 200
        for sideband in sidebands:
            await sideband.wait_closed()
        await browser.wait_closed()
        assert emu.session(browser.call_id).closed
    finally:
        for sideband in sidebands:
            await sideband.close()
        await browser.close()


@async_test
async def test_a_sideband_leaving_does_not_end_the_call(emu: Emulator) -> None:
    browser = await RawClient.connect(emu.url)
    await browser.until("session.created")
    sideband = await _attach(emu, browser.call_id)
    await sideband.close()
    try:
        await browser.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        assert (await browser.until("response.done"))["response"]["status"] == "completed"
        assert not emu.session(browser.call_id).closed
    finally:
        await browser.close()


@async_test
async def test_truncating_a_speaking_item_keeps_only_what_was_heard(
    make_emulator: MakeEmulator,
) -> None:
    """A WebSocket client barges in while the answer is still being generated."""
    emu = make_emulator(turn_detection=None, pace=Pace(delay=0.05, deltas=20))
    client = await WsClient.connect(emu.url)
    try:
        await client.send(user_text("tell me a long story"))
        await client.send({"type": "response.create"})
        delta = await client.until("response.output_audio.delta")
        await client.send({"type": "response.cancel", "event_id": "cancel"})
        truncate = {
            "type": "conversation.item.truncate",
            "event_id": "truncate",
            "item_id": delta["item_id"],
            "content_index": delta["content_index"],
            "audio_end_ms": 20,
        }
        await client.send(truncate)
        # the cancelled response may finish before or after the truncation is applied
        (truncated,) = await client.gather("conversation.item.truncated", 1)
        assert truncated["audio_end_ms"] == 20
        (done,) = await client.gather("response.done", 1)
        assert done["response"]["status"] == "cancelled"
        assert not [e for e in client.received if e["type"] == "error"]
        item = emu.sessions[-1].items()[-1]
        assert item["id"] == delta["item_id"] and item["content"][0]["transcript"] == ""
    finally:
        await client.close()
