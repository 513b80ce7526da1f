"""The emulator's deterministic model, and the contract for plugging in your own.

A model is any callable ``model(request: ModelRequest) -> Sequence[Output]`` (or an
``async`` one returning that). It runs on the emulator's event loop, so it must be quick
and must not block. It decides *what* a response says; the session decides *how* it is
streamed (event order, pacing, cancellation). ``Output`` is ``TextReply(text)`` (one
assistant message: text, or audio with that transcript; ``phase="commentary"`` or
``"final_answer"`` labels it as a reasoning model's preamble or final answer) or
``ToolCall(name, arguments)`` (one ``function_call`` item; several = parallel calls in
one response).

The default :class:`ScriptedModel` follows this script, looking at the response's
context (the conversation, or an out-of-band response's ``input``):

1. If a ``function_call`` item follows the last user message, the model already called
   its tools for that message: it answers in text with every call's output,
   ``Tool results: name -> output; name2 -> output2.`` (``(no output)`` for a call whose
   output was not added).
2. If the user spoke while tools ran - the calls made for the user message before the
   last one have an output that no tool-results answer (an assistant message starting
   ``Tool results:``) follows yet - and that later user message already has an
   assistant reply (say, server VAD's), the model answers those calls the same way:
   each turn is answered in its own response, the user's and the tools'.
3. Otherwise it reads the last user message's text (``input_text`` text and
   ``input_audio`` transcripts). Every mention of a registered function tool's name is a
   call, in order of appearance:

   - ``get_weather`` (bare name)           -> one call, arguments ``{}``
   - ``get_weather({"city": "Paris"})``    -> one call with those JSON arguments
   - ``get_weather*64``                    -> 64 parallel calls, arguments
     ``{"i": 0}`` ... ``{"i": 63}``
   - ``get_weather({"city": "Paris"})*3``  -> 3 calls, ``{"city": "Paris", "i": k}``

   Tools are the session's (``session.update``, the call's ``session`` part, the client
   secret's session) unless ``response.create`` brings its own. ``tool_choice: "none"``
   disables calls; ``"required"`` or ``{"type": "function", "name": N}`` with no
   mention calls the first tool (or ``N``) with ``{}``.
4. With no call, it answers ``You said: <text>`` (``Hello! How can I help?`` when
   the context has no user message; ``Are you still there?`` when the last user turn
   has no words - the silence an idle timeout commits).

``ScriptedModel(preamble="One moment.")`` speaks like a reasoning model such as
``gpt-realtime-2``: every response starts with that preamble, a message of phase
``"commentary"``, and its other messages carry phase ``"final_answer"``.

:class:`Pace` sets how fast the answer streams, so responses last long enough for races.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

MAX_REPEAT = 1024
TOOL_RESULTS = "Tool results: "
STILL_THERE = "Are you still there?"


@dataclass(frozen=True)
class Pace:
    """Timing of a response's stream."""

    delay: float = 0.01
    """Seconds before each delta (text, transcript or arguments)."""

    deltas: int = 4
    """A message's text is streamed in at most this many deltas (so it lasts about
    ``deltas * delay``). Raise both for long responses."""

    call_deltas: int = 1
    """Argument deltas per function call."""

    audio_ms_per_delta: int = 60
    """Milliseconds of speech each transcript delta adds to the WebRTC audio track;
    ``output_audio_buffer.stopped`` follows when it has played out."""


Phase: TypeAlias = Literal["commentary", "final_answer"]


@dataclass(frozen=True)
class TextReply:
    """One assistant message (text, or audio whose transcript is ``text``)."""

    text: str
    phase: Phase | None = None
    """The message's ``phase`` (reasoning models); ``None``: no phase, as older models."""


@dataclass(frozen=True)
class ToolCall:
    """One function call; ``arguments`` is a JSON string or an object to serialize."""

    name: str
    arguments: str | dict[str, Any] = "{}"

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


Output: TypeAlias = TextReply | ToolCall


@dataclass(frozen=True)
class ModelRequest:
    """What a model sees for one response (copies: mutating them changes nothing)."""

    items: list[dict[str, Any]]
    """The context, oldest first: conversation items as the API shows them."""
    tools: list[dict[str, Any]]
    """Function tools in effect for this response."""
    tool_choice: Any = "auto"
    instructions: str | None = None
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    metadata: dict[str, str] | None = None
    conversation: str = "auto"
    """``"auto"`` (default conversation) or ``"none"`` (out-of-band)."""
    origin: str = "client"
    """``"client"`` (a ``response.create``), ``"turn_detection"`` (server VAD) or
    ``"idle_timeout"`` (``turn_detection.idle_timeout_ms``)."""


Model: TypeAlias = Callable[[ModelRequest], "Sequence[Output] | Awaitable[Sequence[Output]]"]


