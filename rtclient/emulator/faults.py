"""Fault injection knobs: the ways a real server (or network) misbehaves.

A :class:`Faults` value is immutable; the emulator holds one as the default for new
sessions and each session holds its own, replaced whole (``session.set_faults(...)``),
so a change made from a test thread is seen atomically by the emulator's loop.
The per-response faults (injections, delays) apply to every response while set.

GPT-Live sessions take the same knobs: the per-response ones apply to their Responses
backend (see ``live/backend.py``), the injections also before each client delegation,
``close_after_events``, ``fail_event_type`` and ``ignore_event_type`` to all their
connections; ``close_after_delegation`` is theirs alone, and ``delay_cancel`` and
``hold_turn_response`` have no Live counterpart (Live has no cancel and no VAD turns).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Faults:
    delay_response_created: float = 0.0
    """Seconds between accepting a ``response.create`` and sending ``response.created``.
    The response is active (and rejects a second create) during the delay."""

    drop_response_created: bool = False
    """Never send ``response.created``; the rest of the response still follows."""

    delay_response_done: float = 0.0
    """Seconds between the last output event and ``response.done``; still active."""

    delay_cancel: float = 0.0
    """Seconds a ``response.cancel`` takes to stop the response (widens the window in
    which a ``response.create`` sent right after a cancel is rejected)."""

    hold_turn_response: float = 0.0
    """When > 0, the response server VAD creates at the end of the user's speech is held
    for up to this many seconds, and started the instant a default-conversation
    ``response.create`` arrives - just before that create is handled, so the create is
    rejected with ``conversation_already_has_active_response`` naming the VAD response.
    It stages, on every run, the race no client can prevent: a VAD response starting
    while the client's create is on the wire. If no create comes, the response starts
    when the hold ends (unless another response is active by then)."""

    malformed_json: bool = False
    """Send a text message that is not JSON right before each ``response.created``."""

    unknown_event: bool = False
    """Send an event of an unknown type right before each ``response.created``."""

    oversized_event_bytes: int = 0
    """When > 0, send a ``rate_limits.updated`` event padded to about this many bytes
    right before each ``response.created``. Over WebRTC the peer's SCTP
    ``max-message-size`` still applies (aiortc offers 256 KiB)."""

    close_after_events: int | None = None
    """Close the data channel (or WebSocket) right after this many server events."""

    fail_event_type: str | None = None
    """Answer every client event of this type with an error instead of handling it."""

    fail_error_type: str = "server_error"
    fail_error_code: str = "emulator_injected_failure"

    ignore_event_type: str | None = None
    """Leave every client event of this type unanswered: recorded, never handled, no
    error - a server that lost it (a caller waiting for its answer must time out)."""

    close_after_delegation: str | None = None
    """Live sessions: right after each ``session.delegation.created``, the server ends
    the session with ``session.closed`` whose ``reason`` is this (``"expired"``,
    ``"content"``, ``"connection_lost"``, ...): a close in the middle of a delegation,
    its appends still unanswered."""

    def replace(self, **changes: Any) -> Faults:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Faults:
        """Build from a JSON object (the control route); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
