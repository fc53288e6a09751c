"""The communication-group state machine of one group socket, sans-IO.

Mirrors net/tipc/group.c (tipc_group_join, tipc_group_member_evt, tipc_group_proto_rcv,
tipc_group_filter_msg, tipc_group_update_rcv_win, tipc_group_cong, tipc_group_bc_cong,
tipc_group_update_bc_members) and the group parts of socket.c. Facts come from
/work/shared/tipc-wire.md and the issue-13 notes; no kernel code is copied.

Theory of operation
-------------------
A group socket keeps one :class:`Member` per other socket bound to the group's service
type (in the group's scope). Members learn of each other twice: from the topology
subscription (a binding appeared or went away: :meth:`Group.join` for the snapshot and
:meth:`Group.member_event` afterwards) and from GROUP_PROTOCOL messages (JOIN, LEAVE)
the members send each other. A member is taken into service (JOINED) when both have been
seen; the user then gets a PUBLISHED member event, ordered among that member's messages.

Flow control is per pair and counted in 1-KiB blocks: each side *advertises* a window to
each sender (ADV_IDLE for an idle sender, ADV_ACTIVE for one of at most ``max_active``
active senders); a sender may send a member only while its ``window`` covers the message.
When more senders than ``max_active`` want to send, the receiver RECLAIMs the oldest
active sender's window; the sender REMITs what it had left and drops back to idle.

Ordering: every group data message carries the sender's broadcast sequence number. A
receiver keeps per member the next broadcast it expects (``bc_rcv_nxt``) and a deferred
queue: broadcasts are sorted in by sequence number, unicasts and member events go to the
tail, and the head is released while its number is not ahead of ``bc_rcv_nxt``.

Everything the socket must do is an output: :attr:`Group.delivered` (messages and events
for the application, in order), :meth:`Group.frames_to_send` (GROUP_PROTOCOL frames),
:attr:`Group.open` and :attr:`Group.wakeup` (a blocked sender may retry). The socket owns
clocks, shared memory and I/O, and calls :meth:`Group.cong` / :meth:`Group.bc_cong` before
and :meth:`Group.sent_unicast` / :meth:`Group.sent_bcast` after sending data itself.

Untrusted input: :meth:`Group.receive` validates every field it uses and returns False
(counting :attr:`Group.bad`) for a malformed frame; it never raises on bad bytes.

``advertised``, ``window`` and the sequence numbers are u16 in the kernel and are kept
modulo 2**16 here. Departures from the kernel, all defensive: an ACK arriving while no
acknowledgement is awaited is ignored (the kernel's u16 counter would wrap and block
broadcasts for good); a data message naming another service type in w8 is dropped; after
:meth:`Group.leave` the object ignores all input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from struct import Struct
from typing import Final

from tipcshm.core.nametable import NODE_SCOPE
from tipcshm.wire.group import (
    blocks as msg_blocks,
)
from tipcshm.wire.group import (
    build_member_evt_msg,
    build_proto,
    w9_high,
    w9_low,
    w10_ack_req,
    w10_seqno,
)
from tipcshm.wire.header import (
    GROUP_H_SIZE,
    INT_H_SIZE,
    MAX_H_SIZE,
    MAX_MSG_SIZE,
    MAX_USER_MSG_SIZE,
    TIPC_VERSION,
    U32,
    DataType,
    GroupMsgType,
    User,
    seq_less,
    seq_more,
    w0_hsize,
    w0_size,
    w0_user,
    w0_version,
    w1_mtype,
)

__all__ = [
    "ADV_ACTIVE",
    "ADV_IDLE",
    "ADV_UNIT",
    "Delivery",
    "Group",
    "Member",
    "MemberState",
]

ADV_UNIT: Final = (MAX_MSG_SIZE + MAX_H_SIZE) // 1024 + 1  # 65 blocks
ADV_IDLE: Final = ADV_UNIT
ADV_ACTIVE: Final = 12 * ADV_UNIT
_RECLAIM_ADV_LIMIT: Final = ADV_ACTIVE * 3 // 4

_U16: Final = 0xFFFF
_EVT_PUBLISHED: Final = 1  # TIPC_PUBLISHED
_EVT_WITHDRAWN: Final = 2  # TIPC_WITHDRAWN

# Words 0, 1, 4 (origin port), 6 (origin node), 8 (type), 9 (instance), 10 (group word)
# of a group data message; words 0, 1, 4, 6, 9 of a GROUP_PROTOCOL message.
_DATA_RX: Final = Struct(">II8xI4xI4xIII")
_PROTO_RX: Final = Struct(">II8xI4xI8xI")

_BCAST: Final = int(DataType.GRP_BCAST_MSG)
_MCAST: Final = int(DataType.GRP_MCAST_MSG)
_UCAST: Final = int(DataType.GRP_UCAST_MSG)
_EVT: Final = int(DataType.GRP_MEMBER_EVT)
_JOIN: Final = int(GroupMsgType.GRP_JOIN_MSG)
_LEAVE: Final = int(GroupMsgType.GRP_LEAVE_MSG)
_ADV: Final = int(GroupMsgType.GRP_ADV_MSG)
_ACK: Final = int(GroupMsgType.GRP_ACK_MSG)
_RECLAIM: Final = int(GroupMsgType.GRP_RECLAIM_MSG)
_REMIT: Final = int(GroupMsgType.GRP_REMIT_MSG)
_GROUP_PROTOCOL: Final = int(User.GROUP_PROTOCOL)
_MAX_DATA_USER: Final = int(User.CRITICAL_IMPORTANCE)


class MemberState(IntEnum):
    """A member's state as this socket sees it (the order matters: group.c mbr_state)."""

    JOINING = 0  # its JOIN arrived, its binding not yet seen
    PUBLISHED = 1  # its binding seen, its JOIN not yet
    JOINED = 2  # in service, idle sender (window ADV_IDLE)
    PENDING = 3  # wants to send, waits for an active slot
    ACTIVE = 4  # one of at most max_active active senders (window ADV_ACTIVE)
    RECLAIMING = 5  # we sent RECLAIM, wait for REMIT
    REMITTED = 6  # REMIT came; messages sent before it are still unread
    LEAVING = 7  # withdrawn or LEAVE seen; deleted after its leave event is delivered


