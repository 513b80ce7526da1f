"""Thread choreography the tests share: many threads released at the same instant."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any


def run_at_once(
    count: int, work: Callable[[int], Any], timeout: float = 60, name: str = "at-once"
) -> list[Any]:
    """Run ``work(i)`` on ``count`` threads released together by a Barrier; return the
    results in order. Fails if a thread raised or is still running after ``timeout``."""
    barrier = threading.Barrier(count, timeout=timeout)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), name=f"{name}-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, errors
    return results


def submit_while_closing(
    workers: int,
    per_worker: int,
    submit: Callable[[int], concurrent.futures.Future[Any]],
    close: Callable[[], None],
    timeout: float,
) -> tuple[list[concurrent.futures.Future[Any]], list[BaseException]]:
    """``workers`` threads call ``submit(i)`` up to ``per_worker`` times each, released on
    one Barrier with the caller, who then runs ``close()``. A worker stops at its first
    refusal. Returns every future a submit returned and every refusal."""
    barrier = threading.Barrier(workers + 1, timeout=timeout)
    futures: list[concurrent.futures.Future[Any]] = []
    refusals: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        for i in range(per_worker):
            try:
                future = submit(i)
            except BaseException as exc:
                with lock:
                    refusals.append(exc)
                return
            with lock:
                futures.append(future)

    pool = [threading.Thread(target=worker, name=f"racer-{n}") for n in range(workers)]
    for t in pool:
        t.start()
    barrier.wait()
    close()
    for t in pool:
        t.join(timeout)
    return futures, refusals


async def current_thread_ident() -> int:
    """Awaited on a loop: the ident of the thread running that loop."""
    return threading.get_ident()
