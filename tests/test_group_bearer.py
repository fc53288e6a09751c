"""Group traffic across nodes through the bearer worker, at the frame level.

Frames are written by hand: into node A's bearer inbox (as a group socket's send does
through NodeClient.remote_lane) and, for the broadcast receive link, as UDP datagrams in
the broadcast link's format. What node B's bearer worker delivers is read raw from the
inboxes of plain sockets there (no group client involved): GROUP_PROTOCOL and GRP_UCAST
to their port, GRP_BCAST/GRP_MCAST one copy per socket bound to the group's type with
cluster scope, naming that port in w5. Then the LEAVE the bearer worker sends for a
group member whose process was killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from bearer_helpers import linked_pair, up_peers, wait_for
from test_bcast import KernelLikePeer, on_bcast_link

import tipcshm
from tipcshm import wire
from tipcshm.core.events import Delivered
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import BEARER_FRAME_PREFIX, NodeSegment, bearer_inbox_name
from tipcshm.wire import group as wgroup
from tipcshm.wire.header import DataType, GroupMsgType, User

pytestmark = pytest.mark.timeout(60)

GTYPE = 4711
NAME, NODE_SCOPE = tipcshm.TIPC_ADDR_NAME, tipcshm.TIPC_NODE_SCOPE
JOIN, LEAVE = GroupMsgType.GRP_JOIN_MSG, GroupMsgType.GRP_LEAVE_MSG
BCAST, MCAST, UCAST = DataType.GRP_BCAST_MSG, DataType.GRP_MCAST_MSG, DataType.GRP_UCAST_MSG
_NON_SEQ = 1 << 20


def grp_data(
    mtype: int,
    src: int,
    src_port: int,
    dst: int,
    dst_port: int,
    seqno: int,
    payload: bytes,
    *,
    gtype: int = GTYPE,
    instance: int = 0,
    scope: int = wire.LOOKUP_SCOPE_CLUSTER,
    ack_req: bool = False,
) -> bytes:
    """A group data message as a member socket builds it (44-byte header)."""
    h = wire.Header(
        user=User.LOW_IMPORTANCE,
        hsize=wire.GROUP_H_SIZE,
        size=wire.GROUP_H_SIZE + len(payload),
        mtype=mtype,
        lookup_scope=scope,
        prev_node=src,
        orig_port=src_port,
        dest_port=dst_port,
        orig_node=src,
        dest_node=dst,
        name_type=gtype,
        name_instance=instance,
        name_upper=wgroup.grp_w10(seqno, ack_req=ack_req),
    )
    return wire.encode_message(h, payload)


def proto(mtype: int, src: int, src_port: int, dst: int, dst_port: int, high: int = 0) -> bytes:
    return wgroup.build_proto(
        mtype, own_node=src, own_port=src_port, dest_node=dst, dest_port=dst_port, high=high
    )


def words(frame: bytes) -> tuple[int, ...]:
    """The header words (10 of a GROUP_PROTOCOL message, 11 of group data)."""
    return struct.unpack_from(f">{min(len(frame), 44) // 4}I", frame)


def same_message(got: bytes, sent: bytes, *, dest_port: int | None = None) -> None:
    """``got`` is ``sent`` as a link delivers it: the link words (w1's broadcast ack, w2,
    w3) are the link's, w5 may name the receiving port; everything else is unchanged."""
    assert len(got) == len(sent)
    g, s = list(words(got)), list(words(sent))
    assert g[0] & ~_NON_SEQ == s[0] & ~_NON_SEQ
    assert g[1] >> 16 == s[1] >> 16
    if dest_port is not None:
        assert g[5] == dest_port
        g[5] = s[5]
    assert g[4:] == s[4:]
    assert got[len(g) * 4 :] == sent[len(s) * 4 :]


