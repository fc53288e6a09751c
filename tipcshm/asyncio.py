"""asyncio for tipcshm sockets: awaitable socket calls, streams and servers.

Three faces, as pyzmq's ``zmq.asyncio`` gives one per use:

* :func:`socket` returns an :class:`AsyncSocket`: the tipcshm socket's own methods, with
  ``await`` on every call that can wait (``recv``, ``recvfrom``, ``recv_into``,
  ``recvfrom_into``, ``recvmsg``, ``send``, ``sendto``, ``sendall``, ``sendmsg``,
  ``accept``, ``connect``).
* :func:`open_connection` and :func:`start_server` give ``asyncio.StreamReader`` /
  ``asyncio.StreamWriter`` pairs over SOCK_STREAM or SOCK_SEQPACKET connections to and at
  service addresses, and a :class:`Server` that behaves like ``asyncio.Server``.
* The event loop's own ``loop.sock_recv``, ``sock_sendall``, ``sock_accept``, ... take
  tipcshm sockets as they are (set non-blocking), as they take stdlib ones.

Theory of operation. Everything waits on the socket's ``fileno()`` through the loop's
``add_reader``/``add_writer``; nothing polls. A readiness report is only a hint: the call
is then made non-blocking, and ``BlockingIOError`` means "wait again" (another task took
the message, or the report was spurious). The call that consumes data runs in the task
that asked for it, after its wait, with no ``await`` between taking the data and returning
it: a task cancelled while waiting (``asyncio.wait_for``, ``Task.cancel``) has taken
nothing, so a cancelled receive loses no message and the socket stays usable. A
descriptor that keeps reporting ready while the call still finds nothing is backed off
with short sleeps rather than spun on, so even a descriptor that is always writable
(an RDM socket cannot know which destination is full) costs no busy loop.

The stream transport is this module's own (over add_reader/add_writer, as asyncio's
selector transports are): asyncio's transports take SOCK_STREAM sockets only, and TIPC
ends a connection in its own way. ``transport.close()`` (``StreamWriter.close()``) sends
what is buffered and then shuts the connection down, which the peer reads as end of
stream (``b""``), as a TCP FIN reads; ``transport.abort()`` closes at once, which the
peer reads as ``ConnectionResetError``, as the kernel reports a TIPC peer's close.
TIPC shuts down both directions at once, so ``can_write_eof()`` is False. Over
SOCK_SEQPACKET each ``write()`` of at most 66000 bytes is one message (longer writes are
cut into messages of 66000 bytes); the reader sees the bytes, not the boundaries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable
from typing import Any

from tipcshm.addresses import AddressLike
from tipcshm.constants import AF_TIPC, SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM
from tipcshm.errors import ConnectionRefused, InvalidArgument, TipcError
from tipcshm.sock import Socket

__all__ = [
    "AsyncSocket",
    "Server",
    "open_connection",
    "socket",
    "start_server",
]

log = logging.getLogger("tipcshm.asyncio")

_STREAM_LIMIT = 2**16  # asyncio's own default for StreamReader
_MESSAGE_MAX = 66000  # TIPC_MAX_USER_MSG_SIZE: one SEQPACKET message
# A descriptor that reported ready this many times in a row while the call still found
# nothing is not believed at once any more: the next waits start with a short sleep,
# doubling from _BACKOFF_FIRST up to _BACKOFF_MAX, until a call succeeds again.
_SPURIOUS_TRUSTED = 2
_BACKOFF_FIRST = 0.0005
_BACKOFF_MAX = 0.02

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], "Awaitable[None] | None"
]


def _calls(sock: Socket) -> Any:
    """``sock`` for the calls only some socket types have (listen, accept, shutdown): a
    socket type without one raises what it raises for it, untyped here."""
    return sock


def _backoff(spurious: int) -> float:
    """Seconds to sleep before waiting again after ``spurious`` empty reports in a row."""
    if spurious <= _SPURIOUS_TRUSTED:
        return 0.0
    return min(_BACKOFF_MAX, _BACKOFF_FIRST * 2.0 ** min(spurious - _SPURIOUS_TRUSTED - 1, 16))


class _Readiness:
    """One add_reader and one add_writer registration of a descriptor, shared by every
    task waiting on it (the loop keeps one callback per descriptor and direction)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: set[asyncio.Future[None]] = set()
        self._writers: set[asyncio.Future[None]] = set()
        self.closed = False

    async def wait(self, writable: bool) -> None:
        if self.closed:
            return  # the caller's next call raises the socket's EBADF
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._readers or self._writers:
                raise RuntimeError("a tipcshm asyncio socket is waited on from two event loops")
            self._loop = loop
        waiters = self._writers if writable else self._readers
        fut: asyncio.Future[None] = loop.create_future()
        if not waiters:
            if writable:
                loop.add_writer(self.fd, self._wake, self._writers)
            else:
                loop.add_reader(self.fd, self._wake, self._readers)
        waiters.add(fut)
        try:
            await fut
        finally:
            waiters.discard(fut)
            if not waiters and not self.closed:
                self._unregister(loop, writable)

    @staticmethod
    def _wake(waiters: set[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _unregister(self, loop: asyncio.AbstractEventLoop, writable: bool) -> None:
        if writable:
            loop.remove_writer(self.fd)
        else:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        """Before the descriptor closes: drop the registrations, wake every waiter (its
        call then raises the socket's own error)."""
        if self.closed:
            return
        self.closed = True
        loop = self._loop
        for writable, waiters in ((False, self._readers), (True, self._writers)):
            if waiters and loop is not None and not loop.is_closed():
                self._unregister(loop, writable)
            self._wake(waiters)


class AsyncSocket:
    """A tipcshm socket for asyncio (see the module docstring).

    Wraps ``sock`` (and makes it non-blocking); the calls that can wait are coroutines,
    the others are the socket's own. ``sock`` is the tipcshm socket itself, e.g. for
    ``loop.sock_*`` or for methods this wrapper does not list.
    """

    def __init__(self, sock: Socket) -> None:
        if not isinstance(sock, Socket):
            raise TypeError(f"a tipcshm socket is required, not {type(sock).__name__}")
        sock.setblocking(False)
        self.sock = sock
        self._ready = _Readiness(sock.fileno())
        self._connect_pending = False  # a connect() was cut short before its answer

    # -- the socket's own calls, which never wait ------------------------------------
    @property
    def family(self) -> int:
        return self.sock.family

    @property
    def type(self) -> int:
        return self.sock.type

    @property
    def proto(self) -> int:
        return self.sock.proto

    def fileno(self) -> int:
        return self.sock.fileno()

    def bind(self, address: AddressLike) -> None:
        self.sock.bind(address)

    def unbind(self, address: AddressLike) -> None:
        self.sock.unbind(address)

    def listen(self, backlog: int = 0) -> None:
        _calls(self.sock).listen(backlog)

    def getsockname(self) -> tuple[int, int, int, int, int]:
        return self.sock.getsockname()

    def getpeername(self) -> tuple[int, int, int, int, int]:
        return self.sock.getpeername()

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        self.sock.setsockopt(level, option, value, optlen)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        return self.sock.getsockopt(level, option, buflen)

    def shutdown(self, how: int = 2) -> None:
        _calls(self.sock).shutdown(how)

    def close(self) -> None:
        """Close the socket; tasks waiting on it wake and get its EBADF."""
        self._ready.close()
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        if name == "sock":  # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.sock, name)

    def __enter__(self) -> AsyncSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AsyncSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tipcshm.asyncio.AsyncSocket {self.sock!r}>"

    # -- waiting ----------------------------------------------------------------------
    async def _retry(self, call: Callable[[], Any], writable: bool) -> Any:
        """``call()`` (non-blocking) until it does not raise BlockingIOError, waiting for
        readiness between tries. The call runs here, in the caller's task: cancelled
        while waiting, the task has taken nothing."""
        spurious = 0
        while True:
            try:
                return call()
            except BlockingIOError:
                pass
            delay = _backoff(spurious)
            if delay:
                await asyncio.sleep(delay)
            await self._ready.wait(writable)
            spurious += 1

    # -- receiving ----------------------------------------------------------------------
    async def recv(self, bufsize: int, flags: int = 0) -> bytes:
        result: bytes = await self._retry(lambda: self.sock.recv(bufsize, flags), False)
        return result

    async def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        result: tuple[bytes, Any] = await self._retry(
            lambda: self.sock.recvfrom(bufsize, flags), False
        )
        return result

    async def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        result: int = await self._retry(lambda: self.sock.recv_into(buffer, nbytes, flags), False)
        return result

    async def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        result: tuple[int, Any] = await self._retry(
            lambda: self.sock.recvfrom_into(buffer, nbytes, flags), False
        )
        return result

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        result: tuple[bytes, list[tuple[int, int, bytes]], int, Any] = await self._retry(
            lambda: self.sock.recvmsg(bufsize, ancbufsize, flags), False
        )
        return result

    async def accept(self) -> tuple[AsyncSocket, tuple[int, int, int, int, int]]:
        """The next connection, as an AsyncSocket, and its peer's address."""
        conn, address = await self._retry(_calls(self.sock).accept, False)
        return AsyncSocket(conn), address

    # -- sending ------------------------------------------------------------------------
    async def send(self, data: Any, flags: int = 0) -> int:
        result: int = await self._retry(lambda: self.sock.send(data, flags), True)
        return result

    async def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = flags_or_address
        result: int = await self._retry(lambda: self.sock.sendto(data, flags, address), True)
        return result

    async def sendmsg(
        self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None
    ) -> int:
        buffers = list(buffers)  # an iterator would be used up by a try that blocked
        result: int = await self._retry(
            lambda: self.sock.sendmsg(buffers, ancdata, flags, address), True
        )
        return result

    async def sendall(self, data: Any, flags: int = 0) -> None:
        """All of ``data``: on SOCK_STREAM in as many sends as it takes (a send that
        would block sends part), else one message."""
        if self.sock.type != SOCK_STREAM:
            await self.send(data, flags)
            return
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += await self.send(view[sent:], flags)

    # -- connecting ---------------------------------------------------------------------
    async def connect(self, address: AddressLike) -> None:
        """Connect (SEQPACKET, STREAM) or set the default destination (RDM, DGRAM).

        A connection completes when the listener accepts it, as with the kernel. The
        outcome is read after each readiness report: SO_ERROR gives a refusal, connect()
        again says EALREADY while the answer is still to come and EISCONN once it came.
        """
        sock = self.sock
        try:
            sock.connect(address)
            return
        except BlockingIOError as e:
            if e.errno == errno.EAGAIN:  # the listener's inbox is full: no SYN went yet
                await self._retry(lambda: sock.connect(address), True)
                return
        except OSError as e:
            if e.errno == errno.EISCONN and self._connect_pending:
                self._connect_pending = False  # an earlier call, cut short, completed
                return
            raise
        # From here a cancelled call leaves the request pending: a later call waits on
        # for its answer.
        self._connect_pending = True
        spurious = 0
        while True:
            delay = _backoff(spurious)
            if delay:
                # writable reports are not believed any more: a readable report (the
                # answer came) or the delay, whichever is first
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._ready.wait(False), delay)
            else:
                # The answer may show as readable (a message came) or as writable (the
                # connection can send): whichever comes first.
                await _first(self._ready.wait(False), self._ready.wait(True))
            err = sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ERROR)
            if err:
                self._connect_pending = False
                if err == errno.ECONNREFUSED:
                    raise ConnectionRefused(f"connect to {address}: refused")
                raise TipcError(int(err), f"connect to {address} failed")
            try:
                sock.connect(address)
            except BlockingIOError:
                spurious += 1
                continue  # EALREADY: still pending
            except OSError as e:
                if e.errno != errno.EISCONN:
                    self._connect_pending = False
                    raise
            self._connect_pending = False
            return


