"""Fencing for the call registry (``calls_registry.py``): two holders never answer one call.

A lease alone does not stop a holder that *thinks* it still holds a call: one cut off
from Redis (its process alive, its sideband up) or paused past its lease (SIGSTOP, a
long GC pause) would go on sending tool outputs and ``response.create`` next to the
worker that took the call over, and the model would answer one question twice. So a
holder fences itself, in :class:`Fence`, the ``send_guard`` of its sideband
(``RealtimeClient(send_guard=...)``: called on the loop thread at the last moment
before each event is written; if it raises, nothing is written):

* **The deadline.** Every confirmation of the lease (the claim, each renewal, each
  write-ahead below) moves the deadline to *the moment that confirmation was sent* +
  ``fence_after`` (D), by the holder's own monotonic clock. Past it, every send is
  refused, for good: the holder detaches (the registry thread or the guard notices,
  whichever comes first). ``fence_after`` is strictly shorter than the lease TTL L
  with room for the clock-drift bound (D(1+rho) < L(1-rho)), so a holder is fenced
  before Redis lets its lease expire, in real time, whatever the two clocks' rates.
* **Write-ahead, fenced by Redis.** A tool output or a create is written only after
  one Lua script has checked, in Redis, that the lease still holds this holder's token
  and recorded what is about to be sent: the output's ``sent_epoch`` on the call's
  record (refused if the call is already answered, or was sent under another epoch);
  the create on each complete round it follows (``create``, ``create_epoch``). The
  script confirms the lease too. A holder that cannot reach Redis sends nothing
  (:class:`LeaseFenced`); a successor reads what was sent, even when the holder could
  not record its echo, and never sends it again.
* **The fencing token** is the call's ``epoch``, bumped by every claim; the lease's
  value starts with it (``"<epoch>:<worker>#<nonce>"``) and every record names the
  epoch that wrote it (``epoch``, ``sent_epoch``, ``answered_epoch``,
  ``recovered_epoch``, ``create_epoch``, ``followed_epoch``).

The one residual window: a pause that lands between a passed check and the socket
write (the WebSocket transport's outbox hop: one turn of the loop). Whatever was
passed then goes out when the process wakes, late - but it was recorded first, so the
successor does not send it again (nothing twice; the output or create reaches the
model once, late). What is not closed: an event recorded as sent that never reaches
the wire (the process dies in that window) - the successor reports it
(``CallsPossiblyLost.unconfirmed``), it never guesses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

# KEYS: lease, call hash, tools hash. ARGV: token, ttl ms, now, epoch, tool call id,
# event id. 'ok': recorded as sent under this epoch, the lease confirmed; 'answered':
# an output for this call is in the conversation or was sent under another epoch;
# 'lost': the lease is not ours.
SEND_OUTPUT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 'lost' end
local old = redis.call('hget', KEYS[3], ARGV[5])
local rec = old and cjson.decode(old) or {call_id = ARGV[5], state = 'added'}
local epoch = tonumber(ARGV[4])
if rec.state == 'answered' or (rec.sent_epoch and rec.sent_epoch ~= epoch) then
  return 'answered'
end
if not rec.sent_epoch then
  rec.sent_epoch = epoch
  rec.sent_at = tonumber(ARGV[3])
  rec.sent_event = ARGV[6]
  redis.call('hset', KEYS[3], ARGV[5], cjson.encode(rec))
end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('hincrby', KEYS[2], 'confirms', 1)
redis.call('hset', KEYS[2], 'seen_at', ARGV[3])
return 'ok'
"""
# KEYS: lease, call hash, rounds hash. ARGV: token, ttl ms, now, epoch, event id, then
# the response ids of the complete rounds this create follows. 'ok' or 'lost'.
SEND_CREATE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 'lost' end
for i = 6, #ARGV do
  local old = redis.call('hget', KEYS[3], ARGV[i])
  local rnd = old and cjson.decode(old) or {}
  if not rnd.create then
    rnd.create = ARGV[5]
    rnd.create_epoch = tonumber(ARGV[4])
    rnd.create_at = tonumber(ARGV[3])
    redis.call('hset', KEYS[3], ARGV[i], cjson.encode(rnd))
  end
