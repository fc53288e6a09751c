"""Binding updates from the bearer workers to the name-table worker.

A bearer worker learns other nodes' bindings from its links (name distribution) and
publishes the link-state bindings of its links; the name-table worker is the single
writer of the node's name table and its replica. So a bearer worker writes fixed-size
update records into its lane of the name-table worker's inbox
(:func:`tipcshm.shm.layout.nametable_inbox_name`), one record per frame, and rings it.

The name-table worker accepts a record only from the lane of the process that the
worker table names as the record's bearer worker (pid and start time), and validates
every field: anything else in that inbox costs its writer (``bad_requests``), never the
node. Records of one bearer are applied in order; a bearer worker that starts (first
start or a restart) sends ``RESET_BEARER`` before anything else, which drops every
binding learned through that bearer, as the kernel drops a node's bindings when its
links go (the links of a restarted worker come up again and the bindings with them).

Record (little-endian, 36 bytes): op, bearer, type, lower, upper, scope, node, port, key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["NameUpdate", "RECORD", "RECORD_SIZE", "decode", "encode"]

RECORD = struct.Struct("<9I")
RECORD_SIZE = RECORD.size

PUBLISH = 1  # a binding of ``node`` appeared (``node`` != own: learned from a peer;
#              ``node`` == own: a link-state binding {2, peer, peer}, node scope)
WITHDRAW = 2  # the binding (type, lower, upper, node, key) went away
PURGE_NODE = 3  # every binding of ``node`` learned through this bearer went away
RESET_BEARER = 4  # every binding learned through this bearer went away (worker start)
OP_NAMES = {
    PUBLISH: "publish",
    WITHDRAW: "withdraw",
    PURGE_NODE: "purge node",
    RESET_BEARER: "reset",
}


@dataclass(frozen=True, slots=True)
class NameUpdate:
    op: int
    bearer: int
    type: int = 0
    lower: int = 0
    upper: int = 0
    scope: int = 0
    node: int = 0
    port: int = 0
    key: int = 0


def encode(u: NameUpdate) -> bytes:
    return RECORD.pack(u.op, u.bearer, u.type, u.lower, u.upper, u.scope, u.node, u.port, u.key)


def decode(frame: bytes | memoryview) -> NameUpdate:
    """ValueError unless ``frame`` is exactly one record with a known operation (the
    name-table worker checks the rest: bearer, scope, ranges, node)."""
    if len(frame) != RECORD_SIZE:
        raise ValueError(f"name update of {len(frame)} bytes, not {RECORD_SIZE}")
    u = NameUpdate(*RECORD.unpack(frame))
    if u.op not in OP_NAMES:
        raise ValueError(f"unknown name update operation {u.op}")
    return u
