"""Typed events: callbacks, ``events()``, ``ticket.response()`` and ``Answer.response``
offer the ``openai.types.realtime`` models, parsed lazily; ``raw=True`` keeps the dicts.

Against the emulator over real connections: what each kind of subscriber receives,
that an event is parsed once and shared, that an event no model describes reaches
typed subscribers as its dict (never an exception on the dispatcher), that event names
are checked, and - with mypy itself - that callbacks are type-checked per event type.
The pre-check that makes a valid event's model runs on the loop thread as the event is
handed over; a typed reader that subscribes while events are on their way, or a
pre-check that fails, leaves the parse to the dispatcher.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from rtclient import EventValidationError, RealtimeClient, RealtimeError, logs
from rtclient.client import REALTIME_EVENTS, Answer
from rtclient.emulator import Emulator
from rtclient.runtime.dispatcher import Dispatcher

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
Connect = Callable[..., RealtimeClient]


@pytest.fixture(params=["webrtc", "websocket"])
def rt_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_generated_typing_is_up_to_date() -> None:
    from rtclient._gen_typed import TARGET, render

    assert TARGET.read_text() == render(), "stale: run python -m rtclient._gen_typed"


def test_raw_subscribers_never_import_openai() -> None:
    code = (
        "import sys, rtclient\n"
        "c = rtclient.RealtimeClient(api_key='sk-test', base_url='http://127.0.0.1:9/v1')\n"
        "c.on('response.done', print, raw=True)\n"
        "c.on('*', print, raw=True)\n"
        "c.close()\n"
        "assert 'openai' not in sys.modules, 'imported openai'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_event_names_are_checked() -> None:
    client = RealtimeClient(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    try:
        with pytest.raises(ValueError, match=r"'response\.dne'.*did you mean 'response\.done'"):
            client.on("response.dne", print)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match=r"not a server event type$"):
            client.on("completely_else", print, raw=True)  # no close match: no hint
        with pytest.raises(ValueError):
            client.on("response.create", print, raw=True)  # a client event
        for name in ("*", "response.done", "response.text.delta"):  # beta names too
            client.on(name, print, raw=True)
    finally:
        client.close()


def test_each_subscriber_gets_what_it_asked_for(rt_connect: Connect) -> None:
    from openai.types.realtime import ResponseDoneEvent

    client = rt_connect()
    typed_a: list[Any] = []
    typed_b: list[Any] = []
    raw: list[Any] = []
    every: list[Any] = []
    done = threading.Event()
    client.on("response.done", typed_a.append)
    client.on("response.done", typed_b.append)
    client.on("response.done", lambda e: (raw.append(e), done.set()), raw=True)
    client.on("*", every.append)
    typed_stream = client.events(timeout=10)
    raw_stream = client.events(timeout=10, raw=True)
    ticket = client.send_text("hello")
    assert ticket is not None and done.wait(10)
    (a,), (b,), (r,) = typed_a, typed_b, raw
    assert isinstance(a, ResponseDoneEvent) and a.response.status == "completed"
    assert a is b  # parsed once, shared by every typed subscriber
    assert isinstance(r, dict) and r["response"]["id"] == a.response.id
    assert all(not isinstance(e, dict) for e in every)  # every event had a model
    assert every[-1] is a
    from_stream = next(e for e in typed_stream if e.type == "response.done")
    assert from_stream is a  # the stream shares the parse too
    raw_done = next(e for e in raw_stream if e["type"] == "response.done")
    assert raw_done is r  # raw subscribers all get the dict as received
    typed_stream.close()
    raw_stream.close()
    assert client.stats()["untyped_events"] == 0


def test_ticket_and_answer_offer_the_typed_response(rt_connect: Connect) -> None:
    from openai.types.realtime import ResponseDoneEvent

    client = rt_connect()
    ticket = client.send_text("hello")
    assert ticket is not None
    typed = ticket.response(10)
    assert isinstance(typed, ResponseDoneEvent) and typed.response.status == "completed"
    assert ticket.result(10)["response"]["id"] == typed.response.id  # the dict, as before
    answer = client.ask("again", timeout=10)
    assert answer.text == "You said: again"
    assert answer.response is answer.response  # parsed on first read, then kept
    assert answer.response.response.id == answer.raw["response"]["id"] == answer.response_ids[0]


def test_a_typed_value_that_does_not_validate_is_a_typed_error() -> None:
    answer = Answer("", [], [], {"type": "response.done"})  # no event_id, no response
    with pytest.raises(EventValidationError) as info:
        _ = answer.response
    assert isinstance(info.value, RealtimeError) and isinstance(info.value, ValueError)
    assert info.value.event == {"type": "response.done"} and "response.done" in str(info.value)


def test_events_no_model_describes_reach_typed_subscribers_as_dicts(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    """An unknown type, an old beta name, and an event its model rejects: each reaches
    typed subscribers as its dict, warned once per type, counted; the dispatcher goes on."""
    client = rt_connect()
    everything: list[Any] = []
    rate_limits: list[Any] = []
    beta: list[Any] = []
    marker = threading.Event()
    client.on("*", everything.append)
    client.on("rate_limits.updated", rate_limits.append)
    client.on("response.text.delta", beta.append)
    client.on(
        "rate_limits.updated",
        lambda e: marker.set() if getattr(e, "event_id", None) == "marker" else None,
    )
    warnings: list[str] = []
    all_said = threading.Event()  # the log relay writes on its own thread: wait for it

    def sink(message: Any) -> None:
        warnings.append(str(message))
        if sum("reaches typed subscribers as a dict" in w for w in warnings) >= 3:
            all_said.set()

    handler = logger.add(sink, level="WARNING")
    logs.enable()
    try:
        session = rt_emulator.sessions[-1]
        bad_limits = {"type": "rate_limits.updated", "event_id": "bad", "rate_limits": "no"}
        for text in (
            {"type": "response.teleport.done", "event_id": "unknown"},
            {"type": "response.text.delta", "event_id": "beta", "delta": "hi"},
            bad_limits,
            {**bad_limits, "event_id": "bad_again"},
            {"type": "rate_limits.updated", "event_id": "marker", "rate_limits": []},
        ):
            session.inject(json.dumps(text))
        assert marker.wait(10)
        assert all_said.wait(10)
    finally:
        logs.disable()
        logger.remove(handler)
    kinds = [(type(e).__name__, e["event_id"] if isinstance(e, dict) else e.event_id)
             for e in everything[-5:]]  # fmt: skip
    assert kinds == [
        ("dict", "unknown"),
        ("dict", "beta"),
        ("dict", "bad"),
        ("dict", "bad_again"),
        ("RateLimitsUpdatedEvent", "marker"),
    ]
    assert [type(e).__name__ for e in rate_limits] == ["dict", "dict", "RateLimitsUpdatedEvent"]
    assert beta == [everything[-4]]  # a beta name's typed subscriber: the dict itself
    assert client.stats()["untyped_events"] == 4  # once per event, however many subscribers
    said = [w for w in warnings if "reaches typed subscribers as a dict" in w]
    assert len(said) == 3  # once per type
    assert any("rate_limits.updated" in w and "rejects it" in w for w in said)


MYPY_SNIPPET = """\
from typing import Any

