"""The Flask and Django examples, against the emulator over real WebRTC on loopback.

The emulator is the referee (its ``rejections`` counter), the client reports ``lost``;
both must stay 0 while many request threads ask through one shared client.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from threads import run_at_once

from rtclient import RealtimeClient
from rtclient.emulator import Emulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ORDER_CALL = 'order_status({{"order_id": {}}})'


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


# ---------------------------------------------------------------------------- Flask


@pytest.fixture
def flask_app(rt_emulator: Emulator) -> Iterator[Any]:
    app = flask_example.create_app(base_url=rt_emulator.url, api_key="sk-test", loopback_only=True)
    try:
        yield app
    finally:
        app.extensions["rtclient"].close()


@pytest.mark.timeout(90)
def test_flask_sixteen_threads_ask_at_once(rt_emulator: Emulator, flask_app: Any) -> None:
    def ask(i: int) -> Any:
        question = f'Where is order {i}? lookup_order({{"order_id": {i}}})'
        return flask_app.test_client().post("/ask", json={"question": question})

    replies = run_at_once(16, ask)

    assert [r.status_code for r in replies] == [200] * 16
    bodies = [r.get_json() for r in replies]
    for body in bodies:
        # Every question names the tool, so the final answer is always the model's
        # report of tool results (after one or more tool rounds).
        assert body["text"].startswith("Tool results: lookup_order -> "), body
        assert body["response_ids"] and all(rid.startswith("resp_") for rid in body["response_ids"])
    calls = [c for b in bodies for c in b["tool_calls"]]
    assert calls and all(c["name"] == "lookup_order" and c["error"] is None for c in calls)
    # (Which answers quote real outputs depends on how 16 users interleave in one shared
    # conversation - a response created before a tool's output says "(no output)" -
    # so only the gate's guarantees are asserted below, not the model's wording.)

    client = flask_app.extensions["rtclient"].current
    assert client is not None
    stats, emu = client.stats(), rt_emulator.stats()
    assert emu["rejections"] == 0
    assert stats["lost"] == 0 and stats["tool_errors"] == 0
    assert emu["sessions"] == 1, "one shared connection for all 16 requests"
    assert emu["creates"] == stats["creates_sent"] == emu["responses"]


@pytest.mark.timeout(60)
def test_flask_replaces_a_lost_connection_on_the_next_request(
    rt_emulator: Emulator, flask_app: Any
) -> None:
    question = 'Where is order 7? lookup_order({"order_id": 7})'
    http = flask_app.test_client()
    assert http.post("/ask", json={"question": question}).status_code == 200
    first = flask_app.extensions["rtclient"].current
    events = first.events(timeout=20)
    rt_emulator.sessions[-1].close()  # the server ends the call (expiry, deploy, ...)
    for _ in events:  # ends when the client has noticed and shut down (or after 20 s)
        pass
    assert first.closed

    reply = http.post("/ask", json={"question": question})

    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["text"].startswith("Tool results: lookup_order -> ")
    second = flask_app.extensions["rtclient"].current
    assert second is not first and not second.closed
    assert rt_emulator.stats()["sessions"] == 2 and second.stats()["lost"] == 0


@pytest.mark.timeout(60)
def test_flask_session_mints_an_ephemeral_key_a_client_can_use(
    rt_emulator: Emulator, flask_app: Any
) -> None:
    reply = flask_app.test_client().post("/session")

    assert reply.status_code == 200
    body = reply.get_json()
    assert set(body) == {"value", "expires_at"}
    assert body["value"].startswith("ek_") and body["expires_at"] > time.time()
    assert "sk-test" not in reply.get_data(as_text=True)
    assert flask_app.extensions["rtclient"].current is None, "/session needs no WebRTC client"

    # What the browser would do: connect with the ephemeral key (plain-SDP form).
    with RealtimeClient(
        api_key=body["value"], base_url=rt_emulator.url, loopback_only=True
    ) as browser:
        done = browser.send_text("hello").result(15)  # type: ignore[union-attr]
        assert done["response"]["status"] == "completed"
        session = rt_emulator.session(str(browser.call_id))
        assert session.media == "webrtc"
        # The session the server chose when minting the key, not the browser's.
        assert session.config["instructions"] == flask_example.BROWSER_SESSION["instructions"]


@pytest.mark.timeout(60)
def test_flask_errors_are_json_with_a_status(
    flask_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    http = flask_app.test_client()
    cases = [
        (http.post("/ask", json={}), 400),
        (http.post("/ask", json={"question": "  "}), 400),
        (http.post("/ask", data="not json", content_type="application/json"), 400),
        (http.get("/ask"), 405),
        (http.get("/nowhere"), 404),
    ]
    for reply, status in cases:
        assert reply.status_code == status
        assert reply.get_json()["error"]["status"] == status
        assert reply.get_json()["error"]["message"]
    assert flask_app.extensions["rtclient"].current is None, "bad requests never connect"

    secret = "sk-proj-WRONG-0123456789abcdefSECRET"
    with Emulator(api_key="sk-the-right-one", turn_detection=None) as strict:
        app = flask_example.create_app(base_url=strict.url, api_key=secret, loopback_only=True)
        try:
            with caplog.at_level(logging.DEBUG):
                minted = app.test_client().post("/session")
                asked = app.test_client().post("/ask", json={"question": "hi"})
        finally:
            app.extensions["rtclient"].close()
    assert minted.status_code == 502 and "401" in minted.get_json()["error"]["message"]
    assert asked.status_code == 502 and asked.get_json()["error"]["status"] == 502
    for text in (minted.get_data(as_text=True), asked.get_data(as_text=True), caplog.text):
        assert secret not in text and "SECRET" not in text

    down = f"http://127.0.0.1:{free_port_with_nobody_listening()}/v1"
    app = flask_example.create_app(base_url=down, api_key="sk-test", loopback_only=True)
    try:
        assert app.test_client().post("/session").status_code == 502
        reply = app.test_client().post("/ask", json={"question": "hi"})
        assert reply.status_code == 502 and "error" in reply.get_json()
    finally:
        app.extensions["rtclient"].close()

    no_key = flask_example.create_app(base_url=down, api_key="")
    assert no_key.test_client().post("/session").status_code == 503


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
    """The shop's shared client pointed at this test's emulator; closed afterwards."""
    from django.test import override_settings
    from orders import realtime
    from orders.models import Order

    conf = {"api_key": "sk-test", "base_url": rt_emulator.url, "loopback_only": True,
            "max_workers": 4, "ask_timeout": 45.0}  # fmt: skip
    Order.objects.all().delete()
    with override_settings(RTCLIENT=conf):
        try:
            yield realtime
        finally:
            realtime.close()


def ask_django(question: str) -> Any:
    from django.test import Client

    return Client().post("/ask", {"question": question}, content_type="application/json")


@pytest.mark.timeout(60)
def test_django_tool_reads_the_orm_from_a_tool_thread(
    shop: Any, rt_emulator: Emulator, django_project: Any
) -> None:
    from django.db.backends.signals import connection_created
    from orders.models import Order

    ada = Order.objects.create(customer="Ada", status="shipped")
    bob = Order.objects.create(customer="Bob", status="processing")
    opened: list[str] = []

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(threading.current_thread().name)

    records = ListHandler()
    std = logging.getLogger("rtclient")
    std.addHandler(records)
    connection_created.connect(on_connect)
    try:
        first = ask_django(f"Where is my order? {ORDER_CALL.format(ada.pk)}")
        second = ask_django(f"And this one? {ORDER_CALL.format(bob.pk)}")
    finally:
        connection_created.disconnect(on_connect)
        std.removeHandler(records)

    assert first.status_code == 200 and second.status_code == 200
    assert '"customer": "Ada", "status": "shipped"' in first.json()["text"]
    assert '"customer": "Bob", "status": "processing"' in second.json()["text"]
    assert [c["name"] for c in first.json()["tool_calls"]] == ["order_status"]
    tool_threads = [name for name in opened if name.startswith("django-tool")]
    # Each call opened its own connection and closed it: on a reused pool thread a
    # connection left open would have been reused, and only one would be counted.
    assert len(tool_threads) == shop.current_client().stats()["tool_calls"] == 2
    assert rt_emulator.stats()["rejections"] == 0

    # rtclient's gate diagnostics arrive through standard logging (orders/apps.py).
    gate = [r for r in records.records if r.getMessage().startswith("[RESPONSE_CREATE] ")]
    assert {r.name for r in gate} == {"rtclient.gate", "rtclient.client"}  # claimed, sent
    assert all(r.levelno == logging.INFO for r in gate)


@pytest.mark.timeout(90)
def test_django_concurrent_requests_share_one_client(shop: Any, rt_emulator: Emulator) -> None:
    from orders.models import Order

    ids = [Order.objects.create(customer=f"c{i}", status="shipped").pk for i in range(8)]
    replies = run_at_once(8, lambda i: ask_django(f"Status? {ORDER_CALL.format(ids[i])}"))

    assert [r.status_code for r in replies] == [200] * 8
    for reply in replies:
        assert reply.json()["text"].startswith("Tool results: order_status -> "), reply.json()
    client = shop.current_client()
    stats, emu = client.stats(), rt_emulator.stats()
    assert stats["tool_calls"] >= 1 and stats["tool_errors"] == 0
    assert emu["rejections"] == 0 and stats["lost"] == 0
    assert emu["sessions"] == 1


@pytest.mark.timeout(30)
def test_django_errors_are_json(django_project: Any) -> None:
    from django.test import Client

    bad = Client().post("/ask", data="{", content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["status"] == 400
    wrong = Client().get("/ask")
    assert wrong.status_code == 405 and json.loads(wrong.content)["error"]["message"]
    assert sys.modules["orders.realtime"].current_client() is None
