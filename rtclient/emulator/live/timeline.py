"""The Live session clock: milliseconds of input audio, and what waits on them.

GPT-Live's timeline (``start_ms``, ``end_ms``, ``offset_ms``) counts milliseconds since
the session began on a clock that **advances only with the input audio**: while no
audio arrives (silence counts as audio), nothing on the timeline happens - appended
text is not placed, its ``*.appended`` ack stays pending, the model neither hears nor
speaks. This module is that clock, with no I/O: :meth:`Timeline.advance` is called
once per chunk of input audio and runs every entry whose position the chunk reached,
in timeline order. An entry never runs outside ``advance``: one scheduled at or before
the current position waits for the next chunk, which is how "held back until audio
flows" is built.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class Entry:
    """Something that happens when the clock reaches ``at_ms``."""

    at_ms: int
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timeline:
    def __init__(self) -> None:
        self.now_ms = 0
        """Milliseconds of input audio received so far (the session clock)."""
        self.chunk_start_ms = 0
        """Where the chunk being advanced through began (== ``now_ms`` between chunks)."""
        self._entries: list[Entry] = []
        self._seq = itertools.count()
        self._remainder = 0.0

    @property
    def pending(self) -> int:
        """Entries not yet run (cancelled ones excluded)."""
        return sum(1 for entry in self._entries if not entry.cancelled)

    def at(self, at_ms: int, action: Callable[[], None]) -> Entry:
        """Run ``action`` in the first ``advance`` that reaches ``at_ms``."""
        entry = Entry(max(0, int(at_ms)), next(self._seq), action)
        heapq.heappush(self._entries, entry)
        return entry

    def advance(self, milliseconds: float) -> tuple[int, int]:
        """``milliseconds`` more input audio arrived; runs what it reaches, in order.

        Fractions of a millisecond are carried to the next chunk. Returns the chunk's
        ``(start_ms, end_ms)``. Entries that the actions schedule within the chunk run
        in it too (in position order)."""
        total = milliseconds + self._remainder
        whole = int(total)
        self._remainder = total - whole
        start = self.now_ms
        self.chunk_start_ms = start
        self.now_ms = start + whole
        while self._entries and self._entries[0].at_ms <= self.now_ms:
            entry = heapq.heappop(self._entries)
            if not entry.cancelled:
                entry.action()
        self.chunk_start_ms = self.now_ms
        return start, self.now_ms

    def clear(self) -> None:
        """Drop every entry (the session ended)."""
        self._entries.clear()
