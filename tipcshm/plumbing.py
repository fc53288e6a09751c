"""Plumbing that connectionless (:mod:`tipcshm.sock`) and connection sockets
(:mod:`tipcshm.conn`) share, so that neither module imports the other for it: the
stdlib's argument checks, best-effort delivery of node-generated frames (returned
messages, rejections) through the client's destination seam, and the rejection of a
closed socket's unread queue (the kernel's tsk_rej_rx_queue).
"""

from __future__ import annotations

import errno
import operator
import socket as _stdlib_socket
import struct
import time
from collections.abc import Callable
from typing import Any

from tipcshm import wire
from tipcshm.client import NodeClient
from tipcshm.errors import HostUnreachable, InvalidArgument
from tipcshm.shm.lane import Inbox, InboxError

ANC_ERRINFO = struct.Struct("=II")  # TIPC_ERRINFO ancillary data: error, returned length
ANC_DESTNAME = struct.Struct("=III")  # TIPC_DESTNAME: type, lower, upper
WAIT_SLICE = 0.25  # blocked calls re-check closure and node liveness this often (seconds)


# -- arguments, checked as socket.socket and the kernel check them, before any data moves --
_C_INT_MIN, _C_INT_MAX = -(1 << 31), (1 << 31) - 1
_SSIZE_MAX = (1 << 63) - 1


def c_int(value: Any) -> int:
    """An argument the stdlib parses as a C int: TypeError unless an integer, OverflowError
    outside the C range."""
    v = operator.index(value)
    if v > _C_INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if v < _C_INT_MIN:
        raise OverflowError("signed integer is less than minimum")
    return v


def ssize(value: Any) -> int:
    v = operator.index(value)
    if not -_SSIZE_MAX - 1 <= v <= _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return v


def bytes_view(data: Any) -> memoryview:
    """Data to send as bytes (a view), or the stdlib's TypeError: len() of a view of
    wider items would count items, not bytes."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


def recv_args(bufsize: Any, flags: Any, what: str) -> tuple[int, int]:
    """(bufsize, flags) of a recv/recvfrom/recvmsg call, or the error the stdlib raises for
    them (TypeError, OverflowError, ValueError), or EINVAL for a zero size as
    tipc_recvmsg/tipc_recvstream give it."""
    n = ssize(bufsize)
    f = c_int(flags)
    if n < 0:
        raise ValueError(
            "negative buffer size in recvmsg()"
            if what == "recvmsg"
            else f"negative buffersize in {what}"
        )
    if n == 0:
        raise InvalidArgument(f"{what}: a buffer of 0 bytes (the kernel's EINVAL)")
    return n, f


def recvmsg_args(bufsize: Any, ancbufsize: Any, flags: Any) -> tuple[int, int, int]:
    """recvmsg()'s sizes and flags, checked as the stdlib and then the kernel check them."""
    n = ssize(bufsize)
    anc = ssize(ancbufsize)
    f = c_int(flags)
    if anc < 0:
        raise ValueError("invalid ancillary data buffer length")
    n, _ = recv_args(n, f, "recvmsg")
    return n, anc, f


def recv_target(buffer: Any, nbytes: Any, flags: Any, what: str) -> tuple[memoryview, int]:
    """(the writable bytes to fill, flags) of a recv_into/recvfrom_into call, checked as
    the stdlib and then the kernel check them."""
    try:
        target = memoryview(buffer)
    except TypeError:
        target = None
    if target is None or target.readonly:
        raise TypeError(
            f"{what}() argument 1 must be read-write bytes-like object, not {type(buffer).__name__}"
        )
    target = target.cast("B")
    n = ssize(nbytes)
    f = c_int(flags)
    if n < 0:
        raise ValueError(f"negative buffersize in {what}")
    if n > len(target):
        raise ValueError(
            "buffer too small for requested bytes"
            if what == "recv_into"
            else "nbytes is greater than the length of the buffer"
        )
    if n:
        target = target[:n]
    elif not len(target):
        raise InvalidArgument(f"{what}: a buffer of 0 bytes (the kernel's EINVAL)")
    return target, f


