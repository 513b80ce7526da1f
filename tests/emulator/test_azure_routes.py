"""The emulator's Azure OpenAI routes, checked with the official ``openai`` clients: the
dated ``/openai/realtime?api-version=&deployment=`` route as ``AzureOpenAI`` asks it
(``api-key`` header), and the v1 ``/openai/v1/realtime`` route as ``OpenAI`` asks it
with a token provider (``Authorization: Bearer``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openai import AzureOpenAI, OpenAI

from rtclient.emulator import Emulator
from rtclient.emulator.auth import redact

from .conftest import MakeEmulator, async_test

pytestmark = pytest.mark.timeout(30)

KEY = "azure-resource-key-0123456789abcdef"
DEPLOYMENT = "contoso-realtime-2"
API_VERSION = "2025-04-01-preview"


def _session_created(connection: Any) -> Any:
    for event in connection:
        if event.type == "session.created":
            return event
    raise AssertionError("closed before session.created")


def test_the_azure_openai_client_reaches_the_dated_route(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(api_key=KEY)
    client = AzureOpenAI(
        api_key=KEY,
        api_version=API_VERSION,
        azure_endpoint=emu.azure_endpoint,
        websocket_base_url=f"ws://{emu.host}:{emu.port}/openai",  # the package says wss://
        max_retries=0,
    )
    with client.realtime.connect(model=DEPLOYMENT) as connection:
        created = _session_created(connection)
    assert created.session.model == DEPLOYMENT
    (session,) = emu.sessions
    assert session.auth == [{"route": "realtime", "scheme": "api-key", "credential": redact(KEY)}]


def test_the_openai_client_with_a_token_provider_reaches_the_v1_route(emu: Emulator) -> None:
    token = "eyJ0eXAiOiJKV1QiLCJ.entra.c2lnbmF0dXJl"
    client = OpenAI(base_url=emu.azure_url, api_key=lambda: token, max_retries=0)
    with client.realtime.connect(model=DEPLOYMENT) as connection:
        created = _session_created(connection)
    assert created.session.model == DEPLOYMENT
    (session,) = emu.sessions
    assert session.auth == [{"route": "realtime", "scheme": "bearer", "credential": redact(token)}]


@async_test
async def test_refusals_on_the_azure_routes(emu: Emulator) -> None:
    """``api-key`` is Azure's header only; the dated route needs both query parameters."""
    base = emu.azure_endpoint.replace("http://", "ws://")
    cases = [
        (f"{base}/v1/realtime", {"model": DEPLOYMENT}, 401, "api-key"),
        (f"{base}/openai/realtime", {"deployment": DEPLOYMENT}, 400, "api-version"),
        (f"{base}/openai/realtime", {"api-version": API_VERSION}, 400, "deployment"),
    ]
    async with aiohttp.ClientSession() as http:
        for url, params, status, why in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, params=params, headers={"api-key": KEY})
            assert refused.value.status == status, why
        async with http.post(f"{emu.azure_url}/realtime/client_secrets", json={}) as resp:
            assert resp.status == 401  # no key at all
        headers = {"api-key": KEY}
        async with http.post(f"{emu.azure_url}/realtime/client_secrets", headers=headers) as ok:
            assert ok.status == 200 and (await ok.json())["value"].startswith("ek_")
    assert emu.stats()["sessions"] == 0
