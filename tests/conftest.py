"""Suite-wide guards: asyncio debug mode on, and no test may leak a thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from rtclient.runtime.loop import LoopThread

# asyncio debug mode raises on cross-thread loop calls (call_soon from a foreign
# thread), which is exactly the class of bug a thread-based SDK must not have.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

_THREAD_GRACE_S = 10.0


def _alive_others(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and not t.name.startswith("pytest_timeout")
    ]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (loop threads, dispatchers, tool pools).

    Threads that are already finishing get a bounded join, not a sleep.
    """
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    leaked = _alive_others(before)
    for t in leaked:
        t.join(timeout=_THREAD_GRACE_S / max(1, len(leaked)))
    leaked = _alive_others(before)
    assert not leaked, f"leaked threads: {[t.name for t in leaked]}"


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    """A started LoopThread, stopped after the test."""
    loop_thread = LoopThread("test-loop").start()
    try:
        yield loop_thread
    finally:
        loop_thread.stop()
