"""Tests for tipcshm.core.bcast: the receive end of a peer's broadcast link.

Unit tests drive a BcastRcvLink with hand-built broadcast packets; the stack tests put a
NodeStack next to a "kernel-like" peer: another NodeStack whose outgoing link protocol
messages are rewritten to say that its broadcast link has sent ``last_bcast`` packets (as
a kernel's do), and which broadcasts packets built here, non-sequenced with w5 = the
cluster id, the way a kernel's broadcast link sends them.
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from tipcshm.core.bcast import BcastRcvLink
from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import CoreEvent, Delivered, NodeDown, NodeUp
from tipcshm.core.stack import NodeStack
from tipcshm.wire import DataType, Header, User, encode_header
from tipcshm.wire.bundle import BundleBuilder
from tipcshm.wire.discovery import UdpMediaAddr
from tipcshm.wire.fragment import fragment
from tipcshm.wire.header import LinkMsgType, seq_add
from tipcshm.wire.link import BcastProtoMsg, LinkProtoMsg, scan

NET_ID = 4711
OWN = 0x1001
PEER = 0x1002
_NON_SEQ = 1 << 20


def mcast(payload: bytes, *, src: int = PEER, lower: int = 100, upper: int = 200) -> bytes:
    """A multicast data message as the peer's socket layer builds it."""
    h = Header(
        user=User.LOW_IMPORTANCE,
        mtype=DataType.MCAST_MSG,
        hsize=44,
        size=44 + len(payload),
        lookup_scope=2,
        prev_node=src,
        orig_port=77,
        dest_port=0,
        orig_node=src,
        dest_node=0,
        name_type=18888,
        name_instance=lower,
        name_upper=upper,
    )
    return encode_header(h) + payload


def on_bcast_link(msg: bytes, seqno: int, *, net_id: int = NET_ID, src: int = PEER) -> bytes:
    """``msg`` as the peer's broadcast link sends it: seqno, non-seq, w5 = cluster id."""
    out = bytearray(msg)
    w0, w1 = struct.unpack_from(">II", out)
    struct.pack_into(">II", out, 0, w0 | _NON_SEQ, w1 & ~0xFFFF)
    struct.pack_into(">I", out, 8, seqno & 0xFFFF)
    struct.pack_into(">I", out, 12, src)
    struct.pack_into(">I", out, 20, net_id)
    return bytes(out)


def payloads(events: list[CoreEvent]) -> list[bytes]:
    return [e.frame[44:] for e in events if isinstance(e, Delivered)]


def drain(obj: BcastRcvLink | NodeStack) -> list[CoreEvent]:
    out = []
    while (ev := obj.next_event()) is not None:
        out.append(ev)
    return out


def rcv_link(last_bcast: int = 100) -> BcastRcvLink:
    bc = BcastRcvLink(own_addr=OWN, peer_addr=PEER, net_id=NET_ID)
    bc.init_rcv(last_bcast)
    return bc


# -- the receive link alone -------------------------------------------------------------


def test_packets_in_order_are_delivered_and_acked() -> None:
    bc = rcv_link(100)
    assert (bc.is_up, bc.rcv_nxt, bc.ack) == (True, 101, 100)
    for i, seq in enumerate((101, 102, 103)):
        bc.receive(on_bcast_link(mcast(b"m%d" % i), seq), 0.0)
    assert payloads(drain(bc)) == [b"m0", b"m1", b"m2"]
    assert (bc.rcv_nxt, bc.ack, bc.gap, bc.rcv_unacked) == (104, 103, 0, 3)
    ev = Delivered(PEER, on_bcast_link(mcast(b"m0"), 101))
    assert ev.source == PEER


def test_a_closed_link_or_another_cluster_drops_packets() -> None:
    bc = BcastRcvLink(own_addr=OWN, peer_addr=PEER, net_id=NET_ID)
    bc.receive(on_bcast_link(mcast(b"early"), 1), 0.0)
    bc.init_rcv(0)
    bc.receive(on_bcast_link(mcast(b"other net"), 1, net_id=NET_ID + 1), 0.0)
    bc.receive(on_bcast_link(mcast(b"other node"), 1, src=0x1003), 0.0)
    assert drain(bc) == []
    st = bc.statistics()
    assert (st.dropped_closed, st.dropped_netid, st.dropped_other) == (1, 1, 1)
    bc.receive(on_bcast_link(mcast(b"ok"), 1), 0.0)
    assert payloads(drain(bc)) == [b"ok"]


