"""An API key that cannot leak through a repr, a log line or an exception message.

A key is checked where it is given, not where it is first sent: every key the API
issues (``sk-...``, ``sk-proj-...``, ``ek_...``) is one token of visible ASCII
characters. Whitespace around it is never part of it and is removed without a word: a
key read from a file (``Path(".key").read_text()``) or from a ``.env`` written on
Windows ends with ``\\n`` or ``\\r\\n``, and refusing that would only make every caller
write ``.strip()`` - there is nothing to guess. Anything else that no key holds - a
control character, a space or a non-ASCII character *inside* it (two lines of a file, a
binary file, a typographic dash pasted from a document) - is refused with
:class:`~rtclient.errors.InvalidAPIKeyError`, naming the character and where it is
but not the key: guessing which part was meant would send the wrong credential, and
HTTP itself refuses such a header (aiohttp raised a bare ``ValueError`` at connect).
"""

from __future__ import annotations

import unicodedata

from rtclient.errors import InvalidAPIKeyError


class Secret:
    """Holds a key; every textual form is redacted. Only ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = _checked(value)

    def reveal(self) -> str:
        return self._value

    @property
    def is_ephemeral(self) -> bool:
        """Ephemeral client secrets (``ek_...``) use the plain SDP form of signaling."""
        return self._value.startswith("ek_")

    def redact(self, text: str) -> str:
        """Remove the key from ``text`` (e.g. a third-party error message)."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


def _checked(value: str) -> str:
    """``value`` without surrounding whitespace, or :class:`InvalidAPIKeyError`."""
    if not isinstance(value, str):
        raise InvalidAPIKeyError(f"the API key must be a str, not {type(value).__name__}")
    key = value.strip()
    for position, char in enumerate(key):
        if not ("!" <= char <= "~"):  # visible ASCII, 0x21-0x7E
            raise InvalidAPIKeyError(
                f"the API key ({_shape(key)}) holds {_name(char)} at position {position}, "
                "which no API key does: was more than the key read (two lines of a "
                "file?), or a character changed when it was copied?"
            )
    return key


def _shape(key: str) -> str:
    """What a message may say about a key: its kind and length, no character of it."""
    kind = "an ephemeral key" if key.startswith("ek_") else "a key"
    return f"{kind} of {len(key)} characters"


def _name(char: str) -> str:
    """``U+000A LINE FEED``: a character named, never shown (it may be unprintable)."""
    name = unicodedata.name(char, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN"}.get(
        char, "a control character"
    )
    return f"U+{ord(char):04X} {name}"
