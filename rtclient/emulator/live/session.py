"""One GPT-Live session: its connections, its commands, and its close.

A Live session has one **primary** connection - a WebSocket that must open with
``session.start``, or the ``oai-events`` data channel of a WebRTC call created with
``POST /v1/live/sessions`` (already started) - and any number of **sidebands**
(``GET /v1/live/sessions/{id}/attach``). Every server event goes to all of them, except:

* an ``error`` a command caused goes only to the connection that sent it;
* the caller's input audio reflected as a *server* ``session.input_audio.append`` and
  the model's output as ``session.output_audio.delta`` with ``start_ms``/``end_ms``
  (PCM16 24 kHz) go to sidebands only; the primary WebSocket gets the output deltas in
  its own format without timestamps; WebRTC carries audio on the media track;
* a WebRTC frontend's ``client.data_channel`` permissions filter what its channel may
  send and receive (announced by an ``info`` event, code ``data_channel_permissions``).

A sideband may not send ``session.start`` or ``session.input_audio.append`` (refused,
the session goes on). A command answered by an event puts its ``event_id`` in that
event's top-level ``client_event_id``; an error also in ``error.client_event_id``.

The session clock is the input audio (``timeline``): see ``timeline`` and ``voice``.
It ends with ``session.closed`` (``close_requested`` for ``session.close`` - after
letting a running backend response finish - or hangup; ``expired`` at the session
limit; ``connection_lost`` when the primary goes away; any reason by fault or control),
after an ``error`` ``context_injection_incomplete`` for every append still waiting for
the timeline. Faults that cut the connection (``close_after_events``) end it without
``session.closed``.

Everything runs on the emulator's loop; records are written under the record lock, and
the methods documented as thread-safe may be called from test threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import av
from loguru import logger

from ..audio import AudioPlayback
from ..errors import SERVER_ERROR, ClientEventError
from ..faults import Faults
from ..ids import IdFactory
from ..model import Model, Pace
from ..onloop import call_on
from ..records import Recorder, parse_received, parse_sent
from ..session import Channel
from .backend import BackendResponse, ResponsesBackend
from .config import apply_update, delegation_type, resolve
from .delegations import KINDS, Append, Delegation, DelegationBook
from .errors import error_event, refused, requires_responses
from .media import SIDEBAND_RATE, AudioFormat, FrameReflector
from .permissions import FrontendPermissions
from .rules import LiveRules
from .schema import estimate_tokens, parse_event
from .timeline import Timeline
from .voice import Voice

T = TypeVar("T")
_PCM24 = AudioFormat("audio/pcm", SIDEBAND_RATE)
_NO_EVENT_ID = ("session.input_audio.append", "session.output_audio.delta")
"""Server events the types define without ``event_id`` (sent without one)."""


@dataclass(frozen=True)
class LiveSettings:
    """What a new Live session takes from its emulator."""

    model: Model
    pace: Pace
    faults: Faults
    rules: LiveRules
    max_session_seconds: float
    record_server_events: bool = True


class LiveSession:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        recorder: Recorder,
        ids: IdFactory,
        settings: LiveSettings,
        media: str,
        on_closed: Callable[[LiveSession], None] | None = None,
    ) -> None:
        self.id: str = ids.new("live")
        self.media = media
        """``"websocket"`` (primary WebSocket) or ``"webrtc"``."""
        self.ids = ids
        self.timeline = Timeline()
        self.voice = Voice(self)
        self.backend = ResponsesBackend(self)
        self.book = DelegationBook()
        self.playback: AudioPlayback | None = (
            AudioPlayback(lambda _speaker: None) if media == "webrtc" else None
        )
        self._loop = loop
        self._recorder = recorder
        self._settings = settings
        self._faults = settings.faults
        self._rules = settings.rules
        self._pace = settings.pace
        self._model = settings.model
        self._on_closed = on_closed
        self._config: dict[str, Any] | None = None
        self._state = "waiting"
        self._announced = False
        self._primary: Channel | None = None
        self._sidebands: list[Channel] = []
        self._format = AudioFormat()
        self._permissions = FrontendPermissions(None)
        self._reflector: FrameReflector | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._draining: asyncio.Task[None] | None = None
        self._next_usage_ms = 0
        self._close_reason: str | None = None
        self._clock_ms = 0
        self._sent = 0
        self._client_events: list[dict[str, Any]] = []
        self._server_texts: list[str] = []
        self._errors: list[dict[str, Any]] = []
        self._transcript: list[dict[str, Any]] = []
        self._counters: Counter[str] = Counter()
        self._handlers: dict[str, Callable[[dict[str, Any], Channel | None], None]] = {
            "session.update": self._session_update,
            "session.input_audio.append": self._input_audio,
            "session.input_audio.mute": self._mute,
            "session.input_audio.unmute": self._unmute,
            "session.instructions.append": self._append,
            "session.thinking.append": self._append,
            "session.commentary.append": self._append,
            "response.item.create": self._response_item_create,
            "response.create": self._response_create,
            "session.close": self._session_close,
        }

    # ----------------------------------------------------------- thread-safe reads
    @property
    def call_id(self) -> str | None:
        """The id a WebRTC call is known by (the session id); None on a WebSocket."""
        return self.id if self.media == "webrtc" else None

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def started(self) -> bool:
        return self._config is not None

    @property
    def close_reason(self) -> str | None:
        """``session.closed``'s reason, once closing (None if cut by a fault)."""
        return self._close_reason

    @property
    def clock_ms(self) -> int:
        """The session clock: milliseconds of input audio received."""
        with self._recorder.lock:
            return self._clock_ms

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved session object (None before ``session.start``), a copy."""
        return call_on(self._loop, lambda: copy.deepcopy(self._config))

    @property
    def client_events(self) -> list[dict[str, Any]]:
        """Every message a client sent (any connection), parsed; refused ones too."""
        with self._recorder.lock:
            return copy.deepcopy(self._client_events)

    @property
    def server_events(self) -> list[dict[str, Any]]:
        """Every event sent (to any connection), parsed."""
        with self._recorder.lock:
            texts = list(self._server_texts)
        return [parse_sent(text) for text in texts]

    @property
    def errors(self) -> list[dict[str, Any]]:
        with self._recorder.lock:
            return copy.deepcopy(self._errors)

    @property
    def counters(self) -> dict[str, int]:
        """``client_events``, ``server_events``, ``errors``, ``delegations``, ``appends``
        (accepted), ``appended`` (landed), ``incomplete_appends``, ``creates``,
        ``rejections``, ``responses`` (backend), ``audio_frames_in`` (WebRTC)."""
        with self._recorder.lock:
            return dict(self._counters)

    def count(self, name: str) -> None:
        with self._recorder.lock:
            self._counters[name] += 1
            self._recorder.changed()

    def delegations(self) -> dict[str, Any]:
        """``{"delegations": [...], "general": [...], "foreign": {...}}``: every
        delegation with every append made to it, in order (see ``delegations.py``)."""
        with self._recorder.lock:
            return self.book.to_json()

    def appends(self, delegation_id: str | None = None) -> list[dict[str, Any]]:
        """Every append (or those of one delegation), in arrival order."""
        with self._recorder.lock:
            return [
                a.to_json()
                for a in self.book.appends
                if delegation_id is None or a.delegation_id == delegation_id
            ]

    def transcript(
        self, up_to_ms: int | None = None, side: str | None = None
    ) -> list[dict[str, Any]]:
        """Transcript fragments sent (``side``: ``user`` or ``model``), those ending by
        ``up_to_ms`` if given: ``{"side", "delta", "start_ms", "end_ms"}``."""
        with self._recorder.lock:
            return [
                dict(f)
                for f in self._transcript
                if (side is None or f["side"] == side)
                and (up_to_ms is None or f["end_ms"] <= up_to_ms)
            ]

    def snapshot(self) -> dict[str, Any]:
        """Everything the control route ``GET /_emulator/live/{id}`` shows."""
        with self._recorder.lock:
            return {
                "id": self.id,
                "media": self.media,
                "started": self.started,
                "closed": self.closed,
                "close_reason": self._close_reason,
                "clock_ms": self._clock_ms,
                "muted": self.voice.muted,
                "sidebands": len(self._sidebands),
                "config": copy.deepcopy(self._config),
                "counters": dict(self._counters),
                "rules": self._rules.to_json(),
                "faults": self._faults.to_json(),
                **self.book.to_json(),
                "pending_appends": [a.to_json() for a in self.book.pending()],
                "transcript": [dict(f) for f in self._transcript],
                "errors": copy.deepcopy(self._errors),
                "client_events": copy.deepcopy(self._client_events),
            }

    # --------------------------------------------------------- thread-safe control
    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    def set_faults(self, **changes: Any) -> Faults:
        self._faults = self._faults.replace(**changes)
        return self._faults

    @property
    def rules(self) -> LiveRules:
        return self._rules

    @rules.setter
    def rules(self, rules: LiveRules) -> None:
        self._rules = rules

    def set_rules(self, **changes: Any) -> LiveRules:
        self._rules = self._rules.replace(**changes)
        return self._rules

    @property
    def pace(self) -> Pace:
        return self._pace

    @property
    def model(self) -> Model:
        return self._model

    def simulate_speech(
        self, text: str, duration_ms: int | None = None, *, with_audio: bool = False
    ) -> dict[str, int]:
        """The user says ``text`` over the next ``duration_ms`` of input audio
        (``with_audio``: and that audio arrives now, as silence on the primary).
        Returns ``{"start_ms", "end_ms"}`` of the utterance on the timeline."""
        return call_on(self._loop, lambda: self.speech(text, duration_ms, with_audio=with_audio))

    def feed_audio(self, milliseconds: int) -> int:
        """``milliseconds`` of silence arrive as input audio (as if the primary sent
        them); returns the clock after."""
        return call_on(self._loop, lambda: self.feed(milliseconds))

    def force_delegation(self, task: str = "") -> dict[str, Any]:
        """The model delegates now, at the current clock (as if ``task`` was heard)."""
        return call_on(self._loop, lambda: self.delegate_task(task, self.timeline.now_ms))

    def finish_delegation(self, delegation_id: str) -> None:
        """Mark a delegation finished: appends naming it are refused from now on."""

        def finish() -> None:
            delegation = self.book.delegations.get(delegation_id)
            if delegation is None:
                raise KeyError(delegation_id)
            with self._recorder.lock:
                delegation.finished = True
                self._recorder.changed()

        call_on(self._loop, finish)

    def close(self, reason: str = "close_requested") -> None:
        """The server ends the session now with ``session.closed`` (this reason)."""
        call_on(self._loop, lambda: self.end(reason))

    # -------------------------------------------------------------- loop side: I/O
    def start_media(self, session: dict[str, Any]) -> None:
        """A WebRTC creation: the session starts with ``session`` (already checked);
        ``session.started`` goes out when the data channel opens."""
        self._start(session)

    def attach(self, channel: Channel) -> None:
        """The primary connection (a WebSocket, or the call's data channel)."""
        if self.closed:
            channel.close()
            return
        self._primary = channel
        if self.media == "webrtc" and self._config is not None and not self._announced:
            self._announced = True
            announcement = self._permissions.announcement()
            if announcement is not None:
                self.emit(announcement)
            self.emit({"type": "session.started", "session": copy.deepcopy(self._config)})

    def attach_sideband(self, channel: Channel) -> None:
        if self.closed:
            channel.close()
            return
        self._sidebands.append(channel)
        with self._recorder.lock:
            self._counters["sidebands"] += 1
            self._recorder.changed()
        if self._rules.started_on_attach and self._config is not None:
            self.emit({"type": "session.started", "session": copy.deepcopy(self._config)}, channel)

    def detach(self, channel: Channel) -> None:
        if channel in self._sidebands:
            self._sidebands.remove(channel)
            return
        if channel is self._primary:
            self._primary = None
            self.end("connection_lost")

    def terminate(self, reason: str) -> None:
        """The call or the emulator ends (``Peer``/shutdown): the connection is lost."""
        logger.debug("emulator: live session {} ends: {}", self.id, reason)
        self.end("connection_lost")

    def handle_text(self, text: str | bytes, channel: Channel | None = None) -> None:
        """One message from ``channel`` (the primary, or a sideband)."""
        if self.closed:
            return
        try:
            event = parse_event(text, self._rules)
        except ClientEventError as exc:
            raw = parse_received(text)
            self._record_client(raw)
            client_event_id = raw.get("event_id")
            self._refuse(
                exc, client_event_id if isinstance(client_event_id, str) else None, channel
            )
            return
        self._record_client(event)
        event_type: str = event["type"]
        client_event_id = event.get("event_id")
        faults = self._faults
        if faults.ignore_event_type == event_type:
            return
        try:
            if faults.fail_event_type == event_type:
                raise ClientEventError(
                    faults.fail_error_code,
                    f"The server had an error while processing your {event_type} "
                    "(injected by the emulator).",
                    type=faults.fail_error_type,
                )
            self._dispatch(event, channel)
        except ClientEventError as exc:
            self._refuse(exc, client_event_id, channel)
        except Exception:
            logger.exception("emulator: {} failed on {}", self.id, event_type)
            error = ClientEventError(
                "server_error",
                "The server had an error while processing your request.",
                type=SERVER_ERROR,
            )
            self._refuse(error, client_event_id, channel)

    def record_audio_frame(self, frame: av.AudioFrame) -> None:
        """A frame of the caller's WebRTC audio: it moves the clock (and is reflected
        to sidebands)."""
        with self._recorder.lock:
            self._counters["audio_frames_in"] += 1
        if self._state not in ("active", "closing"):
            return
        reflected = None
        if self._sidebands:
            self._reflector = self._reflector or FrameReflector()
            reflected = self._reflector.convert(frame)
        self._advance(frame.samples * 1000 / frame.sample_rate, reflected)

    def emit(self, event: dict[str, Any], to: Channel | str | None = None) -> None:
        """Send one server event to every connection, or ``to`` one of them, or
        ``to="sidebands"``/``"primary"``. An ``event_id`` is added unless the types
        define the event without one."""
        if event["type"] not in _NO_EVENT_ID:
            event = {"type": event["type"], "event_id": self.ids.new("event"), **event}
        self._transmit(json.dumps(event), event, to)

    def send_raw(self, text: str) -> None:
        self._transmit(text, None, None)

    # --------------------------------------------------------- loop side: control
    def speech(
        self, text: str, duration_ms: int | None = None, *, with_audio: bool = False
    ) -> dict[str, int]:
        if not self.started or self._state != "active":
            raise RuntimeError(f"live session {self.id} is not running")
        start, end = self.voice.listen(text, duration_ms)
        if with_audio and end > self.timeline.now_ms:
            self.feed(end - self.timeline.now_ms)
        return {"start_ms": start, "end_ms": end}

    def feed(self, milliseconds: int) -> int:
        if self._state not in ("active", "closing"):
            raise RuntimeError(f"live session {self.id} is not running")
        if milliseconds > 0:
            if self.media == "websocket":
                self._audio_in(self._format.silence(milliseconds))
            else:
                self._advance(
                    milliseconds, _PCM24.silence(milliseconds) if self._sidebands else None
                )
        return self.timeline.now_ms

    def end(self, reason: str, client_event_id: str | None = None, *, drain: bool = False) -> None:
        """Close with ``session.closed {reason}`` (after a drain, for ``session.close``)."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "waiting":
            self._shutdown("closed before session.start")
            return
        self._state = "closing"
        with self._recorder.lock:
            self._close_reason = reason
            self._recorder.changed()
        if drain and self.backend.active is not None:
            self._draining = self._loop.create_task(self._drain_then_close(reason, client_event_id))
        else:
            self._finish_close(reason, client_event_id)

    # ----------------------------------------------------------------- commands
    def _dispatch(self, event: dict[str, Any], channel: Channel | None) -> None:
        event_type = event["type"]
        sideband = channel in self._sidebands
        if sideband and event_type in ("session.start", "session.input_audio.append"):
            raise refused(
                "not_allowed_on_sideband",
                f"{event_type} is not allowed on a sideband connection.",
                "type",
            )
        if not sideband and self.media == "webrtc":
            self._permissions.check_client(event_type)
        if event_type == "session.start":
            if self._state != "waiting":
                raise refused(
                    "session_already_started",
                    "The session has already started; session.start is sent once, first, "
                    "on a primary WebSocket only.",
                    "type",
                )
            self._start(event["session"], event.get("event_id"))
            return
        if self._state == "waiting":
            raise refused(
                "session_not_started",
                f"Send session.start and wait for session.started before {event_type}.",
                "type",
            )
        if self._state == "closing":
            if event_type in KINDS:
                raise refused(
                    "context_injection_incomplete",
                    "The session is closing; the appended context could not be placed.",
                )
            if event_type != "session.input_audio.append":
                raise refused(
                    "session_closing", f"The session is closing; {event_type} was ignored."
                )
        self._handlers[event_type](event, channel)

    def _start(self, session: dict[str, Any], client_event_id: str | None = None) -> None:
        expires_at = int(time.time() + self._settings.max_session_seconds)
        config = resolve(session, session_id=self.id, expires_at=expires_at, media=self.media)
        with self._recorder.lock:
            self._config = config
            self._recorder.changed()
        self._format = AudioFormat.of(config) if self.media == "websocket" else AudioFormat()
        self._permissions = FrontendPermissions(config)
        self._state = "active"
        self._expiry = self._loop.call_later(
            self._settings.max_session_seconds, lambda: self.end("expired")
        )
        self._schedule_usage()
        if self.media == "websocket":
            event: dict[str, Any] = {"type": "session.started", "session": copy.deepcopy(config)}
            self.emit(_answering(event, client_event_id))

    def _session_update(self, event: dict[str, Any], channel: Channel | None) -> None:
        assert self._config is not None
        updated = copy.deepcopy(self._config)
        apply_update(updated, event["session"])
        self._config = updated
        answer = {"type": "session.updated", "session": copy.deepcopy(updated)}
        self.emit(_answering(answer, event.get("event_id")))

    def _input_audio(self, event: dict[str, Any], channel: Channel | None) -> None:
        if self.media != "websocket":
            raise refused(
                "not_allowed_on_transport",
                "session.input_audio.append is for a primary WebSocket; a WebRTC session's "
                "audio travels on its media track.",
                "type",
            )
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise refused(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            ) from None
        self._audio_in(audio)

    def _mute(self, event: dict[str, Any], channel: Channel | None) -> None:
        self.voice.muted = True
        self.emit(_answering({"type": "session.input_audio.muted"}, event.get("event_id")))

    def _unmute(self, event: dict[str, Any], channel: Channel | None) -> None:
        self.voice.muted = False
        self.emit(_answering({"type": "session.input_audio.unmuted"}, event.get("event_id")))

    def _append(self, event: dict[str, Any], channel: Channel | None) -> None:
        kind = KINDS[event["type"]]
        delegation_id: str | None = event["delegation_id"]
        if delegation_id is not None:
            if self._delegation_mode() == "responses":
                raise refused(
                    "invalid_request_error",
                    "delegation_id must be null under Responses delegation.",
                    "delegation_id",
                )
            owner = self.book.delegations.get(delegation_id)
            if owner is None and self._rules.unknown_delegation == "error":
                raise refused(
                    "delegation_not_found",
                    f"Delegation '{delegation_id}' was not found in this session.",
                    "delegation_id",
                )
            if owner is not None and owner.finished:
                raise refused(
                    "delegation_not_active",
                    f"Delegation '{delegation_id}' is finished; nothing more can be appended "
                    "to it.",
                    "delegation_id",
                )
        else:
            owner = None
        start = self.timeline.now_ms
        tokens = estimate_tokens(event["content"], self._rules)
        end = start + tokens * self._rules.append_ms_per_token
        append = Append(
            kind=kind,
            content=event["content"],
            delegation_id=delegation_id,
            client_event_id=event.get("event_id"),
            received_at_ms=start,
            sender=channel,
        )
        with self._recorder.lock:
            self.book.record(append)
            self._counters["appends"] += 1
            if owner is not None and kind == "commentary" and self._rules.finish_on_commentary:
                owner.finished = True
            self._recorder.changed()
        self.timeline.at(end, lambda: self._land(append, start, end))

    def _response_item_create(self, event: dict[str, Any], channel: Channel | None) -> None:
        if self._delegation_mode() != "responses":
            raise requires_responses("response.item.create")
        self.backend.add_item(event["item"])

    def _response_create(self, event: dict[str, Any], channel: Channel | None) -> None:
        if self._delegation_mode() != "responses":
            raise requires_responses("response.create")
        self.backend.create(event.get("event_id"))

    def _session_close(self, event: dict[str, Any], channel: Channel | None) -> None:
        self.end("close_requested", event.get("event_id"), drain=True)

    # ------------------------------------------------------------- the timeline
    def _audio_in(self, audio: bytes) -> None:
        """Input audio in the session's format from the primary (or fed by a test)."""
        if not audio:
            return
        reflected = self._format.to_sideband(audio) if self._sidebands else None
        self._advance(self._format.milliseconds(len(audio)), reflected)

    def _advance(self, milliseconds: float, reflected: bytes | None) -> None:
        if reflected is not None and self._sidebands:
            self.emit({"type": "session.input_audio.append", "audio": _b64(reflected)}, "sidebands")
        start, end = self.timeline.advance(milliseconds)
        with self._recorder.lock:
            self._clock_ms = end
            self._recorder.changed()
        if not self._rules.output_audio or end <= start or self.closed:
            return
        if self.media == "websocket" and self._primary is not None:
            silence = self._format.silence(end - start)
            self.emit({"type": "session.output_audio.delta", "delta": _b64(silence)}, "primary")
        if self._sidebands:
            self.emit(
                {
                    "type": "session.output_audio.delta",
                    "delta": _b64(_PCM24.silence(end - start)),
                    "start_ms": start,
                    "end_ms": end,
                },
                "sidebands",
            )

    def _land(self, append: Append, start: int, end: int) -> None:
        """An append reached the timeline: acknowledge it; the model uses it."""
        with self._recorder.lock:
            append.start_ms, append.end_ms, append.status = start, end, "landed"
            self._counters["appended"] += 1
            self._recorder.changed()
        ack = {"type": f"session.{append.kind}.appended", "start_ms": start, "end_ms": end}
        self.emit(_answering(ack, append.client_event_id))
        if append.kind in ("commentary", "thinking"):
            self.voice.cancel_acknowledgements()
        if append.kind == "commentary":
            self.voice.speak(append.content, end)

    def _schedule_usage(self) -> None:
        interval = self._rules.usage_interval_ms
        if interval <= 0:
            return
        self._next_usage_ms += interval
        self.timeline.at(self._next_usage_ms, self._usage_tick)

    def _usage_tick(self) -> None:
        self.emit({"type": "session.usage.updated", "usage": self._usage()})
        self._schedule_usage()

    def _usage(self) -> dict[str, Any]:
        return {"seconds": self.timeline.now_ms // 1000}

    # ---------------------------------------------------------- VoiceHost, BackendHost
    def spoke(self, milliseconds: int) -> None:
        if self.playback is not None and not self.playback.closed:
            if not self.playback.is_playing():
                self.playback.start(self.id)
            self.playback.add(self.id, milliseconds)

    def backend_tool_names(self) -> list[str]:
        if self._delegation_mode() != "responses":
            return []
        tools = self.backend_config().get("tools") or []
        return [str(t["name"]) for t in tools if t.get("type") == "function" and t.get("name")]

    def acknowledgement_delay_ms(self) -> int:
        assert self._config is not None
        return int(self._config["delegation"].get("acknowledgement_delay_ms") or 0)

    def delegate_task(self, task: str, at_ms: int) -> dict[str, Any]:
        """The model delegates ``task`` (heard, or forced by a test) at ``at_ms``."""
        if self._state != "active":
            raise RuntimeError(f"live session {self.id} is not running")
        target = self._delegation_mode()
        if target == "client":
            self.emit_fault_events()
        delegation = Delegation(
            id=self.ids.new("dlg"),
            target=target,
            offset_ms=at_ms,
            task=task,
            response_id=self.ids.new("resp") if target == "responses" else None,
        )
        with self._recorder.lock:
            self.book.add(delegation)
            self._counters["delegations"] += 1
            self._recorder.changed()
        shown: dict[str, Any] = {"id": delegation.id, "type": "delegation", "target": target}
        if delegation.response_id is not None:
            shown["response_id"] = delegation.response_id
        self.emit({"type": "session.delegation.created", "delegation": shown, "offset_ms": at_ms})
        if delegation.response_id is not None:
            self.backend.delegate(delegation.id, task, delegation.response_id)
        self.voice.acknowledge(at_ms)
        close_reason = self._faults.close_after_delegation
        if close_reason is not None:
            self.end(close_reason)
        return delegation.to_json()

    def heard(self, side: str, text: str, start_ms: int, end_ms: int) -> None:
        with self._recorder.lock:
            self._transcript.append(
                {"side": side, "delta": text, "start_ms": start_ms, "end_ms": end_ms}
            )
            self._recorder.changed()

    def backend_config(self) -> dict[str, Any]:
        assert self._config is not None
        responses: dict[str, Any] = self._config["delegation"].get("responses") or {}
        return responses

    def emit_fault_events(self) -> None:
        """``malformed_json``/``unknown_event``/``oversized_event_bytes``: before each
        delegation and each backend response."""
        faults = self._faults
        if faults.malformed_json:
            self.send_raw('{"type": "session.delegation.created", "event_id": "event_tru')
        if faults.unknown_event:
            self.emit({"type": "emulator.unknown_event", "note": "injected by the emulator"})
        if faults.oversized_event_bytes > 0:
            padding = "x" * faults.oversized_event_bytes
            self.emit({"type": "info", "code": "emulator_padding", "message": padding})

    def response_event(
        self, event: dict[str, Any], delegation_id: str | None, client_event_id: str | None
    ) -> None:
        wrapped = {"type": "response.event", "delegation_id": delegation_id, "event": event}
        self.emit(_answering(wrapped, client_event_id))

    def backend_finished(self, response: BackendResponse) -> None:
        with self._recorder.lock:
            self._counters[response.status] += 1
            self._recorder.changed()
        if response.text and self._state == "active":
            self.voice.speak(response.text, self.timeline.now_ms)

    # ----------------------------------------------------------------- closing
    async def _drain_then_close(self, reason: str, client_event_id: str | None) -> None:
        try:
            await asyncio.wait_for(self.backend.idle(), self._rules.close_drain_s)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from 3.11
            logger.debug("emulator: {} closes with a backend response running", self.id)
        self._finish_close(reason, client_event_id)

    def _finish_close(self, reason: str, client_event_id: str | None) -> None:
        if self.closed:
            return
        self.backend.cancel_all()
        for append in self.book.pending():
            with self._recorder.lock:
                append.status = "incomplete"
                self._counters["incomplete_appends"] += 1
            error = refused(
                "context_injection_incomplete",
                f"The session closed before the appended {append.kind} was placed on the "
                "timeline (no input audio reached it).",
            )
            self._refuse(error, append.client_event_id, append.sender)
        assert self._config is not None
        closed: dict[str, Any] = {
            "type": "session.closed",
            "reason": reason,
            "session": copy.deepcopy(self._config),
            "usage": self._usage(),
        }
        self.emit(_answering(closed, client_event_id))
        self._shutdown(f"session.closed: {reason}")

    def _shutdown(self, why: str) -> None:
        """Stop everything and close every connection (no more events)."""
        if self.closed:
            return
        logger.debug("emulator: live session {} ends: {}", self.id, why)
        self._state = "closed"
        if self._expiry is not None:
            self._expiry.cancel()
        draining = self._draining
        if draining is not None and draining is not asyncio.current_task():
            draining.cancel()
        self.timeline.clear()
        self.backend.cancel_all()
        if self.playback is not None:
            self.playback.close()
        channels = ([self._primary] if self._primary is not None else []) + self._sidebands
        self._primary, self._sidebands = None, []
        for channel in channels:
            channel.close()
        with self._recorder.lock:
            self._recorder.changed()
        if self._on_closed is not None:
            self._on_closed(self)

    # ----------------------------------------------------------------- helpers
    def _delegation_mode(self) -> str:
        assert self._config is not None
        return delegation_type(self._config)

    def _refuse(
        self, exc: ClientEventError, client_event_id: str | None, channel: Channel | None
    ) -> None:
        self.emit(error_event(exc, client_event_id), channel)

    def _record_client(self, event: dict[str, Any]) -> None:
        with self._recorder.lock:
            self._client_events.append(event)
            self._counters["client_events"] += 1
            self._recorder.changed()

    def _targets(self, to: Channel | str | None) -> list[Channel]:
        primary = [self._primary] if self._primary is not None else []
        if to is None:
            return primary + self._sidebands
        if to == "primary":
            return primary
        if to == "sidebands":
            return list(self._sidebands)
        if to is self._primary or to in self._sidebands:
            return [to]
        return []

    def _transmit(self, text: str, event: dict[str, Any] | None, to: Channel | str | None) -> None:
        if self.closed:
            return
        targets = self._targets(to)
        with self._recorder.lock:
            self._counters["server_events"] += 1
            if self._settings.record_server_events:
                self._server_texts.append(text)
            if event is not None and event.get("type") == "error":
                self._counters["errors"] += 1
                self._errors.append(event)
            self._recorder.changed()
        for channel in targets:
            frontend = channel is self._primary and self.media == "webrtc"
            if frontend and not self._permissions.receives(event):
                continue
            try:
                channel.send_text(text)
            except Exception as exc:  # e.g. larger than the peer's max-message-size
                logger.warning("emulator: {} could not send an event: {}", self.id, exc)
        self._sent += 1
        limit = self._faults.close_after_events
        if limit is not None and self._sent >= limit:
            self._shutdown(f"fault: close after {limit} events")


def _answering(event: dict[str, Any], client_event_id: str | None) -> dict[str, Any]:
    """``event`` with the command's ``event_id`` as ``client_event_id`` (if it had one)."""
    if client_event_id is not None:
        event["client_event_id"] = client_event_id
    return event


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
