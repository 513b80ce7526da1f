"""The live calls of this process and their tool, which reads the Django ORM.

Each browser holds its own WebRTC call; this module creates it with the server's key,
instructions and tools (``rtclient.create_call``) and attaches one sideband client per
call (``RealtimeClient(call_id=...)``). All the sidebands share one ``LoopThread`` and
one tool pool, started with the first call; the registry maps call id -> client, and
call id -> the *caller* that created it (an opaque id kept in that browser's Django
session: ``views.py`` answers 403 to any other). A caller may hold
``RTCLIENT["max_calls_per_session"]`` live calls; ``start_call`` refuses more.

Why the tool is easy here and awkward with an async SDK: Django's ORM is synchronous
and refuses to run inside an event loop (``SynchronousOnlyOperation``), so an asyncio
client's tool would need ``sync_to_async`` wrappers. rtclient runs tools on a plain
``ThreadPoolExecutor``, so a tool just uses the ORM.

The one thing to remember: Django opens a database connection per thread and closes it
at the end of each *request* (the ``request_started``/``request_finished`` signals). A
tool thread serves no request, so nothing would ever close its connection; the tool
does what those signals do, ``close_old_connections()``, when it is finished.

Phone calls (``POST /webhooks/openai``, ``views.openai_webhook``) are answered by
:func:`phone_line` - ``examples/phone_calls.py``, shared with the Flask example - with
the same session and tool, on the same loop thread and pool; with ``REDIS_URL`` a
repeated delivery is recognised by every worker (``RedisOnce``).

Several worker processes (gunicorn, ``shop/wsgi.py``): set ``REDIS_URL`` and the calls
live in the registry every worker shares (``examples/calls_registry.py``, as in the
Flask example): any worker can hang a call up, and a call whose worker died is taken
over by another, which answers the tool calls the dead one left unanswered
(``order_status`` only reads, so it is run again).
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from rtclient import (
    CallNotFoundError,
    ClosedError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    create_call,
    hangup_call,
    tool,
)

from .models import Order

SESSION = {
    "type": "realtime",
    "model": "gpt-realtime-2",
    "instructions": "You are the shop's voice assistant. Look orders up with order_status.",
}


@tool
def order_status(order_id: int) -> dict[str, Any]:
    """The status of an order.

    Args:
        order_id: the order number.
    """
    try:
        order = Order.objects.filter(pk=order_id).values("id", "customer", "status").first()
        return order or {"id": order_id, "status": "unknown"}
    finally:
        close_old_connections()  # this pool thread's connection (CONN_MAX_AGE decides)


_lock = threading.Lock()
_live: dict[str, RealtimeClient] = {}
_callers: dict[str, str] = {}  # call id -> the caller (browser session) that created it
_creating: Counter[str] = Counter()  # caller -> its calls being created
_loop_thread: LoopThread | None = None
_pool: ThreadPoolExecutor | None = None
_registry: Any = None  # calls_registry.CallRegistry, with settings.RTCLIENT["redis_url"]
_phone: Any = None  # phone_calls.PhoneLine, made by the first webhook


def _examples_on_path() -> None:
    examples = str(Path(__file__).resolve().parents[2])  # calls_registry.py's, phone_calls.py's
    if examples not in sys.path:
        sys.path.append(examples)


def phone_line() -> Any:
    """The phone calls of this process (``phone_calls.PhoneLine``), made on first use
    with the same session and tool as the browsers' calls, on their loop thread and pool
    - with ``redis_url``, in the shared registry (made at worker boot, ``shop/wsgi.py``:
    a worker then watches the keypad of every phone call it takes over)."""
    global _phone
    conf = settings.RTCLIENT
    registry = start_registry()  # before the lock: it takes the lock itself
    with _lock:
        if _phone is None:
            _examples_on_path()
            from phone_calls import PhoneLine, RedisOnce

            redis_url = conf.get("redis_url")
            _phone = PhoneLine(
                api_key=conf["api_key"],
                base_url=conf.get("base_url"),
                session=SESSION,
                tools=[order_status],
                runtime=_runtime,
                secret=conf.get("webhook_secret"),
                once=RedisOnce(redis_url) if redis_url else None,
                registry=registry,  # a phone call survives its worker too
            )
        return _phone


def _runtime() -> tuple[LoopThread, ThreadPoolExecutor]:
    """The loop thread and tool pool calls run on: the shared registry's, or this
    process's own."""
    registry = start_registry()
    if registry is not None:
        return registry.loop_thread, registry.pool
    return _shared()


def start_registry() -> Any:
    """The registry every worker shares, started (None without a Redis URL). Called
    by ``shop/wsgi.py`` at worker boot, so a worker takes over orphaned calls before
    its first request."""
    global _registry
    conf = settings.RTCLIENT
    if not conf.get("redis_url"):
        return None
    with _lock:
        if _registry is None:
            _examples_on_path()
            from calls_registry import CallRegistry

            _registry = CallRegistry(
                conf["redis_url"],
                api_key=conf["api_key"],
                base_url=conf.get("base_url"),
                session=SESSION,
                tools=[order_status],
                idempotent={"order_status"},  # it only reads: safe to run again
                lease_ttl=conf.get("lease_ttl", 5.0),
                max_workers=conf.get("max_workers", 8),
                max_calls_per_caller=max_calls_per_session(),
                name="django-calls",
            ).start()
        return _registry


