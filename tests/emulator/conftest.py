"""Fixtures for the emulator's tests: emulators that are always stopped, async tests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from rtclient.emulator import Emulator, Pace

from .rawclient import RawClient
from .wsclient import WsClient

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
ASYNC_TEST_TIMEOUT_S = 25.0
FAST = Pace(delay=0.002, deltas=3)


def async_test(fn: F) -> Callable[..., Any]:
    """Run an ``async def`` test in a fresh event loop, with a timeout."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), ASYNC_TEST_TIMEOUT_S))

    return run


MakeEmulator = Callable[..., Emulator]


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        options.setdefault("pace", FAST)
        emulator = Emulator(**options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


Client = RawClient | WsClient


async def connect(emulator: Emulator, transport: str, **options: Any) -> Client:
    """A client over ``"webrtc"`` (raw aiortc) or ``"websocket"`` (aiohttp)."""
    if transport == "webrtc":
        return await RawClient.connect(emulator.url, **options)
    return await WsClient.connect(emulator.url, **options)


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "description": f"{name} tool", "parameters": {}}
