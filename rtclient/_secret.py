"""An API key that cannot leak through a repr, a log line or an exception message."""

from __future__ import annotations


class Secret:
    """Holds a key; every textual form is redacted. Only ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

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
