"""Building client events and parsing server events (the Realtime API's event shapes).

Every client event gets an ``event_id`` so that a server ``error`` can be matched to
the event that caused it; ``response.create`` also carries the gate's ticket in
``response.metadata`` so that ``response.created`` can be attributed.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from rtclient.core.event_models import EventModels, by_type, union_members
from rtclient.core.gate import TICKET_METADATA_KEY, Ticket

Event = dict[str, Any]

_ids = itertools.count(1)
_prefix = f"evt_rtc_{os.getpid():x}_"


def _new_process() -> None:
    """A forked child (gunicorn workers, say) numbers its events under its own pid, so
    two processes on one call never send the same event_id."""
    global _ids, _prefix
    _ids = itertools.count(1)
    _prefix = f"evt_rtc_{os.getpid():x}_"


os.register_at_fork(after_in_child=_new_process)
# Every event_id rtclient sends starts with one of these (events here, gate tickets
# "rtc_<pid>_..."), so an error naming another connection's event is told apart.
EVENT_ID_PREFIXES = ("evt_rtc_", "rtc_")


class MalformedEventError(ValueError):
    """A server message that is not a JSON object with a string ``type``."""


# The default Realtime model: the newest generally available one in the openai
# package's literals. It reasons (session.reasoning.effort) and speaks preambles
# (Answer.commentary); older ones ("gpt-realtime", "gpt-realtime-mini") are deprecated
# there, and "-2.1" is a preview.
DEFAULT_MODEL = "gpt-realtime-2"


def new_event_id() -> str:
    return f"{_prefix}{next(_ids)}"


def with_event_id(event: Mapping[str, Any]) -> Event:
    out = dict(event)
    out.setdefault("event_id", new_event_id())
    return out


def response_create(ticket: Ticket) -> Event:
    """The ``response.create`` for a gate ticket: its id as ``event_id`` and in metadata."""
    response: dict[str, Any] = dict(ticket.params or {})
    metadata = dict(response.get("metadata") or {})
    metadata[TICKET_METADATA_KEY] = ticket.event_id
    response["metadata"] = metadata
    return {"type": "response.create", "event_id": ticket.event_id, "response": response}


def user_message(text: str) -> Event:
    return with_event_id(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )


def function_call_output(call_id: str, output: str) -> Event:
    return with_event_id(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def session_update(session: Mapping[str, Any]) -> Event:
    body = dict(session)
    body.setdefault("type", "realtime")
    return with_event_id({"type": "session.update", "session": body})


def response_cancel(response_id: str | None) -> Event:
    event: Event = {"type": "response.cancel"}
    if response_id is not None:
        event["response_id"] = response_id
    return with_event_id(event)


def output_audio_buffer_clear() -> Event:
    return with_event_id({"type": "output_audio_buffer.clear"})


def with_client_turns(session: Mapping[str, Any]) -> Event:
    """``session`` with server VAD that commits turns but starts no response itself.

    Keeps whatever the caller set in ``audio.input.turn_detection`` (type, thresholds)
    and forces ``create_response: false``; ``interrupt_response`` stays true unless set.
    """
    config = dict(session)
    audio = dict(config.get("audio") or {})
    audio_input = dict(audio.get("input") or {})
    detection = dict(audio_input.get("turn_detection") or {"type": "server_vad"})
    detection["create_response"] = False
    detection.setdefault("interrupt_response", True)
    audio_input["turn_detection"] = detection
    audio["input"] = audio_input
    config["audio"] = audio
    return config


def keep_client_turns(session: Mapping[str, Any]) -> Event:
    """A ``session.update`` of a client-turns client: a ``turn_detection`` it sets
    still creates no response (see :func:`with_client_turns`); none set, none added."""
    audio = session.get("audio")
    audio_input = audio.get("input") if isinstance(audio, Mapping) else None
    if isinstance(audio_input, Mapping) and isinstance(audio_input.get("turn_detection"), Mapping):
        return with_client_turns(session)
    return dict(session)


# Every server event type the Realtime API defines (GA, and the old beta names it may
# still send). Anything else counts as ``unknown_events``. Written out rather than read
# from the ``openai`` package at run time (importing it costs ~1.5 s here);
# ``tests/test_events.py`` checks this set against the package's event unions.
SERVER_EVENT_TYPES: frozenset[str] = frozenset(
    (
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "error",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "mcp_list_tools.in_progress",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.created",
        "response.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.text.delta",
        "response.text.done",
        "session.created",
        "session.updated",
        "transcription_session.updated",
    )
)


def encode(event: Mapping[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


_decode_json = msgspec.json.Decoder().decode


def loads(message: str | bytes) -> Any:
    """``json.loads(message)``, about 3.5x faster: every server message is decoded on
    the loop thread, so this is its largest per-event cost that rtclient controls
    (``bench/events_bench.py``: 3.3 to 0.9 us per event over a real mix). msgspec's C
    decoder gives the same values where it accepts a text; what it refuses - ``NaN``, a
    number too large for a float, a lone surrogate, bytes that are not UTF-8 - is read
    by ``json.loads`` as before (``ValueError`` if that refuses it too)."""
    try:
        return _decode_json(message)
    except msgspec.DecodeError:
        return json.loads(message)


def decode(message: str | bytes | dict[str, Any]) -> Event:
    """Parse one server message (or take the dict a transport already parsed from it);
    raise :class:`MalformedEventError` on anything odd."""
    if isinstance(message, dict):
        event: Any = message
    else:
        try:
            event = loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedEventError(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedEventError("not an object with a string 'type'")
    return event


# The ``phase`` of an assistant message (the ``openai`` package's name and values, as on
# ``ResponseOutputMessage.phase``): reasoning models such as ``gpt-realtime-2`` may speak
# a ``"commentary"`` preamble ("Let me check that...") before their ``"final_answer"``.
# A message with no phase (older models) is the final answer.
Phase = Literal["commentary", "final_answer"]
PHASES: tuple[Phase, ...] = ("commentary", "final_answer")


# ``session.reasoning.effort`` of reasoning models such as ``gpt-realtime-2`` (the
# ``openai`` package's ``RealtimeReasoningEffort``; ``tests/test_models.py`` checks it).
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]
REASONING_EFFORTS: tuple[ReasoningEffort, ...] = ("minimal", "low", "medium", "high", "xhigh")


def message_phase(item: Mapping[str, Any]) -> Phase:
    """The phase of an assistant message item: its ``phase``, ``"final_answer"`` if none."""
    return "commentary" if item.get("phase") == "commentary" else "final_answer"


def response_text(done_event: Mapping[str, Any], phase: Phase = "final_answer") -> str:
    """The text (or audio transcript) of the messages of ``phase`` a ``response.done``
    lists: by default the final answer, without the preamble (:func:`response_commentary`)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    parts: list[str] = []
    response = done_event.get("response") or {}
    for item in response.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        if message_phase(item) != phase:
            continue
        for content in item.get("content") or []:
            if not isinstance(content, dict):
                continue
            text = content.get("text") if content.get("type") in ("output_text", "text") else None
            if text is None:
                text = content.get("transcript")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def response_commentary(done_event: Mapping[str, Any]) -> str:
    """The preamble of a ``response.done``: its ``"commentary"`` messages' text."""
    return response_text(done_event, "commentary")


def function_calls(done_event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every ``function_call`` item a ``response.done`` lists."""
    response = done_event.get("response") or {}
    return [
        item
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]


# -- typed events: the ``openai`` package's models, loaded on first use ----------------
# (rtclient.core.event_models: the pre-check and lazy build that make a valid event's
# model cheap, and the validator that rejects a malformed one before anyone sees it).


def _load_models() -> dict[str, type[Any]]:
    from openai.types.realtime import RealtimeServerEvent

    return by_type(union_members(RealtimeServerEvent))


MODELS = EventModels(_load_models, "openai.types.realtime")
event_models = MODELS.models
"""Each server event type with a GA model -> its ``openai.types.realtime`` class.
Imports ``openai`` on the first call (~1.5 s; call it off the loop thread). The old beta
names (``response.text.delta`` ...) have no GA model and are absent."""
prepare_models = MODELS.prepare
to_model = MODELS.to_model


def close_matches(event_type: str) -> list[str]:
    """The known server event types a misspelt ``event_type`` may have meant."""
    import difflib

    return difflib.get_close_matches(event_type, sorted(SERVER_EVENT_TYPES), n=3, cutoff=0.6)