# The states as module constants for the per-message paths (an enum attribute lookup
# costs about 0.3 us on CPython 3.11); Member.state still holds the MemberState.
_JOINING: Final = MemberState.JOINING
_PUBLISHED: Final = MemberState.PUBLISHED
_JOINED: Final = MemberState.JOINED
_PENDING: Final = MemberState.PENDING
_ACTIVE: Final = MemberState.ACTIVE
_RECLAIMING: Final = MemberState.RECLAIMING
_REMITTED: Final = MemberState.REMITTED
_LEAVING: Final = MemberState.LEAVING


@dataclass(slots=True)
class Delivery:
    """One item ready for the application, in order."""

    frame: bytes  # data: the message as received; event: a GRP_MEMBER_EVT header
    node: int  # the member (message origin)
    port: int
    instance: int  # the member's instance
    event: int  # 0 for data, 1 PUBLISHED / 2 WITHDRAWN for member events
    blocks: int  # flow-control cost of a data message (consumed() takes it), 0 for events


# A deferred item: (bc seqno, data type, Delivery, w9 instance, w10).
_Item = tuple[int, int, Delivery, int, int]


@dataclass(slots=True, eq=False)
class Member:
    """Another socket of the group, as this socket sees it (group.c struct tipc_member)."""

    node: int
    port: int
    instance: int
    state: MemberState
    advertised: int = 0  # u16: what it may still send us
    window: int = 0  # u16: what we may still send it
    bc_rcv_nxt: int = 0  # u16: its next broadcast we expect
    bc_syncpt: int = 0  # u16: where its JOIN/LEAVE sits in its broadcast stream
    bc_acked: int = 0  # u16: the last of our broadcasts it acknowledged
    deferred: deque[_Item] = field(default_factory=deque)
    in_small_win: bool = False


def _key(node: int, port: int) -> int:
    return (node << 32) | port


