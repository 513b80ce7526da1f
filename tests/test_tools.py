"""Tool schemas and the runner's one-follow-up-per-response rule, on real executors.

Also: schemas from pydantic for the types a tool takes, arguments validated (and
coerced) before a call, the three docstring styles, ``@tool``'s types under
``mypy --strict``, and all of it end to end through the emulator.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Optional

import pydantic
import pytest
from typing_extensions import TypedDict  # typing's is refused by pydantic before 3.12

from rtclient.effects import Later, Start
from rtclient.tools import (
    OutputReady,
    RoundComplete,
    RoundFailed,
    ToolCall,
    ToolRunner,
    ToolSpec,
    build_spec,
    tool,
)

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[1]


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


class _Runner(ToolRunner):
    """``on_event`` hands its steps to the harness, as the session's dispatcher does."""

    def __init__(self, harness: Harness, tools: list[Any]) -> None:
        super().__init__(tools)
        self._harness = harness

    def on_event(self, event: Any) -> list[Any]:  # type: ignore[override]
        steps = super().on_event(event)
        self._harness.apply(steps)
        return []


class Harness:
    """A ToolRunner whose steps are carried out by this harness instead of a session:
    outputs go to a list (and count as on the wire), timers are real threading timers,
    the executor is real."""

    def __init__(self, tools: list[Any], executor: Any) -> None:
        self.outputs: list[tuple[str, str]] = []
        self.followups: list[tuple[str, list[ToolCall]]] = []
        self.followup_event = threading.Event()
        self.timers: list[threading.Timer] = []
        self.lock = threading.Lock()
        self.executor = executor
        self.runner = _Runner(self, tools)
        self.failed: list[tuple[str, BaseException]] = []

    def apply(self, steps: list[Any]) -> None:
        for step in steps:
            if isinstance(step, Start):
                future = self.executor.submit(step.fn, *step.args, **step.kwargs)
                future.add_done_callback(
                    lambda f, s=step: self.apply(self.runner.finished(s.work, f, None))
                )
            elif isinstance(step, Later):
                timer = threading.Timer(step.delay, lambda s=step: self.apply(self.runner.timer(s)))
                self.timers.append(timer)
                timer.start()
            elif isinstance(step, OutputReady):
                with self.lock:
                    self.outputs.append((step.call.call_id, step.text))
                self.apply(self.runner.delivered(step, None))  # on the wire
            elif isinstance(step, RoundComplete):
                with self.lock:
                    # the rule: every output is out before the follow-up is requested
                    sent = {c for c, _ in self.outputs}
                    assert all(c.call_id in sent for c in step.calls)
                    self.followups.append((step.response_id, step.calls))
                self.followup_event.set()
            elif isinstance(step, RoundFailed):
                with self.lock:
                    self.failed.append((step.response_id, step.error))

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


# -- types a tool takes: schemas from pydantic ---------------------------------------


class Color(enum.Enum):
    """A colour."""

    RED = "red"
    GREEN = "green"


class Point(pydantic.BaseModel):
    """A point on the map."""

    x: int
    y: int = 0
    label: str | None = pydantic.Field(None, description="What is there.")


class Route(pydantic.BaseModel):
    origin: Point
    stops: list[Point] = []


class Tree(pydantic.BaseModel):
    value: int
    children: list[Tree] = []


class Options(TypedDict):
    verbose: bool


POINT = {
    "type": "object",
    "description": "A point on the map.",
    "properties": {
        "x": {"type": "integer"},
        "y": {"type": "integer", "default": 0},
        "label": {"type": "string", "description": "What is there."},  # None by omission
    },
    "required": ["x"],
}
_EMPTY = object()


def schema_of(annotation: Any, default: Any = _EMPTY) -> tuple[dict[str, Any], bool]:
    """The schema of a tool's one parameter ``x`` of that type, and whether it is required."""

    def fn(x):  # type: ignore[no-untyped-def]
        return x

    fn.__annotations__ = {"x": annotation}
    if default is not _EMPTY:
        fn.__defaults__ = (default,)
    params = build_spec(fn).parameters
    return params["properties"]["x"], params["required"] == ["x"]