async def _first(*waits: Awaitable[None]) -> None:
    """Wait until one of ``waits`` ends; cancel the others (they took nothing)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def socket(
    family: int = AF_TIPC,
    type: int = SOCK_RDM,  # noqa: A002 - the stdlib's parameter name
    proto: int = 0,
    *,
    node: str | None = None,
) -> AsyncSocket:
    """A new tipcshm socket for asyncio, as ``tipcshm.socket(...)`` takes its arguments."""
    return AsyncSocket(Socket(family, type, proto, node=node))


# -- streams ---------------------------------------------------------------------------
class _ConnTransport(asyncio.Transport):
    """An asyncio transport over a connected tipcshm SEQPACKET or STREAM socket.

    Reads on the loop's reader callback, one recv per readiness report (reports are
    level-triggered: what is left is reported again); writes go straight out while the
    peer takes them and are buffered otherwise, with the write-buffer limits and
    pause_writing()/resume_writing() that StreamWriter.drain() relies on.
    """

    max_size = 256 * 1024  # as asyncio's selector transports read

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: Socket,
        protocol: asyncio.Protocol,
        extra: dict[str, Any] | None = None,
        server: Server | None = None,
    ) -> None:
        info: dict[str, Any] = dict(extra or {})
        info["socket"] = sock
        with contextlib.suppress(OSError):
            info["sockname"] = sock.getsockname()
        if "peername" not in info:
            with contextlib.suppress(OSError):
                info["peername"] = sock.getpeername()
        super().__init__(info)
        sock.setblocking(False)
        self._loop = loop
        self._sock: Socket | None = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._server = server
        self._seqpacket = sock.type == SOCK_SEQPACKET
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self._reading_paused = False
        self._reader_on = False
        self._writer_on = False
        self._closing = False
        self._lost = False
        self._spurious_reads = 0
        self._spurious_writes = 0
        self._eof = False  # the peer's end of stream was read: nothing more to read
        self._rearm_handles: dict[bool, asyncio.TimerHandle] = {}  # by writable
        if server is not None:
            server._attach(self)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<tipcshm.asyncio transport fd={self._fd} {state} {self._sock!r}>"

    # -- protocol -------------------------------------------------------------------
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    # -- reading --------------------------------------------------------------------
    def is_reading(self) -> bool:
        return not self._closing and not self._eof and not self._reading_paused

    def pause_reading(self) -> None:
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._reader(False)

    def resume_reading(self) -> None:
        if self._closing or self._eof or not self._reading_paused:
            return
        self._reading_paused = False
        self._reader(True)

    def _start_reading(self) -> None:
        if self.is_reading():
            self._reader(True)

    def _reader(self, on: bool) -> None:
        if on and not self._reader_on:
            self._loop.add_reader(self._fd, self._read_ready)
        elif not on and self._reader_on:
            self._loop.remove_reader(self._fd)
        self._reader_on = on

    def _read_ready(self) -> None:
        sock = self._sock
        if sock is None or self._closing:
            return
        try:
            data = sock.recv(self.max_size)
        except BlockingIOError:
            self._spurious_reads += 1
            self._back_off(False, self._spurious_reads)
            return
        except Exception as exc:
            self._fatal_error(exc, "fatal read error on a tipcshm connection")
            return
        self._spurious_reads = 0
        if data:
            self._protocol.data_received(data)
        elif self._ended(sock):
            self._read_eof()
        # else: an empty SEQPACKET message, no bytes for the stream

    @staticmethod
    def _ended(sock: Socket) -> bool:
        """b"" came: the end of the stream once the socket is no longer connected (an
        empty SEQPACKET message leaves it connected)."""
        try:
            sock.getpeername()
        except OSError:
            return True
        return False

    def _read_eof(self) -> None:
        # After the end the socket reports readable for good (tipc_poll's POLLHUP),
        # so reading stops here.
        self._reader(False)
        self._eof = True
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._fatal_error(exc, "eof_received() raised")
            return
        if not keep_open:
            self.close()

    def _back_off(self, writable: bool, spurious: int) -> None:
        """Readiness was reported but the call found nothing, again: stop listening for
        a short while instead of being called back in a loop."""
        delay = _backoff(spurious)
        if not delay:
            return
        if writable:
            self._writer(False)
        else:
            self._reader(False)
        old = self._rearm_handles.pop(writable, None)
        if old is not None:
            old.cancel()
        self._rearm_handles[writable] = self._loop.call_later(delay, self._rearm, writable)

    def _rearm(self, writable: bool) -> None:
        self._rearm_handles.pop(writable, None)
        if self._sock is None:
            return
        if writable:
            if self._buffer:
                self._writer(True)
        elif self.is_reading():
            self._reader(True)

    # -- writing --------------------------------------------------------------------
    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__}")
        if self._closing or self._sock is None:
            return  # as asyncio's transports: writes after close are dropped
        view = memoryview(data).cast("B")
        if not len(view):
            return
        if self._seqpacket:
            chunks = [view[i : i + _MESSAGE_MAX] for i in range(0, len(view), _MESSAGE_MAX)]
        else:
            chunks = [view]
        if self._buffer:
            for c in chunks:
                self._queue(c)
        else:
            for i, c in enumerate(chunks):
                rest = self._send_now(c)
                if rest is None:
                    return  # failed: the transport is closing
                if len(rest):
                    for c2 in [rest, *chunks[i + 1 :]]:
                        self._queue(c2)
                    self._writer(True)
                    break
        self._maybe_pause_protocol()

    def _queue(self, chunk: memoryview) -> None:
        # copied: the caller may reuse its buffer once write() returns
        self._buffer.append(memoryview(bytes(chunk)))
        self._buffered += len(chunk)

    def _send_now(self, chunk: memoryview) -> memoryview | None:
        """Send ``chunk``; what did not go (empty if all did), or None after an error."""
        sock = self._sock
        assert sock is not None
        try:
            n = sock.send(chunk)
        except BlockingIOError:
            return chunk
        except Exception as exc:
            self._fatal_error(exc, "fatal write error on a tipcshm connection")
            return None
        return chunk[n:]

    def _writer(self, on: bool) -> None:
        if on and not self._writer_on:
            self._loop.add_writer(self._fd, self._write_ready)
        elif not on and self._writer_on:
            self._loop.remove_writer(self._fd)
        self._writer_on = on

    def _write_ready(self) -> None:
        if self._sock is None:
            return
        progressed = False
        while self._buffer:
            chunk = self._buffer[0]
            rest = self._send_now(chunk)
            if rest is None:
                return
            self._buffered -= len(chunk) - len(rest)
            if len(rest):
                self._buffer[0] = rest
                progressed = progressed or len(rest) < len(chunk)
                break
            self._buffer.popleft()
            progressed = True
        if progressed:
            self._spurious_writes = 0
        else:
            self._spurious_writes += 1
        if self._buffer:
            self._back_off(True, self._spurious_writes)
            self._maybe_resume_protocol()
            return
        self._writer(False)
        self._maybe_resume_protocol()
        if self._closing:
            self._call_connection_lost(None, graceful=True)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False  # a TIPC shutdown ends both directions (tipc_shutdown takes SHUT_RDWR)

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._buffered > self._high and not self._protocol_paused:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "protocol.pause_writing() failed", "exception": exc}
                )

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "protocol.resume_writing() failed", "exception": exc}
                )

    # -- ending ---------------------------------------------------------------------
    def close(self) -> None:
        """Send what is buffered, then shut down (the peer reads end of stream) and close."""
        if self._closing:
            return
        self._closing = True
        self._reader(False)
        if not self._buffer:
            self._loop.call_soon(self._call_connection_lost, None, True)

    def abort(self) -> None:
        """Close now, dropping what is buffered (the peer reads ConnectionResetError)."""
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffered = 0
            self._writer(False)
        if not self._closing:
            self._closing = True
            self._reader(False)
        self._lost = True
        self._loop.call_soon(self._call_connection_lost, exc, False)

    def _fatal_error(self, exc: Exception, message: str) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            log.debug("%r: %s", self, exc)  # the peer ended the connection: not our fault
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _call_connection_lost(self, exc: Exception | None, graceful: bool) -> None:
        sock = self._sock
        if sock is None:
            return
        self._lost = True
        for h in self._rearm_handles.values():
            h.cancel()
        self._rearm_handles.clear()
        self._reader(False)
        self._writer(False)
        try:
            if graceful:
                with contextlib.suppress(OSError):
                    _calls(sock).shutdown(2)  # SHUT_RDWR: the peer reads end of stream
            self._protocol.connection_lost(exc)
        finally:
            self._sock = None
            sock.close()
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)


class Server:
    """Accepts connections at a service address and runs ``client_connected_cb(reader,
    writer)`` for each, as ``asyncio.Server`` does for TCP (close(), wait_closed(),
    serve_forever(), ``async with``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: Socket,
        client_connected_cb: ClientConnectedCallback,
        limit: int,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._listener: Socket | None = listener
        self._fd = listener.fileno()
        self._cb = client_connected_cb
        self._limit = limit
        self._backlog = max(1, backlog)
        self._serving = False
        self._transports: set[_ConnTransport] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever: asyncio.Future[None] | None = None
        self._spurious = 0
        self._rearm_handle: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<tipcshm.asyncio.Server sockets={self.sockets!r}>"

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """The listening socket (none once closed)."""
        return () if self._listener is None else (self._listener,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._listener is None:
            raise RuntimeError(f"server {self!r} is closed")
        if not self._serving:
            self._serving = True
            self._loop.add_reader(self._fd, self._accept_ready)
        await asyncio.sleep(0)

    def _accept_ready(self) -> None:
        listener = self._listener
        accepted = 0
        while listener is not None and accepted < self._backlog:
            try:
                conn, address = _calls(listener).accept()
            except BlockingIOError:
                break
            except OSError as exc:
                self._loop.call_exception_handler(
                    {"message": "tipcshm server: accept() failed", "exception": exc}
                )
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(1.0)  # out of descriptors or sockets, for now
                else:
                    # a listener that fails otherwise (its node stopped, it was closed)
                    # fails for good: stop, rather than fail on every loop pass
                    self.close()
                return
            accepted += 1
            self._serve(conn, address)
        if accepted:
            self._spurious = 0
        else:
            self._spurious += 1
            delay = _backoff(self._spurious)
            if delay:
                self._pause_accepting(delay)

    def _pause_accepting(self, delay: float) -> None:
        self._loop.remove_reader(self._fd)
        self._rearm_handle = self._loop.call_later(delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._rearm_handle = None
        if self._serving and self._listener is not None:
            self._loop.add_reader(self._fd, self._accept_ready)

    def _serve(self, conn: Socket, address: Any) -> None:
        try:
            reader = asyncio.StreamReader(limit=self._limit, loop=self._loop)
            protocol = asyncio.StreamReaderProtocol(reader, self._cb, loop=self._loop)
            _ConnTransport(self._loop, conn, protocol, {"peername": address}, server=self)
        except BaseException:
            conn.close()
            raise

    def _attach(self, transport: _ConnTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: _ConnTransport) -> None:
        self._transports.discard(transport)
        self._wake_if_done()

    def _wake_if_done(self) -> None:
        if self._listener is None and not self._transports:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def close(self) -> None:
        """Stop listening and close the listening socket; connections go on (close them
        with close_clients() / abort_clients())."""
        listener = self._listener
        if listener is None:
            return
        self._listener = None
        if self._rearm_handle is not None:
            self._rearm_handle.cancel()
            self._rearm_handle = None
        if self._serving:
            self._loop.remove_reader(self._fd)
        self._serving = False
        listener.close()  # connections not accepted yet are refused
        fut = self._serving_forever
        if fut is not None and not fut.done():
            fut.cancel()
        self._serving_forever = None
        self._wake_if_done()

    def close_clients(self) -> None:
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._transports):
            t.abort()

    async def wait_closed(self) -> None:
        """Until the server is closed and every connection it accepted has ended."""
        if self._listener is None and not self._transports:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(fut)
        await fut

    async def serve_forever(self) -> None:
        """Serve until cancelled; then close and wait for the connections to end."""
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._listener is None:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _conn_socket(
    sock: Socket | AsyncSocket | None, type_: int, node: str | None
) -> tuple[Socket, bool]:
    """(the connection socket to use, whether this call made it)."""
    if sock is None:
        if type_ not in (SOCK_STREAM, SOCK_SEQPACKET):
            raise InvalidArgument(f"streams run over SOCK_STREAM or SOCK_SEQPACKET, not {type_}")
        return Socket(AF_TIPC, type_, node=node), True
    raw = sock.sock if isinstance(sock, AsyncSocket) else sock
    if raw.type not in (SOCK_STREAM, SOCK_SEQPACKET):
        raise InvalidArgument(f"streams run over SOCK_STREAM or SOCK_SEQPACKET, not {raw.type}")
    return raw, False


async def open_connection(
    address: AddressLike | None = None,
    *,
    type: int = SOCK_STREAM,  # noqa: A002
    node: str | None = None,
    limit: int = _STREAM_LIMIT,
    sock: Socket | AsyncSocket | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address`` (a service or socket address) and return a reader and a
    writer, as ``asyncio.open_connection`` does for TCP. ``sock``: a tipcshm connection
    socket to use instead of a new one (connected already if ``address`` is None)."""
    loop = asyncio.get_running_loop()
    raw, made = _conn_socket(sock, type, node)
    transport: _ConnTransport | None = None
    try:
        if address is not None:
            await AsyncSocket(raw).connect(address)
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        made_future: asyncio.Future[None] = loop.create_future()
        transport = _ConnTransport(loop, raw, protocol)
        # connection_made runs first (call_soon order), as asyncio's own open_connection
        # returns only after it
        loop.call_soon(_done, made_future)
        await made_future
    except BaseException:
        if transport is not None:
            transport.abort()  # it owns the socket now, and may have registered it
        elif made:
            raw.close()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    address: AddressLike | None = None,
    *,
    type: int = SOCK_STREAM,  # noqa: A002
    node: str | None = None,
    limit: int = _STREAM_LIMIT,
    backlog: int = 100,
    start_serving: bool = True,
    sock: Socket | AsyncSocket | None = None,
) -> Server:
    """Bind ``address`` (a service address or range), listen, and serve each connection
    with ``client_connected_cb(reader, writer)`` (a function or a coroutine function), as
    ``asyncio.start_server`` does for TCP. ``sock``: a tipcshm connection socket to
    listen on instead of a new one (bound already if ``address`` is None)."""
    loop = asyncio.get_running_loop()
    raw, made = _conn_socket(sock, type, node)
    try:
        if address is not None:
            raw.bind(address)
        _calls(raw).listen(backlog)
        raw.setblocking(False)
        server = Server(loop, raw, client_connected_cb, limit, backlog)
        if start_serving:
            await server.start_serving()
    except BaseException:
        if made:
            raw.close()
        raise
    return server
