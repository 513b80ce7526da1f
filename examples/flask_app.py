"""Flask: one voice call per user. The browser holds the call; the server keeps the key.

How it fits together:

* ``GET /`` serves ``voice.html``, a plain page (with ``GET /call_page.js``, what it
  shares with ``live_voice.html``): it takes the microphone, opens a WebRTC peer
  connection with the ``oai-events`` data channel and posts its SDP offer to
  ``POST /calls``.
* ``POST /calls`` creates the call with the server's standard key, instructions and
  tools (``rtclient.create_call``), attaches a sideband client to it
  (``RealtimeClient(call_id=...)``) and returns the SDP answer and the call id - never
  a key. From then on the browser talks to the API directly: no audio passes through
  this process. Each user has their own call, so their own conversation.
* The sideband runs the tools on this app's thread pool, and its gate holds each
  follow-up response while one of the browser's (or server VAD's) is running. Every
  sideband of this process lives on one shared ``LoopThread``: one thread, all calls.
* ``POST /calls/<call_id>/hangup`` ends the call for everyone and forgets it. A call
  that ends otherwise (the tab closed, the session expired) closes its sideband; the
  registry forgets it the next time it is used.
* **A call belongs to the browser that made it.** ``POST /calls`` puts a random
  *caller* id in Flask's session (a cookie signed with the app's secret key; SameSite
  Lax, so another site's form posts arrive without it) and the registry stores it
  with the call. Every per-call route (``/calls/<call_id>/...``) answers 403 to any
  other session, 404 for a call that is not live. A session may hold
  ``RT_MAX_CALLS_PER_SESSION`` live calls (default 2: a second tab); ``POST /calls``
  beyond that is 429, until one of them ends. Warnings name a call by its first
  characters (``rtc_1a2b3c4d…``): a full call id is for its browser only.
* Several worker processes (gunicorn ``-w 3``): set ``REDIS_URL`` and the calls live in
  a registry shared by every worker (``calls_registry.py``): any worker can hang a
  call up, and when the worker holding a call's sideband dies, another one re-attaches
  within about the lease TTL (``RT_LEASE_TTL``, default 5 s) and answers the tool
  calls the dead one left unanswered. Each response names the worker that served it
  (``X-Served-By``). Every worker must read the others' session cookies: set
  ``FLASK_SECRET_KEY`` to one secret for all of them (without it, a single process
  makes its own at start-up; with ``REDIS_URL`` the app refuses to start).

* **GPT-Live** (``--live``, or ``create_app(live=True)``): the same routes with the
  same rules, for ``gpt-live-1``. ``GET /`` serves ``live_voice.html``; ``POST /calls``
  creates a GPT-Live WebRTC session with the server's key (``rtclient.
  create_live_session``: ``POST /v1/live/sessions``) - GPT-Live has no ephemeral keys,
  so the browser always goes through this app, never straight to the API - and
  attaches a sideband ``LiveClient(session_id=...)``. The voice model takes its own
  turns; what it cannot answer it *delegates*, and the sideband runs
  ``answer_delegation`` on this app's thread pool and appends its result for the model
  to speak (exactly once; a handler that raises makes the model say so). The session's
  ``client.data_channel`` lets the page send nothing on its channel: it only listens.
  The browser's microphone stream keeps the session clock moving (a GPT-Live session
  places appended text only while input audio flows). Phone calls and ``REDIS_URL``
  stay Realtime-only here.
* **Phone calls** (SIP): point the project's SIP trunk at OpenAI and its webhook at
  ``POST /webhooks/openai``. Each call rings there as a signed webhook; the route
  verifies it (``OPENAI_WEBHOOK_SECRET``), accepts the call with the same session and
  tools as a browser's and attaches a sideband - or rejects it when
  ``RT_PHONE_REJECT_FROM`` / ``RT_PHONE_MAX_CALLS`` say so. A delivery repeated is
  accepted once (with ``REDIS_URL``, once across the workers). ``phone_calls.py``
  (next to this file) does the work for this app and the Django one.

Run it::

    OPENAI_API_KEY=sk-... python examples/flask_app.py   # the real API
    python examples/flask_app.py --emulator              # offline, embedded emulator
    python examples/flask_app.py --emulator --live       # GPT-Live, offline

    # three workers, one shared registry (from examples/; see the README)
    REDIS_URL=redis://127.0.0.1:6379/0 OPENAI_API_KEY=sk-... FLASK_SECRET_KEY=... \
        gunicorn -w 3 --threads 4 -b 127.0.0.1:5000 'flask_app:create_app()'

then open http://127.0.0.1:5000/ and press "Start call". Offline, type
``lookup_order({"order_id": 7})`` to make the emulator's model call the tool; the
emulator offers only 127.0.0.1 ICE candidates, so start Chromium with
``--allow-loopback-in-peer-connection``. Offline with ``--live``, make the emulator's
user speak - ``curl -X POST http://127.0.0.1:PORT/_emulator/live/<session id>/speech -d
'{"text": "Please delegate: where is order 7?"}'`` (the id is on the page) - and the
model delegates; the page shows the answer it speaks. Tested by
``tests/test_examples.py`` and, with a real Chromium, ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request, session
from werkzeug.exceptions import HTTPException

from rtclient import (
    CallNotFoundError,
    ClosedError,
    DelegationTask,
    LiveClient,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    create_call,
    create_live_session,
    hangup_call,
    tool,
)
from rtclient import sip as rtsip
from rtclient.logs import short_id
from rtclient.transports.signaling import resolve_base_url

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # phone_calls.py and calls_registry.py live next to this file
from phone_calls import PhoneLine, RedisOnce  # noqa: E402 - once the path has it

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("voice.html")
LIVE_PAGE = Path(__file__).with_name("live_voice.html")
PAGE_SCRIPT = Path(__file__).with_name("call_page.js")  # what both pages share

SESSION = {
    "type": "realtime",
    "model": "gpt-realtime-2",
    "instructions": "You are the shop's voice assistant. Look orders up with lookup_order.",
}
"""What every call may do is decided here, on the server, not by the browser."""

ORDERS = {
    7: {"order_id": 7, "status": "shipped", "carrier": "DHL"},
    8: {"order_id": 8, "status": "processing", "carrier": None},
}


@tool
def lookup_order(order_id: int) -> dict[str, Any]:
    """The status of an order.

    Args:
        order_id: the order number.
    """
    return ORDERS.get(order_id) or {"order_id": order_id, "status": "unknown"}


@tool
def track_parcel(order_id: int) -> dict[str, Any]:
    """Where an order's parcel is, asked of its carrier (a slow call).

    Args:
        order_id: the order number.
    """
    carrier_open = os.environ.get("SHOP_CARRIER_GATE")  # tests: answers once this file exists
    if carrier_open:
        give_up = time.monotonic() + 30
        while not os.path.exists(carrier_open) and time.monotonic() < give_up:
            time.sleep(0.01)
        with open(f"{carrier_open}.answered", "a") as answered:  # tests: which worker ran it
            answered.write(f"{os.getpid()}\n")
    else:
        time.sleep(float(os.environ.get("SHOP_CARRIER_SECONDS", "0.2")))  # the carrier's API
    order = ORDERS.get(order_id) or {}
    where = "out for delivery" if order.get("status") == "shipped" else "not shipped yet"
    return {"order_id": order_id, "carrier": order.get("carrier"), "parcel": where}


LIVE_SESSION = {
    "instructions": (
        "You are the shop's voice assistant. You do not know the orders: delegate every "
        "question about an order, and tell the user what the shop finds."
    ),
    # The page may send nothing on its data channel (it only listens): no browser can
    # append instructions or results of its own. Sidebands are never restricted.
    "client": {"data_channel": {"allowed_client_events": []}},
}
"""A GPT-Live session (``--live``): decided here, not by the browser."""


def answer_delegation(task: DelegationTask) -> str:
    """What the voice model hands over (GPT-Live): runs on the app's thread pool.

    A delegation names no task - only its place in the conversation - so the request
    is what the user said since the previous one (``task.request``). The return value
    is spoken by the model, in its own words; raising makes it say the task failed.
    """
    found = re.search(r"\b(\d+)\b", task.request)
    if found is None:
        return "I need the order number to look that order up."
    order = lookup_order(int(found.group(1)))
    status, carrier = order["status"], order.get("carrier")
    if status == "unknown":
        return f"There is no order {order['order_id']} in the shop."
    return f"Order {order['order_id']} is {status}" + (f" with {carrier}." if carrier else ".")


CALLER = "rt_caller"
"""The session key holding this browser's caller id (random; the calls it created)."""
MAX_CALLS_PER_SESSION = 2
"""Live calls one browser session may hold (``RT_MAX_CALLS_PER_SESSION``); beyond: 429."""

