"""The one sync shell: threads, guards and waiting around a protocol core.

A public client (``RealtimeClient``, ``LiveClient``) is this shell plus its options and
its API. The shell owns, for one session:

* **the loop thread** (:class:`~rtclient.runtime.loop.LoopThread`), the one portal into
  asyncio: every hand-off from another thread goes through its ``submit``/``call``/
  ``call_soon`` (which refuse a forked child, the loop's own thread and a stopped
  loop). The janus :class:`~rtclient.runtime.bridge.Bridge` is not a second door but a
  lane through it: an ordered, bounded queue of sends whose wake-up is one
  ``call_soon`` per burst and whose futures report the *actual* write;
* **the dispatcher** (:class:`~rtclient.runtime.dispatcher.Dispatcher`): this
  session's lane in the loop thread's :class:`~rtclient.runtime.pool.DispatchPool`, a
  few threads shared by every client of that loop thread;
* **the waiters** (:class:`~rtclient.runtime.waiters.Waiters`), all registered under the
  lock ``close()`` takes;
* **the lifecycle** (:class:`~rtclient.core.lifecycle.Lifecycle`): the state, and the
  error that ended the session for callers.

It applies the core's effects (:mod:`rtclient.effects`) outside every lock and
reports their outcomes back to the core. The route of one tool result, from the
executor thread to the wire::

    executor thread   future done -> _apply(core.finished(start, future))
                      core: runner.finished -> OutputReady -> Send(output)
                      _put: bridge.put(function_call_output)
    loop thread       transport.send (on the wire) -> future resolved
                      _apply(core.sent(send, None)): runner.delivered -> RoundComplete
                      core: gate.request(follow-up) -> Send(create) -> _put
                      transport.send(response.create); _apply(core.sent(...)): counted
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol

from rtclient._secret import Secret
from rtclient.core.lifecycle import Lifecycle, State
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start
from rtclient.errors import (
    ClosedError,
    ConnectTimeoutError,
    ForkedProcessError,
    RealtimeError,
    SignalingError,
    WaitTimeoutError,
    WrongThreadError,
)
from rtclient.logs import logger
from rtclient.runtime.bridge import Bridge
from rtclient.runtime.dispatcher import Catalog, Dispatcher, EventStream
from rtclient.runtime.loop import LoopThread
from rtclient.runtime.pool import dispatch_pool
from rtclient.runtime.waiters import Waiters
from rtclient.transports.base import Transport

SEND_TIMEOUT = 10.0


class Core(Protocol):
    """What the shell needs of a protocol core."""

    def receive(self, text: str | bytes) -> list[Effect]: ...
    def written(self, event: Mapping[str, Any]) -> None: ...
    def sent(self, send: Send, error: BaseException | None) -> list[Effect]: ...
    def finished(
        self, start: Start, future: Any, submit_error: BaseException | None
    ) -> list[Effect]: ...
    def timer(self, later: Later) -> list[Effect]: ...
    def step(self, event: Mapping[str, Any]) -> list[Effect]: ...
    def step_wants(self, kind: str) -> bool: ...
    def close(self, error: BaseException) -> None: ...


class SessionShell:
    """Threads, guards, waiting and effects for one session; see the module docstring.

    A subclass passes its protocol core and its events' catalog, and provides the
    transport (:meth:`_make_transport`) and what "ready" means after the connection
    opens (:meth:`_when_open`).
    """

    _kind = "client"  # named in messages: "this RealtimeClient ..."

    def __init__(
        self,
        core: Core,
        catalog: Catalog,
        *,
        api_key: str | None,
        base_url: str,
        executor: concurrent.futures.Executor | None,
        loop_thread: LoopThread | None,
        connect_timeout: float,
        close_timeout: float,
        bridge_size: int,
        on_audio: Callable[[Any], object] | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise RealtimeError("no API key: pass api_key= or set OPENAI_API_KEY")
        self._key = Secret(key)
        self.base_url = base_url.rstrip("/")
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            thread_name_prefix="rtclient-tool"
        )
        self._own_loop = loop_thread is None
        self._loop_thread = loop_thread
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._bridge_size = bridge_size
        self._core = core
        # The one lock close() takes: it guards the lifecycle and registers every waiter
        # (the one waiter rule: a waiter registered after close() fails at once). Never
        # held for I/O or while running user code.
        self._lock = threading.Lock()
        self._life = Lifecycle(self._lock)
        self._waiters = Waiters(self._lock)
        self._pid = os.getpid()
        self._transport: Any = None
        self._bridge: Bridge[dict[str, Any]] | None = None
        # Created now, started by connect(): on() and events() work before connect().
        self._dispatcher = Dispatcher(
            catalog,
            self._lock,
            step=lambda event: self._apply(core.step(event)),
            step_wants=core.step_wants,
            on_audio=on_audio,
        )
        self._connect_future: concurrent.futures.Future[Any] | None = None
        self._torn: set[str] = set()  # what _teardown has released already
        self._timers: dict[Later, asyncio.TimerHandle] = {}  # loop thread only

    def __enter__(self) -> Any:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a subclass provides -------------------------------------------------------

    def _make_transport(self) -> Transport:
        raise NotImplementedError

    def _when_open(self, deadline: float) -> None:
        """After the connection opened: wait until the session is ready to use."""

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> Any:
        """Connect and wait until the session is ready. Blocking, bounded by ``timeout``.

        A client connects once. ``close()`` from another thread at any moment of this
        call makes it raise :class:`ClosedError` promptly and leaves nothing behind.
        """
        self._may_block("connect()", True)
        with self._lock:
            if self._life.state is not State.NEW and not self._life.ending:
                raise RealtimeError(f"a {self._kind} connects once; create a new one")
            self._life.move(State.CONNECTING)  # raises ClosedError after close()
        timeout = timeout if timeout is not None else self.connect_timeout
        failure: BaseException | None = None
        try:
            self._build(timeout)
        except BaseException as exc:
            failure = exc
        with self._lock:
            self._life.connect_finished.set()  # from here on, connect() builds nothing
            if failure is None and self._life.state is State.CONNECTING:
                self._life.move(State.OPEN)
                return self
            # close() may have given up waiting for us: then what we built is ours to
            # release (the last one out tears down; teardown is idempotent)
            abandoned = self._life.state is State.CLOSED
        if failure is None or isinstance(failure, concurrent.futures.CancelledError):
            failure = self._life.error or ClosedError("the client was closed while connecting")
        if abandoned:
            self._teardown(self.close_timeout)
        else:
            self.close()
        # Every timeout of connect() is a ConnectTimeoutError (an APITimeoutError stays
        # as it is); concurrent.futures.TimeoutError is the builtin one only from 3.11.
        timed_out = isinstance(failure, TimeoutError | concurrent.futures.TimeoutError)
        if timed_out and not isinstance(failure, ConnectTimeoutError | SignalingError):
            why = f"the session was not ready within {timeout}s"
            raise ConnectTimeoutError(
                str(failure) if isinstance(failure, RealtimeError) else why
            ) from None
        raise failure

    def _build(self, timeout: float) -> None:
        """connect()'s steps. Each resource is published (under the lock, checked) before
        the next step, so a concurrent close() tears down exactly what exists, and each
        blocking wait is failed at once by close()."""
        deadline = time.monotonic() + timeout
        if self._loop_thread is None:
            loop_thread = LoopThread("rtclient-loop").start()
            with self._lock:
                self._loop_thread = loop_thread
            self._check_connecting()
        loop_thread = self._loop_thread
        bridge: Bridge[dict[str, Any]] = Bridge(
            loop_thread, self._write, maxsize=self._bridge_size, name="rtclient-bridge"
        )
        with self._lock:
            self._bridge = bridge
        bridge.start()
        self._check_connecting()
        self._dispatcher.start(dispatch_pool(loop_thread))
        self._transport = self._make_transport()
        with self._lock:
            self._check_connecting()
            self._connect_future = loop_thread.submit(self._transport.connect())
        wait_for(self._connect_future, timeout + 1.0, "the connection to open")
        self._when_open(deadline)

    def _check_connecting(self) -> None:
        if self._life.state is not State.CONNECTING:
            raise self._life.error or ClosedError("the client was closed while connecting")

    def close(self, timeout: float | None = None) -> None:
        """Fail every waiter, close the connection, stop threads. Idempotent, from any
        thread (in a forked child it returns at once and touches nothing); returns within
        ``timeout``. If ``connect()`` is still building when ``timeout`` runs out, it
        releases what it built itself as soon as it stops."""
        if os.getpid() != self._pid:
            return  # the parent's connection is not ours to touch
        timeout = timeout if timeout is not None else self.close_timeout
        with self._lock:
            state = self._life.state
            if state is State.NEW:
                self._life.move(State.CLOSED)
            elif not self._life.ending:
                self._life.move(State.CLOSING)
            connect_future = self._connect_future
        if state is State.NEW:
            self._shut_down(ClosedError("the client was closed"))
            if self._own_executor:
                self._executor.shutdown(wait=False, cancel_futures=True)
            return
        if state in (State.CLOSING, State.CLOSED):
            if not self._is_internal_thread():
                self._life.torn_down.wait(timeout)  # another thread is tearing down
            return
        self._shut_down(ClosedError("the client was closed"))
        if state is State.CONNECTING:
            if connect_future is not None:
                connect_future.cancel()  # ICE or signaling in progress: stop it now
            if not self._life.connect_finished.is_set() and not self._is_internal_thread():
                self._life.connect_finished.wait(timeout)
        self._teardown(timeout)
        with self._lock:
            self._life.move(State.CLOSED)
            unfinished = not self._life.connect_finished.is_set()
        if unfinished:
            logger.debug("[CONNECTION] close() left connect() to release what it builds")

    @property
    def closed(self) -> bool:
        """Whether the session has ended for callers (closed, or its connection lost)."""
        return self._life.error is not None

    def _is_internal_thread(self) -> bool:
        """The dispatcher or the loop thread: they must never wait for the teardown."""
        loop_thread = self._loop_thread
        in_loop = loop_thread is not None and loop_thread.in_loop_thread()
        return in_loop or self._dispatcher.in_thread()

    def _release(self, part: str) -> bool:
        """Whether ``part`` is still to be released (and is now marked released)."""
        with self._lock:
            if part in self._torn:
                return False
            self._torn.add(part)
            return True

    def _teardown(self, timeout: float) -> None:
        """Release what exists, each part once: connection, bridge, dispatcher,
        executor, loop. Safe to run again for what a late connect() built."""
        with self._lock:
            loop_thread, transport, bridge = self._loop_thread, self._transport, self._bridge
            dispatcher = self._dispatcher
        if loop_thread is not None and loop_thread.running:
            if transport is not None and self._release("transport"):
                try:
                    loop_thread.call(transport.close(), timeout=timeout)
                except Exception as exc:
                    logger.warning("[CONNECTION] close: {!r}", exc)
            if bridge is not None and self._release("bridge"):
                bridge.close(timeout)
        dispatcher.close(self._life.error or ClosedError("the client was closed"))
        dispatcher.join(timeout)
        if self._own_executor and self._release("executor"):
            self._executor.shutdown(wait=False, cancel_futures=True)
        ours = self._own_loop and loop_thread is not None and not loop_thread.in_loop_thread()
        if ours and loop_thread is not None and self._release("loop"):
            loop_thread.stop(timeout)

    def _shut_down(self, error: BaseException) -> None:
        """Closed for callers: every waiter fails with the first error. Once, any thread."""
        with self._lock:
            self._life.end(error)
            error = self._life.error or error
        self._core.close(error)
        self._waiters.fail_all(error)
        self._dispatcher.close(error)
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            try:
                loop_thread.call_soon(self._cancel_timers)
            except RealtimeError:
                pass  # the loop is stopping: its timers go with it

    def _on_connection_lost(self, error: BaseException) -> None:
        logger.error("[CONNECTION] lost: {!r}", error)
        self._shut_down(error)

    # -- guards -------------------------------------------------------------------------

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedProcessError(
                f"this {self._kind} belongs to process {self._pid}; a forked child "
                f"({os.getpid()}) shares none of its threads or its connection - create a "
                "new client in the child"
            )

    def _check_open(self) -> None:
        self._check_process()
        error = self._life.error
        if error is not None:
            raise ClosedError(f"the client is closed: {error}") from error
        if self._bridge is None:
            raise ClosedError("the client is not connected; call connect() first")

    def _may_block(self, what: str, blocking: bool = True) -> None:
        """Refuse a wait that cannot end: in a forked child, or on the thread that would
        have to deliver the answer (the dispatcher runs callbacks; the loop thread
        performs sends and reads events)."""
        self._check_process()
        if not blocking:
            return
        if self._dispatcher.in_thread():
            raise WrongThreadError(
                f"{what} would block the dispatcher thread, which runs on() callbacks and "
                "delivers the very events it waits for; call it from another thread "
                "(e.g. submit it to an executor)"
            )
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.in_loop_thread():
            raise WrongThreadError(f"{what} would block the loop thread and deadlock")

    # -- events for the user ------------------------------------------------------------

    def _subscribe(
        self, event_type: str, callback: Callable[[Any], object], raw: bool
    ) -> Callable[[], None]:
        self._check_process()
        return self._dispatcher.subscribe(event_type, callback, raw)

    def _stream(self, timeout: float | None, raw: bool) -> EventStream[Any]:
        self._check_process()
        return self._dispatcher.stream(timeout, raw, self._may_block)

    # -- effects --------------------------------------------------------------------------

    def _on_message(self, text: str | bytes) -> None:
        """The transport's handler (loop thread): one server message, in order."""
        self._apply(self._core.receive(text))

    def _apply(self, effects: Iterable[Effect]) -> None:
        """Carry out a core's effects, in order, holding no lock."""
        for fx in effects:
            if isinstance(fx, Send):
                self._put(fx)
            elif isinstance(fx, Settle):
                self._waiters.settle(fx.key, fx.outcome, keep=fx.keep)
            elif isinstance(fx, Dispatch):
                if self._dispatcher.wants(fx.event["type"]):
                    self._dispatcher.put(fx.event)
            elif isinstance(fx, Start):
                self._start(fx)
            elif isinstance(fx, Later):
                self._later(fx)
            elif isinstance(fx, Lost):
                self._on_connection_lost(fx.error)

    def _put(self, send: Send) -> None:
        """Hand ``send`` to the bridge without waiting; its outcome goes to the core."""
        try:
            error = self._life.error
            if error is not None:
                raise ClosedError(f"the client is closed: {error}")
            bridge = self._bridge
            if bridge is None:
                raise ClosedError("not connected")
            future = bridge.put(send.event)
        except RealtimeError as exc:  # not even queued (closed, full)
            if send.report:
                self._apply(self._core.sent(send, exc))
            return
        if send.report:
            future.add_done_callback(partial(self._sent, send))

    def _sent(self, send: Send, future: concurrent.futures.Future[Any]) -> None:
        self._apply(self._core.sent(send, future.exception()))

    def _start(self, start: Start) -> None:
        try:
            future = self._executor.submit(start.fn, *start.args, **start.kwargs)
        except Exception as exc:
            self._apply(self._core.finished(start, None, exc))
            return
        future.add_done_callback(lambda f: self._apply(self._core.finished(start, f, None)))

    def _later(self, later: Later) -> None:
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            try:
                loop_thread.call_soon(self._arm_timer, loop_thread, later)
            except RealtimeError:
                pass  # the loop is stopping: nothing is left to time

    def _arm_timer(self, loop_thread: LoopThread, later: Later) -> None:
        """Loop thread. The handle is kept so that the session's end cancels its timers:
        a pending timer holds the session (the confirm watchdog's for up to
        ``confirm_timeout``), and a closed session has nothing left to time."""
        if self._life.error is None:
            handle = loop_thread.loop.call_later(later.delay, self._fire_timer, later)
            self._timers[later] = handle

    def _cancel_timers(self) -> None:
        """Loop thread, after the session ended (queued after every ``_arm_timer``)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire_timer(self, later: Later) -> None:
        self._timers.pop(later, None)
        self._apply(self._core.timer(later))

    def _write(self, event: dict[str, Any]) -> None:
        """The bridge's handler: runs on the loop thread, the only thread touching the
        connection. On return the event is on the wire; nothing that can raise may
        follow the write (the outcome is what the core counts and rolls back on)."""
        transport = self._transport
        if transport is None:
            raise ClosedError("not connected")
        transport.send(event)
        self._core.written(event)  # counters only: cannot raise

    def _send(self, event: dict[str, Any], timeout: float = SEND_TIMEOUT) -> None:
        """Put an event on the bridge and wait for the outcome of the actual send."""
        self._check_open()
        assert self._bridge is not None
        wait_for(self._bridge.put(event), timeout, f"the send of {event.get('type')}")

    def _send_awaited(
        self, event: dict[str, Any], key: tuple[str, str], timeout: float | None, what: str
    ) -> Any:
        """Register ``key``'s waiter (one waiter rule), send ``event``, wait for it."""
        future = self._waiters.register(key)
        if not future.done():
            try:
                self._send(event)
            except BaseException:
                self._waiters.forget(key)
                raise
        try:
            return wait_for(future, timeout, what)
        except WaitTimeoutError:
            self._waiters.forget(key)
            raise


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def wait_for(future: concurrent.futures.Future[Any], timeout: float | None, what: str) -> Any:
    """``future.result(timeout)``, but a timeout says what was waited for, and is both a
    ``RealtimeError`` and a ``TimeoutError`` (never a TimeoutError raised *by* the work
    mistaken for this wait's)."""
    done, _ = concurrent.futures.wait([future], timeout)
    if not done:
        raise WaitTimeoutError(f"waited {timeout:.3g}s for {what}")
    return future.result()
