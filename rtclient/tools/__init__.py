"""Tools: schemas from signatures (:mod:`.schema`) and their running (:mod:`.runner`)."""

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
    "ToolRunner",
    "ToolSpec",
    "ToolStats",
    "build_spec",
    "error_output",
    "tool",
]
