"""The client's list of known server event types is the ``openai`` package's."""

from __future__ import annotations

import typing
from typing import Any

from rtclient.core import events as ev


def _members(union: Any) -> list[Any]:
    args = typing.get_args(union)
    if args and typing.get_origin(union) is typing.Annotated:
        return _members(args[0])
    return [m for a in args for m in (_members(a) if typing.get_args(a) else [a])]


def _types(union: Any) -> set[str]:
    out: set[str] = set()
    for member in _members(union):
        field = member.model_fields["type"]
        out.update(a for a in typing.get_args(field.annotation) if isinstance(a, str))
    return out


def test_known_server_event_types_match_the_openai_package() -> None:
    from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
    from openai.types.realtime import RealtimeServerEvent

    ga = _types(RealtimeServerEvent)
    assert "response.done" in ga and len(ga) > 30  # the walk found the union
    assert ga | _types(BetaServerEvent) == ev.SERVER_EVENT_TYPES
