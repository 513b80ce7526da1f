"""Calls across worker processes: a registry of live calls in Redis, with failover.

The app runs as several worker processes (gunicorn ``-w 3``). Any worker may create a
call; the call's **sideband** lives in exactly one of them at a time, the *holder*; any
worker can hang a call up; and when the holder dies (``SIGKILL``, OOM, a lost machine),
is cut off from Redis or stalls, another worker re-attaches a sideband to the call
while the browser keeps talking - and the two never both answer it (*fencing*, below).
A call made elsewhere - a phone call the webhook route accepted - joins the registry
with :meth:`CallRegistry.adopt_call` and fails over the same way.
Only rtclient's public API is used: ``create_call``, ``hangup_call``,
``RealtimeClient(call_id=..., send_guard=...)``, ``on(..., raw=True)``, ``get_item``,
``submit_tool_output`` and ``request_response``.

Why Redis: ownership is a **lease** - claimed atomically with a Lua script (the key set
only if absent, ``PX ttl``), renewed by the holder, and if the holder dies the key
simply expires; no coordinator, no clean-up of a dead worker's rows. PostgreSQL could
do the same with advisory locks or ``SELECT ... FOR UPDATE SKIP LOCKED`` plus heartbeat
timestamps, but expiry would be ours to implement; Redis has it built in.

Keys (``rt`` is the ``prefix``)::

    rt:calls                  SET   the live call ids
    rt:call:<id>              HASH  caller (the browser session that created it: an
                                    opaque id, never the session cookie; a phone
                                    call's: "phone:<id>"), created_by,
                                    created_at, owner, owner_pid, epoch
                                    (the fencing token: bumped by every claim),
                                    confirms (how many times a holder confirmed its
                                    lease), claimed_at, attached_at, seen_at (the
                                    holder's last sign of life: its claim, attach or
                                    latest confirmation, or its detach if it released
                                    the lease), released_at/released_by (a lease let
                                    go, not expired), last_item (the newest
                                    conversation item the holder saw), previous_owner,
                                    failovers, ended_at
    rt:call:<id>:owner        STR   the lease: "<epoch>:<worker>#<nonce>", PX =
                                    lease_ttl; renewed by its holder every ``tick``
    rt:call:<id>:tools        HASH  tool call_id -> JSON {name, item_id, response_id,
                                    arguments, state: added|arguments|answered,
                                    started_at, epoch (who recorded it), sent_epoch,
                                    sent_at, sent_event (write-ahead: an output left
                                    under that epoch), answered_at, by,
                                    answered_epoch, recovered, recovered_epoch}
    rt:call:<id>:rounds       HASH  response_id -> JSON {calls, names, done, epoch,
                                    create, create_epoch, create_at (write-ahead: the
                                    follow-up create that left), followed, by,
                                    followed_epoch}
    rt:caller:<caller>        ZSET  that session's calls (score +inf) and calls being
                                    created (score: when the reservation lapses)
    rt:workers                HASH  worker id -> JSON {pid, started_at, seen_at, held,
                                    calls, fenced, refused}
    rt:reports                LIST  JSON reports (newest first, the last 1000)

Every record is written by merging (one Lua script, ``calls_fence.MERGE``): a state
only advances (added < arguments < answered), lists grow, other fields keep their
first value - so a stale holder's late write never undoes a newer holder's.

Whose call it is. A call belongs to the browser session that created it: the app
passes that session's ``caller`` id to ``start_call``, the registry stores it with the
call, and every per-call route asks ``caller_of(call_id)`` - the same answer in every
worker. ``start_call`` refuses (returns None) once a caller has
``max_calls_per_caller`` live calls: the count and the reservation of a place are one
Lua script, so two requests at once cannot both take the last place, and a call that
ended (whoever ended it) frees its place.

Who does what. Every worker runs one ``<name>-registry`` thread that, every ``tick``
(``lease_ttl / 4``): fences the holders past their deadline; renews the leases it
holds (compare-and-``PEXPIRE``: a lease found taken fences its holder); lets go of
calls whose sideband closed (the call ended, or the connection dropped: the next scan
re-attaches if the call is still up); and **scans** ``rt:calls`` for calls with no
lease, claims each (one Lua script: only if the call is still live; bumps ``epoch``)
and attaches a sideband on its attach pool. No Redis command is retried and each
waits at most ``min(1 s, tick)``: the thread tries again next tick. A worker that
shuts down (``close()``, run at exit: a deploy, a gunicorn restart) claims nothing
more, lets its tool rounds in progress finish (``drain_timeout``), then detaches and
*releases* its leases: its calls move at the next scan, with nothing run twice.

**Fencing** (``calls_fence.py`` has the mechanism). A holder cut off from Redis (its
process alive, its sideband up) or paused past its lease (SIGSTOP, a long GC pause)
must not go on answering next to its successor. So:

* *The deadline.* A holder trusts its lease for ``fence_after`` = D (default 0.75 x
  TTL) after sending the last confirmation that succeeded (its claim, a renewal, a
  write-ahead), by its own monotonic clock. Its sideband's ``send_guard`` checks that
  deadline on the loop thread right before every event is written - so also the first
  send after waking from a pause - and past it refuses everything, for good; the
  holder detaches (the guard or the registry thread, whichever notices first) and
  releases the lease if it is still its own.
* *The drift bound.* ``clock_drift`` = rho (default 1%) bounds how much two clocks may
  disagree on a length of time. D(1+rho) < TTL(1-rho) is enforced: Redis expires the
  lease only after the holder has fenced itself, in real time.
* *The takeover wait.* A successor does not rely on Redis's clock alone: it attaches
  only once the previous holder's last confirmation is at least D(1+rho)/(1-rho) old
  *by its own clock* - measured from the first scan that saw the lease's ``confirms``
  count at its final value (that confirmation was sent before). The lease takes TTL to
  expire and the scan sees each count within a tick, so the wait W is normally 0: at
  most D(1+rho)/(1-rho) - (TTL - tick) = 0.03 s with a 2 s TTL, plus any lateness of
  the scans. It is skipped when the lease was released (its holder had detached
  first) or last held by this worker.
* *Write-ahead, fenced by Redis.* A tool output or a create leaves only after a script
  has checked that the lease still holds this holder's token and recorded it
  (``sent_epoch`` on the call, refused if it was answered or sent under another
  epoch; ``create`` on each complete round it follows). A holder that cannot reach
  Redis sends nothing. A successor never re-sends what was recorded as sent, even if
  nobody saw its echo.
* *The fencing token* is the epoch: the lease's value starts with it, and every record
  names the epoch that wrote it.

The takeover bound, from a fault to the successor's sideband ready: at most
``TTL + tick + W + attach`` (the lease outlives the holder's last confirmation by TTL,
the scan finds it within a tick, the takeover wait W, the attach), shorter when the
fenced holder could release. Measured (``bench/chaos.py``: 3 workers, TTL 2 s,
100 one-sided partitions of the holder and 100 pauses of a random worker, each lasting
0.5-1.5 TTL): 171 takeovers, 1.87 s p50, 2.13 s p90, 2.46 s worst against a bound of
2 + 0.5 + 0.03 + 0.25 (attach allowance) = 2.78 s, W at most 0.025 s; 0 double
outputs, 0 double creates, 198 questions answered and 2 reported lost.

The one residual window: a pause that lands after the guard passed an event and
before it reaches the socket (the WebSocket transport's outbox: one turn of the loop
thread). That event goes out when the process wakes, possibly after its deadline. It
is bounded to what the guard passed in that turn (every later send is checked again,
and refused), and it is covered: it was recorded before it left, so the successor
treats it as sent and does not send it again - the call is answered once, late. If
instead the process dies in that window, the recorded event never arrives; the
successor lists it as ``unconfirmed`` in its report rather than guess.

What is recorded, from the events the holder's sideband sees (``client.on``): each
function call when its item is added (``response.output_item.added``: call id, item
id, response id), its arguments (``response.function_call_arguments.done``), its
answer (the ``function_call_output`` item the server echoes in
``conversation.item.added`` - the output is *in the conversation*, stronger than
"sent"), each round's ``response.done``, and whether a response started after the
round was complete (``response.created``: the model has seen the outputs); what left
is recorded by the fence (write-ahead); no tool is wrapped. So a new holder knows
which calls were started but never answered, and which complete rounds never got
their follow-up.

On re-attach the new holder **recovers**: a call with no answer and no recorded output
is run again if its tool is in ``idempotent`` (arguments from the record, or, if the
holder died before they were complete, from ``conversation.item.retrieve`` of the
recorded item id), and answered with an error output otherwise (running it twice could
repeat its effect: the model can tell the user, who can check); its answer is recorded
(``recovered``) and no holder answers that call again (the fence refuses a second
output: the tool runner of the new sideband included). A response the new sideband
sees streaming is left to its tool runner. Then one new follow-up is requested through
the gate for the recovered rounds that have none recorded - a new request, never a
replay. It then emits a typed :class:`CallsPossiblyLost` report: while no sideband
could record (``gap_start`` .. ``gap_end``), function calls the model made reached
nobody, and the API offers no way to list them. If the first item added after the
re-attach names, as its ``previous_item_id``, an item the registry never saw, the
conversation grew during the gap: :class:`LostItemsFound` reports the newest such item
(retrieved by id: e.g. a function call nobody answered). A holder that fences itself
reports :class:`HolderFenced`; a holder that sees a second output for one call in the
conversation reports :class:`CallAnsweredTwice`. Reports are logged (WARNING), pushed
to ``rt:reports`` and passed to ``on_report``. Never silent.

Known limits (see the README): an output or create recorded as sent whose holder died
before writing it is never sent (reported ``unconfirmed``); a call a holder recorded
only after its successor had recovered (it was paused just as the model called it) is
answered at the call's next takeover - the gap report covers it meanwhile; and when a
response is
still streaming as the new sideband attaches, a call of it that recovery answered
first may still *run* in the new sideband's tool runner (its output is refused, so it
is answered once; the client has no hook to skip a call before it runs).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from calls_fence import MERGE, AlreadyAnswered, Fence, LeaseFenced, calls_of, merge, rounded
from redis.backoff import NoBackoff
from redis.retry import Retry

from rtclient import (
    CallNotFoundError,
    ClosedError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    SendRefusedError,
    ToolSpec,
    create_call,
    hangup_call,
)
from rtclient.logs import short_id
from rtclient.tools import build_spec

log = logging.getLogger(__name__)

_REPORTS_KEPT = 1000
_ENDED_KEPT_S = 600  # an ended call's keys stay this long, for whoever looks after
_CALL_KEYS_TTL_S = 2 * 3600  # longer than any session (the API's limit is 60 min)
_RETRIEVE_TIMEOUT_S = 5.0
_RERUN_TIMEOUT_S = 30.0  # a re-run tool with no timeout of its own
_RESERVATION_S = 120  # a place held for a call being created (create_call + attach)

# KEYS: owner lease, call hash, calls set. ARGV: holder ("<worker>#<nonce>"), ttl ms,
# worker, now, pid, call id. Bumps the epoch (the fencing token) and makes the lease
# "<epoch>:<holder>". Returns {epoch, lease token, previous owner, its last sign of
# life, the newest item it saw, who released the lease ('' if it expired), how many
# confirmations the lease had had}; {-1} if the call is no longer live, {0} if someone
# holds the lease.
_CLAIM = """
if redis.call('sismember', KEYS[3], ARGV[6]) == 0 then return {-1} end
if redis.call('exists', KEYS[1]) == 1 then return {0} end
local previous = redis.call('hmget', KEYS[2], 'owner', 'seen_at', 'last_item', 'released_by',
                            'confirms')
