"""What a protocol core asks its shell to do: effects, as plain data.

The vocabulary shared by the protocol cores (:mod:`rtclient.core`), the tool runner and
the sync shell (:mod:`rtclient.runtime.session`); it imports nothing of theirs.

A core (:mod:`rtclient.core.realtime`) never sends, waits,
sleeps or starts a thread. Each of its methods takes what happened (a server event, the
outcome of a send, a finished tool, a fired timer) and returns a list of effects. The
shell applies them in order, outside
every lock - decide under the lock, act after releasing it - and reports each outcome
that an effect asks for back to the core, which answers with more effects.

=============  =================================================================
effect         what the shell does
=============  =================================================================
``Send``       put ``event`` on the bridge (the one portal to the loop thread);
               if ``report`` is set, call ``core.sent(effect, error)`` with the
               outcome of the actual write (``None``: on the wire)
``Settle``     resolve the waiter registered under ``key`` with ``outcome`` (a
               value, or an exception to raise); ``keep`` keeps it, bounded, for
               a reader who asks later
``Dispatch``   hand ``event`` to the dispatcher thread (``on()`` callbacks,
               ``events()`` iterators)
``Start``      run ``work`` on the executor; report with
               ``core.finished(effect, result, error)``
``Later``      after ``delay`` seconds (loop timer), call ``core.timer(effect)``
``Lost``       the session is over (``error`` says why): fail every waiter
=============  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class Send:
    """A client event to write. ``kind`` and ``ref`` tell the core, when the outcome
    comes back, what was sent (``"create"`` and its ticket, ``"output"`` and its call,
    ...); ``report=False`` means nobody needs the outcome."""

    event: dict[str, Any]
    kind: str = "plain"
    ref: Any = None
    report: bool = True


@dataclass(frozen=True, eq=False)
class Settle:
    """Resolve the waiter under ``key`` (``(kind, id)``) with ``outcome``."""

    key: tuple[str, str]
    outcome: Any
    keep: bool = False


@dataclass(frozen=True, eq=False)
class Dispatch:
    """A server event for the user's callbacks and iterators, in arrival order."""

    event: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Start:
    """Work for the executor: a tool call or a delegation (``work`` carries what the
    core knows of it; ``fn``, ``args`` and ``kwargs`` are what to run)."""

    work: Any
    fn: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Later:
    """A timer: after ``delay`` seconds, ``core.timer(effect)``."""

    delay: float
    kind: str
    ref: Any = None


@dataclass(frozen=True, eq=False)
class Lost:
    """The session ended on the server's side (expired, closed): ``error`` says why."""

    error: BaseException


Effect = Send | Settle | Dispatch | Start | Later | Lost
