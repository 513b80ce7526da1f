"""Today's models: the default model, reasoning effort, and answers with a preamble.

Reasoning models such as ``gpt-realtime-2`` may speak a ``"commentary"`` message (a
preamble: "One moment...") before their ``"final_answer"``. ``Answer.text`` is the
final answer alone; the preamble is ``Answer.commentary``. The emulator's scripted
model speaks that way with ``ScriptedModel(preamble=...)``, and the emulator refuses a
``reasoning.effort`` the ``openai`` package's schema does not allow.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from rtclient import RealtimeClient, ServerError, tool
from rtclient.calls import DEFAULT_MODEL as CALLS_DEFAULT_MODEL
from rtclient.client import DEFAULT_MODEL
from rtclient.core import events as ev
from rtclient.emulator import Emulator, Pace, ScriptedModel

pytestmark = pytest.mark.timeout(60)

PREAMBLE = "One moment, let me think."


@pytest.fixture(params=["webrtc", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reasoning_emulator() -> Iterator[Emulator]:
    """VAD off; a model that speaks a preamble before every answer."""
    model = ScriptedModel(preamble=PREAMBLE)
    with Emulator(turn_detection=None, pace=Pace(delay=0.002), model=model) as emulator:
        yield emulator


def connect(emulator: Emulator, transport: str, **kwargs: Any) -> RealtimeClient:
    """A client for ``emulator``, to connect with ``with``."""
    kwargs.setdefault("api_key", "sk-test")
    kwargs.setdefault("base_url", emulator.url)
    return RealtimeClient(loopback_only=True, transport=transport, **kwargs)  # type: ignore[arg-type]


@tool
def get_weather(city: str = "Paris") -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21}


# -- the package's names --------------------------------------------------------------


def test_the_default_model_is_a_current_model_of_the_openai_package() -> None:
    """``gpt-realtime-2``: in the package's literals, not among the values its docs
    call deprecated, not a preview (``-2.1``); the same default for ``create_call``."""
    import inspect

    from openai.types.realtime import RealtimeSessionCreateRequest, realtime_session_create_request

    field = RealtimeSessionCreateRequest.model_fields["model"]
    literals = {
        value
        for member in typing.get_args(field.annotation)
        for value in typing.get_args(member)
        if isinstance(value, str)
    }
    source = inspect.getsource(realtime_session_create_request)  # the field's docstring
    notice = source.split("Deprecated values:")[1].split('"""')[0]
    deprecated = set(re.findall(r'"([\w.-]+)"', notice))
    assert "gpt-realtime" in deprecated  # the old default: the check reads the right text
    assert DEFAULT_MODEL == "gpt-realtime-2" == CALLS_DEFAULT_MODEL
    assert DEFAULT_MODEL in literals and DEFAULT_MODEL not in deprecated
    client = RealtimeClient(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    assert client.model == DEFAULT_MODEL


def test_phase_and_reasoning_effort_names_are_the_packages() -> None:
    from openai.types.realtime.realtime_reasoning_effort import RealtimeReasoningEffort
    from openai.types.responses import ResponseOutputMessage

    assert typing.get_args(RealtimeReasoningEffort) == ev.REASONING_EFFORTS
    assert typing.get_args(ev.ReasoningEffort) == ev.REASONING_EFFORTS
    phase = ResponseOutputMessage.model_fields["phase"].annotation
    (literal,) = [a for a in typing.get_args(phase) if typing.get_args(a)]
    assert ev.PHASES == typing.get_args(literal) == typing.get_args(ev.Phase)


# -- phases, on the wire format alone -------------------------------------------------


def _message(text: str, phase: str | None = None, kind: str = "output_text") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": "assistant"}
    key = "text" if kind == "output_text" else "transcript"
    item["content"] = [{"type": kind, key: text}]
    if phase is not None:
        item["phase"] = phase
    return item


def test_response_text_is_the_final_answer_and_commentary_the_preamble() -> None:
    done = {
        "type": "response.done",
        "response": {
            "output": [
                _message("Let me check. ", "commentary", "output_audio"),
                {"type": "function_call", "name": "f", "call_id": "c", "arguments": "{}"},
                _message("It is 21 C.", "final_answer", "output_audio"),
            ]
        },
    }
    assert ev.response_text(done) == "It is 21 C."
    assert ev.response_commentary(done) == ev.response_text(done, "commentary") == "Let me check. "
    older = {"response": {"output": [_message("Hi.")]}}  # no phase: the final answer
    assert ev.response_text(older) == "Hi." and ev.response_commentary(older) == ""
    with pytest.raises(ValueError, match="phase"):
        ev.response_text(done, "thinking")  # type: ignore[arg-type]


# -- over real connections ------------------------------------------------------------


def test_ask_returns_the_final_answer_as_text_and_the_preamble_as_commentary(
    reasoning_emulator: Emulator, transport: str
) -> None:
    with connect(reasoning_emulator, transport, tools=[get_weather]) as client:
        answer = client.ask("hello", timeout=30)
        assert answer.text == "You said: hello"
        assert answer.commentary == PREAMBLE
        output = answer.response.response.output  # the typed event keeps the field
        assert output is not None and getattr(output[0], "phase", None) == "commentary"

        rounded = client.ask('use get_weather({"city": "Oslo"})', timeout=30)
        assert rounded.text == 'Tool results: get_weather -> {"city": "Oslo", "temp_c": 21}.'
        assert rounded.commentary == f"{PREAMBLE}\n{PREAMBLE}"  # both responses spoke one
        assert [c.name for c in rounded.tool_calls] == ["get_weather"]
        assert client.stats()["lost"] == 0
    session = reasoning_emulator.sessions[-1]
    phases = [
        (item.get("phase"), item["content"][0].get("transcript"))
        for item in session.items()
        if item.get("role") == "assistant"
    ]
    assert phases[:2] == [("commentary", PREAMBLE), ("final_answer", "You said: hello")]


def test_reasoning_effort_reaches_the_session(transport: str) -> None:
    with Emulator(turn_detection=None) as emulator:
        session = {"reasoning": {"effort": "low"}, "instructions": "Be brief."}
        with connect(emulator, transport, reasoning_effort="high", session=session) as client:
            config = emulator.sessions[-1].config
            assert config["reasoning"] == {"effort": "high"}  # the typed option wins
            assert config["model"] == DEFAULT_MODEL and config["instructions"] == "Be brief."
            updated = client.update_session(reasoning={"effort": "minimal"})
            assert updated.reasoning is not None and updated.reasoning.effort == "minimal"


def test_a_reasoning_effort_outside_the_schema_is_refused_by_client_and_emulator() -> None:
    with pytest.raises(ValueError, match="reasoning_effort"):
        RealtimeClient(api_key="sk-test", reasoning_effort="extreme")  # type: ignore[arg-type]
    with Emulator(turn_detection=None) as emulator:
        with connect(emulator, "websocket") as client:
            with pytest.raises(ServerError) as refused:
                client.update_session(reasoning={"effort": "extreme"})
            assert refused.value.code == "invalid_value"
            assert refused.value.param == "session.reasoning.effort"
            ticket = client.request_response(reasoning={"effort": "max"})  # not realtime's
            with pytest.raises(ServerError) as per_response:
                ticket.result(10)
            assert per_response.value.param == "response.reasoning.effort"
            accepted = client.request_response(reasoning={"effort": "xhigh"}).result(10)
            assert accepted["response"]["status"] == "completed"
            assert client.stats()["lost"] == 0


def test_a_preamble_must_have_words() -> None:
    with pytest.raises(ValueError, match="preamble"):
        ScriptedModel(preamble="")
