"""Exceptions of the socket API.

Two families, as STYLE.md asks. Everything a socket call raises for a communication failure
is an ``OSError`` subclass carrying the errno a kernel TIPC socket gives, so code written for
``socket.AF_TIPC`` keeps working (``except BlockingIOError``, ``except ConnectionRefusedError``,
``e.errno == errno.EHOSTUNREACH``), and its message always names the address at fault.
"You used it wrong" (closed socket, bad option) stays distinct from "the node or peer is
gone" (:class:`NodeNotRunning`, :class:`NodeFailure`).
"""

from __future__ import annotations

import errno as _errno
import io as _io


class TipcError(OSError):
    """Base of every tipcshm OSError. ``tipc_error`` is the TIPC error code, if any."""

    tipc_error: int = 0

    def __init__(self, err: int, message: str, *, tipc_error: int = 0) -> None:
        super().__init__(err, message)
        self.tipc_error = tipc_error


class NodeNotRunning(TipcError):
    """No tipcshm node of that name runs on this machine (or it has stopped)."""

    def __init__(self, node: str, detail: str = "") -> None:
        hint = f"start it with `tipcshm start --name {node}`"
        text = f"tipcshm node {node!r} is not running"
        if detail:
            text += f" ({detail})"
        super().__init__(_errno.ENOENT, f"{text}: {hint}")
        self.node = node


class NodeAlreadyRunning(TipcError):
    def __init__(self, node: str, pid: int) -> None:
        super().__init__(
            _errno.EEXIST,
            f"tipcshm node {node!r} is already running (supervisor pid {pid}); "
            f"stop it with `tipcshm stop --name {node}` or pick another --name",
        )
        self.node = node
        self.pid = pid


class NodeFailure(TipcError):
    """The node's workers stopped answering (the request could not complete)."""

    def __init__(self, node: str, what: str) -> None:
        super().__init__(_errno.EIO, f"tipcshm node {node!r}: {what}")


class HostUnreachable(TipcError):
    def __init__(self, address: object, why: str = "nothing is bound at this address") -> None:
        super().__init__(_errno.EHOSTUNREACH, f"{why}: {address}")
        self.address = address


class MessageTooLong(TipcError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(_errno.EMSGSIZE, f"message of {size} bytes exceeds the {limit}-byte limit")


class WouldBlock(TipcError, BlockingIOError):
    """EAGAIN; also EINPROGRESS / EALREADY for a non-blocking connect under way."""

    def __init__(self, what: str, code: int = _errno.EAGAIN) -> None:
        super().__init__(code, what)


class Timeout(TipcError, TimeoutError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.ETIMEDOUT, what)


class TimedOut(TipcError, TimeoutError):
    """A call ran out of the time ``settimeout()`` (or ``setdefaulttimeout()``) gave it.

    Exactly the stdlib's ``socket.timeout``: message "timed out", no errno (what the kernel
    gives when its own timers run out is :class:`Timeout`, ETIMEDOUT, or EAGAIN for
    SO_RCVTIMEO / SO_SNDTIMEO). The call and socket at fault are in the exception's note.
    """

    def __init__(self, what: str) -> None:
        OSError.__init__(self, "timed out")
        self.tipc_error = 0
        if hasattr(self, "add_note"):  # Python 3.11+
            self.add_note(what)


class AccessDenied(TipcError, PermissionError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.EACCES, what)


class InvalidArgument(TipcError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.EINVAL, what)


class AddressFamilyNotSupported(TipcError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.EAFNOSUPPORT, what)


class ProtocolOptionError(TipcError):
    def __init__(self, level: int, option: int, why: str = "not supported") -> None:
        super().__init__(_errno.ENOPROTOOPT, f"socket option level {level} option {option}: {why}")


class ConnectionRefused(TipcError, ConnectionRefusedError):
    def __init__(self, what: str, tipc_error: int = 0) -> None:
        super().__init__(_errno.ECONNREFUSED, what, tipc_error=tipc_error)


class ConnectionReset(TipcError, ConnectionResetError):
    def __init__(self, what: str, tipc_error: int = 0) -> None:
        super().__init__(_errno.ECONNRESET, what, tipc_error=tipc_error)


class BrokenPipe(TipcError, BrokenPipeError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.EPIPE, what)


class NotConnected(TipcError):
    def __init__(self, what: str) -> None:
        super().__init__(_errno.ENOTCONN, what)


class SocketClosed(TipcError):
    """The socket was closed by its own program (EBADF, as for a closed fd)."""

    def __init__(self, port: int) -> None:
        super().__init__(_errno.EBADF, f"socket {port:#010x} is closed")


class NotSupportedYet(NotImplementedError):
    """A TIPC feature tipcshm does not implement yet (listed in the README)."""

    def __init__(self, feature: str) -> None:
        super().__init__(
            f"{feature} is not supported by tipcshm yet (see README: Not yet supported)"
        )
        self.feature = feature


class UntrustedObject(TipcError, PermissionError):
    """A segment, FIFO, lock or log of a node that its owner did not make (EPERM).

    Raised instead of using the object: another local user may have planted it, and root's
    tools must never act on what someone else wrote. ``filename`` names the object.
    """

    def __init__(self, path: str, why: str) -> None:
        super().__init__(_errno.EPERM, f"refusing to trust {path}: {why}")
        self.filename = path


class SharedMemoryFull(TipcError):
    """/dev/shm has no room for a segment or lane (ENOSPC), with the advice to enlarge it."""

    def __init__(self, what: str, needed: int) -> None:
        super().__init__(
            _errno.ENOSPC,
            f"no space in /dev/shm for {what} ({needed >> 10} KiB): enlarge /dev/shm "
            "(docker run --shm-size, or mount -o remount,size=...) or start the node with "
            "smaller lanes (--lane-kib, --conn-lane-kib)",
        )
        self.needed = needed


class LimitReached(TipcError):
    """A fixed table of the node is full (ENOBUFS or ENOSPC); the message names the limit."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, what)


# -- the socket module's face (issue 10) -----------------------------------------------


class NotASocketDescriptor(TipcError, _io.UnsupportedOperation):
    """ENOTSOCK: a tipcshm socket cannot be rebuilt from a file descriptor.

    ``socket(AF_TIPC, ..., fileno=fd)`` and ``fromfd(fd, AF_TIPC, ...)`` wrap a kernel
    socket; a tipcshm socket's ``fileno()`` only signals readiness and carries none of
    the socket's state. Also an ``io.UnsupportedOperation``, as the stdlib's file-like
    objects say "not on this kind of object".
    """

    def __init__(self, call: str, fd: object) -> None:
        super().__init__(
            _errno.ENOTSOCK,
            f"{call}: descriptor {fd!r} cannot become an AF_TIPC socket: a tipcshm socket "
            "lives in the node's shared memory and its fileno() only signals readiness; "
            "pass the socket object itself",
        )
        self.fd = fd
