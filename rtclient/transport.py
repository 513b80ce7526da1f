"""The WebRTC transport under its first name; the transports now live in
:mod:`rtclient.transports` (``webrtc``, ``websocket``, and the interface in ``base``)."""

from rtclient.transports.base import AudioFrameCallback, AudioIn
from rtclient.transports.webrtc import DEFAULT_MAX_MESSAGE_SIZE
from rtclient.transports.webrtc import WebRTCTransport as Transport

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "AudioFrameCallback", "AudioIn", "Transport"]
