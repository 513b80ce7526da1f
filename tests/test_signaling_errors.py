"""Signaling refusals come as the ``openai`` package's classes, by HTTP status.

Every HTTP exchange rtclient makes - the WebRTC offer, the WebSocket handshake (own
session and sideband), ``create_call`` and ``hangup_call`` - turns a refusal into the
same :class:`SignalingError` subclass, built in one place
(``rtclient.transports.signaling.signaling_error`` / ``connection_error``). 401 and 404 come from
the emulator; the statuses it never sends (403, 429, 5xx, ...) from a tiny aiohttp
server on 127.0.0.1 that answers with the API's JSON error body; "no answer at all"
from a port nothing listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

import rtclient
from rtclient import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    CallNotFoundError,
    ConflictError,
    InternalServerError,
    LoopThread,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RealtimeClient,
    RealtimeError,
    SignalingError,
    UnprocessableEntityError,
    create_call,
    hangup_call,
)
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(90)

SECRET = "sk-proj-SUPERSECRET0123456789abcdef"
FAKE_OFFER = "v=0\r\n"  # never parsed: every server here refuses before reading it

# (status, the class, the API's error type and code for it)
REFUSALS: list[tuple[int, type[SignalingError], str, str | None]] = [
    (400, BadRequestError, "invalid_request_error", "invalid_value"),
    (403, PermissionDeniedError, "invalid_request_error", "unsupported_country_region_territory"),
    (409, ConflictError, "invalid_request_error", "conflict"),
    (422, UnprocessableEntityError, "invalid_request_error", "unprocessable"),
    (429, RateLimitError, "requests", "rate_limit_exceeded"),
    (500, InternalServerError, "server_error", None),
    (503, InternalServerError, "server_error", "overloaded"),
]
ERROR_BODY = {status: (kind, code) for status, _, kind, code in REFUSALS}

Attempt = Callable[[str, str], Any]


def webrtc(base_url: str, key: str) -> Any:
    return RealtimeClient(api_key=key, base_url=base_url, loopback_only=True).connect()


def websocket(base_url: str, key: str) -> Any:
    return RealtimeClient(api_key=key, base_url=base_url, transport="websocket").connect()


def sideband(base_url: str, key: str) -> Any:
    return RealtimeClient(api_key=key, base_url=base_url, call_id="rtc_unknown").connect()


def call(base_url: str, key: str) -> Any:
    return create_call(FAKE_OFFER, api_key=key, base_url=base_url, timeout=20)


def hangup(base_url: str, key: str) -> Any:
    return hangup_call("rtc_unknown", api_key=key, base_url=base_url, timeout=20)


ATTEMPTS: dict[str, Attempt] = {
    "webrtc offer": webrtc,
    "websocket handshake": websocket,
    "sideband handshake": sideband,
    "create_call": call,
    "hangup_call": hangup,
}


@pytest.fixture
def refusing_api(lt: LoopThread) -> Iterator[str]:
    """``http://127.0.0.1:PORT``: under ``/{status}/v1/`` every request (offer, hangup,
    WebSocket upgrade) is refused with that status and the API's JSON error body."""

    async def refuse(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        kind, code = ERROR_BODY[status]
        error = {"message": f"refused ({status})", "type": kind, "param": None, "code": code}
        return web.json_response({"error": error}, status=status)

    app = web.Application()
    app.router.add_route("*", r"/{status:\d+}/v1/{tail:.*}", refuse)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    port = lt.call(start(), timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        lt.call(runner.cleanup(), timeout=10)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="sk-the-right-one", turn_detection=None) as emu:
        yield emu


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=list(ATTEMPTS))
@pytest.mark.parametrize(
    ("status", "error_class"),
    [(status, cls) for status, cls, _, _ in REFUSALS],
    ids=[str(status) for status, *_ in REFUSALS],
)
def test_each_status_is_its_openai_named_class_on_every_path(
    refusing_api: str, attempt: str, status: int, error_class: type[SignalingError]
) -> None:
    with pytest.raises(SignalingError) as info:
        ATTEMPTS[attempt](f"{refusing_api}/{status}/v1", SECRET)
    error = info.value
    assert type(error) is error_class, f"{attempt}: {status} -> {type(error).__name__}"
    assert isinstance(error, RealtimeError)
    kind, code = ERROR_BODY[status]
    assert (error.status, error.code) == (status, code or kind)
    assert error.message == f"refused ({status})"
    assert SECRET not in str(error) and SECRET not in repr(error)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=list(ATTEMPTS))
