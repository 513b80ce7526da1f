"""Tool schemas and the runner's one-follow-up-per-response rule, on real executors."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Literal

import pytest

from rtclient.tools import ToolCall, ToolRunner, build_spec, tool

pytestmark = pytest.mark.timeout(30)


@tool
def get_weather(
    city: str, unit: Literal["c", "f"] = "c", days: int | None = None
) -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: The city name.
        unit: Temperature unit.
    """
    return {"city": city, "unit": unit}


def square(x: int) -> int:
    """Square a number (module level, so a process pool can pickle it)."""
    return x * x


def test_schema_from_signature_and_docstring() -> None:
    spec = build_spec(get_weather)
    assert spec.name == "get_weather"
    assert spec.description == "Current weather for a city."
    params = spec.parameters
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {"type": "string", "description": "The city name."}
    assert params["properties"]["unit"]["enum"] == ["c", "f"]
    assert params["properties"]["days"] == {"type": "integer"}
    assert spec.session_tool()["type"] == "function"
    assert get_weather("Paris") == {"city": "Paris", "unit": "c"}  # still the function


def test_tool_options() -> None:
    @tool(name="slow", timeout=0.5, start_response=False)
    def f() -> None:
        """Slow."""

    spec = build_spec(f)
    assert (spec.name, spec.timeout, spec.start_response) == ("slow", 0.5, False)


class Harness:
    """A ToolRunner wired to lists instead of a connection; the executor is real."""

    def __init__(self, tools: list[Any], executor: Any) -> None:
        self.outputs: list[tuple[str, str]] = []
        self.followups: list[tuple[str, list[ToolCall]]] = []
        self.followup_event = threading.Event()
        self.timers: list[threading.Timer] = []
        self.lock = threading.Lock()
        self.runner = ToolRunner(
            tools,
            executor,
            send_output=self.send_output,
            request_followup=self.request_followup,
            fail_followup=self.fail_followup,
            schedule=self.schedule,
        )
        self.failed: list[tuple[str, BaseException]] = []

    def send_output(self, call_id: str, output: str) -> Future[Any]:
        with self.lock:
            self.outputs.append((call_id, output))
        sent: Future[Any] = Future()
        sent.set_result(None)  # on the wire
        return sent

    def fail_followup(self, rid: str, error: BaseException) -> None:
        with self.lock:
            self.failed.append((rid, error))

    def request_followup(self, rid: str, calls: list[ToolCall]) -> None:
        with self.lock:
            # the rule: every output is out before the follow-up is requested
            sent = {c for c, _ in self.outputs}
            assert all(c.call_id in sent for c in calls)
            self.followups.append((rid, calls))
        self.followup_event.set()

    def schedule(self, delay: float, fn: Any) -> None:
        timer = threading.Timer(delay, fn)
        self.timers.append(timer)
        timer.start()

    def call(self, rid: str, call_id: str, name: str, args: Any) -> None:
        self.runner.on_event(
            {
                "type": "response.function_call_arguments.done",
                "response_id": rid,
                "call_id": call_id,
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            }
        )

    def done(self, rid: str, call_ids: list[str], names: list[str]) -> None:
        output = [
            {"type": "function_call", "call_id": c, "name": n, "arguments": "{}"}
            for c, n in zip(call_ids, names, strict=True)
        ]
        self.runner.on_event({"type": "response.done", "response": {"id": rid, "output": output}})

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
            timer.join()


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(8, thread_name_prefix="test-tool") as executor:
        yield executor


def test_parallel_calls_one_followup_after_done_and_all_outputs(pool: Any) -> None:
    release = threading.Event()

    def slow(i: int) -> int:
        release.wait(10)
        return i

    h = Harness([build_spec(slow)], pool)
    ids = [f"call_{i}" for i in range(5)]
    for i, c in enumerate(ids):
        h.call("resp_1", c, "slow", {"i": i})
    h.done("resp_1", ids, ["slow"] * 5)
    assert not h.followup_event.is_set()  # done, but outputs are not ready
    release.set()
    assert h.followup_event.wait(10)
    assert [rid for rid, _ in h.followups] == ["resp_1"]
    assert sorted(c for c, _ in h.outputs) == sorted(ids)
    assert h.runner.stats.tool_calls == 5


