"""The dispatcher: one session's user-facing work, in arrival order, off the loop thread.

The loop thread hands it the events something reads (:meth:`Dispatcher.wants`); it
runs, per event: the session's own dispatcher-side step first (the tools: starting a
tool is kept off the loop thread), then the ``on()`` callbacks and the ``events()``
iterators. User code never runs on the loop thread, so a slow callback cannot stall
audio or the data channel; a callback that raises is logged and the next one runs.

The work runs on the threads of the loop thread's :class:`~rtclient.runtime.pool.DispatchPool`,
shared by every client of that loop thread, in this session's own lane: its events in
order, one at a time; a callback of this session that blocks parks this lane only.
"The dispatcher thread" of a session (:meth:`Dispatcher.in_thread`) is whichever pool
thread is running this session's work at that moment.

Events reach typed subscribers as their ``openai`` models - parsed once per event and
shared - or as the dict when no model describes them (logged once per type, counted in
``untyped_events``). Which models: a :class:`Catalog`, one per API. The cheap part of
the parse, the pre-check that makes a valid event's model without validating it yet,
runs on the loop thread as the event is handed over (:meth:`Dispatcher.put`): the pool's
threads are shared by every client of the loop thread and run user callbacks, so what
they do per event is kept to handing the model out.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from rtclient.errors import ClosedError, EventValidationError
from rtclient.logs import logger
from rtclient.runtime.pool import DispatchPool, Lane

_T = TypeVar("_T")
_STOP = object()
_WARNED_TYPES_MAX = 256


@dataclasses.dataclass(frozen=True)
class Catalog:
    """An API's server events as users see them: the names ``on()`` accepts, the ones
    with no model (always dicts), and how to parse one."""

    api: str  # "realtime", "live": named in messages
    types: frozenset[str]
    raw_only: frozenset[str]
    prepare: Callable[[Iterable[str]], None]  # import/compile the models of these types
    to_model: Callable[[Mapping[str, Any]], Any]  # LookupError: no model for this type
    close_matches: Callable[[str], list[str]]
    # event type -> its pre-check: the event's model if the check passes it, else None
    # (then to_model decides, on the dispatcher). Only prepared types are in it; cheap,
    # never imports: the loop thread calls them.
    checks: Mapping[str, Callable[[Mapping[str, Any]], Any]] = dataclasses.field(
        default_factory=dict
    )

    def check(self, event_type: str) -> None:
        """``ValueError`` naming the close matches if ``event_type`` is not one of ours."""
        if event_type != "*" and event_type not in self.types:
            matches = self.close_matches(event_type)
            hint = f"; did you mean {' or '.join(map(repr, matches))}?" if matches else ""
            raise ValueError(f"{event_type!r} is not a server event type{hint}")

    def model(self, event: Mapping[str, Any]) -> Any:
        """``event`` as its model, or :class:`EventValidationError`."""
        try:
            return self.to_model(event)
        except LookupError as exc:
            raise EventValidationError(str(exc), event=dict(event)) from None
        except ValueError as exc:  # pydantic.ValidationError
            raise EventValidationError(
                f"{event.get('type')} does not validate against its openai model: "
                f"{validation_summary(exc)}",
                event=dict(event),
            ) from exc


@dataclasses.dataclass(frozen=True, eq=False)
class _Subscription:
    callback: Callable[[Any], object]
    raw: bool


class Dispatcher:
    """The subscriptions, the open streams and the lane of one session.

    ``lock`` is the session's lock (the one ``close()`` takes): a stream opened after
    :meth:`close` fails at once (the one waiter rule). ``step(event)`` runs first for
    every event, on the dispatcher; ``on_audio(frame)`` gets audio frames.
    """

    def __init__(
        self,
        catalog: Catalog,
        lock: threading.Lock,
        *,
        step: Callable[[dict[str, Any]], None] | None = None,
        step_wants: Callable[[str], bool] = lambda kind: False,
        on_audio: Callable[[Any], object] | None = None,
    ) -> None:
        self.catalog = catalog
        self._lock = lock
        self._step = step
        self._step_wants = step_wants
        self._on_audio = on_audio
        self._pool: DispatchPool | None = None
        self._lane: Lane | None = None
        self._stopped = threading.Event()  # the lane ran its stop: nothing more will run
        self._subscribers: dict[str, list[_Subscription]] = {}
        self._streams: set[EventStream[Any]] = set()
        # The event types a typed reader wants ("*": all), kept with the subscriptions
        # under the lock; the loop thread reads it without (see item()).
        self._typed: frozenset[str] = frozenset()
        self._closed: BaseException | None = None
        self._warned: set[str] = set()  # event types a typed subscriber got as dicts
        self.untyped_events = 0

    # -- the session's side ------------------------------------------------------------

    def start(self, pool: DispatchPool) -> Dispatcher:
        """Serve this session on ``pool`` from now on (not after :meth:`close`)."""
        with self._lock:
            if self._lane is not None:
                raise RuntimeError("the dispatcher was already started")
            if self._closed is None:  # else close() came first: nothing to serve
                self._pool, self._lane = pool, pool.lane(self._handle)
        return self

    def in_thread(self) -> bool:
        """Whether the calling thread is running this session's dispatcher work now."""
        lane = self._lane
        return lane is not None and lane.in_thread()

    def wants(self, kind: str) -> bool:
        """Hand an event over only if something here reads it.

        The hand-off is the loop thread's largest per-event cost once a process holds
        hundreds of sessions (waking one of a thousand threads costs 4-85 us where one
        costs 0.2 us, bench/README "A thread per client"); audio and text deltas nobody
        subscribed to need not pay it. Read without the lock: a subscription made while
        an event arrives may miss that event, as one made a moment later would.
        """
        if self._step_wants(kind):
            return True
        subscribers = self._subscribers
        return bool(self._streams or subscribers.get(kind) or subscribers.get("*"))

    def put(self, event: dict[str, Any]) -> None:
        lane = self._lane
        if lane is not None:
            lane.put(self.item(event))

    def item(self, event: dict[str, Any]) -> Any:
        """What the lane carries for ``event`` (on the loop thread): the event with its
        model when a typed reader wants the type and the pre-check passes it, else the
        event (the dispatcher then parses it, as for a reader that subscribed since)."""
        typed = self._typed
        kind = event["type"]
        if typed and (kind in typed or "*" in typed):
            check = self.catalog.checks.get(kind)
            if check is not None:
                try:
                    model = check(event)
                except Exception:  # never on the loop thread: the dispatcher parses it
                    model = None
                if model is not None:
                    return (event, model)
        return event

    def put_audio(self, frame: Any) -> None:
        lane = self._lane
        if lane is not None:
            lane.put(("audio", frame))

    def close(self, error: BaseException) -> None:
        """No new stream from now on; open streams end; the lane ends after what is
        queued. Idempotent."""
        with self._lock:
            if self._closed is None:
                self._closed = error
            streams = list(self._streams)
            lane = self._lane
        for stream in streams:
            stream.put(_STOP)
        if lane is not None:
            lane.put(_STOP)
        else:
            self._stopped.set()  # never started: nothing runs

    def join(self, timeout: float) -> None:
        """Wait (bounded) until the lane has run its stop - and, if this was the last
        session of its pool, until the pool's threads have ended."""
        if self._lane is None or self.in_thread():
            return
        deadline = time.monotonic() + timeout
        if self._stopped.wait(timeout) and self._pool is not None:
            self._pool.join_retired(max(0.0, deadline - time.monotonic()))

    # -- the user's side ---------------------------------------------------------------

    def subscribe(
        self, event_type: str, callback: Callable[[Any], object], raw: bool
    ) -> Callable[[], None]:
        """Call ``callback`` for each event of ``event_type`` (``"*"``: all); returns the
        function that unsubscribes. ``ValueError`` for a name that is not an event type."""
        self.catalog.check(event_type)
        if event_type in self.catalog.raw_only:
            raw = True  # no model: the dict, and nothing to parse (or import) for it
        if not raw:
            self.catalog.prepare([event_type])
        subscription = _Subscription(callback, raw)
        with self._lock:
            self._subscribers.setdefault(event_type, []).append(subscription)
            self._retype()

        def unsubscribe() -> None:
            with self._lock:
                subscriptions = self._subscribers.get(event_type, [])
                if subscription in subscriptions:
                    subscriptions.remove(subscription)
                    self._retype()

        return unsubscribe

    def stream(
        self, timeout: float | None, raw: bool, may_block: Callable[[str, bool], None]
    ) -> EventStream[Any]:
        """An iterator over events from now on (:class:`ClosedError` once closed)."""
        if not raw:
            with self._lock:
                closed = self._closed
            if closed is not None:
                raise ClosedError(f"the client is closed: {closed}") from closed
            self.catalog.prepare(["*"])
        stream: EventStream[Any] = EventStream(self, timeout, raw, may_block)
        with self._lock:
            closed = self._closed
            if closed is None:
                self._streams.add(stream)
                self._retype()
                return stream
        raise ClosedError(f"the client is closed: {closed}") from closed

    def _unregister(self, stream: EventStream[Any]) -> None:
        with self._lock:
            self._streams.discard(stream)
            self._retype()

    def _retype(self) -> None:
        """Recompute :attr:`_typed` (under the lock)."""
        typed = {kind for kind, subs in self._subscribers.items() if any(not s.raw for s in subs)}
        if any(not stream.raw for stream in self._streams):
            typed.add("*")
        self._typed = frozenset(typed)

    # -- on the pool's thread ------------------------------------------------------------

    def _handle(self, item: Any) -> None:
        """One item of this session's lane (a pool thread; never raises): an event, an
        ``(event, model)`` pair (:meth:`item`), an ``("audio", frame)`` pair or the stop."""
        kind = type(item)
        if kind is dict:
            self._dispatch(item)
        elif kind is tuple and type(item[0]) is dict:
            self._dispatch(item[0], item[1])
        elif item is _STOP:
            assert self._lane is not None
            self._lane.finish()  # what is still queued is dropped
            with self._lock:
                streams = list(self._streams)
            for stream in streams:
                stream.put(_STOP)
            self._stopped.set()
        elif kind is tuple:
            if self._on_audio is not None:
                guard(self._on_audio, item[1])
        else:
            self._dispatch(item)

    def _dispatch(self, event: dict[str, Any], model: Any = None) -> None:
        """``model``: the event's model, made on the loop thread (None: not made)."""
        kind = event["type"]
        if self._step is not None and self._step_wants(kind):
            guard(self._step, event)  # a malformed event must not end dispatch
        with self._lock:
            subscriptions = [*self._subscribers.get(kind, ()), *self._subscribers.get("*", ())]
            streams = list(self._streams)
            typed_kinds = self._typed
        typed: Any = event
        if kind in typed_kinds or "*" in typed_kinds:  # once per event, shared
            typed = model if model is not None else self._typed_or_raw(event)
        for subscription in subscriptions:
            guard(subscription.callback, event if subscription.raw else typed)
        for stream in streams:
            stream.put(event if stream.raw else typed)

    def _typed_or_raw(self, event: dict[str, Any]) -> Any:
        """The event's ``openai`` model, or the dict itself (logged once per type)."""
        try:
            return self.catalog.to_model(event)
        except LookupError:
            known = event["type"] in self.catalog.types
            reason = "an old beta name, no GA model" if known else "a type openai does not know"
        except Exception as exc:  # pydantic's ValidationError, or whatever a model raises
            reason = f"its model rejects it ({validation_summary(exc)})"
        self.untyped_events += 1
        kind = event["type"]
        if kind not in self._warned and len(self._warned) < _WARNED_TYPES_MAX:
            self._warned.add(kind)
            logger.warning(
                "[SERVER_EVENT] {} reaches typed subscribers as a dict: {} (once per type)",
                kind,
                reason,
            )
        return event


