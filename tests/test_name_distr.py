"""Tests for tipcshm.core.name_distr: bulk, incremental updates, ordering, node loss.

Distributors are wired back to back: what one puts in its outbox for a peer is handed to
that peer's ``receive`` (the in-order link the real stack would use).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import Published, Withdrawn
from tipcshm.core.name_distr import NODE_STATE_TYPE, NameDistributor
from tipcshm.wire import NameDistrType, User, WireError, decode_header
from tipcshm.wire.names import DistrItem, NameDistrMsg

A, B, C = 0x1001, 0x2002, 0x3003
VM1 = 0xC000020B
VM2 = 0xC000020C


def _events(d: NameDistributor) -> list[object]:
    out = []
    while (ev := d.next_event()) is not None:
        out.append(ev)
    return out


def _deliver(nodes: dict[int, NameDistributor], src: int) -> int:
    """Move src's outbox to the addressees; returns how many messages moved."""
    moved = 0
    for dest, frame in nodes[src].frames_to_send(0.0):
        assert decode_header(frame).dest_node == dest
        if dest in nodes:
            nodes[dest].receive(frame, 0.0, source=src)
            moved += 1
    return moved


def _settle(nodes: dict[int, NameDistributor]) -> None:
    while sum(_deliver(nodes, n) for n in list(nodes)):
        pass


def _view(d: NameDistributor) -> set[tuple[int, int, int, int, int, int]]:
    return {(b.type, b.lower, b.upper, b.port, b.key, b.node) for b in d.nametable.bindings()}


def _connect(nodes: dict[int, NameDistributor], x: int, y: int, mss: int = 1432) -> None:
    nodes[x].node_up(y, mss, 0.0)
    nodes[y].node_up(x, mss, 0.0)


def test_node_state_binding_at_address() -> None:
    d = NameDistributor(own_addr=None)
    d.publish(18888, 1, 5, 77, 9, 0.0)  # before the address: waits
    assert len(d.nametable) == 0 and _events(d) == []
    d.set_address(A, 0.0)
    assert _view(d) == {(18888, 1, 5, 77, 9, A), (NODE_STATE_TYPE, A, A, 0, A, A)}
    assert {type(e) for e in _events(d)} == {Published}
    d.set_address(A, 0.0)  # idempotent
    with pytest.raises(LocalProtocolError):
        d.set_address(B, 0.0)


def test_bulk_layout_and_convergence() -> None:
    nodes = {A: NameDistributor(own_addr=A), B: NameDistributor(own_addr=B)}
    for i in range(150):
        nodes[A].publish(20000, i, i, 100 + i, i, 0.0)
    nodes[A].node_up(B, 1432, 0.0)  # link mtu 1472: 1432-byte segments
    frames = nodes[A].frames_to_send(0.0)
    msgs = [NameDistrMsg.decode(f) for _, f in frames]
    # 151 items (150 + node state), (1432 - 40) // 20 = 69 per message.
    assert [len(m.items) for m in msgs] == [69, 69, 13]
    assert max(len(f) for _, f in frames) <= 1432
    assert all(m.bulk and m.non_legacy and m.bc_ack_invalid for m in msgs)
    assert [m.last_bulk for m in msgs] == [False, False, True]
    assert msgs[0].items[0] == DistrItem(NODE_STATE_TYPE, A, A, 0, A)
    # Replay into B once B is up too.
    nodes[B].node_up(A, 1432, 0.0)
    for _, f in frames:
        nodes[B].receive(f, 0.0, source=A)
    _settle(nodes)
    assert _view(nodes[B]) == _view(nodes[A]) | {(0, B, B, 0, B, B)}
    assert _view(nodes[A]) == _view(nodes[B])


