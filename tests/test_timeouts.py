"""Every timeout the API raises is a WaitTimeoutError that says what was waited for.

A ``WaitTimeoutError`` is both a ``RealtimeError`` (catch everything from the SDK) and
the builtin ``TimeoutError`` (catch every timeout). This walks each blocking call that
has a timeout - ``connect`` (signaling, the WebSocket handshake, ``session.created``),
``ticket.result``, ``ask``, ``interrupt``, ``create_call``, ``hangup_call`` and
``LoopThread.call`` - and makes it time out for real: against a port that accepts
connections and never answers, a WebSocket that opens and then says nothing, or the
emulator answering slowly. Short timeouts are the bound of each wait, not a clock the
test reads.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from aiohttp import web

from rtclient import (
    ConnectTimeoutError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    WaitTimeoutError,
    create_call,
    hangup_call,
)
from rtclient.emulator import Emulator, Faults, Pace

pytestmark = pytest.mark.timeout(90)

SHORT = 0.3


def assert_says(error: BaseException, *what: str) -> None:
    assert isinstance(error, WaitTimeoutError), repr(error)
    assert isinstance(error, TimeoutError) and isinstance(error, RealtimeError)
    for words in what:
        assert words in str(error), f"{words!r} not in {str(error)!r}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A base URL whose port accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.fixture
def mute_websocket(lt: LoopThread) -> Iterator[str]:
    """A base URL whose ``/v1/realtime`` accepts the WebSocket and then says nothing
    (no ``session.created``) until the client goes away."""

    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:  # until the client closes
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port: int = runner.addresses[0][1]
        return port

    port = lt.call(start(), timeout=10)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        lt.call(runner.cleanup(), timeout=10)


@pytest.fixture
def slow_client() -> Iterator[RealtimeClient]:
    """A client on an emulator whose long answers take ~10 s and whose cancels 60 s."""
    pace = Pace(delay=0.05, deltas=200)
    with Emulator(turn_detection=None, pace=pace, faults=Faults(delay_cancel=60.0)) as emu:
        client = RealtimeClient(api_key="sk-test", base_url=emu.url, loopback_only=True)
        try:
            yield client.connect()
        finally:
            client.close()


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("it did not time out")


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_connect_to_a_server_that_never_answers(silent_url: str, transport: str) -> None:
    client = RealtimeClient(
        api_key="sk-test",
        base_url=silent_url,
        transport=transport,  # type: ignore[arg-type]
        loopback_only=transport == "webrtc",
        connect_timeout=SHORT,
    )
    error = raised(client.connect)
    assert isinstance(error, ConnectTimeoutError) and client.closed
    # the transport's own bound ("the data channel did not open within 0.3s"), or
    # connect()'s, when the transport's cleanup takes longer ("the connection to open")
    assert_says(error, "open")


def test_connect_to_a_session_that_never_starts(mute_websocket: str) -> None:
    client = RealtimeClient(api_key="sk-test", base_url=mute_websocket, transport="websocket")
    error = raised(lambda: client.connect(timeout=SHORT))
    assert isinstance(error, ConnectTimeoutError) and client.closed
    assert_says(error, "session was not ready within 0.3s")


def test_ticket_result_ask_and_interrupt(slow_client: RealtimeClient) -> None:
    slow_client.send_text(" ".join(["blah"] * 400), respond=False)  # "You said: ..." 10 s
    ticket = slow_client.request_response(reason="the slow answer")
    assert_says(raised(lambda: ticket.result(SHORT)), "response.done", "the slow answer")
    assert_says(raised(lambda: ticket.exception(SHORT)), "response.done", "the slow answer")
    # ask() waits behind the slow answer (the gate queues it): its own timeout ends it
    assert_says(raised(lambda: slow_client.ask("and now?", timeout=SHORT)), "response.done")

    created = threading.Event()
    slow_client.on("response.created", lambda event: created.set())
    if slow_client.gate.machine.active is None:
        assert created.wait(30), "the slow answer never started"
    # its cancel takes 60 s on this emulator: interrupt() waits for the done in vain
    error = raised(lambda: slow_client.interrupt(timeout=SHORT))
    assert_says(error, "the cancelled response", "to finish")


def test_create_call_and_hangup_call(silent_url: str, lt: LoopThread) -> None:
    options: dict[str, Any] = {"api_key": "sk-test", "base_url": silent_url, "timeout": SHORT}
    for loop_thread in (None, lt):  # a private loop, or LoopThread.call's bound around it
        error = raised(partial(create_call, "v=0\r\n", loop_thread=loop_thread, **options))
        assert_says(error, "create_call was not answered within 0.3s")
    # the hang-up's own bound and hangup_call's are the same here: either may say it
    error = raised(lambda: hangup_call("rtc_1", **options))
    assert_says(error, "not answered within 0.3s")
    assert "hangup" in str(error)


def test_loop_thread_call(lt: LoopThread) -> None:
    cancelled = threading.Event()

    async def never_done() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    assert_says(raised(lambda: lt.call(never_done(), timeout=SHORT)), "never_done()", "0.3s")
    assert cancelled.wait(10)
