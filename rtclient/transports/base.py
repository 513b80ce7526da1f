"""What the client needs from a connection, whatever carries it.

The gate, the tools, the dispatcher and the facade see only this interface; WebRTC
(:mod:`.webrtc`) and WebSocket (:mod:`.websocket`) differ only below it. Everything
here runs on the loop thread.

The contract:

* ``await connect()`` opens the connection within the transport's own timeout, or
  raises a typed error (:class:`SignalingError`, :class:`ConnectTimeoutError`) having
  released whatever it built.
* ``send(event)`` is synchronous and takes the event *in order* or raises; it returns
  ``None`` when the event is already sent, or a :data:`Written` future that says when
  it is (:func:`when_written` follows a send made through the client's bridge). "Sent"
  means *written to the connection*, which from then on delivers it in order or dies
  (and ``on_closed`` reports that):

  - WebRTC: accepted by the data channel's SCTP association (``RTCDataChannel.send``,
    which never waits). SCTP then retransmits it until the peer acknowledges it; it
    is lost only with the association. aiortc says nothing per message beyond that,
    so ``send`` returns ``None``.
  - WebSocket: aiohttp's ``send_str`` returned on a socket that is still open - the
    frame is in the kernel's send buffer or in asyncio's (bounded by its high-water
    mark). ``send`` only queues it for the one writer task (the socket's order is the
    order of ``send`` calls) and returns the future of that write, which fails with
    :class:`ConnectionLostError` if the socket dies first: an event queued behind a
    stalled socket is never reported sent.

  Neither is a receipt: what the server acknowledges is the server's answer (a
  ``response.created``, a ``session.updated``). What "sent" rules out is the silent
  loss: an event reported sent can only be lost with its connection, and every waiter
  then fails with the connection's error. A send that raises put nothing on the wire:
  that is what the gate rolls back on. Once ``send`` took a ``response.create`` it is
  committed (the writer writes it, or the connection dies and closes the gate).
  A tool output is counted sent only when written (the runner waits for
  :func:`when_written`). An event larger than ``max_message_size`` raises
  :class:`MessageTooLargeError` before anything is queued.
* Server messages reach ``on_message(message)`` in arrival order, on the loop thread:
  the text as received, or the event dict a transport already decoded from it (a
  WebSocket reads each audio delta to play it; the client then does not decode it
  again). A connection that ends without ``close()`` is reported once to
  ``on_closed(error)``.
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

import concurrent.futures
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeAlias

from aiortc import MediaStreamTrack

AudioIn = str | MediaStreamTrack | None
"""The user's audio: a file path (decoded with PyAV), a track (a microphone), or none."""

AudioFrameCallback = Callable[[Any], None]
"""Receives the model's audio, one ``av.AudioFrame`` at a time, on the loop thread."""

MessageHandler = Callable[[str | bytes | dict[str, Any]], None]
ClosedHandler = Callable[[BaseException], None]

Written: TypeAlias = "concurrent.futures.Future[None]"
"""The outcome of one event's write: done (on the loop thread) once it is written, or
failed (:class:`ConnectionLostError`) if the connection ends first. A
``concurrent.futures.Future``: its callbacks run at once, in the writer's step."""


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

    def send(self, event: Mapping[str, Any]) -> Written | None: ...

    async def close(self, *, hangup: bool = True) -> None: ...

    async def end_call(self) -> None: ...


def when_written(queued: concurrent.futures.Future[Any]) -> concurrent.futures.Future[None]:
    """The write's outcome of an event handed to the loop thread, from the future of that
    hand-off (the client's bridge resolves it with what ``send`` returned): failed if the
    hand-off or ``send`` failed, or if the write does; done once the event is written."""
    outcome: concurrent.futures.Future[None] = concurrent.futures.Future()

    def copy(done: concurrent.futures.Future[Any]) -> None:
        exc = done.exception() if not done.cancelled() else concurrent.futures.CancelledError()
        if exc is not None:
            outcome.set_exception(exc)
        else:
            outcome.set_result(None)

    def handed(done: concurrent.futures.Future[Any]) -> None:
        written = None if done.cancelled() or done.exception() else done.result()
        if isinstance(written, concurrent.futures.Future):
            written.add_done_callback(copy)
        else:
            copy(done)

    queued.add_done_callback(handed)
    return outcome
