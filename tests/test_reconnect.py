"""A call that survives its connection: ``RealtimeClient(reconnect=...)``, for real.

Real connections over loopback against the emulator (the referee: its records say
what each session received), dropped the way they die in the wild: the server ends
the session (``Session.close()``: the data channel or the socket closes under the
client), or the network resets the TCP connection (``tests/proxy.py``'s ``kill()``,
with ``refuse()`` keeping the server out of reach for as long as a test needs).
Every wait is bounded and waits on an event, never on a sleep.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from proxy import StallingProxy
from test_sideband import Browser, final_answer, is_output, is_ticket, user_text

from rtclient import (
    ClosedError,
    ConnectionLostError,
    LoopThread,
    RealtimeClient,
    Reconnect,
    Reconnected,
    ReconnectFailedError,
    Reconnecting,
    ReconnectingError,
    SessionReplacedError,
    tool,
)
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(120)

KEY = "sk-test"
FAST = Reconnect(backoff=0.02, backoff_max=0.2, jitter=0.0)
AUDIO_SESSION = {
    "output_modalities": ["audio"],
    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
}
WAIT = 30.0


class Seen:
    """Raw events of some types, as a client's ``on()`` callbacks get them."""

    def __init__(self, client: RealtimeClient, *types: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        for kind in types:
            client.on(kind, self._add, raw=True)

    def _add(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((e for e in self.events if match(e)), None), timeout
            )
        assert found is not None, (
            f"not seen within {timeout}s; seen {[e['type'] for e in self.events]}"
        )
        return found

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e["type"] == kind]


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == kind


def done_of(response_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "response.done" and e["response"]["id"] == response_id


runs: list[str] = []


@tool
def get_weather(city: str = "Oslo") -> str:
    """The weather in a city."""
    runs.append(city)
    return f"sunny in {city}"


@pytest.fixture(autouse=True)
def fresh_runs() -> Iterator[None]:
    runs.clear()
    yield


def creates(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "response.create"]


def item_creates(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "conversation.item.create"]


def own_session(emu: Emulator, client: RealtimeClient) -> Any:
    """The emulator's session behind an own WebRTC or WebSocket client."""
    if client.call_id is not None:
        return emu.session(client.call_id)
    [session] = [s for s in emu.sessions if not s.closed]
    return session


# -- own sessions -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_a_lost_own_session_is_restored_into_a_new_one_and_no_create_is_replayed(
    transport: str,
) -> None:
    with Emulator() as emu:  # server VAD on: the user speaks too
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport=transport,  # type: ignore[arg-type]
            loopback_only=True,
            session=AUDIO_SESSION,
            tools=[get_weather],
            reconnect=FAST,
        )
        seen = Seen(client, "response.done", "rtclient.reconnecting", "rtclient.reconnected")
        with client:
            assert client.ask("hello").text == "You said: hello"
            assert client.ask("get_weather").text == "Tool results: get_weather -> sunny in Oslo."
            old = own_session(emu, client)
            spoken = old.simulate_speech("good morning", duration_ms=400)
            seen.wait(done_of(spoken["response_id"]))
            before = [i["id"] for i in old.items()]
            old_events = old.client_events
            assert len(before) == 8 and len(creates(old_events)) == 3

            old.close()  # the server ends the session: the channel closes under the client
            lost = Reconnecting.model_validate(seen.wait(of_type("rtclient.reconnecting")))
            event = Reconnected.model_validate(seen.wait(of_type("rtclient.reconnected")))

            new = own_session(emu, client)
            assert new is not old and old.closed
            assert lost.mode == event.mode == "session" and lost.failed_requests == 0
            assert event.restored_items == 8 and event.not_restored == []
            assert event.restored == {
                "user_messages": 2,
                "assistant_audio_as_text": 3,
                "function_calls": 1,
                "function_call_outputs": 1,
                "user_audio_as_text": 1,
            }
            if transport == "webrtc":
                assert event.call_id == new.call_id != event.previous_call_id == old.call_id
            restored = new.client_events
            assert creates(restored) == []  # the conversation, not the requests
            assert [e["item"]["id"] for e in item_creates(restored)] == before
            items = new.items()
            texts = [c.get("text") for i in items for c in i.get("content") or []]
            assert "good morning" in texts and "You said: good morning" in texts
            assert items[3]["type"] == "function_call" and items[4]["output"] == "sunny in Oslo"

            # the new session answers from the restored conversation, through a new gate
            assert client.ask("and now?").text == "You said: and now?"
            after = creates(new.client_events)
            assert len(after) == 1
            assert after[0]["event_id"] not in {e["event_id"] for e in creates(old_events)}
            stats = client.stats()
            assert stats["lost"] == 0 and stats["rejections"] == 0 and stats["reconnects"] == 1
            assert runs == ["Oslo"]  # the tool ran once: its round was restored, not redone
        assert emu.stats()["rejections"] == 0


