"""Faults on GPT-Live sessions: closes in the middle of a delegation, lost or failed
commands, cut connections, expiry, and the backend's injections."""

from __future__ import annotations

import aiohttp
import pytest

from rtclient.emulator import Emulator, Faults
from rtclient.emulator.live import LiveRules

from .conftest import MakeEmulator, async_test
from .live_schema import assert_all_live
from .liveclient import LiveWs

pytestmark = pytest.mark.timeout(60)


@async_test
async def test_the_server_closes_during_a_delegation(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(
        faults=Faults(close_after_delegation="expired"),
        live_rules=LiveRules(append_ms_per_token=1000),  # appends take a second to place
    )
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await client.send(
            {"type": "session.thinking.append", "event_id": "ctx", "content": "ok",
             "delegation_id": None}
        )  # fmt: skip
        emu.live_sessions[0].simulate_speech("delegate please")
        await client.audio(400)
        created = await client.until("session.delegation.created")
        incomplete = await client.until("error")
        assert incomplete["error"]["code"] == "context_injection_incomplete"
        assert incomplete["client_event_id"] == "ctx"
        closed = await client.until("session.closed")
        assert closed["reason"] == "expired" and "client_event_id" not in closed
        await client.wait_closed()
        session = emu.live_sessions[0]
        assert session.close_reason == "expired"
        assert session.delegations()["delegations"][0]["id"] == created["delegation"]["id"]
        assert session.appends()[0]["status"] == "incomplete"
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_a_control_route_closes_a_session_at_any_moment(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    sideband: LiveWs | None = None
    try:
        session_id = (await client.start())["session"]["id"]
        sideband = await LiveWs.sideband(emu.url, session_id)
        live = emu.live_session(session_id)
        assert emu.wait_for(lambda: live.counters.get("sidebands") == 1)
        async with aiohttp.ClientSession() as http:
            base = f"{emu.control_url}/live/{session_id}"
            async with http.post(f"{base}/delegate", json={"task": "book it"}) as response:
                dlg = (await response.json())["id"]
            async with http.post(f"{base}/close", json={"reason": "content"}) as response:
                assert response.status == 200
            async with http.get(base) as response:
                record = await response.json()
            async with http.post(f"{base}/close") as response:
                assert response.status == 409  # already closed
        assert record["closed"] and record["close_reason"] == "content"
        assert record["delegations"][0]["id"] == dlg
        for connection in (client, sideband):
            closed = await connection.until("session.closed")
            assert closed["reason"] == "content"
            await connection.wait_closed()
    finally:
        await client.close()
        if sideband is not None:
            await sideband.close()
    assert_all_live(client.received)
    assert_all_live(sideband.received)


@async_test
async def test_commands_can_fail_or_be_lost(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        session_id = (await client.start())["session"]["id"]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{emu.control_url}/live/{session_id}/faults",
                json={
                    "fail_event_type": "session.commentary.append",
                    "ignore_event_type": "session.input_audio.mute",
                },
            ) as response:
                assert response.status == 200
        await client.send(
            {"type": "session.commentary.append", "event_id": "c", "content": "x",
             "delegation_id": None}
        )  # fmt: skip
        failed = await client.until("error")
        assert failed["error"]["code"] == "emulator_injected_failure"
        assert failed["error"]["type"] == "server_error" and failed["client_event_id"] == "c"
        await client.send({"type": "session.input_audio.mute", "event_id": "lost"})
        await client.send({"type": "session.input_audio.unmute", "event_id": "probe"})
        await client.until("session.input_audio.unmuted")
        assert "session.input_audio.muted" not in client.types()
        assert emu.live_sessions[0].appends() == []
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_a_cut_connection_ends_without_session_closed(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults=Faults(close_after_events=2))
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await client.send({"type": "session.input_audio.mute"})
        await client.wait_closed()
        assert client.types() == ["session.started", "session.input_audio.muted"]
        session = emu.live_sessions[0]
        assert emu.wait_for(lambda: session.closed, 5)
        assert session.close_reason is None
    finally:
        await client.close()


@async_test
async def test_a_session_expires_at_its_limit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(max_session_seconds=0.3)
    client = await LiveWs.connect(emu.url)
    try:
        started = await client.start()
        closed = await client.until("session.closed", timeout=10)
        assert closed["reason"] == "expired"
        assert closed["session"]["id"] == started["session"]["id"]
        await client.wait_closed()
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_the_backend_stream_takes_the_response_faults(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults=Faults(drop_response_created=True, unknown_event=True))
    client = await LiveWs.connect(emu.url)
    try:
        await client.start(delegation={"type": "responses", "responses": {"model": "gpt-5.5"}})
        await client.send({"type": "response.create", "event_id": "r"})
        await client.until(
            lambda e: e["type"] == "response.event" and e["event"]["type"] == "response.completed"
        )
        inner = [e["event"]["type"] for e in client.received if e["type"] == "response.event"]
        assert inner[0] == "response.in_progress" and "response.created" not in inner
        assert "emulator.unknown_event" in client.types()
    finally:
        await client.close()
    assert_all_live([e for e in client.received if e["type"] != "emulator.unknown_event"])
