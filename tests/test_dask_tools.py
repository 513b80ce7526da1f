"""Tools on a real distributed engine: Dask's ``distributed`` as the tool executor.

``Client.get_executor()`` is a ``concurrent.futures.Executor``, so rtclient runs tools on
a Dask cluster unchanged. The cluster here is real: a scheduler (in this process) and
two ``LocalCluster`` worker *processes* (one thread each) talking TCP on 127.0.0.1,
dashboard off. The emulator, in this process, is the referee for the wire: its record of
the client's events says whether every ``function_call_output`` went out before exactly
one follow-up ``response.create``.

What happens when a worker dies in the middle of a call depends on the scheduler's
``distributed.scheduler.allowed-failures`` (default 3): the call is *re-run* on another
worker - a tool may run twice - until it has killed more than that many workers, then
it fails with ``KilledWorker``. The module's cluster sets it to 0, so a death is an
error output at once (deterministic); ``test_default_scheduler_reruns_a_killed_call``
shows the default on a cluster of its own.

Submissions use ``get_executor(pure=False)``: Dask's default ``pure=True`` names a task
by a hash of its function and arguments, so two calls with the same arguments would
share one result instead of running twice.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
from dask_tools import hold, stall, whoami  # noqa: E402
from distributed import Client, Event, LocalCluster, Queue  # noqa: E402

from rtclient import RealtimeClient  # noqa: E402
from rtclient.emulator import Emulator  # noqa: E402

pytestmark = pytest.mark.timeout(120)

Connect = Callable[..., RealtimeClient]
WAIT_S = 60.0  # every blocking wait in this module is bounded by this
# Threads a Dask cluster and client own: they end with the cluster (checked at module
# teardown), except distributed's process-wide offload pool.
DASK_THREADS = ("IO loop", "QueueFeederThread", "AsyncProcess Dask", "Dask-")
PROCESS_WIDE = ("Dask-Offload",)


def cluster_options(**extra: Any) -> dict[str, Any]:
    """A small local cluster of worker processes on loopback, no dashboard.

    The scheduler serves a few HTTP routes even with the dashboard off, on port 8787 by
    default; ``127.0.0.1:0`` keeps them on loopback, on a free port."""
    return {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        **extra,
    }


def dask_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(DASK_THREADS) and not t.name.startswith(PROCESS_WIDE)
    ]


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    """Two worker processes, one thread each; a worker death fails its task at once."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(**cluster_options())
    client = Client(cluster)
    try:
        # warm up what Dask starts lazily (the offload pool, the workers' own clients)
        tag = f"warm-{uuid.uuid4().hex}"
        Event(tag, client=client).set()
        client.submit(hold, tag, pure=False).result(WAIT_S)
        Queue(tag, client=client).get(timeout=WAIT_S)
        yield client
    finally:
        client.close()
        cluster.close()
        for thread in dask_threads():
            thread.join(WAIT_S)
        assert not dask_threads(), f"Dask threads left: {[t.name for t in dask_threads()]}"


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """The suite's guard (conftest), less the Dask cluster's own threads: a killed worker
    is restarted by its nanny with new watcher threads. Those end with the cluster,
    which the module fixture checks."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and t.is_alive()
        and not t.name.startswith(("pytest_timeout", *DASK_THREADS))
    ]
    for t in leaked:
        t.join(WAIT_S / max(1, len(leaked)))
    assert not [t.name for t in leaked if t.is_alive()]


@pytest.fixture
def executor(dask_client: Client) -> Iterator[concurrent.futures.Executor]:
    """A fresh ``concurrent.futures`` view of the cluster, with both workers up (a test
    may have killed one: its nanny starts another). Shut down waiting for every task it
    started, so a held tool never spills into the next test."""
    dask_client.wait_for_workers(2, timeout=WAIT_S)
    pool = dask_client.get_executor(pure=False)
    yield pool
    pool.shutdown(wait=True)


def worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


def wire(emulator: Emulator) -> tuple[list[int], list[int], list[dict[str, Any]]]:
    """Positions of function_call_outputs and response.creates in what the client sent."""
    events = emulator.sessions[-1].client_events
    outputs = [
        n
        for n, e in enumerate(events)
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]
    creates = [n for n, e in enumerate(events) if e["type"] == "response.create"]
    return outputs, creates, events


def started(
    queue: Queue, asking: concurrent.futures.Future[Any], waiter: concurrent.futures.Executor
) -> int:
    """The pid a held tool put on ``queue`` - or the failure of the ask that should have
    started it, as soon as it fails."""
    pid = waiter.submit(queue.get, timeout=WAIT_S)
    concurrent.futures.wait([pid, asking], WAIT_S, concurrent.futures.FIRST_COMPLETED)
    if asking.done() and not pid.done():
        asking.result()  # raises what went wrong
        raise AssertionError("the round ended before the tool started")
    return int(pid.result(WAIT_S))


def assert_one_followup_after(emulator: Emulator, n_outputs: int) -> None:
    outputs, creates, _ = wire(emulator)
    assert len(outputs) == n_outputs
    assert len(creates) == 2, "the user's create, then exactly one follow-up"
    assert creates[1] > max(outputs), "every output went out before the follow-up"
    assert emulator.stats()["rejections"] == 0


def test_sixteen_parallel_calls_run_in_worker_processes(
    dask_client: Client,
    executor: concurrent.futures.Executor,
    rt_emulator: Emulator,
    rt_connect: Connect,
) -> None:
    client = rt_connect(tools=[whoami], executor=executor)
    answer = client.ask("use whoami*16", timeout=WAIT_S)
    assert len(answer.tool_calls) == 16 and len(answer.response_ids) == 2
    results = [json.loads(c.output or "null") for c in answer.tool_calls]
    assert sorted(r["i"] for r in results) == list(range(16))
    pids = {r["pid"] for r in results}
    assert os.getpid() not in pids
    assert pids <= worker_pids(dask_client), "each call ran in one of the worker processes"
    workers = dask_client.scheduler_info()["workers"]
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert_one_followup_after(rt_emulator, 16)
    stats = client.stats()
    assert stats["tool_calls"] == 16 and stats["tool_errors"] == 0 and stats["lost"] == 0


def test_per_tool_timeout_on_a_cluster_tool(
    dask_client: Client,
    executor: concurrent.futures.Executor,
    rt_emulator: Emulator,
    rt_connect: Connect,
) -> None:
    tag = f"stall-{uuid.uuid4().hex}"
    client = rt_connect(tools=[stall], executor=executor)
    try:
        answer = client.ask(f'use stall({{"tag": "{tag}"}})', timeout=WAIT_S)
    finally:
        Event(tag, client=dask_client).set()  # let the worker go (its result is discarded)
    started_in = Queue(tag, client=dask_client).get(timeout=WAIT_S)
    assert started_in in worker_pids(dask_client), "the call was running on a worker"
    (call,) = answer.tool_calls
    assert call.error == "stall timed out after 0.5s"
    assert_one_followup_after(rt_emulator, 1)
    outputs, _, events = wire(rt_emulator)
    sent = json.loads(events[outputs[0]]["item"]["output"])
    assert sent == {"error": "stall timed out after 0.5s"}
    stats = client.stats()
    assert stats["tool_timeouts"] == 1 and stats["lost"] == 0


def test_worker_killed_mid_call_is_an_error_output(
    dask_client: Client,
    executor: concurrent.futures.Executor,
    rt_emulator: Emulator,
    rt_connect: Connect,
) -> None:
    """SIGKILL the worker process running ``hold``: with ``allowed-failures: 0`` the
    scheduler fails the task with ``KilledWorker``; that is the call's error output, the
    round's other call keeps its result, and the one follow-up still comes."""
    tag = f"kill-{uuid.uuid4().hex}"
    client = rt_connect(tools=[whoami, hold], executor=executor)
    before = worker_pids(dask_client)
    text = f'use whoami and hold({{"tag": "{tag}"}})'
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="asker") as asker:
        asking = asker.submit(client.ask, text, timeout=WAIT_S)
        victim = started(Queue(tag, client=dask_client), asking, asker)  # hold is running
        assert victim in before and victim != os.getpid()
        os.kill(victim, signal.SIGKILL)  # a worker process of our own cluster
        answer = asking.result(WAIT_S)
    calls = {c.name: c for c in answer.tool_calls}
    assert set(calls) == {"whoami", "hold"}
    assert calls["hold"].error is not None
    assert calls["hold"].error.startswith("hold raised KilledWorker: ")
    assert json.loads(calls["whoami"].output or "null")["pid"] in before
    assert_one_followup_after(rt_emulator, 2)
    stats = client.stats()
    assert stats["tool_calls"] == 2 and stats["tool_errors"] == 1 and stats["lost"] == 0
    dask_client.wait_for_workers(2, timeout=WAIT_S)  # the nanny started a new worker
    assert victim not in worker_pids(dask_client)


