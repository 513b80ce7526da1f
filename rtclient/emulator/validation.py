"""Check every client event against the ``openai`` package's own schema, strictly.

``openai.types.realtime.RealtimeClientEvent`` is a union discriminated by ``type``; we
keep one pydantic ``TypeAdapter`` per member, chosen by ``type``, which is the same
validation as the whole union (and ~15x faster than letting pydantic try every member).
It is strict, as the API is:

* JSON types are not coerced: ``"5"`` is not an integer, ``5`` is not a string,
  ``true`` is not a number. An integral decimal (``10.0``) counts as an integer, as in
  JSON Schema (whether the API accepts it is not documented; refusing it would fail
  clients for a spelling of the number).
* A field the schema does not define is refused, at any depth where the schema has a
  model. The package's models accept unknown fields silently (``extra="allow"``), so
  they are looked for after validation, in the validated models' ``model_extra``.
  Free-form objects (a tool's ``parameters`` JSON schema, ``metadata``) are not models
  and take any keys.

A refused event becomes a :class:`ClientEventError` shaped like the API's ``error``:

============================  ==============================  ==========================
problem                       ``code``                        ``message``
============================  ==============================  ==========================
a required field is missing   ``missing_required_parameter``  ``Missing required
                                                              parameter: 'item.output'.``
a field the API does not know ``unknown_parameter``           ``Unknown parameter:
                                                              'response.bogus'.``
a value of the wrong JSON     ``invalid_type``                ``Invalid type for
type                                                          'response.instructions':
                                                              expected a string, but got
                                                              an integer instead.``
a value that is not allowed   ``invalid_value``               ``Invalid value: 'x'.
                                                              Supported values are: ...``
============================  ==============================  ==========================

``param`` is the field's path from the event (``response.input[2].content[0].text``)
and the caller echoes the client's ``event_id``. These codes, messages and paths are
the ones the API is publicly reported to send (``Unknown parameter:
'response.modalities'.``, ``Unknown parameter: 'item.name'.``, ``Invalid type for
'session.audio.input.format': expected an object, but got a string instead.``). Not
documented, so chosen here: with several problems in one event, a type or value error
is reported before an unknown field, and the wording for a value that may be one of
several types (``expected an integer or 'inf'``).

One deliberate exception: the ``ResponseCreateEvent`` model rejects
``{"type": "item_reference", "id": ...}`` inside ``response.input`` although the API
accepts it, so those entries are checked here (a string ``id``, no other field) and
left out of the model validation.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ClientEventError

try:  # the openai package is how the emulator knows the schema
    from openai.types.realtime import RealtimeClientEvent
except ImportError as exc:  # pragma: no cover - dependency missing
    raise ImportError(
        "rtclient.emulator validates events with the `openai` package: pip install openai"
    ) from exc


def member_adapters(union_alias: Any) -> dict[str, TypeAdapter[Any]]:
    """One adapter per ``type`` value of an ``Annotated[Union[...], ...]`` event alias."""
    union = typing.get_args(union_alias)[0]
    adapters: dict[str, TypeAdapter[Any]] = {}
    for member in typing.get_args(union):
        type_literal = member.model_fields["type"].annotation
        for value in typing.get_args(type_literal):
            adapters[value] = TypeAdapter(member)
    return adapters


_ADAPTERS = member_adapters(RealtimeClientEvent)
CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(_ADAPTERS)

_TYPE_WORDS = {"str", "int", "float", "bool", "dict", "list", "none", "literal", "union"}
_ITEM_REFERENCE_FIELDS = ("type", "id")
# pydantic's type errors -> what the field expects, in the API's words
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "an array",
    "tuple_type": "an array",
    "none_required": "null",
}
_LITERALS = ("literal_error", "enum")

Loc = tuple[int | str, ...]


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
    """Raise :class:`ClientEventError` unless ``event`` is a client event the API takes."""
    adapter = event_adapter(event, _ADAPTERS)
    candidate, kept = _without_item_references(event)
    check_strictly(adapter, candidate, kept)


def event_adapter(event: dict[str, Any], adapters: dict[str, TypeAdapter[Any]]) -> TypeAdapter[Any]:
    """The adapter for ``event``'s ``type``; a missing, mistyped or unknown type is refused
    (the message lists the supported types, as the API's does)."""
    event_type = event.get("type")
    if event_type is None:
        raise ClientEventError(
            "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
        )
    if not isinstance(event_type, str):
        raise _invalid_type("type", ["a string"], event_type)
    adapter = adapters.get(event_type)
    if adapter is None:
        supported = ", ".join(f"'{t}'" for t in adapters)
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: '{event_type}'. Supported values are: {supported}.",
            param="type",
        )
    return adapter