local epoch = redis.call('hincrby', KEYS[2], 'epoch', 1)
local token = epoch .. ':' .. ARGV[1]
redis.call('set', KEYS[1], token, 'PX', ARGV[2])
redis.call('hincrby', KEYS[2], 'confirms', 1)
redis.call('hset', KEYS[2], 'owner', ARGV[3], 'owner_pid', ARGV[5], 'claimed_at', ARGV[4],
           'previous_owner', previous[1] or '', 'seen_at', ARGV[4])
redis.call('hdel', KEYS[2], 'released_at', 'released_by')
return {epoch, token, previous[1] or '', previous[2] or '', previous[3] or '', previous[4] or '',
        previous[5] or '0'}
"""
# KEYS: the caller's calls, the live calls. ARGV: limit, now, a reservation, when it
# lapses, the key's TTL s. Forgets the caller's ended calls and lapsed reservations;
# then reserves a place for a call being created: 1, or 0 if the caller has `limit`.
_RESERVE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
for _, id in ipairs(redis.call('zrangebyscore', KEYS[1], '+inf', '+inf')) do
  if redis.call('sismember', KEYS[2], id) == 0 then redis.call('zrem', KEYS[1], id) end
end
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[4], ARGV[3])
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""
# KEYS: owner lease, call hash. ARGV: token, ttl ms, now. 1 if renewed (a confirmation:
# counted in 'confirms'), 0 if lost.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('hincrby', KEYS[2], 'confirms', 1)
redis.call('hset', KEYS[2], 'seen_at', ARGV[3])
return 1
"""
# KEYS: owner lease, call hash. ARGV: token, when our sideband detached, worker. Deletes
# the lease only if it is still ours, and notes when (the gap starts there, not at the
# last renewal).
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
if redis.call('exists', KEYS[2]) == 1 then
  redis.call('hset', KEYS[2], 'seen_at', ARGV[2], 'released_at', ARGV[2], 'released_by', ARGV[3])