end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('hincrby', KEYS[2], 'confirms', 1)
redis.call('hset', KEYS[2], 'seen_at', ARGV[3])
return 'ok'
"""
# KEYS: a hash. ARGV: field, JSON patch. Merges the patch into the JSON record the way
# merge() does: observations only add (a stale holder's write never undoes a newer
# one). Returns the merged record.
MERGE = """
local old = redis.call('hget', KEYS[1], ARGV[1])
local rec = old and cjson.decode(old) or {}
local patch = cjson.decode(ARGV[2])
local rank = {added = 1, arguments = 2, answered = 3}
for k, v in pairs(patch) do
  if k == 'state' then
    if (rank[v] or 0) > (rank[rec.state] or 0) then rec.state = v end
  elseif k == 'calls' then
    local seen, union = {}, {}
    for _, list in ipairs({rec.calls or {}, v}) do
      for _, c in ipairs(list) do
        if not seen[c] then seen[c] = true; table.insert(union, c) end
      end
    end
    table.sort(union)
    rec.calls = union
  elseif k == 'names' then
    local names = rec.names or {}
    for c, n in pairs(v) do if names[c] == nil then names[c] = n end end
    rec.names = names
  elseif type(v) == 'boolean' then
    rec[k] = rec[k] == true or v
  elseif rec[k] == nil or rec[k] == cjson.null then
    rec[k] = v
  end
end
local merged = cjson.encode(rec)
redis.call('hset', KEYS[1], ARGV[1], merged)
return merged
"""
_STATE_RANK = {"added": 1, "arguments": 2, "answered": 3}


def merge(record: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`MERGE` in Python (the holder's copy in memory): ``state`` only advances,
    ``calls`` is a union, ``names`` and every other field keep their first value, a
    flag once true stays true."""
    for k, v in patch.items():
        if v is None:
            continue
        if k == "state":
            if _STATE_RANK.get(v, 0) > _STATE_RANK.get(record.get("state"), 0):
                record[k] = v
        elif k == "calls":
            record[k] = sorted({*calls_of(record), *v})
        elif k == "names":
            record[k] = {**v, **(record.get("names") or {})}
        elif isinstance(v, bool):
            record[k] = record.get(k) is True or v
        elif record.get(k) is None:
            record[k] = v
    return record


def calls_of(rnd: Mapping[str, Any]) -> list[str]:
    """A round's call ids (Redis's cjson stores an empty list as ``{}``)."""
    calls = rnd.get("calls") or []
    return [str(c) for c in calls] if isinstance(calls, list) else []


def rounded(t: float) -> float:
    """A timestamp as the records keep it: to the millisecond (cjson keeps 14 digits)."""
    return round(t, 3)


class LeaseFenced(Exception):
    """The holder's lease may be lost: it sends nothing more, and detaches."""


class AlreadyAnswered(Exception):
    """An output for this call is in the conversation, or was sent by another holder
    (or by this one's recovery): a second one is not sent."""


