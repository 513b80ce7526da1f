"""Acting once on a webhook that may arrive more than once.

Webhooks are delivered at least once: a retry after a timeout or a non-2xx answer, a
duplicate, two workers each handed one copy. Accepting a call twice would attach two
sidebands (two sets of tools, each running every call), so the first delivery of a
call claims it and every later one is answered ``200`` and dropped.

The claim is by **both** keys of :meth:`IncomingCall.dedupe_keys` - the ``webhook-id``
(the same on every retry of one message) and the call id (the same in any other
message about that call) - atomically: of two deliveries at once, exactly one wins.
If accepting then fails in a way a retry could fix (the API answered 5xx, the network
failed), :meth:`forget` the keys and answer non-2xx, so the API's retry can try again;
a call that is gone (``CallNotFoundError``) stays claimed.

:class:`OnceOnly` is the in-process store: enough for one process (threads included).
Several worker processes need one store they all share - anything with the same two
methods (:class:`Once`); the examples' ``RedisOnce`` keeps the keys in Redis with
``SET NX`` semantics and an expiry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

RETRY_WINDOW = 72 * 3600.0
"""How long the API may keep retrying one delivery (reported: up to 72 hours)."""


class Once(Protocol):
    """A store of claimed keys shared by everything that handles one webhook endpoint."""

    def first(self, *keys: str) -> bool:
        """Claim every key at once; True only if none was claimed before."""
        ...

    def forget(self, *keys: str) -> None:
        """Give the keys up (the work failed and a retry may do it)."""
        ...


class OnceOnly:
    """The keys this process has claimed, each for ``ttl`` seconds (thread-safe).

    At most ``max_keys`` are kept: past that the oldest claims are dropped first (a
    delivery retried after that many newer ones would be taken for new).
    """

    def __init__(
        self,
        ttl: float = RETRY_WINDOW,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_keys <= 0:
            raise ValueError("ttl and max_keys must be positive")
        self.ttl = ttl
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._claimed: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first

    def first(self, *keys: str) -> bool:
        if not keys:
            raise ValueError("claim at least one key")
        now = self._clock()
        with self._lock:
            self._expire(now)
            if any(key in self._claimed for key in keys):
                return False
            for key in keys:
                self._claimed[key] = now + self.ttl
            while len(self._claimed) > self.max_keys:
                self._claimed.popitem(last=False)
            return True

    def forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._claimed.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._claimed)

    def _expire(self, now: float) -> None:
        while self._claimed:
            key, expiry = next(iter(self._claimed.items()))
            if expiry > now:
                break
            del self._claimed[key]
