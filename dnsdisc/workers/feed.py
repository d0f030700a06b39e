"""The change feed between the main process and its DNS worker processes.

One stream socket (a socketpair) per worker. Each message is a 4-byte big-endian length and a
pickled tuple ``(kind, seq, *fields)`` (the kinds: ``protocol``); both ends are this program,
started by the same user, so pickle's trust model holds. The main process numbers its messages; a
worker acknowledges each one after applying it.

A write's 2xx must not come before every worker answers from the new state. Waiting for every
worker's ACK did that, but under query load a worker often waits milliseconds for a CPU before it
even reads the feed. So beside the socket each worker shares a *fence* with the main process: one
8-byte number in a memfd page. Once a message (and all before it) is in the worker's socket
buffer, the main process stores its number there and may acknowledge the write. Before answering
what it has just read, a worker compares the fence with what it has applied and, if behind, reads
and applies its feed first, synchronously: the bytes are already there. A query sent after the 2xx
is read after the fence was set, so it is answered from the new state, without the write waiting
for the worker to be scheduled. The ACKs remain, for whatever the fence does not cover (a message
still queued in the main process, a worker not listening yet, the counters) and to find a worker
that stopped reading.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import pickle
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("!I")
_READ = 256 * 1024  # bytes per recv: a large snapshot arrives in few calls


def frame(*message: Any) -> bytes:
    """One message, ``(kind, seq, *fields)``, as it goes on the socket."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class Channel:
    """One end of a feed socket, read and written with plain non-blocking calls rather than
    asyncio streams: a worker must be able to read its feed in the middle of answering, and the
    main process must know when a message has reached the worker's socket buffer (uvloop's
    transports hold small writes back until the end of the loop's turn)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.eof = False  # the other end has closed
        self.writable = True  # False once a send failed (the other end is gone) or closed
        # Called when bytes that ``write`` had to queue have all been sent.
        self.on_drained: Callable[[], None] | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: Callable[[], None] | None = None  # what the event loop calls when readable

    def watch(self, readable: Callable[[], None] | None) -> None:
        """Have the event loop call ``readable`` when data arrives; None: stop."""
        if self._reader is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
        self._reader = readable
        if readable is not None:
            asyncio.get_running_loop().add_reader(self.fd, readable)

    def receive(self) -> list[tuple[Any, ...]]:
        """Every whole message that has arrived, in order; ``eof`` says whether the other end
        has closed. Raises ValueError on a malformed message, OSError if the socket broke."""
        while not self.eof:
            try:
                chunk = self.sock.recv(_READ)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:  # it went away with our last bytes unread
                chunk = b""
            if not chunk:
                self.eof = True
            self._in += chunk
        return self._parse()

    def wait(self) -> list[tuple[Any, ...]]:
        """Like ``receive``, but block until at least one message or the end (start-up only)."""
        while True:
            messages = self.receive()
            if messages or self.eof:
                return messages
            poller = select.poll()  # not select(): the descriptor may be above 1023
            poller.register(self.fd, select.POLLIN)
            poller.poll()

    def _parse(self) -> list[tuple[Any, ...]]:
        buf, pos, out = self._in, 0, []
        with memoryview(buf) as view:
            while len(buf) - pos >= _LEN.size:
                (length,) = _LEN.unpack_from(buf, pos)
                end = pos + _LEN.size + length
                if end > len(buf):
                    break
                message = pickle.loads(view[pos + _LEN.size : end])
                if not isinstance(message, tuple) or len(message) < 2:
                    raise ValueError("malformed feed message")
                out.append(message)
                pos = end
        del buf[:pos]
        return out

    def write(self, data: bytes) -> bool:
        """Send ``data`` after what is queued. True when it (and all before it) is now in the
        other end's socket buffer; False when some is queued here, or nothing can be sent."""
        if not self.writable:
            return False
        if not self._out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the other end is gone: its reader sees the end of the stream
                self._broken()
                return False
            if sent == len(data):
                return True
            data = data[sent:]
            self._loop = asyncio.get_running_loop()
            self._loop.add_writer(self.fd, self._flush)
        self._out += data
        return False

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._broken()
            return
        del self._out[:sent]
        if not self._out:
            if self._loop is not None:
                self._loop.remove_writer(self.fd)
            if self.on_drained is not None:
                self.on_drained()

    def _broken(self) -> None:
        # The socket stays open (the owner's event loop may still watch it) until ``close``.
        self.writable = False
        if self._out and self._loop is not None:
            self._loop.remove_writer(self.fd)
        self._out.clear()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def close(self) -> None:
        if self.closed:
            return
        self.watch(None)
        self._broken()
        self.sock.close()


class Fence:
    """The number shared between the main process and one worker (see the module's docstring):
    the last message wholly in the worker's socket buffer. Written only by the main process."""

    SIZE = mmap.PAGESIZE

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, self.SIZE)
        # An aligned 8-byte store and load: a reader never sees half of a number.
        self.view = memoryview(self._map).cast("Q")

    @classmethod
    def create(cls) -> Fence | None:
        """A new fence, or None where there are no memfds (then every write waits for ACKs)."""
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is None:
            return None
        fd = memfd_create("dnsdisc-fence", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, cls.SIZE)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        self.view.release()
        self._map.close()
        os.close(self.fd)