class Writer:
    """Node A's bearer inbox, written to as a group socket's sends do."""

    def __init__(self, node: str, seg: NodeSegment) -> None:
        self.inbox = Inbox.attach(bearer_inbox_name(node, 0), trust=seg.trust, tag=seg.tag)
        self.p = self.inbox.producer()

    def put(self, dest: int, *msgs: bytes) -> None:
        for m in msgs:
            frame = BEARER_FRAME_PREFIX.pack(dest, 0) + m
            assert self.p.wait_space(len(frame), 10), "the bearer inbox stayed full"
            with self.p.lock:
                assert self.p.write(frame)

    def close(self) -> None:
        self.inbox.detach()


def raw_frames(s: tipcshm.socket, n: int, timeout: float = 5.0) -> list[bytes]:
    """The next ``n`` frames in socket ``s``'s inbox, as they were written there."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    inbox = s._inbox
    while len(out) < n:
        f = inbox.get()
        if f is not None:
            out.append(bytes(f))
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(out)} of {n} frames came")
        inbox.wait(min(left, 0.05))
    return out


def nothing_more(w: Writer, src: int, dst: int, *socks: tipcshm.socket) -> None:
    """Nothing but a fence comes to these sockets: a GRP_UCAST written now into A's
    bearer inbox for each is the next frame it gets (one worker delivers in order, so
    anything sent to it before the fence would come first)."""
    for s in socks:
        w.put(dst, grp_data(UCAST, src, 1, dst, port_of(s), 0, b"fence"))
    for s in socks:
        (f,) = raw_frames(s, 1)
        assert f.endswith(b"fence") and words(f)[4] == 1, f"unexpected frame for {s.port}"


def port_of(s: tipcshm.socket) -> int:
    return int(tuple(s.getsockname())[2])


@pytest.fixture
def pair():
    with linked_pair() as (a, b, pa, pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) == {sb.addr} and up_peers(sb) == {sa.addr}, 10, "links")
            yield a, b, pa, pb, sa, sb
        finally:
            sa.close()
            sb.close()


# -- sans-IO: the stack passes group traffic up from both links ---------------------------


def test_the_stack_delivers_group_protocol_and_broadcast_link_group_data() -> None:
    p = KernelLikePeer(last_bcast=0x20)
    p.run(3.0)
    ours, peer = p.stacks
    assert ours.links_up() == {0x1002}
    join = proto(JOIN, 0x1002, 77, 0x1001, 99, high=5)
    peer.send(0x1001, join, p.now)
    p.flush()
    bc = grp_data(BCAST, 0x1002, 77, 0, 0, 5, b"to the group")
    p.last_bcast += 1
    ours.receive(on_bcast_link(bc, p.last_bcast, src=0x1002), p.now, None)
    p.flush()
    got = [e.frame for e in p.events[0] if isinstance(e, Delivered) and e.source == 0x1002]
    assert len(got) == 2
    same_message(got[0], join)
    same_message(got[1], bc, dest_port=4711)  # the cluster id, until the bearer's delivery
    assert ours.statistics().other_users_dropped == 0


# -- through the bearer workers -----------------------------------------------------------


def test_group_protocol_and_unicasts_reach_their_port_on_the_other_node(pair) -> None:
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    try:
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as rx:
            port = port_of(rx)
            sent = [
                proto(JOIN, sa.addr, 4242, sb.addr, port, high=7),
                grp_data(UCAST, sa.addr, 4242, sb.addr, port, 7, b"one"),
                proto(GroupMsgType.GRP_ADV_MSG, sa.addr, 4242, sb.addr, port),
                grp_data(UCAST, sa.addr, 4242, sb.addr, port, 7, b"two" * 500),
                proto(LEAVE, sa.addr, 4242, sb.addr, port, high=7),
            ]
            w.put(sb.addr, *sent)
            got = raw_frames(rx, len(sent))
            for g, s in zip(got, sent, strict=True):
                same_message(g, s)
            # to a port that does not exist: dropped, never returned (dest-droppable)
            dropped = sb.bearer_counters(0)["dropped"]
            rejected = sb.bearer_counters(0)["rejected"]
            w.put(
                sb.addr,
                proto(JOIN, sa.addr, 4242, sb.addr, port + 1),
                grp_data(UCAST, sa.addr, 4242, sb.addr, port + 1, 0, b"x"),
            )
            wait_for(lambda: sb.bearer_counters(0)["dropped"] == dropped + 2, 5, "dropped")
            assert sb.bearer_counters(0)["rejected"] == rejected
            nothing_more(w, sa.addr, sb.addr, rx)
            assert sa.bearer_counters(0)["bad_from_lanes"] == 0
    finally:
        w.close()


def test_broadcasts_reach_every_socket_bound_to_the_type_with_cluster_scope(pair) -> None:
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    socks = [tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) for _ in range(5)]
    try:
        one, two, node_only, other_type, unbound = socks
        one.bind((NAME, GTYPE, 1, 0))
        one.bind((NAME, GTYPE, 2, 0))  # two bindings, still one copy
        two.bind((NAME, GTYPE, 7, 0))
        node_only.bind((NAME, GTYPE, 3, 0, NODE_SCOPE))
        other_type.bind((NAME, GTYPE + 1, 1, 0))
        bc = grp_data(BCAST, sa.addr, 4242, sb.addr, 0, 3, b"everyone", ack_req=True)
        mc = grp_data(MCAST, sa.addr, 4242, sb.addr, 0, 4, b"instance 7", instance=7)
        w.put(sb.addr, bc, mc)
        for s in (one, two):
            got = raw_frames(s, 2)
            same_message(got[0], bc, dest_port=port_of(s))
            same_message(got[1], mc, dest_port=port_of(s))  # the group filters instances
        nothing_more(w, sa.addr, sb.addr, *socks)
        # a node-scope broadcast from another node reaches nobody (and A refuses to send it)
        w.put(sb.addr, grp_data(BCAST, sa.addr, 4242, sb.addr, 0, 5, b"x", scope=3))
        wait_for(lambda: sa.bearer_counters(0)["bad_from_lanes"] == 1, 5, "refused")
        nothing_more(w, sa.addr, sb.addr, *socks)
    finally:
        for s in socks:
            s.close()
        w.close()


def test_a_full_receiver_gets_every_group_message_in_order_later(pair) -> None:
    """Group data and protocol messages for a receiver whose inbox is full wait in the
    bearer worker, in order, and are delivered as room appears: never dropped or
    returned while the port lives (a lost one would stall the group's ordering)."""
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    with contextlib.closing(w), tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as rx:
        rx.bind((NAME, GTYPE, 1, 0))
        port = port_of(rx)
        dropped = sb.bearer_counters(0)["dropped"]
        big = b"z" * 30000
        sent = []
        for i in range(24):  # several lanes' worth
            if i % 3 == 0:
                m = grp_data(BCAST, sa.addr, 4242, sb.addr, 0, i, big + bytes([i]))
            elif i % 3 == 1:
                m = grp_data(UCAST, sa.addr, 4242, sb.addr, port, i, big + bytes([i]))
            else:
                m = proto(GroupMsgType.GRP_ADV_MSG, sa.addr, 4242, sb.addr, port, high=i)
            sent.append(m)
        w.put(sb.addr, *sent)
        # the receiver is full (what it has is less than what was sent) before it reads
        wait_for(lambda: rx._inbox.fill()[0] > 100_000, 10, "a full receiver")
        assert rx._inbox.fill()[0] < sum(len(m) for m in sent)
        got = raw_frames(rx, len(sent), timeout=20)
        for g, m in zip(got, sent, strict=True):
            same_message(g, m, dest_port=port)
        assert sb.bearer_counters(0)["dropped"] == dropped
        assert sb.bearer_counters(0)["rejected"] == 0
        nothing_more(w, sa.addr, sb.addr, rx)


def test_broadcast_link_group_messages_are_delivered_like_replicast_ones(pair) -> None:
    """A kernel sends a group broadcast to many nodes on its broadcast link: non-sequenced,
    w5 the cluster id, its own broadcast sequence. A's link told B that sequence starts
    after 0 (tipcshm never broadcasts), so B takes seqno 1 from A's address as the next."""
    a, b, _pa, pb, sa, sb = pair
    w = Writer(a, sa)
    with (
        contextlib.closing(w),
        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as one,
        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as node_only,
    ):
        one.bind((NAME, GTYPE, 1, 0))
        node_only.bind((NAME, GTYPE, 2, 0, NODE_SCOPE))
        bc = grp_data(BCAST, sa.addr, 4242, 0, 0, 9, b"on the broadcast link")
        mc = grp_data(MCAST, sa.addr, 4242, 0, 0, 10, b"mcast", instance=1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for seqno, m in ((1, bc), (2, mc)):
                u.sendto(on_bcast_link(m, seqno, src=sa.addr), ("127.0.0.1", pb))
        got = raw_frames(one, 2)
        same_message(got[0], bc, dest_port=port_of(one))
        same_message(got[1], mc, dest_port=port_of(one))
        nothing_more(w, sa.addr, sb.addr, one, node_only)


def test_malformed_group_frames_from_local_senders_are_refused_and_counted(pair) -> None:
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    try:
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as rx:
            rx.bind((NAME, GTYPE, 1, 0))
            port = port_of(rx)
            good = proto(JOIN, sa.addr, 4242, sb.addr, port)

            def patched(msg: bytes, word: int, value: int) -> bytes:
                buf = bytearray(msg)
                struct.pack_into(">I", buf, 4 * word, value)
                return bytes(buf)

            w0, w1 = words(good)[:2]
            evt = grp_data(UCAST, sa.addr, 4242, sb.addr, port, 0, b"")
            evt = patched(evt, 1, wire.make_w1(DataType.GRP_MEMBER_EVT))
            short = wire.encode_message(
                wire.Header(
                    user=0,
                    hsize=40,
                    size=41,
                    mtype=BCAST,
                    lookup_scope=2,
                    orig_node=sa.addr,
                    dest_node=sb.addr,
                    name_type=GTYPE,
                ),
                b"x",
            )
            bad = [
                patched(good, 0, w0 & ~wire.DEST_DROPPABLE_BIT),  # not droppable
                patched(good, 1, wire.make_w1(6)),  # no such GROUP_PROTOCOL type
                patched(good, 5, 0),  # to port 0
                patched(good, 6, sa.addr + 1),  # not from this node
                good[:36] + b"",  # truncated: the size word disagrees
                evt,  # member events never leave the node
                short,  # a group data message needs its 44-byte header
                grp_data(UCAST, sa.addr, 4242, sb.addr, 0, 0, b"x"),  # unicast to port 0
                grp_data(BCAST, sa.addr, 4242, sb.addr, port, 0, b"x"),  # bcast to a port
                patched(
                    grp_data(UCAST, sa.addr, 4242, sb.addr, port, 0, b"x"),
                    1,
                    wire.make_w1(UCAST, errcode=2),
                ),
                patched(good, 1, wire.make_w1(JOIN, errcode=2)),  # no errors in the protocol
            ]
            assert w1 == wire.make_w1(JOIN)
            w.put(sb.addr, *bad)
            wait_for(lambda: sa.bearer_counters(0)["bad_from_lanes"] == len(bad), 5, "all refused")
            w.put(sb.addr, good)
            got = raw_frames(rx, 2)
            same_message(got[0], good)
            # no socket 4242 on A: its JOIN is answered with the LEAVE its closing sends
            same_message(got[1], proto(LEAVE, sa.addr, 4242, sb.addr, port))
            nothing_more(w, sa.addr, sb.addr, rx)
    finally:
        w.close()


_MEMBER = textwrap.dedent(
    """
    import sys, time
    import tipcshm
    from tipcshm.client import get_client
    from tipcshm.wire import group as wgroup
    from tipcshm.wire.header import GroupMsgType, DataType
    sys.path.insert(0, {tests!r})
    from test_group_bearer import grp_data, proto

    node, peer, p1, p2, script = {node!r}, {peer}, {p1}, {p2}, {script!r}
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    me = s.getsockname()[2]
    client = get_client(node)
    own = client.addr
    lane = client.remote_lane(peer)
    J, L = GroupMsgType.GRP_JOIN_MSG, GroupMsgType.GRP_LEAVE_MSG
    msgs = []
    for step in script:
        kind = step[0]
        if kind == "join":
            msgs.append(proto(J, own, me, peer, step[1], high=step[2]))
        elif kind == "leave":
            msgs.append(proto(L, own, me, peer, step[1], high=step[2]))
        elif kind == "bcast":
            msgs.append(grp_data(DataType.GRP_BCAST_MSG, own, me, peer, 0, step[1], b"b"))
        elif kind == "ucast":
            msgs.append(grp_data(DataType.GRP_UCAST_MSG, own, me, peer, step[1], step[2], b"u"))
    with lane.lock:
        for m in msgs:
            assert lane.write(m)
    print(me, flush=True)
    if {close!r}:
        s.close()
    time.sleep(60)
    """
)


def _member(node: str, peer: int, p1: int, p2: int, script: list, close: bool = False):
    code = _MEMBER.format(
        tests=os.path.dirname(__file__),
        node=node,
        peer=peer,
        p1=p1,
        p2=p2,
        script=script,
        close=close,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip():
        proc.kill()
        proc.wait(5)
        raise AssertionError("the member process did not start")
    return proc, int(line)


def test_a_killed_member_leaves_the_members_it_joined_on_the_other_node(pair) -> None:
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    with (
        contextlib.closing(w),
        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as m1,
        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as m2,
    ):
        m1.bind((NAME, GTYPE, 1, 0))
        m2.bind((NAME, GTYPE, 2, 0))
        p1, p2 = port_of(m1), port_of(m2)
        script = [
            ("join", p1, 3),
            ("join", p2, 3),
            ("bcast", 3),  # the next broadcast would carry 4
            ("leave", p2, 4),  # m2 was left properly: no LEAVE on behalf for it
            ("bcast", 4),
            ("ucast", p1, 5),
            ("bcast", 5),
        ]
        proc, port = _member(a, sb.addr, p1, p2, script)
        try:
            # m1: JOIN, bcast, bcast, ucast, bcast; m2: JOIN, bcast, LEAVE, bcast, bcast
            # (broadcasts reach every bound socket: the group layer filters)
            f1 = raw_frames(m1, 5)
            f2 = raw_frames(m2, 5)
            assert [words(f)[4] for f in f1 + f2] == [port] * 10
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            (leave,) = raw_frames(m1, 1, timeout=10)
            lw = words(leave)
            assert wire.user_of(lw[0]) == User.GROUP_PROTOCOL and lw[1] >> 29 == LEAVE
            assert (lw[4], lw[5], lw[6], lw[7]) == (port, p1, sa.addr, sb.addr)
            assert wgroup.w9_high(lw[9]) == 6  # after the broadcast with seqno 5
            assert lw[0] & wire.DEST_DROPPABLE_BIT and len(leave) == wire.INT_H_SIZE
            nothing_more(w, sa.addr, sb.addr, m1, m2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_a_member_that_closes_without_leaving_gets_its_leave_sent(pair) -> None:
    """The socket closed (its entry is no longer OPEN) while the process lives on: the
    LEAVE is sent just the same, with a unicast's seqno as the sync point."""
    a, b, _pa, _pb, sa, sb = pair
    w = Writer(a, sa)
    with contextlib.closing(w), tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as m1:
        p1 = port_of(m1)
        proc, port = _member(a, sb.addr, p1, 0, [("join", p1, 0xFFFF), ("ucast", p1, 0)], True)
        try:
            f = raw_frames(m1, 3, timeout=10)
            lw = words(f[2])
            assert lw[1] >> 29 == LEAVE and lw[4] == port
            assert wgroup.w9_high(lw[9]) == 0
            assert proc.poll() is None
            nothing_more(w, sa.addr, sb.addr, m1)
        finally:
            proc.kill()
            proc.wait(5)
