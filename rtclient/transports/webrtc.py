"""WebRTC to the Realtime API over aiortc. Everything here runs on the loop thread.

The transport for a browser-like client: audio travels as Opus on an RTP track (the
server plays the model's voice into it, and keeps the output audio buffer that
``output_audio_buffer.clear`` empties on barge-in); events travel on a data channel.
One ``WebRTCTransport`` is one call: the ``oai-events`` data channel (created *before* the
offer, as the API requires), one sendrecv audio transceiver, the SDP exchange over
HTTP, and hang-up. Facts measured on aiortc that shape it:

* An unreachable STUN server costs 5 s per side, so the default is ``iceServers=[]``.
* Where ICE finds no candidate at all, aiortc waits forever without an error: the
  whole connect runs under one ``connect_timeout``.
* aioice offers every interface but loopback; ``loopback_only=True`` offers 127.0.0.1
  alone (tests and benchmarks: no packet leaves the machine).
* aiortc decodes every received audio frame, on one thread per receiver, whether or
  not anyone reads the track; an unread track then grows the process by ~1.1 MB/s.
  So the track is consumed by a user callback or a recording - or, when nobody wants
  the audio, its decoding is ended once the call is up (RTP is still received and
  reported on, never decoded): no ``MediaBlackhole`` decoding into the void, and one
  thread less per call (``decode_unconsumed_audio``; bench/README.md has the numbers).
* aiortc's ``max-message-size`` is 262,144 bytes; a larger event is refused here with
  :class:`MessageTooLargeError` before anything is queued.
* A dead peer is only noticed by ICE consent after ~30 s and sends "succeed"
  meanwhile; the gate's confirm watchdog and typed errors for waiters cover that.
* "Sent" here (``send`` returns ``None``: already sent) means accepted by the SCTP
  association: ``RTCDataChannel.send`` hands the message to aiortc's SCTP transport
  and never waits; it queues the message (in order, one message's chunks in flight at
  a time), sends it as the congestion window allows and retransmits it until the peer
  acknowledges it. No queue of ours is left to strand, and aiortc reports no
  per-message acknowledgement to wait for (``bufferedAmount`` only drops when a
  message is cut into chunks, not when the peer has it). A message the association
  holds when it dies is lost with it - which ``on_closed`` reports, failing every
  waiter; so a tool output counted sent, then lost, fails its round's follow-up with
  the connection's error rather than being counted undelivered.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaPlayer, MediaRecorder
from aiortc.mediastreams import MediaStreamError

from rtclient._secret import Secret
from rtclient.core import events as ev
from rtclient.errors import (
    ConnectionLostError,
    ConnectTimeoutError,
    MessageTooLargeError,
    SignalingError,
    WaitTimeoutError,
)
from rtclient.logs import logger, short_id
from rtclient.transports import signaling
from rtclient.transports._loopback import loopback_only as _loopback_only
from rtclient.transports.base import AudioFrameCallback, AudioIn, ClosedHandler, MessageHandler

DEFAULT_MAX_MESSAGE_SIZE = 262_144


class _SilentTrack(MediaStreamTrack):
    """The default audio input: a track that never yields a frame.

    The server hears silence and nothing is encoded or sent. A transceiver with *no*
    track would do the same on the wire, but aiortc's sender then polls every 20 ms,
    which costs ~1.2% of a core per idle session here; waiting in ``recv`` costs
    nothing until ``stop()`` ends it.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


