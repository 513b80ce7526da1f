"""LiveClient against the emulator over real loopback connections: delegations end
exactly once, appended text lands because the clock moves, function calls continue
through the gate while a browser's backend response runs, and bad input is a typed
error or event and a counter - never a silent loss, nothing twice, no hang."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtclient import (
    ClosedError,
    CommandRefusedError,
    ForkedProcessError,
    LiveClient,
    ServerError,
    UnknownDelegationError,
    WrongThreadError,
)
from rtclient.core.gate import ACTIVE_RESPONSE_CODE
from rtclient.core.live_protocol import DelegationTask, Notices
from rtclient.emulator import Emulator, Pace
from rtclient.emulator.onloop import call_on
from rtclient.live_events import DelegationDropped, DelegationDuplicate, DelegationFailed
from rtclient.tools import build_spec

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(pace=Pace(delay=0.002)) as emulator:
        yield emulator


@pytest.fixture
def clients(emu: Emulator) -> Iterator[Callable[..., LiveClient]]:
    made: list[LiveClient] = []

    def make(**options: Any) -> LiveClient:
        options.setdefault("api_key", "sk-test")
        options.setdefault("base_url", emu.url)
        client = LiveClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def made(session: Any) -> list[str]:
    """The ids of the delegations the emulator's model made, in order."""
    return [d["id"] for d in session.delegations()["delegations"]]


def browser_and_worker(
    clients: Callable[..., LiveClient], tool: Callable[..., str]
) -> tuple[LiveClient, LiveClient]:
    """A connected primary (the browser's stand-in) under Responses delegation that
    declares ``tool`` for the backend but runs none, and an unconnected sideband on its
    session that runs it."""
    schema = build_spec(tool).session_tool()
    responses = {"model": "gpt-5.5", "tools": [schema]}
    browser = clients(session={"delegation": {"type": "responses", "responses": responses}})
    browser.connect()
    return browser, clients(session_id=browser.session_id, tools=[tool])


def landed(emu: Emulator, session_id: str, delegation_id: str) -> list[tuple[str, str, str]]:
    """What the server recorded for a delegation: (kind, content, status) per append."""
    return [
        (a["kind"], a["content"], a["status"])
        for a in emu.live_session(session_id).appends(delegation_id)
    ]


