"""The scripted voice model: it hears the user on the timeline, speaks, and delegates.

Everything it does happens on the session clock (``timeline``), so it too stands still
while no input audio arrives. Its script:

1. **Hearing.** A simulated utterance (``session.simulate_speech(text)``, ``POST
   /_emulator/live/{id}/speech``) rides on the next ``duration_ms`` of input audio: each
   word becomes a ``session.input_transcript.delta`` (``start_ms``/``end_ms`` its span)
   when the clock passes its end. Words heard while input is muted are lost.
2. **Deciding**, at the end of the utterance: it **delegates** when the words say
   ``delegate`` (a whole word, any case) or, under Responses delegation, name one of the
   backend's function tools (the Realtime script's syntax: ``get_weather``,
   ``get_weather({"city": "Oslo"})``, ``get_weather*3``) - ``session.delegation.created``
   with ``offset_ms`` = the utterance's end - then says its acknowledgement after the
   delegation's ``acknowledgement_delay_ms`` (cancelled if commentary or thinking lands
   first). Otherwise it answers ``You said: <words>``.
3. **Speaking.** One voice: utterances queue after each other, each word a
   ``session.output_transcript.delta`` when the clock passes its end (word length
   ``LiveRules.ms_per_word``), and on WebRTC that much audio on the track.
   Commentary is spoken verbatim when it lands; a Responses backend's text answer
   likewise when the backend response completes. Thinking and instructions are silent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from ..model import parse_tool_calls
from .rules import LiveRules
from .timeline import Entry, Timeline

_DELEGATE = re.compile(r"\bdelegate\b", re.IGNORECASE)


class VoiceHost(Protocol):
    """What the voice needs from its session."""

    timeline: Timeline

    @property
    def rules(self) -> LiveRules: ...

    def emit(self, event: dict[str, Any]) -> None: ...

    def spoke(self, milliseconds: int) -> None: ...

    def backend_tool_names(self) -> list[str]: ...

    def acknowledgement_delay_ms(self) -> int: ...

    def delegate_task(self, task: str, at_ms: int) -> dict[str, Any]: ...

    def heard(self, side: str, text: str, start_ms: int, end_ms: int) -> None: ...


def wants_delegation(text: str, tool_names: Sequence[str]) -> bool:
    """Rule 2 of the script: does this utterance make the model delegate?"""
    return bool(_DELEGATE.search(text)) or bool(parse_tool_calls(text, tool_names))


class Voice:
    def __init__(self, host: VoiceHost) -> None:
        self._host = host
        self.muted = False
        self._listen_end_ms = 0
        self._speech_end_ms = 0
        self._spoken_any = False
        self._heard_any = False
        self._acknowledgements: list[Entry] = []

    def listen(self, text: str, duration_ms: int | None = None) -> tuple[int, int]:
        """The user says ``text`` over the next ``duration_ms`` of input audio (after
        what they are already saying); returns the utterance's ``(start_ms, end_ms)``."""
        timeline = self._host.timeline
        words = text.split()
        start = max(timeline.now_ms, self._listen_end_ms)
        span = duration_ms if duration_ms is not None else len(words) * self._host.rules.ms_per_word
        end = start + max(1, span)
        heard: list[bool] = []
        for index, word in enumerate(words):
            word_start = start + (end - start) * index // len(words)
            word_end = start + (end - start) * (index + 1) // len(words)
            timeline.at(word_end, self._hear_word(word, word_start, word_end, heard))
        timeline.at(end, lambda: self._utterance_done(text, end, heard))
        self._listen_end_ms = end
        return start, end

    def speak(self, text: str, not_before_ms: int) -> tuple[int, int]:
        """Queue ``text`` to be spoken from ``not_before_ms`` on (after what is queued)."""
        timeline = self._host.timeline
        words = text.split()
        start = max(not_before_ms, self._speech_end_ms, timeline.chunk_start_ms)
        word_ms = self._host.rules.ms_per_word
        for index, word in enumerate(words):
            word_start = start + index * word_ms
            timeline.at(word_start + word_ms, self._say_word(word, word_start, word_ms))
        self._speech_end_ms = start + len(words) * word_ms
        return start, self._speech_end_ms

    def acknowledge(self, at_ms: int) -> None:
        """After a delegation: say the acknowledgement after the configured delay."""
        text = self._host.rules.acknowledgement
        if not text:
            return
        when = at_ms + self._host.acknowledgement_delay_ms()
        entry = self._host.timeline.at(when, lambda: self._say_acknowledgement(text, when))
        self._acknowledgements.append(entry)

    def cancel_acknowledgements(self) -> None:
        """Commentary or thinking landed: every pending acknowledgement is dropped."""
        for entry in self._acknowledgements:
            entry.cancel()
        self._acknowledgements.clear()

    # ----------------------------------------------------------------- timeline
    def _hear_word(self, word: str, start: int, end: int, heard: list[bool]) -> Any:
        def hear() -> None:
            if self.muted:
                return
            delta = word if not self._heard_any else " " + word
            self._heard_any = True
            heard.append(True)
            self._host.emit(
                {
                    "type": "session.input_transcript.delta",
                    "delta": delta,
                    "start_ms": start,
                    "end_ms": end,
                }
            )
            self._host.heard("user", delta, start, end)

        return hear

    def _utterance_done(self, text: str, end: int, heard: list[bool]) -> None:
        if not heard:
            return  # muted throughout: the model heard nothing
        if wants_delegation(text, self._host.backend_tool_names()):
            self._host.delegate_task(text, end)
        else:
            self.speak(f"You said: {text}", end)

    def _say_word(self, word: str, start: int, word_ms: int) -> Any:
        def say() -> None:
            delta = word if not self._spoken_any else " " + word
            self._spoken_any = True
            self._host.emit(
                {
                    "type": "session.output_transcript.delta",
                    "delta": delta,
                    "start_ms": start,
                    "end_ms": start + word_ms,
                }
            )
            self._host.spoke(word_ms)
            self._host.heard("model", delta, start, start + word_ms)

        return say

    def _say_acknowledgement(self, text: str, when: int) -> None:
        self._acknowledgements = [e for e in self._acknowledgements if not e.cancelled]
        self.speak(text, when)