def test_default_scheduler_reruns_a_killed_call(rt_emulator: Emulator, rt_connect: Connect) -> None:
    """Dask's default (``allowed-failures: 3``): the killed call is re-run - here on the
    worker the nanny restarted - and succeeds. The tool ran twice; rtclient sends one
    output, the second run's."""
    tag = f"rerun-{uuid.uuid4().hex}"
    with (
        LocalCluster(**cluster_options(n_workers=1)) as cluster,
        Client(cluster, set_as_default=False) as dask_client,
    ):
        pool = dask_client.get_executor(pure=False)
        client = rt_connect(tools=[hold], executor=pool)
        queue = Queue(tag, client=dask_client)
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="asker") as asker:
            asking = asker.submit(client.ask, f'use hold({{"tag": "{tag}"}})', timeout=WAIT_S)
            first = started(queue, asking, asker)
            os.kill(first, signal.SIGKILL)  # a worker process of our own cluster
            second = started(queue, asking, asker)  # the same call runs again
            Event(tag, client=dask_client).set()
            answer = asking.result(WAIT_S)
        pool.shutdown(wait=True)
    assert second != first
    (call,) = answer.tool_calls
    assert call.error is None and json.loads(call.output or "null") == {"pid": second}
    assert_one_followup_after(rt_emulator, 1)
    assert client.stats()["lost"] == 0
