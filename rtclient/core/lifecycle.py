"""The client's lifecycle as an explicit state machine: new, connecting, open, closing, closed.

Why a machine and not a few booleans: ``close()`` may run on any thread at any moment
of ``connect()`` - while the loop thread starts, while ICE runs, while the session is
configured. With booleans, each step has to guess what the others have built; here
every transition is checked in one table, under the one lock that also registers
waiters, and one rule decides who tears down:

* ``connect()`` only *builds*; when it stops building (success or failure) it says so
  (``connect_finished``), and never touches a resource after that.
* Whoever moves the client to ``closing`` tears down - after ``connect_finished``, so
  nothing is built behind its back - and then moves it to ``closed``.

====================  ==============================================================
state                 may move to
====================  ==============================================================
new                   connecting (``connect()``), closed (``close()`` before connect)
connecting            open (``connect()`` succeeded), closing (``close()``, or
                      ``connect()`` failed)
open                  closing (``close()``)
closing               closed (teardown finished)
closed                -
====================  ==============================================================

"Closed" for callers is one more fact, kept here too: :attr:`Lifecycle.error`, the error
that ended the session (``close()``, a lost connection, an expired session). It is set
once, possibly while the state is still ``open`` (the connection was lost and nobody
has called ``close()`` yet): from then on every call fails with it and every waiter is
failed with it. The state says what has been *torn down*; the error says why callers
can no longer use the session.
"""

from __future__ import annotations

import enum
import threading

from rtclient.errors import ClosedError, RealtimeError


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_MOVES: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.CONNECTING, State.CLOSED}),
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING}),
    State.OPEN: frozenset({State.CLOSING}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Lifecycle:
    """The state, its legal moves, the error that ended it, and two events that threads
    wait on.

    ``lock`` is the owner's lock (the one waiters register under); every method that
    moves the state must be called with it held.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.state = State.NEW
        self.error: BaseException | None = None  # why callers can no longer use it
        self.connect_finished = threading.Event()  # connect() stopped building
        self.torn_down = threading.Event()  # teardown finished: nothing is left running

    def __repr__(self) -> str:
        if self.error is not None and self.state is State.OPEN:
            return "lost"
        return self.state.value

    def end(self, error: BaseException) -> bool:
        """Record why the session ended for callers (lock held); the first error wins.
        Returns whether this call recorded it."""
        if self.error is not None:
            return False
        self.error = error
        return True

    def move(self, to: State) -> None:
        """Move to ``to`` (lock held); an illegal move raises and changes nothing."""
        if to not in _MOVES[self.state]:
            if self.state in (State.CLOSING, State.CLOSED):
                raise ClosedError(f"the client is {self.state.value}")
            raise RealtimeError(f"cannot go from {self.state.value} to {to.value}")
        self.state = to
        if to is State.CLOSED:
            self.torn_down.set()

    @property
    def ending(self) -> bool:
        """Closing or closed: no new work may start."""
        return self.state in (State.CLOSING, State.CLOSED)