class EventStream(Iterator[_T], Generic[_T]):
    """A blocking iterator over server events from the moment it was created: the
    ``openai`` models (or the dict of an event no model describes, as for ``"*"``
    callbacks), or the raw dicts if it was opened with ``raw=True``.

    Iteration ends when no event arrives within ``timeout`` or when the client closes.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        timeout: float | None,
        raw: bool,
        may_block: Callable[[str, bool], None],
    ) -> None:
        self._dispatcher = dispatcher
        self._timeout = timeout
        self.raw = raw
        self._may_block = may_block
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def __next__(self) -> _T:
        self._may_block("iterating events()", True)
        try:
            item = self._queue.get(timeout=self._timeout)
        except queue.Empty:
            item = _STOP
        if item is _STOP:
            self.close()
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._dispatcher._unregister(self)


def validation_summary(exc: BaseException) -> str:
    """The first of a pydantic ``ValidationError``'s errors, on one line."""
    errors = getattr(exc, "errors", None)
    try:
        found = errors() if callable(errors) else []
    except Exception:
        found = []
    if not found:
        return f"{type(exc).__name__}: {exc}"
    first = found[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def guard(callback: Callable[[Any], object], arg: Any) -> None:
    """Run a user callback; what it raises is logged, never propagated."""
    try:
        callback(arg)
    except Exception:
        logger.exception("[CALLBACK] {} raised", getattr(callback, "__name__", callback))
