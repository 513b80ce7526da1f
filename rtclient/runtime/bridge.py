"""The janus queue bridge: worker threads hand commands to the loop, and learn the outcome.

Tool threads and caller threads must never touch aiortc (its ``RTCDataChannel.send``
schedules work with ``asyncio.ensure_future``; measured here, called from a worker it
*queues the message and then raises*, so a rollback on that exception would undo a
create that is already on the wire). They put a command on a bounded janus queue
instead; a handler on the loop thread performs it and resolves the command's
``concurrent.futures.Future`` with the outcome of the *actual* send. That outcome is
what the caller - and the response gate - roll back on.

* ``put`` never blocks: a full queue raises :class:`BridgeFullError` (the loop is not
  keeping up), a closed one :class:`BridgeClosedError`. Either way nothing was queued,
  so the caller can roll back with certainty.
* Latency: janus wakes its async side through a task per item (~55 us here). The
  bridge also schedules one ``call_soon_threadsafe`` drain per *burst* (a flag
  suppresses duplicates) and the drain empties everything already queued, in order,
  with ``get_nowait`` - so a burst of 64 tool results costs one wake-up.
* Shutdown (on the loop, before the loop stops - janus measured here: closing after
  the loop stops races ``loop.close()`` and floods "Task was destroyed"): refuse new
  puts, fail every queued command with :class:`BridgeClosedError`, then ``aclose()``.
  Nothing silently vanishes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import janus

from rtclient.errors import BridgeClosedError, BridgeFullError, ClosedError
from rtclient.logs import logger
from rtclient.runtime.loop import LoopThread

C = TypeVar("C")


@dataclass(eq=False)
class Command(Generic[C]):
    """One unit of work for the loop and the future that reports how it went."""

    payload: C
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class Bridge(Generic[C]):
    """Worker threads -> loop thread, through one bounded janus queue.

    ``handler(payload)`` runs on the loop thread, one command at a time, in put order;
    its return value (or exception) resolves the command's future.
    """

    def __init__(
        self,
        loop_thread: LoopThread,
        handler: Callable[[C], Any],
        *,
        maxsize: int = 1024,
        name: str = "bridge",
    ) -> None:
        self._loop_thread = loop_thread
        self._handler = handler
        self._maxsize = maxsize
        self.name = name
        self._queue: janus.Queue[Command[C]] | None = None
        self._closed = False  # refuses new puts
        self._shut = False  # aclose() ran: queued commands failed, janus closed
        self._lock = threading.Lock()  # held only for flag flips and put_nowait
        self._wake_scheduled = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._queue else "new"
        return f"<Bridge {self.name} {state}>"

    async def open(self) -> None:
        """Create the queue. Runs on the loop thread (janus binds to the running loop)."""
        self._queue = janus.Queue(self._maxsize)
        self._loop_thread.add_stop_hook(self.aclose)

    def start(self) -> Bridge[C]:
        """Open the bridge from a non-loop thread."""
        self._loop_thread.call(self.open(), timeout=10.0)
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, payload: C) -> concurrent.futures.Future[Any]:
        """Queue ``payload`` for the loop without blocking; returns its outcome future.

        Raises :class:`BridgeClosedError` or :class:`BridgeFullError`; then nothing was
        queued. From the loop thread itself, the handler runs inline (no queue hop),
        after everything already queued: commands are always performed in put order.
        """
        command: Command[C] = Command(payload)
        if self._loop_thread.in_loop_thread() and self._queue is not None and not self._closed:
            self._drain()  # what other threads queued earlier goes first: put order holds
            self._perform(command)
            return command.future
        # The closed check and the put are one step under _lock, so aclose() - which
        # sets _closed under the same lock - can never miss a command put concurrently.
        with self._lock:
            queue = self._queue
            if queue is None or self._closed:
                raise BridgeClosedError(f"{self.name} is closed")
            try:
                queue.sync_q.put_nowait(command)
            except janus.SyncQueueFull:
                raise BridgeFullError(
                    f"{self.name} is full ({self._maxsize} commands): the loop is not keeping up"
                ) from None
            except (janus.SyncQueueShutDown, RuntimeError):
                raise BridgeClosedError(f"{self.name} is closed") from None
            wake, self._wake_scheduled = not self._wake_scheduled, True
        if wake:
            try:
                self._loop_thread.call_soon(self._drain)
            except Exception:
                pass  # the loop is stopping: aclose() fails what is queued
        return command.future

    def _drain(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        queue = self._queue
        if queue is None:
            return
        while True:
            try:
                command = queue.async_q.get_nowait()
            except (asyncio.QueueEmpty, janus.AsyncQueueShutDown):
                return
            self._perform(command)

    def _perform(self, command: Command[C]) -> None:
        if not command.future.set_running_or_notify_cancel():
            return
        try:
            result = self._handler(command.payload)
        except BaseException as exc:
            command.future.set_exception(exc)
        else:
            command.future.set_result(result)

    async def aclose(self) -> None:
        """Refuse new puts, fail what is still queued, close the janus queue. Idempotent."""
        with self._lock:
            if self._shut:
                return
            self._closed = self._shut = True
        self._loop_thread.remove_stop_hook(self.aclose)
        queue = self._queue
        if queue is None:
            return
        failed = 0
        while True:
            try:
                command = queue.async_q.get_nowait()
            except (asyncio.QueueEmpty, janus.AsyncQueueShutDown):
                break
            if command.future.set_running_or_notify_cancel():
                command.future.set_exception(BridgeClosedError(f"{self.name} shut down"))
                failed += 1
        if failed:
            logger.warning("[BRIDGE] {} closed with {} queued commands failed", self.name, failed)
        await queue.aclose()

    def close(self, timeout: float = 10.0) -> None:
        """Close from a non-loop thread (or only refuse puts if the loop is stopping or gone).

        If the loop is stopping, its stop hook (:meth:`aclose`) still fails whatever is
        queued: marking the bridge closed here must not make that hook a no-op.
        """
        if self._shut:
            return
        if self._loop_thread.running:
            try:
                self._loop_thread.call(self.aclose(), timeout=timeout)
                return
            except ClosedError:
                pass  # the loop began stopping meanwhile; its stop hook runs aclose()
        with self._lock:
            self._closed = True