def test_what_waited_on_the_lost_session_fails_typed_and_calls_meanwhile_are_refused() -> None:
    with Emulator(turn_detection=None, pace=Pace(delay=0.2, deltas=50)) as emu:
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport="websocket",
            reconnect=Reconnect(backoff=30.0, backoff_max=30.0),  # the gap lasts
        )
        seen = Seen(client, "rtclient.reconnecting", "response.created")
        with client:
            stream = client.events()
            ticket = client.send_text("tell me a long story")
            assert ticket is not None
            seen.wait(of_type("response.created"))
            own_session(emu, client).close()
            with pytest.raises(SessionReplacedError):
                ticket.result(WAIT)
            lost = seen.wait(of_type("rtclient.reconnecting"))
            assert lost["failed_requests"] == 1 and lost["mode"] == "session"
            typed = next(e for e in stream if getattr(e, "type", None) == "rtclient.reconnecting")
            assert isinstance(typed, Reconnecting)  # events() gets the typed event
            for call in (
                lambda: client.send_text("hello"),
                lambda: client.request_response(),
                lambda: client.get_item("item_x"),
            ):
                with pytest.raises(ReconnectingError):
                    call()
            assert not client.closed
            assert len(emu.sessions) == 1  # still in its backoff: nothing was opened
        # close() during the backoff: prompt, and nothing is left running (conftest)
        assert client.closed
        with pytest.raises(ClosedError):
            client.send_text("after")


def test_close_during_a_reconnect_attempt_leaves_nothing_running() -> None:
    with Emulator(turn_detection=None) as emu, StallingProxy(emu.port) as proxy:
        client = RealtimeClient(
            api_key=KEY, base_url=proxy.url, transport="websocket", reconnect=FAST
        )
        seen = Seen(client, "rtclient.reconnecting")
        client.connect()
        try:
            proxy.freeze(swallow=1 << 30)  # the next handshake never reaches the server
            connections = proxy.accepted
            own_session(emu, client).close()
            seen.wait(of_type("rtclient.reconnecting"))
            assert proxy.wait_accepted(connections + 1, WAIT)  # the attempt is under way
        finally:
            client.close(timeout=10)
        assert client.closed and len(emu.sessions) == 1


def test_rerequest_asks_again_as_a_new_request_once_the_conversation_is_back() -> None:
    with Emulator(turn_detection=None, pace=Pace(delay=0.2, deltas=50)) as emu:
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport="websocket",
            session={"output_modalities": ["text"]},
            reconnect=Reconnect(backoff=0.02, rerequest=True),
        )
        seen = Seen(client, "response.created", "response.done", "rtclient.reconnected")
        with client:
            ticket = client.send_text("tell me a long story")
            assert ticket is not None
            seen.wait(of_type("response.created"))
            old = own_session(emu, client)
            old_creates = creates(old.client_events)
            emu.set_faults()  # the new session streams as slowly: its done is awaited below
            old.close()
            with pytest.raises(SessionReplacedError):
                ticket.result(WAIT)
            event = seen.wait(of_type("rtclient.reconnected"))
            assert event["rerequested"] == ["user_text"] and event["restored_items"] == 1
            new = own_session(emu, client)
            assert emu.wait_for(lambda: creates(new.client_events), WAIT)
            [again] = creates(new.client_events)
            assert again["event_id"] != old_creates[0]["event_id"]
            last = item_creates(new.client_events)[-1]
            assert new.client_events.index(again) > new.client_events.index(last)
            done = seen.wait(
                lambda e: (
                    e["type"] == "response.done"
                    and e["response"]["metadata"]["rtclient_ticket"] == again["event_id"]
                ),
                timeout=60,
            )
            assert done["response"]["status"] == "completed"
            assert client.stats()["lost"] == 0


def test_reconnect_off_a_lost_session_closes_the_client_as_before() -> None:
    with Emulator(turn_detection=None, pace=Pace(delay=0.2, deltas=50)) as emu:
        with RealtimeClient(api_key=KEY, base_url=emu.url, transport="websocket") as client:
            seen = Seen(client, "response.created")
            ticket = client.send_text("tell me a long story")
            assert ticket is not None
            seen.wait(of_type("response.created"))
            own_session(emu, client).close()
            error = ticket.exception(WAIT)
            assert type(error) is ConnectionLostError
            assert client.closed
            with pytest.raises(ClosedError):
                client.send_text("hello")
            assert "reconnects" not in client.stats()
        assert len(emu.sessions) == 1


