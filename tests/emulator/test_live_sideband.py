"""Sidebands on a GPT-Live session: what they receive, what they may send, and the end."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from rtclient.emulator import Emulator

from .conftest import async_test
from .live_schema import assert_all_live
from .liveclient import LiveWs, silence

pytestmark = pytest.mark.timeout(60)


@async_test
async def test_a_sideband_sees_the_session_from_its_attach_and_may_not_start_it(
    emu: Emulator,
) -> None:
    primary = await LiveWs.connect(emu.url)
    sideband: LiveWs | None = None
    try:
        started = await primary.start()
        session_id = started["session"]["id"]
        sideband = await LiveWs.sideband(emu.url, session_id, graceful_close="true")
        assert emu.wait_for(lambda: emu.live_session(session_id).counters.get("sidebands") == 1)

        await sideband.send(
            {"type": "session.start", "event_id": "sb_start", "session": {"model": "gpt-live-1"}}
        )
        refused = await sideband.until("error")
        assert refused["error"]["code"] == "not_allowed_on_sideband"
        assert refused["client_event_id"] == "sb_start"
        await sideband.send(
            {"type": "session.input_audio.append", "event_id": "sb_audio", "audio": silence(20)}
        )
        refused_audio = await sideband.until("error")
        assert refused_audio["error"]["code"] == "not_allowed_on_sideband"
        assert emu.live_session(session_id).clock_ms == 0  # the sideband's audio was not taken

        # the session goes on: the primary's audio reaches both, the sideband's append lands
        chunk = bytes(range(256)) * 15  # 80 ms of PCM16 24 kHz, not silence
        await sideband.send(
            {"type": "session.thinking.append", "event_id": "sb_t", "content": "VIP caller.",
             "delegation_id": None}
        )  # fmt: skip
        await primary.send(
            {"type": "session.input_audio.append", "audio": base64.b64encode(chunk).decode()}
        )
        ack_primary = await primary.until("session.thinking.appended")
        ack_sideband = await sideband.until("session.thinking.appended")
        assert ack_primary["client_event_id"] == ack_sideband["client_event_id"] == "sb_t"
        (reflected,) = await sideband.gather("session.input_audio.append", 1)
        assert base64.b64decode(reflected["audio"]) == chunk  # PCM 24 kHz is passed as is
        assert "event_id" not in reflected
        (output,) = await sideband.gather("session.output_audio.delta", 1)
        assert (output["start_ms"], output["end_ms"]) == (0, 80)
        assert len(base64.b64decode(output["delta"])) == 80 * 48
        assert "session.input_audio.append" not in primary.types()  # sidebands only
        assert all(
            "start_ms" not in e
            for e in primary.received
            if e["type"] == "session.output_audio.delta"
        )
        assert "session.started" not in sideband.types()  # a late attach gets no start
        assert [e["type"] for e in primary.received].count("error") == 0  # errors: sender only

        await primary.send({"type": "session.close", "event_id": "bye"})
        closed_primary = await primary.until("session.closed")
        closed_sideband = await sideband.until("session.closed")
        assert closed_primary["event_id"] == closed_sideband["event_id"]
        await sideband.wait_closed()
        assert sideband.ws.close_code == 1000
    finally:
        await primary.close()
        if sideband is not None:
            await sideband.close()
    assert_all_live(primary.received)
    assert_all_live(sideband.received)
    assert_all_live(emu.live_sessions[0].server_events)


@async_test
async def test_a_delegation_can_be_answered_from_the_sideband(emu: Emulator) -> None:
    primary = await LiveWs.connect(emu.url)
    sideband: LiveWs | None = None
    try:
        session_id = (await primary.start())["session"]["id"]
        sideband = await LiveWs.sideband(emu.url, session_id)
        assert emu.wait_for(lambda: emu.live_session(session_id).counters.get("sidebands") == 1)
        emu.live_session(session_id).simulate_speech("delegate now")
        await primary.audio(400)
        created = await sideband.until("session.delegation.created")
        dlg = created["delegation"]["id"]
        await sideband.send(
            {"type": "session.commentary.append", "event_id": "sb_answer",
             "content": "It is done.", "delegation_id": dlg}
        )  # fmt: skip
        await primary.audio(20)
        landed = await primary.until("session.commentary.appended")
        assert landed["client_event_id"] == "sb_answer"
        appends = emu.live_session(session_id).appends(dlg)
        assert [(a["content"], a["status"]) for a in appends] == [("It is done.", "landed")]
    finally:
        await primary.close()
        if sideband is not None:
            await sideband.close()


@async_test
async def test_the_primary_going_away_ends_the_session_for_its_sidebands(emu: Emulator) -> None:
    primary = await LiveWs.connect(emu.url)
    session_id = (await primary.start())["session"]["id"]
    sideband = await LiveWs.sideband(emu.url, session_id)
    try:
        assert emu.wait_for(lambda: emu.live_session(session_id).counters.get("sidebands") == 1)
        await primary.close()
        closed = await sideband.until("session.closed")
        assert closed["reason"] == "connection_lost"
        await sideband.wait_closed()
    finally:
        await sideband.close()
    assert_all_live(sideband.received)


@async_test
async def test_attaching_needs_a_running_session_and_a_standard_key(emu: Emulator) -> None:
    waiting = await LiveWs.connect(emu.url)  # connected, never started
    try:
        assert emu.wait_for(lambda: len(emu.live_sessions) == 1)
        unstarted = emu.live_sessions[0].id
        secret = emu.create_client_secret()["value"]
        for session_id, query, api_key, status in (
            ("live_unknown", {}, "sk-test", 404),
            (unstarted, {}, "sk-test", 404),
            (unstarted, {"graceful_close": "maybe"}, "sk-test", 400),
            (unstarted, {"call_id": "x"}, "sk-test", 400),
            ("live_unknown", {}, secret, 401),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await LiveWs.connect(
                    emu.url, f"/live/sessions/{session_id}/attach", api_key=api_key, **query
                )
            assert refused.value.status == status
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{emu.url}/live/sessions/live_unknown/attach",
                headers={"Authorization": "Bearer sk-test"},
            ) as response:
                body = await response.json()
        assert body["error"]["code"] == "session_not_found"
    finally:
        await waiting.close()
