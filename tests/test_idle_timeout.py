"""Idle timeouts are responses the server starts.

With ``turn_detection.idle_timeout_ms`` the server, after that much silence following
the last response, sends ``input_audio_buffer.timeout_triggered``, commits the silence as
a user turn and starts a response of its own. The gate holds it as active from its
``response.created`` like any response; a create of ours that crosses it is rejected
and re-armed; nothing is lost and nothing is answered twice. Every assertion here is on
what the emulator - the referee - recorded.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rtclient import RealtimeClient, tool
from rtclient.emulator import Emulator, Faults, Pace
from rtclient.emulator.model import STILL_THERE, TOOL_RESULTS
from rtclient.emulator.session import Session

pytestmark = pytest.mark.timeout(90)

TEXT = {"output_modalities": ["text"]}  # the idle count starts at response.done


@pytest.fixture(params=["webrtc", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def idle_vad(timeout_ms: int) -> dict[str, Any]:
    return {"type": "server_vad", "idle_timeout_ms": timeout_ms}


def client_for(emulator: Emulator, transport: str, **kwargs: Any) -> RealtimeClient:
    kwargs.setdefault("session", TEXT)
    return RealtimeClient(
        api_key="sk-test",
        base_url=emulator.url,
        loopback_only=True,
        transport=transport,  # type: ignore[arg-type]
        **kwargs,
    )


def assistant_texts(session: Session) -> list[str]:
    return [
        str(item["content"][0].get("text") or item["content"][0].get("transcript"))
        for item in session.items()
        if item.get("role") == "assistant" and item.get("content")
    ]


def client_creates(session: Session) -> list[dict[str, Any]]:
    return [e for e in session.client_events if e.get("type") == "response.create"]


def settle(emulator: Emulator, client: RealtimeClient) -> Session:
    """Turn the idle timeout off and wait until no response runs: the record is final."""
    client.update_session(audio={"input": {"turn_detection": {"type": "server_vad"}}})
    session = emulator.sessions[-1]
    assert emulator.wait_for(lambda: session.active_response_id is None, 10)
    return session


def test_an_idle_timeout_response_is_active_in_the_gate(transport: str) -> None:
    """The events the API documents, in order; the gate holds the server's response as
    active, so a request made meanwhile waits for it instead of being rejected."""
    pace = Pace(delay=0.05, deltas=4)  # the idle answer streams for ~0.2 s
    with Emulator(turn_detection=idle_vad(100), pace=pace) as emulator:
        with client_for(emulator, transport) as client:
            seen: list[tuple[str, str | None]] = []
            idle_started = threading.Event()

            def on_created(event: dict[str, Any]) -> None:
                response = event["response"]
                if "rtclient_ticket" not in (response.get("metadata") or {}):
                    seen.append((response["id"], client.gate.active))
                    idle_started.set()

            client.on("response.created", on_created, raw=True)
            assert client.ask("hello", timeout=30).text == "You said: hello"
            assert idle_started.wait(10)
            answered = client.request_response().result(10)  # while the idle one runs
            session = settle(emulator, client)

            idle_id, active_then = seen[0]
            assert active_then == idle_id  # the gate counted it as active
            types = session.server_event_types()
            at = types.index("input_audio_buffer.timeout_triggered")
            assert types[at : at + 5] == [
                "input_audio_buffer.timeout_triggered",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "response.created",
            ]
            trigger = session.server_events[at]
            committed = session.server_events[at + 1]
            assert trigger["item_id"] == committed["item_id"]
            assert trigger["audio_end_ms"] - trigger["audio_start_ms"] == 100
            assert STILL_THERE in assistant_texts(session)
            assert answered["response"]["id"] != idle_id
            stats = client.stats()
            assert stats["idle_timeouts"] == session.count("idle_timeouts") >= 1
            assert session.count("rejections") == stats["rejections"] == 0
            assert stats["server_started_responses"] == 0 and stats["lost"] == 0


def test_an_idle_timeout_crossing_a_tool_follow_up_is_rejected_rearmed_and_answered_once(
    transport: str,
) -> None:
    """Staged on every run (``Faults(idle_timeout_on_create=True)``): the idle timeout
    comes due the instant the tool round's follow-up create arrives, so the server starts
    its own response first and rejects ours. The gate re-arms the follow-up and sends
    it after the idle response's ``response.done``: each turn answered exactly once."""

    @tool
    def get_weather(city: str = "Paris") -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 21}

    faults = Faults(idle_timeout_on_create=True)
    with Emulator(turn_detection=idle_vad(60_000), faults=faults) as emulator:
        with client_for(emulator, transport, tools=[get_weather]) as client:
            answer = client.ask("use get_weather", timeout=30)
            session = settle(emulator, client)

    assert answer.text.startswith(TOOL_RESULTS) and len(answer.tool_calls) == 1
    (rejection,) = session.errors
    assert rejection["error"]["code"] == "conversation_already_has_active_response"
    creates = client_creates(session)
    assert [c["event_id"] for c in creates].count(rejection["error"]["event_id"]) == 1
    assert len(creates) == 3  # the question, the rejected follow-up, the re-armed one
    assert session.count("idle_timeouts") == session.count("idle_responses") == 1
    assert session.count("responses") == 3  # question, idle answer, tool results
    texts = assistant_texts(session)
    assert texts.count(STILL_THERE) == 1
    assert sum(t.startswith(TOOL_RESULTS) for t in texts) == 1
    stats = client.stats()
    assert stats["rejections"] == stats["rearmed"] == session.count("rejections") == 1
    assert stats["lost"] == 0 and stats["failed"] == 0
    assert stats["creates_sent"] == len(creates)


