"""Calls across worker processes: a registry of live calls in Redis, with failover.

The app runs as several worker processes (gunicorn ``-w 3``). Any worker may create a
call; the call's **sideband** lives in exactly one of them at a time, the *holder*; any
worker can hang a call up; and when the holder dies (``SIGKILL``, OOM, a lost machine)
another worker re-attaches a sideband to the call while the browser keeps talking.
Only rtclient's public API is used: ``create_call``, ``hangup_call``,
``RealtimeClient(call_id=...)``, ``on(..., raw=True)``, ``get_item``,
``submit_tool_output`` and ``request_response``.

Why Redis: ownership is a **lease** - ``SET key token NX PX ttl`` claims it atomically,
the holder renews it, and if the holder dies the key simply expires; no coordinator,
no clean-up of a dead worker's rows. PostgreSQL could do the same with advisory locks
or ``SELECT ... FOR UPDATE SKIP LOCKED`` plus heartbeat timestamps, but expiry would be
ours to implement; Redis has it built in.

Keys (``rt`` is the ``prefix``)::

    rt:calls                  SET   the live call ids
    rt:call:<id>              HASH  caller (the browser session that created it: an
                                    opaque id, never the session cookie), created_by,
                                    created_at, owner, owner_pid, epoch,
                                    claimed_at, attached_at, seen_at (the holder's last
                                    sign of life: its claim, attach or latest renewal,
                                    or its detach if it released the lease),
                                    released_at/released_by (a lease let go, not
                                    expired), last_item (the newest conversation item
                                    the holder saw), previous_owner, failovers, ended_at
    rt:call:<id>:owner        STR   the lease: "<worker>#<nonce>", PX = lease_ttl;
                                    renewed by its holder every ``tick`` seconds
    rt:call:<id>:tools        HASH  tool call_id -> JSON {name, item_id, response_id,
                                    arguments, state: added|arguments|answered,
                                    started_at, answered_at, by, recovered}
    rt:call:<id>:rounds       HASH  response_id -> JSON {calls, done, followed, by}
    rt:caller:<caller>        ZSET  that session's calls (score +inf) and calls being
                                    created (score: when the reservation lapses)
    rt:workers                HASH  worker id -> JSON {pid, started_at, seen_at, held}
    rt:reports                LIST  JSON reports (newest first, the last 1000)

Whose call it is. A call belongs to the browser session that created it: the app
passes that session's ``caller`` id to ``start_call``, the registry stores it with the
call, and every per-call route asks ``caller_of(call_id)`` - the same answer in every
worker. ``start_call`` refuses (returns None) once a caller has
``max_calls_per_caller`` live calls: the count and the reservation of a place are one
Lua script, so two requests at once cannot both take the last place, and a call that
ended (whoever ended it) frees its place.

Who does what. Every worker runs one ``<name>-registry`` thread that, every ``tick``
(``lease_ttl / 4``): renews the leases it holds (compare-and-``PEXPIRE``, so a worker
that lost its lease - paused longer than the TTL - notices and detaches instead of
running tools next to the new holder); lets go of calls whose sideband closed (the
call ended, or the connection dropped: the next scan re-attaches if the call is still
up); and **scans** ``rt:calls`` for calls with no lease, claims each with
``SET NX PX`` (one Lua script: only if the call is still live; bumps ``epoch``) and
attaches a sideband on its attach pool. A killed holder's calls are re-attached within
about ``lease_ttl + tick + attach time`` (measured: ``bench/failover.py``). A worker
that shuts down (``close()``, run at exit: a deploy, a gunicorn restart) claims nothing
more, lets its tool rounds in progress finish (``drain_timeout``), then detaches and
*releases* its leases: its calls move at the next scan, with nothing run twice.

What is recorded, from the events the holder's sideband sees (``client.on``): each
function call when its item is added (``response.output_item.added``: call id, item
id, response id), its arguments (``response.function_call_arguments.done``), its
answer (the ``function_call_output`` item the server echoes in
``conversation.item.added`` - the output is *in the conversation*, stronger than
"sent"), each round's ``response.done``, and whether a response started after the
round was complete (``response.created``: the model has seen the outputs); no tool is
wrapped. So a new holder knows exactly which calls were started but never answered,
and which complete rounds never got their follow-up.

On re-attach the new holder **recovers**: a call with no answer is run again if its
tool is in ``idempotent`` (arguments from the record, or, if the holder died before
they were complete, from ``conversation.item.retrieve`` of the recorded item id), and
answered with an error output otherwise (running it twice could repeat its effect:
the model can tell the user, who can check). Then one new follow-up is requested
through the gate for the recovered rounds - a new request, never a replay of the dead
holder's ``response.create``. It then emits a typed :class:`CallsPossiblyLost` report:
while no sideband was attached (``gap_start`` .. ``gap_end``), function calls the
model made reached nobody, and the API offers no way to list them. If the first item
added after the re-attach names, as its ``previous_item_id``, an item the registry
never saw, the conversation grew during the gap: :class:`LostItemsFound` reports the
newest such item (retrieved by id: e.g. a function call nobody answered). Reports are
logged (WARNING), pushed to ``rt:reports`` and passed to ``on_report``. Never silent.

Known limits (see the README): an output the dead holder sent whose echo it did not
live to record is sent again by the new holder (a duplicate output item); a
follow-up ``response.create`` that was on the wire when the holder died is not seen
either, so the new holder requests another (the model may answer that round twice);
and a response still streaming when the new sideband attaches has its calls run by
the new sideband's tools as well as by recovery if the dead holder recorded them.
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

from rtclient import (
    CallNotFoundError,
    ClosedError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
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

# KEYS: owner lease, call hash, calls set. ARGV: token, ttl ms, worker, now, pid, call id.
# Returns {epoch, previous owner, its last sign of life, the newest item it saw, who
# released the lease ('' if it expired)}; {-1} if the call is no longer live, {0} if
# someone holds the lease.
_CLAIM = """
if redis.call('sismember', KEYS[3], ARGV[6]) == 0 then return {-1} end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local previous = redis.call('hmget', KEYS[2], 'owner', 'seen_at', 'last_item', 'released_by')
local epoch = redis.call('hincrby', KEYS[2], 'epoch', 1)
redis.call('hset', KEYS[2], 'owner', ARGV[3], 'owner_pid', ARGV[5], 'claimed_at', ARGV[4],
           'previous_owner', previous[1] or '', 'seen_at', ARGV[4])
