"""``python -m rtclient demo`` / ``python -m rtclient emulator`` (same as ``rtclient``)."""

from rtclient.cli import main

raise SystemExit(main())
