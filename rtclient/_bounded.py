"""Bounded echoes: text made from a model's or a server's strings never grows with them.

rtclient repeats strings it did not write - a tool name or an argument name the model
invented, a server's error message, an event type, a call id - in error outputs sent
back to the model, in exception messages, in log lines and in warnings. Each of them can
be as long as the sender likes (a megabyte-long argument *name* is valid JSON), and each
echo would carry it whole. :func:`clip` is the one bound they all go through.

The line it draws: *data* keeps its exact value (the ``call_id`` of a
``function_call_output``, the fields of an event a subscriber receives, an error's
``code`` and ``event_id`` attributes, which code compares); *text* made from it for a
person or a model is bounded. A clipped text says how much was cut, so nobody mistakes
it for the whole.
"""

from __future__ import annotations

from typing import Any

NAME = 200
"""Characters kept of a name, a type, an id: far longer than any real one."""

TEXT = 1000
"""Characters kept of a message (a server's error message, an exception's text): the
API's own messages are a few hundred characters at most."""


def clip(text: str, limit: int = NAME) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and the count cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def clip_repr(value: Any, limit: int = NAME) -> str:
    """``repr(value)``, bounded (a quoted name in a message: ``unknown tool 'x...'``)."""
    return clip(repr(value), limit)


class Clipped:
    """A log argument that formats bounded: ``{}``, ``{!r}``, ``{:>8}`` all go through
    :func:`clip`. The logger wraps every argument in one, so that no log line can carry
    a megabyte that came from the wire, whatever its format string does with it."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __str__(self) -> str:
        return clip(str(self._value), TEXT)

    def __repr__(self) -> str:
        return clip(repr(self._value), TEXT)

    def __format__(self, spec: str) -> str:
        return clip(format(self._value, spec), TEXT)


def bounded_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Log arguments made safe to format: numbers as they are, everything else
    :class:`Clipped` (an int's or a float's text is short; ``{:.6f}`` must still work)."""
    return tuple(a if isinstance(a, int | float) or a is None else Clipped(a) for a in args)