def test_followup_waits_for_response_done(pool: Any) -> None:
    h = Harness([square], pool)
    h.call("resp_1", "call_a", "square", {"x": 3})
    pool.submit(lambda: None).result(5)  # the pool has had its chance to finish
    with h.lock:
        assert not h.followups
    h.done("resp_1", ["call_a"], ["square"])
    assert h.followup_event.wait(5)
    assert h.outputs == [("call_a", "9")]


def test_errors_become_outputs_not_crashes(pool: Any) -> None:
    def boom() -> None:
        raise ValueError("kaput")

    h = Harness([square, boom], pool)
    h.call("r", "c1", "nope", {})
    h.call("r", "c2", "square", "{not json")
    h.call("r", "c3", "square", {"y": 1})
    h.call("r", "c4", "boom", {})
    h.call("r", "c5", "square", "[1, 2]")
    h.done("r", ["c1", "c2", "c3", "c4", "c5"], ["nope", "square", "square", "boom", "square"])
    assert h.followup_event.wait(5)
    outputs = dict(h.outputs)
    assert "unknown tool 'nope'" in json.loads(outputs["c1"])["error"]
    assert "bad arguments" in json.loads(outputs["c2"])["error"]
    assert "bad arguments" in json.loads(outputs["c3"])["error"]
    assert "ValueError: kaput" in json.loads(outputs["c4"])["error"]
    assert "JSON object" in json.loads(outputs["c5"])["error"]
    assert h.runner.stats.tool_errors == 5


def test_timeout_yields_error_output_and_late_result_is_discarded(pool: Any) -> None:
    release = threading.Event()

    @tool(timeout=0.2)
    def hang() -> str:
        """Hangs until released."""
        release.wait(10)
        return "late"

    h = Harness([hang], pool)
    h.call("r", "c1", "hang", {})
    h.done("r", ["c1"], ["hang"])
    assert h.followup_event.wait(10)
    assert "timed out" in json.loads(dict(h.outputs)["c1"])["error"]
    assert h.runner.stats.tool_timeouts == 1
    release.set()
    pool.submit(lambda: None).result(5)
    pool.shutdown(wait=True)
    assert len(h.outputs) == 1 and h.runner.stats.late_results == 1
    h.close()


def test_start_response_false_reports_calls_without_wanting_a_response(pool: Any) -> None:
    @tool(start_response=False)
    def log_it(msg: str) -> str:
        """Fire and forget."""
        return "ok"

    h = Harness([log_it], pool)
    h.call("r", "c1", "log_it", {"msg": "hi"})
    h.done("r", ["c1"], ["log_it"])
    assert h.followup_event.wait(5)
    assert [c.wants_response for c in h.followups[0][1]] == [False]


def test_duplicate_call_events_start_once(pool: Any) -> None:
    h = Harness([square], pool)
    h.call("r", "c1", "square", {"x": 2})
    h.runner.on_event(
        {
            "type": "response.output_item.done",
            "response_id": "r",
            "item": {"type": "function_call", "call_id": "c1", "name": "square", "arguments": "{}"},
        }
    )
    h.done("r", ["c1"], ["square"])
    assert h.followup_event.wait(5)
    assert h.outputs == [("c1", "4")] and h.runner.stats.tool_calls == 1


def test_process_pool_runs_picklable_tools() -> None:
    context = multiprocessing.get_context("forkserver")  # not fork: this process has threads
    with ProcessPoolExecutor(2, mp_context=context) as executor:
        h = Harness([square], executor)
        h.call("r", "c1", "square", {"x": 7})
        h.done("r", ["c1"], ["square"])
        assert h.followup_event.wait(30)
        assert h.outputs == [("c1", "49")]


def test_name_comes_from_output_item_added_when_arguments_done_lacks_it(pool: Any) -> None:
    h = Harness([square], pool)
    h.runner.on_event(
        {
            "type": "response.output_item.added",
            "response_id": "r",
            "item": {"type": "function_call", "call_id": "c1", "name": "square"},
        }
    )
    h.runner.on_event(
        {
            "type": "response.function_call_arguments.done",
            "response_id": "r",
            "call_id": "c1",
            "arguments": '{"x": 5}',
        }
    )
    h.done("r", ["c1"], ["square"])
    assert h.followup_event.wait(5)
    assert h.outputs == [("c1", "25")]
