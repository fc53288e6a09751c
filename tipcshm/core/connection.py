"""Sans-IO connection state machine for SOCK_SEQPACKET / SOCK_STREAM sockets.

Theory of operation: mirrors net/tipc/socket.c ``tipc_sk_filter_connect`` (what an
incoming message does to a connection), ``tipc_accept`` / ``tipc_connect`` (the SYN
handshake), ``tipc_sk_conn_proto_rcv`` (CONN_MANAGER: acks, probes), ``tipc_sk_build_ack``
and ``tsk_conn_cong`` (message-based flow control without TIPC_BLOCK_FLOWCTL: window 512
messages, an ack every 128 consumed) and ``__tipc_shutdown`` (what close and shutdown send).

One addition of tipcshm's: a receiver also acks once the messages it consumed since its
last ack add up to ``ack_bytes``. On one node the sender writes into the receiver's ring,
which fills (a 4 MiB ring holds 63 messages of 66,000 bytes) long before a window of 512
messages does; the sender then waits for an ack, and this makes one come whenever a
quarter of the ring was read. An ack only says how many messages were consumed, so
sending one early is within the protocol (a kernel sender takes acks at any time).

A :class:`Connection` never touches a socket, shared memory or a clock. The socket feeds
it decoded header fields (:class:`Incoming`) and asks it what to do; it answers with values
(:class:`Verdict`, :class:`Send`). All transitions are in :data:`TRANSITIONS`, in the
kernel's state names, so the diagram can be generated from that table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

# Message users, types and error codes (numbers from tipc-wire.md 1.3-1.5; the socket
# layer uses tipcshm.wire's enums, which carry the same values).
CONN_MANAGER = 8
CONN_MSG = 0
CONN_PROBE = 0
CONN_PROBE_REPLY = 1
CONN_ACK = 2
TIPC_OK = 0
TIPC_ERR_NO_PORT = 2
TIPC_ERR_OVERLOAD = 4
TIPC_CONN_SHUTDOWN = 5

FLOWCTL_WIN = 512  # messages in flight (FLOWCTL_MSG_WIN without TIPC_BLOCK_FLOWCTL)
ACK_EVERY = FLOWCTL_WIN // 4  # the receiver acks once it consumed this many


class State(IntEnum):
    """The kernel's socket states (include/uapi/linux/tipc.h is silent; socket.c enum)."""

    TIPC_OPEN = 1
    TIPC_LISTEN = 2
    TIPC_CONNECTING = 3
    TIPC_ESTABLISHED = 4
    TIPC_DISCONNECTING = 5


class Event(Enum):
    CONNECT = "connect"  # connect() / implicit connect sent a SYN
    LISTEN = "listen"
    ACCEPTED = "accepted"  # this socket was created by accept() for a SYN
    SYN_ACK = "syn_ack"  # CONNECTING: an error-free CONN_MSG arrived
    REFUSED = "refused"  # CONNECTING: the SYN came back with an error
    PEER_ERROR = "peer_error"  # ESTABLISHED: a message from the peer with an error code
    SHUTDOWN = "shutdown"  # local shutdown()
    CLOSE = "close"  # local close()


S = State
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.TIPC_OPEN, Event.CONNECT): S.TIPC_CONNECTING,
    (S.TIPC_OPEN, Event.LISTEN): S.TIPC_LISTEN,
    (S.TIPC_OPEN, Event.ACCEPTED): S.TIPC_ESTABLISHED,
    (S.TIPC_CONNECTING, Event.SYN_ACK): S.TIPC_ESTABLISHED,
    (S.TIPC_CONNECTING, Event.REFUSED): S.TIPC_DISCONNECTING,
    (S.TIPC_CONNECTING, Event.CLOSE): S.TIPC_DISCONNECTING,
    (S.TIPC_ESTABLISHED, Event.PEER_ERROR): S.TIPC_DISCONNECTING,
    (S.TIPC_ESTABLISHED, Event.SHUTDOWN): S.TIPC_DISCONNECTING,
    (S.TIPC_ESTABLISHED, Event.CLOSE): S.TIPC_DISCONNECTING,
    (S.TIPC_DISCONNECTING, Event.SHUTDOWN): S.TIPC_DISCONNECTING,
    (S.TIPC_DISCONNECTING, Event.CLOSE): S.TIPC_DISCONNECTING,
    (S.TIPC_DISCONNECTING, Event.PEER_ERROR): S.TIPC_DISCONNECTING,
    (S.TIPC_OPEN, Event.CLOSE): S.TIPC_DISCONNECTING,
    (S.TIPC_LISTEN, Event.CLOSE): S.TIPC_DISCONNECTING,
    (S.TIPC_OPEN, Event.SHUTDOWN): S.TIPC_OPEN,  # ENOTCONN, decided by the caller
}


