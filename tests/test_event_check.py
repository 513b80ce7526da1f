"""The pre-check and the lazy models behind typed events.

``rtclient.core.event_check`` may say "valid" only when pydantic would: checked here on
every event type the emulator sends - over the Realtime API and GPT-Live - and on
thousands of mutations of them (a field dropped, retyped, nulled, a new enum value, at
every depth), against the models' own validators. ``to_model`` must fail exactly when
``model_validate`` fails and otherwise equal it. ``rtclient.core.lazy_model``'s models
must behave as the model class does - equality, copies, pickling, dumps, attribute
errors - and build once when several threads read at once.
"""

from __future__ import annotations

import copy
import json
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from rtclient import EventValidationError, LiveClient, RealtimeClient, live_events, tool
from rtclient.core import events as ev
from rtclient.core.event_check import compile_check
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(120)

VAD_NO_RESPONSE = {"type": "server_vad", "create_response": False, "interrupt_response": False}
ODD_VALUES: list[Any] = [None, 0, 7, -1, 2**70, 1.5, True, "", "x", [], {}, [1], {"a": 1}]


@tool
def get_weather(city: str = "Paris") -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21}


@pytest.fixture(scope="module")
def sent() -> list[dict[str, Any]]:
    """Every server event of a session with speech, text, audio, a tool and an error."""
    with Emulator(turn_detection=None, pace=Pace(delay=0.0, deltas=4)) as emulator:
        client = RealtimeClient(
            api_key="sk-test", base_url=emulator.url, transport="websocket",
            tools=[get_weather],
        ).connect()  # fmt: skip
        try:
            session = emulator.sessions[-1]
            client.set_input_transcription("gpt-4o-transcribe")
            client.update_session(audio={"input": {"turn_detection": VAD_NO_RESPONSE}})
            session.simulate_speech("what is the weather like in Oslo today")
            session.set_faults(oversized_event_bytes=300)
            client.send_text("hello", respond=False)
            client.request_response(output_modalities=["text"]).result(20)
            session.set_faults(oversized_event_bytes=0)
            client.send_text("tell me", respond=False)
            client.request_response(output_modalities=["audio"]).result(20)
            client.ask('use get_weather({"city": "Oslo"})', timeout=20)
            with pytest.raises(Exception):  # noqa: B017 - any ServerError: we want its event
                client.delete_item("item_missing")
            events = session.server_events
        finally:
            client.close()
    ev.prepare_models(["*"])
    return [e for e in events if e.get("type") in ev.event_models()]


@pytest.fixture(scope="module")
def live_sent() -> list[dict[str, Any]]:
    """Every server event of a GPT-Live session with speech, a delegation and a close."""
    with Emulator(pace=Pace(delay=0.0)) as emulator:
        events: list[dict[str, Any]] = []
        client = LiveClient(
            api_key="sk-test", base_url=emulator.url, delegation=lambda task: "All is well."
        )
        client.on("*", events.append, raw=True)
        client.connect()
        try:
            session = emulator.live_session(client.session_id or "")
            session.simulate_speech("please delegate a health check")
            assert emulator.wait_for(
                lambda: any(e["type"].endswith(".appended") for e in events), 20
            )
            session.close()
            assert emulator.wait_for(lambda: session.closed, 20)
            events = session.server_events
        finally:
            client.close()
    live_events.prepare_models(["*"])
    return [e for e in events if e.get("type") in live_events.event_models()]


def samples(sent: list[dict[str, Any]], per_type: int = 2) -> Iterator[dict[str, Any]]:
    counts: dict[str, int] = {}
    for event in sent:
        counts[event["type"]] = counts.get(event["type"], 0) + 1
        if counts[event["type"]] <= per_type:
            yield event


