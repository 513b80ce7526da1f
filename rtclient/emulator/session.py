"""One Realtime session: the API's rules, whatever carries its events.

A session receives client events as text (from the ``oai-events`` data channel or a
WebSocket), validates them, applies the API's rules and emits
server events to every attached :class:`Channel`.

More than one channel may be attached: a WebRTC call plus sideband WebSockets. They
share one conversation and one active response; every server event reaches every
channel, in the same order. The exception is an ``error`` caused by a client event: it
goes only to the channel that sent that event (an error no client event caused, such
as ``session_expired``, goes to all). Above all it enforces the
one-active-response rule: while a response writes to the default conversation (from
its acceptance until its ``response.done``), another default-conversation
``response.create`` gets exactly the ``conversation_already_has_active_response``
error, echoing the client's ``event_id``, and nothing else.

Idle timeouts (``turn_detection.idle_timeout_ms``, server VAD) are the API's: once the
last default-conversation response has finished - and its audio played out, over
WebRTC; over a WebSocket its speech is counted as played after ``response.done`` -
``idle_timeout_ms`` of silence send ``input_audio_buffer.timeout_triggered``, commit
that silence as a user turn (``input_audio_buffer.committed``, its items) and start a
response (origin ``"idle_timeout"``), whatever ``create_response`` says. Speech, or any
default-conversation response starting, stops the count; it starts again when the
next response (or a turn that got none) ends. Nothing is counted before the first
response.

Everything here runs on the emulator's event loop. Records (client events, server
events, errors, counters) are written under the emulator's record lock so test threads
can read them and wait on them; the thread-safe entry points are the public methods
without a leading underscore that say so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from loguru import logger

from .audio import AudioPlayback
from .config import merge_session, turn_detection
from .conversation import Conversation
from .errors import (
    SERVER_ERROR,
    ClientEventError,
    active_response_error,
    cancel_not_active_error,
)
from .faults import Faults
from .ids import IdFactory
from .model import Model, ModelRequest, Pace
from .onloop import CALL_TIMEOUT_S, call_on, in_loop
from .records import Recorder, parse_received, parse_sent
from .response import Response, ResponseStream
from .validation import parse_client_event

T = TypeVar("T")
_INPUT_BYTES_PER_MS = 48  # pcm16 mono at 24 kHz


ClientEventHook = Callable[["Session", dict[str, Any]], None]
"""``hook(session, event)``: called on the emulator's loop for every message a client
sends, as recorded (refused ones too), before the session acts on it."""


class Channel(Protocol):
    """Something that carries server events to a client (data channel, WebSocket)."""

    kind: str

    def send_text(self, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SessionSettings:
    """What a new session takes from its emulator."""

    model: Model
    pace: Pace
    faults: Faults
    max_session_seconds: float
    record_server_events: bool = True
    on_client_event: ClientEventHook | None = None


class Session:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        recorder: Recorder,
        ids: IdFactory,
        settings: SessionSettings,
        config: dict[str, Any],
        media: str,
        call_id: str | None = None,
        on_closed: Callable[[Session], None] | None = None,
    ) -> None:
        self.id: str = config["id"]
        self.call_id = call_id
        self.media = media
        """``"webrtc"`` (audio on the track) or ``"websocket"`` (audio as base64 deltas)."""
        self.ids = ids
        self.conversation = Conversation(ids.new("conv"), ids)
        self.playback: AudioPlayback | None = (
            AudioPlayback(self._audio_drained) if media == "webrtc" else None
        )
        self._loop = loop
        self._recorder = recorder
        self._config = config
        self._settings = settings
        self._faults = settings.faults
        self._pace = settings.pace
        self._model = settings.model
        self._on_closed = on_closed
        self._channels: list[Channel] = []
        self._active: Response | None = None
        self._held_turn: asyncio.Future[str | None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_after_playback: str | None = None
        self._idle_after_idle = False  # the count began at an idle timeout's own answer
        self._user_speaking = False
        self._auth: list[dict[str, str]] = []
        self._running: dict[str, Response] = {}
        self._input_audio_bytes = 0
        self._audio_clock_ms = 0
        self._started = False
        self._closed = False
        self._expiry: asyncio.TimerHandle | None = None
        self._sent = 0
        self._client_events: list[dict[str, Any]] = []
        self._server_texts: list[str] = []
        self._errors: list[dict[str, Any]] = []
        self._counters: Counter[str] = Counter()
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "input_audio_buffer.append": self._input_append,
            "input_audio_buffer.commit": self._input_commit,
            "input_audio_buffer.clear": self._input_clear,
            "output_audio_buffer.clear": self._output_clear,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # ----------------------------------------------------------- thread-safe reads
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def config(self) -> dict[str, Any]:
        """The session object as ``session.updated`` last showed it (a copy)."""
        return call_on(self._loop, lambda: copy.deepcopy(self._config))

    @property
    def client_events(self) -> list[dict[str, Any]]:
        """Every message the client sent, parsed (``{"type": None, "raw": ...}`` if not
        a JSON object), including the ones refused."""
        with self._recorder.lock:
            return copy.deepcopy(self._client_events)

    @property
    def server_events(self) -> list[dict[str, Any]]:
        """Every message sent to the client, parsed (``{"type": None, "raw": ...}`` for
        an injected malformed one)."""
        with self._recorder.lock:
            texts = list(self._server_texts)
        return [parse_sent(text) for text in texts]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every ``error`` event sent."""
        with self._recorder.lock:
            return copy.deepcopy(self._errors)

    @property
    def counters(self) -> dict[str, int]:
        """``client_events``, ``server_events``, ``errors``, ``creates``,
        ``rejections`` (active-response), ``responses`` (created), one per final
        status (``completed``, ``cancelled``, ``incomplete``, ``failed``),
        ``idle_timeouts`` (``input_audio_buffer.timeout_triggered`` sent),
        ``idle_responses`` (responses an idle timeout started) and
        ``audio_frames_in`` (frames received on the caller's audio track)."""
        with self._recorder.lock:
            return dict(self._counters)

    def record_audio_frame(self, frame: object = None) -> None:
        """The caller's audio track delivered one frame (counted as ``audio_frames_in``;
        its content is not listened to: speech is simulated)."""
        with self._recorder.lock:
            self._counters["audio_frames_in"] += 1
            self._recorder.changed()

    @property
    def auth(self) -> list[dict[str, str]]:
        """How each request on this session authenticated, in order (a copy):
        ``{"route", "scheme", "credential"}`` - ``route`` is ``"calls"``,
        ``"realtime"`` (a WebSocket session), ``"sideband"`` or ``"hangup"``; ``scheme``
        ``"bearer"``, ``"api-key"`` or ``"ephemeral"``; ``credential`` a redacted form
        (never the key)."""
        with self._recorder.lock:
            return copy.deepcopy(self._auth)

    def record_auth(self, route: str, scheme: str, credential: str) -> None:
        """A request on this session authenticated (see :attr:`auth`)."""
        with self._recorder.lock:
            self._auth.append({"route": route, "scheme": scheme, "credential": credential})
            self._recorder.changed()

    def count(self, name: str) -> int:
        """One counter (0 if never incremented); cheap inside wait_for predicates."""
        with self._recorder.lock:
            return self._counters[name]

    def server_event_types(self) -> list[str]:
        with self._recorder.lock:
            texts = list(self._server_texts)
        return [str(parse_sent(t).get("type")) for t in texts]

    @property
    def active_response_id(self) -> str | None:
        """The response holding the default conversation, if any."""
        active = self._active
        return active.id if active is not None else None

    def items(self) -> list[dict[str, Any]]:
        """The default conversation's items (a copy)."""
        return call_on(self._loop, self.conversation.snapshot)

    # --------------------------------------------------------- thread-safe control
    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    def set_faults(self, **changes: Any) -> Faults:
        """Replace some fault knobs of this live session; returns the new Faults."""
        self._faults = self._faults.replace(**changes)
        return self._faults

    @property
    def pace(self) -> Pace:
        return self._pace

    @pace.setter
    def pace(self, pace: Pace) -> None:
        self._pace = pace

    @property
    def model(self) -> Model:
        return self._model

    @model.setter
    def model(self, model: Model) -> None:
        self._model = model

    def simulate_speech(self, text: str = "Hello.", duration_ms: int = 800) -> dict[str, Any]:
        """The user speaks ``text`` (server VAD); blocks until its events are sent.

        Returns ``{"item_id", "response_id", "interrupted"}`` (ids or None). From the
        emulator's own loop use ``await session.speech(...)`` instead.
        """
        if in_loop(self._loop):
            raise RuntimeError("on the emulator's loop, use `await session.speech(...)`")
        if not self._loop.is_running():
            raise RuntimeError("the emulator is not running")
        future = asyncio.run_coroutine_threadsafe(self.speech(text, duration_ms), self._loop)
        return future.result(CALL_TIMEOUT_S)

    def inject(self, text: str) -> None:
        """Send ``text`` to the client as is (e.g. a hand-made malformed event)."""
        call_on(self._loop, lambda: self.send_raw(text))

    def close(self) -> None:
        """End the session (and its call) from any thread."""
        call_on(self._loop, lambda: self.terminate("closed by the emulator"))

    # -------------------------------------------------------------- loop side: I/O
    def attach(self, channel: Channel) -> None:
        """Start sending to ``channel``; the first one gets ``session.created``."""
        if self._closed:
            channel.close()
            return
        self._channels.append(channel)
        if not self._started:
            self._started = True
            self.emit({"type": "session.created", "session": copy.deepcopy(self._config)})
            self._expiry = self._loop.call_later(self._settings.max_session_seconds, self._expire)

    def detach(self, channel: Channel) -> None:
        """``channel`` went away; a WebSocket session ends with its socket."""
        if channel in self._channels:
            self._channels.remove(channel)
        if self.media == "websocket" and channel.kind == "websocket" and not self._channels:
            self.terminate("websocket closed")

    def handle_text(self, text: str | bytes, channel: Channel | None = None) -> None:
        """One message from the client on ``channel`` (where its error goes, if any)."""
        if self._closed:
            return
        try:
            event = parse_client_event(text)
        except ClientEventError as exc:
            raw = parse_received(text)
            self._record_client(raw)
            client_event_id = raw.get("event_id")
            event_id = client_event_id if isinstance(client_event_id, str) else None
            self._send_error(exc, event_id, channel)
            return
        self._record_client(event)
        event_type: str = event["type"]
        client_event_id = event.get("event_id")
        faults = self._faults
        if faults.ignore_event_type == event_type:
            return
        if faults.fail_event_type == event_type:
            self._send_error(
                ClientEventError(
                    faults.fail_error_code,
                    f"The server had an error while processing your {event_type} "
                    "(injected by the emulator).",
                    type=faults.fail_error_type,
                ),
                client_event_id,
                channel,
            )
            return
        try:
            self._handlers[event_type](event)
        except ClientEventError as exc:
            self._send_error(exc, client_event_id, channel)
        except Exception:
            logger.exception("emulator: {} failed on {}", self.id, event_type)
            self._send_error(
                ClientEventError(
                    None,
                    "The server had an error while processing your request.",
                    type=SERVER_ERROR,
                ),
                client_event_id,
                channel,
            )

    def emit(self, event: dict[str, Any], to: Channel | None = None) -> None:
        """Send one server event (``event_id`` added) to every attached channel, or
        only to ``to`` (an error caused by that channel's event)."""
        event = {"type": event["type"], "event_id": self.ids.new("event"), **event}
        self._transmit(json.dumps(event), event if event["type"] == "error" else None, to)

    def send_raw(self, text: str) -> None:
        self._transmit(text, None)

    def terminate(self, reason: str) -> None:
        """End the session: stop responses, close channels, tell the owner."""
        if self._closed:
            return
        logger.debug("emulator: session {} ends: {}", self.id, reason)
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._disarm_idle()
        for response in list(self._running.values()):
            if response.task is not None:
                response.task.cancel()
            if not response.finished.done():
                response.finished.set_result(None)
        self._running.clear()
        self._active = None
        if self._held_turn is not None and not self._held_turn.done():
            self._held_turn.set_result(None)
        if self.playback is not None:
            self.playback.close()
        channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()
        with self._recorder.lock:
            self._recorder.changed()
        if self._on_closed is not None:
            self._on_closed(self)

    # ---------------------------------------------------------- loop side: speech
    async def speech(self, text: str = "Hello.", duration_ms: int = 800) -> dict[str, Any]:
        """The user speaks: what server VAD does with it (see simulate_speech)."""
        if self._closed:
            raise RuntimeError(f"session {self.id} is closed")
        detection = turn_detection(self._config)
        if detection is None:  # VAD off: the speech only fills the input buffer
            self._input_audio_bytes += duration_ms * _INPUT_BYTES_PER_MS
            return {"item_id": None, "response_id": None, "interrupted": None}
        item_id = self.ids.new("item")
        start_ms = self._audio_clock_ms
        self._disarm_idle()
        self._user_speaking = True
        self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start_ms,
                "item_id": item_id,
            }
        )
        interrupted: Response | None = None
        if detection.get("interrupt_response", True):
            interrupted = self._active
            if interrupted is not None:
                interrupted.request_cancel("turn_detected")
            if self.playback is not None and self.playback.is_playing():
                cleared = self.playback.clear()
                self.emit({"type": "output_audio_buffer.cleared", "response_id": cleared})
            if interrupted is not None:
                await interrupted.finished
        self._audio_clock_ms = start_ms + duration_ms
        self._user_speaking = False
        self.emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": self._audio_clock_ms,
                "item_id": item_id,
            }
        )
        self._commit_user_audio(item_id, transcript=text, duration_ms=duration_ms)
        response_id = None
        if (
            detection.get("create_response", True)
            and self._active is None
            and self._held_turn is None
            and not self._closed
        ):
            hold = self._faults.hold_turn_response
            if hold > 0:
                response_id = await self._hold_turn_response(hold)
            else:
                response_id = self._start_response({}, None, origin="turn_detection").id
        if response_id is None and self._active is None:
            self._arm_idle()  # a turn nobody answered: the silence after it counts
        return {
            "item_id": item_id,
            "response_id": response_id,
            "interrupted": interrupted.id if interrupted is not None else None,
        }

    async def _hold_turn_response(self, seconds: float) -> str | None:
        """``Faults.hold_turn_response``: the turn's response starts when the next
        default-conversation ``response.create`` arrives (see ``_release_held_turn``),
        or when the hold ends if none does."""
        held: asyncio.Future[str | None] = self._loop.create_future()
        self._held_turn = held
        try:
            await asyncio.wait([held], timeout=seconds)
        finally:
            self._held_turn = None
        if not held.done():
            started = None
            if self._active is None and not self._closed:
                started = self._start_response({}, None, origin="turn_detection").id
            held.set_result(started)
        return held.result()

    def _release_held_turn(self) -> None:
        """A create arrived while a turn's response is held: that response starts first."""
        held = self._held_turn
        if held is None or held.done() or self._active is not None:
            return
        held.set_result(self._start_response({}, None, origin="turn_detection").id)

    # ------------------------------------------------------- ResponseHost protocol
    def model_request(self, response: Response) -> ModelRequest:
        params = response.params
        inputs = params.get("input")
        if isinstance(inputs, list):
            items = [self._resolve_input(entry) for entry in inputs]
        else:
            items = self.conversation.snapshot()
        tools = params.get("tools")
        return ModelRequest(
            items=items,
            tools=copy.deepcopy(tools if tools is not None else self._config.get("tools") or []),
            tool_choice=params.get("tool_choice", self._config.get("tool_choice", "auto")),
            instructions=params.get("instructions", self._config.get("instructions")),
            output_modalities=list(response.output_modalities),
            metadata=copy.deepcopy(response.metadata),
            conversation="auto" if response.in_conversation else "none",
            origin=response.origin,
        )

    def response_finished(self, response: Response) -> None:
        if self._active is response:
            self._active = None
            self._idle_after_idle = response.origin == "idle_timeout"
            if response.audio_started and self.playback is not None:
                self._idle_after_playback = response.id  # armed when its audio drains
            else:
                self._arm_idle(response.audio_ms)
        self._running.pop(response.id, None)
        with self._recorder.lock:
            self._counters[response.status] += 1
        self.emit({"type": "response.done", "response": response.to_json()})
        if not response.finished.done():
            response.finished.set_result(None)
        if response.audio_started and self.playback is not None:
            self.playback.finish(response.id)

    # ------------------------------------------------------------ client events
    def _session_update(self, event: dict[str, Any]) -> None:
        update = event["session"]
        if update.get("type") != "realtime":
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: '{update.get('type')}'. This is a realtime session; "
                "session.type must be 'realtime'.",
                param="session.type",
            )
        merge_session(self._config, update)
        self.emit({"type": "session.updated", "session": copy.deepcopy(self._config)})

    def _item_create(self, event: dict[str, Any]) -> None:
        item = self.conversation.normalize_client_item(event["item"])
        previous = self.conversation.insert(item, event.get("previous_item_id"))
        self.emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self.emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    def _item_delete(self, event: dict[str, Any]) -> None:
        self.conversation.delete(event["item_id"])
        self.emit({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.retrieve(event["item_id"])
        self.emit({"type": "conversation.item.retrieved", "item": item})

    def _item_truncate(self, event: dict[str, Any]) -> None:
        self.conversation.truncate(event["item_id"], event["content_index"], event["audio_end_ms"])
        self.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": event["item_id"],
                "content_index": event["content_index"],
                "audio_end_ms": event["audio_end_ms"],
            }
        )

    def _input_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise ClientEventError(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                param="audio",
            ) from None
        self._input_audio_bytes += len(audio)

    def _input_commit(self, event: dict[str, Any]) -> None:
        buffered_ms = self._input_audio_bytes / _INPUT_BYTES_PER_MS
        if buffered_ms < 100:
            raise ClientEventError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        self._audio_clock_ms += int(buffered_ms)
        self._commit_user_audio(self.ids.new("item"), transcript=None, duration_ms=buffered_ms)

    def _input_clear(self, event: dict[str, Any]) -> None:
        self._input_audio_bytes = 0
        self.emit({"type": "input_audio_buffer.cleared"})

    def _output_clear(self, event: dict[str, Any]) -> None:
        if self.playback is not None and self.playback.is_playing():
            cleared = self.playback.clear()
            self.emit({"type": "output_audio_buffer.cleared", "response_id": cleared})

    def _response_create(self, event: dict[str, Any]) -> None:
        with self._recorder.lock:
            self._counters["creates"] += 1
        params: dict[str, Any] = copy.deepcopy(event.get("response") or {})
        if params.get("conversation", "auto") != "none":
            self._release_held_turn()
            staged = self._faults.idle_timeout_on_create and not self._idle_after_idle
            if staged and self._idle is not None:
                self._disarm_idle()
                self._idle_timeout()
        if params.get("conversation", "auto") != "none" and self._active is not None:
            with self._recorder.lock:
                self._counters["rejections"] += 1
            raise active_response_error(self._active.id)
        metadata = params.get("metadata")
        if isinstance(metadata, dict) and len(metadata) > 16:
            raise ClientEventError(
                "invalid_value",
                f"Invalid 'response.metadata': too many properties. Expected an object with at "
                f"most 16 properties, but got an object with {len(metadata)} properties instead.",
                param="response.metadata",
            )
        for index, entry in enumerate(params.get("input") or []):
            if entry.get("type") == "item_reference" and self.conversation.get(entry["id"]) is None:
                raise ClientEventError(
                    "invalid_value",
                    f"Item with id '{entry['id']}' not found in the conversation.",
                    param=f"response.input[{index}].id",
                )
        self._start_response(params, event.get("event_id"), origin="client")

    def _response_cancel(self, event: dict[str, Any]) -> None:
        response_id = event.get("response_id")
        target = self._running.get(response_id) if response_id else self._active
        if target is None or target.finished.done():
            raise cancel_not_active_error()
        delay = self._faults.delay_cancel
        if delay > 0:
            self._loop.call_later(delay, target.request_cancel, "client_cancelled")
        else:
            target.request_cancel("client_cancelled")

    # ----------------------------------------------------------------- helpers
    def _start_response(
        self, params: dict[str, Any], client_event_id: str | None, *, origin: str
    ) -> Response:
        in_conversation = params.get("conversation", "auto") != "none"
        config = self._config
        audio_config = config.get("audio", {}).get("output", {})
        audio_params = (params.get("audio") or {}).get("output") or {}
        response = Response(
            id=self.ids.new("resp"),
            in_conversation=in_conversation,
            conversation_id=self.conversation.id if in_conversation else None,
            params=params,
            output_modalities=list(
                params.get("output_modalities") or config.get("output_modalities") or ["audio"]
            ),
            max_output_tokens=params.get(
                "max_output_tokens", config.get("max_output_tokens", "inf")
            ),
            metadata=params.get("metadata"),
            audio_output={
                "format": audio_params.get("format", audio_config.get("format")),
                "voice": audio_params.get("voice", audio_config.get("voice")),
            },
            client_event_id=client_event_id,
            origin=origin,
            loop=self._loop,
        )
        if in_conversation:
            self._active = response
            self._disarm_idle()
        self._running[response.id] = response
        with self._recorder.lock:
            self._counters["responses"] += 1
        response.task = self._loop.create_task(
            ResponseStream(self, response).run(), name=f"emulator-{response.id}"
        )
        return response

    def _commit_user_audio(
        self, item_id: str, transcript: str | None, duration_ms: float = 0.0
    ) -> None:
        self._input_audio_bytes = 0
        self.emit(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": self.conversation.last_id(),
                "item_id": item_id,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }
        previous = self.conversation.insert(item)
        self.emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self.emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        self._transcribe(item_id, transcript or "", duration_ms)

    def _transcribe(self, item_id: str, text: str, duration_ms: float) -> None:
        """Input audio transcription, when ``audio.input.transcription`` names a model:
        the transcript of the committed audio as ``...input_audio_transcription.delta``
        events (word by word; ``whisper-1`` does not stream: one delta with the whole
        text), then ``.completed`` with its usage (``whisper-1`` is billed by duration,
        the other models by tokens). Audio with no known words transcribes to ``""``."""
        audio_input = self._config.get("audio", {}).get("input", {})
        transcription = audio_input.get("transcription")
        if not isinstance(transcription, dict) or not transcription.get("model"):
            return
        model = transcription["model"]
        words = text.split(" ") if text else []
        if not words:
            chunks: list[str] = []
        elif model == "whisper-1":
            chunks = [text]
        else:
            chunks = [word + " " for word in words[:-1]] + [words[-1]]
        for chunk in chunks:
            self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": chunk,
                }
            )
        usage: dict[str, Any]
        if model == "whisper-1":
            usage = {"type": "duration", "seconds": round(duration_ms / 1000, 3)}
        else:
            audio_tokens = max(1, round(duration_ms / 100))
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": len(words),
                "total_tokens": audio_tokens + len(words),
                "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
            }
        self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": usage,
            }
        )

    def _resolve_input(self, entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("type") == "item_reference":
            found = self.conversation.get(entry["id"])
            return copy.deepcopy(found) if found is not None else {}
        return copy.deepcopy(entry)

    def _audio_drained(self, response_id: str) -> None:
        if not self._closed:
            self.emit({"type": "output_audio_buffer.stopped", "response_id": response_id})
        if self._idle_after_playback == response_id:
            self._idle_after_playback = None
            if self._active is None:
                self._arm_idle()

    # ------------------------------------------------------------ idle timeouts
    def _arm_idle(self, after_ms: float = 0.0) -> None:
        """Start counting silence (see the module docstring); ``after_ms`` of speech
        are still to be played first."""
        self._disarm_idle()
        timeout_ms = _idle_timeout_ms(self._config)
        if timeout_ms is None or self._closed or self._user_speaking:
            return
        delay = (after_ms + timeout_ms) / 1000
        self._idle = self._loop.call_later(delay, self._idle_timeout)

    def _disarm_idle(self) -> None:
        self._idle_after_playback = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_timeout(self) -> None:
        """``idle_timeout_ms`` of silence: announce it, commit it, answer it."""
        self._idle = None
        timeout_ms = _idle_timeout_ms(self._config)
        if timeout_ms is None or self._closed or self._active is not None:
            return
        if self._held_turn is not None:
            return  # a turn's response is about to start
        item_id = self.ids.new("item")
        start_ms = self._audio_clock_ms
        self._audio_clock_ms = start_ms + timeout_ms
        with self._recorder.lock:
            self._counters["idle_timeouts"] += 1
            self._counters["idle_responses"] += 1
        self.emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start_ms,
                "audio_end_ms": self._audio_clock_ms,
                "item_id": item_id,
            }
        )
        self._commit_user_audio(item_id, transcript=None, duration_ms=timeout_ms)
        self._start_response({}, None, origin="idle_timeout")

    def _expire(self) -> None:
        seconds = self._settings.max_session_seconds
        span = f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
        self._send_error(
            ClientEventError(
                "session_expired", f"Your session hit the maximum duration of {span}."
            ),
            None,
        )
        self.terminate("session expired")

    def _send_error(
        self, exc: ClientEventError, client_event_id: str | None, to: Channel | None = None
    ) -> None:
        self.emit({"type": "error", "error": exc.payload(client_event_id)}, to)

    def _record_client(self, event: dict[str, Any]) -> None:
        with self._recorder.lock:
            self._client_events.append(event)
            self._counters["client_events"] += 1
            self._recorder.changed()
        hook = self._settings.on_client_event
        if hook is not None:
            try:
                hook(self, copy.deepcopy(event))
            except Exception:
                logger.exception("emulator: the on_client_event hook raised")

    def _transmit(
        self, text: str, error_event: dict[str, Any] | None, to: Channel | None = None
    ) -> None:
        if self._closed:
            return
        with self._recorder.lock:
            self._counters["server_events"] += 1
            if self._settings.record_server_events:
                self._server_texts.append(text)
            if error_event is not None:
                self._counters["errors"] += 1
                self._errors.append(error_event)
            self._recorder.changed()
        channels = list(self._channels) if to is None else [to] if to in self._channels else []
        for channel in channels:
            try:
                channel.send_text(text)
            except Exception as exc:  # e.g. larger than the peer's max-message-size
                logger.warning("emulator: {} could not send an event: {}", self.id, exc)
        self._sent += 1
        limit = self._faults.close_after_events
        if limit is not None and self._sent >= limit:
            self.terminate(f"fault: close after {limit} events")


def _idle_timeout_ms(config: dict[str, Any]) -> int | None:
    """The session's ``idle_timeout_ms`` if set (server VAD only, as the API has it)."""
    detection = turn_detection(config)
    if detection is None or detection.get("type", "server_vad") != "server_vad":
        return None
    value = detection.get("idle_timeout_ms")
    return value if isinstance(value, int) and value > 0 else None
