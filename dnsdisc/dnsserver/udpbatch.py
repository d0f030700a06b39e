"""A UDP transport that reads and answers datagrams in batches: up to ``BATCH`` queries per
``recvmmsg(2)`` and their replies in one ``sendmmsg(2)`` (Linux), called through ctypes.

Why: with uvloop's datagram transport every query costs a ``recvmsg`` and a ``sendmsg`` system
call, a Python callback, and the client address turned into a ``(host, port)`` tuple (through
``inet_ntop``) and back. Under load most of a worker's time was spent there rather than in the
answer (docs/benchmarks.md). Here the client's address stays the kernel's ``sockaddr`` bytes,
which the reply is sent back to as they are.

Only a reply that needs nothing but sending (after the rate limit and cookies, applied here)
takes the batch. Everything else (the query log, forwarding, an oversized reply) goes through
``UDPProtocol.reply_to`` with the address decoded as asyncio would give it, and this transport's
``sendto``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import socket
import sys
from typing import Any

from dnsdisc.dnsserver.cookies import Verdict, unmapped
from dnsdisc.dnsserver.transport import UDPProtocol

BATCH = 32  # datagrams per system call
ROUNDS = 4  # batches per wake-up, so that TCP and the change feed wait at most this long
RECV_SLOT = 65536  # any UDP datagram fits (mapped memory: only the pages queries reach are used)
SEND_SLOT = 4096  # our UDP replies stay within EDNS_SIZE; a larger one is sent on its own
SOCKADDR_IN, SOCKADDR_IN6 = 16, 28  # bytes
NAME_SLOT = 32  # room for either
MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _bind_libc() -> tuple[Any, Any] | None:
    # The headers are read and written through 64-bit views (pointers, size_t): 64-bit Linux only.
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # No argtypes: converting each argument through them doubled the cost of a call (0.9 us more).
    # Callers pass only ints that fit a C int, None, and c_void_p objects for the pointers.
    recv.restype = send.restype = ctypes.c_int
    return recv, send


_calls = _bind_libc()
AVAILABLE = _calls is not None

_HDR = ctypes.sizeof(_Mmsghdr)
# Where the fields read and written per datagram sit, in units of the memoryview they go through.
_LEN_AT = (_Mmsghdr.msg_len.offset // 4, _HDR // 4)  # (offset, stride) in uint32
_NAME_AT = (_Msghdr.msg_name.offset // 8, _HDR // 8)  # in uint64
_IOV_LEN_AT = (_Iovec.iov_len.offset // 8, ctypes.sizeof(_Iovec) // 8)  # in uint64


_OPT_START = b"\x00\x00\x29"  # an OPT record's first bytes: the root, type 41


def _address(name: bytes, family: int) -> tuple[Any, ...]:
    """A sockaddr as asyncio hands it to ``datagram_received``."""
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port
    return (
        socket.inet_ntop(socket.AF_INET6, name[8:24]),
        port,
        int.from_bytes(name[4:8], "big"),
        int.from_bytes(name[24:28], sys.byteorder),
    )


class BatchedUDPTransport(asyncio.DatagramTransport):
    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: UDPProtocol
    ) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        assert _calls is not None
        self._recvmmsg, self._sendmmsg = _calls
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._protocol = protocol
        self._closing = False
        self.reads = 0  # recvmmsg calls that returned datagrams, and the datagrams (for tests)
        self.datagrams = 0

        # The buffers, headers and iovecs the kernel reads and writes: they live as long as this
        # transport. The receive buffer is an anonymous mapping, not a bytearray, which would
        # write 2 MB of zeros up front.
        self._recv_buf = mmap.mmap(-1, BATCH * RECV_SLOT)
        self._send_buf = bytearray(BATCH * SEND_SLOT)
        self._names = bytearray(BATCH * NAME_SLOT)
        self._recv_hdrs = (_Mmsghdr * BATCH)()
        self._send_hdrs = (_Mmsghdr * BATCH)()
        self._recv_iov = (_Iovec * BATCH)()
        self._send_iov = (_Iovec * BATCH)()
        recv_base = ctypes.addressof(ctypes.c_char.from_buffer(self._recv_buf))
        send_base = ctypes.addressof(ctypes.c_char.from_buffer(self._send_buf))
        names_base = ctypes.addressof(ctypes.c_char.from_buffer(self._names))
        namelen = SOCKADDR_IN if sock.family == socket.AF_INET else SOCKADDR_IN6
        for i in range(BATCH):
            self._recv_iov[i].iov_base = recv_base + i * RECV_SLOT
            self._recv_iov[i].iov_len = RECV_SLOT
            self._send_iov[i].iov_base = send_base + i * SEND_SLOT
            for hdrs, iov in ((self._recv_hdrs, self._recv_iov), (self._send_hdrs, self._send_iov)):
                hdr = hdrs[i].msg_hdr
                hdr.msg_name = names_base + i * NAME_SLOT  # a reply's is reset to its query's
                hdr.msg_namelen = namelen  # one family per socket: the kernel keeps this length
                hdr.msg_iov = ctypes.addressof(iov[i])
                hdr.msg_iovlen = 1
        # Where sending resumes after a reply that could not go: at each header.
        send_hdrs = ctypes.addressof(self._send_hdrs)
        self._send_from = [ctypes.c_void_p(send_hdrs + k * _HDR) for k in range(BATCH)]
        # What each wake-up reads, in one tuple: unpacking it is cheaper than a dozen lookups.
        self._hot = (
            self._fd,
            self._recvmmsg,
            ctypes.c_void_p(ctypes.addressof(self._recv_hdrs)),
            protocol,
            memoryview(self._recv_buf),
            memoryview(self._send_buf),
            memoryview(self._recv_hdrs).cast("B").cast("I"),  # msg_len of each query
            memoryview(self._send_hdrs).cast("B").cast("Q"),  # msg_name of each reply
            memoryview(self._send_iov).cast("B").cast("Q"),  # iov_len of each reply
            names_base,
        )
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        (fd, recvmmsg, recv_ptr, protocol, recv_view, send_view, lengths, send_names,
         send_lengths, names_base) = self._hot  # fmt: skip
        respond, catch_up = protocol.respond, protocol.catch_up
        # The rate limit is applied here, in the batch (``UDPProtocol.limited``); the query log
        # takes every reply out of it.
        fast = not protocol.log_queries
        limiter, limited = protocol.limiter, protocol.limited
        responder = protocol.responder
        cookies = protocol.cookies
        names, inet4 = self._names, self._family == socket.AF_INET
        len_off, len_step = _LEN_AT
        name_off, name_step = _NAME_AT
        iov_off, iov_step = _IOV_LEN_AT
        for _ in range(ROUNDS):
            count = recvmmsg(fd, recv_ptr, BATCH, MSG_DONTWAIT, None)
            if count <= 0:
                err = ctypes.get_errno()
                if count < 0 and err not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    protocol.error_received(OSError(err, f"recvmmsg: {errno.errorcode.get(err)}"))
                return  # nothing left
            self.reads += 1
            self.datagrams += count
            if catch_up is not None:
                catch_up()  # read after the queries: a write acknowledged before them is applied
                if self._closing:
                    return  # the feed could not be applied: this worker stops answering
            out = 0
            # The clients' sockaddrs as bytes, once per batch: a slice of it is each address.
            sockaddrs = bytes(names[: count * NAME_SLOT])
            for i in range(count):
                at = i * RECV_SLOT
                data = bytes(recv_view[at : at + lengths[len_off + i * len_step]])
                # The client's address, packed, straight from its sockaddr.
                if inet4:
                    at_name = i * NAME_SLOT + 4
                    where = sockaddrs[at_name : at_name + 4]
                else:
                    at_name = i * NAME_SLOT + 8
                    where = unmapped(sockaddrs[at_name : at_name + 16])
                try:
                    reply = respond(data, False, where)
                    if fast and reply.__class__ is bytes:
                        verdict = Verdict.NONE
                        # cookies.may_carry, written out: it runs for every query.
                        if (
                            cookies is not None
                            and data[10:12] != b"\x00\x00"
                            and not (data[-11:-8] == _OPT_START and data[-2:] == b"\x00\x00")
                        ):
                            reply, verdict = cookies.answer(
                                data, reply, where, False, responder.echoed
                            )
                        if limiter is not None:
                            reply = limited(reply, where, data, verdict)
                            if reply is None:
                                continue  # dropped
                        size = len(reply)
                        if size <= SEND_SLOT:
                            slot = out * SEND_SLOT
                            send_view[slot : slot + size] = reply
                            send_lengths[iov_off + out * iov_step] = size
                            send_names[name_off + out * name_step] = names_base + i * NAME_SLOT
                            out += 1
                            continue
                        # Too long for a slot: on its own, already cookied and counted.
                        name = bytes(self._names[i * NAME_SLOT : (i + 1) * NAME_SLOT])
                        self.sendto(reply, _address(name, self._family))
                        continue
                    elif fast and reply is None:
                        continue
                    name = bytes(self._names[i * NAME_SLOT : (i + 1) * NAME_SLOT])
                    protocol.reply_to(data, reply, _address(name, self._family))
                except Exception as exc:  # one bad datagram must not cost the rest of the batch
                    self._loop.call_exception_handler(
                        {"message": "answering a UDP query failed", "exception": exc}
                    )
            if out:
                self._send_batch(out)
            if count < BATCH:
                return

    def _send_batch(self, count: int) -> None:
        done = 0
        while done < count:
            sent = self._sendmmsg(self._fd, self._send_from[done], count - done, 0)
            if sent > 0:
                done += sent
                continue
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return  # the socket buffer is full: the rest is dropped, as a network may drop it
            # This reply could not go (e.g. its client's address is unreachable): the rest can.
            self._protocol.error_received(OSError(err, f"sendmmsg: {errno.errorcode.get(err)}"))
            done += 1

    def sendto(self, data: Any, addr: Any = None) -> None:
        try:
            self._sock.sendto(data, addr)
        except BlockingIOError:
            pass  # the socket buffer is full: dropped, as the network may drop it
        except OSError as exc:
            self._protocol.error_received(exc)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


async def create_endpoint(
    protocol: UDPProtocol, host: str, port: int, family: int, reuse_port: bool
) -> BatchedUDPTransport:
    """Bind ``host:port`` as ``loop.create_datagram_endpoint(local_addr=...)`` does, read by a
    ``BatchedUDPTransport``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    error: OSError | None = None
    for fam, kind, proto, _, address in infos:
        sock = socket.socket(fam, kind, proto)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return BatchedUDPTransport(loop, sock, protocol)
    raise error or OSError(f"cannot resolve {host!r}")