def test_a_wrong_key_is_an_authentication_error(emulator: Emulator, attempt: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        ATTEMPTS[attempt](emulator.url, SECRET)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert SECRET not in str(info.value)
    assert emulator.stats()["sessions"] == 0


@pytest.mark.parametrize("attempt", ["sideband handshake", "hangup_call"])
def test_an_unknown_call_is_not_found(emulator: Emulator, attempt: str) -> None:
    with pytest.raises(CallNotFoundError) as info:
        ATTEMPTS[attempt](emulator.url, "sk-the-right-one")
    assert isinstance(info.value, NotFoundError)
    assert (info.value.status, info.value.code) == (404, "call_id_not_found")
    assert "does not end in /v1" not in str(info.value)  # the route was right


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=list(ATTEMPTS))
def test_a_base_url_without_v1_gets_a_404_that_names_the_fix(
    emulator: Emulator, attempt: str
) -> None:
    """The newcomer's ``OPENAI_BASE_URL=http://127.0.0.1:8765``: every route is one
    level too high, and the emulator answers a plain 404 - the message says why."""
    root = emulator.url.removesuffix("/v1")
    with pytest.raises(NotFoundError) as info:
        ATTEMPTS[attempt](root, "sk-the-right-one")
    error = info.value
    assert type(error) is NotFoundError and error.status == 404  # not about a call
    assert f"the base_url '{root}' does not end in /v1" in str(error)
    assert f"did you mean '{root}/v1'?" in str(error)
    assert "sk-the-right-one" not in str(error)


@pytest.mark.parametrize("attempt", ["sideband handshake", "create_call", "hangup_call"])
def test_a_404_from_a_base_url_ending_in_v1_has_no_hint(emulator: Emulator, attempt: str) -> None:
    wrong_prefix = emulator.url.replace("/v1", "/api/v1")  # ends in /v1, still not found
    with pytest.raises(NotFoundError) as info:
        ATTEMPTS[attempt](wrong_prefix, "sk-the-right-one")
    assert info.value.status == 404 and "Invalid URL" in str(info.value)
    assert "does not end in /v1" not in str(info.value)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=list(ATTEMPTS))
def test_no_http_answer_is_an_api_connection_error(attempt: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
        port = closed.getsockname()[1]
        with pytest.raises(APIConnectionError) as info:
            ATTEMPTS[attempt](f"http://127.0.0.1:{port}/v1", SECRET)
    assert (info.value.status, info.value.code) == (None, "connection_error")
    assert not isinstance(info.value, TimeoutError)
    assert SECRET not in str(info.value)


def test_the_classes_are_rtclients_own_and_exported() -> None:
    classes = [c for _, c, _, _ in REFUSALS] + [
        AuthenticationError,
        NotFoundError,
        CallNotFoundError,
        APIConnectionError,
        rtclient.APITimeoutError,
    ]
    for cls in classes:
        assert issubclass(cls, SignalingError) and cls.__module__ == "rtclient.errors"
        assert getattr(rtclient, cls.__name__) is cls and cls.__name__ in rtclient.__all__
        assert not any(base.__module__.startswith("openai") for base in cls.__mro__)
    # the names are the openai package's, so that its users recognise them
    import openai

    for cls in classes:
        if cls is not CallNotFoundError:
            assert hasattr(openai, cls.__name__), cls.__name__
    assert issubclass(rtclient.APITimeoutError, rtclient.WaitTimeoutError)
    assert issubclass(rtclient.APITimeoutError, TimeoutError)