def check_strictly(
    adapter: TypeAdapter[Any], value: Any, kept: list[int] | None = None
) -> BaseModel:
    """Validate ``value`` strictly (module docstring); returns the validated model.

    ``kept`` maps indices of a filtered ``response.input`` back to the client's."""
    try:
        model = adapter.validate_python(_integral_floats_as_ints(value), strict=True)
    except ValidationError as exc:
        raise _to_client_error(exc, kept) from None
    unknown = _first_unknown(model, ())
    if unknown is not None:
        raise _unknown_parameter(_field_path(_original_loc(unknown, kept)))
    return model  # type: ignore[no-any-return]


def _without_item_references(event: dict[str, Any]) -> tuple[dict[str, Any], list[int] | None]:
    """Check ``item_reference`` inputs here and hide them from pydantic.

    Returns the event to validate and, if entries were left out of ``response.input``,
    the original index of each entry kept (to name the right one in an error)."""
    response = event.get("response")
    if event.get("type") != "response.create" or not isinstance(response, dict):
        return event, None
    inputs = response.get("input")
    if not isinstance(inputs, list):
        return event, None
    kept: list[Any] = []
    indices: list[int] = []
    for index, entry in enumerate(inputs):
        if isinstance(entry, dict) and entry.get("type") == "item_reference":
            where = f"response.input[{index}]"
            if "id" not in entry:
                raise ClientEventError(
                    "missing_required_parameter",
                    f"Missing required parameter: '{where}.id'.",
                    param=f"{where}.id",
                )
            if not isinstance(entry["id"], str):
                raise _invalid_type(f"{where}.id", ["a string"], entry["id"])
            for name in entry:
                if name not in _ITEM_REFERENCE_FIELDS:
                    raise _unknown_parameter(f"{where}.{name}")
            continue
        kept.append(entry)
        indices.append(index)
    if len(kept) == len(inputs):
        return event, None
    return {**event, "response": {**response, "input": kept}}, indices


def _integral_floats_as_ints(value: Any) -> Any:
    """``10.0`` -> ``10`` everywhere (JSON Schema's integers), for strict validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _first_unknown(value: Any, loc: Loc) -> Loc | None:
    """The location of the first field no model of the schema defines, if any."""
    if isinstance(value, BaseModel):
        extra = value.model_extra
        if extra:
            return (*loc, next(iter(extra)))
        for name, field in type(value).model_fields.items():
            found = _first_unknown(getattr(value, name), (*loc, field.alias or name))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, entry in enumerate(value):
            found = _first_unknown(entry, (*loc, index))
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, entry in value.items():
            found = _first_unknown(entry, (*loc, str(key)))
            if found is not None:
                return found
    return None


def _original_loc(loc: Loc, kept: list[int] | None) -> Loc:
    """Map an index into the filtered ``response.input`` back to the client's index."""
    if kept is not None and loc[:2] == ("response", "input") and len(loc) > 2:
        index = loc[2]
        if isinstance(index, int) and 0 <= index < len(kept):
            return ("response", "input", kept[index], *loc[3:])
    return loc


def _to_client_error(exc: ValidationError, kept: list[int] | None) -> ClientEventError:
    errors = exc.errors()
    first = _most_relevant(errors)
    where = _param_path(first.get("loc", ()))
    param = _param_path(_original_loc(tuple(first.get("loc", ())), kept))
    if first.get("type") == "missing":
        return ClientEventError(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
        )
    value = first.get("input")
    # every error about this field, from every member of a union it may match
    here = [e for e in errors if _param_path(e.get("loc", ())) == where]
    kinds = _unique(_EXPECTED[e["type"]] for e in here if e.get("type") in _EXPECTED)
    literals = _unique(
        str((e.get("ctx") or {}).get("expected", "")) for e in here if e.get("type") in _LITERALS
    )
    literals = [text for text in literals if text]
    literal_strings = all(text.startswith("'") for text in literals)
    if literals and isinstance(value, str) and literal_strings:
        return ClientEventError(
            "invalid_value",
            f"Invalid value: {_shown(value)}. Supported values are: {', '.join(literals)}.",
            param=param,
        )
    if kinds or literals:
        expected = kinds + [f"one of {text}" if " or " in text else text for text in literals]
        return _invalid_type(param, expected, value)
    return ClientEventError(
        "invalid_value",
        f"Invalid value for '{param}': {_shown(value)} ({first.get('msg', 'invalid')}).",
        param=param,
    )


def _invalid_type(param: str, expected: list[str], value: Any) -> ClientEventError:
    wanted = " or ".join(expected)
    return ClientEventError(
        "invalid_type",
        f"Invalid type for '{param}': expected {wanted}, but got {_json_kind(value)} instead.",
        param=param,
    )


def _unknown_parameter(param: str) -> ClientEventError:
    return ClientEventError("unknown_parameter", f"Unknown parameter: '{param}'.", param=param)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another type"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value[:200]}'"
    return json.dumps(value, default=str)[:200]


def _unique(values: Any) -> list[str]:
    return list(dict.fromkeys(values))


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


def _field_path(loc: Loc) -> str:
    """``('response', 'input', 0, 'bogus')`` -> ``response.input[0].bogus``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def _param_path(loc: Loc | Any) -> str:
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
