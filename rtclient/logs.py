"""Logging as a library should: silent until the application opts in.

rtclient logs with loguru and follows loguru's rule for libraries: it adds no handler
and calls ``logger.disable("rtclient")`` on import. An application chooses one of:

* ``rtclient.logs.enable()`` - rtclient's records go to loguru's handlers (by default
  loguru's own stderr handler), e.g. in a script or the demo;
* ``rtclient.logs.to_logging()`` - rtclient's records are re-emitted on the standard
  ``logging`` module under their module names (``rtclient.gate``, ``rtclient.client``,
  ...), so a Flask or Django app's existing ``logging`` configuration (handlers,
  levels, formatters) applies to them like to any other library.

The gate's diagnostics keep the RCA's tags in the message text
(``[RESPONSE_CREATE_CHECK]``, ``[RESPONSE_CREATE]``, ``[RESPONSE_QUEUED]``,
``[RESPONSE_COALESCED]``, ``[RESPONSE_REJECTED]``, ``[RESPONSE_WATCHDOG]``, ...).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

_NAME = "rtclient"


def enable() -> None:
    """Let rtclient's records reach loguru's handlers."""
    logger.enable(_NAME)


def disable() -> None:
    """Silence rtclient again (the default)."""
    logger.disable(_NAME)


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
        logger.remove(0)
    handler_id = logger.add(_ToLogging(), level=level, filter=_is_ours, format="{message}")
    enable()
    return handler_id
