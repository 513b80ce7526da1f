"""The Live session object as the server shows it, and how ``session.update`` changes it.

``session.started`` returns the resolved configuration: what the client gave, the
server's defaults filled in (voice ``marin``, PCM 24 kHz on a WebSocket, client
delegation when none is named, no acknowledgement delay, ``store`` false), plus ``id``,
``expires_at`` and ``status: "active"`` (still ``"active"`` in ``session.closed``'s
final snapshot). After startup only the delegation's settings change, sparsely and
within the same delegation type; everything else is fixed.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ClientEventError

DEFAULT_VOICE = "marin"
DEFAULT_FORMAT = {"type": "audio/pcm", "rate": 24000}


def resolve(
    session: dict[str, Any], *, session_id: str, expires_at: int, media: str
) -> dict[str, Any]:
    """The resolved session object (the shape of ``openai.types.live.SessionResource``)."""
    given = copy.deepcopy(session)
    audio = given.get("audio") or {}
    output = audio.get("output") or {}
    resolved_audio: dict[str, Any] = {"output": {"voice": output.get("voice") or DEFAULT_VOICE}}
    if media == "websocket":
        resolved_audio["format"] = audio.get("format") or dict(DEFAULT_FORMAT)
    resolved: dict[str, Any] = {
        "id": session_id,
        "expires_at": expires_at,
        "status": "active",
        "model": given["model"],
        "instructions": given.get("instructions") or "",
        "audio": resolved_audio,
        "delegation": _resolve_delegation(given.get("delegation")),
        "input": given.get("input") or [],
        "store": bool(given.get("store") or False),
    }
    for optional in ("client", "safety_identifier"):
        if given.get(optional) is not None:
            resolved[optional] = given[optional]
    return resolved


def _resolve_delegation(delegation: dict[str, Any] | None) -> dict[str, Any]:
    if delegation is None:
        return {"type": "client", "acknowledgement_delay_ms": 0}
    return {"acknowledgement_delay_ms": 0, **delegation}


def delegation_type(config: dict[str, Any]) -> str:
    """``"client"`` or ``"responses"``."""
    return str(config["delegation"]["type"])


def apply_update(config: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a ``session.update``'s sparse ``session`` (already schema-checked)."""
    change = update.get("delegation")
    if change is None:
        return
    current = config["delegation"]
    if change["type"] != current["type"]:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: '{change['type']}'. The delegation type of a running session "
            f"is '{current['type']}' and cannot change; start a new session instead.",
            param="session.delegation.type",
        )
    if change.get("acknowledgement_delay_ms") is not None:
        current["acknowledgement_delay_ms"] = change["acknowledgement_delay_ms"]
    for name, value in (change.get("responses") or {}).items():
        current["responses"][name] = copy.deepcopy(value)