from openai.types.realtime import ResponseDoneEvent

from rtclient import RealtimeClient


def on_done(event: ResponseDoneEvent) -> None:
    print(event.response.id)


def on_dict(event: dict[str, Any]) -> None:
    print(event["type"])


def check(client: RealtimeClient) -> None:
    client.on("response.done", on_done)
    client.on("response.done", on_dict, raw=True)
    client.on("*", lambda e: print(e))
    client.on("response.done", on_dict)  # line 20: a dict callback needs raw=True
    client.on("response.created", on_done)  # line 21: the wrong model
    client.on("response.dne", on_done)  # line 22: no such event
    reveal_type(client.request_response().response())
    reveal_type(client.update_session(instructions="x").instructions)
    reveal_type(next(client.events(raw=True)))
"""


@pytest.mark.timeout(300)
def test_mypy_checks_each_callback_against_its_event_model(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(MYPY_SNIPPET)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
         "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if "note:     def" not in line]
    errors = sorted({line.split(":")[1] for line in lines if ": error:" in line})
    assert errors == ["20", "21", "22"], lines
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed type" in line]
    assert revealed == [
        '"openai.types.realtime.response_done_event.ResponseDoneEvent"',
        '"str | None"',
        '"dict[str, Any]"',
    ], lines


RATE_LIMITS = {"type": "rate_limits.updated", "event_id": "e1", "rate_limits": []}


def test_a_typed_reader_that_subscribes_while_events_are_on_their_way_gets_models() -> None:
    """The loop thread makes models only for the types a typed reader wants when the event
    is handed over; an event handed over before the subscription is parsed by the
    dispatcher, so each typed reader still gets models, never a dict."""
    dispatcher = Dispatcher(REALTIME_EVENTS, threading.Lock())
    early = dict(RATE_LIMITS)
    before = dispatcher.item(early)  # nobody reads it typed yet: the event as it came
    assert before is early
    got: list[Any] = []
    dispatcher.subscribe("rate_limits.updated", got.append, raw=False)
    after = dispatcher.item({**RATE_LIMITS, "event_id": "e2"})
    assert type(after) is tuple and type(after[1]).__name__ == "RateLimitsUpdatedEvent"
    other = {"type": "input_audio_buffer.cleared", "event_id": "e3"}
    assert dispatcher.item(other) is other  # a type no typed reader wants: no model made
    for item in (before, after):
        dispatcher._handle(item)
    assert [type(e).__name__ for e in got] == ["RateLimitsUpdatedEvent"] * 2
    assert [e.event_id for e in got] == ["e1", "e2"]


def test_a_pre_check_that_raises_leaves_the_parse_to_the_dispatcher() -> None:
    """The loop thread never fails on a typed reader's behalf: a pre-check that raises
    hands the event over as it came, and the dispatcher's own parse decides."""

    def broken(event: Any) -> Any:
        raise RuntimeError("a pre-check bug")

    catalog = dataclasses.replace(REALTIME_EVENTS, checks={"rate_limits.updated": broken})
    dispatcher = Dispatcher(catalog, threading.Lock())
    got: list[Any] = []
    dispatcher.subscribe("*", got.append, raw=False)
    event = dict(RATE_LIMITS)
    item = dispatcher.item(event)
    assert item is event
    dispatcher._handle(item)
    assert [type(e).__name__ for e in got] == ["RateLimitsUpdatedEvent"]
    assert dispatcher.untyped_events == 0
