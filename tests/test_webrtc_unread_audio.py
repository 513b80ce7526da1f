"""A WebRTC client that wants none of the model's audio does not decode it.

aiortc decodes every received audio frame on a thread per receiver, read or not. With no
``on_audio`` and no ``audio_out`` the transport ends that decoding once the call is up:
the audio still arrives (RTP received and counted), nothing is decoded, and the
decoder thread is gone. ``WebRTCTransport.decode_unconsumed_audio = True`` restores
aiortc's way (decoded into a ``MediaBlackhole``), the bench's comparison.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtclient import RealtimeClient
from rtclient.emulator import Emulator
from rtclient.transports.webrtc import WebRTCTransport

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., RealtimeClient]


def receiver(client: RealtimeClient) -> Any:
    """The client's one audio receiver (test-only peek; the emulator, in this process,
    has receivers and decoder threads of its own)."""
    (only,) = client._transport._pc.getReceivers()  # type: ignore[union-attr]
    return only


def decoder(client: RealtimeClient) -> threading.Thread | None:
    """aiortc's decoder thread of the client's receiver (its private field), if any."""
    thread: threading.Thread | None = receiver(client)._RTCRtpReceiver__decoder_thread
    return thread


def rtp_received(client: RealtimeClient) -> int:
    """Packets the client's audio receiver has taken in (its inbound-rtp stats)."""

    async def read() -> int:
        stats = await receiver(client).getStats()
        return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")

    return client._loop_thread.call(read(), timeout=10)  # type: ignore[union-attr]


def speak(client: RealtimeClient) -> None:
    """One spoken response, played out to the end by the emulator."""
    stopped = threading.Event()
    client.on("output_audio_buffer.stopped", lambda e: stopped.set(), raw=True)
    client.send_text("say something", respond=False)
    client.request_response(output_modalities=["audio"]).result(20)
    assert stopped.wait(20)


@pytest.fixture
def decode_unread() -> Iterator[None]:
    WebRTCTransport.decode_unconsumed_audio = True
    try:
        yield
    finally:
        WebRTCTransport.decode_unconsumed_audio = False


def test_unread_audio_is_received_but_not_decoded(
    rt_emulator: Emulator, rt_connect: Connect
) -> None:
    client = rt_connect()
    assert decoder(client) is None  # ended once the call was up
    speak(client)
    assert rtp_received(client) > 10  # the audio came, and was left undecoded
    assert decoder(client) is None


def test_aiortcs_way_decodes_into_a_blackhole(
    rt_emulator: Emulator, rt_connect: Connect, decode_unread: Any
) -> None:
    client = rt_connect()
    thread = decoder(client)
    assert thread is not None and thread.is_alive()
    speak(client)
    assert rtp_received(client) > 10
    client.close()
    assert not thread.is_alive()  # aiortc's stop() joined it
