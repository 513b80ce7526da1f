"""The ``openai`` package's GPT-Live server-event union, as a test's referee.

``assert_live_server_event`` validates a raw event with a pydantic ``TypeAdapter`` over
``openai.types.live.ServerEvent`` (the union the package exports), then rejects fields
the schema does not define anywhere (the models accept extras silently) - the session
snapshots included - and validates a ``response.event``'s nested Responses event
against ``openai.types.responses.ResponseStreamEvent`` the same way.
"""

from __future__ import annotations

import typing
from typing import Any

from openai.types.live import ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

LIVE_SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(ServerEvent)


def _by_type(alias: Any) -> dict[str, TypeAdapter[Any]]:
    """One adapter per ``type`` (errors then name the member that should have matched)."""
    adapters: dict[str, TypeAdapter[Any]] = {}
    for member in typing.get_args(typing.get_args(alias)[0]):
        for value in typing.get_args(member.model_fields["type"].annotation):
            adapters[value] = TypeAdapter(member)
    return adapters


RESPONSES_EVENTS = _by_type(ResponseStreamEvent)


def unknown_fields(value: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            found += unknown_fields(entry, f"{path}[{index}]")
    return found


def assert_live_server_event(event: dict[str, Any]) -> Any:
    model = LIVE_SERVER_EVENTS.validate_python(event)
    assert type(model).__name__ != "dict", event
    unknown = unknown_fields(model, str(event.get("type")))
    if event.get("type") == "response.event":
        inner = RESPONSES_EVENTS[event["event"]["type"]].validate_python(event["event"])
        unknown += unknown_fields(inner, f"response.event/{event['event'].get('type')}")
    assert not unknown, f"fields unknown to the schema: {unknown} in {event}"
    return model


def assert_all_live(events: list[dict[str, Any]]) -> int:
    """Validate every event; returns how many were checked."""
    for event in events:
        assert_live_server_event(event)
    return len(events)
