"""A real browser: headless Chromium calls through the Flask example, on loopback only.

Chromium gathers an ICE candidate on every interface it sees, so the app, Playwright
and Chromium run in a private network namespace whose only interface is ``lo``
(``unshare -n``, as root): nothing can leave 127.0.0.1, whatever any of them tries.
The run happens in ``tests/browser_run.py``; this test starts it in the namespace with
a bounded timeout and asserts on its JSON. Where the namespace or Chromium is not
available the test is skipped with the reason - it never falls back to a network
that is not loopback.

Needs Debian's ``chromium`` and the ``playwright`` package (``.ci/run`` installs both;
never ``playwright install``). Its screenshot is kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
RUNNER = Path(__file__).with_name("browser_run.py")
ARTIFACTS = Path(__file__).with_name("artifacts")
RUN_TIMEOUT_S = 150
IN_LOOPBACK_NAMESPACE = ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "bash"]


def loopback_namespace_or_skip() -> None:
    """Skip, with the reason, unless a loopback-only namespace and Chromium are here."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("unshare -n needs root")
    for tool in ("unshare", "ip", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (util-linux, iproute2)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    pytest.importorskip("playwright", reason="pip install playwright")
    probe = subprocess.run(
        [*IN_LOOPBACK_NAMESPACE, "ip", "-o", "link"], capture_output=True, text=True, timeout=20
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.strip()}")
    links = [line.split(":")[1].strip() for line in probe.stdout.splitlines()]
    assert links == ["lo"], f"the namespace is not loopback-only: {links}"


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_chromium_completes_a_call_with_a_tool_round_through_the_flask_app(
    tmp_path: Path,
) -> None:
    loopback_namespace_or_skip()
    started = time.monotonic()
    proc = subprocess.Popen(
        [*IN_LOOPBACK_NAMESPACE, sys.executable, str(RUNNER), "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=RUNNER.parent.parent,
        start_new_session=True,  # its own process group: Chromium included
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the browser run did not finish in {RUN_TIMEOUT_S}s:\n{stderr[-4000:]}")
    wall = time.monotonic() - started
    lines = stdout.strip().splitlines()
    assert lines, f"no result (exit {proc.returncode}):\n{stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, f"{result['error']}\n{stderr[-4000:]}"
    assert proc.returncode == 0

    # Nothing but loopback: the namespace, every request, every ICE candidate.
    assert result["interfaces"] == ["lo"]
    assert result["request_hosts"] == ["127.0.0.1"]
    assert result["offer_candidates"] and set(result["offer_candidates"]) == {"127.0.0.1"}
    assert result["answer_candidates"] and set(result["answer_candidates"]) == {"127.0.0.1"}

    # A call with a tool round: typed in the page, the tool run by the app's sideband.
    order = '{"order_id": 7, "status": "shipped", "carrier": "DHL"}'
    assert result["log"] == [
        'you: Where is my order? lookup_order({"order_id": 7})',
        'tool: lookup_order({"order_id":7})',  # the model's call, as the browser saw it
        f"tool: -> {order}",  # the sideband's output
        f"assistant: Tool results: lookup_order -> {order}.",  # the follow-up it requested
    ]
    assert result["audio_frames_in"] > 0, "the fake microphone's audio reached the API"
    emulator = result["emulator"]
    assert emulator["calls"] == 1 and emulator["rejections"] == 0 and emulator["errors"] == 0
    assert emulator["creates"] == emulator["responses"] == 2  # the browser's, the sideband's

    # Hung up: for the page, the API and the app's registry. No key ever reached the page.
    assert result["status"] == "ended - you hung up" and result["session_closed"] is True
    assert result["live_calls_after"] == []
    assert result["key_in_any_response"] is False and result["responses_seen"] >= 3
    assert result["console_errors"] == []

    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "browser-call.png"
    shutil.copyfile(result["screenshot"], kept)
    print(f"\nscreenshot: {kept}\ntimings: {result['timings']}; run wall time {wall:.1f}s")
