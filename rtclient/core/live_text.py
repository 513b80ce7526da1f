"""Text for a GPT-Live session: the per-append token limit, and the transcript.

**The limit.** Every ``session.commentary.append``, ``session.thinking.append`` and
``session.instructions.append`` carries at most 500 tokens. No tokenizer ships with
the SDK (and the server's own count is not published), so :func:`estimate_tokens`
over-counts on purpose: one token per three ASCII characters (English averages about
four) and one per other character (CJK text is about one per character). A content
over the budget (450 estimated tokens by default, the margin Pipecat keeps) is
**split** at sentence boundaries into several appends - then at spaces, then, for a
"word" longer than the budget, at characters - because a long delegation result
should still reach the user. Splitting is bounded: a content that would need more
than ``max_parts`` appends is refused whole with :class:`ContentTooLongError`, and
nothing of it is sent.

**The transcript.** Delegation events carry no task text: only an offset on the
session timeline. :class:`Transcript` keeps the user's and the model's transcript
fragments with their timeline positions (bounded), so a delegation handler gets the
conversation up to the moment the model delegated.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from rtclient.errors import ContentTooLongError

APPEND_TOKEN_LIMIT = 500
DEFAULT_TOKEN_BUDGET = 450
DEFAULT_MAX_PARTS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")

Role = Literal["user", "assistant"]


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of ``text``'s token count (see the module doc)."""
    return _tokens(*_counts(text))


def _counts(text: str) -> tuple[int, int]:
    """``(ASCII characters, other characters)`` (the encode runs in C)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars, len(text) - ascii_chars


def _tokens(ascii_chars: int, other: int) -> int:
    return -(-ascii_chars // 3) + other


def split_content(
    text: str, *, budget: int = DEFAULT_TOKEN_BUDGET, max_parts: int = DEFAULT_MAX_PARTS
) -> list[str]:
    """``text`` as one or more parts, each within ``budget`` estimated tokens.

    Parts break after a sentence where they can; joined with single spaces they say
    what ``text`` said. Raises :class:`ContentTooLongError` past ``max_parts``, and
    ``ValueError`` for an empty content (the server would refuse it).
    """
    if budget < 1 or max_parts < 1:
        raise ValueError("budget and max_parts must be at least 1")
    if not text.strip():
        raise ValueError("an append needs some content")
    if estimate_tokens(text) <= budget:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    size = (0, 0)  # the counts of "".join(current), kept as pieces are added
    for separator, piece in _pieces(text, budget):
        a, o = _counts(piece)
        joined = (size[0] + a + len(separator), size[1] + o) if current else (a, o)
        if _tokens(*joined) <= budget:
            current += [separator, piece] if current else [piece]
            size = joined
            continue
        parts.append("".join(current))
        current, size = [piece], (a, o)
        if len(parts) >= max_parts:
            break
    if current:
        parts.append("".join(current))
    if len(parts) > max_parts:
        tokens = estimate_tokens(text)
        raise ContentTooLongError(
            f"the content is about {tokens} tokens: more than {max_parts} appends of "
            f"{budget} (one append carries at most {APPEND_TOKEN_LIMIT}); nothing was sent",
            tokens=tokens,
            max_tokens=budget * max_parts,
        )
    return parts


def _pieces(text: str, budget: int) -> Iterator[tuple[str, str]]:
    """``(separator, piece)``: sentences; a sentence over the budget as words; a word
    over it as slices (joined back with no separator)."""
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if estimate_tokens(sentence) <= budget:
            yield " ", sentence
            continue
        for word in sentence.split():
            if estimate_tokens(word) <= budget:
                yield " ", word
                continue
            for index, piece in enumerate(_slices(word, budget)):
                yield (" " if index == 0 else ""), piece


def _slices(word: str, budget: int) -> Iterator[str]:
    """``word`` in the longest slices within ``budget`` (counted as estimate_tokens)."""
    start, ascii_chars, other = 0, 0, 0
    for index, char in enumerate(word):
        a, o = (ascii_chars + 1, other) if char < "\x80" else (ascii_chars, other + 1)
        if -(-a // 3) + o > budget:
            yield word[start:index]
            start = index
            a, o = (1, 0) if char < "\x80" else (0, 1)
        ascii_chars, other = a, o
    yield word[start:]


@dataclass(frozen=True, slots=True)
class Fragment:
    """One transcript delta: who spoke, what, and where on the session timeline."""

    role: Role
    text: str
    start_ms: int
    end_ms: int


class Transcript:
    """Both sides' transcript fragments in arrival order, the newest ``kept``.

    The API sends fragments with no turn boundaries or done event; they carry their
    own spaces, so concatenating one side's fragments rebuilds its words.
    """

    def __init__(self, kept: int = 4096) -> None:
        self._fragments: deque[Fragment] = deque(maxlen=kept)

    def add(self, role: Role, text: str, start_ms: int, end_ms: int) -> None:
        if text:
            self._fragments.append(Fragment(role, text, start_ms, end_ms))

    def until(self, offset_ms: int) -> tuple[Fragment, ...]:
        """The fragments that began before ``offset_ms``, in timeline order (a stable
        sort: each side's fragments keep their order)."""
        kept = [f for f in self._fragments if f.start_ms < offset_ms]
        return tuple(sorted(kept, key=lambda f: f.start_ms))


def render(fragments: Iterable[Fragment]) -> str:
    """Fragments as lines ``user: ...`` / ``assistant: ...``, one line per run of one
    speaker."""
    lines: list[tuple[Role, str]] = []
    for fragment in fragments:
        if lines and lines[-1][0] == fragment.role:
            lines[-1] = (fragment.role, lines[-1][1] + fragment.text)
        else:
            lines.append((fragment.role, fragment.text))
    return "\n".join(f"{role}: {text.strip()}" for role, text in lines)
