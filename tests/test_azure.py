"""Azure OpenAI: a resource endpoint as ``base_url``, a deployment as the model, the
``api-key`` header, and bearer tokens from a token provider (Microsoft Entra ID).

The emulator serves Azure's shapes on loopback (``/openai/v1/...`` and the dated
``/openai/realtime?api-version=&deployment=``) and records how each request
authenticated, so these tests assert on what went over the wire, not on the client's
opinion of itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from loguru import logger

from rtclient import AuthenticationError, InvalidAPIKeyError, RealtimeClient
from rtclient._secret import Secret, TokenProvider
from rtclient.emulator import Emulator, Pace
from rtclient.emulator.auth import redact
from rtclient.transports.endpoint import Endpoint

pytestmark = pytest.mark.timeout(60)

RESOURCE_KEY = "azure-resource-key-0123456789abcdef"
DEPLOYMENT = "contoso-realtime-2"
API_VERSION = "2025-04-01-preview"


@pytest.fixture(params=["webrtc", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Everything rtclient logs, at every level, as text."""
    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink)
        logger.disable("rtclient")


class Tokens:
    """A token provider as ``azure-identity`` makes one: a callable returning a bearer
    token; it counts its calls and the threads they ran on."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.issued: list[str] = []
        self.threads: list[str] = []
        self._fail = fail
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.threads.append(threading.current_thread().name)
            if self._fail is not None:
                raise self._fail
            token = f"eyJ0eXAiOiJKV1QiLCJ.entra-{len(self.issued) + 1}.c2lnbmF0dXJl"
            self.issued.append(token)
            return token


def azure_client(emulator: Emulator, transport: str, **kwargs: object) -> RealtimeClient:
    kwargs.setdefault("api_key", RESOURCE_KEY)
    kwargs.setdefault("base_url", emulator.azure_url)
    kwargs.setdefault("model", DEPLOYMENT)
    return RealtimeClient(loopback_only=True, transport=transport, **kwargs)  # type: ignore[arg-type]


# -- the shapes -----------------------------------------------------------------------


def test_endpoint_shapes_and_their_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    openai = Endpoint.parse("https://api.openai.com/v1/")
    v1 = Endpoint.parse("https://contoso.openai.azure.com/openai/v1")
    dated = Endpoint.parse(
        f"https://contoso.openai.azure.com/openai/deployments/{DEPLOYMENT}?api-version={API_VERSION}"
    )
    assert (openai.shape, v1.shape, dated.shape) == ("openai", "azure", "azure-dated")
    assert v1.calls_url() == "https://contoso.openai.azure.com/openai/v1/realtime/calls"
    assert v1.websocket(model=DEPLOYMENT, call_id=None) == (
        "wss://contoso.openai.azure.com/openai/v1/realtime",
        {"model": DEPLOYMENT},
    )
    assert dated.websocket(model="ignored", call_id=None) == (  # the openai package's URL
        "wss://contoso.openai.azure.com/openai/realtime",
        {"api-version": API_VERSION, "deployment": DEPLOYMENT},
    )
    with pytest.raises(ValueError, match="v1 endpoint"):
        dated.calls_url()  # no WebRTC on the dated shape

    key, tokens = Secret(RESOURCE_KEY), TokenProvider(Tokens())
    assert asyncio.run(v1.headers(key)) == {"api-key": RESOURCE_KEY}
    assert asyncio.run(openai.headers(key)) == {"Authorization": f"Bearer {RESOURCE_KEY}"}
    assert asyncio.run(v1.headers(tokens))["Authorization"].startswith("Bearer eyJ")
    assert asyncio.run(dated.headers(Secret("ek_abc"))) == {"Authorization": "Bearer ek_abc"}

    deployment_only = f"https://contoso.openai.azure.com/openai/deployments/{DEPLOYMENT}"
    with pytest.raises(ValueError, match="api-version"):
        Endpoint.parse(deployment_only)
    monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)  # as AzureOpenAI reads it
    assert Endpoint.parse(deployment_only).query == {"api-version": API_VERSION}
    monkeypatch.delenv("OPENAI_API_VERSION")
    gateway = Endpoint.parse("https://gateway.example.com/v1/acct/gw/openai")
    assert gateway.shape == "openai"  # a bare /openai without an API version


def test_webrtc_on_a_dated_endpoint_is_refused_at_construction() -> None:
    base_url = f"https://contoso.openai.azure.com/openai?api-version={API_VERSION}"
    with pytest.raises(ValueError, match="WebRTC on Azure OpenAI"):
        RealtimeClient(api_key=RESOURCE_KEY, base_url=base_url, model=DEPLOYMENT)
    with pytest.raises(ValueError, match="a sideband on Azure OpenAI"):
        RealtimeClient(api_key=RESOURCE_KEY, base_url=base_url, call_id="rtc_123")
    client = RealtimeClient(api_key="k", base_url=base_url, transport="websocket")
    assert client.model == "gpt-realtime-2"  # nothing connected: construction only


# -- over real connections ------------------------------------------------------------


def test_a_resource_key_goes_in_the_api_key_header(transport: str, log_lines: list[str]) -> None:
    with Emulator(api_key=RESOURCE_KEY, turn_detection=None, pace=Pace(delay=0.002)) as emu:
        client = azure_client(emu, transport)
        with client:
            answer = client.ask("hello", timeout=30)
            texts = [repr(client), repr(client._transport), repr(client._key)]
            session = emu.sessions[-1]
            if transport == "webrtc":
                client.hangup()  # the API's hang-up, with the same header
        assert answer.text == "You said: hello"
        assert session.config["model"] == DEPLOYMENT  # the deployment is the model
        route = "calls" if transport == "webrtc" else "realtime"
        routes = [route, "hangup"] if transport == "webrtc" else [route]
        assert session.auth == [
            {"route": r, "scheme": "api-key", "credential": redact(RESOURCE_KEY)} for r in routes
        ]
        for text in [*texts, "\n".join(log_lines)]:
            assert RESOURCE_KEY not in text


def test_a_wrong_resource_key_is_an_authentication_error(transport: str) -> None:
    with Emulator(api_key=RESOURCE_KEY) as emu:
        wrong = "azure-resource-key-WRONG456789abcdef"
        with pytest.raises(AuthenticationError) as refused:
            azure_client(emu, transport, api_key=wrong).connect()
        assert refused.value.status == 401
        assert wrong not in str(refused.value) and wrong not in repr(refused.value)


def test_a_token_provider_is_asked_per_connection_and_never_leaks(
    transport: str, log_lines: list[str]
) -> None:
    tokens = Tokens()
    with Emulator(turn_detection=None, pace=Pace(delay=0.002)) as emu:
        client = azure_client(emu, transport, api_key=tokens)
        assert tokens.issued == []  # not at construction: tokens expire
        with client:
            assert len(tokens.issued) == 1  # the offer, or the WebSocket handshake
            client.ask("hello", timeout=30)
            texts = [repr(client), str(client), repr(client._transport), repr(client._key)]
            session = emu.sessions[-1]
            if transport == "webrtc":
                client.hangup()  # a new request: a fresh token
        expected = [("calls" if transport == "webrtc" else "realtime", tokens.issued[0])]
        if transport == "webrtc":
            expected.append(("hangup", tokens.issued[1]))
        assert len(tokens.issued) == len(expected)
        assert session.auth == [
            {"route": r, "scheme": "bearer", "credential": redact(t)} for r, t in expected
        ]
        assert "rtclient-loop" not in tokens.threads  # a blocking provider never stalls it
        assert log_lines
        for text in [*texts, "\n".join(log_lines)]:
            for token in tokens.issued:
                assert token not in text and token.split(".")[1] not in text


def test_a_refused_or_failing_token_provider_is_a_typed_error_without_the_token(
    transport: str,
) -> None:
    with Emulator(api_key="the-only-accepted-token") as emu:
        tokens = Tokens()
        with pytest.raises(AuthenticationError) as refused:
            azure_client(emu, transport, api_key=tokens).connect()
        assert refused.value.status == 401 and tokens.issued
        assert tokens.issued[0] not in str(refused.value)

        failing = Tokens(fail=RuntimeError("the credential chain is unavailable"))
        with pytest.raises(AuthenticationError) as failed:
            azure_client(emu, transport, api_key=failing).connect()
        assert failed.value.code == "token_provider_failed"
        assert isinstance(failed.value.__cause__, RuntimeError)

        with pytest.raises(AuthenticationError, match="no token"):
            azure_client(emu, transport, api_key=lambda: "").connect()
        with pytest.raises(InvalidAPIKeyError) as malformed:  # checked as a key is
            azure_client(emu, transport, api_key=lambda: "eyJhbGci\nsecond-line").connect()
        assert "eyJhbGci" not in str(malformed.value) and "second" not in str(malformed.value)
        assert emu.stats()["sessions"] == 0  # nothing got through


def test_a_dated_deployment_path_over_websocket(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AzureOpenAI(azure_endpoint=..., azure_deployment=..., api_version=...)``'s
    shape: the deployment in the path wins over ``model``, as in the openai package."""
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    with Emulator(api_key=RESOURCE_KEY, turn_detection=None, pace=Pace(delay=0.002)) as emu:
        deployment_path = (
            f"{emu.azure_endpoint}/openai/deployments/{DEPLOYMENT}?api-version={API_VERSION}"
        )
        with azure_client(emu, "websocket", base_url=deployment_path, model="other") as client:
            assert client.ask("hello", timeout=30).text == "You said: hello"
        monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)
        with azure_client(emu, "websocket", base_url=f"{emu.azure_endpoint}/openai") as client:
            client.ask("again", timeout=30)
        first, second = emu.sessions
        assert first.config["model"] == second.config["model"] == DEPLOYMENT
        for session in (first, second):
            (auth,) = session.auth
            assert auth["route"] == "realtime" and auth["scheme"] == "api-key"


def test_a_sideband_joins_an_azure_call_with_the_api_key_header() -> None:
    """The call's owner (here a WebRTC client; in an app, the browser) and a server-side
    sideband on the same Azure call: both authenticate with the resource key."""
    with Emulator(api_key=RESOURCE_KEY, turn_detection=None, pace=Pace(delay=0.002)) as emu:
        with azure_client(emu, "webrtc") as owner:
            call_id = owner.call_id
            assert call_id is not None
            with RealtimeClient(
                api_key=RESOURCE_KEY, base_url=emu.azure_url, call_id=call_id
            ) as sideband:
                assert sideband.ask("from the server", timeout=30).text.startswith("You said")
            session = emu.session(call_id)
    assert [(a["route"], a["scheme"]) for a in session.auth] == [
        ("calls", "api-key"),
        ("sideband", "api-key"),
        ("hangup", "api-key"),  # the owner's close() ends its call
    ]