def shutdown_how(how: Any) -> None:
    """shutdown()'s argument: an integer (TypeError, as the stdlib), and SHUT_RDWR, the
    only one tipc_shutdown takes (EINVAL otherwise)."""
    if c_int(how) != _stdlib_socket.SHUT_RDWR:
        raise InvalidArgument(f"shutdown({how}): TIPC sockets only shut down both ways (2)")


def post(client: NodeClient, node: int, port: int, frame: bytes) -> bool:
    """Best-effort, non-blocking delivery of a node-generated frame (a returned message, a
    rejection) to socket ``<node:port>``, on this node or through the bearer to another.
    False if it could not go now (no such socket, no link, a full lane)."""
    try:
        p = client.lane(node, port)
    except HostUnreachable:
        return False
    if p is None:
        return False
    with p.lock:
        try:
            if not p.write(frame):
                return False
        except InboxError as e:  # the lane was detached meanwhile: the sender is gone
            if e.errno != errno.ESTALE:
                raise
            return False
    client.seg.bump("messages_returned")
    return True


def post_returned(client: NodeClient, frame: bytes) -> bool:
    """:func:`post` of a message built by wire.reverse_for_reject (its header is at least
    32 bytes: it names its destination node and port)."""
    return post(client, dest_node(frame), wire.msg_dest_port(frame), frame)


def dest_node(frame: bytes | bytearray | memoryview) -> int:
    """Word 7 (destination node) of a message whose header is longer than 24 bytes."""
    return int(wire.U32.unpack_from(frame, wire.DEST_NODE_OFFSET)[0])


def return_unread(client: NodeClient, inbox: Inbox) -> None:
    """On close, unread messages that are not dest-droppable go back with TIPC_ERR_NO_PORT.

    Connection protocol messages (acks, probes) are not: the kernel consumes them on
    arrival (tipc_sk_conn_proto_rcv), so they are never in a released socket's queue.
    Returned, a peer's ack read as an abort and turned the EOF of its shutdown into
    ECONNRESET whenever the closing side had acks left unread.
    """
    reject_unread(
        inbox,
        client.addr,
        lambda port, frame: post(client, dest_node(frame), port, frame),
        select=lambda h: h.user != wire.User.CONN_MANAGER,
    )


class Rejected:
    """What :func:`reject_unread` did: frames returned, frames dropped (undecodable, not to
    be returned, or their sender's inbox full or gone), and whether its budget ran out
    with frames still queued."""

    __slots__ = ("returned", "dropped", "cut")

    def __init__(self) -> None:
        self.returned = 0
        self.dropped = 0
        self.cut = False


def reject_unread(
    inbox: Inbox,
    own: int,
    post: Callable[[int, bytes], bool],
    *,
    select: Callable[[wire.Header], bool] | None = None,
    max_frames: int | None = None,
    deadline: float | None = None,
    error: int = wire.ErrorCode.NO_PORT,
) -> Rejected:
    """Consume every frame still queued in ``inbox`` and return each to its sender with
    ``error`` (TIPC_ERR_NO_PORT by default), as the kernel rejects a released or shut
    down socket's queue (tsk_rej_rx_queue):
    ``post(port, frame)`` delivers the returned frame (its destination node is in its
    word 7: a returned message's header is at least 32 bytes); frames that are dest-droppable or
    already carry an error are dropped (wire.reverse_for_reject). ``select`` (given the
    decoded header, in queue order) keeps only the frames it answers True for; the rest
    are dropped. The frames are untrusted: undecodable ones are dropped. ``max_frames``
    and ``deadline`` (time.monotonic) bound the work; frames left then stay unread.
    """
    done = Rejected()
    n = 0
    while True:
        if (max_frames is not None and n >= max_frames) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            done.cut = inbox.poll() is not None
            return done
        r = inbox.poll()
        if r is None:
            return done
        buf, off, length, lane = r
        frame = bytes(buf[off : off + length])
        inbox.release(lane)
        n += 1
        try:
            if select is not None and not select(wire.validate_msg(frame)):
                returned = None
            else:
                returned = wire.reverse_for_reject(frame, error, own)
        except (wire.WireError, ValueError):
            returned = None
        if returned is not None and post(wire.msg_dest_port(returned), returned):
            done.returned += 1
        else:
            done.dropped += 1
