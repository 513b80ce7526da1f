"""``python -m rtclient.emulator``: run the emulator until interrupted.

The listening URL is logged (loguru, stderr) once it serves, e.g.
``emulator: listening on http://127.0.0.1:8765/v1``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from loguru import logger

from .emulator import Emulator
from .model import Pace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rtclient.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port, 0 = any free one")
    parser.add_argument("--api-key", default=None, help="accept only this standard key")
    parser.add_argument("--pace", type=float, default=Pace.delay, help="seconds between deltas")
    parser.add_argument("--deltas", type=int, default=Pace.deltas, help="deltas per message")
    parser.add_argument(
        "--max-session-seconds", type=float, default=3600.0, help="session length limit"
    )
    parser.add_argument("--no-vad", action="store_true", help="turn server VAD off by default")
    parser.add_argument("--log-level", default="INFO", help="loguru level (default INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
