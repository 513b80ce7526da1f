"""The examples' ``POST /webhooks/openai``, as deployed: gunicorn serving the Flask or
Django app on 127.0.0.1, the emulator (this process) ringing calls to it.

Each test is one phone line's day: a call offered to both APIs is answered through
the Realtime API with the app's session and tools, greeted, asked a question whose
tool runs once, and transferred by a keypress; forged and stale deliveries are
refused; a repeated delivery is accepted once; a blocked caller is rejected. With
``REDIS_URL`` and two workers, copies of one delivery arriving at once - at either
worker - are accepted once (the claim lives in Redis), and a phone call outlives the
worker that answered it: that worker is SIGKILLed, the other one takes the call over
from the shared registry and answers the caller's next question and keypress, and the
caller is greeted once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    EXAMPLES,
    Gunicorn,
    Process,
    RedisServer,
    child_env,
    http,
    redis_server_missing,
    wait_until,
)
from phone import control, dial, new_secret, record

from rtclient.emulator import Emulator, Pace, Session

API_KEY = "sk-test-sip-examples-0123456789"
OPERATOR = "tel:+14155550123"
BLOCKED = "+1666"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(pace=Pace(delay=0.005)) as emulator:  # the API's server VAD
        yield emulator


def serve(app: str, chdir: Path, emu: Emulator, secret: str, tmp: Path, **env: str) -> Gunicorn:
    """The example under gunicorn, configured as a deployment is: by its environment."""
    server = Gunicorn(
        app,
        chdir,
        int(env.pop("WORKERS", "1")),
        {
            "OPENAI_BASE_URL": emu.url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_WEBHOOK_SECRET": secret,
            "FLASK_SECRET_KEY": "sip-examples-session-secret",
            "RT_PHONE_REJECT_FROM": BLOCKED,
            "RT_PHONE_OPERATOR": OPERATOR,
            **env,
        },
        tmp / "gunicorn.log",
    )

    def up() -> bool:
        server.check_alive()
        try:
            return http("GET", f"{server.url}/")[0] == 200
        except OSError:
            return False

    wait_until(up, 60, f"{app} answering on {server.url}")
    return server


def flask(emu: Emulator, secret: str, tmp: Path, **env: str) -> Gunicorn:
    return serve("flask_app:create_app()", EXAMPLES, emu, secret, tmp, **env)


def django(emu: Emulator, secret: str, tmp: Path, **env: str) -> Gunicorn:
    django_dir = EXAMPLES / "django_app"
    db = tmp / "shop.sqlite3"
    setup = Process(
        "migrate",
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from django.core.management import call_command; call_command('migrate', verbosity=0);"
            "from orders.models import Order; Order(customer='Ada', status='shipped').save()",
        ],
        tmp / "setup.log",
        env=child_env(DJANGO_SETTINGS_MODULE="shop.settings", RTSHOP_DB=str(db)),
        cwd=django_dir,
    )
    assert setup.proc.wait(60) == 0, setup.tail()
    setup.stop()
    return serve(
        "shop.wsgi:application",
        django_dir,
        emu,
        secret,
        tmp,
        DJANGO_SETTINGS_MODULE="shop.settings",
        RTSHOP_DB=str(db),
        **env,
    )


APPS = {
    "flask": (flask, 'lookup_order({"order_id": 7})', '"status": "shipped"', "lookup_order"),
    "django": (django, 'order_status({"order_id": 1})', '"customer": "Ada"', "order_status"),
}


def greeted(session: Session) -> list[dict[str, Any]]:
    """The greeting's creates: the sideband asks for one as the call is answered."""
    return [
        e
        for e in session.client_events
        if e.get("type") == "response.create"
        and "Greet" in (e.get("response") or {}).get("instructions", "")
    ]


def completed_tool_round(session: Session) -> bool:
    return any(
        e.get("type") == "response.done"
        and e["response"]["status"] == "completed"
        and "Tool results" in json.dumps(e)
        for e in session.server_events
    )