def test_out_of_order_packets_wait_and_duplicates_are_dropped() -> None:
    bc = rcv_link(0xFFFE)  # the sequence wraps on the way
    frames = {s: on_bcast_link(mcast(b"s%d" % s), s) for s in (0xFFFF, 0, 1, 2)}
    for seq in (1, 0, 2, 0):  # 0 twice: the second copy is deferred already
        bc.receive(frames[seq], 0.0)
    assert drain(bc) == []
    assert bc.gap == 1  # only 0xFFFF is missing before the first deferred packet
    bc.receive(frames[0xFFFF], 0.0)
    assert payloads(drain(bc)) == [b"s65535", b"s0", b"s1", b"s2"]
    bc.receive(frames[1], 0.0)  # old: a duplicate
    bc.receive(on_bcast_link(mcast(b"far"), seq_add(bc.rcv_nxt, 9000)), 0.0)
    assert drain(bc) == []
    assert bc.statistics().rx_dups == 3
    assert (bc.rcv_nxt, bc.gap) == (3, 0)


def test_a_gap_asks_for_a_nack_state_when_the_deferred_count_matches_our_address() -> None:
    bc = rcv_link(0)
    # own address 0x1001: the first deferred packet (count 1) matches, then count 17
    bc.receive(on_bcast_link(mcast(b"x"), 5), 0.0)
    assert bc.take_state_request()
    assert bc.gap == 4
    for seq in range(6, 21):
        bc.receive(on_bcast_link(mcast(b"x"), seq), 0.0)
        assert not bc.take_state_request()
    bc.receive(on_bcast_link(mcast(b"x"), 21), 0.0)
    assert bc.take_state_request()


def test_the_peers_last_bcast_reveals_a_lost_tail() -> None:
    bc = rcv_link(10)
    bc.sync_rcv(last_bcast=13, unicast_ack=0)  # the peer has not acked our init yet
    assert not bc.take_state_request() and bc.gap == 0
    bc.sync_rcv(last_bcast=13, unicast_ack=1)
    assert bc.take_state_request()
    assert bc.gap == 3
    bc.sync_rcv(last_bcast=10 + 51, unicast_ack=1)  # beyond the window: ignored
    assert bc.snd_nxt == 14
    for seq in (11, 12, 13):
        bc.receive(on_bcast_link(mcast(b"t"), seq), 0.0)
    assert bc.gap == 0


def test_an_ack_state_is_asked_for_every_16_packets_staggered_by_address() -> None:
    bc = rcv_link(0)
    asked = []
    for seq in range(1, 40):
        bc.receive(on_bcast_link(mcast(b"a"), seq), 0.0)
        if bc.take_state_request():
            asked.append(bc.rcv_nxt)
            bc.state_sent(bc.gap)
    # rcv_nxt ^ 0x1001 ends in 0xF: rcv_nxt ends in 0xE, once 16 are unacked
    assert asked == [0x1E]


def test_bundles_and_fragments_on_the_broadcast_link() -> None:
    bc = rcv_link(0)
    b = BundleBuilder(mcast(b"one"), own_addr=PEER, dest_addr=0, max_size=1000)
    assert b.try_add(mcast(b"two"))
    bc.receive(on_bcast_link(b.encode(), 1), 0.0)
    big = mcast(bytes(range(256)) * 12)
    frags = fragment(big, 1000, own_addr=PEER, dest_addr=0)
    assert len(frags) > 2
    for i, f in enumerate(frags):
        bc.receive(on_bcast_link(f, 2 + i), 0.0)
    got = [e.frame for e in drain(bc) if isinstance(e, Delivered)]
    assert [g[44:] for g in got[:2]] == [b"one", b"two"]
    assert got[2] == big
    st = bc.statistics()
    assert (st.rx_bundles, st.rx_fragments, st.rx_fragmented) == (1, len(frags), 1)


def test_a_stray_fragment_fails_the_node_and_garbage_is_a_remote_error() -> None:
    bc = rcv_link(0)
    frags = fragment(mcast(b"z" * 3000), 1000, own_addr=PEER, dest_addr=0)
    bc.receive(on_bcast_link(frags[1], 1), 0.0)
    assert bc.take_failure() == "broadcast reassembly failure"
    assert bc.take_failure() is None
    with pytest.raises(RemoteProtocolError):
        bc.receive(b"\x00" * 30, 0.0)


