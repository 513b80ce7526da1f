"""The Flask and Django examples: one voice call per user, against the emulator.

Each "browser" is a raw aiortc peer doing what ``examples/voice.html`` does (offer with
the ``oai-events`` channel and an audio transceiver, loopback candidates only, the
app's answer, then events on the channel); the app creates the call and attaches its
sideband over a WebSocket on loopback. The emulator is the referee: its ``rejections``
counter must stay 0 while the browser and the sideband both start responses.
(``tests/test_browser.py`` does the same with a real Chromium.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from emulator.rawclient import RawClient, make_offer
from threads import run_at_once

from rtclient import LoopThread
from rtclient.emulator import Emulator
from rtclient.logs import short_id
from rtclient.transports._loopback import loopback_only

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "sk-test-0123456789abcdef-SECRET"


def load_flask_example() -> Any:
    pytest.importorskip("flask")
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flask_example = load_flask_example()


def free_port_with_nobody_listening() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """What voice.html does, with aiortc on ``lt`` instead of Chromium."""

    def __init__(self, lt: LoopThread) -> None:
        self._lt = lt
        self.pc, self.channel, self.offer = lt.call(make_offer(), timeout=10)
        self.call_id: str | None = None
        self.inbox: RawClient | None = None
        self.http: Any = None  # the app's test client: this browser's cookies

    def accept(self, call_id: str, answer_sdp: str) -> None:
        """Apply the app's answer; returns once the data channel is open."""
        self.call_id = call_id
        self.inbox = self._lt.call(self._accept(call_id, answer_sdp), timeout=20)

    async def _accept(self, call_id: str, answer_sdp: str) -> RawClient:
        opened = asyncio.get_running_loop().create_future()
        self.channel.on("open", lambda: opened.done() or opened.set_result(None))
        inbox = RawClient(self.pc, self.channel, call_id)
        with loopback_only():
            await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        await asyncio.wait_for(opened, 15)
        return inbox

    def ask(self, text: str, timeout: float = 30.0) -> str:
        """Type a question as the page does; returns the spoken answer that reports the
        tool round (the sideband ran the tool and requested that response)."""
        return self._lt.call(self._ask(text, timeout), timeout=timeout + 5)

    async def _ask(self, text: str, timeout: float) -> str:
        assert self.inbox is not None
        content = [{"type": "input_text", "text": text}]
        item = {"type": "message", "role": "user", "content": content}
        await self.inbox.send({"type": "conversation.item.create", "item": item})
        await self.inbox.send({"type": "response.create"})
        done = await self.inbox.until(
            lambda e: (
                e.get("type") == "response.output_audio_transcript.done"
                and e["transcript"].startswith("Tool results")
            ),
            timeout,
        )
        return str(done["transcript"])

    def seen(self) -> str:
        """Every event this browser received, as one string."""
        return json.dumps(self.inbox.received if self.inbox else [])

    def wait_ended(self, timeout: float = 15.0) -> None:
        """Until the API closed the data channel (the call ended)."""
        assert self.inbox is not None
        self._lt.call(self.inbox.wait_closed(timeout), timeout=timeout + 5)

    def close(self) -> None:
        """The tab closes."""
        closing = self.inbox.close() if self.inbox else self.pc.close()
        self._lt.call(closing, timeout=10)


