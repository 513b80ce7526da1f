"""A Flask app that answers questions through one shared rtclient connection.

Why it looks like this:

* Flask workers are threads, not coroutines. ``RealtimeClient`` is synchronous and
  thread-safe, so every request thread simply calls ``client.ask(...)``; the client's
  gate guarantees that concurrent requests never send a second ``response.create``
  while one is active (the server's ``conversation_already_has_active_response``).
* One WebRTC connection is shared by the whole process: it is created lazily on the
  first request (not at import, so ``flask routes`` or a test needs no network) and
  closed at interpreter exit. Its tools run on a ``ThreadPoolExecutor`` the app owns.
* One connection is one conversation. Questions that arrive together are coalesced
  into one response that sees them all, which suits a shared assistant; for a private
  conversation per user, give each user their own client instead.
* ``POST /session`` lets a browser talk to the API directly over WebRTC without ever
  seeing the server's standard key: the server mints a short-lived ``ek_...`` key
  (``POST {base_url}/realtime/client_secrets``) and returns only that.

Run it::

    OPENAI_API_KEY=sk-... python examples/flask_app.py          # the real API
    python examples/flask_app.py --emulator                     # offline, embedded emulator

    curl -s localhost:5000/ask -H 'content-type: application/json' \\
         -d '{"question": "Where is my order? lookup_order({\\"order_id\\": 7})"}'
    curl -s -X POST localhost:5000/session
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from rtclient import RealtimeClient, RealtimeError, tool
from rtclient.client import DEFAULT_BASE_URL

log = logging.getLogger(__name__)

ORDERS = {
    7: {"order_id": 7, "status": "shipped", "carrier": "DHL"},
    8: {"order_id": 8, "status": "processing", "carrier": None},
}

BROWSER_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are the shop's voice assistant.",
}
"""What a browser's ephemeral key may do is decided here, on the server, not by the browser."""


@tool
def lookup_order(order_id: int) -> dict[str, Any]:
    """The status of an order.

    Args:
        order_id: the order number.
    """
    return ORDERS.get(order_id) or {"order_id": order_id, "status": "unknown"}


class SharedClient:
    """One ``RealtimeClient`` for the whole process, connected on first use.

    ``get()`` is safe to call from many request threads at once: the first connects
    (under a lock), the others wait for it. If the connection was lost, the next
    ``get()`` replaces it. ``close()`` hangs up and stops the tool threads; it is
    registered with ``atexit`` while a client exists.
    """

    def __init__(self, *, max_workers: int = 8, **client_kwargs: Any) -> None:
        self._kwargs = client_kwargs
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._client: RealtimeClient | None = None
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> RealtimeClient:
        with self._lock:
            if self._client is not None and not self._client.closed:
                return self._client
            self._close_locked()
            executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="flask-tool")
            try:
                client = RealtimeClient(executor=executor, **self._kwargs).connect()
            except BaseException:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
            self._client, self._executor = client, executor
            atexit.register(self.close)
            return client

    @property
    def current(self) -> RealtimeClient | None:
        """The connected client, if any (for stats); never connects."""
        return self._client

    def close(self) -> None:
        with self._lock:
            self._close_locked()
        atexit.unregister(self.close)

    def _close_locked(self) -> None:
        client, executor = self._client, self._executor
        self._client = self._executor = None
        if client is not None:
            client.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


class _StaticClient:
    """Wraps a client the caller owns (``create_app(client=...)``): never closed here."""

    def __init__(self, client: RealtimeClient) -> None:
        self.current = client

    def get(self) -> RealtimeClient:
        return self.current

    def close(self) -> None:
        pass


def create_app(
    client: RealtimeClient | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    loopback_only: bool = False,
    max_workers: int = 8,
    ask_timeout: float = 60.0,
) -> Flask:
    """The app. ``client`` (connected, with ``lookup_order``) is used as given and left
    to its owner; otherwise the app connects its own on the first ``/ask``.

    ``api_key``/``base_url`` default to ``OPENAI_API_KEY``/``OPENAI_BASE_URL``.
    The shared client is ``app.extensions["rtclient"]`` (``.close()`` it in tests).
    """
    app = Flask(__name__)
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    shared: SharedClient | _StaticClient
    if client is not None:
        shared = _StaticClient(client)
    else:
        shared = SharedClient(
            max_workers=max_workers,
            api_key=key or None,
            base_url=url,
            tools=[lookup_order],
            loopback_only=loopback_only,
        )
    app.extensions["rtclient"] = shared

    @app.post("/ask")
    def ask() -> Any:
        body = request.get_json(silent=True)
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not question.strip():
            return _error(400, 'send JSON {"question": "..."}')
        try:
            answer = shared.get().ask(question, timeout=ask_timeout)
        except TimeoutError:
            return _error(504, f"no answer within {ask_timeout}s")
        except RealtimeError as exc:
            log.warning("ask failed: %s", exc)  # rtclient's errors never carry the key
            return _error(502, f"the Realtime API failed: {type(exc).__name__}")
        return jsonify(
            text=answer.text,
            response_ids=answer.response_ids,
            tool_calls=[
                {"name": c.name, "arguments": c.arguments, "output": c.output, "error": c.error}
                for c in answer.tool_calls
            ],
        )

    @app.post("/session")
    def session() -> Any:
        if not key:
            return _error(503, "the server has no API key configured")
        body = json.dumps({"expires_after": {"anchor": "created_at", "seconds": 600},
                           "session": BROWSER_SESSION}).encode()  # fmt: skip
        req = urllib.request.Request(
            f"{url}/realtime/client_secrets",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                secret = json.load(resp)
        except urllib.error.HTTPError as exc:
            # The API's message may quote part of the key: keep only status and code.
            code = _error_code(exc)
            log.warning("client_secrets refused: HTTP %s %s", exc.code, code)
            return _error(502, f"the API refused to mint a key (HTTP {exc.code}, {code})")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("client_secrets failed: %s", type(exc).__name__)
            return _error(502, "the API could not be reached")
        return jsonify(value=secret["value"], expires_at=secret["expires_at"])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return _error(exc.code or 500, exc.description or exc.name)

    return app


def _error(status: int, message: str) -> Any:
    return jsonify(error={"message": message, "status": status}), status


def _error_code(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(exc)["error"].get("code") or "error")
    except Exception:
        return "error"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emulator", action="store_true", help="use the embedded emulator")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("aioice").setLevel(logging.WARNING)  # ICE pair checks are noise here
    emulator = None
    if args.emulator:
        from rtclient.emulator import Emulator

        emulator = Emulator(turn_detection=None).start()
        app = create_app(base_url=emulator.url, api_key="sk-emulator", loopback_only=True)
        print(f"emulator on {emulator.url}")
    else:
        app = create_app()
    try:
        app.run(host="127.0.0.1", port=args.port, threaded=True)
    finally:
        app.extensions["rtclient"].close()
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