def test_close_forgets_and_the_next_init_reopens() -> None:
    bc = rcv_link(50)
    bc.receive(on_bcast_link(mcast(b"q"), 53), 0.0)
    bc.close()
    assert (bc.is_up, bc.gap, bc.ack) == (False, 0, 0)
    bc.init_rcv(7)
    bc.init_rcv(99)  # ignored while open
    assert (bc.is_up, bc.rcv_nxt) == (True, 8)


def test_legacy_peer_start_point_comes_from_reset_and_names_open_the_link() -> None:
    bc = BcastRcvLink(own_addr=OWN, peer_addr=PEER, net_id=NET_ID, peer_caps=0)
    bc.legacy_init(int(LinkMsgType.RESET_MSG), 300, peer_node_up=False)
    assert not bc.is_up and bc.rcv_nxt == 301
    bc.establish()
    bc.receive(on_bcast_link(mcast(b"legacy"), 301), 0.0)
    assert payloads(drain(bc)) == [b"legacy"]
    synch = BcastRcvLink(own_addr=OWN, peer_addr=PEER, net_id=NET_ID, peer_caps=0x2)
    synch.legacy_init(int(LinkMsgType.RESET_MSG), 300, peer_node_up=False)
    assert synch.rcv_nxt == 1  # TIPC_BCAST_SYNCH: only the bcast init counts


# -- a NodeStack next to a kernel-like broadcasting peer ---------------------------------


def _media(i: int) -> bytes:
    return UdpMediaAddr(bytes([10, 0, 0, i + 1]), 6118).encode()


class KernelLikePeer:
    """Two stacks back to back: ``ours`` (index 0) and ``peer`` (index 1). The peer's
    link protocol messages claim a broadcast link at ``last_bcast`` (the bcast init
    and every STATE carry it), and :meth:`broadcast` sends on that link."""

    def __init__(self, last_bcast: int) -> None:
        rng = random.Random(5)
        self.now = 0.0
        self.last_bcast = last_bcast
        self.stacks = [
            NodeStack(
                identity=f"node{i}".encode().ljust(16, b"\0"),
                addr=0x1001 + i,
                media=_media(i),
                if_name="eth0",
                rng=rng,
                now=0.0,
                net_id=NET_ID,
            )
            for i in range(2)
        ]
        self.events: list[list[CoreEvent]] = [[], []]
        self.ours_sent: list[bytes] = []  # what ours sent to the peer
        self.drop_bcast: set[int] = set()

    @property
    def ours(self) -> NodeStack:
        return self.stacks[0]

    def _rewrite(self, frame: bytes) -> bytes:
        user = scan(frame)[0]
        if user == User.LINK_PROTOCOL:
            msg = LinkProtoMsg.decode(frame)
            return dataclasses.replace(msg, last_bcast=self.last_bcast).encode()
        if user == User.BCAST_PROTOCOL:
            init = BcastProtoMsg.decode(frame)
            return dataclasses.replace(init, last_bcast=self.last_bcast).encode()
        return frame

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for i, s in enumerate(self.stacks):
                for frame, _dest in s.frames_to_send(self.now):
                    moved = True
                    if i == 1:
                        frame = self._rewrite(frame)
                    else:
                        self.ours_sent.append(frame)
                    self.stacks[1 - i].receive(frame, self.now, _media(i))
                for ev in iter(s.next_event, None):
                    self.events[i].append(ev)

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

    def broadcast(self, payload: bytes) -> int:
        """Send ``payload`` on the peer's broadcast link (lost if its seqno is in
        ``drop_bcast``); returns the seqno."""
        self.last_bcast = seq_add(self.last_bcast, 1)
        frame = on_bcast_link(mcast(payload, src=0x1002), self.last_bcast)
        if self.last_bcast not in self.drop_bcast:
            self.ours.receive(frame, self.now, _media(1))
        self._sent = getattr(self, "_sent", {})
        self._sent[self.last_bcast] = frame
        self.flush()
        return self.last_bcast

    def retransmit(self, seqno: int) -> None:
        self.ours.receive(self._sent[seqno], self.now, _media(1))
        self.flush()

    def delivered(self) -> list[bytes]:
        return [
            e.frame[44:] for e in self.events[0] if isinstance(e, Delivered) and e.source == 0x1002
        ]

    def our_states(self) -> list[LinkProtoMsg]:
        out = []
        for f in self.ours_sent:
            if scan(f)[0] == User.LINK_PROTOCOL:
                m = LinkProtoMsg.decode(f)
                if m.mtype == LinkMsgType.STATE_MSG:
                    out.append(m)
        return out