@pytest.fixture
def browsers(lt: LoopThread) -> Iterator[Any]:
    """``browsers(n)`` -> n fresh browsers; all closed after the test."""
    made: list[Browser] = []

    def make(count: int) -> list[Browser]:
        new = [Browser(lt) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for browser in made:
        browser.close()


def post_offer(http: Any, browser: Browser, **extra: Any) -> Any:
    return http.post("/calls", data=browser.offer, content_type="application/sdp", **extra)


def start_call(http: Any, browser: Browser) -> str:
    """``browser`` posts its offer through ``http`` (its own cookies from now on)."""
    browser.http = http
    reply = post_offer(http, browser)
    raw = reply.content if hasattr(reply, "content") else reply.data  # Django or Flask
    assert reply.status_code == 201, raw
    body = json.loads(raw)
    assert set(body) == {"call_id", "sdp"}
    browser.accept(body["call_id"], body["sdp"])
    return str(body["call_id"])


def body_of(reply: Any) -> dict[str, Any]:
    raw = reply.content if hasattr(reply, "content") else reply.data  # Django or Flask
    return dict(json.loads(raw))


# ---------------------------------------------------------------------------- Flask


@pytest.fixture
def flask_app(rt_emulator: Emulator) -> Iterator[Any]:
    app = flask_example.create_app(base_url=rt_emulator.url, api_key=SECRET, max_workers=4)
    try:
        yield app
    finally:
        app.extensions["calls"].close()


@pytest.mark.timeout(90)
def test_flask_two_users_get_their_own_calls_tools_and_answers(
    rt_emulator: Emulator, flask_app: Any, browsers: Any
) -> None:
    users = browsers(2)

    def talk(i: int) -> tuple[str, str]:
        call_id = start_call(flask_app.test_client(), users[i])
        return call_id, users[i].ask(f'Where is my order? lookup_order({{"order_id": {7 + i}}})')

    (call_a, answer_a), (call_b, answer_b) = run_at_once(2, talk)

    assert call_a != call_b
    assert answer_a.startswith('Tool results: lookup_order -> {"order_id": 7, "status": "shipped"')
    assert answer_b.startswith('Tool results: lookup_order -> {"order_id": 8, "status": "process')
    assert '"order_id": 8' not in users[0].seen() and '"order_id": 7' not in users[1].seen()
    calls = flask_app.extensions["calls"]
    assert sorted(calls.live()) == sorted([call_a, call_b])
    for call_id in (call_a, call_b):
        stats = calls.get(call_id).stats()
        assert stats["tool_calls"] == 1 and stats["tool_errors"] == 0 and stats["lost"] == 0
        session = rt_emulator.session(call_id)
        # the browser's create, then the sideband's follow-up: both accepted
        assert session.counters["creates"] == session.counters["responses"] == 2
    emu = rt_emulator.stats()
    assert emu["calls"] == 2 and emu["rejections"] == 0
    loops = [t for t in threading.enumerate() if t.name == "flask-calls"]
    assert len(loops) == 1, "both sidebands live on one shared loop thread"

    for browser in users:
        reply = browser.http.post(f"/calls/{browser.call_id}/hangup")
        assert reply.status_code == 200
        assert reply.get_json() == {"call_id": browser.call_id, "ended": True}
        browser.wait_ended()  # the call ended for the browser too
        assert rt_emulator.session(str(browser.call_id)).closed
    assert calls.live() == []
    assert users[0].http.post(f"/calls/{call_a}/hangup").status_code == 404


class LiveBrowser(Browser):
    """What live_voice.html does, with aiortc: audio on the track - aiortc's paced
    silence, which is what moves a GPT-Live session's clock - and events in."""

    def __init__(self, lt: LoopThread) -> None:
        from aiortc import AudioStreamTrack

        self._lt = lt
        self.pc, self.channel, self.offer = lt.call(
            make_offer(track=AudioStreamTrack()), timeout=10
        )
        self.call_id = None
        self.inbox = None
        self.http = None


@pytest.mark.timeout(90)
def test_flask_live_mode_answers_a_delegation_once_on_its_pool(
    rt_emulator: Emulator, lt: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    """``create_app(live=True)``: the app creates the GPT-Live session for the browser's
    offer (its key never leaves it) and attaches a sideband whose delegation handler
    runs on the app's pool; its answer is placed once; the session is this browser
    session's only."""
    app = flask_example.create_app(base_url=rt_emulator.url, api_key=SECRET, live=True)
    user = LiveBrowser(lt)
    try:
        http = app.test_client()
        with caplog.at_level(logging.DEBUG):
            page = http.get("/")
            call_id = start_call(http, user)
        assert page.status_code == 200 and "GPT-Live" in page.get_data(as_text=True)
        assert call_id.startswith("live_")
        session = rt_emulator.live_session(call_id)
        assert session.media == "webrtc"
        assert rt_emulator.wait_for(lambda: session.clock_ms > 0, 20)  # the browser's audio
        session.simulate_speech("Please delegate: where is my order 8?")
        assert rt_emulator.wait_for(
            lambda: [a["status"] for a in session.appends()] == ["landed"], 20
        )
        (delegation,) = session.delegations()["delegations"]
        assert [(a["kind"], a["content"]) for a in delegation["appends"]] == [
            ("commentary", "Order 8 is processing.")
        ]
        calls = app.extensions["calls"]
        stats = calls.get(call_id).stats()
        assert (stats["delegations"], stats["delegations_answered"], stats["lost"]) == (1, 1, 0)
        # another browser session may not end it; this one may
        refused = app.test_client().post(f"/calls/{call_id}/hangup")
        assert refused.status_code == 403
        assert not session.closed
        assert http.post(f"/calls/{call_id}/hangup").status_code == 200
        assert rt_emulator.wait_for(lambda: session.closed, 10)
        assert calls.live() == []
        assert SECRET not in caplog.text and SECRET not in user.seen()
        assert SECRET not in page.get_data(as_text=True)
    finally:
        user.close()
        app.extensions["calls"].close()


def test_flask_live_mode_is_one_process_only() -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        flask_example.create_app(
            api_key=SECRET, redis_url="redis://127.0.0.1:9/0", secret_key="s", live=True
        )


@pytest.mark.timeout(60)
def test_flask_a_call_that_ends_without_hangup_is_forgotten(
    rt_emulator: Emulator, flask_app: Any, browsers: Any
) -> None:
    (user,) = browsers(1)
    call_id = start_call(flask_app.test_client(), user)
    calls = flask_app.extensions["calls"]
    client = calls.get(call_id)
    assert calls.live() == [call_id]
    events = client.events(timeout=20)  # ends when the client closes (or after 20 s idle)

    user.close()  # the tab closes: no hang-up request
    for _ in events:
        pass

    assert client.closed
    assert calls.live() == [] and calls.get(call_id) is None
    assert rt_emulator.session(call_id).closed


@pytest.mark.timeout(60)
def test_flask_no_key_reaches_the_browser(
    rt_emulator: Emulator, flask_app: Any, browsers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (user,) = browsers(1)
    http = flask_app.test_client()
    with caplog.at_level(logging.DEBUG):
        page = http.get("/")
        script = http.get("/call_page.js")
        started = post_offer(http, user)
        user.accept(started.get_json()["call_id"], started.get_json()["sdp"])
        ended = http.post(f"/calls/{user.call_id}/hangup")
        refused = [http.get("/calls"), http.post("/calls/rtc_nobody/hangup")]

    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<script src="call_page.js"></script>' in page.get_data(as_text=True)
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert 'createDataChannel("oai-events")' in script.get_data(as_text=True)
    assert "sk-" not in page.get_data(as_text=True) + script.get_data(as_text=True)
    assert started.status_code == 201 and ended.status_code == 200
    for reply in [page, script, started, ended, *refused]:
        assert SECRET not in reply.get_data(as_text=True)
    assert SECRET not in caplog.text and SECRET not in user.seen()


@pytest.mark.timeout(60)
def test_flask_errors_are_json_with_a_status(
    flask_app: Any, browsers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (user,) = browsers(1)
    http = flask_app.test_client()
    cases = [
        (http.post("/calls", data=user.offer, content_type="text/plain"), 400),
        (http.post("/calls", data="not an offer", content_type="application/sdp"), 400),
        (http.get("/calls"), 405),
        (http.post("/calls/rtc_nobody/hangup"), 404),
        (http.get("/nowhere"), 404),
    ]
    for reply, status in cases:
        assert reply.status_code == status
        assert reply.get_json()["error"]["status"] == status
        assert reply.get_json()["error"]["message"]
    assert flask_app.extensions["calls"].live() == [], "bad requests start no call"

    with Emulator(api_key="sk-the-right-one", turn_detection=None) as strict:
        app = flask_example.create_app(base_url=strict.url, api_key=SECRET)
        try:
            with caplog.at_level(logging.DEBUG):
                refused = post_offer(app.test_client(), user)
        finally:
            app.extensions["calls"].close()
    assert refused.status_code == 502 and refused.get_json()["error"]["status"] == 502
    for text in (refused.get_data(as_text=True), caplog.text):
        assert SECRET not in text and "SECRET" not in text

    down = f"http://127.0.0.1:{free_port_with_nobody_listening()}/v1"
    app = flask_example.create_app(base_url=down, api_key="sk-test")
    try:
        assert post_offer(app.test_client(), user).status_code == 502
    finally:
        app.extensions["calls"].close()

    no_key = flask_example.create_app(base_url=down, api_key="")
    assert post_offer(no_key.test_client(), user).status_code == 503


# --------------------------------------------------------------------------- Django


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Django configured once for this module: settings, app registry, migrated SQLite."""
    pytest.importorskip("django")
    import django
    from django.apps import apps
    from django.core.management import call_command
    from django.test.utils import setup_test_environment, teardown_test_environment
    from loguru import logger

    import rtclient.logs

    db = tmp_path_factory.mktemp("django") / "shop.sqlite3"
    std = logging.getLogger("rtclient")  # settings.LOGGING reconfigures it: put it back after
    saved = (std.level, std.propagate, list(std.handlers))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_SETTINGS_MODULE", "shop.settings")
        mp.setenv("RTSHOP_DB", str(db))
        mp.syspath_prepend(str(EXAMPLES / "django_app"))
        django.setup()
        setup_test_environment()
        call_command("migrate", verbosity=0)
        config = apps.get_app_config("orders")
        try:
            yield config
        finally:
            from orders import realtime

            realtime.close()
            teardown_test_environment()
            if config.log_handler is not None:
                logger.remove(config.log_handler)  # leave rtclient silent for other tests
                config.log_handler = None
            rtclient.logs.disable()
            std.setLevel(saved[0])
            std.propagate = saved[1]
            for handler in set(std.handlers) - set(saved[2]):
                std.removeHandler(handler)


@pytest.fixture
def shop(django_project: Any, rt_emulator: Emulator) -> Iterator[Any]:
    """The shop's call registry pointed at this test's emulator; closed afterwards."""
    from django.test import override_settings
    from orders import realtime
    from orders.models import Order

    conf = {"api_key": SECRET, "base_url": rt_emulator.url, "max_workers": 4}
    Order.objects.all().delete()
    with override_settings(RTCLIENT=conf):
        try:
            yield realtime
        finally:
            realtime.close()


def django_client() -> Any:
    from django.test import Client

    return Client()


@pytest.mark.timeout(90)
def test_django_two_users_each_get_a_call_whose_tool_reads_the_orm(
    shop: Any, rt_emulator: Emulator, browsers: Any
) -> None:
    from django.db.backends.signals import connection_created
    from orders.models import Order

    orders = [
        Order.objects.create(customer="Ada", status="shipped"),
        Order.objects.create(customer="Bob", status="processing"),
    ]
    users = browsers(2)
    opened: list[str] = []

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(threading.current_thread().name)

    def talk(i: int) -> str:
        start_call(django_client(), users[i])
        return users[i].ask(f'Status? order_status({{"order_id": {orders[i].pk}}})')

    records = ListHandler()
    std = logging.getLogger("rtclient")
    std.addHandler(records)
    connection_created.connect(on_connect)
    try:
        answers = run_at_once(2, talk)
    finally:
        connection_created.disconnect(on_connect)
        std.removeHandler(records)

    assert '"customer": "Ada", "status": "shipped"' in answers[0]
    assert '"customer": "Bob", "status": "processing"' in answers[1]
    assert "Bob" not in users[0].seen() and "Ada" not in users[1].seen()
    live = shop.live_calls()
    assert sorted(live) == sorted(str(u.call_id) for u in users)
    # Each tool call opened its own connection on a pool thread and closed it: on a
    # reused pool thread a connection left open would have been reused, not counted.
    tool_threads = [name for name in opened if name.startswith("django-tool")]
    assert len(tool_threads) == sum(c.stats()["tool_calls"] for c in live.values()) == 2
    assert rt_emulator.stats()["rejections"] == 0
    # rtclient's gate diagnostics arrive through standard logging (orders/apps.py).
    gate = [r for r in records.records if r.getMessage().startswith("[RESPONSE_CREATE] ")]
    assert gate and {r.name for r in gate} <= {"rtclient.core.gate", "rtclient.core.realtime"}
    assert all(r.levelno == logging.INFO for r in gate)

    for user in users:
        reply = user.http.post(f"/calls/{user.call_id}/hangup")
        assert reply.status_code == 200 and reply.json()["ended"] is True
        user.wait_ended()
        assert rt_emulator.session(str(user.call_id)).closed
    assert shop.live_calls() == {}


@pytest.mark.timeout(60)
def test_django_page_and_errors_carry_no_key(shop: Any, browsers: Any) -> None:
    (user,) = browsers(1)
    http = django_client()
    page = http.get("/")
    script = http.get("/call_page.js")
    assert page.status_code == 200 and script.status_code == 200
    assert '<script src="call_page.js"></script>' in page.content.decode()
    assert script["Content-Type"].startswith("text/javascript")
    assert 'createDataChannel("oai-events")' in script.content.decode()
    assert "sk-" not in page.content.decode() + script.content.decode()
    cases = [
        (http.post("/calls", data=user.offer, content_type="text/plain"), 400),
        (http.get("/calls"), 405),
        (http.post("/calls/rtc_nobody/hangup"), 404),
    ]
    for reply, status in cases:
        assert reply.status_code == status and reply.json()["error"]["status"] == status
    started = post_offer(http, user)
    assert started.status_code == 201
    user.accept(started.json()["call_id"], started.json()["sdp"])
    ended = http.post(f"/calls/{user.call_id}/hangup")
    assert ended.status_code == 200
    for reply in [page, started, ended] + [reply for reply, _ in cases]:
        assert SECRET not in reply.content.decode()
    assert shop.live_calls() == {}


# ------------------------------------------------- whose call it is (both apps)


@dataclasses.dataclass
class Site:
    """One example app under test: a new browser session is ``client()``."""

    name: str
    client: Callable[[], Any]
    question: str  # typed in the page: makes the emulator's model call the app's tool

    def twin(self, http: Any) -> Any:
        """A second client that carries ``http``'s session cookie (another tab)."""
        other = self.client()
        if self.name == "flask":
            other.set_cookie("session", http.get_cookie("session").value)
        else:
            other.cookies.load({k: m.value for k, m in http.cookies.items()})
        return other


@pytest.fixture(params=["flask", "django"])
def site(request: pytest.FixtureRequest, rt_emulator: Emulator) -> Site:
    if request.param == "flask":
        app = request.getfixturevalue("flask_app")
        return Site("flask", app.test_client, 'lookup_order({"order_id": 7})')
    request.getfixturevalue("shop")
    return Site("django", django_client, 'order_status({"order_id": 1})')


def loud_lines(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.timeout(90)
def test_another_session_cannot_end_a_call(
    site: Site, rt_emulator: Emulator, browsers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = browsers(2)
    call_a = start_call(site.client(), a)
    call_b = start_call(site.client(), b)
    with caplog.at_level(logging.WARNING):
        # B has a session and a call of its own; the third has no session at all
        for stranger in (b.http, site.client()):
            refused = stranger.post(f"/calls/{call_a}/hangup")
            assert refused.status_code == 403
            assert body_of(refused)["error"] == {
                "message": "this call belongs to another browser session",
                "status": 403,
            }
    assert not rt_emulator.session(call_a).closed
    assert a.ask(site.question).startswith("Tool results")  # A's call goes on, tools and all
    # the refusals are logged with the call's short id only
    assert f"another session's request for call {short_id(call_a)}" in loud_lines(caplog)
    assert call_a not in loud_lines(caplog)

    for user, call_id in ((a, call_a), (b, call_b)):  # each ends its own
        assert user.http.post(f"/calls/{call_id}/hangup").status_code == 200
        user.wait_ended()
        assert rt_emulator.session(call_id).closed
    assert b.http.post(f"/calls/{call_a}/hangup").status_code == 404  # ended: no longer live


@pytest.mark.timeout(90)
def test_a_session_holds_two_live_calls_and_gets_429_beyond(
    site: Site, rt_emulator: Emulator, browsers: Any
) -> None:
    users = browsers(4)
    http = site.client()
    start_call(http, users[0])
    start_call(http, users[1])
    refused = post_offer(http, users[2])
    assert refused.status_code == 429
    assert body_of(refused)["error"] == {
        "message": "this browser already has 2 live calls: end one first",
        "status": 429,
    }
    assert rt_emulator.stats()["calls"] == 2  # no call was created for the refused offer
    start_call(site.client(), users[3])  # another session is not limited by this one
    # a call that ends frees its place
    assert http.post(f"/calls/{users[0].call_id}/hangup").status_code == 200
    users[0].wait_ended()
    start_call(http, users[2])
    assert rt_emulator.stats()["calls"] == 4


@pytest.mark.timeout(90)
def test_two_posts_at_once_from_one_session_take_its_last_place_once(
    site: Site, rt_emulator: Emulator, browsers: Any
) -> None:
    first, *racing = browsers(3)
    http = site.client()
    start_call(http, first)  # one place left of 2
    tabs = [http, site.twin(http)]  # two tabs of one session, posting together

    replies = run_at_once(2, lambda i: post_offer(tabs[i], racing[i]))

    assert sorted(r.status_code for r in replies) == [201, 429]
    assert rt_emulator.stats()["calls"] == 2


@pytest.mark.timeout(60)
def test_django_posts_need_the_csrf_token(shop: Any, rt_emulator: Emulator, browsers: Any) -> None:
    from django.test import Client

    (user,) = browsers(1)
    http = Client(enforce_csrf_checks=True)  # as a browser: Django's CSRF check is on
    refused = post_offer(http, user)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith("CSRF check failed")
    assert rt_emulator.stats()["calls"] == 0

    page = http.get("/")  # the page brings the token, as a cookie
    token = page.cookies["csrftoken"].value
    assert token
    user.http = http
    started = post_offer(http, user, HTTP_X_CSRFTOKEN=token)  # what voice.html sends
    assert started.status_code == 201, started.content
    user.accept(started.json()["call_id"], started.json()["sdp"])
    call_id = str(user.call_id)
    unsigned = http.post(f"/calls/{call_id}/hangup")  # the call's own session, no token
    assert unsigned.status_code == 403 and "CSRF" in unsigned.json()["error"]["message"]
    assert not rt_emulator.session(call_id).closed
    ended = http.post(f"/calls/{call_id}/hangup", HTTP_X_CSRFTOKEN=token)
    assert ended.status_code == 200 and ended.json() == {"call_id": call_id, "ended": True}
    user.wait_ended()


def test_flask_with_a_shared_registry_needs_a_shared_secret_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers that share calls must read each other's session cookies."""
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="set FLASK_SECRET_KEY"):
        flask_example.create_app(api_key="sk-test", redis_url="redis://127.0.0.1:9/0")


@pytest.mark.timeout(60)
def test_flask_example_without_a_key_or_emulator_says_so_and_exits() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", "9"],  # never bound
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [flask_example.NO_KEY]
    assert "OPENAI_API_KEY is not set" in proc.stderr and "--emulator" in proc.stderr
