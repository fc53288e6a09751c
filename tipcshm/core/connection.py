"""Sans-IO connection endpoint for SOCK_SEQPACKET / SOCK_STREAM sockets.

Theory of operation: mirrors net/tipc/socket.c ``tipc_sk_filter_connect`` (what an
incoming message does to a connection), ``tipc_accept`` / ``tipc_connect`` /
``tipc_wait_for_connect`` (the SYN handshake and TIPC_CONN_TIMEOUT),
``tipc_sk_conn_proto_rcv`` (CONN_MANAGER: acks, probes), ``tipc_sk_timeout`` and
``tipc_sk_check_probing_state`` (connection supervision with CONN_PROBE),
``tipc_sk_build_ack`` and ``tsk_conn_cong`` (message-based flow control without
TIPC_BLOCK_FLOWCTL: window 512 messages, an ack every 128 consumed) and
``__tipc_shutdown`` (what close and shutdown send).

A :class:`Connection` follows the core's contract (:mod:`tipcshm.core.contract`): the
socket feeds it whole frames with :meth:`Connection.receive` and the local calls
(listen, connect, accept, shutdown, close); it answers with events
(:mod:`tipcshm.core.events`: ConnectionEstablished, ConnectionRequested,
ConnectionRefused, ConnectionEnded, ConnectionTimedOut, ConnectionAborted, WindowOpened,
Delivered) and frames in its outbox (acks, probes and their replies, rejections, the
shutdown and close messages). What happens is decided by :data:`TRANSITIONS`, keyed by
the kernel's state names and an event; each entry names the next state and the action
that runs, so the diagram can be generated from that table. A remote event the table
has no entry for is a valid but unwanted message: dropped and counted. A local call the
table has no entry for raises :class:`ConnectionStateError` (a LocalProtocolError).

The owner may keep a fast path: a plain data message (24-byte CONN_MSG from the peer,
no error, no SYN) changes nothing here while ESTABLISHED, so the socket can queue it
without calling :meth:`Connection.receive`; it must still report what the application
consumed (:meth:`Connection.consumed`) and sent (:meth:`Connection.sent`).

Supervision: a connection to another node sends CONN_PROBE every ``probe_interval``
(CONN_PROBING_INTV, one hour); a probe still unanswered at the next expiry aborts the
connection (ConnectionAborted, ECONNABORTED). Any CONN_MANAGER message from the peer
answers it. Connections within the node are not probed: the supervisor ends the
connections of a process that died.

One addition of tipcshm's: a receiver also acks once the messages it consumed since its
last ack add up to ``ack_bytes``. On one node the sender writes into the receiver's ring,
which fills (a 4 MiB ring holds 63 messages of 66,000 bytes) long before a window of 512
messages does; the sender then waits for an ack, and this makes one come whenever a
quarter of the ring was read. An ack only says how many messages were consumed, so
sending one early is within the protocol (a kernel sender takes acks at any time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import (
    ConnectionAborted,
    ConnectionEnded,
    ConnectionEstablished,
    ConnectionRefused,
    ConnectionRequested,
    ConnectionTimedOut,
    Delivered,
    WindowOpened,
)
from tipcshm.wire.connmgr import ConnMgrMsg, ack_fields, build_ack
from tipcshm.wire.header import (
    SHORT_H_SIZE,
    ConnMgrType,
    DataType,
    ErrorCode,
    Header,
    User,
    WireError,
    encode_header,
    reverse_for_reject,
    validate_msg,
)

# Names the socket layer and the supervisor use; the numbers are the wire module's.
CONN_MANAGER: Final = int(User.CONN_MANAGER)
CONN_MSG: Final = int(DataType.CONN_MSG)
CONN_PROBE: Final = int(ConnMgrType.CONN_PROBE)
CONN_PROBE_REPLY: Final = int(ConnMgrType.CONN_PROBE_REPLY)
CONN_ACK: Final = int(ConnMgrType.CONN_ACK)
TIPC_OK: Final = int(ErrorCode.OK)
TIPC_ERR_NO_PORT: Final = int(ErrorCode.NO_PORT)
TIPC_ERR_NO_NODE: Final = int(ErrorCode.NO_NODE)
TIPC_ERR_OVERLOAD: Final = int(ErrorCode.OVERLOAD)
TIPC_CONN_SHUTDOWN: Final = int(ErrorCode.CONN_SHUTDOWN)
_LAST_DATA_USER: Final = int(User.CRITICAL_IMPORTANCE)
#: Endings go at critical importance (tipc-wire §8: close and shutdown messages).
_ENDING_USER: Final = int(User.CRITICAL_IMPORTANCE)

FLOWCTL_WIN: Final = 512  # messages in flight (FLOWCTL_MSG_WIN without TIPC_BLOCK_FLOWCTL)
ACK_EVERY: Final = FLOWCTL_WIN // 4  # the receiver acks once it consumed this many
CONN_PROBING_INTV: Final = 3600.0  # seconds between probes (socket.c CONN_PROBING_INTV)


class State(IntEnum):
    """The kernel's socket states (socket.c enum; uapi is silent)."""

    TIPC_OPEN = 1
    TIPC_LISTEN = 2
    TIPC_CONNECTING = 3
    TIPC_ESTABLISHED = 4
    TIPC_DISCONNECTING = 5