class Group:
    """One group socket's view of its group (see the module docstring)."""

    def __init__(
        self,
        own_node: int,
        port: int,
        type: int,
        instance: int,
        scope: int,
        *,
        loopback: bool,
        events: bool,
    ) -> None:
        self.own_node = own_node
        self.port = port
        self.type = type
        self.instance = instance
        self.scope = scope
        self.loopback = loopback
        self.events = events
        self.bc_snd_nxt = 0
        self.bc_ackers = 0
        self.open = False
        self.wakeup = False
        self.bad = 0
        self.member_cnt = 0
        self.active_cnt = 0
        self.max_active = 16
        self.delivered: deque[Delivery] = deque()
        self.left = False
        self._members: dict[int, Member] = {}
        self._small_win: list[Member] = []
        self._active: dict[Member, None] = {}  # FIFO, oldest first
        self._pending: dict[Member, None] = {}
        self._nodes: dict[int, int] = {}  # node -> members on it
        self._xmit: list[tuple[int, int, bytes]] = []
        self._ack_next = False  # "mandatory replicast": the next broadcast requests acks
        self._rcvbuf_limit()

    # ------------------------------------------------------------------ queries

    def member(self, node: int, port: int) -> Member | None:
        return self._members.get(_key(node, port))

    def members(self) -> list[Member]:
        """Every member, sorted by (node, port)."""
        return [self._members[k] for k in sorted(self._members)]

    def dest_nodes(self) -> set[int]:
        """The nodes hosting members (this node included when it hosts one)."""
        return set(self._nodes)

    def bcast_ack_req(self) -> bool:
        """The ack-request bit the next broadcast carries."""
        return self._ack_next

    def frames_to_send(self) -> list[tuple[int, int, bytes]]:
        """(dest node, dest port, GROUP_PROTOCOL frame) queued since the last call."""
        out = self._xmit
        self._xmit = []
        return out

    # ------------------------------------------------------------------ membership

    def join(self, members: Iterable[tuple[int, int, int]]) -> None:
        """Take the bindings that existed when the subscription started as members
        (PUBLISHED), skipping our own socket, and send each a JOIN (tipc_group_join)."""
        for node, port, instance in members:
            if node == self.own_node and port == self.port:
                continue
            if self.scope == NODE_SCOPE and node != self.own_node:
                continue
            if _key(node, port) not in self._members:
                self._create(node, port, instance, _PUBLISHED)
        for m in self.members():
            self._xmit_proto(m, _JOIN)
            self._update_member(m, 0)
        self._ack_next = True
        self._rcvbuf_limit()

    def leave(self) -> None:
        """Send every member a LEAVE and forget them all (tipc_group_delete)."""
        for m in self.members():
            self._xmit_proto(m, _LEAVE)
        self._members.clear()
        self._small_win.clear()
        self._active.clear()
        self._pending.clear()
        self._nodes.clear()
        self.member_cnt = 0
        self.active_cnt = 0
        self.bc_ackers = 0
        self.left = True

    def member_event(
        self, event: int, node: int, port: int, instance: int, *, node_up: bool, gone: bool = False
    ) -> None:
        """A binding of the group's type appeared (1) or went away (2)
        (tipc_group_member_evt). ``node_up``: the member's node is reachable; ``gone``: the
        name-table worker saw the member's socket close or its process die (EVT_GONE)."""
        if self.left:
            return
        if not self.loopback and node == self.own_node and port == self.port:
            return
        if self.scope == NODE_SCOPE and node != self.own_node:
            return
        m = self._members.get(_key(node, port))
        if event == _EVT_PUBLISHED:
            if m is None:
                m = self._create(node, port, instance, _PUBLISHED)
                self._update_member(m, 0)
                self._xmit_proto(m, _JOIN)
            elif m.state == _JOINING:
                m.instance = instance
                m.state = _JOINED
                self._open(m)
                self._update_member(m, 0)
                self._xmit_proto(m, _JOIN)
                self._create_event(m, _EVT_PUBLISHED, m.bc_syncpt)
        elif event == _EVT_WITHDRAWN and m is not None:
            already_leaving = m.state == _LEAVING
            self._decr_active(m)
            m.state = _LEAVING
            self._active.pop(m, None)
            self._pending.pop(m, None)
            self._open(m)
            if not node_up or (gone and not already_leaving):
                self._create_event(m, _EVT_WITHDRAWN, m.bc_rcv_nxt)
        self._rcvbuf_limit()

    # ------------------------------------------------------------------ receiving

    def receive(self, frame: bytes) -> bool:
        """A group data message (types 5/6/7) or GROUP_PROTOCOL message from another
        socket. False (counted in :attr:`bad`) when malformed; True otherwise, also when
        the message is well-formed but dropped (unknown member, duplicate)."""
        n = len(frame)
        if n < INT_H_SIZE:
            self.bad += 1
            return False
        w0 = U32.unpack_from(frame)[0]
        user = w0_user(w0)
        hsize = w0_hsize(w0)
        size = w0_size(w0)
        if w0_version(w0) != TIPC_VERSION or size > n or size < hsize:
            self.bad += 1
            return False
        if user == _GROUP_PROTOCOL:
            if hsize != INT_H_SIZE:
                self.bad += 1
                return False
            w0, w1, oport, onode, w9 = _PROTO_RX.unpack_from(frame)
            mtype = w1_mtype(w1)
            if mtype > _REMIT:
                self.bad += 1
                return False
            self._proto_rcv(mtype, onode, oport, w9)
            return True
        if user > _MAX_DATA_USER or hsize < GROUP_H_SIZE or size - hsize > MAX_USER_MSG_SIZE:
            self.bad += 1
            return False
        w0, w1, oport, onode, wtype, w9, w10 = _DATA_RX.unpack_from(frame)
        mtype = w1_mtype(w1)
        if mtype < _BCAST:
            self.bad += 1
            return False
        if wtype != self.type:
            return True  # not our group's message (msg_in_group); dropped
        m = self._members.get((onode << 32) | oport)
        if m is None or m.state <= _PUBLISHED:  # not is_sender(m)
            return True
        seqno = w10_seqno(w10)
        rcv_nxt = m.bc_rcv_nxt
        if seq_less(seqno, rcv_nxt):
            return True  # a duplicate or older than its JOIN
        if n != size:
            frame = frame[:size]
        d = Delivery(frame, onode, oport, m.instance, 0, msg_blocks(size))
        if not m.deferred:
            # The common case, in order: decide without queueing.
            if seqno == rcv_nxt:
                if mtype == _UCAST:
                    self.delivered.append(d)
                else:
                    self._release(m, mtype, d, w9, w10)
                return True
            m.deferred.append((seqno, mtype, d, w9, w10))
            return True
        self._sort_in(m, (seqno, mtype, d, w9, w10), mtype != _UCAST)
        self._drain(m)
        return True

    def consumed(self, node: int, port: int, blocks: int) -> None:
        """The application took a data Delivery (tipc_group_update_rcv_win)."""
        m = self._members.get((node << 32) | port)
        if m is None:
            return
        m.advertised = (m.advertised - blocks) & _U16
        state = m.state
        if state == _ACTIVE:
            active = self._active
            active.pop(m, None)
            active[m] = None
            if m.advertised <= _RECLAIM_ADV_LIMIT:
                self._xmit_proto(m, _ADV)
        elif state == _JOINED:
            self._joined_rcv(m)
        elif state == _REMITTED:
            if m.advertised > ADV_IDLE:
                return
            m.state = _JOINED
            self.active_cnt -= 1
            if m.advertised < ADV_IDLE:
                self._xmit_proto(m, _ADV)
            self._activate_pending()

    # ------------------------------------------------------------------ sending

    def cong(self, node: int, port: int, blocks: int) -> tuple[bool, Member | None]:
        """Would ``blocks`` to member <node:port> exceed its window (tipc_group_cong)?
        The member is None when it is not a receiver (the caller then does not send)."""
        m = self._members.get((node << 32) | port)
        if m is None or m.state == _JOINING or m.state == _LEAVING:
            return False, None
        if m.window >= blocks:
            return False, m
        self.open = False
        adv = m.advertised
        state = m.state
        if (
            (state == _JOINED and adv == ADV_IDLE)
            or (state == _ACTIVE and adv == ADV_ACTIVE)
            or (state == _PENDING and adv == ADV_IDLE)
        ):
            return True, m
        # Not fully advertised: do it now, so two members blocked on each other both move.
        self._xmit_proto(m, _ADV)
        return True, m

    def bc_cong(self, blocks: int) -> bool:
        """Would a broadcast of ``blocks`` exceed some member's window (tipc_group_bc_cong)?"""
        if self.bc_ackers:
            self.open = False
            return True
        if not self._small_win:
            return False
        m = self._small_win[0]
        if m.window >= blocks:
            return False
        return self.cong(m.node, m.port, blocks)[0]

    def sent_unicast(self, member: Member, blocks: int) -> None:
        """A GRP_UCAST_MSG of ``blocks`` went to ``member``; the next broadcast must ask
        for acknowledgements."""
        self._update_member(member, blocks)
        self._ack_next = True

    def sent_bcast(self, blocks: int) -> None:
        """A GRP_BCAST/GRP_MCAST_MSG of ``blocks`` carrying bc_snd_nxt and
        :meth:`bcast_ack_req` went to every member (tipc_group_update_bc_members)."""
        prev = (self.bc_snd_nxt - 1) & _U16
        ackers = 0
        for m in self._members.values():
            if m.state != _JOINING and m.state != _LEAVING:
                self._update_member(m, blocks)
                m.bc_acked = prev
                ackers += 1
        if self._ack_next:
            self.bc_ackers = ackers
        self.bc_snd_nxt = (self.bc_snd_nxt + 1) & _U16
        self._ack_next = False

    # ------------------------------------------------------------------ internals

    def _create(self, node: int, port: int, instance: int, state: MemberState) -> Member:
        m = Member(node, port, instance, state, bc_acked=(self.bc_snd_nxt - 1) & _U16)
        self._members[_key(node, port)] = m
        self.member_cnt += 1
        self._nodes[node] = self._nodes.get(node, 0) + 1
        return m

    def _delete(self, m: Member) -> None:
        del self._members[_key(m.node, m.port)]
        self.member_cnt -= 1
        if self.bc_ackers and seq_less(m.bc_acked, (self.bc_snd_nxt - 1) & _U16):
            self.bc_ackers -= 1
        self._active.pop(m, None)
        self._pending.pop(m, None)
        if m.in_small_win:
            self._small_win.remove(m)
            m.in_small_win = False
        self._decr_active(m)
        left = self._nodes[m.node] - 1
        if left:
            self._nodes[m.node] = left
        else:
            del self._nodes[m.node]
        m.deferred.clear()

    def _rcvbuf_limit(self) -> None:
        self.max_active = max(16, min((self.member_cnt + 1) // 8, 64))

    def _decr_active(self, m: Member) -> None:
        if _ACTIVE <= m.state <= _REMITTED:
            self.active_cnt -= 1

    def _open(self, m: Member) -> None:
        if not m.in_small_win:
            return
        self._small_win.remove(m)
        m.in_small_win = False
        self.open = True
        self.wakeup = True

    def _update_member(self, m: Member, blks: int) -> None:
        if m.state == _JOINING or m.state == _LEAVING:
            return
        m.window = (m.window - blks) & _U16
        if m.window >= ADV_IDLE:
            return
        small = self._small_win
        if m.in_small_win:
            small.remove(m)
        i = 0
        for i, other in enumerate(small):  # noqa: B007
            if other.window > m.window:
                break
        else:
            i = len(small)
        small.insert(i, m)
        m.in_small_win = True

    def _xmit_proto(self, m: Member, mtype: int) -> None:
        state = m.state
        if state == _ACTIVE:
            adv = ADV_ACTIVE - m.advertised
        elif state == _JOINED or state == _PENDING:
            adv = ADV_IDLE - m.advertised
        else:
            adv = 0
        adv &= _U16
        high = 0
        low = 0
        if mtype == _JOIN:
            high = self.bc_snd_nxt
            low = adv
            m.advertised = (m.advertised + adv) & _U16
        elif mtype == _LEAVE:
            high = self.bc_snd_nxt
        elif mtype == _ADV:
            low = adv
            m.advertised = (m.advertised + adv) & _U16
        elif mtype == _ACK:
            high = m.bc_rcv_nxt
        elif mtype == _REMIT:
            high = m.window
        self._xmit.append(
            (
                m.node,
                m.port,
                build_proto(
                    mtype,
                    own_node=self.own_node,
                    own_port=self.port,
                    dest_node=m.node,
                    dest_port=m.port,
                    high=high,
                    adv_win=low,
                ),
            )
        )

    def _create_event(self, m: Member, event: int, seqno: int) -> None:
        """Queue a member event in the member's stream (tipc_group_create_event, then
        filtered like a message)."""
        frame = build_member_evt_msg(
            event,
            seqno,
            own_node=self.own_node,
            own_port=self.port,
            node=m.node,
            port=m.port,
            type=self.type,
        )
        if m.state <= _PUBLISHED:
            return  # not a sender: the kernel's filter drops it
        if seq_less(seqno, m.bc_rcv_nxt):
            return
        d = Delivery(frame, m.node, m.port, m.instance, event, 0)
        m.deferred.append((seqno, _EVT, d, 0, 0))
        self._drain(m)

    @staticmethod
    def _sort_in(m: Member, item: _Item, is_bcast: bool) -> None:
        q = m.deferred
        if is_bcast:
            seqno = item[0]
            for i, other in enumerate(q):
                if seq_less(seqno, other[0]):
                    q.insert(i, item)
                    return
        q.append(item)

    def _drain(self, m: Member) -> None:
        q = m.deferred
        while q:
            seqno, mtype, d, w9, w10 = q[0]
            if seq_more(seqno, m.bc_rcv_nxt):
                return
            q.popleft()
            if mtype == _EVT:
                if m.state == _LEAVING:
                    if self.events:
                        self.delivered.append(d)
                    self._delete(m)
                    return
                if self.events:
                    self.delivered.append(d)
            elif mtype == _UCAST:
                self.delivered.append(d)
            else:
                self._release(m, mtype, d, w9, w10)

    def _release(self, m: Member, mtype: int, d: Delivery, w9: int, w10: int) -> None:
        """A broadcast/multicast at the head of m's stream: deliver it (or, a multicast to
        another instance, count it consumed), advance, acknowledge if asked."""
        m.bc_rcv_nxt = (m.bc_rcv_nxt + 1) & _U16
        if mtype == _MCAST and w9 != self.instance:
            update = True
        else:
            update = False
            self.delivered.append(d)
        if w10_ack_req(w10):
            self._xmit_proto(m, _ACK)
        if update:
            self.consumed(m.node, m.port, d.blocks)

    def _joined_rcv(self, m: Member) -> None:
        active_cnt = self.active_cnt
        if active_cnt <= self.max_active:
            m.state = _ACTIVE
            self._active[m] = None
            self.active_cnt += 1
            self._xmit_proto(m, _ADV)
        else:
            m.state = _PENDING
            self._pending[m] = None
        if active_cnt < self.max_active * 3 // 4:
            return
        if self._active:
            rm = next(iter(self._active))
            del self._active[rm]
            rm.state = _RECLAIMING
            self._xmit_proto(rm, _RECLAIM)
            return
        pm = next(iter(self._pending))
        del self._pending[pm]
        pm.state = _JOINED
        self._xmit_proto(pm, _ADV)

    def _activate_pending(self) -> None:
        if not self._pending:
            return
        pm = next(iter(self._pending))
        del self._pending[pm]
        pm.state = _ACTIVE
        self._active[pm] = None
        self.active_cnt += 1
        if pm.advertised <= _RECLAIM_ADV_LIMIT:
            self._xmit_proto(pm, _ADV)

    def _proto_rcv(self, mtype: int, node: int, port: int, w9: int) -> None:
        """tipc_group_proto_rcv."""
        if self.left:
            return
        if self.scope == NODE_SCOPE and node != self.own_node:
            return
        m = self._members.get((node << 32) | port)
        high = w9_high(w9)
        low = w9_low(w9)
        if mtype == _JOIN:
            if m is None:
                m = self._create(node, port, 0, _JOINING)
            m.bc_syncpt = m.bc_rcv_nxt = high
            m.window = (m.window + low) & _U16
            if m.state != _PUBLISHED:
                return
            m.state = _JOINED
            self._open(m)
            self._update_member(m, 0)
            self._xmit_proto(m, _ADV)
            self._create_event(m, _EVT_PUBLISHED, m.bc_syncpt)
            return
        if m is None:
            return
        if mtype == _LEAVE:
            m.bc_syncpt = high
            self._active.pop(m, None)
            self._pending.pop(m, None)
            self._open(m)
            self._decr_active(m)
            m.state = _LEAVING
            self._create_event(m, _EVT_WITHDRAWN, high)
        elif mtype == _ADV:
            m.window = (m.window + low) & _U16
            self._open(m)
        elif mtype == _ACK:
            m.bc_acked = high
            if not self.bc_ackers:
                return  # nothing awaited: a stray or forged ACK must not wrap the count
            self.bc_ackers -= 1
            if self.bc_ackers:
                return
            if m.in_small_win:
                self._small_win.remove(m)
                m.in_small_win = False
            self.open = True
            self.wakeup = True
            self._update_member(m, 0)
        elif mtype == _RECLAIM:
            self._xmit_proto(m, _REMIT)
            m.window = ADV_IDLE
            self._open(m)
        elif mtype == _REMIT:
            if m.state != _RECLAIMING:
                return
            remitted = high
            if m.advertised > remitted:
                m.state = _REMITTED
                m.advertised = (ADV_IDLE + m.advertised - remitted) & _U16
                return
            m.state = _JOINED
            self.active_cnt -= 1
            m.advertised = ADV_IDLE
            self._activate_pending()
