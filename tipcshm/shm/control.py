"""Control requests to the name-table worker: a mailbox in each socket's table entry.

A socket posts its request (bind, unbind) in its own socket-table entry: the fields
``S_CTL_OP .. S_CTL_PORT`` first, the request's sequence number ``S_CTL_REQ`` last, then it
rings the worker's doorbell (:meth:`~tipcshm.shm.lane.Inbox.ring`). The worker, woken by the
bell, drains the bell *before* it scans the table for entries whose ``S_CTL_REQ`` differs
from ``S_CTL_ACK``; a request stored after that scan began is followed by a ring the worker
has not drained yet, so no wake-up is lost. (Both sides cross a system call, a full
barrier, between their store and the other side's load.) The worker validates the fields,
applies them, publishes the replica, and answers ``S_CTL_RESULT`` (an errno, 0 = done),
then ``S_CTL_ACK = seq`` last: a client that sees its ack sees its result and its binding.

One request per socket is in flight: the owner waits for the ack (threads of one socket
are serialised by the socket). So a node holds as many pending requests as it has sockets,
and no process needs a lane into the worker (lanes are 64 per inbox).

Group subscriptions (communication groups, ``TIPC_GROUP_JOIN``) travel the same way:
``OP_GROUP_SUB`` (``type`` = the group's service type, ``scope`` = TIPC_CLUSTER_SCOPE or
TIPC_NODE_SCOPE; ``lower``, ``upper`` and ``key`` 0) asks the worker to tell the socket of
every binding of that type and scope added or removed from then on, as
:func:`tipcshm.wire.group.build_member_event` frames written into the socket's inbox
through the worker's own lane. Answered 0 once the replica shows every binding that
existed before the subscription started; a socket holds one subscription (another
``type`` or ``scope`` is refused EACCES; the same again is answered 0, so a request
replayed after a worker restart is harmless). ``OP_GROUP_UNSUB`` (every field 0, or the
subscription's own ``type``/``scope``) ends it; so does the entry's freeing. The
subscription is kept in the entry (``S_GROUP_TYPE``, ``S_GROUP_SCOPE``), so a restarted
worker goes on. :func:`from_nametable_worker` is the check a socket makes before it
believes a member-event frame.

Releasing a socket's bindings is no request: the entry is marked CLOSING (see
:mod:`tipcshm.shm.layout`) and the bell rung; the worker withdraws them and frees the entry.
Everything here is read back from shared memory, so the worker treats it as untrusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tipcshm.shm.layout import (
    MAX_SOCKETS,
    NAMETABLE_SLOT,
    S_CTL_KEY,
    S_CTL_LOWER,
    S_CTL_OP,
    S_CTL_PORT,
    S_CTL_REQ,
    S_CTL_SCOPE,
    S_CTL_TYPE,
    S_CTL_UPPER,
    NodeSegment,
    WorkerKind,
)

if TYPE_CHECKING:
    from tipcshm.shm.lane import Inbox

OP_BIND = 1
OP_UNBIND = 2
OP_GROUP_SUB = 3
OP_GROUP_UNSUB = 4
OP_NAMES = {
    OP_BIND: "bind",
    OP_UNBIND: "unbind",
    OP_GROUP_SUB: "group subscription",
    OP_GROUP_UNSUB: "group unsubscription",
}


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    port: int
    seq: int
    slot: int
    type: int = 0
    lower: int = 0
    upper: int = 0
    scope: int = 0
    key: int = 0


def post(seg: NodeSegment, req: Request) -> None:
    """Write ``req`` into its socket's mailbox, sequence number last (owner only)."""
    if not 0 <= req.slot < MAX_SOCKETS:
        raise ValueError(f"socket-table index {req.slot} out of range")
    base = seg.sock_off(req.slot) // 4
    u32 = seg.u32
    u32[base + S_CTL_OP // 4] = req.op
    u32[base + S_CTL_TYPE // 4] = req.type
    u32[base + S_CTL_LOWER // 4] = req.lower
    u32[base + S_CTL_UPPER // 4] = req.upper
    u32[base + S_CTL_SCOPE // 4] = req.scope
    u32[base + S_CTL_KEY // 4] = req.key
    u32[base + S_CTL_PORT // 4] = req.port
    u32[base + S_CTL_REQ // 4] = req.seq  # last: the request is complete when it moves


def read(seg: NodeSegment, slot: int) -> Request:
    """The request in entry ``slot``'s mailbox, as posted (unvalidated: the worker checks)."""
    if not 0 <= slot < MAX_SOCKETS:
        raise ValueError(f"socket-table index {slot} out of range")
    base = seg.sock_off(slot) // 4
    u32 = seg.u32
    seq = u32[base + S_CTL_REQ // 4]  # first: the fields below are at least this recent
    return Request(
        op=u32[base + S_CTL_OP // 4],
        port=u32[base + S_CTL_PORT // 4],
        seq=seq,
        slot=slot,
        type=u32[base + S_CTL_TYPE // 4],
        lower=u32[base + S_CTL_LOWER // 4],
        upper=u32[base + S_CTL_UPPER // 4],
        scope=u32[base + S_CTL_SCOPE // 4],
        key=u32[base + S_CTL_KEY // 4],
    )


def from_nametable_worker(seg: NodeSegment, inbox: Inbox, lane: int) -> bool:
    """Whether lane ``lane`` of ``inbox`` (where :meth:`Inbox.poll` found a frame) is the
    name-table worker's: only then is a member-event frame in it to be believed.

    The lane's producer (:meth:`Inbox.lane_producer`) must be the worker that slot
    ``NAMETABLE_SLOT`` of the worker table names, or one of the two workers the header
    names as member-event writers (the current one, and its predecessor: frames a killed
    worker wrote stay in its lane until read). Never true for the shared overflow lane,
    which the worker does not use.
    """
    token = inbox.lane_producer(lane)
    if token is None or not token[0]:
        return False
    w = seg.worker(NAMETABLE_SLOT)
    if w is not None and w.kind == WorkerKind.NAMETABLE and token == (w.pid, w.start):
        return True
    return token in seg.name_event_writers()
