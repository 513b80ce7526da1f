"""Input audio transcription: configured with ``audio.input.transcription``, every
committed user turn is transcribed - ``...input_audio_transcription.delta`` events, then
``.completed`` - in the ``openai`` package's event shapes; unconfigured, none is sent.
And the ``ignore_event_type`` fault: a client event the server never answers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from .conftest import MakeEmulator, async_test
from .schema import assert_server_event
from .wsclient import WsClient

pytestmark = pytest.mark.timeout(30)

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
NO_VAD_RESPONSE = {"type": "server_vad", "create_response": False}


def _update(transcription: dict[str, Any] | None) -> dict[str, Any]:
    audio_input = {"transcription": transcription, "turn_detection": NO_VAD_RESPONSE}
    return {
        "type": "session.update",
        "event_id": "configure",
        "session": {"type": "realtime", "audio": {"input": audio_input}},
    }


async def _speak(emu: Any, client: WsClient, text: str) -> dict[str, Any]:
    session = emu.sessions[-1]
    result: dict[str, Any] = await asyncio.to_thread(session.simulate_speech, text, 1200)
    return result


@pytest.mark.parametrize(
    ("model", "deltas", "usage_type"),
    [("gpt-4o-transcribe", ["book ", "a ", "table ", "for ", "two"], "tokens"),
     ("whisper-1", ["book a table for two"], "duration")],
)  # fmt: skip
@async_test
async def test_a_spoken_turn_is_transcribed(
    make_emulator: MakeEmulator, model: str, deltas: list[str], usage_type: str
) -> None:
    emu = make_emulator(turn_detection=None)
    client = await WsClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send(_update({"model": model, "language": "en"}))
        updated = await client.until("session.updated")
        assert updated["session"]["audio"]["input"]["transcription"]["model"] == model
        spoken = await _speak(emu, client, "book a table for two")
        completed = await client.until(COMPLETED)
        sent = [e for e in client.received if e.get("type") == DELTA]
        assert [e["delta"] for e in sent] == deltas
        assert {e["item_id"] for e in sent} == {spoken["item_id"]} == {completed["item_id"]}
        assert completed["transcript"] == "book a table for two"
        assert completed["content_index"] == 0 and completed["usage"]["type"] == usage_type
        kinds = [e["type"] for e in client.received]
        # after the user's item is in the conversation, as the API orders them
        assert kinds.index("conversation.item.done") < kinds.index(DELTA if deltas else COMPLETED)
        for event in [*sent, completed]:
            assert_server_event(event)  # the shapes of openai.types.realtime
    finally:
        await client.close()


@async_test
async def test_committed_audio_with_no_known_words_transcribes_to_empty(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(turn_detection=None)
    client = await WsClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send(_update({"model": "gpt-4o-mini-transcribe"}))
        await client.until("session.updated")
        silence = base64.b64encode(bytes(48 * 200)).decode()  # 200 ms of pcm16 at 24 kHz
        await client.send({"type": "input_audio_buffer.append", "audio": silence})
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.until("input_audio_buffer.committed")
        completed = await client.until(COMPLETED)
        assert completed["item_id"] == committed["item_id"] and completed["transcript"] == ""
        assert not [e for e in client.received if e.get("type") == DELTA]
        assert_server_event(completed)
    finally:
        await client.close()


@async_test
async def test_no_transcription_unless_configured(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(turn_detection=None)
    client = await WsClient.connect(emu.url)
    try:
        await client.until("session.created")
        await client.send(_update(None))
        await client.until("session.updated")
        await _speak(emu, client, "hello there")
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")  # everything before it was sent
        assert not [e for e in client.received if "transcription" in str(e.get("type"))]
    finally:
        await client.close()


@async_test
async def test_an_ignored_event_type_is_recorded_and_never_answered(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(turn_detection=None)
    emu.set_faults(ignore_event_type="conversation.item.retrieve")
    client = await WsClient.connect(emu.url)
    try:
        await client.until("session.created")
        retrieve = {"type": "conversation.item.retrieve", "event_id": "lost", "item_id": "x"}
        await client.send(retrieve)
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")  # handled in order: after it
        kinds = [e.get("type") for e in client.received]
        assert "error" not in kinds and "conversation.item.retrieved" not in kinds
        assert retrieve in emu.sessions[-1].client_events
    finally:
        await client.close()
