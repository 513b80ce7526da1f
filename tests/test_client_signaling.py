"""Connecting: both signaling forms, typed signaling errors, the connect timeout, and
API keys that never leak into logs, reprs or exceptions."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from loguru import logger

from rtclient import ConnectTimeoutError, RealtimeClient, SignalingError
from rtclient.emulator import Emulator

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-proj-SUPERSECRET0123456789abcdef"


def client_for(emu: Emulator, key: str, **kwargs: object) -> RealtimeClient:
    kwargs.setdefault("loopback_only", True)
    return RealtimeClient(api_key=key, base_url=emu.url, **kwargs)  # type: ignore[arg-type]


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


def test_standard_key_multipart_form_carries_session_and_tools() -> None:
    with Emulator(turn_detection=None) as emu:
        with client_for(emu, "sk-test", session={"instructions": "be brief"}) as client:
            assert client.call_id is not None and client.call_id.startswith("rtc_")
            assert client.send_text("hi").result(10)["response"]["status"] == "completed"  # type: ignore[union-attr]
            session = emu.sessions[-1]
            updates = [e for e in session.client_events if e["type"] == "session.update"]
            assert updates and updates[0]["session"]["instructions"] == "be brief"


def test_ephemeral_key_uses_the_plain_sdp_form() -> None:
    with Emulator(turn_detection=None) as emu:
        secret = emu.create_client_secret(ttl_seconds=60)
        assert secret["value"].startswith("ek_")
        with client_for(emu, secret["value"]) as client:
            assert client.send_text("hi").result(10)["response"]["status"] == "completed"  # type: ignore[union-attr]


def test_wrong_key_is_a_typed_signaling_error(log_lines: list[str]) -> None:
    with Emulator(api_key="sk-the-right-one") as emu:
        client = client_for(emu, SECRET)
        with pytest.raises(SignalingError) as info:
            client.connect()
        assert info.value.status == 401 and info.value.code
        for text in (str(info.value), repr(info.value), repr(client), "\n".join(log_lines)):
            assert SECRET not in text
        assert not client.closed or client.call_id is None


def test_expired_ephemeral_key_is_refused() -> None:
    with Emulator() as emu:
        secret = emu.create_client_secret(ttl_seconds=60)["value"]
        emu.expire_client_secret(secret)
        with pytest.raises(SignalingError) as info:
            client_for(emu, secret).connect()
        assert info.value.status == 401
        assert secret not in str(info.value)


def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        client = RealtimeClient(
            api_key=SECRET, base_url=f"http://127.0.0.1:{port}/v1", loopback_only=True
        )
        with pytest.raises(SignalingError) as info:
            client.connect()
        assert info.value.code == "connection_error" and SECRET not in str(info.value)


def test_connect_timeout_fires_when_ice_has_no_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc waits forever when no candidate pair exists; the connect timeout does not."""
    import aioice.ice

    from rtclient.transports._loopback import install

    install()  # the loopback wrapper stays in place when monkeypatch undoes this patch
    with Emulator() as emu:
        # The server answers, but the client's side offers no host candidate at all (a
        # machine whose interfaces are all down): ICE can never pair.
        gather = aioice.ice.get_host_addresses

        def no_client_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            if threading.current_thread().name == "rtclient-loop":
                return []
            return gather(use_ipv4, use_ipv6)

        monkeypatch.setattr(aioice.ice, "get_host_addresses", no_client_addresses)
        client = client_for(emu, "sk-test", connect_timeout=2.0)
        with pytest.raises(ConnectTimeoutError):
            client.connect()


def test_no_key_in_reprs_logs_or_errors_of_a_working_session(log_lines: list[str]) -> None:
    with Emulator(turn_detection=None) as emu:
        with client_for(emu, SECRET) as client:
            client.send_text("hello").result(10)  # type: ignore[union-attr]
            texts = [repr(client), str(client), repr(client._transport), repr(client._key)]
        texts.append("\n".join(log_lines))
        assert log_lines, "the logs were captured"
        for text in texts:
            assert SECRET not in text and SECRET[8:20] not in text


def test_connect_twice_is_refused_and_close_is_idempotent() -> None:
    with Emulator() as emu:
        client = client_for(emu, "sk-test").connect()
        with pytest.raises(Exception, match="connects once"):
            client.connect()
        closers = [threading.Thread(target=client.close) for _ in range(3)]
        for t in closers:
            t.start()
        for t in closers:
            t.join(20)
        client.close()
        assert client.closed
