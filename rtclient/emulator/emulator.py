"""The Emulator: a Realtime server on loopback, on its own thread and event loop.

It is the referee for rtclient's tests, so it shares nothing with the client: its own
thread, its own asyncio loop, and no import of rtclient besides the loopback helper.
Public methods are thread-safe; the loop is touched only through it.

    with Emulator() as emu:                       # or emu = Emulator().start(); emu.stop()
        client = OpenAI(base_url=emu.url, api_key="sk-test")
        ...
        assert emu.wait_for(lambda: emu.stats()["responses"] == 1, timeout=5)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web
from loguru import logger

from .auth import KeyStore
from .config import DEFAULT_MODEL, DEFAULT_TURN_DETECTION, default_session, merge_session
from .faults import Faults
from .ids import IdFactory
from .model import Model, Pace, ScriptedModel
from .peer import Peer
from .records import Predicate, Recorder
from .server import WebSocketLink, build_app
from .session import ClientEventHook, Session, SessionSettings

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 20.0
_UNSET: Any = object()


class Emulator:
    """An OpenAI Realtime API emulator (WebRTC + WebSocket) on 127.0.0.1.

    Args:
        port: TCP port, 0 = a free one (read ``.port``/``.url`` after ``start()``).
        host: interface to bind; keep the default ``127.0.0.1``.
        api_key: if set, the only standard key accepted; otherwise any non-empty one.
        model: the model callable (default :class:`ScriptedModel`), see ``model.py``.
        pace: a :class:`Pace`, or a float = seconds between deltas.
        faults: default :class:`Faults` for new sessions.
        turn_detection: the default ``audio.input.turn_detection`` of new sessions;
            the API's server_vad (create_response and interrupt_response true) unless
            given; ``None`` turns VAD off.
        max_session_seconds: session length before the ``session_expired`` error (API: 60 min).
        record_server_events: keep every sent event for ``session.server_events``.
        seed: makes ids repeatable.
        on_client_event: ``hook(session, event)``, called on the emulator's loop for
            every message a client sends (as recorded, refused ones too) before the
            session acts on it - to watch the wire in-process (the demo prints the
            ``response.cancel`` it sees). It must be quick and must not block; what it
            raises is logged and ignored. Read when a session opens.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        model: Model | None = None,
        pace: Pace | float | None = None,
        faults: Faults | None = None,
        turn_detection: dict[str, Any] | None = _UNSET,
        max_session_seconds: float = 3600.0,
        record_server_events: bool = True,
        seed: int | None = None,
        on_client_event: ClientEventHook | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
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
        self._recorder = Recorder()
        self._sessions: list[Session] = []
        self._peers: dict[str, Peer] = {}
        self._websockets: set[WebSocketLink] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lifecycle = threading.Lock()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The base URL, ``openai`` package convention: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the resource endpoint an Azure OpenAI client is
        given (``AzureOpenAI(azure_endpoint=...)``; its dated routes live under
        ``/openai``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def azure_url(self) -> str:
        """``http://127.0.0.1:PORT/openai/v1``: a base URL of Azure OpenAI's v1 shape
        (the deployment is the model; a key may come as ``api-key``)."""
        return f"{self.azure_endpoint}/openai/v1"

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:PORT/_emulator`` (stats, speech, faults)."""
        return f"http://{self.host}:{self.port}/_emulator"

    def start(self) -> Emulator:
        """Start serving on a background thread (idempotent); returns self."""
        with self._lifecycle:
            if self._stopped:
                raise RuntimeError("an Emulator cannot be restarted; create a new one")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="rtclient-emulator", daemon=True)
            self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise RuntimeError("the emulator did not start in time")
        if self._startup_error is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            raise RuntimeError(f"the emulator failed to start: {self._startup_error}")
        logger.info("emulator: listening on {}", self.url)
        return self

    def stop(self) -> None:
        """Close every call and socket, stop the loop and join its thread (idempotent)."""
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("Emulator.stop() cannot be called from the emulator's own loop")
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(_STOP_TIMEOUT_S)
            except Exception as exc:
                logger.warning("emulator: shutdown was not clean: {}", exc)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("emulator: the loop thread did not stop in time")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            self._drain_loop(loop)
            asyncio.set_event_loop(None)
            loop.close()

    async def _startup(self) -> None:
        self._runner = web.AppRunner(build_app(self), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        closing = [peer.close_soon(grace=0) for peer in list(self._peers.values())]
        for link in list(self._websockets):
            link.close()
        for session in list(self._sessions):
            session.terminate("emulator stopped")
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _drain_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what is left, repeatedly: aiortc spawns close tasks while closing."""
        for _ in range(20):
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())

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
        ``server_events``, ``idle_timeouts``.
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
            "idle_timeouts",
        )  # fmt: skip
        return {
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if not s.closed),
            "calls": sum(1 for s in sessions if s.media == "webrtc"),
            **{key: totals[key] for key in keys},
            "by_session": by_session,
        }

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

    # ------------------------------------------------------- used by the server
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
        assert self._loop is not None
        settings = SessionSettings(
            model=self.model,
            pace=self.pace,
            faults=self.faults,
            max_session_seconds=self.max_session_seconds,
            record_server_events=self.record_server_events,
            on_client_event=self.on_client_event,
        )
        session = Session(
            loop=self._loop,
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

    def _session_closed(self, session: Session) -> None:
        if session.call_id is not None:
            peer = self._peers.get(session.call_id)
            if peer is not None:
                peer.close_soon()
