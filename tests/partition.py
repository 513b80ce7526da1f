"""A TCP proxy on 127.0.0.1 that can cut one process off from a server: a one-sided
partition, for tests and ``bench/chaos.py``.

Every client of the server connects through the proxy. On accept the proxy finds which
process owns the client's socket (``/proc/net/tcp`` maps the client's port to a socket
inode; the candidate processes' ``/proc/<pid>/fd`` name that inode), so it can
:meth:`Proxy.cut` one process: from then on whatever that process sends, and whatever
the server answers it, is read and dropped (as a dead link drops packets: the client
sees no error, only silence, until its own timeouts fire); its new connections are
accepted and held silent the same way. Every other process goes on untouched.
:meth:`Proxy.heal` ends the cut: the held connections are closed (the client
reconnects, as after a real outage) and new ones are forwarded again.

The proxy runs on its own asyncio loop thread (rtclient's ``LoopThread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rtclient import LoopThread

_CHUNK = 65536


def socket_owner(client_port: int, pids: Iterable[int]) -> int:
    """The pid among ``pids`` that owns the loopback TCP socket bound to ``client_port``
    (0 if none does)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local = fields[1]  # "0100007F:D431": address and port, hex
            if int(local.split(":")[1], 16) == client_port:
                inodes.add(fields[9])
    if not inodes:
        return 0
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return pid
    return 0


@dataclass(eq=False)
class _Link:
    """One client connection (and its upstream one, unless it was cut from the start)."""

    pid: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    cut: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Proxy:
    """127.0.0.1:``port`` -> 127.0.0.1:``target_port``; ``pids()`` names the processes
    whose connections it may have to cut (e.g. the app's workers)."""

    def __init__(self, target_port: int, pids: Callable[[], Iterable[int]]) -> None:
        self.target_port = target_port
        self._pids = pids
        self._lt = LoopThread("partition-proxy")
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._cut: set[int] = set()
        self.port = 0
        self.accepted = 0
        self.dropped_bytes = 0

    def start(self) -> Proxy:
        self._lt.start()
        self._lt.call(self._listen(), timeout=10)
        return self

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self, pid: int) -> int:
        """Cut ``pid`` off; returns how many of its connections were live."""
        return int(self._lt.call(self._set_cut(pid), timeout=10))

    async def _set_cut(self, pid: int) -> int:
        self._cut.add(pid)
        links = [link for link in self._links if link.pid == pid]
        for link in links:
            link.cut = True
        return len(links)

    def heal(self, pid: int) -> None:
        """End ``pid``'s cut: its held connections close, new ones are forwarded."""
        self._lt.call(self._heal(pid), timeout=10)

    async def _heal(self, pid: int) -> None:
        self._cut.discard(pid)
        for link in [link for link in self._links if link.pid == pid and link.cut]:
            self._close(link)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._lt.call(self._shutdown(), timeout=10)
        self._lt.stop()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._close(link)
            for task in link.tasks:
                task.cancel()

    # -- the connections (loop thread) ---------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        peer_port = int(writer.get_extra_info("peername")[1])
        link = _Link(socket_owner(peer_port, self._pids()), writer)
        link.cut = link.pid in self._cut
        self._links.add(link)
        if not link.cut:
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    "127.0.0.1", self.target_port
                )
            except OSError:
                self._close(link)
                return
            link.tasks.append(asyncio.ensure_future(self._pump(link, up_reader, writer)))
        link.tasks.append(asyncio.ensure_future(self._pump(link, reader, link.upstream)))

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None
    ) -> None:
        try:
            while data := await source.read(_CHUNK):
                if link.cut or sink is None:
                    self.dropped_bytes += len(data)  # the link is dead: it goes nowhere
                    continue
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:  # one side ended (a cut link's server side never does: silence)
            self._close(link)

    def _close(self, link: _Link) -> None:
        self._links.discard(link)
        for w in (link.client, link.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()
