"""The session and the conversation, waitable: ``update_session``,
``set_input_transcription``, ``get_item``, ``delete_item``, ``truncate_item``.

Each call sends its client event and waits for the server event that answers it, or
the server's error naming its ``event_id`` - against the emulator, the referee, over
both transports. Every wait follows the one waiter rule: after close it fails at once,
from a callback it is refused, and a timeout says what it waited for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from threads import run_at_once

from rtclient import (
    ClosedError,
    RealtimeClient,
    RealtimeError,
    ServerError,
    WaitTimeoutError,
    WrongThreadError,
)
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]
VAD_NO_RESPONSE = {"type": "server_vad", "create_response": False, "interrupt_response": False}


@pytest.fixture(params=["webrtc", "websocket"])
def rt_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sent(emulator: Emulator, kind: str) -> list[dict[str, Any]]:
    return [e for e in emulator.sessions[-1].client_events if e.get("type") == kind]


def assistant_item(client: RealtimeClient, **params: Any) -> dict[str, Any]:
    """Start a response and return the assistant message it wrote (the dict)."""
    client.send_text("say something", respond=False)
    done = client.request_response(**params).result(20)
    item: dict[str, Any] = done["response"]["output"][0]
    return item


def test_update_session_returns_the_updated_session(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    session = client.update_session(instructions="Be brief.", output_modalities=["text"])
    assert type(session).__name__ == "RealtimeSessionCreateRequest"
    assert session.instructions == "Be brief." and session.output_modalities == ["text"]
    raw = client.update_session(instructions="Be kind.", raw=True)
    assert raw["instructions"] == "Be kind." and raw["output_modalities"] == ["text"]
    assert rt_emulator.sessions[-1].config["instructions"] == "Be kind."


def test_update_session_raises_the_error_the_server_answered(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    with pytest.raises(ServerError) as info:
        client.update_session(type="transcription")
    assert info.value.code == "invalid_value" and info.value.param == "session.type"
    assert info.value.event_id == sent(rt_emulator, "session.update")[-1]["event_id"]
    assert client.update_session(instructions="still fine").instructions == "still fine"


def test_concurrent_updates_each_get_an_answer(rt_connect: Connect) -> None:
    client = rt_connect()
    sessions = run_at_once(8, lambda i: client.update_session(instructions=f"v{i}"), 30)
    assert len(sessions) == 8 and all(s.type == "realtime" for s in sessions)
    assert len(client._waiters) == 0 and client._core._expected == {}


def test_client_turns_survive_a_turn_detection_update(rt_connect: Connect) -> None:
    client = rt_connect(client_turns=True)
    detection = {"type": "server_vad", "threshold": 0.7}
    session = client.update_session(audio={"input": {"turn_detection": detection}})
    turn = session.audio.input.turn_detection  # type: ignore[union-attr]
    assert turn.threshold == 0.7 and turn.create_response is False  # type: ignore[union-attr]


def test_get_item_returns_the_servers_copy(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    item = assistant_item(client)
    typed = client.get_item(item["id"])
    assert type(typed).__name__ == "RealtimeConversationItemAssistantMessage"
    assert typed.id == item["id"] and typed.role == "assistant"  # type: ignore[union-attr]
    assert client.get_item(item["id"], raw=True) == rt_emulator.sessions[-1].items()[-1]


def test_two_waiters_on_one_item_and_a_failing_one_at_once(rt_connect: Connect) -> None:
    """Answers go to calls by item id, in order; the error only to the call it names."""
    client = rt_connect()
    item_id = assistant_item(client)["id"]

    def ask(i: int) -> Any:
        try:
            return client.get_item("item_missing" if i == 2 else item_id, raw=True)
        except ServerError as exc:
            return exc

    first, second, missing = run_at_once(3, ask, 30)
    assert first["id"] == second["id"] == item_id
    assert isinstance(missing, ServerError) and missing.code == "item_retrieve_invalid_item_id"


def test_get_item_of_an_unknown_item_raises_the_servers_error(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    with pytest.raises(ServerError) as info:
        client.get_item("item_nope")
    assert info.value.code == "item_retrieve_invalid_item_id"
    assert info.value.event_id == sent(rt_emulator, "conversation.item.retrieve")[-1]["event_id"]


def test_delete_item(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    item_id = assistant_item(client)["id"]
    assert client.delete_item(item_id) is None
    assert item_id not in [i["id"] for i in rt_emulator.sessions[-1].items()]
    with pytest.raises(ServerError) as info:
        client.delete_item(item_id)  # gone: the server says so
    assert info.value.code == "item_delete_invalid_item_id"
    with pytest.raises(ServerError):
        client.get_item(item_id)


def test_truncate_item(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    audio = assistant_item(client, output_modalities=["audio"])
    assert audio["content"][0]["type"] == "output_audio"
    assert client.truncate_item(audio["id"], 0, 0) is None
    item = rt_emulator.sessions[-1].items()[-1]
    assert item["id"] == audio["id"] and item["content"][0]["transcript"] == ""
    with pytest.raises(ServerError) as info:
        client.truncate_item(audio["id"], 0, 10_000_000)  # beyond its audio
    assert info.value.code == "invalid_value" and info.value.param == "audio_end_ms"
    text = assistant_item(client, output_modalities=["text"])
    with pytest.raises(ServerError):
        client.truncate_item(text["id"], 0, 0)  # not audio


def test_input_transcription_events_reach_callbacks(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    session = client.set_input_transcription("gpt-4o-transcribe", language="en")
    transcription = session.audio.input.transcription  # type: ignore[union-attr]
    assert transcription.model == "gpt-4o-transcribe" and transcription.language == "en"  # type: ignore[union-attr]
    client.update_session(audio={"input": {"turn_detection": VAD_NO_RESPONSE}})
    deltas: list[str] = []
    completed: list[Any] = []
    finished = threading.Event()
    client.on(
        "conversation.item.input_audio_transcription.delta", lambda e: deltas.append(e.delta or "")
    )
    client.on(
        "conversation.item.input_audio_transcription.completed",
        lambda e: (completed.append(e), finished.set()),
    )
    spoken = rt_emulator.sessions[-1].simulate_speech("what time is it")
    assert finished.wait(10)
    (event,) = completed
    assert event.item_id == spoken["item_id"] and event.transcript == "what time is it"
    assert "".join(deltas) == "what time is it"
    off = client.set_input_transcription(None, raw=True)
    assert off["audio"]["input"]["transcription"] is None


# -- the one waiter rule ----------------------------------------------------------------


def _calls(client: RealtimeClient) -> dict[str, Callable[[], Any]]:
    return {
        "update_session": lambda: client.update_session(instructions="x", timeout=None),
        "set_input_transcription": lambda: client.set_input_transcription(None, timeout=None),
        "get_item": lambda: client.get_item("item_1", timeout=None),
        "delete_item": lambda: client.delete_item("item_1", timeout=None),
        "truncate_item": lambda: client.truncate_item("item_1", 0, 0, timeout=None),
    }


def _outcomes(calls: dict[str, Callable[[], Any]]) -> dict[str, str]:
    raised = {}
    for name, call in calls.items():
        try:
            call()
            raised[name] = "returned"
        except BaseException as exc:
            raised[name] = type(exc).__name__
    return raised


def test_after_close_every_call_fails_at_once(rt_connect: Connect) -> None:
    client = rt_connect()
    client.close()
    outcomes = _outcomes(_calls(client))  # timeout=None: a wait would never end
    assert outcomes == dict.fromkeys(outcomes, "ClosedError") and len(outcomes) == 5


def test_a_wait_in_progress_fails_when_the_client_closes(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    rt_emulator.sessions[-1].set_faults(ignore_event_type="conversation.item.retrieve")
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            client.get_item("item_1", timeout=None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    assert rt_emulator.wait_for(lambda: bool(sent(rt_emulator, "conversation.item.retrieve")), 10)
    client.close()
    waiter.join(20)
    assert not waiter.is_alive() and isinstance(outcome[0], ClosedError)


def test_from_a_callback_every_call_is_refused(rt_connect: Connect) -> None:
    client = rt_connect()
    outcomes: dict[str, str] = {}
    finished = threading.Event()

    def on_done(event: Any) -> None:
        if not finished.is_set():
            outcomes.update(_outcomes(_calls(client)))
            finished.set()

    client.on("response.done", on_done)
    client.request_response()
    assert finished.wait(20)
    assert outcomes == dict.fromkeys(outcomes, "WrongThreadError") and len(outcomes) == 5


def test_a_timeout_says_what_was_waited_for(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    session.set_faults(ignore_event_type="conversation.item.retrieve")
    with pytest.raises(WaitTimeoutError) as info:
        client.get_item("item_1", timeout=0.2)
    assert "conversation.item.retrieved answering get_item('item_1')" in str(info.value)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RealtimeError)
    session.set_faults(ignore_event_type="session.update")
    with pytest.raises(WaitTimeoutError, match=r"session\.updated answering update_session\(\)"):
        client.update_session(instructions="lost", timeout=0.2)
    assert len(client._waiters) == 0  # a timed-out wait leaves nothing behind
    session.set_faults(ignore_event_type=None)
    assert client.update_session(instructions="heard").instructions == "heard"


def test_wrong_thread_error_names_the_call(rt_connect: Connect) -> None:
    client = rt_connect()
    seen: list[str] = []
    finished = threading.Event()

    def on_created(event: Any) -> None:
        try:
            client.get_item("item_1")
        except WrongThreadError as exc:
            seen.append(str(exc))
        finished.set()

    client.on("response.created", on_created)
    client.request_response()
    assert finished.wait(20)
    assert seen and seen[0].startswith("get_item('item_1') would block the dispatcher thread")
