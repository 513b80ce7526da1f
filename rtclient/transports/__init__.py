"""The connections a :class:`~rtclient.RealtimeClient` can speak over.

A choice, not a hierarchy: :mod:`.base` says what the client needs (connect, an
in-order ``send`` that raises when nothing reached the wire, ordered delivery of server
messages, close, ending the call, and how barge-in is expressed); :mod:`.webrtc` and
:mod:`.websocket` each meet it their own way. ``RealtimeClient._make_transport`` is the
one place that picks one.

========================  =====================================================
``transport="webrtc"``    aiortc: Opus audio on a track, events on a data
                          channel. What a browser speaks; the default.
``transport="websocket"`` aiohttp: events and base64 PCM audio on one socket.
                          Server to server, cheapest to run.
``call_id="rtc_..."``     a WebSocket sideband on a call someone else holds (a
                          browser): the app keeps the key, tools and gate.
========================  =====================================================

GPT-Live speaks over the same two, with its own endpoints and session clock:
:mod:`.live` (``LiveWebSocketTransport``, ``LiveWebRTCTransport``).
"""

from __future__ import annotations

from typing import Literal

from rtclient._secret import Secret
from rtclient.transports.base import AudioFrameCallback, AudioIn, Transport, Written, when_written
from rtclient.transports.endpoint import Endpoint
from rtclient.transports.live import LiveWebRTCTransport, LiveWebSocketTransport
from rtclient.transports.webrtc import WebRTCTransport
from rtclient.transports.websocket import WebSocketTransport

Kind = Literal["webrtc", "websocket"]

__all__ = [
    "AudioFrameCallback",
    "AudioIn",
    "Endpoint",
    "Kind",
    "LiveWebRTCTransport",
    "LiveWebSocketTransport",
    "Transport",
    "WebRTCTransport",
    "WebSocketTransport",
    "Written",
    "choose",
    "when_written",
]


def choose(
    transport: str | None,
    call_id: str | None,
    key: Secret,
    *,
    audio: bool,
    base_url: str | None = None,
) -> Kind:
    """Which transport a client's options ask for; refuses combinations that cannot work
    (at construction, before anything connects), such as WebRTC on an Azure endpoint
    with a dated API version (:mod:`.endpoint`)."""
    if transport not in (None, "webrtc", "websocket"):
        raise ValueError(f"transport must be 'webrtc' or 'websocket', not {transport!r}")
    endpoint = Endpoint.parse(base_url) if base_url is not None else None
    if call_id is None:
        if transport == "websocket":
            return "websocket"
        if endpoint is not None:
            endpoint.check_call("WebRTC")
        return "webrtc"
    if endpoint is not None:
        endpoint.check_call("a sideband")
    if transport == "webrtc":
        raise ValueError("a sideband (call_id=...) attaches over a WebSocket, not WebRTC")
    if not call_id.strip():
        raise ValueError("call_id is empty")
    if key.is_ephemeral:
        raise ValueError("a sideband attaches with a standard key; ephemeral keys cannot")
    if audio:
        raise ValueError("a sideband carries no audio: the call's audio is the browser's")
    return "websocket"