def test_incremental_publish_withdraw_legacy_by_default() -> None:
    nodes = {A: NameDistributor(own_addr=A), B: NameDistributor(own_addr=B)}
    _connect(nodes, A, B)
    _settle(nodes)
    _events(nodes[B])
    nodes[A].publish(18888, 0, 99, 5, 6, 0.0)
    ((dest, frame),) = nodes[A].frames_to_send(0.0)
    msg = NameDistrMsg.decode(frame)
    assert dest == B and msg.is_legacy and not msg.bulk and len(msg.items) == 1
    nodes[B].receive(frame, 0.0, source=A)
    assert _events(nodes[B]) == [Published(18888, 0, 99, 5, 6, A)]
    nodes[A].withdraw(18888, 0, 99, 5, 6, 0.0)
    _settle(nodes)
    assert _events(nodes[B]) == [Withdrawn(18888, 0, 99, 5, 6, A)]
    assert (18888, 0, 99, 5, 6, A) not in _view(nodes[B])
    with pytest.raises(LocalProtocolError):
        nodes[A].withdraw(18888, 0, 99, 5, 6, 0.0)


def test_local_misuse() -> None:
    d = NameDistributor(own_addr=A)
    d.publish(1, 2, 3, 4, 5, 0.0)
    with pytest.raises(LocalProtocolError):
        d.publish(1, 2, 3, 9, 5, 0.0)  # same range and key
    with pytest.raises(LocalProtocolError):
        d.publish(1, 3, 2, 4, 6, 0.0)
    with pytest.raises(LocalProtocolError):
        d.publish(1 << 32, 0, 0, 0, 0, 0.0)
    with pytest.raises(LocalProtocolError):
        d.withdraw(1, 2, 3, 99, 5, 0.0)  # wrong port
    with pytest.raises(LocalProtocolError):
        NameDistributor(own_addr=None).node_up(B, 1432, 0.0)


def _incr(seqno: int, mtype: int, item: DistrItem, *, origin: int = B) -> bytes:
    return NameDistrMsg(
        mtype=mtype,
        prev_node=origin,
        orig_node=origin,
        dest_node=A,
        items=(item,),
        non_legacy=True,
        seqno=seqno,
    ).encode()


def _bulk(seqno: int, items: tuple[DistrItem, ...], *, origin: int = B) -> bytes:
    return NameDistrMsg(
        mtype=NameDistrType.PUBLICATION,
        prev_node=origin,
        orig_node=origin,
        dest_node=A,
        items=items,
        bulk=True,
        last_bulk=True,
        non_legacy=True,
        seqno=seqno,
    ).encode()


def test_non_legacy_waits_for_last_bulk_and_order() -> None:
    d = NameDistributor(own_addr=A)
    d.node_up(B, 1432, 0.0)
    x, y = DistrItem(50, 1, 1, 1, 1), DistrItem(50, 2, 2, 2, 2)
    # Incremental 11 and 10 arrive before the bulk that opens the stream at 10.
    d.receive(_incr(11, NameDistrType.PUBLICATION, y), 0.0, source=B)
    d.receive(_incr(10, NameDistrType.PUBLICATION, x), 0.0, source=B)
    assert d.statistics().deferred == 2
    assert not any(b.node == B for b in d.nametable.bindings())
    d.receive(_bulk(10, (DistrItem(0, B, B, 0, B),)), 0.0, source=B)
    assert d.statistics().deferred == 0
    assert {(b.lower, b.node) for b in d.nametable.bindings() if b.type == 50} == {
        (1, B),
        (2, B),
    }
    # Older seqno after the stream moved on: dropped.
    d.receive(_incr(5, NameDistrType.WITHDRAWAL, x), 0.0, source=B)
    assert d.statistics().stale_dropped == 1
    assert any(b.type == 50 and b.lower == 1 for b in d.nametable.bindings())
    # In-order withdrawal applies.
    d.receive(_incr(12, NameDistrType.WITHDRAWAL, x), 0.0, source=B)
    assert not any(b.type == 50 and b.lower == 1 for b in d.nametable.bindings())