redis.call('hdel', KEYS[2], 'released_at', 'released_by')
return {epoch, previous[1] or '', previous[2] or '', previous[3] or '', previous[4] or ''}
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
# KEYS: owner lease, call hash. ARGV: token, ttl ms, now. 1 if renewed, 0 if lost.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
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

    From ``gap_start`` (the previous holder's last lease renewal: the last moment it is
    known to have been alive; or the moment it detached, if it shut down and released
    the lease: ``handover="released"``) to ``gap_end`` (the new sideband ready), events
    reached no sideband: a function call the model made in that window is invisible
    to the app (the API has no "list items"). ``rerun``/``errored`` are the recorded
    calls that had no answer and were run again (idempotent tools) or answered with an
    error output; ``followups`` the rounds given a new follow-up request.
    """

    call_id: str
    previous_owner: str
    new_owner: str
    epoch: int
    handover: str  # "released" (the holder let go: shut down, sideband lost) or "expired"
    gap_start: float
    gap_end: float
    gap_seconds: float
    rerun: tuple[str, ...] = ()
    errored: tuple[str, ...] = ()
    followups: tuple[str, ...] = ()
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


Report = CallsPossiblyLost | LostItemsFound


# ---------------------------------------------------------------------- the registry
@dataclasses.dataclass
class _Held:
    """A call whose lease this worker holds; ``client`` is None while attaching."""

    token: str
    epoch: int
    client: RealtimeClient | None = None
    recorder: _Recorder | None = None


@dataclasses.dataclass(frozen=True)
class _Claim:
    epoch: int
    previous_owner: str
    seen_at: float
    last_item: str
    released: bool = False


class CallRegistry:
    """The live calls of every worker, shared in Redis; this worker's sidebands.

    Thread-safe. ``start()`` begins renewing, scanning and claiming (call it in each
    worker process, after the fork: not in a gunicorn ``--preload`` master).
    ``close()`` detaches this worker's sidebands and releases their leases, so another
    worker takes each call over at its next scan (a graceful restart loses nothing).
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
        self.prefix = prefix
        self.on_report = on_report
        self.drain_timeout = drain_timeout
        self.max_calls_per_caller = max_calls_per_caller
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._reserve = self.redis.register_script(_RESERVE)
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix=f"{name}-tool")
        self._attacher = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-attach")
        self.loop_thread = LoopThread(f"{name}-loop")
        self._janitor = threading.Thread(target=self._run, name=f"{name}-registry", daemon=True)
        self._name = name
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
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
        try:
            claim, token = self._register(call.call_id, caller, place)
            if not self._attach(call.call_id, token, claim, recover=False):
                raise RealtimeError(f"the sideband of {short_id(call.call_id)} did not attach")
        except (redis.RedisError, RealtimeError):
            # A call without its tools (or that no worker could take over) is no use to
            # the user: end it, report the failure. Its place is free once it has ended.
            with contextlib.suppress(RealtimeError):
                hangup_call(call.call_id, api_key=self.api_key, base_url=self.base_url)
            with contextlib.suppress(redis.RedisError):
                self._end(call.call_id)
                self.redis.zrem(self.key("caller", caller), place)
            raise
        return call.call_id, call.sdp

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
            try:
                self._renew_all()
                self._reap()
                self._scan()
                self._heartbeat()
            except redis.RedisError as exc:
                # Redis down: nobody can claim, and our sidebands keep working.
                log.warning("registry: %s", exc)
            except Exception:
                log.exception("registry: tick failed")
            self._stop.wait(self.tick)

    def _renew_all(self) -> None:
        with self._lock:
            held = [(cid, h.token) for cid, h in self._held.items()]
        if not held:
            return
        pipe = self.redis.pipeline(transaction=False)
        now = str(time.time())
        ttl = int(self.lease_ttl * 1000)
        for call_id, token in held:
            self._renew(
                keys=[self.key("call", call_id, "owner"), self.key("call", call_id)],
                args=[token, ttl, now],
                client=pipe,
            )
        for (call_id, token), renewed in zip(held, pipe.execute(), strict=True):
            if not renewed:
                # Paused past the TTL, and maybe claimed by another worker already: two
                # sidebands must never run one call's tools. Detach; the scan decides.
                log.warning("registry: lost the lease of %s; detaching", short_id(call_id))
                self._drop(call_id, token)

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
        if not candidates:
            return
        pipe = self.redis.pipeline(transaction=False)
        for call_id in candidates:
            pipe.exists(self.key("call", call_id, "owner"))
        orphans = [c for c, held in zip(candidates, pipe.execute(), strict=True) if not held]
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
            held = len(self._held)
        now = time.time()
        info = {"pid": os.getpid(), "started_at": self.started_at, "seen_at": now, "held": held}
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
    def _register(self, call_id: str, caller: str, place: str) -> tuple[_Claim, str]:
        """A new call: live, with this worker's lease, ``caller``'s (in the place
        reserved for it), in one transaction (a scan in another worker never sees it
        live without a holder, nor a caller's count without it)."""
        token = f"{self.worker}#{uuid.uuid4().hex[:12]}"
        now = time.time()
        with self._lock:
            if self._closing:
                raise RealtimeError("the registry is closing")
            self._held[call_id] = _Held(token, 1)
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
        token = f"{self.worker}#{uuid.uuid4().hex[:12]}"
        ttl_ms = int(self.lease_ttl * 1000)
        result = self._claim(
            keys=[
                self.key("call", call_id, "owner"),
                self.key("call", call_id),
                self.key("calls"),
            ],
            args=[token, ttl_ms, self.worker, time.time(), os.getpid(), call_id],
        )
        epoch = int(result[0])
        if epoch <= 0:
            return None, token
        claim = _Claim(
            epoch, str(result[1]), float(result[2] or 0.0), str(result[3]), bool(result[4])
        )
        with self._lock:
            closed = self._closing
            if not closed:
                self._held[call_id] = _Held(token, epoch)
        if closed:
            self._let_go(call_id, token)
            return None, token
        return claim, token

    def _attach_or_let_go(self, call_id: str, token: str, claim: _Claim) -> None:
        try:
            self._attach(call_id, token, claim, recover=True)
        except Exception:
            log.exception("registry: attaching to %s failed", short_id(call_id))
            self._drop(call_id, token)

    def _attach(self, call_id: str, token: str, claim: _Claim, *, recover: bool) -> bool:
        """Attach a sideband to ``call_id`` under the lease ``token``; recover if asked.
        False if the lease was lost meanwhile or the call has ended."""
        client = RealtimeClient(
            call_id=call_id,  # a sideband: attach to the browser's call
            api_key=self.api_key,
            base_url=self.base_url,
            tools=self.tools,
            executor=self.pool,
            loop_thread=self.loop_thread,
        )
        previous = claim.last_item if recover else None
        recorder = _Recorder(self, call_id, client, check_previous=previous)
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
            if h is None or h.token != token:
                h = None
            else:
                h.client, h.recorder = client, recorder
        if h is None:  # lost the lease while attaching
            client.close()
            return False
        self.redis.hset(
            self.key("call", call_id),
            mapping={
                "attached_at": attached_at,
                "seen_at": attached_at,  # alive, attached: a gap starts after this
                "owner": self.worker,
                "owner_pid": os.getpid(),
            },
        )
        if recover:
            self.redis.hincrby(self.key("call", call_id), "failovers", 1)
            self._recover(call_id, client, recorder, claim, attached_at)
        return True

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
            self._release(keys=keys, args=[token, detached_at or time.time(), self.worker])

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
        pipe.hset(self.key("call", call_id), "ended_at", time.time())
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
        """Answer the recorded calls that had no answer; one new follow-up; report."""
        records, rounds = recorder.load()
        rerun: list[str] = []
        errored: list[str] = []
        for record in records.values():
            if record.get("state") == "answered":
                continue
            output, how = self._answer(client, recorder, record)
            (rerun if how == "rerun" else errored).append(record["call_id"])
            recorder.note_recovered(record["call_id"], how)
            client.submit_tool_output(record["call_id"], output)
        wanted = self.wants_followup
        pending = [rid for rid, r in rounds.items() if not r.get("followed") and wanted(r)]
        unrecorded = {r.get("response_id") for r in records.values()} - set(rounds) - {None}
        pending = sorted({*pending, *(str(rid) for rid in unrecorded)})
        if pending:
            recorder.rounds_recovered(pending)
            client.request_response(reason=f"failover:{','.join(pending)}")
        gap_start = claim.seen_at or attached_at
        self.report(
            CallsPossiblyLost(
                call_id=call_id,
                previous_owner=claim.previous_owner,
                new_owner=self.worker,
                epoch=claim.epoch,
                handover="released" if claim.released else "expired",
                gap_start=gap_start,
                gap_end=attached_at,
                gap_seconds=round(attached_at - gap_start, 3),
                rerun=tuple(rerun),
                errored=tuple(errored),
                followups=tuple(pending),
            )
        )

    def wants_followup(self, rnd: dict[str, Any]) -> bool:
        """Whether a round asks for a follow-up (``@tool(start_response=False)`` does not)."""
        names = [str(rnd.get("names", {}).get(c)) for c in rnd.get("calls", [])]
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
        """Run ``fn`` off the dispatcher thread (it may wait on the client)."""
        with contextlib.suppress(RuntimeError):  # closing: nothing left to report to
            self._attacher.submit(fn, *args)


