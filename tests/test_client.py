"""RealtimeClient against the emulator: real WebRTC (and WebSocket) on loopback, real
threads.

The emulator is the referee: it enforces the one-active-response rule and counts every
``conversation_already_has_active_response`` it sends. These tests assert on its
counters, not on the client's own opinion of itself. Every test that connects runs
over both transports (the ``rt_transport`` fixture): nothing above the transport may
behave differently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import pytest
from threads import run_at_once

from rtclient import RealtimeClient, tool
from rtclient.emulator import Emulator, Pace

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]


@pytest.fixture(params=["webrtc", "websocket"])
def rt_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@tool
def get_weather(city: str = "Paris", i: int = 0) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21, "i": i}


@tool
def get_time(zone: str = "UTC", i: int = 0) -> str:
    """The time in a zone."""
    return f"12:00 {zone}"


@tool
def get_news(i: int = 0) -> list[str]:
    """Headlines."""
    return ["calm day"]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e.get("type", "") for e in events]


def test_conversation_with_three_parallel_tool_calls(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect(tools=[get_weather, get_time, get_news])
    answer = client.ask("hello", timeout=20)
    assert answer.text == "You said: hello" and len(answer.response_ids) == 1

    answer = client.ask('use get_weather({"city": "Oslo"}) and get_time and get_news', timeout=20)
    assert sorted(c.name for c in answer.tool_calls) == ["get_news", "get_time", "get_weather"]
    assert '"city": "Oslo"' in answer.text and "12:00 UTC" in answer.text
    assert len(answer.response_ids) == 2  # the calls, then one follow-up
    stats = client.stats()
    assert stats["tool_calls"] == 3 and stats["lost"] == 0 and stats["creates_sent"] == 3
    assert rt_emulator.stats()["rejections"] == 0


def test_rca_race_64_tools_released_on_one_barrier(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    """The RCA's failure, end to end: 64 results land at once; one follow-up, no rejection."""
    barrier = threading.Barrier(64, timeout=30)

    @tool
    def collide(i: int) -> int:
        """Finish at the same instant as 63 others."""
        barrier.wait()
        return i

    with ThreadPoolExecutor(64, thread_name_prefix="race-tool") as pool:
        client = rt_connect(tools=[collide], executor=pool)
        answer = client.ask("use collide*64", timeout=45)
        assert len(answer.tool_calls) == 64 and len(answer.response_ids) == 2
        session = rt_emulator.sessions[-1]
        events = session.client_events
        outputs = [
            n
            for n, e in enumerate(events)
            if e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]
        creates = [n for n, e in enumerate(events) if e["type"] == "response.create"]
        assert len(outputs) == 64
        assert len(creates) == 2, "exactly one follow-up create"
        assert creates[1] > max(outputs), "all 64 outputs before the follow-up"
        assert rt_emulator.stats()["rejections"] == 0
        assert client.stats()["lost"] == 0


def test_tools_finish_while_a_vad_response_runs(rt_transport: str) -> None:
    """A tool result races a server-VAD reply: nothing lost, rejections re-armed."""
    vad = {"type": "server_vad", "create_response": True, "interrupt_response": False}
    release = threading.Event()
    started = threading.Barrier(9, timeout=30)

    @tool
    def slow(i: int) -> int:
        """Waits for the test."""
        started.wait()
        release.wait(30)
        return i

    with Emulator(turn_detection=vad, pace=Pace(delay=0.02, deltas=6)) as emu:
        with ThreadPoolExecutor(8) as pool:
            client = RealtimeClient(
                api_key="sk-test", base_url=emu.url, loopback_only=True,
                tools=[slow], executor=pool, transport=rt_transport,
            )  # fmt: skip
            try:
                client.connect()
                result: dict[str, Any] = {}
                asker = threading.Thread(
                    target=lambda: result.update(answer=client.ask("use slow*8", timeout=45))
                )
                asker.start()
                started.wait()  # all 8 tools are running
                emu.wait_for(lambda: emu.stats()["completed"] >= 1, 10)
                speech = emu.sessions[-1].simulate_speech("are you there?")
                assert speech["response_id"] is not None  # VAD auto-created a response
                release.set()  # the tools now finish while that VAD response speaks
                asker.join(45)
                answer = result["answer"]
                # The follow-up was served by *our* create (the user spoke since, so the
                # scripted model now answers the speech - that is the model's business).
                assert len(answer.tool_calls) == 8 and len(answer.response_ids) == 2
                metadata = answer.response.response.metadata  # the typed response.done
                assert metadata is not None and "rtclient_ticket" in metadata
                assert answer.raw["response"]["metadata"] == metadata
                stats, emu_stats = client.stats(), emu.stats()
                assert stats["lost"] == 0 and stats["failed"] == 0
                assert stats["rearmed"] >= emu_stats["rejections"] == stats["rejections"]
            finally:
                release.set()
                client.close()


