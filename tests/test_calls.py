"""create_call / hangup_call: an app server creating and ending a browser's call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator.rawclient import make_offer
from loguru import logger

from rtclient import (
    CallAnswer,
    CallNotFoundError,
    LoopThread,
    RealtimeError,
    SignalingError,
    create_call,
    hangup_call,
    tool,
)
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-proj-SUPERSECRET0123456789abcdef"


@tool
def lookup_order(order_id: int) -> dict[str, int]:
    """An order's status.

    Args:
        order_id: The order number.
    """
    return {"order_id": order_id}


@pytest.fixture
def offer(lt: LoopThread) -> Iterator[str]:
    """A browser's SDP offer (its peer is closed after the test: no call is completed)."""

    async def make() -> tuple[object, str]:
        pc, _channel, sdp = await make_offer()
        return pc, sdp

    pc, sdp = lt.call(make(), timeout=10)
    yield sdp
    lt.call(pc.close(), timeout=10)  # type: ignore[attr-defined]


def test_the_call_gets_the_session_and_the_tools_as_a_client_describes_them(
    offer: str, lt: LoopThread
) -> None:
    with Emulator(turn_detection=None) as emu:
        answer = create_call(
            offer,
            session={"instructions": "be brief"},
            tools=[lookup_order],
            api_key="sk-test",
            base_url=emu.url,
            loop_thread=lt,
        )
        assert isinstance(answer, CallAnswer) and answer.sdp.startswith("v=0")
        assert answer.call_id.startswith("rtc_")
        config = emu.session(answer.call_id).config
        assert config["instructions"] == "be brief" and config["model"] == "gpt-realtime-2"
        (described,) = config["tools"]
        assert described["name"] == "lookup_order"
        assert described["parameters"]["properties"]["order_id"] == {
            "type": "integer",
            "description": "The order number.",
        }
        hangup_call(answer.call_id, api_key="sk-test", base_url=emu.url)  # a private loop
        assert emu.session(answer.call_id).closed
        with pytest.raises(CallNotFoundError) as info:
            hangup_call(answer.call_id, api_key="sk-test", base_url=emu.url)
        assert (info.value.status, info.value.code) == (404, "call_id_not_found")


def test_refusals_are_typed_and_never_show_the_key(offer: str) -> None:
    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{message}")
    try:
        with Emulator(api_key="sk-the-right-one") as emu:
            with pytest.raises(SignalingError) as wrong_key:
                create_call(offer, api_key=SECRET, base_url=emu.url)
            assert wrong_key.value.status == 401 and wrong_key.value.code == "invalid_api_key"
            with pytest.raises(SignalingError) as bad_offer:
                create_call("not sdp", api_key="sk-the-right-one", base_url=emu.url)
            assert (bad_offer.value.status, bad_offer.value.code) == (400, "invalid_offer")
            assert emu.stats()["sessions"] == 0
    finally:
        logger.remove(sink)
        logger.disable("rtclient")
    for text in (str(wrong_key.value), repr(wrong_key.value), "\n".join(lines)):
        assert SECRET not in text


def test_what_cannot_work_is_refused_before_any_request(
    offer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url = "http://127.0.0.1:9/v1"  # nothing listens: nothing may be posted
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RealtimeError, match="OPENAI_API_KEY"):
        create_call(offer, base_url=base_url)
    with pytest.raises(RealtimeError, match="standard key"):
        create_call(offer, api_key="ek_browser", base_url=base_url)
    with pytest.raises(RealtimeError, match="standard key"):
        hangup_call("rtc_1", api_key="ek_browser", base_url=base_url)
    with pytest.raises(ValueError, match="two tools"):
        create_call(offer, tools=[lookup_order, lookup_order], api_key="sk", base_url=base_url)
    with pytest.raises(SignalingError) as unreachable:
        create_call(offer, api_key=SECRET, base_url=base_url, timeout=5)
    assert unreachable.value.code == "connection_error" and SECRET not in str(unreachable.value)


# -- GPT-Live: the browser always goes through the app (no ephemeral keys) ---------------


def test_create_live_session_gets_the_session_and_the_sideband_attaches(
    offer: str, lt: LoopThread
) -> None:
    from rtclient import LiveClient, LiveSessionAnswer, create_live_session
    from rtclient.sip import hangup_call as hangup

    with Emulator() as emu:
        answer = create_live_session(
            offer,
            session={"instructions": "Delegate order questions.",
                     "client": {"data_channel": {"allowed_client_events": []}}},
            api_key="sk-test",
            base_url=emu.url,
            loop_thread=lt,
        )  # fmt: skip
        assert isinstance(answer, LiveSessionAnswer) and answer.sdp.startswith("v=0")
        assert answer.session_id.startswith("live_")
        config = emu.live_session(answer.session_id).config
        assert config is not None and config["model"] == "gpt-live-1"
        assert config["instructions"] == "Delegate order questions."
        assert config["client"]["data_channel"]["allowed_client_events"] == []
        # the app's sideband attaches to the session the browser will hold
        with LiveClient(
            session_id=answer.session_id, api_key="sk-test", base_url=emu.url, loop_thread=lt
        ) as sideband:
            assert sideband.session_id == answer.session_id
        hangup(answer.session_id, api="live", api_key="sk-test", base_url=emu.url)
        assert emu.live_session(answer.session_id).closed


def test_create_live_session_refusals_are_typed_and_never_show_the_key(offer: str) -> None:
    from rtclient import create_live_session

    lines: list[str] = []
    logger.enable("rtclient")
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{message}")
    try:
        with Emulator(api_key="sk-the-right-one") as emu:
            with pytest.raises(SignalingError) as wrong_key:
                create_live_session(offer, api_key=SECRET, base_url=emu.url)
            assert wrong_key.value.status == 401
            with pytest.raises(SignalingError) as strict:  # the session object is strict
                create_live_session(
                    offer, session={"temperature": 0.2}, api_key="sk-the-right-one",
                    base_url=emu.url,
                )  # fmt: skip
            assert (strict.value.status, strict.value.code) == (400, "unknown_parameter")
            assert emu.live_stats()["sessions"] == 0
    finally:
        logger.remove(sink)
        logger.disable("rtclient")
    for text in (str(wrong_key.value), repr(wrong_key.value), "\n".join(lines)):
        assert SECRET not in text
    base_url = "http://127.0.0.1:9/v1"  # nothing listens: nothing may be posted
    with pytest.raises(RealtimeError, match="standard key"):
        create_live_session(offer, api_key="ek_browser", base_url=base_url)
    with pytest.raises(ValueError, match=r"audio\.format"):
        create_live_session(
            offer, session={"audio": {"format": {"type": "audio/pcm", "rate": 24000}}},
            api_key="sk", base_url=base_url,
        )  # fmt: skip