class Event(Enum):
    """What can happen to a connection: local calls, classified messages, timers."""

    # local calls
    CONNECT = "connect"  # connect() / implicit connect sent a SYN
    LISTEN = "listen"
    ACCEPTED = "accepted"  # this socket was created by accept() for a SYN
    SHUTDOWN = "shutdown"
    CLOSE = "close"
    PEER_LOST = "peer_lost"  # the owner learnt the peer is gone (inbox closed, node down)
    # messages (tipc_sk_filter_connect's cases)
    SYN = "syn"  # LISTEN: a connection request
    SYN_ACK = "syn_ack"  # CONNECTING: an error-free CONN_MSG arrived
    REFUSED = "refused"  # CONNECTING: the SYN came back with an error
    DATA = "data"  # a data message from the peer
    LATE_DATA = "late_data"  # DISCONNECTING: data the peer's ending overtook
    PEER_ERROR = "peer_error"  # a message from the peer with an error code
    CONN_ACK = "conn_ack"
    CONN_PROBE = "conn_probe"
    CONN_PROBE_REPLY = "conn_probe_reply"
    STRAY = "stray"  # an error-free message this socket does not take: returned
    # timers
    CONNECT_TIMEOUT = "connect_timeout"  # TIPC_CONN_TIMEOUT expired while CONNECTING
    PROBE_TIMER = "probe_timer"  # time to probe the peer
    PROBE_UNANSWERED = "probe_unanswered"  # the last probe got no answer


#: Events the owner causes; an entry missing for one of these is the caller's error.
LOCAL_EVENTS: Final = frozenset(
    {Event.CONNECT, Event.LISTEN, Event.ACCEPTED, Event.SHUTDOWN, Event.CLOSE, Event.PEER_LOST}
)

