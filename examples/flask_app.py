"""Flask: one voice call per user. The browser holds the call; the server keeps the key.

How it fits together:

* ``GET /`` serves ``voice.html``, a plain page: it takes the microphone, opens a
  WebRTC peer connection with the ``oai-events`` data channel and posts its SDP offer
  to ``POST /calls``.
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
  registry forgets it the next time it is used. Only its browser knows a call id (no
  route lists them), so only that browser can hang it up.
* Several worker processes (gunicorn ``-w 3``): set ``REDIS_URL`` and the calls live in
  a registry shared by every worker (``calls_registry.py``): any worker can hang a
  call up, and when the worker holding a call's sideband dies, another one re-attaches
  within about the lease TTL (``RT_LEASE_TTL``, default 5 s) and answers the tool
  calls the dead one left unanswered. Each response names the worker that served it
  (``X-Served-By``).

Run it::

    OPENAI_API_KEY=sk-... python examples/flask_app.py   # the real API
    python examples/flask_app.py --emulator              # offline, embedded emulator

    # three workers, one shared registry (from examples/; see the README)
    REDIS_URL=redis://127.0.0.1:6379/0 OPENAI_API_KEY=sk-... \
        gunicorn -w 3 --threads 4 -b 127.0.0.1:5000 'flask_app:create_app()'

then open http://127.0.0.1:5000/ and press "Start call". Offline, type
``lookup_order({"order_id": 7})`` to make the emulator's model call the tool; the
emulator offers only 127.0.0.1 ICE candidates, so start Chromium with
``--allow-loopback-in-peer-connection``. Tested by ``tests/test_examples.py`` and,
with a real Chromium, ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from rtclient import (
    CallNotFoundError,
    ClosedError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    create_call,
    hangup_call,
    tool,
)
from rtclient.client import DEFAULT_BASE_URL

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("voice.html")

SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
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


TOOLS = [lookup_order, track_parcel]
IDEMPOTENT = {"lookup_order", "track_parcel"}
"""Tools that only read: a worker that takes over a call may run them again."""


class Calls:
    """The live calls of this process: call id -> the sideband client attached to it.

    Thread-safe. The loop thread and the tool pool are shared by every call; the loop
    thread starts with the first call. ``close()`` hangs every call up (at shutdown).
    """

    def __init__(self, *, api_key: str, base_url: str, max_workers: int = 8) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix="flask-tool")
        self.loop_thread = LoopThread("flask-calls")
        self._started = False
        self._lock = threading.Lock()
        self._live: dict[str, RealtimeClient] = {}

    def start_call(self, offer_sdp: str) -> tuple[str, str]:
        """Create a call for this browser offer and attach to it: ``(call_id, answer_sdp)``."""
        with self._lock:
            if not self._started:
                self.loop_thread.start()
                self._started = True
        self._forget_ended()
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
        try:
            client.connect()
        except RealtimeError:
            # A call without its tools is no use to the user: end it, report the failure.
            with contextlib.suppress(RealtimeError):
                hangup_call(call.call_id, api_key=self.api_key, base_url=self.base_url)
            raise
        with self._lock:
            self._live[call.call_id] = client
        return call.call_id, call.sdp

    def hangup(self, call_id: str) -> bool:
        """End ``call_id`` for everyone; False if it is not one of ours."""
        with self._lock:
            client = self._live.pop(call_id, None)
        if client is None:
            return False
        try:
            client.hangup()  # for the browser too; closes the client either way
        except CallNotFoundError:
            pass  # it had already ended
        except ClosedError:  # the sideband was lost first: end the call by its id
            with contextlib.suppress(CallNotFoundError):
                hangup_call(call_id, api_key=self.api_key, base_url=self.base_url)
        return True

    def live(self) -> list[str]:
        """The call ids still attached."""
        self._forget_ended()
        with self._lock:
            return list(self._live)

    def get(self, call_id: str) -> RealtimeClient | None:
        with self._lock:
            return self._live.get(call_id)

    def _forget_ended(self) -> None:
        with self._lock:
            ended = {cid: c for cid, c in self._live.items() if c.closed}
            for call_id in ended:
                del self._live[call_id]
        for client in ended.values():
            client.close()  # releases what the lost connection left behind

    def close(self) -> None:
        with self._lock:
            clients, self._live = list(self._live.values()), {}
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
) -> Flask:
    """The app; ``api_key``/``base_url``/``redis_url`` default to ``OPENAI_API_KEY``/
    ``OPENAI_BASE_URL``/``REDIS_URL``.

    The registry is ``app.extensions["calls"]``: this process's calls (``Calls``), or,
    with a Redis URL, every worker's (``calls_registry.CallRegistry``, started here: under
    gunicorn each worker builds its own app after the fork, so do not ``--preload``).
    ``.close()`` it at shutdown.
    """
    app = Flask(__name__)
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    redis_url = redis_url or os.environ.get("REDIS_URL")
    calls: Any
    if redis_url:
        calls = shared_calls(redis_url, api_key=key, base_url=url, max_workers=max_workers)
        worker = calls.worker

        @app.after_request
        def served_by(response: Any) -> Any:
            response.headers["X-Served-By"] = worker  # which worker: for operators
            return response

    else:
        calls = Calls(api_key=key, base_url=url, max_workers=max_workers)
    app.extensions["calls"] = calls

    @app.get("/")
    def page() -> Any:
        return PAGE.read_text(encoding="utf-8")

    @app.post("/calls")
    def start_call() -> Any:
        offer = request.get_data(as_text=True)
        if request.mimetype != "application/sdp" or not offer.startswith("v=0"):
            return _error(400, "post the browser's SDP offer as application/sdp")
        if not calls.api_key:
            return _error(503, "the server has no API key configured")
        try:
            call_id, answer = calls.start_call(offer)
        except RealtimeError as exc:
            log.warning("call not started: %s", exc)  # rtclient's errors never carry the key
            return _error(502, f"the Realtime API failed: {type(exc).__name__}")
        return jsonify(call_id=call_id, sdp=answer), 201

    @app.post("/calls/<call_id>/hangup")
    def hangup(call_id: str) -> Any:
        if not calls.hangup(call_id):
            return _error(404, f"no live call {call_id}")
        return jsonify(call_id=call_id, ended=True)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return _error(exc.code or 500, exc.description or exc.name)

    return app


def shared_calls(redis_url: str, *, api_key: str, base_url: str, max_workers: int = 8) -> Any:
    """The registry every worker shares (``calls_registry.py``, next to this file),
    started: it renews this worker's leases and takes over calls whose holder died."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
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
        name="flask-calls",
    ).start()


def _error(status: int, message: str) -> Any:
    return jsonify(error={"message": message, "status": status}), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emulator", action="store_true", help="use the embedded emulator")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--redis", default=None, help="a shared registry, e.g. redis://...")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    emulator = None
    if args.emulator:
        from rtclient.emulator import Emulator

        emulator = Emulator(turn_detection=None).start()
        app = create_app(base_url=emulator.url, api_key="sk-emulator", redis_url=args.redis)
        print(f"emulator on {emulator.url}")
    else:
        app = create_app(redis_url=args.redis)
    try:
        app.run(host="127.0.0.1", port=args.port, threaded=True)
    finally:
        app.extensions["calls"].close()
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
