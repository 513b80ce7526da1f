"""The examples as a cluster: gunicorn workers sharing a registry of live calls in Redis.

Processes, all on 127.0.0.1: ``redis-server``, the emulator, gunicorn serving the Flask
example with 3 workers (and the Django one with 2), and this test, whose browsers are
raw aiortc peers (``tests/cluster.py``). A call created by one worker is hung up by
another; the worker holding a call's sideband is SIGKILLed and another re-attaches
within 3 lease TTLs, while the browser's call stays up and keeps working; no
``response.create`` is ever replayed; the tool call the dead worker was running is
answered by its successor, and one the model made while no sideband was attached is
reported with a typed event. The measured distribution: ``bench/failover.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    API_KEY,
    EXAMPLES,
    SECRET_KEY,
    TICKET_KEY,
    App,
    Browser,
    EmulatorServer,
    Gunicorn,
    Process,
    RedisServer,
    Registry,
    child_env,
    creator_pid,
    outputs_for,
    process_state,
    redis_server_missing,
    sideband_creates,
    wait_until,
)
from threads import run_at_once

from rtclient import LoopThread

_MISSING = redis_server_missing()
needs_redis = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")
ROOT = EXAMPLES.parent

LEASE_TTL = 2.0  # seconds; each worker renews every TTL/4 and scans as often
BOUND = 3 * LEASE_TTL  # re-attach bound asserted: generous, this is not a speed test
# track_parcel's "carrier API" answers only once this file exists: the kill lands while
# the call runs, however loaded the machine (a fixed latency would be a race)
CARRIER_OPEN = Path(tempfile.gettempdir()) / f"rtclient-carrier-open-{os.getpid()}"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Any]]:
    tmp = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(tmp)
    try:
        emulator = EmulatorServer(tmp)
    except BaseException:
        redis.stop()
        raise
    try:
        yield redis, emulator
    finally:
        emulator.stop()
        redis.stop()


def start_app(
    services: tuple[RedisServer, EmulatorServer],
    app: str,
    chdir: Path,
    workers: int,
    db: int,
    log: Path,
    **env: str,
) -> App:
    redis, emulator = services
    url = f"redis://127.0.0.1:{redis.port}/{db}"
    env = {
        "REDIS_URL": url,
        "OPENAI_BASE_URL": emulator.url,
        "OPENAI_API_KEY": API_KEY,
        "RT_LEASE_TTL": str(LEASE_TTL),
        **env,
    }
    server = Gunicorn(app, chdir, workers, env, log)
    import redis as redis_py

    client = redis_py.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    return App(server, Registry(client), LEASE_TTL)


@pytest.fixture(scope="module")
def flask_cluster(
    services: tuple[RedisServer, EmulatorServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    log = tmp_path_factory.mktemp("flask") / "gunicorn.log"
    app = start_app(
        services,
        "flask_app:create_app()",
        EXAMPLES,
        workers=3,
        db=0,
        log=log,
        SHOP_CARRIER_GATE=str(CARRIER_OPEN),
        FLASK_SECRET_KEY=SECRET_KEY,
    )
    try:
        app.wait_ready()
        yield app
    finally:
        app.server.stop()
        app.registry.r.close()
        CARRIER_OPEN.unlink(missing_ok=True)


@pytest.fixture
def browsers(lt: LoopThread) -> Iterator[Any]:
    made: list[Browser] = []

    def make(app: App, count: int, tab_of: Browser | None = None) -> list[Browser]:
        """``count`` browsers, each its own session (or tabs of ``tab_of``'s)."""
        new = [Browser(lt, app.url, tab_of) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for browser in made:
        browser.close()


def kill(pid: int) -> float:
    """SIGKILL a worker; returns the wall-clock time of the kill."""
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    return at


def wait_reattached(app: App, call_id: str, epoch: int, dead: int, after: float) -> dict[str, str]:
    """The call's record once another worker re-attached; asserts the bound."""
    info = wait_until(
        lambda: app.registry.attached_after(call_id, epoch, dead),
        BOUND + 10,  # fail below with the figure, not here
        f"a worker other than {dead} re-attaching {call_id}",
    )
    took = float(info["attached_at"]) - after
    assert 0 < took < BOUND, f"re-attached {took:.2f}s after the kill (bound {BOUND}s)"
    return info


def failover_report(reg: Registry, call_id: str, epoch: int) -> dict[str, Any]:
    """The typed report of the worker that took ``call_id`` over at ``epoch``."""
    found = wait_until(
        lambda: [r for r in reg.reports(call_id, "calls_possibly_lost") if r["epoch"] == epoch],
        10,
        f"the failover report of {call_id} at epoch {epoch}",
    )
    assert len(found) == 1, found
    return found[0]


def assert_no_replayed_create(record: dict[str, Any], before_kill: int, dead: int) -> int:
    """Every create unique; none sent after the kill repeats one sent before, and none
    after it comes from the dead worker. Returns how many the survivors sent."""
    creates = sideband_creates(record)
    ids = [e["event_id"] for e in creates]
    tickets = [e["response"]["metadata"][TICKET_KEY] for e in creates]
    assert len(set(ids)) == len(ids), f"a create was sent twice: {ids}"
    assert len(set(tickets)) == len(tickets)
    before = {"client_events": record["client_events"][:before_kill]}
    early = {e["event_id"] for e in sideband_creates(before)}
    late = [e for e in creates if e["event_id"] not in early]
    assert all(creator_pid(e["event_id"]) != dead for e in late), "the dead worker sent?"
    assert not {e["event_id"] for e in late} & early
    return len(late)


def hangup_from_another_worker(app: App, browser: Browser) -> dict[str, str]:
    """Freeze the worker holding the call (SIGSTOP), so that another one must serve the
    hang-up; the call ends for the browser too. Returns the reply's headers."""
    holder = app.registry.holder_pid(browser.call_id)
    os.kill(holder, signal.SIGSTOP)
    try:
        wait_until(lambda: process_state(holder) == "T", 10, f"worker {holder} stopped")
        status, headers, body = app.hangup(browser)
        assert status == 200 and body == {"call_id": browser.call_id, "ended": True}, body
        assert not headers["X-Served-By"].endswith(f":{holder}")
        browser.wait_ended()  # the API ended the call for everyone
    finally:
        os.kill(holder, signal.SIGCONT)
    return headers


# ------------------------------------------------------------------------------ Flask
@needs_redis
@pytest.mark.timeout(120)
def test_flask_a_killed_workers_call_is_taken_over_and_its_tool_call_answered(
    flask_cluster: App, services: tuple[RedisServer, EmulatorServer], browsers: Any
) -> None:
    app, (_, emulator), reg = flask_cluster, services, flask_cluster.registry
    users = browsers(app, 2)
    run_at_once(2, lambda i: users[i].start_call())  # two users call at once
    a, b = users
    assert {a.call_id, b.call_id} <= reg.live()
    first = run_at_once(2, lambda i: users[i].ask(f'lookup_order({{"order_id": {7 + i}}})'))
    assert first[0].startswith('Tool results: lookup_order -> {"order_id": 7, "status": "shipped"')
    assert first[1].startswith('Tool results: lookup_order -> {"order_id": 8, "status": "proces')

    # A asks where its parcel is; the carrier is slow. Kill the worker holding A's
    # sideband while that tool call runs there.
    for user in users:
        reg.wait_settled(user.call_id)
    holder = reg.holder_pid(a.call_id)
    epoch = int(reg.call(a.call_id)["epoch"])
    b_holder, b_epoch = reg.holder_pid(b.call_id), int(reg.call(b.call_id)["epoch"])
    CARRIER_OPEN.unlink(missing_ok=True)  # the carrier holds every answer until touched
    pending = a.ask_later('Where is it? track_parcel({"order_id": 7})')
    started = wait_until(
        lambda: [
            r
            for r in reg.tools(a.call_id).values()
            if r.get("name") == "track_parcel" and r["state"] != "added"
        ],
        20,
        "track_parcel recorded as started, with its arguments",
    )[0]
    assert started["state"] == "arguments", started  # running, not answered
    before_kill = len(emulator.call(a.call_id)["client_events"])
    killed_at = kill(holder)
    CARRIER_OPEN.touch()  # the carrier answers the call the new holder runs again

    info = wait_reattached(app, a.call_id, epoch, holder, killed_at)
    assert int(info["failovers"]) >= 1 and info["previous_owner"].endswith(f":{holder}")
    # The new holder found the unanswered call in the registry and ran it again (a
    # read-only tool); its one new follow-up answers the browser's question.
    answer = pending.result(timeout=30)
    assert answer == (
        'Tool results: track_parcel -> {"order_id": 7, "carrier": "DHL", '
        '"parcel": "out for delivery"}.'
    )
    report = failover_report(reg, a.call_id, int(info["epoch"]))
    assert report["rerun"] == [started["call_id"]] and report["errored"] == []
    assert report["new_owner"] == info["owner"] and report["handover"] == "expired"
    assert 0 < report["gap_seconds"] < BOUND + LEASE_TTL
    assert reg.tools(a.call_id)[started["call_id"]]["recovered"] == "rerun"

    # The browser's call never dropped, and works through the new sideband.
    assert a.connected() and not emulator.call(a.call_id)["closed"]
    assert a.ask('And order 8? lookup_order({"order_id": 8})').startswith(
        'Tool results: lookup_order -> {"order_id": 8, "status": "processing"'
    )
    record = emulator.call(a.call_id)
    # the recovered round's follow-up and the new round's: new requests, no replay
    assert assert_no_replayed_create(record, before_kill, holder) == 2
    assert len(outputs_for(record, started["call_id"])) == 1  # answered once
    # the dead holder had recorded every item it saw: nothing unseen was found
    assert reg.reports(a.call_id, "lost_items_found") == []
    assert record["counters"].get("rejections", 0) == 0

    # B: if its sideband lived in the killed worker, it was taken over too.
    if b_holder == holder:
        wait_reattached(app, b.call_id, b_epoch, holder, killed_at)
    assert b.ask('lookup_order({"order_id": 7})').startswith("Tool results: lookup_order")
    assert b.connected()

    # Hang-ups from a worker that neither created nor holds the call.
    assert a.created_by.endswith(f":{holder}")  # A's creator is the worker killed above
    for user in (a, b):
        hangup_from_another_worker(app, user)
        assert emulator.call(user.call_id)["closed"]
        assert user.call_id not in reg.live()
    # the holders let go of the ended calls; nobody re-attaches them
    for user in (a, b):
        wait_until(lambda u=user: reg.lease(u.call_id) is None, 10, "the lease released")
        assert "ended_at" in reg.call(user.call_id)
    assert app.hangup(a)[0] == 404
    assert emulator.stats()["rejections"] == 0
    app.wait_ready()  # gunicorn replaced the killed worker


@needs_redis
@pytest.mark.timeout(90)
def test_flask_a_tool_call_made_while_no_sideband_was_attached_is_reported(
    flask_cluster: App, services: tuple[RedisServer, EmulatorServer], browsers: Any
) -> None:
    app, (_, emulator), reg = flask_cluster, services, flask_cluster.registry
    (user,) = browsers(app, 1)
    user.start_call()
    assert user.ask('lookup_order({"order_id": 7})').startswith("Tool results: lookup_order")
    reg.wait_settled(user.call_id)
    holder = reg.holder_pid(user.call_id)
    epoch = int(reg.call(user.call_id)["epoch"])
    before_kill = len(emulator.call(user.call_id)["client_events"])
    killed_at = kill(holder)

    # The user asks while no worker holds the call: the model calls the tool, nobody
    # is attached to run it.
    user.send_question('lookup_order({"order_id": 8})')
    done = user.until(
        lambda e: (
            e.get("type") == "response.done"
            and any(i.get("type") == "function_call" for i in e["response"]["output"])
        ),
        10,
    )
    seen_at = time.time()
    (gap_call,) = [i for i in done["response"]["output"] if i["type"] == "function_call"]
    assert int(reg.call(user.call_id)["epoch"]) == epoch, "the gap closed too soon to test"

    info = wait_reattached(app, user.call_id, epoch, holder, killed_at)
    assert float(info["attached_at"]) > seen_at  # the call was made in the gap
    report = failover_report(reg, user.call_id, int(info["epoch"]))
    assert report["rerun"] == report["errored"] == report["followups"] == []
    assert report["gap_start"] < killed_at < seen_at < report["gap_end"]

    # The next item added shows the conversation grew in the gap: the new holder reports
    # the newest item it never saw - the unanswered function call, by id.
    assert user.ask('lookup_order({"order_id": 7})').startswith("Tool results: lookup_order")
    (found,) = wait_until(
        lambda: reg.reports(user.call_id, "lost_items_found"), 10, "the lost-items report"
    )
    assert found["found_previous"] == gap_call["id"] != found["expected_previous"]
    assert found["item_type"] == "function_call" and found["tool_call_id"] == gap_call["call_id"]
    assert found["name"] == "lookup_order" and json.loads(found["arguments"]) == {"order_id": 8}
    record = emulator.call(user.call_id)
    assert outputs_for(record, gap_call["call_id"]) == []  # reported, not silently answered
    assert assert_no_replayed_create(record, before_kill, holder) == 1
    status, _, _ = app.hangup(user)
    assert status == 200
    user.wait_ended()
    app.wait_ready()


@needs_redis
@pytest.mark.timeout(60)
def test_flask_a_worker_that_shuts_down_hands_its_calls_over_without_waiting_for_the_lease(
    flask_cluster: App, services: tuple[RedisServer, EmulatorServer], browsers: Any
) -> None:
    app, (_, emulator), reg = flask_cluster, services, flask_cluster.registry
    (user,) = browsers(app, 1)
    user.start_call()
    holder = reg.holder_pid(user.call_id)
    epoch = int(reg.call(user.call_id)["epoch"])
    stopped_at = time.time()
    os.kill(holder, signal.SIGTERM)  # a deploy: gunicorn stops the worker gracefully

    info = wait_reattached(app, user.call_id, epoch, holder, stopped_at)
    report = failover_report(reg, user.call_id, int(info["epoch"]))
    assert report["handover"] == "released"  # let go at exit, not left to expire
    assert report["gap_seconds"] < LEASE_TTL  # from its detach to the new sideband
    assert user.connected()
    assert user.ask('lookup_order({"order_id": 8})').startswith("Tool results: lookup_order")
    assert app.hangup(user)[0] == 200
    user.wait_ended()
    assert emulator.call(user.call_id)["closed"]
    app.wait_ready()


def frozen(pid: int) -> Any:
    """SIGSTOP ``pid`` until the block ends (another worker must serve meanwhile)."""

    @contextlib.contextmanager
    def freeze() -> Iterator[None]:
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: process_state(pid) == "T", 10, f"worker {pid} stopped")
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    return freeze()


def pid_of(worker: str) -> int:
    """The pid in a worker's name, ``host:pid`` (``X-Served-By``)."""
    return int(worker.rsplit(":", 1)[1])


@needs_redis
@pytest.mark.timeout(90)
def test_flask_a_call_belongs_to_its_browser_session_in_every_worker(
    flask_cluster: App, services: tuple[RedisServer, EmulatorServer], browsers: Any
) -> None:
    """The session cookie (one FLASK_SECRET_KEY) and the caller stored with the call in
    Redis: a worker that neither created nor holds a call refuses another session's
    hang-up (403), accepts its own session's, and counts the session's live calls
    across workers (429 at the third)."""
    app, (_, emulator), reg = flask_cluster, services, flask_cluster.registry
    owner, stranger = browsers(app, 2)
    owner.start_call()
    creator = pid_of(owner.created_by)
    assert reg.call(owner.call_id)["caller"]  # stored with the call, for every worker
    with frozen(creator):  # the creator (and holder) of the owner's call serves nothing
        stranger.start_call()
        status, headers, body = app.hangup(stranger, owner.call_id)
        assert status == 403, body
        assert body["error"]["message"] == "this call belongs to another browser session"
        assert pid_of(headers["X-Served-By"]) != creator
        assert not emulator.call(owner.call_id)["closed"]
        # the owner's second tab: a second call, created by another worker
        (tab,) = browsers(app, 1, tab_of=owner)
        tab.start_call()
        assert pid_of(tab.created_by) != creator
    (third,) = browsers(app, 1, tab_of=owner)
    status, headers, body = third.post_offer()  # whichever worker: the count is shared
    assert status == 429, body
    assert body["error"]["message"] == "this browser already has 2 live calls: end one first"
    calls_before = emulator.stats()["calls"]
    assert owner.ask('lookup_order({"order_id": 7})').startswith("Tool results")

    hangup_from_another_worker(app, tab)  # the owner's session ends its second call
    third.start_call()  # a place is free again
    assert emulator.stats()["calls"] == calls_before + 1
    for user in (owner, third, stranger):
        assert app.hangup(user)[0] == 200
        user.wait_ended()
    app.wait_ready()


# ----------------------------------------------------------------------------- Django
@needs_redis
@pytest.mark.timeout(120)
def test_django_under_gunicorn_fails_over_and_hangs_up_from_another_worker(
    services: tuple[RedisServer, EmulatorServer],
    tmp_path: Path,
    browsers: Any,
) -> None:
    django_dir = EXAMPLES / "django_app"
    db = tmp_path / "shop.sqlite3"
    env = child_env(DJANGO_SETTINGS_MODULE="shop.settings", RTSHOP_DB=str(db))
    setup = Process(
        "manage.py",
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from django.core.management import call_command; call_command('migrate', verbosity=0);"
            "from orders.models import Order; Order(customer='Ada', status='shipped').save()",
        ],
        tmp_path / "setup.log",
        env=env,
        cwd=django_dir,
    )
    assert setup.proc.wait(60) == 0, setup.tail()
    setup.stop()
    app = start_app(
        services,
        "shop.wsgi:application",
        django_dir,
        workers=2,
        db=1,
        log=tmp_path / "gunicorn.log",
        DJANGO_SETTINGS_MODULE="shop.settings",
        RTSHOP_DB=str(db),
    )
    reg = app.registry
    emulator = services[1]
    try:
        app.wait_ready()
        user, stranger = browsers(app, 2)
        user.start_call()
        expected = '"customer": "Ada", "status": "shipped"'
        assert expected in user.ask('order_status({"order_id": 1})')
        stranger.open_page()  # its own session and CSRF token: refused as not the owner
        for _ in range(app.server.workers):  # (whichever worker serves it)
            status, _, body = app.hangup(stranger, user.call_id)
            assert status == 403, body
            assert body["error"]["message"] == "this call belongs to another browser session"
        reg.wait_settled(user.call_id)
        holder = reg.holder_pid(user.call_id)
        epoch = int(reg.call(user.call_id)["epoch"])
        before_kill = len(emulator.call(user.call_id)["client_events"])
        killed_at = kill(holder)
        wait_reattached(app, user.call_id, epoch, holder, killed_at)
        assert user.connected()
        assert expected in user.ask('Again? order_status({"order_id": 1})')
        record = emulator.call(user.call_id)
        assert assert_no_replayed_create(record, before_kill, holder) == 1
        hangup_from_another_worker(app, user)
        assert user.call_id not in reg.live()
        assert emulator.call(user.call_id)["closed"]
    finally:
        app.server.stop()
        reg.r.close()


