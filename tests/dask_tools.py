"""Tools for ``tests/test_dask_tools.py``: module level, so they pickle by reference.

Dask ships a task to a worker *process* as a pickle; a function pickles by reference
(``dask_tools.whoami``) only if the worker can import its module. pytest puts
``tests/`` on ``sys.path`` and the spawned workers inherit it, so this module is
importable there; a function defined inside a test is not.

The tools meet the test through the scheduler: ``distributed.Queue`` (a tool says it
started, and in which process) and ``distributed.Event`` (the test releases it). Both
are blocking, bounded waits - no polling, no sleeps.
"""

from __future__ import annotations

import os

from distributed import Event, Queue

from rtclient import tool

HOLD_S = 60.0  # a held tool gives up after this long (the test releases it much sooner)


@tool
def whoami(i: int = 0) -> dict[str, int]:
    """The process that ran this call."""
    return {"i": i, "pid": os.getpid()}


@tool
def hold(tag: str) -> dict[str, int]:
    """Say "started" (this worker's pid on the Queue ``tag``), then wait for the Event
    ``tag``. The test kills the worker, or releases it."""
    Queue(tag).put(os.getpid())
    Event(tag).wait(HOLD_S)
    return {"pid": os.getpid()}


@tool(timeout=0.5)
def stall(tag: str) -> dict[str, int]:
    """``hold`` with a per-tool timeout of 0.5 s: rtclient answers before it returns."""
    Queue(tag).put(os.getpid())
    Event(tag).wait(HOLD_S)
    return {"pid": os.getpid()}
