"""Running a session's work on the emulator's loop from any thread (tests, control
routes and the in-process API call in from outside it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0  # a call from another thread waits this long for the loop


def in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    """Run ``fn`` on ``loop`` and return its result (directly if already there, or if
    the loop no longer runs)."""
    if in_loop(loop) or not loop.is_running():
        return fn()

    async def run() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT_S)
