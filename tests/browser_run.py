"""A real Chromium makes voice calls through the Flask or Django example, against the
emulator.

Run by ``tests/test_browser.py`` inside a private network namespace that has only
``lo`` (``unshare -n``): it refuses to run anywhere else, so no packet of the app, the
emulator or the browser can leave 127.0.0.1. Prints one JSON object (the last line of
stdout) with what it saw; the test asserts on it. Scenarios:

* ``call``: one user starts a call, asks a question that needs a tool, hangs up;
* ``two-sessions``: two browser contexts (two cookie jars: two users) each start a
  call; B tries to end A's call by its id, A's call goes on, each hangs up its own;
* ``no-loopback-flag``: Chromium without ``--allow-loopback-in-peer-connection``, so
  ICE on this loopback-only machine gathers nothing: what the page tells the user;
* ``live-call`` (``--app flask``): the Flask example in GPT-Live mode. The page starts a
  session (the app creates it and attaches its sideband), the emulator's scripted user
  asks something that makes the model delegate - the words ride on the browser's
  microphone audio, which is what moves the session clock - the app's handler answers
  on its pool, the model speaks the result; another browser cannot end the session;
  the user hangs up.

Usage::

    python tests/browser_run.py --out DIR [--app flask|django] [--scenario call]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "sk-browser-test-0123456789-SECRET"
QUESTIONS = {
    "flask": 'Where is my order? lookup_order({"order_id": 7})',
    "django": 'Where is my order? order_status({"order_id": 1})',
}
LIVE_QUESTION = "Please delegate this: where is my order 7?"
LIVE_ANSWER = "Order 7 is shipped with DHL."
WAIT_MS = 20_000
LOOPBACK_FLAG = "--allow-loopback-in-peer-connection"  # else no candidate on this machine
CHROMIUM_FLAGS = [
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
# What the page does for a POST (call_page.js's postHeaders): run in a browser context.
FETCH_LIVE_HANGUP = """async (callId) => {
    const reply = await fetch(`calls/${encodeURIComponent(callId)}/hangup`, { method: "POST" });
    return { status: reply.status, body: await reply.json() };
}"""
FETCH_HANGUP = """async ([callId, withToken]) => {
    const reply = await fetch(`calls/${encodeURIComponent(callId)}/hangup`, {
        method: "POST", headers: withToken ? CallPage.postHeaders() : {},
    });
    return { status: reply.status, body: await reply.json() };
}"""


def candidates(sdp: str) -> list[str]:
    """The connection address of every ``a=candidate`` line."""
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def load_flask_example() -> Any:
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Handled:
    """The Flask example's delegation handler, wrapped: which thread ran it, how often."""

    def __init__(self, handler: Callable[[Any], str]) -> None:
        self.handler = handler
        self.runs: list[dict[str, str]] = []

    def __call__(self, task: Any) -> str:
        result = self.handler(task)
        self.runs.append(
            {"id": task.id, "thread": threading.current_thread().name, "result": result}
        )
        return result


@contextlib.contextmanager
def serve(
    app_name: str, emulator_url: str, out: Path, *, live_mode: bool = False
) -> Iterator[tuple[str, Callable[[], list[str]], Any]]:
    """The example app on 127.0.0.1: ``(its URL, a function listing its live calls, the
    app's extensions)``."""
    from werkzeug.serving import make_server

    extensions: dict[str, Any] = {}
    if app_name == "flask":
        module = load_flask_example()
        if live_mode:
            extensions["handled"] = module.answer_delegation = Handled(module.answer_delegation)
        app = module.create_app(base_url=emulator_url, api_key=KEY, live=live_mode)
        calls = app.extensions["calls"]
        extensions["calls"] = calls
        live, close = calls.live, calls.close
    else:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="shop.settings",
            RTSHOP_DB=str(out / "shop.sqlite3"),
            OPENAI_BASE_URL=emulator_url,
            OPENAI_API_KEY=KEY,
        )
        sys.path.insert(0, str(EXAMPLES / "django_app"))
        import django
        from django.core.management import call_command
        from django.core.wsgi import get_wsgi_application

        django.setup()
        call_command("migrate", verbosity=0)
        from orders import realtime
        from orders.models import Order

        Order(customer="Ada", status="shipped").save()
        app = get_wsgi_application()

        def live() -> list[str]:
            return list(realtime.live_calls())

        close = realtime.close
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="app-server")
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", live, extensions
    finally:
        server.shutdown()
        serving.join(10)
        close()