# ----------------------------------------------------------------- recovery, unit
@pytest.mark.timeout(30)
def test_recovery_runs_again_only_the_tools_listed_as_idempotent() -> None:
    """What a new holder answers for a recorded call that had no answer."""
    pytest.importorskip("redis")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    from calls_registry import CallRegistry

    from rtclient import tool

    ran: list[str] = []

    @tool
    def lookup(order_id: int) -> dict[str, Any]:
        """Reads an order."""
        ran.append("lookup")
        return {"order_id": order_id, "status": "shipped"}

    @tool
    def refund(order_id: int) -> str:
        """Refunds an order: not safe to run twice."""
        ran.append("refund")
        return "refunded"

    registry = CallRegistry(
        "redis://127.0.0.1:9/0",  # never connected to here: nothing is started
        api_key="sk-test",
        base_url="http://127.0.0.1:9/v1",
        session={"type": "realtime"},
        tools=[lookup, refund],
        idempotent={"lookup"},
    )
    try:

        def answer(name: str, arguments: str) -> tuple[Any, str]:
            record = {"call_id": "call_1", "name": name, "arguments": arguments}
            output, how = registry._answer(None, None, record)  # type: ignore[arg-type]
            return json.loads(output), how

        assert answer("lookup", '{"order_id": "7"}') == (
            {"order_id": 7, "status": "shipped"},  # validated and coerced, as by the client
            "rerun",
        )
        refused, how = answer("refund", '{"order_id": 7}')
        assert how == "error" and "not run again" in refused["error"]
        assert answer("lookup", '{"order_id": "seven"}')[1] == "error"  # bad arguments
        assert answer("unknown_tool", "{}")[1] == "error"
        assert ran == ["lookup"]  # refund never ran a second time
    finally:
        registry.close()


