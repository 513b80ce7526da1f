"""GPT-Live's events as users see them: the ``openai.types.live`` models, and rtclient's own.

A ``LiveClient`` hands its ``on()`` callbacks and ``events()`` iterators each server
event as its ``openai.types.live`` model (the sideband-only ``session.paused`` and
``session.resumed`` from ``ConnectServerEvent``), parsed once, lazily: importing
``openai`` costs ~1.5 s, so nothing here does it at ``import rtclient``.

The client also reports what the server never says - a delegation's result dropped
because it came after the client's timeout, a second ``session.delegation.created``
for one id, an output the server refused - as events of its own, named ``rtclient.*``
(:data:`rtclient.core.live_protocol.CLIENT_SIDE_EVENTS`), typed by the pydantic models
below. They arrive in order with the server's events, after the one that caused them.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import pydantic

from rtclient.core.event_models import EventModels, by_type, union_members
from rtclient.core.live_protocol import CLIENT_SIDE_EVENTS, SERVER_EVENT_TYPES


class ClientSideEvent(pydantic.BaseModel):
    """Something the client itself reports (never sent by the server)."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    type: str
    delegation_id: str | None = None


class DelegationDuplicate(ClientSideEvent):
    """A second ``session.delegation.created`` for an id: nothing was started again."""

    type: Literal["rtclient.delegation.duplicate"]


class DelegationFailed(ClientSideEvent):
    """The handler raised (``reason="error"``), returned too long a result
    (``"too_long"``) or an empty one (``"empty"``); the failure notice was spoken."""

    type: Literal["rtclient.delegation.failed"]
    reason: str
    error: str


class DelegationTimedOut(ClientSideEvent):
    """The client's timeout ended the delegation; the timeout notice was spoken."""

    type: Literal["rtclient.delegation.timed_out"]
    timeout_s: float


class DelegationDropped(ClientSideEvent):
    """Progress or a result (``result``) for a delegation that had ended was not sent:
    ``reason`` is ``timed_out``, ``answered``, ``failed``, ``session_closed``, or -
    for a result the server refused or the connection could not take - ``refused``
    or ``not_sent``."""

    type: Literal["rtclient.delegation.dropped"]
    reason: str
    result: bool
    error: str | None = None


class OutputDropped(ClientSideEvent):
    """A ``function_call_output`` could not be written (``reason``)."""

    type: Literal["rtclient.output_dropped"]
    call_id: str
    reason: str
    error: str | None = None


class OutputRefused(ClientSideEvent):
    """The server refused a ``function_call_output`` (its ``error``)."""

    type: Literal["rtclient.output_refused"]
    call_id: str
    error: str


CLIENT_SIDE_MODELS: dict[str, type[ClientSideEvent]] = {
    "rtclient.delegation.duplicate": DelegationDuplicate,
    "rtclient.delegation.failed": DelegationFailed,
    "rtclient.delegation.timed_out": DelegationTimedOut,
    "rtclient.delegation.dropped": DelegationDropped,
    "rtclient.output_dropped": OutputDropped,
    "rtclient.output_refused": OutputRefused,
}
assert set(CLIENT_SIDE_MODELS) == set(CLIENT_SIDE_EVENTS)

EVENT_TYPES: frozenset[str] = SERVER_EVENT_TYPES | frozenset(CLIENT_SIDE_MODELS)
"""Every name ``LiveClient.on()`` accepts (besides ``"*"``)."""


def _load_models() -> dict[str, type[Any]]:
    from openai.types.live import ServerEvent
    from openai.types.live.connect_server_event import ConnectServerEvent

    found: dict[str, type[Any]] = dict(CLIENT_SIDE_MODELS)
    for union in (ConnectServerEvent, ServerEvent):  # ServerEvent's win
        found.update(by_type(union_members(union)))
    return found


MODELS = EventModels(_load_models, "openai.types.live")
event_models = MODELS.models
"""Each event type -> its model class (imports ``openai`` on the first call)."""
prepare_models = MODELS.prepare
to_model = MODELS.to_model
"""``event`` as its model: ``LookupError`` if none describes its type,
``pydantic.ValidationError`` if it does not validate."""


def close_matches(event_type: str) -> list[str]:
    """The event types a misspelt ``event_type`` may have meant."""
    return difflib.get_close_matches(event_type, sorted(EVENT_TYPES), n=3, cutoff=0.6)
