"""Client-driven turns: server VAD commits the user's turn, the client starts the answer.

With ``client_turns=True`` the session says ``create_response: false``: the server (the
emulator here, enforcing it as the API does) starts no response of its own, so every
response comes through the gate - and a tool follow-up can never cross a VAD reply.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rtclient import RealtimeClient, tool
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def vad_emulator() -> Iterator[Emulator]:
    """Server VAD on (the API's default: create_response and interrupt_response true)."""
    with Emulator(pace=Pace(delay=0.005)) as emulator:
        yield emulator


def _connect(emulator: Emulator, **kwargs: Any) -> RealtimeClient:
    return RealtimeClient(
        api_key="sk-test", base_url=emulator.url, loopback_only=True, **kwargs
    ).connect()


def test_a_committed_turn_is_answered_through_the_gate(vad_emulator: Emulator) -> None:
    client = _connect(vad_emulator, client_turns=True)
    try:
        session = vad_emulator.sessions[-1]
        detection = session.config["audio"]["input"]["turn_detection"]
        assert detection["create_response"] is False and detection["interrupt_response"]
        answered = threading.Event()
        texts: list[str] = []

        def on_done(event: dict[str, Any]) -> None:
            texts.append(str(event["response"]["output"]))
            answered.set()

        client.on("response.done", on_done, raw=True)
        spoken = session.simulate_speech("what time is it?")
        assert spoken["response_id"] is None  # the server started nothing itself
        assert answered.wait(10)
        assert "what time is it?" in texts[0]
        creates = [e for e in session.client_events if e["type"] == "response.create"]
        assert len(creates) == 1  # ours, carrying the gate's ticket
        assert creates[0]["response"]["metadata"]["rtclient_ticket"] == creates[0]["event_id"]
        assert client.stats()["lost"] == 0
    finally:
        client.close()


def test_speech_racing_a_tool_round_is_never_rejected(vad_emulator: Emulator) -> None:
    """The RCA's VAD race, in client-turns mode: the user speaks while a tool round
    finishes, many times; the server never rejects a create."""
    release = threading.Event()

    @tool
    def slow(i: int = 0) -> int:
        """Finishes when the test says so."""
        release.wait(10)
        return i

    client = _connect(vad_emulator, client_turns=True, tools=[slow])
    try:
        session = vad_emulator.sessions[-1]
        for _ in range(8):
            release.clear()
            ticket = client.send_text("use slow*4")
            assert ticket is not None
            ticket.result(10)  # the calls are running
            racer = threading.Thread(target=session.simulate_speech, args=("and also?", 100))
            racer.start()
            release.set()  # tool outputs and the user's turn land together
            racer.join(10)
            assert vad_emulator.wait_for(lambda: session.active_response_id is None, 10)
        stats = vad_emulator.stats()
        assert stats["rejections"] == 0 and client.stats()["rejections"] == 0
        assert client.stats()["lost"] == 0
    finally:
        release.set()
        client.close()


def test_an_update_that_turns_server_responses_back_on_is_reasserted(
    vad_emulator: Emulator,
) -> None:
    """A raw session.update (as the browser or another sideband could send) turns the
    server's own responses back on; the client re-asserts its turn settings, so the
    next 5 turns get 5 responses and 0 rejections, and says so (WARNING, counter)."""
    client = _connect(vad_emulator, client_turns=True)
    try:
        session = vad_emulator.sessions[-1]
        reasserted = threading.Event()
        updates: list[dict[str, Any]] = []

        def on_updated(event: dict[str, Any]) -> None:
            updates.append(event)
            detection = event["session"]["audio"]["input"]["turn_detection"]
            if len(updates) >= 2 and detection["create_response"] is False:
                reasserted.set()

        client.on("session.updated", on_updated, raw=True)
        on = {"type": "server_vad", "create_response": True, "interrupt_response": True}
        client.send_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": on}}},
            }
        )
        assert reasserted.wait(10)  # ours came back: create_response is off again
        assert session.config["audio"]["input"]["turn_detection"]["create_response"] is False
        assert client.stats()["client_turns_reasserted"] == 1
        done = threading.Semaphore(0)
        client.on("response.done", lambda event: done.release(), raw=True)
        for turn in range(5):
            session.simulate_speech(f"turn {turn}")
            assert done.acquire(timeout=10)
        assert not done.acquire(timeout=0.3)  # no sixth response (a bounded look, not a sync)
        stats = client.stats()
        assert stats["rejections"] == 0 and stats["server_started_responses"] == 0
        assert vad_emulator.stats()["rejections"] == 0
    finally:
        client.close()


def test_a_server_started_response_in_client_turns_mode_is_counted() -> None:
    """With the update left in place (the client cannot see it in time), the server's
    own reply is counted and logged, and the gate keeps the client's create from
    colliding with it."""
    from rtclient.core.gate import ResponseGate
    from rtclient.core.realtime import RealtimeProtocol
    from rtclient.tools import ToolRunner

    core = RealtimeProtocol(ResponseGate(), ToolRunner(()), client_turns=True)
    core.receive('{"type": "response.created", "response": {"id": "resp_1", "metadata": {}}}')
    assert core.counters["server_started_responses"] == 1
