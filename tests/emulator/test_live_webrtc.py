"""GPT-Live over WebRTC on the emulator: creation by an app backend, the data channel,
the caller's audio driving the clock, frontend permissions."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from aiortc.mediastreams import AudioStreamTrack

from rtclient.emulator import Emulator

from .conftest import async_test
from .live_schema import assert_all_live
from .liveclient import LiveWs, connect_webrtc, create_webrtc
from .rawclient import RawClient, make_offer

pytestmark = pytest.mark.timeout(60)


@async_test
async def test_a_webrtc_session_starts_on_its_channel_and_hears_the_microphone(
    emu: Emulator,
) -> None:
    call = await connect_webrtc(
        emu.url, {"model": "gpt-live-1", "audio": {"output": {"voice": "cedar"}}},
        track=AudioStreamTrack(),  # real-time 20 ms frames of silence, like a muted mic
    )  # fmt: skip
    sideband: LiveWs | None = None
    try:
        started = await call.until("session.started")
        session = started["session"]
        assert session["id"] == call.call_id and session["id"].startswith("live_")
        assert session["audio"] == {"output": {"voice": "cedar"}}  # no format: SDP decides
        assert "client_event_id" not in started
        live = emu.live_session(call.call_id)
        sideband = await LiveWs.sideband(emu.url, call.call_id)

        await call.send(
            {"type": "session.start", "event_id": "again", "session": {"model": "gpt-live-1"}}
        )
        assert (await call.until("error"))["error"]["code"] == "session_already_started"
        await call.send({"type": "session.input_audio.append", "event_id": "a", "audio": ""})
        assert (await call.until("error"))["error"]["code"] == "not_allowed_on_transport"

        await call.send(
            {"type": "session.commentary.append", "event_id": "c1", "content": "Welcome back.",
             "delegation_id": None}
        )  # fmt: skip
        landed = await call.until("session.commentary.appended")  # the mic's frames moved it
        assert landed["client_event_id"] == "c1"
        assert landed["end_ms"] <= live.clock_ms and live.counters["audio_frames_in"] > 0
        await call.wait_audio_frames(5)  # the model speaks the commentary on the track
        reflected = (await sideband.gather("session.input_audio.append", 1))[0]
        pcm = base64.b64decode(reflected["audio"])  # a frame resampled to PCM16 24 kHz
        assert 0 < len(pcm) <= 20 * 48 and len(pcm) % 2 == 0
        spoken = await sideband.until(lambda e: e.get("delta") == " back.")
        assert spoken["type"] == "session.output_transcript.delta"
        assert "session.output_audio.delta" not in call.types()  # audio is on the track
    finally:
        await call.close()
        if sideband is not None:
            await sideband.wait_closed()
            await sideband.close()
    closed = [e for e in sideband.received if e["type"] == "session.closed"]
    assert [e["reason"] for e in closed] == ["connection_lost"]
    assert_all_live(call.received)
    assert_all_live(sideband.received)


@pytest.mark.parametrize(
    ("session", "transport", "code", "param"),
    [
        ({"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 24000}}},
         None, "unknown_parameter", "session.audio.format"),
        ({"model": "gpt-live-1", "modalities": ["audio"]}, None, "unknown_parameter",
         "session.modalities"),
        ({"model": "gpt-live-1", "wake_policy": {"type": "speech"}}, None,
         "emulator_unsupported", "session.wake_policy"),
        ({"model": "gpt-live-1"}, {"type": "sip", "sdp": "v=0"}, "invalid_value",
         "transport.type"),
        ({"model": "gpt-live-1"}, {"type": "webrtc", "sdp": "hello"}, "invalid_offer",
         "transport.sdp"),
    ],
)  # fmt: skip
@async_test
async def test_a_refused_creation_is_a_json_error(
    emu: Emulator, session: dict[str, object], transport: dict[str, str] | None, code: str,
    param: str,
) -> None:  # fmt: skip
    pc, _channel, offer = await make_offer()
    try:
        body = {"session": session, "transport": transport or {"type": "webrtc", "sdp": offer}}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{emu.url}/live/sessions", json=body, headers={"Authorization": "Bearer sk-t"}
            ) as response:
                status, error = response.status, await response.json()
    finally:
        await pc.close()
    assert status == 400
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert emu.live_sessions == []


@async_test
async def test_frontend_permissions_limit_the_data_channel_not_the_sideband(
    emu: Emulator,
) -> None:
    permissions = {
        "allowed_client_events": ["session.commentary.append"],
        "allowed_server_events": [{"type": "session.started"}, {"type": "info"},
                                  {"type": "error"}],
    }  # fmt: skip
    status, body, pc, channel = await create_webrtc(
        emu.url,
        {"model": "gpt-live-1", "client": {"data_channel": permissions}},
        track=AudioStreamTrack(),
    )
    assert status == 200
    call = await RawClient.answered(
        pc, channel, body["session"]["id"], body["transport"]["sdp"], timeout=10
    )
    sideband: LiveWs | None = None
    try:
        info = await call.until("info")
        assert info["code"] == "data_channel_permissions"
        await call.until("session.started")
        sideband = await LiveWs.sideband(emu.url, call.call_id)
        await call.send(
            {"type": "session.thinking.append", "event_id": "t", "content": "x",
             "delegation_id": None}
        )  # fmt: skip
        refused = await call.until("error")
        assert (refused["error"]["code"], refused["client_event_id"]) == (
            "client_event_not_allowed",
            "t",
        )
        await call.send(
            {"type": "session.commentary.append", "event_id": "c", "content": "Hi.",
             "delegation_id": None}
        )  # fmt: skip
        landed = await sideband.until("session.commentary.appended")  # the sideband sees all
        assert landed["client_event_id"] == "c"
        await call.send({"type": "session.close", "event_id": "bye"})  # not allowed either
        assert (await call.until("error"))["client_event_id"] == "bye"
        assert "session.commentary.appended" not in call.types()
    finally:
        await call.close()
        if sideband is not None:
            await sideband.close()
    assert_all_live(call.received)
