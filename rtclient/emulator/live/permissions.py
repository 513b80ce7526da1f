"""A WebRTC frontend's data channel permissions (``session.client.data_channel``).

An app that hands its browser a Live session may limit what the browser's
``oai-events`` channel sends (``allowed_client_events``: ``"all"``, a list of types, or
``[]``) and receives (``allowed_server_events``: ``"all"`` or selectors ``{type}`` /
``{type: "response.event", response_event}``). Left out, both mean "all". Sidebands are
never limited. The session announces what it applied with an ``info`` event (code
``data_channel_permissions``) when the channel opens.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ClientEventError


class FrontendPermissions:
    def __init__(self, config: dict[str, Any] | None) -> None:
        client = (config or {}).get("client") or {}
        self._given: dict[str, Any] = dict(client.get("data_channel") or {})

    def announcement(self) -> dict[str, Any] | None:
        """The ``info`` event to send when the channel opens (None: nothing limited)."""
        if not self._given:
            return None
        shown = json.dumps(self._given, sort_keys=True)
        return {
            "type": "info",
            "code": "data_channel_permissions",
            "message": f"Data channel permissions applied: {shown}.",
        }

    def check_client(self, event_type: str) -> None:
        """Raise the refusal for a client event the frontend may not send."""
        allowed = self._given.get("allowed_client_events", "all")
        if allowed in (None, "all") or event_type in allowed:
            return
        raise ClientEventError(
            "client_event_not_allowed",
            f"{event_type} is not among this data channel's allowed_client_events.",
            param="type",
        )

    def receives(self, event: dict[str, Any] | None) -> bool:
        """May the frontend receive this server event (None: a raw injected text)?"""
        allowed = self._given.get("allowed_server_events", "all")
        if allowed in (None, "all") or event is None:
            return True
        for selector in allowed:
            if selector.get("type") != event.get("type"):
                continue
            inner = selector.get("response_event")
            if inner is None or inner == (event.get("event") or {}).get("type"):
                return True
        return False
