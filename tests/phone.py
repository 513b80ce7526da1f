"""What the phone-call tests share: a webhook endpoint on loopback, the emulator's SIP
control routes over HTTP, a signing secret, and a sound file to speak.

:class:`Hook` is a real HTTP server on 127.0.0.1 (a thread per request, as an app
server has) whose handler is the test's: ``handler(body, headers) -> status``. Every
delivery it got is recorded with what the handler made of it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import threading
import wave
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cluster import http

Handler = Callable[[bytes, Mapping[str, str]], int]


def new_secret() -> str:
    """A fresh ``whsec_<base64>`` signing secret, as the platform issues them."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Hook:
    """A webhook endpoint: ``url``; ``seen`` = [(status, handler's note)]."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[int] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        hook = self

        class Request(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    status = hook.handler(body, {k: v for k, v in self.headers.items()})
                except BaseException as exc:  # the test sees it; the sender gets a 500
                    with hook.lock:
                        hook.errors.append(exc)
                    status = 500
                with hook.lock:
                    hook.seen.append(status)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.server.daemon_threads = False
        self.server.block_on_close = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-endpoint")
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/openai"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # joins the request threads
        self.thread.join(10)


def control(
    control_url: str, method: str, path: str, body: Mapping[str, Any] | None = None
) -> tuple[int, Any]:
    """One request to the emulator's control routes: ``(status, parsed JSON)``."""
    data = None if body is None else json.dumps(body).encode()
    status, _, raw = http(method, f"{control_url}{path}", data, "application/json")
    return status, json.loads(raw) if raw else None


def dial(control_url: str, **body: Any) -> dict[str, Any]:
    """A call rings (``POST /_emulator/sip/calls``); its record once delivered."""
    status, record = control(control_url, "POST", "/sip/calls", body)
    assert status == 200, record
    return dict(record)


def record(control_url: str, call_id: str) -> dict[str, Any]:
    status, found = control(control_url, "GET", f"/sip/calls/{call_id}")
    assert status == 200, found
    return dict(found)


def api_post(base_url: str, path: str, body: Any, key: str = "sk-test") -> tuple[int, Any]:
    """A raw request to an API route (what a client that checks nothing would send)."""
    data = json.dumps(body).encode()
    status, _, raw = http(
        "POST",
        f"{base_url}{path}",
        data,
        "application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    return status, json.loads(raw) if raw else None


def wav_file(path: Path, milliseconds: int = 600, rate: int = 16000) -> Path:
    """A mono 16-bit WAV of a 330 Hz tone: a caller's recorded words."""
    count = rate * milliseconds // 1000
    samples = [int(8000 * math.sin(2 * math.pi * 330 * n / rate)) for n in range(count)]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{count}h", *samples))
    return path
