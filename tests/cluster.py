"""A multi-worker deployment on loopback, for tests and ``bench/failover.py``.

Four kinds of process, each its own: ``redis-server`` (Debian's; the shared registry),
the emulator (``python -m rtclient.emulator``), gunicorn with N workers serving an
example app, and this process, whose "browsers" are raw aiortc peers doing what
``examples/voice.html`` does: post an offer to the app, apply its answer, then talk to
the API over their own data channel. Everything binds 127.0.0.1; the peers gather
loopback candidates only. Waits poll a process's state with a deadline (never a sleep
standing in for an event): Redis for the registry, the emulator's control routes for
the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, TypeVar

from emulator.rawclient import RawClient, make_offer

from rtclient import LoopThread

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
API_KEY = "sk-test-cluster-0123456789"
SECRET_KEY = "cluster-test-session-secret"  # FLASK_SECRET_KEY: one for every worker
_POLL_S = 0.02
# Straight to 127.0.0.1: an http_proxy in the environment must never see these requests.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        pause.wait(_POLL_S)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str | None = None,
    *,
    opener: urllib.request.OpenerDirector = _HTTP,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONASYNCIODEBUG",))}
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a log file (read it when a test fails)."""

    def __init__(self, name: str, argv: list[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._out.close()


# ------------------------------------------------------------------------- services
def redis_server_missing() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    for module in ("redis", "gunicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"the {module!r} package is not installed (pip install -e '.[examples]')"
    return None


class RedisServer(Process):
    """Debian's redis-server on 127.0.0.1, no persistence, its files in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        argv = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(tmp),
            "--protected-mode", "yes",
        ]  # fmt: skip
        super().__init__("redis-server", argv, tmp / "redis.log")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)
        wait_until(self._ready, 15, "redis-server answering PING")

    def _ready(self) -> bool:
        self.check_alive()
        import redis

        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        self.client.close()
        super().stop(timeout)


class EmulatorServer(Process):
    """``python -m rtclient.emulator`` on 127.0.0.1 (server VAD off unless ``vad``: a
    phone call's caller is heard only through it)."""

    def __init__(self, tmp: Path, *, vad: bool = False) -> None:
        self.port = free_port()
        argv = [
            sys.executable, "-m", "rtclient.emulator",
            "--host", "127.0.0.1", "--port", str(self.port),
            *([] if vad else ["--no-vad"]), "--log-level", "WARNING",
        ]  # fmt: skip
        super().__init__("emulator", argv, tmp / "emulator.log", env=child_env())
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.control = f"http://127.0.0.1:{self.port}/_emulator"
        wait_until(self._ready, 30, "the emulator serving /_emulator/stats")

    def _ready(self) -> bool:
        self.check_alive()
        with contextlib.suppress(OSError):
            return http("GET", f"{self.control}/stats")[0] == 200
        return False

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(http("GET", f"{self.control}/stats")[2]))

    def call(self, call_id: str) -> dict[str, Any]:
        """One call's record: ``closed``, ``counters``, ``client_events``, ``errors``."""
        status, _, body = http("GET", f"{self.control}/calls/{call_id}")
        assert status == 200, body
        return dict(json.loads(body))


class Gunicorn(Process):
    """gunicorn serving ``app`` from ``chdir`` with ``workers`` processes on 127.0.0.1."""

    def __init__(
        self, app: str, chdir: Path, workers: int, env: Mapping[str, str], log: Path
    ) -> None:
        self.port = free_port()
        self.workers = workers
        argv = [
            sys.executable, "-m", "gunicorn",
            "--chdir", str(chdir),
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(workers),
            "--threads", "4",
            "--graceful-timeout", "10",
            "--timeout", "60",
            *_no_control_socket(),
            app,
        ]  # fmt: skip
        super().__init__("gunicorn", argv, log, env=child_env(**env))
        self.url = f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The master's live children (gunicorn replaces a worker that dies)."""
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[1]) == self.pid and fields[0] not in "ZX":
                    pids.add(int(entry.name))
        return pids


def _no_control_socket() -> list[str]:
    """gunicorn 24+ opens a control socket in ``~/.gunicorn`` (one path for every
    gunicorn on the machine): not wanted here."""
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for setting in KNOWN_SETTINGS for flag in (setting.cli or [])}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


def process_state(pid: int) -> str:
    """``R``, ``S``, ``T`` (stopped), ``Z``...; ``""`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


# ------------------------------------------------------- the emulator's record of a call
TICKET_KEY = "rtclient_ticket"


def sideband_creates(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``response.create`` events a sideband sent (rtclient's carry a ticket)."""
    return [
        e
        for e in record["client_events"]
        if e.get("type") == "response.create"
        and TICKET_KEY in ((e.get("response") or {}).get("metadata") or {})
    ]


def creator_pid(event_id: str) -> int:
    """The pid in an rtclient ticket id, ``rtc_<pid hex>_...``."""
    return int(event_id.split("_")[1], 16)


def sender_pid(event: Mapping[str, Any]) -> int | None:
    """The process that sent ``event``, from its rtclient event id (``evt_rtc_<pid
    hex>_<n>``, or a create's ticket ``rtc_<pid hex>_...``); None for the browser's."""
    parts = str(event.get("event_id") or "").removeprefix("evt_").split("_")
    if len(parts) >= 3 and parts[0] == "rtc":
        with contextlib.suppress(ValueError):
            return int(parts[1], 16)
    return None


def outputs_for(record: dict[str, Any], call_id: str) -> list[str]:
    return [
        e["item"]["output"]
        for e in record["client_events"]
        if e.get("type") == "conversation.item.create"
        and e["item"].get("type") == "function_call_output"
        and e["item"].get("call_id") == call_id
    ]


def outputs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``function_call_output`` items created, in order."""
    return [
        e
        for e in events
        if e.get("type") == "conversation.item.create"
        and (e.get("item") or {}).get("type") == "function_call_output"
    ]


# ---------------------------------------------------------------------- the registry
class Registry:
    """What the app's workers share in Redis (``examples/calls_registry.py``), read-only."""

    def __init__(self, client: Any, prefix: str = "rt") -> None:
        self.r = client
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def live(self) -> set[str]:
        return set(self.r.smembers(self.key("calls")))

    def call(self, call_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self.key("call", call_id)))

    def holder_pid(self, call_id: str) -> int:
        return int(self.call(call_id)["owner_pid"])

    def lease(self, call_id: str) -> str | None:
        value = self.r.get(self.key("call", call_id, "owner"))
        return str(value) if value is not None else None

    def tools(self, call_id: str) -> dict[str, dict[str, Any]]:
        raw = self.r.hgetall(self.key("call", call_id, "tools"))
        return {k: json.loads(v) for k, v in raw.items()}

    def rounds(self, call_id: str) -> dict[str, dict[str, Any]]:
        raw = self.r.hgetall(self.key("call", call_id, "rounds"))
        return {k: json.loads(v) for k, v in raw.items()}

    def reports(self, call_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(x) for x in self.r.lrange(self.key("reports"), 0, -1)]
        return [
            r
            for r in reversed(found)
            if (call_id is None or r["call_id"] == call_id) and (kind is None or r["kind"] == kind)
        ]

    def settled(self, call_id: str) -> bool:
        """Every recorded tool call answered and every round followed up, as the
        holder recorded it (it records a moment after the browser hears the answer)."""
        answered = all(r["state"] == "answered" for r in self.tools(call_id).values())
        return answered and all(r.get("followed") for r in self.rounds(call_id).values())

    def wait_settled(self, call_id: str, timeout: float = 10.0) -> None:
        try:
            wait_until(lambda: self.settled(call_id), timeout, f"{call_id}'s rounds recorded")
        except AssertionError as exc:
            state = {"tools": self.tools(call_id), "rounds": self.rounds(call_id)}
            raise AssertionError(f"{exc}; the registry has {json.dumps(state)}") from None

    def workers(self, pids: set[int], fresh_within: float) -> set[int]:
        """Which of ``pids`` run a registry thread that checked in lately."""
        now = time.time()
        alive = set()
        for value in self.r.hvals(self.key("workers")):
            info = json.loads(value)
            if info["pid"] in pids and now - info["seen_at"] < fresh_within:
                alive.add(int(info["pid"]))
        return alive

    def worker(self, pid: int) -> dict[str, Any] | None:
        """The heartbeat of worker ``pid`` (what it holds, how many times it fenced)."""
        for value in self.r.hvals(self.key("workers")):
            info = json.loads(value)
            if info["pid"] == pid:
                return dict(info)
        return None

    def attached_after(self, call_id: str, epoch: int, pid: int) -> dict[str, str] | None:
        """The call's record once a worker other than ``pid`` attached at an epoch
        after ``epoch``."""
        info = self.call(call_id)
        if int(info.get("epoch", 0)) <= epoch or "attached_at" not in info:
            return None
        if int(info["owner_pid"]) == pid or float(info["attached_at"]) < float(info["claimed_at"]):
            return None
        return info