class WebRTCTransport:
    """One WebRTC call to a Realtime server (loop thread only)."""

    HANGUP_PATH = signaling.REALTIME_CALLS

    decode_unconsumed_audio = False
    """Decode a remote track nobody reads into a ``MediaBlackhole`` (aiortc's way)
    instead of ending its decoding once the call is up. Off: decoding what is thrown
    away costs CPU and a thread per call. On only for comparison (``bench/scale.py``)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        model: str,
        session: Mapping[str, Any] | None,
        on_message: MessageHandler,
        on_closed: ClosedHandler,
        ice_servers: list[RTCIceServer] | None = None,
        loopback_only: bool = False,
        connect_timeout: float = 15.0,
        audio_in: AudioIn = None,
        audio_out: str | None = None,
        on_audio_frame: AudioFrameCallback | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.model = model
        self._session = dict(session or {})
        self._on_message = on_message
        self._on_closed = on_closed
        self._ice_servers = list(ice_servers or [])
        self._loopback_only = loopback_only
        self.connect_timeout = connect_timeout
        self._audio_in = audio_in
        self._audio_out = audio_out
        self._on_audio_frame = on_audio_frame
        self.call_id: str | None = None
        self._pc: RTCPeerConnection | None = None
        self._channel: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._sinks: list[MediaBlackhole | MediaRecorder] = []
        self._unread: list[MediaStreamTrack] = []  # remote tracks nobody consumes
        self._player: MediaPlayer | None = None
        self._frame_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._closing = False
        self._ending = False
        self._closed_reported = False

    def __repr__(self) -> str:
        return f"<WebRTCTransport {self.base_url} call={self.call_id} key={self._key!r}>"

    # -- connect -------------------------------------------------------------------

    async def connect(self) -> None:
        """Offer, exchange SDP, and wait for ``oai-events`` to open, within the timeout."""
        # A failed or cancelled connect hangs up a call the server already created:
        # left alone it would live on server-side until ICE consent gives up.
        try:
            await asyncio.wait_for(self._connect(), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ConnectTimeoutError(
                f"the data channel did not open within {self.connect_timeout}s "
                "(no ICE candidate pair, or the server did not answer)"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> None:
        self._http = aiohttp.ClientSession()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        self._pc = pc
        opened = asyncio.Event()
        channel = pc.createDataChannel("oai-events")
        self._channel = channel
        channel.on("open", opened.set)
        channel.on("message", self._receive)
        channel.on("close", lambda: self._report_closed("the data channel closed"))

        @pc.on("connectionstatechange")
        def _state() -> None:
            logger.debug("[CONNECTION] {} state {}", self.call_id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                self._report_closed(f"the peer connection is {pc.connectionState}")

        pc.on("track", self._consume_track)
        pc.addTransceiver(self._input_track(), direction="sendrecv")
        with _loopback_only(self._loopback_only):
            await pc.setLocalDescription(await pc.createOffer())
            answer = await self._post_offer(pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await opened.wait()
        self._end_unread_decoding()
        logger.info("[CONNECTION] {} open ({})", self.call_id, self.base_url)

    def _input_track(self) -> MediaStreamTrack:
        if isinstance(self._audio_in, MediaStreamTrack):
            return self._audio_in
        if isinstance(self._audio_in, str):
            self._player = MediaPlayer(self._audio_in)
            if self._player.audio is None:
                raise ValueError(f"audio_in {self._audio_in!r} has no audio stream")
            return self._player.audio
        return _SilentTrack()

    async def _signal(self, sdp: str) -> tuple[str, str | None]:
        """The SDP exchange with the API: ``(answer, call_id)``."""
        assert self._http is not None
        session = {"type": "realtime", "model": self.model, **self._session}
        return await signaling.post_offer(
            self._http, self.base_url, self._key, sdp, session=session
        )

    async def _post_offer(self, sdp: str) -> str:
        post = asyncio.ensure_future(self._signal(sdp))
        post.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
        try:
            answer, self.call_id = await asyncio.shield(post)
        except asyncio.CancelledError:
            # Cancelled mid-request (close() during connect): the server may create the
            # call anyway. Learn its id (bounded) so that close() can hang it up.
            try:
                _, self.call_id = await asyncio.wait_for(post, signaling.HANGUP_TIMEOUT)
            except Exception:
                pass
            raise
        return answer

    def _consume_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._on_audio_frame is not None:
            self._frame_task = asyncio.ensure_future(self._pump_frames(track))
            return
        recording = track.kind == "audio" and self._audio_out is not None
        if not recording and not self.decode_unconsumed_audio:
            self._unread.append(track)  # its decoding ends once the call is up
            return
        self._sink(MediaRecorder(self._audio_out) if recording else MediaBlackhole(), track)

    def _sink(self, sink: MediaBlackhole | MediaRecorder, track: MediaStreamTrack) -> None:
        sink.addTrack(track)
        self._sinks.append(sink)
        self._tasks.add(asyncio.ensure_future(sink.start()))

    def _end_unread_decoding(self) -> None:
        """End the decoding of the tracks nobody reads. Their receivers are running now
        (aiortc starts them before the data channel can open); a receiver that is not as
        expected gets a ``MediaBlackhole`` instead, as before."""
        receivers = self._pc.getReceivers() if self._pc is not None else []
        for track in self._unread:
            receiver = next((r for r in receivers if r.track is track), None)
            if receiver is None or not _end_decoding(receiver):
                self._sink(MediaBlackhole(), track)
        self._unread.clear()

    async def _pump_frames(self, track: MediaStreamTrack) -> None:
        callback = self._on_audio_frame
        assert callback is not None
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            callback(frame)

    # -- traffic -------------------------------------------------------------------

    def send(self, event: Mapping[str, Any]) -> None:
        """Send one event (loop thread only): in the SCTP association when this returns
        (see the module's notes on "sent"). Raises if it cannot go on the wire."""
        text = ev.encode(event)
        channel = self._channel
        if channel is None or channel.readyState != "open" or self._closing:
            raise ConnectionLostError("the data channel is not open")
        size = len(text.encode("utf-8"))
        limit = self.max_message_size
        if limit and size > limit:
            raise MessageTooLargeError(
                f"{event.get('type')} is {size} bytes; the peer accepts at most {limit}",
                size=size,
                limit=limit,
            )
        channel.send(text)

    @property
    def max_message_size(self) -> int:
        sctp = self._pc.sctp if self._pc is not None else None
        size = getattr(sctp, "_remote_max_message_size", None) if sctp is not None else None
        return int(size) if isinstance(size, int) else DEFAULT_MAX_MESSAGE_SIZE

    def _receive(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        self._on_message(message)

    def _report_closed(self, why: str) -> None:
        if self._closing or self._ending or self._closed_reported:
            return
        self._closed_reported = True
        logger.warning("[CONNECTION] {} lost: {}", short_id(self.call_id), why)
        self._on_closed(ConnectionLostError(why))

    # -- close ---------------------------------------------------------------------

    async def close(self, *, hangup: bool = True) -> None:
        """Hang up (bounded), then close the channel, the media and the peer."""
        if self._closing:
            return
        self._closing = True
        if hangup and self.call_id and self._http is not None and not self._key.is_ephemeral:
            await self._hangup()
        if self._frame_task is not None:
            self._frame_task.cancel()
        for media in [*self._sinks, self._player]:
            stop = getattr(media, "stop", None)
            if stop is not None:
                try:
                    result = stop()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    logger.exception("[CONNECTION] media stop failed")
        if self._pc is not None:
            await self._pc.close()
        if self._http is not None:
            await self._http.close()
        logger.info("[CONNECTION] {} closed", self.call_id)

    async def _hangup(self) -> None:
        """The close path's hang-up: best effort, bounded, never raises."""
        assert self._http is not None and self.call_id is not None
        try:
            await signaling.post_hangup(
                self._http, self.base_url, self._key, self.call_id, path=self.HANGUP_PATH
            )
        except SignalingError as exc:
            logger.debug("[CONNECTION] hangup failed: {} {}", exc.status, exc.code)
        except WaitTimeoutError:
            logger.debug("[CONNECTION] hangup not answered in time")

    async def end_call(self) -> None:
        """End the call for everyone, then close. With an ephemeral key (which may not
        hang up) closing the peer connection is what ends the call."""
        if self._closing:
            return
        if self.call_id is None or self._http is None or self._key.is_ephemeral:
            await self.close(hangup=False)
            return
        self._ending = True  # the server closing the channel now is not a loss
        try:
            await signaling.post_hangup(
                self._http, self.base_url, self._key, self.call_id, path=self.HANGUP_PATH
            )
        finally:
            await self.close(hangup=False)


def _end_decoding(receiver: Any) -> bool:
    """Stop an aiortc ``RTCRtpReceiver`` decoding: what its own ``stop()`` does to the
    decoder thread, without stopping the receiver. RTP is still received, reassembled
    and reported on (RTCP), but no frame is decoded and the thread ends. aiortc has no
    public switch for it; if its private fields are not as expected, nothing is
    touched and ``False`` is returned."""
    thread = getattr(receiver, "_RTCRtpReceiver__decoder_thread", None)
    inbox = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
    if not isinstance(thread, threading.Thread) or not isinstance(inbox, queue.Queue):
        return False
    receiver._RTCRtpReceiver__decoder_thread = None  # no frame is handed to it any more
    inbox.put(None)  # it finishes what it holds and ends (ending the unread track)
    return True
