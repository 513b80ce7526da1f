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
    """The state, its legal moves, and two events that threads wait on.

    ``lock`` is the owner's lock (the one waiters register under); every method that
    moves the state must be called with it held.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.state = State.NEW
        self.connect_finished = threading.Event()  # connect() stopped building
        self.closed = threading.Event()  # teardown finished

    def __repr__(self) -> str:
        return self.state.value

    def move(self, to: State) -> None:
        """Move to ``to`` (lock held); an illegal move raises and changes nothing."""
        if to not in _MOVES[self.state]:
            if self.state in (State.CLOSING, State.CLOSED):
                raise ClosedError(f"the client is {self.state.value}")
            raise RealtimeError(f"cannot go from {self.state.value} to {to.value}")
        self.state = to
        if to is State.CLOSED:
            self.closed.set()

    @property
    def ending(self) -> bool:
        """Closing or closed: no new work may start."""
        return self.state in (State.CLOSING, State.CLOSED)