def test_reconnect_gives_up_typed_after_its_attempts() -> None:
    with Emulator(turn_detection=None) as emu, StallingProxy(emu.port) as proxy:
        client = RealtimeClient(
            api_key=KEY,
            base_url=proxy.url,
            transport="websocket",
            reconnect=Reconnect(max_attempts=3, backoff=0.01, backoff_max=0.02),
        )
        with client:
            stream = client.events(raw=True)
            proxy.refuse()
            proxy.kill()
            seen = [e["type"] for e in stream]  # until the client closes
            assert seen == ["rtclient.reconnecting"] and client.closed
            with pytest.raises(ClosedError) as caught:
                client.send_text("hello")
            failure = caught.value.__cause__
            assert isinstance(failure, ReconnectFailedError) and failure.attempts == 3
            assert proxy.accepted >= 4  # the first connection, then each attempt refused


# -- a sideband ----------------------------------------------------------------------------


@pytest.fixture
def browsers() -> Iterator[LoopThread]:
    with LoopThread("browsers") as loop:
        yield loop


def weather_call(browser: Browser) -> dict[str, Any]:
    """The browser's user asks for the weather: the model calls the tool (the browser
    has no tools: the call waits for an answer)."""
    browser.send(user_text("get_weather"))
    browser.send({"type": "response.create"})
    done = browser.until(
        lambda e: (
            e.get("type") == "response.done"
            and any(i.get("type") == "function_call" for i in e["response"]["output"])
        )
    )
    [call] = [i for i in done["response"]["output"] if i["type"] == "function_call"]
    return dict(call)


def test_a_sideband_reattaches_and_answers_a_call_made_in_the_gap_exactly_once(
    browsers: LoopThread,
) -> None:
    with Emulator(turn_detection=None) as emu, StallingProxy(emu.port) as proxy:
        browser = Browser.call(browsers, emu, tools=[get_weather], audio=False)
        sideband = RealtimeClient(
            api_key=KEY,
            base_url=proxy.url,
            call_id=browser.call_id,
            tools=[get_weather],
            reconnect=Reconnect(max_attempts=1000, backoff=0.02, backoff_max=0.05),
        )
        seen = Seen(sideband, "rtclient.reconnecting", "rtclient.reconnected")
        try:
            sideband.connect()
            session = emu.session(browser.call_id)
            proxy.refuse()
            proxy.kill()  # the sideband's TCP connection is reset; the call goes on
            lost = seen.wait(of_type("rtclient.reconnecting"))
            assert lost["mode"] == "sideband"
            gap_start = len(session.client_events)
            call = weather_call(browser)  # made while no sideband is attached
            assert runs == []
            proxy.refuse(False)
            event = Reconnected.model_validate(seen.wait(of_type("rtclient.reconnected")))
            assert event.mode == "sideband" and event.gap_checked
            assert event.recovered_calls == [call["call_id"]] and event.unanswered_calls == []
            answer = browser.until(final_answer)
            assert "get_weather -> sunny in Oslo" in str(answer)
            events = session.client_events[gap_start:]
            outputs = [e for e in events if is_output(e)]
            assert [o["item"]["call_id"] for o in outputs] == [call["call_id"]]
            assert len([e for e in events if is_ticket(e)]) == 1  # one follow-up
            assert runs == ["Oslo"]
            assert session.count("rejections") == 0
        finally:
            sideband.close()
            browser.close()


def test_a_tool_running_when_the_sideband_drops_is_answered_once_over_the_new_one(
    browsers: LoopThread,
) -> None:
    release = threading.Event()
    started = threading.Event()

    @tool(name="get_weather")
    def slow_weather(city: str = "Oslo") -> str:
        """The weather in a city, slowly."""
        started.set()
        assert release.wait(WAIT)
        runs.append(city)
        return f"rainy in {city}"

    with Emulator(turn_detection=None) as emu, StallingProxy(emu.port) as proxy:
        browser = Browser.call(browsers, emu, tools=[get_weather], audio=False)
        sideband = RealtimeClient(
            api_key=KEY,
            base_url=proxy.url,
            call_id=browser.call_id,
            tools=[slow_weather],
            reconnect=Reconnect(max_attempts=1000, backoff=0.02, backoff_max=0.05),
        )
        seen = Seen(sideband, "response.done", "rtclient.reconnecting", "rtclient.reconnected")
        try:
            sideband.connect()
            session = emu.session(browser.call_id)
            call = weather_call(browser)
            assert started.wait(WAIT)  # the sideband's tool runs...
            seen.wait(of_type("response.done"))  # ...and it saw its round's response end
            proxy.refuse()
            proxy.kill()
            seen.wait(of_type("rtclient.reconnecting"))
            gap_start = len(session.client_events)
            release.set()  # the tool finishes in the gap: its output is held
            proxy.refuse(False)
            event = seen.wait(of_type("rtclient.reconnected"))
            assert event["recovered_calls"] == []  # the runner had it already
            answer = browser.until(final_answer)
            assert "get_weather -> rainy in Oslo" in str(answer)
            events = session.client_events[gap_start:]
            assert [o["item"]["call_id"] for o in events if is_output(o)] == [call["call_id"]]
            assert len([e for e in events if is_ticket(e)]) == 1
            assert runs == ["Oslo"]
            assert sideband.stats()["undelivered_outputs"] == 0
        finally:
            release.set()
            with contextlib.suppress(Exception):
                sideband.close()
            browser.close()


