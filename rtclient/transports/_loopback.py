"""Keep ICE host candidates on 127.0.0.1, per peer connection.

aioice gathers host candidates from every interface *except* loopback, so two peers
in one process reach each other over the machine's LAN address - a packet beyond
127.0.0.1. Tests, benchmarks and the emulator must never do that. aioice has no
option for it, so we wrap its ``get_host_addresses`` once and consult a ContextVar:
only code running inside ``loopback_only()`` (and the tasks it spawns, which copy the
context) gathers ``127.0.0.1`` alone; every other peer in the process is untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

import aioice.ice

_LOOPBACK_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rtclient_loopback_only", default=False
)
_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Wrap aioice once (idempotent); loopback_only() calls it for you."""
    global _installed
    with _install_lock:
        if _installed:
            return
        original = aioice.ice.get_host_addresses

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            if _LOOPBACK_ONLY.get():
                return ["127.0.0.1"] if use_ipv4 else []
            return original(use_ipv4, use_ipv6)

        aioice.ice.get_host_addresses = get_host_addresses
        _installed = True


@contextlib.contextmanager
def loopback_only(enabled: bool = True) -> Iterator[None]:
    """Within this block, ICE gathering offers only 127.0.0.1 host candidates."""
    if not enabled:
        yield
        return
    install()
    token = _LOOPBACK_ONLY.set(True)
    try:
        yield
    finally:
        _LOOPBACK_ONLY.reset(token)
