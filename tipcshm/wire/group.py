"""Communication groups on the wire: group data messages, GROUP_PROTOCOL (user 9) and the
node-local member-event frame.

Facts from tipc-wire.md §1.4, §1.6 and §9 (the kernel's msg.h accessors ``msg_grp_*``,
``msg_adv_win``, ``msg_blocks`` and group.c):

* **Group data** (users 0-3) has a 44-byte header (GROUP_H_SIZE). Its type is
  GRP_BCAST_MSG 5 (to every member), GRP_MCAST_MSG 6 (to the members of one instance),
  GRP_UCAST_MSG 7 (to one member) or GRP_MEMBER_EVT 4 (node-local: a join or leave
  handed to the application). w8 is the group's service type, w9 the target instance
  (GRP_MCAST only), w10[31:16] the sender's group broadcast sequence number (on unicasts
  too: what the sender's next broadcast will carry), w10[0] "ack requested" on a
  broadcast, w10[1:0] the event (TIPC_PUBLISHED 1, TIPC_WITHDRAWN 2) of a member event.
  Broadcasts and multicasts have destination port 0 and, sent by replicast, the
  destination node in w7; the lookup scope in w1[20:19] is the group's scope.
* **GROUP_PROTOCOL** messages have a 40-byte header and no data, are dest-droppable, and
  go from one member socket to another (ports in w4/w5, nodes in w6/w7). Word 9 is
  redefined: w9[31:16] is the broadcast sync point (JOIN, LEAVE), the acknowledged
  broadcast (ACK) or the remitted window (REMIT); w9[15:0] the advertised window in
  1-KiB blocks (JOIN, ADV).
* **Flow control** counts 1-KiB blocks: a message of ``size`` bytes (header included)
  costs ``size // 1024 + 1`` (``msg_blocks``).
* **The member-event frame** is tipcshm's own and never leaves the node: the name-table
  worker tells a group socket that a binding of the group's type appeared or went away
  (the kernel does this with an internal topology subscription whose events it hands the
  socket as TOP_SRV messages). 40-byte header, user TOP_SRV (15), type = the event
  (PUBLISHED 1, WITHDRAWN 2), w5 the group socket's port, w6/w7 this node, w8 the service
  type, w9 the binding's lower bound; then four words: upper bound, the member's port,
  the member's node, flags (:data:`EVT_GONE`: the member's socket closed or its process
  died on this node, so no LEAVE of its own will follow one it did not already send).
"""

from __future__ import annotations

from struct import Struct
from typing import Final, NamedTuple

from tipcshm.wire.header import (
    DEST_DROPPABLE_BIT,
    GROUP_H_SIZE,
    INT_H_SIZE,
    TIPC_VERSION,
    W1_MTYPE_SHIFT,
    DataType,
    GroupMsgType,
    User,
    make_w0,
    make_w1,
    w0_hsize,
    w0_size,
    w0_user,
    w0_version,
    w1_mtype,
)

__all__ = [
    "BLOCK_SIZE",
    "EVT_GONE",
    "EVT_FRAME_SIZE",
    "GROUP_DATA_TYPES",
    "GroupMsgType",
    "MemberEvent",
    "blocks",
    "build_member_event",
    "build_group_msg",
    "build_member_evt_msg",
    "build_proto",
    "decode_member_event",
    "grp_w10",
    "is_group_data",
    "w9_high",
    "w9_low",
    "w10_ack_req",
    "w10_evt",
    "w10_seqno",
]

BLOCK_SIZE: Final = 1024  # FLOWCTL_BLK_SZ

#: The data types of group messages (GRP_MEMBER_EVT is never sent between sockets).
GROUP_DATA_TYPES: Final = frozenset(
    (DataType.GRP_BCAST_MSG, DataType.GRP_MCAST_MSG, DataType.GRP_UCAST_MSG)
)

_W10_SEQNO_SHIFT: Final = 16
_W9_HIGH_SHIFT: Final = 16
_U16: Final = 0xFFFF

EVT_GONE: Final = 0x1
EVT_FRAME_SIZE: Final = INT_H_SIZE + 16
_EVT_FRAME: Final = Struct(">14I")
_PROTO: Final = Struct(">10I")
_GRP_HDR: Final = Struct(">11I")


def blocks(size: int) -> int:
    """Flow-control cost of a message of ``size`` bytes, header included (msg_blocks)."""
    return size // BLOCK_SIZE + 1


def is_group_data(w0: int, w1: int) -> bool:
    """A data message (users 0-3) of a group data type (5, 6, 7)."""
    return w0_user(w0) <= User.CRITICAL_IMPORTANCE and w1_mtype(w1) in GROUP_DATA_TYPES


def w10_seqno(w10: int) -> int:
    return (w10 >> _W10_SEQNO_SHIFT) & _U16


def w10_ack_req(w10: int) -> bool:
    return bool(w10 & 0x1)


def w10_evt(w10: int) -> int:
    return w10 & 0x3


