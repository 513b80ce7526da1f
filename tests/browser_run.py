"""A real Chromium makes a voice call through the Flask example, against the emulator.

Run by ``tests/test_browser.py`` inside a private network namespace that has only
``lo`` (``unshare -n``): it refuses to run anywhere else, so no packet of the app, the
emulator or the browser can leave 127.0.0.1. Prints one JSON object (the last line of
stdout) with what it saw; the test asserts on it. Usage::

    python tests/browser_run.py --out DIR [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "sk-browser-test-0123456789-SECRET"
QUESTION = 'Where is my order? lookup_order({"order_id": 7})'
WAIT_MS = 20_000
CHROMIUM_FLAGS = [
    "--allow-loopback-in-peer-connection",  # else no candidate, and gathering never ends
    "--use-fake-device-for-media-stream",  # a synthetic microphone
    "--use-fake-ui-for-media-stream",  # grant it without a prompt
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def candidates(sdp: str) -> list[str]:
    """The connection address of every ``a=candidate`` line."""
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def load_flask_example() -> Any:
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(out: Path, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from rtclient.emulator import Emulator

    result: dict[str, Any] = {"interfaces": [name for _, name in socket.if_nameindex()]}
    started = time.monotonic()
    with Emulator(turn_detection=None) as emulator:
        app = load_flask_example().create_app(base_url=emulator.url, api_key=KEY)
        calls = app.extensions["calls"]
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, name="flask-server")
        serving.start()
        try:
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(out / "chromium-profile"),  # a fresh user-data-dir
                    executable_path=chromium,
                    headless=True,
                    args=CHROMIUM_FLAGS,
                )
                try:
                    result |= drive(context, f"http://127.0.0.1:{server.server_port}/", out)
                    call_id = result["call_id"]
                    session = emulator.session(call_id)
                    result["session_closed"] = emulator.wait_for(lambda: session.closed, 10)
                    result["audio_frames_in"] = session.counters["audio_frames_in"]
                    result["emulator"] = {
                        k: v for k, v in emulator.stats().items() if k != "by_session"
                    }
                    result["live_calls_after"] = calls.live()
                finally:
                    context.close()
        finally:
            server.shutdown()
            serving.join(10)
            calls.close()
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


def drive(context: Any, url: str, out: Path) -> dict[str, Any]:
    """Load the page, start a call, ask a question that needs a tool, hang up."""
    page = context.pages[0] if context.pages else context.new_page()
    hosts: set[str] = set()
    responses: list[Any] = []
    offers: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda r: hosts.add(urlsplit(r.url).hostname or r.url))
    page.on("request", lambda r: offers.append(r.post_data or "") if r.method == "POST" else None)
    page.on("response", lambda r: responses.append(r))  # (a bound method cannot be a handler)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    page.goto(url)
    page.click("#start")
    page.wait_for_selector("body[data-state=connected]", timeout=WAIT_MS)
    timings["load_to_connected_s"] = time.monotonic() - t0

    t1 = time.monotonic()
    page.fill("#question", QUESTION)
    page.click("#ask button")
    page.wait_for_selector("#log li.assistant:has-text('Tool results')", timeout=WAIT_MS)
    timings["question_to_answer_s"] = time.monotonic() - t1
    log_lines = page.locator("#log li").all_inner_texts()
    call_id = page.evaluate("callId")

    page.click("#hangup")
    page.wait_for_selector("body[data-state=ended]", timeout=WAIT_MS)
    page.screenshot(path=str(out / "call-ended.png"), full_page=True)
    timings["total_s"] = time.monotonic() - t0

    bodies = [r.text() for r in responses if r.url.startswith(url)]  # the app's replies
    start_reply = next((json.loads(b) for b in bodies if '"sdp"' in b), {})
    return {
        "call_id": call_id,
        "log": log_lines,
        "status": page.inner_text("#status"),
        "request_hosts": sorted(hosts),
        "offer_candidates": candidates(next((o for o in offers if o.startswith("v=0")), "")),
        "answer_candidates": candidates(start_reply.get("sdp", "")),
        "key_in_any_response": any(KEY in body for body in bodies),
        "responses_seen": len(bodies),
        "console_errors": console_errors,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "screenshot": str(out / "call-ended.png"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="screenshots and profile go here")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        print(json.dumps({"error": f"not in a loopback-only namespace: {interfaces}"}))
        return 2
    try:
        result = run(args.out, args.chromium)
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
