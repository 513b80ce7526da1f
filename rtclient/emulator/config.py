"""The session object (GA shape): its defaults and how ``session.update`` merges into it.

Defaults are the API's: audio output, ``server_vad`` turn detection with
``create_response`` and ``interrupt_response`` true. ``Emulator(turn_detection=None)``
(or a ``session.update`` with ``audio.input.turn_detection: null``) turns VAD off.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}

_KEEP = object()


def default_session(
    session_id: str,
    expires_at: int,
    *,
    model: str = DEFAULT_MODEL,
    turn_detection: dict[str, Any] | object | None = _KEEP,
) -> dict[str, Any]:
    detection = (
        copy.deepcopy(DEFAULT_TURN_DETECTION)
        if turn_detection is _KEEP
        else complete_turn_detection(turn_detection)
    )
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are the rtclient emulator's scripted model.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": detection,
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": DEFAULT_VOICE,
                "speed": 1.0,
            },
        },
    }


def complete_turn_detection(value: Any) -> dict[str, Any] | None:
    """A client's turn_detection with the API's defaults filled in (None = off)."""
    if not isinstance(value, dict):
        return None
    if value.get("type", "server_vad") == "server_vad":
        filled = {**DEFAULT_TURN_DETECTION, **value}
    else:  # semantic_vad
        filled = {"eagerness": "auto", "create_response": True, "interrupt_response": True, **value}
    for flag in ("create_response", "interrupt_response"):
        if filled.get(flag) is None:
            filled[flag] = True
    return filled


def merge_session(config: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a ``session.update``/``session`` part: given fields replace, audio merges.

    ``audio.input``/``audio.output`` merge field by field; a given ``turn_detection``
    replaces the old one whole (with defaults filled), ``null`` turns it off.
    """
    for key, value in update.items():
        if key in ("type", "object", "id", "expires_at"):
            continue
        if key == "audio" and isinstance(value, dict):
            audio = config.setdefault("audio", {})
            for side in ("input", "output"):
                given = value.get(side)
                if not isinstance(given, dict):
                    continue
                target = audio.setdefault(side, {})
                for field_name, field_value in given.items():
                    if side == "input" and field_name == "turn_detection":
                        target[field_name] = complete_turn_detection(field_value)
                    else:
                        target[field_name] = copy.deepcopy(field_value)
            continue
        config[key] = copy.deepcopy(value)


def turn_detection(config: dict[str, Any]) -> dict[str, Any] | None:
    detection = config.get("audio", {}).get("input", {}).get("turn_detection")
    return detection if isinstance(detection, dict) else None
