"""The sans-IO connection core (tipcshm.core.connection): no node, no processes."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipcshm.core import connection as cc
from tipcshm.core.connection import (
    ACK_EVERY,
    FLOWCTL_WIN,
    TRANSITIONS,
    Connection,
    ConnectionStateError,
    Incoming,
    Send,
    State,
    Verdict,
)

PEER = (0x1001, 77)


def data(
    errcode: int = 0,
    *,
    port: int = PEER[1],
    node: int = PEER[0],
    syn: bool = False,
    user: int = 0,
    mtype: int = cc.CONN_MSG,
    n: int = 5,
    acked: int = 0,
) -> Incoming:
    return Incoming(user, mtype, errcode, syn, node, port, n, acked)


def established(ack_bytes: int = 0) -> Connection:
    c = Connection(ack_bytes=ack_bytes)
    c.connect()
    assert c.receive(data(n=0)) is Verdict.ESTABLISHED
    return c


def test_core_imports_no_io() -> None:
    tree = ast.parse(pathlib.Path(cc.__file__).read_text())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    assert not names & {"socket", "posix_ipc", "time", "os", "tipcshm"}


def test_handshake_client_side() -> None:
    c = Connection()
    assert c.state is State.TIPC_OPEN
    c.connect()
    assert c.state is State.TIPC_CONNECTING
    assert c.receive(data(user=cc.CONN_MANAGER, mtype=cc.CONN_ACK)) is Verdict.DROP
    assert c.receive(data(n=0, port=5, node=9)) is Verdict.ESTABLISHED
    assert (c.peer_node, c.peer_port) == (9, 5)  # whoever answered: no check (kernel)
    assert c.connected


def test_refused() -> None:
    c = Connection()
    c.connect()
    assert c.receive(data(cc.TIPC_ERR_NO_PORT)) is Verdict.REFUSED
    assert c.state is State.TIPC_DISCONNECTING
    with pytest.raises(ConnectionStateError):
        c.connect()


def test_listen_and_connect_only_from_open() -> None:
    """tipc_set_sk_state: LISTEN and CONNECTING are entered from OPEN only (a second
    listen() is EINVAL); a connect that timed out stays CONNECTING (no event here)."""
    c = Connection()
    c.listen()
    with pytest.raises(ConnectionStateError):
        c.listen()
    c2 = Connection()
    c2.connect()
    with pytest.raises(ConnectionStateError):
        c2.connect()
    assert c2.receive(data(n=0)) is Verdict.ESTABLISHED


def test_listener_takes_syns_and_rejects_the_rest() -> None:
    c = Connection()
    c.listen()
    assert c.receive(data(syn=True)) is Verdict.NEW_CONNECTION
    assert c.receive(data()) is Verdict.REJECT
    assert c.receive(data(cc.TIPC_ERR_NO_PORT, syn=True)) is Verdict.DROP
    a = Connection()
    a.accepted(*PEER)
    assert a.connected and (a.peer_node, a.peer_port) == PEER


def test_established_checks_the_peer() -> None:
    c = established()
    assert c.receive(data()) is Verdict.DELIVER
    assert c.receive(data(port=78)) is Verdict.REJECT
    assert c.receive(data(node=0x1002)) is Verdict.REJECT
    assert c.receive(data(cc.TIPC_ERR_NO_PORT, port=78)) is Verdict.DROP
    assert c.connected


@pytest.mark.parametrize(
    ("err", "outcome"), [(cc.TIPC_ERR_NO_PORT, "reset"), (cc.TIPC_CONN_SHUTDOWN, "eof")]
)
def test_peer_error_ends_the_connection(err: int, outcome: str) -> None:
    c = established()
    assert c.receive(data(err)) is Verdict.DELIVER  # queued: recv reports it in order
    assert c.state is State.TIPC_DISCONNECTING and c.peer_error == err
    assert c.recv_outcome(err) == outcome
    # Data from the peer the ending overtook (supervisor's abort of a dead process)
    # still counts; a second ending and SYNs do not.
    assert c.receive(data()) is Verdict.DELIVER
    assert c.receive(data(cc.TIPC_ERR_NO_PORT)) is Verdict.DROP
    assert c.receive(data(port=78)) is Verdict.REJECT


def test_after_local_shutdown_nothing_counts() -> None:
    c = established()
    assert c.shutdown() is not None
    assert c.receive(data()) is Verdict.DROP
    assert c.receive(data(cc.TIPC_ERR_NO_PORT)) is Verdict.DROP


def test_conn_manager_messages() -> None:
    c = established()
    for _ in range(FLOWCTL_WIN):
        assert not c.congested
        c.sent()
    assert c.congested
    ack = data(user=cc.CONN_MANAGER, mtype=cc.CONN_ACK, acked=ACK_EVERY)
    assert c.receive(ack) is Verdict.ACK
    assert not c.congested and c.snt_unacked == FLOWCTL_WIN - ACK_EVERY
    assert c.receive(data(user=cc.CONN_MANAGER, mtype=cc.CONN_PROBE)) is Verdict.PROBE
    assert c.receive(data(cc.TIPC_ERR_NO_PORT, user=cc.CONN_MANAGER)) is Verdict.DELIVER
    assert c.state is State.TIPC_DISCONNECTING


def test_receiver_acks_every_128() -> None:
    c = established()
    acks = [c.consumed() for _ in range(3 * ACK_EVERY)]
    sent = [a for a in acks if a is not None]
    assert sent == [Send(cc.CONN_MANAGER, cc.CONN_ACK, acked=ACK_EVERY)] * 3
    assert acks[ACK_EVERY - 1] is not None and acks[ACK_EVERY - 2] is None


def test_receiver_also_acks_per_ack_bytes() -> None:
    """tipcshm's addition: an ack once the consumed bytes reach ack_bytes (the sender
    waits on the receiver's ring, which fills before the message window); it still
    counts messages, and the message rule still holds."""
    c = established(ack_bytes=1000)
    assert c.consumed(1, 600) is None
    assert c.consumed(2, 400) == Send(cc.CONN_MANAGER, cc.CONN_ACK, acked=3)
    assert c.consumed(1, 999) is None
    acks = [c.consumed(1, 0) for _ in range(ACK_EVERY - 1)]
    assert acks[-1] == Send(cc.CONN_MANAGER, cc.CONN_ACK, acked=ACK_EVERY)
    assert c.consumed(1, 1) is None  # both counts started again at that ack
    plain = established()  # ack_bytes 0: by messages only, as the kernel
    assert all(plain.consumed(1, 10**9) is None for _ in range(ACK_EVERY - 1))


def test_close_and_shutdown_messages() -> None:
    c = established()
    assert c.shutdown() == Send(3, cc.CONN_MSG, cc.TIPC_CONN_SHUTDOWN)
    assert c.close() is None  # already told
    d = established()
    assert d.close() == Send(3, cc.CONN_MSG, cc.TIPC_ERR_NO_PORT)
    e = Connection()
    assert e.close() is None


def test_transition_table_uses_kernel_names() -> None:
    assert all(s.name.startswith("TIPC_") for pair in TRANSITIONS for s in pair[:1])
    assert {v for v in TRANSITIONS.values()} <= set(State)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 15),
            st.integers(0, 7),
            st.integers(0, 15),
            st.booleans(),
            st.sampled_from([PEER[0], 5]),
            st.sampled_from([PEER[1], 6]),
            st.integers(0, 66000),
            st.integers(0, 0xFFFF),
        ),
        max_size=40,
    ),
    st.sampled_from(["open", "listen", "connecting", "established"]),
)
def test_any_message_gives_a_verdict(msgs: list[tuple], start: str) -> None:
    """Garbage in: a verdict out, never an exception, and the window never goes negative."""
    c = Connection()
    if start == "listen":
        c.listen()
    elif start == "connecting":
        c.connect()
    elif start == "established":
        c.accepted(*PEER)
    for m in msgs:
        v = c.receive(Incoming(*m))
        assert isinstance(v, Verdict)
        assert c.snt_unacked >= 0
        assert c.state in State


# -- Released: a dead socket's unread queue (tipc_release -> __tipc_shutdown) ----------
def test_released_listener_returns_every_syn() -> None:
    r = cc.Released(listening=True)
    assert all(r.returns(data(syn=True, port=p)) for p in (5, 6, 7))
    assert not r.returns(data(user=cc.CONN_MANAGER, mtype=cc.CONN_PROBE, port=8))
    assert not r.abort_due


def test_released_connected_socket_returns_the_first_data_from_its_peer() -> None:
    r = cc.Released(peer_node=PEER[0], peer_port=PEER[1])
    assert not r.returns(data(user=cc.CONN_MANAGER, mtype=cc.CONN_ACK, n=0))  # handled
    assert r.returns(data(port=99))  # not from the peer: rejected as on arrival
    assert not r.returns(data(user=cc.CONN_MANAGER, mtype=cc.CONN_PROBE, port=99))
    assert r.returns(data())  # the peer's first message carries the abort back
    assert not r.returns(data())  # the rest is purged
    assert not r.abort_due


def test_released_connected_socket_without_data_aborts_its_peer() -> None:
    r = cc.Released(peer_node=PEER[0], peer_port=PEER[1])
    assert r.abort_due
    assert not r.returns(data(n=0))
    assert r.abort_due


def test_released_socket_whose_peer_ended_first_tells_nobody() -> None:
    r = cc.Released(peer_node=PEER[0], peer_port=PEER[1])
    assert not r.returns(data(errcode=cc.TIPC_CONN_SHUTDOWN, n=0))
    assert not r.returns(data())
    assert not r.abort_due


def test_released_connecting_socket_takes_the_answer_as_its_peer() -> None:
    r = cc.Released()
    assert r.returns(data(syn=True, port=5))  # a SYN to a socket that does not listen
    assert not r.returns(data(n=0))  # the accept's answer: consumed, now connected
    assert (r.peer_node, r.peer_port) == PEER
    assert r.abort_due
    refused = cc.Released()
    assert not refused.returns(data(errcode=cc.TIPC_ERR_NO_PORT, syn=True, n=0))
    assert not refused.abort_due
