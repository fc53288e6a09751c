"""Node-internal control requests to the name-table worker.

A request is a TIPC message of the node-internal pseudo user TOP_SRV (15, never sent on the
wire) with an INT_H_SIZE header, travelling through the worker's inbox like any frame. The
header's originating port is the requesting socket; the message type is the operation; the
payload is one :data:`REQUEST` record. The worker answers by writing the request's sequence
number and an errno into the requester's socket-table entry (S_CTL_ACK / S_CTL_RESULT), after
it has published the new replica: a client that sees its ack also sees its binding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tipcshm import wire

OP_BIND = 0
OP_UNBIND = 1
OP_RELEASE_PORT = 2  # withdraw every binding of a socket (close, dead process)
OP_NAMES = {OP_BIND: "bind", OP_UNBIND: "unbind", OP_RELEASE_PORT: "release"}

# seq, socket-table slot (or 0xFFFFFFFF: no ack wanted), type, lower, upper, scope, key
REQUEST = struct.Struct(">7I")
NO_ACK = 0xFFFFFFFF
FRAME_SIZE = wire.INT_H_SIZE + REQUEST.size


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


def pack_request(buf: memoryview, off: int, req: Request, own_node: int) -> None:
    """Write the request frame (FRAME_SIZE bytes) at ``buf[off:]``."""
    header = wire.Header(
        user=wire.User.TOP_SRV,
        hsize=wire.INT_H_SIZE,
        size=FRAME_SIZE,
        mtype=req.op,
        prev_node=own_node,
        orig_port=req.port,
        orig_node=own_node,
        dest_node=own_node,
    )
    wire.pack_header_into(buf, off, header)
    REQUEST.pack_into(
        buf,
        off + wire.INT_H_SIZE,
        req.seq,
        req.slot,
        req.type,
        req.lower,
        req.upper,
        req.scope,
        req.key,
    )


def unpack_request(frame: memoryview | bytes) -> Request:
    """Decode a request frame; wire.WireError if it is not one."""
    header = wire.decode_header(frame)
    if header.user != wire.User.TOP_SRV or header.size != FRAME_SIZE or len(frame) < FRAME_SIZE:
        raise wire.WireError(f"not a control request: user {header.user}, size {header.size}")
    seq, slot, type_, lower, upper, scope, key = REQUEST.unpack_from(frame, header.hsize)
    return Request(header.mtype, header.orig_port, seq, slot, type_, lower, upper, scope, key)
