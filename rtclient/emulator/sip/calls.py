"""Phone calls on the emulator: each one rings, is answered through one API, and ends.

A dialled call has both ids from the start - an ``rtc_...`` call id for the Realtime
routes and a ``live_...`` session id for the GPT-Live ones - and its webhooks go out to
the APIs it is offered to. Then, through either API::

    ringing --accept--> accepted --(hang-up, refer, the caller hangs up, the session
       |                            ends)--> ended
       +--reject--> rejected (the status code is recorded)
       +--the caller hangs up--> missed

The first successful accept wins: it creates the call's session from its config (a
Realtime session, or a GPT-Live one) and connects the caller's phone to it
(``phone.py``); from then on the call is that API's. Anything done to a call that is
not in the state it needs - the second accept, through the same API or the other one,
a reject after the answer, a refer before it, any verb through the API that did not
answer - is answered as each API answers a call it does not have: ``404``
``call_id_not_found`` (Realtime) or ``session_not_found`` (GPT-Live).

Everything here runs on the emulator's loop; the records are written under the
emulator's record lock, so ``emu.wait_for(lambda: ...)`` sees them change.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import weakref
from collections import Counter
from typing import Any

from loguru import logger

from ..errors import ApiError
from ..live.session import LiveSession
from ..peer import Peer
from ..registry import Registry
from ..session import Session
from .phone import Phone, milliseconds_of
from .webhooks import Delivery, Endpoint, call_event, deliver

APIS = ("realtime", "live")
DTMF_KEYS = frozenset("0123456789*#ABCD")
_MEDIA_TIMEOUT_S = 10.0


class SipCall:
    """One phone call and everything that happened to it (read with :meth:`snapshot`)."""

    def __init__(
        self,
        *,
        call_id: str,
        session_id: str,
        apis: tuple[str, ...],
        sip_headers: list[dict[str, str]],
        endpoint: Endpoint,
    ) -> None:
        self.call_id = call_id
        self.session_id = session_id
        self.apis = apis
        self.sip_headers = sip_headers
        self.endpoint = endpoint
        self.state = "ringing"
        self.answered_by: str | None = None
        self.accept_body: dict[str, Any] | None = None
        self.reject_status: int | None = None
        self.refer_target: str | None = None
        self.ended_by: str | None = None
        self.session: Session | LiveSession | None = None
        self.peer: Peer | None = None
        self.phone: Phone | None = None
        self.messages: dict[str, tuple[str, bytes]] = {}  # api -> (webhook id, body)
        self.deliveries: list[Delivery] = []
        self.attempts: Counter[str] = Counter()  # webhook id -> deliveries started
        self.dtmf: list[str] = []
        self.utterances: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        """Every call-control request for this call, in order: ``{"api", "verb",
        "status"}`` (the HTTP status it was answered with)."""

    @property
    def status(self) -> str:
        """``ringing``, ``accepted``, ``ended``, ``rejected``, ``missed`` or ``failed``."""
        if self.state == "accepted" and self.session is not None and self.session.closed:
            return "ended"
        return self.state

    def id_for(self, api: str) -> str:
        return self.call_id if api == "realtime" else self.session_id

    def snapshot(self) -> dict[str, Any]:
        """The call's record (no secret in it): what the control route shows."""
        session = self.session
        return {
            "call_id": self.call_id,
            "session_id": self.session_id,
            "apis": list(self.apis),
            "status": self.status,
            "answered_by": self.answered_by,
            "accept_body": copy.deepcopy(self.accept_body),
            "reject_status": self.reject_status,
            "refer_target": self.refer_target,
            "ended_by": self.ended_by,
            "sip_headers": copy.deepcopy(self.sip_headers),
            "webhook_url": self.endpoint.url,
            "webhook_ids": {api: message[0] for api, message in self.messages.items()},
            "deliveries": [d.to_json() for d in self.deliveries],
            "dtmf": list(self.dtmf),
            "utterances": copy.deepcopy(self.utterances),
            "requests": copy.deepcopy(self.requests),
            "session": None if session is None else session.id,
            "frames_sent": self.phone.voice.frames_sent if self.phone else 0,
            "frames_heard": self.phone.frames_heard if self.phone else 0,
        }