def run(out: Path, chromium: str, app_name: str, scenario: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from rtclient.emulator import Emulator

    result: dict[str, Any] = {"interfaces": [name for _, name in socket.if_nameindex()]}
    started = time.monotonic()
    flags = CHROMIUM_FLAGS if scenario == "no-loopback-flag" else [LOOPBACK_FLAG, *CHROMIUM_FLAGS]
    live_mode = scenario == "live-call"
    with (
        Emulator(turn_detection=None) as emulator,
        serve(app_name, emulator.url, out, live_mode=live_mode) as (url, live, extensions),
    ):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=flags
            )
            try:
                if scenario == "call":
                    result |= one_call(browser, url, out, QUESTIONS[app_name])
                    session = emulator.session(result["call_id"])
                    result["session_closed"] = emulator.wait_for(lambda: session.closed, 10)
                    result["audio_frames_in"] = session.counters["audio_frames_in"]
                elif scenario == "two-sessions":
                    result |= two_sessions(browser, url, emulator, QUESTIONS[app_name])
                elif scenario == "live-call":
                    result |= live_call(browser, url, out, emulator, extensions)
                else:
                    result |= no_candidates(browser, url)
                result["emulator"] = {
                    k: v for k, v in emulator.stats().items() if k != "by_session"
                }
                result["emulator_live"] = emulator.live_stats()
                result["live_calls_after"] = live()
            finally:
                browser.close()
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


