"""A tool output is sent when it is written, not when it is queued (WebSocket).

The WebSocket transport queues events for its one writer task. A socket can stall (the
server stops reading) and then die with events still queued or half written; before,
a tool output was counted sent the moment it was queued, so one that never left was
counted sent and its round's follow-up was asked for. Here a real socket, through a
proxy on loopback, stalls in the middle of writing one output; a second output comes
while it does (queued behind it, or - if the reset is first - refused); then the socket
is reset. Both must be counted undelivered, none sent, the server must never see them,
and the caller waiting for the answer gets the connection's typed error.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from proxy import StallingProxy

from rtclient import ConnectionLostError, RealtimeClient, tool
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(90)

BIG = 14_000_000  # under the 15 MiB event limit; far more than the socket buffers hold


def test_outputs_on_a_socket_that_dies_are_undelivered_never_sent() -> None:
    started = threading.Barrier(3, timeout=20)  # both tools running, and the test
    release = threading.Event()
    writing = threading.Event()  # the big output is being written (the proxy read some)

    @tool
    def report() -> str:
        """A long report."""
        started.wait()
        assert release.wait(20)
        return "x" * BIG

    @tool
    def note() -> str:
        """A short note, queued behind the report's write."""
        started.wait()
        assert writing.wait(20)
        return "a note"

    with Emulator(turn_detection=None) as emu, StallingProxy(emu.port) as proxy:
        client = RealtimeClient(
            api_key="sk-test",
            base_url=proxy.url,
            transport="websocket",
            tools=[report, note],
            session={"output_modalities": ["text"]},
        )
        with client, concurrent.futures.ThreadPoolExecutor(1) as caller:
            asking = caller.submit(client.ask, "use report and note", timeout=60)
            started.wait()  # both calls are running: nothing of theirs is written yet
            proxy.freeze(swallow=1_000_000)
            release.set()
            assert proxy.swallowed.wait(30)  # a megabyte of the report is out: mid-write
            writing.set()  # the note's output comes now, behind the stalled write
            proxy.kill()
            with pytest.raises(ConnectionLostError):
                asking.result(30)
        stats = client.stats()  # after close(): every write has its outcome
        received = [
            e for e in emu.sessions[-1].client_events if e.get("type") == "conversation.item.create"
        ]

    assert stats["tool_calls"] == 2
    assert stats["undelivered_outputs"] == 2  # the half-written one and the queued one
    assert not [e for e in received if e["item"].get("type") == "function_call_output"]
    assert stats["creates_sent"] == 1  # the question's; no follow-up was ever asked for
