"""Sidebands: the browser holds the call, the app server holds the key, tools and gate.

A "browser" here is a raw aiortc peer (no rtclient client code) on its own loop
thread. As an app would, the test creates its call on the server side with
``rtclient.create_call`` (the browser's offer, the session and the ``@tool``s), hands
it the answer, and attaches ``RealtimeClient(call_id=...)``. The emulator is the
referee: it sees which connection sent what, and counts every rejection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiortc.contrib.media import MediaPlayer
from emulator.rawclient import RawClient, make_offer
from loguru import logger
from test_client_audio import write_tone

from rtclient import (
    CallNotFoundError,
    ClosedError,
    LoopThread,
    RealtimeClient,
    create_call,
    hangup_call,
    tool,
)
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(90)

KEY = "sk-test"
ACTIVE = "conversation_already_has_active_response"
TICKET = "rtclient_ticket"
SESSION = {"instructions": "You help with orders.", "output_modalities": ["text"]}


class Browser:
    """A browser's side of a call, driven from the test thread (every wait bounded)."""

    def __init__(self, loop: LoopThread, raw: RawClient, player: MediaPlayer | None) -> None:
        self.loop = loop
        self.raw = raw
        self.player = player
        self.call_id = raw.call_id

    @classmethod
    def call(
        cls,
        loop: LoopThread,
        emu: Emulator,
        *,
        tools: list[Any],
        wav: Path | None = None,
        audio: bool = True,
    ) -> Browser:
        async def offer() -> tuple[Any, Any, str, MediaPlayer | None]:
            player = MediaPlayer(str(wav)) if wav is not None else None
            track = player.audio if player is not None else None
            pc, channel, sdp = await make_offer(audio=audio, track=track)
            return pc, channel, sdp, player

        pc, channel, sdp, player = loop.call(offer(), timeout=10)
        # The app server's part: post the browser's offer with the standard key.
        answer = create_call(sdp, session=SESSION, tools=tools, api_key=KEY, base_url=emu.url)
        raw = loop.call(
            RawClient.answered(pc, channel, answer.call_id, answer.sdp, timeout=10), timeout=15
        )
        return cls(loop, raw, player)

    def send(self, event: dict[str, Any]) -> None:
        self.loop.call(self.raw.send(event), timeout=10)

    def until(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        return self.loop.call(self.raw.until(predicate, timeout), timeout=timeout + 5)

    def close(self) -> None:
        if self.player is not None and self.player.audio is not None:
            self.player.audio.stop()  # ends the player's decoding thread
        with contextlib.suppress(Exception):
            self.loop.call(self.raw.close(), timeout=10)


def final_answer(event: dict[str, Any]) -> bool:
    """A response.done whose text reports the tools' outputs."""
    if event.get("type") != "response.done":
        return False
    output = event["response"].get("output") or []
    texts = [c.get("text", "") for item in output for c in item.get("content") or []]
    return any(t.startswith("Tool results:") for t in texts)


def user_text(text: str) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item}


def sideband_of(emu: Emulator, call_id: str, **kwargs: Any) -> RealtimeClient:
    return RealtimeClient(api_key=KEY, base_url=emu.url, call_id=call_id, **kwargs)


def is_ticket(event: dict[str, Any]) -> bool:
    return event["type"] == "response.create" and TICKET in (
        (event.get("response") or {}).get("metadata") or {}
    )


def is_output(event: dict[str, Any]) -> bool:
    return event["type"] == "conversation.item.create" and (
        event["item"]["type"] == "function_call_output"
    )


@pytest.fixture
def browsers() -> Iterator[LoopThread]:
    """The browsers' own loop thread (their aiortc lives there, not in rtclient's)."""
    with LoopThread("browsers") as loop:
        yield loop


