"""LoopThread: one background asyncio loop for hosts that are not async.

Flask and Django workers, thread-pool tool runners and scripts have no event loop, but
aiortc needs one. A LoopThread owns a daemon thread running its own loop; synchronous
code reaches it with :meth:`LoopThread.call` (blocking, bounded) or
:meth:`LoopThread.submit` (a ``concurrent.futures.Future``).

Rules it enforces, and why:

* The thread hands itself back through a startup future (like anyio's
  ``start_blocking_portal``), so an error while starting re-raises in the caller
  instead of dying silently on the thread.
* A blocking ``call`` from the loop thread itself would wait for work that can only
  run after it returns - a deadlock - so it raises :class:`WrongThreadError`.
* After ``fork()`` the child has the object but not the thread (like asgiref): any use
  raises :class:`ForkedProcessError` instead of hanging.
* The thread is a daemon with an ``atexit`` stop: a non-daemon loop thread that nobody
  stops would hang the interpreter at exit; a daemon that is never stopped would leave
  aiortc's transports half-closed.
* ``stop`` is idempotent. It runs the ``on_stop`` hooks on the loop (e.g. closing the
  janus bridge, which must happen before the loop stops), then cancels leftover tasks
  *repeatedly* - aiortc spawns close tasks while it tears down - until none remain,
  then ``shutdown_asyncgens()`` and ``shutdown_default_executor()``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from rtclient import logs
from rtclient.errors import ClosedError, ForkedProcessError, WaitTimeoutError, WrongThreadError
from rtclient.logs import logger

T = TypeVar("T")

_CANCEL_ROUNDS = 100
_live: weakref.WeakSet[LoopThread] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for loop_thread in list(_live):
        loop_thread.stop(timeout=5.0)


class LoopThread:
    """A daemon thread running one asyncio loop, shared by any number of clients."""

    def __init__(
        self,
        name: str = "rtclient-loop",
        *,
        debug: bool | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._debug = debug
        self._on_start = on_start
        # insertion-ordered, O(1) to remove: each client's bridge adds one and removes it
        # at close; a list made closing N clients O(N^2) (10,000 sessions: seconds)
        self._on_stop: dict[Callable[[], Awaitable[None]], None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._state_lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "running" if self._loop else "new"
        return f"<LoopThread {self.name} {state}>"

    def __enter__(self) -> LoopThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> LoopThread:
        """Start the thread and wait until its loop runs; re-raise any startup error."""
        self._check_process()
        with self._state_lock:
            if self._thread is not None:
                raise RuntimeError(f"{self!r} was already started")
            started: concurrent.futures.Future[asyncio.AbstractEventLoop] = (
                concurrent.futures.Future()
            )
            self._thread = threading.Thread(
                target=self._run, args=(started,), name=self.name, daemon=True
            )
            self._thread.start()
        # As in call(): wait first, so that a TimeoutError raised while starting (by
        # on_start) is re-raised as it is, and only our own wait says it timed out.
        done, _ = concurrent.futures.wait([started], timeout)
        try:
            if not done:
                raise WaitTimeoutError(f"{self.name} did not start within {timeout}s")
            self._loop = started.result()
        except BaseException:
            self._thread.join(timeout)
            self._stopped.set()
            raise
        _live.add(self)
        return self

    def _run(self, started: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        loop = asyncio.new_event_loop()
        logs.attach_relay()  # this thread must never wait for a log sink
        try:
            asyncio.set_event_loop(loop)
            if self._debug is not None:
                loop.set_debug(self._debug)
            if self._on_start is not None:
                loop.run_until_complete(self._on_start())
        except BaseException as exc:
            loop.run_until_complete(self._drain(loop))
            loop.close()
            logs.detach_relay()
            started.set_exception(exc)
            return
        started.set_result(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()
            logs.detach_relay()
            self._stopped.set()

    def add_stop_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook()`` on the loop when it stops, before leftover tasks are cancelled."""
        self._on_stop[hook] = None

    def remove_stop_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_stop.pop(hook, None)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and join the thread. Idempotent; safe from any other thread."""
        if os.getpid() != self._pid:
            return  # a forked child owns no thread to stop
        if self.in_loop_thread():
            raise WrongThreadError("LoopThread.stop() cannot be called from its own loop")
        with self._state_lock:
            loop, self._stopping, already = self._loop, True, self._stopping
        if loop is None or self._thread is None:
            return
        if not already:
            try:
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._shutdown(loop)))
            except RuntimeError:
                pass  # the loop is already closed
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("[LOOP] {} did not stop within {}s", self.name, timeout)
        _live.discard(self)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        for hook in reversed(list(self._on_stop)):
            try:
                await hook()
            except Exception:
                logger.exception("[LOOP] stop hook failed")
        await self._drain(loop)
        loop.stop()

    @staticmethod
    async def _drain(loop: asyncio.AbstractEventLoop) -> None:
        me = asyncio.current_task()
        for _ in range(_CANCEL_ROUNDS):
            # Yield first: callbacks already queued run before we look (and before
            # loop.stop() drops them) - e.g. the done-callback that hands a task's
            # result to a submit() future, or work scheduled just before stop().
            await asyncio.sleep(0)
            tasks = [t for t in asyncio.all_tasks(loop) if t is not me and not t.done()]
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()

    # -- use -----------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        self._check_usable()
        assert self._loop is not None
        return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._stopping and not self._stopped.is_set()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread; returns its future."""
        try:
            self._check_process()  # before the lock: a forked child may inherit it held
            # The check and the scheduling are one step under _state_lock, where stop()
            # marks the loop stopping: work that passed the check is queued before the
            # shutdown (whose drain cancels it), never onto a loop that already stopped.
            with self._state_lock:
                self._check_usable()
                assert self._loop is not None
                return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except BaseException:
            coro.close()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block for its result (bounded by ``timeout``).

        On timeout the coroutine is cancelled and :class:`WaitTimeoutError` (a
        ``TimeoutError``) raised, naming the coroutine.
        """
        if self.in_loop_thread():
            coro.close()
            raise WrongThreadError(
                "a blocking call from the loop thread would deadlock; await it instead"
            )
        what = getattr(coro, "__qualname__", None) or type(coro).__name__
        future = self.submit(coro)
        # Wait first, then take the result: concurrent.futures.TimeoutError *is* the
        # builtin TimeoutError (3.11+), so catching it around result() would disguise a
        # TimeoutError raised by the coroutine itself as this call timing out.
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            future.cancel()
            raise WaitTimeoutError(
                f"{what}() on {self.name} timed out after {timeout}s and was cancelled"
            )
        return future.result()

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule a plain callback on the loop from any thread."""
        self._check_process()
        with self._state_lock:  # as in submit(): never onto a loop that already stopped
            self._check_usable()
            assert self._loop is not None
            self._loop.call_soon_threadsafe(fn, *args)

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedProcessError(
                f"{self.name} was started in process {self._pid}; this forked child "
                f"({os.getpid()}) has no loop thread - create a new client in the child"
            )

    def _check_usable(self) -> None:
        self._check_process()
        if self._loop is None:
            raise ClosedError(f"{self.name} is not started")
        if self._stopping or self._stopped.is_set():
            raise ClosedError(f"{self.name} is stopped")
