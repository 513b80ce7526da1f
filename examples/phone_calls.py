"""Phone calls for the examples: what ``POST /webhooks/openai`` does, for Flask and Django.

The project's SIP trunk points at OpenAI; each call rings as a signed webhook to this
route, which answers it with the shop's assistant. :meth:`PhoneLine.handle` takes the
raw body and the headers and returns ``(status, json)``:

1. **Verify** (``rtclient.verify_webhook``, the ``openai`` package's verifier, secret
   ``OPENAI_WEBHOOK_SECRET``): a forged or stale delivery is ``400`` and nothing else.
2. Another event, or the same call announced for the other API (GPT-Live also sends
   ``live.transport.incoming``; this app answers through the Realtime API): ``200``,
   ignored - the first accept decides the API, and this app accepts Realtime only.
3. **Once**: a delivery repeated (a retry, a duplicate, another worker's copy) is
   ``200`` and dropped. The claim is by webhook id and call id, in this process
   (``rtclient.OnceOnly``) or, with ``REDIS_URL``, in Redis (:class:`RedisOnce`), so
   several gunicorn workers accept each call once.
4. **Screen**: ``reject_when(call)`` returns a SIP status to reject with, or None. The
   default rejects callers whose ``From`` contains one of ``RT_PHONE_REJECT_FROM``
   (comma-separated) with 603 Decline, and says 486 Busy Here past
   ``RT_PHONE_MAX_CALLS`` (default 10) live phone calls in this process.
5. **Answer** (``rtclient.answer_call``): accept with the app's session config and
   tools, attach the sideband (tools on the app's pool, responses through the gate),
   and greet the caller. Keypresses are logged; ``0`` transfers the call to
   ``RT_PHONE_OPERATOR`` (a ``tel:`` or ``sip:`` URI) when it is set.

With ``REDIS_URL`` the examples pass their shared registry (``calls_registry.py``): an
answered call is then every worker's, under a lease like a browser's call - if the
worker holding its sideband dies, another one attaches, runs the tool call it was
running again if it is idempotent, and keeps the keypad; the greeting is never asked
for twice.

A call that is already gone when accepted (the caller hung up, a retry after the answer)
is ``200``: retrying cannot help. Any other failure gives the claim back and answers
``502``, so the API's retry can try again.

The caller's phone number is the INVITE's ``From`` header: whoever dials writes it.
It is fine for screening out a nuisance; never for deciding who may do what.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rtclient import (
    CallNotFoundError,
    Dtmf,
    IncomingCall,
    LoopThread,
    OnceOnly,
    RealtimeClient,
    RealtimeError,
    WebhookVerificationError,
    answer_call,
    refer_call,
    reject_call,
    verify_webhook,
)
from rtclient.logs import short_id
from rtclient.sip import Once, watch_dtmf

log = logging.getLogger(__name__)

GREETING = "Greet the caller briefly and ask for their order number."
PHONE = "phone:"  # a phone call's caller in the registry: one per call, no browser limit
BUSY_HERE = 486
DECLINE = 603


class PhoneLine:
    """The phone calls this process answered: call id -> its sideband client.

    Thread-safe. ``runtime()`` returns the app's loop thread and tool pool (shared
    with its browser calls), started: it is called when a call is to be answered, so
    an app that never gets a call starts nothing. ``close()`` hangs every call up -
    unless the calls live in ``registry`` (a ``calls_registry.CallRegistry``): then
    its own ``close()`` hands them to another worker, and a worker's restart drops
    no caller.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        session: Mapping[str, Any],
        tools: Iterable[Any],
        runtime: Callable[[], tuple[LoopThread, concurrent.futures.Executor]],
        secret: str | None = None,
        once: Once | None = None,
        reject_when: Callable[[IncomingCall], int | None] | None = None,
        operator: str | None = None,
        registry: Any = None,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.session = dict(session)
        self.tools = list(tools)
        self.runtime = runtime
        self.secret = secret if secret is not None else os.environ.get("OPENAI_WEBHOOK_SECRET")
        self.once: Once = once if once is not None else OnceOnly()
        self.reject_when = reject_when or self.screen
        self.operator = operator if operator is not None else os.environ.get("RT_PHONE_OPERATOR")
        self.reject_from = [
            s.strip() for s in os.environ.get("RT_PHONE_REJECT_FROM", "").split(",") if s.strip()
        ]
        self.max_calls = int(os.environ.get("RT_PHONE_MAX_CALLS") or 10)
        self._lock = threading.Lock()
        self._calls: dict[str, RealtimeClient] = {}
        self.registry = registry
        if registry is not None:  # the keypad on every sideband of a phone call, anywhere
            registry.on_sideband = self._sideband

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """One webhook delivery (the raw body, the request's headers)."""
        if not self.secret:
            return 503, {"error": "the server has no OPENAI_WEBHOOK_SECRET configured"}
        try:
            call = verify_webhook(body, headers, secret=self.secret)
        except WebhookVerificationError as exc:
            log.warning("webhook refused: %s", type(exc).__name__)
            return 400, {"error": type(exc).__name__}
        if call is None or call.api != "realtime":
            return 200, {"ignored": True}
        keys = call.dedupe_keys()
        if not self.once.first(*keys):
            log.info("webhook for %s delivered again: ignored", short_id(call.call_id))
            return 200, {"call_id": call.call_id, "duplicate": True}
        try:
            return self._answer_or_reject(call)
        except CallNotFoundError:
            log.info("phone call %s was gone before it was answered", short_id(call.call_id))
            return 200, {"call_id": call.call_id, "gone": True}
        except RealtimeError as exc:
            self.once.forget(*keys)  # a retry may succeed where this failed
            log.warning("phone call %s not answered: %s", short_id(call.call_id), exc)
            return 502, {"error": type(exc).__name__}

    def screen(self, call: IncomingCall) -> int | None:
        """The default ``reject_when``: 603 for a blocked caller, 486 when busy."""
        caller = call.caller or ""
        if any(blocked in caller for blocked in self.reject_from):
            return DECLINE
        if len(self.live()) >= self.max_calls:
            return BUSY_HERE
        return None

    def _answer_or_reject(self, call: IncomingCall) -> tuple[int, dict[str, Any]]:
        status = self.reject_when(call)
        if status is not None:
            reject_call(call, status_code=status, **self._api())
            log.info("phone call %s rejected (%s)", short_id(call.call_id), status)
            return 200, {"call_id": call.call_id, "rejected": status}
        _, pool = self.runtime()
        registry = self.registry
        how: dict[str, Any]
        if registry is None:
            how = {"greeting": GREETING, "on_dtmf": lambda key: self._pressed(call.call_id, key)}
        else:  # every worker's call: the registry's sideband, its hook watches the keypad
            how = {
                "attach": lambda call_id: registry.adopt_call(
                    call_id, caller=PHONE + call_id, greeting=GREETING
                )
            }
        client = answer_call(
            call,
            session=self.session,  # the instructions and tools: the app's, not the caller's
            tools=self.tools,
            executor=pool,
            **how,
            **self._api(),
        )
        with self._lock:
            self._calls[call.call_id] = client
        log.info("phone call %s answered", short_id(call.call_id))
        return 200, {"call_id": call.call_id, "answered": True}

    def _sideband(self, call_id: str, caller: str, client: RealtimeClient) -> None:
        """The registry is attaching ``client`` to ``call_id`` (here first, or taking it
        over from a worker that died): a phone call's keypad is watched on it."""
        if caller.startswith(PHONE):
            watch_dtmf(client, lambda key: self._pressed(call_id, key))

    def _pressed(self, call_id: str, key: Dtmf) -> None:
        """A keypress (on the sideband's dispatcher thread: hand slow work off)."""
        log.info("phone call %s: the caller pressed %s", short_id(call_id), key.key)
        if key.key == "0" and self.operator:
            _, pool = self.runtime()
            pool.submit(self.transfer, call_id, self.operator)

    def transfer(self, call_id: str, target_uri: str) -> None:
        """Hand the call to a person (SIP REFER); the session then ends."""
        try:
            refer_call(call_id, target_uri, **self._api())
        except RealtimeError as exc:
            log.warning("phone call %s not transferred: %s", short_id(call_id), exc)

    def _api(self) -> dict[str, Any]:
        loop_thread, _ = self.runtime()
        return {"api_key": self.api_key, "base_url": self.base_url, "loop_thread": loop_thread}

    def live(self) -> list[str]:
        """The phone calls still attached (those that ended are forgotten)."""
        with self._lock:
            ended = [cid for cid, c in self._calls.items() if c.closed]
            for call_id in ended:
                self._calls.pop(call_id).close()
            return list(self._calls)

    def get(self, call_id: str) -> RealtimeClient | None:
        with self._lock:
            return self._calls.get(call_id)

    def close(self) -> None:
        with self._lock:
            clients, self._calls = list(self._calls.values()), {}
        if self.registry is not None:
            return  # the registry's close() hands them over: the callers stay on the line
        for client in clients:
            try:
                client.hangup()
            except RealtimeError:
                client.close()


class RedisOnce:
    """``rtclient.sip.Once`` in Redis: every worker shares the claims (each key with
    ``SET NX`` semantics and an expiry; the keys of one claim are taken together)."""

    _CLAIM = """
    for i, key in ipairs(KEYS) do
        if redis.call('exists', key) == 1 then return 0 end
    end
    for i, key in ipairs(KEYS) do redis.call('set', key, '1', 'EX', ARGV[1]) end
    return 1
    """

    def __init__(self, redis_url: str, *, prefix: str = "rt:once", ttl: int = 72 * 3600) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2.0)
        self.prefix = prefix
        self.ttl = ttl
        self._claim = self.redis.register_script(self._CLAIM)

    def first(self, *keys: str) -> bool:
        return bool(self._claim(keys=[f"{self.prefix}:{k}" for k in keys], args=[self.ttl]))

    def forget(self, *keys: str) -> None:
        self.redis.delete(*(f"{self.prefix}:{k}" for k in keys))