def test_sixteen_tools_of_a_browser_response_one_followup_answer_reaches_the_browser(
    browsers: LoopThread, tmp_path: Path
) -> None:
    barrier = threading.Barrier(16, timeout=30)

    @tool
    def collide(i: int) -> int:
        """Finish at the same instant as 15 others."""
        barrier.wait()
        return i

    wav = tmp_path / "user.wav"
    write_tone(wav, seconds=1.0)
    with Emulator(turn_detection=None, pace=Pace(delay=0.002)) as emu:
        browser = Browser.call(browsers, emu, tools=[collide], wav=wav)
        try:
            session = emu.session(browser.call_id)
            assert [t["name"] for t in session.config["tools"]] == ["collide"]
            with ThreadPoolExecutor(16, thread_name_prefix="side-tool") as pool:
                side = sideband_of(emu, browser.call_id, tools=[collide], executor=pool)
                with side:
                    assert emu.wait_for(lambda: session.count("audio_frames_in") >= 10, 20)
                    # The browser asks and starts the response; the sideband runs its tools.
                    browser.send(user_text("use collide*16"))
                    browser.send({"type": "response.create", "event_id": "browser_1"})
                    done = browser.until(final_answer)
                    assert "collide -> 15" in done["response"]["output"][0]["content"][0]["text"]
                    assert TICKET in done["response"]["metadata"]  # the sideband's follow-up
                    events = session.client_events
                    outputs = [n for n, e in enumerate(events) if is_output(e)]
                    creates = [n for n, e in enumerate(events) if is_ticket(e)]
                    assert len(outputs) == 16 and len(creates) == 1
                    assert creates[0] > max(outputs), "all 16 outputs before the follow-up"
                    stats = side.stats()
                    assert stats["tool_calls"] == 16 and stats["lost"] == 0
                    assert emu.stats()["rejections"] == 0
                    assert not session.closed  # closing a sideband leaves the call up
        finally:
            browser.close()


def test_browser_creates_at_random_moments_nothing_lost_rejections_rearmed(
    browsers: LoopThread,
) -> None:
    """The browser starts its own responses at random; the sideband asks for 16 tools
    at a time. Either may start a response, so a sideband create can cross a browser
    response on the wire: that rejection is the server's to give, and the gate re-arms
    it. It must never be rejected by a response it had already seen start."""
    rounds = 6
    barrier = threading.Barrier(16, timeout=30)

    @tool
    def collide(i: int) -> int:
        """Finish at the same instant as 15 others."""
        barrier.wait()
        return i

    lines: list[str] = []  # the sideband's loop-thread log, in order
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    stop = asyncio.Event()
    sent: list[str] = []
    try:
        with Emulator(turn_detection=None, pace=Pace(delay=0.003)) as emu:
            browser = Browser.call(browsers, emu, tools=[collide], audio=False)

            async def noise(seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):  # pacing, not waiting
                        await asyncio.wait_for(stop.wait(), rng.uniform(0.005, 0.08))
                    event_id = f"browser_{len(sent) + 1}"
                    sent.append(event_id)
                    response = {"tool_choice": "none", "metadata": {"origin": "browser"}}
                    await browser.raw.send(
                        {"type": "response.create", "event_id": event_id, "response": response}
                    )

            try:
                with ThreadPoolExecutor(16, thread_name_prefix="side-tool") as pool:
                    # A browser this eager can win the race several times in a row;
                    # each loss is re-armed, within a bound set for a busy call.
                    side = sideband_of(
                        emu, browser.call_id, tools=[collide], executor=pool, max_attempts=20
                    )
                    with side:
                        noisy = browsers.submit(noise(seed=11))
                        answers = [side.ask("use collide*16", timeout=60) for _ in range(rounds)]
                        browsers.call_soon(stop.set)
                        noisy.result(10)
                        stats = side.stats()
            finally:
                browser.close()
            session = emu.session(browser.call_id)
            events, errors = session.client_events, session.errors
    finally:
        logger.remove(sink)
        logger.disable("rtclient")

    for answer in answers:
        assert len(answer.tool_calls) == 16
        assert "collide -> 15" in answer.text and TICKET in answer.raw["response"]["metadata"]
    assert stats["lost"] == 0 and stats["outstanding"] == 0 and stats["failed"] == 0
    assert len(sent) > rounds, "the browser did start responses meanwhile"

    ours = {e["event_id"] for e in events if is_ticket(e)}
    rejected = [e["error"] for e in errors if e["error"]["event_id"] in ours]
    assert all(r["code"] == ACTIVE for r in rejected)
    assert stats["rejections"] == len(rejected) and stats["rearmed"] >= len(rejected)
    started_by = {}  # response id -> who asked for it, from the server's own record
    for event in session.server_events:
        if event.get("type") == "response.created":
            metadata = event["response"].get("metadata") or {}
            started_by[event["response"]["id"]] = "sideband" if TICKET in metadata else "browser"
    for rejection in rejected:
        (blocker,) = re.findall(r"resp_[A-Za-z0-9]+", rejection["message"])
        assert started_by[blocker] == "browser", f"{rejection} - by a response of ours"
        # ... and one that started while that create was on the wire: the sideband had
        # not processed its response.created when the create left (loop-thread order).
        create_sent = _first(lines, rejection["event_id"], "sent")
        blocker_seen = _first(lines, blocker, "")
        assert create_sent < blocker_seen, (rejection, lines[create_sent], lines[blocker_seen])