def walk(node: Any) -> list[Any]:
    """Every dict and list inside ``node``."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found.extend(walk(child))
    return found


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (Any, {}),
        (Color, {"type": "string", "enum": ["red", "green"], "description": "A colour."}),
        (Literal["c", "f"], {"type": "string", "enum": ["c", "f"]}),
        (Point, POINT),
        (
            Options,
            {
                "type": "object",
                "properties": {"verbose": {"type": "boolean"}},
                "required": ["verbose"],
            },
        ),
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list[Point], {"type": "array", "items": POINT}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (dt.datetime, {"type": "string", "format": "date-time"}),
        (dt.date, {"type": "string", "format": "date"}),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v) if not isinstance(v, dict) else "",
)
def test_schema_of_each_type(annotation: Any, expected: dict[str, Any]) -> None:
    assert schema_of(annotation) == (expected, True)


def test_optional_and_defaults() -> None:
    # X | None = None: the model may leave it out (that means None), so just X
    assert schema_of(Optional[int], None) == ({"type": "integer"}, False)  # noqa: UP045
    assert schema_of(Point | None, None) == (POINT, False)
    assert schema_of(int | str | None, None) == (
        {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        False,
    )
    # a real default is shown; None is then a value of its own, so null stays
    assert schema_of(int, 3) == ({"type": "integer", "default": 3}, False)
    assert schema_of(Literal["c", "f"], "c") == (
        {"type": "string", "enum": ["c", "f"], "default": "c"},
        False,
    )
    assert schema_of(int | None, 5) == (
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 5},
        False,
    )


def test_nested_models_are_inlined_and_the_schema_is_plain() -> None:
    @tool
    def plan(route: Route, tree: Tree, when: dt.datetime) -> None:
        """Plan a trip.

        Args:
            route: The way to go.
        """

    params = build_spec(plan).parameters
    assert params["properties"]["route"] == {
        "type": "object",
        "description": "The way to go.",  # the docstring's, over the class's own
        "properties": {
            "origin": POINT,
            "stops": {"type": "array", "items": POINT, "default": []},
        },
        "required": ["origin"],
    }
    nodes = walk(params)
    assert not any(isinstance(n, dict) and "title" in n for n in nodes)
    # only a recursive type keeps a definition, for its reference to itself
    refs = {n["$ref"] for n in nodes if isinstance(n, dict) and "$ref" in n}
    assert refs == {"#/$defs/Tree"} and set(params["$defs"]) == {"Tree"}
    assert params["properties"]["tree"]["properties"]["children"]["items"] == {
        "$ref": "#/$defs/Tree"
    }
    assert params["$defs"]["Tree"]["required"] == ["value"]
    assert params["required"] == ["route", "tree", "when"]
    assert params["additionalProperties"] is False
    json.dumps(params)  # plain JSON


def test_top_level_object_and_var_keyword() -> None:
    def f(a: int, *args: int, b: str = "x", **kwargs: Any) -> None:
        """F."""

    def g() -> None:
        """G."""

    assert build_spec(f).parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "default": "x"}},
        "required": ["a"],  # no additionalProperties: false, **kwargs takes the rest
    }
    assert build_spec(g).parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_any_parameter_name_works() -> None:
    def f(json: str, model_config: int, _private: bool = False) -> tuple[str, int, bool]:
        """Names that a BaseModel field could not have."""
        return json, model_config, _private

    spec = build_spec(f)
    assert list(spec.parameters["properties"]) == ["json", "model_config", "_private"]
    assert spec.validate({"json": "j", "model_config": "2", "_private": True}) == (
        (),
        {"json": "j", "model_config": 2, "_private": True},
    )


def test_unusable_types_fail_at_decoration() -> None:
    class Opaque:  # pydantic cannot build it from JSON
        pass

    with pytest.raises(TypeError, match=r"tool 'f': parameter 'lock'"):

        @tool
        def f(lock: Opaque) -> None:
            """F."""

    def g(x: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        """G."""

    with pytest.raises(TypeError, match=r"tool 'g': the annotation 'NotDefinedAnywhere' of "):
        build_spec(g)

    def h(x: int) -> OnlyForTypeCheckers:  # type: ignore[name-defined]  # noqa: F821
        """The return annotation is never read."""

    assert build_spec(h).parameters["properties"] == {"x": {"type": "integer"}}


def test_local_types_resolve_in_the_decorating_scope() -> None:
    class Local(pydantic.BaseModel):  # a string annotation here (__future__ annotations)
        n: int

    @tool
    def f(item: Local) -> int:
        """F."""
        return item.n

    spec = build_spec(f)
    assert spec.parameters["properties"]["item"]["properties"] == {"n": {"type": "integer"}}
    ((), kwargs) = spec.validate({"item": {"n": "4"}})
    assert isinstance(kwargs["item"], Local) and f(**kwargs) == 4


# -- arguments: validated and coerced before the call --------------------------------


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def locate(where: Point, when: dt.datetime, color: Color = Color.RED) -> str:
    """Module level with model arguments: a process pool pickles what it receives."""
    assert isinstance(where, Point) and isinstance(when, dt.datetime)
    assert isinstance(color, Color)
    return f"{where.x},{where.y} {color.value} at {when.isoformat()}"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            {"a": 1, "b": "seven"},
            "b: Input should be a valid integer, unable to parse string as an integer"
            ' (got "seven")',
        ),
        ({"a": 1}, "b: missing required argument"),
        ({"a": 1, "b": 2, "c": 3}, "c: unexpected argument (add takes a, b)"),
        ({"a": 1.5, "b": [2]}, "a: Input should be a valid integer, got a number with a"),
        ({"a": 1.5, "b": [2]}, "; b: Input should be a valid integer (got [2])"),
    ],
)
def test_validation_errors_name_the_field(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as info:
        build_spec(add).validate(arguments)
    assert error in str(info.value)


def test_nested_errors_name_the_path() -> None:
    def route(r: Route, when: dt.date) -> None:
        """R."""

    with pytest.raises(ValueError) as info:
        build_spec(route).validate(
            {"r": {"origin": {"x": "one"}, "stops": [{"x": 1}, {"y": 2}]}, "when": "someday"}
        )
    text = str(info.value)
    assert "r.origin.x: Input should be a valid integer" in text
    assert "r.stops[1].x: missing required field" in text
    assert 'when: Input should be a valid date or datetime, input is too short (got "someday")' in (
        text
    )


def test_coercion_follows_pydantic_lax_mode() -> None:
    def f(
        n: int,
        x: float,
        flag: bool,
        color: Color,
        when: dt.datetime,
        day: dt.date,
        pair: tuple[int, str],
        tags: set[str],
        where: Point,
        options: Options,
    ) -> None:
        """F."""

    ((), kwargs) = build_spec(f).validate(
        {
            "n": "7",
            "x": 2,
            "flag": "true",
            "color": "green",
            "when": "2024-05-01T10:30:00Z",
            "day": "2024-05-01",
            "pair": [1, "a"],
            "tags": ["a", "b", "a"],
            "where": {"x": "3", "label": "home"},
            "options": {"verbose": 1},
        }
    )
    assert kwargs == {
        "n": 7,
        "x": 2.0,
        "flag": True,
        "color": Color.GREEN,
        "when": dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.timezone.utc),
        "day": dt.date(2024, 5, 1),
        "pair": (1, "a"),
        "tags": {"a", "b"},
        "where": Point(x=3, label="home"),
        "options": {"verbose": True},
    }
    assert type(kwargs["where"]) is Point and type(kwargs["when"]) is dt.datetime


def test_only_given_arguments_are_passed_and_positional_only_works() -> None:
    sentinel = object()

    def f(a: int, /, b: int = 2, *, c: Any = sentinel, **rest: Any) -> None:
        """F."""

    spec = build_spec(f)
    assert spec.validate({"a": "1"}) == ((1,), {})  # the function's own defaults apply
    assert spec.validate({"a": 1, "c": None, "zz": [1]}) == ((1,), {"c": None, "zz": [1]})


def test_a_hand_made_spec_still_validates() -> None:
    spec = ToolSpec(fn=add, name="plus", description="Plus.", parameters={"type": "object"})
    assert spec.validate({"a": "1", "b": 2}) == ((), {"a": 1, "b": 2})
    with pytest.raises(ValueError, match="c: unexpected argument"):
        spec.validate({"a": 1, "b": 2, "c": 3})


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(4, thread_name_prefix="test-count")
        self.submitted: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted.append((fn, args, kwargs))
        return super().submit(fn, *args, **kwargs)


class Strict(pydantic.BaseModel):
    key: str

    @pydantic.field_validator("key")
    @classmethod
    def _lookup(cls, value: str) -> str:
        raise LookupError(f"no such key {value}")  # not a ValueError: pydantic lets it out


def test_bad_arguments_never_reach_the_executor() -> None:
    seen: list[tuple[Any, ...]] = []

    @tool
    def place(where: Point, when: dt.datetime) -> str:
        """Place."""
        seen.append((where, when))
        return "placed"

    @tool
    def fetch(item: Strict) -> str:
        """Fetch."""
        return "never"

    with CountingExecutor() as executor:
        h = Harness([place, fetch, add], executor)
        h.call("r", "c1", "place", {"where": {"x": "one"}, "when": "2024-05-01T10:00:00"})
        h.call("r", "c2", "place", {"where": {"x": 1}, "when": "noon", "extra": 1})
        h.call("r", "c3", "add", {"a": 1, "b": "seven"})
        h.call("r", "c4", "fetch", {"item": {"key": "k"}})
        h.call("r", "c5", "place", {"where": {"x": 1, "y": "2"}, "when": "2024-05-01T10:00:00"})
        h.call("r", "c6", "add", {"a": "7", "b": 1})
        h.done(
            "r", [f"c{i}" for i in range(1, 7)], ["place", "place", "add", "fetch", "place", "add"]
        )
        assert h.followup_event.wait(5)
        submitted = [(fn.__name__, kwargs) for fn, _, kwargs in executor.submitted]
    outputs = dict(h.outputs)
    errors = {
        c: json.loads(o)["error"] for c, o in outputs.items() if c in ("c1", "c2", "c3", "c4")
    }
    assert errors["c1"].startswith(
        "bad arguments for place: where.x: Input should be a valid integer"
    )
    assert "when: Input should be a valid datetime" in errors["c2"]
    assert "extra: unexpected argument (place takes where, when)" in errors["c2"]
    assert errors["c3"].startswith(
        "bad arguments for add: b: Input should be a valid integer, unable to parse string"
    )
    assert errors["c4"] == "bad arguments for fetch: LookupError('no such key k')"
    assert (outputs["c5"], outputs["c6"]) == ("placed", "8")
    assert seen == [(Point(x=1, y=2), dt.datetime(2024, 5, 1, 10))]
    assert submitted == [
        ("place", {"where": Point(x=1, y=2), "when": dt.datetime(2024, 5, 1, 10)}),
        ("add", {"a": 7, "b": 1}),
    ]
    assert h.runner.stats.tool_errors == 4
    calls = {c.call_id: c for c in h.followups[0][1]}
    assert calls["c3"].error is not None and calls["c3"].error.startswith("bad arguments")


def test_process_pool_receives_validated_model_arguments() -> None:
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        h = Harness([locate], executor)
        args = {"where": {"x": "1", "y": 2}, "when": "2024-05-01T10:00:00", "color": "green"}
        h.call("r", "c1", "locate", args)
        h.done("r", ["c1"], ["locate"])
        assert h.followup_event.wait(30)
        assert h.outputs == [("c1", "1,2 green at 2024-05-01T10:00:00")]


# -- docstrings: Google, NumPy, reST --------------------------------------------------


def google(city: str, days: int = 1) -> None:
    """Forecast for a city,
    day by day.

    Uses the national service.

    Args:
        city (str): The city name,
            in English.
        days: How many days.

    Returns:
        Nothing.
    """


def numpy(city: str, days: int = 1) -> None:
    """Forecast for a city,
    day by day.

    Uses the national service.

    Parameters
    ----------
    city : str
        The city name,
        in English.
    days : int, optional
        How many days.

    Returns
    -------
    None
    """


def rest(city: str, days: int = 1) -> None:
    """Forecast for a city,
    day by day.

    Uses the national service.

    :param str city: The city name,
        in English.
    :param days: How many days.
    :returns: nothing
    """


@pytest.mark.parametrize("fn", [google, numpy, rest])
def test_docstring_styles(fn: Callable[..., Any]) -> None:
    spec = build_spec(fn)
    assert spec.description == "Forecast for a city, day by day.\n\nUses the national service."
    assert spec.parameters["properties"] == {
        "city": {"type": "string", "description": "The city name, in English."},
        "days": {"type": "integer", "default": 1, "description": "How many days."},
    }


def test_no_docstring_and_plain_docstring() -> None:
    def bare(a: int) -> None:
        pass

    def plain(a: int) -> None:
        """Just a sentence."""

    assert build_spec(bare).description == ""
    assert build_spec(bare).parameters["properties"] == {"a": {"type": "integer"}}
    assert build_spec(plain).description == "Just a sentence."


# -- types for type checkers: mypy --strict on a user's script -----------------------

USER_SCRIPT = '''
from collections.abc import Callable

from rtclient import tool


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(timeout=5, start_response=False, name="times", description="Multiply.")
def mul(a: int, b: int) -> int:
    return a * b


plain: Callable[[int, int], int] = add
options: Callable[[int, int], int] = mul
total: int = add(1, 2) + mul(3, b=4)
reveal_type(add)
reveal_type(mul)
'''

MISUSE = """
from rtclient import tool


