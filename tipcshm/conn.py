"""Connection sockets: SOCK_SEQPACKET and SOCK_STREAM over the node's inboxes.

``tipcshm.socket(AF_TIPC, SOCK_SEQPACKET)`` (or SOCK_STREAM) returns a :class:`ConnSocket`.
The protocol decisions (states, the SYN handshake, what an arriving message means, flow
control, what close and shutdown send) live in the sans-IO :mod:`tipcshm.core.connection`;
this module moves frames.

Handshake (tipc-wire.md 8): connect() sends an empty NAMED/DIRECT message with SYN (an
implicit connect, sendto() on an unconnected SEQPACKET socket, carries data). The
listener's accept() creates a new socket, queues any SYN data on it and answers with an
empty 24-byte CONN_MSG from the new port; the client completes on it. Then all traffic is
24-byte CONN_MSGs, checked against the peer's (node, port).

Flow control without TIPC_BLOCK_FLOWCTL: a sender has at most 512 messages unacknowledged;
the receiver sends a CONN_ACK (CONN_MANAGER, 40-byte header, w9[31:16] = count) for every
128 it consumes. This is also what a kernel peer on another node does with us: the kernel
picks the mode from its peer's capability bits (tipc_sk_finish_conn), and tipcshm does not
advertise TIPC_BLOCK_FLOWCTL (wire.discovery.DEFAULT_CAPS), so both ends count messages
whatever the peer's link row (L_CAPS) says.

Peers on other nodes: every frame goes through the client's destination seam
(NodeClient.lane(node, port)): the SYN, data, acks and endings into the bearer worker's
inbox (the 24-byte CONN_MSG carries no destination node; the bearer prefix does). The
peer's frames come into this socket's inbox from the bearer worker; when the peer's node
is lost the worker posts the kernel's abort (CONN_MSG, TIPC_ERR_NO_NODE, from the peer),
which ends the connection like any abort: ECONNRESET on recv, EPIPE on send.

Acks arrive in the sender's own inbox between the peer's data: a sender
waiting for one reads its inbox and keeps the data it finds for recv. A full lane blocks
the sender too; nothing is dropped or overwritten.

Endings: close() sends TIPC_ERR_NO_PORT, shutdown() sends TIPC_CONN_SHUTDOWN. The
receiving side reports them as Linux 6.1 does (observed in the kernel VM): after the data
sent before it, an abort reads as ECONNRESET on every recv, a shutdown as EOF once and
then like an empty queue; sends get EPIPE. When a process dies, the supervisor sends
each of its connections' peers the same TIPC_ERR_NO_PORT message from the dead port, so
blocked calls end at once; that message comes through the supervisor's lane and can
overtake the dead process's last data, so the ending is kept apart from the data queue
and reported only when the data before it has been read.

Receiving in place: STREAM recv_into copies from the ring straight into the caller's
buffer, recv_buffer() lends a read-only view of one message in the ring and recv_array()
one of a run of same-size messages (zero copy).
"""

from __future__ import annotations

import contextlib
import errno
import select
import threading
import time
import weakref
from collections import deque
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from tipcshm import wire
from tipcshm.addresses import AddressLike, ServiceAddr, ServiceRange, SocketAddr, parse_address
from tipcshm.client import BearerLane
from tipcshm.constants import (
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_TRUNC,
    MSG_WAITALL,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_DESTNAME,
    TIPC_ERRINFO,
    TIPC_MAX_USER_MSG_SIZE,
    TIPC_RETDATA,
)
from tipcshm.core import events as cev
from tipcshm.core.connection import Connection, ConnectionStateError, State, ending_frame
from tipcshm.core.errors import RemoteProtocolError
from tipcshm.errors import (
    BrokenPipe,
    ConnectionRefused,
    ConnectionReset,
    HostUnreachable,
    InvalidArgument,
    MessageTooLong,
    NotConnected,
    SocketClosed,
    TimedOut,
    Timeout,
    TipcError,
    WouldBlock,
)
from tipcshm.plumbing import (
    ANC_DESTNAME as _ANC_DESTNAME,
)
from tipcshm.plumbing import (
    ANC_ERRINFO as _ANC_ERRINFO,
)
from tipcshm.plumbing import (
    WAIT_SLICE as _WAIT_SLICE,
)
from tipcshm.plumbing import (
    bytes_view as _bytes_view,
)
from tipcshm.plumbing import (
    c_int as _c_int,
)
from tipcshm.plumbing import (
    post_returned,
    recv_args,
    recv_target,
    recvmsg_args,
    shutdown_how,
)
from tipcshm.shm.lane import InboxClosed, InboxError, Producer
from tipcshm.sock import Socket, anycast, register_connection_class
from tipcshm.wire import connmgr

_W01 = wire.HDR_W01
_HDR24_FROM = wire.HDR24.unpack_from
_U32 = wire.U32
_CONN_W1 = wire.make_w1(wire.DataType.CONN_MSG)
_HS = wire.SHORT_H_SIZE  # connection data: the 24-byte header
# Precomputed word tests of the receive paths (tipcshm.wire names every bit).
_PLAIN_MASK = wire.W0_PLAIN_CONN_MASK
_PLAIN_W0 = wire.W0_PLAIN_CONN_DATA
_MTYPE_ERR = wire.W1_MTYPE_ERRCODE_MASK
_SIZE = wire.SIZE_MASK
_HSZ_SHIFT = wire.W0_HSIZE_BYTES_SHIFT
_HSZ_MASK = wire.W0_HSIZE_BYTES_MASK
_ACK_PREFIX = connmgr.build_ack(0, 0, 0, 0, 0)[:8]  # w0 and w1 of every CONN_ACK we send
#: Longest wait for an ack before a sender facing a full ring looks at the ring again.
_FULL_SLICE = 0.002
_IN_OR_OUT = select.POLLIN | select.POLLOUT  # a connect waits for either (or a hang-up)
#: How long a send waiting for its window holds the receive side at a time (s).
_WINDOW_HOLD = 0.005


def _plain_data_len(buf: Any, off: int, peer_node: int, peer_port: int) -> int:
    """Payload size if the frame at ``off`` is plain data from the peer, else 0.

    Plain data (a 24-byte CONN_MSG without error or SYN, data importance, from the peer's
    port and node) is what the connection core always delivers unchanged while
    ESTABLISHED, so the receive hot paths skip handing it to the core.
    """
    w0, w1, _w2, w3, w4, _w5 = _HDR24_FROM(buf, off)
    if (
        not w1 & _MTYPE_ERR  # CONN_MSG, no error code
        and w0 & _PLAIN_MASK == _PLAIN_W0  # 24-byte header, data importance, no SYN
        and w4 == peer_port
        and w3 == peer_node
    ):
        return (w0 & _SIZE) - _HS
    return 0


def _hsize(frame: Any) -> int:
    """Header size of a queued frame."""
    return (_W01.unpack_from(frame)[0] >> _HSZ_SHIFT) & _HSZ_MASK


def _dest_node(frame: Any) -> int:
    """Word 7 of a frame whose header is longer than 24 bytes."""
    return int(_U32.unpack_from(frame, wire.DEST_NODE_OFFSET)[0])