class Watched:
    """A page whose requests, responses and console errors are recorded."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.hosts: set[str] = set()
        self.responses: list[Any] = []
        self.posts: list[tuple[str, str]] = []
        self.console_errors: list[str] = []
        page = self.page
        page.on("request", lambda r: self.hosts.add(urlsplit(r.url).hostname or r.url))
        page.on(
            "request",
            lambda r: self.posts.append((r.url, r.post_data or "")) if r.method == "POST" else None,
        )
        page.on("response", lambda r: self.responses.append(r))  # (not a bound method)
        page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )

    def start_call(self, url: str) -> str:
        self.page.goto(url)
        self.page.click("#start")
        self.page.wait_for_selector("body[data-state=connected]", timeout=WAIT_MS)
        return str(self.page.evaluate("CallPage.call.id"))

    def ask(self, question: str) -> None:
        self.page.fill("#question", question)
        self.page.click("#ask button")
        self.page.wait_for_selector("#log li.assistant:has-text('Tool results')", timeout=WAIT_MS)

    def hang_up(self) -> str:
        self.page.click("#hangup")
        self.page.wait_for_selector("body[data-state=ended]", timeout=WAIT_MS)
        return str(self.page.inner_text("#status"))

    def bodies(self, url: str) -> list[str]:
        """The app's replies (not the emulator's)."""
        return [r.text() for r in self.responses if r.url.startswith(url)]


def one_call(browser: Any, url: str, out: Path, question: str) -> dict[str, Any]:
    """Load the page, start a call, ask a question that needs a tool, hang up."""
    user = Watched(browser.new_context())
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    call_id = user.start_call(url)
    timings["load_to_connected_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    user.ask(question)
    timings["question_to_answer_s"] = time.monotonic() - t1
    log_lines = user.page.locator("#log li").all_inner_texts()
    status = user.hang_up()
    user.page.screenshot(path=str(out / "call-ended.png"), full_page=True)
    timings["total_s"] = time.monotonic() - t0

    bodies = user.bodies(url)
    start_reply = next((json.loads(b) for b in bodies if '"sdp"' in b), {})
    offer = next((body for _, body in user.posts if body.startswith("v=0")), "")
    return {
        "call_id": call_id,
        "log": log_lines,
        "status": status,
        "request_hosts": sorted(user.hosts),
        "offer_candidates": candidates(offer),
        "answer_candidates": candidates(start_reply.get("sdp", "")),
        "key_in_any_response": any(KEY in body for body in bodies),
        "responses_seen": len(bodies),
        "console_errors": user.console_errors,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "screenshot": str(out / "call-ended.png"),
    }


def two_sessions(browser: Any, url: str, emulator: Any, question: str) -> dict[str, Any]:
    """A and B call; B, who knows A's call id, tries to end it; A's call goes on."""
    a, b = Watched(browser.new_context()), Watched(browser.new_context())
    call_a, call_b = a.start_call(url), b.start_call(url)
    b_on_a = b.page.evaluate(FETCH_HANGUP, [call_a, True])  # as the page posts: token and all
    b_on_a_bare = b.page.evaluate(FETCH_HANGUP, [call_a, False])  # no CSRF header
    a_still_up = not emulator.session(call_a).closed
    a.ask(question)  # A's call still works, tools and all, after B's attempts
    a_log = a.page.locator("#log li").all_inner_texts()
    cookies = {
        who: sorted(c["name"] for c in page.page.context.cookies())
        for who, page in (("a", a), ("b", b))
    }
    status_b, status_a = b.hang_up(), a.hang_up()
    closed = {
        who: emulator.wait_for(lambda cid=cid: emulator.session(cid).closed, 10)
        for who, cid in (("a", call_a), ("b", call_b))
    }
    return {
        "calls": [call_a, call_b],
        "b_hangs_up_a": b_on_a,
        "b_hangs_up_a_without_token": b_on_a_bare,
        "a_up_after_b_tried": a_still_up,
        "a_log": a_log,
        "cookies": cookies,
        "statuses": {"a": status_a, "b": status_b},
        "sessions_closed": closed,
        "console_errors": a.console_errors + b.console_errors,
        "key_in_any_response": any(KEY in body for body in a.bodies(url) + b.bodies(url)),
    }


def live_call(
    browser: Any, url: str, out: Path, emulator: Any, extensions: dict[str, Any]
) -> dict[str, Any]:
    """GPT-Live: start a session, the user asks (the emulator's script, carried by the
    browser's audio), the app's handler answers, B cannot end it, A hangs up."""
    user = Watched(browser.new_context())
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    call_id = user.start_call(url)
    timings["load_to_connected_s"] = time.monotonic() - t0
    session = emulator.live_session(call_id)
    clock_moves = emulator.wait_for(lambda: session.clock_ms > 0, 10)
    sideband = extensions["calls"].get(call_id)
    t1 = time.monotonic()
    session.simulate_speech(LIVE_QUESTION)  # the user speaks, on the browser's audio
    user.page.wait_for_selector(f"#log li.assistant:has-text('{LIVE_ANSWER}')", timeout=WAIT_MS)
    timings["question_to_spoken_answer_s"] = time.monotonic() - t1
    log_lines = user.page.locator("#log li").all_inner_texts()
    record = session.delegations()
    other = Watched(browser.new_context())  # another user who learned the session's id
    other.page.goto(url)
    refused = other.page.evaluate(FETCH_LIVE_HANGUP, call_id)
    up_after_refusal = not session.closed
    stats = sideband.stats() if sideband is not None else {}
    status = user.hang_up()
    user.page.screenshot(path=str(out / "live-call-ended.png"), full_page=True)
    closed = emulator.wait_for(lambda: session.closed, 10)
    bodies = user.bodies(url) + other.bodies(url)
    start_reply = next((json.loads(b) for b in user.bodies(url) if '"sdp"' in b), {})
    offer = next((body for _, body in user.posts if body.startswith("v=0")), "")
    return {
        "call_id": call_id,
        "media": session.media,
        "clock_moved": clock_moves,
        "clock_ms": session.clock_ms,
        "audio_frames_in": session.counters.get("audio_frames_in", 0),
        "log": log_lines,
        "delegations": record["delegations"],
        "handled": extensions["handled"].runs,
        "sideband_stats": {k: stats.get(k) for k in (
            "delegations", "delegations_answered", "delegation_errors", "appends_sent",
            "lost", "duplicate_results", "late_results", "undelivered_results")},
        "b_hangs_up_a": refused,
        "a_up_after_b_tried": up_after_refusal,
        "status": status,
        "session_closed": closed,
        "close_reason": session.close_reason,
        "client_events": [e.get("type") for e in session.client_events],
        "errors": session.errors,
        "request_hosts": sorted(user.hosts | other.hosts),
        "offer_candidates": candidates(offer),
        "answer_candidates": candidates(start_reply.get("sdp", "")),
        "key_in_any_response": any(KEY in body for body in bodies),
        "responses_seen": len(bodies),
        "console_errors": user.console_errors,
        "other_console_errors": other.console_errors,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "screenshot": str(out / "live-call-ended.png"),
    }  # fmt: skip


def no_candidates(browser: Any, url: str) -> dict[str, Any]:
    """Chromium without the loopback flag, on a machine with only loopback."""
    user = Watched(browser.new_context())
    user.page.goto(url)
    user.page.click("#start")
    user.page.wait_for_selector("body[data-state=failed]", timeout=WAIT_MS)
    return {
        "status": user.page.inner_text("#status"),
        "log": user.page.locator("#log li").all_inner_texts(),
        "posts": [post_url for post_url, _ in user.posts],
        "console_errors": user.console_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="screenshots (and the Django database) go here"
    )
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--app", choices=["flask", "django"], default="flask")
    parser.add_argument(
        "--scenario",
        choices=["call", "two-sessions", "no-loopback-flag", "live-call"],
        default="call",
    )
    args = parser.parse_args()
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        print(json.dumps({"error": f"not in a loopback-only namespace: {interfaces}"}))
        return 2
    try:
        result = run(args.out, args.chromium, args.app, args.scenario)
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
