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
reports their outcomes back to the core.

**Reconnects** (a subclass that sets ``_reconnect``: ``RealtimeClient(reconnect=...)``).
A lost connection does not end the session for callers; instead, on the loop thread
that reports the loss: the *generation* is bumped (from then on nothing of the old
connection counts: its late messages are dropped, and an event put on the bridge for
it fails at the write with :class:`SessionReplacedError` - nothing queued for a dead
connection is ever written to its successor); its core is detached (its gate closes:
every request waiting fails typed, a create is never replayed); its waiters fail with
:class:`SessionReplacedError` and new ones take their place; the dispatcher gets the
``rtclient.reconnecting`` event; and one reconnect thread starts. That thread waits the
backoff (``close()`` wakes it), builds the next connection exactly as ``connect()``
does - each resource published under the lock, so ``close()`` at any moment tears down
exactly what exists - with a new core, restores (the subclass's ``_after_reopen``),
then dispatches ``rtclient.reconnected``; it gives up after the policy's attempts
(:class:`ReconnectFailedError`, the client closed for callers). ``close()`` stops and
joins it before the teardown: no thread is left behind.

Which core an outcome belongs to: effects are applied for the core that produced them.
A *stale* core (a lost own session's) gets nothing done any more - its sends fail back
to it, its tools are not started. A *carried* core (a re-attached sideband's previous
core: the same call, the same tool runner) has its tool outcomes handled by the current
core, so a round in progress goes on over the new connection. The dispatcher steps
each event with the core that received it (``_pins``: the ``rtclient.reconnecting``
event marks where one connection's events end). The route of one tool result, from the
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
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol

from rtclient._secret import Secret, TokenProvider
from rtclient.core.lifecycle import Lifecycle, State
from rtclient.core.restore import RECONNECTING, Reconnect
from rtclient.effects import Dispatch, Effect, Later, Lost, Send, Settle, Start, Warn
from rtclient.errors import (
    APIConnectionError,
    ClosedError,
    ConnectionLostError,
    ConnectTimeoutError,
    ForkedProcessError,
    InternalServerError,
    RateLimitError,
    RealtimeError,
    ReconnectFailedError,
    ReconnectingError,
    SendRefusedError,
    SessionReplacedError,
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
from rtclient.transports.base import Transport, Written, when_written
from rtclient.transports.signaling import resolve_base_url

SEND_TIMEOUT = 10.0
# Failures a later reconnect attempt may not meet (the network, a busy or restarting
# server); any other (the call ended, the key refused, the config refused) ends it.
RETRYABLE = (
    APIConnectionError,
    ConnectTimeoutError,
    WaitTimeoutError,
    ConnectionLostError,
    InternalServerError,
    RateLimitError,
)


class Core(Protocol):
    """What the shell needs of a protocol core."""

    def receive(self, text: str | bytes | dict[str, Any]) -> list[Effect]: ...
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
    _reconnect: Reconnect | None = None  # set by a subclass that survives a lost connection

    def __init__(
        self,
        core: Core,
        catalog: Catalog,
        *,
        api_key: str | Callable[[], str] | None,
        base_url: str | None,
        executor: concurrent.futures.Executor | None,
        loop_thread: LoopThread | None,
        connect_timeout: float,
        close_timeout: float,
        bridge_size: int,
        on_audio: Callable[[Any], object] | None = None,
        send_guard: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        # Secret() strips whitespace around the key and refuses a key no API issues
        # (InvalidAPIKeyError, at construction); an all-whitespace key is no key. A
        # callable is a token provider (Entra): asked per connection, never here.
        if callable(api_key):
            self._key: Secret = TokenProvider(api_key)
        else:
            self._key = Secret(
                api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
            )
        if not callable(api_key) and not self._key:
            raise RealtimeError("no API key: pass api_key= or set OPENAI_API_KEY")
        self.base_url = resolve_base_url(base_url)
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
        self._send_guard = send_guard
        # The one lock close() takes: it guards the lifecycle and registers every waiter
        # (the one waiter rule: a waiter registered after close() fails at once). Never
        # held for I/O or while running user code.
        self._lock = threading.Lock()
        self._life = Lifecycle(self._lock)
        self._waiters = Waiters(self._lock)
        self._pid = os.getpid()
        self._transport: Any = None
        self._bridge: Bridge[tuple[int, dict[str, Any]]] | None = None
        # Created now, started by connect(): on() and events() work before connect().
        self._dispatcher = Dispatcher(
            catalog,
            self._lock,
            step=self._step_event,
            step_wants=self._step_wants,
            on_audio=on_audio,
        )
        self._connect_future: concurrent.futures.Future[Any] | None = None
        self._torn: set[str] = set()  # what _teardown has released already
        # Reconnects (see the module docstring). The generation of the connection whose
        # events count; the reconnect thread and what it waits on; the lost connections'
        # cores whose events the dispatcher still holds (with the event that ends them);
        # outputs held while a sideband re-attaches; the cores of earlier connections.
        self._gen = 0
        self._reconnecting = False
        self._reconnect_thread: threading.Thread | None = None
        self._reconnect_stop = threading.Event()
        self._reconnect_future: concurrent.futures.Future[Any] | None = None
        self._pins: deque[tuple[dict[str, Any], Core]] = deque()
        self._parked: list[tuple[Send, Core]] | None = None
        self._retired: list[Core] = []
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
        bridge: Bridge[tuple[int, dict[str, Any]]] = Bridge(
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
        """Release what exists, each part once: the reconnect thread (stopped and joined
        first: it builds nothing after that), connection, bridge, dispatcher, executor,
        loop. Safe to run again for what a late connect() built."""
        self._stop_reconnect(timeout)
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
            parked, self._parked = self._parked, None
            self._reconnecting = False
        self._reconnect_stop.set()
        self._core.close(error)
        self._waiters.fail_all(error)
        for send, core in parked or ():
            self._apply(core.sent(send, error), core)
        self._dispatcher.close(error)
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            try:
                loop_thread.call_soon(self._cancel_timers)
            except RealtimeError:
                pass  # the loop is stopping: its timers go with it

    def _on_connection_lost(self, error: BaseException) -> None:
        """The connection is gone (a transport's report, or the core's ``Lost``): end the
        session for callers - or, with ``_reconnect``, move to a new connection."""
        if self._reconnect is None or not isinstance(error, ConnectionLostError):
            logger.error("[CONNECTION] lost: {!r}", error)
            self._shut_down(error)
            return
        with self._lock:
            usable = self._life.state is State.OPEN and self._life.error is None
            attempt_lost = usable and self._reconnecting
            lost = self._core, self._waiters
            if usable:
                # The generation that counts moves on (an attempt's too: its waits fail
                # below and it is retried); new waiters take the old ones' place.
                self._gen += 1
            if usable and not attempt_lost:
                self._reconnecting = True
                self._waiters = Waiters(self._lock)
                if self._keeps_conversation():
                    self._parked = []
                self._reconnect_stop.clear()
                self._reconnect_thread = threading.Thread(
                    target=self._reconnect_run, name="rtclient-reconnect", daemon=True
                )
        if not usable:
            logger.error("[CONNECTION] lost: {!r}", error)
            self._shut_down(error)
        elif attempt_lost:
            logger.warning("[RECONNECT] the new connection was lost too: {!r}", error)
            lost[1].fail_all(error)
        else:
            self._reconnect_started(error, *lost)

    # -- reconnects -------------------------------------------------------------------------

    def _reconnect_started(
        self, error: BaseException, old_core: Core, old_waiters: Waiters
    ) -> None:
        """After the lock: fail the old connection's waiters, tell the app (the event
        that also ends the old core's pin), start the thread that reconnects."""
        logger.warning("[RECONNECT] connection lost ({!r}); reconnecting", error)
        replaced = SessionReplacedError(f"the connection was lost ({error}); reconnecting")
        marker = self._begin_replacement(old_core, replaced, error)
        old_waiters.fail_all(replaced)
        self._pins.append((marker, old_core))
        self._dispatcher.put(marker)
        with self._lock:
            # Started under the lock (a brief wait for the thread to exist): close()
            # either comes first and nothing starts, or finds it started and joins it.
            thread = self._reconnect_thread
            if thread is not None and not self._life.ending and self._life.error is None:
                thread.start()

    def _reconnect_run(self) -> None:
        """The reconnect thread: attempts with backoff until one restores, the policy
        gives up, or ``close()`` stops it."""
        policy = self._reconnect
        assert policy is not None
        draws = random.Random()
        last: BaseException = ConnectionLostError("the connection was lost")
        attempt = 0
        while attempt < policy.max_attempts:
            attempt += 1
            if self._reconnect_stop.wait(policy.delay(attempt, draws.random())):
                return  # close()
            try:
                self._reconnect_attempt(attempt)
            except BaseException as exc:
                if self._life.ending or self._life.error is not None:
                    return
                last = exc
                logger.warning("[RECONNECT] attempt {} failed: {!r}", attempt, exc)
                if not isinstance(exc, RETRYABLE):
                    break
                continue
            logger.info("[RECONNECT] reconnected after {} attempt(s)", attempt)
            return
        failure = ReconnectFailedError(
            f"could not reconnect after {attempt} attempt(s): {last}", attempts=attempt
        )
        failure.__cause__ = last
        logger.error("[RECONNECT] giving up: {}", failure)
        self._shut_down(failure)

    def _reconnect_attempt(self, attempt: int) -> None:
        """One attempt: retire the previous connection, build the next with a new core
        (published step by step, as ``_build`` does), wait until ready, restore."""
        loop_thread = self._loop_thread
        assert loop_thread is not None
        with self._lock:
            self._check_reconnecting()
            previous, self._transport = self._transport, None
            if self._keeps_conversation() and self._parked is None:
                self._parked = []  # a failed attempt's connection took the outputs
        if previous is not None:
            try:
                loop_thread.call(previous.close(hangup=True), timeout=self.close_timeout)
            except Exception as exc:
                logger.debug("[RECONNECT] closing the lost connection: {!r}", exc)
        with self._lock:
            self._check_reconnecting()
            self._gen += 1
            self._retired.append(self._core)
            self._core = self._next_core()
            self._waiters = Waiters(self._lock)
        transport = self._make_transport()
        with self._lock:
            self._check_reconnecting()
            self._transport = transport
            self._reconnect_future = future = loop_thread.submit(transport.connect())
        wait_for(future, self.connect_timeout + 1.0, "the new connection to open")
        deadline = time.monotonic() + self.connect_timeout
        self._when_open(deadline)
        event = self._after_reopen(attempt, deadline)
        with self._lock:
            self._check_reconnecting()
            self._dispatcher.put(event)  # before a next loss's rtclient.reconnecting
            self._reconnecting = False

    def _check_reconnecting(self) -> None:
        """Lock held: the attempt may go on (``close()`` or a give-up did not come)."""
        if self._life.ending or self._life.error is not None:
            raise self._life.error or ClosedError("the client was closed while reconnecting")

    def _stop_reconnect(self, timeout: float) -> None:
        """Wake, cancel and join the reconnect thread (before the teardown)."""
        self._reconnect_stop.set()
        with self._lock:
            thread, future = self._reconnect_thread, self._reconnect_future
        if future is not None:
            future.cancel()
        ours = thread is threading.current_thread()
        if thread is not None and thread.ident is not None and not ours:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("[RECONNECT] the reconnect thread did not stop within {}s", timeout)

    def _register_for(self, key: tuple[str, str], gen: int) -> concurrent.futures.Future[Any]:
        """``key``'s waiter, for what the connection of generation ``gen`` will answer
        (a round's follow-up, a cancelled response's done): if that connection has been
        replaced since, it fails at once with :class:`SessionReplacedError` instead of
        waiting on a new connection that will never answer it. (The check runs under
        the lock the replacement takes; raising there registers nothing.)"""

        def same_connection() -> None:
            if self._gen != gen:
                raise SessionReplacedError("the connection this waited on was replaced")

        return self._waiters.register(key, also=same_connection)

    def _flush_parked(self) -> int:
        """Send the outputs held while re-attaching (the reconnect thread, once the new
        connection is ready). Returns how many."""
        with self._lock:
            parked, self._parked = self._parked, None
        for send, core in parked or ():
            self._put(send, core)
        return len(parked or ())

    def _owner(self, core: Core) -> Core:
        """The core that handles ``core``'s outcomes now: the current one if ``core`` is
        it or is carried by it, else ``core`` itself (stale)."""
        current = self._core
        if core is current or self._carried(core):
            return current
        return core

    def _is_stale(self, core: Core) -> bool:
        return core is not self._core and not self._carried(core)

    # what a subclass that reconnects provides

    def _keeps_conversation(self) -> bool:
        """Whether a new connection continues the same conversation (a sideband)."""
        return False

    def _carried(self, core: Core) -> bool:
        """Whether the current core carries ``core``'s work on (the same tool runner)."""
        return False

    def _parks(self, send: Send) -> bool:
        """Whether ``send`` is held, while re-attaching, for the next connection."""
        return False

    def _next_core(self) -> Core:
        """A core for the next connection (called with the lock held: no I/O)."""
        raise NotImplementedError

    def _begin_replacement(
        self, old: Core, replaced: SessionReplacedError, error: BaseException
    ) -> dict[str, Any]:
        """The old core is done (detach it); return the ``rtclient.reconnecting`` event."""
        raise NotImplementedError

    def _after_reopen(self, attempt: int, deadline: float) -> dict[str, Any]:
        """The new connection is ready: restore; return the ``rtclient.reconnected`` event."""
        raise NotImplementedError

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
        if self._reconnecting and threading.current_thread() is not self._reconnect_thread:
            raise ReconnectingError(
                "the connection was lost and the client is reconnecting; try again after "
                "rtclient.reconnected"
            )

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

    def _on_message(self, text: str | bytes | dict[str, Any]) -> None:
        """The transport's handler (loop thread): one server message, in order."""
        self._apply(self._core.receive(text))

    def _transport_handlers(
        self,
    ) -> tuple[Callable[[str | bytes | dict[str, Any]], None], Callable[[BaseException], None]]:
        """``(on_message, on_closed)`` for a new transport, bound to this generation and
        core: once the connection is replaced, what it still reports is dropped."""
        return partial(self._on_message_of, self._gen, self._core), partial(
            self._on_closed_of, self._gen
        )

    def _on_message_of(self, gen: int, core: Core, text: str | bytes | dict[str, Any]) -> None:
        if gen == self._gen:
            self._apply(core.receive(text), core)

    def _on_closed_of(self, gen: int, error: BaseException) -> None:
        if gen == self._gen:
            self._on_connection_lost(error)

    def _step_wants(self, kind: str) -> bool:
        return kind == RECONNECTING or self._core.step_wants(kind)

    def _step_event(self, event: dict[str, Any]) -> None:
        """The dispatcher's step: each event with the core that received it."""
        pins = self._pins
        if pins and event is pins[0][0]:
            pins.popleft()  # the lost connection's events end here
            return
        if event["type"] == RECONNECTING:
            return
        core = pins[0][1] if pins else self._core
        self._apply(core.step(event), core)

    def _apply(self, effects: Iterable[Effect], core: Core | None = None) -> None:
        """Carry out a core's effects, in order, holding no lock. ``core``: the core
        that produced them (default: the current one)."""
        owner = self._core if core is None else core
        if core is not None and self._is_stale(core):
            self._apply_stale(core, effects)
            return
        for fx in effects:
            if isinstance(fx, Send):
                self._put(fx, owner)
            elif isinstance(fx, Settle):
                self._waiters.settle(fx.key, fx.outcome, keep=fx.keep)
            elif isinstance(fx, Dispatch):
                if self._dispatcher.wants(fx.event["type"]):
                    self._dispatcher.put(fx.event)
            elif isinstance(fx, Start):
                self._start(fx, owner)
            elif isinstance(fx, Later):
                self._later(fx, owner)
            elif isinstance(fx, Lost):
                self._on_connection_lost(fx.error)
            elif isinstance(fx, Warn):
                fx.issue()  # last of its batch: a warning filtered to "error" raises here

    def _apply_stale(self, core: Core, effects: Iterable[Effect]) -> None:
        """A lost own session's core: nothing of it is done any more. Its sends fail back
        to it and its tools are not started (their rounds end undelivered); its
        settlements went with its waiters; its timers and events are dropped."""
        replaced = SessionReplacedError("the connection this work was for was replaced")
        for fx in effects:
            if isinstance(fx, Send) and fx.report:
                self._apply(core.sent(fx, replaced), core)
            elif isinstance(fx, Start):
                self._apply(core.finished(fx, None, replaced), core)
            elif isinstance(fx, Warn):
                fx.issue()

    def _put(self, send: Send, core: Core | None = None) -> None:
        """Hand ``send`` to the bridge without waiting; its outcome goes to the core."""
        owner = self._core if core is None else core
        try:
            error = self._life.error
            if error is not None:
                raise ClosedError(f"the client is closed: {error}")
            if self._parked is not None and self._parks(send):
                with self._lock:
                    if self._parked is not None:  # held for the re-attached connection
                        self._parked.append((send, owner))
                        return
            bridge = self._bridge
            if bridge is None:
                raise ClosedError("not connected")
            future = bridge.put((self._gen, send.event))
        except RealtimeError as exc:  # not even queued (closed, full)
            if send.report:
                target = self._owner(owner)
                self._apply(target.sent(send, exc), target)
            return
        if send.written:
            future = when_written(future)  # the write itself, not the hand-off
        if send.report:
            future.add_done_callback(partial(self._sent, send, owner))

    def _sent(self, send: Send, core: Core, future: concurrent.futures.Future[Any]) -> None:
        error = future.exception()
        lost = isinstance(error, ConnectionLostError)
        if lost and self._parked is not None and self._parks(send):
            with self._lock:  # not written: held for the re-attached connection
                if self._parked is not None:
                    self._parked.append((send, core))
                    return
        target = self._owner(core)
        self._apply(target.sent(send, error), target)

    def _start(self, start: Start, core: Core | None = None) -> None:
        owner = self._core if core is None else core
        try:
            future = self._executor.submit(start.fn, *start.args, **start.kwargs)
        except Exception as exc:
            target = self._owner(owner)
            self._apply(target.finished(start, None, exc), target)
            return
        future.add_done_callback(partial(self._tool_finished, start, owner))

    def _tool_finished(self, start: Start, core: Core, future: Any) -> None:
        target = self._owner(core)
        self._apply(target.finished(start, future, None), target)

    def _later(self, later: Later, core: Core | None = None) -> None:
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.running:
            try:
                owner = self._core if core is None else core
                loop_thread.call_soon(self._arm_timer, loop_thread, later, owner)
            except RealtimeError:
                pass  # the loop is stopping: nothing is left to time

    def _arm_timer(self, loop_thread: LoopThread, later: Later, core: Core) -> None:
        """Loop thread. The handle is kept so that the session's end cancels its timers:
        a pending timer holds the session (the confirm watchdog's for up to
        ``confirm_timeout``), and a closed session has nothing left to time."""
        if self._life.error is None:
            handle = loop_thread.loop.call_later(later.delay, self._fire_timer, later, core)
            self._timers[later] = handle

    def _cancel_timers(self) -> None:
        """Loop thread, after the session ended (queued after every ``_arm_timer``)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire_timer(self, later: Later, core: Core) -> None:
        self._timers.pop(later, None)
        target = self._owner(core)
        self._apply(target.timer(later), target)

    def _write(self, item: tuple[int, dict[str, Any]]) -> Written | None:
        """The bridge's handler: runs on the loop thread, the only thread touching the
        connection. On return the connection has taken the event, in order (a WebSocket
        returns the future of the write itself: ``Send.written`` waits for it); nothing
        that can raise may follow (the outcome is what the core counts and rolls back
        on). An event put for a connection since replaced is refused: it never reaches
        the next one."""
        gen, event = item
        if gen != self._gen:
            raise SessionReplacedError(
                f"{event.get('type')} was for a connection that was replaced; not sent"
            )
        transport = self._transport
        if transport is None:
            raise ClosedError("not connected")
        if self._send_guard is not None:  # the last moment before the write
            try:
                self._send_guard(event)
            except Exception as exc:
                raise SendRefusedError(f"{event.get('type')} refused: {exc}") from exc
        written: Written | None = transport.send(event)
        self._core.written(event)  # counters only: cannot raise
        return written

    def _send(self, event: dict[str, Any], timeout: float = SEND_TIMEOUT) -> None:
        """Put an event on the bridge and wait for the outcome of the actual send."""
        self._check_open()
        assert self._bridge is not None
        item = (self._gen, event)
        wait_for(self._bridge.put(item), timeout, f"the send of {event.get('type')}")

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