def _first(lines: list[str], needle: str, also: str) -> int:
    for n, line in enumerate(lines):
        if needle in line and also in line:
            return n
    raise AssertionError(f"no log line with {needle!r} and {also!r}")


def test_fifty_browser_calls_fifty_sidebands_on_one_loop_thread(browsers: LoopThread) -> None:
    calls = 50

    @tool
    def lookup_order(i: int = 0) -> dict[str, Any]:
        """An order's status."""
        return {"status": "shipped"}

    with Emulator(turn_detection=None, pace=Pace(delay=0.002)) as emu:
        opened: list[Browser] = []
        sidebands: list[RealtimeClient] = []
        with LoopThread("sidebands") as shared, ThreadPoolExecutor(8) as app:
            try:
                # the app server, serving many offers at once
                for browser in app.map(
                    lambda _: Browser.call(browsers, emu, tools=[lookup_order], audio=False),
                    range(calls),
                ):
                    opened.append(browser)
                sidebands = [
                    sideband_of(emu, b.call_id, tools=[lookup_order], loop_thread=shared)
                    for b in opened
                ]
                list(app.map(lambda s: s.connect(timeout=30), sidebands))
                for browser in opened:
                    browser.send(user_text("use lookup_order"))
                    browser.send({"type": "response.create"})
                answers = [b.until(final_answer, timeout=60) for b in opened]
                assert all("lookup_order -> " in str(a["response"]["output"]) for a in answers)
                assert all(s.stats()["lost"] == 0 for s in sidebands)
                stats = emu.stats()
                assert stats["rejections"] == 0 and stats["active_sessions"] == calls
            finally:
                for side in sidebands:
                    side.close()
                for browser in opened:
                    browser.close()
            assert shared.running  # the shared loop outlives its clients


def test_hangup_ends_the_call_for_everyone(browsers: LoopThread) -> None:
    with Emulator(turn_detection=None, pace=Pace(delay=0.002)) as emu:
        browser = Browser.call(browsers, emu, tools=[], audio=False)
        try:
            other = sideband_of(emu, browser.call_id).connect()
            side = sideband_of(emu, browser.call_id).connect()
            try:
                side.hangup()
                assert side.closed
                browsers.call(browser.raw.wait_closed(10), timeout=15)
                assert emu.session(browser.call_id).closed
                assert _closed_within(other, 10)  # the other sideband's socket closed
                with pytest.raises(CallNotFoundError):
                    hangup_call(browser.call_id, api_key=KEY, base_url=emu.url)
                with pytest.raises(CallNotFoundError):
                    sideband_of(emu, browser.call_id).connect()
            finally:
                other.close()
        finally:
            browser.close()


