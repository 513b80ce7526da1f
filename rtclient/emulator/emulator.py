"""The Emulator: a Realtime (and GPT-Live) server on loopback, on its own thread and loop.

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
from typing import Any

from aiohttp import web
from loguru import logger

from .faults import Faults
from .live.rules import LiveRules
from .model import Model, Pace
from .registry import Registry
from .server import build_app
from .session import ClientEventHook

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 20.0
_KEEP_DEFAULT: Any = object()


class Emulator(Registry):
    """An OpenAI Realtime API and GPT-Live emulator (WebRTC + WebSocket) on 127.0.0.1.

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
            raises is logged and ignored. Read when a session opens. Realtime
            sessions only.
        live_rules: the default :class:`~.live.LiveRules` of new GPT-Live sessions
            (the knobs for what the Live reference leaves open, and the scripted
            voice's timing); see ``rtclient.emulator.live``.
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
        turn_detection: dict[str, Any] | None = _KEEP_DEFAULT,
        max_session_seconds: float = 3600.0,
        record_server_events: bool = True,
        seed: int | None = None,
        on_client_event: ClientEventHook | None = None,
        live_rules: LiveRules | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if turn_detection is not _KEEP_DEFAULT:
            kwargs["turn_detection"] = turn_detection
        super().__init__(
            api_key=api_key,
            model=model,
            pace=pace,
            faults=faults,
            max_session_seconds=max_session_seconds,
            record_server_events=record_server_events,
            seed=seed,
            on_client_event=on_client_event,
            live_rules=live_rules,
            **kwargs,
        )
        self.host = host
        self._requested_port = port
        self.port = port
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
            thread, loop = self._thread, self.loop
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
        self.loop = loop
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
        for live in list(self._live_sessions):
            live.terminate("emulator stopped")
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
