"""What the client needs from a connection, whatever carries it.

The gate, the tools, the dispatcher and the facade see only this interface; WebRTC
(:mod:`.webrtc`) and WebSocket (:mod:`.websocket`) differ only below it. Everything
here runs on the loop thread.

The contract:

* ``await connect()`` opens the connection within the transport's own timeout, or
  raises a typed error (:class:`SignalingError`, :class:`ConnectTimeoutError`) having
  released whatever it built.
* ``send(event)`` is synchronous and takes the event *in order* or raises: afterwards
  the event is handed to the connection (the data channel's SCTP queue, the socket's
  writer) and can only be lost with the connection itself, which ``on_closed``
  reports. A send that raises put nothing on the wire - that is what the gate rolls
  back on. An event larger than ``max_message_size`` raises
  :class:`MessageTooLargeError` before anything is queued.
* Server messages reach ``on_message(text)`` in arrival order, on the loop thread; a
  connection that ends without ``close()`` is reported once to ``on_closed(error)``.
* Barge-in is expressed by the client as the WebRTC protocol does it: ``response.cancel``
  then ``output_audio_buffer.clear``. A transport whose session has no server-side
  output buffer (a WebSocket session: the client plays the audio itself) translates
  the clear into its own: stop local playback, then ``conversation.item.truncate`` to
  what was played. So the client never asks which transport it has.
* ``await close(hangup=True)`` releases everything, bounded. ``hangup`` means "also
  end the call if this connection created it"; a sideband did not create its call,
  so closing it only detaches. ``await end_call()`` ends the call for every
  connection on it (the API's hang-up where there is a call), then closes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiortc import MediaStreamTrack

AudioIn = str | MediaStreamTrack | None
"""The user's audio: a file path (decoded with PyAV), a track (a microphone), or none."""

AudioFrameCallback = Callable[[Any], None]
"""Receives the model's audio, one ``av.AudioFrame`` at a time, on the loop thread."""

MessageHandler = Callable[[str], None]
ClosedHandler = Callable[[BaseException], None]


class Transport(Protocol):
    """One connection to a Realtime session (loop thread only)."""

    @property
    def call_id(self) -> str | None:
        """The call this connection speaks for (``rtc_...``), if there is a call."""
        ...

    @property
    def max_message_size(self) -> int:
        """The largest event, in bytes of UTF-8 JSON, that ``send`` accepts."""
        ...

    async def connect(self) -> None: ...

    def send(self, event: Mapping[str, Any]) -> None: ...

    async def close(self, *, hangup: bool = True) -> None: ...

    async def end_call(self) -> None: ...
