"""Identifiers shaped like the real API's (``event_...``, ``resp_...``, ``rtc_...``).

Clients parse nothing out of them, but tests and logs read better when an emulator id
looks like the one the real server would send. A seed makes a run's ids repeatable.
"""

from __future__ import annotations

import random
import string
import threading

_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    """Thread-safe generator of prefixed random ids (``prefix_`` + 21 alphanumerics)."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def new(self, prefix: str, length: int = 21) -> str:
        with self._lock:
            return f"{prefix}_{''.join(self._random.choices(_ALPHABET, k=length))}"

    def hex(self, prefix: str, length: int = 32) -> str:
        """An id with a hexadecimal tail, as call ids (``rtc_...``) have."""
        with self._lock:
            return f"{prefix}_{self._random.getrandbits(4 * length):0{length}x}"