S = State
E = Event
#: (state, event) -> (next state, action). Actions are Connection methods ``_a_<name>``.
TRANSITIONS: Final[dict[tuple[State, Event], tuple[State, str]]] = {
    # -- TIPC_OPEN
    (S.TIPC_OPEN, E.CONNECT): (S.TIPC_CONNECTING, "start_connect"),
    (S.TIPC_OPEN, E.LISTEN): (S.TIPC_LISTEN, "nothing"),
    (S.TIPC_OPEN, E.ACCEPTED): (S.TIPC_ESTABLISHED, "establish_accepted"),
    (S.TIPC_OPEN, E.SHUTDOWN): (S.TIPC_OPEN, "nothing"),  # ENOTCONN, decided by the caller
    (S.TIPC_OPEN, E.CLOSE): (S.TIPC_DISCONNECTING, "mark_closed"),
    (S.TIPC_OPEN, E.STRAY): (S.TIPC_OPEN, "reject"),
    # -- TIPC_LISTEN
    (S.TIPC_LISTEN, E.SYN): (S.TIPC_LISTEN, "request"),
    (S.TIPC_LISTEN, E.STRAY): (S.TIPC_LISTEN, "reject"),
    (S.TIPC_LISTEN, E.CLOSE): (S.TIPC_DISCONNECTING, "mark_closed"),
    # -- TIPC_CONNECTING (a timed-out connect stays CONNECTING: the answer may still come)
    (S.TIPC_CONNECTING, E.SYN_ACK): (S.TIPC_ESTABLISHED, "establish"),
    (S.TIPC_CONNECTING, E.REFUSED): (S.TIPC_DISCONNECTING, "refuse"),
    (S.TIPC_CONNECTING, E.CONNECT_TIMEOUT): (S.TIPC_CONNECTING, "connect_timed_out"),
    (S.TIPC_CONNECTING, E.CLOSE): (S.TIPC_DISCONNECTING, "mark_closed"),
    # -- TIPC_ESTABLISHED
    (S.TIPC_ESTABLISHED, E.DATA): (S.TIPC_ESTABLISHED, "deliver"),
    (S.TIPC_ESTABLISHED, E.PEER_ERROR): (S.TIPC_DISCONNECTING, "peer_ended"),
    (S.TIPC_ESTABLISHED, E.PEER_LOST): (S.TIPC_DISCONNECTING, "peer_ended"),
    (S.TIPC_ESTABLISHED, E.CONN_ACK): (S.TIPC_ESTABLISHED, "take_ack"),
    (S.TIPC_ESTABLISHED, E.CONN_PROBE): (S.TIPC_ESTABLISHED, "reply_probe"),
    (S.TIPC_ESTABLISHED, E.CONN_PROBE_REPLY): (S.TIPC_ESTABLISHED, "nothing"),
    (S.TIPC_ESTABLISHED, E.STRAY): (S.TIPC_ESTABLISHED, "reject"),
    (S.TIPC_ESTABLISHED, E.PROBE_TIMER): (S.TIPC_ESTABLISHED, "probe"),
    (S.TIPC_ESTABLISHED, E.PROBE_UNANSWERED): (S.TIPC_DISCONNECTING, "abort_unanswered"),
    (S.TIPC_ESTABLISHED, E.SHUTDOWN): (S.TIPC_DISCONNECTING, "send_shutdown"),
    (S.TIPC_ESTABLISHED, E.CLOSE): (S.TIPC_DISCONNECTING, "send_close"),
    # -- TIPC_DISCONNECTING
    (S.TIPC_DISCONNECTING, E.LATE_DATA): (S.TIPC_DISCONNECTING, "deliver"),
    (S.TIPC_DISCONNECTING, E.STRAY): (S.TIPC_DISCONNECTING, "reject"),
    (S.TIPC_DISCONNECTING, E.SHUTDOWN): (S.TIPC_DISCONNECTING, "mark_closed"),
    (S.TIPC_DISCONNECTING, E.CLOSE): (S.TIPC_DISCONNECTING, "mark_closed"),
    (S.TIPC_DISCONNECTING, E.PEER_LOST): (S.TIPC_DISCONNECTING, "nothing"),
}
del S, E


class ConnectionStateError(LocalProtocolError):
    """The caller asked for something the connection's state does not allow."""


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """Counters of one connection endpoint (``statistics()``)."""

    state: str
    snt_unacked: int
    rcv_unacked: int
    acks_sent: int
    acks_received: int
    probes_sent: int
    probe_replies_sent: int
    rejected: int
    dropped: int
    malformed: int


