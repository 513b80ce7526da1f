"""The GPT-Live protocol core, driven by method calls: no threads, no sockets.

Like tests/test_gate.py: feed server events and outcomes, check the effects after each
one. The clock is a number the test moves; "the executor" is the test calling
``finished`` with what a handler or tool returned.
"""

from __future__ import annotations

import concurrent.futures
import typing
from typing import Any

import pytest

from rtclient.core.live import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES, LiveCore
from rtclient.core.live_protocol import DelegationTask, Notices, session_config
from rtclient.core.live_text import (
    Transcript,
    estimate_tokens,
    render,
    split_content,
)
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import (
    ClosedError,
    CommandRefusedError,
    ConnectionLostError,
    ContentTooLongError,
    MessageTooLargeError,
    ServerError,
    SessionClosedError,
    UnknownDelegationError,
)
from rtclient.tools import ToolOutcome, ToolSpec, build_spec, call_tool

pytestmark = pytest.mark.timeout(10)

CONFIG = {"model": "gpt-live-1", "instructions": "Be brief."}
RESPONSES = {
    "model": "gpt-live-1",
    "delegation": {"type": "responses", "responses": {"model": "gpt-5.5"}},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sends(fx: list[Effect]) -> list[dict[str, Any]]:
    return [e.event for e in fx if isinstance(e, Send)]


def send_effects(fx: list[Effect]) -> list[Send]:
    return [e for e in fx if isinstance(e, Send)]


def settles(fx: list[Effect]) -> dict[tuple[str, str], Any]:
    return {e.key: e.outcome for e in fx if isinstance(e, Settle)}


def reports(fx: list[Effect]) -> list[dict[str, Any]]:
    return [
        e.event for e in fx if isinstance(e, Dispatch) and e.event["type"].startswith("rtclient.")
    ]


def starts(fx: list[Effect]) -> list[Start]:
    return [e for e in fx if isinstance(e, Start)]


def laters(fx: list[Effect]) -> list[Later]:
    return [e for e in fx if isinstance(e, Later)]


def feed(core: LiveCore, event: dict[str, Any]) -> list[Effect]:
    """One server event as the shell carries it: ``receive`` on the loop thread, then
    ``step`` on the dispatcher (where work is started)."""
    fx = core.on_event(event)
    return fx + (core.step(event) if core.step_wants(event.get("type", "")) else [])


def finish(
    core: LiveCore, start: Start, result: Any, error: BaseException | None = None
) -> list[Effect]:
    """The executor ran ``start``: its future, done, reported to the core."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return core.finished(start, future, None)


def sent_ok(core: LiveCore, fx: list[Effect]) -> list[Effect]:
    """Every Send in ``fx`` reached the wire; the core's answers to those outcomes."""
    out: list[Effect] = []
    for effect in send_effects(fx):
        out += core.sent(effect, None)
    return out


def started(core: LiveCore, session: dict[str, Any] | None = None) -> list[Effect]:
    fx = core.connected()
    if core.kind == "sideband":
        return fx
    start_id = sends(fx)[0]["event_id"] if core.kind == "websocket" else None
    snapshot = {"id": "live_1", "status": "active", **(session or core.config)}
    event = {"type": "session.started", "event_id": "s1", "session": snapshot}
    if start_id is not None:
        event["client_event_id"] = start_id
    return feed(core, event)


def delegation_created(
    delegation_id: str, offset_ms: int = 0, target: str = "client", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "session.delegation.created",
        "event_id": f"e_{delegation_id}",
        "delegation": {"id": delegation_id, "type": "delegation", "target": target, **extra},
        "offset_ms": offset_ms,
    }


def transcript(role: str, text: str, start: int, end: int) -> dict[str, Any]:
    kind = "session.input_transcript.delta" if role == "user" else "session.output_transcript.delta"
    return {"type": kind, "event_id": "t", "delta": text, "start_ms": start, "end_ms": end}


def envelope(inner: dict[str, Any], delegation_id: str | None, client_event_id: str | None = None):
    event: dict[str, Any] = {
        "type": "response.event",
        "event_id": "re",
        "delegation_id": delegation_id,
        "event": inner,
    }
    if client_event_id is not None:
        event["client_event_id"] = client_event_id
    return event


def created(rid: str, delegation_id: str | None, client_event_id: str | None = None):
    inner = {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}
    return envelope(inner, delegation_id, client_event_id)


def completed(
    rid: str, delegation_id: str | None, status: str = "completed", cid: str | None = None
):
    inner = {"type": f"response.{status}", "response": {"id": rid, "status": status}}
    return envelope(inner, delegation_id, cid)


def function_call(call_id: str, name: str, arguments: str, delegation_id: str | None):
    item = {
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    inner = {"type": "response.output_item.done", "output_index": 0, "item": item}
    return envelope(inner, delegation_id)


def lookup(city: str) -> str:
    """Look a city up.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


def slow(city: str) -> str:
    """Slow.

    Args:
        city: The city.
    """
    return city


# -- the event sets match the openai package --------------------------------------------


def _types(union: Any) -> set[str]:
    args = typing.get_args(union)
    if typing.get_origin(union) is typing.Annotated:
        return _types(args[0])
    found: set[str] = set()
    for member in args:
        if typing.get_args(member):
            found |= _types(member)
        else:
            found |= {
                k
                for k in typing.get_args(member.model_fields["type"].annotation)
                if isinstance(k, str)
            }
    return found


def test_event_type_sets_are_the_packages() -> None:
    from openai.types.live import ClientEvent, ServerEvent
    from openai.types.live.connect_client_event import ConnectClientEvent
    from openai.types.live.connect_server_event import ConnectServerEvent

    assert _types(ServerEvent) | _types(ConnectServerEvent) == SERVER_EVENT_TYPES
    assert _types(ClientEvent) | _types(ConnectClientEvent) == CLIENT_EVENT_TYPES


# -- start ------------------------------------------------------------------------------


def test_primary_sends_start_first_and_holds_everything_until_started() -> None:
    core = LiveCore(kind="websocket", config=CONFIG)
    fx = core.connected()
    assert sends(fx) == [
        {"type": "session.start", "session": CONFIG, "event_id": sends(fx)[0]["event_id"]}
    ]
    start_id = sends(fx)[0]["event_id"]
    assert core.sent(send_effects(fx)[0], None) == []
    mute_id, held = core.command({"type": "session.input_audio.mute"})
    append_ids, held2 = core.append("thinking", "the user likes tea")
    assert held == [] and held2 == []  # nothing before session.started
    fx = feed(
        core,
        {
            "type": "session.started",
            "event_id": "s1",
            "client_event_id": start_id,
            "session": {"id": "live_1", **CONFIG},
        },
    )
    assert settles(fx)[("session", "started")]["type"] == "session.started"
    assert [e["type"] for e in sends(fx)] == ["session.input_audio.mute", "session.thinking.append"]
    assert [e["event_id"] for e in sends(fx)] == [mute_id, *append_ids]
    assert core.session_id == "live_1" and core.state == "started"
    repeat = feed(core, {"type": "session.started", "event_id": "s2", "session": {}})
    assert not sends(repeat) and not settles(repeat)  # a repeat starts nothing again


def test_primary_needs_a_model() -> None:
    with pytest.raises(ValueError, match="model"):
        LiveCore(kind="websocket", config={"instructions": "x"}).connected()


def test_refused_start_ends_the_session_with_the_servers_typed_error() -> None:
    core = LiveCore(kind="websocket", config={**CONFIG, "temperature": 0.5})
    start_id = sends(core.connected())[0]["event_id"]
    held_id, _ = core.command({"type": "session.input_audio.mute"})
    fx = feed(
        core,
        {
            "type": "error",
            "event_id": "e1",
            "error": {
                "type": "invalid_request_error",
                "code": "unknown_parameter",
                "message": "Unknown parameter: 'session.temperature'.",
                "param": "session.temperature",
                "client_event_id": start_id,
            },
        },
    )
    outcome = settles(fx)[("session", "started")]
    assert isinstance(outcome, ServerError)
    assert (outcome.code, outcome.param) == ("unknown_parameter", "session.temperature")
    assert isinstance(settles(fx)[("answer", held_id)], ServerError)  # held: failed, not lost
    assert any(isinstance(e, Lost) for e in fx)
    assert core.state == "closed" and core.counters["server_errors"] == 1
    with pytest.raises(ClosedError):
        core.command({"type": "session.input_audio.mute"})


def test_a_failed_start_send_ends_the_session() -> None:
    core = LiveCore(kind="websocket", config=CONFIG)
    fx = core.sent(send_effects(core.connected())[0], ConnectionLostError("gone"))
    assert isinstance(settles(fx)[("session", "started")], ConnectionLostError)
    assert any(isinstance(e, Lost) for e in fx)


def test_sideband_is_ready_at_once_and_refuses_start_and_audio() -> None:
    core = LiveCore(kind="sideband")
    fx = core.connected()
    assert settles(fx) == {("session", "started"): None} and not sends(fx)
    for event in (
        {"type": "session.start", "session": CONFIG},
        {"type": "session.input_audio.append", "audio": ""},
    ):
        with pytest.raises(CommandRefusedError):
            core.command(event)
    assert core.counters["refused_commands"] == 2
    event_id, fx = core.command({"type": "session.update", "session": {}})
    assert sends(fx)[0]["event_id"] == event_id  # not held: the session is running
    # a snapshot at attach is kept, not treated as a start
    fx = feed(core, {"type": "session.started", "event_id": "x", "session": {"id": "live_9"}})
    assert core.session_id == "live_9" and not settles(fx)


def test_webrtc_started_before_the_shell_reports_the_connection_open() -> None:
    core = LiveCore(kind="webrtc", config=CONFIG)
    fx = feed(core, {"type": "session.started", "event_id": "s", "session": {"id": "live_3"}})
    assert settles(fx)[("session", "started")]["session"]["id"] == "live_3"
    assert core.connected() == [] and core.state == "started"


def test_webrtc_waits_for_started_and_never_sends_start() -> None:
    core = LiveCore(kind="webrtc", config=CONFIG)
    assert core.connected() == []
    with pytest.raises(CommandRefusedError, match="WebRTC"):
        core.command({"type": "session.start", "session": CONFIG})
    _, held = core.command({"type": "session.update", "session": {}})
    assert held == []
    fx = feed(core, {"type": "session.started", "event_id": "s", "session": {"id": "live_2"}})
    assert [e["type"] for e in sends(fx)] == ["session.update"]


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"type": "response.create"}, "request_response"),
        ({"type": "conversation.item.create"}, "not a GPT-Live client event"),
        ({"type": "transport.dtmf.send", "event": "1"}, "sideband only"),
    ],
)
def test_commands_that_cannot_go_are_refused_typed(event: dict[str, Any], match: str) -> None:
    core = LiveCore(kind="websocket", config=CONFIG)
    started(core)
    with pytest.raises(CommandRefusedError, match=match):
        core.command(event)


# -- answers by client_event_id ---------------------------------------------------------


def test_answers_and_errors_settle_by_client_event_id() -> None:
    core = LiveCore(kind="websocket", config=CONFIG)
    started(core)
    update_id, _ = core.command({"type": "session.update", "session": {}})
    mute_id, _ = core.command({"type": "session.input_audio.mute"})
    # another command's id, or an answer of the wrong type, settles nothing
    assert not settles(feed(core, {"type": "session.updated", "client_event_id": "other"}))
    assert not settles(feed(core, {"type": "session.updated", "client_event_id": mute_id}))
    fx = feed(core, {"type": "session.updated", "client_event_id": update_id, "session": {}})
    assert settles(fx)[("answer", update_id)]["type"] == "session.updated"
    fx = feed(
        core,
        {
            "type": "error",
            "event_id": "e",
            "error": {
                "type": "invalid_request_error",
                "code": "x",
                "message": "no",
                "client_event_id": mute_id,
            },
        },
    )
    error = settles(fx)[("answer", mute_id)]
    assert isinstance(error, ServerError) and error.event_id == mute_id
    # answered once: a repeat settles nothing
    assert not settles(feed(core, {"type": "session.updated", "client_event_id": update_id}))


def test_a_failed_send_settles_its_waiter_with_the_error() -> None:
    core = LiveCore(kind="sideband")
    core.connected()
    event_id, fx = core.command({"type": "session.update", "session": {}})
    error = ConnectionLostError("gone")
    assert settles(core.sent(send_effects(fx)[0], error)) == {("answer", event_id): error}


def test_malformed_and_unknown_events_are_counted() -> None:
    core = LiveCore(kind="sideband")
    core.connected()
    assert feed(core, {"no": "type"}) == []
    feed(core, {"type": "session.brand_new"})
    feed(core, {"type": "response.event", "event": "not an object"})
    assert core.counters["malformed_events"] == 2 and core.counters["unknown_events"] == 1


# -- client delegation --------------------------------------------------------------------


def delegating_core(
    handler: Any = None, **kwargs: Any
) -> tuple[LiveCore, list[tuple[str, str, bool]]]:
    progress: list[tuple[str, str, bool]] = []
    core = LiveCore(
        kind="websocket",
        config={**CONFIG, "delegation": {"type": "client"}},
        delegation=handler if handler is not None else (lambda task: None),
        progress=lambda *args: progress.append(args),
        **kwargs,
    )
    started(core)
    return core, progress


def test_delegation_starts_the_handler_with_the_transcript_up_to_its_offset() -> None:
    core, progress = delegating_core()
    feed(core, transcript("user", "Check the ", 0, 400))
    feed(core, transcript("assistant", "Sure.", 500, 800))
    feed(core, transcript("user", "staging status", 400, 900))
    feed(core, transcript("user", " please", 1600, 1900))  # after the offset
    fx = feed(core, delegation_created("del_1", offset_ms=1500))
    (start,) = starts(fx)
    task = start.args[0]
    assert isinstance(task, DelegationTask) and task.id == "del_1" and task.since_ms == 0
    assert [f.text for f in task.transcript] == ["Check the ", "staging status", "Sure."]
    assert task.text == "user: Check the staging status\nassistant: Sure."
    assert task.request == "Check the staging status"
    (timeout,) = laters(fx)
    assert timeout.kind == "delegation" and timeout.delay == core.delegations.timeout
    task.say("Looking now")
    task.think("cluster: staging")
    assert progress == [("del_1", "Looking now", True), ("del_1", "cluster: staging", False)]
    # the next delegation's since_ms is this one's offset
    task2 = starts(feed(core, delegation_created("del_2", offset_ms=3000)))[0].args[0]
    assert task2.since_ms == 1500


def test_a_result_is_sent_exactly_once() -> None:
    core, _ = delegating_core()
    start = starts(feed(core, delegation_created("del_1")))[0]
    fx = core.progress("del_1", "Still looking", True)
    assert sends(fx)[0] == {
        "type": "session.commentary.append",
        "content": "Still looking",
        "delegation_id": "del_1",
        "event_id": sends(fx)[0]["event_id"],
    }
    fx = finish(core, start, "Staging is healthy.", None)
    (result,) = sends(fx)
    assert (
        result["type"] == "session.commentary.append" and result["content"] == "Staging is healthy."
    )
    assert settles(fx)[("delegation", "del_1")] == {"delegation_id": "del_1", "outcome": "answered"}
    # the same result again (a second worker), progress after it, an app answer: dropped
    for again in (
        finish(core, start, "Staging is healthy.", None),
        core.progress("del_1", "one more thing", True),
        core.answer("del_1", "again"),
    ):
        assert not sends(again)
        assert reports(again)[0]["type"] == "rtclient.delegation.dropped"
        assert reports(again)[0]["reason"] == "answered"
    assert core.counters["duplicate_results"] == 3 and core.counters["delegations_answered"] == 1


def test_the_placement_ack_settles_the_results_append() -> None:
    core, _ = delegating_core()
    start = starts(feed(core, delegation_created("del_1")))[0]
    result_id = sends(finish(core, start, "Done.", None))[0]["event_id"]
    fx = feed(
        core,
        {
            "type": "session.commentary.appended",
            "client_event_id": result_id,
            "start_ms": 10,
            "end_ms": 10,
        },
    )
    assert settles(fx)[("answer", result_id)]["type"] == "session.commentary.appended"


def test_a_failing_handler_gets_the_spoken_failure_notice() -> None:
    core, _ = delegating_core(notices=Notices(failure="That did not work."))
    start = starts(feed(core, delegation_created("del_1")))[0]
    fx = finish(core, start, None, RuntimeError("db down"))
    assert [(e["type"], e["content"], e["delegation_id"]) for e in sends(fx)] == [
        ("session.commentary.append", "That did not work.", "del_1")
    ]
    (report,) = reports(fx)
    assert report["type"] == "rtclient.delegation.failed" and "db down" in report["error"]
    assert settles(fx)[("delegation", "del_1")]["outcome"] == "failed"
    assert core.counters["delegation_errors"] == 1


def test_the_clients_timeout_speaks_and_the_late_result_is_dropped() -> None:
    core, _ = delegating_core(delegation_timeout=30.0)
    fx = feed(core, delegation_created("del_1"))
    start, timeout = starts(fx)[0], laters(fx)[0]
    fx = core.timer(timeout)
    assert [e["content"] for e in sends(fx)] == [Notices().timeout]
    assert reports(fx)[0] == {
        "type": "rtclient.delegation.timed_out",
        "delegation_id": "del_1",
        "timeout_s": 30.0,
    }
    late = finish(core, start, "Here it is, finally.", None)
    assert not sends(late)
    assert reports(late)[0]["reason"] == "timed_out" and reports(late)[0]["result"] is True
    assert core.counters["delegation_timeouts"] == 1 and core.counters["late_results"] == 1
    assert core.timer(timeout) == []  # a timer firing again changes nothing


def test_a_result_after_the_session_closed_is_reported_never_sent() -> None:
    core, _ = delegating_core()
    start = starts(feed(core, delegation_created("del_1")))[0]
    fx = feed(
        core,
        {
            "type": "session.closed",
            "event_id": "c",
            "reason": "expired",
            "session": {},
            "usage": {"seconds": 3},
        },
    )
    lost = [e for e in fx if isinstance(e, Lost)]
    assert len(lost) == 1 and isinstance(lost[0].error, SessionClosedError)
    assert lost[0].error.reason == "expired"
    assert isinstance(settles(fx)[("delegation", "del_1")], SessionClosedError)
    for late in (finish(core, start, "too late", None), core.progress("del_1", "x", True)):
        assert not sends(late)
        assert reports(late)[0]["reason"] == "session_closed"
    assert core.counters["results_after_close"] == 2


def test_a_lost_connection_makes_the_delegation_dead() -> None:
    core, _ = delegating_core()
    start = starts(feed(core, delegation_created("del_1")))[0]
    core.close(ConnectionLostError("socket closed"))
    assert core.state == "closed" and core.delegation("del_1").state == "dead"
    assert not sends(finish(core, start, "result", None))
    assert core.counters["results_after_close"] == 1


def test_a_result_over_the_limit_is_split_and_one_far_over_is_refused() -> None:
    core, _ = delegating_core(token_budget=20, max_parts=3)
    start = starts(feed(core, delegation_created("del_1")))[0]
    long = "The build passed. " * 6  # ~36 tokens per two sentences: three parts
    fx = finish(core, start, long, None)
    parts = sends(fx)
    assert 1 < len(parts) <= 3 and all(p["delegation_id"] == "del_1" for p in parts)
    assert all(estimate_tokens(p["content"]) <= 20 for p in parts)
    assert " ".join(p["content"] for p in parts) == long.strip()
    assert core.counters["appends_split"] == 1
    start2 = starts(feed(core, delegation_created("del_2")))[0]
    fx = finish(core, start2, "x" * 1000, None)
    assert [e["content"] for e in sends(fx)] == [Notices().failure]
    assert reports(fx)[0]["reason"] == "too_long" and core.counters["results_too_long"] == 1
    starts(feed(core, delegation_created("del_3")))
    with pytest.raises(ContentTooLongError):
        core.progress("del_3", "y" * 1000, True)  # the caller hears it: a typed error
    assert core.delegation("del_3").state == "open"  # and the delegation goes on


def test_none_result_says_something_only_if_nothing_was_said() -> None:
    core, _ = delegating_core()
    start1 = starts(feed(core, delegation_created("del_1")))[0]
    assert [e["content"] for e in sends(finish(core, start1, None, None))] == [Notices().no_answer]
    start2 = starts(feed(core, delegation_created("del_2")))[0]
    core.progress("del_2", "It is 9 degrees.", True)
    fx = finish(core, start2, None, None)
    assert not sends(fx) and settles(fx)[("delegation", "del_2")]["outcome"] == "answered"
    assert core.counters["delegations_empty"] == 1


def test_duplicate_and_unknown_delegation_ids_are_typed_and_counted() -> None:
    core, _ = delegating_core()
    assert starts(feed(core, delegation_created("del_1")))
    fx = feed(core, delegation_created("del_1"))
    assert not starts(fx) and not laters(fx)
    assert reports(fx) == [{"type": "rtclient.delegation.duplicate", "delegation_id": "del_1"}]
    with pytest.raises(UnknownDelegationError):
        core.answer("del_nope", "x")
    with pytest.raises(UnknownDelegationError):
        core.append("commentary", "x", delegation_id="del_nope")
    assert (
        core.counters["duplicate_delegations"] == 1 and core.counters["unknown_delegation_ids"] == 2
    )


def test_without_a_handler_the_app_answers_and_the_timeout_still_holds() -> None:
    core = LiveCore(kind="sideband")
    core.connected()
    fx = feed(core, delegation_created("del_1"))
    assert not starts(fx) and laters(fx)
    fx = core.answer("del_1", "quiet fact", spoken=False)
    assert [(e["type"], e["delegation_id"]) for e in sends(fx)] == [
        ("session.thinking.append", "del_1")
    ]
    assert core.timer(laters(feed(core, delegation_created("del_2")))[0])  # del_2 times out
    assert (
        core.delegation("del_1").state == "answered"
        and core.delegation("del_2").state == "timed_out"
    )


def test_an_undelivered_result_is_reported() -> None:
    core, _ = delegating_core()
    start = starts(feed(core, delegation_created("del_1")))[0]
    (send,) = send_effects(finish(core, start, "result", None))
    fx = core.sent(send, ConnectionLostError("gone"))
    assert reports(fx)[0]["reason"] == "not_sent" and core.counters["undelivered_results"] == 1


# -- Responses delegation: function calls through the gate ----------------------------------


def responses_core(tools: Any = (lookup,), **kwargs: Any) -> tuple[LiveCore, Clock]:
    clock = Clock()
    core = LiveCore(kind="sideband", config=RESPONSES, tools=tools, clock=clock, **kwargs)
    core.connected()
    feed(
        core, {"type": "session.started", "event_id": "s", "session": {"id": "live_1", **RESPONSES}}
    )
    return core, clock


def run(start: Start) -> ToolOutcome:
    result = start.fn(*start.args, **start.kwargs)
    assert isinstance(result, ToolOutcome)
    return result


def test_calls_run_and_one_create_follows_the_last_output_on_the_wire() -> None:
    core, _ = responses_core()
    feed(core, delegation_created("del_r", target="responses", response_id="resp_1"))
    feed(core, created("resp_1", "del_r"))
    call_a = starts(feed(core, function_call("call_a", "lookup", '{"city": "Oslo"}', "del_r")))[0]
    call_b = starts(feed(core, function_call("call_b", "lookup", '{"city": "Rome"}', "del_r")))[0]
    assert not starts(feed(core, function_call("call_a", "lookup", "{}", "del_r")))  # repeat
    assert not sends(feed(core, completed("resp_1", "del_r")))  # calls still open
    out_b = finish(core, call_b, run(call_b), None)  # out of order
    (item_b,) = sends(out_b)
    assert item_b["type"] == "response.item.create"
    assert item_b["item"] == {
        "type": "function_call_output",
        "call_id": "call_b",
        "output": "sunny in Rome",
    }
    out_a = finish(core, call_a, run(call_a), None)
    assert not sends(sent_ok(core, out_b))  # b on the wire, a only handed over: no create
    fx = sent_ok(core, out_a)
    creates = [e for e in sends(fx) if e["type"] == "response.create"]
    assert len(creates) == 1 and set(creates[0]) == {"type", "event_id"}
    ticket_id = creates[0]["event_id"]
    assert core.counters["followups_requested"] == 1 and core.stats()["creates"] == 1
    # the server confirms our create (its echo) and the continuation completes
    core.sent(send_effects(fx)[0], None)
    assert core.gate.in_flight is not None
    feed(core, created("resp_2", "del_r", client_event_id=ticket_id))
    assert core.gate.in_flight is None and core.gate.active == "resp_2"
    fx = feed(core, completed("resp_2", "del_r", cid=ticket_id))
    done = [k for k in settles(fx) if k[0] == "response"]
    assert done == [("response", "tool_calls:resp_1")]
    assert core.gate.free and core.stats()["lost"] == 0


def test_a_browsers_response_makes_ours_wait_and_nothing_goes_twice() -> None:
    core, _ = responses_core()
    feed(core, delegation_created("del_r", target="responses", response_id="resp_1"))
    feed(core, created("resp_1", "del_r"))
    call = starts(feed(core, function_call("call_a", "lookup", '{"city": "Oslo"}', "del_r")))[0]
    feed(core, completed("resp_1", "del_r"))
    # the browser starts a backend response of its own (its event id, not ours)
    feed(core, created("resp_browser", None, client_event_id="browser_evt_1"))
    fx = sent_ok(core, finish(core, call, run(call), None))
    assert not [e for e in sends(fx) if e["type"] == "response.create"]  # queued: one runs
    fx = feed(core, completed("resp_browser", None, cid="browser_evt_1"))
    creates = [e for e in sends(fx) if e["type"] == "response.create"]
    assert len(creates) == 1
    # the browser's create crosses ours: the server rejects ours as busy; it is re-armed
    core.sent(send_effects(fx)[0], None)
    feed(core, created("resp_browser2", None, client_event_id="browser_evt_2"))
    fx = feed(
        core,
        {
            "type": "error",
            "event_id": "e",
            "error": {
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "busy with resp_browser2",
                "client_event_id": creates[0]["event_id"],
            },
        },
    )
    assert not sends(fx) and core.stats()["rearmed"] == 1
    fx = feed(core, completed("resp_browser2", None))
    again = [e for e in sends(fx) if e["type"] == "response.create"]
    assert len(again) == 1 and again[0]["event_id"] != creates[0]["event_id"]
    assert core.stats()["lost"] == 0


def test_a_failed_create_send_rolls_back_and_fires_again() -> None:
    core, _ = responses_core()
    key, fx = core.request_response("greeting")
    (send,) = send_effects(fx)
    from rtclient.errors import BridgeFullError

    fx = core.sent(send, BridgeFullError("full"))
    (again,) = send_effects(fx)
    assert again.event["event_id"] != send.event["event_id"] and core.stats()["rollbacks"] == 1
    fx = core.sent(again, ClosedError("closed"))  # no retry on a closed connection
    assert isinstance(settles(fx)[("response", key)], ClosedError) and not sends(fx)


def test_calls_of_a_failed_response_go_to_the_model_as_thinking() -> None:
    core, _ = responses_core()
    feed(core, created("resp_1", None))
    call = starts(feed(core, function_call("call_a", "lookup", '{"city": "Oslo"}', None)))[0]
    feed(core, completed("resp_1", None, status="failed"))
    fx = finish(core, call, run(call), None)
    assert [e["type"] for e in sends(fx)] == ["session.thinking.append"]
    assert sends(fx)[0]["delegation_id"] is None and "sunny in Oslo" in sends(fx)[0]["content"]
    assert core.counters["discarded_calls"] == 1 and core.stats()["creates"] == 0


def test_tool_errors_timeouts_and_unknown_tools_still_answer_the_call() -> None:
    def boom(city: str) -> str:
        """Boom.

        Args:
            city: The city.
        """
        raise RuntimeError("no weather")

    spec = build_spec(slow)
    timed = ToolSpec(
        fn=spec.fn,
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        timeout=5.0,
    )
    core, _ = responses_core(tools=[boom, timed])
    feed(core, created("resp_1", None))
    boom_start = starts(feed(core, function_call("c1", "boom", '{"city": "x"}', None)))[0]
    fx = feed(core, function_call("c2", "slow", '{"city": "x"}', None))
    slow_start, (slow_timer,) = starts(fx)[0], laters(fx)
    unknown = feed(core, function_call("c3", "nope", "{}", None))
    bad = feed(core, function_call("c4", "boom", '{"town": 1}', None))
    assert not starts(unknown) and "unknown tool" in sends(unknown)[0]["item"]["output"]
    bad_out = run(starts(bad)[0])
    assert "bad arguments" in bad_out.output
    outputs = [
        *sends(finish(core, boom_start, run(boom_start), None)),
        *sends(core.timer(slow_timer)),
    ]
    assert (
        "no weather" in outputs[0]["item"]["output"] and "timed out" in outputs[1]["item"]["output"]
    )
    assert not sends(finish(core, slow_start, run(slow_start), None))  # late: dropped
    assert core.counters["tool_late_results"] == 1 and core.counters["tool_timeouts"] == 1


def test_an_oversized_output_becomes_an_error_output_and_an_unsent_one_blocks_the_followup() -> (
    None
):
    core, _ = responses_core()
    feed(core, created("resp_1", None))
    call = starts(feed(core, function_call("c1", "lookup", '{"city": "x"}', None)))[0]
    feed(core, completed("resp_1", None))
    (send,) = send_effects(finish(core, call, run(call), None))
    fx = core.sent(send, MessageTooLargeError("big", size=10, limit=5))
    (retry,) = sends(fx)
    assert "more than the 5 bytes" in retry["item"]["output"]
    fx = core.sent(send_effects(fx)[0], ConnectionLostError("gone"))
    assert reports(fx)[0]["type"] == "rtclient.output_dropped" and not sends(fx)
    assert core.counters["undelivered_outputs"] == 1 and core.stats()["creates"] == 0


def test_two_backend_responses_get_one_create_after_both() -> None:
    core, _ = responses_core()
    feed(core, created("resp_1", "d1"))
    feed(core, created("resp_2", "d2"))
    c1 = starts(feed(core, function_call("c1", "lookup", '{"city": "a"}', "d1")))[0]
    c2 = starts(feed(core, function_call("c2", "lookup", '{"city": "b"}', "d2")))[0]
    feed(core, completed("resp_1", "d1"))
    assert not [e for e in sends(sent_ok(core, finish(core, c1, run(c1), None)))]
    feed(core, completed("resp_2", "d2"))
    fx = sent_ok(core, finish(core, c2, run(c2), None))
    assert [e["type"] for e in sends(fx)] == ["response.create"]
    assert core.counters["followups_requested"] == 1


def test_without_tools_the_calls_are_the_apps() -> None:
    core, _ = responses_core(tools=[])
    feed(core, created("resp_1", None))
    fx = feed(core, function_call("c1", "lookup", "{}", None))
    assert not starts(fx) and not sends(fx) and any(isinstance(e, Dispatch) for e in fx)


def test_request_response_is_held_before_start_and_refused_under_client_delegation() -> None:
    core = LiveCore(kind="websocket", config=RESPONSES)
    core.connected()
    _, fx = core.request_response()
    assert fx == []
    fx = feed(
        core, {"type": "session.started", "event_id": "s", "session": {"id": "l", **RESPONSES}}
    )
    assert [e["type"] for e in sends(fx)] == ["response.create"]
    client = LiveCore(kind="websocket", config=CONFIG)
    started(client)
    with pytest.raises(CommandRefusedError, match="Responses delegation"):
        client.request_response()
    core2, _ = responses_core()
    with pytest.raises(CommandRefusedError, match="delegation_id"):
        core2.append("commentary", "x", delegation_id="del_1")


# -- close ------------------------------------------------------------------------------


def test_close_waits_for_session_closed_which_fails_the_rest() -> None:
    core, _ = delegating_core()
    pending_id, _ = core.command({"type": "session.input_audio.mute"})
    close_id, fx = core.close_session()
    assert close_id is not None and sends(fx)[0]["type"] == "session.close"
    assert core.state == "closing" and core.close_session() == (None, [])
    fx = feed(
        core,
        {
            "type": "session.closed",
            "event_id": "c",
            "client_event_id": close_id,
            "reason": "close_requested",
            "session": {},
            "usage": {"seconds": 1},
        },
    )
    assert settles(fx)[("answer", close_id)]["type"] == "session.closed"
    assert isinstance(fx[-1], Lost)
    assert settles(fx)[("session", "closed")]["reason"] == "close_requested"
    assert ("answer", pending_id) not in settles(fx)  # its waiter fails through Lost


# -- text: the limit and the transcript ---------------------------------------------------


def test_estimate_is_high_for_ascii_and_non_ascii() -> None:
    assert estimate_tokens("abcdef") == 2 and estimate_tokens("abcdefg") == 3
    assert estimate_tokens("東京") == 2 and estimate_tokens("") == 0


def test_split_keeps_sentences_and_refuses_past_max_parts() -> None:
    text = "One two three. Four five six! Seven eight nine?"
    parts = split_content(text, budget=6, max_parts=5)
    assert parts == ["One two three.", "Four five six!", "Seven eight nine?"]
    word = "x" * 100 + "東京" * 5
    parts = split_content(f"Start. {word}", budget=10, max_parts=8)
    assert parts[0] == "Start." and "".join(parts[1:]) == word  # a word is cut, not spaced
    assert all(estimate_tokens(p) <= 10 for p in parts)
    with pytest.raises(ContentTooLongError) as info:
        split_content(word, budget=10, max_parts=3)
    assert info.value.max_tokens == 30
    with pytest.raises(ValueError):
        split_content("   ")


def test_transcript_until_is_in_timeline_order_and_bounded() -> None:
    t = Transcript(kept=3)
    t.add("user", "a", 0, 1)
    t.add("assistant", "b", 5, 6)
    t.add("user", "c", 2, 3)
    t.add("user", "d", 10, 11)
    assert [f.text for f in t.until(10)] == ["c", "b"]  # "a" fell out; "d" is not before 10
    assert render(t.until(11)) == "user: c\nassistant: b\nuser: d"


# -- config and tools -------------------------------------------------------------------


def test_session_config_puts_tool_schemas_in_responses_delegation() -> None:
    config = session_config(RESPONSES, [build_spec(lookup)])
    tools = config["delegation"]["responses"]["tools"]
    assert [t["name"] for t in tools] == ["lookup"] and tools[0]["type"] == "function"
    assert "city" in tools[0]["parameters"]["properties"]
    assert RESPONSES["delegation"]["responses"] == {"model": "gpt-5.5"}  # not mutated
    with pytest.raises(ValueError, match="Responses delegation"):
        session_config(CONFIG, [build_spec(lookup)])
    assert session_config({"instructions": "x"}, [], model="gpt-live-1")["model"] == "gpt-live-1"


def test_run_tool_never_raises() -> None:
    spec = build_spec(lookup)
    assert call_tool(spec, '{"city": "Oslo"}') == ToolOutcome("sunny in Oslo")
    assert call_tool(spec, "[1]").error is not None
    assert call_tool(spec, "not json").error is not None


def test_work_starts_one_step_later_and_only_once() -> None:
    core, _ = delegating_core()
    event = delegation_created("del_1")
    assert not starts(core.on_event(event))  # the loop thread records it only
    assert core.delegation("del_1") is not None
    assert core.step_wants("session.delegation.created") and not core.step_wants("info")
    assert len(starts(core.step(event))) == 1  # the dispatcher starts it
    assert core.step(event) == []  # a repeated step starts nothing twice


def test_receive_decodes_and_counts() -> None:
    core = LiveCore(kind="sideband")
    core.connected()
    assert core.receive("not json") == [] and core.counters["malformed_events"] == 1
    fx = core.receive(b'{"type": "info", "event_id": "i", "code": "x", "message": "m"}')
    assert [type(e) for e in fx] == [Dispatch] and core.counters["events_received"] == 1
    core.written({"type": "response.create", "event_id": "x"})
    assert core.stats()["creates_sent"] == 1 and core.stats()["lost"] == 0
