"""Typed and raw subscribers see the same events: every event type the emulator sends.

A real client runs scripted turns against the emulator over each transport - a spoken
turn with input transcription, a text answer, an audio answer, a tool round, item
retrieve/truncate/delete, a server error, a cleared input buffer, a padded
``rate_limits.updated`` and an event type no model knows - with one ``"*"`` typed and
one ``"*"`` raw subscriber. For each event the typed one got, the model's content
(``model_dump(exclude_unset=True)``) is the raw dict, the model equals what an eager
``model_validate`` makes, and after that read it *is* the model class. Typed events are
built on first read (``rtclient.core.lazy_model``); this is where that is shown to
change nothing a reader can see. The models are made on the loop thread as each event is
handed over, so the dispatcher parses none of them itself.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from rtclient import LiveClient, RealtimeClient, ServerError, live_events, tool
from rtclient.core import events as ev
from rtclient.core.lazy_model import plain_fields
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(90)

VAD_NO_RESPONSE = {"type": "server_vad", "create_response": False, "interrupt_response": False}
EVERY_TRANSPORT = {
    "session.created", "session.updated", "error", "rate_limits.updated",
    "emulator.unknown_event",  # no model: the typed subscriber gets the dict
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
    "conversation.item.truncated", "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "response.created", "response.done", "response.output_item.added",
    "response.output_item.done", "response.content_part.added", "response.content_part.done",
    "response.output_text.delta", "response.output_text.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
}  # fmt: skip
PER_TRANSPORT = {
    "websocket": {"response.output_audio.delta", "response.output_audio.done"},
    "webrtc": {"output_audio_buffer.started"},
}


@tool
def get_weather(city: str = "Paris") -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21}


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_typed_and_raw_subscribers_see_the_same_content(
    rt_emulator: Emulator, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_by_dispatcher: list[str] = []  # what the dispatcher had to parse itself
    shipped_to_model = ev.to_model

    def to_model(event: Any) -> Any:
        if client._dispatcher.in_thread():  # not update_session()'s typed answer, say
            parsed_by_dispatcher.append(event["type"])
        return shipped_to_model(event)

    monkeypatch.setattr(ev, "to_model", to_model)
    typed: list[Any] = []
    raw: list[dict[str, Any]] = []
    last = threading.Event()
    client = RealtimeClient(
        api_key="sk-test", base_url=rt_emulator.url, transport=transport,
        loopback_only=True, tools=[get_weather],
    )  # fmt: skip
    client.on("*", typed.append)  # before connect: session.created too
    client.on("*", raw.append, raw=True)
    client.on(
        "response.done",
        lambda e: last.set() if e["response"]["metadata"].get("last") else None,
        raw=True,
    )
    try:
        client.connect()
        play_every_kind_of_turn(client, rt_emulator)
        client.request_response(metadata={"last": "yes"})
        assert last.wait(20), "the last response.done never reached the subscribers"
    finally:
        client.close()
    models = ev.event_models()
    assert set(parsed_by_dispatcher) <= {"emulator.unknown_event"}  # no model: tried
    sent = rt_emulator.sessions[-1].server_events
    assert [e.get("event_id") for e in raw] == [e.get("event_id") for e in sent[: len(raw)]]
    assert_same_content(typed, raw, models)
    seen = {e["type"] for e in raw}
    missing = (EVERY_TRANSPORT | PER_TRANSPORT[transport]) - seen
    assert not missing, f"the scripted turns did not produce {sorted(missing)}"


def play_every_kind_of_turn(client: RealtimeClient, emulator: Emulator) -> None:
    session = emulator.sessions[-1]
    cleared = threading.Event()
    client.on("input_audio_buffer.cleared", lambda e: cleared.set(), raw=True)
    client.set_input_transcription("gpt-4o-transcribe")
    client.update_session(audio={"input": {"turn_detection": VAD_NO_RESPONSE}})
    session.simulate_speech("what is the weather like in Oslo today")
    session.set_faults(oversized_event_bytes=400, unknown_event=True)  # before each create
    client.send_text("hello", respond=False)
    text = client.request_response(output_modalities=["text"]).result(20)
    assert text["response"]["output"][0]["content"][0]["text"] == "You said: hello"
    session.set_faults(oversized_event_bytes=0, unknown_event=False)
    client.send_text("tell me", respond=False)
    audio = client.request_response(output_modalities=["audio"]).result(20)
    client.ask('use get_weather({"city": "Oslo"})', timeout=20)
    item_id = audio["response"]["output"][0]["id"]
    assert client.get_item(item_id, raw=True)["id"] == item_id
    client.truncate_item(item_id, 0, 0)
    client.delete_item(item_id)
    with pytest.raises(ServerError):
        client.delete_item("item_missing")  # the server's error event
    client.send_event({"type": "input_audio_buffer.clear"})
    assert cleared.wait(10)


def assert_same_content(typed: list[Any], raw: list[dict[str, Any]], models: Any) -> None:
    """Each typed event is its raw dict's model, unbuilt until read, equal to an eager
    ``model_validate``; an event no model describes is the dict itself."""
    assert len(typed) == len(raw)
    for model, event in zip(typed, raw, strict=True):
        kind = event["type"]
        if kind not in models:
            assert model is event  # no model describes it: the dict itself
            continue
        cls = models[kind]
        eager = cls.model_validate(event)
        assert isinstance(model, cls) and model.__class__ is cls, kind
        assert type(model) is not cls, kind  # the pre-check passed it: not built yet
        for name in plain_fields(cls.__pydantic_core_schema__):
            assert getattr(model, name) == getattr(eager, name), (kind, name)
        assert type(model) is not cls, kind  # top-level scalars are read unbuilt
        assert model.model_dump(exclude_unset=True) == event, kind
        assert type(model) is cls, kind  # built: the model class itself
        assert model == eager and eager == model, kind


def test_live_typed_and_raw_subscribers_see_the_same_content() -> None:
    """The same for GPT-Live: a spoken turn that delegates, the handler's result, the
    answer and the close; the models are made on the loop thread too."""
    parsed_by_dispatcher: list[str] = []
    shipped_to_model = live_events.to_model

    def to_model(event: Any) -> Any:
        if client._dispatcher.in_thread():
            parsed_by_dispatcher.append(event["type"])
        return shipped_to_model(event)

    typed: list[Any] = []
    raw: list[dict[str, Any]] = []
    closed = threading.Event()
    with Emulator(pace=Pace(delay=0.002)) as emulator:
        client = LiveClient(
            api_key="sk-test", base_url=emulator.url, delegation=lambda task: "Staging is healthy."
        )
        catalog = client._dispatcher.catalog
        client._dispatcher.catalog = dataclasses.replace(catalog, to_model=to_model)
        client.on("*", typed.append)
        client.on("*", raw.append, raw=True)
        client.on("session.closed", lambda e: closed.set(), raw=True)
        try:
            client.connect()
            session = emulator.live_session(client.session_id or "")
            session.simulate_speech("please delegate a staging check")
            assert emulator.wait_for(
                lambda: any(e["type"].endswith(".appended") for e in raw), 20
            ), "the result never landed"
            session.close()
            assert closed.wait(20)
        finally:
            client.close()
    models = live_events.event_models()
    assert set(parsed_by_dispatcher) <= set(live_events.CLIENT_SIDE_MODELS)
    assert_same_content(typed, raw, models)
    seen = {e["type"] for e in raw}
    wanted = {"session.started", "session.delegation.created", "session.output_transcript.delta",
              "session.closed"}  # fmt: skip
    assert wanted <= seen, f"the turn did not produce {sorted(wanted - seen)}"
