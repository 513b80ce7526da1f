"""A tool that raises is visible to its developer by default: a :class:`ToolErrorWarning`.

The runner turns a tool's exception into an error output for the model - the
conversation goes on, as it must - and counts it (``stats()["tool_errors"]``). That
alone hides a bug: rtclient's logs are off until an application opts in, as a
library's must be, so a tool failing on every call went unseen. A library may not
print, but it may warn: Python's warning machinery is on by default, goes where the
application sends it (stderr, ``logging.captureWarnings``, pytest's summary), and is
the developer's to filter. A subscribable "tool error" event was the other choice;
it is seen only by whoever already knows to subscribe, which is the opposite of the
point.

Shown once per tool by the default filter, and pointing at the tool's own ``def``
line (so ``filterwarnings(..., module="myapp.tools")`` works on it): a tool that fails
on every call is one line, not one per call. Python's default filter shows a warning
once per *text*, and a failure's text changes with its exception message; so each
tool's first failure fixes the text its later ones are warned with (each warning's
``error`` and ``call_id`` are its own). ``simplefilter("always", ToolErrorWarning)``
shows every failure; ``"error"`` raises it in the thread that finished the call,
after the model has been given its error output.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable
from typing import Any

from rtclient._bounded import TEXT, clip, clip_repr
from rtclient.errors import ToolErrorWarning
from rtclient.tools.schema import ToolSpec

_lock = threading.Lock()
_first_texts: dict[tuple[str, int, str], str] = {}  # a tool -> the text of its warning
_registry: dict[Any, Any] = {}  # the warnings registry of every tool's warning


def warn_raised(spec: ToolSpec | None, name: str, call_id: str, exc: BaseException) -> None:
    """Warn that the tool ``name`` raised ``exc`` on the call ``call_id``."""
    filename, lineno, module = _where(spec.fn if spec is not None else None)
    error = clip(f"{type(exc).__name__}: {exc}", TEXT)
    key = (filename, lineno, name)
    with _lock:
        text = _first_texts.setdefault(
            key,
            f"tool {clip_repr(name)} raised {error} - the model received an error output "
            "instead of its result (shown once per tool)",
        )
    warning = ToolErrorWarning(text, tool=name, call_id=call_id, error=error)
    warnings.warn_explicit(
        warning, ToolErrorWarning, filename, lineno, module=module, registry=_registry
    )


def _where(fn: Callable[..., Any] | None) -> tuple[str, int, str]:
    """The tool's source file, ``def`` line and module (rtclient's runner if unknown)."""
    try:
        target: Any = inspect.unwrap(fn) if fn is not None else None
        code = getattr(target, "__code__", None)
        if code is None and target is not None:  # a callable object or a method
            code = getattr(type(target).__call__, "__code__", None)
        if code is not None:
            module = getattr(target, "__module__", None) or "rtclient.tools"
            return code.co_filename, code.co_firstlineno, str(module)
    except Exception:  # an unusual callable: point at the runner instead
        pass
    return __file__, 1, __name__