def test_duplicates_unknown_withdrawals_foreign_and_not_up_are_counted() -> None:
    d = NameDistributor(own_addr=A)
    d.node_up(B, 1432, 0.0)
    item = DistrItem(70, 1, 2, 3, 4)
    legacy = NameDistrMsg(
        mtype=NameDistrType.PUBLICATION, prev_node=B, orig_node=B, dest_node=A, items=(item,)
    ).encode()
    d.receive(legacy, 0.0, source=B)
    d.receive(legacy, 0.0, source=B)
    gone = NameDistrMsg(
        mtype=NameDistrType.WITHDRAWAL,
        prev_node=B,
        orig_node=B,
        dest_node=A,
        items=(DistrItem(70, 1, 2, 3, 99),),  # wrong key
    ).encode()
    d.receive(gone, 0.0, source=B)
    d.receive(legacy, 0.0, source=C)  # origin B delivered by C
    bad_range = NameDistrMsg(
        mtype=0, prev_node=B, orig_node=B, dest_node=A, items=(DistrItem(1, 5, 4, 0, 0),)
    ).encode()
    d.receive(bad_range, 0.0, source=B)
    other = NameDistrMsg(mtype=0, prev_node=C, orig_node=C, dest_node=A, items=(item,))
    d.receive(other.encode(), 0.0, source=C)  # C never came up
    weird = NameDistrMsg(mtype=5, prev_node=B, orig_node=B, dest_node=A, items=(item,))
    d.receive(weird.encode(), 0.0, source=B)
    s = d.statistics()
    assert (s.duplicate_publications, s.unknown_withdrawals, s.foreign_origin) == (1, 1, 1)
    assert (s.invalid_items, s.peer_not_up, s.unknown_type) == (1, 1, 1)
    assert sum(1 for b in d.nametable.bindings() if b.node == B) == 1


def test_node_down_withdraws_everything_of_that_node() -> None:
    nodes = {n: NameDistributor(own_addr=n) for n in (A, B, C)}
    for x, y in ((A, B), (A, C), (B, C)):
        _connect(nodes, x, y)
    nodes[B].publish(300, 0, 10, 1, 1, 0.0)
    nodes[C].publish(300, 0, 10, 2, 1, 0.0)
    _settle(nodes)
    assert len(nodes[A].nametable) == 5
    _events(nodes[A])
    nodes[A].node_down(B, 0.0)
    evs = _events(nodes[A])
    assert {(e.type, e.node) for e in evs if isinstance(e, Withdrawn)} == {(0, B), (300, B)}
    assert {b.node for b in nodes[A].nametable.bindings()} == {A, C}
    # Updates from B are no longer taken; after B is back its bulk restores it.
    nodes[A].node_up(B, 1432, 0.0)
    nodes[B].node_down(A, 0.0)
    nodes[B].node_up(A, 1432, 0.0)
    _settle(nodes)
    assert _view(nodes[A]) == _view(nodes[B]) == _view(nodes[C])


def test_non_legacy_mode_between_two_distributors() -> None:
    nodes = {A: NameDistributor(own_addr=A, legacy=False), B: NameDistributor(own_addr=B)}
    _connect(nodes, A, B)
    for i in range(5):
        nodes[A].publish(400, i, i, i, i, 0.0)
    frames = nodes[A].frames_to_send(0.0)
    seqnos = [NameDistrMsg.decode(f).seqno for _, f in frames if not NameDistrMsg.decode(f).bulk]
    assert seqnos == [0, 1, 2, 3, 4]
    for _, f in frames:
        nodes[B].receive(f, 0.0, source=A)
    assert sum(1 for b in nodes[B].nametable.bindings() if b.type == 400) == 5


def test_kernel_bulk_from_capture() -> None:
    path = pcap_dir() / "03-two-kernels-link-setup-and-traffic.pcap"
    if not path.exists():
        pytest.skip("reference capture 03 is not available")
    bulk = []
    for dgram in read_udp(path):
        try:
            hdr = decode_header(dgram.payload)
        except WireError:
            continue
        if hdr.user == User.NAME_DISTRIBUTOR and hdr.orig_node == VM2:
            bulk.append(dgram.payload)
    assert bulk
    d = NameDistributor(own_addr=VM1)
    d.node_up(VM2, 1432, 0.0)
    for frame in bulk:
        d.receive(frame, 0.0, source=VM2)
    theirs = {(b.type, b.lower, b.upper) for b in d.nametable.bindings() if b.node == VM2}
    assert (0, VM2, VM2) in theirs and (18888, 0x66, 0x66) in theirs


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["pub", "wd", "down", "up", "flush"]),
        st.sampled_from([A, B, C]),
        st.sampled_from([A, B, C]),
        st.integers(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_ops, st.booleans())