class ConnSocket(Socket):
    """A SOCK_SEQPACKET or SOCK_STREAM socket (see the module docstring)."""

    _connection_type = True

    def __init__(
        self,
        family: int,
        type: int = SOCK_SEQPACKET,  # noqa: A002
        proto: int = 0,
        *,
        node: str | None = None,
    ) -> None:
        super().__init__(family, type, proto, node=node)
        self._dest_droppable = False
        self._update_w0()
        # acks also per quarter ring read, so a sender facing a full ring is woken
        self._conn = Connection(
            own_node=self._own, own_port=self._port, ack_bytes=self._inbox.lane_bytes // 4
        )
        self._rxq: deque[bytes] = deque()  # frames read while waiting, in arrival order
        self._accept_q: deque[bytes] = deque()  # SYNs for accept()
        self._partial = b""  # STREAM: the rest of a message recv did not take yet
        self._peer_p: Producer | BearerLane | None = None
        self._head24 = b""
        self._w0c = 0
        self._stream = type == SOCK_STREAM
        self._zc_thread = 0  # the thread inside a recv_buffer() / recv_array() block, if any
        self._refused = 0  # TIPC error code of a refused connect
        self._end: bytes | None = None  # the peer's abort / shutdown message
        self._end_taken = False  # its EOF (or recvmsg's ancillary report) was consumed
        self._connect_timed_out = False  # the core's connect timer expired (ETIMEDOUT)
        self._conn_name: tuple[int, int] | None = None  # service connected through
        self._refusal_reported = False  # SO_ERROR reports a refusal once
        # Also when the socket is garbage-collected unclosed, the peer hears of it.
        self._finalizer.detach()
        self._peer_cell = [0, 0]
        self._held: list[Any] = []  # (node, port, inbox) of the peer's lane this holds
        self._finalizer = weakref.finalize(
            self,
            ConnSocket._release_conn,
            self._client,
            self._port,
            self._slot,
            self._inbox,
            self._peer_cell,
            self._held,
        )

    @staticmethod
    def _release_conn(
        client: Any, port: int, slot: int, inbox: Any, peer: list[int], held: list[Any]
    ) -> None:
        """The base release, after a best-effort abort to a peer close() did not tell;
        then this process lets go of its lane to the peer (client.hold)."""
        try:
            ConnSocket._abort_untold(client, port, peer)
        finally:
            if held:
                with contextlib.suppress(OSError, ValueError):
                    client.release(*held)
                held.clear()
            Socket._release(client, port, slot, inbox, True)

    @staticmethod
    def _abort_untold(client: Any, port: int, peer: list[int]) -> None:
        if peer[1]:
            frame = ending_frame(client.addr, port, peer[1], wire.ErrorCode.NO_PORT)
            with contextlib.suppress(OSError, ValueError):
                p = client.lane(peer[0], peer[1])
                if p is not None:
                    with p.lock:
                        p.write(frame)

    def __repr__(self) -> str:
        kind = "SOCK_STREAM" if self._stream else "SOCK_SEQPACKET"
        state = "closed" if self._closed else self._conn.state.name
        return f"<tipcshm.socket node={self.node!r} {kind} port={self._port:#010x} {state}>"

    # -- state helpers ---------------------------------------------------------------
    def _established(self, peer_node: int, peer_port: int) -> None:
        self._client.seg.set_peer(self._slot, peer_node, peer_port)
        self._peer_cell[:] = [peer_node, peer_port]
        self._w0c = wire.make_w0(self._importance, wire.SHORT_H_SIZE, 0)
        self._head24 = wire.HDR24.pack(self._w0c, _CONN_W1, 0, self._own, self._port, peer_port)
        if self._held:  # established once only; never hold two lanes
            return
        try:
            got = self._client.hold(peer_node, peer_port)
        except HostUnreachable:
            got = None  # the link went down meanwhile: the bearer worker's abort follows
        if got is None:
            self._peer_p = None
            return
        self._peer_p = got[0]
        self._held[:] = [peer_node, peer_port, got[1]]

    def _peer_addr(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_ID, self._conn.peer_node, self._conn.peer_port, 0, 0)

    def _addr_text(self) -> str:
        c = self._conn
        own = f"<{self._own:#010x}:{self._port:#010x}>"
        return f"{own} -> <{c.peer_node:#010x}:{c.peer_port:#010x}>"

    def getpeername(self) -> tuple[int, int, int, int, int]:
        self._check_open()
        if self._conn.state != State.TIPC_ESTABLISHED:
            raise NotConnected(f"socket {self._port:#010x} is not connected")
        return self._peer_addr()

    # -- frames out ------------------------------------------------------------------
    def _flush_out(self) -> None:
        """Send what the connection core queued: acks (never waiting, see _send_ack),
        rejections to whoever sent a stray message, and protocol messages to the peer
        (probe replies, the shutdown and close messages; best effort)."""
        c = self._conn
        for frame in c.frames_to_send(0.0):
            if frame[:8] == _ACK_PREFIX:
                self._send_ack(frame)
                continue
            port = wire.msg_dest_port(frame)
            if (
                port != c.peer_port
                or not c.peer_port
                or _hsize(frame) > _HS
                and (_dest_node(frame) != c.peer_node)
            ):
                post_returned(self._client, frame)  # a rejection: its header names the node
                continue
            self._send_to_peer(frame, c.peer_node, port)

    def _send_to_peer(self, frame: bytes, node: int, port: int) -> None:
        try:
            p = self._client.lane(node, port)
        except HostUnreachable:
            return  # no link to the peer's node: nobody to tell
        if p is None:
            return
        give_up = time.monotonic() + 5.0  # a peer that never reads cannot wedge us
        with p.lock:
            try:
                while not p.write(frame):
                    if not p.wait_space(len(frame), _WAIT_SLICE):
                        if self._client.gone(node, port) or time.monotonic() > give_up:
                            return
            except InboxError as e:  # ESTALE: forgotten (the peer went away) meanwhile
                if e.errno != errno.ESTALE:
                    raise

    def _send_ack(self, frame: bytes) -> None:
        """A CONN_ACK the core built (it carries any units owed), without waiting.

        Our lane into the peer may be full of our own data, which the peer reads only
        once our ack lets it send again: two sockets both waiting to put an ack into a
        full lane wait for each other (the kernel's acks need no room). An ack that
        cannot go now goes back to the core as owed (Connection.ack_unsent) and rides on
        the next ack or the next wait (:meth:`_wait_ring`).
        """
        c = self._conn
        try:
            p = self._client.lane(c.peer_node, c.peer_port)
        except HostUnreachable:
            return  # no link to the peer's node: the connection ends with its abort
        if p is None:
            return
        if not p.lock.acquire(timeout=0.001):  # a sender of ours holds it, maybe waiting
            c.ack_unsent(frame)
            return
        try:
            if not p.write(frame):
                c.ack_unsent(frame)
        except InboxError as e:  # ESTALE: forgotten (the peer went away) meanwhile
            if e.errno != errno.ESTALE:
                raise
        finally:
            p.lock.release()

    def _flush_owed_ack(self) -> None:
        if self._conn.flush_owed_ack():
            self._flush_out()

    # -- frames in -------------------------------------------------------------------
    def _handle(self, frame: bytes) -> None:
        """Feed one frame from the inbox to the connection core and act on its events.

        Plain data on an established connection changes nothing in the core (see
        tipcshm.core.connection): it is queued for recv at once."""
        c = self._conn
        if c.state is State.TIPC_ESTABLISHED and _plain_data_len(
            frame, 0, c.peer_node, c.peer_port
        ):
            self._rxq.append(frame)
            return
        try:
            c.receive(frame, time.monotonic())
        except RemoteProtocolError:
            return  # malformed: counted by the core, dropped
        self._drain()

    def _drain(self) -> None:
        """Send the core's frames, then act on its events."""
        c = self._conn
        self._flush_out()
        while (ev := c.next_event()) is not None:
            self._on_event(ev)

    def _on_event(self, ev: cev.CoreEvent) -> None:
        if isinstance(ev, cev.Delivered):
            self._rxq.append(ev.frame)
        elif isinstance(ev, cev.ConnectionEnded):
            if ev.frame:
                self._end = ev.frame  # reported once the data before it is read
        elif isinstance(ev, cev.ConnectionRequested):
            self._accept_q.append(ev.frame)
        elif isinstance(ev, cev.ConnectionEstablished):
            self._established(ev.peer_node, ev.peer_port)
        elif isinstance(ev, cev.ConnectionRefused):
            self._refused = ev.error
        elif isinstance(ev, cev.ConnectionTimedOut):
            self._connect_timed_out = True
        elif isinstance(ev, cev.ConnectionAborted):
            self._peer_cell[1] = 0  # nobody to tell: the peer is unreachable

    def _tick(self) -> None:
        """Run the core's timers that are due (connect timeout, connection probes)."""
        t = self._conn.next_timer()
        if t is not None:
            now = time.monotonic()
            if now >= t:
                self._conn.handle_timer(now)
                self._drain()

    def _pump(
        self, deadline: float | None, nonblock: bool = False, events: int = select.POLLIN
    ) -> bool:
        """Read and handle every frame waiting; if none, wait (until ``deadline``) for one.

        Returns False when the wait timed out (or would block) with nothing read. Frames
        it queues (data read while a send waited for acks, SYNs for accept, the peer's
        ending) are outside the rings, so it keeps fileno() readable while any are
        queued; once the peer ended the connection, for good (the kernel's poll says
        POLLIN | POLLHUP from then on).
        """
        try:
            return self._pump_frames(deadline, nonblock, events)
        finally:
            if (self._rxq or self._accept_q or self._end is not None) and not self._closed:
                self._inbox.keep_readable()

    def _pump_frames(
        self, deadline: float | None, nonblock: bool, events: int = select.POLLIN
    ) -> bool:
        inbox = self._inbox
        got = False
        while True:
            if self._closed:
                raise SocketClosed(self._port)
            frame = inbox.get()
            if frame is not None:
                self._handle(frame)
                got = True
                continue
            if got or not self._wait_ring(deadline, nonblock, events):
                return got
            if self._ready is not None:
                # Woken by fileno(): the reactor may have handled the frames (an ack, the
                # answer to a connect) or queued them; the caller checks what changed.
                return True

    # -- readiness (select mode) -------------------------------------------------------
    def _sel_refresh(self) -> None:
        """Set fileno()'s state from the connection's (receive lock held), as tipc_poll:
        DISCONNECTING (the peer's end, a refused connect, shutdown) is POLLIN | POLLHUP
        and never writable; ESTABLISHED is writable while the window is open (and, here,
        while the peer's ring takes a message of any size); LISTEN and CONNECTING never
        are; an unconnected socket (OPEN) is. Readable while a data message, a SYN for
        accept() or a piece of the stream is queued.

        The kernel's receive path handles every message when it arrives, whoever reads
        (tipc_sk_filter_connect): the peer's end takes the connection to DISCONNECTING at
        once, also when data is queued before it. So does this: it reads every frame
        waiting in the rings into the socket's own queues (data into _rxq, the end into
        _end, acks and probes handled) until the connection ends. That costs a copy per
        message in select mode only; the window (512 messages unacknowledged, acks sent
        as the application consumes) bounds what can wait there."""
        ready = self._ready
        if ready is None or self._closed:
            return
        if self._conn.acks_owed:
            with contextlib.suppress(OSError, ValueError):
                self._flush_owed_ack()
        conn = self._conn
        inbox = self._inbox
        while not inbox.closed and conn.state is not State.TIPC_DISCONNECTING:
            r = inbox.poll()
            if r is None:
                if inbox.rearm():
                    continue
                break
            buf, off, length, lane = r
            frame = bytes(buf[off : off + length])
            inbox.release(lane)
            self._handle(frame)
        st = conn.state
        if st is State.TIPC_DISCONNECTING or inbox.closed:
            ready.hangup(writable=False)
            return
        if self._shut:  # shut down while not connected: ENOTCONN, yet sk_shutdown is set
            ready.hangup(writable=st is State.TIPC_OPEN)
            return
        readable = bool(self._rxq or self._accept_q or self._partial)
        if st is State.TIPC_ESTABLISHED:
            writable = conn.snt_unacked < conn.window and self._peer_room()
        else:
            writable = st is State.TIPC_OPEN
        ready.set(readable, writable)

    def _peer_room(self) -> bool:
        p = self._peer_p
        if p is None:
            return True  # a send fails at once: it would not block
        try:
            return p.fits(_HS + TIPC_MAX_USER_MSG_SIZE)
        except (ValueError, IndexError):  # the lane was let go: a send fails at once
            return True

    def _node_stopped(self) -> NoReturn:
        """Our inbox was closed by the node, not by us: it stopped (or its supervisor
        died), and nothing made on it works any more."""
        gone = self._node_gone()
        if gone is not None:
            raise gone from None
        raise ConnectionReset(
            f"{self._addr_text()}: the node {self.node!r} closed this socket"
        ) from None

    def _listening(self) -> bool:
        return self._conn.state == State.TIPC_LISTEN

    # -- connection setup ------------------------------------------------------------
    def listen(self, backlog: int = 0) -> None:
        _c_int(backlog)  # the stdlib's TypeError / OverflowError; tipc_listen ignores it
        self._check_open()
        if self._conn.state is not State.TIPC_OPEN:  # tipc_set_sk_state: LISTEN from OPEN only
            raise InvalidArgument(f"socket {self._port:#010x} is {self._conn.state.name}")
        self._conn.listen()
        self._client.seg.set_listening(self._slot)
        self._sel_touch(wait=0.5)  # LISTEN is never writable

    def accept(self) -> tuple[ConnSocket, tuple[int, int, int, int, int]]:
        self._check_open()
        if self._conn.state != State.TIPC_LISTEN:
            raise InvalidArgument(f"socket {self._port:#010x} is not listening")
        deadline, nonblock = self._deadline(0, "accept")
        with self._recv_lock:
            while not self._accept_q:
                if not self._pump(deadline, nonblock) and not self._accept_q:
                    if nonblock:
                        raise WouldBlock(f"no connection waiting on {self._port:#010x}")
                    if deadline is not None and time.monotonic() >= deadline:
                        raise self._timed_out("accept", f"accept on socket {self._port:#010x}")
            syn = self._accept_q.popleft()
        m = wire.decode_header(syn)  # the core validated it (ConnectionRequested)
        new = ConnSocket(self.family, self.type, self.proto, node=self.node)
        new._importance = self._importance
        new._conn.accepted(m.orig_node, m.orig_port, time.monotonic())
        new._drain()  # ConnectionEstablished: the lane to the peer
        if m.mtype == wire.DataType.NAMED_MSG and m.hsize >= wire.NAMED_H_SIZE:
            new._conn_name = (m.name_type, m.name_instance)
        if m.data_size:
            new._rxq.append(syn)
        new._send_data(b"", 0)  # the empty CONN_MSG that completes the client's connect
        new._conn.answered_syn()
        return new, new._peer_addr()

    def connect(self, address: AddressLike) -> None:
        """Connect; in non-blocking mode the SYN goes out and BlockingIOError(EINPROGRESS)
        is raised, as tipc_connect does. The answer makes fileno() readable; then
        getsockopt(SOL_SOCKET, SO_ERROR) gives 0 or ECONNREFUSED, and connect() again
        raises EISCONN (EALREADY while it is still pending)."""
        self._check_open()
        group = getattr(self, "_group", None)
        if group is not None:  # tipc_connect: a group member connects nowhere
            raise InvalidArgument(f"connect(): socket {self._port:#010x} is in group {group.type}")
        # tipc_connect refuses a bad address (EINVAL) before it looks at the state
        addr = parse_address(address, caller="connect")
        if isinstance(addr, ServiceRange):
            raise InvalidArgument(f"connect(): cannot connect to a service range {addr}")
        st = self._conn.state
        if st == State.TIPC_CONNECTING:
            self._poll_connect()
            if self._conn.state == State.TIPC_CONNECTING:
                # tipc_connect: a blocking socket waits for the answer again (a connect
                # that timed out left it CONNECTING); O_NONBLOCK, and so a socket under
                # settimeout() as the stdlib drives it, gets EALREADY
                deadline, nonblock = self._deadline(0, "connect")
                if nonblock or self._timeout is not None:
                    raise WouldBlock(
                        f"connect on socket {self._port:#010x} is pending", errno.EALREADY
                    )
                self._wait_connected(deadline, str(address))
                return
            st = self._conn.state
        if st == State.TIPC_ESTABLISHED:
            raise TipcError(errno.EISCONN, f"socket {self._port:#010x} is already connected")
        if st != State.TIPC_OPEN:
            self._raise_if_refused()
            raise TipcError(errno.EINVAL, f"socket {self._port:#010x} is {st.name}")
        self._connect(address, b"")
        if self._conn.state == State.TIPC_CONNECTING:
            raise WouldBlock(f"connect to {address}: in progress", errno.EINPROGRESS)

    def _poll_connect(self) -> None:
        """A non-blocking connect is pending: take its answer if it came, without waiting."""
        if self._recv_lock.acquire(blocking=False):
            try:
                self._pump(None, nonblock=True)
            finally:
                self._recv_lock.release()

    def _raise_if_refused(self) -> None:
        if self._refused:
            raise ConnectionRefused(
                f"connect from socket {self._port:#010x}: refused (TIPC error {self._refused})",
                self._refused,
            )

    def _send_unestablished(self) -> None:
        """A send on a socket that is not ESTABLISHED, as __tipc_sendstream's wait
        (tipc_sk_sock_err) answers it at once, blocking or not: a pending error first (a
        refused connect, reported once, shared with SO_ERROR), then EPIPE once the
        connection ended, else ENOTCONN (also while a connect is pending). An answer to
        the connect that is queued but not yet read is taken first, as the kernel would
        have on its arrival."""
        if self._conn.state is State.TIPC_CONNECTING:
            self._poll_connect()
            if self._conn.state is State.TIPC_ESTABLISHED:
                return
        if self._refused and not self._refusal_reported:
            self._refusal_reported = True
            self._raise_if_refused()
        self._not_sendable()

    def so_error(self) -> int:
        """SO_ERROR: a refused non-blocking connect reports ECONNREFUSED once."""
        if self._conn.state == State.TIPC_CONNECTING:
            self._poll_connect()
        if self._refused and not self._refusal_reported:
            self._refusal_reported = True
            return errno.ECONNREFUSED
        return 0

    def _connect(self, address: AddressLike, data: Any) -> None:
        """Send the SYN; wait for the answer unless the socket is non-blocking."""
        addr = parse_address(address, caller="connect")
        if isinstance(addr, ServiceRange):
            raise InvalidArgument(f"connect(): cannot connect to a service range {addr}")
        node, port, words, hdr, hsize = self._resolve_syn(addr)
        local = node == self._own
        if local and self._client.seg.refuses_connections(port):
            raise ConnectionRefused(f"connect to {addr}: the socket there is not listening", 2)
        n = len(data)
        w0 = wire.make_w0(self._importance, hsize, hsize + n, syn=True)
        frame = hdr.pack(w0, *words) + bytes(data)
        self._refused = 0
        self._refusal_reported = False
        try:
            p = self._client.lane(node, port)
        except HostUnreachable:  # __tipc_sendmsg: tipc_node_xmit finds no link
            raise HostUnreachable(addr, f"connect(): no link is up to node {node:#010x}") from None
        if p is None:
            raise ConnectionRefused(f"connect to {addr}: no socket there")
        deadline, nonblock = self._deadline(0, "connect")
        with p.lock:
            try:
                while not p.write(frame):
                    if nonblock:
                        raise WouldBlock(f"connect to {addr}: the listener's inbox is full")
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not p.wait_space(len(frame), left):
                        raise self._timed_out(
                            "connect", f"connect to {addr}: the listener's inbox stayed full"
                        )
            except InboxError as e:  # ESTALE: forgotten (the listener went away) meanwhile
                if e.errno != errno.ESTALE:
                    raise
                raise ConnectionRefused(f"connect to {addr}: no socket there") from None
        now = time.monotonic()
        # the core owns the connect timer: TIPC_CONN_TIMEOUT (or settimeout) as computed
        self._conn.connect(now, None if deadline is None else max(0.0, deadline - now))
        if isinstance(addr, ServiceAddr):
            self._conn_name = (addr.type, addr.instance)
        if nonblock:
            self._sel_touch(wait=0.5)  # CONNECTING: neither readable nor writable until the answer
            return  # non-blocking: the answer is taken later (connect again, SO_ERROR, I/O)
        self._wait_connected(deadline, str(addr))

    def _wait_connected(self, deadline: float | None, addr: str) -> None:
        """A blocking connect's wait for the answer (tipc_wait_for_connect). Running out
        of time leaves the socket CONNECTING, as the kernel's: fileno() reports nothing,
        and the answer, should it still come, establishes or refuses the connection."""
        conn = self._conn
        with self._recv_lock:
            if conn.state is State.TIPC_CONNECTING:
                now = time.monotonic()
                conn.set_connect_timeout(now, None if deadline is None else deadline - now)
            self._connect_timed_out = False
            while conn.state is State.TIPC_CONNECTING:
                self._pump(conn.next_timer(), events=_IN_OR_OUT)
                self._tick()
                if self._connect_timed_out and conn.state is State.TIPC_CONNECTING:
                    self._connect_timed_out = False
                    raise self._timed_out("connect", f"connect to {addr}: no answer")
        if self._conn.state != State.TIPC_ESTABLISHED:
            self._refusal_reported = True  # connect() reports it, not SO_ERROR later
            raise ConnectionRefused(
                f"connect to {addr}: refused (TIPC error {self._refused})", self._refused
            )

    def _resolve_syn(
        self, addr: ServiceAddr | SocketAddr
    ) -> tuple[int, int, tuple[int, ...], Any, int]:
        """(node, port, header words 1.., header struct, header size) of the SYN."""
        if isinstance(addr, ServiceAddr):
            found = anycast(self._client.table(), addr, self._own)
            if found is None:  # __tipc_sendmsg's failed lookup, before any SYN (Linux 6.1)
                raise HostUnreachable(addr, "connect(): nothing is bound at this address")
            node, port = found
            words = self._named_words(addr.type, addr.instance, node, port, addr.domain)
            return node, port, words, wire.HDR40, wire.NAMED_H_SIZE
        node = addr.node or self._own
        words = self._direct_words(addr.port, node)
        return node, addr.port, words, wire.HDR32, wire.BASIC_H_SIZE

    # -- sending ---------------------------------------------------------------------
    def _send_data(self, data: Any, flags: int) -> int:
        """One CONN_MSG of at most 66000 bytes to the peer; blocks on window or full lane."""
        conn = self._conn
        if conn.state is not State.TIPC_ESTABLISHED:
            self._send_unestablished()
        if conn.snt_unacked >= conn.window:
            self._wait_window(flags)
        p = self._peer_p
        n = len(data)
        if p is not None:
            lock = p.lock
            lock.acquire()
            try:
                sent = p.put_locked(self._head24, self._w0c | (_HS + n), data)
            finally:
                lock.release()
            if sent:
                p.notify()
                conn.sent(1)
                self._tx_msgs += 1
                self._tx_bytes += n
                return n
        return self._send_blocking(data, flags)

    def _send_blocking(self, data: Any, flags: int) -> int:
        """One message into a full ring: wait until the peer has read enough of it.

        The wait is for the peer's CONN_ACK, as the kernel's sender waits for its window
        (the receiver acks a quarter of its ring's worth of bytes as well as every 128
        messages, see Connection.ack_bytes), so the reader wakes the writer instead of
        the writer polling. Data and endings that arrive meanwhile are queued by the
        pump. The wait is cut into short slices (the ring may also have been emptied
        without an ack: the reader's own sends pump our data into its queue); while
        another thread receives on this socket it polls the ring instead.
        """
        conn = self._conn
        deadline, nonblock = self._deadline(flags, "send")
        n = len(data)
        size = _HS + n
        while True:
            p = self._peer_p
            if p is None and not self._held and not self._zc_owner():
                # ESTABLISHED by another thread (the readiness reactor) that is still
                # setting the lane up under the receive lock: let it finish
                lock = self._recv_lock
                if lock.acquire(timeout=_WAIT_SLICE):
                    lock.release()
                p = self._peer_p
            if p is None or self._client.gone(conn.peer_node, conn.peer_port):
                self._peer_gone()  # raises
            if conn.state is not State.TIPC_ESTABLISHED:
                self._not_sendable()
            with p.lock:
                if p.put_locked(self._head24, self._w0c | size, data):
                    break
            if nonblock:
                raise WouldBlock(f"{self._addr_text()}: the peer's inbox is full")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise self._timed_out("send", f"{self._addr_text()}: sending (peer full)")
            self._flush_counters()
            left = _FULL_SLICE if deadline is None else min(_FULL_SLICE, deadline - now)
            if self._recv_lock.acquire(blocking=False):
                try:
                    self._pump(now + left)
                finally:
                    self._recv_lock.release()
            else:
                p.wait_space(size, left)
            self._client.check_alive()
        p.notify()
        conn.sent(1)
        self._tx_msgs += 1
        self._tx_bytes += n
        return n

    def _peer_gone(self) -> NoReturn:
        """The peer's inbox is closed: find its abort message if it came, then raise."""
        if self._node_gone() is not None:
            self._node_stopped()
        self._client.forget(self._conn.peer_node, self._conn.peer_port)
        self._peer_p = None
        if self._recv_lock.acquire(blocking=False):
            try:
                self._pump(time.monotonic() + 0.05)
            except (SocketClosed, ConnectionReset):
                pass
            finally:
                self._recv_lock.release()
        if self._conn.state == State.TIPC_ESTABLISHED:
            self._conn.abort(wire.ErrorCode.NO_PORT, time.monotonic())
            self._drain()
        self._not_sendable()

    def _not_sendable(self) -> NoReturn:
        conn = self._conn
        if self._closed:
            raise SocketClosed(self._port)
        st = conn.state
        if st == State.TIPC_DISCONNECTING:
            # EPIPE whatever ended it, as tipc_sk_sock_err gives (checked on Linux 6.1)
            why = "the peer closed or died" if conn.peer_error else "the connection is shut down"
            if conn.peer_error == wire.ErrorCode.CONN_SHUTDOWN:
                why = "the peer shut the connection down"
            raise BrokenPipe(f"{self._addr_text()}: {why}")
        raise NotConnected(f"socket {self._port:#010x} is not connected ({st.name})")

    def _wait_window(self, flags: int) -> None:
        """Wait for CONN_ACKs until the window has room (tsk_conn_cong / tipc_wait_for_cond)."""
        conn = self._conn
        deadline, nonblock = self._deadline(flags, "send")
        self._flush_counters()
        self._check_not_held("a send waiting for the peer's acks")
        while conn.snt_unacked >= conn.window:
            if conn.state != State.TIPC_ESTABLISHED:
                self._not_sendable()
            lock = self._recv_lock
            if lock.acquire(blocking=False):
                # Hold the receive side for a short wait only: another thread of ours may
                # be waiting to recv, and only its reading acks the peer, whose acks we
                # wait for (holding it until an ack came deadlocked two such pairs).
                hold = time.monotonic() + _WINDOW_HOLD
                try:
                    got = self._pump(
                        hold if deadline is None else min(hold, deadline),
                        nonblock,
                        select.POLLOUT,
                    )
                finally:
                    lock.release()
                if not got and not nonblock:
                    time.sleep(0.0005)  # a thread waiting for the lock takes it now
            elif self._ready is not None and not nonblock:
                # another thread is receiving; the reactor (or that thread) takes the
                # acks and makes fileno() writable
                left = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
                self._ready.wait(select.POLLOUT, max(0.0, min(left, _WAIT_SLICE)))
                if self._closed:
                    raise SocketClosed(self._port)
                got = True
            else:  # another thread is receiving: it handles the acks
                time.sleep(0.0005)
                got = True
            if conn.snt_unacked < conn.window:
                return
            if not got:
                if nonblock:
                    raise WouldBlock(f"{self._addr_text()}: send window full")
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(
                        "send", f"{self._addr_text()}: waiting for the send window"
                    )
                if self._client.gone(conn.peer_node, conn.peer_port):
                    self._peer_gone()

    def send(self, data: Any, flags: int = 0) -> int:
        # the stdlib's argument checks come first: a bytes-like object (as bytes, so that
        # len() counts bytes), a C int of flags
        if data.__class__ is not bytes and data.__class__ is not bytearray:
            data = _bytes_view(data)
        if flags.__class__ is not int or flags:
            flags = _c_int(flags)
        if self._closed:
            raise SocketClosed(self._port)
        n = len(data)
        if self._stream:
            if n > TIPC_MAX_USER_MSG_SIZE:
                return self._send_stream(data, flags, partial=True)
        elif n > TIPC_MAX_USER_MSG_SIZE:
            raise MessageTooLong(n, TIPC_MAX_USER_MSG_SIZE)
        if self._conn.state == State.TIPC_OPEN and not self._stream:
            raise NotConnected(f"socket {self._port:#010x} is not connected")
        r = self._send_data(data, flags)
        if self._tx_msgs < 1024 or not self._tx_msgs & 63:
            self._flush_counters()
        if self._ready is not None:
            self._sel_touch()  # the window or the peer's ring may be full now
        return r

    def _send_stream(self, data: Any, flags: int, partial: bool) -> int:
        """STREAM: the bytes as messages of at most 66000 (where tipc_sendstream splits).

        Whole messages go in runs (:meth:`_send_run`) while the window and the ring have
        room; the rest (the last piece, a full window or ring, a connection not yet
        established) through _send_data, which waits or raises. With ``partial``
        (send()) an error after some bytes went returns their count, as
        __tipc_sendstream does, so that a retry does not send them twice.
        """
        mv = memoryview(data).cast("B")
        n = len(mv)
        whole = n - n % TIPC_MAX_USER_MSG_SIZE
        conn = self._conn
        sent = 0
        try:
            while sent < n:
                if sent < whole and conn.state is State.TIPC_ESTABLISHED:
                    took = self._send_run(mv[sent:whole])
                    if took:
                        sent += took
                        continue
                end = min(sent + TIPC_MAX_USER_MSG_SIZE, n)
                self._send_data(mv[sent:end], flags)
                sent = end
        except OSError:
            if not (partial and sent):
                raise
        finally:
            self._flush_counters()
            if self._ready is not None:
                self._sel_touch()
        return sent

    def _send_run(self, whole: memoryview) -> int:
        """As many 66000-byte messages of ``whole`` as the window and the peer's ring take
        now, written with one Producer.put_run_locked(); returns the bytes sent (0:
        nothing fits, _send_data must wait)."""
        conn = self._conn
        p = self._peer_p
        room = conn.window - conn.snt_unacked
        if p is None or room <= 0:
            return 0
        size = TIPC_MAX_USER_MSG_SIZE
        lock = p.lock
        lock.acquire()
        try:
            k = p.put_run_locked(
                self._head24, self._w0c | (_HS + size), whole, size, min(room, len(whole) // size)
            )
        except InboxError as e:  # ESTALE: forgotten (the peer went away); _send_data says so
            if e.errno != errno.ESTALE:
                raise
            k = 0
        finally:
            lock.release()
        if k:
            p.notify()
            conn.sent(k)
            self._tx_msgs += k
            self._tx_bytes += k * size
        return k * size

    def sendall(self, data: Any, flags: int = 0) -> None:
        data = _bytes_view(data)
        flags = _c_int(flags)
        # settimeout() bounds the whole call, not each send under it (sock_sendall)
        t = self._timeout
        if t:
            self._sendall_deadline = (threading.get_ident(), time.monotonic() + t)
        try:
            if self._stream:
                self._send_stream(data, flags, partial=False)
            else:
                self.send(data, flags)
        finally:
            self._sendall_deadline = None

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = flags_or_address
        data = _bytes_view(data)  # CPython's order: data, flags, then the address
        flags = _c_int(flags)
        parse_address(address, caller="sendto", check_range=False)  # CPython parses it always
        self._check_open()
        if self._conn.state == State.TIPC_OPEN:
            n = len(data)
            if n > TIPC_MAX_USER_MSG_SIZE:
                raise MessageTooLong(n, TIPC_MAX_USER_MSG_SIZE)
            self._connect(address, data)  # implicit connect: the SYN carries the data
            self._sel_touch()
            return n
        return self.send(data, flags)  # the kernel ignores the address once connected

    # -- receiving -------------------------------------------------------------------
    def _next(self, flags: int, deadline: float | None, nonblock: bool) -> bytes | None:
        """The next queued data frame (not consumed), reading the inbox if needed.

        b"" for an end of stream the caller may report (it sets ``_end_taken`` when it
        does); None when a non-blocking call would block. How the end reads follows the
        kernel (tipc_recvmsg / tipc_wait_for_rcvmsg, checked on Linux 6.1): a peer's abort
        (close, death) raises ECONNRESET on every call, a peer's shutdown reads as EOF
        once and then like an empty queue, and after a local shutdown ENOTCONN.
        """
        rxq = self._rxq
        conn = self._conn
        while not rxq:
            st = conn.state
            if st == State.TIPC_DISCONNECTING:
                self._pump(None, nonblock=True)  # data the ending overtook (conn core)
                if rxq:
                    break
                err = conn.peer_error
                if conn.aborted:  # supervision: a CONN_PROBE went unanswered
                    raise TipcError(
                        errno.ECONNABORTED, f"{self._addr_text()}: the peer stopped answering"
                    )
                if conn.local_shutdown:
                    # tipc_wait_for_rcvmsg on the queue our shutdown purged: RCV_SHUTDOWN
                    # is ENOTCONN for a call that may wait on the kernel's timers, EAGAIN
                    # for one that may not; under settimeout() the stdlib retries that
                    # EAGAIN until its timeout (the wait below)
                    if not nonblock and self._timeout is None:
                        raise NotConnected(f"socket {self._port:#010x} was shut down")
                elif err and conn.recv_outcome(err) == "reset" and not self._end_taken:
                    raise ConnectionReset(f"{self._addr_text()}: the peer closed or died", err)
                elif err and not self._end_taken:
                    return b""
                elif not err:
                    self._raise_if_refused()
                    raise NotConnected(f"socket {self._port:#010x} is not connected")
            elif st is State.TIPC_LISTEN:
                # a listener's queue holds SYNs: tipc_recvmsg takes them as messages
                frame = self._syn_as_message()
                if frame is not None:
                    return frame
            elif st != State.TIPC_ESTABLISHED and st != State.TIPC_CONNECTING:
                raise NotConnected(f"socket {self._port:#010x} is not connected")
            if not self._pump(deadline, nonblock) and not rxq:
                if nonblock:
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out("recv", f"{self._addr_text()}: recv")
        return rxq[0]

    def _syn_as_message(self) -> bytes | None:
        """recv() on a listener reads its queue as tipc_recvmsg reads any queue: a SYN
        without data is skipped and so dropped (its connect is never answered), one
        with data (an implicit connect) is the message. None: nothing queued."""
        accept_q = self._accept_q
        while accept_q:
            syn = accept_q[0]
            if wire.data_len_of(_W01.unpack_from(syn)[0]) > 0:
                accept_q.popleft()
                self._rxq.append(syn)
                return syn
            accept_q.popleft()
        return None

    def _consume(self) -> None:
        frame = self._rxq.popleft()
        if self._conn.consumed(1, len(frame)):
            self._flush_out()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        bufsize, flags = recv_args(bufsize, flags, "recv")
        if self._closed:
            raise SocketClosed(self._port)
        deadline, nonblock = self._deadline(flags, "recv")
        if self._zc_thread:  # a zero-copy receive block is open somewhere
            self._check_not_held("recv")
        with self._recv_lock:
            if self._stream:
                if (
                    bufsize
                    and not flags & ~(MSG_WAITALL | MSG_DONTWAIT)
                    and not self._rxq
                    and self._conn.state is State.TIPC_ESTABLISHED
                    and self._so.rcvlowat == 1  # else the general path counts to it
                ):
                    data = self._stream_bytes(bufsize, flags)
                    if data:
                        return data
                return self._recv_stream(bufsize, flags, deadline, nonblock)
            return self._recv_message(flags, deadline, nonblock)[:bufsize]

    def _stream_bytes(self, bufsize: int, flags: int) -> bytes:
        """STREAM recv() straight from the ring (the general path below copies every byte
        five times). What is queued when the call starts, or once it has waited, is
        joined from the ring into the bytes returned: one copy (_gather). The rest of a
        piece an earlier call split, and MSG_WAITALL's further waits, take recv_into's
        path: one copy into an uninitialised buffer, one more into the bytes; without
        MSG_WAITALL no more than the peer's lane holds can be waiting, so that buffer is
        no bigger. b"" leaves the call to the general path."""
        waitall = bool(flags & MSG_WAITALL)
        data = b"" if self._partial else self._gather(bufsize, flags)
        if len(data) == bufsize or (data and not waitall):
            return data
        want = bufsize - len(data)
        if not waitall:
            want = min(want, self._inbox.lane_bytes + len(self._partial))
        out = np.empty(want, np.uint8)
        try:
            got = self._stream_into(out.data, waitall, flags)
        except TipcError:
            if not data:
                raise
            return data  # what was taken is never lost: a timeout, or the error, next call
        return data + out[:got].tobytes() if data else out[:got].tobytes()

    def _gather(self, bufsize: int, flags: int) -> bytes:
        """The payloads of the plain data messages queued in the peer's lane, up to
        ``bufsize`` bytes, joined from the ring with one copy (Inbox.poll_gather);
        waits for the first as recv() does. b"" when the next frame is not plain data
        or the connection is no longer ESTABLISHED: the callers' other paths take those."""
        inbox = self._inbox
        conn = self._conn
        deadline, nonblock = self._deadline(flags, "recv")
        while True:
            if self._rxq or self._closed or conn.state is not State.TIPC_ESTABLISHED:
                return b""
            r = inbox.poll()
            if r is not None:
                break
            if not self._wait_ring(deadline, nonblock):
                if nonblock:
                    raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
                raise self._timed_out("recv", f"{self._addr_text()}: recv")
        buf, _, _, lane = r
        node, port = conn.peer_node, conn.peer_port
        views = []
        got = taken = k = 0
        for off, length in inbox.poll_gather(lane, bufsize, _HS):
            size = _plain_data_len(buf, off, node, port)
            if not size:
                break  # the general path's business, once these are consumed
            k += 1
            taken += size
            room = bufsize - got
            if size > room:  # keep the rest of this piece for the next call
                views.append(buf[off + _HS : off + _HS + room])
                self._partial = bytes(buf[off + _HS + room : off + length])
                got = bufsize
                break
            views.append(buf[off + _HS : off + length])
            got += size
        if not k:
            return b""  # the first is not plain data: left queued for the other paths
        data = b"".join(views)
        inbox.release_gather(lane, k)
        self._rx_msgs += k
        self._rx_bytes += taken
        if conn.consumed(k, taken):
            self._flush_out()
        return data

    def _recv_message(self, flags: int, deadline: float | None, nonblock: bool) -> bytes:
        """SEQPACKET: the next whole message's payload (b"" at end of stream)."""
        while True:
            frame = self._next(flags, deadline, nonblock)
            if frame is None:
                raise WouldBlock(f"no message waiting on socket {self._port:#010x}")
            if not frame:
                if not flags & MSG_PEEK:
                    self._end_taken = True
                return b""
            hs = _hsize(frame)
            if len(frame) > hs:
                break
            self._consume()  # an empty message without error: skipped (tipc_recvmsg)
        if not flags & MSG_PEEK:
            self._consume()
            self._rx_msgs += 1
            self._rx_bytes += len(frame) - hs
        return frame[hs:]

    def _recv_stream(
        self, bufsize: int, flags: int, deadline: float | None, nonblock: bool
    ) -> bytes:
        if flags & MSG_PEEK:
            return self._peek_stream(bufsize, flags, deadline, nonblock)
        # tipc_recvstream returns once it has sock_rcvlowat() bytes: all of them with
        # MSG_WAITALL, else SO_RCVLOWAT's (1 unless set), never more than asked for. It
        # waits for them on a blocking socket only: under settimeout() the stdlib's
        # socket is non-blocking, and the kernel returns what it has.
        if flags & MSG_WAITALL:
            target = bufsize
        elif self._timeout is None:
            target = min(self._so.rcvlowat, bufsize)
        else:
            target = 1
        out = bytearray()
        if self._partial:
            out += self._partial[:bufsize]
            self._partial = self._partial[len(out) :]
        rxq = self._rxq
        while len(out) < bufsize:
            if len(out) >= target and not rxq:
                # Return what we have unless more is already waiting.
                if not self._pump(None, nonblock=True) or not rxq:
                    break
            try:
                frame = self._next(flags, deadline, nonblock)
            except (Timeout, TimedOut, WouldBlock):
                if out:
                    break  # MSG_WAITALL timed out: what was taken is returned
                raise
            if frame is None:
                if out:
                    break
                raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
            if not frame:
                if not out:
                    self._end_taken = True  # EOF now; with data, on the next call
                break
            self._consume()
            data = frame[_hsize(frame) :]
            room = bufsize - len(out)
            if len(data) > room:
                out += data[:room]
                self._partial = data[room:]
            else:
                out += data
        self._rx_bytes += len(out)
        self._rx_msgs += 1
        return bytes(out)

    def _peek_stream(
        self, bufsize: int, flags: int, deadline: float | None, nonblock: bool
    ) -> bytes:
        """STREAM MSG_PEEK as tipc_recvstream answers it: the unread bytes of the first
        message only (never across messages, MSG_WAITALL or not), waiting for one as
        recv does; an empty message before it is discarded, peeking or not."""
        if self._partial:
            return self._partial[:bufsize]
        while True:
            frame = self._next(flags, deadline, nonblock)
            if frame is None:
                raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
            if not frame:
                return b""  # the end, left for the read that takes it
            hs = _hsize(frame)
            if len(frame) > hs:
                return frame[hs : hs + bufsize]
            self._consume()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._recv_into(*recv_target(buffer, nbytes, flags, "recv_into"))

    def _recv_into(self, target: memoryview, flags: int) -> int:
        if self._zc_thread:  # a zero-copy receive block is open somewhere
            self._check_not_held("recv_into")
        if (
            self._stream
            and not flags & ~(MSG_WAITALL | MSG_DONTWAIT)
            and not self._closed
            and self._so.rcvlowat == 1
        ):
            with self._recv_lock:
                if not self._rxq and self._conn.state == State.TIPC_ESTABLISHED:
                    got = self._stream_into(target, bool(flags & MSG_WAITALL), flags)
                    if got:
                        return got
        data = self.recv(len(target), flags)  # queued frames, endings, EOF, peeking
        target[: len(data)] = data
        return len(data)

    def _stream_into(self, target: memoryview, waitall: bool, flags: int = 0) -> int:
        """STREAM data straight from the ring into the caller's buffer: one copy.

        The general path copies through bytes objects (frame, payload, accumulator,
        result: four extra copies of every byte). Frames that are not plain data for
        this connection take the general path's route (the core's verdict, the queue).
        """
        n = len(target)
        got = 0
        deadline, nonblock = self._deadline(flags, "recv")
        inbox = self._inbox
        conn = self._conn
        while got < n:
            if self._partial:  # the rest of a frame a previous call could not take
                take = min(len(self._partial), n - got)
                target[got : got + take] = self._partial[:take]
                self._partial = self._partial[take:]
                got += take
                continue
            if self._rxq or self._closed or conn.state is not State.TIPC_ESTABLISHED:
                break  # the general path takes it from here
            r = inbox.poll()
            if r is None:
                if got and not waitall:
                    break
                if not self._wait_ring(deadline, nonblock):
                    if got:
                        break
                    if nonblock:
                        raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
                    raise self._timed_out("recv", f"{self._addr_text()}: recv")
                continue
            buf, off, length, lane = r
            size = 0
            if conn.state is State.TIPC_ESTABLISHED:
                size = _plain_data_len(buf, off, conn.peer_node, conn.peer_port)
            if not size:
                # not plain data: the core's business, then the general path's
                frame = bytes(buf[off : off + length])
                inbox.release(lane)
                self._handle(frame)
                continue
            if n - got >= 2 * size:  # room for more than this one: take a run
                got += self._take_run(lane, target, got, size)
                continue
            start = off + _HS
            take = min(size, n - got)
            target[got : got + take] = buf[start : start + take]
            if take < size:
                self._partial = bytes(buf[start + take : off + length])
            inbox.release(lane)
            got += take
            self._rx_msgs += 1
            self._rx_bytes += size
            if conn.consumed(1, size):
                self._flush_out()
        return got

    def _take_run(self, lane: int, target: memoryview, at: int, size: int) -> int:
        """The polled plain data message and those after it in its lane with the same
        size and header, as many as fit in ``target[at:]``: one numpy copy, one release,
        instead of a poll, a copy and a release each (a 1 MiB read is 16 messages).
        Returns the bytes taken."""
        inbox = self._inbox
        run = inbox.poll_run(lane, _HS, (len(target) - at) // size)
        k = len(run)
        np.frombuffer(target, np.uint8, k * size, at).reshape(k, size)[...] = run[:, _HS:]
        inbox.release_run(lane, k)
        self._rx_msgs += k
        self._rx_bytes += k * size
        if self._conn.consumed(k, k * size):
            self._flush_out()
        return k * size

    def _wait_ring(
        self, deadline: float | None, nonblock: bool, events: int = select.POLLIN
    ) -> bool:
        """Wait a slice for the inbox; False when the call must give up (would block or
        timed out). Raises when the socket or the node closed. In select mode the wait
        is on fileno() reporting ``events`` (receive lock let go meanwhile), so that the
        reactor, the only waiter on the doorbell then, never loses a bell to us."""
        if self._conn.acks_owed:
            self._flush_owed_ack()
        self._tick()
        if nonblock:
            if self._inbox.closed and self._inbox.poll() is None:
                self._node_stopped()  # not "try again": fileno() stays readable
            return False
        left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
        if left <= 0:
            return False
        inbox = self._inbox
        try:
            if self._ready is not None:
                self._wait_ready(events, left)
            else:
                inbox.wait(left)
        except InboxClosed:
            if self._closed:
                raise SocketClosed(self._port) from None
            self._node_stopped()
        if inbox.closed and inbox.poll() is None:
            self._node_stopped()
        return True

    def recv_buffer(self, flags: int = 0) -> RecvBuffer:
        """Zero-copy receive: ``with sock.recv_buffer() as view:`` gives a read-only
        memoryview of the next message (SEQPACKET) or of the next piece of the stream as
        it arrived (STREAM: a piece of at most 66000 bytes), in place in the receive
        ring. Leaving the block consumes it and releases the view (using it afterwards
        raises ValueError). What was made from the view (numpy arrays, slices) points
        into the ring too and must not be used after the block: copy what you keep. An
        empty view means end of stream; a reset connection raises as recv() does.
        ``flags`` may be MSG_DONTWAIT.

        Inside the block the socket's receive side is taken: another thread's recv
        waits, and this thread's recv, or a send that would have to wait for the
        peer's acks (they queue behind the held message), raises instead of hanging.
        """
        if flags & ~MSG_DONTWAIT:
            raise InvalidArgument(f"recv_buffer() flags {flags:#x}: only MSG_DONTWAIT is allowed")
        return RecvBuffer(self, flags)

    def recv_array(self, max_bytes: int = 1 << 20, flags: int = 0) -> RecvArray:
        """Zero-copy receive of several messages at once: ``with sock.recv_array(n) as
        a:`` gives a read-only numpy uint8 array of shape ``(k, size)`` whose rows are
        the next k messages (SEQPACKET) or pieces of the stream as they arrived
        (STREAM: pieces of at most 66000 bytes), in place in the receive ring: as many
        as are queued back to back with the same size, together at most ``max_bytes``
        (but always the next one, whatever its size). Leaving the block consumes all k.
        ``a.view(numpy.uint64)`` works when ``size`` is a multiple of 8; ``a.tobytes()``
        copies the rows out in order.

        This is :meth:`recv_buffer` for bulk data: a 1 MiB STREAM write arrives as 16
        pieces, and one array of 15 rows costs one block instead of 15. The same rules
        hold: the array and everything made from it points into the ring and must not
        be used after the block (copy what you keep; unlike recv_buffer's memoryview,
        numpy arrays cannot be invalidated, so this is not checked), and the socket's
        receive side is taken inside the block. An array with no rows (``a.size == 0``)
        means end of stream; a reset connection raises as recv() does. ``flags`` may be
        MSG_DONTWAIT.
        """
        if flags & ~MSG_DONTWAIT:
            raise InvalidArgument(f"recv_array() flags {flags:#x}: only MSG_DONTWAIT is allowed")
        if max_bytes < 1:
            raise InvalidArgument(f"recv_array() max_bytes {max_bytes}: must be at least 1")
        return RecvArray(self, flags, max_bytes)

    def _check_not_held(self, what: str) -> None:
        if self._zc_thread and self._zc_thread == threading.get_ident():
            raise TipcError(
                errno.EDEADLK,
                f"{what} on socket {self._port:#010x} inside its zero-copy receive block: "
                "leave the block first",
            )

    def _zc_take(self, flags: int) -> tuple[memoryview, int]:
        """The view for recv_buffer() and what its exit must consume (see _zc_done)."""
        rxq = self._rxq
        conn = self._conn
        inbox = self._inbox
        deadline: float | None = None
        nonblock = waited = False
        while True:
            if self._closed:
                raise SocketClosed(self._port)
            if self._partial:
                return memoryview(self._partial), _ZC_PARTIAL
            if rxq:
                frame = rxq[0]
                hs = _hsize(frame)
                if len(frame) <= hs:
                    self._consume()  # an empty message without error is skipped
                    continue
                self._rx_msgs += 1
                self._rx_bytes += len(frame) - hs
                return memoryview(frame)[hs:], _ZC_QUEUED
            if conn.state is not State.TIPC_ESTABLISHED:
                if not waited:
                    deadline, nonblock = self._deadline(flags, "recv")
                    waited = True
                nxt = self._next(flags, deadline, nonblock)  # endings, pending connect
                if nxt is None:
                    raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
                if not nxt:
                    self._end_taken = True
                    return memoryview(b""), _ZC_NOTHING
                continue
            r = inbox.poll()
            if r is None:
                if not waited:  # the deadline counts from the first wait
                    deadline, nonblock = self._deadline(flags, "recv")
                    waited = True
                if not self._wait_ring(deadline, nonblock):
                    if nonblock:
                        raise WouldBlock(f"no data waiting on socket {self._port:#010x}")
                    raise self._timed_out("recv", f"{self._addr_text()}: recv")
                continue
            buf, off, length, lane = r
            if _plain_data_len(buf, off, conn.peer_node, conn.peer_port):
                self._rx_msgs += 1
                self._rx_bytes += length - _HS
                return buf[off + _HS : off + length].toreadonly(), lane
            frame = bytes(buf[off : off + length])
            inbox.release(lane)
            self._handle(frame)

    def _zc_run(
        self, view: memoryview, held: int, max_bytes: int
    ) -> tuple[npt.NDArray[np.uint8], int]:
        """recv_array()'s array for what _zc_take handed out, and how many messages it
        holds. A message in the ring becomes the first row of a run (Inbox.poll_run),
        made from the inbox's numpy array rather than from ``view``, so that no buffer
        export keeps the segment mapped after the block."""
        if held < 0:  # a bytes object: a queued frame or the rest of a piece
            if not len(view):
                return _NO_ROWS, 0
            row = np.frombuffer(view, np.uint8).reshape(1, -1)
            row.flags.writeable = False
            return row, 1
        size = len(view)
        view.release()
        run = self._inbox.poll_run(held, _HS, max(1, max_bytes // size))
        k = len(run)
        self._rx_msgs += k - 1  # _zc_take counted the first
        self._rx_bytes += (k - 1) * size
        return run[:, _HS:], k

    def _zc_done(self, held: int, nbytes: int, k: int = 1) -> None:
        """recv_buffer()'s and recv_array()'s exit: consume what _zc_take handed out
        (k messages of a run for recv_array)."""
        if held >= 0:
            if self._closed:
                return
            if k == 1:
                self._inbox.release(held)
            else:
                self._inbox.release_run(held, k)
            if self._conn.consumed(k, nbytes):
                self._flush_out()
        elif held == _ZC_QUEUED:
            if self._rxq:
                self._consume()
        elif held == _ZC_PARTIAL:
            self._partial = b""

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        data = self.recv(*recv_args(bufsize, flags, "recvfrom"))
        return data, (self._peer_addr() if self._conn.peer_port else None)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        n = self._recv_into(*recv_target(buffer, nbytes, flags, "recvfrom_into"))
        return n, (self._peer_addr() if self._conn.peer_port else None)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[int, int, int, int, int]]:
        """Like socket.recvmsg, as tipc_recvmsg / tipc_recvstream answer it.

        SEQPACKET sets MSG_TRUNC when the message was longer than ``bufsize``. With
        ``ancbufsize > 0`` the ancillary data carries TIPC_DESTNAME when the connection
        was made through a service address, and the end of the connection comes as
        TIPC_ERRINFO (error code, returned length; TIPC_RETDATA if any) with no data:
        the kernel reports a peer's abort that way instead of raising ECONNRESET when
        the caller gave room for control data.
        """
        bufsize, ancbufsize, flags = recvmsg_args(bufsize, ancbufsize, flags)
        if self._closed:
            raise SocketClosed(self._port)
        if self._zc_thread:  # a zero-copy receive block is open somewhere
            self._check_not_held("recvmsg")
        deadline, nonblock = self._deadline(flags, "recv")
        msg_flags = 0
        with self._recv_lock:
            taken_before = self._end_taken
            try:
                if self._stream:
                    data = self._recv_stream(bufsize, flags, deadline, nonblock)
                else:
                    whole = self._recv_message(flags, deadline, nonblock)
                    data = whole[:bufsize]
                    if len(whole) > bufsize:
                        msg_flags |= MSG_TRUNC
                ended = self._end_taken and not taken_before
            except ConnectionReset:
                if ancbufsize <= 0:
                    raise
                data, ended = b"", True
                if not flags & MSG_PEEK:
                    self._end_taken = True
        ancdata: list[tuple[int, int, bytes]] = []
        if ancbufsize > 0:
            if ended:
                end = self._end
                returned = b"" if end is None else end[_hsize(end) :]
                info = _ANC_ERRINFO.pack(self._conn.peer_error, len(returned))
                ancdata.append((SOL_TIPC, TIPC_ERRINFO, info))
                if returned:
                    ancdata.append((SOL_TIPC, TIPC_RETDATA, returned))
            if self._conn_name is not None:
                name = self._conn_name + self._conn_name[1:]
                ancdata.append((SOL_TIPC, TIPC_DESTNAME, _ANC_DESTNAME.pack(*name)))
        return data, ancdata, msg_flags, self._peer_addr()

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        data = b"".join(bytes(b) for b in buffers)
        if address is None:
            return self.send(data, flags)
        return self.sendto(data, flags, address)

    # -- ending ----------------------------------------------------------------------
    def shutdown(self, how: int = 2) -> None:
        shutdown_how(how)
        self._check_open()
        st = self._conn.state
        self._shut = True  # sk_shutdown = SHUTDOWN_MASK, whatever the state (tipc_shutdown)
        try:
            if st not in (State.TIPC_ESTABLISHED, State.TIPC_DISCONNECTING):
                raise NotConnected(f"socket {self._port:#010x} is not connected")
            self._conn.shutdown(time.monotonic())
            self._flush_out()
            # tipc_shutdown discards what was not received: recv finds an empty queue
            # (unless another thread is in a receive call now: it may take what it finds)
            lock = self._recv_lock
            if lock.acquire(blocking=False):
                try:
                    self._rxq.clear()
                    self._partial = b""
                finally:
                    lock.release()
        finally:
            self._sel_touch()

    def _zc_owner(self) -> bool:
        return bool(self._zc_thread) and self._zc_thread == threading.get_ident()

    def _close_locked(self) -> None:
        with contextlib.suppress(ConnectionStateError):
            self._conn.close(time.monotonic())
        try:
            self._flush_out()
        except (OSError, ValueError):
            pass  # the node or the peer is gone: nothing to tell
        self._peer_cell[1] = 0  # told (or nothing to tell): the finaliser need not
        for syn in self._accept_q:  # SYNs never accepted are refused (tsk_rej_rx_queue)
            with contextlib.suppress(wire.WireError, OSError, ValueError):
                back = wire.reverse_for_reject(syn, wire.ErrorCode.NO_PORT, self._own)
                if back is not None:
                    post_returned(self._client, back)
        self._rxq.clear()
        self._accept_q.clear()


_ZC_NOTHING, _ZC_QUEUED, _ZC_PARTIAL = -1, -2, -3  # where lent data came from, if not a lane
_NO_ROWS = np.empty((0, 0), np.uint8)  # recv_array() at end of stream
_NO_ROWS.flags.writeable = False


class _ZeroCopyBlock:
    """What recv_buffer() and recv_array() share: the block takes the socket's receive
    side (its lock, and the owning thread for the EDEADLK checks) from enter to exit;
    ``_take`` lends the data, ``_give_back`` consumes it. Entered once."""

    __slots__ = ("_sock", "_flags", "_lent", "_held")
    _what = ""

    def __init__(self, sock: ConnSocket, flags: int) -> None:
        self._sock = sock
        self._flags = flags
        self._lent: Any = None
        self._held = _ZC_NOTHING

    def _take(self) -> Any:
        raise NotImplementedError

    def _give_back(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        sock = self._sock
        if self._lent is not None:
            raise InvalidArgument(f"a {self._what} block can be entered once")
        if sock._zc_thread:
            sock._check_not_held(self._what)
        lock = sock._recv_lock
        lock.acquire()
        try:
            self._lent = self._take()
        except BaseException:
            lock.release()
            raise
        sock._zc_thread = threading.get_ident()
        return self._lent

    def __exit__(self, *exc: object) -> None:
        self._sock._zc_thread = 0
        try:
            if self._lent is not None:
                self._give_back()
        finally:
            self._sock._recv_lock.release()


class RecvBuffer(_ZeroCopyBlock):
    """The context manager :meth:`ConnSocket.recv_buffer` returns (enter once)."""

    __slots__ = ()
    _what = "recv_buffer()"

    def __enter__(self) -> memoryview:
        return super().__enter__()

    def _take(self) -> memoryview:
        view, self._held = self._sock._zc_take(self._flags)
        return view

    def _give_back(self) -> None:
        sock = self._sock
        view = self._lent
        nbytes = len(view)
        try:
            view.release()
        except BufferError:
            raise BufferError(
                f"socket {sock._port:#010x}: an object made from the recv_buffer() "
                "view (numpy array, memoryview slice) outlived the block; the ring "
                "space it points at is reused now"
            ) from None
        finally:
            sock._zc_done(self._held, nbytes)


class RecvArray(_ZeroCopyBlock):
    """The context manager :meth:`ConnSocket.recv_array` returns (enter once)."""

    __slots__ = ("_max", "_k")
    _what = "recv_array()"

    def __init__(self, sock: ConnSocket, flags: int, max_bytes: int) -> None:
        super().__init__(sock, flags)
        self._max = max_bytes
        self._k = 0

    def __enter__(self) -> npt.NDArray[np.uint8]:
        return super().__enter__()

    def _take(self) -> npt.NDArray[np.uint8]:
        sock = self._sock
        view, self._held = sock._zc_take(self._flags)
        rows, self._k = sock._zc_run(view, self._held, self._max)
        return rows

    def _give_back(self) -> None:
        self._sock._zc_done(self._held, self._lent.size, self._k)


__all__ = [
    "BrokenPipe",
    "ConnSocket",
    "RecvArray",
    "RecvBuffer",
    "ConnectionRefused",
    "ConnectionReset",
    "NotConnected",
]

register_connection_class(ConnSocket)