def max_calls_per_session() -> int:
    return int(settings.RTCLIENT.get("max_calls_per_session", 2))


def start_call(offer_sdp: str, caller: str) -> tuple[str, str] | None:
    """Create a call for this browser offer as ``caller``'s and attach to it:
    ``(call_id, answer_sdp)``; None, creating nothing, if ``caller`` already has
    ``max_calls_per_session()`` live calls (those being created count)."""
    registry = start_registry()
    if registry is not None:
        started = registry.start_call(offer_sdp, caller=caller)
        return None if started is None else (str(started[0]), str(started[1]))
    loop_thread, pool = _shared()
    live_calls()  # forget the calls that ended on their own
    with _lock:
        held = sum(c == caller for c in _callers.values()) + _creating[caller]
        if held >= max_calls_per_session():
            return None
        _creating[caller] += 1
    try:
        call_id, answer, client = _create(offer_sdp, loop_thread, pool)
    except BaseException:
        with _lock:
            _done_creating(caller)
        raise
    with _lock:  # one section: the caller's count never dips meanwhile
        _done_creating(caller)
        _live[call_id] = client
        _callers[call_id] = caller
    return call_id, answer


def _done_creating(caller: str) -> None:
    """One of ``caller``'s calls is no longer being created (``_lock`` held)."""
    _creating[caller] -= 1
    if _creating[caller] <= 0:
        del _creating[caller]


def _create(
    offer_sdp: str, loop_thread: LoopThread, pool: ThreadPoolExecutor
) -> tuple[str, str, RealtimeClient]:
    key, url = settings.RTCLIENT["api_key"], settings.RTCLIENT.get("base_url")
    call = create_call(
        offer_sdp,
        session=SESSION,  # the instructions and tools: decided here, not by the browser
        tools=[order_status],
        api_key=key,
        base_url=url,
        loop_thread=loop_thread,
    )
    client = RealtimeClient(
        call_id=call.call_id,  # a sideband: attach to the browser's call
        api_key=key,
        base_url=url,
        tools=[order_status],
        executor=pool,
        loop_thread=loop_thread,
    )
    try:
        client.connect()
    except RealtimeError:
        # A call without its tools is no use to the user: end it, report the failure.
        with contextlib.suppress(RealtimeError):
            hangup_call(call.call_id, api_key=key, base_url=url)
        raise
    return call.call_id, call.sdp, client


def caller_of(call_id: str) -> str | None:
    """Who created ``call_id`` (the ``caller`` given to ``start_call``), if it is live
    (in any worker's, with a shared registry)."""
    registry = start_registry()
    if registry is not None:
        caller = registry.caller_of(call_id)
        return None if caller is None else str(caller)
    live_calls()  # forget the calls that ended on their own
    with _lock:
        return _callers.get(call_id)


def hangup(call_id: str) -> bool:
    """End ``call_id`` for everyone; False if it is not one of ours (of any worker's,
    with a shared registry)."""
    registry = start_registry()
    if registry is not None:
        return bool(registry.hangup(call_id))
    with _lock:
        client = _live.pop(call_id, None)
        _callers.pop(call_id, None)
    if client is None:
        return False
    try:
        client.hangup()  # for the browser too; closes the client either way
    except CallNotFoundError:
        pass  # it had already ended
    except ClosedError:  # the sideband was lost first: end the call by its id
        with contextlib.suppress(CallNotFoundError):
            conf = settings.RTCLIENT
            hangup_call(call_id, api_key=conf["api_key"], base_url=conf.get("base_url"))
    return True


def live_calls() -> dict[str, RealtimeClient]:
    """The calls still attached; forgets (and closes) those that ended on their own."""
    if _registry is not None:  # this worker's sidebands (the registry forgets ended calls)
        return {cid: c for cid in _registry.held() if (c := _registry.get(cid)) is not None}
    with _lock:
        ended = {call_id: c for call_id, c in _live.items() if c.closed}
        for call_id in ended:
            del _live[call_id]
            _callers.pop(call_id, None)
        live = dict(_live)
    for client in ended.values():
        client.close()  # releases what the lost connection left behind
    return live


def close() -> None:
    """Hang every call up and stop the shared threads (at exit, or in tests)."""
    global _loop_thread, _pool, _registry, _phone
    with _lock:
        phone, _phone = _phone, None
    if phone is not None:
        phone.close()  # hangs the phone calls up, while the loop thread still runs
    with _lock:
        clients = list(_live.values())
        _live.clear()
        _callers.clear()
        loop_thread, pool = _loop_thread, _pool
        _loop_thread = _pool = None
        registry, _registry = _registry, None
    if registry is not None:
        registry.close()  # detach and release: another worker takes the calls over
    for client in clients:
        with contextlib.suppress(RealtimeError):
            client.hangup()
    if loop_thread is not None:
        loop_thread.stop()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    atexit.unregister(close)


def _shared() -> tuple[LoopThread, ThreadPoolExecutor]:
    """The loop thread and tool pool every call of this process shares."""
    global _loop_thread, _pool
    with _lock:
        if _loop_thread is None or _pool is None:
            workers = settings.RTCLIENT.get("max_workers", 8)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="django-tool")
            _loop_thread = LoopThread("django-calls").start()
            atexit.register(close)
        return _loop_thread, _pool
