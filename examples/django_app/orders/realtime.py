"""The shared RealtimeClient and its tool, which reads the Django ORM from a tool thread.

Why this is easy here and awkward with an async SDK: Django's ORM is synchronous and
refuses to run inside an event loop (``SynchronousOnlyOperation``), so an asyncio
client's tool would need ``sync_to_async`` wrappers. rtclient runs tools on a plain
``ThreadPoolExecutor``, so a tool just uses the ORM.

The one thing to remember: Django opens a database connection per thread and closes it
at the end of each *request* (the ``request_started``/``request_finished`` signals). A
tool thread serves no request, so nothing would ever close its connection; the tool
does what those signals do, ``close_old_connections()``, when it is finished.
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from rtclient import RealtimeClient, tool

from .models import Order


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
_client: RealtimeClient | None = None
_executor: ThreadPoolExecutor | None = None


def get_client() -> RealtimeClient:
    """The process's client, connected on first use from ``settings.RTCLIENT``.

    Safe from many request threads at once; a lost connection is replaced on next use.
    """
    global _client, _executor
    with _lock:
        if _client is not None and not _client.closed:
            return _client
        _close_locked()
        conf = settings.RTCLIENT
        executor = ThreadPoolExecutor(conf.get("max_workers", 8), thread_name_prefix="django-tool")
        try:
            client = RealtimeClient(
                api_key=conf.get("api_key"),
                base_url=conf.get("base_url"),
                loopback_only=conf.get("loopback_only", False),
                tools=[order_status],
                executor=executor,
            ).connect()
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        _client, _executor = client, executor
        atexit.register(close)
        return client


def current_client() -> RealtimeClient | None:
    """The connected client, if any; never connects."""
    return _client


def close() -> None:
    """Hang up and stop the tool threads (at exit, or in tests)."""
    with _lock:
        _close_locked()
    atexit.unregister(close)


def _close_locked() -> None:
    global _client, _executor
    client, executor = _client, _executor
    _client = _executor = None
    if client is not None:
        client.close()
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