def test_sixteen_threads_request_at_once(rt_emulator: Emulator, rt_connect: Connect) -> None:
    client = rt_connect()
    tickets = run_at_once(
        16, lambda i: client.send_text(f"msg {i}") if i % 2 else client.request_response(), 20
    )
    served = {t.result(30)["response"]["id"] for t in tickets}
    assert rt_emulator.stats()["rejections"] == 0
    stats = client.stats()
    assert stats["lost"] == 0 and stats["resolved"] == 16
    assert len(served) == stats["creates_sent"] <= 16  # coalesced: fewer responses than asks


def test_eight_clients_share_one_loop_thread(rt_emulator: Emulator, rt_transport: str) -> None:
    from rtclient import LoopThread

    with LoopThread("shared-loop") as loop_thread:
        clients = [
            RealtimeClient(
                api_key="sk-test",
                base_url=rt_emulator.url,
                loopback_only=True,
                loop_thread=loop_thread,
                tools=[get_weather],
                transport=rt_transport,
            )
            for _ in range(8)
        ]
        try:
            for c in clients:
                c.connect()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda c: c.ask("use get_weather*2", timeout=30), clients))
            assert all(len(a.tool_calls) == 2 for a in answers)
            assert rt_emulator.stats()["rejections"] == 0
            assert rt_emulator.stats()["sessions"] == 8
        finally:
            for c in clients:
                c.close()
        assert loop_thread.running  # a shared loop outlives its clients


def test_events_iterator_and_callbacks_run_off_the_loop_thread(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    seen: list[str] = []
    threads: set[str] = set()
    got_done = threading.Event()

    def on_any(event: Any) -> None:  # typed: the openai model of each event
        seen.append(event.type)
        threads.add(threading.current_thread().name)
        if event.type == "response.done":
            got_done.set()

    unsubscribe = client.on("*", on_any)
    stream = client.events(timeout=10)
    client.send_text("hi").result(10)
    assert got_done.wait(10)
    unsubscribe()
    types = []
    for event in stream:
        types.append(event.type)
        if event.type == "response.done":
            break
    assert "response.created" in types and types[-1] == "response.done"
    assert threads == {"rtclient-dispatcher"}
    assert seen.index("response.created") < seen.index("response.done")


def test_out_of_band_response_bypasses_the_gate(rt_emulator: Emulator, rt_connect: Connect) -> None:
    rt_emulator.set_faults()  # defaults
    client = rt_connect()
    client.send_text("long one", respond=False)
    main = client.request_response(instructions="talk")
    oob = client.request_response(conversation="none", input=[])
    assert oob.result(10)["response"]["conversation_id"] is None
    main.result(10)
    assert rt_emulator.stats()["rejections"] == 0


def test_audio_frames_reach_the_callback(
    rt_emulator: Emulator, rt_connect: Connect, rt_transport: str
) -> None:
    frames: list[Any] = []
    got = threading.Event()

    def on_audio(frame: Any) -> None:
        frames.append(frame)
        got.set()

    client = rt_connect(on_audio=on_audio)
    client.send_text("speak", respond=False)
    client.request_response(output_modalities=["audio"]).result(20)
    assert got.wait(10)
    assert isinstance(frames[0], av.AudioFrame)  # the same type over both transports
    # each frame says its rate: decoded Opus over WebRTC, the API's PCM16 over a socket
    assert frames[0].sample_rate == (48000 if rt_transport == "webrtc" else 24000)


def test_request_response_before_connect_is_refused() -> None:
    from rtclient import ClosedError

    client = RealtimeClient(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ClosedError):
        client.request_response()
    client.close()


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtclient import RealtimeError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RealtimeError, match="OPENAI_API_KEY"):
        RealtimeClient()


def cube(x: int = 2, i: int = 0) -> int:
    """Cube a number (module level: a process pool pickles it by reference)."""
    return x**3


def test_process_pool_executor_runs_picklable_tools(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forkserver, as the README advises: fork() copies a process whose rtclient threads
    # may hold locks, and can deadlock the child
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        client = rt_connect(tools=[cube], executor=pool)
        answer = client.ask('use cube({"x": 3})*2', timeout=60)
        assert answer.text.count("cube -> 27") == 2
        assert client.stats()["tool_errors"] == 0
        client.close()