class Switchboard:
    """The phone calls of one emulator (``switchboard(emu)`` returns it)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        # the emulator's record lock: one wait_for sees calls and sessions change alike
        self._recorder = registry._recorder
        self._calls: list[SipCall] = []
        self.endpoint: Endpoint | None = None
        """The default webhook endpoint (``POST /_emulator/sip/webhook``)."""

    # ----------------------------------------------------------- thread-safe reads
    @property
    def calls(self) -> list[SipCall]:
        with self._recorder.lock:
            return list(self._calls)

    def call(self, key: str) -> SipCall:
        """The call with this ``rtc_...`` or ``live_...`` id (KeyError if none)."""
        with self._recorder.lock:
            for call in reversed(self._calls):
                if key in (call.call_id, call.session_id):
                    return call
        raise KeyError(key)

    def snapshot(self, key: str) -> dict[str, Any]:
        with self._recorder.lock:
            return self.call(key).snapshot()

    # ------------------------------------------------------- loop side: the caller
    async def dial(
        self,
        *,
        endpoint: Endpoint,
        apis: tuple[str, ...],
        sip_headers: list[dict[str, str]],
        signature: str = "valid",
        timestamp_offset: int = 0,
        copies: int = 1,
    ) -> SipCall:
        """A call rings: its webhooks are delivered (at once, one per API) before this
        returns, so an app that answers inside its webhook handler has answered."""
        ids = self.registry.ids
        call = SipCall(
            call_id=ids.hex("rtc"),
            session_id=ids.new("live"),
            apis=apis,
            sip_headers=sip_headers,
            endpoint=endpoint,
        )
        for api in apis:
            body = call_event(api, ids.new("evt"), call.call_id, call.session_id, sip_headers)
            call.messages[api] = (ids.hex("wh"), body)
        with self._recorder.lock:
            self._calls.append(call)
            self._recorder.changed()
        await self.redeliver(
            call, signature=signature, timestamp_offset=timestamp_offset, copies=copies
        )
        return call

    async def redeliver(
        self,
        call: SipCall,
        *,
        apis: tuple[str, ...] | None = None,
        signature: str = "valid",
        timestamp_offset: int = 0,
        copies: int = 1,
    ) -> list[Delivery]:
        """Deliver the call's messages (again): the same webhook id and body, a new
        timestamp and signature - what the API's retry looks like. ``copies``: each
        message that many times at once (duplicates do happen)."""
        attempts: list[tuple[Delivery, bytes]] = []
        for api in [a for a in apis or call.apis for _ in range(copies)]:
            if api not in call.messages:
                raise ApiError(400, f"The call was not offered to the {api} API.", param="api")
            webhook_id, body = call.messages[api]
            with self._recorder.lock:
                call.attempts[webhook_id] += 1
                attempt = call.attempts[webhook_id]
            delivery = Delivery(
                webhook_id=webhook_id,
                event_type=json.loads(body)["type"],
                attempt=attempt,
                signature=signature,
                timestamp=int(time.time()) + timestamp_offset,
            )
            attempts.append((delivery, body))
        done = await asyncio.gather(*(deliver(call.endpoint, d, body) for d, body in attempts))
        with self._recorder.lock:
            call.deliveries.extend(done)
            self._recorder.changed()
        return list(done)

    async def speak(self, call: SipCall, text: str, pcm: bytes) -> dict[str, Any]:
        """The caller says ``text`` with the audio ``pcm`` (48 kHz mono PCM16): the
        phone plays it into the call, and the session hears ``text`` over its length
        (server VAD for Realtime; the audio clock for GPT-Live), then answers."""
        session, phone = self._media(call)
        milliseconds = milliseconds_of(pcm)
        if isinstance(session, LiveSession):
            heard = session.speech(text, milliseconds)
            await phone.say(pcm)
        else:
            await phone.say(pcm)
            heard = await session.speech(text, milliseconds)
        utterance = {"text": text, "duration_ms": milliseconds, **heard}
        with self._recorder.lock:
            call.utterances.append(utterance)
            self._recorder.changed()
        return utterance

    def press(self, call: SipCall, digits: str) -> None:
        """The caller presses ``digits``: one DTMF event each, to the sidebands."""
        if not digits or any(d not in DTMF_KEYS for d in digits):
            raise ApiError(
                400, "'digits' are DTMF keys: 0-9, *, #, A-D.", code="invalid_value", param="digits"
            )
        session, _ = self._media(call)
        for key in digits:
            if isinstance(session, LiveSession):
                session.emit({"type": "transport.dtmf.received", "event": key}, "sidebands")
            else:  # the Realtime event's model has no event_id: sent as the API shows it
                event = {
                    "type": "input_audio_buffer.dtmf_event_received",
                    "event": key,
                    "received_at": int(time.time()),
                }
                session.send_raw(json.dumps(event))
            with self._recorder.lock:
                call.dtmf.append(key)
                self._recorder.changed()

    async def caller_hangs_up(self, call: SipCall) -> None:
        """The caller hangs up: a ringing call is missed, an answered one ends."""
        if call.state == "ringing":
            self._record(call, state="missed", ended_by="caller")
            return
        if call.status != "accepted":
            raise ApiError(409, f"The call is {call.status}.", code="call_not_active")
        self._record(call, ended_by="caller")
        await self._end(call, "remote_hangup")

    # ------------------------------------------------------ loop side: the API
    async def accept(self, api: str, key: str, config: dict[str, Any], body: Any) -> SipCall:
        """The first successful accept: the call's session (``config``, already
        checked) is created and the caller's phone connected to it."""
        call = self._find(api, key, "ringing")
        self._record(call, state="accepted", answered_by=api, accept_body=copy.deepcopy(body))
        try:
            session, peer = self._open(api, call, config)
            phone = Phone()
            with self._recorder.lock:
                call.session, call.peer, call.phone = session, peer, phone
            await phone.dial(peer, _MEDIA_TIMEOUT_S)
        except Exception as exc:
            logger.warning("emulator: the phone call {} could not connect: {}", call.call_id, exc)
            self._record(call, state="failed")
            await self._end(call, "connection_lost")
            raise ApiError(
                500, "The call's media could not be connected.", type="server_error"
            ) from None
        self.registry.register_peer(peer)
        if isinstance(session, LiveSession):
            self.registry.register_live_session(session)
        else:
            self.registry.register_session(session)
        logger.debug("emulator: phone call {} answered through {}", call.call_id, api)
        return call

    def reject(self, api: str, key: str, status_code: int) -> SipCall:
        call = self._find(api, key, "ringing")
        self._record(call, state="rejected", reject_status=status_code, ended_by="reject")
        return call

    async def refer(self, api: str, key: str, target_uri: str) -> SipCall:
        """Transfer: recorded, and the session ends (no event says whether it worked)."""
        call = self._find(api, key, "accepted")
        self._record(call, refer_target=target_uri, ended_by="refer")
        await self._end(call, "close_requested")
        return call

    def note(self, api: str, key: str, verb: str, status: int) -> None:
        """Record a call-control request and its answer on the call it names (if any)."""
        with self._recorder.lock:
            call = next((c for c in reversed(self._calls) if c.id_for(api) == key), None)
            if call is not None:
                call.requests.append({"api": api, "verb": verb, "status": status})
                self._recorder.changed()

    # ----------------------------------------------------------------- helpers
    def _find(self, api: str, key: str, status: str) -> SipCall:
        """The call ``key`` of ``api`` in ``status`` (answered through ``api``, if
        answered), else the API's 404 for a call it does not have."""
        with self._recorder.lock:
            found = next(
                (c for c in reversed(self._calls) if c.id_for(api) == key and api in c.apis),
                None,
            )
        if (
            found is None
            or found.status != status
            or (found.answered_by is not None and found.answered_by != api)
        ):
            raise not_found(api, key)
        return found

    def _open(self, api: str, call: SipCall, config: dict[str, Any]) -> tuple[Any, Peer]:
        registry = self.registry
        if api == "live":
            live = registry.open_live_session(media="webrtc", register=False)
            live.id = call.session_id  # the id the webhook announced
            live.start_media(config)
            return live, Peer(live, registry.forget_peer)
        session = registry.open_session(config, media="webrtc", register=False)
        session.call_id = call.call_id  # the id the webhook announced
        session.media = "sip"  # audio on the phone's leg; events on sidebands only
        return session, Peer(session, registry.forget_peer)

    def _media(self, call: SipCall) -> tuple[Any, Phone]:
        session, phone = call.session, call.phone
        if call.status != "accepted" or session is None or phone is None or phone.closed:
            raise ApiError(409, f"The call is {call.status}, not answered.", code="call_not_active")
        return session, phone

    async def _end(self, call: SipCall, reason: str) -> None:
        session, peer, phone = call.session, call.peer, call.phone
        if isinstance(session, LiveSession):
            session.end(reason)
        elif session is not None:
            session.terminate(reason)
        if peer is not None:
            await peer.close_soon(grace=0)
        if phone is not None:
            await phone.hang_up()
        with self._recorder.lock:
            self._recorder.changed()

    def _record(self, call: SipCall, **fields: Any) -> None:
        with self._recorder.lock:
            for name, value in fields.items():
                setattr(call, name, value)
            self._recorder.changed()


def not_found(api: str, key: str) -> ApiError:
    """Each API's answer for a call it does not have (unknown, gone, or answered)."""
    if api == "realtime":
        return ApiError(404, f"Call '{key}' not found.", code="call_id_not_found", param="call_id")
    return ApiError(
        404, f"Live session '{key}' not found.", code="session_not_found", param="session_id"
    )


_BOARDS: weakref.WeakKeyDictionary[Registry, Switchboard] = weakref.WeakKeyDictionary()


def switchboard(registry: Registry) -> Switchboard:
    """The switchboard of this emulator (made on first use)."""
    with registry._recorder.lock:
        board = _BOARDS.get(registry)
        if board is None:
            board = _BOARDS[registry] = Switchboard(registry)
        return board
