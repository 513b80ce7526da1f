"""``python -m rtclient.emulator`` (and ``rtclient emulator``): run the emulator until
interrupted.

The listening URL is logged (loguru, stderr) once it serves, e.g.
``emulator: listening on http://127.0.0.1:8765/v1``. The options are defined once,
here (:func:`build_parser`): ``rtclient emulator`` hands its arguments to
:func:`main`, so both commands take the same options with the same defaults.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from loguru import logger

from .emulator import Emulator
from .model import Pace

DEFAULT_PORT = 8765


def build_parser(prog: str = "python -m rtclient.emulator") -> argparse.ArgumentParser:
    """The emulator's command line, with every default shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the Realtime API emulator on loopback until interrupted.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default %(default)s)")
    add(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port, 0 = any free one (default %(default)s)",
    )
    add("--api-key", default=None, help="accept only this standard key (default: any key)")
    add(
        "--pace",
        type=float,
        default=Pace.delay,
        help="seconds between deltas (default %(default)s)",
    )
    add("--deltas", type=int, default=Pace.deltas, help="deltas per message (default %(default)s)")
    add(
        "--max-session-seconds",
        type=float,
        default=3600.0,
        help="session length limit (default %(default)s)",
    )
    add("--no-vad", action="store_true", help="turn server VAD off by default (default: on)")
    add("--log-level", default="INFO", help="loguru level (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    logger.enable("rtclient.emulator")  # rtclient's logs are off until an application opts in
    options: dict[str, object] = {}
    if args.no_vad:
        options["turn_detection"] = None
    emulator = Emulator(
        args.port,
        host=args.host,
        api_key=args.api_key,
        pace=Pace(delay=args.pace, deltas=args.deltas),
        max_session_seconds=args.max_session_seconds,
        **options,  # type: ignore[arg-type]
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with emulator:
        done.wait()
    logger.info("emulator: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
