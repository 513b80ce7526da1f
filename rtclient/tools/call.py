"""Calling one tool with the model's arguments: parse, validate, call, encode.

The same steps whichever API asked (a GPT-Live backend's function call here; the
Realtime runner does them inline), run on the executor - never under a lock, since a
model's own validator and the tool are user code. Nothing raises: a bad argument, an
exception or an unserialisable result is an :class:`ToolOutcome` with ``error`` set
and an error ``output`` the model can read (:func:`~rtclient.tools.schema.error_output`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from rtclient.tools.schema import ToolSpec, build_spec, error_output


@dataclasses.dataclass(frozen=True)
class ToolOutcome:
    """What a call produced: the ``output`` to send, and ``error`` if it failed."""

    output: str
    error: str | None = None


def failed(message: str) -> ToolOutcome:
    """An outcome that tells the model what went wrong."""
    return ToolOutcome(error_output(message), message)


def specs_by_name(tools: Iterable[Callable[..., Any] | ToolSpec]) -> dict[str, ToolSpec]:
    """Each tool's spec (built from a plain callable), by name; two of one name raise."""
    specs: dict[str, ToolSpec] = {}
    for t in tools:
        spec = t if isinstance(t, ToolSpec) else build_spec(t)
        if spec.name in specs:
            raise ValueError(f"two tools are named {spec.name!r}")
        specs[spec.name] = spec
    return specs


def call_tool(spec: ToolSpec, arguments: str) -> ToolOutcome:
    """Run ``spec`` with the model's JSON ``arguments``; never raises."""
    try:
        raw = json.loads(arguments) if arguments.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError("arguments must be a JSON object")
        args, kwargs = spec.validate(raw)
    except Exception as exc:  # a model's own validator may raise anything
        why = str(exc) if isinstance(exc, ValueError | TypeError) else repr(exc)
        return failed(f"bad arguments for {spec.name}: {why}")
    try:
        result = spec.fn(*args, **kwargs)
    except Exception as exc:
        return failed(f"{spec.name} raised {type(exc).__name__}: {exc}")
    if isinstance(result, str):
        return ToolOutcome(result)
    try:
        return ToolOutcome(json.dumps(result, default=str))
    except Exception as exc:  # not JSON-serialisable even with default=str
        return failed(f"{spec.name} returned an unserialisable result: {exc}")
