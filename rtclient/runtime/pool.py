"""The dispatch pool: a few threads run the callbacks of every client of a loop thread.

Each client has a :class:`Lane`: its own first-in first-out queue of work for the
dispatcher (its ``on()`` callbacks, ``events()`` iterators, the tools' step, audio
frames). The lanes of every client that shares a :class:`~rtclient.runtime.loop.LoopThread`
are served by one :class:`DispatchPool`, so a process holding ten thousand sessions has a
handful of dispatcher threads, not ten thousand: waking one of a thousand threads per
event was the largest cost per event of a thread per client (bench/README.md, "A thread
per client"), and each idle one cost 16 KB.

Rules, and why:

* **One worker per lane at a time** (each client's callbacks keep their order). Lanes
  with work wait in one round-robin queue; a worker takes a lane, runs up to
  :data:`BATCH` of its items and puts it back at the end if more arrived. A lane is
  never queued twice, nor queued while it is being served.
* **A slow callback parks only its own lane.** The other lanes are served by the other
  workers (:data:`WORKERS`, started as work needs them). A worker inside one item for
  more than :data:`STALL` seconds is *stuck* and does not count: if lanes wait and
  fewer than :data:`WORKERS` workers are not stuck, the pool starts one more (a
  *spill*, logged; up to :data:`MAX_WORKERS`), which stays while the stuck one is
  stuck and ends once it finds nothing to do with :data:`WORKERS` others serving. So
  a stuck callback delays the other clients' callbacks by about :data:`STALL` once,
  not without bound. Who notices: a put that finds no idle worker, or else a timer on
  the loop, armed only while lanes wait and no worker is idle - an idle pool costs
  nothing, a busy one a timer every :data:`STALL` seconds.
* **Workers live while lanes do.** When the last lane finishes the workers end (a pool
  with no clients has no threads); :meth:`DispatchPool.join_retired` lets the last
  client's ``close()`` wait for them, so nothing it started is left running.
* The pool's lock is held only to move items and lanes, never while a callback runs.
  Lock order: a session's lock may be held when the pool's is taken, never the reverse.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from rtclient.errors import RealtimeError
from rtclient.logs import logger
from rtclient.runtime.loop import LoopThread

WORKERS = 2  # workers started as work needs them; one stuck lane leaves the other free
STALL = 0.25  # s inside one item after which a worker counts as stuck
MAX_WORKERS = 64  # a bound on spills: that many callbacks stuck at once is an app bug
BATCH = 32  # items of one lane per turn, then the next lane's turn
NAME = "rtclient-dispatcher"

_serving = threading.local()  # .lane: the lane this worker thread is serving now
_pools: weakref.WeakKeyDictionary[LoopThread, DispatchPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def dispatch_pool(loop_thread: LoopThread) -> DispatchPool:
    """The pool that serves the clients of ``loop_thread`` (made on first use)."""
    with _pools_lock:
        pool = _pools.get(loop_thread)
        if pool is None:
            pool = _pools[loop_thread] = DispatchPool(loop_thread)
        return pool


class Lane:
    """One client's queue in a pool. ``handler(item)`` runs each item on a worker and
    must not raise (the dispatcher guards every callback); after :meth:`finish` (from
    the handler) the lane takes nothing more and drops what it still holds."""

    __slots__ = ("_finished", "_handler", "_items", "_pool", "_scheduled")

    def __init__(self, pool: DispatchPool, handler: Callable[[Any], None]) -> None:
        self._pool = pool
        self._handler = handler
        self._items: deque[Any] = deque()
        self._scheduled = False  # in the ready queue, or being served
        self._finished = False

    def put(self, item: Any) -> None:
        """Queue ``item`` (any thread; never blocks)."""
        self._pool._put(self, item)

    def finish(self) -> None:
        self._pool._finish(self)

    def in_thread(self) -> bool:
        """Whether the calling thread is a worker running this lane's item now."""
        return getattr(_serving, "lane", None) is self


class _Worker:
    __slots__ = ("busy_since", "retired", "spill", "thread")

    def __init__(self) -> None:
        self.busy_since: float | None = None  # monotonic start of the item it runs
        self.retired = False
        self.spill: tuple[int, int] | None = None  # (workers, lanes waiting) if a spill
        self.thread: threading.Thread | None = None