class App:
    """An example app under gunicorn with its registry; the test talks to it over HTTP."""

    def __init__(self, server: Gunicorn, registry: Registry, lease_ttl: float) -> None:
        self.server = server
        self.registry = registry
        self.lease_ttl = lease_ttl

    @property
    def url(self) -> str:
        return self.server.url

    def wait_ready(self, timeout: float = 60.0) -> set[int]:
        """Until the page is served and every worker's registry thread checked in."""

        def ready() -> set[int] | None:
            self.server.check_alive()
            pids = self.server.worker_pids()
            if len(pids) != self.server.workers:
                return None
            with contextlib.suppress(OSError):
                if http("GET", self.url + "/")[0] != 200:
                    return None
                checked_in = self.registry.workers(pids, fresh_within=self.lease_ttl)
                return pids if checked_in == pids else None
            return None

        return wait_until(ready, timeout, f"{self.server.workers} workers ready")

    def hangup(
        self, by: Browser, call_id: str | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """``by``'s browser session asks to end ``call_id`` (by default, its own call)."""
        return by.post(f"/calls/{call_id or by.call_id}/hangup")


def flask_app(
    redis: RedisServer,
    emulator: EmulatorServer,
    tmp: Path,
    *,
    workers: int,
    lease_ttl: float,
    redis_url: str | None = None,
    **env: str,
) -> App:
    """``examples/flask_app.py`` under gunicorn, configured as the README's deployment:
    its calls in ``redis`` (or through ``redis_url``: a proxy in front of it), the
    emulator as the API, a shared session secret; ``env`` adds to that."""
    config = {
        "REDIS_URL": redis_url or redis.url,
        "OPENAI_BASE_URL": emulator.url,
        "OPENAI_API_KEY": API_KEY,
        "FLASK_SECRET_KEY": SECRET_KEY,
        "RT_LEASE_TTL": str(lease_ttl),
        **env,
    }
    server = Gunicorn("flask_app:create_app()", EXAMPLES, workers, config, tmp / "gunicorn.log")
    return App(server, Registry(redis.client), lease_ttl)


# ----------------------------------------------------------------------- the browser
class Browser:
    """What voice.html does, with aiortc on ``lt``, against the app over HTTP: one
    call, in a browser session (a cookie jar) of its own or ``tab_of``'s (another tab)."""

    def __init__(self, lt: LoopThread, app_url: str, tab_of: Browser | None = None) -> None:
        self._lt = lt
        self.app_url = app_url
        self.cookies = tab_of.cookies if tab_of is not None else CookieJar()
        self._http = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.cookies)
        )
        self.pc, self.channel, self.offer = lt.call(make_offer(), timeout=10)
        self.call_id = ""
        self.created_by = ""
        self.inbox: RawClient | None = None

    def post(
        self, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """POST as the page does: this session's cookies, and Django's CSRF token as
        ``X-CSRFToken`` once the page has set it (the Flask app sets none)."""
        token = {c.name: c.value for c in self.cookies}.get("csrftoken")
        headers = {"X-CSRFToken": token} if token else {}
        status, got, raw = http(
            "POST", self.app_url + path, body, content_type, opener=self._http, headers=headers
        )
        return status, got, json.loads(raw)

    def open_page(self) -> None:
        """GET the page, as a browser does first (Django sets its CSRF cookie then)."""
        status, _, _ = http("GET", self.app_url + "/", opener=self._http)
        assert status == 200

    def post_offer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Load the page, then POST the offer."""
        self.open_page()
        return self.post("/calls", self.offer.encode(), "application/sdp")

    def start_call(self) -> str:
        """POST the offer to the app; apply its answer; returns once the channel is open."""
        status, headers, answer = self.post_offer()
        assert status == 201, answer
        assert set(answer) == {"call_id", "sdp"}
        self.call_id, self.created_by = answer["call_id"], headers.get("X-Served-By", "")
        self.inbox = self._lt.call(
            RawClient.answered(self.pc, self.channel, self.call_id, answer["sdp"], timeout=15),
            timeout=20,
        )
        return self.call_id

    def send_question(self, text: str) -> None:
        """Type a question as the page does: a user message, then ``response.create``."""
        self._lt.call(self._send_question(text), timeout=10)

    async def _send_question(self, text: str) -> None:
        assert self.inbox is not None
        content = [{"type": "input_text", "text": text}]
        item = {"type": "message", "role": "user", "content": content}
        await self.inbox.send({"type": "conversation.item.create", "item": item})
        await self.inbox.send({"type": "response.create"})

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The next received event matching ``predicate`` (events before it are passed)."""
        assert self.inbox is not None
        return self._lt.call(self.inbox.until(predicate, timeout), timeout=timeout + 5)

    def answer(self, timeout: float = 30.0) -> str:
        """The next spoken answer that reports a tool round (the sideband's follow-up)."""
        done = self.until(
            lambda e: (
                e.get("type") == "response.output_audio_transcript.done"
                and str(e.get("transcript", "")).startswith("Tool results")
            ),
            timeout,
        )
        return str(done["transcript"])

    def ask(self, text: str, timeout: float = 30.0) -> str:
        self.send_question(text)
        return self.answer(timeout)

    def ask_later(self, text: str, timeout: float = 60.0) -> Future[str]:
        """Ask, and wait for the answer on a thread (the test does something meanwhile)."""
        self.send_question(text)
        future: Future[str] = Future()

        def wait() -> None:
            try:
                future.set_result(self.answer(timeout))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=wait, name="browser-answer", daemon=True).start()
        return future

    def connected(self) -> bool:
        """The call is up for this browser: peer connected, data channel open."""
        return self.pc.connectionState == "connected" and self.channel.readyState == "open"

    def wait_ended(self, timeout: float = 15.0) -> None:
        """Until the API closed the data channel (the call ended)."""
        assert self.inbox is not None
        self._lt.call(self.inbox.wait_closed(timeout), timeout=timeout + 5)

    def close(self) -> None:
        closing = self.inbox.close() if self.inbox else self.pc.close()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            self._lt.call(closing, timeout=10)
