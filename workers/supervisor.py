"""The supervisor: creates a node, runs its workers, reaps dead processes, stops cleanly.

``tipcshm start`` runs :func:`serve` in a detached process (or in the foreground). It

* creates the node segment and the name-table worker's inbox, starts the worker and marks the
  node READY once the worker beats;
* watches every process attached to the node through a pidfd (readable the instant the
  process ends, kill -9 included): it closes the dead process's sockets as the kernel
  releases a socket (their unread messages go back to their senders, connection peers are
  told, see :meth:`Supervisor.release_socket`), marks their table entries CLOSING (so a
  bind still in flight from the dead process is refused) and rings the name-table worker,
  which withdraws their bindings and frees the entries; it unlinks their inboxes;
* restarts the name-table worker when it dies; bindings survive in the replica;
* on SIGTERM (``tipcshm stop``) closes every inbox so blocked callers wake, stops the worker
  and unlinks every segment and queue of the node.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from tipcshm import proc, rundir, wire
from tipcshm.core.connection import Incoming, Released
from tipcshm.core.link import (
    MAX_LINK_PRIORITY,
    MAX_LINK_WIN,
    MAX_TOLERANCE_MS,
    MIN_LINK_WIN,
    MIN_TOLERANCE_MS,
)
from tipcshm.errors import NodeAlreadyRunning, NodeFailure, UntrustedObject
from tipcshm.plumbing import dest_node
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    BEARER_FRAME_PREFIX,
    H_MAGIC,
    LINKS_PER_BEARER,
    MAGIC,
    MAX_BEARERS,
    NAMETABLE_SLOT,
    BearerState,
    NodeSegment,
    NodeState,
    SockEntry,
    SockState,
    WorkerKind,
    WorkerState,
    bearer_inbox_name,
    check_node_name,
    inbox_name,
    nametable_inbox_name,
    segment_name,
)
from tipcshm.sock import Rejected, reject_unread
from tipcshm.workers import rows

log = logging.getLogger("tipcshm.workers.supervisor")

SCAN_INTERVAL = 0.02  # new processes are noticed within this; deaths at once (pidfd)
HEARTBEAT_INTERVAL = 0.1
WORKER_READY_TIMEOUT = 15.0
RESTART_BACKOFF = 0.2
ERROR_LOG_INTERVAL = 1.0  # at most one traceback per second in the log
# Connection sockets carry bulk streams: a ring this deep lets the sender run ahead of the
# reader (measured, tools/bench/conn_bench.py: 256 KiB lanes gave 0.7x the bandwidth of
# 1-4 MiB ones). Pages are touched only as a stream cycles through them.
CONN_LANE_BYTES = 4 << 20
# A dead process's unread messages are returned to their senders by the supervisor, which
# must stay responsive: at most this long per dead process (a Python reject costs a few
# microseconds; a full 64-lane inbox of small frames holds half a million) ...
REAP_DRAIN_SECONDS = 0.2
# ... and this many frames per socket; the rest are dropped (counted as reap_dropped).
REAP_DRAIN_FRAMES = 16384
# What is left then is skipped unread and counted, within these bounds.
REAP_DISCARD_SECONDS = 0.1
REAP_DISCARD_FRAMES = 1 << 20
# Senders' inboxes attached at once to take returned messages (each costs a mapping).
REAP_MAX_DESTINATIONS = 256


TIPC_UDP_PORT = 6118
DEFAULT_NET_ID = 4711
DEFAULT_TOLERANCE_MS = 1500
DEFAULT_WINDOW = 50
DEFAULT_PRIORITY = 10
MAX_IF_NAME = 15  # the kernel's bearer interface names: at most 15 characters


@dataclass(frozen=True)
class BearerSpec:
    """One UDP bearer: the local address it binds, and the peers it sends discovery to
    besides the multicast group (``remotes``, the kernel's replicast list).

    ``name`` is the interface part of the bearer name (``udp:NAME``) that goes into
    RESET/ACTIVATE and link names; by default the local IP if it fits the kernel's 15
    characters, else ``udp<k>``.
    """

    local: str
    port: int = TIPC_UDP_PORT
    remotes: tuple[tuple[str, int], ...] = ()
    media: str = "udp"
    name: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.media != "udp":
            raise ValueError(f"bearer media {self.media!r}: only udp is supported")
        ip = ipaddress.ip_address(self.local)
        if ip.is_multicast or ip.is_unspecified:
            raise ValueError(f"bearer local address {self.local}: must be a unicast address")
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError(f"bearer port {self.port}: must be 1..65535")
        for host, port in self.remotes:
            rip = ipaddress.ip_address(host)
            if rip.version != ip.version:
                raise ValueError(f"remote {host}: not the address family of {self.local}")
            if not 1 <= port <= 0xFFFF:
                raise ValueError(f"remote port {port}: must be 1..65535")
        if len(self.name) > MAX_IF_NAME:
            raise ValueError(f"bearer name {self.name!r}: at most {MAX_IF_NAME} characters")

    def if_name(self, k: int) -> str:
        if self.name:
            return self.name
        return self.local if len(self.local) <= MAX_IF_NAME else f"udp{k}"

    def bearer_name(self, k: int) -> str:
        """As ``tipc bearer list`` prints it."""
        return f"{self.media}:{self.if_name(k)}"

    def label(self) -> str:
        """The worker-table name: ``udp:LOCALIP:PORT``."""
        host = f"[{self.local}]" if ":" in self.local else self.local
        return f"{self.media}:{host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "media": self.media,
            "local": self.local,
            "port": self.port,
            "remotes": [list(r) for r in self.remotes],
            "name": self.name,
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BearerSpec:
        return cls(
            local=str(d["local"]),
            port=int(d.get("port", TIPC_UDP_PORT)),
            remotes=tuple((str(h), int(p)) for h, p in d.get("remotes", ())),
            media=str(d.get("media", "udp")),
            name=str(d.get("name", "")),
            enabled=bool(d.get("enabled", True)),
        )

    @classmethod
    def parse(cls, text: str, remotes: list[str] | tuple[str, ...] = ()) -> BearerSpec:
        """From ``udp:LOCALIP[:PORT]`` (IPv6 in brackets when a port follows) and
        ``IP[:PORT]`` remotes; ValueError naming what is wrong."""
        media, sep, rest = text.partition(":")
        if not sep or media != "udp":
            raise ValueError(f"bearer {text!r}: expected udp:LOCALIP[:PORT]")
        host, port = _host_port(rest)
        return cls(
            local=host,
            port=port,
            remotes=tuple(_host_port(r) for r in remotes),
        )


def _host_port(text: str) -> tuple[str, int]:
    """``IP``, ``IPv4:PORT``, ``[IPv6]:PORT`` or a bare IPv6 -> (ip text, port)."""
    port = TIPC_UDP_PORT
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: missing ]")
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"{text!r}: expected [IPv6]:PORT")
            port = int(tail[1:])
    elif text.count(":") == 1:
        host, port_s = text.split(":")
        port = int(port_s)
    else:
        host = text
    return str(ipaddress.ip_address(host)), port


@dataclass
class NodeConfig:
    node: str
    identity: bytes
    lanes: int = 64
    lane_bytes: int = 256 * 1024
    mode: int = 0o600
    gid: int = -1
    conn_lane_bytes: int = CONN_LANE_BYTES
    bearers: list[BearerSpec] = field(default_factory=list)
    net_id: int = DEFAULT_NET_ID
    tolerance_ms: int = DEFAULT_TOLERANCE_MS
    window: int = DEFAULT_WINDOW
    priority: int = DEFAULT_PRIORITY

    def check(self) -> None:
        """ValueError for values the node cannot run with (kernel limits, tipc-wire §11)."""
        check_node_name(self.node)
        if len(self.identity) != 16:
            raise ValueError("node identity must be 16 bytes")
        if len(self.bearers) > MAX_BEARERS:
            raise ValueError(f"at most {MAX_BEARERS} bearers")
        if not 1 <= self.net_id <= 9999:
            raise ValueError(f"cluster id {self.net_id}: must be 1..9999")
        if not MIN_TOLERANCE_MS <= self.tolerance_ms <= MAX_TOLERANCE_MS:
            raise ValueError(
                f"tolerance {self.tolerance_ms} ms: must be {MIN_TOLERANCE_MS}..{MAX_TOLERANCE_MS}"
            )
        if not MIN_LINK_WIN <= self.window <= MAX_LINK_WIN:
            raise ValueError(f"window {self.window}: must be {MIN_LINK_WIN}..{MAX_LINK_WIN}")
        if not 0 <= self.priority <= MAX_LINK_PRIORITY:
            raise ValueError(f"priority {self.priority}: must be 0..{MAX_LINK_PRIORITY}")
        seen = set()
        for b in self.bearers:
            if (b.local, b.port) in seen:
                raise ValueError(f"two bearers on {b.label()}")
            seen.add((b.local, b.port))

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "identity": self.identity.hex(),
                "lanes": self.lanes,
                "lane_bytes": self.lane_bytes,
                "mode": self.mode,
                "gid": self.gid,
                "conn_lane_bytes": self.conn_lane_bytes,
                "bearers": [b.to_json() for b in self.bearers],
                "net_id": self.net_id,
                "tolerance_ms": self.tolerance_ms,
                "window": self.window,
                "priority": self.priority,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        """ValueError for anything malformed (the file is the owner's, but hand-editable)."""
        try:
            d = json.loads(text)
            cfg = cls(
                node=str(d["node"]),
                identity=bytes.fromhex(d["identity"]),
                lanes=int(d.get("lanes", 64)),
                lane_bytes=int(d.get("lane_bytes", 256 * 1024)),
                mode=int(d.get("mode", 0o600)),
                gid=int(d.get("gid", -1)),
                conn_lane_bytes=int(d.get("conn_lane_bytes", CONN_LANE_BYTES)),
                bearers=[BearerSpec.from_json(b) for b in d.get("bearers", ())],
                net_id=int(d.get("net_id", DEFAULT_NET_ID)),
                tolerance_ms=int(d.get("tolerance_ms", DEFAULT_TOLERANCE_MS)),
                window=int(d.get("window", DEFAULT_WINDOW)),
                priority=int(d.get("priority", DEFAULT_PRIORITY)),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed node configuration: {exc!r}") from None
        cfg.check()
        return cfg


def bearer_specs(
    bearers: tuple[str, ...] | list[str], remotes: tuple[str, ...] | list[str]
) -> list[BearerSpec]:
    """``--bearer``/``--remote`` values as specs: every remote goes to each bearer of its
    address family (ValueError if some remote matches no bearer)."""
    specs = [BearerSpec.parse(b) for b in bearers]
    peers = [_host_port(r) for r in remotes]
    out = []
    for spec in specs:
        fam = ipaddress.ip_address(spec.local).version
        mine = tuple(p for p in peers if ipaddress.ip_address(p[0]).version == fam)
        out.append(replace(spec, remotes=spec.remotes + mine))
    for host, _ in peers:
        fam = ipaddress.ip_address(host).version
        if not any(ipaddress.ip_address(s.local).version == fam for s in specs):
            raise ValueError(f"remote {host}: no bearer of its address family")
    return out


def load_config(node: str) -> NodeConfig:
    """The running node's configuration from its run directory (workers, CLI)."""
    text = rundir.read_config(node)
    if text is None:
        raise FileNotFoundError(f"node {node!r} has no configuration in {rundir.runtime_dir()}")
    return NodeConfig.from_json(text)


def identity_for(text: str | None, bearers: Sequence[BearerSpec] = ()) -> bytes:
    """The node identity from --identity; else, as the kernel's UDP media auto-configures
    a node without one (``tipc_udp_enable``), the first bearer's local IP bytes, zero
    padded (an IPv4 bearer makes the address equal to the IPv4 address); else a random
    128-bit one."""
    if text is not None:
        return wire.identity_from_str(text)
    if bearers:
        return ipaddress.ip_address(bearers[0].local).packed.ljust(16, b"\0")
    return secrets.token_bytes(16)


# -- leftovers -----------------------------------------------------------------------
def running_supervisor(node: str) -> int | None:
    """Pid of the live supervisor of ``node`` (from its owner-only record), or None."""
    rec = rundir.read_record(node)
    return None if rec is None else rec[0]


def _shm_names(node: str) -> list[str]:
    """Names under /dev/shm of everything a node creates: its segment, inboxes and bells."""
    seg = segment_name(node)[1:]
    try:
        return sorted(
            "/" + n for n in os.listdir("/dev/shm") if n == seg or n.startswith(seg + ".in.")
        )
    except FileNotFoundError:
        return []


def clean_leftovers(node: str) -> list[str]:
    """Remove what a crashed node left in /dev/shm, signalling nobody.

    Call only while holding the node's lock (no supervisor runs). The segment must be ours:
    one planted by another user is refused (UntrustedObject), not used or removed, so that
    a start fails loudly instead of serving on someone else's memory. Inboxes and bells under
    the node's prefix are unlinked by name (unlinking acts on no content), including those a
    group member made; the workers of a crashed supervisor died with it (see
    :func:`tipcshm.proc.die_with_parent`).
    """
    path = f"/dev/shm{segment_name(node)}"
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UntrustedObject(
                path,
                f"a leftover of uid {st.st_uid}, not yours: its owner (or root) must remove it, "
                "or pick another --name",
            )
    names = _shm_names(node)
    for name in names:
        # A killed supervisor closed none of its sockets' inboxes: close them now, so that
        # a process holding a lane into one (a cached route) gets an error from its next
        # send instead of a success nobody can receive. (Each process's watcher closes its
        # own inboxes too, but a moment later: this makes `stop` the point after which
        # every send fails.)
        if name != segment_name(node) and not name.endswith(".bell"):
            with contextlib.suppress(OSError, ValueError), Inbox.attach(name) as inbox:
                inbox.mark_closed()
    removed = []
    for name in names:
        try:
            os.unlink(f"/dev/shm{name}")
        except FileNotFoundError:
            continue
        except PermissionError:
            raise UntrustedObject(
                f"/dev/shm{name}", "a leftover of another user that you may not remove"
            ) from None
        removed.append(name)
    return removed


# -- returning a dead process's messages -------------------------------------------------
class _Returns:
    """Delivers the messages the supervisor sends while it reaps one process (returned
    messages, connection aborts) without waiting: a destination whose inbox is full or
    gone loses its message, counted. A local port's inbox, or for a port on another node
    the inbox of the bearer worker whose link to that node is up (the frame behind
    BEARER_FRAME_PREFIX, as a client writes it); each attached once, detached at the end.
    """

    def __init__(self, seg: NodeSegment) -> None:
        self.seg = seg
        self.node = seg.node
        self.own = seg.addr
        self.returned = 0
        self.dropped = 0
        self._inboxes: dict[str, Inbox | None] = {}

    def __enter__(self) -> _Returns:
        return self

    def __exit__(self, *exc: object) -> None:
        for inbox in self._inboxes.values():
            if inbox is not None:
                inbox.detach()
        self._inboxes.clear()

    def _inbox(self, name: str) -> Inbox | None:
        if name in self._inboxes:
            return self._inboxes[name]
        if len(self._inboxes) >= REAP_MAX_DESTINATIONS:
            return None
        try:
            inbox: Inbox | None = Inbox.attach(name, trust=self.seg.trust, tag=self.seg.tag)
        except OSError:
            inbox = None
        self._inboxes[name] = inbox
        return inbox

    def post(self, port: int, frame: bytes, node: int | None = None) -> bool:
        """``frame`` to ``port`` on ``node`` (default: the frame's destination node, w7 of
        a header longer than 24 bytes, else this node)."""
        if node is None:
            long_header = wire.hsize_of(wire.U32.unpack_from(frame)[0]) > wire.SHORT_H_SIZE
            node = (dest_node(frame) if long_header else 0) or self.own
        if node == self.own:
            inbox = self._inbox(inbox_name(self.node, port))
        else:
            row = next((r for r, peer in self.seg.link_rows_up() if peer == node), None)
            if row is None:
                return False  # no link to that node: the kernel's message is lost too
            inbox = self._inbox(bearer_inbox_name(self.node, row // LINKS_PER_BEARER))
            frame = BEARER_FRAME_PREFIX.pack(node, 0) + frame
        if inbox is None:
            return False
        try:
            if inbox.closed:
                return False
            p = inbox.producer()
            with p.lock:
                return p.write(frame)
        except OSError:
            return False


def _discard(inbox: Inbox) -> tuple[int, bool]:
    """Consume, unread, what reject_unread had no time for: (frames, whether that was all).

    Skipping a frame costs a poll and a release, a small part of returning it, so the
    count is exact unless the inbox holds an absurd amount (a scribbled tail)."""
    deadline = time.monotonic() + REAP_DISCARD_SECONDS
    n = 0
    while n < REAP_DISCARD_FRAMES:
        r = inbox.poll()
        if r is None:
            return n, True
        inbox.release(r[3])
        n += 1
        if not n & 1023 and time.monotonic() >= deadline:
            break
    return n, inbox.poll() is None


def _selector(released: Released) -> Callable[[wire.Header], bool]:
    """reject_unread's choice for a connection socket, from its Released policy."""

    def select(h: wire.Header) -> bool:
        m = Incoming(h.user, h.mtype, h.errcode, h.syn, h.orig_node, h.orig_port, h.size - h.hsize)
        return released.returns(m)

    return select


# -- the supervisor ------------------------------------------------------------------
@dataclass
class _Worker:
    """One worker-table slot's process, as the supervisor runs it."""

    slot: int
    what: str  # for the log: "name-table worker", "bearer 0 worker"
    argv: list[str]  # after ``python -m``
    inbox: Inbox | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    enabled: bool = True


class Supervisor:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = config.node
        self.stopping = False
        self.seg: NodeSegment | None = None
        self.worker_inbox: Inbox | None = None  # the name-table worker's
        self.workers: dict[int, _Worker] = {}  # worker-table slot -> its process
        self.reload = False  # SIGHUP: re-read the configuration (bearer enable/disable)
        self.selector = selectors.DefaultSelector()
        self.watched: dict[tuple[int, int], int] = {}  # (pid, start) -> pidfd
        self.pid, self.start = proc.self_token()
        self.scanned_generation = -1
        self.lock_fd = -1  # the node's start lock, held for the supervisor's life
        self.state = NodeState.STARTING

    # -- start ---------------------------------------------------------------------
    def create(self) -> None:
        cfg = self.config
        lock = rundir.try_lock(self.node)
        if lock is None:
            raise NodeAlreadyRunning(self.node, running_supervisor(self.node) or 0)
        self.lock_fd = lock
        for name in clean_leftovers(self.node):
            log.info("removed leftover %s", name)
        seg = NodeSegment.create(self.node, mode=cfg.mode, gid=cfg.gid)
        self.seg = seg
        self.repair_header()
        rundir.write_record(self.node, self.pid, self.start)
        seg.set_started()
        self.worker_inbox = Inbox.create(
            nametable_inbox_name(self.node),
            lanes=cfg.lanes,
            lane_bytes=cfg.lane_bytes,
            mode=cfg.mode,
            gid=cfg.gid,
            tag=seg.tag,
            owner=(self.pid, self.start),
        )
        rundir.write_config(self.node, cfg.to_json())
        nt = nametable_inbox_name(self.node)
        seg.set_worker(NAMETABLE_SLOT, WorkerKind.NAMETABLE, "nametable", nt)
        self.workers[NAMETABLE_SLOT] = _Worker(
            NAMETABLE_SLOT, "name-table worker", ["tipcshm.workers.nametable", self.node]
        )
        self.workers[NAMETABLE_SLOT].inbox = self.worker_inbox
        for k, spec in enumerate(cfg.bearers):
            self.setup_bearer(k, spec)
        seg.beat()
        seg.publish_magic()

    def _create_inbox(self, name: str) -> Inbox:
        """A bearer worker's inbox. Its lanes are as deep as a connection socket's: they
        carry streams to other nodes (with 256 KiB lanes a 1 MiB writer waited on the
        worker after every four messages), and pages are touched only as they are used."""
        cfg, seg = self.config, self.seg
        assert seg is not None
        return Inbox.create(
            name,
            lanes=cfg.lanes,
            lane_bytes=cfg.conn_lane_bytes,
            mode=cfg.mode,
            gid=cfg.gid,
            tag=seg.tag,
            owner=(self.pid, self.start),
        )

    def setup_bearer(self, k: int, spec: BearerSpec) -> None:
        """Describe bearer ``k`` (worker slot 1 + k, its inbox, its row) and make its inbox."""
        seg, cfg = self.seg, self.config
        assert seg is not None
        slot = 1 + k
        name = bearer_inbox_name(self.node, k)
        w = self.workers.get(slot)
        if w is None:
            w = _Worker(slot, f"bearer {k} worker", [])
            w.inbox = self._create_inbox(name)
            self.workers[slot] = w
        w.argv = ["tipcshm.workers.bearer", self.node, str(k)]
        w.enabled = spec.enabled
        seg.set_worker(slot, WorkerKind.BEARER, spec.label(), name)
        rows.clear_bearer(seg, k)
        rows.describe_bearer(
            seg,
            k,
            state=BearerState.ENABLED if spec.enabled else BearerState.DISABLED,
            name=spec.bearer_name(k),
            local=spec.label().partition(":")[2],
            port=spec.port,
            mtu=0,
            net_id=cfg.net_id,
            tolerance=cfg.tolerance_ms,
            window=cfg.window,
            priority=cfg.priority,
        )
        rows.clear_links(seg, k)

    def spawn(self, w: _Worker) -> None:
        assert self.seg is not None
        w.proc = subprocess.Popen(
            [sys.executable, "-m", *w.argv],
            stdin=subprocess.DEVNULL,
            close_fds=True,
            env={**os.environ, "TIPCSHM_SUPERVISOR_PID": str(self.pid)},
        )
        w.started = time.monotonic()
        w.restart_at = None
        if w.slot == NAMETABLE_SLOT:
            # The name-table worker names itself once its topology service is bound: a
            # pid in its slot has always meant "ready to serve" to the node's tools.
            self.seg.set_worker_spawned(w.slot, 0, 0)
        else:
            self.seg.set_worker_spawned(w.slot, w.proc.pid, proc.start_time(w.proc.pid) or 0)
        log.info("%s started, pid %d", w.what, w.proc.pid)

    def spawn_worker(self) -> None:
        """(Re)start the name-table worker."""
        self.spawn(self.workers[NAMETABLE_SLOT])

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        """The name-table worker's process."""
        w = self.workers.get(NAMETABLE_SLOT)
        return None if w is None else w.proc

    def wait_worker_ready(self) -> None:
        """Until the name-table worker's first heartbeat (it beats once its topology
        service is open); bearers need not be up for the node to be ready."""
        seg = self.seg
        child = self.worker
        assert seg is not None and child is not None
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while True:
            w = seg.worker(NAMETABLE_SLOT)
            if w is not None and w.pid == child.pid and w.state == WorkerState.RUNNING:
                return
            if child.poll() is not None:
                raise NodeFailure(self.node, f"name-table worker exited with {child.returncode}")
            if time.monotonic() > deadline:
                raise NodeFailure(self.node, "name-table worker did not become ready")
            time.sleep(0.005)

    def repair_header(self) -> None:
        """(Re)write the header fields only the supervisor owns.

        Anyone attached to the node can write the segment; a scribbled identity, state or
        geometry would mislead every later client, so the supervisor restores them from its
        own copy with every heartbeat.
        """
        cfg, seg = self.config, self.seg
        assert seg is not None
        seg.set_identity(cfg.identity, wire.hash128to32(cfg.identity.ljust(16, b"\0")))
        seg.set_lane_geometry(cfg.lanes, cfg.lane_bytes, cfg.conn_lane_bytes)
        seg.set_supervisor(self.pid, self.start)
        seg.set_permissions(cfg.mode, cfg.gid)
        seg.restore_fixed(self.state)
        if self.state != NodeState.STOPPING:
            for w in self.workers.values():
                if w.inbox is not None:
                    w.inbox.restore_header()

    # -- watching processes ---------------------------------------------------------
    def _tokens(self) -> set[tuple[int, int]]:
        assert self.seg is not None
        tokens = self.seg.owner_tokens()
        tokens.discard((self.pid, self.start))
        mine = {w.proc.pid for w in self.workers.values() if w.proc is not None}
        return {t for t in tokens if t[0] not in mine}

    def scan(self) -> None:
        assert self.seg is not None
        generation = self.seg.table_generation
        if generation == self.scanned_generation:
            return  # nobody registered since the last scan
        self.scanned_generation = generation
        for token in self._tokens() - self.watched.keys():
            fd = proc.pidfd_of(*token)  # any pair: the tables are anyone's to scribble on
            if fd < 0:
                self.reap(token)
                continue
            self.watched[token] = fd
            self.selector.register(fd, selectors.EVENT_READ, token)

    def reap(self, token: tuple[int, int]) -> None:
        """Release everything a dead process held."""
        assert self.seg is not None
        pid, start = token
        fd = self.watched.pop(token, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)
        seg = self.seg
        ports = []
        entries = seg.sockets_of(pid, start)
        deadline = time.monotonic() + REAP_DRAIN_SECONDS
        with _Returns(seg) as out:
            for e in entries:
                self.release_socket(e, token, out, deadline)
                # CLOSING refuses a bind still in flight; the worker withdraws the bindings
                # and only then frees the entry, so the port is not reused before.
                seg.close_socket(e.index, e.port)
                ports.append(e.port)
        if out.returned:
            seg.bump("messages_returned", out.returned)
        if out.dropped:
            seg.bump("reap_dropped", out.dropped)
        if ports and self.worker_inbox is not None:
            self.worker_inbox.ring()
        for index in seg.process_indices(pid, start):
            seg.free_process(index)
        seg.bump("processes_reaped")
        log.info("process %d ended; released %d socket(s)", pid, len(ports))

    def release_socket(
        self, e: SockEntry, token: tuple[int, int], out: _Returns, deadline: float
    ) -> None:
        """Close a dead process's socket as the kernel releases one (tipc_release): its
        unread messages go back to their senders (see :func:`tipcshm.sock.reject_unread`
        and :class:`tipcshm.core.connection.Released`), its connection's peer is told.

        The consumer is dead, so the supervisor reads the inbox itself; whatever is in it
        is untrusted, and the work is bounded (``deadline``, REAP_DRAIN_FRAMES per socket):
        what is left is dropped and counted. An entry whose inbox another process owns
        (the table is anyone's to write) is not this process's socket: its inbox is left
        alone.
        """
        name = inbox_name(self.node, e.port)
        released = None
        if e.type in (socket.SOCK_SEQPACKET, socket.SOCK_STREAM):
            released = Released(
                listening=not self.seg.refuses_connections(e.port),  # type: ignore[union-attr]
                peer_node=e.peer_node,
                peer_port=e.peer_port,
            )
        try:
            inbox = Inbox.attach(name, trust=self.seg.trust, tag=self.seg.tag)  # type: ignore[union-attr]
        except OSError:
            inbox = None  # never made, or unreadable: nothing to return
        if inbox is not None:
            with inbox:
                if inbox.owner != token:
                    return
                inbox.mark_closed()
                if e.state == SockState.OPEN:  # a CLOSING one returned its queue itself
                    try:
                        done = reject_unread(
                            inbox,
                            out.own,
                            out.post,
                            select=None if released is None else _selector(released),
                            max_frames=REAP_DRAIN_FRAMES,
                            deadline=deadline,
                        )
                    except Exception:
                        # whatever the inbox held, the socket is released all the same (a
                        # failure here must not leave the entry to be reaped again and again)
                        log.exception("socket %#010x of a dead process: unreadable inbox", e.port)
                        done = Rejected()
                        done.cut = True
                    out.returned += done.returned
                    out.dropped += done.dropped
                    if done.cut:
                        left, counted = _discard(inbox)
                        out.dropped += left + (not counted)  # not all counted: at least one
                        log.warning(
                            "socket %#010x of a dead process: more unread messages than "
                            "the supervisor returns in time; %d%s dropped",
                            e.port,
                            left,
                            "" if counted else " and more",
                        )
        if released is not None and released.abort_due and e.state == SockState.OPEN:
            # a CLOSING one told its peer
            self.abort_peer(e.port, released.peer_node, released.peer_port)
        Inbox.unlink_name(name)

    def abort_peer(self, port: int, peer_node: int, peer_port: int) -> None:
        """Tell a dead socket's connection peer, as the kernel does when a port goes away:
        a 24-byte CONN_MSG from the dead port with TIPC_ERR_NO_PORT (its recv raises
        ECONNRESET, its send fails). A peer on another node gets it over the link."""
        assert self.seg is not None
        own = self.seg.addr
        frame = wire.HDR24.pack(
            wire.make_w0(wire.User.CRITICAL_IMPORTANCE, wire.SHORT_H_SIZE, wire.SHORT_H_SIZE),
            wire.make_w1(wire.DataType.CONN_MSG, errcode=wire.ErrorCode.NO_PORT),
            0,
            own,
            port,
            peer_port,
        )
        with _Returns(self.seg) as out:
            if out.post(peer_port, frame, peer_node or own):
                return
            if peer_node not in (0, own):
                return  # no link to it: its node learns of our loss when the link goes
        # The local peer's inbox was full: give its reader a moment to make room.
        with contextlib.suppress(OSError):
            inbox = Inbox.attach(
                inbox_name(self.node, peer_port), trust=self.seg.trust, tag=self.seg.tag
            )
            with inbox, contextlib.suppress(OSError):  # closed meanwhile
                p = inbox.producer()
                with p.lock:
                    if not p.write(frame) and p.wait_space(len(frame), 0.1):
                        p.write(frame)

    def check_workers(self) -> None:
        """Restart every worker that died (after RESTART_BACKOFF if it died young)."""
        seg = self.seg
        assert seg is not None
        now = time.monotonic()
        for w in self.workers.values():
            child = w.proc
            if child is not None and child.poll() is not None:
                self._worker_died(w, child)
                w.proc = None
                w.restart_at = (
                    w.started + RESTART_BACKOFF if now - w.started < RESTART_BACKOFF else now
                )
            if w.proc is None and w.enabled and w.restart_at is not None and now >= w.restart_at:
                seg.count_worker_restart(w.slot)
                self.spawn(w)

    def check_worker(self) -> None:  # the name it had before bearers
        self.check_workers()

    def _worker_died(self, w: _Worker, child: subprocess.Popen[bytes]) -> None:
        seg = self.seg
        assert seg is not None
        log.warning("%s %d exited with %s; restarting", w.what, child.pid, child.returncode)
        # Its own sockets (the name-table worker's topology service and its subscribers'
        # connections) go the way of any dead process's: peers get aborts, and the
        # successor, which drops bindings of sockets that are gone, binds a fresh one.
        entry = seg.worker(w.slot)
        if entry is not None and entry.pid == child.pid:
            self.reap((entry.pid, entry.start))
        seg.set_worker_state(w.slot, WorkerState.STOPPED)
        if w.slot != NAMETABLE_SLOT:
            # Its links died with it: clients must stop routing into its inbox at once
            # (their sends then fail as to an unreachable node) until the successor's
            # links are up again. The rows keep their peers for the successor, which
            # holds what is left in its inbox for them until their links are back.
            rows.links_down(seg, w.slot - 1)

    def stop_worker(self, w: _Worker) -> None:
        child = w.proc
        if child is None:
            return
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(3)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        w.proc = None
        w.restart_at = None
        seg = self.seg
        if seg is not None:
            entry = seg.worker(w.slot)
            if entry is not None and entry.pid == child.pid and self.state != NodeState.STOPPING:
                self.reap((entry.pid, entry.start))
            seg.set_worker_state(w.slot, WorkerState.STOPPED)

    def apply_config(self) -> None:
        """SIGHUP: read the configuration again and start, stop or restart bearer workers
        to match it (`tipcshm bearer enable|disable`). Node-wide settings (identity,
        geometry) are fixed for the node's life; changes to them are logged and ignored."""
        seg = self.seg
        assert seg is not None
        try:
            new = load_config(self.node)
        except (OSError, ValueError) as exc:
            log.error("configuration not applied: %s", exc)
            return
        if (new.identity, new.lanes, new.lane_bytes) != (
            self.config.identity,
            self.config.lanes,
            self.config.lane_bytes,
        ):
            log.warning("identity and geometry changes need a restart of the node; ignored")
        old = self.config.bearers
        for k, spec in enumerate(new.bearers[:MAX_BEARERS]):
            before = old[k] if k < len(old) else None
            if before == spec:
                continue
            w = self.workers.get(1 + k)
            if w is not None:
                self.stop_worker(w)
            self.setup_bearer(k, spec)
            w = self.workers[1 + k]
            if spec.enabled:
                self.spawn(w)
            log.info(
                "bearer %d (%s) %s", k, spec.label(), "enabled" if spec.enabled else "disabled"
            )
        self.config.bearers = list(new.bearers[:MAX_BEARERS])

    # -- main loop ------------------------------------------------------------------
    def serve(self, ready: Callable[[int], None] | None = None) -> None:
        assert self.seg is not None
        self.spawn_worker()
        for w in self.workers.values():
            if w.slot != NAMETABLE_SLOT and w.enabled:
                self.spawn(w)
        self.wait_worker_ready()
        self.state = NodeState.READY
        self.seg.state = self.state
        log.info("node %s ready (address %#010x)", self.node, self.seg.addr)
        if ready is not None:
            ready(self.seg.addr)
        last_beat = 0.0
        last_error = -ERROR_LOG_INTERVAL
        while not self.stopping:
            try:
                for key, _ in self.selector.select(SCAN_INTERVAL):
                    self.reap(key.data)
                self.scan()
                self.check_workers()
                if self.reload:
                    self.reload = False
                    self.apply_config()
            except Exception:
                # Whatever the tables held, the node must outlive it: its owner's tools and
                # every other application depend on this process. Logged, rate-limited.
                now = time.monotonic()
                if now - last_error >= ERROR_LOG_INTERVAL:
                    log.exception("error while serving the node (going on)")
                    last_error = now
                self.scanned_generation = -1  # rescan: the failed pass may have been partial
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_INTERVAL:
                self.repair_header()
                self.seg.beat()
                last_beat = now

    def shutdown(self) -> None:
        if self.lock_fd < 0:
            return  # create() never got the node: whatever is there belongs to another start
        seg = self.seg
        if seg is None:  # create() failed before making anything: remove nothing else
            self._release_lock()
            return
        self.state = NodeState.STOPPING
        if seg is not None:
            seg.state = self.state
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        for w in self.workers.values():
            self.stop_worker(w)
        if seg is not None:
            for e in seg.sockets():
                name = inbox_name(self.node, e.port)
                try:
                    with Inbox.attach(name, trust=seg.trust, tag=seg.tag) as inbox:
                        inbox.mark_closed()  # blocked callers wake and see the node stopped
                except OSError as exc:
                    log.warning("stop: could not close inbox %s: %s", name, exc)
                Inbox.unlink_name(name)
        for w in self.workers.values():
            if w.inbox is not None:
                w.inbox.unlink()
                w.inbox.detach()
                w.inbox = None
        self.worker_inbox = None
        for fd in self.watched.values():
            os.close(fd)
        self.watched.clear()
        if seg is not None:
            seg.u64[H_MAGIC // 8] = 0
            seg.close()
        NodeSegment.unlink(self.node)
        for name in _shm_names(self.node):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm{name}")
        self._release_lock()
        log.info("node %s stopped", self.node)

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(rundir.record_path(self.node))
        with contextlib.suppress(OSError):
            os.unlink(rundir.config_path(self.node))
        with contextlib.suppress(OSError):
            os.unlink(rundir.lock_path(self.node))  # while still held: see rundir.try_lock
        os.close(self.lock_fd)
        self.lock_fd = -1


def serve(config: NodeConfig, ready: Callable[[int], None] | None = None) -> int:
    """Run a node until SIGTERM/SIGINT. Returns the exit status.

    Raises NodeAlreadyRunning when another supervisor holds the name, UntrustedObject when
    another user's leftovers sit under it, SharedMemoryFull when /dev/shm has no room.
    """
    check_node_name(config.node)
    sup = Supervisor(config)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        sup.stopping = True

    def hup(_sig: int, _frame: FrameType | None) -> None:
        sup.reload = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    try:
        config.check()
        sup.create()
        sup.serve(ready)
    finally:
        sup.shutdown()
    return 0


def _report(fd: int, text: str) -> None:
    """One line to `tipcshm start`, which waits for it on a pipe."""
    with contextlib.suppress(OSError):
        os.write(fd, text.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m tipcshm.workers.supervisor [--ready-fd FD]``: the node's configuration
    (:meth:`NodeConfig.to_json`) comes on stdin, once; the supervisor writes it into the
    owner-only run directory, where its workers read it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tipcshm.workers.supervisor")
    parser.add_argument("--ready-fd", type=int, default=-1)
    args = parser.parse_args(argv)
    fd = args.ready_fd
    try:
        config = NodeConfig.from_json(sys.stdin.read())
    except ValueError as exc:
        if fd >= 0:
            _report(fd, f"error {exc}")
        print(exc, file=sys.stderr)
        return 2
    rundir.setup_logging(f"supervisor[{config.node}]")
    if fd < 0:
        return serve(config)
    try:
        return serve(config, ready=lambda addr: _report(fd, f"ready {addr}"))
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        _report(fd, f"error {exc}")
        return 1
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "BearerSpec",
    "NodeConfig",
    "load_config",
    "Supervisor",
    "serve",
    "clean_leftovers",
    "running_supervisor",
    "MAGIC",
]
