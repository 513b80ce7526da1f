"""Knobs for what GPT-Live leaves undocumented, and the scripted model's timing.

Where the public reference is silent (what an append for an unknown delegation id
does, when a delegation counts as finished, whether a partial batch of tool outputs
is refused), the emulator picks the strict answer by default and lets a test choose.
A :class:`LiveRules` value is immutable: the emulator holds the default for new Live
sessions, each session holds its own and replaces it whole (``session.rules = ...``,
``POST /_emulator/live/{id}/rules``), so a change from a test thread is atomic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LiveRules:
    unknown_delegation: str = "error"
    """An append naming a ``delegation_id`` this session never created: ``"error"``
    (an ``error`` with code ``delegation_not_found``) or ``"accept"`` (placed like
    general context and recorded under that id)."""

    finish_on_commentary: bool = False
    """When true, a client delegation is finished by the first
    ``session.commentary.append`` accepted for it (its result); later appends for it
    are refused with ``delegation_not_active``. Off by default, as in the API, where a
    delegation ends only when the app stops appending (progress commentary is legal).
    A test can always finish one explicitly (``session.finish_delegation(id)``)."""

    max_append_tokens: int = 500
    """Token limit of one ``session.{instructions,thinking,commentary}.append``
    ``content`` (the API's 500); over it is an ``error`` with code
    ``string_above_max_length`` and ``param: "content"``."""

    chars_per_token: float = 4.0
    """How tokens are estimated here: ``ceil(len(text) / chars_per_token)`` (no
    tokenizer is shipped; 4 characters per token is the usual English estimate)."""

    max_instructions_tokens: int = 16384
    """Token limit of ``session.instructions`` (same estimate)."""

    max_input_items: int = 128
    """Messages allowed in ``session.input`` (startup history)."""

    append_ms_per_token: int = 0
    """Timeline milliseconds an appended text occupies: its ``end_ms`` is ``start_ms``
    plus this times its tokens (0: ``end_ms == start_ms``, which the API allows)."""

    ms_per_word: int = 200
    """Timeline milliseconds one word of the model's speech (or of the user's, when a
    simulated utterance gives no duration) takes."""

    acknowledgement: str = "One moment."
    """What the model says when it delegates (after the delegation's
    ``acknowledgement_delay_ms``; any commentary or thinking that lands first cancels
    it, as the API's acknowledgement is cancelled)."""

    refuse_partial_tool_outputs: bool = True
    """Responses delegation: a ``response.create`` while a function call of the session
    has no ``function_call_output`` is refused (code ``tool_outputs_incomplete``), as
    framework notes report the API does."""

    usage_interval_ms: int = 15000
    """``session.usage.updated`` every this many timeline milliseconds (0 = never)."""

    output_audio: bool = True
    """The primary WebSocket gets one ``session.output_audio.delta`` per input audio
    chunk (the model's continuous output stream, silence included), and sidebands the
    same with ``start_ms``/``end_ms``."""

    started_on_attach: bool = False
    """Send a fresh sideband ``session.started`` at once (one public report saw this;
    undocumented). Off: a sideband gets only the events that follow its attach."""

    close_drain_s: float = 10.0
    """After ``session.close``, how long a running backend response may still finish
    before ``session.closed`` (the API drains for up to about 10 s)."""

    models: tuple[str, ...] = ("gpt-live-1", "gpt-live-1.1")
    """Models a session may start with; another is ``model_not_found``."""

    def replace(self, **changes: Any) -> LiveRules:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveRules:
        """Build from a JSON object (the control route); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown rule(s): {', '.join(unknown)}")
        if "models" in data:
            data = {**data, "models": tuple(data["models"])}
        rules = cls(**data)
        if rules.unknown_delegation not in ("error", "accept"):
            raise ValueError("unknown_delegation must be 'error' or 'accept'")
        return rules

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        return data