@tool
def add(a: int, b: int) -> int:
    return a + b


@tool(timeout=5)
def mul(a: int, b: int) -> int:
    return a * b


add("x", 1)
mul(1, "y")
text: str = add(1, 2)
"""


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(script: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    # MYPYPATH: an editable install is an import hook mypy cannot follow; silent: the
    # user's script is checked, rtclient's own modules only read for their types
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
    command += ["--cache-dir", str(cache), "--no-error-summary", str(script)]
    return subprocess.run(
        command, cwd=script.parent, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.timeout(300)
def test_mypy_strict_keeps_the_tools_signature(tmp_path: Path, mypy_cache: Path) -> None:
    pytest.importorskip("mypy")
    script = tmp_path / "user_tools.py"
    script.write_text(USER_SCRIPT)
    result = run_mypy(script, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    revealed = [line for line in result.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 2, result.stdout
    assert all('"def (a: int, b: int) -> int"' in line for line in revealed), result.stdout


@pytest.mark.timeout(300)
def test_mypy_strict_reports_a_misused_tool(tmp_path: Path, mypy_cache: Path) -> None:
    pytest.importorskip("mypy")
    script = tmp_path / "user_misuse.py"
    script.write_text(MISUSE)
    result = run_mypy(script, mypy_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line.split(":", 1)[1] for line in result.stdout.splitlines() if ": error:" in line]
    assert errors == [
        '15: error: Argument 1 to "add" has incompatible type "str"; expected "int"  [arg-type]',
        '16: error: Argument 2 to "mul" has incompatible type "str"; expected "int"  [arg-type]',
        "17: error: Incompatible types in assignment (expression has type"
        ' "int", variable has type "str")  [assignment]',
    ], result.stdout


# -- end to end: the emulator's model calls, the client validates --------------------


def test_end_to_end_model_arguments_and_a_refused_call(
    rt_emulator: Any, rt_connect: Callable[..., Any]
) -> None:
    seen: list[tuple[Any, ...]] = []

    @tool
    def mark(where: Point, when: dt.datetime, color: Color = Color.RED) -> str:
        """Mark a place on the map."""
        seen.append((where, when, color))
        return f"{where.x},{where.y} {color.value} at {when.isoformat()}"

    client = rt_connect(tools=[mark])
    answer = client.ask(
        'use mark({"where": {"x": 1, "y": "2"}, "when": "2024-05-01T10:00:00", "color": "green"})',
        timeout=20,
    )
    assert seen == [(Point(x=1, y=2), dt.datetime(2024, 5, 1, 10), Color.GREEN)]
    assert type(seen[0][0]) is Point and type(seen[0][1]) is dt.datetime
    assert "mark -> 1,2 green at 2024-05-01T10:00:00" in answer.text
    (call,) = answer.tool_calls
    assert call.error is None and call.output == "1,2 green at 2024-05-01T10:00:00"

    answer = client.ask('use mark({"where": {"x": "one"}, "when": "2024-05-01"})', timeout=20)
    (call,) = answer.tool_calls
    assert call.error == (
        "bad arguments for mark: where.x: Input should be a valid integer, unable to parse "
        'string as an integer (got "one")'
    )
    assert len(seen) == 1, "the tool was never called with a bad argument"
    events = rt_emulator.sessions[-1].client_events
    outputs = [
        e["item"]["output"]
        for e in events
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]
    assert outputs == ["1,2 green at 2024-05-01T10:00:00", json.dumps({"error": call.error})]
    assert "bad arguments for mark: where.x" in answer.text  # the model read it
    assert rt_emulator.stats()["rejections"] == 0
