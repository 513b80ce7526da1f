"""``send_guard``: a hook that may refuse any event at the last moment before it is written.

A holder of a call in a cluster (``examples/calls_registry.py``) uses it to stop sending
once its lease may be lost. What the client promises around it: the guard runs on the
loop thread right before the write; a refused event is not written; a refused create
fails its request with :class:`SendRefusedError` (chained from the guard's error) and
is not retried; a refused tool output is undelivered, so no follow-up is requested
without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from rtclient import RealtimeClient, SendRefusedError, tool
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]


@pytest.fixture(params=["webrtc", "websocket"])
def rt_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Fenced(Exception):
    """What the test's guard raises."""


class Guard:
    """Refuses the event (or item) types in ``refuse``; records what it saw, and on
    which thread."""

    def __init__(self, *refuse: str) -> None:
        self.refuse = set(refuse)
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type"))
        if kind == "conversation.item.create":
            kind = str(event["item"].get("type"))
        with self.lock:
            self.seen.append((kind, threading.current_thread().name))
        if kind in self.refuse:
            raise Fenced(f"lease lost before {kind}")


def _creates(emulator: Emulator) -> list[dict[str, Any]]:
    return [e for e in emulator.sessions[-1].client_events if e["type"] == "response.create"]


def test_a_refused_create_fails_its_request_typed_and_is_not_retried(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    guard = Guard("response.create")
    client = rt_connect(send_guard=guard)
    ticket = client.request_response()
    with pytest.raises(SendRefusedError) as refused:
        ticket.result(10)
    assert isinstance(refused.value.__cause__, Fenced)  # chained from the guard's error
    assert _creates(rt_emulator) == [] and rt_emulator.stats()["creates"] == 0
    assert [k for k, _ in guard.seen].count("response.create") == 1  # not retried
    stats = client.stats()
    assert stats["rollbacks"] == 1 and stats["lost"] == 0
    # every call ran on the loop thread (never the caller's or a tool's)
    assert {thread for _, thread in guard.seen} == {"rtclient-loop"}

    # The gate is free again: once the guard lets creates through, a request is served.
    guard.refuse.clear()
    assert client.request_response().result(10)["response"]["status"] == "completed"
    assert len(_creates(rt_emulator)) == 1


def test_a_refused_tool_output_is_undelivered_and_gets_no_follow_up(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    ran = threading.Event()

    @tool
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        ran.set()
        return a + b

    guard = Guard("function_call_output")
    client = rt_connect(tools=[add], send_guard=guard)
    # The model calls add; its output is refused; the round fails typed, never answered
    # without the output.
    with pytest.raises(SendRefusedError) as refused:
        client.ask('use add({"a": 2, "b": 3})', timeout=30)
    assert isinstance(refused.value.__cause__, Fenced) and ran.is_set()
    events = rt_emulator.sessions[-1].client_events
    outputs = [e for e in events if (e.get("item") or {}).get("type") == "function_call_output"]
    assert outputs == []  # the output never reached the server
    assert len(_creates(rt_emulator)) == 1  # the question's create; no follow-up
    assert client.stats()["undelivered_outputs"] == 1
    assert ("function_call_output", "rtclient-loop") in guard.seen