# ------------------------------------------------------------------------ the figures
@pytest.mark.timeout(10)
def test_the_readme_quotes_the_measured_failover() -> None:
    """The READMEs quote bench/failover.py's committed results (after a re-run: re-quote)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    kill = json.loads((ROOT / "bench" / "results" / "failover.json").read_text())
    term = json.loads((ROOT / "bench" / "results" / "failover_term.json").read_text())
    conf = kill["config"]
    assert (conf["workers"], conf["lease_ttl_s"], conf["signal"]) == (3, 2.0, "SIGKILL")
    f, c, a, q = kill["failover_s"], kill["claim_s"], kill["attach_s"], kill["answered_s"]
    quoted = [
        f"3 workers, lease TTL {conf['lease_ttl_s']:g} s",
        f"over {f['n']} SIGKILLs",
        f"**{f['p50']:.2f} s p50, {f['p90']:.2f} s p90, {f['max']:.2f} s worst**",
        f"scan: {c['p50']:.2f} s p50; the attach: {a['p50']:.2f} s p50, {a['max']:.2f} s worst",
        f"answered {q['p50']:.2f} s p50 after the kill",
        f"{kill['sideband_creates']} creates for {kill['expected_creates']} tool rounds, "
        f"{kill['replayed_creates']} replayed, {kill['rejections']} rejections",
        f"Over {term['config']['kills']} graceful stops",
    ]
    for phrase in quoted:
        assert phrase in text, phrase
    assert kill["sideband_creates"] == kill["expected_creates"] and kill["replayed_creates"] == 0
    assert f["max"] <= conf["lease_ttl_s"] * 1.25 + a["max"]  # TTL + scan + attach
    idle = [r["failover_s"] for r in term["rows"] if not r["inflight"]]
    busy = [r["failover_s"] for r in term["rows"] if r["inflight"]]
    assert (
        f"moved in {min(idle):.2f}-{max(idle):.2f} s when idle and "
        f"{min(busy):.2f}-{max(busy):.2f} s with a tool running" in text
    )
    # a graceful stop releases (never waits for expiry) and runs nothing twice
    assert term["handovers"] == ["released"] and not any(r["rerun"] for r in term["rows"])
    tf = term["failover_s"]
    assert (
        f"attached {f['p50']:.2f} s p50, {f['max']:.2f} s worst after the kill" in text
        and f"moves the call in {tf['min']:.2f}-{tf['max']:.2f} s" in text
    )

    # bench/README.md's table, row by row
    bench = (ROOT / "bench" / "README.md").read_text()
    expected = {
        "failover_s (SIGKILL)": f,
        "claim_s": c,
        "attach_s": a,
        "gap_s (reported)": kill["gap_s"],
        "answered_s (tool in flight)": q,
        f"failover_s (SIGTERM, `failover_term.json`, {term['wall_s']:.0f} s)": tf,
    }
    for what, figures in expected.items():
        cells = [f"{figures[k]:.2f}" for k in ("min", "p50", "p90", "max")]
        row = f"| {what} | {figures['n']} | " + " | ".join(cells) + " |"
        assert row in bench, row
    assert f"`python bench/failover.py --name failover`, {kill['wall_s']:.0f} s" in bench


@pytest.mark.timeout(10)
def test_the_readmes_quote_the_measured_phone_failover() -> None:
    """bench/failover_phone.py's committed result: what the READMEs say of a phone call
    whose worker is killed (after a re-run: re-quote)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    bench = (ROOT / "bench" / "README.md").read_text()
    phone = json.loads((ROOT / "bench" / "results" / "failover_phone.json").read_text())
    f, n = phone["failover_s"], phone["next_round_s"]
    assert (
        f"over {f['n']} SIGKILLs of the worker holding a phone call (lease TTL "
        f"{phone['config']['lease_ttl_s']:g} s): attached again {f['p50']:.2f} s p50, "
        f"{f['max']:.2f} s worst after the kill" in text
    )
    assert phone["greetings"] == 1 and phone["replayed_creates"] == 0
    assert phone["rejections"] == 0 and phone["caller_on_the_line_throughout"]
    assert phone["all_next_rounds_answered"] and phone["forgotten_after_hangup"]
    for what in ("failover_s", "claim_s", "attach_s", "next_round_s"):
        figures = phone[what]
        cells = [f"{figures[k]:.2f}" for k in ("min", "p50", "p90", "max")]
        row = f"| {what} | {figures['n']} | " + " | ".join(cells) + " |"
        assert row in bench, row
    assert (
        f"`python bench/failover_phone.py --name failover_phone`, {phone['wall_s']:.0f} s" in bench
    )
    assert f["max"] <= phone["config"]["lease_ttl_s"] * 1.25 + phone["attach_s"]["max"]
    assert n["max"] < 30