class _Recorder:
    """What one call's holder writes to the registry, from its sideband's events.

    The callbacks run on the client's dispatcher thread: they only write to Redis
    (loopback, sub-millisecond) and never wait on the client.
    """

    def __init__(
        self,
        registry: CallRegistry,
        call_id: str,
        client: RealtimeClient,
        *,
        check_previous: str | None,
    ) -> None:
        self.registry = registry
        self.call_id = call_id
        self.client = client
        self._tools_key = registry.key("call", call_id, "tools")
        self._rounds_key = registry.key("call", call_id, "rounds")
        self._call_key = registry.key("call", call_id)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, dict[str, Any]] = {}
        self._rounds: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()  # responses created, not done (as this one saw)
        self._out_of_band: set[str] = set()  # their calls are not the conversation's
        self._check_previous = check_previous  # the newest item the last holder saw
        for kind, handler in (
            ("response.output_item.added", self._item_started),
            ("response.function_call_arguments.done", self._arguments),
            ("response.done", self._response_done),
            ("response.created", self._response_created),
            ("conversation.item.added", self._item_added),
        ):
            client.on(kind, handler, raw=True)  # the dicts: no parsing, no openai import

    def load(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The records the previous holders left (merged under what this one saw)."""
        r = self.registry.redis
        tools = {str(k): json.loads(v) for k, v in r.hgetall(self._tools_key).items()}
        rounds = {str(k): json.loads(v) for k, v in r.hgetall(self._rounds_key).items()}
        with self._lock:
            for call_id, record in tools.items():
                self._records.setdefault(call_id, record)
            for rid, rnd in rounds.items():
                self._rounds.setdefault(rid, rnd)
            return dict(self._records), {k: dict(v) for k, v in self._rounds.items()}

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

    # -- writing -------------------------------------------------------------------
    def _save(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(redis.RedisError):
            self.registry.redis.hset(self._tools_key, record["call_id"], json.dumps(record))

    def _save_round(self, rid: str, rnd: dict[str, Any]) -> None:
        with contextlib.suppress(redis.RedisError):
            self.registry.redis.hset(self._rounds_key, rid, json.dumps(rnd))

    def _record(self, call_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._records.setdefault(
                call_id,
                {"call_id": call_id, "state": "added", "started_at": time.time()},
            )
            for k, v in fields.items():
                if v is not None:
                    record[k] = v
            self._changed.notify_all()
            return dict(record)

    def note_recovered(self, call_id: str, how: str) -> None:
        self._save(self._record(call_id, recovered=how))

    def rounds_recovered(self, response_ids: list[str]) -> None:
        """Rounds the new holder completed: followed by the next response created."""
        with self._lock:
            for rid in response_ids:
                rnd = self._rounds.setdefault(rid, {"calls": [], "followed": False})
                rnd["done"] = True
                mine = (c for c, r in self._records.items() if r.get("response_id") == rid)
                rnd["calls"] = sorted({*rnd.get("calls", []), *mine})

    # -- events (dispatcher thread) ------------------------------------------------
    def _item_started(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") != "function_call" or event.get("response_id") in self._out_of_band:
            return
        record = self._record(
            str(item.get("call_id")),
            name=item.get("name"),
            item_id=item.get("id"),
            response_id=event.get("response_id"),
        )
        self._save(record)

    def _arguments(self, event: dict[str, Any]) -> None:
        if event.get("response_id") in self._out_of_band:
            return
        call_id = str(event.get("call_id"))
        with self._lock:
            answered = self._records.get(call_id, {}).get("state") == "answered"
        record = self._record(
            call_id,
            name=event.get("name"),
            item_id=event.get("item_id"),
            response_id=event.get("response_id"),
            arguments=event.get("arguments"),
            state=None if answered else "arguments",
        )
        self._save(record)

    def _response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response") or {}
        rid = response.get("id")
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
            with self._lock:
                answered = self._records.get(str(item.get("call_id")), {}).get("state")
            self._save(
                self._record(
                    str(item.get("call_id")),
                    name=item.get("name"),
                    item_id=item.get("id"),
                    response_id=rid,
                    arguments=item.get("arguments"),
                    state=None if answered in ("answered", "arguments") else "arguments",
                )
            )
        with self._lock:
            rnd = self._rounds.setdefault(rid, {"calls": [], "followed": False})
            rnd["calls"] = sorted({*rnd["calls"], *(str(i.get("call_id")) for i in calls)})
            rnd["names"] = {
                **rnd.get("names", {}),
                **{str(i.get("call_id")): i.get("name") for i in calls},
            }
            rnd["done"] = True
            saved = dict(rnd)
            self._changed.notify_all()
        self._save_round(rid, saved)

    def _response_created(self, event: dict[str, Any]) -> None:
        """A response started in the conversation: every complete round is followed."""
        response = event.get("response") or {}
        rid = str(response.get("id"))
        if "conversation_id" in response and response["conversation_id"] is None:
            self._out_of_band.add(rid)
            return
        with self._changed:
            self._active.add(rid)
            followed = {
                rid: rnd
                for rid, rnd in self._rounds.items()
                if not rnd.get("followed")
                and rnd.get("done")
                and all(self._records.get(c, {}).get("state") == "answered" for c in rnd["calls"])
            }
            for rnd in followed.values():
                rnd["followed"], rnd["by"] = True, self.registry.worker
            saved = {k: dict(rnd) for k, rnd in followed.items()}
            self._changed.notify_all()
        for k, rnd in saved.items():
            self._save_round(k, rnd)

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
            record = self._record(
                str(item.get("call_id")),
                state="answered",
                answered_at=time.time(),
                by=self.registry.worker,
            )
            self._save(record)

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
