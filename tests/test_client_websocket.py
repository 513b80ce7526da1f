"""What only the WebSocket transport does: audio as events, barge-in as truncation, its
handshake errors. (Everything else runs over both transports in test_client*.py.)"""

from __future__ import annotations

import base64
import threading
import wave
from pathlib import Path
from typing import Any

import av
import pytest
from loguru import logger
from test_client_audio import ToneTrack, write_tone

from rtclient import CallNotFoundError, RealtimeClient, SignalingError
from rtclient.core import events as ev
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-proj-SUPERSECRET0123456789abcdef"


def ws_client(emu: Emulator, **kwargs: Any) -> RealtimeClient:
    kwargs.setdefault("api_key", "sk-test")
    return RealtimeClient(base_url=emu.url, transport="websocket", **kwargs)


def appended_bytes(emu: Emulator) -> int:
    events = emu.sessions[-1].client_events
    return sum(
        len(base64.b64decode(e["audio"]))
        for e in events
        if e["type"] == "input_audio_buffer.append"
    )


def test_a_file_is_sent_as_pcm16_24k_appends(tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    write_tone(tone, seconds=0.5, rate=48000)
    with Emulator(turn_detection=None) as emu, ws_client(emu, audio_in=str(tone)) as client:
        # 0.5 s at 24 kHz mono s16 is 24,000 bytes; the resampler may hold back a few
        assert emu.wait_for(lambda: appended_bytes(emu) >= 23_000, 20)
        assert client.send_text("hello").result(20)["response"]["status"] == "completed"  # type: ignore[union-attr]
        assert appended_bytes(emu) <= 24_000
        assert emu.sessions[-1].media == "websocket"


def test_a_user_track_is_sent_as_appends() -> None:
    track = ToneTrack(frames=25)  # 0.5 s of 48 kHz frames
    with Emulator(turn_detection=None) as emu, ws_client(emu, audio_in=track):
        assert emu.wait_for(lambda: appended_bytes(emu) >= 20 * 960, 20)
    assert track.delivered >= 20


def test_model_audio_reaches_on_audio_and_audio_out(tmp_path: Path) -> None:
    out = tmp_path / "model.wav"
    frames: list[Any] = []
    done = threading.Event()
    with Emulator(turn_detection=None, pace=Pace(delay=0.002, deltas=5)) as emu:
        client = ws_client(emu, audio_out=str(out), on_audio=frames.append).connect()
        try:
            client.on("response.output_audio.done", lambda e: done.set())
            client.send_text("say something", respond=False)
            client.request_response(output_modalities=["audio"]).result(20)
            assert done.wait(10)
        finally:
            client.close()
    # 5 deltas of 60 ms each, as s16 mono 24 kHz av.AudioFrames
    assert all(isinstance(f, av.AudioFrame) and f.sample_rate == 24000 for f in frames)
    assert sum(f.samples for f in frames) == 5 * 60 * 24
    with wave.open(str(out), "rb") as w:  # recorded by aiortc's MediaRecorder, as for WebRTC
        assert w.getnframes() / w.getframerate() == pytest.approx(0.3, abs=0.03)


def test_an_audio_delta_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport reads each audio delta to play it and hands the client the dict it
    read: one JSON decode per delta on the loop thread, not two (a 4 KB delta costs ~5
    us to decode; deltas are most of a voice session's events)."""
    decoded: list[str] = []
    loads = ev.loads

    def counting_loads(text: Any) -> Any:
        if isinstance(text, str) and '"response.output_audio.delta"' in text:
            decoded.append(text)
        return loads(text)

    monkeypatch.setattr(ev, "loads", counting_loads)
    deltas: list[dict[str, Any]] = []
    with Emulator(turn_detection=None, pace=Pace(delay=0.0, deltas=5)) as emu:
        client = ws_client(emu).connect()
        try:
            client.on("response.output_audio.delta", deltas.append, raw=True)
            client.send_text("say something", respond=False)
            client.request_response(output_modalities=["audio"]).result(20)
            assert emu.wait_for(lambda: len(deltas) == 5, 10)
        finally:
            client.close()
    assert len(decoded) == 5
    assert client.stats()["malformed_events"] == 0


def truncates(emu: Emulator) -> list[dict[str, Any]]:
    events = emu.sessions[-1].client_events
    return [e for e in events if e["type"] == "conversation.item.truncate"]


def test_interrupt_cancels_then_truncates_to_what_was_played() -> None:
    """40 s of speech arrive within a fraction of a second; the user barges in after the
    first delta, having heard almost none of it."""
    pace = Pace(delay=0.02, deltas=40, audio_ms_per_delta=1000)
    with Emulator(turn_detection=None, pace=pace) as emu:
        client = ws_client(emu, on_audio=lambda f: None).connect()
        try:
            first, truncated = threading.Event(), threading.Event()
            deltas: list[dict[str, Any]] = []
            client.on("response.output_audio.delta", lambda e: (deltas.append(e), first.set()))
            client.on("conversation.item.truncated", lambda e: truncated.set())
            ticket = client.send_text("tell me a long story")
            assert ticket is not None and first.wait(10)
            done = client.interrupt(timeout=10)
            assert done is not None and done["response"]["status"] == "cancelled"
            assert truncated.wait(10)  # the server accepted the truncation
            session = emu.sessions[-1]
            kinds = [e["type"] for e in session.client_events]
            cut = truncates(emu)[0]
            audio_item = done["response"]["output"][0]
            assert kinds.index("response.cancel") < kinds.index("conversation.item.truncate")
            assert "output_audio_buffer.clear" not in kinds  # a WebSocket session has none
            assert cut["item_id"] == audio_item["id"] and cut["content_index"] == 0
            assert 0 <= cut["audio_end_ms"] < 1000 * len(deltas)
            assert not session.errors
            item = session.items()[-1]
            assert item["id"] == audio_item["id"] and item["content"][0]["transcript"] == ""
        finally:
            client.close()


def test_interrupt_after_the_response_truncates_what_is_still_playing() -> None:
    """On a WebSocket the audio outruns real time: the response is done server-side
    while the user is still hearing it. Nothing to cancel; the rest is cut."""
    pace = Pace(delay=0.001, deltas=5, audio_ms_per_delta=2000)
    with Emulator(turn_detection=None, pace=pace) as emu:
        client = ws_client(emu, on_audio=lambda f: None).connect()
        try:
            ticket = client.send_text("a ten second answer")
            assert ticket is not None
            answer = ticket.result(10)
            assert client.interrupt() is None  # no active response
            assert emu.wait_for(lambda: len(truncates(emu)) == 1, 10)
            cut = truncates(emu)[0]
            assert cut["item_id"] == answer["response"]["output"][0]["id"]
            assert 0 <= cut["audio_end_ms"] < 10_000
            kinds = [e["type"] for e in emu.sessions[-1].client_events]
            assert "response.cancel" not in kinds
            assert client.interrupt() is None  # playback already stopped: nothing more
            client.send_event({"type": "input_audio_buffer.clear"})  # a marker
            assert emu.wait_for(
                lambda: emu.sessions[-1].client_events[-1]["type"] == "input_audio_buffer.clear",
                10,
            )
            assert len(truncates(emu)) == 1
        finally:
            client.close()


def test_wrong_key_and_unknown_call_are_typed_errors() -> None:
    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{message}")
    try:
        with Emulator(api_key="sk-the-right-one") as emu:
            client = ws_client(emu, api_key=SECRET)
            with pytest.raises(SignalingError) as info:
                client.connect()
            assert info.value.status == 401 and info.value.code == "invalid_api_key"
            sideband = RealtimeClient(
                api_key="sk-the-right-one", base_url=emu.url, call_id="rtc_nope"
            )
            with pytest.raises(CallNotFoundError) as missing:
                sideband.connect()
            assert missing.value.status == 404 and missing.value.code == "call_id_not_found"
            assert emu.stats()["sessions"] == 0
    finally:
        logger.remove(sink)
        logger.disable("rtclient")
    for text in (str(info.value), repr(info.value), repr(client), "\n".join(lines)):
        assert SECRET not in text


def test_options_that_cannot_work_are_refused_at_construction(tmp_path: Path) -> None:
    base = {"api_key": "sk-test", "base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(ValueError, match="transport"):
        RealtimeClient(transport="carrier-pigeon", **base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="WebSocket"):
        RealtimeClient(transport="webrtc", call_id="rtc_1", **base)
    with pytest.raises(ValueError, match="no audio"):
        RealtimeClient(call_id="rtc_1", audio_out=str(tmp_path / "x.wav"), **base)
    with pytest.raises(ValueError, match="standard key"):
        RealtimeClient(call_id="rtc_1", api_key="ek_browser", base_url=base["base_url"])


def test_a_format_other_than_pcm16_24k_is_refused() -> None:
    with Emulator() as emu:
        session = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
        with pytest.raises(ValueError, match="PCM16"):
            ws_client(emu, session=session).connect()
        assert emu.stats()["sessions"] == 0
