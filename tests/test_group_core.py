"""The sans-IO group core (tipcshm.core.group): each transition of group.c on its own,
malformed input, and properties over the in-memory harness tipcshm.testing.GroupSim."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tipcshm.core.group import (
    ADV_ACTIVE,
    ADV_IDLE,
    Delivery,
    Group,
    MemberState,
)
from tipcshm.core.nametable import CLUSTER_SCOPE, NODE_SCOPE
from tipcshm.testing import GroupSim
from tipcshm.wire.group import (
    blocks,
    build_group_msg,
    build_proto,
    w9_high,
    w9_low,
    w10_evt,
    w10_seqno,
)
from tipcshm.wire.header import (
    GROUP_H_SIZE,
    DataType,
    GroupMsgType,
    User,
    w0_hsize,
    w0_size,
    w0_user,
    w1_mtype,
)

OWN = 0x1001
PEER = 0x1002
TYPE = 4711
J, LV, ADV, ACK, RECLAIM, REMIT = (
    GroupMsgType.GRP_JOIN_MSG,
    GroupMsgType.GRP_LEAVE_MSG,
    GroupMsgType.GRP_ADV_MSG,
    GroupMsgType.GRP_ACK_MSG,
    GroupMsgType.GRP_RECLAIM_MSG,
    GroupMsgType.GRP_REMIT_MSG,
)


def group(**kw: object) -> Group:
    args: dict[str, object] = {"loopback": False, "events": True}
    args.update(kw)
    return Group(OWN, 10, TYPE, 1, CLUSTER_SCOPE, **args)  # type: ignore[arg-type]


def sent(g: Group) -> list[tuple[int, int, int, int, int]]:
    """(dest node, dest port, type, high, low) of the GROUP_PROTOCOL frames queued."""
    out = []
    for node, port, f in g.frames_to_send():
        w = struct.unpack(">10I", f)
        assert w0_user(w[0]) == User.GROUP_PROTOCOL and w0_size(w[0]) == 40
        assert (w[3], w[4], w[5], w[6], w[7]) == (OWN, g.port, port, OWN, node)
        out.append((node, port, w1_mtype(w[1]), w9_high(w[9]), w9_low(w[9])))
    return out


def proto(mtype: int, port: int = 20, node: int = PEER, high: int = 0, adv: int = 0) -> bytes:
    return build_proto(
        mtype, own_node=node, own_port=port, dest_node=OWN, dest_port=10, high=high, adv_win=adv
    )


def data(
    mtype: int,
    seqno: int,
    payload: bytes = b"x",
    *,
    port: int = 20,
    node: int = PEER,
    ack: bool = False,
    instance: int = 0,
) -> bytes:
    return build_group_msg(
        mtype,
        payload,
        own_node=node,
        own_port=port,
        dest_node=OWN,
        dest_port=10 if mtype == DataType.GRP_UCAST_MSG else 0,
        type=TYPE,
        instance=instance,
        seqno=seqno,
        ack_req=ack,
    )


BC, MC, UC = DataType.GRP_BCAST_MSG, DataType.GRP_MCAST_MSG, DataType.GRP_UCAST_MSG


def events(g: Group) -> list[tuple[int, int, int]]:
    """(event, port, seqno) of the member events delivered, popped."""
    out = []
    keep = []
    while g.delivered:
        d = g.delivered.popleft()
        if d.event:
            w = struct.unpack(">11I", d.frame)
            assert w0_hsize(w[0]) == GROUP_H_SIZE and w0_size(w[0]) == GROUP_H_SIZE
            assert w0_user(w[0]) == User.CRITICAL_IMPORTANCE
            assert w1_mtype(w[1]) == DataType.GRP_MEMBER_EVT
            assert (w[4], w[5], w[6], w[7], w[8]) == (d.port, 10, d.node, OWN, TYPE)
            assert w10_evt(w[10]) == d.event and d.blocks == 0
            out.append((d.event, d.port, w10_seqno(w[10])))
        else:
            keep.append(d)
    g.delivered.extend(keep)
    return out


def joined(
    g: Group, port: int = 20, node: int = PEER, syncpt: int = 0, adv: int = ADV_IDLE
) -> None:
    """Make <node:port> a JOINED member of g (binding seen, then its JOIN)."""
    g.member_event(1, node, port, 7, node_up=True)
    assert g.receive(proto(J, port, node, high=syncpt, adv=adv))
    g.frames_to_send()
    events(g)


# --------------------------------------------------------------------- join / publish


def test_join_snapshot_then_join_msg() -> None:
    g = group()
    g.join([(PEER, 20, 7), (OWN, 10, 1)])  # our own binding is skipped
    m = g.member(PEER, 20)
    assert m is not None and m.state == MemberState.PUBLISHED and g.member(OWN, 10) is None
    assert sent(g) == [(PEER, 20, J, 0, 0)]  # nothing to advertise to a PUBLISHED member
    assert g.bcast_ack_req()  # the first broadcast after a join asks for acks
    assert g.receive(proto(J, high=5, adv=ADV_IDLE))
    assert m.state == MemberState.JOINED and m.bc_rcv_nxt == 5 and m.window == ADV_IDLE
    assert sent(g) == [(PEER, 20, ADV, 0, ADV_IDLE)] and m.advertised == ADV_IDLE
    assert events(g) == [(1, 20, 5)]
    assert g.delivered == type(g.delivered)()


def test_join_msg_then_published() -> None:
    g = group()
    g.join([])
    assert g.receive(proto(J, high=9, adv=30))
    m = g.member(PEER, 20)
    assert m is not None and m.state == MemberState.JOINING and m.window == 30
    assert events(g) == [] and sent(g) == []
    g.member_event(1, PEER, 20, 7, node_up=True)
    assert m.state == MemberState.JOINED and m.instance == 7
    assert sent(g) == [(PEER, 20, J, 0, ADV_IDLE)]
    assert events(g) == [(1, 20, 9)]


def test_published_event_for_new_member_sends_join() -> None:
    g = group()
    g.join([])
    g.member_event(1, PEER, 20, 7, node_up=True)
    m = g.member(PEER, 20)
    assert m is not None and m.state == MemberState.PUBLISHED
    assert sent(g) == [(PEER, 20, J, 0, 0)]
    assert g.dest_nodes() == {PEER} and g.member_cnt == 1
    g.member_event(1, OWN, 10, 1, node_up=True)  # our own binding, no loopback
    assert g.member(OWN, 10) is None


def test_loopback_makes_self_a_member() -> None:
    g = group(loopback=True)
    g.join([])
    g.member_event(1, OWN, 10, 1, node_up=True)
    [(node, port, f)] = g.frames_to_send()
    assert (node, port) == (OWN, 10)
    assert g.receive(f)
    me = g.member(OWN, 10)
    assert me is not None and me.state == MemberState.JOINED
    assert events(g) == [(1, 10, 0)]


def test_node_scope_ignores_other_nodes() -> None:
    g = Group(OWN, 10, TYPE, 1, NODE_SCOPE, loopback=False, events=True)
    g.join([(PEER, 20, 1)])
    g.member_event(1, PEER, 21, 1, node_up=True)
    assert g.receive(proto(J, 22))
    assert g.members() == [] and g.frames_to_send() == []


def test_max_active_follows_member_count() -> None:
    g = group()
    g.join([(PEER, p, 0) for p in range(100, 300)])
    assert g.max_active == 25 and g.member_cnt == 200
    g2 = group()
    g2.join([(PEER, 20, 0)])
    assert g2.max_active == 16


# --------------------------------------------------------------------- leave


def test_leave_msg_then_withdrawn() -> None:
    g = group()
    joined(g, syncpt=3)
    assert g.receive(proto(LV, high=3))
    assert events(g) == [(2, 20, 3)]
    assert g.member(PEER, 20) is None and g.member_cnt == 0 and g.dest_nodes() == set()
    g.member_event(2, PEER, 20, 7, node_up=True)
    assert events(g) == [] and g.member(PEER, 20) is None


def test_withdrawn_then_leave_msg() -> None:
    g = group()
    joined(g, syncpt=3)
    g.member_event(2, PEER, 20, 7, node_up=True)
    m = g.member(PEER, 20)
    assert m is not None and m.state == MemberState.LEAVING and events(g) == []
    assert g.receive(proto(LV, high=3))
    assert events(g) == [(2, 20, 3)] and g.member(PEER, 20) is None


def test_leave_waits_for_broadcasts_before_it() -> None:
    g = group()
    joined(g, syncpt=3)
    assert g.receive(proto(LV, high=5))  # two broadcasts still on their way
    assert events(g) == []
    assert g.receive(data(BC, 4, b"second"))
    assert g.receive(data(BC, 3, b"first"))
    got = [(d.event, d.frame[GROUP_H_SIZE:]) for d in g.delivered]
    assert got == [(0, b"first"), (0, b"second"), (2, b"")]
    assert g.member(PEER, 20) is None


def test_node_down_withdraws_at_once() -> None:
    g = group()
    joined(g, syncpt=8)
    g.member_event(2, PEER, 20, 7, node_up=False)
    assert events(g) == [(2, 20, 8)] and g.member(PEER, 20) is None


def test_evt_gone_without_leave_withdraws() -> None:
    g = group()
    joined(g, node=OWN, syncpt=2)
    g.member_event(2, OWN, 20, 7, node_up=True, gone=True)
    assert events(g) == [(2, 20, 2)] and g.member(OWN, 20) is None


def test_evt_gone_after_leave_gives_one_event() -> None:
    g = group()
    joined(g, node=OWN, syncpt=2)
    assert g.receive(proto(LV, node=OWN, high=3))  # waits for broadcast 2
    g.member_event(2, OWN, 20, 7, node_up=True, gone=True)
    assert g.receive(data(BC, 2, node=OWN))
    assert [d.event for d in g.delivered] == [0, 2]


def test_own_leave_sends_leave_to_all() -> None:
    g = group()
    joined(g, port=20)
    joined(g, port=21)
    g.sent_bcast(1)
    g.leave()
    assert sent(g) == [(PEER, 20, LV, 1, 0), (PEER, 21, LV, 1, 0)]
    assert g.members() == [] and g.member_cnt == 0
    assert g.receive(data(BC, 1))  # after leaving nothing is delivered
    assert not g.delivered


def test_events_flag_off_hides_events_but_still_deletes() -> None:
    g = group(events=False)
    joined(g)
    assert not g.delivered
    assert g.receive(proto(LV))
    assert not g.delivered and g.member(PEER, 20) is None


# --------------------------------------------------------------------- flow control


def test_adv_opens_small_window() -> None:
    g = group()
    joined(g, adv=ADV_IDLE)
    m = g.member(PEER, 20)
    assert m is not None
    g.sent_unicast(m, 10)
    assert m.window == ADV_IDLE - 10 and g.open
    assert g.cong(PEER, 20, 60) == (True, m)  # JOINED with full ADV_IDLE: no ADV
    assert sent(g) == [] and not g.open
    g.wakeup = False
    assert g.receive(proto(ADV, adv=100))
    assert m.window == ADV_IDLE - 10 + 100 and g.open and g.wakeup
    assert g.cong(PEER, 20, 60) == (False, m)


def test_cong_sends_adv_to_prevent_mutual_blocking() -> None:
    g = group()
    joined(g, adv=2)
    m = g.member(PEER, 20)
    assert m is not None
    # We consumed one of its messages: it went ACTIVE, we advertised up to ADV_ACTIVE.
    assert g.receive(data(UC, 0))
    d = g.delivered.popleft()
    g.consumed(d.node, d.port, d.blocks)
    assert m.state == MemberState.ACTIVE and m.advertised == ADV_ACTIVE
    assert sent(g) == [(PEER, 20, ADV, 0, ADV_ACTIVE - ADV_IDLE + 1)]
    assert g.receive(data(UC, 0))
    g.consumed(PEER, 20, g.delivered.popleft().blocks)
    sent(g)  # advertised 779 > 585: no ADV yet
    assert m.advertised == ADV_ACTIVE - 1
    # We are blocked sending to it; we have not advertised all we could: ADV now.
    assert g.cong(PEER, 20, 5) == (True, m)
    assert sent(g) == [(PEER, 20, ADV, 0, 1)] and m.advertised == ADV_ACTIVE
    assert g.cong(PEER, 20, 5) == (True, m) and sent(g) == []  # fully advertised now


def test_cong_for_non_receivers() -> None:
    g = group()
    assert g.cong(PEER, 20, 1) == (False, None)
    g.receive(proto(J))  # JOINING: not a receiver
    assert g.cong(PEER, 20, 1) == (False, None)


def test_bc_cong_smallest_window_and_ackers() -> None:
    g = group()
    g.join([])
    assert not g.bc_cong(1)
    joined(g, port=20, adv=ADV_IDLE)
    joined(g, port=21, adv=ADV_IDLE)
    g.sent_bcast(5)  # first bcast after join asks for acks from both
    g.wakeup = False
    assert g.bc_ackers == 2 and g.bc_cong(1) and not g.open
    assert g.receive(proto(ACK, 20, high=1))
    assert g.bc_ackers == 1 and not g.wakeup
    assert g.receive(proto(ACK, 21, high=1))
    assert g.bc_ackers == 0 and g.open and g.wakeup
    assert not g.bc_cong(ADV_IDLE - 5)
    assert g.bc_cong(ADV_IDLE - 4)
    assert g.receive(proto(ACK, 21, high=1))  # stray ACK: ignored, no wrap
    assert g.bc_ackers == 0


def test_ack_request_after_unicast_and_join() -> None:
    g = group()
    g.join([(PEER, 20, 0)])
    assert g.bcast_ack_req()
    assert g.receive(proto(J, adv=ADV_IDLE))
    g.sent_bcast(1)
    assert not g.bcast_ack_req() and g.bc_ackers == 1 and g.bc_snd_nxt == 1
    assert g.receive(proto(ACK, high=1))
    g.sent_bcast(1)
    assert g.bc_ackers == 0 and g.bc_snd_nxt == 2
    m = g.member(PEER, 20)
    assert m is not None
    g.sent_unicast(m, 1)
    assert g.bcast_ack_req()
    assert m.window == ADV_IDLE - 3


def test_receiver_acks_when_asked() -> None:
    g = group()
    joined(g, syncpt=0)
    assert g.receive(data(BC, 0, ack=True))
    assert sent(g) == [(PEER, 20, ACK, 1, 0)]
    assert g.receive(data(BC, 1))
    assert sent(g) == []


def test_reclaim_remits_window() -> None:
    g = group()
    joined(g, adv=ADV_ACTIVE)
    m = g.member(PEER, 20)
    assert m is not None
    g.sent_unicast(m, 100)
    assert g.receive(proto(RECLAIM))
    assert sent(g) == [(PEER, 20, REMIT, ADV_ACTIVE - 100, 0)] and m.window == ADV_IDLE


def _active_sender(g: Group, port: int) -> None:
    joined(g, port=port)
    assert g.receive(data(UC, 0, port=port))
    d = g.delivered.popleft()
    g.consumed(d.node, d.port, d.blocks)
    g.frames_to_send()


def test_reclaim_when_too_many_active_and_remit_paths() -> None:
    g = group()
    assert g.max_active == 16
    for p in range(100, 112):  # 12 active senders: reclaiming starts at 16 * 3 // 4 = 12
        _active_sender(g, p)
    assert g.active_cnt == 12
    # The 13th sender: active_cnt (12) >= 12, so the oldest active is reclaimed.
    joined(g, port=200)
    assert g.receive(data(UC, 0, port=200))
    g.consumed(PEER, 200, g.delivered.popleft().blocks)
    oldest = g.member(PEER, 100)
    assert oldest is not None and oldest.state == MemberState.RECLAIMING
    out = sent(g)
    assert (PEER, 100, RECLAIM, 0, 0) in out and (
        PEER,
        200,
        ADV,
        0,
        ADV_ACTIVE - ADV_IDLE + 1,
    ) in out
    assert g.active_cnt == 13
    # REMIT with nothing in flight: back to JOINED, ADV_IDLE advertised.
    assert g.receive(proto(REMIT, 100, high=oldest.advertised))
    assert oldest.state == MemberState.JOINED and oldest.advertised == ADV_IDLE
    assert g.active_cnt == 12
    # Another reclaim, this time two blocks still unread when REMIT comes.
    joined(g, port=201)
    assert g.receive(data(UC, 0, port=201))
    g.consumed(PEER, 201, g.delivered.popleft().blocks)
    second = g.member(PEER, 101)
    assert second is not None and second.state == MemberState.RECLAIMING
    g.frames_to_send()
    assert g.receive(proto(REMIT, 101, high=second.advertised - 2))
    assert second.state == MemberState.REMITTED and second.advertised == ADV_IDLE + 2
    assert g.receive(data(UC, 0, b"a", port=101))
    g.consumed(PEER, 101, g.delivered.popleft().blocks)
    assert second.state == MemberState.REMITTED
    assert g.receive(data(UC, 0, b"b", port=101))
    g.consumed(PEER, 101, g.delivered.popleft().blocks)
    assert second.state == MemberState.JOINED and g.active_cnt == 12
    assert sent(g) == []  # advertised == ADV_IDLE exactly: no ADV


def test_pending_when_active_slots_full_then_promoted_on_remit() -> None:
    g = group()
    for p in range(100, 118):  # 18 senders, max_active 16
        _active_sender(g, p)
    state = {m.port: m.state for m in g.members()}
    # From the 13th on, each newcomer made the oldest active one RECLAIMING; the 18th
    # found active_cnt (17, RECLAIMING ones included) above max_active and waits.
    assert [p for p, s in state.items() if s == MemberState.RECLAIMING] == list(range(100, 106))
    assert [p for p, s in state.items() if s == MemberState.ACTIVE] == list(range(106, 117))
    assert state[117] == MemberState.PENDING and g.active_cnt == 17
    r = g.member(PEER, 100)
    assert r is not None
    assert g.receive(proto(REMIT, 100, high=r.advertised))
    pending = g.member(PEER, 117)
    assert pending is not None and pending.state == MemberState.ACTIVE
    assert r.state == MemberState.JOINED and g.active_cnt == 17
    # It had ADV_IDLE - 1 advertised (<= ADV_ACTIVE * 3 // 4): it gets the rest now.
    assert sent(g) == [(PEER, 117, ADV, 0, ADV_ACTIVE - ADV_IDLE + 1)]


def test_remit_ignored_unless_reclaiming() -> None:
    g = group()
    joined(g)
    m = g.member(PEER, 20)
    assert m is not None
    assert g.receive(proto(REMIT, high=3))
    assert m.state == MemberState.JOINED and m.advertised == ADV_IDLE


# --------------------------------------------------------------------- ordering


def test_mcast_to_other_instance_advances_without_delivery() -> None:
    g = group()  # our instance is 1
    joined(g, syncpt=0)
    m = g.member(PEER, 20)
    assert m is not None
    assert g.receive(data(MC, 0, b"not for us", instance=2, ack=True))
    assert not g.delivered and m.bc_rcv_nxt == 1
    out = sent(g)
    assert (PEER, 20, ACK, 1, 0) in out and (PEER, 20, ADV, 0, ADV_ACTIVE - ADV_IDLE + 1) in out
    assert m.state == MemberState.ACTIVE  # counted consumed: the receive window moved
    assert g.receive(data(MC, 1, b"for us", instance=1))
    assert [d.frame[GROUP_H_SIZE:] for d in g.delivered] == [b"for us"]


def test_unicast_waits_for_bypassed_broadcast() -> None:
    g = group()
    joined(g, syncpt=0)
    assert g.receive(data(UC, 1, b"u"))  # sent after bcast 0, which is late
    assert not g.delivered
    assert g.receive(data(BC, 2, b"b2"))
    assert g.receive(data(BC, 0, b"b0"))
    assert [d.frame[GROUP_H_SIZE:] for d in g.delivered] == [b"b0", b"u"]
    assert g.receive(data(BC, 1, b"b1"))
    got = [d.frame[GROUP_H_SIZE:] for d in g.delivered]
    assert got == [b"b0", b"u", b"b1", b"b2"]


def test_duplicates_and_old_messages_dropped() -> None:
    g = group()
    joined(g, syncpt=5)
    assert g.receive(data(BC, 4))  # before its JOIN's sync point
    assert g.receive(data(BC, 5))
    assert g.receive(data(BC, 5))  # duplicate
    assert len(g.delivered) == 1 and g.bad == 0


def test_seqno_wraps() -> None:
    g = group()
    joined(g, syncpt=0xFFFF)
    assert g.receive(data(BC, 0))
    assert g.receive(data(BC, 0xFFFF))
    assert [w10_seqno(struct.unpack_from(">I", d.frame, 40)[0]) for d in g.delivered] == [0xFFFF, 0]


def test_data_from_unknown_or_unjoined_member_dropped() -> None:
    g = group()
    assert g.receive(data(BC, 0))
    g.member_event(1, PEER, 20, 7, node_up=True)  # PUBLISHED: not yet a sender
    assert g.receive(data(UC, 0))
    assert not g.delivered and g.bad == 0


def test_delivery_fields() -> None:
    g = group()
    joined(g)
    payload = b"z" * 3000
    frame = data(UC, 0, payload) + b"trailing"
    assert g.receive(frame)
    d = g.delivered.popleft()
    assert d == Delivery(frame[: GROUP_H_SIZE + 3000], PEER, 20, 7, 0, blocks(GROUP_H_SIZE + 3000))
    assert d.blocks == 3


# --------------------------------------------------------------------- malformed input


def _bad(g: Group, frame: bytes) -> None:
    before = g.bad
    assert g.receive(frame) is False
    assert g.bad == before + 1


def test_malformed_frames_counted() -> None:
    g = group()
    joined(g)
    good = data(UC, 0, b"abc")
    _bad(g, good[:39])
    _bad(g, b"")
    # header size 40 on a data message
    w0 = struct.unpack_from(">I", good)[0]
    _bad(g, struct.pack(">I", (w0 & ~(0xF << 21)) | (10 << 21)) + good[4:])
    # size field larger than the buffer
    _bad(g, struct.pack(">I", w0 + 10) + good[4:])
    # size smaller than the header
    _bad(g, struct.pack(">I", (w0 & ~0x1FFFF) | 30) + good[4:])
    # wrong version
    _bad(g, struct.pack(">I", w0 & ~(7 << 29) | (1 << 29)) + good[4:])
    # data types 0..4
    w1 = struct.unpack_from(">I", good, 4)[0]
    for t in range(5):
        _bad(g, good[:4] + struct.pack(">I", (w1 & 0x1FFFFFFF) | (t << 29)) + good[8:])
    # GROUP_PROTOCOL: header size not 40, unknown type
    p = proto(ADV, adv=5)
    pw0 = struct.unpack_from(">I", p)[0]
    _bad(g, struct.pack(">I", (pw0 & ~(0xF << 21)) | (11 << 21) | 44) + p[4:] + b"\0" * 4)
    for t in (6, 7):
        _bad(g, p[:4] + struct.pack(">I", t << 29) + p[8:])
    # another user
    _bad(g, struct.pack(">I", (pw0 & ~(0xF << 25)) | (User.NAME_DISTRIBUTOR << 25)) + p[4:])
    assert not g.delivered
    m = g.member(PEER, 20)
    assert m is not None and m.window == ADV_IDLE  # nothing bad touched state


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 119))
def test_garbage_never_raises(blob: bytes, cut: int) -> None:
    g = group()
    joined(g)
    for frame in (blob, data(BC, 0, blob)[: cut + 40], proto(ADV)[:cut] + blob):
        assert g.receive(frame) in (True, False)
    # A corrupted but "valid-looking" header can only be dropped or accepted, never crash.
    for i in range(0, 44, 4):
        f = bytearray(data(BC, 0, blob))
        f[i : i + 4] = blob[:4].ljust(4, b"\xff")
        g.receive(bytes(f))


# --------------------------------------------------------------------- harness properties


def test_sim_basic_join_events_and_messages() -> None:
    sim = GroupSim(seed=1)
    a, b = sim.add(), sim.add()
    sim.bcast(a, b"hello")
    sim.ucast(b, a, b"there")
    sim.run()
    assert sim.received[b] == [(a, "join"), (a, b"hello")]
    assert sim.received[a] == [(b, "join"), (b, b"there")]
    sim.leave(a)
    sim.run()
    assert sim.received[b][-1] == (a, "leave")
    sim.check()


op = st.one_of(
    st.tuples(st.just("bcast"), st.integers(0, 7), st.integers(1, 5000)),
    st.tuples(st.just("mcast"), st.integers(0, 7), st.integers(0, 2)),
    st.tuples(st.just("ucast"), st.integers(0, 7), st.integers(0, 7)),
    st.tuples(st.just("step"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("consume"), st.integers(0, 7), st.integers(1, 5)),
    st.tuples(st.just("join"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("leave"), st.integers(0, 7), st.just(0)),
    st.tuples(st.just("kill"), st.integers(0, 7), st.just(0)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    start=st.integers(2, 6),
    nodes=st.integers(1, 3),
    loopback=st.booleans(),
    ops=st.lists(op, max_size=120),
)
def test_property_exactly_once_in_order(
    seed: int, start: int, nodes: int, loopback: bool, ops: list[tuple[str, int, int]]
) -> None:
    """Random broadcasts, multicasts and unicasts with members joining, leaving and dying
    (EVT_GONE, no LEAVE), with and without loopback:
    every live receiver gets each sender's messages exactly once and in send order, join
    events precede and leave events follow that member's messages, nothing is lost, and no
    sender ever has more unread blocks at a receiver than the receiver advertised."""
    sim = GroupSim(seed=seed, nodes=nodes, loopback=loopback)
    for i in range(start):
        sim.add(instance=i % 3)
    n = 0
    for kind, x, y in ops:
        live = list(sim.socks)
        if not live and kind != "join":
            continue
        n += 1
        if kind == "bcast":
            sim.bcast(live[x % len(live)], b"b%d:" % n + b"." * y)
        elif kind == "mcast":
            sim.mcast(live[x % len(live)], y, b"m%d" % n)
        elif kind == "ucast":
            sim.ucast(live[x % len(live)], live[y % len(live)], b"u%d" % n)
        elif kind == "step":
            for _ in range(x):
                sim.step()
                for p in list(sim.socks):
                    sim.try_send(p)
        elif kind == "consume":
            sim.consume(live[x % len(live)], y)
        elif kind == "join":
            sim.add(instance=x)
        elif kind == "leave" and len(live) > 1:
            sim.leave(live[x % len(live)])
        elif kind == "kill" and len(live) > 1:
            sim.kill(live[x % len(live)])
    sim.run()
    sim.check()


@pytest.mark.parametrize("seed", range(3))
def test_more_senders_than_max_active_reclaim_and_deliver(seed: int) -> None:
    """20 senders to one receiver (max_active 16): the receiver reclaims windows (RECLAIM,
    REMIT happen) and every message still arrives, in order, without deadlock."""
    sim = GroupSim(seed=seed, nodes=3)
    ports = [sim.add() for _ in range(21)]
    sim.run()
    rcv = ports[0]
    assert sim.socks[rcv].group.max_active == 16
    for p in ports[1:]:
        for k in range(40):
            sim.ucast(p, rcv, bytes([k]) * 3000)
    sim.run()
    sim.check()
    assert sim.proto_count["GRP_RECLAIM_MSG"] > 0 and sim.proto_count["GRP_REMIT_MSG"] > 0
    got = [x for x in sim.received[rcv] if isinstance(x[1], bytes)]
    assert len(got) == 20 * 40


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), senders=st.integers(17, 24), mix=st.integers(0, 2))
def test_property_many_senders_mixed(seed: int, senders: int, mix: int) -> None:
    """Many senders mixing unicasts to one hot receiver with broadcasts: still exactly
    once, in order, and no deadlock while receivers read."""
    sim = GroupSim(seed=seed, nodes=2)
    ports = [sim.add(instance=i % 2) for i in range(senders + 1)]
    rng = sim.rng
    for p in ports[1:]:
        for k in range(8):
            r = rng.randrange(3)
            if r == 0 or mix == 0:
                sim.ucast(p, ports[0], b"%d-%d" % (p, k) * 200)
            elif r == 1:
                sim.bcast(p, b"b%d-%d" % (p, k))
            else:
                sim.mcast(p, k % 2, b"m%d-%d" % (p, k))
    sim.run()
    sim.check()


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["b", "m", "u"]), min_size=1, max_size=40),
    delays=st.lists(st.integers(0, 10), min_size=40, max_size=40),
    start=st.integers(0, 0xFFFF),
)
def test_property_delayed_broadcasts_sorted_back(
    kinds: list[str], delays: list[int], start: int
) -> None:
    """Broadcasts may travel a slower path than unicasts (the broadcast link) and arrive
    later and out of order among themselves; the per-member deferred queue restores the
    sender's order exactly (sequence numbers may wrap)."""
    g = group()  # our instance is 1
    joined(g, syncpt=start, adv=ADV_ACTIVE)
    seq = start
    stream: list[tuple[int, bytes]] = []  # (send position, frame)
    want: list[bytes] = []
    for i, k in enumerate(kinds):
        payload = b"%d" % i
        if k == "u":
            stream.append((i, data(UC, seq, payload)))
        else:
            inst = 1 if k == "b" or i % 2 else 2
            frame = data(MC if k == "m" else BC, seq, payload, instance=inst)
            stream.append((i + delays[i], frame))  # late by up to 10 positions
            seq = (seq + 1) & 0xFFFF
        if k != "m" or inst == 1:
            want.append(payload)
    # Arrival order: by (possibly delayed) position; a delayed broadcast lands after the
    # messages sent up to that position. Unicasts keep their order.
    arrivals = sorted(enumerate(stream), key=lambda x: (x[1][0], x[0]))
    for _, (_, frame) in arrivals:
        assert g.receive(frame)
    got = [d.frame[GROUP_H_SIZE:] for d in g.delivered]
    assert got == want
    m = g.member(PEER, 20)
    assert m is not None and not m.deferred and m.bc_rcv_nxt == seq and g.bad == 0


