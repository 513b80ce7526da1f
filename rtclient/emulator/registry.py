"""What the routes act on: one emulator's sessions, calls, sockets, keys and defaults.

The HTTP/WebSocket routes (``server``) reach everything through a :class:`Registry`,
and :class:`~.emulator.Emulator` is a registry that also runs the server on its own
thread - so the routes depend on this module, never on the emulator's lifecycle.
The registry's records live under the record lock (``records``) so test threads can
read and wait on them; sessions are made and changed on the emulator's loop
(``loop``, set once it runs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from .auth import KeyStore
from .config import DEFAULT_MODEL, DEFAULT_TURN_DETECTION, default_session, merge_session
from .faults import Faults
from .ids import IdFactory
from .live.rules import LiveRules
from .live.session import LiveSession, LiveSettings
from .model import Model, Pace, ScriptedModel
from .peer import Peer
from .records import Predicate, Recorder
from .session import ClientEventHook, Session, SessionSettings
from .websocket import WebSocketLink

_UNSET: Any = object()


class Registry:
    """The state of one emulator (see :class:`~.emulator.Emulator` for the arguments)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: Model | None = None,
        pace: Pace | float | None = None,
        faults: Faults | None = None,
        turn_detection: dict[str, Any] | None = _UNSET,
        max_session_seconds: float = 3600.0,
        record_server_events: bool = True,
        seed: int | None = None,
        on_client_event: ClientEventHook | None = None,
        live_rules: LiveRules | None = None,
    ) -> None:
        self.live_rules = live_rules if live_rules is not None else LiveRules()
        self.model: Model = model if model is not None else ScriptedModel()
        self.pace = pace if isinstance(pace, Pace) else Pace() if pace is None else Pace(delay=pace)
        self.faults = faults if faults is not None else Faults()
        self.turn_detection = (
            dict(DEFAULT_TURN_DETECTION) if turn_detection is _UNSET else turn_detection
        )
        self.max_session_seconds = max_session_seconds
        self.record_server_events = record_server_events
        self.on_client_event = on_client_event
        self.ids = IdFactory(seed)
        self.keys = KeyStore(self.ids, api_key)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._recorder = Recorder()
        self._sessions: list[Session] = []
        self._live_sessions: list[LiveSession] = []
        self._peers: dict[str, Peer] = {}
        self._websockets: set[WebSocketLink] = set()

    # --------------------------------------------------------------- introspection
    @property
    def sessions(self) -> list[Session]:
        """Every session so far (closed ones too), oldest first."""
        with self._recorder.lock:
            return list(self._sessions)

    def session(self, key: str) -> Session:
        """The session with this call id (``rtc_...``) or session id (``sess_...``)."""
        with self._recorder.lock:
            for session in reversed(self._sessions):
                if key in (session.call_id, session.id):
                    return session
        raise KeyError(key)

    def wait_for_sessions(self, count: int = 1, timeout: float = 5.0) -> list[Session]:
        """Block until at least ``count`` sessions exist; returns them all."""
        if not self.wait_for(lambda: len(self._sessions) >= count, timeout):
            raise TimeoutError(f"expected {count} session(s), have {len(self._sessions)}")
        return self.sessions

    def stats(self) -> dict[str, Any]:
        """Totals over all sessions, plus ``by_session``.

        Keys: ``sessions`` (ever opened), ``active_sessions``, ``calls`` (WebRTC),
        ``creates`` (``response.create`` received), ``rejections`` (active-response
        rejections only), ``responses`` (created), ``completed``/``cancelled``/
        ``incomplete``/``failed``, ``errors`` (error events), ``client_events``,
        ``server_events``.
        """
        with self._recorder.lock:
            sessions = list(self._sessions)
            totals: Counter[str] = Counter()
            by_session: dict[str, Any] = {}
            for session in sessions:
                counters = session.counters
                totals.update(counters)
                by_session[session.id] = {
                    "call_id": session.call_id,
                    "media": session.media,
                    "closed": session.closed,
                    **counters,
                }
        keys = (
            "creates", "rejections", "responses", "completed", "cancelled",
            "incomplete", "failed", "errors", "client_events", "server_events",
        )  # fmt: skip
        return {
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if not s.closed),
            "calls": sum(1 for s in sessions if s.media == "webrtc"),
            **{key: totals[key] for key in keys},
            "by_session": by_session,
        }

    @property
    def live_sessions(self) -> list[LiveSession]:
        """Every GPT-Live session so far (closed ones, and sockets that never sent
        ``session.start``, too), oldest first."""
        with self._recorder.lock:
            return list(self._live_sessions)

    def live_session(self, session_id: str) -> LiveSession:
        """The Live session with this id (``live_...``)."""
        with self._recorder.lock:
            for session in reversed(self._live_sessions):
                if session.id == session_id:
                    return session
        raise KeyError(session_id)

    def wait_for_live_session(
        self, count: int = 1, timeout: float = 5.0, *, started: bool = True
    ) -> LiveSession:
        """Block until the ``count``-th Live session exists (and has started, unless
        ``started=False``); returns it."""

        def ready() -> bool:
            sessions = self._live_sessions
            return len(sessions) >= count and (not started or sessions[count - 1].started)

        if not self.wait_for(ready, timeout):
            raise TimeoutError(f"expected {count} live session(s), have {len(self._live_sessions)}")
        return self.live_sessions[count - 1]

    def live_stats(self) -> dict[str, Any]:
        """Totals over the Live sessions: ``sessions``, ``active_sessions``, and the sum
        of every session's counters (``delegations``, ``appends``, ``appended``,
        ``incomplete_appends``, ``creates``, ``rejections``, ``responses``, ``errors``
        ...)."""
        with self._recorder.lock:
            sessions = list(self._live_sessions)
            totals: Counter[str] = Counter()
            for session in sessions:
                totals.update(session.counters)
        return {
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.started and not s.closed),
            **totals,
        }

    def set_live_rules(self, **changes: Any) -> LiveRules:
        """Change the default rules of Live sessions opened from now on."""
        self.live_rules = self.live_rules.replace(**changes)
        return self.live_rules

    def wait_for(self, predicate: Predicate, timeout: float = 5.0) -> bool:
        """Block until ``predicate()`` is true; re-checked after every recorded event.

        Returns False on timeout. The predicate runs under the record lock: keep it
        to reads (``emu.stats()``, ``session.counters``, ``session.errors`` ...).
        """
        return self._recorder.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Predicate, timeout: float = 5.0) -> bool:
        """``wait_for`` for a test running its own event loop (never blocks it)."""
        return await self._recorder.wait_for_async(predicate, timeout)

    # --------------------------------------------------------------------- control
    def simulate_speech(
        self, key: str, text: str = "Hello.", duration_ms: int = 800
    ) -> dict[str, Any]:
        """The user of session/call ``key`` speaks ``text`` (see Session.simulate_speech)."""
        return self.session(key).simulate_speech(text, duration_ms)

    def set_faults(self, **changes: Any) -> Faults:
        """Change the default faults of sessions opened from now on."""
        self.faults = self.faults.replace(**changes)
        return self.faults

    def create_client_secret(
        self, ttl_seconds: int = 600, session: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Mint an ephemeral key in-process (as ``POST /v1/realtime/client_secrets``)."""
        return self.mint_client_secret(ttl_seconds, session or {"type": "realtime"})

    def expire_client_secret(self, value: str) -> None:
        """Make an ephemeral key expired now."""
        self.keys.expire(value)

    def hangup(self, key: str) -> None:
        """End a call (or a WebSocket session) as ``POST .../hangup`` does."""
        self.session(key).close()

    # ------------------------------------------------------- used by the routes
    def mint_client_secret(self, ttl_seconds: int, session: dict[str, Any]) -> dict[str, Any]:
        key = self.keys.mint(ttl_seconds, session)
        shown = default_session(
            self.ids.new("sess"), key.expires_at, turn_detection=self.turn_detection
        )
        merge_session(shown, session)
        return {"value": key.value, "expires_at": key.expires_at, "session": shown}

    def new_session_config(
        self,
        *,
        model: str | None,
        ephemeral_session: dict[str, Any] | None,
        session_part: dict[str, Any] | None,
    ) -> dict[str, Any]:
        config = default_session(
            self.ids.new("sess"),
            int(time.time() + self.max_session_seconds),
            model=DEFAULT_MODEL,
            turn_detection=self.turn_detection,
        )
        for layer in (ephemeral_session, session_part):
            if layer:
                merge_session(config, layer)
        if model:
            config["model"] = model
        return config

    def open_session(self, config: dict[str, Any], *, media: str, register: bool = True) -> Session:
        """A new session; ``register=False`` leaves it out of ``sessions``/``stats()``
        until :meth:`register_session` (a call whose offer may still be refused)."""
        assert self.loop is not None
        settings = SessionSettings(
            model=self.model,
            pace=self.pace,
            faults=self.faults,
            max_session_seconds=self.max_session_seconds,
            record_server_events=self.record_server_events,
            on_client_event=self.on_client_event,
        )
        session = Session(
            loop=self.loop,
            recorder=self._recorder,
            ids=self.ids,
            settings=settings,
            config=config,
            media=media,
            call_id=self.ids.hex("rtc") if media == "webrtc" else None,
            on_closed=self._session_closed,
        )
        if register:
            self.register_session(session)
        return session

    def open_live_session(self, *, media: str, register: bool = True) -> LiveSession:
        """A new Live session (``media``: ``"websocket"`` or ``"webrtc"``), not yet
        started; ``register=False`` as for :meth:`open_session`."""
        assert self.loop is not None
        settings = LiveSettings(
            model=self.model,
            pace=self.pace,
            faults=self.faults,
            rules=self.live_rules,
            max_session_seconds=self.max_session_seconds,
            record_server_events=self.record_server_events,
        )
        session = LiveSession(
            loop=self.loop,
            recorder=self._recorder,
            ids=self.ids,
            settings=settings,
            media=media,
            on_closed=self._session_closed,
        )
        if register:
            self.register_live_session(session)
        return session

    def register_live_session(self, session: LiveSession) -> None:
        with self._recorder.lock:
            self._live_sessions.append(session)
            self._recorder.changed()

    def register_session(self, session: Session) -> None:
        with self._recorder.lock:
            self._sessions.append(session)
            self._recorder.changed()

    def register_peer(self, peer: Peer) -> None:
        self._peers[peer.call_id] = peer

    def forget_peer(self, peer: Peer) -> None:
        self._peers.pop(peer.call_id, None)

    def peer(self, call_id: str) -> Peer | None:
        return self._peers.get(call_id)

    def register_websocket(self, link: WebSocketLink) -> None:
        self._websockets.add(link)

    def forget_websocket(self, link: WebSocketLink) -> None:
        self._websockets.discard(link)

    def _session_closed(self, session: Session | LiveSession) -> None:
        if session.call_id is not None:
            peer = self._peers.get(session.call_id)
            if peer is not None:
                peer.close_soon()