def test_property_tables_converge(ops: list[tuple[str, int, int, int]], legacy: bool) -> None:
    """Whatever the order of publications, withdrawals and node flaps, once every pair is
    up and every message delivered, all tables hold exactly the union of own bindings."""
    nodes = {n: NameDistributor(own_addr=n, legacy=legacy) for n in (A, B, C)}
    up: set[tuple[int, int]] = set()

    def link_up(x: int, y: int) -> None:
        if (x, y) in up:
            return
        up.add((x, y))
        up.add((y, x))
        _connect(nodes, x, y)

    def link_down(x: int, y: int) -> None:
        if (x, y) not in up:
            return
        # Messages still in flight on the dying link are lost.
        for n in (x, y):
            keep = [(d, f) for d, f in nodes[n].frames_to_send(0.0) if d not in (x, y)]
            nodes[n]._outbox.extend(keep)
        up.discard((x, y))
        up.discard((y, x))
        nodes[x].node_down(y, 0.0)
        nodes[y].node_down(x, 0.0)

    for op, x, y, v in ops:
        if op == "pub":
            try:
                nodes[x].publish(500, v, v + 1, v, v, 0.0)
            except LocalProtocolError:
                pass
        elif op == "wd":
            try:
                nodes[x].withdraw(500, v, v + 1, v, v, 0.0)
            except LocalProtocolError:
                pass
        elif op == "down" and x != y:
            link_down(x, y)
        elif op == "up" and x != y:
            link_up(x, y)
        elif op == "flush":
            _deliver(nodes, x)
    for x, y in ((A, B), (A, C), (B, C)):
        link_up(x, y)
    _settle(nodes)
    everything = {
        (it.type, it.lower, it.upper, it.port, it.key, n)
        for n, d in nodes.items()
        for it in d.own_bindings()
    }
    for n, d in nodes.items():
        assert _view(d) == everything, hex(n)
        s = d.statistics()
        assert s.deferred == 0 and s.duplicate_publications == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([B, C, None]))
def test_property_fuzz_receive(data: bytes, source: int | None) -> None:
    d = NameDistributor(own_addr=A)
    d.node_up(B, 1432, 0.0)
    before = (_view(d), d.statistics())
    try:
        d.receive(data, 0.0, source=source)
    except RemoteProtocolError:
        assert (_view(d), d.statistics()) == before


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            NameDistrMsg,
            mtype=st.integers(0, 2),
            prev_node=st.just(B),
            orig_node=st.sampled_from([B, C]),
            dest_node=st.just(A),
            items=st.lists(st.builds(DistrItem, *[st.integers(0, 3)] * 5), max_size=3).map(tuple),
            bulk=st.booleans(),
            last_bulk=st.booleans(),
            non_legacy=st.booleans(),
            seqno=st.integers(0, 0xFFFF),
        ),
        max_size=30,
    )
)
def test_property_valid_messages_never_raise(msgs: list[NameDistrMsg]) -> None:
    d = NameDistributor(own_addr=A, max_deferred=8)
    d.node_up(B, 1432, 0.0)
    for m in msgs:
        d.receive(m.encode(), 0.0, source=B)
    assert d.statistics().deferred <= 8
    assert all(b.node in (A, B) for b in d.nametable.bindings())
    d.node_down(B, 0.0)
    assert {b.node for b in d.nametable.bindings()} == {A}


def test_publications_past_max_bindings_are_refused_and_counted() -> None:
    """A peer that publishes without end costs its own publications, not the memory of
    the node (whose replica holds at most MAX_PUBL bindings)."""
    d = NameDistributor(own_addr=A, max_bindings=5)
    d.node_up(B, 1432, 0.0)
    own = len(d.nametable)  # our node-state binding
    items = tuple(DistrItem(1000 + i, i, i, 77, i + 1) for i in range(8))
    d.receive(_bulk(1, items), 0.0, source=B)
    from_b = [b for b in d.nametable.bindings() if b.node == B]
    assert len(d.nametable) == 5 and len(from_b) == 5 - own
    assert d.statistics().table_full == 8 - len(from_b)
