"""The scripted model's syntax and decisions (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from rtclient.emulator import ModelRequest, ScriptedModel, TextReply, ToolCall
from rtclient.emulator.model import parse_tool_calls, split_text

pytestmark = pytest.mark.timeout(10)


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _tools(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "name": n} for n in names]


def test_call_syntax() -> None:
    calls = parse_tool_calls(
        'weather({"city": "Paris"}) then time*3, weather, and timer', ["weather", "time"]
    )
    assert [(c.name, c.arguments) for c in calls] == [
        ("weather", {"city": "Paris"}),
        ("time", {"i": 0}),
        ("time", {"i": 1}),
        ("time", {"i": 2}),
        ("weather", {}),
    ]
    repeated = parse_tool_calls('f({"a": [1, ")"]})*2', ["f"])
    assert [c.arguments_json() for c in repeated] == ['{"a":[1,")"],"i":0}', '{"a":[1,")"],"i":1}']
    assert parse_tool_calls('f({"name": "g"})', ["f", "g"]) == [ToolCall("f", {"name": "g"})]
    assert parse_tool_calls("f(not json)", ["f"]) == [ToolCall("f", {})]
    assert parse_tool_calls("nothing", ["f"]) == []


def test_scripted_decisions() -> None:
    model = ScriptedModel()
    assert model(ModelRequest(items=[], tools=[])) == [TextReply("Hello! How can I help?")]
    assert model(ModelRequest(items=[_user("hi")], tools=_tools("f"))) == [
        TextReply("You said: hi")
    ]
    assert model(ModelRequest(items=[_user("f")], tools=_tools("f"), tool_choice="none")) == [
        TextReply("You said: f")
    ]
    calls = model(ModelRequest(items=[_user("f*2")], tools=_tools("f")))
    assert calls == [ToolCall("f", {"i": 0}), ToolCall("f", {"i": 1})]
    forced = {"type": "function", "name": "g"}
    assert model(ModelRequest(items=[_user("hi")], tools=_tools("f", "g"), tool_choice=forced)) == [
        ToolCall("g", "{}")
    ]
    history = [
        _user("f f"),
        {"type": "function_call", "name": "f", "call_id": "c1", "arguments": "{}"},
        {"type": "function_call", "name": "f", "call_id": "c2", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
    ]
    assert model(ModelRequest(items=history, tools=_tools("f"))) == [
        TextReply("Tool results: f -> one; f -> (no output).")
    ]


def test_split_text() -> None:
    assert split_text("abcdefg", 3) == ["abc", "def", "g"]
    assert split_text("ab", 5) == ["a", "b"]
    assert split_text("", 3) == []
    assert "".join(split_text("You said: hello", 4)) == "You said: hello"


def _call(call_id: str, name: str = "f") -> dict[str, Any]:
    return {"type": "function_call", "name": name, "call_id": call_id, "arguments": "{}"}


def _output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _assistant(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": text}],
    }


def test_a_user_turn_during_a_tool_round_is_answered_in_its_own_turn() -> None:
    """The demo's race: the user speaks while the tools run; server VAD's reply answers
    the user, and the tools' follow-up still answers the tool results."""
    model = ScriptedModel()
    tools = _tools("f", "g")
    asked = [_user("f and g"), _call("c1", "f"), _call("c2", "g")]
    # the user's turn is committed, the outputs arrive, VAD's reply starts first
    vad_context = [*asked, _user("hmm, and tomorrow?"), _output("c1", "one"), _output("c2", "two")]
    assert model(ModelRequest(items=vad_context, tools=tools, origin="turn_detection")) == [
        TextReply("You said: hmm, and tomorrow?")
    ]
    # then the client's follow-up create (re-armed after its rejection)
    followup = [*vad_context, _assistant("You said: hmm, and tomorrow?")]
    assert model(ModelRequest(items=followup, tools=tools)) == [
        TextReply("Tool results: f -> one; g -> two.")
    ]
    # once answered, the tool round is over: the next turn is about the user again
    answered = [*followup, _assistant("Tool results: f -> one; g -> two."), _user("thanks")]
    assert model(ModelRequest(items=answered, tools=tools)) == [TextReply("You said: thanks")]
    # outputs in either order around the user's turn give the same answers
    swapped = [*asked, _output("c1", "one"), _output("c2", "two"), _user("hmm, and tomorrow?")]
    assert model(ModelRequest(items=swapped, tools=tools)) == [
        TextReply("You said: hmm, and tomorrow?")
    ]
    assert model(ModelRequest(items=[*swapped, _assistant("You said: hmm")], tools=tools)) == [
        TextReply("Tool results: f -> one; g -> two.")
    ]


def test_an_answer_before_the_outputs_does_not_close_the_tool_round() -> None:
    """Another connection's response may answer a tool round before its outputs are in;
    the follow-up still answers with them."""
    model = ScriptedModel()
    early = _assistant("Tool results: f -> (no output).")
    history = [_user("f"), _call("c1"), early, _output("c1", "one")]
    assert model(ModelRequest(items=history, tools=_tools("f"))) == [
        TextReply("Tool results: f -> one.")
    ]


def test_a_later_unanswered_user_message_comes_before_an_old_tool_round() -> None:
    model = ScriptedModel()
    history = [_user("f"), _call("c1"), _output("c1", "one"), _user("g please")]
    assert model(ModelRequest(items=history, tools=_tools("f", "g"))) == [ToolCall("g", {})]
    no_output = [_user("f"), _call("c1"), _user("never mind"), _assistant("You said: never mind")]
    assert model(ModelRequest(items=no_output, tools=_tools("f"))) == [
        TextReply("You said: never mind")
    ]


def test_a_silent_turn_and_a_reasoning_models_preamble() -> None:
    silence = {"type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    assert ScriptedModel()(ModelRequest(items=[silence], tools=[])) == [
        TextReply("Are you still there?")
    ]
    model = ScriptedModel(preamble="One moment.")
    assert model(ModelRequest(items=[_user("hi")], tools=[])) == [
        TextReply("One moment.", "commentary"),
        TextReply("You said: hi", "final_answer"),
    ]
    assert model(ModelRequest(items=[_user("f")], tools=_tools("f"))) == [
        TextReply("One moment.", "commentary"),
        ToolCall("f", {}),
    ]
