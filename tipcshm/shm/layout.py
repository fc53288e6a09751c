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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import posix_ipc

from tipcshm.core.nametable import encoded_size
from tipcshm.errors import LimitReached, NodeNotRunning, SharedMemoryFull
from tipcshm.shm.trust import Trust, node_trust
from tipcshm.wire.names import MAX_PUBL

MAGIC = 0x314D4853_43504954  # b"TIPCSHM1" little-endian
LAYOUT_VERSION = 2  # 2: 4096 processes, 16384 sockets, control mailboxes, CLOSING state

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
SOCK_ENTRY = 128
MAX_BINDINGS = MAX_PUBL  # the replica holds every binding of the cluster this node knows
NODE_MIN_LANE_BYTES = 256 << 10  # a lane holds two of TIPC's largest messages (66,060 B)
REPLICA_CTL = 64
REPLICA_BUF = (encoded_size(MAX_BINDINGS) + 4095) & ~4095

PROC_TABLE = HEADER_BYTES
SOCK_TABLE = PROC_TABLE + MAX_PROCS * PROC_ENTRY
REPLICA = SOCK_TABLE + MAX_SOCKETS * SOCK_ENTRY
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
H_NTW_PID = 128  # u32 name-table worker pid
H_NTW_RESTARTS = 132  # u32
H_NTW_START = 136  # u64
H_NTW_HEARTBEAT = 144  # u64 CLOCK_MONOTONIC ns, written by the name-table worker
H_LANES = 152  # u32 lanes per inbox
H_LANE_BYTES = 156  # u32 bytes per lane
H_MODE = 160  # u32 permission bits for segments/queues
H_GID = 164  # i32 group owning them, -1 = unchanged
H_TABLE_GEN = 168  # u64 bumped whenever a process or socket registers (supervisor rescans)
H_CONN_LANE_BYTES = 176  # u32 bytes per lane of SEQPACKET/STREAM inboxes (0: H_LANE_BYTES)
H_CTL_BUSY_SLOT = 184  # u32 socket-table index + 1 of the request the worker is applying (0: none)
H_CTL_BUSY_SEQ = 188  # u32 its sequence number: a successor answers it EPROTO (no crash loop)
H_TAG = 192  # u64 random incarnation tag: inboxes of another node of the same name differ
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
SOCK_COUNTERS = ("tx_msgs", "tx_bytes", "rx_msgs", "rx_bytes", "drops", "returned")

# Replica control.
R_SEQ = 0  # u64 seqlock
R_ACTIVE = 8  # u32 active buffer, 0 or 1
R_LEN0 = 12  # u32 length of buffer 0's image
R_LEN1 = 16  # u32


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
        self._procs = self._socks = None
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

    @property
    def nametable_worker(self) -> tuple[int, int, int]:
        """(pid, start time, restarts) of the name-table worker."""
        return (
            self.u32[H_NTW_PID // 4],
            self.u64[H_NTW_START // 8],
            self.u32[H_NTW_RESTARTS // 4],
        )

    def set_nametable_worker(self, pid: int, start: int) -> None:
        self.u32[H_NTW_PID // 4] = pid
        self.u64[H_NTW_START // 8] = start

    def count_nametable_restart(self) -> None:
        self.u32[H_NTW_RESTARTS // 4] += 1
        self.bump("worker_restarts")

    def nametable_beat(self) -> None:
        self.u64[H_NTW_HEARTBEAT // 8] = time.monotonic_ns()

    @property
    def nametable_heartbeat_ns(self) -> int:
        return self.u64[H_NTW_HEARTBEAT // 8]

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

    def read_replica(self, spins: int = 10000) -> tuple[int, bytes] | None:
        """(seq, image) copied consistently, or None if the writer never settled."""
        seq_i = (REPLICA + R_SEQ) // 8
        for _ in range(spins):
            s1 = self.u64[seq_i]
            if s1 & 1:
                continue
            active = self.u32[(REPLICA + R_ACTIVE) // 4] & 1  # any process may scribble
            length = self.u32[(REPLICA + (R_LEN1 if active else R_LEN0)) // 4]
            start = REPLICA_BUF0 + active * REPLICA_BUF
            image = bytes(self.mv[start : start + min(length, REPLICA_BUF)])
            if self.u64[seq_i] == s1:
                return s1, image
        return None

    def write_replica(self, image: bytes) -> int:
        """Single writer only. Returns the new (even) sequence number."""
        if len(image) > REPLICA_BUF:
            raise OSError(28, f"name-table replica of {len(image)} bytes exceeds {REPLICA_BUF}")
        seq_i = (REPLICA + R_SEQ) // 8
        seq = self.u64[seq_i]
        if seq & 1:  # a previous writer died between its two bumps
            seq += 1
        target = 1 - (self.u32[(REPLICA + R_ACTIVE) // 4] & 1)
        start = REPLICA_BUF0 + target * REPLICA_BUF
        self.mv[start : start + len(image)] = image
        self.u64[seq_i] = seq + 1
        self.u32[(REPLICA + (R_LEN1 if target else R_LEN0)) // 4] = len(image)
        self.u32[(REPLICA + R_ACTIVE) // 4] = target
        self.u64[seq_i] = seq + 2
        self.bump("replica_updates")
        return seq + 2


def node_segment_exists(node: str) -> bool:
    return os.path.exists(f"/dev/shm{segment_name(node)}")