class ConnectionStateError(Exception):
    """A local protocol error: the caller asked for something the state does not allow."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """The header fields of an arriving message that a connection looks at."""

    user: int
    mtype: int
    errcode: int
    syn: bool
    orig_node: int
    orig_port: int
    data_len: int
    acked: int = 0  # CONN_ACK: w9[31:16]


class Verdict(Enum):
    DELIVER = "deliver"  # queue for recv (data, or an error the recv turns into EOF/RESET)
    DROP = "drop"  # not for this connection: ignore
    ESTABLISHED = "established"  # CONNECTING -> ESTABLISHED (deliver it too if it has data)
    REFUSED = "refused"  # connect() fails with ECONNREFUSED
    ACK = "ack"  # window opened (already accounted)
    PROBE = "probe"  # answer with CONN_PROBE_REPLY
    REJECT = "reject"  # return it to its sender with TIPC_ERR_NO_PORT
    NEW_CONNECTION = "new_connection"  # LISTEN: a SYN, for accept()


@dataclass(frozen=True, slots=True)
class Send:
    """A message the socket must send to the peer."""

    user: int
    mtype: int
    errcode: int = 0
    acked: int = 0  # CONN_ACK units


class Connection:
    """One connection endpoint's protocol state (see the module docstring)."""

    def __init__(self, *, window: int = FLOWCTL_WIN, ack_bytes: int = 0) -> None:
        self.state = State.TIPC_OPEN
        self.peer_node = 0
        self.peer_port = 0
        self.window = window
        self.snt_unacked = 0
        self.rcv_unacked = 0
        self.rcv_unacked_bytes = 0
        self.ack_bytes = ack_bytes  # 0: acks by message count only, as the kernel
        self.peer_error = 0  # error code that ended the connection from the far side
        self.local_shutdown = False

    # -- transitions -----------------------------------------------------------------
    def _fire(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise ConnectionStateError(f"{event.value} in state {self.state.name}") from None

    def listen(self) -> None:
        self._fire(Event.LISTEN)

    def connect(self) -> None:
        self._fire(Event.CONNECT)

    def accepted(self, peer_node: int, peer_port: int) -> None:
        self._fire(Event.ACCEPTED)
        self.peer_node, self.peer_port = peer_node, peer_port

    @property
    def connected(self) -> bool:
        return self.state == State.TIPC_ESTABLISHED

    # -- incoming ----------------------------------------------------------------------
    def receive(self, m: Incoming) -> Verdict:
        """What an arriving message means (tipc_sk_filter_connect + conn_proto_rcv)."""
        st = self.state
        if st == State.TIPC_LISTEN:
            if m.user <= 3 and m.syn and not m.errcode:
                return Verdict.NEW_CONNECTION
            return Verdict.DROP if m.errcode else Verdict.REJECT
        if st == State.TIPC_CONNECTING:
            if m.user > 3:
                return Verdict.DROP
            if m.errcode:
                self._fire(Event.REFUSED)
                return Verdict.REFUSED
            if m.mtype != CONN_MSG:
                return Verdict.DROP
            self._fire(Event.SYN_ACK)
            self.peer_node, self.peer_port = m.orig_node, m.orig_port
            return Verdict.ESTABLISHED
        if st in (State.TIPC_ESTABLISHED, State.TIPC_DISCONNECTING):
            if m.orig_port != self.peer_port or m.orig_node != self.peer_node:
                return Verdict.DROP if m.errcode or m.user > 3 else Verdict.REJECT
            if st == State.TIPC_DISCONNECTING:
                # tipcshm's supervisor ends a dead process's connections from its own
                # lane, so that ending can overtake data the process wrote before it died
                # (the kernel's abort queues behind it). A closed port never sends again,
                # so data from the peer after its ending is such data: still delivered.
                if self.peer_error and m.user <= 3 and not m.errcode and not m.syn:
                    return Verdict.DELIVER
                return Verdict.DROP  # the connection is over: nothing more counts
            if m.user == CONN_MANAGER:
                if m.errcode:
                    self._peer_failed(m.errcode)
                    return Verdict.DELIVER
                if m.mtype == CONN_ACK:
                    self.snt_unacked = max(0, self.snt_unacked - m.acked)
                    return Verdict.ACK
                if m.mtype == CONN_PROBE:
                    return Verdict.PROBE
                return Verdict.DROP
            if m.user > 3:
                return Verdict.DROP
            if m.errcode:
                self._peer_failed(m.errcode)
            return Verdict.DELIVER
        return Verdict.DROP if m.errcode else Verdict.REJECT

    def _peer_failed(self, err: int) -> None:
        self._fire(Event.PEER_ERROR)
        self.peer_error = err

    # -- flow control ------------------------------------------------------------------
    @property
    def congested(self) -> bool:
        """tsk_conn_cong: the sender must wait for an ack before the next message."""
        return self.snt_unacked >= self.window

    def sent(self, units: int = 1) -> None:
        self.snt_unacked += units

    def consumed(self, units: int = 1, nbytes: int = 0) -> Send | None:
        """``units`` messages of ``nbytes`` in all were read by the application; maybe an
        ack is due (tipc_sk_build_ack; ``ack_bytes`` in the module docstring)."""
        self.rcv_unacked += units
        self.rcv_unacked_bytes += nbytes
        if (
            self.rcv_unacked >= ACK_EVERY
            or (self.ack_bytes and self.rcv_unacked_bytes >= self.ack_bytes)
        ) and self.state == State.TIPC_ESTABLISHED:
            n, self.rcv_unacked = self.rcv_unacked, 0
            self.rcv_unacked_bytes = 0
            return Send(CONN_MANAGER, CONN_ACK, acked=n)
        return None

    # -- ending ------------------------------------------------------------------------
    def shutdown(self) -> Send | None:
        """shutdown(): tell an established peer TIPC_CONN_SHUTDOWN (it reads EOF)."""
        was = self.state
        self._fire(Event.SHUTDOWN)
        self.local_shutdown = True
        if was == State.TIPC_ESTABLISHED:
            return Send(3, CONN_MSG, TIPC_CONN_SHUTDOWN)
        return None

    def close(self) -> Send | None:
        """close(): an established peer gets TIPC_ERR_NO_PORT (it reads ECONNRESET)."""
        was = self.state
        self._fire(Event.CLOSE)
        self.local_shutdown = True
        if was == State.TIPC_ESTABLISHED:
            return Send(3, CONN_MSG, TIPC_ERR_NO_PORT)
        return None

    def recv_outcome(self, errcode: int) -> str:
        """How recv reports a queued error message: "eof" or "reset" (tipc_recvmsg)."""
        return "eof" if errcode == TIPC_CONN_SHUTDOWN else "reset"


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
    recorded in the
    socket table is anyone's to write: a forged one gets messages its connection core
    drops (:meth:`Connection.receive` accepts nothing from a port that is not its peer).
    """

    def __init__(self, *, listening: bool = False, peer_node: int = 0, peer_port: int = 0):
        self.listening = listening
        self.peer_node = peer_node
        self.peer_port = peer_port
        self.answered = False  # the peer got a message of its own back: that ended it
        self.ended = False  # the connection was over before the socket went away

    def returns(self, m: Incoming) -> bool:
        if m.user > 3:
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
    "FLOWCTL_WIN",
    "TRANSITIONS",
    "Connection",
    "ConnectionStateError",
    "Event",
    "Incoming",
    "Released",
    "Send",
    "State",
    "Verdict",
]
