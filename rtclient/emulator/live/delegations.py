"""Delegations and everything appended to the timeline: the record tests assert on.

A delegation is made by the model (``session.delegation.created``, no task text on
the wire - the emulator keeps what the model heard as ``task`` for tests). The app
answers a client delegation with appends naming its id; every append, to a
delegation or general (``delegation_id: null``), is kept here from arrival to its fate:
``pending`` (waiting for the timeline), ``landed`` (placed; its ``*.appended`` ack
went out) or ``incomplete`` (the session ended first: ``context_injection_incomplete``).
Nothing is merged or de-duplicated, so "exactly once" is a count a test can make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = {
    "session.instructions.append": "instructions",
    "session.thinking.append": "thinking",
    "session.commentary.append": "commentary",
}


@dataclass
class Append:
    kind: str
    """``instructions``, ``thinking`` or ``commentary``."""
    content: str
    delegation_id: str | None
    client_event_id: str | None
    received_at_ms: int
    """The clock when the command arrived (placement waits for the next audio)."""
    start_ms: int | None = None
    end_ms: int | None = None
    status: str = "pending"
    sender: Any = field(default=None, repr=False, compare=False)
    """The channel that sent it (where its error goes)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "content": self.content,
            "delegation_id": self.delegation_id,
            "client_event_id": self.client_event_id,
            "received_at_ms": self.received_at_ms,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "status": self.status,
        }


@dataclass
class Delegation:
    id: str
    target: str
    """``client`` or ``responses``."""
    offset_ms: int
    task: str
    """What the model heard that made it delegate (never sent to the client)."""
    response_id: str | None = None
    finished: bool = False
    appends: list[Append] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "offset_ms": self.offset_ms,
            "task": self.task,
            "response_id": self.response_id,
            "finished": self.finished,
            "appends": [append.to_json() for append in self.appends],
        }


class DelegationBook:
    """The session's delegations (by id, in creation order) and all its appends."""

    def __init__(self) -> None:
        self.delegations: dict[str, Delegation] = {}
        self.appends: list[Append] = []
        self.foreign: dict[str, list[Append]] = {}
        """Appends accepted for ids this session never made (rule ``unknown_delegation:
        "accept"``), by id."""

    def add(self, delegation: Delegation) -> Delegation:
        self.delegations[delegation.id] = delegation
        return delegation

    def record(self, append: Append) -> None:
        self.appends.append(append)
        if append.delegation_id is None:
            return
        owner = self.delegations.get(append.delegation_id)
        if owner is not None:
            owner.appends.append(append)
        else:
            self.foreign.setdefault(append.delegation_id, []).append(append)

    def pending(self) -> list[Append]:
        return [append for append in self.appends if append.status == "pending"]

    def to_json(self) -> dict[str, Any]:
        return {
            "delegations": [d.to_json() for d in self.delegations.values()],
            "general": [a.to_json() for a in self.appends if a.delegation_id is None],
            "foreign": {k: [a.to_json() for a in v] for k, v in self.foreign.items()},
        }
