"""Tools: schemas from signatures (:mod:`.schema`) and their running (:mod:`.runner`)."""

from rtclient.tools.call import ToolOutcome, call_tool, specs_by_name
from rtclient.tools.runner import (
    TOOL_EVENTS,
    OutputReady,
    RoundComplete,
    RoundFailed,
    ToolCall,
    ToolRunner,
    ToolStats,
)
from rtclient.tools.schema import ToolArguments, ToolSpec, build_spec, error_output, tool

__all__ = [
    "TOOL_EVENTS",
    "OutputReady",
    "RoundComplete",
    "RoundFailed",
    "ToolArguments",
    "ToolCall",
    "ToolOutcome",
    "ToolRunner",
    "ToolSpec",
    "ToolStats",
    "build_spec",
    "call_tool",
    "error_output",
    "specs_by_name",
    "tool",
]
