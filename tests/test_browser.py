"""A real browser: headless Chromium calls through the Flask and Django examples, on
loopback only.

Chromium gathers an ICE candidate on every interface it sees, so the app, Playwright
and Chromium run in a private network namespace whose only interface is ``lo``
(``unshare -n``, as root): nothing can leave 127.0.0.1, whatever any of them tries.
The runs happen in ``tests/browser_run.py``; each test starts one in the namespace with
a bounded timeout and asserts on its JSON: a call with a tool round; two browser
contexts (two users) where B cannot end A's call; Chromium without the loopback flag,
and what the page tells the user then. Where the namespace or Chromium is not
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
from typing import Any

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


def browser_run(tmp_path: Path, app: str, scenario: str) -> dict[str, Any]:
    """``browser_run.py`` in a loopback-only namespace: its JSON result."""
    loopback_namespace_or_skip()
    started = time.monotonic()
    argv = [sys.executable, str(RUNNER), "--out", str(tmp_path), "--app", app]
    proc = subprocess.Popen(
        [*IN_LOOPBACK_NAMESPACE, *argv, "--scenario", scenario],
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
    assert result["interfaces"] == ["lo"]
    result["wall_s"] = round(wall, 1)
    return dict(result)


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_chromium_completes_a_call_with_a_tool_round_through_the_flask_app(
    tmp_path: Path,
) -> None:
    result = browser_run(tmp_path, "flask", "call")

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
    print(f"\nscreenshot: {kept}\ntimings: {result['timings']}; wall {result['wall_s']}s")


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("app", ["flask", "django"])
def test_another_browser_cannot_end_a_users_call(tmp_path: Path, app: str) -> None:
    """Two browser contexts, two cookie jars: B learns A's call id and posts its
    hang-up as the page would (Django: with B's own CSRF token); 403, and A's call is
    still up on the emulator and still answers with its tool."""
    result = browser_run(tmp_path, app, "two-sessions")
    call_a, call_b = result["calls"]
    assert call_a != call_b
    refused = result["b_hangs_up_a"]
    assert refused["status"] == 403, refused
    assert refused["body"]["error"]["message"] == "this call belongs to another browser session"
    bare = result["b_hangs_up_a_without_token"]
    assert bare["status"] == 403, bare
    if app == "django":  # no X-CSRFToken: Django's CSRF check refuses it first
        assert bare["body"]["error"]["message"].startswith("CSRF check failed")
    assert result["a_up_after_b_tried"] is True
    assert any(line.startswith("assistant: Tool results") for line in result["a_log"])
    session_cookie = {"flask": "session", "django": "sessionid"}[app]
    assert session_cookie in result["cookies"]["a"] and session_cookie in result["cookies"]["b"]
    if app == "django":
        assert "csrftoken" in result["cookies"]["a"]
    # each ended its own call, for the API too; the app forgot both
    assert result["statuses"] == {"a": "ended - you hung up", "b": "ended - you hung up"}
    assert result["sessions_closed"] == {"a": True, "b": True}
    assert result["live_calls_after"] == []
    emulator = result["emulator"]
    assert emulator["calls"] == 2 and emulator["rejections"] == 0
    assert result["key_in_any_response"] is False
    refusals = "failed to load resource: the server responded with a status of 403 (forbidden)"
    assert [e.lower() for e in result["console_errors"]] == [refusals] * 2  # B's two posts


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_without_the_loopback_flag_the_page_says_why_and_what_to_do(tmp_path: Path) -> None:
    """Chromium started without --allow-loopback-in-peer-connection on a machine with
    only loopback gathers no ICE candidate: the page names the flag (and the other
    way out), instead of a bare "ICE gathering did not complete"; no call is created."""
    result = browser_run(tmp_path, "flask", "no-loopback-flag")
    status = result["status"]
    assert status.startswith("failed - No network address to offer for the call"), status
    assert "--allow-loopback-in-peer-connection" in status
    assert "network interface the API can reach" in status
    assert result["log"] == [f"error: {status.removeprefix('failed - ')}"]
    assert result["posts"] == []  # the offer was never posted
    assert result["emulator"]["calls"] == 0 and result["live_calls_after"] == []


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_chromium_holds_a_gpt_live_session_whose_delegation_the_flask_app_answers(
    tmp_path: Path,
) -> None:
    """The Flask example with ``live=True``: the page's offer goes to the app, which
    creates the GPT-Live session (no ephemeral keys: never the browser itself) and
    attaches its sideband. The emulator's user asks about an order - the words ride on
    Chromium's microphone audio, the only thing moving the session clock - the model
    delegates, the app's handler runs once on its pool, and its result is appended,
    placed and spoken. Another browser gets 403 for the session; the user hangs up."""
    result = browser_run(tmp_path, "flask", "live-call")

    assert result["interfaces"] == ["lo"] and result["request_hosts"] == ["127.0.0.1"]
    assert result["offer_candidates"] and set(result["offer_candidates"]) == {"127.0.0.1"}
    assert result["answer_candidates"] and set(result["answer_candidates"]) == {"127.0.0.1"}
    assert result["call_id"].startswith("live_") and result["media"] == "webrtc"

    # the browser's WebRTC audio is the session clock
    assert result["clock_moved"] and result["audio_frames_in"] > 0 and result["clock_ms"] > 0

    # one delegation, answered once by the app's handler on its pool, placed once
    (delegation,) = result["delegations"]
    (run,) = result["handled"]
    assert run["id"] == delegation["id"] and run["thread"].startswith("flask-tool")
    answer = "Order 7 is shipped with DHL."
    assert run["result"] == answer
    assert [(a["kind"], a["content"], a["status"]) for a in delegation["appends"]] == [
        ("commentary", answer, "landed")
    ]
    stats = result["sideband_stats"]
    assert (stats["delegations"], stats["delegations_answered"], stats["appends_sent"]) == (1, 1, 1)
    assert stats["lost"] == stats["duplicate_results"] == stats["undelivered_results"] == 0

    # what the user saw: their words, the hand-over, the model's acknowledgement and answer
    assert result["log"][0] == "you: Please delegate this: where is my order 7?"
    assert result["log"][1] == f"delegation: {delegation['id']}: the shop is looking into it"
    assert result["log"][2].startswith("assistant: ") and result["log"][2].endswith(answer)

    # the session belongs to its browser session; the page sent nothing on its channel
    refused = result["b_hangs_up_a"]
    assert refused["status"] == 403, refused
    assert refused["body"]["error"]["message"] == "this call belongs to another browser session"
    assert result["a_up_after_b_tried"] is True
    # every client event the session got is the sideband's one append: the page sent none
    assert result["client_events"] == ["session.commentary.append"] and result["errors"] == []
    assert result["status"] == "ended - you hung up" and result["session_closed"] is True
    assert result["close_reason"] == "close_requested"
    assert result["live_calls_after"] == []
    assert result["key_in_any_response"] is False and result["responses_seen"] >= 2
    assert result["console_errors"] == []
    assert [e.lower() for e in result["other_console_errors"]] == [
        "failed to load resource: the server responded with a status of 403 (forbidden)"
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(result["screenshot"], ARTIFACTS / "browser-live-call.png")
    print(f"\ntimings: {result['timings']}; wall {result['wall_s']}s")