def ending_frame(own_node: int, own_port: int, peer_port: int, error: int) -> bytes:
    """The 24-byte CONN_MSG that ends a connection (``error`` NO_PORT for close or an
    abort, CONN_SHUTDOWN for shutdown), as __tipc_shutdown sends it."""
    return encode_header(
        Header(
            user=_ENDING_USER,
            hsize=SHORT_H_SIZE,
            size=SHORT_H_SIZE,
            mtype=CONN_MSG,
            errcode=error,
            prev_node=own_node,
            orig_port=own_port,
            dest_port=peer_port,
            orig_node=own_node,
        )
    )


@dataclass(slots=True)
class _Input:
    """What an action may look at (one per event)."""

    now: float
    hdr: Header | None = None
    frame: bytes = b""
    node: int = 0
    port: int = 0
    error: int = 0
    timeout: float | None = None
    acked: int = 0


class Connection(Machine[bytes]):
    """One connection endpoint's protocol state (see the module docstring).

    Read-only for the owner: :attr:`state`, :attr:`peer_node`, :attr:`peer_port`,
    :attr:`window`, :attr:`snt_unacked`, :attr:`peer_error`, :attr:`local_shutdown`,
    :attr:`aborted`, :attr:`acks_owed`. Everything changes through methods.
    """

    def __init__(
        self,
        *,
        own_node: int = 0,
        own_port: int = 0,
        window: int = FLOWCTL_WIN,
        ack_bytes: int = 0,
        probe_interval: float = CONN_PROBING_INTV,
    ) -> None:
        super().__init__()
        self.own_node = own_node
        self.own_port = own_port
        self.state = State.TIPC_OPEN
        self.peer_node = 0
        self.peer_port = 0
        self.window = window
        self.snt_unacked = 0
        self.rcv_unacked = 0
        self.rcv_unacked_bytes = 0
        self.ack_bytes = ack_bytes  # 0: acks by message count only, as the kernel
        self.acks_owed = 0  # units of acks the owner could not send yet (ack_unsent)
        self.peer_error = 0  # error code that ended the connection from the far side
        self.local_shutdown = False
        self.aborted = False  # supervision gave up (ECONNABORTED)
        self.probe_interval = probe_interval
        self.probe_unacked = False
        self._connect_deadline: float | None = None
        self._probe_at: float | None = None
        self._acks_sent = self._acks_received = self._probes_sent = 0
        self._probe_replies = self._rejected = self._dropped = self._malformed = 0

    # -- the table ---------------------------------------------------------------------
    def _fire(self, event: Event, inp: _Input) -> bool:
        """Run ``event``'s transition; False if the table has none (a remote event is
        then dropped; a local one raises ConnectionStateError)."""
        entry = TRANSITIONS.get((self.state, event))
        if entry is None:
            if event in LOCAL_EVENTS:
                raise ConnectionStateError(f"{event.value} in state {self.state.name}")
            self._dropped += 1
            return False
        nxt, action = entry
        _ACTIONS[action](self, inp)
        self.state = nxt
        return True

    # -- local calls -------------------------------------------------------------------
    def listen(self) -> None:
        self._fire(Event.LISTEN, _Input(0.0))

    def connect(self, now: float = 0.0, timeout: float | None = None) -> None:
        """The SYN went out; ``timeout`` (TIPC_CONN_TIMEOUT, seconds) arms the connect
        timer: ConnectionTimedOut at ``now + timeout`` if no answer came."""
        self._fire(Event.CONNECT, _Input(now, timeout=timeout))

    def set_connect_timeout(self, now: float, timeout: float | None) -> None:
        """A new wait for a pending connect (connect() again after a timeout)."""
        if self.state is not State.TIPC_CONNECTING:
            raise ConnectionStateError(f"no connect pending in state {self.state.name}")
        self._connect_deadline = None if timeout is None else now + timeout

    def accepted(self, peer_node: int, peer_port: int, now: float = 0.0) -> None:
        """This endpoint was made by accept() for a SYN from ``peer_node``/``peer_port``."""
        self._fire(Event.ACCEPTED, _Input(now, node=peer_node, port=peer_port))

    def shutdown(self, now: float = 0.0) -> None:
        """shutdown(): an established peer is told TIPC_CONN_SHUTDOWN (it reads EOF)."""
        self._fire(Event.SHUTDOWN, _Input(now))

    def close(self, now: float = 0.0) -> None:
        """close(): an established peer is told TIPC_ERR_NO_PORT (it reads ECONNRESET)."""
        self._fire(Event.CLOSE, _Input(now))

    def abort(self, error: int = TIPC_ERR_NO_PORT, now: float = 0.0) -> None:
        """The owner learnt the peer is gone without its ending arriving (its inbox
        closed, or the node went down: TIPC_ERR_NO_NODE). Nothing to send."""
        self._fire(Event.PEER_LOST, _Input(now, error=error))

    @property
    def connected(self) -> bool:
        return self.state == State.TIPC_ESTABLISHED

    # -- incoming ----------------------------------------------------------------------
    def receive(self, frame: bytes | bytearray | memoryview, now: float) -> None:
        """One whole message for this socket (tipc_sk_filter_connect, conn_proto_rcv).

        RemoteProtocolError (nothing changed) if it is not a valid TIPC message."""
        if self.state is State.TIPC_ESTABLISHED:
            # The common protocol message, our own kind of CONN_ACK from the peer: the
            # same transition as below, without decoding a Header first.
            ack = ack_fields(frame)
            if ack is not None and ack[0] == self.peer_node and ack[1] == self.peer_port:
                self.probe_unacked = False  # any CONN_MANAGER message answers a probe
                self._fire(Event.CONN_ACK, _Input(now, acked=ack[2]))
                return
        try:
            hdr = validate_msg(frame)
            acked = 0
            if hdr.user == CONN_MANAGER:
                acked = ConnMgrMsg.from_header(hdr).acked
        except WireError as e:
            self._malformed += 1
            raise RemoteProtocolError(f"connection {self.own_port:#010x}: {e}") from None
        raw = frame if isinstance(frame, bytes) else bytes(frame)
        if len(raw) > hdr.size:
            raw = raw[: hdr.size]
        event = self._classify(hdr)
        if event is not None:
            self._fire(event, _Input(now, hdr=hdr, frame=raw, acked=acked))
        else:
            self._dropped += 1

    def _classify(self, h: Header) -> Event | None:
        """Which event a message is in the current state (None: unwanted, dropped)."""
        st = self.state
        data_user = h.user <= _LAST_DATA_USER
        err = h.errcode
        if st is State.TIPC_LISTEN:
            if data_user and h.syn and not err:
                return Event.SYN
            return None if err else Event.STRAY
        if st is State.TIPC_CONNECTING:
            if not data_user:
                return None
            if err:
                return Event.REFUSED
            return Event.SYN_ACK if h.mtype == CONN_MSG else None
        if st is State.TIPC_OPEN:
            return None if err else Event.STRAY
        if h.orig_port != self.peer_port or h.orig_node != self.peer_node:
            return None if err or not data_user else Event.STRAY
        if st is State.TIPC_DISCONNECTING:
            # tipcshm's supervisor ends a dead process's connections from its own lane,
            # so that ending can overtake data the process wrote before it died (the
            # kernel's abort queues behind it). A closed port never sends again, so data
            # from the peer after its ending is such data: still delivered.
            if self.peer_error and data_user and not err and not h.syn:
                return Event.LATE_DATA
            return None
        if h.user == CONN_MANAGER:
            self.probe_unacked = False  # any CONN_MANAGER message answers a probe
            if err:
                return Event.PEER_ERROR
            return _CONN_MANAGER_EVENTS.get(h.mtype)
        if not data_user:
            return None
        return Event.PEER_ERROR if err else Event.DATA

    # -- timers ------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        c, p = self._connect_deadline, self._probe_at
        if c is None:
            return p
        return c if p is None else min(c, p)

    def handle_timer(self, now: float) -> None:
        c = self._connect_deadline
        if c is not None and now >= c:
            self._fire(Event.CONNECT_TIMEOUT, _Input(now))
        p = self._probe_at
        if p is not None and now >= p:
            ev = Event.PROBE_UNANSWERED if self.probe_unacked else Event.PROBE_TIMER
            self._fire(ev, _Input(now))

    # -- flow control ------------------------------------------------------------------
    @property
    def congested(self) -> bool:
        """tsk_conn_cong: the sender must wait for an ack before the next message."""
        return self.snt_unacked >= self.window

    def sent(self, units: int = 1) -> None:
        """``units`` messages went to the peer."""
        self.snt_unacked += units

    def answered_syn(self) -> None:
        """accept() sent the empty answer to a SYN: the client consumes it without
        counting (tipc_sk_filter_connect takes it as the handshake), so it never comes
        back in an ack; it does not occupy the window."""
        if self.snt_unacked:
            self.snt_unacked -= 1

    def consumed(self, units: int = 1, nbytes: int = 0) -> bool:
        """``units`` messages of ``nbytes`` in all were read by the application. True
        when an ack is due and queued in the outbox (tipc_sk_build_ack; ``ack_bytes``
        in the module docstring)."""
        self.rcv_unacked += units
        self.rcv_unacked_bytes += nbytes
        if (
            self.rcv_unacked >= ACK_EVERY
            or (self.ack_bytes and self.rcv_unacked_bytes >= self.ack_bytes)
        ) and self.state is State.TIPC_ESTABLISHED:
            n, self.rcv_unacked = self.rcv_unacked, 0
            self.rcv_unacked_bytes = 0
            self._queue_ack(n + self.acks_owed)
            self.acks_owed = 0
            return True
        return False

    def _queue_ack(self, units: int) -> None:
        self._acks_sent += 1
        self._outbox.append(
            build_ack(self.own_node, self.own_port, self.peer_node, self.peer_port, units)
        )

    def ack_unsent(self, frame: bytes) -> None:
        """The owner could not send the ack ``frame`` now (the lane to the peer is full
        of our own data): its units are owed and ride on the next ack. Ack counts are
        increments (tipc_sk_conn_proto_rcv subtracts them): a lost one would shrink the
        peer's window for good."""
        try:
            self.acks_owed += ConnMgrMsg.decode(frame).acked
        except WireError as e:
            raise LocalProtocolError(f"not an ack frame: {e}") from None
        self._acks_sent -= 1

    def flush_owed_ack(self) -> bool:
        """Queue an ack for the owed units, if any (True if one was queued)."""
        if not self.acks_owed or self.state is not State.TIPC_ESTABLISHED:
            return False
        n, self.acks_owed = self.acks_owed, 0
        self._queue_ack(n)
        return True

    def recv_outcome(self, errcode: int) -> str:
        """How recv reports an ending with ``errcode``: "eof" or "reset" (tipc_recvmsg)."""
        return "eof" if errcode == TIPC_CONN_SHUTDOWN else "reset"

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            state=self.state.name,
            snt_unacked=self.snt_unacked,
            rcv_unacked=self.rcv_unacked,
            acks_sent=self._acks_sent,
            acks_received=self._acks_received,
            probes_sent=self._probes_sent,
            probe_replies_sent=self._probe_replies,
            rejected=self._rejected,
            dropped=self._dropped,
            malformed=self._malformed,
        )

    # -- actions (named in TRANSITIONS) -------------------------------------------------
    def _a_nothing(self, inp: _Input) -> None:
        pass

    def _a_start_connect(self, inp: _Input) -> None:
        t = inp.timeout
        self._connect_deadline = None if t is None else inp.now + t

    def _set_peer(self, node: int, port: int, now: float) -> None:
        self.peer_node, self.peer_port = node, port
        self.snt_unacked = 0
        self._connect_deadline = None
        self.probe_unacked = False
        # Within the node the supervisor reports a dead process: no probing there.
        remote = node != self.own_node and bool(self.own_node)
        self._probe_at = now + self.probe_interval if remote else None
        self._emit(ConnectionEstablished(node, port))

    def _a_establish_accepted(self, inp: _Input) -> None:
        self._set_peer(inp.node, inp.port, inp.now)

    def _a_establish(self, inp: _Input) -> None:
        h = inp.hdr
        assert h is not None
        # whoever answered is the peer: no check against the SYN's destination (kernel)
        self._set_peer(h.orig_node, h.orig_port, inp.now)
        if h.data_size:
            self._emit(Delivered(h.orig_node, inp.frame))

    def _a_request(self, inp: _Input) -> None:
        h = inp.hdr
        assert h is not None
        self._emit(ConnectionRequested(h.orig_node, h.orig_port, inp.frame))

    def _a_refuse(self, inp: _Input) -> None:
        h = inp.hdr
        assert h is not None
        self._connect_deadline = None
        self._emit(ConnectionRefused(h.errcode))

    def _a_connect_timed_out(self, inp: _Input) -> None:
        self._connect_deadline = None
        self._emit(ConnectionTimedOut())

    def _a_deliver(self, inp: _Input) -> None:
        self._emit(Delivered(self.peer_node, inp.frame))

    def _a_peer_ended(self, inp: _Input) -> None:
        err = inp.hdr.errcode if inp.hdr is not None else inp.error
        self.peer_error = err
        self._probe_at = None
        self._emit(ConnectionEnded(err, inp.frame))

    def _a_take_ack(self, inp: _Input) -> None:
        self._acks_received += 1
        if inp.acked:
            self.snt_unacked = max(0, self.snt_unacked - inp.acked)
            self._emit(WindowOpened(self.window - self.snt_unacked))

    def _a_reply_probe(self, inp: _Input) -> None:
        self._probe_replies += 1
        self._outbox.append(self._conn_mgr(CONN_PROBE_REPLY))

    def _a_probe(self, inp: _Input) -> None:
        self._probes_sent += 1
        self.probe_unacked = True
        self._probe_at = inp.now + self.probe_interval
        self._outbox.append(self._conn_mgr(CONN_PROBE))

    def _a_abort_unanswered(self, inp: _Input) -> None:
        self.aborted = True
        self._probe_at = None
        self._emit(ConnectionAborted("no answer to CONN_PROBE"))

    def _a_reject(self, inp: _Input) -> None:
        try:
            back = reverse_for_reject(inp.frame, ErrorCode.NO_PORT, self.own_node)
        except (WireError, ValueError):
            back = None
        if back is None:
            self._dropped += 1
            return
        self._rejected += 1
        self._outbox.append(back)

    def _a_send_shutdown(self, inp: _Input) -> None:
        self._end_locally()
        self._outbox.append(self._ending(TIPC_CONN_SHUTDOWN))

    def _a_send_close(self, inp: _Input) -> None:
        self._end_locally()
        self._outbox.append(self._ending(TIPC_ERR_NO_PORT))

    def _a_mark_closed(self, inp: _Input) -> None:
        self._end_locally()

    def _end_locally(self) -> None:
        self.local_shutdown = True
        self._connect_deadline = None
        self._probe_at = None

    # -- frames ------------------------------------------------------------------------
    def _ending(self, error: int) -> bytes:
        return ending_frame(self.own_node, self.own_port, self.peer_port, error)

    def _conn_mgr(self, mtype: int) -> bytes:
        return ConnMgrMsg(
            mtype=mtype,
            orig_node=self.own_node,
            orig_port=self.own_port,
            dest_node=self.peer_node,
            dest_port=self.peer_port,
        ).encode()