TOOLS = [lookup_order, track_parcel]
IDEMPOTENT = {"lookup_order", "track_parcel"}
"""Tools that only read: a worker that takes over a call may run them again."""


def _connect_or_hang_up(client: RealtimeClient | LiveClient, hang_up: Callable[[], object]) -> None:
    """Connect the app's sideband; a call without it (its tools, its delegation handler)
    is no use to the user: end the call, report the failure."""
    try:
        client.connect()
    except RealtimeError:
        with contextlib.suppress(RealtimeError):
            hang_up()
        raise


class Calls:
    """The live calls of this process: call id -> the sideband client attached to it,
    and the caller (browser session) that created it.

    Thread-safe. The loop thread and the tool pool are shared by every call; the loop
    thread starts with the first call. ``close()`` hangs every call up (at shutdown).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        max_workers: int = 8,
        max_calls_per_caller: int = MAX_CALLS_PER_SESSION,
        live: bool = False,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.gpt_live = live  # GPT-Live sessions instead of Realtime calls
        self.max_calls_per_caller = max_calls_per_caller
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix="flask-tool")
        self.loop_thread = LoopThread("flask-calls")
        self._started = False
        self._lock = threading.Lock()
        self._live: dict[str, RealtimeClient | LiveClient] = {}
        self._callers: dict[str, str] = {}  # call id -> the caller that created it
        self._creating: Counter[str] = Counter()  # caller -> its calls being created

    def start(self) -> Calls:
        """Start the shared loop thread (idempotent; the first call does it too)."""
        with self._lock:
            if not self._started:
                self.loop_thread.start()
                self._started = True
        return self

    def start_call(self, offer_sdp: str, *, caller: str) -> tuple[str, str] | None:
        """Create a call for this browser offer as ``caller``'s and attach to it:
        ``(call_id, answer_sdp)``; None, creating nothing, if ``caller`` already has
        ``max_calls_per_caller`` live calls (those being created count)."""
        self.start()
        self._forget_ended()
        with self._lock:
            held = sum(c == caller for c in self._callers.values()) + self._creating[caller]
            if held >= self.max_calls_per_caller:
                return None
            self._creating[caller] += 1
        try:
            call_id, answer, client = self._create(offer_sdp)
        except BaseException:
            with self._lock:
                self._creating -= Counter([caller])
            raise
        with self._lock:  # one section: the caller's count never dips meanwhile
            self._creating -= Counter([caller])
            self._live[call_id] = client
            self._callers[call_id] = caller
        return call_id, answer

    def _create(self, offer_sdp: str) -> tuple[str, str, RealtimeClient | LiveClient]:
        if self.gpt_live:
            return self._create_live(offer_sdp)
        call = create_call(
            offer_sdp,
            session=SESSION,  # the instructions and tools: decided here, not by the browser
            tools=TOOLS,
            api_key=self.api_key,
            base_url=self.base_url,
            loop_thread=self.loop_thread,
        )
        client = RealtimeClient(
            call_id=call.call_id,  # a sideband: attach to the browser's call
            api_key=self.api_key,
            base_url=self.base_url,
            tools=TOOLS,
            executor=self.pool,
            loop_thread=self.loop_thread,
        )
        _connect_or_hang_up(
            client, lambda: hangup_call(call.call_id, api_key=self.api_key, base_url=self.base_url)
        )
        return call.call_id, call.sdp, client

    def _create_live(self, offer_sdp: str) -> tuple[str, str, LiveClient]:
        """GPT-Live: the session is created here with the server's key (there are no
        ephemeral keys), then this app attaches its sideband with the delegation handler."""
        answer = create_live_session(
            offer_sdp,
            session=LIVE_SESSION,
            api_key=self.api_key,
            base_url=self.base_url,
            loop_thread=self.loop_thread,
        )
        client = LiveClient(
            session_id=answer.session_id,  # a sideband: attach to the browser's session
            api_key=self.api_key,
            base_url=self.base_url,
            delegation=answer_delegation,
            executor=self.pool,
            loop_thread=self.loop_thread,
        )
        _connect_or_hang_up(
            client,
            lambda: rtsip.hangup_call(
                answer.session_id, api="live", api_key=self.api_key, base_url=self.base_url
            ),
        )
        return answer.session_id, answer.sdp, client

    def caller_of(self, call_id: str) -> str | None:
        """Who created ``call_id`` (the ``caller`` given to ``start_call``), if it is live."""
        self._forget_ended()
        with self._lock:
            return self._callers.get(call_id)

    def hangup(self, call_id: str) -> bool:
        """End ``call_id`` for everyone; False if it is not one of ours."""
        with self._lock:
            client = self._live.pop(call_id, None)
            self._callers.pop(call_id, None)
        if client is None:
            return False
        try:
            client.hangup()  # for the browser too; closes the client either way
        except CallNotFoundError:
            pass  # it had already ended
        except ClosedError:  # the sideband was lost first: end the call by its id
            with contextlib.suppress(CallNotFoundError):
                if self.gpt_live:
                    rtsip.hangup_call(
                        call_id, api="live", api_key=self.api_key, base_url=self.base_url
                    )
                else:
                    hangup_call(call_id, api_key=self.api_key, base_url=self.base_url)
        return True

    def live(self) -> list[str]:
        """The call ids still attached."""
        self._forget_ended()
        with self._lock:
            return list(self._live)

    def get(self, call_id: str) -> RealtimeClient | LiveClient | None:
        with self._lock:
            return self._live.get(call_id)

    def _forget_ended(self) -> None:
        with self._lock:
            ended = {cid: c for cid, c in self._live.items() if c.closed}
            for call_id in ended:
                del self._live[call_id]
                self._callers.pop(call_id, None)
        for client in ended.values():
            client.close()  # releases what the lost connection left behind

    def close(self) -> None:
        with self._lock:
            clients, self._live, self._callers = list(self._live.values()), {}, {}
        for client in clients:
            with contextlib.suppress(RealtimeError):
                client.hangup()
        self.loop_thread.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)


def create_app(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    max_workers: int = 8,
    redis_url: str | None = None,
    secret_key: str | None = None,
    max_calls_per_session: int | None = None,
    live: bool | None = None,
) -> Flask:
    """The app; ``api_key``/``base_url``/``redis_url``/``secret_key``/
    ``max_calls_per_session`` default to ``OPENAI_API_KEY``/``OPENAI_BASE_URL``/
    ``REDIS_URL``/``FLASK_SECRET_KEY``/``RT_MAX_CALLS_PER_SESSION``.

    The registry is ``app.extensions["calls"]``: this process's calls (``Calls``), or,
    with a Redis URL, every worker's (``calls_registry.CallRegistry``, started here: under
    gunicorn each worker builds its own app after the fork, so do not ``--preload``).
    ``.close()`` it at shutdown, after ``app.extensions["phone"]`` (the phone calls,
    ``phone_calls.PhoneLine``, which share its loop thread and tool pool). The
    secret key signs the session cookie that says
    which calls are this browser's: several workers must share one, so with a Redis URL
    it is required (``RuntimeError`` otherwise); one process makes its own.

    ``live`` (default ``RT_LIVE=1``): GPT-Live sessions instead of Realtime calls (one
    process; ``ValueError`` with a Redis URL: the shared registry is Realtime-only).
    """
    app = Flask(__name__)
    live = live if live is not None else os.environ.get("RT_LIVE") == "1"
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    url = resolve_base_url(base_url)
    redis_url = redis_url or os.environ.get("REDIS_URL")
    secret_key = secret_key or os.environ.get("FLASK_SECRET_KEY")
    if not secret_key and redis_url:
        raise RuntimeError(
            "set FLASK_SECRET_KEY: the workers sharing REDIS_URL must all read the session "
            "cookie that says which calls are a browser's"
        )
    app.secret_key = secret_key or secrets.token_hex(32)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"  # not sent with another site's posts
    limit = max_calls_per_session or int(
        os.environ.get("RT_MAX_CALLS_PER_SESSION") or MAX_CALLS_PER_SESSION
    )
    if live and redis_url:
        raise ValueError("GPT-Live sessions are this process's own here: drop REDIS_URL")
    calls: Any
    if redis_url:
        calls = shared_calls(
            redis_url, api_key=key, base_url=url, max_workers=max_workers, max_calls=limit
        )
        worker = calls.worker

        @app.after_request
        def served_by(response: Any) -> Any:
            response.headers["X-Served-By"] = worker  # which worker: for operators
            return response

    else:
        calls = Calls(
            api_key=key,
            base_url=url,
            max_workers=max_workers,
            max_calls_per_caller=limit,
            live=live,
        )
    app.extensions["calls"] = calls
    phone = PhoneLine(
        api_key=key,
        base_url=url,
        session=SESSION,  # the same assistant and tools as the browser's calls
        tools=TOOLS,
        runtime=lambda: (calls.start().loop_thread, calls.pool),  # started by the first call
        once=RedisOnce(redis_url) if redis_url else None,  # once across the workers
        registry=calls if redis_url else None,  # a phone call survives its worker too
    )
    app.extensions["phone"] = phone

    def refused(call_id: str) -> Any:
        """The error for a per-call route, or None if ``call_id`` is live and this
        browser session created it."""
        caller, mine = calls.caller_of(call_id), session.get(CALLER)
        if caller is None:
            return _error(404, f"no live call {call_id}")
        if not mine or not secrets.compare_digest(caller, mine):
            log.warning("refused another session's request for call %s", short_id(call_id))
            return _error(403, "this call belongs to another browser session")
        return None

    @app.get("/")
    def page() -> Any:
        return (LIVE_PAGE if live else PAGE).read_text(encoding="utf-8")

    @app.get("/call_page.js")
    def page_script() -> Any:
        script = PAGE_SCRIPT.read_text(encoding="utf-8")
        return script, 200, {"Content-Type": "text/javascript; charset=utf-8"}

    @app.post("/calls")
    def start_call() -> Any:
        offer = request.get_data(as_text=True)
        if request.mimetype != "application/sdp" or not offer.startswith("v=0"):
            return _error(400, "post the browser's SDP offer as application/sdp")
        if not calls.api_key:
            return _error(503, "the server has no API key configured")
        caller = session.setdefault(CALLER, secrets.token_urlsafe(16))
        try:
            started = calls.start_call(offer, caller=caller)
        except RealtimeError as exc:
            log.warning("call not started: %s", exc)  # rtclient's errors never carry the key
            api = "GPT-Live API" if live else "Realtime API"
            return _error(502, f"the {api} failed: {type(exc).__name__}")
        if started is None:
            limit = calls.max_calls_per_caller
            return _error(429, f"this browser already has {limit} live calls: end one first")
        call_id, answer = started
        return jsonify(call_id=call_id, sdp=answer), 201

    @app.post("/calls/<call_id>/hangup")
    def hangup(call_id: str) -> Any:
        if (refusal := refused(call_id)) is not None:
            return refusal
        if not calls.hangup(call_id):
            return _error(404, f"no live call {call_id}")  # it ended a moment ago
        return jsonify(call_id=call_id, ended=True)

    @app.post("/webhooks/openai")
    def openai_webhook() -> Any:
        """A phone call rings (``phone_calls.PhoneLine.handle``): 400 if the webhook is
        forged or stale, else 200 once it is answered, rejected or known already."""
        status, body = phone.handle(request.get_data(), request.headers)
        return jsonify(body), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return _error(exc.code or 500, exc.description or exc.name)

    return app


def shared_calls(
    redis_url: str,
    *,
    api_key: str,
    base_url: str,
    max_workers: int = 8,
    max_calls: int = MAX_CALLS_PER_SESSION,
) -> Any:
    """The registry every worker shares (``calls_registry.py``, next to this file),
    started: it renews this worker's leases and takes over calls whose holder died."""
    from calls_registry import CallRegistry

    return CallRegistry(
        redis_url,
        api_key=api_key,
        base_url=base_url,
        session=SESSION,
        tools=TOOLS,
        idempotent=IDEMPOTENT,
        lease_ttl=float(os.environ.get("RT_LEASE_TTL", "5")),
        max_workers=max_workers,
        max_calls_per_caller=max_calls,
        name="flask-calls",
    ).start()


