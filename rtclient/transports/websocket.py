"""A WebSocket to the Realtime API over aiohttp: an own session, or a sideband on a call.

Two uses, one class; everything here runs on the loop thread.

* **Own session** (``RealtimeClient(transport="websocket")``): ``GET {ws base}/realtime
  ?model=...`` with ``Authorization: Bearer <key>`` (on Azure OpenAI the shapes of
  :mod:`.endpoint`: the deployment as the model, a resource key as ``api-key``).
  Server to server: no ICE, no DTLS, no Opus - the cheapest way to talk to the API
  from a worker. Audio travels as events (PCM16 mono 24 kHz, the API's default format;
  :mod:`.pcm`):
  ``input_audio_buffer.append`` for the user's audio, ``response.output_audio.delta``
  for the model's. There is no server-side output audio buffer, so barge-in is ours:
  the client's ``output_audio_buffer.clear`` (see :mod:`.base`) is translated here
  into "stop playing" plus ``conversation.item.truncate`` (``item_id``,
  ``content_index``, ``audio_end_ms`` = what was actually played) for each item cut
  short - the conversation then holds only what the user heard.
* **Sideband** (``RealtimeClient(call_id="rtc_...")``): ``GET {ws base}/realtime
  ?call_id=...`` with a standard key joins a WebRTC call someone else (a browser)
  holds. The browser carries the audio; the sideband sees the session's events and
  may send any client event - tools, instructions and the key stay on the server.
  The session is a WebRTC one, so ``output_audio_buffer.clear`` goes through as is.
  Closing a sideband only detaches; :meth:`end_call` hangs the call up for everyone.

The handshake's refusal is read from its body (aiohttp keeps only the status): an
unknown or ended call is a :class:`CallNotFoundError` with the API's
``call_id_not_found``. ``send`` hands events, in order, to one writer task: aiohttp's
send is a coroutine, and the socket's order must be the order of ``send`` calls. So
``send`` returns the future of the write, resolved when ``send_str`` has returned on a
socket still open, failed with :class:`ConnectionLostError` if the socket dies or the
transport closes before that (the writer fails everything still queued): a tool output
stuck behind a dead socket is reported undelivered, never sent. It is a
``concurrent.futures.Future``, so whatever waits on it runs right after the write, in
the writer's step - before any server event that arrives later is handled. A socket that ends
without ``close()`` - the call hung up, the server gone - is reported once to
``on_closed``, before the writes it strands are failed (so the client's gate is
already closed when their rollbacks arrive).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer, MediaRecorder
from aiortc.mediastreams import MediaStreamError

from rtclient._secret import Secret
from rtclient.core import events as ev
from rtclient.errors import (
    ConnectionLostError,
    ConnectTimeoutError,
    MessageTooLargeError,
)
from rtclient.logs import logger, short_id
from rtclient.transports import pcm, signaling
from rtclient.transports.base import (
    AudioFrameCallback,
    AudioIn,
    ClosedHandler,
    MessageHandler,
    Written,
)
from rtclient.transports.endpoint import Endpoint

# The API's documented limit for one client event (an ``input_audio_buffer.append``).
DEFAULT_MAX_MESSAGE_SIZE = 15 * 1024 * 1024
# Server events can exceed aiohttp's 4 MiB default (a long transcript, a big tool list).
_MAX_RECEIVE = 64 * 1024 * 1024
_CLOSE_TIMEOUT = 2.0
_RECORDER_DRAIN_TIMEOUT = 1.0
_AUDIO_DELTA = "response.output_audio.delta"
_CLEAR = "output_audio_buffer.clear"


class WebSocketTransport:
    """One WebSocket to a Realtime session: its own, or a sideband on ``call_id``.

    What differs for another API on the same kind of socket (GPT-Live:
    :mod:`.live`) is named here and overridden there: the URL (:meth:`_target`), the
    audio event types, the session check, the hang-up path and when input audio may
    start (:meth:`_audio_ready`).
    """

    AUDIO_IN = "input_audio_buffer.append"
    AUDIO_OUT = _AUDIO_DELTA
    HANGUP_PATH = signaling.REALTIME_CALLS

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        model: str,
        session: Mapping[str, Any] | None,
        on_message: MessageHandler,
        on_closed: ClosedHandler,
        call_id: str | None = None,
        connect_timeout: float = 15.0,
        audio_in: AudioIn = None,
        audio_out: str | None = None,
        on_audio_frame: AudioFrameCallback | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.model = model
        self._on_message = on_message
        self._on_closed = on_closed
        self._call_id = call_id
        self.connect_timeout = connect_timeout
        self._audio_in = audio_in
        self._audio_out = audio_out
        self._on_audio_frame = on_audio_frame
        if call_id is not None and (audio_in is not None or audio_out or on_audio_frame):
            raise ValueError("a sideband carries no audio: the call's audio is the browser's")
        if call_id is None:  # a sideband's session is the call's: its audio is not ours
            self._check_session(session)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        # (text, the future of its write or None when nobody waits for it); None ends
        self._outbox: asyncio.Queue[tuple[str, Written | None] | None] = asyncio.Queue()
        self._lost = False  # the socket failed: nothing more can be written
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._playback = pcm.Playback()
        self._pts = 0
        self._player: MediaPlayer | None = None
        self._recorder: MediaRecorder | None = None
        self._recording: pcm.FrameQueue | None = None
        self._closing = False
        self._ending = False
        self._closed_reported = False

    def __repr__(self) -> str:
        kind = f"sideband call={self._call_id}" if self._call_id else f"model={self.model}"
        return f"<WebSocketTransport {self.base_url} {kind} key={self._key!r}>"

    @property
    def call_id(self) -> str | None:
        return self._call_id

    @property
    def max_message_size(self) -> int:
        return DEFAULT_MAX_MESSAGE_SIZE

    # -- connect -------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket (the handshake), then start the reader, writer and audio."""
        try:
            await asyncio.wait_for(self._connect(), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.close(hangup=False)
            raise ConnectTimeoutError(
                f"the WebSocket did not open within {self.connect_timeout}s"
            ) from None
        except BaseException:
            await self.close(hangup=False)
            raise

    async def _connect(self) -> None:
        bodies = signaling.ErrorBodies()
        self._http = aiohttp.ClientSession(trace_configs=[bodies.trace])
        url, params = self._target()
        headers = await Endpoint.parse(self.base_url).headers(self._key)
        try:
            ws = await self._http.ws_connect(
                url,
                params=params,
                headers=headers,
                max_msg_size=_MAX_RECEIVE,
                compress=0,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            status, body = bodies.last or (exc.status, "")
            raise signaling.signaling_error(status, body, self._key, self.base_url) from None
        except aiohttp.ClientError as exc:
            raise signaling.connection_error(exc, self._key) from None
        self._ws = ws
        self._start(self._read(ws))
        self._writer = self._start(self._write(ws))
        if self._audio_out is not None:
            self._recording = pcm.FrameQueue()
            self._recorder = MediaRecorder(self._audio_out)
            self._recorder.addTrack(self._recording)
            await self._recorder.start()
        self._audio_ready()
        logger.info("[CONNECTION] websocket open ({})", self._call_id or self.model)

    def _target(self) -> tuple[str, dict[str, str]]:
        """The socket's URL and query: ``/realtime?model=`` or ``?call_id=`` (on Azure
        OpenAI the shapes of :mod:`.endpoint`)."""
        return Endpoint.parse(self.base_url).websocket(model=self.model, call_id=self._call_id)

    @staticmethod
    def _check_session(session: Mapping[str, Any] | None) -> None:
        _check_audio_formats(session)

    def _audio_ready(self) -> None:
        """Input audio may flow: on Realtime, as soon as the socket is open."""
        track = self._input_track()
        if track is not None:
            self._start(self._pump_audio(track))

    def _start(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _input_track(self) -> MediaStreamTrack | None:
        if isinstance(self._audio_in, MediaStreamTrack):
            return self._audio_in
        if isinstance(self._audio_in, str):
            self._player = MediaPlayer(self._audio_in)
            if self._player.audio is None:
                raise ValueError(f"audio_in {self._audio_in!r} has no audio stream")
            return self._player.audio
        return None

    # -- traffic -------------------------------------------------------------------

    def send(self, event: Mapping[str, Any]) -> Written | None:
        """Queue one event for the writer (loop thread only); returns the future of its
        write. Raises, queueing nothing, if the socket cannot take it."""
        if event.get("type") == _CLEAR and self._call_id is None:
            return self._barge_in()
        return self._send_text(ev.encode(event), event.get("type"))

    def _send_text(self, text: str, kind: Any, *, tracked: bool = True) -> Written | None:
        ws = self._ws
        if ws is None or ws.closed or self._closing or self._lost:
            raise ConnectionLostError("the WebSocket is not open")
        size = len(text.encode("utf-8"))
        limit = self.max_message_size
        if size > limit:
            raise MessageTooLargeError(
                f"{kind} is {size} bytes; one WebSocket event may be at most {limit}",
                size=size,
                limit=limit,
            )
        written: Written | None = concurrent.futures.Future() if tracked else None
        self._outbox.put_nowait((text, written))
        return written

    def _barge_in(self) -> Written | None:
        """No server-side output buffer here: stop our playback, truncate what was cut.
        The last truncate's write stands for all of them (they are written in order)."""
        written = None
        for cut in self._playback.stop():
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": cut.item_id,
                "content_index": cut.content_index,
                "audio_end_ms": cut.audio_end_ms,
            }
            written = self._send_text(ev.encode(ev.with_event_id(truncate)), truncate["type"])
            logger.info("[INTERRUPT] {} truncated at {} ms", cut.item_id, cut.audio_end_ms)
        return written

    async def _write(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        """The one writer: each event's future is resolved once ``send_str`` returned on
        a socket still open. aiohttp's drain also returns (without an error) when the
        connection closes cleanly under a paused writer, so the socket is looked at
        after each write, not only the exception."""
        item: tuple[str, Written | None] | None = None
        try:
            while (item := await self._outbox.get()) is not None:
                text, written = item
                await ws.send_str(text)
                if ws.closed or ws.get_extra_info("socket") is None:
                    raise ConnectionResetError("the socket closed during the write")
                if written is not None and not written.done():
                    written.set_result(None)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            self._lost = True
            self._report_closed(f"the WebSocket send failed: {type(exc).__name__}")
        finally:
            self._fail_unwritten(item, "the WebSocket closed before this event was written")

    def _fail_unwritten(self, current: Any, why: str) -> None:
        """Fail the write in progress (if any) and everything still queued behind it."""
        pending = [current] if current is not None else []
        while not self._outbox.empty():
            pending.append(self._outbox.get_nowait())
        for item in pending:
            written = item[1] if item is not None else None
            if written is not None and not written.done():
                written.set_exception(ConnectionLostError(why))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._receive(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self._receive(message.data.decode("utf-8", errors="replace"))
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self._lost = True
            code = ws.close_code
            self._report_closed(f"the WebSocket closed (code {code})")

    def _receive(self, text: str) -> None:
        try:
            message: str | dict[str, Any] = text
            # base64 has no '.' or '_': only the type can match
            if self.AUDIO_OUT in text and self._plays_audio():
                try:
                    event = ev.loads(text)
                except ValueError:
                    event = None  # the client counts malformed events; nothing to play
                if isinstance(event, dict):
                    message = event  # decoded once: the client reads this dict
                    if event.get("type") == self.AUDIO_OUT:
                        self._play(event)
            self._on_message(message)
        except Exception:  # a handler's bug must not end the connection
            logger.exception("[CONNECTION] a server message could not be handled")

    def _plays_audio(self) -> bool:
        """Whether audio deltas are read here (always: the playback position is what a
        barge-in truncates to)."""
        return True

    def _play(self, event: Mapping[str, Any]) -> None:
        try:
            data = base64.b64decode(event.get("delta") or "", validate=True)
        except (ValueError, TypeError, binascii.Error):
            return  # the client counts malformed events; nothing to play
        item_id = str(event.get("item_id"))
        content_index = event.get("content_index")
        content_index = content_index if isinstance(content_index, int) else 0
        if not data or not self._playback.add(item_id, content_index, len(data) / pcm.BYTES_PER_MS):
            return  # cut by a barge-in: the rest of that item is not played
        if self._on_audio_frame is None and self._recording is None:
            return
        frame = pcm.pcm_frame(data, self._pts)
        self._pts += frame.samples
        if self._recording is not None:
            self._recording.put(frame)
        if self._on_audio_frame is not None:
            self._on_audio_frame(frame)

    async def _pump_audio(self, track: MediaStreamTrack) -> None:
        """The user's audio, as ``input_audio_buffer.append`` events, at its own pace."""
        encoder = pcm.PcmEncoder()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = encoder.encode(frame)
            if not data:
                continue
            append = {"type": self.AUDIO_IN, "audio": base64.b64encode(data).decode()}
            try:
                self._send_text(ev.encode(append), append["type"], tracked=False)
            except (ConnectionLostError, MessageTooLargeError):
                return

    def _report_closed(self, why: str) -> None:
        if self._closing or self._ending or self._closed_reported:
            return
        self._closed_reported = True
        where = short_id(self._call_id) if self._call_id else self.model
        logger.warning("[CONNECTION] websocket {} lost: {}", where, why)
        self._on_closed(ConnectionLostError(why))

    # -- close ---------------------------------------------------------------------

    async def close(self, *, hangup: bool = True) -> None:
        """Flush what was sent, close the socket and the media. Never hangs up a
        sideband's call (``hangup`` concerns calls this connection created: none)."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            self._outbox.put_nowait(None)  # after everything already sent
            if self._writer is not None:
                await asyncio.wait([self._writer], timeout=_CLOSE_TIMEOUT)
            try:
                await asyncio.wait_for(ws.close(), _CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_CLOSE_TIMEOUT)
        self._fail_unwritten(None, "the WebSocket closed before this event was written")
        await self._stop_media()
        if self._http is not None:
            await self._http.close()
        logger.info("[CONNECTION] websocket {} closed", self._call_id or self.model)

    async def _stop_media(self) -> None:
        if self._recording is not None:
            await self._recording.drained(_RECORDER_DRAIN_TIMEOUT)
            self._recording.stop()
        try:
            if self._recorder is not None:
                await self._recorder.stop()
            if self._player is not None and self._player.audio is not None:
                self._player.audio.stop()  # ends the player's decoding thread
        except Exception:
            logger.exception("[CONNECTION] media stop failed")

    async def end_call(self) -> None:
        """End the call for everyone (the API's hang-up of :attr:`call_id`), then close.
        An own Realtime WebSocket session has no call: closing the socket ends it."""
        call_id = self.call_id
        if self._closing:
            return
        if call_id is None or self._http is None:
            await self.close()
            return
        self._ending = True  # the server closing our socket now is not a loss
        try:
            await signaling.post_hangup(
                self._http, self.base_url, self._key, call_id, path=self.HANGUP_PATH
            )
        finally:
            await self.close()


def _check_audio_formats(session: Mapping[str, Any] | None) -> None:
    """This transport speaks PCM16 24 kHz (the API's default); refuse another format."""
    audio = (session or {}).get("audio")
    if not isinstance(audio, Mapping):
        return
    for side in ("input", "output"):
        given = audio.get(side)
        fmt = given.get("format") if isinstance(given, Mapping) else None
        if fmt is None:
            continue
        if not isinstance(fmt, Mapping) or fmt.get("type") != "audio/pcm":
            raise ValueError(
                f"the WebSocket transport sends and plays PCM16 24 kHz; "
                f"audio.{side}.format {fmt!r} is not supported"
            )
        if fmt.get("rate", pcm.RATE) != pcm.RATE:
            raise ValueError(f"audio.{side}.format rate must be {pcm.RATE} (PCM16 24 kHz)")
