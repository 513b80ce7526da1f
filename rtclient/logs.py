"""Logging as a library should: silent until the application opts in.

rtclient logs with loguru and follows loguru's rule for libraries: it adds no handler
and calls ``logger.disable("rtclient")`` on import. An application chooses one of:

* ``rtclient.logs.enable()`` - rtclient's records go to loguru's handlers (by default
  loguru's own stderr handler), e.g. in a script or the demo;
* ``rtclient.logs.to_logging()`` - rtclient's records are re-emitted on the standard
  ``logging`` module under their module names (``rtclient.core.gate``, ``rtclient.client``,
  ...), so a Flask or Django app's existing ``logging`` configuration (handlers,
  levels, formatters) applies to them like to any other library.

The gate's diagnostics keep the RCA's tags in the message text
(``[RESPONSE_CREATE_CHECK]``, ``[RESPONSE_CREATE]``, ``[RESPONSE_QUEUED]``,
``[RESPONSE_COALESCED]``, ``[RESPONSE_REJECTED]``, ``[RESPONSE_WATCHDOG]``, ...).

Logging must never change what the SDK does. Every rtclient module logs through
:data:`logger` below, a thin stand-in for loguru's that (1) never raises - a sink that
raises (``catch=False``) is ignored, so a log call can neither undo a send nor strand a
claimed create; and (2) never makes an rtclient thread wait for a sink: while a loop
thread runs, records are handed to one ``rtclient-log`` thread that writes them in
call order, stamped with their origin (module, function, line, thread, time). A slow
or stuck sink then delays log lines, not audio, the data channel, the dispatcher or a
caller (loguru holds a handler's lock while its sink runs, so writing directly from
several threads would make every one of them wait for the slowest). At most
``_BACKLOG`` records wait; beyond that they are dropped and counted
(``dropped_records()``). With no loop thread running, records are written directly.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any

from loguru import logger as _loguru

if TYPE_CHECKING:
    from loguru import Message, Record

_NAME = "rtclient"
_BACKLOG = 10_000
_ID_KIND_MAX = 5  # the longest type prefix of an id: "sess", "event", "live"
_STOP = object()


def wanted() -> bool:
    """Would loguru emit rtclient's records at all? (The disabled default is the fast path.)

    loguru decides per module from its activation list and caches the answer per module
    name (``rtclient.core.gate``, ...); this resolves the package's own name the same way and
    caches it in the same place, which loguru clears on every ``enable``/``disable``. A
    submodule enabled on its own (``logger.enable("rtclient.core.gate")``) counts as wanted.
    Private loguru state, so guarded: anything unexpected logs and lets loguru decide.
    """
    try:
        core: Any = _loguru._core  # type: ignore[attr-defined]
        if not core.handlers:
            return False
        enabled = core.enabled.get(_NAME)
        if enabled is None:
            enabled = core.activation_none
            for prefix, status in core.activation_list:
                if (_NAME + ".")[: len(prefix)] == prefix:
                    enabled = status
                    break
            core.enabled[_NAME] = enabled
        if enabled:
            return True
        return any(p.startswith(_NAME + ".") and on for p, on in core.activation_list)
    except (AttributeError, TypeError, ValueError):
        return True


class _Relay:
    """The one thread that writes records logged on loop threads, in order.

    It lives while any loop thread does (``attach``/``detach`` count them), so no test
    and no process sees a thread outlive the loops it served.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._waiting = 0
        self.dropped = 0

    def attach(self) -> None:
        with self._lock:
            self._users += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rtclient-log", daemon=True)
                self._thread.start()

    def detach(self, timeout: float) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._queue.put(_STOP)
        thread.join(timeout)

    def put(self, item: Any) -> bool:
        """Queue a record; False if no relay runs (the caller writes it itself)."""
        with self._lock:
            if self._thread is None:
                return False
            if self._waiting >= _BACKLOG:
                self.dropped += 1
                return True
            self._waiting += 1
        self._queue.put(item)
        return True

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            with self._lock:
                self._waiting -= 1
            origin, level, message, args, exception = item
            try:
                _loguru.patch(origin.apply).opt(exception=exception).log(level, message, *args)
            except Exception:
                pass  # a sink that raises changes nothing


_relay = _Relay()


def attach_relay() -> None:
    """A loop thread starts: the relay runs (or keeps running) while it lives."""
    _relay.attach()


def detach_relay(timeout: float = 5.0) -> None:
    """A loop thread ends: the relay flushes and stops after the last one."""
    _relay.detach(timeout)


def dropped_records() -> int:
    """Records dropped because the relay's backlog was full (a sink far too slow)."""
    return _relay.dropped