def test_delegations_on_a_pool_end_exactly_once(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    release_slow = threading.Event()
    progressed = threading.Event()

    def handle(task: DelegationTask) -> str:
        if "slow" in task.request:
            task.say("Still checking the archive.")
            progressed.set()
            assert release_slow.wait(WAIT)
            return "The archive has 3 matches."
        if "broken" in task.request:
            raise RuntimeError("the inventory service is down")
        return "Staging is healthy."

    client = clients(delegation=handle, notices=Notices(failure="That did not work."))
    client.connect()
    session = emu.live_session(client.session_id or "")
    ids: list[str] = []
    for words in ("please delegate the slow archive search", "delegate the broken inventory",
                  "delegate a staging check"):  # fmt: skip
        session.simulate_speech(words)
        assert emu.wait_for(lambda: len(made(session)) == len(ids) + 1, WAIT)
        ids.append(made(session)[-1])
    slow, broken, fine = ids
    assert progressed.wait(WAIT)
    release_slow.set()
    assert emu.wait_for(
        lambda: (
            all(a[2] == "landed" for d in ids for a in landed(emu, session.id, d))
            and len(landed(emu, session.id, slow)) == 2
        ),
        WAIT,
    )
    assert landed(emu, session.id, slow) == [
        ("commentary", "Still checking the archive.", "landed"),
        ("commentary", "The archive has 3 matches.", "landed"),
    ]
    assert landed(emu, session.id, broken) == [("commentary", "That did not work.", "landed")]
    assert landed(emu, session.id, fine) == [("commentary", "Staging is healthy.", "landed")]
    stats = client.stats()
    assert (stats["delegations"], stats["delegations_answered"], stats["delegation_errors"]) == (
        3,
        2,
        1,
    )
    assert stats["duplicate_results"] == stats["late_results"] == stats["lost"] == 0
    assert stats["silence_sent_ms"] > 0  # the clock moved with no microphone


def test_a_late_result_after_the_clients_timeout_is_dropped_and_reported(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    release = threading.Event()
    dropped: list[DelegationDropped] = []
    reported = threading.Event()

    def handle(task: DelegationTask) -> str:
        assert release.wait(WAIT)
        return "finally"

    client = clients(delegation=handle, delegation_timeout=0.2)
    client.on("rtclient.delegation.dropped", lambda e: (dropped.append(e), reported.set()))
    client.connect()
    session = emu.live_session(client.session_id or "")
    delegation_id = session.force_delegation("report")["id"]
    assert emu.wait_for(lambda: len(landed(emu, session.id, delegation_id)) == 1, WAIT)
    release.set()
    assert reported.wait(WAIT)
    assert dropped[0].reason == "timed_out" and dropped[0].result is True
    assert [a[1] for a in landed(emu, session.id, delegation_id)] == [Notices().timeout]
    assert client.stats()["late_results"] == 1 and client.stats()["delegation_timeouts"] == 1


def test_an_appended_result_waits_for_the_clock(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    silent = clients(stream_silence=False)
    silent.connect()
    session = emu.live_session(silent.session_id or "")
    placement = silent.append("thinking", "The caller is a returning customer.")
    assert emu.wait_for(lambda: [a["status"] for a in session.appends()] == ["pending"], WAIT)
    assert session.clock_ms == 0
    session.feed_audio(100)  # input audio: the timeline reaches it
    placed = placement.wait(WAIT)
    assert placed is not None and placed["type"] == "session.thinking.appended"
    streaming = clients()  # the default: silence keeps the clock moving
    streaming.connect()
    assert streaming.append("commentary", "Your parcel is on its way.").wait(WAIT) is not None


def test_function_calls_continue_once_through_the_gate_while_a_browser_response_runs(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    emu.set_live_rules(refuse_partial_tool_outputs=False)
    tool_started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: The city.
        """
        calls.append(city)
        tool_started.set()
        assert release.wait(WAIT)
        return f"sunny in {city}"

    browser, sideband = browser_and_worker(clients, get_weather)
    browser_running = threading.Event()

    def watch(event: dict[str, Any]) -> None:
        inner = event["event"]
        if inner["type"] == "response.created" and event.get("delegation_id") is None:
            browser_running.set()  # the sideband has seen the browser's response start

    sideband.on("response.event", watch, raw=True)
    sideband.connect()
    session = emu.live_session(browser.session_id or "")
    session.simulate_speech('get_weather({"city": "Oslo"})')
    assert tool_started.wait(WAIT)
    # the browser starts a backend response of its own while our tool runs, one that
    # stays active a while after its output (the emulator's delay before its done)
    session.set_faults(delay_response_done=0.5)
    browser_done = browser.request_response("greeting")
    assert browser_running.wait(WAIT)
    release.set()  # our output goes out while the browser's response may still run
    browser_done.result(WAIT)
    assert emu.wait_for(lambda: session.counters.get("responses", 0) >= 3, WAIT)
    assert calls == ["Oslo"]
    stats = sideband.stats()
    assert stats["outputs_sent"] == 1 and stats["creates"] == 1 and stats["creates_sent"] == 1
    assert stats["queued"] == 1  # our create waited for the browser's response to finish
    assert session.counters.get("rejections", 0) == 0  # no create crossed a running one
    assert not session.errors  # and no output was refused (none twice, none partial)
    assert stats["lost"] == 0 and browser.stats()["lost"] == 0


def test_a_sideband_may_not_start_the_session(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    primary = clients()
    primary.connect()
    sideband = clients(session_id=primary.session_id)
    sideband.connect()
    with pytest.raises(CommandRefusedError, match=r"never sends session\.start"):
        sideband.send_event({"type": "session.start", "session": {"model": "gpt-live-1"}})
    with pytest.raises(CommandRefusedError):
        sideband.send_event({"type": "session.input_audio.append", "audio": ""})
    assert sideband.stats()["refused_commands"] == 2
    assert not emu.live_session(primary.session_id or "").errors  # nothing reached the server


def test_a_config_with_an_unknown_field_is_the_servers_typed_error(
    clients: Callable[..., LiveClient],
) -> None:
    client = clients(session={"instructions": "Be brief.", "temperature": 0.4})
    with pytest.raises(ServerError) as refused:
        client.connect(timeout=WAIT)
    assert refused.value.code == "unknown_parameter" and refused.value.param is not None
    assert client.stats()["server_errors"] == 1 and client.closed


def test_unknown_and_duplicate_delegation_ids(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    ran: list[str] = []
    duplicates: list[DelegationDuplicate] = []
    seen = threading.Event()
    client = clients(delegation=lambda task: ran.append(task.id) or "done")
    client.on("rtclient.delegation.duplicate", lambda e: (duplicates.append(e), seen.set()))
    client.connect()
    session = emu.live_session(client.session_id or "")
    with pytest.raises(UnknownDelegationError):
        client.answer_delegation("dlg_never", "hello")
    created = session.force_delegation("x")
    assert emu.wait_for(lambda: len(landed(emu, session.id, created["id"])) == 1, WAIT)
    event = {
        "type": "session.delegation.created",
        "delegation": {"id": created["id"], "type": "delegation", "target": "client"},
        "offset_ms": created["offset_ms"],
    }
    call_on(session._loop, lambda: session.emit(event))  # the server repeats itself
    assert seen.wait(WAIT) and duplicates[0].delegation_id == created["id"]
    assert ran == [created["id"]] and len(landed(emu, session.id, created["id"])) == 1
    stats = client.stats()
    assert stats["unknown_delegation_ids"] == 1 and stats["duplicate_delegations"] == 1


def test_a_result_over_the_limit_is_split_or_refused(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    failed: list[DelegationFailed] = []
    seen = threading.Event()
    long = " ".join(f"Item {i} is in stock at the north warehouse." for i in range(120))
    client = clients(delegation=lambda task: long if "long" in task.request else "x " * 9000)
    client.on("rtclient.delegation.failed", lambda e: (failed.append(e), seen.set()))
    client.connect()
    session = emu.live_session(client.session_id or "")
    session.simulate_speech("delegate the long list")
    assert emu.wait_for(lambda: len(made(session)) == 1, WAIT)
    first = made(session)[0]
    parts = lambda: landed(emu, session.id, first)  # noqa: E731
    assert emu.wait_for(lambda: len(parts()) > 1 and all(a[2] == "landed" for a in parts()), WAIT)
    assert " ".join(a[1] for a in landed(emu, session.id, first)) == long
    assert not session.errors  # every part within the server's limit
    session.simulate_speech("delegate the huge one")
    assert seen.wait(WAIT) and failed[0].reason == "too_long"
    assert client.stats()["results_too_long"] == 1 and client.stats()["appends_split"] == 1


def test_the_server_closing_during_a_delegation_drops_its_result(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    started = threading.Event()
    release = threading.Event()

    def handle(task: DelegationTask) -> str:
        started.set()
        assert release.wait(WAIT)
        return "too late"

    client = clients(delegation=handle)
    closed = threading.Event()
    client.on("session.closed", lambda e: closed.set())
    client.connect()
    session = emu.live_session(client.session_id or "")
    delegation_id = session.force_delegation("x")["id"]
    assert started.wait(WAIT)
    session.close("expired")
    assert closed.wait(WAIT)
    assert emu.wait_for(lambda: client.closed, WAIT)
    with pytest.raises(ClosedError):
        client.append("thinking", "anyone there?")
    release.set()
    assert emu.wait_for(lambda: client.stats()["results_after_close"] == 1, WAIT)
    assert landed(emu, session.id, delegation_id) == []  # nothing was sent after the close


def test_guards_wrong_thread_fork_and_close_at_any_moment(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    client = clients()
    errors: list[BaseException] = []
    done = threading.Event()

    def blocking_in_callback(event: Any) -> None:
        try:
            client.mute(timeout=1)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    client.on("session.output_audio.delta", blocking_in_callback, raw=True)
    client.connect()
    assert done.wait(WAIT) and isinstance(errors[0], WrongThreadError)
    pid = os.fork()
    if pid == 0:  # the child: every use is refused, nothing of the parent's is touched
        try:
            client.stats()
        except ForkedProcessError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    racing = clients()
    connecting = threading.Thread(target=lambda: _connect_quietly(racing), name="racer")
    connecting.start()
    racing.close()
    connecting.join(WAIT)
    assert not connecting.is_alive() and racing.closed


def _connect_quietly(client: LiveClient) -> None:
    try:
        client.connect(timeout=WAIT)
    except ClosedError:
        pass


def test_a_true_race_with_a_browsers_create_loses_nothing_and_sends_nothing_twice(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    """When the browser's create is on the wire as ours leaves, no client can know:
    the server may refuse ours (busy). The gate re-arms it and sends it once the
    browser's response is done - one continuation, each output once, nothing lost."""
    emu.set_live_rules(refuse_partial_tool_outputs=False)

    def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: The city.
        """
        return f"sunny in {city}"

    browser, sideband = browser_and_worker(clients, get_weather)
    sideband.connect()
    session = emu.live_session(browser.session_id or "")
    for round_ in range(3):
        session.simulate_speech(f'get_weather({{"city": "City{round_}"}})')
        browser.request_response(f"greeting {round_}").result(WAIT)
        rounds = round_ + 1
        assert emu.wait_for(lambda n=rounds: sideband.stats()["followups_requested"] == n, WAIT)
    assert emu.wait_for(lambda: sideband.stats()["outstanding"] == 0, WAIT)
    stats = sideband.stats()
    assert stats["tool_calls"] == stats["outputs_sent"] == 3
    assert stats["rearmed"] == stats["rejections"]  # every refusal was re-armed
    assert stats["creates_sent"] - stats["rejections"] == 3  # one continuation a round
    assert stats["lost"] == 0 and stats["failed"] == 0
    theirs = browser.stats()
    assert theirs["rearmed"] == theirs["rejections"] and theirs["lost"] == 0
    refused = [e for e in session.errors if e["error"]["code"] != ACTIVE_RESPONSE_CODE]
    assert refused == []  # no output refused, none sent twice


def test_events_arrive_typed_from_openai_types_live(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    from openai.types.live import DelegationCreatedEvent, SessionStartedEvent

    client = clients(delegation=lambda task: "done")
    stream = client.events(timeout=WAIT)
    created: list[DelegationCreatedEvent] = []
    client.on("session.delegation.created", created.append)
    client.connect()
    assert isinstance(next(stream), SessionStartedEvent)
    emu.live_session(client.session_id or "").force_delegation("x")
    assert emu.wait_for(lambda: len(created) == 1, WAIT)
    assert created[0].delegation.target == "client" and created[0].offset_ms >= 0
    with pytest.raises(ValueError, match="did you mean"):
        client.on("session.delegation.creatd", print)  # type: ignore[call-overload]
    stream.close()


def test_the_generated_typing_is_up_to_date() -> None:
    from rtclient._gen_typed_live import TARGET, render

    assert TARGET.read_text() == render(), "stale: run python -m rtclient._gen_typed_live"


MYPY_SNIPPET = """
from typing import Any
from openai.types.live import DelegationCreatedEvent, SessionClosedEvent
from rtclient import LiveClient
from rtclient.live_events import DelegationDropped

client = LiveClient(api_key="sk-test")

def on_delegation(event: DelegationCreatedEvent) -> None:
    reveal_type(event.delegation.id)

def on_dropped(event: DelegationDropped) -> None:
    reveal_type(event.reason)

def on_raw(event: dict[str, Any]) -> None: ...

client.on("session.delegation.created", on_delegation)
client.on("rtclient.delegation.dropped", on_dropped)
client.on("session.closed", on_raw, raw=True)
client.on("session.closed", on_delegation)
client.on("rtclient.delegation.dropped", on_delegation)
"""


@pytest.mark.timeout(300)
def test_mypy_checks_each_callback_against_its_event_model(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(MYPY_SNIPPET)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
         "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True, text=True, timeout=280, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if "note:     def" not in line]
    errors = sorted({line.split(":")[1] for line in lines if ": error:" in line})
    assert errors == ["20", "21"], lines  # the two callbacks of the wrong event type
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed type" in line]
    assert revealed == ['"str"', '"str"'], lines


def test_webrtc_and_a_sideband_that_answers_the_delegations(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    """The usual deployment: the media connection (here WebRTC from Python, silence on
    its track) holds the audio; a server's sideband answers the delegations."""
    media = clients(transport="webrtc", loopback_only=True)
    media.connect()
    session_id = media.session_id
    assert session_id is not None and session_id.startswith("live_")
    worker = clients(session_id=session_id, delegation=lambda task: f"Done: {task.request}")
    worker.connect()
    session = emu.live_session(session_id)
    session.simulate_speech("delegate the refund")
    assert emu.wait_for(lambda: len(made(session)) == 1, WAIT)
    delegation_id = made(session)[0]
    assert emu.wait_for(
        lambda: [a[2] for a in landed(emu, session_id, delegation_id)] == ["landed"], WAIT
    )
    assert landed(emu, session_id, delegation_id)[0][1] == "Done: delegate the refund"
    assert media.stats()["delegations"] == 1  # the media connection saw it too ...
    assert media.stats()["appends_sent"] == 0  # ... and, with no handler, sent nothing
    worker.close()  # a sideband only detaches
    assert not session.closed
    media.close()  # the primary ends the session: session.close, then session.closed
    assert emu.wait_for(lambda: session.closed, WAIT) and session.close_reason == "close_requested"


def test_close_ends_the_session_gracefully_and_twice_is_harmless(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    client = clients()
    closed: list[Any] = []
    client.on("session.closed", closed.append, raw=True)
    client.connect()
    session = emu.live_session(client.session_id or "")
    placement = client.append("thinking", "Remember the order number 1234.")
    client.close()
    client.close()
    assert session.closed and session.close_reason == "close_requested"
    assert [e["reason"] for e in closed] == ["close_requested"]  # delivered before the end
    assert [a["status"] for a in session.appends()] in (["landed"], ["incomplete"])
    with pytest.raises(ClosedError):
        client.append("thinking", "more")
    try:
        placement.wait(WAIT)  # placed, or refused typed: never a hang
    except (ServerError, ClosedError):
        pass


def test_a_sideband_hangs_up_the_session_for_everyone(
    emu: Emulator, clients: Callable[..., LiveClient]
) -> None:
    primary = clients()
    primary.connect()
    sideband = clients(session_id=primary.session_id)
    sideband.connect()
    sideband.hangup()
    session = emu.live_session(primary.session_id or "")
    assert session.closed and session.close_reason == "close_requested"
    assert emu.wait_for(lambda: primary.closed, WAIT)  # the primary heard session.closed
    with pytest.raises(ClosedError):
        sideband.hangup()