class ScriptedModel:
    """The deterministic script described in this module's docstring.

    ``preamble``: a text every response speaks first, as a ``"commentary"`` message
    (then the answer's messages are ``"final_answer"``); ``None`` for no phases."""

    def __init__(self, preamble: str | None = None) -> None:
        if preamble is not None and not preamble:
            raise ValueError("preamble must be a non-empty text or None")
        self.preamble = preamble

    def __call__(self, request: ModelRequest) -> list[Output]:
        outputs = self._script(request)
        if self.preamble is None:
            return outputs
        final = [
            TextReply(o.text, "final_answer") if isinstance(o, TextReply) else o for o in outputs
        ]
        return [TextReply(self.preamble, "commentary"), *final]

    def _script(self, request: ModelRequest) -> list[Output]:
        items = request.items
        last_user = _last_index(items, _is_user_message)
        after = items[last_user + 1 :] if last_user is not None else items
        called = [it for it in after if it.get("type") == "function_call"]
        if not called and last_user is not None:
            called = _unanswered_round_before(items, last_user)
        if called:
            outputs = {
                it.get("call_id"): it.get("output")
                for it in items
                if it.get("type") == "function_call_output"
            }
            results = "; ".join(
                f"{it.get('name')} -> {outputs.get(it.get('call_id'), '(no output)')}"
                for it in called
            )
            return [TextReply(f"{TOOL_RESULTS}{results}.")]

        text = user_text(items[last_user]) if last_user is not None else None
        names = [
            str(t["name"])
            for t in request.tools
            if t.get("type", "function") == "function" and t.get("name")
        ]
        if request.tool_choice != "none" and names:
            calls = parse_tool_calls(text or "", names)
            if calls:
                return list(calls)
            forced = _forced_tool(request.tool_choice, names)
            if forced is not None:
                return [ToolCall(forced, "{}")]
        if text is None:
            return [TextReply("Hello! How can I help?")]
        if not text.strip():
            return [TextReply(STILL_THERE)]
        return [TextReply(f"You said: {text}")]


def parse_tool_calls(text: str, tool_names: Sequence[str]) -> list[ToolCall]:
    """Every mention of a tool name in ``text``, in order (syntax: module docstring)."""
    if not tool_names:
        return []
    alternatives = "|".join(re.escape(n) for n in sorted(set(tool_names), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])({alternatives})(?![\w-])")
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos = 0
    while (match := pattern.search(text, pos)) is not None:
        name, end = match.group(1), match.end()
        args: dict[str, Any] = {}
        if text.startswith("(", end):
            parsed = _json_call_args(decoder, text, end + 1)
            if parsed is not None:
                args, end = parsed
        repeat = re.match(r"\*(\d+)", text[end:])
        if repeat:
            end += repeat.end()
            count = min(int(repeat.group(1)), MAX_REPEAT)
            calls.extend(ToolCall(name, {**args, "i": k}) for k in range(count))
        else:
            calls.append(ToolCall(name, args))
        pos = end
    return calls


def _json_call_args(
    decoder: json.JSONDecoder, text: str, start: int
) -> tuple[dict[str, Any], int] | None:
    """``{...})`` at ``start`` -> (the object, index after ``)``); None if not that."""
    try:
        value, end = decoder.raw_decode(text, start)
    except ValueError:
        return None
    close = re.match(r"\s*\)", text[end:])
    if not isinstance(value, dict) or close is None:
        return None
    return value, end + close.end()


def _forced_tool(tool_choice: Any, names: Sequence[str]) -> str | None:
    if tool_choice == "required":
        return names[0]
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = tool_choice.get("name")
        return str(name) if name else None
    return None


def user_text(item: dict[str, Any]) -> str:
    """The words of a user message: its ``input_text`` texts and audio transcripts."""
    parts: list[str] = []
    for part in item.get("content") or []:
        if not isinstance(part, dict):
            continue
        words = part.get("text") if part.get("type") == "input_text" else part.get("transcript")
        if isinstance(words, str) and words:
            parts.append(words)
    return " ".join(parts)


def assistant_text(item: dict[str, Any]) -> str:
    """The words of an assistant message: its ``output_text`` texts and transcripts."""
    parts: list[str] = []
    for part in item.get("content") or []:
        if not isinstance(part, dict):
            continue
        words = part.get("text") if part.get("type") in ("output_text", "text") else None
        if words is None:
            words = part.get("transcript")
        if isinstance(words, str) and words:
            parts.append(words)
    return "".join(parts)


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def _is_assistant_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "assistant"


def _is_tool_results_answer(item: dict[str, Any]) -> bool:
    return _is_assistant_message(item) and assistant_text(item).startswith(TOOL_RESULTS)


def _unanswered_round_before(items: list[dict[str, Any]], last_user: int) -> list[dict[str, Any]]:
    """Rule 2 of the script: the calls made for the user message before ``last_user``,
    if the user's later turn already has its reply and the calls' results do not."""
    if not any(_is_assistant_message(it) for it in items[last_user + 1 :]):
        return []  # the user's turn comes first
    previous = _last_index(items[:last_user], _is_user_message)
    start = previous + 1 if previous is not None else 0
    calls = [it for it in items[start:last_user] if it.get("type") == "function_call"]
    call_ids = {it.get("call_id") for it in calls}
    last_output = _last_index(
        items, lambda it: it.get("type") == "function_call_output" and it.get("call_id") in call_ids
    )
    if last_output is None:
        return []
    answered = any(_is_tool_results_answer(it) for it in items[last_output + 1 :])
    return [] if answered else calls


def _last_index(
    items: Sequence[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]
) -> int | None:
    for index in range(len(items) - 1, -1, -1):
        if pred(items[index]):
            return index
    return None


def split_text(text: str, pieces: int) -> list[str]:
    """``text`` in at most ``pieces`` consecutive non-empty chunks of similar size."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]
