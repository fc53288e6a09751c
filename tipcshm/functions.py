"""The socket module's functions that build sockets, for AF_TIPC as well.

``import tipcshm as socket`` hands a program the stdlib's functions unchanged, except the
ones that build a socket from a family: :func:`socketpair` and :func:`fromfd`. For any
family but AF_TIPC they are the stdlib's; for AF_TIPC they answer as a kernel TIPC socket
does. The kernel's tipc_socketpair (net/tipc/socket.c) joins two new sockets of any TIPC
type back to back: each one's peer is the other's socket address, and SOCK_SEQPACKET and
SOCK_STREAM pairs are connected. Here the same pair is built through the socket API (a
connect to a short-lived listener, or a default destination each way). ``fromfd`` cannot
work for AF_TIPC: a tipcshm socket is not a kernel object behind a descriptor.
"""

from __future__ import annotations

import errno
import socket as _stdlib_socket
from typing import Any

from tipcshm import sockfile
from tipcshm.constants import AF_TIPC, SOCK_SEQPACKET, SOCK_STREAM
from tipcshm.errors import NotASocketDescriptor, TipcError
from tipcshm.sock import Socket, _is_tipc

_PAIR_ACCEPT_TIMEOUT = 8.0  # the kernel's default TIPC_CONN_TIMEOUT; the SYN is already queued


def socketpair(
    family: Any = None,
    type: Any = _stdlib_socket.SOCK_STREAM,  # noqa: A002 - the stdlib's parameter name
    proto: Any = 0,
    *,
    node: str | None = None,
) -> tuple[Any, Any]:
    """``socket.socketpair``; with AF_TIPC, two tipcshm sockets joined as tipc_socketpair
    joins them (``node=`` picks the node, as for :class:`tipcshm.socket`)."""
    if family is None or not _is_tipc(family):
        if node is not None:
            raise TypeError(
                f"socketpair(family={family!r}, node={node!r}): node= applies to AF_TIPC only"
            )
        if family is None:
            return _stdlib_socket.socketpair(type=type, proto=proto)
        return _stdlib_socket.socketpair(family, type, proto)
    first = Socket(AF_TIPC, type, proto, node=node)
    try:
        second = Socket(AF_TIPC, type, proto, node=node)
        try:
            if first.type in (SOCK_SEQPACKET, SOCK_STREAM):
                return _connected_pair(first, second)
            first.connect(second.getsockname())
            second.connect(first.getsockname())
            return first, second
        except BaseException:
            second.close()
            raise
    except BaseException:
        first.close()
        raise


def _connected_pair(first: Any, listener: Any) -> tuple[Any, Any]:
    """Connect ``first`` through ``listener`` (closed afterwards); the accepted socket is
    the pair's second one. ``first`` keeps the blocking mode it was created with."""
    with listener:
        listener.listen(1)
        timeout = first.gettimeout()
        first.setblocking(False)  # its SYN must not wait for an accept on this same thread
        address = listener.getsockname()
        rc = first.connect_ex(address)
        if rc != errno.EINPROGRESS:
            raise TipcError(rc, f"socketpair(AF_TIPC): connecting the pair failed: {rc}")
        listener.settimeout(_PAIR_ACCEPT_TIMEOUT)
        second, _ = listener.accept()
    try:
        rc = first.connect_ex(address)  # the same call again takes the accept's answer
        if rc != errno.EISCONN:
            raise TipcError(rc, f"socketpair(AF_TIPC): the pair did not connect: {rc}")
        first.settimeout(timeout)
        second.settimeout(timeout)
        return first, second
    except BaseException:
        second.close()
        raise


def fromfd(fd: Any, family: Any, type: Any, proto: Any = 0) -> Any:  # noqa: A002
    """``socket.fromfd``; for AF_TIPC another handle on a socket this process detached
    (tipcshm.sockfile), else :class:`tipcshm.errors.NotASocketDescriptor` (ENOTSOCK, also
    an ``io.UnsupportedOperation``): a descriptor holds no tipcshm socket."""
    if _is_tipc(family):
        if sockfile.is_detached(fd):
            return sockfile.fromfd(fd, family, type, proto)
        raise NotASocketDescriptor(f"fromfd({fd!r}, AF_TIPC, {type!r})", fd)
    return _stdlib_socket.fromfd(fd, family, type, proto)
