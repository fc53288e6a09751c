"""The sans-IO connection core (tipcshm.core.connection): no node, no processes, no clock."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tipcshm import wire
from tipcshm.core import connection as cc
from tipcshm.core import events as ev
from tipcshm.core.connection import (
    ACK_EVERY,
    CONN_PROBING_INTV,
    FLOWCTL_WIN,
    TRANSITIONS,
    Connection,
    ConnectionStateError,
    Event,
    State,
)
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.wire.connmgr import ConnMgrMsg

OWN = (0x1001, 55)
PEER = (0x1001, 77)  # same node: no probing
REMOTE = (0x2002, 88)  # another node: probed


def msg(
    errcode: int = 0,
    *,
    node: int = PEER[0],
    port: int = PEER[1],
    syn: bool = False,
    user: int = 0,
    mtype: int = wire.DataType.CONN_MSG,
    data: bytes = b"hello",
    hsize: int = wire.SHORT_H_SIZE,
) -> bytes:
    h = wire.Header(
        user=user,
        hsize=hsize,
        size=hsize + len(data),
        syn=syn,
        mtype=mtype,
        errcode=errcode,
        prev_node=node,
        orig_port=port,
        dest_port=OWN[1],
        orig_node=node,
        dest_node=OWN[0] if hsize > 28 else 0,
    )
    return wire.encode_header(h) + data


def cmgr(mtype: int, *, acked: int = 0, errcode: int = 0, peer: tuple[int, int] = PEER) -> bytes:
    return ConnMgrMsg(
        mtype, peer[0], peer[1], OWN[0], OWN[1], acked=acked, errcode=errcode
    ).encode()


def events(c: Connection) -> list[ev.CoreEvent]:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def new() -> Connection:
    return Connection(own_node=OWN[0], own_port=OWN[1], ack_bytes=0)


def established(peer: tuple[int, int] = PEER, ack_bytes: int = 0, now: float = 0.0) -> Connection:
    c = Connection(own_node=OWN[0], own_port=OWN[1], ack_bytes=ack_bytes)
    c.connect(now, 8.0)
    c.receive(msg(node=peer[0], port=peer[1], data=b""), now)
    assert events(c) == [ev.ConnectionEstablished(*peer)]
    return c


def test_core_imports_only_pure_modules() -> None:
    tree = ast.parse(pathlib.Path(cc.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    for name in names:
        top = name.split(".")[0]
        assert top in {"__future__", "collections", "dataclasses", "enum", "typing"} or (
            name.startswith(("tipcshm.core", "tipcshm.wire"))
        ), name


def test_handshake_client_side() -> None:
    c = new()
    assert c.state is State.TIPC_OPEN
    c.connect(10.0, 8.0)
    assert c.state is State.TIPC_CONNECTING and c.next_timer() == 18.0
    c.receive(cmgr(wire.ConnMgrType.CONN_ACK), 10.5)  # not an answer: dropped
    assert events(c) == [] and c.state is State.TIPC_CONNECTING
    c.receive(msg(node=9, port=5, data=b"first"), 11.0)
    got = events(c)
    assert got[0] == ev.ConnectionEstablished(9, 5)  # whoever answered (kernel)
    assert isinstance(got[1], ev.Delivered) and got[1].frame.endswith(b"first")
    assert (c.peer_node, c.peer_port) == (9, 5) and c.connected
    # the connect timer is off; node 9 is another node: its probe timer runs
    assert c.next_timer() == 11.0 + CONN_PROBING_INTV
    assert c.frames_to_send(11.0) == []


def test_connect_timeout_is_driven_by_now() -> None:
    c = new()
    c.connect(0.0, 2.0)
    c.handle_timer(1.999)
    assert events(c) == []
    c.handle_timer(2.0)
    assert events(c) == [ev.ConnectionTimedOut()]
    assert c.state is State.TIPC_CONNECTING and c.next_timer() is None  # still pending
    c.set_connect_timeout(5.0, 1.0)
    assert c.next_timer() == 6.0
    c.receive(msg(data=b""), 5.5)  # the answer came late: it still connects
    assert events(c) == [ev.ConnectionEstablished(*PEER)]
    with pytest.raises(ConnectionStateError):
        c.set_connect_timeout(6.0, 1.0)


def test_refused() -> None:
    c = new()
    c.connect(0.0, 8.0)
    c.receive(msg(wire.ErrorCode.NO_PORT, syn=True, data=b""), 1.0)
    assert events(c) == [ev.ConnectionRefused(wire.ErrorCode.NO_PORT)]
    assert c.state is State.TIPC_DISCONNECTING and c.next_timer() is None
    with pytest.raises(ConnectionStateError):
        c.connect(1.0)
    assert issubclass(ConnectionStateError, LocalProtocolError)


def test_listen_and_connect_only_from_open() -> None:
    c = new()
    c.listen()
    with pytest.raises(ConnectionStateError):
        c.listen()
    with pytest.raises(ConnectionStateError):
        c.connect(0.0)
    c2 = new()
    c2.connect(0.0)
    with pytest.raises(ConnectionStateError):
        c2.connect(0.0)


def test_listener_takes_syns_and_rejects_the_rest() -> None:
    c = new()
    c.listen()
    syn = msg(syn=True, mtype=wire.DataType.DIRECT_MSG, hsize=wire.BASIC_H_SIZE)
    c.receive(syn, 0.0)
    assert events(c) == [ev.ConnectionRequested(PEER[0], PEER[1], syn)]
    stray = msg(mtype=wire.DataType.DIRECT_MSG, hsize=wire.BASIC_H_SIZE, port=99)
    c.receive(stray, 0.0)
    assert events(c) == []
    (back,) = c.frames_to_send(0.0)
    h = wire.decode_header(back)
    assert (h.errcode, h.dest_port, h.orig_port) == (wire.ErrorCode.NO_PORT, 99, OWN[1])
    c.receive(msg(wire.ErrorCode.NO_PORT, syn=True), 0.0)  # an error: never answered
    assert c.frames_to_send(0.0) == [] and events(c) == []
    assert c.statistics().rejected == 1


def test_accepted_endpoint() -> None:
    a = new()
    a.accepted(*PEER, now=3.0)
    assert a.connected and (a.peer_node, a.peer_port) == PEER
    assert events(a) == [ev.ConnectionEstablished(*PEER)]
    a.sent(1)
    a.answered_syn()  # the empty answer to the SYN never comes back in an ack
    assert a.snt_unacked == 0


def test_established_checks_the_peer() -> None:
    c = established()
    c.receive(msg(), 0.0)
    (d,) = events(c)
    assert isinstance(d, ev.Delivered) and d.source == PEER[0]
    c.receive(msg(port=78), 0.0)  # not the peer: returned to its sender
    c.receive(msg(node=0x1002), 0.0)
    assert len(c.frames_to_send(0.0)) == 2 and events(c) == []
    c.receive(msg(wire.ErrorCode.NO_PORT, port=78), 0.0)  # errors are never returned
    c.receive(cmgr(wire.ConnMgrType.CONN_PROBE, peer=(PEER[0], 78)), 0.0)  # not the peer
    assert c.frames_to_send(0.0) == [] and c.connected


@pytest.mark.parametrize(
    ("err", "outcome"),
    [(wire.ErrorCode.NO_PORT, "reset"), (wire.ErrorCode.CONN_SHUTDOWN, "eof")],
)
def test_peer_error_ends_the_connection(err: int, outcome: str) -> None:
    c = established()
    end = msg(err, user=3, data=b"")
    c.receive(end, 0.0)
    assert events(c) == [ev.ConnectionEnded(err, end)]
    assert c.state is State.TIPC_DISCONNECTING and c.peer_error == err
    assert c.recv_outcome(err) == outcome
    # Data from the peer the ending overtook (supervisor's abort of a dead process)
    # still counts; a second ending does not; strangers are still answered.
    c.receive(msg(), 0.0)
    assert [type(e) for e in events(c)] == [ev.Delivered]
    c.receive(msg(wire.ErrorCode.NO_PORT), 0.0)
    assert events(c) == []
    c.receive(msg(port=78), 0.0)
    assert len(c.frames_to_send(0.0)) == 1


def test_after_local_shutdown_nothing_counts() -> None:
    c = established()
    c.shutdown(0.0)
    (sd,) = c.frames_to_send(0.0)
    h = wire.decode_header(sd)
    assert (h.user, h.hsize, h.errcode, h.dest_port) == (
        wire.User.CRITICAL_IMPORTANCE,
        wire.SHORT_H_SIZE,
        wire.ErrorCode.CONN_SHUTDOWN,
        PEER[1],
    )
    c.receive(msg(), 0.0)
    c.receive(msg(wire.ErrorCode.NO_PORT), 0.0)
    assert events(c) == [] and c.local_shutdown
    c.close(0.0)
    assert c.frames_to_send(0.0) == []  # already told


def test_close_messages() -> None:
    d = established()
    d.close(0.0)
    (cl,) = d.frames_to_send(0.0)
    assert cl == cc.ending_frame(OWN[0], OWN[1], PEER[1], wire.ErrorCode.NO_PORT)
    e = new()
    e.close(0.0)
    assert e.frames_to_send(0.0) == [] and e.state is State.TIPC_DISCONNECTING


def test_owner_reported_loss() -> None:
    c = established()
    c.abort(wire.ErrorCode.NO_NODE, 1.0)
    assert events(c) == [ev.ConnectionEnded(wire.ErrorCode.NO_NODE)]
    assert c.peer_error == wire.ErrorCode.NO_NODE and c.frames_to_send(1.0) == []
    c.abort(wire.ErrorCode.NO_PORT, 2.0)  # already over: nothing
    assert events(c) == []
    with pytest.raises(ConnectionStateError):
        new().abort()


def test_conn_acks_open_the_window() -> None:
    c = established()
    for _ in range(FLOWCTL_WIN):
        assert not c.congested
        c.sent()
    assert c.congested
    c.receive(cmgr(wire.ConnMgrType.CONN_ACK, acked=ACK_EVERY), 0.0)
    assert events(c) == [ev.WindowOpened(ACK_EVERY)]
    assert not c.congested and c.snt_unacked == FLOWCTL_WIN - ACK_EVERY
    c.receive(cmgr(wire.ConnMgrType.CONN_ACK, acked=0xFFFF), 0.0)
    assert c.snt_unacked == 0  # never negative
    c.receive(cmgr(wire.ConnMgrType.CONN_PROBE), 0.0)
    (reply,) = c.frames_to_send(0.0)
    r = ConnMgrMsg.decode(reply)
    assert (r.mtype, r.orig_port, r.dest_port) == (
        wire.ConnMgrType.CONN_PROBE_REPLY,
        *OWN[1:],
        PEER[1],
    )
    c.receive(cmgr(wire.ConnMgrType.CONN_ACK, errcode=wire.ErrorCode.NO_PORT), 0.0)
    assert c.state is State.TIPC_DISCONNECTING
    assert events(c)[-1] == ev.ConnectionEnded(
        wire.ErrorCode.NO_PORT, cmgr(wire.ConnMgrType.CONN_ACK, errcode=wire.ErrorCode.NO_PORT)
    )


def test_receiver_acks_every_128() -> None:
    c = established()
    due = [c.consumed() for _ in range(3 * ACK_EVERY)]
    assert due.count(True) == 3 and due[ACK_EVERY - 1] and not due[ACK_EVERY - 2]
    acks = [ConnMgrMsg.decode(f) for f in c.frames_to_send(0.0)]
    assert [(a.mtype, a.acked) for a in acks] == [(wire.ConnMgrType.CONN_ACK, ACK_EVERY)] * 3
    assert all((a.orig_port, a.dest_node, a.dest_port) == (OWN[1], *PEER) for a in acks)


def test_receiver_also_acks_per_ack_bytes() -> None:
    """tipcshm's addition: an ack once the consumed bytes reach ack_bytes (the sender
    waits on the receiver's ring, which fills before the message window); it still
    counts messages, and the message rule still holds."""
    c = established(ack_bytes=1000)
    assert not c.consumed(1, 600)
    assert c.consumed(2, 400)
    assert ConnMgrMsg.decode(c.frames_to_send(0.0)[0]).acked == 3
    assert not c.consumed(1, 999)
    due = [c.consumed(1, 0) for _ in range(ACK_EVERY - 1)]
    assert due[-1] and ConnMgrMsg.decode(c.frames_to_send(0.0)[0]).acked == ACK_EVERY
    assert not c.consumed(1, 1)  # both counts started again at that ack
    plain = established()  # ack_bytes 0: by messages only, as the kernel
    assert not any(plain.consumed(1, 10**9) for _ in range(ACK_EVERY - 1))


def test_an_unsent_ack_is_owed_not_lost() -> None:
    c = established()
    for _ in range(ACK_EVERY):
        c.consumed()
    (ack,) = c.frames_to_send(0.0)
    c.ack_unsent(ack)
    assert c.acks_owed == ACK_EVERY
    assert c.flush_owed_ack()
    assert ConnMgrMsg.decode(c.frames_to_send(0.0)[0]).acked == ACK_EVERY
    assert not c.flush_owed_ack()
    c.ack_unsent(ack)
    for _ in range(ACK_EVERY):
        c.consumed()
    assert ConnMgrMsg.decode(c.frames_to_send(0.0)[0]).acked == 2 * ACK_EVERY
    with pytest.raises(LocalProtocolError):
        c.ack_unsent(b"junk")


def test_local_connections_are_not_probed() -> None:
    c = established(PEER)
    assert c.next_timer() is None


def test_probe_supervision_of_a_remote_peer() -> None:
    c = established(REMOTE, now=100.0)
    assert c.next_timer() == 100.0 + CONN_PROBING_INTV
    c.handle_timer(100.0 + CONN_PROBING_INTV - 0.001)
    assert c.frames_to_send(0.0) == []
    t1 = 100.0 + CONN_PROBING_INTV
    c.handle_timer(t1)
    (probe,) = c.frames_to_send(t1)
    p = ConnMgrMsg.decode(probe)
    assert (p.mtype, p.dest_node, p.dest_port) == (wire.ConnMgrType.CONN_PROBE, *REMOTE)
    # any CONN_MANAGER message from the peer answers it (here an ack)
    c.receive(cmgr(wire.ConnMgrType.CONN_ACK, peer=REMOTE), t1 + 1)
    t2 = t1 + CONN_PROBING_INTV
    assert c.next_timer() == t2
    c.handle_timer(t2)
    assert len(c.frames_to_send(t2)) == 1 and c.connected  # answered: probe again
    c.receive(msg(node=REMOTE[0], port=REMOTE[1]), t2 + 1)  # data is not an answer
    t3 = t2 + CONN_PROBING_INTV
    c.handle_timer(t3)
    assert events(c)[-1] == ev.ConnectionAborted("no answer to CONN_PROBE")
    assert c.state is State.TIPC_DISCONNECTING and c.aborted and c.next_timer() is None
    assert c.frames_to_send(t3) == []


def test_probe_reply_answers_too() -> None:
    c = established(REMOTE)
    c.handle_timer(CONN_PROBING_INTV)
    c.frames_to_send(0.0)
    c.receive(cmgr(wire.ConnMgrType.CONN_PROBE_REPLY, peer=REMOTE), CONN_PROBING_INTV + 1)
    c.handle_timer(2 * CONN_PROBING_INTV)
    assert c.connected and c.statistics().probes_sent == 2


def test_malformed_frames_raise_remote_errors_and_change_nothing() -> None:
    c = established()
    before = (c.state, c.snt_unacked, c.peer_error)
    for junk in (b"", b"\x00" * 10, msg()[:-1], b"\xff" * 40, cmgr(0)[:39]):
        with pytest.raises(RemoteProtocolError):
            c.receive(junk, 0.0)
    assert (c.state, c.snt_unacked, c.peer_error) == before
    assert events(c) == [] and c.statistics().malformed == 5


def test_transition_table_uses_kernel_names_and_drives_the_fsm() -> None:
    assert all(s.name.startswith("TIPC_") for s, _ in TRANSITIONS)
    assert all(nxt in State for nxt, _ in TRANSITIONS.values())
    # every action the table names exists; every local event has an entry from OPEN or
    # from the state it is meant for
    for _nxt, action in TRANSITIONS.values():
        assert callable(getattr(Connection, f"_a_{action}"))
    assert (State.TIPC_CONNECTING, Event.CONNECT_TIMEOUT) in TRANSITIONS


def test_the_table_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing an entry changes the behaviour: the table is not only a check."""
    table = dict(TRANSITIONS)
    table[(State.TIPC_ESTABLISHED, Event.DATA)] = (State.TIPC_DISCONNECTING, "nothing")
    monkeypatch.setattr(cc, "TRANSITIONS", table)
    c = established()
    c.receive(msg(), 0.0)
    assert events(c) == [] and c.state is State.TIPC_DISCONNECTING


