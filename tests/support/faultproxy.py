"""A TCP fault-injection proxy to put between code under test and a real service.

It runs its own event loop in a daemon thread, so it keeps working whether the code under test
runs in the test's loop, in another thread or in a subprocess. Faults:

* ``cut()``      close every open connection and refuse new ones (a dead service or network);
* ``refuse()``   refuse new connections, leave open ones alone;
* ``blackhole()`` accept connections but pass no bytes either way (a hung peer);
* ``delay(s)``   hold every chunk for ``s`` seconds before passing it on;
* ``restore()``  back to a clean pass-through.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["FaultProxy"]


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with injectable faults."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"faultproxy:{target_port}")
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delay = 0.0
        self._blackhole = False
        self.connections_accepted = 0
        self.port = listen_port
        self._thread.start()
        self._call(self._listen())

    # -- control (called from any thread) -------------------------------------------------
    def cut(self) -> None:
        """Close all open connections and refuse new ones until ``restore()``."""
        self._call(self._cut())

    def refuse(self) -> None:
        """Refuse new connections; open ones keep working."""
        self._call(self._close_listener())

    def blackhole(self) -> None:
        """Accept connections but pass nothing; open connections stall too."""
        self._blackhole = True

    def delay(self, seconds: float) -> None:
        """Hold each chunk for ``seconds`` before forwarding it."""
        self._delay = seconds

    def restore(self) -> None:
        """Clean pass-through again (open connections that were cut stay closed)."""
        self._delay = 0.0
        self._blackhole = False
        self._call(self._listen())

    def close(self) -> None:
        """Stop the proxy and its thread."""
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    @property
    def address(self) -> tuple[str, int]:
        """Where clients should connect."""
        return ("127.0.0.1", self.port)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside the proxy's loop ------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _cut(self) -> None:
        await self._close_listener()
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._cut()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._server is None:
            # Accepted just before a cut or refuse took effect: treat it as refused.
            writer.transport.abort()
            return
        self.connections_accepted += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self._blackhole:
                    await asyncio.sleep(0.05)
                if self._delay:
                    await asyncio.sleep(self._delay)
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.transport.is_closing():
                try:
                    writer.write_eof()
                except OSError:
                    writer.transport.abort()


