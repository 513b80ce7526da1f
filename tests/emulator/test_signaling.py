"""Signaling: the HTTP surface's answers and errors, as the real API gives them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openai.types.realtime import ClientSecretCreateResponse

from rtclient.emulator import Emulator

from .conftest import MakeEmulator, async_test, tool
from .rawclient import RawClient, make_offer, post_call
from .wsclient import WsClient

pytestmark = pytest.mark.timeout(30)


def _error(body: str) -> dict[str, Any]:
    """The API's JSON error body, and never a stack trace."""
    import json

    assert "Traceback" not in body
    parsed = json.loads(body)
    assert set(parsed) == {"error"}
    assert set(parsed["error"]) == {"message", "type", "param", "code"}
    return dict(parsed["error"])


async def _offer() -> str:
    pc, _channel, sdp = await make_offer()
    await pc.close()
    return sdp


@async_test
async def test_both_call_forms_answer_201_with_sdp_and_location(emu: Emulator) -> None:
    offer = await _offer()
    async with aiohttp.ClientSession() as http:
        status, body, headers = await post_call(http, emu.url, offer)
        assert status == 201 and body.startswith("v=0")
        assert headers["Content-Type"].startswith("application/sdp")
        assert headers["Location"].startswith("/v1/realtime/calls/rtc_")
        session = {"type": "realtime", "model": "gpt-realtime-mini", "tools": [tool("ping")]}
        status, body, headers = await post_call(
            http, emu.url, offer, form="multipart", session=session
        )
        assert status == 201 and body.startswith("v=0")
        call_id = headers["Location"].rsplit("/", 1)[-1]
    config = emu.session(call_id).config
    assert config["model"] == "gpt-realtime-mini"
    assert [t["name"] for t in config["tools"]] == ["ping"]


@async_test
async def test_ephemeral_keys_mint_connect_and_expire(emu: Emulator) -> None:
    offer = await _offer()
    async with aiohttp.ClientSession() as http:
        request = {
            "expires_after": {"anchor": "created_at", "seconds": 120},
            "session": {"type": "realtime", "instructions": "be brief", "tools": [tool("ping")]},
        }
        async with http.post(
            f"{emu.url}/realtime/client_secrets",
            json=request,
            headers={"Authorization": "Bearer sk-test"},
        ) as response:
            assert response.status == 200
            secret = ClientSecretCreateResponse.model_validate(await response.json())
        assert secret.value.startswith("ek_")
        assert secret.session.type == "realtime"
        assert secret.session.instructions == "be brief"

        status, body, headers = await post_call(http, emu.url, offer, api_key=secret.value)
        assert status == 201
        config = emu.session(headers["Location"].rsplit("/", 1)[-1]).config
        assert config["instructions"] == "be brief"

        emu.expire_client_secret(secret.value)
        status, body, _ = await post_call(http, emu.url, offer, api_key=secret.value)
        assert status == 401
        error = _error(body)
        assert error["code"] == "invalid_api_key" and "expired" in error["message"]
        assert secret.value not in body

        status, body, _ = await post_call(http, emu.url, offer, api_key="ek_never_minted_key")
        assert status == 401 and _error(body)["code"] == "invalid_api_key"

        fresh = emu.create_client_secret(ttl_seconds=60)
        async with http.post(
            f"{emu.url}/realtime/client_secrets",
            json={},
            headers={"Authorization": f"Bearer {fresh['value']}"},
        ) as response:
            assert response.status == 401  # minting needs a standard key
            _error(await response.text())


@async_test
async def test_keys_are_checked(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(api_key="sk-the-right-key")
    offer = await _offer()
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post_call(http, emu.url, offer, api_key="")
        assert status == 401
        error = _error(body)
        assert error["code"] is None and "didn't provide an API key" in error["message"]

        status, body, _ = await post_call(http, emu.url, offer, api_key="sk-a-wrong-key-0123")
        assert status == 401
        error = _error(body)
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert "sk-a-wrong-key-0123" not in body  # redacted, as the real API does

        status, _, _ = await post_call(http, emu.url, offer, api_key="sk-the-right-key")
        assert status == 201


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("text/plain", None, "unsupported_content_type"),
        ("application/json", '{"sdp": "v=0"}', "unsupported_content_type"),
        ("application/sdp", "hello, I am not SDP", "invalid_offer"),
        (
            "application/sdp",
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=garbage\r\n",
            "invalid_offer",
        ),
    ],
)
@async_test
async def test_bad_offers_get_400_json(
    emu: Emulator, content_type: str, body: str | None, code: str
) -> None:
    offer = body if body is not None else await _offer()
    async with aiohttp.ClientSession() as http:
        status, text, _ = await post_call(http, emu.url, offer, content_type=content_type)
    assert status == 400
    error = _error(text)
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert emu.stats()["sessions"] == 0