def test_an_idle_timeout_racing_a_slow_tool_loses_nothing(transport: str) -> None:
    """Unstaged: the tool finishes just as the idle timeout's response starts; whichever
    way the race goes (our create queued behind it, or rejected and re-armed), every
    turn is answered once."""
    pace = Pace(delay=0.03, deltas=4)

    with Emulator(turn_detection=idle_vad(100), pace=pace) as emulator:

        @tool
        def slow_lookup() -> str:
            """Finishes when the server has started its idle-timeout response."""
            session = emulator.sessions[-1]
            emulator.wait_for(lambda: session.count("idle_responses") >= 1, 10)
            return "found"

        with client_for(emulator, transport, tools=[slow_lookup]) as client:
            answer = client.ask("use slow_lookup", timeout=30)
            session = settle(emulator, client)

    assert answer.text == f"{TOOL_RESULTS}slow_lookup -> found."
    texts = assistant_texts(session)
    assert sum(t.startswith(TOOL_RESULTS) for t in texts) == 1
    assert texts.count(STILL_THERE) == session.count("idle_timeouts") >= 1
    stats = client.stats()
    rejections = session.count("rejections")
    assert stats["rejections"] == stats["rearmed"] == rejections
    assert len(client_creates(session)) == 2 + rejections
    assert stats["lost"] == 0 and stats["failed"] == 0


def test_with_client_turns_the_idle_turn_is_the_servers_to_answer(transport: str) -> None:
    """``client_turns=True`` answers every committed turn itself - except the silence an
    idle timeout commits: the server answers that one, and the client does not again."""
    session_config = {**TEXT, "audio": {"input": {"turn_detection": idle_vad(100)}}}
    with Emulator(turn_detection=None) as emulator:
        with client_for(emulator, transport, client_turns=True, session=session_config) as client:
            session = emulator.sessions[-1]
            detection = session.config["audio"]["input"]["turn_detection"]
            assert detection["create_response"] is False and detection["idle_timeout_ms"] == 100
            client.ask("hello", timeout=30)
            assert emulator.wait_for(lambda: session.count("idle_responses") >= 1, 10)
            settle(emulator, client)
            idle_turns = session.count("idle_timeouts")
            stats = client.stats()

    assert len(client_creates(session)) == 1  # "hello" only: no create for the silence
    assert session.count("responses") == 1 + idle_turns
    assert assistant_texts(session).count(STILL_THERE) == idle_turns
    assert stats["idle_timeouts"] == idle_turns
    assert stats["server_started_responses"] == 0  # expected, not someone else's
    assert session.count("rejections") == stats["rejections"] == 0 and stats["lost"] == 0
