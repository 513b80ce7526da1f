"""A TCP proxy on 127.0.0.1 that a test can stall and then kill: a network that dies.

Between a client and the emulator, it forwards both ways until told otherwise:

* ``freeze(swallow=n)``: the client-to-server direction forwards nothing more; the
  proxy reads (and drops) ``n`` more bytes, sets ``swallowed``, and stops reading. Its
  receive buffer is small (set before ``listen``, so the kernel does not grow it), so
  the client's socket soon has nowhere to write: a write in progress stays in progress.
* ``kill()``: both connections are reset (``SO_LINGER`` 0: an RST, not a FIN), as when
  a peer or a middlebox vanishes.
* ``refuse(True)``: from then on a new connection is reset as soon as it is accepted (a
  server out of reach), until ``refuse(False)``; ``accepted`` counts connections.

It runs its own asyncio loop on its own thread, stopped (and joined) by ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

_RCVBUF = 64 * 1024
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (``SO_LINGER`` 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class StallingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.swallowed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-proxy")
        self._writers: list[asyncio.StreamWriter] = []
        self._frozen: asyncio.Event | None = None
        self._swallow = 0
        self._server: asyncio.AbstractServer | None = None
        self._refusing = False
        self.accepted = 0
        self._accepting = threading.Condition()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._thread.start()
        self._call(self._serve(listener))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self, listener: socket.socket) -> None:
        self._frozen = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, sock=listener)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._accepting:
            self.accepted += 1
            self._accepting.notify_all()
        if self._refusing:
            _reset(client_w)
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [client_w, up_w]
        await asyncio.gather(
            self._upstream(client_r, up_w), self._pump(up_r, client_w), return_exceptions=True
        )

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._frozen is not None
        while not self._frozen.is_set():
            read = asyncio.ensure_future(reader.read(_CHUNK))
            frozen = asyncio.ensure_future(self._frozen.wait())
            await asyncio.wait([read, frozen], return_when=asyncio.FIRST_COMPLETED)
            frozen.cancel()
            data = await read  # a read in progress completes: bytes are never held back
            if not data:
                return
            if not self._frozen.is_set():
                writer.write(data)
                await writer.drain()
            else:
                self._swallow -= len(data)
        while self._swallow > 0:
            data = await reader.read(min(_CHUNK, self._swallow))
            if not data:
                return
            self._swallow -= len(data)
        self.swallowed.set()
        await asyncio.Event().wait()  # reads no more: until kill() or close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()

    def freeze(self, swallow: int) -> None:
        """Stop forwarding to the server; read ``swallow`` more bytes, then nothing."""

        async def freeze() -> None:
            assert self._frozen is not None
            self._swallow = swallow
            self._frozen.set()

        self._call(freeze())

    def kill(self) -> None:
        """Reset both sides of every connection (an RST each way)."""

        async def kill() -> None:
            for writer in self._writers:
                _reset(writer)

        self._call(kill())

    def refuse(self, on: bool = True) -> None:
        """Reset every new connection at once while ``on`` (see the module docstring)."""

        async def refuse() -> None:
            self._refusing = on

        self._call(refuse())

    def wait_accepted(self, count: int, timeout: float) -> bool:
        """Until ``count`` connections in all were accepted (or refused)."""
        with self._accepting:
            return self._accepting.wait_for(lambda: self.accepted >= count, timeout)

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(shut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
