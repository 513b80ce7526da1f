"""Every code block in the README runs here, so the README cannot drift from the code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [body for lang, body in BLOCK.findall(text) if lang == language]


def test_the_readme_has_the_blocks_this_file_runs() -> None:
    assert len(blocks("bash")) == 2 and len(blocks("python")) == 11


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


@pytest.mark.parametrize("index", [0, 1, 2, 3, 5, 6, 7, 8, 9, 10])
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


def dask_blocks() -> tuple[str, str]:
    """The "Tools on a cluster" recipe: ``tools.py`` and ``app.py``, as printed."""
    found = {body.split("\n", 1)[0].split()[1]: body for body in blocks("py")}
    return found["tools.py"], found["app.py"]


@pytest.mark.timeout(180)
def test_the_dask_recipe_runs_offline_as_written(tmp_path: Path) -> None:
    """Saved as two files and run as a script: a real two-worker LocalCluster on
    127.0.0.1 runs the 16 calls; the script prints which processes ran them."""
    pytest.importorskip("distributed")
    tools, app = dask_blocks()
    (tmp_path / "tools.py").write_text(tools)
    (tmp_path / "app.py").write_text(app)
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the Dask workers included
    )
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"app.py did not finish in 150 s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    found = re.fullmatch(r"16 calls ran in worker processes \[([\d, ]+)\]\n", stdout)
    assert found, stdout
    pids = {int(pid) for pid in found[1].split(", ")}
    assert pids and proc.pid not in pids  # run by the Dask workers, not by the app


def phone_block() -> str:
    """The "Phone calls (SIP)" Flask app, as printed (``phone_app.py``)."""
    found = {body.split("\n", 1)[0].split()[1]: body for body in blocks("py")}
    return found["phone_app.py"]


@pytest.mark.timeout(120)
def test_the_phone_call_block_answers_rejects_and_refuses_calls_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's Flask app served for real on 127.0.0.1; the emulator rings it."""
    pytest.importorskip("flask")
    import threading

    from cluster import wait_until
    from phone import control, dial, new_secret
    from werkzeug.serving import make_server

    from rtclient.emulator import Emulator, Pace

    secret = new_secret()
    with Emulator(pace=Pace(delay=0.005)) as emu:
        monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", secret)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-phone")
        monkeypatch.setenv("OPENAI_BASE_URL", emu.url)
        app: dict[str, Any] = {"__name__": "phone_app"}
        exec(compile(phone_block(), "README.md phone_app.py", "exec"), app)
        server = make_server("127.0.0.1", 0, app["app"], threaded=True)
        serving = threading.Thread(target=server.serve_forever, name="readme-phone-app")
        serving.start()
        url = f"http://127.0.0.1:{server.server_port}/webhooks/openai"
        try:
            rung = dial(emu.control_url, url=url, secret=secret, apis=["realtime", "live"])
            assert [d["status"] for d in rung["deliveries"]] == [200, 200]
            assert (rung["status"], rung["answered_by"]) == ("accepted", "realtime")
            call_id = rung["call_id"]
            session = emu.session(call_id)
            control(
                emu.control_url,
                "POST",
                f"/sip/calls/{call_id}/speech",
                {"text": 'lookup_order({"order_id": 7})'},
            )
            assert emu.wait_for(
                lambda: any(
                    e.get("type") == "response.done" and "shipped" in str(e)
                    for e in session.server_events
                ),
                20,
            )
            control(emu.control_url, "POST", f"/sip/calls/{call_id}/dtmf", {"digits": "5"})
            printed: list[str] = []
            wait_until(
                lambda: printed.append(capsys.readouterr().out) or "pressed 5" in "".join(printed),
                10,
                "the on_dtmf print",
            )
            again = control(emu.control_url, "POST", f"/sip/calls/{call_id}/redeliver", {})[1]
            assert [d["status"] for d in again] == [200, 200]
            busy = dial(emu.control_url, url=url, secret=secret, **{"from": "+16665550000"})
            assert (busy["status"], busy["reject_status"]) == ("rejected", 486)
            forged = dial(emu.control_url, url=url, secret=secret, signature="forged")
            assert [d["status"] for d in forged["deliveries"]] == [400]
            assert forged["status"] == "ringing"
            accepts = [r for r in emu_requests(emu, call_id) if r["verb"] == "accept"]
            assert accepts == [{"api": "realtime", "verb": "accept", "status": 200}]
        finally:
            for client in app["calls"].values():
                client.hangup()
            app["pool"].shutdown()
            server.shutdown()
            serving.join(10)


def emu_requests(emu: Any, call_id: str) -> list[dict[str, Any]]:
    from phone import record

    return list(record(emu.control_url, call_id)["requests"])