end
return 1
"""


# ----------------------------------------------------------------------- reports
@dataclasses.dataclass(frozen=True)
class CallsPossiblyLost:
    """A new holder re-attached to a call whose sideband had gone.

    From ``gap_start`` (the previous holder's last confirmation of its lease: the last
    moment it is known to have been alive and in touch; or the moment it detached, if
    it let go: ``handover="released"``) to ``gap_end`` (the new sideband ready), events
    reached no sideband that could record or answer them: a function call the model
    made in that window is invisible to the app (the API has no "list items").
    ``rerun``/``errored`` are the recorded calls that had no answer and were run again
    (idempotent tools) or answered with an error output; ``followups`` the rounds given
    a new follow-up request. ``unconfirmed`` are calls whose output a previous holder
    recorded as sent (write-ahead) but nobody saw in the conversation, and
    ``unconfirmed_followups`` rounds whose follow-up create it recorded likewise: they
    are not sent again (that could answer twice), so if the holder died between the
    record and the write, they stay unanswered - reported here. ``waited_s`` is how long
    the new holder waited after its claim before attaching, so that the previous
    holder's fence deadline (plus the clock-drift bound) had surely passed.
    """

    call_id: str
    previous_owner: str
    new_owner: str
    epoch: int
    handover: str  # "released" (the holder let go: shut down, fenced, lost) or "expired"
    gap_start: float
    gap_end: float
    gap_seconds: float
    rerun: tuple[str, ...] = ()
    errored: tuple[str, ...] = ()
    followups: tuple[str, ...] = ()
    unconfirmed: tuple[str, ...] = ()
    unconfirmed_followups: tuple[str, ...] = ()
    waited_s: float = 0.0
    kind: str = "calls_possibly_lost"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LostItemsFound:
    """Proof that the conversation grew while no sideband was attached.

    The first item added after a re-attach names ``found_previous`` as the item before
    it, not ``expected_previous`` (the newest item the registry recorded). The found
    item is the newest one added in the gap; ``item_type``/``tool_call_id``/``name``/
    ``arguments`` describe it (a ``function_call`` here was never answered by a
    sideband). Older gap items cannot be seen: an item does not name its predecessor.
    """

    call_id: str
    owner: str
    expected_previous: str
    found_previous: str
    item_type: str | None = None
    tool_call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    kind: str = "lost_items_found"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class HolderFenced:
    """A holder stopped sending and detached: it could not confirm its lease within
    ``fence_after`` seconds (cut off from Redis, paused), or found it taken. The call
    goes on; the next holder (maybe this worker again) recovers it."""

    call_id: str
    owner: str
    epoch: int
    reason: str
    fenced_at: float
    kind: str = "holder_fenced"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CallAnsweredTwice:
    """A holder saw a second output for one function call in the conversation: the
    fencing was breached (see the module docstring: it should never happen)."""

    call_id: str
    owner: str
    tool_call_id: str
    item_id: str | None
    kind: str = "call_answered_twice"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Report = CallsPossiblyLost | LostItemsFound | HolderFenced | CallAnsweredTwice


# ---------------------------------------------------------------------- the registry
@dataclasses.dataclass
class _Held:
    """A call whose lease this worker holds; ``client`` is None while attaching."""

    token: str
    epoch: int
    fence: Fence
    client: RealtimeClient | None = None
    recorder: _Recorder | None = None


@dataclasses.dataclass(frozen=True)
class _Claim:
    epoch: int
    previous_owner: str
    seen_at: float
    last_item: str
    released: bool = False
    wait_s: float = 0.0  # to wait before attaching: the previous holder's fence


class CallRegistry:
    """The live calls of every worker, shared in Redis; this worker's sidebands.

    Thread-safe. ``start()`` begins renewing, scanning and claiming (call it in each
    worker process, after the fork: not in a gunicorn ``--preload`` master).
    ``close()`` detaches this worker's sidebands and releases their leases, so another
    worker takes each call over at its next scan (a graceful restart loses nothing).

    ``on_sideband(call_id, caller, client)``, if set, runs for every sideband this
    worker is about to attach - the first one and each takeover's - before it
    connects, so whatever it subscribes to misses nothing (the phone line's keypad
    watch: :meth:`adopt_call`).

    ``fence_after`` (default ``0.75 * lease_ttl``) is how long a holder may go without
    confirming its lease before it stops sending and detaches; ``clock_drift`` bounds
    how much two machines' clocks may disagree on a length of time (0.01: 1%, far
    above a crystal's 50 ppm). They must leave room: ``fence_after * (1 + clock_drift)
    < lease_ttl * (1 - clock_drift)``.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        api_key: str,
        base_url: str | None,
        session: Mapping[str, Any],
        tools: Iterable[Callable[..., Any] | ToolSpec],
        idempotent: Iterable[str] = (),
        lease_ttl: float = 5.0,
        fence_after: float | None = None,
        clock_drift: float = 0.01,
        prefix: str = "rt",
        max_workers: int = 8,
        name: str = "calls",
        on_report: Callable[[Report], None] | None = None,
        drain_timeout: float = 10.0,
        max_calls_per_caller: int = 2,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.session = dict(session)
        self.tools = list(tools)
        self.specs = {s.name: s for s in (_spec(t) for t in self.tools)}
        self.idempotent = frozenset(idempotent)
        self.lease_ttl = lease_ttl
        self.tick = lease_ttl / 4
        self.fence_after = 0.75 * lease_ttl if fence_after is None else fence_after
        self.clock_drift = clock_drift
        if not 0 <= clock_drift < 0.5 or not (
            0 < self.fence_after * (1 + clock_drift) < lease_ttl * (1 - clock_drift)
        ):
            raise ValueError(
                f"fence_after={self.fence_after} with clock_drift={clock_drift} leaves no "
                f"room under lease_ttl={lease_ttl}"
            )
        # A successor waits until the previous holder's last confirmation is this old,
        # by its own clock: the previous holder's deadline, stretched by the drift bound.
        self.takeover_after = self.fence_after * (1 + clock_drift) / (1 - clock_drift)
        self.prefix = prefix
        self.on_report = on_report
        self.drain_timeout = drain_timeout
        self.max_calls_per_caller = max_calls_per_caller
        self.on_sideband: Callable[[str, str, RealtimeClient], None] | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        # One command waits at most ``timeout`` and is not retried: the registry thread
        # tries again every tick, and a holder cut off from Redis must find out in time.
        # The send guards ask Redis on the loop thread (shared by every sideband here):
        # their own connections.
        timeout = min(1.0, self.tick)
        self.redis, self._guard_redis = (
            redis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            for _ in range(2)
        )
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._reserve = self.redis.register_script(_RESERVE)
        self.merge = self.redis.register_script(MERGE)
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix=f"{name}-tool")
        self._attacher = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-attach")
        self.loop_thread = LoopThread(f"{name}-loop")
        self._janitor = threading.Thread(target=self._run, name=f"{name}-registry", daemon=True)
        self._name = name
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        # call id -> (its lease's confirmation count, when this worker first saw that
        # count: monotonic): the previous holder's last confirmation was sent before
        self._observed: dict[str, tuple[int, float]] = {}
        self._fenced = 0  # holders fenced here
        self._refused = 0  # events their guards refused (would have left after a deadline)
        self._stop = threading.Event()
        self._started = False
        self._closing = False  # no more claims; the held calls drain
        self.started_at = time.time()

    # -- keys ----------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _call_keys(self, call_id: str) -> list[str]:
        return [self.key("call", call_id, s) for s in ("owner", "tools", "rounds")] + [
            self.key("call", call_id)
        ]

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> CallRegistry:
        """Start the loop thread and the registry thread (idempotent)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self.loop_thread.start()
        self._janitor.start()
        atexit.register(self.close)  # after LoopThread's own: runs before it (LIFO)
        return self

    def close(self, timeout: float = 10.0, drain: float | None = None) -> None:
        """Hand this worker's calls over: stop claiming; let the tool rounds in progress
        finish - outputs in the conversation, follow-ups started and done - for at most
        ``drain`` seconds (``drain_timeout``); then detach every sideband (the calls go
        on) and release the leases, so another worker takes each call at its next scan.
        Runs at exit (``atexit``: after the interpreter has let running tools finish)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            draining = [h.recorder for h in self._held.values() if h.recorder is not None]
        deadline = time.monotonic() + (self.drain_timeout if drain is None else drain)
        for recorder in draining:
            if not recorder.wait_settled(max(0.0, deadline - time.monotonic())):
                log.warning("registry: %s still busy; handing it over", short_id(recorder.call_id))
        with self._lock:
            held, self._held = dict(self._held), {}
        self._stop.set()
        if self._janitor.is_alive() and self._janitor is not threading.current_thread():
            self._janitor.join(timeout)
        self._attacher.shutdown(wait=True, cancel_futures=True)
        for call_id, h in held.items():
            detached_at = time.time()
            if h.client is not None:
                h.client.close()  # detach: the call keeps running for its browser
            self._let_go(call_id, h.token, detached_at)
        with contextlib.suppress(redis.RedisError):
            self.redis.hdel(self.key("workers"), self.worker)
        self.loop_thread.stop(timeout)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.redis.close()
        self._guard_redis.close()
        atexit.unregister(self.close)

    # -- what the views call -------------------------------------------------------
    def start_call(self, offer_sdp: str, *, caller: str) -> tuple[str, str] | None:
        """Create the browser's call, register it as ``caller``'s, attach:
        ``(call_id, answer_sdp)``; None, creating nothing, if ``caller`` (a browser
        session's opaque id) already has ``max_calls_per_caller`` live calls."""
        self.start()
        place = f"creating:{uuid.uuid4().hex}"
        if not self._reserve_place(caller, place):
            return None
        try:
            call = create_call(
                offer_sdp,
                session=self.session,
                tools=self.tools,
                api_key=self.api_key,
                base_url=self.base_url,
                loop_thread=self.loop_thread,
            )
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                self.redis.zrem(self.key("caller", caller), place)
            raise
        self._register_and_attach(call.call_id, caller, place)
        return call.call_id, call.sdp

    def adopt_call(
        self, call_id: str, *, caller: str, greeting: str | None = None
    ) -> RealtimeClient:
        """Register a call made elsewhere - a phone call this worker just accepted -
        as ``caller``'s, and attach its sideband here: from now on it is every worker's
        call, under a lease like a browser's, taken over if this worker dies.
        ``greeting``: instructions for a first response, asked for once, through the
        fence (a successor never asks again). Returns the attached sideband; raises
        (after ending the call) if it cannot attach, as :meth:`start_call` does."""
        self.start()
        place = f"adopting:{uuid.uuid4().hex}"
        if not self._reserve_place(caller, place):
            raise RealtimeError(f"{caller} has no place left for {short_id(call_id)}")
        self._register_and_attach(call_id, caller, place)
        client = self.get(call_id)
        if client is None:  # fenced or ended in the meantime: the registry decides
            raise RealtimeError(f"{short_id(call_id)} was let go as it was adopted")
        if greeting:
            client.request_response(instructions=greeting)
        return client

    def _register_and_attach(self, call_id: str, caller: str, place: str) -> None:
        """A live call, new here, in ``caller``'s reserved ``place``: registered under
        this worker's lease, its sideband attached; or ended, and the error raised."""
        try:
            claim, token = self._register(call_id, caller, place)
            if not self._attach(call_id, token, claim, recover=False):
                raise RealtimeError(f"the sideband of {short_id(call_id)} did not attach")
        except (redis.RedisError, RealtimeError):
            # A call without its tools (or that no worker could take over) is no use to
            # the user: end it, report the failure. Its place is free once it has ended.
            with contextlib.suppress(RealtimeError):
                hangup_call(call_id, api_key=self.api_key, base_url=self.base_url)
            with contextlib.suppress(redis.RedisError):
                self._end(call_id)
                self.redis.zrem(self.key("caller", caller), place)
            raise

    def caller_of(self, call_id: str) -> str | None:
        """Who created ``call_id`` (the ``caller`` given to ``start_call``), if it is
        live; ``""`` for a live call registered without one. Any worker answers."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self.key("calls"), call_id)
        pipe.hget(self.key("call", call_id), "caller")
        live, caller = pipe.execute()
        return str(caller or "") if live else None

    def _reserve_place(self, caller: str, place: str) -> bool:
        """Hold a place among ``caller``'s calls for one being created (atomic: the
        count and the reservation are one script); False if there is none left."""
        now = time.time()
        reserved = self._reserve(
            keys=[self.key("caller", caller), self.key("calls")],
            args=[self.max_calls_per_caller, now, place, now + _RESERVATION_S, _CALL_KEYS_TTL_S],
        )
        return bool(reserved)

    def hangup(self, call_id: str) -> bool:
        """End ``call_id`` for everyone, from any worker; False if it is not live."""
        if not self._end(call_id):
            return False
        with self._lock:
            h = self._held.pop(call_id, None)
        client = h.client if h is not None else None
        try:
            if client is not None and not client.closed:
                client.hangup()  # the holder: over its own sideband's session
            else:
                hangup_call(call_id, api_key=self.api_key, base_url=self.base_url)
        except CallNotFoundError:
            pass  # it had already ended
        except ClosedError:  # our sideband was lost a moment ago: end the call by id
            with contextlib.suppress(CallNotFoundError):
                hangup_call(call_id, api_key=self.api_key, base_url=self.base_url)
        except RealtimeError:
            self._revive(call_id)  # the API refused: the call is still up, keep it
            raise
        finally:
            if h is not None:
                self._let_go(call_id, h.token)
        return True

    def live(self) -> list[str]:
        """Every live call of every worker."""
        return sorted(str(c) for c in self.redis.smembers(self.key("calls")))

    def held(self) -> list[str]:
        """The calls whose sideband is attached in this worker."""
        with self._lock:
            return [cid for cid, h in self._held.items() if h.client is not None]

    def get(self, call_id: str) -> RealtimeClient | None:
        with self._lock:
            h = self._held.get(call_id)
        return h.client if h is not None else None

    # -- the registry thread -------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._fence_overdue()  # first: after a pause, before anything else
            try:
                self._renew_all()
            except redis.RedisError as exc:
                # Redis unreachable: nobody here can confirm a lease; each holder fences
                # itself at its deadline (below, or in its send guard, whichever first).
                log.warning("registry: renewing: %s", exc)
            except Exception:
                log.exception("registry: renewing failed")
            self._fence_overdue()
            try:
                self._reap()
                self._scan()
                self._heartbeat()
            except redis.RedisError as exc:
                log.warning("registry: %s", exc)
            except Exception:
                log.exception("registry: tick failed")
            self._stop.wait(self.tick)

    def _fence_overdue(self) -> None:
        """Fence every held call whose deadline has passed (it then detaches)."""
        now = time.monotonic()
        with self._lock:
            fences = [h.fence for h in self._held.values()]
        for fence in fences:
            with contextlib.suppress(LeaseFenced):
                fence.check(now)

    def _renew_all(self) -> None:
        with self._lock:
            held = list(self._held.items())
        if not held:
            return
        pipe = self.redis.pipeline(transaction=False)
        now = rounded(time.time())
        ttl = int(self.lease_ttl * 1000)
        for call_id, h in held:
            self._renew(
                keys=[self.key("call", call_id, "owner"), self.key("call", call_id)],
                args=[h.token, ttl, now],
                client=pipe,
            )
        sent_at = time.monotonic()  # a confirmation counts from its sending
        for (_, h), renewed in zip(held, pipe.execute(), strict=True):
            if renewed:
                h.fence.confirmed(sent_at)
            else:
                # Expired (paused past the TTL) and maybe claimed by another worker
                # already: two sidebands must never answer one call. Fence; detach.
                h.fence.fence("the lease was lost (expired or taken over)")

    def _reap(self) -> None:
        """Let go of calls whose sideband closed: ended, or dropped (then re-claimable)."""
        with self._lock:
            closed = [
                (cid, h.token)
                for cid, h in self._held.items()
                if h.client is not None and h.client.closed
            ]
        for call_id, token in closed:
            live = self.redis.sismember(self.key("calls"), call_id)
            why = "dropped" if live else "the call ended"
            log.info("registry: the sideband of %s closed (%s)", call_id, why)
            self._drop(call_id, token)

    def _scan(self) -> None:
        with self._lock:
            mine = set(self._held)
        if self._closing:
            return  # handing over: claim nothing new
        candidates = [str(c) for c in self.redis.smembers(self.key("calls")) if c not in mine]
        pipe = self.redis.pipeline(transaction=False)
        for call_id in candidates:
            pipe.exists(self.key("call", call_id, "owner"))
            pipe.hget(self.key("call", call_id), "confirms")
        found = pipe.execute() if candidates else []
        now = time.monotonic()
        observed = {}
        for i, call_id in enumerate(candidates):
            confirms = int(found[2 * i + 1] or 0)
            seen = self._observed.get(call_id)
            observed[call_id] = (
                seen if seen is not None and seen[0] == confirms else (confirms, now)
            )
        self._observed = observed  # only the live calls others hold (or nobody)
        orphans = [c for i, c in enumerate(candidates) if not found[2 * i]]
        for call_id in orphans:
            if self._stop.is_set():
                return
            claim, token = self._try_claim(call_id)
            if claim is not None:
                log.warning(
                    "registry: claimed orphaned call %s (epoch %d, was %s)",
                    short_id(call_id),
                    claim.epoch,
                    claim.previous_owner or "nobody",
                )
                try:
                    self._attacher.submit(self._attach_or_let_go, call_id, token, claim)
                except RuntimeError:  # the interpreter is exiting: leave it to the others
                    self._drop(call_id, token)
                    return

    def _heartbeat(self) -> None:
        """Check in under ``rt:workers``; forget workers silent for 10 lease TTLs."""
        with self._lock:
            calls = sorted(self._held)
            fenced, refused = self._fenced, self._refused
        now = time.time()
        info = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "seen_at": now,
            "held": len(calls),
            "calls": calls,
            "fenced": fenced,
            "refused": refused,
        }
        workers = self.key("workers")
        self.redis.hset(workers, self.worker, json.dumps(info))
        stale = [
            worker
            for worker, value in self.redis.hgetall(workers).items()
            if now - float(json.loads(value).get("seen_at", 0)) > 10 * self.lease_ttl
        ]
        if stale:
            self.redis.hdel(workers, *stale)

    # -- claiming and attaching ----------------------------------------------------
    def _fence_for(self, call_id: str, token: str, epoch: int, confirmed_at: float) -> Fence:
        return Fence(
            self._guard_redis,
            keys={
                "lease": self.key("call", call_id, "owner"),
                "call": self.key("call", call_id),
                "tools": self.key("call", call_id, "tools"),
                "rounds": self.key("call", call_id, "rounds"),
            },
            token=token,
            epoch=epoch,
            ttl_ms=int(self.lease_ttl * 1000),
            fence_after=self.fence_after,
            confirmed_at=confirmed_at,
            on_fenced=lambda why: self.defer(self._detach_fenced, call_id, token, why),
            on_refused=self._count_refused,
        )

    def _count_refused(self) -> None:
        with self._lock:
            self._refused += 1

    def _register(self, call_id: str, caller: str, place: str) -> tuple[_Claim, str]:
        """A new call: live, with this worker's lease, ``caller``'s (in the place
        reserved for it), in one transaction (a scan in another worker never sees it
        live without a holder, nor a caller's count without it)."""
        token = f"1:{self.worker}#{uuid.uuid4().hex[:12]}"
        now = rounded(time.time())
        sent_at = time.monotonic()
        with self._lock:
            if self._closing:
                raise RealtimeError("the registry is closing")
            self._held[call_id] = _Held(token, 1, self._fence_for(call_id, token, 1, sent_at))
        record: dict[Any, Any] = {
            "caller": caller,
            "created_by": self.worker,
            "created_at": now,
            "seen_at": now,
            "owner": self.worker,
            "owner_pid": os.getpid(),
            "claimed_at": now,
            "previous_owner": "",
            "epoch": 1,
            "confirms": 1,
        }
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.key("call", call_id, "owner"), token, px=int(self.lease_ttl * 1000))
            pipe.hset(self.key("call", call_id), mapping=record)
            for k in self._call_keys(call_id)[1:]:
                pipe.expire(k, _CALL_KEYS_TTL_S)
            pipe.sadd(self.key("calls"), call_id)
            pipe.zrem(self.key("caller", caller), place)
            pipe.zadd(self.key("caller", caller), {call_id: float("inf")})
            pipe.expire(self.key("caller", caller), _CALL_KEYS_TTL_S)
            pipe.execute()
        except BaseException:
            with self._lock:
                self._held.pop(call_id, None)
            raise
        return _Claim(1, "", now, "", False), token

    def _try_claim(self, call_id: str) -> tuple[_Claim | None, str]:
        holder = f"{self.worker}#{uuid.uuid4().hex[:12]}"
        ttl_ms = int(self.lease_ttl * 1000)
        sent_at = time.monotonic()
        result = self._claim(
            keys=[
                self.key("call", call_id, "owner"),
                self.key("call", call_id),
                self.key("calls"),
            ],
            args=[holder, ttl_ms, self.worker, rounded(time.time()), os.getpid(), call_id],
        )
        epoch = int(result[0])
        if epoch <= 0:
            return None, holder
        token, released = str(result[1]), bool(result[5])
        # The previous holder sent its last confirmation before this worker first saw
        # the lease's confirmation count at its current value: how long ago that was,
        # by this worker's clock, bounds from below how far past its deadline it is.
        # Nothing to wait for if it let go (it detached first) or was this worker (it
        # detached, or never attached, before its lease could be claimed here).
        seen = self._observed.get(call_id)
        since = sent_at - seen[1] if seen is not None and seen[0] == int(result[6]) else 0.0
        previous = str(result[2])
        done = released or previous == self.worker
        wait = 0.0 if done else max(0.0, self.takeover_after - since)
        claim = _Claim(epoch, previous, float(result[3] or 0.0), str(result[4]), released, wait)
        with self._lock:
            closed = self._closing
            if not closed:
                fence = self._fence_for(call_id, token, epoch, sent_at)
                self._held[call_id] = _Held(token, epoch, fence)
        if closed:
            self._let_go(call_id, token)
            return None, token
        return claim, token

    def _attach_or_let_go(self, call_id: str, token: str, claim: _Claim) -> None:
        try:
            if claim.wait_s > 0:
                # A holder released nothing: it may still be sending until its deadline.
                log.info("registry: %s: waiting %.3fs for its last holder's fence",
                         call_id, claim.wait_s)  # fmt: skip
                if self._stop.wait(claim.wait_s):
                    self._drop(call_id, token)
                    return
            self._attach(call_id, token, claim, recover=True)
        except Exception:
            log.exception("registry: attaching to %s failed", short_id(call_id))
            self._drop(call_id, token)

    def _attach(self, call_id: str, token: str, claim: _Claim, *, recover: bool) -> bool:
        """Attach a sideband to ``call_id`` under the lease ``token``; recover if asked.
        False if the lease was lost meanwhile or the call has ended."""
        with self._lock:
            h = self._held.get(call_id)
        if h is None or h.token != token:
            return False
        fence = h.fence
        client = RealtimeClient(
            call_id=call_id,  # a sideband: attach to the browser's call
            api_key=self.api_key,
            base_url=self.base_url,
            tools=self.tools,
            executor=self.pool,
            loop_thread=self.loop_thread,
            send_guard=fence,  # nothing leaves once the lease may be lost
        )
        previous = claim.last_item if recover else None
        recorder = _Recorder(self, call_id, client, fence, check_previous=previous)
        hook = self.on_sideband
        if hook is not None:
            try:
                hook(
                    call_id, str(self.redis.hget(self.key("call", call_id), "caller") or ""), client
                )
            except Exception:  # the app's hook: logged, the call still gets its sideband
                log.exception("registry: on_sideband failed for %s", short_id(call_id))
        try:
            client.connect()
        except CallNotFoundError:
            log.info("registry: %s has ended; forgetting it", call_id)
            self._end(call_id)
            self._drop(call_id, token)
            return False
        except RealtimeError as exc:
            log.warning("registry: could not attach to %s: %s", short_id(call_id), exc)
            self._drop(call_id, token)  # released: the next scan (any worker) tries again
            return False
        attached_at = time.time()
        with self._lock:
            h = self._held.get(call_id)
            if h is None or h.token != token or fence.fenced is not None:
                h = None
            else:
                h.client, h.recorder = client, recorder
        if h is None:  # lost the lease (or fenced) while attaching
            client.close()
            return False
        pipe = self.redis.pipeline(transaction=True)  # one step, as readers see it
        pipe.hset(
            self.key("call", call_id),
            mapping={
                "attached_at": rounded(attached_at),
                "seen_at": rounded(attached_at),  # alive, attached: a gap starts after this
                "owner": self.worker,
                "owner_pid": os.getpid(),
            },
        )
        if recover:
            pipe.hincrby(self.key("call", call_id), "failovers", 1)
        pipe.execute()
        if recover:
            self._recover(call_id, client, recorder, claim, attached_at)
        return True

    def _detach_fenced(self, call_id: str, token: str, why: str) -> None:
        """A holder fenced itself: detach (the call goes on), release the lease if it is
        still ours (then any worker's next scan takes the call over), report."""
        with self._lock:
            h = self._held.get(call_id)
            if h is None or h.token != token:
                return
            del self._held[call_id]
            self._fenced += 1
        fenced_at = time.time()
        log.warning("registry: fenced %s (epoch %d): %s; detaching", call_id, h.epoch, why)
        if h.client is not None:
            h.client.close()
        self._let_go(call_id, token, fenced_at)
        self.report(HolderFenced(call_id, self.worker, h.epoch, why, rounded(fenced_at)))

    def _drop(self, call_id: str, token: str) -> None:
        """Forget a call this worker held (detach, release the lease if still ours)."""
        with self._lock:
            h = self._held.get(call_id)
            if h is None or h.token != token:
                return
            del self._held[call_id]
        detached_at = time.time()
        if h.client is not None:
            h.client.close()
        self._let_go(call_id, token, detached_at)

    def _let_go(self, call_id: str, token: str, detached_at: float | None = None) -> None:
        """Release the lease if it is still ours: the next scan may claim the call."""
        keys = [self.key("call", call_id, "owner"), self.key("call", call_id)]
        with contextlib.suppress(redis.RedisError):
            at = rounded(detached_at or time.time())
            self._release(keys=keys, args=[token, at, self.worker])

    def _revive(self, call_id: str) -> None:
        """Undo :meth:`_end` (a hang-up the API refused): live again, kept as long."""
        pipe = self.redis.pipeline()
        pipe.hdel(self.key("call", call_id), "ended_at")
        for k in self._call_keys(call_id)[1:]:
            pipe.expire(k, _CALL_KEYS_TTL_S)
        pipe.sadd(self.key("calls"), call_id)
        pipe.execute()

    def _end(self, call_id: str) -> bool:
        """Mark ``call_id`` ended (nobody re-attaches); True if it was live."""
        if not self.redis.srem(self.key("calls"), call_id):
            return False
        pipe = self.redis.pipeline()
        pipe.hset(self.key("call", call_id), "ended_at", rounded(time.time()))
        for k in self._call_keys(call_id):
            pipe.expire(k, _ENDED_KEPT_S)  # kept a while for whoever looks, then gone
        pipe.execute()
        return True

    # -- recovery ------------------------------------------------------------------
    def _recover(
        self,
        call_id: str,
        client: RealtimeClient,
        recorder: _Recorder,
        claim: _Claim,
        attached_at: float,
    ) -> None:
        """Answer the recorded calls that had no answer; one new follow-up; report.

        Never twice: a call answered in the conversation, or recorded as sent by a
        previous holder (write-ahead), is not answered again; a response this sideband
        sees streaming is its tool runner's. Each answer goes through the fence, which
        records it before it leaves."""
        records, rounds = recorder.load()
        live = recorder.live_rounds()
        rerun: list[str] = []
        errored: list[str] = []
        unconfirmed: list[str] = []
        for record in records.values():
            cid = str(record.get("call_id"))
            if record.get("state") == "answered" or record.get("response_id") in live:
                continue
            if record.get("sent_epoch") is not None:
                unconfirmed.append(cid)  # sent, echo unseen: never sent twice
                continue
            if not recorder.fence.claim_for_recovery(cid, recorder.sent_here(cid)):
                continue  # this sideband's tool runner answered it meanwhile
            output, how = self._answer(client, recorder, record)
            try:
                client.submit_tool_output(cid, output)
            except SendRefusedError as exc:
                if isinstance(exc.__cause__, AlreadyAnswered):
                    continue  # someone else's answer got there first
                raise  # fenced: stop here; the detach follows, the next holder goes on
            recorder.note_recovered(cid, how)
            (rerun if how == "rerun" else errored).append(cid)
        wanted = self.wants_followup
        pending: set[str] = set()
        unconfirmed_followups: list[str] = []
        for rid, rnd in rounds.items():
            if rid in live or rnd.get("followed") or not wanted(rnd):
                continue
            if rnd.get("create"):
                unconfirmed_followups.append(rid)  # its create was sent, echo unseen
            elif rnd.get("done"):
                pending.add(rid)
        unrecorded = {r.get("response_id") for r in records.values()} - set(rounds) - live
        pending |= {str(rid) for rid in unrecorded if rid is not None}
        if pending:
            recorder.rounds_recovered(sorted(pending))
            client.request_response(reason=f"failover:{','.join(sorted(pending))}")
        gap_start = claim.seen_at or attached_at
        self.report(
            CallsPossiblyLost(
                call_id=call_id,
                previous_owner=claim.previous_owner,
                new_owner=self.worker,
                epoch=claim.epoch,
                handover="released" if claim.released else "expired",
                gap_start=gap_start,
                gap_end=rounded(attached_at),
                gap_seconds=round(attached_at - gap_start, 3),
                rerun=tuple(rerun),
                errored=tuple(errored),
                followups=tuple(sorted(pending)),
                unconfirmed=tuple(sorted(unconfirmed)),
                unconfirmed_followups=tuple(sorted(unconfirmed_followups)),
                waited_s=round(claim.wait_s, 3),
            )
        )

    def wants_followup(self, rnd: dict[str, Any]) -> bool:
        """Whether a round asks for a follow-up (``@tool(start_response=False)`` does not)."""
        names = [str((rnd.get("names") or {}).get(c)) for c in calls_of(rnd)]
        specs = [self.specs.get(n) for n in names]
        return not specs or any(s is None or s.start_response for s in specs)

    def _answer(
        self, client: RealtimeClient, recorder: _Recorder, record: dict[str, Any]
    ) -> tuple[str, str]:
        """The output for a call that had no answer: ``(output, "rerun" | "error")``."""
        name = str(record.get("name"))
        arguments = record.get("arguments")
        if arguments is None and record.get("item_id"):
            item = recorder.retrieve(str(record["item_id"]), _RETRIEVE_TIMEOUT_S)
            arguments = (item or {}).get("arguments")
        spec = self.specs.get(name)
        if spec is None or name not in self.idempotent:
            why = (
                f"{name} was interrupted when the server running it stopped. It was not "
                "run again, because running it twice could repeat what it does: check "
                "its effect before trying again."
            )
            return json.dumps({"error": why}), "error"
        if not isinstance(arguments, str):
            lost = f"{name} was interrupted and its arguments are lost"
            return json.dumps({"error": lost}), "error"
        try:
            raw = json.loads(arguments) if arguments.strip() else {}
            args, kwargs = spec.validate(raw)
            result = self.pool.submit(spec.fn, *args, **kwargs).result(
                spec.timeout or _RERUN_TIMEOUT_S
            )
        except FutureTimeout:
            return json.dumps({"error": f"{name} timed out when run again"}), "error"
        except Exception as exc:
            return json.dumps({"error": f"{name} raised {type(exc).__name__}: {exc}"}), "error"
        output = result if isinstance(result, str) else json.dumps(result, default=str)
        return output, "rerun"

    def report(self, report: Report) -> None:
        """Log, store (``rt:reports``) and hand on a typed report: never silent."""
        body = report.to_json()
        log.warning("[FAILOVER] %s", json.dumps({**body, "call_id": short_id(report.call_id)}))
        with contextlib.suppress(redis.RedisError):
            pipe = self.redis.pipeline()
            pipe.lpush(self.key("reports"), json.dumps({**body, "at": time.time()}))
            pipe.ltrim(self.key("reports"), 0, _REPORTS_KEPT - 1)
            pipe.execute()
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:
                log.exception("on_report raised")

    def lost_items_found(self, recorder: _Recorder, expected: str, found: str) -> None:
        """The conversation grew during the gap: report the newest unseen item."""
        item = recorder.retrieve(found, _RETRIEVE_TIMEOUT_S) or {}
        self.report(
            LostItemsFound(
                call_id=recorder.call_id,
                owner=self.worker,
                expected_previous=expected,
                found_previous=found,
                item_type=item.get("type"),
                tool_call_id=item.get("call_id"),
                name=item.get("name"),
                arguments=item.get("arguments"),
            )
        )

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` off the dispatcher and loop threads (it may wait on the client)."""
        with contextlib.suppress(RuntimeError):  # closing: nothing left to report to
            self._attacher.submit(fn, *args)


class _Recorder:
    """What one call's holder writes to the registry, from its sideband's events.

    The callbacks run on the client's dispatcher thread: they only write to Redis
    (loopback, sub-millisecond) and never wait on the client. Every write is a merge
    (:data:`calls_fence.MERGE`): an observation only adds to a record, so a stale
    holder's late write never undoes a newer holder's; each names the epoch that made it.
    The fence (loop thread) tells it what went out.
    """

    def __init__(
        self,
        registry: CallRegistry,
        call_id: str,
        client: RealtimeClient,
        fence: Fence,
        *,
        check_previous: str | None,
    ) -> None:
        self.registry = registry
        self.call_id = call_id
        self.client = client
        self.fence = fence
        self.epoch = fence.epoch
        self._tools_key = registry.key("call", call_id, "tools")
        self._rounds_key = registry.key("call", call_id, "rounds")
        self._call_key = registry.key("call", call_id)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, dict[str, Any]] = {}
        self._rounds: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()  # responses created, not done (as this one saw)
        self._out_of_band: set[str] = set()  # their calls are not the conversation's
        self._live: set[str] = set()  # responses this sideband saw events of
        self._check_previous = check_previous  # the newest item the last holder saw
        for kind, handler in (
            ("response.output_item.added", self._item_started),
            ("response.function_call_arguments.done", self._arguments),
            ("response.done", self._response_done),
            ("response.created", self._response_created),
            ("conversation.item.added", self._item_added),
        ):
            client.on(kind, handler, raw=True)  # the dicts: no parsing, no openai import
        fence.complete_rounds = self.complete_rounds
        fence.note_sent = self.note_sent
        fence.note_create = self.note_create

    def load(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The records the previous holders left, merged with what this one saw."""
        r = self.registry.redis
        tools = {str(k): json.loads(v) for k, v in r.hgetall(self._tools_key).items()}
        rounds = {str(k): json.loads(v) for k, v in r.hgetall(self._rounds_key).items()}
        with self._lock:
            for call_id, record in tools.items():
                merge(self._records.setdefault(call_id, {}), record)
            for rid, rnd in rounds.items():
                merge(self._rounds.setdefault(rid, {}), rnd)
            return (
                {k: dict(v) for k, v in self._records.items()},
                {k: dict(v) for k, v in self._rounds.items()},
            )

    def live_rounds(self) -> set[str]:
        """Responses this sideband has seen events of: its tool runner answers them."""
        with self._lock:
            return set(self._live)

    def wait_settled(self, timeout: float) -> bool:
        """Until no response is running and every recorded call is answered and every
        round followed up (what a worker waits for before handing the call over)."""
        with self._changed:
            return self._changed.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        if self._active or any(r.get("state") != "answered" for r in self._records.values()):
            return False
        return all(
            r.get("followed") or not r.get("done") or not self.registry.wants_followup(r)
            for r in self._rounds.values()
        )

    # -- what the fence says went out (loop thread) --------------------------------
    def sent_here(self, call_id: str) -> bool:
        with self._lock:
            return self._records.get(call_id, {}).get("sent_epoch") == self.epoch

    def note_sent(self, call_id: str) -> None:
        with self._lock:
            merge(
                self._records.setdefault(call_id, {"call_id": call_id}), {"sent_epoch": self.epoch}
            )

    def note_create(self, response_ids: list[str], event_id: str) -> None:
        with self._lock:
            for rid in response_ids:
                merge(
                    self._rounds.setdefault(rid, {}),
                    {"create": event_id, "create_epoch": self.epoch},
                )

    def complete_rounds(self) -> list[str]:
        """The rounds a create sent now follows: every recorded call answered or sent,
        and no create recorded for it yet."""
        with self._lock:
            by_response: dict[str, list[dict[str, Any]]] = {}
            for record in self._records.values():
                rid = record.get("response_id")
                if isinstance(rid, str) and rid not in self._out_of_band:
                    by_response.setdefault(rid, []).append(record)
            return sorted(
                rid
                for rid, records in by_response.items()
                if not (self._rounds.get(rid) or {}).get("create")
                and not (self._rounds.get(rid) or {}).get("followed")
                and all(r.get("state") == "answered" or r.get("sent_epoch") for r in records)
            )

    # -- writing -------------------------------------------------------------------
    def _save(self, key: str, field: str, patch: dict[str, Any]) -> None:
        with contextlib.suppress(redis.RedisError):
            self.registry.merge(keys=[key], args=[field, json.dumps(patch)])

    def _record(self, call_id: str, **fields: Any) -> None:
        """Merge ``fields`` into a call's record, here and in Redis."""
        patch = {
            "call_id": call_id,
            "epoch": self.epoch,
            **{k: v for k, v in fields.items() if v is not None},
        }
        with self._lock:
            merge(self._records.setdefault(call_id, {}), patch)
            self._changed.notify_all()
        self._save(self._tools_key, call_id, patch)

    def _record_round(self, rid: str, **fields: Any) -> None:
        patch = {"epoch": self.epoch, **{k: v for k, v in fields.items() if v is not None}}
        with self._lock:
            merge(self._rounds.setdefault(rid, {}), patch)
            self._changed.notify_all()
        self._save(self._rounds_key, rid, patch)

    def note_recovered(self, call_id: str, how: str) -> None:
        self._record(call_id, recovered=how, recovered_epoch=self.epoch)

    def rounds_recovered(self, response_ids: list[str]) -> None:
        """Rounds the new holder completed: followed by the next response created."""
        with self._lock:
            for rid in response_ids:
                mine = [c for c, r in self._records.items() if r.get("response_id") == rid]
                merge(self._rounds.setdefault(rid, {}), {"done": True, "calls": mine})

    def _saw(self, response_id: Any) -> None:
        if isinstance(response_id, str):
            with self._lock:
                self._live.add(response_id)

    # -- events (dispatcher thread) ------------------------------------------------
    def _item_started(self, event: dict[str, Any]) -> None:
        self._saw(event.get("response_id"))
        item = event.get("item") or {}
        if item.get("type") != "function_call" or event.get("response_id") in self._out_of_band:
            return
        self._record(
            str(item.get("call_id")),
            name=item.get("name"),
            item_id=item.get("id"),
            response_id=event.get("response_id"),
            state="added",
            started_at=rounded(time.time()),
        )

    def _arguments(self, event: dict[str, Any]) -> None:
        self._saw(event.get("response_id"))
        if event.get("response_id") in self._out_of_band:
            return
        self._record(
            str(event.get("call_id")),
            name=event.get("name"),
            item_id=event.get("item_id"),
            response_id=event.get("response_id"),
            arguments=event.get("arguments"),
            state="arguments",
        )

    def _response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response") or {}
        rid = response.get("id")
        self._saw(rid)
        with self._changed:
            self._active.discard(str(rid))
            self._changed.notify_all()
        if not isinstance(rid, str) or rid in self._out_of_band:
            self._out_of_band.discard(str(rid))
            return  # out of band: its calls are never answered into the conversation
        calls = [i for i in response.get("output") or [] if i.get("type") == "function_call"]
        if not calls:
            return
        for item in calls:
            self._record(
                str(item.get("call_id")),
                name=item.get("name"),
                item_id=item.get("id"),
                response_id=rid,
                arguments=item.get("arguments"),
                state="arguments",
            )
        self._record_round(
            rid,
            calls=sorted(str(i.get("call_id")) for i in calls),
            names={str(i.get("call_id")): i.get("name") for i in calls},
            done=True,
        )

    def _response_created(self, event: dict[str, Any]) -> None:
        """A response started in the conversation: every complete round is followed."""
        response = event.get("response") or {}
        rid = str(response.get("id"))
        self._saw(rid)
        if "conversation_id" in response and response["conversation_id"] is None:
            self._out_of_band.add(rid)
            return
        with self._changed:
            self._active.add(rid)
            followed = [
                k
                for k, rnd in self._rounds.items()
                if not rnd.get("followed")
                and rnd.get("done")
                and all(self._records.get(c, {}).get("state") == "answered" for c in calls_of(rnd))
            ]
            self._changed.notify_all()
        for k in followed:
            worker = self.registry.worker
            self._record_round(k, followed=True, by=worker, followed_epoch=self.epoch)

    def _item_added(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        item_id = item.get("id")
        with self._lock:
            expected, self._check_previous = self._check_previous, None
        if expected is not None:
            found = event.get("previous_item_id") or ""
            if found != expected:
                self.registry.defer(self.registry.lost_items_found, self, expected, found)
        if isinstance(item_id, str):
            with contextlib.suppress(redis.RedisError):
                self.registry.redis.hset(self._call_key, "last_item", item_id)
        if item.get("type") == "function_call_output":
            call_id = str(item.get("call_id"))
            with self._lock:
                twice = self._records.get(call_id, {}).get("state") == "answered"
            if twice:
                self.registry.defer(
                    self.registry.report,
                    CallAnsweredTwice(self.call_id, self.registry.worker, call_id, item_id),
                )
            self._record(
                call_id,
                state="answered",
                answered_at=rounded(time.time()),
                by=self.registry.worker,
                answered_epoch=self.epoch,
            )

    # -- asking (attach pool threads) ----------------------------------------------
    def retrieve(self, item_id: str, timeout: float) -> dict[str, Any] | None:
        """The server's copy of an item (``conversation.item.retrieve``); None if it
        is unknown (deleted) or the client closed - the report then says so."""
        try:
            item: dict[str, Any] = self.client.get_item(item_id, timeout=timeout, raw=True)
        except RealtimeError:
            return None
        return item


def _spec(t: Callable[..., Any] | ToolSpec) -> ToolSpec:
    return t if isinstance(t, ToolSpec) else build_spec(t)