@async_test
async def test_multipart_errors(emu: Emulator) -> None:
    offer = await _offer()
    async with aiohttp.ClientSession() as http:
        status, text, _ = await post_call(
            http, emu.url, offer, form="multipart", session={"model": "gpt-realtime"}
        )
        assert status == 400
        error = _error(text)
        assert (error["code"], error["param"]) == ("missing_required_parameter", "session.type")

        form = aiohttp.FormData()
        form.add_field("session", '{"type": "realtime"}', content_type="application/json")
        async with http.post(
            f"{emu.url}/realtime/calls", data=form, headers={"Authorization": "Bearer sk-test"}
        ) as response:
            assert response.status == 400
            assert _error(await response.text())["param"] == "sdp"


@async_test
async def test_client_secret_validation(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        for request, param in [
            ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "expires_after.seconds"),
            ({"session": {"instructions": "x"}}, "session.type"),
        ]:
            async with http.post(
                f"{emu.url}/realtime/client_secrets",
                json=request,
                headers={"Authorization": "Bearer sk-test"},
            ) as response:
                assert response.status == 400
                assert _error(await response.text())["param"] == param


@async_test
async def test_hangup(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer sk-test"}
        async with http.post(f"{emu.url}/realtime/calls/rtc_unknown/hangup", headers=headers) as r:
            assert r.status == 404
            assert _error(await r.text())["code"] == "call_id_not_found"

        client = await RawClient.connect(emu.url, http=http)
        try:
            await client.until("session.created")
            async with http.post(
                f"{emu.url}/realtime/calls/{client.call_id}/hangup", headers=headers
            ) as response:
                assert response.status == 200
            assert emu.session(client.call_id).closed
            assert await emu.wait_for_async(lambda: emu.stats()["active_sessions"] == 0)
        finally:
            await client.close()


@async_test
async def test_unknown_routes_and_methods_answer_json(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.url}/nope") as response:
            assert response.status == 404
            assert _error(await response.text())["message"] == "Invalid URL (GET /v1/nope)"
        async with http.get(f"{emu.url}/realtime/calls") as response:
            assert response.status == 405
            _error(await response.text())


@async_test
async def test_websocket_signaling(emu: Emulator) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing_model:
        await WsClient.connect(emu.url, model="")
    assert missing_model.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as no_key:
        await WsClient.connect(emu.url, api_key="")
    assert no_key.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as unknown_call:
        await WsClient.connect(emu.url, model="", call_id="rtc_unknown")
    assert unknown_call.value.status == 404
    assert emu.stats()["sessions"] == 0


@async_test
async def test_a_sideband_websocket_joins_the_call(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    sideband = await WsClient.connect(emu.url, model="", call_id=client.call_id)
    try:
        await client.until("session.created")
        await sideband.send(
            {
                "type": "response.create",
                "event_id": "server_side",
                "response": {"output_modalities": ["text"]},
            }
        )
        on_call = (await client.until("response.done"))["response"]
        on_side = (await sideband.until("response.done"))["response"]
        assert on_call["id"] == on_side["id"]
        assert emu.stats()["sessions"] == 1
        await sideband.close()
        await client.send({"type": "response.create", "event_id": "still_there"})
        assert (await client.until("response.done"))["response"]["status"] == "completed"
    finally:
        await sideband.close()
        await client.close()


@async_test
async def test_control_stats_route(emu: Emulator) -> None:
    client = await RawClient.connect(emu.url)
    try:
        await client.send({"type": "response.create", "event_id": "a"})
        await client.send({"type": "response.create", "event_id": "b"})
        await client.until("response.done")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emu.control_url}/stats") as response:
                stats = await response.json()
            async with http.get(f"{emu.control_url}/calls/{client.call_id}") as response:
                one = await response.json()
        assert {"sessions", "creates", "rejections", "responses"} <= set(stats)
        assert (stats["sessions"], stats["creates"], stats["rejections"]) == (1, 2, 1)
        assert stats["responses"] == 1
        assert [e["event_id"] for e in one["client_events"]] == ["a", "b"]
        assert one["errors"][0]["error"]["event_id"] == "b"
    finally:
        await client.close()