def test_a_tool_running_when_an_own_session_is_lost_is_not_carried_into_the_new_one() -> None:
    release, started = threading.Event(), threading.Event()

    @tool(name="get_weather")
    def slow_weather(city: str = "Oslo") -> str:
        """The weather in a city, slowly."""
        started.set()
        assert release.wait(WAIT)
        return f"rainy in {city}"

    with (
        Emulator(turn_detection=None) as emu,
        ThreadPoolExecutor(1, thread_name_prefix="test-tool") as pool,
    ):
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport="websocket",
            session={"output_modalities": ["text"]},
            tools=[slow_weather],
            executor=pool,
            reconnect=FAST,
        )
        seen = Seen(client, "rtclient.reconnected")
        with client, ThreadPoolExecutor(1) as asker:
            asked = asker.submit(client.ask, "get_weather", timeout=WAIT)
            assert started.wait(WAIT)
            own_session(emu, client).close()
            with pytest.raises(SessionReplacedError):
                asked.result(WAIT)
            event = Reconnected.model_validate(seen.wait(of_type("rtclient.reconnected")))
            assert [(n.type, n.reason) for n in event.not_restored] == [
                ("function_call", "no output")
            ]
            release.set()
            pool.submit(lambda: None).result(WAIT)  # the tool's outcome has been handled
            assert client.stats()["undelivered_outputs"] == 1  # discarded, and counted
            assert client.ask("hello").text == "You said: hello"
            new = own_session(emu, client)
            assert not [e for e in new.client_events if is_output(e)]


def test_an_attempt_whose_connection_is_lost_while_restoring_is_retried() -> None:
    with Emulator(turn_detection=None) as emu:
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport="websocket",
            session={"output_modalities": ["text"]},
            reconnect=Reconnect(max_attempts=50, backoff=0.02, backoff_max=0.05),
        )
        seen = Seen(client, "rtclient.reconnected")
        with client:
            client.ask("hello")
            emu.set_faults(close_after_events=2)  # new sessions end after their session.updated
            own_session(emu, client).close()
            assert emu.wait_for(lambda: len(emu.sessions) >= 3, WAIT)  # an attempt was cut
            emu.set_faults(close_after_events=None)
            event = seen.wait(of_type("rtclient.reconnected"))
            assert event["attempts"] >= 2 and event["restored_items"] == 2
            assert client.ask("again").text == "You said: again"
            assert client.stats()["lost"] == 0
            # and a second loss is survived the same way
            own_session(emu, client).close()
            seen.wait(lambda e: e["type"] == "rtclient.reconnected" and e is not event)
            assert client.ask("third").text == "You said: third"
            restored = item_creates(own_session(emu, client).client_events)
            assert len(restored) == 5  # hello, its answer, again, its answer, and "third"
            assert client.stats()["reconnects"] == 2


def test_close_while_the_new_session_is_being_restored_leaves_nothing_running() -> None:
    with Emulator(turn_detection=None) as emu:
        client = RealtimeClient(
            api_key=KEY,
            base_url=emu.url,
            transport="websocket",
            session={"output_modalities": ["text"]},
            reconnect=FAST,
        )
        client.connect()
        try:
            client.ask("hello")
            # the next session takes the restored items and never answers them
            emu.set_faults(ignore_event_type="conversation.item.create")
            own_session(emu, client).close()
            assert emu.wait_for(
                lambda: any(
                    e.get("type") == "conversation.item.create"
                    for s in emu.sessions[1:]
                    for e in s.client_events
                ),
                WAIT,
            )
        finally:
            client.close(timeout=10)
        assert client.closed and len(emu.sessions) == 2
        assert emu.wait_for(lambda: emu.sessions[1].closed, WAIT)  # its socket was closed
