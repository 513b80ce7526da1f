"""Bad input gets a clear error and nothing is lost: faults injected by the rt_emulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rtclient import (
    ClosedError,
    ConnectionLostError,
    MessageTooLargeError,
    RealtimeClient,
    ServerError,
    SessionExpiredError,
    tool,
)
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]
VAD = {"type": "server_vad", "create_response": True, "interrupt_response": False}


@pytest.fixture(params=["webrtc", "websocket"])
def rt_transport(request: pytest.FixtureRequest) -> str:
    """Every test that connects through rt_connect (or takes this) runs on both."""
    return str(request.param)


def vad_client(emu: Emulator, transport: str = "webrtc", **kwargs: Any) -> RealtimeClient:
    return RealtimeClient(
        api_key="sk-test", base_url=emu.url, loopback_only=True, transport=transport, **kwargs
    )


def test_rejection_is_rearmed_and_served_after_the_vad_response(rt_transport: str) -> None:
    """A VAD response starts server-side but its response.created is late; our create
    crosses it on the wire and is rejected. The trigger is re-armed, then served."""
    with Emulator(turn_detection=VAD, pace=Pace(delay=0.005)) as emu:
        client = vad_client(emu, rt_transport).connect()
        try:
            session = emu.sessions[-1]
            session.set_faults(delay_response_created=1.0)
            speech = session.simulate_speech("hello")
            assert speech["response_id"] is not None
            ticket = client.request_response()  # the gate has not seen the VAD response
            done = ticket.result(20)
            assert done["response"]["metadata"]["rtclient_ticket"]
            assert emu.stats()["rejections"] == 1
            stats = client.stats()
            assert stats["rejections"] == 1 and stats["rearmed"] == 1 and stats["lost"] == 0
        finally:
            client.close()


def test_create_right_after_cancel_is_not_rejected(rt_transport: str) -> None:
    """RCA trigger 2: response.create right after response.cancel, before its done."""
    with Emulator(turn_detection=None, pace=Pace(delay=0.05, deltas=40)) as emu:
        client = vad_client(emu, rt_transport).connect()
        try:
            session = emu.sessions[-1]
            session.set_faults(delay_cancel=0.2)  # the cancelled response lingers
            created = threading.Event()
            client.on("response.created", lambda e: created.set())  # after the gate saw it
            client.send_text("a long answer", respond=False)
            first = client.request_response()
            assert created.wait(10)
            client.interrupt(wait=False)
            second = client.request_response()  # before the cancelled response is done
            assert first.result(10)["response"]["status"] == "cancelled"
            assert second.result(10)["response"]["status"] == "completed"
            assert emu.stats()["rejections"] == 0
            cancels = [e for e in session.client_events if e["type"] == "response.cancel"]
            assert len(cancels) == 1
        finally:
            client.close()


def test_interrupt_waits_for_the_cancelled_response(rt_transport: str) -> None:
    with Emulator(turn_detection=None, pace=Pace(delay=0.05, deltas=40)) as emu:
        client = vad_client(emu, rt_transport).connect()
        try:
            created = threading.Event()
            client.on("response.created", lambda e: created.set())
            ticket = client.send_text("talk")
            assert ticket is not None and created.wait(10)
            done = client.interrupt(timeout=10)
            assert done is not None and done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"]["reason"] == "client_cancelled"
            assert ticket.result(10) == done
        finally:
            client.close()


def test_interrupt_with_nothing_active_only_clears_audio(
    rt_emulator: Emulator, rt_connect: Connect, rt_transport: str
) -> None:
    client = rt_connect()
    assert client.interrupt() is None
    session = rt_emulator.sessions[-1]
    client.send_event({"type": "input_audio_buffer.clear"})  # a marker after the interrupt
    assert rt_emulator.wait_for(
        lambda: any(e["type"] == "input_audio_buffer.clear" for e in session.client_events), 10
    )
    kinds = [e["type"] for e in session.client_events]
    assert "response.cancel" not in kinds
    # WebRTC clears the server's output buffer; on a WebSocket nothing was playing here,
    # so there is nothing to truncate (and no output buffer to clear).
    barge_in = [
        k for k in kinds if k in ("output_audio_buffer.clear", "conversation.item.truncate")
    ]
    assert barge_in == (["output_audio_buffer.clear"] if rt_transport == "webrtc" else [])


def test_data_channel_closed_mid_flight_fails_waiters(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    sent = session.counters.get("server_events", 0)
    session.set_faults(close_after_events=sent + 3)
    ticket = client.send_text("hello")
    assert ticket is not None
    with pytest.raises(ConnectionLostError):
        ticket.result(20)
    assert client.closed
    with pytest.raises(ClosedError):
        client.request_response()
    assert client.stats()["lost"] == 0


def test_send_failure_rolls_back_and_frees_the_gate(
    rt_emulator: Emulator, rt_connect: Connect, rt_transport: str
) -> None:
    client = rt_connect()
    limit = 262_144 if rt_transport == "webrtc" else 15 * 1024 * 1024  # SCTP / the API's
    too_big = client.request_response(instructions="x" * limit)
    with pytest.raises(MessageTooLargeError):
        too_big.result(10)
    stats = client.stats()
    assert stats["rollbacks"] == 1 and stats["failed"] == 1
    assert client.gate.machine.free  # rolled back: not half-done
    assert client.request_response().result(10)["response"]["status"] == "completed"
    assert rt_emulator.stats()["creates"] == 1  # the big one never reached the wire


def test_server_error_for_our_create_fails_that_ticket(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    session.set_faults(fail_event_type="response.create")
    ticket = client.request_response()
    with pytest.raises(ServerError) as info:
        ticket.result(10)
    assert info.value.code == "emulator_injected_failure"
    session.set_faults(fail_event_type=None)
    assert client.request_response().result(10)["response"]["status"] == "completed"
    assert client.stats()["lost"] == 0


@pytest.mark.parametrize(
    "faults",
    [
        {"drop_response_created": True, "delay_response_done": 1.5},
        {"delay_response_created": 1.5},
    ],
    ids=["created-dropped", "created-late"],
)
def test_missing_or_late_response_created_one_request_one_response(
    rt_emulator: Emulator, faults: dict[str, Any]
) -> None:
    """The confirm watchdog reports a create unconfirmed past confirm_timeout and never
    re-sends it: the response the server started for it (attributed by the metadata of
    its late created, or of its done) answers it - once, with no rejection."""
    rt_emulator.set_faults(**faults)
    client = RealtimeClient(
        api_key="sk-test", base_url=rt_emulator.url, loopback_only=True, confirm_timeout=0.05
    ).connect()
    try:
        done = client.request_response().result(20)
        assert done["response"]["status"] == "completed"
        stats = client.stats()
        assert stats["confirm_timeouts"] == 1 and stats["rejections"] == 0
        assert stats["creates_sent"] == 1 and stats["resolved"] == 1 and stats["lost"] == 0
        assert client.gate.machine.free
        emulator = rt_emulator.stats()
        assert emulator["creates"] == 1 and emulator["responses"] == 1
        assert emulator["rejections"] == 0
    finally:
        client.close()


def test_ask_reports_its_tool_calls_when_response_created_never_comes(
    rt_emulator: Emulator,
) -> None:
    rt_emulator.set_faults(drop_response_created=True)

    @tool
    def lookup(i: int = 0) -> int:
        """Look something up."""
        return i * 10

    client = RealtimeClient(
        api_key="sk-test", base_url=rt_emulator.url, loopback_only=True, tools=[lookup]
    ).connect()
    try:
        answer = client.ask("use lookup*3", timeout=20)
        assert sorted(c.output or "" for c in answer.tool_calls) == ["0", "10", "20"]
        assert len(answer.response_ids) == 2 and "lookup -> 20" in answer.text
        assert client.stats()["rejections"] == 0 and client.stats()["lost"] == 0
        emulator = rt_emulator.stats()
        assert emulator["creates"] == 2 and emulator["responses"] == 2
    finally:
        client.close()


def test_malformed_unknown_and_oversized_server_events_are_handled(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    session = rt_emulator.sessions[-1]
    session.set_faults(malformed_json=True, unknown_event=True, oversized_event_bytes=200_000)
    big = threading.Event()
    client.on(
        "rate_limits.updated",
        lambda e: big.set() if len(e["emulator_padding"]) else None,
        raw=True,  # the padding is no field of the model: read the dict
    )
    session.inject("{not json")
    session.inject(json.dumps([1, 2]))
    assert client.send_text("still fine").result(10)["response"]["status"] == "completed"
    assert big.wait(10)  # a 200 KB event arrives whole, in order, and is dispatched
    stats = client.stats()
    assert stats["malformed_events"] >= 3 and stats["lost"] == 0


def test_session_expired_fails_every_waiter(rt_transport: str) -> None:
    with Emulator(
        turn_detection=None, pace=Pace(delay=0.2, deltas=50), max_session_seconds=1.0
    ) as emu:
        client = vad_client(emu, rt_transport).connect()
        try:
            ticket = client.send_text("a long story")
            assert ticket is not None
            with pytest.raises(SessionExpiredError) as info:
                ticket.result(20)
            assert info.value.code == "session_expired"
            assert client.closed
        finally:
            client.close()


def test_tool_exception_hang_and_timeout_become_outputs(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    release = threading.Event()

    @tool
    def boom() -> None:
        """Always fails."""
        raise RuntimeError("disk on fire")

    @tool(timeout=0.3)
    def hang() -> str:
        """Never answers in time."""
        release.wait(30)
        return "too late"

    client = rt_connect(tools=[boom, hang])
    try:
        answer = client.ask("use boom and hang", timeout=30)
        assert "disk on fire" in answer.text and "timed out" in answer.text
        stats = client.stats()
        assert stats["tool_errors"] == 2 and stats["tool_timeouts"] == 1
    finally:
        release.set()


def test_bad_tool_arguments_and_unknown_tools(rt_emulator: Emulator, rt_connect: Connect) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    client = rt_connect(tools=[add])
    answer = client.ask('use add({"a": 1})', timeout=30)
    assert "bad arguments" in answer.text
    answer = client.ask('use add({"a": 1, "b": 2})', timeout=30)
    assert "add -> 3" in answer.text


def test_close_with_tools_in_flight_returns_and_fails_the_asker(rt_emulator: Emulator) -> None:
    started, release = threading.Event(), threading.Event()

    @tool
    def stuck() -> str:
        """Blocks until the test releases it."""
        started.set()
        release.wait(30)
        return "done"

    client = RealtimeClient(
        api_key="sk-test", base_url=rt_emulator.url, loopback_only=True, tools=[stuck]
    ).connect()
    outcome: dict[str, BaseException] = {}

    def ask() -> None:
        try:
            client.ask("use stuck", timeout=30)
        except BaseException as exc:
            outcome["error"] = exc

    asker = threading.Thread(target=ask)
    asker.start()
    assert started.wait(10)
    client.close(timeout=5)
    asker.join(10)
    assert not asker.is_alive() and isinstance(outcome.get("error"), ClosedError)
    release.set()  # the stuck tool thread ends; the leak check then sees no thread
