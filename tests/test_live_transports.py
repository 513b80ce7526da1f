"""GPT-Live's transports against the emulator over loopback: the endpoints, the start
rule and the session clock. Each transport runs on a real loop thread, as a client's
would; the test reads what it receives from a queue and sends on the loop thread."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rtclient._secret import Secret
from rtclient.core.live import LiveCore
from rtclient.effects import Send
from rtclient.emulator import Emulator, Pace
from rtclient.errors import NotFoundError, SignalingError
from rtclient.runtime.loop import LoopThread
from rtclient.transports.live import (
    MAX_SILENCE_LAG_MS,
    LiveWebRTCTransport,
    LiveWebSocketTransport,
    webrtc_session,
    websocket_session,
)

pytestmark = pytest.mark.timeout(60)

KEY = Secret("sk-test")
CONFIG = {"model": "gpt-live-1", "instructions": "Be brief."}
WAIT = 20.0


class Link:
    """One transport on the loop thread; its server events in ``inbox``."""

    def __init__(self, loop_thread: LoopThread, transport_class: Any, **options: Any) -> None:
        self.loop_thread = loop_thread
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.transport = transport_class(
            api_key=KEY,
            on_message=lambda text: self.inbox.put(json.loads(text)),
            on_closed=self.inbox.put,
            **options,
        )

    def connect(self) -> Link:
        self.loop_thread.call(self.transport.connect(), timeout=WAIT)
        return self

    def send(self, event: dict[str, Any]) -> None:
        async def send() -> None:
            self.transport.send(event)

        self.loop_thread.call(send(), timeout=WAIT)

    def apply(self, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.send(effect.event)

    def until(self, kind: str, **match: Any) -> dict[str, Any]:
        """The next event of ``kind`` (whose fields equal ``match``), skipping others."""
        while True:
            event = self.inbox.get(timeout=WAIT)
            assert isinstance(event, dict), f"the connection ended: {event!r}"
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event

    def close(self) -> None:
        self.loop_thread.call(self.transport.close(), timeout=WAIT)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(pace=Pace(delay=0.002)) as emulator:
        yield emulator


@pytest.fixture
def links(lt: LoopThread) -> Iterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        link.close()


def primary(
    emu: Emulator, lt: LoopThread, links: list[Link], **options: Any
) -> tuple[Link, LiveCore]:
    config = websocket_session(CONFIG)
    core = LiveCore(kind="websocket", config=config)
    link = Link(lt, LiveWebSocketTransport, base_url=emu.url, session=config, **options)
    links.append(link.connect())
    link.apply(core.connected())
    started = link.until("session.started")
    link.apply(core.on_event(started))
    return link, core


def test_the_primary_socket_starts_first_then_silence_moves_the_clock(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    link, core = primary(emu, lt, links)
    session = emu.live_session(core.session_id or "")
    assert session.config is not None and session.config["audio"]["format"]["rate"] == 24000
    # no app audio at all: the transport's silence moves the timeline
    assert emu.wait_for(lambda: session.clock_ms >= 300, WAIT)
    events = session.client_events
    assert events[0]["type"] == "session.start"  # the first message, and nothing before it
    assert {e["type"] for e in events[1:]} == {"session.input_audio.append"}
    assert not session.errors
    # an appended text lands: its ack comes because the clock moves
    (append_id,), fx = core.append("commentary", "The parcel left the depot.")
    link.apply(fx)
    ack = link.until("session.commentary.appended", client_event_id=append_id)
    assert ack["start_ms"] > 0
    assert link.transport.silence_sent_ms >= 300 and link.transport.call_id == core.session_id


def test_a_loop_far_behind_skips_silence_instead_of_flooding_the_socket(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    """The loop thread is held for 1.5 s (as an overloaded process would hold it): on
    waking, the pump catches up on at most MAX_SILENCE_LAG_MS of silence and skips the
    rest - a bounded burst, not 15 chunks at once per session - and goes on in time."""
    link, core = primary(emu, lt, links)
    session = emu.live_session(core.session_id or "")
    assert emu.wait_for(lambda: session.clock_ms >= 200, WAIT)
    transport = link.transport
    began, before = time.monotonic(), transport.silence_sent_ms
    lt.call_soon(time.sleep, 1.5)  # the deliberate stall under test, not a wait
    assert emu.wait_for(lambda: transport.silence_skipped_ms > 0, WAIT)
    elapsed_ms = (time.monotonic() - began) * 1000
    skipped, sent = transport.silence_skipped_ms, transport.silence_sent_ms - before
    assert skipped >= 1500 - MAX_SILENCE_LAG_MS - 200
    assert sent + skipped <= elapsed_ms + 200  # never ahead of real time: a bounded burst
    clock = session.clock_ms
    assert emu.wait_for(lambda: session.clock_ms >= clock + 300, WAIT)  # on it goes
    assert not session.errors


def test_the_models_audio_is_decoded_only_for_someone_who_takes_it(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    """GPT-Live's output is one continuous stream (ten deltas a second): a session with
    an audio callback gets it as frames; one without receives the deltas and never
    parses or decodes them (no playback position to keep: the client never truncates)."""
    frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
    primary(emu, lt, links, on_audio_frame=frames.put)
    frame = frames.get(timeout=WAIT)
    assert (frame.sample_rate, frame.format.name, frame.layout.name) == (24000, "s16", "mono")
    assert frame.samples > 0
    quiet, _ = primary(emu, lt, links)
    for _ in range(3):
        quiet.until("session.output_audio.delta")
    playback = quiet.transport._playback
    assert quiet.transport._pts == 0 and playback._ends_at == 0.0  # never decoded, never timed


def test_without_silence_an_append_waits_for_audio(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    link, core = primary(emu, lt, links, stream_silence=False)
    session = emu.live_session(core.session_id or "")
    (append_id,), fx = core.append("thinking", "The user prefers email.")
    link.apply(fx)
    assert emu.wait_for(lambda: [a["status"] for a in session.appends()] == ["pending"], WAIT)
    assert session.clock_ms == 0  # nothing streamed: held back
    session.feed_audio(100)  # audio flows: it lands
    link.until("session.thinking.appended", client_event_id=append_id)
    assert link.transport.silence_sent_ms == 0


def test_a_sideband_attaches_by_id_and_an_unknown_id_is_a_typed_refusal(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    _, core = primary(emu, lt, links)
    session_id = core.session_id
    assert session_id is not None
    sideband = Link(lt, LiveWebSocketTransport, base_url=emu.url, session_id=session_id,
                    graceful_close=True, session=None)  # fmt: skip
    links.append(sideband.connect())
    assert emu.wait_for(lambda: emu.live_session(session_id).counters.get("sidebands") == 1, WAIT)
    sideband.until("session.output_audio.delta")  # the primary's stream reaches it
    assert sideband.transport.call_id == session_id and sideband.transport.silence_sent_ms == 0
    stranger = Link(lt, LiveWebSocketTransport, base_url=emu.url, session_id="live_nope",
                    session=None)  # fmt: skip
    with pytest.raises(NotFoundError) as refused:
        stranger.connect()
    assert refused.value.status == 404 and "sk-test" not in str(refused.value)


def test_webrtc_is_created_by_a_json_post_and_hung_up_by_id(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    link = Link(lt, LiveWebRTCTransport, base_url=emu.url, session=CONFIG, loopback_only=True)
    links.append(link.connect())
    started = link.until("session.started")
    session_id = started["session"]["id"]
    assert link.transport.call_id == session_id and session_id.startswith("live_")
    session = emu.live_session(session_id)
    assert session.config is not None and "format" not in (session.config.get("audio") or {})
    # the default input track is paced silence: the clock moves over RTP too
    assert emu.wait_for(lambda: session.clock_ms >= 200, WAIT)
    lt.call(link.transport.end_call(), timeout=WAIT)
    assert emu.wait_for(lambda: session.closed, WAIT)
    assert session.close_reason == "close_requested"


def test_a_refused_webrtc_config_is_the_servers_typed_error(
    emu: Emulator, lt: LoopThread, links: list[Link]
) -> None:
    link = Link(lt, LiveWebRTCTransport, base_url=emu.url,
                session={**CONFIG, "temperature": 0.3}, loopback_only=True)  # fmt: skip
    with pytest.raises(SignalingError) as refused:
        link.connect()
    assert refused.value.status == 400 and refused.value.code == "unknown_parameter"


def test_audio_formats_are_checked_before_connecting() -> None:
    assert websocket_session(CONFIG)["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}
    with pytest.raises(ValueError, match="PCM16 24 kHz"):
        websocket_session({**CONFIG, "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}})
    with pytest.raises(ValueError, match="SDP"):
        webrtc_session({**CONFIG, "audio": {"format": {"type": "audio/pcm", "rate": 24000}}})
    with pytest.raises(ValueError, match="silence_ms"):
        LiveWebSocketTransport(base_url="http://127.0.0.1:9/v1", api_key=KEY, session=CONFIG,
                               on_message=print, on_closed=print, silence_ms=1)  # fmt: skip
