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