def grp_w10(seqno: int, *, ack_req: bool = False, evt: int = 0) -> int:
    """Word 10 of a group data message."""
    return ((seqno & _U16) << _W10_SEQNO_SHIFT) | int(ack_req) | evt


def w9_high(w9: int) -> int:
    """GROUP_PROTOCOL w9[31:16]: sync point (JOIN/LEAVE), acked (ACK), remitted (REMIT)."""
    return (w9 >> _W9_HIGH_SHIFT) & _U16


def w9_low(w9: int) -> int:
    """GROUP_PROTOCOL w9[15:0]: the advertised window (JOIN/ADV)."""
    return w9 & _U16


def build_proto(
    mtype: int,
    *,
    own_node: int,
    own_port: int,
    dest_node: int,
    dest_port: int,
    high: int = 0,
    adv_win: int = 0,
) -> bytes:
    """A GROUP_PROTOCOL message from socket <own_node:own_port> to <dest_node:dest_port>."""
    w0 = make_w0(User.GROUP_PROTOCOL, INT_H_SIZE, INT_H_SIZE) | DEST_DROPPABLE_BIT
    w9 = ((high & _U16) << _W9_HIGH_SHIFT) | (adv_win & _U16)
    return _PROTO.pack(
        w0, make_w1(mtype), 0, own_node, own_port, dest_port, own_node, dest_node, 0, w9
    )


def build_group_msg(
    mtype: int,
    data: bytes,
    *,
    user: int = 0,
    own_node: int,
    own_port: int,
    dest_node: int,
    dest_port: int,
    type: int,
    instance: int = 0,
    seqno: int,
    ack_req: bool = False,
    lookup_scope: int = 0,
) -> bytes:
    """A group data message (GRP_BCAST_MSG 5 / GRP_MCAST_MSG 6 / GRP_UCAST_MSG 7) with a
    44-byte header: w8 the group type, w9 the target instance (multicast), w10 the
    sender's broadcast sequence number and the ack request."""
    size = GROUP_H_SIZE + len(data)
    w0 = make_w0(user, GROUP_H_SIZE, size)
    return (
        _GRP_HDR.pack(
            w0,
            make_w1(mtype, lookup_scope=lookup_scope),
            0,
            own_node,
            own_port,
            dest_port,
            own_node,
            dest_node,
            type,
            instance,
            grp_w10(seqno, ack_req=ack_req),
        )
        + data
    )


def build_member_evt_msg(
    event: int, seqno: int, *, own_node: int, own_port: int, node: int, port: int, type: int
) -> bytes:
    """The GRP_MEMBER_EVT message a group socket hands its application: a 44-byte header
    of user CRITICAL, from the member <node:port> to us <own_node:own_port>, w8 the group
    type, w10 the event and the sequence point it is ordered at (tipc_group_create_event)."""
    w0 = make_w0(User.CRITICAL_IMPORTANCE, GROUP_H_SIZE, GROUP_H_SIZE) | DEST_DROPPABLE_BIT
    return _GRP_HDR.pack(
        w0,
        make_w1(DataType.GRP_MEMBER_EVT),
        0,
        own_node,
        port,
        own_port,
        node,
        own_node,
        type,
        0,
        grp_w10(seqno, evt=event),
    )


class MemberEvent(NamedTuple):
    """A decoded member-event frame (see the module docstring)."""

    event: int  # TIPC_PUBLISHED 1 / TIPC_WITHDRAWN 2
    dest_port: int  # the group socket the frame is for
    type: int
    lower: int
    upper: int
    port: int  # the member
    node: int
    flags: int


def build_member_event(
    event: int,
    *,
    own_node: int,
    dest_port: int,
    type: int,
    lower: int,
    upper: int,
    port: int,
    node: int,
    flags: int = 0,
) -> bytes:
    """The name-table worker's frame telling group socket ``dest_port`` of a binding."""
    w0 = make_w0(User.TOP_SRV, INT_H_SIZE, EVT_FRAME_SIZE)
    return _EVT_FRAME.pack(
        w0,
        make_w1(event),
        0,
        own_node,
        0,
        dest_port,
        own_node,
        own_node,
        type,
        lower,
        upper,
        port,
        node,
        flags,
    )


def decode_member_event(buf: bytes | bytearray | memoryview, offset: int = 0) -> MemberEvent | None:
    """The event a frame carries, or None when it is not a well-formed member-event frame
    (the caller counts and drops it)."""
    if len(buf) - offset < EVT_FRAME_SIZE:
        return None
    w = _EVT_FRAME.unpack_from(buf, offset)
    w0 = w[0]
    if (
        w0_version(w0) != TIPC_VERSION
        or w0_user(w0) != User.TOP_SRV
        or w0_hsize(w0) != INT_H_SIZE
        or w0_size(w0) != EVT_FRAME_SIZE
    ):
        return None
    event = w[1] >> W1_MTYPE_SHIFT
    if event not in (1, 2) or w[9] > w[10]:
        return None
    return MemberEvent(event, w[5], w[8], w[9], w[10], w[11], w[12], w[13])