@pytest.fixture
def pair() -> KernelLikePeer:
    p = KernelLikePeer(last_bcast=0xFFF0)
    p.run(3.0)
    assert p.ours.links_up() == {0x1002}
    assert any(isinstance(e, NodeUp) for e in p.events[0])
    return p


def test_a_kernel_like_peers_multicast_is_delivered_and_acked_in_state(
    pair: KernelLikePeer,
) -> None:
    states = pair.our_states()
    assert states[0].bc_ack_invalid  # the first STATE at link-up, before the init
    assert not states[-1].bc_ack_invalid and states[-1].bcast_ack == 0xFFF0
    sent = [pair.broadcast(b"mc%d" % i) for i in range(20)]
    assert pair.delivered() == [b"mc%d" % i for i in range(20)]
    assert pair.ours.statistics().bcast_dropped == 0
    pair.run(1.0)  # the timer's STATE acks whatever is left unacked
    last = pair.our_states()[-1]
    assert (last.bcast_ack, last.bc_gap, last.bc_ack_invalid) == (sent[-1], 0, False)
    assert last.redundant_link
    # every data packet ours sends now carries the same bcast ack in w1
    ours, peer = pair.ours, pair.stacks[1]
    srv = mcast(b"reply", src=0x1001)
    h = bytearray(srv)
    struct.pack_into(">I", h, 28, 0x1002)  # w7: to the peer
    ours.send(0x1002, bytes(h), pair.now)
    pair.flush()
    data = [f for f in pair.ours_sent if scan(f)[0] == User.LOW_IMPORTANCE]
    assert struct.unpack_from(">I", data[-1], 4)[0] & 0xFFFF == sent[-1]
    assert peer.statistics().received > 0


def test_a_lost_broadcast_is_nacked_in_state_and_recovered(pair: KernelLikePeer) -> None:
    first = seq_add(pair.last_bcast, 1)
    pair.drop_bcast = {first, seq_add(first, 4), seq_add(first, 5)}
    for i in range(6):
        pair.broadcast(b"n%d" % i)
    assert pair.delivered() == []
    # the peer's next STATE names its last_bcast: ours NACKs the head gap in bc_gap
    n_before = len(pair.our_states())
    pair.run(1.0)
    nacks = [m for m in pair.our_states()[n_before:] if m.bc_gap]
    assert nacks and nacks[0].bcast_ack == seq_add(first, -1) and nacks[0].bc_gap == 1
    pair.retransmit(first)
    assert pair.delivered() == [b"n0", b"n1", b"n2", b"n3"]
    n_before = len(pair.our_states())
    pair.run(1.0)  # the tail: known only from the peer's last_bcast
    tail = [m for m in pair.our_states()[n_before:] if m.bc_gap]
    assert tail and tail[-1].bc_gap == 2 and tail[-1].bcast_ack == seq_add(first, 3)
    pair.retransmit(seq_add(first, 4))
    pair.retransmit(seq_add(first, 5))
    assert pair.delivered() == [b"n%d" % i for i in range(6)]


def test_the_node_going_down_closes_the_receive_link(pair: KernelLikePeer) -> None:
    pair.broadcast(b"before")
    node = pair.ours.peer(0x1002)
    assert node is not None and node.bcast is not None and node.bcast.is_up
    node.reset(pair.now, "test")
    pair.flush()
    assert any(isinstance(e, NodeDown) for e in pair.events[0])
    assert not node.bcast.is_up
    pair.ours.receive(on_bcast_link(mcast(b"while down"), 7), pair.now, _media(1))
    assert node.bcast.statistics().dropped_closed == 1
    pair.run(5.0)  # the link comes back; the new bcast init reopens the receive link
    assert pair.ours.links_up() == {0x1002} and node.bcast.is_up
    pair.broadcast(b"after")
    assert pair.delivered() == [b"before", b"after"]


def test_broadcast_from_an_unknown_node_is_dropped_and_counted(pair: KernelLikePeer) -> None:
    pair.ours.receive(on_bcast_link(mcast(b"?", src=0x1009), 1, src=0x1009), pair.now)
    assert pair.ours.statistics().bcast_dropped == 1
