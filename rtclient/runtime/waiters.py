"""Every waiter of a session in one registry, under the one lock ``close()`` takes.

A caller that will block on an answer (a ``response.done``, a tool round's follow-up,
an out-of-band response, the answer to a ``session.update``...) registers a future
here *before* the event it waits for can arrive. The one waiter rule: registration
happens under the lock that ``close()`` (or a lost connection) takes to fail
everything, so a waiter registered after that moment fails at once instead of waiting
for an answer that can no longer come.

Keys are ``(kind, id)``. An outcome that arrives before anyone waits for it can be
*kept* (bounded: the oldest are dropped), so a late reader - ``interrupt()`` asking
after the done arrived, ``ask()`` reading a round that settled while it slept - gets
it at registration, and a long session stays flat.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Key = tuple[str, str]
KEPT = 64  # settled outcomes kept per kind for a late reader


class Waiters:
    """Futures by key. ``lock`` is the session's lock (the one ``close()`` takes)."""

    def __init__(self, lock: threading.Lock, kept: int = KEPT) -> None:
        self._lock = lock
        self._kept_max = kept
        self._pending: dict[Key, concurrent.futures.Future[Any]] = {}
        self._kept: dict[str, OrderedDict[str, Any]] = {}
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def register(
        self, key: Key, *, also: Callable[[], None] | None = None
    ) -> concurrent.futures.Future[Any]:
        """The future for ``key``'s outcome: already settled if the outcome was kept or
        the session is closed. ``also`` runs under the lock when a live waiter is
        registered (bookkeeping that must appear together with it)."""
        with self._lock:
            error = self._error
            if error is None:
                kept = self._kept.get(key[0])
                if kept is not None and key[1] in kept:
                    return _settled(kept[key[1]])
                if also is not None:
                    also()
                return self._pending.setdefault(key, concurrent.futures.Future())
        return _settled(error)

    def settle(self, key: Key, outcome: Any, *, keep: bool = False) -> bool:
        """Resolve ``key``'s waiter with ``outcome`` (an exception fails it). ``keep``
        also keeps the outcome (bounded) for every later :meth:`register` of ``key``.
        Returns whether a waiter was resolved."""
        with self._lock:
            future = self._pending.pop(key, None)
            if keep and self._error is None:
                kept = self._kept.setdefault(key[0], OrderedDict())
                kept[key[1]] = outcome
                while len(kept) > self._kept_max:
                    kept.popitem(last=False)
        if future is None:
            return False
        settle(future, outcome)
        return True

    def forget(self, key: Key) -> concurrent.futures.Future[Any] | None:
        """Drop ``key``'s waiter (its caller gave up); return it if there was one."""
        with self._lock:
            return self._pending.pop(key, None)

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiter with ``error``; from now on :meth:`register` fails at once.
        The first error is the one kept."""
        with self._lock:
            if self._error is None:
                self._error = error
            futures = list(self._pending.values())
            self._pending.clear()
            self._kept.clear()
        for future in futures:
            settle(future, error)


def settle(future: concurrent.futures.Future[Any], outcome: Any) -> None:
    """Resolve a future once, with a value or an exception."""
    if future.done():
        return
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        pass


def _settled(outcome: Any) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    settle(future, outcome)
    return future
