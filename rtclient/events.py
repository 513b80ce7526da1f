"""Building client events and parsing server events (PROTOCOL.md sections 2-5).

Every client event gets an ``event_id`` so that a server ``error`` can be matched to
the event that caused it; ``response.create`` also carries the gate's ticket in
``response.metadata`` so that ``response.created`` can be attributed.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from typing import Any

from rtclient.gate import TICKET_METADATA_KEY, Ticket

Event = dict[str, Any]

_ids = itertools.count(1)
_prefix = f"evt_rtc_{os.getpid():x}_"


class MalformedEventError(ValueError):
    """A server message that is not a JSON object with a string ``type``."""


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


def encode(event: Mapping[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def decode(message: str | bytes) -> Event:
    """Parse one server message; raise :class:`MalformedEventError` on anything odd."""
    try:
        event = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventError(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedEventError("not an object with a string 'type'")
    return event


def response_text(done_event: Mapping[str, Any]) -> str:
    """The text (or audio transcript) of every message a ``response.done`` lists."""
    parts: list[str] = []
    response = done_event.get("response") or {}
    for item in response.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "message":
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


def function_calls(done_event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every ``function_call`` item a ``response.done`` lists."""
    response = done_event.get("response") or {}
    return [
        item
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]
