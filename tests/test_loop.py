"""LoopThread: startup, blocking calls, the loop-thread refusal, fork, stop and its drain.

Every wait here is bounded (futures, Events, Barriers with timeouts); nothing sleeps to
synchronise. The autouse fixture in conftest fails any test that leaks a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any

import pytest
from threads import current_thread_ident, submit_while_closing

from rtclient.errors import ClosedError, ForkedProcessError, WrongThreadError
from rtclient.runtime.loop import LoopThread

WAIT = 10.0  # upper bound of every wait; a healthy run never gets near it


def _destroyed_pending(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # "Task was destroyed" is logged from Task.__del__
    return [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.message]


# -- start ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_start_runs_the_loop_on_another_daemon_thread() -> None:
    loop_thread = LoopThread("test-start")
    assert not loop_thread.running
    assert loop_thread.start() is loop_thread
    try:
        assert loop_thread.running
        ident = loop_thread.call(current_thread_ident(), timeout=WAIT)
        assert ident != threading.get_ident()
        thread = next(t for t in threading.enumerate() if t.ident == ident)
        assert thread.name == "test-start" and thread.daemon
        assert loop_thread.loop.is_running()
        assert not loop_thread.in_loop_thread()
        assert loop_thread.call(_in_loop(loop_thread), timeout=WAIT) is True
    finally:
        loop_thread.stop()
    assert not thread.is_alive()
    assert not loop_thread.running


async def _in_loop(loop_thread: LoopThread) -> bool:
    return loop_thread.in_loop_thread()


@pytest.mark.timeout(30)
def test_start_twice_is_refused(lt: LoopThread) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        lt.start()


@pytest.mark.timeout(30)
def test_context_manager_starts_and_stops() -> None:
    with LoopThread("test-ctx") as loop_thread:
        assert loop_thread.call(current_thread_ident(), timeout=WAIT) != threading.get_ident()
    assert not loop_thread.running
    with pytest.raises(ClosedError):
        loop_thread.call(current_thread_ident(), timeout=WAIT)


@pytest.mark.timeout(30)
def test_startup_failure_reraises_in_caller_and_leaves_no_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    helper_cancelled = threading.Event()

    async def helper() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            helper_cancelled.set()
            raise

    keep: list[asyncio.Task[None]] = []  # asyncio holds tasks weakly; so would their owner

    async def on_start() -> None:
        keep.append(asyncio.get_running_loop().create_task(helper()))
        await asyncio.sleep(0)
        raise ValueError("startup boom")

    before = set(threading.enumerate())
    loop_thread = LoopThread("test-startup-fail", on_start=on_start)
    with pytest.raises(ValueError, match="startup boom"):
        loop_thread.start(timeout=WAIT)
    assert [t for t in threading.enumerate() if t not in before] == []
    # The startup drain cancelled what on_start had spawned: nothing destroyed pending.
    assert helper_cancelled.is_set()
    assert _destroyed_pending(caplog) == []
    assert not loop_thread.running
    coro = current_thread_ident()
    with pytest.raises(ClosedError):
        loop_thread.call(coro, timeout=WAIT)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    loop_thread.stop()  # harmless after a failed start


@pytest.mark.timeout(30)
def test_on_start_runs_on_the_loop_thread_before_start_returns() -> None:
    seen: list[int] = []

    async def on_start() -> None:
        seen.append(threading.get_ident())

    with LoopThread("test-on-start", on_start=on_start) as loop_thread:
        assert seen == [loop_thread.call(current_thread_ident(), timeout=WAIT)]


# -- call / submit ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_call_returns_the_value(lt: LoopThread) -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert lt.call(add(2, 3), timeout=WAIT) == 5
    assert lt.call(add(1, 1)) == 2  # no timeout: still returns


@pytest.mark.timeout(30)
def test_call_propagates_the_exception(lt: LoopThread) -> None:
    async def fail() -> None:
        raise KeyError("from the loop")

    with pytest.raises(KeyError, match="from the loop"):
        lt.call(fail(), timeout=WAIT)


@pytest.mark.timeout(30)
def test_call_propagates_a_timeout_error_raised_by_the_coroutine_itself(lt: LoopThread) -> None:
    """A TimeoutError from inside the coroutine is its outcome, not the call timing out."""

    async def inner_timeout() -> None:
        await asyncio.wait_for(asyncio.Event().wait(), 0.001)

    async def raises_timeout() -> None:
        raise TimeoutError("the coroutine's own timeout")

    with pytest.raises(TimeoutError, match="the coroutine's own timeout"):
        lt.call(raises_timeout(), timeout=WAIT)
    with pytest.raises(asyncio.TimeoutError) as info:  # the builtin one from 3.11
        lt.call(inner_timeout(), timeout=WAIT)
    assert "timed out after" not in str(info.value)


@pytest.mark.timeout(30)
def test_call_timeout_raises_and_cancels_the_coroutine(lt: LoopThread) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"timed out after 0\.2s"):
        lt.call(forever(), timeout=0.2)
    assert started.is_set()
    assert cancelled.wait(WAIT), "the timed-out coroutine was not cancelled"


@pytest.mark.timeout(30)
def test_submit_returns_a_concurrent_future(lt: LoopThread) -> None:
    gate = threading.Event()

    async def wait_then(value: str) -> str:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, WAIT)
        return value

    future = lt.submit(wait_then("done"))
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done()
    gate.set()
    assert future.result(WAIT) == "done"

    async def fail() -> None:
        raise ValueError("submitted")

    assert isinstance(lt.submit(fail()).exception(WAIT), ValueError)


@pytest.mark.timeout(30)
def test_call_soon_runs_a_callback_on_the_loop_thread(lt: LoopThread) -> None:
    loop_ident = lt.call(current_thread_ident(), timeout=WAIT)
    ran_on: concurrent.futures.Future[int] = concurrent.futures.Future()
    lt.call_soon(lambda: ran_on.set_result(threading.get_ident()))
    assert ran_on.result(WAIT) == loop_ident


@pytest.mark.timeout(30)
def test_call_from_the_loop_thread_raises_wrong_thread_instead_of_deadlocking(
    lt: LoopThread,
) -> None:
    inner = current_thread_ident()

    async def nested() -> tuple[BaseException | None, BaseException | None, int]:
        errors: list[BaseException | None] = []
        for attempt in (lambda: lt.call(inner, timeout=WAIT), lt.stop):
            try:
                attempt()
            except BaseException as exc:
                errors.append(exc)
            else:
                errors.append(None)
        # submit (non-blocking) is fine from the loop thread: await its result
        value = await asyncio.wrap_future(lt.submit(current_thread_ident()))
        return errors[0], errors[1], value

    call_error, stop_error, value = lt.call(nested(), timeout=WAIT)
    assert isinstance(call_error, WrongThreadError)
    assert "deadlock" in str(call_error)
    assert isinstance(stop_error, WrongThreadError)
    assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED  # never "never awaited"
    assert value == lt.call(current_thread_ident(), timeout=WAIT)
    assert lt.running  # the refused stop() did not stop it


# -- stop -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stop_is_idempotent() -> None:
    loop_thread = LoopThread("test-stop-twice").start()
    ident = loop_thread.call(current_thread_ident(), timeout=WAIT)
    thread = next(t for t in threading.enumerate() if t.ident == ident)
    loop_thread.stop()
    assert not thread.is_alive()
    loop_thread.stop()
    assert not loop_thread.running


def _stop_race_round() -> None:
    loop_thread = LoopThread("test-stop-race").start()
    ident = loop_thread.call(current_thread_ident(), timeout=WAIT)
    thread = next(t for t in threading.enumerate() if t.ident == ident)
    barrier = threading.Barrier(2, timeout=WAIT)
    errors: list[BaseException] = []

    def stopper() -> None:
        try:
            barrier.wait()
            loop_thread.stop(timeout=WAIT)
        except BaseException as exc:
            errors.append(exc)

    other = threading.Thread(target=stopper, name="stopper")
    other.start()
    stopper()
    other.join(WAIT)
    assert not other.is_alive()
    assert errors == []
    assert not thread.is_alive()
    assert not loop_thread.running


@pytest.mark.timeout(30)
def test_stop_from_two_threads_at_once() -> None:
    for _ in range(20):
        _stop_race_round()


@pytest.mark.timeout(30)
def test_use_after_stop_raises_closed_error() -> None:
    loop_thread = LoopThread("test-after-stop").start()
    loop_thread.stop()
    coros = [current_thread_ident(), current_thread_ident()]
    with pytest.raises(ClosedError, match="stopped"):
        loop_thread.call(coros[0], timeout=WAIT)
    with pytest.raises(ClosedError):
        loop_thread.submit(coros[1])
    with pytest.raises(ClosedError):
        loop_thread.call_soon(lambda: None)
    with pytest.raises(ClosedError):
        _ = loop_thread.loop
    # the refused coroutines were closed: no "coroutine was never awaited" warning
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)


@pytest.mark.timeout(30)
def test_use_before_start_raises_closed_error() -> None:
    loop_thread = LoopThread("test-unstarted")
    coro = current_thread_ident()
    with pytest.raises(ClosedError, match="not started"):
        loop_thread.call(coro, timeout=WAIT)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    loop_thread.stop()  # nothing to stop


@pytest.mark.timeout(30)
def test_stop_cancels_leftover_tasks_that_spawn_tasks_while_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Like aiortc's close tasks: cancelling one spawns another, which also needs cancelling."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop_thread = LoopThread("test-drain").start()
    ident = loop_thread.call(current_thread_ident(), timeout=WAIT)
    thread = next(t for t in threading.enumerate() if t.ident == ident)
    spawned, finished = [0], [0]
    depth = 5
    # Strong references, as their owners (aiortc's transports) hold them: asyncio keeps
    # only weak ones, and an unreferenced pending task can be garbage-collected mid-test.
    keep: list[asyncio.Task[None]] = []

    async def closer(level: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if level < depth:
                spawned[0] += 1
                # spawned while being cancelled; it waits too, so it must be cancelled too
                keep.append(asyncio.ensure_future(closer(level + 1)))
            raise
        finally:
            finished[0] += 1

    async def plant() -> None:
        for _ in range(10):
            spawned[0] += 1
            keep.append(asyncio.ensure_future(closer(0)))
        await asyncio.sleep(0)

    loop_thread.call(plant(), timeout=WAIT)
    loop_thread.stop(timeout=WAIT)
    assert not thread.is_alive()
    assert spawned[0] == 10 * (depth + 1)
    assert finished[0] == spawned[0], "some spawned tasks never ran to completion"
    assert all(task.cancelled() for task in keep)
    assert _destroyed_pending(caplog) == []


@pytest.mark.timeout(30)
def test_destroyed_pending_detector_bites(caplog: pytest.LogCaptureFixture) -> None:
    """Control: a loop closed without draining *does* log what the drain test forbids."""
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def run() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(asyncio.Event().wait())
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        assert not task.done()  # dropped here, still pending: __del__ logs it

    thread = threading.Thread(target=run, name="undrained")
    thread.start()
    thread.join(WAIT)
    assert _destroyed_pending(caplog) != []


@pytest.mark.timeout(30)
def test_stop_hooks_run_before_leftover_tasks_are_cancelled() -> None:
    loop_thread = LoopThread("test-hooks").start()
    order: list[str] = []

    async def long_task() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.append("task cancelled")
            raise

    task_future: concurrent.futures.Future[asyncio.Task[None]] = concurrent.futures.Future()

    async def plant() -> None:
        task_future.set_result(asyncio.ensure_future(long_task()))
        await asyncio.sleep(0)

    async def hook(name: str) -> None:
        task = task_future.result(0)
        order.append(f"{name} on loop={loop_thread.in_loop_thread()} task_done={task.done()}")

    async def failing_hook() -> None:
        order.append("failing hook")
        raise RuntimeError("a broken hook must not block the others")

    loop_thread.add_stop_hook(lambda: hook("first"))
    loop_thread.add_stop_hook(failing_hook)
    loop_thread.add_stop_hook(lambda: hook("last"))
    removed = lambda: hook("removed")  # noqa: E731
    loop_thread.add_stop_hook(removed)
    loop_thread.remove_stop_hook(removed)
    loop_thread.call(plant(), timeout=WAIT)
    loop_thread.stop(timeout=WAIT)
    assert sorted(order[:3]) == sorted(
        [
            "first on loop=True task_done=False",
            "failing hook",
            "last on loop=True task_done=False",
        ]
    )
    assert order[3:] == ["task cancelled"]


def _submit_race_round(workers: int) -> None:
    loop_thread = LoopThread("test-submit-race").start()
    futures, refusals = submit_while_closing(
        workers,
        200,
        lambda _: loop_thread.submit(current_thread_ident()),
        lambda: loop_thread.stop(timeout=WAIT),
        WAIT,
    )
    assert all(isinstance(exc, ClosedError) for exc in refusals), refusals
    concurrent.futures.wait(futures, WAIT)
    # resolved with a result, or cancelled by the stop drain - never left hanging
    assert all(f.done() for f in futures), "a future submitted before stop never resolved"


@pytest.mark.timeout(30)
def test_every_submit_racing_stop_resolves() -> None:
    """Threads submit while another stops: each submit is refused or its future resolves."""
    for _ in range(10):
        _submit_race_round(workers=8)


class _ContentionSignallingLock:
    """A Lock that sets ``blocked`` when an acquire has to wait for another holder."""

    def __init__(self, blocked: threading.Event) -> None:
        self._lock = threading.Lock()
        self._blocked = blocked

    def __enter__(self) -> bool:
        if not self._lock.acquire(blocking=False):
            self._blocked.set()
            self._lock.acquire()
        return True

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.mark.timeout(30)
def test_submit_that_passed_its_check_cannot_lose_its_work_to_a_concurrent_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministic version of the race above, with the submitter paused at the worst spot.

    The submitter has passed the usability check and is about to schedule its coroutine
    when another thread stops the loop. Either stop waits for the scheduling (and its
    drain then cancels the task) or the submit is refused - but the work must never be
    scheduled onto a loop that already ran its last iteration (a future that never
    resolves; ``call()`` without a timeout would hang) or was closed (RuntimeError and a
    "coroutine was never awaited" warning).
    """
    loop_thread = LoopThread("test-submit-vs-stop").start()
    progress = threading.Event()  # stop() finished, or it is blocked behind the submitter
    loop_thread._state_lock = _ContentionSignallingLock(progress)  # type: ignore[assignment]
    in_submit, proceed = threading.Event(), threading.Event()
    original = asyncio.run_coroutine_threadsafe

    def paused(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
        if threading.current_thread().name == "paused-submitter":
            in_submit.set()
            proceed.wait(WAIT)
        return original(coro, loop)

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", paused)
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def submitter() -> None:
        try:
            outcome.set_result(loop_thread.submit(current_thread_ident()))
        except BaseException as exc:
            outcome.set_exception(exc)

    def stopper() -> None:
        loop_thread.stop(timeout=WAIT)
        progress.set()

    threads = [
        threading.Thread(target=submitter, name="paused-submitter"),
        threading.Thread(target=stopper, name="stopper"),
    ]
    threads[0].start()
    try:
        assert in_submit.wait(WAIT)
        threads[1].start()
        assert progress.wait(WAIT)
    finally:
        proceed.set()
        for t in threads:
            t.join(WAIT)
    exc = outcome.exception(WAIT)
    if exc is not None:
        assert isinstance(exc, ClosedError), f"refused with {exc!r}, not ClosedError"
    else:
        future = outcome.result()
        concurrent.futures.wait([future], WAIT)
        assert future.done(), "the submitted work was lost: its future never resolves"


@pytest.mark.timeout(30)
def test_work_queued_just_before_stop_resolves() -> None:
    """A submit and the shutdown land in the same loop iteration: the submit still resolves.

    The loop is parked while a coroutine is submitted and then stop() queues its shutdown,
    so both callbacks run back to back. The submitted task then finishes in the very step
    in which the shutdown drain looks for leftovers; its result reaches the caller's
    future only through a done-callback queued for the *next* iteration - the drain must
    let that run before it stops the loop.
    """
    loop_thread = LoopThread("test-queued-before-stop").start()
    loop = loop_thread.loop
    shutdown_queued, entered, release = threading.Event(), threading.Event(), threading.Event()
    original = loop.call_soon_threadsafe

    def spy(*args: Any, **kwargs: Any) -> Any:
        handle = original(*args, **kwargs)
        if threading.current_thread().name == "stopper":
            shutdown_queued.set()
        return handle

    loop.call_soon_threadsafe = spy  # type: ignore[method-assign]

    def park() -> None:
        entered.set()
        release.wait(WAIT)

    loop_thread.call_soon(park)
    stopper = threading.Thread(target=loop_thread.stop, kwargs={"timeout": WAIT}, name="stopper")
    try:
        assert entered.wait(WAIT)
        future = loop_thread.submit(current_thread_ident())
        stopper.start()
        assert shutdown_queued.wait(WAIT)
    finally:
        release.set()
        if stopper.ident is not None:
            stopper.join(WAIT)
    concurrent.futures.wait([future], WAIT)
    assert future.done(), "work submitted before stop() never resolved"
    if not future.cancelled():
        assert isinstance(future.result(0), int)


@pytest.mark.timeout(60)
def test_atexit_stops_a_forgotten_loop_thread_cleanly() -> None:
    """A daemon loop thread nobody stopped: the interpreter exits promptly, cleanly."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from rtclient.runtime.loop import LoopThread

        async def forever():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                print("cancelled at exit", flush=True)
                raise

        lt = LoopThread("forgotten").start()
        pending = lt.submit(forever())  # kept: asyncio holds tasks only weakly
        lt.call(asyncio.sleep(0), timeout=10)
        print("leaving", flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=45,
        env={**os.environ, "PYTHONASYNCIODEBUG": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["leaving", "cancelled at exit"]
    assert "destroyed but it is pending" not in proc.stderr
    assert "Traceback" not in proc.stderr


# -- fork -------------------------------------------------------------------------


def _child_probe(loop_thread: LoopThread) -> dict[str, str]:
    """Runs in the forked child: every use must raise ForkedProcessError, not hang."""
    report: dict[str, str] = {}
    probes = {
        "call": lambda: loop_thread.call(current_thread_ident(), timeout=2.0),
        "call_no_timeout": lambda: loop_thread.call(current_thread_ident()),
        "submit": lambda: loop_thread.submit(current_thread_ident()),
        "call_soon": lambda: loop_thread.call_soon(lambda: None),
        "loop": lambda: loop_thread.loop,
    }
    for name, probe in probes.items():
        try:
            probe()
        except BaseException as exc:
            report[name] = type(exc).__name__
        else:
            report[name] = "no error"
    try:
        loop_thread.stop(timeout=2.0)  # a child owns no thread: stop is a no-op
        report["stop"] = "ok"
    except BaseException as exc:
        report["stop"] = type(exc).__name__
    return report


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_forked_process_error(lt: LoopThread) -> None:
    assert lt.call(current_thread_ident(), timeout=WAIT)  # the loop is alive in the parent
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, pickle.dumps(_child_probe(lt)))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], WAIT)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the forked child hung instead of raising ForkedProcessError")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = pickle.loads(b"".join(chunks))
    assert report == {
        "call": "ForkedProcessError",
        "call_no_timeout": "ForkedProcessError",
        "submit": "ForkedProcessError",
        "call_soon": "ForkedProcessError",
        "loop": "ForkedProcessError",
        "stop": "ok",
    }
    assert issubclass(ForkedProcessError, Exception)
    # the parent's loop thread is untouched by the child's attempts
    assert lt.call(current_thread_ident(), timeout=WAIT) != threading.get_ident()


# -- asyncio debug mode -----------------------------------------------------------


@pytest.mark.timeout(30)
def test_debug_mode_is_on_and_catches_a_cross_thread_call_soon(lt: LoopThread) -> None:
    assert os.environ.get("PYTHONASYNCIODEBUG") == "1"

    async def debug() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert lt.call(debug(), timeout=WAIT) is True
    ran = threading.Event()
    # the bug class debug mode exists to catch: a non-threadsafe call from another thread
    with pytest.raises(RuntimeError, match="Non-thread-safe operation"):
        lt.loop.call_soon(ran.set)
    # ... and the thread-safe route works
    lt.call_soon(ran.set)
    assert ran.wait(WAIT)


@pytest.mark.timeout(30)
def test_explicit_debug_flag_overrides_the_environment() -> None:
    async def debug() -> bool:
        return asyncio.get_running_loop().get_debug()

    with LoopThread("test-nodebug", debug=False) as loop_thread:
        assert loop_thread.call(debug(), timeout=WAIT) is False
