"""Check Live client events and session objects strictly, against the ``openai`` types.

GPT-Live refuses an unknown field anywhere in its session object, and every command is
a member of ``openai.types.live.ClientEvent``: both are checked with the emulator's
strict validator (``..validation``: no coercion, unknown fields found in the models'
``model_extra``), so the codes, messages and ``param`` paths are the Realtime side's
(``unknown_parameter``, ``invalid_type``, ``invalid_value``,
``missing_required_parameter``). On top of the types, the rules the types only state
in words:

* the three appends need the ``delegation_id`` key (``null`` allowed), and their
  ``content`` is limited to 500 tokens (estimated, see :class:`~.rules.LiveRules`);
* ``session.model`` must be a Live model (else ``model_not_found``), the startup
  history holds at most 128 messages of exactly one text part, instructions at most
  16,384 tokens, and G.711 formats run at 8 kHz;
* WebRTC creation (``POST /v1/live/sessions``) takes no ``audio.format`` (the media
  format is negotiated in SDP). The package ships that body only as a ``TypedDict``;
  :class:`MediaSessionConfig` is ``SessionConfig`` with that difference and the
  WebRTC-only fields.

Decisions delegation, triggers, wake policies and audio fixtures are valid for the API
but not emulated: they are refused with ``emulator_unsupported`` rather than ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, Optional

from openai import BaseModel
from openai.types.live import ClientEvent, SessionConfig
from openai.types.live.session_config import AudioOutput
from pydantic import TypeAdapter

from ..errors import ClientEventError
from ..validation import check_strictly, event_adapter, member_adapters
from .errors import unsupported
from .rules import LiveRules

_ADAPTERS = member_adapters(ClientEvent)
CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(_ADAPTERS)
APPENDS = ("session.instructions.append", "session.thinking.append", "session.commentary.append")
_NOT_EMULATED = {
    "session.output_audio.fixture.play": "Audio fixture playback",
    "decision.create": "Decisions delegation",
    "decision.item.create": "Decisions delegation",
    "decision.item.delete": "Decisions delegation",
}
_G711 = ("audio/pcmu", "audio/pcma")


class MediaAudio(BaseModel):
    """``audio`` of a WebRTC session: the voice only."""

    output: Optional[AudioOutput] = None  # noqa: UP045 - pydantic field of the openai models' style


class MediaSessionConfig(SessionConfig):
    """The WebRTC creation's ``session``: no ``audio.format``, plus the idle-wake fields."""

    audio: Optional[MediaAudio] = None  # type: ignore[assignment]  # noqa: UP045
    idle_timeout_s: Optional[int] = None  # noqa: UP045
    wake_policy: Optional[dict[str, Any]] = None  # noqa: UP045


class WebRtcTransport(BaseModel):
    type: Literal["webrtc"]
    sdp: str


class LiveCreateRequest(BaseModel):
    session: MediaSessionConfig
    transport: WebRtcTransport


_CREATE = TypeAdapter(LiveCreateRequest)


def parse_event(text: str | bytes, rules: LiveRules) -> dict[str, Any]:
    """Decode and check one wire message; raise ClientEventError when refused."""
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
    check_event(event, rules)
    return event


def check_event(event: dict[str, Any], rules: LiveRules) -> None:
    """Raise :class:`ClientEventError` unless GPT-Live would take ``event``."""
    check_strictly(event_adapter(event, _ADAPTERS), event)
    event_type = event["type"]
    if event_type in _NOT_EMULATED:
        raise unsupported(_NOT_EMULATED[event_type], "type")
    if event_type in APPENDS:
        if "delegation_id" not in event:
            raise ClientEventError(
                "missing_required_parameter",
                "Missing required parameter: 'delegation_id'. Use null for context that "
                "belongs to no delegation.",
                param="delegation_id",
            )
        check_tokens(event["content"], rules.max_append_tokens, "content", rules)
    elif event_type == "session.start":
        check_session(event["session"], rules, "session")
    elif event_type == "session.update":
        update = event["session"]
        if update.get("triggers") is not None:
            raise unsupported("Decisions triggers", "session.triggers")
        delegation = update.get("delegation")
        if isinstance(delegation, dict) and delegation.get("type") == "decisions":
            raise unsupported("Decisions delegation", "session.delegation.type")


def check_create_request(body: Any, rules: LiveRules) -> tuple[dict[str, Any], str]:
    """A WebRTC creation body -> (its session object, the SDP offer)."""
    if not isinstance(body, dict):
        raise ClientEventError("invalid_type", "The request body must be a JSON object.")
    check_strictly(_CREATE, body)
    session: dict[str, Any] = body["session"]
    for field in ("idle_timeout_s", "wake_policy"):
        if field in session:
            raise unsupported("An idle-wake policy", f"session.{field}")
    check_session(session, rules, "session")
    return session, str(body["transport"]["sdp"])


def check_session(session: dict[str, Any], rules: LiveRules, where: str) -> None:
    """The session object's rules beyond its types (the module docstring's list)."""
    model = session["model"]
    if model not in rules.models:
        raise ClientEventError(
            "model_not_found",
            f"The model '{model}' does not exist or you do not have access to it. "
            f"Live sessions run {', '.join(rules.models)}.",
            param=f"{where}.model",
        )
    instructions = session.get("instructions")
    if isinstance(instructions, str):
        check_tokens(instructions, rules.max_instructions_tokens, f"{where}.instructions", rules)
    history = session.get("input") or []
    if len(history) > rules.max_input_items:
        raise ClientEventError(
            "array_above_max_length",
            f"Invalid '{where}.input': array too long. Expected an array with maximum length "
            f"{rules.max_input_items}, but got an array with length {len(history)} instead.",
            param=f"{where}.input",
        )
    for index, message in enumerate(history):
        if len(message["content"]) != 1:
            raise ClientEventError(
                "invalid_value",
                f"Invalid '{where}.input[{index}].content': a history message holds exactly "
                f"one text part, got {len(message['content'])}.",
                param=f"{where}.input[{index}].content",
            )
    audio_format = (session.get("audio") or {}).get("format")
    audio_format = audio_format if isinstance(audio_format, dict) else {}
    if audio_format.get("type") in _G711 and audio_format.get("rate") != 8000:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: {audio_format['rate']}. {audio_format['type']} runs at 8000 Hz.",
            param=f"{where}.audio.format.rate",
        )
    if session.get("triggers") is not None:
        raise unsupported("Decisions triggers", f"{where}.triggers")
    delegation = session.get("delegation")
    if isinstance(delegation, dict) and delegation.get("type") == "decisions":
        raise unsupported("Decisions delegation", f"{where}.delegation.type")


def estimate_tokens(text: str, rules: LiveRules) -> int:
    return math.ceil(len(text) / rules.chars_per_token)


def check_tokens(text: str, limit: int, param: str, rules: LiveRules) -> None:
    tokens = estimate_tokens(text, rules)
    if tokens > limit:
        raise ClientEventError(
            "string_above_max_length",
            f"Invalid '{param}': string too long. Expected at most {limit} tokens, but got "
            f"about {tokens} tokens ({len(text)} characters).",
            param=param,
        )
