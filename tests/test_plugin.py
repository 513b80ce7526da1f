"""The pytest plugin, as a user meets it: fixtures available with no conftest."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)

USER_TEST = '''
import pytest
from rtclient import tool

@tool
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b

@pytest.fixture
def rt_tools():
    return [add]

def test_add_round(rt_client, rt_emulator):
    answer = rt_client.ask('use add({"a": 2, "b": 3})', timeout=30)
    assert "add -> 5" in answer.text
    assert rt_emulator.stats()["rejections"] == 0

def test_two_clients(rt_connect, rt_emulator):
    a, b = rt_connect(), rt_connect()
    a.send_text("hi").result(10)
    b.send_text("hi").result(10)
    assert rt_emulator.stats()["sessions"] == 2

def test_a_failing_tool_shows_up(rt_client, rt_emulator):
    assert rt_client.ask("use add", timeout=30).text.count("bad arguments") == 1
'''


def test_fixtures_work_in_a_users_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_plugin_is_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe="def test_probe(rt_emulator):\n    assert rt_emulator.url\n")
    result = pytester.runpytest_subprocess("--fixtures", "-q")
    result.stdout.fnmatch_lines(["*rt_emulator*", "*rt_connect*", "*rt_client*"])
