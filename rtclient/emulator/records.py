"""Waiting for emulator-side state without sleeping, and what a record holds.

The emulator records every event under one lock; each change notifies a
``threading.Condition`` (for test threads) and resolves matching asyncio waiters (for
tests whose client runs in their own event loop, which must not block on a condition).
A session records each message as the dict it parses to, or ``{"type": None, "raw":
text}`` for one that is not a JSON object (:func:`parse_received`, :func:`parse_sent`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Predicate = Callable[[], object]


@dataclass
class _AsyncWaiter:
    predicate: Predicate
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


class Recorder:
    """The emulator-wide record lock, and the two ways of waiting on a change."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._condition = threading.Condition(self.lock)
        self._async_waiters: list[_AsyncWaiter] = []

    def changed(self) -> None:
        """Call with ``lock`` held after recording something."""
        self._condition.notify_all()
        if self._async_waiters:
            for waiter in list(self._async_waiters):
                try:
                    ready = bool(waiter.predicate())
                except Exception as exc:
                    self._async_waiters.remove(waiter)
                    _resolve_threadsafe(waiter, exc)
                    continue
                if ready:
                    self._async_waiters.remove(waiter)
                    _resolve_threadsafe(waiter, None)

    def wait_for(self, predicate: Predicate, timeout: float) -> bool:
        """Block until ``predicate()`` is true (checked under the lock) or ``timeout``."""
        with self._condition:
            return bool(self._condition.wait_for(predicate, timeout))

    async def wait_for_async(self, predicate: Predicate, timeout: float) -> bool:
        """The same, awaitable from any event loop other than the emulator's."""
        loop = asyncio.get_running_loop()
        waiter = _AsyncWaiter(predicate, loop, loop.create_future())
        with self.lock:
            if predicate():
                return True
            self._async_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout)
            return True
        except asyncio.TimeoutError:  # the builtin TimeoutError only from 3.11
            return False
        finally:
            with self.lock:
                if waiter in self._async_waiters:
                    self._async_waiters.remove(waiter)


def _resolve_threadsafe(waiter: _AsyncWaiter, exc: Exception | None) -> None:
    def resolve() -> None:
        if waiter.future.done():
            return
        if exc is None:
            waiter.future.set_result(None)
        else:
            waiter.future.set_exception(exc)

    try:
        waiter.loop.call_soon_threadsafe(resolve)
    except RuntimeError:
        pass  # the waiting loop is closed; nobody is listening any more


def parse_received(text: str | bytes) -> dict[str, Any]:
    """A client message as recorded (however deeply nested, however malformed)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        return value
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return {"type": None, "raw": raw}


def parse_sent(text: str) -> dict[str, Any]:
    """A message sent to the client as recorded (an injected malformed one as raw)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"type": None, "raw": text}
    return value if isinstance(value, dict) else {"type": None, "raw": text}