def mutations(value: Any) -> Iterator[Any]:
    """``value`` with one thing changed, at every path: dropped, retyped, renamed."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for odd in [*ODD_VALUES, *_near(inner)]:
                if odd is not inner:
                    yield {**value, key: odd}
            for changed in mutations(inner):
                yield {**value, key: changed}
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            for changed in [*ODD_VALUES, *mutations(inner)]:
                yield [*value[:i], changed, *value[i + 1 :]]


def _near(value: Any) -> list[Any]:
    """Values a sloppy server might send instead: a new enum value, a number as text."""
    if isinstance(value, str):
        return [value + "_new", value.upper()]
    if isinstance(value, bool):
        return [int(value), str(value).lower()]
    if isinstance(value, int):
        return [str(value), float(value), value + 0.5]
    return []


def validates(model: type[Any], event: Any) -> bool:
    try:
        model.model_validate(event)
    except pydantic.ValidationError:
        return False
    return True


def test_every_event_the_emulator_sends_passes_the_check(sent: list[dict[str, Any]]) -> None:
    models = ev.event_models()
    kinds = {e["type"] for e in sent}
    assert len(kinds) >= 20
    for event in sent:
        check = compile_check(models[event["type"]].__pydantic_core_schema__)
        assert check is not None and check(event) is True, event["type"]


@pytest.mark.parametrize("api", ["realtime", "live"])
def test_the_check_says_valid_only_when_pydantic_does(
    api: str, request: pytest.FixtureRequest
) -> None:
    if api == "realtime":
        sent, models = request.getfixturevalue("sent"), ev.event_models()
    else:
        sent, models = request.getfixturevalue("live_sent"), live_events.event_models()
        assert len({e["type"] for e in sent}) >= 7
    tried = passed = valid_but_refused = 0
    for event in samples(sent):
        model = models[event["type"]]
        check = compile_check(model.__pydantic_core_schema__)
        assert check is not None
        for mutant in mutations(event):
            tried += 1
            ok = validates(model, mutant)
            if check(mutant):
                passed += 1
                assert ok, json.dumps(mutant)[:300]
            elif ok:
                valid_but_refused += 1  # "ask pydantic": fine, only slower
    least = 5000 if api == "realtime" else 1000  # GPT-Live's events are fewer and smaller
    assert tried > least and passed > least / 10
    assert valid_but_refused > 0  # e.g. "7" for an int: pydantic coerces, the check asks


def test_to_model_fails_exactly_when_pydantic_fails(sent: list[dict[str, Any]]) -> None:
    models = ev.event_models()
    failed = 0
    for event in samples(sent, per_type=1):
        model = models[event["type"]]
        for mutant in mutations(event):
            if mutant.get("type") != event["type"]:
                continue  # another type picks another model (or none): not this question
            try:
                eager = model.model_validate(mutant)
            except pydantic.ValidationError:
                failed += 1
                with pytest.raises(pydantic.ValidationError):
                    ev.to_model(mutant)
                continue
            typed = ev.to_model(mutant)
            assert typed == eager and type(typed) is model
    assert failed > 1000


def test_schemas_the_check_does_not_model_get_no_check() -> None:
    class Limited(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=3)

    class Validated(pydantic.BaseModel):
        name: str

        @pydantic.field_validator("name")
        @classmethod
        def shout(cls, value: str) -> str:
            return value.upper()

    class Aliased(pydantic.BaseModel):
        name: str = pydantic.Field(alias="Name")

    for model in (Limited, Validated, Aliased):
        assert compile_check(model.__pydantic_core_schema__) is None, model

    class Plain(pydantic.BaseModel, extra="forbid"):
        count: int
        ratio: float = 0.5
        kind: str | None = None

    check = compile_check(Plain.__pydantic_core_schema__)
    assert check is not None
    assert check({"count": 1}) and check({"count": 1, "ratio": 2, "kind": None})
    assert not check({"count": "1"}) and validates(Plain, {"count": "1"})  # asks pydantic
    assert not check({"count": True})  # pydantic's lax mode takes it: ask
    assert not check({"count": 1, "extra": 1}) and not validates(Plain, {"count": 1, "extra": 1})
    assert not check({"count": 1, "ratio": 2**80})  # a float that large: ask pydantic
    assert not check({})


# -- the lazy models ------------------------------------------------------------------


def done_event(sent: list[dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(next(e for e in sent if e["type"] == "response.done"))


def test_a_lazy_model_is_the_model(sent: list[dict[str, Any]]) -> None:
    from openai.types.realtime import ResponseDoneEvent

    event = done_event(sent)
    eager = ResponseDoneEvent.model_validate(event)
    lazy = ev.to_model(event)
    assert isinstance(lazy, ResponseDoneEvent) and lazy.__class__ is ResponseDoneEvent
    assert type(lazy) is not ResponseDoneEvent  # not built yet
    assert type(lazy).__name__ == "ResponseDoneEvent" and not isinstance(lazy, dict)
    assert (lazy.type, lazy.event_id) == (eager.type, eager.event_id)
    assert type(lazy) is not ResponseDoneEvent  # top-level strings need no build
    assert lazy == eager and eager == lazy and ev.to_model(event) == lazy
    assert type(lazy) is ResponseDoneEvent
    assert repr(lazy) == repr(eager) and lazy.model_dump_json() == eager.model_dump_json()
    other = ev.to_model({**event, "event_id": "event_other"})
    assert other != eager and eager != other


@pytest.mark.parametrize(
    "use",
    [
        copy.copy,
        copy.deepcopy,
        lambda m: pickle.loads(pickle.dumps(m)),
        lambda m: m.model_copy(),
        lambda m: type(m).model_validate(m.model_dump()),
        lambda m: vars(m) and m,
        lambda m: dict(m) and m,
    ],
)
def test_a_lazy_model_copies_and_dumps_as_the_model(sent: list[dict[str, Any]], use: Any) -> None:
    from openai.types.realtime import ResponseDoneEvent

    event = done_event(sent)
    eager = ResponseDoneEvent.model_validate(event)
    result = use(ev.to_model(event))  # the first read of each model is this one
    assert type(result) is ResponseDoneEvent and result == eager


def test_a_lazy_model_keeps_attribute_errors_and_assignment(sent: list[dict[str, Any]]) -> None:
    lazy = ev.to_model(done_event(sent))
    assert not hasattr(lazy, "no_such_field")
    with pytest.raises(AttributeError, match="no_such_field"):
        _ = lazy.no_such_field
    lazy.event_id = "event_changed"
    assert lazy.event_id == "event_changed"
    extra = next(e for e in sent if e.get("emulator_padding"))
    assert ev.to_model(extra).emulator_padding == extra["emulator_padding"]  # extras kept


def test_threads_reading_at_once_build_one_model(sent: list[dict[str, Any]]) -> None:
    for _ in range(20):
        lazy = ev.to_model(done_event(sent))
        barrier = threading.Barrier(4)
        seen: list[int] = []

        def read(
            lazy: Any = lazy, barrier: threading.Barrier = barrier, seen: list[int] = seen
        ) -> None:
            barrier.wait(timeout=10)
            seen.append(id(lazy.response))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(seen) == 4 and len(set(seen)) == 1  # one build, one response object


def test_the_model_is_the_event_as_received(sent: list[dict[str, Any]]) -> None:
    event = done_event(sent)
    lazy = ev.to_model(event)
    event["event_id"] = "changed later"  # a raw subscriber replacing a key: not seen
    assert lazy.event_id != "changed later" and lazy.response.id == event["response"]["id"]
    event = done_event(sent)
    lazy = ev.to_model(event)
    event["response"]["output"] = "changed later"  # nested: the copy is shallow
    with pytest.raises(EventValidationError, match="changed after it was received") as info:
        _ = lazy.response
    assert info.value.event is not None and info.value.event["type"] == "response.done"


def test_a_malformed_event_is_never_lazy(sent: list[dict[str, Any]]) -> None:
    bad = {**done_event(sent), "response": {"output": [{"type": "message", "role": "bot"}]}}
    with pytest.raises(pydantic.ValidationError):
        ev.to_model(bad)
    with pytest.raises(LookupError):
        ev.to_model({"type": "response.teleport.done"})
