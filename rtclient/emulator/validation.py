"""Check every client event against the ``openai`` package's own schema.

``openai.types.realtime.RealtimeClientEvent`` is a union discriminated by ``type``; we
keep one pydantic ``TypeAdapter`` per member, chosen by ``type``, which is the same
validation as the whole union (and ~15x faster than letting pydantic try every member).
An event that fails becomes a :class:`ClientEventError` whose ``code``/``message``/
``param`` are shaped like the real server's (``missing_required_parameter``,
``invalid_value`` ...).

One deliberate exception, PROTOCOL.md section 7: the ``ResponseCreateEvent`` model
rejects ``{"type": "item_reference", "id": ...}`` inside ``response.input`` although the
API accepts it, so those entries are checked here and left out of the model validation.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import ClientEventError

try:  # the openai package is how the emulator knows the schema
    from openai.types.realtime import RealtimeClientEvent
except ImportError as exc:  # pragma: no cover - dependency missing
    raise ImportError(
        "rtclient.emulator validates events with the `openai` package: pip install openai"
    ) from exc


def _member_adapters() -> dict[str, TypeAdapter[Any]]:
    union = typing.get_args(RealtimeClientEvent)[0]
    adapters: dict[str, TypeAdapter[Any]] = {}
    for member in typing.get_args(union):
        type_literal = member.model_fields["type"].annotation
        for value in typing.get_args(type_literal):
            adapters[value] = TypeAdapter(member)
    return adapters


_ADAPTERS = _member_adapters()
CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(_ADAPTERS)

_TYPE_WORDS = {"str", "int", "float", "bool", "dict", "list", "none", "literal", "union"}


def parse_client_event(text: str | bytes) -> dict[str, Any]:
    """Decode and validate one wire message; raise ClientEventError when it is refused."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClientEventError(
            "invalid_json", f"The server could not parse the client event as JSON: {exc}."
        ) from None
    if not isinstance(event, dict):
        raise ClientEventError(
            "invalid_json", "A client event must be a JSON object with a 'type' field."
        )
    validate_client_event(event)
    return event


def validate_client_event(event: dict[str, Any]) -> None:
    event_type = event.get("type")
    if event_type is None:
        raise ClientEventError(
            "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
        )
    adapter = _ADAPTERS.get(event_type) if isinstance(event_type, str) else None
    if adapter is None:
        supported = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES)
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: '{event_type}'. Supported values are: {supported}.",
            param="type",
        )
    candidate = _without_item_references(event)
    try:
        adapter.validate_python(candidate)
    except ValidationError as exc:
        raise _to_client_error(exc) from None


def _without_item_references(event: dict[str, Any]) -> dict[str, Any]:
    """PROTOCOL.md section 7: check item_reference inputs here, hide them from pydantic."""
    response = event.get("response")
    if event.get("type") != "response.create" or not isinstance(response, dict):
        return event
    inputs = response.get("input")
    if not isinstance(inputs, list):
        return event
    kept: list[Any] = []
    for index, entry in enumerate(inputs):
        if isinstance(entry, dict) and entry.get("type") == "item_reference":
            if not isinstance(entry.get("id"), str):
                raise ClientEventError(
                    "missing_required_parameter",
                    f"Missing required parameter: 'response.input[{index}].id'.",
                    param=f"response.input[{index}].id",
                )
            continue
        kept.append(entry)
    return {**event, "response": {**response, "input": kept}}


def _to_client_error(exc: ValidationError) -> ClientEventError:
    first = _most_relevant(exc.errors())
    param = _param_path(first.get("loc", ()))
    if first.get("type") == "missing":
        return ClientEventError(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
        )
    value = first.get("input")
    shown = json.dumps(value, default=str)[:200] if value is not None else "null"
    return ClientEventError(
        "invalid_value",
        f"Invalid value for '{param}': {shown} ({first.get('msg', 'invalid')}).",
        param=param,
    )


def _most_relevant(errors: list[Any]) -> Any:
    """Of a union's errors, report one from a member whose ``type``/``role`` matched.

    pydantic tries every member of an item union; the error worth reporting for a
    ``function_call_output`` missing ``output`` is that one, not the system message's.
    """
    groups: dict[tuple[str, ...], list[Any]] = {}
    for error in errors:
        member = tuple(p for p in error.get("loc", ()) if isinstance(p, str) and _is_name(p))
        groups.setdefault(member, []).append(error)
    for group in groups.values():
        mismatched = any(
            e.get("type") == "literal_error" and e.get("loc", ())[-1:] in (("type",), ("role",))
            for e in group
        )
        if not mismatched:
            return group[0]
    return errors[0]


def _is_name(part: str) -> bool:
    """A union member's or a type's name in a pydantic loc, as opposed to a field."""
    return part.lower() in _TYPE_WORDS or any(ch in part for ch in "[(-") or part != part.lower()


def _param_path(loc: tuple[int | str, ...] | Any) -> str:
    """``('session', 'RealtimeSessionCreateRequest', 'type')`` -> ``session.type``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if _is_name(part):
            continue
        path = f"{path}.{part}" if path else part
    return path
