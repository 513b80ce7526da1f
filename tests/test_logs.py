"""Logging as a library should: silent by default, routable into standard logging."""

from __future__ import annotations

import logging

import pytest
from loguru import logger

from rtclient import logs
from rtclient.core.gate import ResponseGate

pytestmark = pytest.mark.timeout(10)


def test_silent_until_enabled() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="TRACE", format="{message}")
    try:
        ResponseGate().request("quiet")
        assert lines == []
        logs.enable()
        ResponseGate().request("loud")
        assert any("[RESPONSE_CREATE]" in line for line in lines)
    finally:
        logs.disable()
        logger.remove(sink)


def test_records_route_into_standard_logging(caplog: pytest.LogCaptureFixture) -> None:
    handler_id = logs.to_logging()
    try:
        with caplog.at_level(logging.DEBUG, logger="rtclient"):
            gate = ResponseGate()
            gate.request("first")
            gate.request("second")
        names = {r.name for r in caplog.records}
        messages = [r.getMessage() for r in caplog.records]
        assert names == {"rtclient.core.gate"}
        assert any(m.startswith("[RESPONSE_CREATE_CHECK]") for m in messages)
        assert any(m.startswith("[RESPONSE_QUEUED]") for m in messages)
        queued = next(r for r in caplog.records if "[RESPONSE_QUEUED]" in r.getMessage())
        assert queued.levelno == logging.INFO and queued.funcName == "_log"
    finally:
        logger.remove(handler_id)
        logs.disable()


def test_standard_logging_levels_still_filter(caplog: pytest.LogCaptureFixture) -> None:
    handler_id = logs.to_logging()
    try:
        with caplog.at_level(logging.WARNING, logger="rtclient"):
            ResponseGate().request("only debug and info")
        assert caplog.records == []
    finally:
        logger.remove(handler_id)
        logs.disable()


def test_to_logging_prints_each_record_once() -> None:
    """In a fresh process loguru's default stderr handler exists; routing into logging
    must not leave it printing a second copy of every record."""
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from rtclient import ResponseGate, logs\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "logs.to_logging()\n"
        "ResponseGate().request('tool_call_result:call_1')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert output.count("[RESPONSE_CREATE]") == 1
    assert "INFO:rtclient.core.gate:[RESPONSE_CREATE]" in proc.stdout
