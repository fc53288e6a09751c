"""Tests for tipcshm.core.stack: NodeStacks back to back with an explicit clock.

A few lines of in-test network carry each stack's ``(frame, dest media)`` items: None
goes to every other stack, a media address to the stack that owns it. Time jumps from
timer to timer; nothing sleeps.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import (
    CoreEvent,
    Delivered,
    LinkCongested,
    LinkUncongested,
    LinkUp,
    NodeDown,
    NodeUp,
    Published,
    Withdrawn,
)
from tipcshm.core.stack import NodeStack
from tipcshm.wire import DataType, Header, User, decode_header, encode_header
from tipcshm.wire.discovery import UdpMediaAddr


def _identity(i: int) -> bytes:
    return f"node{i}".encode().ljust(16, b"\0")


def _media(i: int) -> bytes:
    return UdpMediaAddr(bytes([10, 0, 0, i + 1]), 6118).encode()


class Net:
    """N stacks, a clock, and a set of cut (sender, receiver) paths."""

    def __init__(self, n: int, *, seed: int = 1, addrs: bool = True) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.stacks = [
            NodeStack(
                identity=_identity(i),
                addr=(0x1000 + i) if addrs else None,
                media=_media(i),
                if_name="eth0",
                rng=self.rng,
                now=self.now,
            )
            for i in range(n)
        ]
        self.events: list[list[CoreEvent]] = [[] for _ in range(n)]
        self.cut: set[tuple[int, int]] = set()
        self._by_media = {_media(i): i for i in range(n)}

    def addr(self, i: int) -> int:
        a = self.stacks[i].addr
        assert a is not None
        return a

    def _drain_events(self) -> None:
        for i, s in enumerate(self.stacks):
            while (ev := s.next_event()) is not None:
                self.events[i].append(ev)

    def flush(self) -> None:
        """Deliver everything queued, repeatedly, at the current time."""
        moved = True
        while moved:
            moved = False
            for i, s in enumerate(self.stacks):
                for frame, dest in s.frames_to_send(self.now):
                    targets = (
                        [j for j in range(len(self.stacks)) if j != i]
                        if dest is None
                        else [self._by_media[dest]]
                    )
                    for j in targets:
                        if (i, j) in self.cut:
                            continue
                        moved = True
                        self.stacks[j].receive(frame, self.now, _media(i))
            self._drain_events()

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        self.flush()
        while True:
            timers = [t for s in self.stacks if (t := s.next_timer()) is not None]
            nxt = min(timers) if timers else end
            if nxt > end:
                break
            self.now = max(self.now, nxt)
            for s in self.stacks:
                t = s.next_timer()
                if t is not None and t <= self.now:
                    s.handle_timer(self.now)
            self.flush()
        self.now = end

    def table(self, i: int) -> set[tuple[int, int, int, int]]:
        return {(b.type, b.lower, b.upper, b.node) for b in self.stacks[i].nametable.bindings()}

    def partition(self, a: set[int], b: set[int]) -> None:
        for x in a:
            for y in b:
                self.cut |= {(x, y), (y, x)}


def _events(s: NodeStack) -> list[CoreEvent]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def _data_msg(src: int, dst: int, payload: bytes) -> bytes:
    hdr = Header(
        user=User.LOW_IMPORTANCE,
        hsize=32,
        size=32 + len(payload),
        mtype=DataType.DIRECT_MSG,
        prev_node=src,
        orig_node=src,
        dest_node=dst,
        orig_port=11,
        dest_port=22,
    )
    return encode_header(hdr) + payload


def test_two_stacks_link_up_and_exchange_node_state() -> None:
    net = Net(2)
    net.run(3.0)
    a, b = net.addr(0), net.addr(1)
    assert net.stacks[0].links_up() == {b} and net.stacks[1].links_up() == {a}
    assert net.stacks[0].nodes_up() == {b}
    expected = {(0, a, a, a), (0, b, b, b)}
    assert net.table(0) == net.table(1) == expected
    kinds = [type(e) for e in net.events[0]]
    assert kinds.index(LinkUp) < kinds.index(NodeUp)
    assert Published(0, b, b, 0, b, b) in net.events[0]


def test_publish_withdraw_propagate_to_three() -> None:
    net = Net(3)
    net.run(3.0)
    assert all(len(s.links_up()) == 2 for s in net.stacks)
    net.stacks[0].publish(18888, 0, 99, 7, 1, net.now)
    net.run(0.5)
    a = net.addr(0)
    for i in (1, 2):
        assert (18888, 0, 99, a) in net.table(i)
        assert Published(18888, 0, 99, 7, 1, a) in net.events[i]
    net.stacks[0].withdraw(18888, 0, 99, 7, 1, net.now)
    net.run(0.5)
    for i in (1, 2):
        assert (18888, 0, 99, a) not in net.table(i)
        assert Withdrawn(18888, 0, 99, 7, 1, a) in net.events[i]
    assert net.table(0) == net.table(1) == net.table(2)


def test_bindings_made_before_links_arrive_in_bulk() -> None:
    net = Net(2)
    for k in range(200):  # more than one bulk message at mtu 1472
        net.stacks[1].publish(20000, k, k, 5, k, net.now)
    net.run(3.0)
    b = net.addr(1)
    assert sum(1 for t in net.table(0) if t[0] == 20000 and t[3] == b) == 200
    assert net.stacks[1].statistics().names.bulk_messages_sent >= 3


def test_data_delivered_in_order() -> None:
    net = Net(2)
    net.run(3.0)
    a, b = net.addr(0), net.addr(1)
    payloads = [bytes([i]) * (i + 1) for i in range(20)]
    for p in payloads:
        net.stacks[0].send(b, _data_msg(a, b, p), net.now)
    net.run(0.5)
    got = [e for e in net.events[1] if isinstance(e, Delivered)]
    assert [e.source for e in got] == [a] * 20
    assert [e.frame[32:] for e in got] == payloads
    assert all(decode_header(e.frame).user == User.LOW_IMPORTANCE for e in got)
    with pytest.raises(LocalProtocolError):
        net.stacks[0].send(0xDEAD, _data_msg(a, 0xDEAD, b"x"), net.now)


def test_large_messages_cross_fragmented() -> None:
    net = Net(2)
    net.run(3.0)
    a, b = net.addr(0), net.addr(1)
    payloads = [bytes(range(256)) * 257 + b"end", b"small", bytes(66000)]
    for p in payloads:
        net.stacks[0].send(b, _data_msg(a, b, p), net.now)
    net.run(1.0)
    got = [e.frame[32:] for e in net.events[1] if isinstance(e, Delivered)]
    assert got == payloads


def test_node_down_withdraws_peer_bindings_and_comes_back() -> None:
    net = Net(3)
    net.run(3.0)
    net.stacks[2].publish(30000, 1, 2, 3, 4, net.now)
    net.run(0.5)
    c = net.addr(2)
    assert (30000, 1, 2, c) in net.table(0)
    net.partition({0}, {2})
    net.run(3.0)  # > tolerance (1.5 s)
    assert c not in net.stacks[0].links_up()
    assert [e.addr for e in net.events[0] if isinstance(e, NodeDown)] == [c]
    assert not any(t[3] == c for t in net.table(0))
    assert (30000, 1, 2, c) in net.table(1)  # 1 still sees 2
    net.cut.clear()
    net.run(5.0)
    assert c in net.stacks[0].links_up()
    assert net.table(0) == net.table(1) == net.table(2)


def test_congestion_is_reported_and_clears() -> None:
    net = Net(2)
    net.run(3.0)
    a, b = net.addr(0), net.addr(1)
    s = net.stacks[0]
    assert not s.congested(b, 0) and s.congested(0xDEAD, 0)
    sent = 0
    while not s.congested(b, 0):
        s.send(b, _data_msg(a, b, bytes(1000)), net.now)  # nothing delivered meanwhile
        sent += 1
        assert sent < 10_000
    assert any(isinstance(e, LinkCongested) for e in _events(s))
    net.run(2.0)
    assert not s.congested(b, 0)
    assert LinkUncongested(b) in net.events[0]
    got = [e for e in net.events[1] if isinstance(e, Delivered)]
    assert len(got) == sent


def test_address_trial_then_links() -> None:
    net = Net(2, addrs=False)
    assert net.stacks[0].addr is None
    net.run(4.0)
    assert net.stacks[0].addr is not None and net.stacks[1].addr is not None
    assert len(net.stacks[0].links_up()) == 1
    a, b = net.addr(0), net.addr(1)
    assert net.table(0) == {(0, a, a, a), (0, b, b, b)}


def test_unknown_sender_and_other_destination_are_counted() -> None:
    net = Net(2)
    net.run(3.0)
    a, b = net.addr(0), net.addr(1)
    s = net.stacks[0]
    s.receive(_data_msg(0x7777, a, b"who"), net.now)
    s.receive(_data_msg(b, 0x7777, b"not me"), net.now)
    st_ = s.statistics()
    assert st_.unknown_peer == 1 and st_.wrong_dest == 1
    assert not any(isinstance(e, Delivered) for e in net.events[0])


def _fresh_pair() -> Net:
    net = Net(2)
    net.run(2.0)
    return net


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_property_fuzz_receive(data: bytes) -> None:
    net = _fresh_pair()
    s = net.stacks[0]
    before = (s.statistics(), net.table(0))
    try:
        s.receive(data, net.now, _media(1))
    except RemoteProtocolError:
        after = s.statistics()
        assert (after.received, after.unknown_peer, net.table(0)) == (
            before[0].received,
            before[0].unknown_peer,
            before[1],
        )
    # Whatever arrived, the node keeps working.
    net.run(1.0)
    assert s.links_up() == {net.addr(1)}


@settings(max_examples=200, deadline=None)
@given(
    user=st.integers(0, 15),
    mtype=st.integers(0, 7),
    hsize=st.sampled_from([24, 32, 40, 44, 60]),
    non_seq=st.booleans(),
    seqno=st.integers(0, 0xFFFF),
    ack=st.integers(0, 0xFFFF),
    words=st.lists(st.integers(0, 0xFFFFFFFF), min_size=4, max_size=4),
    payload=st.binary(max_size=64),
)
def test_property_frames_from_the_peer(
    user: int,
    mtype: int,
    hsize: int,
    non_seq: bool,
    seqno: int,
    ack: int,
    words: list[int],
    payload: bytes,
) -> None:
    """Well-framed headers from the real peer with arbitrary fields and bodies reach the
    node, link and name distributor: only RemoteProtocolError may come out, and the
    link to the peer survives or comes back."""
    net = _fresh_pair()
    a, b = net.addr(0), net.addr(1)
    hdr = Header(
        user=user,
        hsize=hsize,
        size=hsize + len(payload),
        mtype=mtype,
        non_seq=non_seq,
        link_seqno=seqno,
        link_ack=ack,
        prev_node=b,
        orig_node=b,
        dest_node=a if hsize > 24 else 0,
        orig_port=words[0],
        dest_port=words[1] if hsize > 24 else 0,
        name_type=words[2] if hsize > 32 else 0,
        name_instance=words[3] if hsize > 36 else 0,
        extra=bytes(hsize - 44) if hsize > 44 else b"",
    )
    frame = encode_header(hdr) + payload
    try:
        net.stacks[0].receive(frame, net.now, _media(1))
    except RemoteProtocolError:
        pass
    net.run(6.0)
    assert net.stacks[0].links_up() == {b}
    assert net.table(0) == net.table(1)
