"""Every echoed string is bounded: a megabyte from the model or the server stays out of
error outputs, exception messages, log lines and warnings (``rtclient._bounded``).

End to end over a real WebSocket to the emulator: the model calls a tool whose *name* is
a megabyte, passes an argument whose *name* is a megabyte, one whose *value* is, and a
tool raises with a megabyte of message; the server sends an event whose *type* is a
megabyte and ends the session with an error whose *message* is. Each output the model
gets back is a few hundred bytes and still names the problem; the call ids echo exactly
(they are data, not text); no log line and no exception or warning text grows.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from loguru import logger

from rtclient import ClosedError, RealtimeClient, ServerError, ToolErrorWarning, tool
from rtclient._bounded import TEXT, Clipped, bounded_args, clip
from rtclient.emulator import Emulator, ModelRequest, Output, ScriptedModel, ToolCall
from rtclient.logs import logger as rt_logger
from rtclient.tools import ToolArguments, error_output
from rtclient.transports import signaling

pytestmark = pytest.mark.timeout(120)

MB = 1_000_000
HUGE_NAME = "n" * MB
HUGE_VALUE = "v" * MB
MARK = "v" * 5000  # any echo longer than the bounds would contain this
LINE_BOUND = 4 * TEXT  # a log line: a few bounded arguments and the template


def _bounded(text: str) -> bool:
    return len(text) < LINE_BOUND and MARK not in text and "n" * 5000 not in text


# -- the helper -------------------------------------------------------------------------


def test_clip_keeps_short_text_and_says_how_much_it_cut() -> None:
    assert clip("short") == "short"
    cut = clip("x" * 1000, 10)
    assert cut == "xxxxxxxxxx... (990 more characters)"


def test_log_arguments_format_bounded_whatever_the_format() -> None:
    huge = "h" * MB
    (arg, number, nothing) = bounded_args((huge, 1.5, None))
    assert isinstance(arg, Clipped) and number == 1.5 and nothing is None
    for text in (f"{arg}", f"{arg!r}", f"{arg:>10}", f"{arg!s:.5}"):
        assert len(text) < TEXT + 50
    assert f"{bounded_args((0.123456789,))[0]:.3f}" == "0.123"


def test_exceptions_bound_their_text_but_keep_their_data() -> None:
    event = {
        "type": "error",
        "error": {
            "type": "t" * MB,
            "code": "c" * MB,
            "message": "m" * MB,
            "event_id": "e" * MB,
        },
    }
    error = ServerError.from_event(event)
    assert len(str(error)) < TEXT + 50 and len(repr(error)) < TEXT + 100
    assert len(error.message) < TEXT + 50
    assert error.code == "c" * MB and error.event_id == "e" * MB  # compared by code: exact
    refused = signaling.signaling_error(
        401, json.dumps({"error": {"message": "m" * MB, "code": "k" * MB}}), _Key()
    )
    assert len(str(refused)) < TEXT + 50 and len(refused.message) < TEXT + 50


class _Key:
    """What signaling_error needs of a Secret."""

    def redact(self, text: str) -> str:
        return text


def test_argument_errors_quote_names_and_values_bounded() -> None:
    def lookup(order_id: int, tags: dict[str, int] | None = None) -> None:
        """An order."""

    arguments = ToolArguments(lookup)
    cases = [
        {HUGE_NAME: 1},  # an argument the function does not take
        {"order_id": HUGE_VALUE},  # a value of the wrong type
        {"order_id": 1, "tags": {HUGE_NAME: "not an int"}},  # a bad value under a huge key
        {"order_id": 1, **{f"{HUGE_NAME}{i}": i for i in range(20)}},  # many of them
    ]
    for case in cases:
        with pytest.raises(ValueError) as info:
            arguments.validate(case)
        assert len(str(info.value)) < 8 * (TEXT + 100), list(case)[:1]
        assert "n" * 5000 not in str(info.value) and MARK not in str(info.value)
    assert len(error_output("e" * MB)) < TEXT + 100


# -- end to end ---------------------------------------------------------------------------


class _Model:
    """The scripted model, except that "call the unknown tool" calls one named HUGE_NAME."""

    def __init__(self) -> None:
        self.scripted = ScriptedModel()

    def __call__(self, request: ModelRequest) -> Sequence[Output]:
        last = request.items[-1] if request.items else {}
        texts = [c.get("text") for c in last.get("content") or [] if isinstance(c, dict)]
        if last.get("role") == "user" and "call the unknown tool" in texts:
            return [ToolCall(HUGE_NAME, "{}")]
        return self.scripted(request)


@tool
def lookup(order_id: int) -> dict[str, int]:
    """An order's status."""
    return {"order_id": order_id}


