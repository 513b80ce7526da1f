"""rtclient's pytest plugin: test your own tools offline against a real emulator.

Installed with rtclient (entry point ``pytest11``), so the fixtures are simply there:

``rt_emulator``
    A running :class:`rtclient.emulator.Emulator` on 127.0.0.1 (a free port), server
    VAD off and a fast pace; stopped after the test. Use its ``stats()``,
    ``sessions``, ``wait_for(...)``, ``simulate_speech(...)`` and faults.
``rt_connect``
    ``rt_connect(**kwargs)`` returns a connected :class:`rtclient.RealtimeClient` on
    that emulator (WebRTC over loopback only, unless ``transport=`` or the
    ``rt_transport`` fixture says otherwise); every client is closed after the test.
``rt_transport``
    The transport ``rt_connect`` uses by default: ``"webrtc"``. Override it with a
    parametrized fixture to run the same tests over both::

        @pytest.fixture(params=["webrtc", "websocket"])
        def rt_transport(request):
            return request.param
``rt_client``
    One connected client with the tools of the ``rt_tools`` fixture (none unless you
    override ``rt_tools`` in your conftest or test module).

Example::

    from rtclient import tool

    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Adds two numbers.\"\"\"
        return a + b

    @pytest.fixture
    def rt_tools():
        return [add]

    def test_add_round(rt_client, rt_emulator):
        answer = rt_client.ask('use add({"a": 2, "b": 3})', timeout=30)
        assert "add -> 5" in answer.text
        assert rt_emulator.stats()["rejections"] == 0

Imports are lazy: merely having rtclient installed costs a pytest run nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rtclient.client import RealtimeClient
    from rtclient.emulator import Emulator


@pytest.fixture
def rt_emulator() -> Iterator[Emulator]:
    """An emulator on 127.0.0.1 (port 0), VAD off, fast pace; stopped after the test."""
    from rtclient.emulator import Emulator, Pace

    with Emulator(turn_detection=None, pace=Pace(delay=0.005)) as emulator:
        yield emulator


@pytest.fixture
def rt_transport() -> str:
    """The transport ``rt_connect`` uses unless told otherwise."""
    return "webrtc"


@pytest.fixture
def rt_connect(rt_emulator: Emulator, rt_transport: str) -> Iterator[Callable[..., RealtimeClient]]:
    """``rt_connect(**kwargs)`` -> a connected client on ``rt_emulator``."""
    from rtclient.client import RealtimeClient

    clients: list[RealtimeClient] = []

    def connect(**kwargs: Any) -> RealtimeClient:
        kwargs.setdefault("api_key", "sk-test")
        kwargs.setdefault("base_url", rt_emulator.url)
        kwargs.setdefault("loopback_only", True)
        if "call_id" not in kwargs:
            kwargs.setdefault("transport", rt_transport)
        client = RealtimeClient(**kwargs)
        clients.append(client)
        return client.connect()

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def rt_tools() -> list[Callable[..., Any]]:
    """The tools ``rt_client`` registers; override this fixture to give yours."""
    return []


@pytest.fixture
def rt_client(
    rt_connect: Callable[..., RealtimeClient], rt_tools: list[Callable[..., Any]]
) -> RealtimeClient:
    """A client connected to ``rt_emulator`` with the ``rt_tools`` registered."""
    return rt_connect(tools=rt_tools)