def _invariants(g: Group) -> None:
    ms = g.members()
    assert g.member_cnt == len(ms)
    counted = [m for m in ms if MemberState.ACTIVE <= m.state <= MemberState.REMITTED]
    assert g.active_cnt == len(counted)
    assert all(m.state == MemberState.ACTIVE for m in g._active)
    assert all(m.state == MemberState.PENDING for m in g._pending)
    windows = [m.window for m in g._small_win]
    assert windows == sorted(windows)
    assert all(m.in_small_win and g.member(m.node, m.port) is m for m in g._small_win)
    assert sum(m.in_small_win for m in ms) == len(g._small_win)
    assert g.dest_nodes() == {m.node for m in ms}
    assert 0 <= g.bc_ackers <= 0xFFFF
    for m in ms:
        assert 0 <= m.window <= 0xFFFF and 0 <= m.advertised <= 0xFFFF


event_op = st.one_of(
    # high (v >> 16) % 4 so that sequence numbers line up with the data's 0..3
    st.tuples(st.just("proto"), st.integers(0, 5), st.integers(0, 2), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("data"), st.sampled_from([5, 6, 7]), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("evt"), st.integers(1, 2), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("consume"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2), st.integers(1, 70)),
)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(event_op, max_size=80))
@example(ops=[("data", 7, 0, 0), ("consume", 0, 0, 0), ("evt", 2, 0, 1)])
@example(ops=[("data", 7, 1, 0), ("consume", 0, 0, 0), ("proto", 1, 1, 0)])
def test_property_hostile_peers_keep_state_consistent(ops: list[tuple[str, int, int, int]]) -> None:
    """Any sequence of protocol messages (any type and field values), data with any
    sequence numbers, binding events and local sends/consumes from four peers leaves the
    group's bookkeeping consistent and never raises."""
    g = group()
    g.join([(PEER, 22, 0)])
    joined(g, port=20)
    joined(g, port=21)
    for kind, a, who, v in ops:
        port = 20 + who
        if kind == "proto":
            assert g.receive(proto(a, port, high=(v >> 16) % 4, adv=v & 0xFFFF))
        elif kind == "data":
            assert g.receive(
                data(a, v, b"d" * (v * 300), port=port, ack=bool(v & 1), instance=v & 1)
            )
        elif kind == "evt":
            g.member_event(a, PEER, port, 0, node_up=bool(v & 1), gone=bool(v & 2))
        elif kind == "consume":
            while g.delivered:
                d = g.delivered.popleft()
                if not d.event:
                    g.consumed(d.node, d.port, d.blocks)
        elif a == 0:
            if not g.bc_cong(v):
                g.sent_bcast(v)
        else:
            cong, m = g.cong(PEER, port, v)
            if m is not None and not cong:
                g.sent_unicast(m, v)
        g.frames_to_send()
        _invariants(g)
    g.leave()
    assert g.members() == [] and g.active_cnt == 0