class Fence:
    """The send guard of one held call, and its deadline.

    ``__call__`` is the client's ``send_guard`` (loop thread). ``on_fenced(why)`` is
    called once, when the holder fences itself (it must not block: the registry
    detaches on another thread); ``on_refused()`` after each event it refused for that.
    ``complete_rounds()`` names the rounds a create sent
    now follows; ``note_sent(call_id)`` / ``note_create(rids, event_id)`` tell the
    holder's recorder what went out.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        keys: Mapping[str, str],
        token: str,
        epoch: int,
        ttl_ms: int,
        fence_after: float,
        confirmed_at: float,
        on_fenced: Callable[[str], None],
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = client
        self._send_output = client.register_script(SEND_OUTPUT)
        self._send_create = client.register_script(SEND_CREATE)
        self._keys = dict(keys)  # lease, call, tools, rounds
        self.token = token
        self.epoch = epoch
        self._ttl_ms = ttl_ms
        self.fence_after = fence_after
        self._on_fenced = on_fenced
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._deadline = confirmed_at + fence_after
        self._fenced: str | None = None
        self._recovery: dict[str, bool] = {}  # calls recovery answers: sent yet?
        self.complete_rounds: Callable[[], list[str]] = list
        self.note_sent: Callable[[str], None] = lambda call_id: None
        self.note_create: Callable[[list[str], str], None] = lambda rids, event_id: None

    # -- the deadline --------------------------------------------------------------
    def confirmed(self, sent_at: float) -> None:
        """A confirmation sent at ``sent_at`` (monotonic) succeeded."""
        with self._lock:
            if self._fenced is None:
                self._deadline = max(self._deadline, sent_at + self.fence_after)

    def remaining(self, now: float | None = None) -> float:
        """Seconds to the deadline (negative: past it)."""
        with self._lock:
            return self._deadline - (time.monotonic() if now is None else now)

    @property
    def fenced(self) -> str | None:
        """Why this holder fenced itself, or None."""
        return self._fenced

    def fence(self, why: str) -> bool:
        """Refuse every send from now on; True the first time (then ``on_fenced`` ran)."""
        with self._lock:
            if self._fenced is not None:
                return False
            self._fenced = why
        self._on_fenced(why)
        return True

    def check(self, now: float | None = None) -> None:
        """Raise :class:`LeaseFenced` if fenced or past the deadline (then fence)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            overdue = self._fenced is None and now >= self._deadline
            late = now - self._deadline
        if overdue:
            self.fence(f"lease not confirmed within {self.fence_after:g}s (+{late:.3f}s)")
        why = self._fenced
        if why is not None:
            raise LeaseFenced(why)

    # -- recovery's answers --------------------------------------------------------
    def claim_for_recovery(self, call_id: str, sent_here: bool) -> bool:
        """Recovery will answer ``call_id``: from now on only one output for it leaves
        this holder. False if this holder already sent one (``sent_here``)."""
        with self._lock:
            if sent_here or call_id in self._recovery:
                return False
            self._recovery[call_id] = False
            return True

    # -- the guard (loop thread) ---------------------------------------------------
    def __call__(self, event: Mapping[str, Any]) -> None:
        started = time.monotonic()
        try:
            self._guard(event, started)
        except LeaseFenced:
            self._on_refused()
            raise

    def _guard(self, event: Mapping[str, Any], started: float) -> None:
        self.check(started)
        kind = event.get("type")
        item = event.get("item") if kind == "conversation.item.create" else None
        if isinstance(item, Mapping) and item.get("type") == "function_call_output":
            self._output(str(item.get("call_id")), str(event.get("event_id")), started)
        elif kind == "response.create":
            self._create(str(event.get("event_id")), started)

    def _output(self, call_id: str, event_id: str, started: float) -> None:
        with self._lock:
            if self._recovery.get(call_id):
                raise AlreadyAnswered(f"{call_id} was answered by recovery")
        keys = [self._keys[k] for k in ("lease", "call", "tools")]
        args = [self.token, self._ttl_ms, rounded(time.time()), self.epoch, call_id, event_id]
        result = self._run(self._send_output, keys, args)
        if result == "answered":
            raise AlreadyAnswered(f"{call_id} is already answered")
        self.confirmed(started)
        with self._lock:
            if call_id in self._recovery:
                self._recovery[call_id] = True
        self.note_sent(call_id)

    def _create(self, event_id: str, started: float) -> None:
        rids = self.complete_rounds()
        keys = [self._keys[k] for k in ("lease", "call", "rounds")]
        args = [self.token, self._ttl_ms, rounded(time.time()), self.epoch, event_id, *rids]
        self._run(self._send_create, keys, args)
        self.confirmed(started)
        self.note_create(rids, event_id)

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> str:
        """One write-ahead script; fences (and raises) if Redis says the lease is not
        ours, or cannot be asked."""
        try:
            result = str(script(keys=keys, args=args))
        except redis.RedisError as exc:
            why = f"Redis did not confirm the lease: {type(exc).__name__}"
            self.fence(why)
            raise LeaseFenced(why) from exc
        if result == "lost":
            why = "the lease is no longer this holder's"
            self.fence(why)
            raise LeaseFenced(why)
        return result
