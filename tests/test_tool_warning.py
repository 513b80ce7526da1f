"""A tool that raises is visible by default: one ToolErrorWarning per tool, filterable.

rtclient's logs are off until an application opts in, so a failing tool used to be
silent unless someone read ``stats()``. Run as a user runs a script (a subprocess, the
interpreter's default warning filters): the first failure of each tool is shown once,
pointing at the tool's own source; ``warnings.filterwarnings`` hides it, shows every
failure, or matches it by the tool's module. (``-W`` and ``PYTHONWARNINGS`` cannot name
a category from an installed package: Python reads them before it can import one.)
In-process: the warning carries the call, and an ``"error"`` filter cannot take the
model's error output away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from rtclient import RealtimeClient, ToolErrorWarning, tool
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(120)

TOOLS = textwrap.dedent(
    '''
    from rtclient import tool


    @tool
    def boom(i: int = 0) -> str:
        """Always fails, each time differently."""
        raise ValueError(f"failure number {i}")


    @tool
    def fine() -> str:
        """Works."""
        return "ok"
    '''
)

APP = textwrap.dedent(
    """
    import warnings

    from rtclient import RealtimeClient, ToolErrorWarning
    from rtclient.emulator import Emulator
    from shop_tools import boom, fine

    FILTER

    with Emulator(turn_detection=None) as emu:
        client = RealtimeClient(
            api_key="sk-test",
            base_url=emu.url,
            transport="websocket",
            tools=[boom, fine],
            session={"output_modalities": ["text"]},
        )
        with client:
            first = client.ask("use boom*3 and fine", timeout=60)
            second = client.ask("use boom", timeout=60)
    print(len(first.tool_calls) + len(second.tool_calls), client.stats()["tool_errors"])
    """
)


def _run(tmp_path: Path, warning_filter: str = "") -> tuple[str, list[str]]:
    """Run the app as a user does (its own process, Python's default filters), with
    ``warning_filter`` as its first statement; the ToolErrorWarning lines it printed."""
    (tmp_path / "shop_tools.py").write_text(TOOLS)
    script = tmp_path / "app.py"
    script.write_text(APP.replace("FILTER", warning_filter))
    drop = ("PYTHONASYNCIODEBUG", "PYTHONWARNINGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "4"]  # 5 calls, 4 of them failed
    warned = [line for line in done.stderr.splitlines() if "ToolErrorWarning" in line]
    return done.stderr, warned


def test_shown_once_per_tool_by_default_pointing_at_the_tool(tmp_path: Path) -> None:
    stderr, warned = _run(tmp_path)
    assert len(warned) == 1, stderr
    (line,) = warned
    # file:line of boom's definition (its decorator), the category, the tool and error
    where = re.match(r"^(.+):(\d+): ToolErrorWarning: tool 'boom' raised ValueError: ", line)
    assert where is not None, line
    assert where.group(1) == str(tmp_path / "shop_tools.py")
    assert TOOLS.splitlines()[int(where.group(2)) - 1] == "@tool"
    assert "failure number" in line and "error output instead of its result" in line


def test_filterable_like_any_warning(tmp_path: Path) -> None:
    _, hidden = _run(tmp_path, 'warnings.filterwarnings("ignore", category=ToolErrorWarning)')
    assert hidden == []
    _, by_module = _run(
        tmp_path,
        'warnings.filterwarnings("ignore", category=ToolErrorWarning, module="shop_tools")',
    )
    assert by_module == []  # located in the tool's own module
    _, other_module = _run(
        tmp_path,
        'warnings.filterwarnings("ignore", category=ToolErrorWarning, module="elsewhere")',
    )
    assert len(other_module) == 1
    _, every = _run(tmp_path, 'warnings.simplefilter("always", ToolErrorWarning)')
    assert len(every) == 4  # every failure


@tool
def flaky(i: int = 0) -> str:
    """Fails."""
    raise RuntimeError(f"broken {i}")


def test_the_warning_carries_the_call_and_an_error_filter_keeps_the_output() -> None:
    with (
        Emulator(turn_detection=None) as emu,
        RealtimeClient(
            api_key="sk-test",
            base_url=emu.url,
            transport="websocket",
            tools=[flaky],
            session={"output_modalities": ["text"]},
        ) as client,
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ToolErrorWarning)
            answer = client.ask("use flaky", timeout=60)
        (record,) = [w for w in caught if issubclass(w.category, ToolErrorWarning)]
        warning = record.message
        assert isinstance(warning, ToolErrorWarning)
        (call,) = answer.tool_calls
        assert (warning.tool, warning.call_id) == ("flaky", call.call_id)
        assert warning.error == "RuntimeError: broken 0"
        assert record.filename == __file__

        # "error": the warning is raised in the thread that finished the call - after
        # the model got its error output, so the round still completes
        with warnings.catch_warnings():
            warnings.simplefilter("error", ToolErrorWarning)
            again = client.ask("use flaky", timeout=60)
        (call,) = again.tool_calls
        assert call.error == "flaky raised RuntimeError: broken 0"
        assert again.text.startswith("Tool results: flaky -> ")
