"""A key that cannot be one is refused where it is given, typed and masked; whitespace
around a key (a key read from a file ends with a newline) is not part of it.

Before, a key with a control character went through construction and failed at connect
with aiohttp's bare ``ValueError`` about a header. The three places a key is given -
``RealtimeClient(...)``, ``create_call``, ``hangup_call`` - now raise
:class:`InvalidAPIKeyError` at once, before any request (nothing listens at the base
URL used here), with the key's kind, length and the bad character's position in the
message, never a character of the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from emulator.rawclient import make_offer

from rtclient import (
    InvalidAPIKeyError,
    LoopThread,
    RealtimeClient,
    RealtimeError,
    create_call,
    hangup_call,
)
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

KEY = "sk-proj-SUPERSECRET0123456789abcdef"
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens: a request would fail differently
BAD_KEYS = {
    "two lines of a file": KEY + "\nsk-proj-second",
    "a carriage return inside": KEY[:12] + "\r" + KEY[12:],
    "a NUL": KEY + "\x00",
    "a space inside": KEY[:10] + " " + KEY[10:],
    "a typographic dash": KEY.replace("-", "\u2013", 1),
}


@pytest.fixture
def offer(lt: LoopThread) -> Iterator[str]:
    async def make() -> tuple[Any, str]:
        pc, _channel, sdp = await make_offer()
        return pc, sdp

    pc, sdp = lt.call(make(), timeout=10)
    yield sdp
    lt.call(pc.close(), timeout=10)


def _assert_masked(error: BaseException) -> None:
    for text in (str(error), repr(error)):
        assert "SUPERSECRET" not in text and "0123456789" not in text and "second" not in text


@pytest.mark.parametrize("bad", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_the_three_entry_points_refuse_it_typed_and_masked(bad: str, offer: str) -> None:
    calls = {
        "RealtimeClient": lambda: RealtimeClient(api_key=bad, base_url=NOWHERE),
        "RealtimeClient(transport='websocket')": lambda: RealtimeClient(
            api_key=bad, base_url=NOWHERE, transport="websocket"
        ),
        "create_call": lambda: create_call(offer, api_key=bad, base_url=NOWHERE),
        "hangup_call": lambda: hangup_call("rtc_1", api_key=bad, base_url=NOWHERE),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidAPIKeyError) as info:
            call()
        error = info.value
        assert isinstance(error, RealtimeError) and isinstance(error, ValueError), name
        assert "position" in str(error) and "characters" in str(error), name
        _assert_masked(error)


def test_a_key_from_the_environment_is_checked_the_same(
    monkeypatch: pytest.MonkeyPatch, offer: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY + "\n\nsk-other")
    with pytest.raises(InvalidAPIKeyError) as info:
        RealtimeClient(base_url=NOWHERE)
    _assert_masked(info.value)
    with pytest.raises(InvalidAPIKeyError):
        create_call(offer, base_url=NOWHERE)
    with pytest.raises(InvalidAPIKeyError):
        hangup_call("rtc_1", base_url=NOWHERE)


def test_the_message_names_the_character_and_where() -> None:
    with pytest.raises(InvalidAPIKeyError) as info:
        RealtimeClient(api_key=KEY[:12] + "\n" + KEY[12:], base_url=NOWHERE)
    assert "U+000A LINE FEED at position 12" in str(info.value)
    assert f"a key of {len(KEY) + 1} characters" in str(info.value)


def test_whitespace_only_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RealtimeError, match="no API key"):
        RealtimeClient(api_key=" \n", base_url=NOWHERE)


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_a_key_read_from_a_file_connects(transport: str) -> None:
    """The emulator accepts only KEY: the newline (or CRLF, or spaces) around it was
    stripped, or the handshake would be refused (401) - or aiohttp would raise."""
    with Emulator(api_key=KEY, turn_detection=None) as emu:
        for key in (KEY + "\n", KEY + "\r\n", f"  {KEY}\t"):
            client = RealtimeClient(
                api_key=key, base_url=emu.url, transport=transport, loopback_only=True
            )
            with client:
                assert client.send_text("hi").result(20)["response"]["status"] == "completed"  # type: ignore[union-attr]


def test_create_and_hang_up_a_call_with_a_key_read_from_a_file(offer: str) -> None:
    with Emulator(api_key=KEY, turn_detection=None) as emu:
        answer = create_call(offer, api_key=KEY + "\n", base_url=emu.url)
        hangup_call(answer.call_id, api_key=KEY + "\r\n", base_url=emu.url)
        assert emu.session(answer.call_id).closed
