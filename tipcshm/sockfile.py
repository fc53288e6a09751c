"""Sockets as files: makefile(), sendfile(), dup(), detach(), fromfd().

A kernel socket is a file descriptor; a tipcshm socket is a port with an inbox in shared
memory, and its ``fileno()`` is only the inbox's doorbell (readable when a message
waits). So what the stdlib does with the descriptor is done here with the socket object:

- ``makefile()`` is the stdlib's own (socket.makefile builds a SocketIO over
  ``recv_into`` / ``send``), with its ``_io_refs`` / ``_decref_socketios`` protocol: a
  socket closed while files made from it are open stays usable until the last closes,
  exactly as a stdlib socket does.
- ``dup()`` returns a :class:`SocketHandle`: another handle on the same socket, counted in
  the same ``_io_refs``, so the socket goes away when its last handle (or file) closes.
- ``detach()`` hands the socket to this process's table of detached sockets, keyed by the
  number it returns, and leaves the object closed; :func:`attach` (what
  ``socket(fileno=N)`` does) takes it back, :func:`fromfd` gives another handle on it.
  Nothing else can be done with the number: a tipcshm socket cannot travel to another
  process as a descriptor (its state is in this process), so any other number raises
  ``io.UnsupportedOperation`` saying so. A detached socket never attached again is
  released when the process exits.
- ``sendfile()`` sends the file's bytes with ``send()``, as the stdlib does for sockets
  that os.sendfile cannot serve.
"""

from __future__ import annotations

import io
import os
import socket as _stdlib_socket
import threading
from typing import Any

from tipcshm.errors import NotASocketDescriptor, SocketClosed

_detached: dict[int, Any] = {}  # number -> socket, until attached again
_detached_lock = threading.Lock()


class SocketHandle:
    """What ``dup()`` and :func:`fromfd` return: another handle on a tipcshm socket.

    Everything but closing is the socket's (same port, bindings, timeout, options); its
    own ``close()`` lets go of this handle only, and the socket is released once its
    last handle and file are closed.
    """

    def __init__(self, sock: Any) -> None:
        sock._check_open()
        object.__setattr__(self, "_sock", sock)
        object.__setattr__(self, "_handle_closed", False)
        sock._io_refs += 1

    def __getattr__(self, name: str) -> Any:
        sock = object.__getattribute__(self, "_sock")
        if object.__getattribute__(self, "_handle_closed"):
            value = getattr(sock, name)
            if callable(value):
                port = sock._port

                def closed(*_args: Any, **_kw: Any) -> Any:
                    raise SocketClosed(port)

                return closed
            return value
        return getattr(sock, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_sock"), name, value)

    def close(self) -> None:
        if self._handle_closed:
            return
        object.__setattr__(self, "_handle_closed", True)
        self._sock._decref_socketios()

    def fileno(self) -> int:
        return -1 if self._handle_closed else int(self._sock.fileno())

    def dup(self) -> SocketHandle:
        if self._handle_closed:
            raise SocketClosed(self._sock._port)
        return SocketHandle(self._sock)

    def detach(self) -> int:
        """Another handle exists (or this is one): the socket cannot leave this object
        alone, as a stdlib socket's descriptor could."""
        raise io.UnsupportedOperation(
            "detach() of a dup()ed tipcshm socket handle: detach the socket itself once "
            "its other handles are closed"
        )

    def makefile(self, *args: Any, **kw: Any) -> Any:
        if self._handle_closed:
            raise SocketClosed(self._sock._port)
        return self._sock.makefile(*args, **kw)

    def __enter__(self) -> SocketHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._handle_closed else ""
        return f"<tipcshm socket handle{state} on {self._sock!r}>"


def makefile(
    sock: Any,
    mode: str = "r",
    buffering: int | None = None,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> Any:
    """socket.makefile(), the stdlib's, over the tipcshm socket's recv_into / send."""
    sock._check_open()
    stdlib_makefile: Any = _stdlib_socket.socket.makefile  # any object with its methods
    return stdlib_makefile(sock, mode, buffering, encoding=encoding, errors=errors, newline=newline)


_STREAM_BLOCK = 1 << 20  # STREAM has no message boundaries: big blocks cost fewer calls
_MESSAGE_BLOCK = 8192  # SEQPACKET: one message per block, the stdlib's send() fallback size


def sendfile(sock: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
    """socket.sendfile() as the stdlib does it where os.sendfile cannot serve: read the
    file in blocks and send() them; returns the bytes sent, and leaves the file's
    position after them. The stdlib's checks and errors, in its order."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if not sock.type & _stdlib_socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if sock.gettimeout() == 0:
        raise ValueError("non-blocking sockets are not supported")
    sock._check_open()
    if offset:
        file.seek(offset)
    block = _STREAM_BLOCK if sock.type == _stdlib_socket.SOCK_STREAM else _MESSAGE_BLOCK
    total = 0
    try:
        while count is None or total < count:
            want = block if count is None else min(block, count - total)
            data = memoryview(file.read(want))
            if not data:
                break
            while data:
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    continue  # SO_SNDTIMEO: try again, as the stdlib's loop does
                total += sent
                data = data[sent:]
        return total
    finally:
        if total > 0 and hasattr(file, "seek"):
            file.seek(offset + total)


def detach(sock: Any) -> int:
    """socket.detach(): the socket leaves this object (now closed, fileno() -1) for this
    process's table of detached sockets, under the number returned."""
    sock._check_open()
    if sock._io_refs:
        raise io.UnsupportedOperation(
            "detach() of a tipcshm socket with dup() handles or makefile() files open"
        )
    number = sock.fileno()
    moved = sock._move_out()
    with _detached_lock:
        _detached[number] = moved
    return int(number)


def is_detached(fileno: object) -> bool:
    """True if ``fileno`` is a number this process's ``detach()`` returned and nobody
    took back yet."""
    if not isinstance(fileno, int):
        return False
    with _detached_lock:
        return fileno in _detached


def attach(fileno: int) -> Any:
    """socket(fileno=N): the socket ``detach()`` returned N for, taken back."""
    with _detached_lock:
        sock = _detached.pop(fileno, None)
    if sock is None:
        raise _foreign(fileno)
    return sock


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> SocketHandle:  # noqa: A002
    """socket.fromfd(): another handle on the detached socket numbered ``fd`` (the
    number stays valid for :func:`attach`), as the stdlib dups the descriptor."""
    with _detached_lock:
        sock = _detached.get(fd)
    if sock is None:
        raise _foreign(fd)
    if (family, type) != (sock.family, sock.type) or proto not in (0, sock.proto):
        raise ValueError(
            f"fd {fd} is a tipcshm socket of family {sock.family}, type {sock.type}, "
            f"not family {family}, type {type}"
        )
    return SocketHandle(sock)


def _foreign(fd: int) -> io.UnsupportedOperation:
    err = NotASocketDescriptor(f"socket(fileno={fd!r})", fd)
    err.strerror = (
        f"{fd} is not a tipcshm socket detached by this process (pid {os.getpid()}): a "
        "tipcshm socket's state lives in the process that made it, so it cannot be "
        "rebuilt from a descriptor number or passed to another process"
    )
    return err
