"""The WebRTC audio track: frames only while a response speaks."""

from __future__ import annotations

import pytest

from rtclient.emulator import Emulator, Pace

from .conftest import MakeEmulator, async_test, user_text
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(30)


async def _roundtrip(client: RawClient, marker: str) -> None:
    await client.send({"type": "conversation.item.retrieve", "item_id": marker, "event_id": marker})
    await client.until(lambda e: e.get("type") == "error" and e["error"]["event_id"] == marker)


@async_test
async def test_audio_flows_only_while_speaking(make_emulator: MakeEmulator) -> None:
    """Frames only while a response speaks, asserted on what the emulator recorded - the
    speech its responses buffered and the frames its track produced - not on how many
    frames a wall-clock interval should hold (a loaded machine encodes fewer)."""
    deltas, ms_per_delta = 4, 150
    emu = make_emulator(pace=Pace(delay=0.01, deltas=deltas, audio_ms_per_delta=ms_per_delta))
    client = await RawClient.connect(emu.url)
    try:
        await client.until("session.created")
        playback = emu.session(client.call_id).playback
        assert playback is not None
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.until("response.done")
        await _roundtrip(client, "idle")
        # idle, and after a text response: nothing buffered, nothing handed to aiortc
        assert (playback.milliseconds_buffered, playback.frames_sent) == (0, 0)

        await client.send(user_text("say something"))
        await client.send({"type": "response.create", "event_id": "speak"})
        done = await client.until("response.done")
        stopped = await client.until("output_audio_buffer.stopped")
        assert stopped["response_id"] == done["response"]["id"]
        kinds = client.types()
        assert kinds.index("response.content_part.added") < kinds.index(
            "output_audio_buffer.started"
        )
        assert kinds.index("response.done") < kinds.index("output_audio_buffer.stopped")
        spoken = playback.milliseconds_buffered
        assert spoken == deltas * ms_per_delta  # one stretch of speech per transcript delta
        played = playback.frames_sent
        # Audio flowed, and never more of it than was spoken: at most one 20 ms frame per
        # 20 ms buffered, plus two per stretch (the first, and one paced past the end).
        assert 0 < played <= spoken // 20 + 2 * deltas
        await client.wait_audio_frames(1)  # and the caller's track received it

        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.until("response.done")
        await _roundtrip(client, "after")
        assert playback.milliseconds_buffered == spoken
        assert playback.frames_sent <= played + 1  # at most the frame paced past the end
    finally:
        await client.close()


@async_test
async def test_output_audio_buffer_clear_cuts_the_audio(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(pace=Pace(delay=0.01, deltas=20, audio_ms_per_delta=1000))
    client = await RawClient.connect(emu.url)
    try:
        await client.send({"type": "response.create", "event_id": "speak"})
        started = await client.until("output_audio_buffer.started")
        await client.until("response.output_audio_transcript.delta")  # a second is buffered
        await client.send({"type": "response.cancel", "event_id": "stop"})
        await client.send({"type": "output_audio_buffer.clear", "event_id": "hush"})
        (cleared,) = await client.gather("output_audio_buffer.cleared", 1)
        assert cleared["response_id"] == started["response_id"]
        done = (await client.gather("response.done", 1))[0]["response"]
        assert done["status"] == "cancelled"
        await _roundtrip(client, "after")
        assert "output_audio_buffer.stopped" not in client.types()
        playback = emu.session(client.call_id).playback
        assert playback is not None and not playback.is_playing()
    finally:
        await client.close()


@async_test
async def test_a_cancelled_response_still_plays_out_unless_cleared(emu: Emulator) -> None:
    emu.pace = Pace(delay=0.01, deltas=10, audio_ms_per_delta=40)
    client = await RawClient.connect(emu.url)
    try:
        await client.send({"type": "response.create", "event_id": "speak"})
        await client.until("output_audio_buffer.started")
        await client.send({"type": "response.cancel", "event_id": "stop"})
        done = (await client.until("response.done"))["response"]
        assert done["status"] == "cancelled"
        stopped = await client.until("output_audio_buffer.stopped")
        assert stopped["response_id"] == done["id"]
    finally:
        await client.close()