@tool
def boom(city: str) -> str:
    """Fails with the city in its message."""
    raise KeyError(city)


def _outputs(emu: Emulator) -> list[dict[str, Any]]:
    events = emu.sessions[-1].client_events
    return [
        e["item"]
        for e in events
        if e.get("type") == "conversation.item.create"
        and e["item"].get("type") == "function_call_output"
    ]


def test_megabyte_names_values_types_and_messages_are_echoed_bounded() -> None:
    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(
        lambda m: lines.append(str(m)),
        level="TRACE",
        format="{message}",
        filter=lambda r: not (r["name"] or "").startswith("rtclient.emulator"),
    )
    try:
        with Emulator(turn_detection=None, model=_Model()) as emu:
            client = RealtimeClient(
                api_key="sk-test",
                base_url=emu.url,
                transport="websocket",
                tools=[lookup, boom],
                session={"output_modalities": ["text"]},
            )
            with client, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ToolErrorWarning)
                answers = [
                    client.ask("call the unknown tool", timeout=60),
                    client.ask(f"lookup({json.dumps({HUGE_NAME: 1})})", timeout=60),
                    client.ask(f"lookup({json.dumps({'order_id': HUGE_VALUE})})", timeout=60),
                    client.ask(f"boom({json.dumps({'city': HUGE_VALUE})})", timeout=60),
                ]
                outputs = _outputs(emu)
                session = emu.sessions[-1]
                session.inject(json.dumps({"type": "t" * MB, "event_id": "evt_1"}))
                session.inject(
                    json.dumps(
                        {
                            "type": "error",
                            "event_id": "evt_2",
                            "error": {
                                "type": "invalid_request_error",
                                "code": "session_expired",
                                "message": "Your session expired: " + "m" * MB,
                            },
                        }
                    )
                )
                with pytest.raises(ClosedError) as closed:
                    for _ in range(100):  # until the expiry is handled (each is a round trip)
                        client.send_text("still there?", respond=False)
            stats = client.stats()
    finally:
        logger.remove(sink)
        logger.disable("rtclient")

    calls = [answer.tool_calls[0] for answer in answers]
    assert [len(a.tool_calls) for a in answers] == [1, 1, 1, 1]
    assert calls[0].name == HUGE_NAME  # the call as the model made it: data, exact
    assert len(outputs) == 4
    for call, output in zip(calls, outputs, strict=True):
        assert output["call_id"] == call.call_id  # echoed exactly: the API matches on it
        assert len(output["output"]) < TEXT + 100, output["output"][:100]
        assert call.error is not None and len(call.error) < TEXT + 100
    errors = [json.loads(o["output"])["error"] for o in outputs]
    assert errors[0].startswith("unknown tool 'nnnn") and "more characters" in errors[0]
    assert "unexpected argument" in errors[1] and "order_id: missing" in errors[1]
    assert errors[2].startswith("bad arguments for lookup: order_id:")
    assert "more characters" in errors[2]
    assert errors[3].startswith("boom raised KeyError:") and "more characters" in errors[3]

    (warned,) = [w for w in caught if issubclass(w.category, ToolErrorWarning)]
    assert len(str(warned.message)) < 2 * TEXT and MARK not in str(warned.message)

    assert stats["unknown_events"] >= 1 and stats["server_errors"] >= 1
    assert isinstance(closed.value.__cause__, ServerError)
    assert len(str(closed.value)) < 2 * TEXT and MARK not in str(closed.value)
    assert len(str(closed.value.__cause__)) < TEXT + 50

    assert any("[SERVER_EVENT] ttt" in line for line in lines)  # the type, echoed bounded
    assert any("Your session expired" in line for line in lines)
    too_long = [line[:120] for line in lines if not _bounded(line)]
    assert not too_long


def test_the_logger_bounds_what_any_call_site_passes() -> None:
    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}")
    try:
        rt_logger.warning("[TOOL] {} ({}): {!r}", HUGE_NAME, "call_" + "c" * MB, ValueError(MARK))
    finally:
        logger.remove(sink)
        logger.disable("rtclient")
    (line,) = lines
    assert _bounded(line) and line.startswith("[TOOL] nnnn")
