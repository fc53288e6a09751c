"""The node segment: one versioned shared-memory control segment per node.

Every offset of the node segment is defined here, once; the client library, the workers and
``tipcshm stat`` all read the segment through :class:`NodeSegment`. Shape (after Aeron's
CnC file and iceoryx2's management segment)::

    offset    size           region
    0         4096           header: magic, layout version, node name, identity, address,
                             state, supervisor pid/start time, heartbeats, lane geometry,
                             node counters
    4096      MAX_PROCS*32   process table: every process attached to the node
    ...       MAX_SOCKETS*128 socket table: one entry per open socket (port, owner, type,
                             counters, and the socket's control-request mailbox to the
                             name-table worker, see tipcshm.shm.control)
    ...       64 + 2*R       name-table replica: seqlock word, active buffer index, lengths,
                             then two buffers of R bytes (double-buffered, see below)

Segment names all carry the node name, so isolated nodes (tests) run side by side and
``tipcshm stop`` removes exactly its own: ``/tipcshm.<node>`` (this segment),
``/tipcshm.<node>.in.<port>`` (a socket's inbox), ``/tipcshm.<node>.in.nametable`` (the
name-table worker's inbox).

Replica protocol (single writer: the name-table worker; many readers: clients). The writer
encodes the whole table into the *inactive* buffer, then bumps ``seq`` to odd, flips
``active`` and the length, and bumps ``seq`` to even. A reader copies the active buffer
between two reads of ``seq`` and retries if they differ or are odd. Writing the inactive
buffer means a worker killed mid-update leaves the active image intact, so a restarted worker
reloads its bindings from here: this is how bindings survive a worker restart. On x86-64
(TSO) stores become visible in program order and loads are not reordered with older loads,
so the reader's ``seq``/data/``seq`` sequence needs no fence; the seq re-check catches a flip.

Tables (processes, sockets) change only under ``flock`` of the segment file, the rare control
path; that lock dies with its holder, so a killed process cannot wedge the node. They are
scanned through numpy views (a column compare over 16,384 entries costs microseconds; a
Python loop over them, milliseconds), so nothing on a frequent path walks them entry by entry.

A socket entry lives OPEN -> CLOSING -> FREE. Its owner (close) or the supervisor (the owner
died) marks it CLOSING, which refuses further binds; only the name-table worker frees it, after
it has withdrawn and unpublished every binding of the port. A port therefore stays taken (and
cannot be handed to a new socket) while a binding of its previous owner may remain.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import posix_ipc

from tipcshm.core.nametable import RECORD_SIZE, build_image, image_parts
from tipcshm.errors import LimitReached, NodeNotRunning, SharedMemoryFull
from tipcshm.shm.trust import Trust, node_trust
from tipcshm.wire.names import MAX_PUBL

MAGIC = 0x314D4853_43504954  # b"TIPCSHM1" little-endian
LAYOUT_VERSION = 4  # 3: worker, bearer and link tables; 4: group subscriptions (S_GROUP_*)

NODE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
NODE_ENV = "TIPCSHM_NODE"
DEFAULT_NODE = "default"

# Geometry.
HEADER_BYTES = 4096
# Issue 9 targets 1,000 processes and 10,000 sockets per node; the tables hold four times
# and 1.6 times that (untouched pages of the tables cost no memory).
MAX_PROCS = 4096
PROC_ENTRY = 32
MAX_SOCKETS = 16384
SOCK_ENTRY = 160
# The replica holds every binding of the cluster this node knows: its own (the kernel caps
# those at MAX_PUBL, 65,535, per node) and its peers'. 2**17 keeps lookups flat well past
# 100,000 (tools/bench/nametable_bench.py); each buffer costs REPLICA_RECORD bytes per
# binding, but only pages written hold memory.
MAX_BINDINGS = 1 << 17
assert MAX_BINDINGS >= MAX_PUBL
NODE_MIN_LANE_BYTES = 256 << 10  # a lane holds two of TIPC's largest messages (66,060 B)
# Replica control: seqlock word, active buffer, then the per-type change tokens
# (NodeClient.table_token): TYPE_TOKENS u64 counters, a service type's at its hash.
TYPE_TOKENS = 4096
R_TOKENS = 64
REPLICA_CTL = (R_TOKENS + TYPE_TOKENS * 8 + 4095) & ~4095
# A replica buffer: a 64-byte header, then one column per field, each MAX_BINDINGS long,
# records sorted by (type, lower, upper, seq) (tipcshm.shm.replica has the theory):
#   key   u64 type << 32 | lower    (the sort key)
#   pmax  u64 type << 32 | the largest upper of this type's records up to this one
#   seq   u64 insertion serial (age; round-robin order within a range)
#   upper, node, port, bkey (the binding's key), scope u32
#   origin u32 mask of the bearers that fed the binding (0: a socket's)
RB_COUNT = 0  # u32 records in this buffer
RB_OWN = 4  # u32 the node the image is for
RB_GENERATION = 8  # u64 the name table's generation
RB_HEADER = 64
REPLICA_COLUMNS = (
    ("key", "Q"),
    ("pmax", "Q"),
    ("seq", "Q"),
    ("upper", "I"),
    ("node", "I"),
    ("port", "I"),
    ("bkey", "I"),
    ("scope", "I"),
    ("origin", "I"),
)
_COLUMN_BYTES = {"Q": 8, "I": 4}
REPLICA_RECORD = sum(_COLUMN_BYTES[f] for _, f in REPLICA_COLUMNS)
RB_COLUMN: dict[str, int] = {}  # byte offset of each column in a buffer
_off = RB_HEADER
for _name, _fmt in REPLICA_COLUMNS:
    RB_COLUMN[_name] = _off
    _off += MAX_BINDINGS * _COLUMN_BYTES[_fmt]
# Then a sparse index: every 2**SPARSE_SHIFT-th key and pmax (u64 each), so that a lookup
# bisects a few KiB that stay in cache before the block of records it lands in.
SPARSE_SHIFT = 8
SPARSE_ENTRIES = MAX_BINDINGS >> SPARSE_SHIFT
RB_SPARSE_KEY = _off
RB_SPARSE_PMAX = _off + SPARSE_ENTRIES * 8
REPLICA_BUF = (RB_SPARSE_PMAX + SPARSE_ENTRIES * 8 + 4095) & ~4095
del _off, _name, _fmt
# The node's own processes: slot 0 is the name-table worker, slot 1 + k bearer k's worker.
MAX_BEARERS = 8
MAX_WORKERS = 1 + MAX_BEARERS
WORKER_ENTRY = 128
NAMETABLE_SLOT = 0
BEARER_ENTRY = 1024
LINKS_PER_BEARER = 64  # peer nodes one bearer worker links with (more are refused, counted)
MAX_LINKS = MAX_BEARERS * LINKS_PER_BEARER
LINK_ENTRY = 512

PROC_TABLE = HEADER_BYTES
SOCK_TABLE = PROC_TABLE + MAX_PROCS * PROC_ENTRY
WORKER_TABLE = SOCK_TABLE + MAX_SOCKETS * SOCK_ENTRY
BEARER_TABLE = WORKER_TABLE + ((MAX_WORKERS * WORKER_ENTRY + 4095) & ~4095)
LINK_TABLE = BEARER_TABLE + MAX_BEARERS * BEARER_ENTRY
REPLICA = LINK_TABLE + MAX_LINKS * LINK_ENTRY
REPLICA_BUF0 = REPLICA + REPLICA_CTL
SEGMENT_BYTES = REPLICA_BUF0 + 2 * REPLICA_BUF

# Header fields: byte offsets (u64 fields 8-aligned, u32 fields 4-aligned).
H_MAGIC = 0  # u64
H_VERSION = 8  # u32
H_STATE = 12  # u32: NodeState
H_NAME = 16  # 64 bytes, UTF-8, NUL padded
H_IDENTITY = 80  # 16 bytes
H_ADDR = 96  # u32 node address (hash128to32 of the identity)
H_SUP_PID = 100  # u32
H_SUP_START = 104  # u64 supervisor start time (clock ticks since boot, /proc/pid/stat)
H_STARTED_NS = 112  # u64 wall clock ns when the node started
H_HEARTBEAT = 120  # u64 CLOCK_MONOTONIC ns, written by the supervisor
# 128..151: unused since layout 3 (the name-table worker is WORKER_TABLE slot 0)
H_LANES = 152  # u32 lanes per inbox
H_LANE_BYTES = 156  # u32 bytes per lane
H_MODE = 160  # u32 permission bits for segments/queues
H_GID = 164  # i32 group owning them, -1 = unchanged
H_TABLE_GEN = 168  # u64 bumped whenever a process or socket registers (supervisor rescans)
H_CONN_LANE_BYTES = 176  # u32 bytes per lane of SEQPACKET/STREAM inboxes (0: H_LANE_BYTES)
H_CTL_BUSY_SLOT = 184  # u32 socket-table index + 1 of the request the worker is applying (0: none)
H_CTL_BUSY_SEQ = 188  # u32 its sequence number: a successor answers it EPROTO (no crash loop)
H_TAG = 192  # u64 random incarnation tag: inboxes of another node of the same name differ
# The name-table workers that wrote member-event frames into group sockets' inboxes: the
# current one and its predecessor, whose frames may still wait unread (each worker shifts
# them as it starts; tipcshm.shm.control.from_nametable_worker checks a lane against them).
H_NT_EVT_PID = 200  # u32
H_NT_PREV_PID = 204  # u32
H_NT_EVT_START = 208  # u64
H_NT_PREV_START = 216  # u64
H_COUNTERS = 512  # NODE_COUNTERS x u64
NODE_COUNTERS = (
    "sockets_opened",
    "sockets_closed",
    "processes_reaped",
    "worker_restarts",
    "bind_requests",
    "unbind_requests",
    "replica_updates",
    "messages_returned",
    "bad_requests",  # control requests refused as malformed (bad op, scope, range, state...)
    "request_errors",  # requests the worker failed on (exception or crash): answered EPROTO
    "reap_dropped",  # unread messages of dead processes' sockets not returned (see reap)
    "group_events",  # member-event frames the name-table worker wrote to group sockets
    "group_event_drops",  # ... and dropped because the subscriber's lane was full
)
COUNTER_INDEX = {name: i for i, name in enumerate(NODE_COUNTERS)}

# Process table entry.
P_PID = 0  # u32, 0 = free
P_ROLE = 4  # u32: ProcRole
P_START = 8  # u64
P_SINCE_NS = 16  # u64 wall clock ns of registration

# Socket table entry.
S_PORT = 0  # u32, 0 = free
S_STATE = 4  # u32: SockState
S_PID = 8  # u32 owner
S_TYPE = 12  # u32 SOCK_RDM / SOCK_DGRAM / ...
S_OWNER_START = 16  # u64
S_CTL_REQ = 24  # u32 last control request sequence number sent by the owner
S_CTL_ACK = 28  # u32 last one the name-table worker completed
S_CTL_RESULT = 32  # i32 its result: 0 or an errno
S_NBIND = 36  # u32 bindings held (written by the name-table worker)
S_TX_MSGS = 40  # u64 counters written by the owner
S_TX_BYTES = 48
S_RX_MSGS = 56
S_RX_BYTES = 64
S_DROPS = 72  # DGRAM messages dropped at a full receiver
S_RETURNED = 80  # messages returned to this socket with an error code
S_PEER_NODE = 88  # u32 connection sockets: the peer's node (0 = not connected)
S_PEER_PORT = 92  # u32 the peer's port; the supervisor aborts it when the owner dies
S_LISTENING = 96  # u32 1 once a connection socket listens: connect() refuses one that does
#                   not at once, as the kernel's tipc_sk_filter_connect rejects the SYN
# Control mailbox (tipcshm.shm.control): written by the owner before it stores S_CTL_REQ.
S_CTL_OP = 100  # u32 control.OP_*
S_CTL_TYPE = 104  # u32
S_CTL_LOWER = 108  # u32
S_CTL_UPPER = 112  # u32
S_CTL_SCOPE = 116  # u32
S_CTL_KEY = 120  # u32
S_CTL_PORT = 124  # u32 the port the owner believes it holds: a stale poster is refused
# Group subscription (control.OP_GROUP_SUB), written by the name-table worker only, kept
# here so that a restarted worker goes on sending member events.
S_GROUP_TYPE = 128  # u32 the group's service type (0: no subscription)
S_GROUP_SCOPE = 132  # u32 TIPC_CLUSTER_SCOPE / TIPC_NODE_SCOPE (0: no subscription)
S_GROUP_EVENTS = 136  # u64 member-event frames written to this socket
S_GROUP_DROPS = 144  # u64 ... dropped because its lane was full: the client re-syncs
#                     from the replica when this moves
SOCK_COUNTERS = ("tx_msgs", "tx_bytes", "rx_msgs", "rx_bytes", "drops", "returned")

# Worker table entry (WORKER_TABLE + slot * WORKER_ENTRY). Written by the supervisor (kind,
# name, inbox, pid, start, restarts, state) and by the worker itself (heartbeat only).
W_KIND = 0  # u32 WorkerKind (0 = free slot)
W_STATE = 4  # u32 WorkerState
W_PID = 8  # u32
W_RESTARTS = 12  # u32
W_START = 16  # u64 start time of W_PID (clock ticks since boot): pid + start names it
W_HEARTBEAT = 24  # u64 CLOCK_MONOTONIC ns, written by the worker
W_SPAWNED_NS = 32  # u64 wall clock ns of the last spawn
W_NAME = 40  # 40 bytes UTF-8, NUL padded: "nametable", "udp:192.0.2.1:6118"
W_INBOX = 80  # 48 bytes: the worker's inbox segment name
W_NAME_BYTES = 40
W_INBOX_BYTES = 48

# Bearer table entry (BEARER_TABLE + k * BEARER_ENTRY): bearer k, run by worker slot 1 + k.
# Written by its bearer worker (single writer) except the command mailbox's request half.
B_STATE = 0  # u32 BearerState
B_LINK_GEN = 4  # u32 bumped by the bearer worker after any change of its link rows
B_MTU = 8  # u32
B_NET_ID = 12  # u32
B_TOLERANCE = 16  # u32 ms, the default for new links
B_WINDOW = 20  # u32
B_PRIORITY = 24  # u32
B_PORT = 28  # u32 local UDP port
B_NAME = 32  # 64 bytes: the bearer name as `tipc bearer list` prints it ("udp:192.0.2.1")
B_NAME_BYTES = 64
B_LOCAL = 96  # 64 bytes: local media address text ("192.0.2.1:6118")
B_LOCAL_BYTES = 64
# Command mailbox (same protocol as the sockets' control mailboxes, tipcshm.shm.control):
# a tool writes the operation and its arguments, then B_CMD_REQ; the bearer worker
# validates and applies it, writes B_CMD_RESULT (0 or an errno), then B_CMD_ACK = B_CMD_REQ.
B_CMD_REQ = 160  # u32
B_CMD_ACK = 164  # u32
B_CMD_RESULT = 168  # i32
B_CMD_OP = 172  # u32 BearerCommand
B_CMD_LINK = 176  # u32 link row (global index into the link table), or MAX_LINKS: all
B_CMD_VALUE = 180  # u32 the new tolerance (ms), window or priority
B_COUNTERS = 256  # BEARER_COUNTERS x u64
BEARER_COUNTERS = (
    "rx_datagrams",
    "rx_bytes",
    "tx_datagrams",
    "tx_bytes",
    "rx_bad",  # datagrams the stack refused (malformed, wrong net, ...)
    "tx_errors",  # sendto failures
    "from_lanes",  # frames taken from local senders
    "bad_from_lanes",  # of those, refused (malformed or not ours to send)
    "to_lanes",  # frames delivered into local sockets' inboxes
    "rejected",  # messages returned with an error code (no port, overload, no node)
    "dropped",  # messages dropped (dest-droppable, DGRAM at a full receiver)
    "held",  # times the bearer's inbox was left unread because a link was congested
)
BEARER_COUNTER_INDEX = {name: i for i, name in enumerate(BEARER_COUNTERS)}

# Link table entry (LINK_TABLE + row * LINK_ENTRY); bearer k owns rows
# [k * LINKS_PER_BEARER, (k + 1) * LINKS_PER_BEARER) and is their single writer.
L_STATE = 0  # u32 LinkRowState (0 = free row)
L_PEER = 4  # u32 peer node address
L_MTU = 8  # u32
L_TOLERANCE = 12  # u32 ms
L_WINDOW = 16  # u32
L_PRIORITY = 20  # u32
L_UP_SINCE_NS = 24  # u64 wall clock ns of the last link up (0: never)
L_NAME = 32  # 64 bytes: the link name as the kernel builds it
L_NAME_BYTES = 64
L_PEER_ID = 96  # 16 bytes: the peer's node identity
L_MEDIA = 112  # 48 bytes: the peer's media address text ("192.0.2.11:6118")
L_MEDIA_BYTES = 48
L_CAPS = 160  # u32 the peer node's capability bits (from its discovery messages)
L_COUNTERS = 256  # LINK_COUNTERS x u64 (at most 32)
LINK_COUNTERS = (
    "rx_packets",
    "rx_fragments",
    "rx_fragmented",
    "rx_bundles",
    "rx_bundled",
    "tx_packets",
    "tx_fragments",
    "tx_fragmented",
    "tx_bundles",
    "tx_bundled",
    "rx_states",
    "rx_probes",
    "rx_nacks",
    "rx_deferred",
    "tx_states",
    "tx_probes",
    "tx_nacks",
    "tx_acks",
    "retransmitted",
    "duplicates",
    "link_congestion",
    "send_queue_max",
    "send_queue_now",
    "link_up_count",
    "link_down_count",
)
LINK_COUNTER_INDEX = {name: i for i, name in enumerate(LINK_COUNTERS)}
assert len(LINK_COUNTERS) <= (LINK_ENTRY - L_COUNTERS) // 8

# Replica control.
R_SEQ = 0  # u64 seqlock
R_ACTIVE = 8  # u32 active buffer, 0 or 1


_CONNECTION_TYPES = (int(socket.SOCK_SEQPACKET), int(socket.SOCK_STREAM))


class NodeState:
    STARTING = 1
    READY = 2
    STOPPING = 3
    NAMES = {1: "starting", 2: "ready", 3: "stopping"}


class ProcRole:
    CLIENT = 1
    NAMETABLE = 2
    NAMES = {1: "client", 2: "nametable"}


class WorkerKind:
    FREE = 0
    NAMETABLE = 1
    BEARER = 2
    NAMES = {0: "free", 1: "nametable", 2: "bearer"}


class WorkerState:
    STOPPED = 0  # not running (a disabled bearer, or between a death and its restart)
    STARTING = 1
    RUNNING = 2  # its first heartbeat came
    NAMES = {0: "stopped", 1: "starting", 2: "running"}


class BearerState:
    FREE = 0
    ENABLED = 1
    DISABLED = 2  # `tipcshm bearer disable`: its worker is stopped, its slot kept
    NAMES = {0: "free", 1: "enabled", 2: "disabled"}


class LinkRowState:
    FREE = 0
    DOWN = 1  # a peer is known (discovered) but the link is not up
    UP = 2
    NAMES = {0: "free", 1: "down", 2: "up"}


class BearerCommand:
    SET_TOLERANCE = 1
    SET_WINDOW = 2
    SET_PRIORITY = 3
    RESET_STATS = 4
    NAMES = {1: "set tolerance", 2: "set window", 3: "set priority", 4: "reset statistics"}


class SockState:
    FREE = 0
    OPEN = 1
    CLOSING = 2  # bindings being withdrawn by the name-table worker, which then frees it
    NAMES = {0: "free", 1: "open", 2: "closing"}


def check_node_name(node: str) -> str:
    if not isinstance(node, str) or not NODE_NAME_RE.match(node):
        raise ValueError(
            f"invalid tipcshm node name {node!r}: use 1-48 characters from A-Z a-z 0-9 _ -"
        )
    return node


def resolve_node_name(node: str | None) -> str:
    """An explicit name, else $TIPCSHM_NODE, else ``default``."""
    return check_node_name(node or os.environ.get(NODE_ENV) or DEFAULT_NODE)


def segment_name(node: str) -> str:
    return f"/tipcshm.{node}"


def inbox_name(node: str, port: int) -> str:
    return f"/tipcshm.{node}.in.{port:08x}"


def nametable_inbox_name(node: str) -> str:
    return f"/tipcshm.{node}.in.nametable"


def bearer_inbox_name(node: str, bearer: int) -> str:
    """The inbox of bearer ``bearer``'s worker: local senders' frames to other nodes."""
    return f"/tipcshm.{node}.in.bearer{bearer}"


# A frame in a bearer worker's inbox is this prefix, then one complete TIPC message: the
# destination node (a short-header connection message does not carry it) and a reserved
# word (0), keeping the message 8-byte aligned in the lane.
BEARER_FRAME_PREFIX = struct.Struct("<II")


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    slot: int
    kind: int
    state: int
    pid: int
    start: int
    restarts: int
    heartbeat_ns: int
    spawned_ns: int
    name: str
    inbox: str


@dataclass(frozen=True, slots=True)
class LinkEntry:
    row: int
    bearer: int
    state: int
    peer: int
    mtu: int
    tolerance: int
    window: int
    priority: int
    up_since_ns: int
    name: str
    peer_id: bytes
    media: str
    caps: int
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class ProcEntry:
    index: int
    pid: int
    role: int
    start: int
    since_ns: int


@dataclass(frozen=True, slots=True)
class SockEntry:
    index: int
    port: int
    state: int
    pid: int
    type: int
    owner_start: int
    nbind: int
    counters: dict[str, int]
    peer_node: int = 0
    peer_port: int = 0


class NodeSegment:
    """A mapping of a node's control segment (see the module docstring for the layout)."""

    #: whose objects this process trusts on this node (see tipcshm.shm.trust)
    trust: Trust

    def __init__(
        self, node: str, shm: posix_ipc.SharedMemory, created: bool, trust: Trust | None = None
    ) -> None:
        self.node = node
        self._fd = shm.fd
        st = os.fstat(shm.fd)
        self._ino = (st.st_dev, st.st_ino)
        self.trust = trust if trust is not None else node_trust(st, self.path)
        #: mode and group for the objects this process creates on the node: the segment's
        #: own (read from the file, not from the header anyone may write)
        self.object_mode = st.st_mode & 0o660
        self.object_gid = st.st_gid if self.object_mode & 0o060 else -1
        self._tag = 0
        self._map = mmap.mmap(shm.fd, SEGMENT_BYTES)
        self.mv = memoryview(self._map)
        self.created = created
        # Whole-segment word views: index = byte offset // 4 or // 8.
        self.u32 = self.mv.cast("I")
        self.i32 = self.mv.cast("i")
        self.u64 = self.mv.cast("Q")
        # Table views for whole-column scans (see the module docstring). Built on the mmap
        # itself and dropped by close(), which cannot unmap while they export its buffer.
        self._procs: Any = np.ndarray(
            (MAX_PROCS, PROC_ENTRY // 4), np.uint32, buffer=self._map, offset=PROC_TABLE
        )
        self._socks: Any = np.ndarray(
            (MAX_SOCKETS, SOCK_ENTRY // 4), np.uint32, buffer=self._map, offset=SOCK_TABLE
        )
        self._links: Any = np.ndarray(
            (MAX_LINKS, LINK_ENTRY // 4), np.uint32, buffer=self._map, offset=LINK_TABLE
        )

    # -- lifecycle ---------------------------------------------------------------
    @property
    def path(self) -> str:
        return f"/dev/shm{segment_name(self.node)}"

    @classmethod
    def create(cls, node: str, *, mode: int = 0o600, gid: int = -1) -> NodeSegment:
        """Create the segment of a new node (supervisor). FileExistsError if present.

        Its memory is allocated here, so a full /dev/shm is SharedMemoryFull now rather
        than SIGBUS in whoever first touches a page later.
        """
        check_node_name(node)
        shm = posix_ipc.SharedMemory(segment_name(node), posix_ipc.O_CREX, mode=mode)
        try:
            os.fchmod(shm.fd, mode)  # the umask must not change what was asked for
            if gid >= 0:
                os.fchown(shm.fd, -1, gid)
            try:
                os.posix_fallocate(shm.fd, 0, SEGMENT_BYTES)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    raise SharedMemoryFull(f"node {node!r}'s segment", SEGMENT_BYTES) from None
                raise
            seg = cls(node, shm, True, Trust(frozenset({os.geteuid()}), gid if gid >= 0 else None))
        except BaseException:
            os.close(shm.fd)
            posix_ipc.unlink_shared_memory(segment_name(node))
            raise
        seg._tag = int.from_bytes(os.urandom(8), "little") | 1
        seg.restore_fixed(NodeState.STARTING, magic=False)
        return seg

    def restore_fixed(self, state: int, *, magic: bool = True) -> None:
        """Write the fields fixed for the node's life (creator only; see the supervisor)."""
        if not magic:
            self.u64[H_MAGIC // 8] = 0  # readers treat the segment as absent until it is set
        self.u32[H_VERSION // 4] = LAYOUT_VERSION
        self.u32[H_STATE // 4] = state
        encoded = self.node.encode()
        self.mv[H_NAME : H_NAME + 64] = encoded.ljust(64, b"\0")
        self.u64[H_TAG // 8] = self._tag
        if magic:
            self.u64[H_MAGIC // 8] = MAGIC

    @property
    def tag(self) -> int:
        """The node's incarnation tag, stamped into every inbox it has."""
        return self._tag or self.u64[H_TAG // 8]  # the creator trusts its own copy

    def publish_magic(self) -> None:
        self.u64[H_MAGIC // 8] = MAGIC

    @classmethod
    def attach(cls, node: str) -> NodeSegment:
        """Map a running node's segment; NodeNotRunning if there is none or it is stale."""
        check_node_name(node)
        try:
            shm = posix_ipc.SharedMemory(segment_name(node))
        except posix_ipc.ExistentialError:
            raise NodeNotRunning(node) from None
        except posix_ipc.PermissionsError as exc:
            raise NodeNotRunning(node, f"no permission to open its segment: {exc}") from None
        try:
            if os.fstat(shm.fd).st_size < SEGMENT_BYTES:
                raise NodeNotRunning(node, "its segment is truncated or still being created")
            seg = cls(node, shm, False)  # UntrustedObject unless its owner is trusted
        finally:
            os.close(shm.fd)
        if seg.u64[H_MAGIC // 8] != MAGIC:
            seg.close()
            raise NodeNotRunning(node, "its segment is not initialised (starting or corrupt)")
        if seg.u32[H_VERSION // 4] != LAYOUT_VERSION:
            version = seg.u32[H_VERSION // 4]
            seg.close()
            raise NodeNotRunning(
                node, f"segment layout {version}, this library speaks {LAYOUT_VERSION}"
            )
        return seg

    def close(self) -> None:
        if self._map is None:
            return
        self._procs = self._socks = self._links = None
        for view in (self.u32, self.i32, self.u64, self.mv):
            view.release()
        self._map.close()
        self._map = None  # type: ignore[assignment]
        if self.created and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def unlink(node: str) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(segment_name(node))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for the rare table changes; released if the holder dies.

        Taken on a fresh descriptor (a forked child must not share it) of the very file we
        mapped: a name that now leads elsewhere (a symlink, a new node) is refused.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NodeNotRunning(self.node, "its segment was removed") from None
        except OSError as exc:
            raise NodeNotRunning(self.node, f"its segment cannot be opened: {exc}") from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._ino:
                raise NodeNotRunning(self.node, "it was restarted (its segment was replaced)")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    # -- header ------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self.u32[H_STATE // 4]

    @state.setter
    def state(self, value: int) -> None:
        self.u32[H_STATE // 4] = value

    @property
    def name(self) -> str:
        return bytes(self.mv[H_NAME : H_NAME + 64]).rstrip(b"\0").decode()

    @property
    def identity(self) -> bytes:
        return bytes(self.mv[H_IDENTITY : H_IDENTITY + 16])

    def set_identity(self, identity: bytes, addr: int) -> None:
        self.mv[H_IDENTITY : H_IDENTITY + 16] = identity.ljust(16, b"\0")
        self.u32[H_ADDR // 4] = addr

    @property
    def addr(self) -> int:
        return self.u32[H_ADDR // 4]

    @property
    def supervisor(self) -> tuple[int, int]:
        return self.u32[H_SUP_PID // 4], self.u64[H_SUP_START // 8]

    def set_supervisor(self, pid: int, start: int) -> None:
        self.u32[H_SUP_PID // 4] = pid
        self.u64[H_SUP_START // 8] = start

    def set_started(self) -> None:
        self.u64[H_STARTED_NS // 8] = time.time_ns()

    @property
    def started_ns(self) -> int:
        return self.u64[H_STARTED_NS // 8]

    def beat(self) -> None:
        self.u64[H_HEARTBEAT // 8] = time.monotonic_ns()

    @property
    def heartbeat_ns(self) -> int:
        return self.u64[H_HEARTBEAT // 8]

    # -- worker, bearer and link tables --------------------------------------------
    @staticmethod
    def worker_off(slot: int) -> int:
        return WORKER_TABLE + slot * WORKER_ENTRY

    def set_worker(self, slot: int, kind: int, name: str, inbox: str) -> None:
        """Describe worker ``slot`` (supervisor): its kind, name and inbox segment."""
        off = self.worker_off(slot)
        self.u32[(off + W_KIND) // 4] = kind
        self.mv[off + W_NAME : off + W_NAME + W_NAME_BYTES] = _text(name, W_NAME_BYTES)
        self.mv[off + W_INBOX : off + W_INBOX + W_INBOX_BYTES] = _text(inbox, W_INBOX_BYTES)

    def set_worker_spawned(self, slot: int, pid: int, start: int) -> None:
        """A new process for ``slot`` (supervisor): STARTING until its first heartbeat."""
        off = self.worker_off(slot)
        self.u32[(off + W_STATE) // 4] = WorkerState.STARTING
        self.u64[(off + W_HEARTBEAT) // 8] = 0
        self.u64[(off + W_START) // 8] = start
        self.u32[(off + W_PID) // 4] = pid
        self.u64[(off + W_SPAWNED_NS) // 8] = time.time_ns()

    def set_worker_state(self, slot: int, state: int) -> None:
        self.u32[(self.worker_off(slot) + W_STATE) // 4] = state

    def count_worker_restart(self, slot: int) -> None:
        self.u32[(self.worker_off(slot) + W_RESTARTS) // 4] += 1
        self.bump("worker_restarts")

    def worker_beat(self, slot: int) -> None:
        """The worker's own heartbeat; the first one marks it RUNNING."""
        off = self.worker_off(slot)
        self.u64[(off + W_HEARTBEAT) // 8] = time.monotonic_ns()
        if self.u32[(off + W_STATE) // 4] == WorkerState.STARTING:
            self.u32[(off + W_STATE) // 4] = WorkerState.RUNNING

    def worker(self, slot: int) -> WorkerEntry | None:
        """Worker ``slot`` as read now (untrusted: validate before acting on a pid)."""
        if not 0 <= slot < MAX_WORKERS:
            return None
        off = self.worker_off(slot)
        kind = self.u32[(off + W_KIND) // 4]
        if kind == WorkerKind.FREE:
            return None
        return WorkerEntry(
            slot=slot,
            kind=kind,
            state=self.u32[(off + W_STATE) // 4],
            pid=self.u32[(off + W_PID) // 4],
            start=self.u64[(off + W_START) // 8],
            restarts=self.u32[(off + W_RESTARTS) // 4],
            heartbeat_ns=self.u64[(off + W_HEARTBEAT) // 8],
            spawned_ns=self.u64[(off + W_SPAWNED_NS) // 8],
            name=_untext(self.mv[off + W_NAME : off + W_NAME + W_NAME_BYTES]),
            inbox=_untext(self.mv[off + W_INBOX : off + W_INBOX + W_INBOX_BYTES]),
        )

    def workers(self) -> list[WorkerEntry]:
        return [w for slot in range(MAX_WORKERS) if (w := self.worker(slot)) is not None]

    # The name-table worker is worker slot 0; these name what callers had before layout 3.
    @property
    def nametable_worker(self) -> tuple[int, int, int]:
        """(pid, start time, restarts) of the name-table worker."""
        off = self.worker_off(NAMETABLE_SLOT)
        return (
            self.u32[(off + W_PID) // 4],
            self.u64[(off + W_START) // 8],
            self.u32[(off + W_RESTARTS) // 4],
        )

    def set_nametable_worker(self, pid: int, start: int) -> None:
        off = self.worker_off(NAMETABLE_SLOT)
        self.u64[(off + W_START) // 8] = start
        self.u32[(off + W_PID) // 4] = pid

    def name_event_writers(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(pid, start)`` of the name-table worker writing member events now and of its
        predecessor ((0, 0): none), as the header says (untrusted, as any token here)."""
        u32, u64 = self.u32, self.u64
        return (
            (u32[H_NT_EVT_PID // 4], u64[H_NT_EVT_START // 8]),
            (u32[H_NT_PREV_PID // 4], u64[H_NT_PREV_START // 8]),
        )

    def set_name_event_writer(self, pid: int, start: int) -> None:
        """The name-table worker, as it starts: it becomes the writer, the one before it
        the predecessor (unless it is the same process)."""
        cur = self.name_event_writers()[0]
        u32, u64 = self.u32, self.u64
        if cur != (pid, start):
            u32[H_NT_PREV_PID // 4], u64[H_NT_PREV_START // 8] = cur
        u64[H_NT_EVT_START // 8] = start
        u32[H_NT_EVT_PID // 4] = pid

    def group_sub(self, index: int) -> tuple[int, int]:
        """``(type, scope)`` of entry ``index``'s group subscription ((0, 0): none)."""
        off = self.sock_off(index)
        return self.u32[(off + S_GROUP_TYPE) // 4], self.u32[(off + S_GROUP_SCOPE) // 4]

    def set_group_sub(self, index: int, type: int, scope: int) -> None:
        """Record (or with 0, 0 clear) entry ``index``'s group subscription (the
        name-table worker only)."""
        off = self.sock_off(index)
        self.u32[(off + S_GROUP_TYPE) // 4] = type
        self.u32[(off + S_GROUP_SCOPE) // 4] = scope

    def group_subscribers(self) -> list[int]:
        """Indices of OPEN entries that record a group subscription (one column scan)."""
        socks = self._socks
        used = (socks[:, S_PORT // 4] != 0) & (socks[:, S_STATE // 4] == SockState.OPEN)
        used &= socks[:, S_GROUP_SCOPE // 4] != 0
        return np.flatnonzero(used).tolist()  # type: ignore[no-any-return]

    def count_group_event(self, index: int, dropped: bool) -> None:
        """Count one member-event frame written to (or dropped for) entry ``index``."""
        off = self.sock_off(index) + (S_GROUP_DROPS if dropped else S_GROUP_EVENTS)
        self.u64[off // 8] += 1
        self.bump("group_event_drops" if dropped else "group_events")

    def group_event_counts(self, index: int) -> tuple[int, int]:
        """(frames written, frames dropped) of entry ``index``'s group subscription."""
        off = self.sock_off(index)
        return self.u64[(off + S_GROUP_EVENTS) // 8], self.u64[(off + S_GROUP_DROPS) // 8]

    def count_nametable_restart(self) -> None:
        self.count_worker_restart(NAMETABLE_SLOT)

    def nametable_beat(self) -> None:
        self.worker_beat(NAMETABLE_SLOT)

    @property
    def nametable_heartbeat_ns(self) -> int:
        return self.u64[(self.worker_off(NAMETABLE_SLOT) + W_HEARTBEAT) // 8]

    @staticmethod
    def bearer_off(bearer: int) -> int:
        return BEARER_TABLE + bearer * BEARER_ENTRY

    @staticmethod
    def link_off(row: int) -> int:
        return LINK_TABLE + row * LINK_ENTRY

    def bearer_count(self, bearer: int, counter: str, n: int = 1) -> None:
        """Bump a counter of ``bearer`` (its worker only: single writer)."""
        i = (self.bearer_off(bearer) + B_COUNTERS) // 8 + BEARER_COUNTER_INDEX[counter]
        self.u64[i] += n

    def bearer_counters(self, bearer: int) -> dict[str, int]:
        base = (self.bearer_off(bearer) + B_COUNTERS) // 8
        return {name: self.u64[base + i] for i, name in enumerate(BEARER_COUNTERS)}

    def bearer_link_gens(self) -> tuple[int, ...]:
        """Every bearer's B_LINK_GEN: a client's cached node -> bearer routes are valid
        while this tuple is unchanged (one writer per word, so no bump is lost)."""
        u32 = self.u32
        return tuple(u32[(self.bearer_off(k) + B_LINK_GEN) // 4] for k in range(MAX_BEARERS))

    def link_rows_up(self) -> list[tuple[int, int]]:
        """(row, peer node) of every link row in state UP: one numpy column compare."""
        rows = self._links
        up = np.flatnonzero(rows[:, L_STATE // 4] == LinkRowState.UP)
        return [(int(r), int(rows[r, L_PEER // 4])) for r in up]

    def link_entry(self, row: int) -> LinkEntry | None:
        if not 0 <= row < MAX_LINKS:
            return None
        off = self.link_off(row)
        state = self.u32[(off + L_STATE) // 4]
        if state == LinkRowState.FREE:
            return None
        base = (off + L_COUNTERS) // 8
        return LinkEntry(
            row=row,
            bearer=row // LINKS_PER_BEARER,
            state=state,
            peer=self.u32[(off + L_PEER) // 4],
            mtu=self.u32[(off + L_MTU) // 4],
            tolerance=self.u32[(off + L_TOLERANCE) // 4],
            window=self.u32[(off + L_WINDOW) // 4],
            priority=self.u32[(off + L_PRIORITY) // 4],
            up_since_ns=self.u64[(off + L_UP_SINCE_NS) // 8],
            name=_untext(self.mv[off + L_NAME : off + L_NAME + L_NAME_BYTES]),
            peer_id=bytes(self.mv[off + L_PEER_ID : off + L_PEER_ID + 16]),
            media=_untext(self.mv[off + L_MEDIA : off + L_MEDIA + L_MEDIA_BYTES]),
            caps=self.u32[(off + L_CAPS) // 4],
            counters={n: self.u64[base + i] for i, n in enumerate(LINK_COUNTERS)},
        )

    def links(self) -> list[LinkEntry]:
        rows = np.flatnonzero(self._links[:, L_STATE // 4] != LinkRowState.FREE)
        return [e for r in rows if (e := self.link_entry(int(r))) is not None]

    @property
    def lane_geometry(self) -> tuple[int, int]:
        return self.u32[H_LANES // 4], self.u32[H_LANE_BYTES // 4]

    def set_lane_geometry(self, lanes: int, lane_bytes: int, conn_lane_bytes: int = 0) -> None:
        self.u32[H_LANES // 4] = lanes
        self.u32[H_LANE_BYTES // 4] = lane_bytes
        self.u32[H_CONN_LANE_BYTES // 4] = conn_lane_bytes

    @property
    def conn_lane_bytes(self) -> int:
        """Lane size of connection sockets' inboxes (bulk transfers want deeper rings)."""
        return self.u32[H_CONN_LANE_BYTES // 4] or self.u32[H_LANE_BYTES // 4]

    @property
    def permissions(self) -> tuple[int, int]:
        """(mode, gid) every object of the node is created with; gid -1 = unchanged."""
        return self.u32[H_MODE // 4], self.i32[H_GID // 4]

    def set_permissions(self, mode: int, gid: int) -> None:
        self.u32[H_MODE // 4] = mode
        self.i32[H_GID // 4] = gid

    def bump(self, counter: str, n: int = 1) -> None:
        self.u64[H_COUNTERS // 8 + COUNTER_INDEX[counter]] += n

    def counters(self) -> dict[str, int]:
        base = H_COUNTERS // 8
        return {name: self.u64[base + i] for i, name in enumerate(NODE_COUNTERS)}

    # -- process table -----------------------------------------------------------
    def _proc_off(self, index: int) -> int:
        return PROC_TABLE + index * PROC_ENTRY

    def _proc_starts(self) -> Any:
        lo = self._procs[:, P_START // 4].astype(np.uint64)
        return lo | (self._procs[:, P_START // 4 + 1].astype(np.uint64) << np.uint64(32))

    def register_process(self, pid: int, start: int, role: int) -> int:
        with self.lock():
            pids = self._procs[:, P_PID // 4]
            for i in np.flatnonzero(pids == pid).tolist():
                if self.u64[(self._proc_off(i) + P_START) // 8] == start:
                    return int(i)
            free = np.flatnonzero(pids == 0)
            if not len(free):
                raise LimitReached(
                    errno.ENOBUFS,
                    f"tipcshm node {self.node!r}: process table full "
                    f"(MAX_PROCS = {MAX_PROCS} processes attached)",
                )
            index = int(free[0])
            off = self._proc_off(index)
            self.u32[(off + P_ROLE) // 4] = role
            self.u64[(off + P_START) // 8] = start
            self.u64[(off + P_SINCE_NS) // 8] = time.time_ns()
            self.u32[(off + P_PID) // 4] = pid  # last: the entry is complete when pid is set
            self.u64[H_TABLE_GEN // 8] += 1
            return index

    @property
    def table_generation(self) -> int:
        return self.u64[H_TABLE_GEN // 8]

    def free_process(self, index: int) -> None:
        if not 0 <= index < MAX_PROCS:
            raise ValueError(f"process-table index {index} out of range")
        with self.lock():
            self.u32[(self._proc_off(index) + P_PID) // 4] = 0

    def processes(self) -> list[ProcEntry]:
        out = []
        for i in np.flatnonzero(self._procs[:, P_PID // 4]).tolist():
            off = self._proc_off(i)
            pid = self.u32[(off + P_PID) // 4]
            if pid:
                out.append(
                    ProcEntry(
                        i,
                        pid,
                        self.u32[(off + P_ROLE) // 4],
                        self.u64[(off + P_START) // 8],
                        self.u64[(off + P_SINCE_NS) // 8],
                    )
                )
        return out

    def process_indices(self, pid: int, start: int) -> list[int]:
        """Process-table entries of ``(pid, start)`` (one column scan)."""
        hits = np.flatnonzero(self._procs[:, P_PID // 4] == pid).tolist()
        return [i for i in hits if self.u64[(self._proc_off(i) + P_START) // 8] == start]

    def owner_tokens(self) -> set[tuple[int, int]]:
        """Every ``(pid, start)`` holding a process or socket entry (two column scans)."""
        pids = self._procs[:, P_PID // 4]
        used = np.flatnonzero(pids)
        tokens = set(zip(pids[used].tolist(), self._proc_starts()[used].tolist(), strict=True))
        socks = self._socks
        used = np.flatnonzero(socks[:, S_PORT // 4])
        lo = socks[used, S_OWNER_START // 4].astype(np.uint64)
        hi = socks[used, S_OWNER_START // 4 + 1].astype(np.uint64)
        starts = lo | (hi << np.uint64(32))
        tokens.update(zip(socks[used, S_PID // 4].tolist(), starts.tolist(), strict=True))
        return tokens

    # -- socket table ------------------------------------------------------------
    @staticmethod
    def sock_off(index: int) -> int:
        return SOCK_TABLE + index * SOCK_ENTRY

    def alloc_socket(self, port: int, pid: int, start: int, sock_type: int) -> int:
        """A new OPEN entry for ``port``. FileExistsError if the port is still in the table
        (even CLOSING: its bindings may not be withdrawn yet); LimitReached when full."""
        with self.lock():
            ports = self._socks[:, S_PORT // 4]
            if (ports == port).any():
                raise FileExistsError(errno.EEXIST, f"port {port:#010x} is in use")
            free = np.flatnonzero(ports == 0)
            if not len(free):
                raise LimitReached(
                    errno.ENOBUFS,
                    f"tipcshm node {self.node!r}: socket table full "
                    f"(MAX_SOCKETS = {MAX_SOCKETS} sockets open)",
                )
            i = int(free[0])
            off = self.sock_off(i)
            self.mv[off : off + SOCK_ENTRY] = bytes(SOCK_ENTRY)
            self.u32[(off + S_PID) // 4] = pid
            self.u64[(off + S_OWNER_START) // 8] = start
            self.u32[(off + S_TYPE) // 4] = sock_type
            self.u32[(off + S_STATE) // 4] = SockState.OPEN
            self.u32[(off + S_PORT) // 4] = port
            self.u64[H_TABLE_GEN // 8] += 1
            self.bump("sockets_opened")
            return i

    def close_socket(self, index: int, port: int) -> bool:
        """Mark entry ``index`` CLOSING if it still holds ``port`` (binds are refused from
        now on; the name-table worker withdraws its bindings, then frees it)."""
        if not 0 <= index < MAX_SOCKETS:
            return False
        with self.lock():
            off = self.sock_off(index)
            if self.u32[(off + S_PORT) // 4] != port:
                return False
            self.u32[(off + S_STATE) // 4] = SockState.CLOSING
            return True

    def free_socket(self, index: int, port: int) -> bool:
        """Free entry ``index`` if it still holds ``port``; False if someone already did.

        Only for an entry that never had a binding (a socket whose construction failed) or
        by the name-table worker once it withdrew them all.
        """
        if not 0 <= index < MAX_SOCKETS:
            return False
        with self.lock():
            off = self.sock_off(index)
            if self.u32[(off + S_PORT) // 4] != port:
                return False
            self.u32[(off + S_STATE) // 4] = SockState.FREE
            self.u32[(off + S_PORT) // 4] = 0
            self.bump("sockets_closed")
            return True

    def socket_entry(self, index: int) -> SockEntry | None:
        off = self.sock_off(index)
        port = self.u32[(off + S_PORT) // 4]
        if not port:
            return None
        base = (off + S_TX_MSGS) // 8
        return SockEntry(
            index=index,
            port=port,
            state=self.u32[(off + S_STATE) // 4],
            pid=self.u32[(off + S_PID) // 4],
            type=self.u32[(off + S_TYPE) // 4],
            owner_start=self.u64[(off + S_OWNER_START) // 8],
            nbind=self.u32[(off + S_NBIND) // 4],
            counters={name: self.u64[base + i] for i, name in enumerate(SOCK_COUNTERS)},
            peer_node=self.u32[(off + S_PEER_NODE) // 4],
            peer_port=self.u32[(off + S_PEER_PORT) // 4],
        )

    def set_peer(self, index: int, node: int, port: int) -> None:
        """Record a connected socket's peer (port 0: none), read by the supervisor's reap."""
        off = self.sock_off(index)
        self.u32[(off + S_PEER_NODE) // 4] = node
        self.u32[(off + S_PEER_PORT) // 4] = port

    def set_listening(self, index: int) -> None:
        self.u32[(self.sock_off(index) + S_LISTENING) // 4] = 1

    def refuses_connections(self, port: int) -> bool:
        """True if ``port`` is a connection socket that is not listening."""
        index = self.socket_index(port)
        if index is None:
            return False
        off = self.sock_off(index)
        kind = self.u32[(off + S_TYPE) // 4]
        return kind in _CONNECTION_TYPES and not self.u32[(off + S_LISTENING) // 4]

    def socket_index(self, port: int) -> int | None:
        """The entry holding ``port`` (one column scan), or None."""
        if not port:
            return None
        found = np.flatnonzero(self._socks[:, S_PORT // 4] == port)
        return int(found[0]) if len(found) else None

    def socket_indices(self, state: int | None = None) -> list[int]:
        """Indices of used entries (in ``state`` if given): one column scan."""
        socks = self._socks
        used = socks[:, S_PORT // 4] != 0
        if state is not None:
            used &= socks[:, S_STATE // 4] == state
        return np.flatnonzero(used).tolist()  # type: ignore[no-any-return]

    def sockets_of(self, pid: int, start: int) -> list[SockEntry]:
        """The entries owned by process ``(pid, start)``."""
        socks = self._socks
        out = []
        for i in np.flatnonzero((socks[:, S_PID // 4] == pid) & (socks[:, S_PORT // 4] != 0)):
            e = self.socket_entry(int(i))
            if e is not None and e.owner_start == start:
                out.append(e)
        return out

    def pending_requests(self) -> list[int]:
        """Indices of used entries whose control request is not answered (REQ != ACK)."""
        socks = self._socks
        waiting = socks[:, S_CTL_REQ // 4] != socks[:, S_CTL_ACK // 4]
        waiting &= socks[:, S_PORT // 4] != 0
        return np.flatnonzero(waiting).tolist()  # type: ignore[no-any-return]

    def sockets(self) -> list[SockEntry]:
        return [e for i in self.socket_indices() if (e := self.socket_entry(i)) is not None]

    # -- replica -----------------------------------------------------------------
    def replica_seq(self) -> int:
        return self.u64[(REPLICA + R_SEQ) // 8]

    def replica_column(self, buf: int, name: str) -> memoryview:
        """Buffer ``buf``'s column ``name`` (all MAX_BINDINGS entries), cast to its type."""
        fmt = dict(REPLICA_COLUMNS)[name]
        off = REPLICA_BUF0 + buf * REPLICA_BUF + RB_COLUMN[name]
        return self.mv[off : off + MAX_BINDINGS * _COLUMN_BYTES[fmt]].cast(fmt)  # type: ignore[call-overload,no-any-return]

    def replica_sparse(self, buf: int) -> tuple[memoryview, memoryview]:
        """Buffer ``buf``'s sparse index (every 2**SPARSE_SHIFT-th key and pmax)."""
        base = REPLICA_BUF0 + buf * REPLICA_BUF
        k = self.mv[base + RB_SPARSE_KEY : base + RB_SPARSE_KEY + SPARSE_ENTRIES * 8]
        p = self.mv[base + RB_SPARSE_PMAX : base + RB_SPARSE_PMAX + SPARSE_ENTRIES * 8]
        return k.cast("Q"), p.cast("Q")

    def replica_arrays(self, buf: int) -> dict[str, Any]:
        """Buffer ``buf``'s columns as numpy arrays (views into the segment)."""
        out = {}
        for name, fmt in REPLICA_COLUMNS:
            off = REPLICA_BUF0 + buf * REPLICA_BUF + RB_COLUMN[name]
            dtype = np.uint64 if fmt == "Q" else np.uint32
            out[name] = np.frombuffer(self._map, dtype=dtype, count=MAX_BINDINGS, offset=off)
        return out

    def replica_active(self) -> int:
        return self.u32[(REPLICA + R_ACTIVE) // 4] & 1  # any process may scribble

    @staticmethod
    def replica_count_index(buf: int) -> int:
        """u32 index of buffer ``buf``'s record count."""
        return (REPLICA_BUF0 + buf * REPLICA_BUF + RB_COUNT) // 4

    def replica_count(self, buf: int) -> int:
        return min(self.u32[self.replica_count_index(buf)], MAX_BINDINGS)

    def replica_token(self, type: int) -> int:
        """The change token of service ``type`` (see :meth:`publish_replica`)."""
        return self.u64[(REPLICA + R_TOKENS) // 8 + type_token_slot(type)]

    def _replica_snapshot(self, spins: int) -> tuple[int, int, int, int, dict[str, Any]] | None:
        """(seq, own, generation, count, column copies) of the active buffer, consistent."""
        seq_i = (REPLICA + R_SEQ) // 8
        for _ in range(spins):
            s1 = self.u64[seq_i]
            if s1 & 1:
                continue
            buf = self.replica_active()
            base = REPLICA_BUF0 + buf * REPLICA_BUF
            count = self.replica_count(buf)
            own = self.u32[(base + RB_OWN) // 4]
            generation = self.u64[(base + RB_GENERATION) // 8]
            cols = {k: v[:count].copy() for k, v in self.replica_arrays(buf).items()}
            if self.u64[seq_i] == s1:
                return s1, own, generation, count, cols
        return None

    def read_replica(self, spins: int = 10000) -> tuple[int, bytes] | None:
        """(seq, image) copied consistently, or None if the writer never settled. The image
        is in :meth:`tipcshm.core.nametable.NameTable.encode`'s format (decode checks it)."""
        got = self._replica_snapshot(spins)
        if got is None:
            return None
        seq, own, generation, count, c = got
        rec = np.empty(count, dtype=IMAGE_RECORD)
        rec["type"] = c["key"] >> np.uint64(32)
        rec["lower"] = c["key"] & np.uint64(0xFFFFFFFF)
        rec["upper"] = c["upper"]
        rec["port"] = c["port"]
        rec["node"] = c["node"]
        rec["key"] = c["bkey"]
        rec["scope"] = c["scope"]
        rec["seq"] = c["seq"]
        return seq, build_image(own, count, generation, rec.tobytes())

    def replica_origins(
        self, spins: int = 10000
    ) -> list[tuple[tuple[int, int, int, int, int], int]]:
        """((type, lower, upper, node, key), bearer mask) of every binding a bearer fed."""
        got = self._replica_snapshot(spins)
        if got is None:
            return []
        c = got[4]
        out = []
        for i in np.flatnonzero(c["origin"]).tolist():
            k = int(c["key"][i])
            ident = (
                k >> 32,
                k & 0xFFFFFFFF,
                int(c["upper"][i]),
                int(c["node"][i]),
                int(c["bkey"][i]),
            )
            out.append((ident, int(c["origin"][i])))
        return out

    def write_replica(self, image: bytes, origins: dict[Any, int] | None = None) -> int:
        """Publish a whole image (:meth:`NameTable.encode`'s format; ReplicaFormatError if
        it is not one), ``origins`` giving the bearer masks of fed bindings by identity.
        Single writer only. Returns the new (even) sequence number."""
        own, count, generation, records = image_parts(image)
        if count > MAX_BINDINGS:
            raise OSError(28, f"name-table replica of {count} bindings exceeds {MAX_BINDINGS}")
        rec = np.frombuffer(records, dtype=IMAGE_RECORD, count=count)
        types = rec["type"].astype(np.uint64)
        cols: dict[str, Any] = {
            "key": (types << np.uint64(32)) | rec["lower"],
            "seq": rec["seq"],
            "upper": rec["upper"],
            "node": rec["node"],
            "port": rec["port"],
            "bkey": rec["key"],
            "scope": rec["scope"],
            "origin": np.zeros(count, dtype=np.uint32),
        }
        if origins:
            for i, r in enumerate(rec.tolist()):
                mask = origins.get((r[0], r[1], r[2], r[4], r[5]))
                if mask:
                    cols["origin"][i] = mask
        cols["pmax"] = np.maximum.accumulate((types << np.uint64(32)) | rec["upper"])
        return self.publish_replica(cols, count, own, generation, range(TYPE_TOKENS), slots=True)

    def publish_replica(
        self,
        cols: dict[str, Any],
        count: int,
        own: int,
        generation: int,
        types: Any,
        *,
        slots: bool = False,
    ) -> int:
        """Single writer only: write ``count`` records (numpy columns named as in
        REPLICA_COLUMNS, sorted, ``pmax`` computed) into the inactive buffer, flip the
        seqlock to it, then bump the change tokens of ``types`` (service types; token
        slots themselves with ``slots=True``). Returns the new (even) sequence number.

        The whole image is written each time (a memcpy per column: about a millisecond at
        100,000 bindings), so a buffer that someone scribbled on heals at the next write.
        """
        if count > MAX_BINDINGS:
            raise OSError(28, f"name-table replica of {count} bindings exceeds {MAX_BINDINGS}")
        seq_i = (REPLICA + R_SEQ) // 8
        seq = self.u64[seq_i]
        if seq & 1:  # a previous writer died between its two bumps
            seq += 1
        target = 1 - self.replica_active()
        dst = self.replica_arrays(target)
        for name, _ in REPLICA_COLUMNS:
            dst[name][:count] = cols[name][:count]
        base = REPLICA_BUF0 + target * REPLICA_BUF
        nb = (count + (1 << SPARSE_SHIFT) - 1) >> SPARSE_SHIFT
        for off, name in ((RB_SPARSE_KEY, "key"), (RB_SPARSE_PMAX, "pmax")):
            sparse = np.frombuffer(self._map, np.uint64, SPARSE_ENTRIES, base + off)
            sparse[:nb] = cols[name][: count : 1 << SPARSE_SHIFT]
            del sparse
        self.u32[(base + RB_COUNT) // 4] = count
        self.u32[(base + RB_OWN) // 4] = own
        self.u64[(base + RB_GENERATION) // 8] = generation & 0xFFFFFFFFFFFFFFFF
        self.u64[seq_i] = seq + 1
        self.u32[(REPLICA + R_ACTIVE) // 4] = target
        self.u64[seq_i] = seq + 2
        # After the flip: a client reads a type's token before it looks up, so a route
        # cached under a token was resolved in an image at least as new as the token.
        tok = (REPLICA + R_TOKENS) // 8
        for t in set(types if slots else (type_token_slot(t) for t in types)):
            self.u64[tok + t] += 1
        self.bump("replica_updates")
        return seq + 2


def type_token_slot(type: int) -> int:
    """Which of the TYPE_TOKENS counters service ``type`` shares (Fibonacci hashing)."""
    return ((type * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - TYPE_TOKENS.bit_length() + 1)


# A record of the image format (tipcshm.core.nametable: "<7IQ").
IMAGE_RECORD = np.dtype(
    [
        ("type", "<u4"),
        ("lower", "<u4"),
        ("upper", "<u4"),
        ("port", "<u4"),
        ("node", "<u4"),
        ("key", "<u4"),
        ("scope", "<u4"),
        ("seq", "<u8"),
    ]
)
assert IMAGE_RECORD.itemsize == RECORD_SIZE


def _text(text: str, size: int) -> bytes:
    """``text`` as a NUL-padded field of ``size`` bytes (cut at a character boundary)."""
    raw = text.encode()[: size - 1]
    return raw.decode(errors="ignore").encode().ljust(size, b"\0")


def _untext(field: memoryview | bytes) -> str:
    """A NUL-padded text field written by anyone: undecodable bytes are replaced."""
    return bytes(field).split(b"\0", 1)[0].decode(errors="replace")


def node_segment_exists(node: str) -> bool:
    return os.path.exists(f"/dev/shm{segment_name(node)}")