class DispatchPool:
    """The worker threads serving the lanes of one loop thread's clients (see the
    module docstring). ``loop_thread`` carries the stall check's timer."""

    def __init__(
        self,
        loop_thread: LoopThread,
        *,
        workers: int | None = None,
        stall: float | None = None,
        max_workers: int | None = None,
    ) -> None:
        self._loop_thread = weakref.ref(loop_thread)
        # read at construction, so a bench can set the module's values first
        self.size = workers if workers is not None else WORKERS
        self.stall = stall if stall is not None else STALL
        self.max_workers = max(self.size, max_workers if max_workers is not None else MAX_WORKERS)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready: deque[Lane] = deque()
        self._workers: set[_Worker] = set()
        self._retired: list[threading.Thread] = []  # ended or ending, for join_retired
        self._idle = 0  # workers waiting for work
        self._lanes = 0  # lanes attached and not finished
        self._check_armed = False
        self._capped = False  # MAX_WORKERS reached (logged once)
        self.spills = 0

    def __repr__(self) -> str:
        return (
            f"<DispatchPool workers={len(self._workers)} idle={self._idle} "
            f"lanes={self._lanes} ready={len(self._ready)}>"
        )

    @property
    def threads(self) -> int:
        return len(self._workers)

    def lane(self, handler: Callable[[Any], None]) -> Lane:
        """A new lane, served until its handler calls :meth:`Lane.finish`."""
        with self._lock:
            self._lanes += 1
        return Lane(self, handler)

    def join_retired(self, timeout: float) -> None:
        """Wait (bounded) for the workers that ended because no lane was left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in self._retired if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._retired = [t for t in self._retired if t.is_alive()]

    # -- the lanes' side ---------------------------------------------------------------

    def _put(self, lane: Lane, item: Any) -> None:
        start: _Worker | None = None
        arm = False
        with self._lock:
            if lane._finished:
                return
            lane._items.append(item)
            if lane._scheduled:
                return
            lane._scheduled = True
            self._ready.append(lane)
            if self._idle:
                self._idle -= 1
                self._wake.notify()
                return
            if self._serving(time.monotonic()) < self.size:
                start = self._add_worker()  # None at max_workers: the check logs it
            if start is None and not self._check_armed:
                self._check_armed = arm = True
        if start is not None:
            self._start(start)
        if arm:
            self._arm(self.stall)

    def _finish(self, lane: Lane) -> None:
        with self._lock:
            if lane._finished:
                return
            lane._finished = True
            lane._items.clear()
            self._lanes -= 1
            if self._lanes == 0:  # nobody left to serve: every worker ends
                for worker in self._workers:
                    worker.retired = True
                    if worker.thread is not None:
                        self._retired.append(worker.thread)
                self._workers.clear()
                self._idle = 0
                self._wake.notify_all()

    # -- the workers -------------------------------------------------------------------

    def _serving(self, now: float) -> int:
        """Under the lock: the workers not stuck - idle, between items, or in one item
        for less than ``stall``. A stuck worker does not count towards ``size``: while
        it is stuck another serves in its place (and stays until it is back)."""
        stall = self.stall
        return sum(w.busy_since is None or now - w.busy_since < stall for w in self._workers)

    def _add_worker(self) -> _Worker | None:
        """Under the lock: reserve a worker (started after the lock is released); one
        beyond ``size`` is a spill, logged. None at ``max_workers``."""
        count = len(self._workers)
        if count >= self.max_workers:
            return None
        worker = _Worker()
        self._workers.add(worker)
        if count >= self.size:
            self.spills += 1
            worker.spill = (count + 1, len(self._ready))
        return worker

    def _start(self, worker: _Worker) -> None:
        if worker.spill is not None:
            logger.warning(
                "[DISPATCH] a dispatcher thread has run one callback for over {}s while "
                "{} clients wait: started another ({} now); a callback that blocks holds "
                "a thread - hand long work to an executor",
                self.stall,
                worker.spill[1],
                worker.spill[0],
            )
        thread = threading.Thread(target=self._work, args=(worker,), name=NAME, daemon=True)
        worker.thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # can't start new thread: the others carry on
            logger.error("[DISPATCH] could not start a dispatcher thread: {!r}", exc)
            with self._lock:
                self._workers.discard(worker)

    def _work(self, me: _Worker) -> None:
        while True:
            arm = False
            with self._lock:
                while True:
                    if me.retired:
                        return
                    if self._ready:
                        break
                    if self._serving(time.monotonic()) > self.size:  # a spill not needed
                        self._workers.discard(me)
                        self._retired.append(threading.current_thread())
                        return
                    self._idle += 1  # whoever wakes us takes it back (exact count)
                    self._wake.wait()
                lane = self._ready.popleft()
                items = lane._items
                batch = [items.popleft() for _ in range(min(BATCH, len(items)))]
                if self._ready and not self._idle and not self._check_armed:
                    self._check_armed = arm = True  # lanes wait and nobody is free
            if arm:
                self._arm(self.stall)
            _serving.lane = lane
            try:
                for item in batch:
                    if lane._finished:
                        break
                    me.busy_since = time.monotonic()
                    try:
                        lane._handler(item)
                    except Exception:  # the handler guards callbacks; this is a bug
                        logger.exception("[DISPATCH] a lane's handler raised")
            finally:
                me.busy_since = None
                _serving.lane = None
            with self._lock:
                if lane._items and not lane._finished:
                    self._ready.append(lane)  # its next turn, after the others'
                else:
                    lane._scheduled = False

    # -- the stall check (a timer on the loop) -----------------------------------------

    def _arm(self, delay: float) -> None:
        loop_thread = self._loop_thread()
        try:
            if loop_thread is None:
                raise RealtimeError("the loop thread is gone")
            loop_thread.call_soon(loop_thread.loop.call_later, delay, self._check)
        except RealtimeError:  # the loop is stopping: its clients are closing
            with self._lock:
                self._check_armed = False

    def _check(self) -> None:
        """Loop thread: lanes wait and no worker is idle - is one stuck?"""
        spill: _Worker | None = None
        capped = False
        now = time.monotonic()
        with self._lock:
            self._check_armed = False
            if not self._ready or self._idle:
                return  # a worker will take them
            if self._serving(now) < self.size:
                spill = self._add_worker()
                if spill is None:
                    capped, self._capped = not self._capped, True
                delay = self.stall
            else:  # look again when the next item in progress would count as stuck
                busy = [
                    w.busy_since
                    for w in self._workers
                    if w.busy_since is not None and now - w.busy_since < self.stall
                ]
                delay = max(0.01, min(busy) + self.stall - now) if busy else self.stall
            self._check_armed = True
            workers, waiting = len(self._workers), len(self._ready)
        if spill is not None:
            self._start(spill)
        elif capped:
            logger.error(
                "[DISPATCH] all {} dispatcher threads are stuck in callbacks; {} clients wait",
                workers,
                waiting,
            )
        self._arm(delay)