_CONN_MANAGER_EVENTS: Final[dict[int, Event]] = {
    CONN_ACK: Event.CONN_ACK,
    CONN_PROBE: Event.CONN_PROBE,
    CONN_PROBE_REPLY: Event.CONN_PROBE_REPLY,
}
_ACTIONS: Final[dict[str, Callable[[Connection, _Input], None]]] = {
    name[3:]: getattr(Connection, name) for name in dir(Connection) if name.startswith("_a_")
}
assert {a for _, a in TRANSITIONS.values()} <= set(_ACTIONS), "an action without a method"


@dataclass(frozen=True, slots=True)
class Incoming:
    """The header fields of a queued message that :class:`Released` looks at."""

    user: int
    mtype: int
    errcode: int
    syn: bool
    orig_node: int
    orig_port: int
    data_len: int
    acked: int = 0  # CONN_ACK: w9[31:16]


class Released:
    """What a connection socket that went away with messages still unread does with each,
    in queue order: :meth:`returns` says whether it goes back to its sender with
    TIPC_ERR_NO_PORT (the caller drops the others), then :attr:`abort_due` whether the peer
    still has to be told with an empty abort.

    For a socket whose owner died: in the kernel every message was handled on arrival
    (tipc_sk_filter_connect) and the socket's release then rejected its queue
    (__tipc_shutdown with TIPC_ERR_NO_PORT). Protocol messages (acks, probes) are never
    returned (tipc_sk_conn_proto_rcv consumed or dropped them). A listener returns every
    data message (its SYNs); a socket without a peer takes the first error-free CONN_MSG as
    the answer to its connect (the connection was established; an answer without data was
    consumed) and returns whatever else came, as an unconnected socket rejects it (an error
    there is taken as the refusal of its connect: the table does not say where its SYN
    went); a connected one returns what did not come from its peer, and of the peer's
    messages the first one with data (that is the abort, carrying it back) while it drops
    the rest; an error from the peer means it ended first and is told nothing. The peer
    recorded in the socket table is anyone's to write: a forged one gets messages its
    connection core drops (:meth:`Connection.receive` accepts nothing from a port that is
    not its peer).
    """

    def __init__(self, *, listening: bool = False, peer_node: int = 0, peer_port: int = 0):
        self.listening = listening
        self.peer_node = peer_node
        self.peer_port = peer_port
        self.answered = False  # the peer got a message of its own back: that ended it
        self.ended = False  # the connection was over before the socket went away

    def returns(self, m: Incoming) -> bool:
        if m.user > _LAST_DATA_USER:
            return False  # protocol messages (acks, probes) are handled, never returned
        if self.listening:
            return True
        if not self.peer_port:
            if m.mtype == CONN_MSG and not m.syn and not m.errcode:
                self.peer_node, self.peer_port = m.orig_node, m.orig_port
                return self._first_data(m)
            if m.errcode:
                self.ended = True  # a refused connect: nothing to answer
                return False
            return True
        if m.orig_port != self.peer_port or m.orig_node != self.peer_node:
            return True
        if m.errcode:
            self.ended = True
            return False
        return self._first_data(m)

    def _first_data(self, m: Incoming) -> bool:
        if m.data_len and not (self.answered or self.ended):
            self.answered = True
            return True
        return False

    @property
    def abort_due(self) -> bool:
        return bool(self.peer_port) and not (self.answered or self.ended)


__all__ = [
    "ACK_EVERY",
    "CONN_PROBING_INTV",
    "FLOWCTL_WIN",
    "LOCAL_EVENTS",
    "TRANSITIONS",
    "Connection",
    "ConnectionStateError",
    "ConnectionStatistics",
    "Event",
    "Incoming",
    "Released",
    "State",
    "ending_frame",
]