@pytest.mark.parametrize("kind", sorted(APPS))
def test_the_example_answers_refuses_dedupes_rejects_and_transfers_phone_calls(
    emu: Emulator, tmp_path: Path, kind: str
) -> None:
    start, question, expected, tool_name = APPS[kind]
    secret = new_secret()
    server = start(emu, secret, tmp_path)
    hook = f"{server.url}/webhooks/openai"
    ctl = emu.control_url
    try:
        # offered to both APIs: the app answers through the Realtime API, ignores Live
        rung = dial(ctl, url=hook, secret=secret, apis=["realtime", "live"], **{"from": "+1415"})
        call_id = rung["call_id"]
        assert sorted(d["status"] for d in rung["deliveries"]) == [200, 200], server.tail()
        assert (rung["status"], rung["answered_by"]) == ("accepted", "realtime")
        assert [r["verb"] for r in rung["requests"]] == ["accept"]
        accepted = rung["accept_body"]
        assert "shop's voice assistant" in accepted["instructions"]
        assert tool_name in [t["name"] for t in accepted["tools"]]
        session = emu.session(call_id)

        # the greeting is requested as the webhook is answered: its create may still be
        # on its way when the dial returns
        emu.wait_for(lambda: bool(greeted(session)), 10)
        assert len(greeted(session)) == 1, "the sideband greets the caller through its gate"

        # the caller asks; server VAD answers; the app's tool runs once on its pool
        status, _ = control(ctl, "POST", f"/sip/calls/{call_id}/speech", {"text": question})
        assert status == 200
        assert emu.wait_for(lambda: completed_tool_round(session), 30), server.tail()
        outputs = [
            e["item"]["output"]
            for e in session.client_events
            if e.get("type") == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]
        assert len(outputs) == 1 and expected in outputs[0], outputs
        assert session.counters.get("rejections", 0) == 0

        # repeats of the delivery, at once: still one accept
        status, again = control(ctl, "POST", f"/sip/calls/{call_id}/redeliver", {"copies": 3})
        assert status == 200 and {d["status"] for d in again} == {200}
        assert [r["verb"] for r in record(ctl, call_id)["requests"]] == ["accept"]

        # forged and stale deliveries: 400, nothing accepted
        for how in ({"signature": "forged"}, {"timestamp_offset": -900}):
            refused = dial(ctl, url=hook, secret=secret, **how)
            assert [d["status"] for d in refused["deliveries"]] == [400]
            assert refused["status"] == "ringing" and refused["requests"] == []

        # a blocked caller: rejected with 603 Decline, nothing attached
        blocked = dial(ctl, url=hook, secret=secret, **{"from": BLOCKED + "5550000"})
        assert (blocked["status"], blocked["reject_status"]) == ("rejected", 603)

        # the caller presses 0: the app transfers the call to the operator
        status, _ = control(ctl, "POST", f"/sip/calls/{call_id}/dtmf", {"digits": "0"})
        assert status == 200
        moved = wait_until(
            lambda: (r := record(ctl, call_id))["status"] == "ended" and r, 20, "the transfer"
        )
        assert (moved["refer_target"], moved["ended_by"]) == (OPERATOR, "refer")
        server.check_alive()
        assert secret not in server.tail(100_000) and API_KEY not in server.tail(100_000)
    finally:
        server.stop()


@pytest.mark.skipif(bool(redis_server_missing()), reason=str(redis_server_missing()))
def test_two_flask_workers_accept_a_call_delivered_to_both_once(
    emu: Emulator, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    secret = new_secret()
    server = flask(emu, secret, tmp_path, WORKERS="2", REDIS_URL=redis.url)
    hook = f"{server.url}/webhooks/openai"
    try:
        for _ in range(3):
            rung = dial(emu.control_url, url=hook, secret=secret, copies=6)
            assert [d["status"] for d in rung["deliveries"]] == [200] * 6, server.tail()
            assert [r["verb"] for r in rung["requests"]] == ["accept"], "accepted once"
            claims = redis.client.keys("rt:once:*")
            assert f"rt:once:realtime:{rung['call_id']}" in claims
    finally:
        server.stop()
        redis.stop()


@pytest.mark.skipif(bool(redis_server_missing()), reason=str(redis_server_missing()))
@pytest.mark.parametrize("kind", sorted(APPS))
def test_a_phone_call_outlives_the_worker_that_answered_it(
    emu: Emulator, tmp_path: Path, kind: str
) -> None:
    start, question, expected, _ = APPS[kind]
    redis = RedisServer(tmp_path)
    secret = new_secret()
    server = start(emu, secret, tmp_path, WORKERS="2", REDIS_URL=redis.url, RT_LEASE_TTL="2")
    hook, ctl = f"{server.url}/webhooks/openai", emu.control_url
    try:
        rung = dial(ctl, url=hook, secret=secret)
        call_id = rung["call_id"]
        assert rung["status"] == "accepted", server.tail()
        session = emu.session(call_id)
        assert emu.wait_for(lambda: len(greeted(session)) == 1, 10), server.tail()
        key = f"rt:call:{call_id}"
        record = redis.client.hgetall(key)  # every worker's call now, under a lease
        assert record["caller"] == f"phone:{call_id}" and call_id in redis.client.smembers(
            "rt:calls"
        )
        holder, epoch = int(record["owner_pid"]), int(record["epoch"])

        killed_at = time.time()
        os.kill(holder, signal.SIGKILL)  # the worker holding the phone call's sideband

        def taken_over() -> dict[str, str] | None:
            now = redis.client.hgetall(key)
            moved = int(now.get("epoch", 0)) > epoch and int(now["owner_pid"]) != holder
            return now if moved and float(now.get("attached_at", 0)) > killed_at else None

        taken = wait_until(taken_over, 30, "the other worker attaching the phone call")
        assert int(taken["failovers"]) >= 1 and not record_of(ctl, call_id)["ended"]

        # the caller asks: server VAD answers; the new holder runs the tool, once
        status, _ = control(ctl, "POST", f"/sip/calls/{call_id}/speech", {"text": question})
        assert status == 200
        assert emu.wait_for(lambda: completed_tool_round(session), 30), server.tail()
        outputs = [
            e
            for e in session.client_events
            if e.get("type") == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]
        assert len(outputs) == 1 and expected in outputs[0]["item"]["output"], outputs
        assert len(greeted(session)) == 1  # the successor never greets again

        # the keypad is watched on the new sideband: 0 transfers to the operator
        status, _ = control(ctl, "POST", f"/sip/calls/{call_id}/dtmf", {"digits": "0"})
        assert status == 200
        moved = wait_until(
            lambda: (r := record_of(ctl, call_id))["status"] == "ended" and r, 20, "the transfer"
        )
        assert (moved["refer_target"], moved["ended_by"]) == (OPERATOR, "refer")
        assert session.counters.get("rejections", 0) == 0
    finally:
        server.stop()
        redis.stop()


def record_of(control_url: str, call_id: str) -> dict[str, Any]:
    """The emulator's record of a phone call, with ``ended`` as a flag."""
    found = record(control_url, call_id)
    return {**found, "ended": found["status"] == "ended"}