class _Origin:
    """Where and when a deferred record was made, stamped onto it by a loguru patcher."""

    __slots__ = ("function", "line", "module", "name", "path", "thread", "time")

    def __init__(self, depth: int) -> None:
        frame = sys._getframe(depth + 1)
        self.name = frame.f_globals.get("__name__", _NAME)
        self.function = frame.f_code.co_name
        self.line = frame.f_lineno
        self.path = frame.f_code.co_filename
        self.module = self.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        current = threading.current_thread()
        self.thread = (current.ident, current.name)
        self.time = datetime.datetime.now().astimezone()

    def apply(self, record: Record) -> None:
        file_type: Any = type(record["file"])
        thread_type: Any = type(record["thread"])
        fields: Any = record
        fields.update(
            name=self.name,
            function=self.function,
            line=self.line,
            module=self.module,
            file=file_type(self.path.rsplit("/", 1)[-1], self.path),
            thread=thread_type(*self.thread),
            time=record["time"].__class__.fromtimestamp(self.time.timestamp(), self.time.tzinfo),
        )


class SafeLogger:
    """What rtclient logs with: loguru's methods, never raising, never blocking a loop."""

    def log(self, level: str | int, message: str, *args: Any) -> None:
        self._emit(level, message, args, None)

    def debug(self, message: str, *args: Any) -> None:
        self._emit("DEBUG", message, args, None)

    def info(self, message: str, *args: Any) -> None:
        self._emit("INFO", message, args, None)

    def warning(self, message: str, *args: Any) -> None:
        self._emit("WARNING", message, args, None)

    def error(self, message: str, *args: Any) -> None:
        self._emit("ERROR", message, args, None)

    def exception(self, message: str, *args: Any) -> None:
        self._emit("ERROR", message, args, sys.exc_info())

    def _emit(self, level: str | int, message: str, args: tuple[Any, ...], exc: Any) -> None:
        if not wanted():
            return
        try:
            if not _relay.put((_Origin(2), level, message, args, exc)):
                _loguru.opt(depth=2, exception=exc).log(level, message, *args)
        except Exception:
            pass  # a sink that raises changes nothing


logger = SafeLogger()


def short_id(call_id: str | None, keep: int = 8) -> str:
    """A call id as warnings and errors name it: its type prefix and the next ``keep``
    characters, then an ellipsis (``rtc_1a2b3c4d…``).

    A call id is a capability: with it, anyone holding the key can attach to the call
    or end it, and an app that trusts the id alone (a hang-up route) ends it for them.
    Warnings travel further than the app (aggregators, tickets, screenshots), so they
    carry this prefix - enough to tell calls apart and find the full id in the app's
    own records, too little to act on. An id no longer than the prefix is shown whole;
    no id at all (a call not created yet) is ``-``.
    """
    if call_id is None:
        return "-"
    kind, sep, _ = call_id.partition("_")
    cut = (len(kind) + 1 if sep and len(kind) <= _ID_KIND_MAX else 0) + keep  # rtc_, sess_
    return call_id if len(call_id) <= cut else f"{call_id[:cut]}\N{HORIZONTAL ELLIPSIS}"


def enable() -> None:
    """Let rtclient's records reach loguru's handlers."""
    _loguru.enable(_NAME)


def disable() -> None:
    """Silence rtclient again (the default)."""
    _loguru.disable(_NAME)


def _is_ours(record: Record) -> bool:
    name = record["name"] or ""
    return name == _NAME or name.startswith(_NAME + ".")


class _ToLogging:
    """A loguru sink that hands each record to the standard ``logging`` module."""

    def __call__(self, message: Message) -> None:
        record = message.record
        std = logging.getLogger(record["name"] or _NAME)
        level = record["level"].no
        if not std.isEnabledFor(level):
            return
        exc = record["exception"]
        exc_info: Any = (exc.type, exc.value, exc.traceback) if exc is not None else None
        std.handle(
            std.makeRecord(
                std.name,
                level,
                record["file"].path,
                record["line"],
                record["message"],
                (),
                exc_info,
                record["function"],
                {"rtclient_thread": record["thread"].name},
            )
        )


def to_logging(level: int | str = "DEBUG") -> int:
    """Route rtclient's records into the standard ``logging`` module (and enable them).

    Returns the loguru handler id; ``logger.remove(id)`` undoes it. The standard
    loggers' own levels still filter (``logging.getLogger("rtclient").setLevel(...)``).
    loguru's *default* stderr handler (id 0), if still installed, is removed: it would
    print every record a second time beside your logging handlers. An application that
    uses loguru itself has configured its own handlers and keeps them.
    """
    with contextlib.suppress(ValueError):
        _loguru.remove(0)
    handler_id = _loguru.add(_ToLogging(), level=level, filter=_is_ours, format="{message}")
    enable()
    return handler_id