# -- properties ----------------------------------------------------------------------

frames = st.one_of(
    st.binary(max_size=64),
    st.builds(
        msg,
        st.integers(0, 15),
        node=st.sampled_from([PEER[0], REMOTE[0], 5]),
        port=st.sampled_from([PEER[1], REMOTE[1], 6]),
        syn=st.booleans(),
        user=st.integers(0, 15),
        mtype=st.integers(0, 7),
        data=st.binary(max_size=8),
        hsize=st.sampled_from([24, 32, 40, 44]),
    ),
    st.builds(
        cmgr,
        st.integers(0, 7),
        acked=st.integers(0, 0xFFFF),
        errcode=st.integers(0, 15),
        peer=st.sampled_from([PEER, REMOTE]),
    ),
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(frames, st.floats(0, 3 * CONN_PROBING_INTV)), max_size=30),
    st.sampled_from(["open", "listen", "connecting", "established", "remote"]),
)
def test_any_frame_gives_an_outcome_or_a_remote_error(
    seq: list[tuple[bytes, float]], start: str
) -> None:
    """Garbage in: events, frames to send or RemoteProtocolError (state unchanged),
    nothing else; the window never goes negative; every frame out is a valid message."""
    c = new()
    if start == "listen":
        c.listen()
    elif start == "connecting":
        c.connect(0.0, 8.0)
    elif start == "established":
        c.accepted(*PEER)
    elif start == "remote":
        c.accepted(*REMOTE)
    now = 0.0
    for frame, dt in seq:
        now += dt
        before = (c.state, c.snt_unacked, c.peer_node, c.peer_port, c.peer_error)
        try:
            c.receive(frame, now)
        except RemoteProtocolError:
            assert (c.state, c.snt_unacked, c.peer_node, c.peer_port, c.peer_error) == before
        c.handle_timer(now)
        assert c.snt_unacked >= 0 and c.state in State
        for out in c.frames_to_send(now):
            wire.validate_msg(out)
        for e in events(c):
            assert isinstance(e, ev.CoreEvent)