def _closed_within(client: RealtimeClient, timeout: float) -> bool:
    try:
        stream = client.events(timeout=timeout)
    except ClosedError:
        return True  # already
    for _ in stream:  # ends when the client closes (or nothing arrives within timeout)
        pass
    return client.closed


def test_a_sideband_does_not_wait_for_session_created_and_errors_are_attributed(
    browsers: LoopThread,
) -> None:
    """A late attach sees no session.created; connect() is ready at session.updated.
    An error caused by the browser names no event of the sideband's: nothing of the
    sideband's fails."""
    with Emulator(turn_detection=None, pace=Pace(delay=0.01, deltas=20)) as emu:
        browser = Browser.call(browsers, emu, tools=[], audio=False)
        try:
            with sideband_of(emu, browser.call_id) as side:
                seen: list[str] = []
                created = threading.Event()
                side.on("*", lambda e: seen.append(e["type"]), raw=True)
                side.on("response.created", lambda e: created.set())  # the gate saw it
                browser.send({"type": "response.create", "event_id": "browser_1"})
                assert created.wait(10)
                ticket = side.request_response()  # queued behind the browser's response
                browser.send({"type": "response.create", "event_id": "browser_2"})  # refused
                browser.until(lambda e: e.get("type") == "error")
                # the browser's own error also reaches the sideband on some servers:
                payload = {
                    "type": "error",
                    "event_id": "event_injected",
                    "error": {
                        "type": "invalid_request_error",
                        "code": ACTIVE,
                        "message": "Conversation already has an active response in progress.",
                        "param": None,
                        "event_id": "browser_2",
                    },
                }
                emu.session(browser.call_id).inject(json.dumps(payload))
                done = ticket.result(30)
                assert done["response"]["status"] == "completed"
                stats = side.stats()
                assert stats["lost"] == 0 and stats["failed"] == 0 and stats["rearmed"] == 0
                assert "session.created" not in seen
                assert not side.closed
        finally:
            browser.close()


def test_interrupt_on_a_sideband_cancels_and_clears_the_calls_audio(
    browsers: LoopThread,
) -> None:
    """The session is a WebRTC one: its output audio buffer is the server's, so the
    sideband's barge-in is the WebRTC one (cancel, then output_audio_buffer.clear)."""
    pace = Pace(delay=0.02, deltas=40, audio_ms_per_delta=1000)  # 1 s buffered per delta
    with Emulator(turn_detection=None, pace=pace) as emu:
        browser = Browser.call(browsers, emu, tools=[])
        try:
            with sideband_of(emu, browser.call_id) as side:
                speaking = threading.Event()  # audio is in the call's output buffer
                side.on("response.output_audio_transcript.delta", lambda e: speaking.set())
                browser.send(
                    {"type": "response.create", "response": {"output_modalities": ["audio"]}}
                )
                assert speaking.wait(10)
                done = side.interrupt(timeout=10)
                assert done is not None and done["response"]["status"] == "cancelled"
                browser.until("output_audio_buffer.cleared")
                kinds = [e["type"] for e in emu.session(browser.call_id).client_events]
                assert kinds[-2:] == ["response.cancel", "output_audio_buffer.clear"]
        finally:
            browser.close()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_hangup_of_an_own_call_or_session(transport: str) -> None:
    with Emulator(turn_detection=None) as emu:
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            loopback_only=True,
            transport=transport,  # type: ignore[arg-type]
        ).connect()
        session = emu.sessions[-1]
        client.hangup()
        assert client.closed
        assert emu.wait_for(lambda: session.closed, 10)
        with pytest.raises(ClosedError):
            client.hangup()  # nothing left to end
