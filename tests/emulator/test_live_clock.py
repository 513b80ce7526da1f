"""The Live session clock moves only with input audio: what waits on it, and what shows it."""

from __future__ import annotations

import array
import base64

import pytest

from rtclient.emulator import Emulator
from rtclient.emulator.live.timeline import Timeline

from .conftest import async_test
from .live_schema import assert_all_live
from .liveclient import LiveWs

pytestmark = pytest.mark.timeout(60)


def test_the_timeline_runs_entries_only_when_audio_reaches_them() -> None:
    timeline = Timeline()
    ran: list[str] = []
    timeline.at(0, lambda: ran.append("now"))
    timeline.at(30, lambda: ran.append("at 30"))
    timeline.at(10, lambda: timeline.at(12, lambda: ran.append("chained 12")))
    assert ran == [] and timeline.pending == 3  # nothing runs without audio
    assert timeline.advance(20.5) == (0, 20)
    assert ran == ["now", "chained 12"]
    assert timeline.advance(9.5) == (20, 30)  # the half milliseconds add up
    assert ran == ["now", "chained 12", "at 30"]
    late = timeline.at(5, lambda: ran.append("in the past"))
    assert ran[-1] == "at 30" and not late.cancelled  # waits for the next chunk
    timeline.advance(0)
    assert ran[-1] == "in the past"


@async_test
async def test_appended_text_waits_for_audio_and_lands_when_it_flows(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        session = emu.live_sessions[0]
        await client.audio(300)
        await client.send(
            {"type": "session.thinking.append", "event_id": "t1", "content": "The user is Ada.",
             "delegation_id": None}
        )  # fmt: skip
        await client.send({"type": "session.input_audio.mute", "event_id": "probe"})
        await client.until("session.input_audio.muted")
        # the append was handled before the mute was answered, and is still held back
        assert "session.thinking.appended" not in client.types()
        assert [a["status"] for a in session.appends()] == ["pending"]
        assert session.clock_ms == 300

        await client.send({"type": "session.input_audio.unmute"})
        await client.audio(20)  # one frame of silence moves the clock
        landed = await client.until("session.thinking.appended")
        assert landed["client_event_id"] == "t1"
        assert landed["start_ms"] == landed["end_ms"] == 300
        assert session.appends()[0]["status"] == "landed"
        assert session.clock_ms == 320
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_transcripts_carry_the_timeline_and_rebuild_the_conversation(
    emu: Emulator,
) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        session = emu.live_sessions[0]
        utterance = session.simulate_speech("what is the time", duration_ms=800)
        assert utterance == {"start_ms": 0, "end_ms": 800}
        await client.audio(400)
        half = await client.gather("session.input_transcript.delta", 2)
        assert [(e["delta"], e["start_ms"], e["end_ms"]) for e in half] == [
            ("what", 0, 200),
            (" is", 200, 400),
        ]
        await client.audio(600)  # the rest of the words, and the start of the answer
        await client.until(lambda e: e.get("delta") == " the")
        await client.audio(3000)
        await client.until(lambda e: e.get("delta") == " time" and e["start_ms"] > 800)
        heard = "".join(
            e["delta"] for e in client.received if e["type"] == "session.input_transcript.delta"
        )
        said = "".join(
            e["delta"] for e in client.received if e["type"] == "session.output_transcript.delta"
        )
        assert heard == "what is the time"
        assert said == "You said: what is the time"
        replies = [e for e in client.received if e["type"] == "session.output_transcript.delta"]
        assert replies[0]["start_ms"] == 800  # the model answers when the user stops
        up_to = session.transcript(up_to_ms=800)
        assert "".join(f["delta"] for f in up_to) == "what is the time"
        assert all(f["side"] == "user" for f in up_to)
        output_audio = await client.gather("session.output_audio.delta", 3)  # one per chunk
        assert all("start_ms" not in e and "event_id" not in e for e in output_audio)
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_usage_follows_the_session_clock_not_the_wall_clock(emu: Emulator) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await client.audio(14999)
        await client.audio(1)
        usage = await client.until("session.usage.updated")
        assert usage["usage"] == {"seconds": 15}
        assert client.types().count("session.usage.updated") == 1
    finally:
        await client.close()
    assert_all_live(client.received)


@async_test
async def test_closing_with_text_still_waiting_for_audio_reports_it_incomplete(
    emu: Emulator,
) -> None:
    client = await LiveWs.connect(emu.url)
    try:
        await client.start()
        await client.audio(100)
        await client.send(
            {"type": "session.commentary.append", "event_id": "late", "content": "Done.",
             "delegation_id": None}
        )  # fmt: skip
        await client.send({"type": "session.close", "event_id": "bye"})
        incomplete = await client.until("error")
        assert incomplete["error"]["code"] == "context_injection_incomplete"
        assert incomplete["client_event_id"] == "late"
        closed = await client.until("session.closed")
        assert closed["reason"] == "close_requested" and closed["client_event_id"] == "bye"
        assert closed["usage"] == {"seconds": 0}
        assert closed["session"]["status"] == "active"  # the final snapshot, as the API's
        await client.wait_closed()
        assert "session.commentary.appended" not in client.types()
        assert emu.live_sessions[0].appends()[0]["status"] == "incomplete"
    finally:
        await client.close()
    assert_all_live(client.received)


@pytest.mark.parametrize(
    ("audio_format", "sample", "decoded", "silence_byte"),
    [
        ({"type": "audio/pcmu", "rate": 8000}, 0x00, -32124, 0xFF),
        ({"type": "audio/pcma", "rate": 8000}, 0xAA, 32256, 0xD5),
    ],
)
@async_test
async def test_g711_audio_moves_the_clock_and_reaches_sidebands_as_pcm(
    emu: Emulator, audio_format: dict[str, object], sample: int, decoded: int, silence_byte: int
) -> None:
    client = await LiveWs.connect(emu.url)
    sideband: LiveWs | None = None
    try:
        session_id = (await client.start(audio={"format": audio_format}))["session"]["id"]
        sideband = await LiveWs.sideband(emu.url, session_id)
        assert emu.wait_for(lambda: emu.live_session(session_id).counters.get("sidebands") == 1)
        await client.send(
            {
                "type": "session.input_audio.append",
                "audio": base64.b64encode(bytes([sample]) * 160).decode(),
            }
        )  # 160 samples at 8 kHz: 20 ms
        output = await client.until("session.output_audio.delta")
        assert base64.b64decode(output["delta"]) == bytes([silence_byte]) * 160  # G.711 silence
        assert emu.live_session(session_id).clock_ms == 20
        (reflected,) = await sideband.gather("session.input_audio.append", 1)
        pcm = array.array("h", base64.b64decode(reflected["audio"]))
        assert len(pcm) == 480 and set(pcm) == {decoded}  # PCM16 24 kHz, the same sound
    finally:
        await client.close()
        if sideband is not None:
            await sideband.close()
