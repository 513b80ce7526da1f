"""The client's list of known server event types is the ``openai`` package's."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _typed(value: Any) -> Any:
    """``value`` with each scalar's exact type beside it (``1 == 1.0 == True`` in Python)."""
    if isinstance(value, dict):
        return {key: _typed(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_typed(inner) for inner in value]
    return (type(value).__name__, repr(value))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(value=_JSON, ascii_only=st.booleans())
def test_loads_reads_every_text_as_json_loads_does(value: Any, ascii_only: bool) -> None:
    """The loop thread's fast decoder (msgspec, falling back to ``json.loads`` for what
    it refuses) gives exactly ``json.loads``' values and types: infinities, lone
    surrogates, huge integers, ``-0.0`` and non-ASCII text included."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _typed(ev.loads(text)) == _typed(json.loads(text))
    assert _typed(ev.loads(text.encode("utf-8", "surrogatepass"))) == _typed(json.loads(text))


def test_loads_refuses_what_json_loads_refuses() -> None:
    for text in ("", "{", '{"a": }', "[1,]", "nul", b"\xff\xfe{"):
        with pytest.raises(ValueError):
            json.loads(text)
        with pytest.raises(ValueError):
            ev.loads(text)
    assert ev.loads('{"a": NaN}')["a"] != ev.loads('{"a": NaN}')["a"]  # NaN, as json reads it
    assert ev.loads('{"a": 1, "a": 2}') == {"a": 2}  # the last of a repeated key
    for odd in ('{"a": "\\ud800"}', '{"a": 1e400}', '{"a": -Infinity}'):  # msgspec refuses
        assert _typed(ev.loads(odd)) == _typed(json.loads(odd))