def _error(status: int, message: str) -> Any:
    return jsonify(error={"message": message, "status": status}), status


NO_KEY = (
    "flask_app.py: OPENAI_API_KEY is not set - export it to use the Realtime API, "
    "or run with --emulator to try the app offline"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emulator", action="store_true", help="use the embedded emulator")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--redis", default=None, help="a shared registry, e.g. redis://...")
    parser.add_argument("--live", action="store_true", help="GPT-Live sessions (gpt-live-1)")
    args = parser.parse_args()
    if not args.emulator and not os.environ.get("OPENAI_API_KEY"):
        sys.exit(NO_KEY)  # before anything starts: one line on stderr, exit status 1
    logging.basicConfig(level=logging.INFO)
    # one process: its own secret key will do (gunicorn's workers need FLASK_SECRET_KEY)
    secret_key = os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32)
    emulator = None
    if args.emulator:
        from rtclient.emulator import Emulator

        emulator = Emulator(turn_detection=None).start()
        app = create_app(
            base_url=emulator.url,
            api_key="sk-emulator",
            redis_url=args.redis,
            secret_key=secret_key,
            live=args.live,
        )
        print(f"emulator on {emulator.url}")
    else:
        app = create_app(redis_url=args.redis, secret_key=secret_key, live=args.live)
    try:
        app.run(host="127.0.0.1", port=args.port, threaded=True)
    finally:
        app.extensions["phone"].close()
        app.extensions["calls"].close()
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
