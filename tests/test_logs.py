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


def test_short_id_keeps_the_type_and_eight_characters() -> None:
    assert (
        logs.short_id("rtc_0123456789abcdef0123456789abcdef")
        == "rtc_01234567\N{HORIZONTAL ELLIPSIS}"
    )
    assert logs.short_id("sess_0123456789abcdef") == "sess_01234567\N{HORIZONTAL ELLIPSIS}"
    assert logs.short_id("0123456789abcdef") == "01234567\N{HORIZONTAL ELLIPSIS}"  # no type prefix
    assert logs.short_id("rtc_nobody") == "rtc_nobody"  # nothing to hide beyond the prefix
    assert logs.short_id(None) == "-"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["webrtc", "sideband"])
def test_a_lost_call_is_named_by_its_short_id_in_warnings(transport: str) -> None:
    """The emulator ends the call under the client: the WARNING that reports the lost
    connection names the call by its prefix, never in full."""
    from rtclient import RealtimeClient
    from rtclient.emulator import Emulator

    lines: list[tuple[str, str]] = []
    sink = logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"])),
        level="DEBUG",
        format="{message}",
    )
    logs.enable()
    try:
        with Emulator(turn_detection=None) as emulator:
            owner = RealtimeClient(base_url=emulator.url, api_key="sk-test", loopback_only=True)
            with owner:
                call_id = emulator.wait_for_sessions(1)[0].call_id
                assert call_id
                client = owner
                if transport == "sideband":
                    client = RealtimeClient(
                        call_id=call_id, base_url=emulator.url, api_key="sk-test"
                    ).connect()
                events = client.events(timeout=20)  # ends when the connection is lost
                emulator.hangup(call_id)
                for _ in events:
                    pass
                assert client.closed
                client.close()
    finally:
        logs.disable()
        logger.remove(sink)
    lost = [msg for level, msg in lines if level == "WARNING" and " lost: " in msg]
    assert lost and all(logs.short_id(call_id) in msg for msg in lost), lines
    loud = [msg for level, msg in lines if level in ("WARNING", "ERROR", "CRITICAL")]
    assert not [msg for msg in loud if call_id in msg], loud