class ConnectionPair(RuleBasedStateMachine):
    """Two endpoints wired together through their outboxes, driven by `now` only."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.a = Connection(own_node=0x1001, own_port=1)
        self.b = Connection(own_node=0x2002, own_port=2)
        self.a.accepted(0x2002, 2)
        self.b.accepted(0x1001, 1)
        events(self.a)
        events(self.b)
        self.in_flight = 0  # a -> b data messages sent, not yet consumed
        self.consumed_total = 0

    def _exchange(self) -> None:
        for _ in range(4):
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                for f in src.frames_to_send(self.now):
                    dst.receive(f, self.now)

    @precondition(lambda self: self.a.connected and not self.a.congested)
    @rule()
    def a_sends(self) -> None:
        self.a.sent()
        self.in_flight += 1

    @precondition(lambda self: self.in_flight > 0 and self.b.connected)
    @rule(k=st.integers(1, 200))
    def b_consumes(self, k: int) -> None:
        k = min(k, self.in_flight)
        self.in_flight -= k
        self.b.consumed(k)
        self._exchange()

    @rule(dt=st.floats(0, 2 * CONN_PROBING_INTV))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.a.handle_timer(self.now)
        self.b.handle_timer(self.now)
        self._exchange()

    @invariant()
    def window_accounts_for_every_message(self) -> None:
        # what a still counts unacked is what b has not acked yet: in flight or
        # consumed and waiting for the next ack (fewer than ACK_EVERY)
        if self.a.connected and self.b.connected:
            assert self.a.snt_unacked == self.in_flight + self.b.rcv_unacked
            assert self.b.rcv_unacked < ACK_EVERY

    @invariant()
    def answered_probes_never_abort(self) -> None:
        assert not self.a.aborted and not self.b.aborted


TestConnectionPair = ConnectionPair.TestCase
TestConnectionPair.settings = settings(max_examples=50, stateful_step_count=40)
