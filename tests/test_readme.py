"""Every code block in the README runs here, so the README cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [body for lang, body in BLOCK.findall(text) if lang == language]


def test_the_readme_has_the_blocks_this_file_runs() -> None:
    assert len(blocks("bash")) == 2 and len(blocks("python")) == 8


def test_quickstart_test_command_is_what_ci_runs() -> None:
    command = blocks("bash")[1].strip()
    assert command == "python -m pip install -e '.[dev]' && python -m pytest"
    assert command in (ROOT / ".ci" / "run").read_text()


def test_quickstart_demo_command_runs() -> None:
    install, demo = blocks("bash")[0].strip().split(" && ")
    assert install == "python -m pip install -e ."  # this suite runs in that install
    proc = subprocess.run(
        [sys.executable, *demo.split()[1:]], capture_output=True, text=True, timeout=100
    )
    assert proc.returncode == 0, proc.stderr
    assert "lost triggers" in proc.stdout


@pytest.mark.parametrize("index", [0, 1, 2, 3, 5, 6, 7])
def test_python_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    from rtclient import logs

    code = blocks("python")[index]
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})
    finally:
        logs.disable()
        from loguru import logger

        logger.remove()  # the logging block's handler; loguru's default is not needed here


def test_the_plugin_block_passes_as_a_users_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_plugin=blocks("python")[4])
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)
