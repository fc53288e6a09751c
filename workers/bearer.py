"""The bearer worker: one UDP bearer of a node, running the sans-IO NodeStack on a socket.

Run as ``python -m tipcshm.workers.bearer NODE K`` by the supervisor (worker slot 1 + K);
its configuration (:class:`tipcshm.workers.supervisor.BearerSpec` K and the node-wide link
settings) comes from the node's owner-only run directory.

Theory of operation (the kernel's udp_media.c + the bearer half of node.c/link.c):

* one UDP socket bound to LOCALIP:PORT (IPv4 or IPv6) carries every frame. Discovery
  frames (destination None in the stack's outbox) go to every configured remote (the
  kernel's replicast list) and, on a bearer without remotes, to the multicast group the
  cluster id names (tipc-wire §4: ``228.0.<id>>8>.<id&255>`` / ``ff02::<id>``), joined on
  the local address; frames with a destination go to the media address the peer
  advertised in discovery.
* every datagram is untrusted: the stack's RemoteProtocolError is counted (``rx_bad``)
  and the datagram dropped; nothing from the network ends the worker.
* frames local senders wrote into the bearer's inbox (``BEARER_FRAME_PREFIX`` + one TIPC
  message) are validated (prefix, header, users 0-3 and CONN_MANAGER, origin = this node,
  destination = the prefix's node) and sent over that node's link. A congested link holds
  the frame taken and stops reading the inbox until LinkUncongested, so the lanes fill
  and their senders block: back-pressure, never a drop. No link: the message goes back to
  its sender with TIPC_ERR_NO_NODE unless it is dest-droppable.
* messages the links deliver are written into the destination sockets' inboxes through
  this process's own lanes (tipcshm.client.attach_worker); a named message whose port is
  gone is looked up again among this node's bindings; multicast goes to every local
  socket bound in range with cluster scope. A full receiver: RDM/DGRAM get the kernel's
  overload handling (rejected with TIPC_ERR_OVERLOAD, or dropped when dest-droppable);
  connection messages wait in order and are retried.
* group traffic (tipc-wire §9): a member socket's GROUP_PROTOCOL messages and group
  data (GRP_BCAST/GRP_MCAST replicast copies naming the node in w7, GRP_UCAST) are
  checked as above plus their own shapes (see ``_group_ok``) and sent like data. From a
  peer, on the unicast link or the broadcast receive link alike, GROUP_PROTOCOL and
  GRP_UCAST go to their port and a GRP_BCAST/GRP_MCAST to every local socket bound to
  the group's type with cluster scope, one copy each with that port in w5
  (tipc_sk_mcast_rcv); per port in order, retried while full, dropped if the port is
  gone (never returned). A local member socket that closes or dies without sending
  LEAVE to the members it joined through this worker gets them sent on its behalf,
  after what its process still had in the inbox (``_check_group_senders``).
* peers' bindings (name distribution) and the link-state bindings go to the name-table
  worker as :mod:`tipcshm.shm.names_feed` records in this worker's lane of its inbox,
  RESET_BEARER first; this node's own cluster-scope bindings are published to the peers
  by diffing the replica whenever its sequence word moves.
* link rows (one per peer: DOWN when discovered, UP when the link is up), counters and
  the command mailbox of the bearer row are kept in the node segment (workers.rows).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import logging
import os
import random
import socket
import struct
import sys
import time

from tipcshm import proc, rundir, wire
from tipcshm.client import NodeClient, attach_worker
from tipcshm.constants import TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import (
    CoreEvent,
    Delivered,
    LinkDown,
    LinkUncongested,
    LinkUp,
    NodeDown,
    PeerDiscovered,
    Published,
    Withdrawn,
)
from tipcshm.core.link import (
    MAX_LINK_PRIORITY,
    MAX_LINK_WIN,
    MAX_TOLERANCE_MS,
    MIN_LINK_WIN,
    MIN_TOLERANCE_MS,
)
from tipcshm.core.stack import OFFER_NO_LINK, OFFER_SENT, NodeStack
from tipcshm.shm import names_feed
from tipcshm.shm.lane import Inbox, Producer
from tipcshm.shm.layout import (
    B_COUNTERS,
    BEARER_COUNTER_INDEX,
    BEARER_FRAME_PREFIX,
    LINKS_PER_BEARER,
    MAX_LINKS,
    S_PORT,
    S_STATE,
    BearerCommand,
    BearerState,
    LinkRowState,
    NodeSegment,
    SockState,
    bearer_inbox_name,
    nametable_inbox_name,
)
from tipcshm.wire import group as wgroup
from tipcshm.wire.discovery import UdpMediaAddr
from tipcshm.wire.link import scan
from tipcshm.workers import rows
from tipcshm.workers.loop import WorkerLoop
from tipcshm.workers.supervisor import BearerSpec, NodeConfig, load_config

log = logging.getLogger("tipcshm.workers.bearer")

SUPERVISOR_PID_ENV = "TIPCSHM_SUPERVISOR_PID"
PROFILE_ENV = "TIPCSHM_BEARER_PROFILE"  # a directory: cProfile the worker, stats on exit
RX_BUFFER = 65536 + 64
COUNTER_INTERVAL = 0.1  # link-row counters are refreshed at least this often
RETRY_INTERVAL = 0.005  # full receivers and a full name-table lane are retried this often
INBOX_BATCH = 256  # frames taken from the inbox per pass (the socket gets its turn)
LOG_INTERVAL = 5.0
MTU_V4 = 14000  # TIPC_DEF_LINK_UDP_MTU (tipc-wire §4)
MTU_V6 = 1280
_DATA_USERS = frozenset({0, 1, 2, 3, int(wire.User.CONN_MANAGER)})
_CONN_SOCKETS = (int(socket.SOCK_SEQPACKET), int(socket.SOCK_STREAM))
_LINK_COUNTER_FIELDS = {
    "rx_packets": "rx_packets",
    "rx_fragments": "rx_fragments",
    "rx_fragmented": "rx_fragmented",
    "rx_bundles": "rx_bundles",
    "rx_bundled": "rx_bundled",
    "tx_packets": "tx_packets",
    "tx_fragments": "tx_fragments",
    "tx_fragmented": "tx_fragmented",
    "tx_bundles": "tx_bundles",
    "tx_bundled": "tx_bundled",
    "rx_states": "rx_states",
    "rx_probes": "rx_probes",
    "rx_nacks": "rx_naks",
    "rx_deferred": "rx_defs",
    "tx_states": "tx_states",
    "tx_probes": "tx_probes",
    "tx_nacks": "tx_naks",
    "tx_acks": "tx_acks",
    "retransmitted": "tx_retrans",
    "duplicates": "rx_dups",
    "link_congestion": "link_congs",
    "send_queue_max": "send_queue_max",
}
_W3 = wire.PREV_NODE_OFFSET  # previous node
_W6 = wire.ORIG_NODE_OFFSET  # originating node (headers longer than 24 bytes)
_W7 = wire.DEST_NODE_OFFSET  # destination node
_PREFIX = BEARER_FRAME_PREFIX.size
_MIN_FRAME = _PREFIX + wire.SHORT_H_SIZE
_U32 = wire.U32
_U32_FROM = wire.U32.unpack_from
_W01 = struct.Struct(">II")
_CONN_MANAGER = int(wire.User.CONN_MANAGER)
_CONN_MSG = int(wire.DataType.CONN_MSG)
_MCAST_MSG = int(wire.DataType.MCAST_MSG)
_NAMED_MSG = int(wire.DataType.NAMED_MSG)
_DIRECT_MSG = int(wire.DataType.DIRECT_MSG)
_GROUP_PROTOCOL = int(wire.User.GROUP_PROTOCOL)
_LOCAL_USERS = _DATA_USERS | {_GROUP_PROTOCOL}
_GRP_MEMBER_EVT = int(wire.DataType.GRP_MEMBER_EVT)
_GRP_BCAST = int(wire.DataType.GRP_BCAST_MSG)
_GRP_MCAST = int(wire.DataType.GRP_MCAST_MSG)
_GRP_UCAST = int(wire.DataType.GRP_UCAST_MSG)
_GRP_JOIN = int(wire.GroupMsgType.GRP_JOIN_MSG)
_GRP_LEAVE = int(wire.GroupMsgType.GRP_LEAVE_MSG)
_GRP_LAST_PROTO = max(int(t) for t in wire.GroupMsgType)
_CLUSTER = wire.LOOKUP_SCOPE_CLUSTER
# Group words at the places the name words have: w8 the group type, w9 the GROUP_PROTOCOL
# sync point (wire.group.w9_high), w10 a group data message's seqno (wire.group.w10_seqno)
_W8 = wire.NAME_TYPE_OFFSET
_W9 = wire.NAME_INSTANCE_OFFSET
_W10 = wire.NAME_UPPER_OFFSET
_ALL_INSTANCES = 0xFFFFFFFF


def multicast_group(net_id: int, ipv6: bool) -> str:
    """The group a bearer without remotes discovers on (the `tipc` tool's derivation)."""
    if ipv6:
        return f"ff02::{net_id}"
    return f"228.0.{(net_id >> 8) & 255}.{net_id & 255}"


class _RateLog:
    def __init__(self) -> None:
        self.next = 0.0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + LOG_INTERVAL
            log.log(level, msg, *args)


@dataclasses.dataclass(slots=True)
class _GroupSender:
    """A local group member as the frames it sent through this worker show it."""

    index: int  # its socket-table entry (-1: none any more when its JOIN was read)
    lane: int = -1  # the inbox lane its frames came through last
    snd_nxt: dict[int, int] = dataclasses.field(default_factory=dict)  # node -> bc_snd_nxt
    members: set[tuple[int, int]] = dataclasses.field(default_factory=set)  # joined
    gone_since: float = 0.0


class BearerWorker:
    def __init__(
        self,
        seg: NodeSegment,
        k: int,
        spec: BearerSpec,
        config: NodeConfig,
        inbox: Inbox,
        client: NodeClient,
        *,
        clock: object = time.monotonic,
    ) -> None:
        self.seg = seg
        self.k = k
        self.spec = spec
        self.config = config
        self.inbox = inbox
        self.client = client
        self.own = seg.addr
        self._own_w3 = _U32.pack(self.own)
        self.loop = WorkerLoop(seg, 1 + k)
        # The bearer's counters as indices into the segment's u64 view: the per-datagram
        # and per-message ones are bumped inline (seg.bearer_count costs a call and two
        # dict lookups; this worker is their single writer either way).
        base = (seg.bearer_off(k) + B_COUNTERS) // 8
        self._u64 = seg.u64
        self._ci = {name: base + i for name, i in BEARER_COUNTER_INDEX.items()}
        self._log = _RateLog()
        ip = ipaddress.ip_address(spec.local)
        self.ipv6 = ip.version == 6
        self.family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((spec.local, spec.port))
        self.sock.setblocking(False)
        self.mcast_sock: socket.socket | None = None
        self.targets: list[tuple[str, int]] = [(h, p) for h, p in spec.remotes]
        if not spec.remotes:
            self._join_multicast(spec, config.net_id)
        self.media = UdpMediaAddr.parse(spec.local, spec.port).encode()
        self.mtu = MTU_V6 if self.ipv6 else MTU_V4
        now = time.monotonic()
        self.stack = NodeStack(
            identity=seg.identity,
            addr=self.own,
            media=self.media,
            if_name=spec.if_name(k),
            rng=random.Random(),
            now=now,
            net_id=config.net_id,
            mtu=self.mtu,
            tolerance_ms=config.tolerance_ms,
            window=config.window,
        )
        self.priority = config.priority
        self._rxbuf = bytearray(RX_BUFFER)
        self._rxview = memoryview(self._rxbuf)
        self._media_addr: dict[bytes, tuple[str, int] | None] = {}
        self._src_media: dict[object, bytes] = {}  # recvfrom's source -> media address
        # link rows: peer -> row (this bearer's range)
        self._rows: dict[int, int] = {}
        self._free_rows = list(range((k + 1) * LINKS_PER_BEARER - 1, k * LINKS_PER_BEARER - 1, -1))
        self._peer_info: dict[int, PeerDiscovered] = {}
        self._up_counts: dict[int, tuple[int, int]] = {}
        # names feed
        self._feed: Producer | None = None
        self._feed_inbox: Inbox | None = None
        self._feed_queue: collections.deque[bytes] = collections.deque()
        self._published: set[tuple[int, int, int, int, int]] = set()
        self._table_seq = -1
        # delivery waiting for room, per destination port (connection messages, in order)
        self._waiting: dict[int, collections.deque[bytes]] = {}
        # the frame taken from the inbox while its link is congested: (dest, msg, importance)
        self._held: tuple[int, bytes, int] | None = None
        self._expected: set[int] = set()  # peers whose links a restart expects back
        self._expect_until = 0.0
        # Connection endings bound for other nodes wait here until the inbox is drained
        # (see _send_ending): (dest, message, importance, since)
        self._late: collections.deque[tuple[int, bytes, int, float]] = collections.deque()
        self._reading = False
        self._last_counters = 0.0
        # local group members that joined members on other nodes (see _track_group),
        # and the LEAVEs sent on behalf of those that died, waiting for the link
        self._group_senders: dict[int, _GroupSender] = {}
        self._leaves: collections.deque[tuple[int, bytes]] = collections.deque()

    # -- set-up ------------------------------------------------------------------------
    def _join_multicast(self, spec: BearerSpec, net_id: int) -> None:
        group = multicast_group(net_id, self.ipv6)
        try:
            rx = socket.socket(self.family, socket.SOCK_DGRAM)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.ipv6:
                ifindex = 0
                rx.bind((group, spec.port, 0, ifindex))
                mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
                rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                rx.bind((group, spec.port))
                mreq = socket.inet_aton(group) + socket.inet_aton(spec.local)
                rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                self.sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(spec.local)
                )
            rx.setblocking(False)
        except OSError as exc:
            log.warning(
                "bearer %s: cannot join multicast group %s (%s); discovery by remotes only",
                spec.label(),
                group,
                exc,
            )
            return
        self.mcast_sock = rx
        self.targets.append((group, spec.port))

    def start(self) -> None:
        """RESET_BEARER to the name-table worker, describe the bearer, arm the loop."""
        seg, k, spec, cfg = self.seg, self.k, self.spec, self.config
        # Frames a predecessor's senders left in the inbox for the peers it was linked
        # with are held until those links are back (at most a few tolerances), not
        # returned at once: a worker restart is not the loss of those nodes.
        self._expected = rows.known_peers(seg, k)
        self._expect_until = time.monotonic() + EXPECT_LINKS_FACTOR * cfg.tolerance_ms / 1000
        rows.clear_links(seg, k)
        rows.describe_bearer(
            seg,
            k,
            state=BearerState.ENABLED,
            name=spec.bearer_name(k),
            local=spec.label().partition(":")[2],
            port=spec.port,
            mtu=self.mtu,
            net_id=cfg.net_id,
            tolerance=cfg.tolerance_ms,
            window=cfg.window,
            priority=cfg.priority,
        )
        self._feed_record(names_feed.NameUpdate(names_feed.RESET_BEARER, k))
        self.loop.add_reader(self.sock.fileno(), lambda: self._on_readable(self.sock))
        if self.mcast_sock is not None:
            ms = self.mcast_sock
            self.loop.add_reader(ms.fileno(), lambda: self._on_readable(ms))
        self._resume_inbox()
        self._sync_bindings(time.monotonic())
        self._after(time.monotonic())

    # -- the network -------------------------------------------------------------------
    def _on_readable(self, sock: socket.socket) -> None:
        """Up to INBOX_BATCH datagrams into the stack, then act on what they caused once."""
        stack, u64, ci = self.stack, self._u64, self._ci
        c_dgrams, c_bytes = ci["rx_datagrams"], ci["rx_bytes"]
        recv, rxbuf, rxview = sock.recvfrom_into, self._rxbuf, self._rxview
        src_media = self._src_media
        now = time.monotonic()  # one clock reading per batch: a batch takes milliseconds
        for _ in range(INBOX_BATCH):
            try:
                n, src = recv(rxbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP errors of earlier sends, e.g. ECONNREFUSED
                u64[ci["tx_errors"]] += 1
                self._log(logging.INFO, "bearer %s: %s", self.spec.label(), exc)
                continue
            u64[c_dgrams] += 1
            u64[c_bytes] += n
            smedia = src_media.get(src)
            if smedia is None:
                smedia = self._media_of(src)
            try:
                # one copy: the stack may keep the frame (out-of-order, reassembly)
                stack.receive(rxview[:n].tobytes(), now, smedia or None)
            except RemoteProtocolError as exc:
                u64[ci["rx_bad"]] += 1
                self._log(
                    logging.INFO, "bearer %s: bad datagram from %s: %s", self.spec.label(), src, exc
                )
            except Exception:  # a bug in the stack: the node outlives it, logged
                u64[ci["rx_bad"]] += 1
                log.exception("bearer %s: datagram from %s raised", self.spec.label(), src)
        self._after(time.monotonic())

    def _media_of(self, src: tuple[str, int]) -> bytes:  # (host, port[, flow, scope])
        """The media address of a datagram's source (cached: a bounded dict)."""
        try:
            smedia = UdpMediaAddr.parse(src[0].split("%")[0], src[1]).encode()
        except ValueError:
            smedia = b""
        if len(self._src_media) < 4096:
            self._src_media[src] = smedia
        return smedia

    def _sendto(self, frame: bytes, addr: tuple[str, int]) -> None:
        u64, ci = self._u64, self._ci
        try:
            self.sock.sendto(frame, addr)
        except (BlockingIOError, InterruptedError):
            u64[ci["tx_errors"]] += 1  # socket buffer full: the link retransmits
            return
        except OSError as exc:
            u64[ci["tx_errors"]] += 1
            self._log(logging.WARNING, "bearer %s: sendto %s: %s", self.spec.label(), addr, exc)
            return
        u64[ci["tx_datagrams"]] += 1
        u64[ci["tx_bytes"]] += len(frame)

    def _dest_addr(self, media: bytes) -> tuple[str, int] | None:
        try:
            return self._media_addr[media]
        except KeyError:
            pass
        try:
            m = UdpMediaAddr.decode(media)
            addr: tuple[str, int] | None = (m.host, m.port)
            if m.is_ipv6 != self.ipv6:
                addr = None
        except (ValueError, wire.WireError):
            addr = None
        if len(self._media_addr) < 4096:
            self._media_addr[media] = addr
        return addr

    def _flush(self, now: float) -> None:
        for frame, dest in self.stack.frames_to_send(now):
            if dest is None:
                for target in self.targets:
                    self._sendto(frame, target)
                continue
            addr = self._dest_addr(dest)
            if addr is None:
                self.seg.bearer_count(self.k, "tx_errors")
                continue
            self._sendto(frame, addr)

    def _after(self, now: float) -> None:
        """After anything happened: act on the stack's events, send its frames, re-arm."""
        stack = self.stack
        for _ in range(64):
            while (ev := stack.next_event()) is not None:
                try:
                    self._on_event(ev, now)
                except Exception:
                    log.exception("bearer %s: handling %r failed", self.spec.label(), ev)
            self._flush(now)  # may raise events of its own (the stack pumps its parts)
            ev = stack.next_event()
            if ev is None:
                break
            try:
                self._on_event(ev, now)
            except Exception:
                log.exception("bearer %s: handling %r failed", self.spec.label(), ev)
        self._retry_held(now)
        self.loop.set_timer("stack", self.stack.next_timer(), self._on_timer)
        if now - self._last_counters >= COUNTER_INTERVAL:
            self._refresh_counters(now)

    def _on_timer(self, now: float) -> None:
        self.stack.handle_timer(now)
        self._after(now)

    def _on_tick(self, now: float) -> None:
        """Every COUNTER_INTERVAL: counters, commands, the replica, waiting deliveries."""
        self._sync_bindings(now)
        self._serve_command()
        self._retry_waiting()
        self._drain_feed()
        if self._late:
            self._flush_late(now, self._held is None and not self.inbox.pending())
        if self._group_senders or self._leaves:
            self._check_group_senders(now)
        self._after(now)
        self.loop.set_timer("tick", now + COUNTER_INTERVAL, self._on_tick)

    # -- events ------------------------------------------------------------------------
    def _on_event(self, ev: CoreEvent, now: float) -> None:
        if isinstance(ev, Delivered):
            self._deliver(ev.source, ev.frame, now)
        elif isinstance(ev, Published):
            self._feed_record(
                names_feed.NameUpdate(
                    names_feed.PUBLISH,
                    self.k,
                    ev.type,
                    ev.lower,
                    ev.upper,
                    TIPC_CLUSTER_SCOPE,
                    ev.node,
                    ev.port,
                    ev.key,
                )
            )
        elif isinstance(ev, Withdrawn):
            self._feed_record(
                names_feed.NameUpdate(
                    names_feed.WITHDRAW,
                    self.k,
                    ev.type,
                    ev.lower,
                    ev.upper,
                    TIPC_CLUSTER_SCOPE,
                    ev.node,
                    ev.port,
                    ev.key,
                )
            )
        elif isinstance(ev, PeerDiscovered):
            self._peer_info[ev.addr] = ev
            self._row_for(ev.addr, LinkRowState.DOWN, now)
        elif isinstance(ev, LinkUp):
            ups, downs = self._up_counts.get(ev.peer, (0, 0))
            self._up_counts[ev.peer] = (ups + 1, downs)
            row = self._row_for(ev.peer, LinkRowState.UP, now)
            if row is not None:
                self._feed_record(self._link_binding(names_feed.PUBLISH, ev.peer, row))
        elif isinstance(ev, LinkDown):
            ups, downs = self._up_counts.get(ev.peer, (0, 0))
            self._up_counts[ev.peer] = (ups, downs + 1)
            row = self._rows.get(ev.peer)
            if row is not None:
                self._row_for(ev.peer, LinkRowState.DOWN, now)
                self._feed_record(self._link_binding(names_feed.WITHDRAW, ev.peer, row))
            log.info("bearer %s: link %s down (%s)", self.spec.label(), ev.name, ev.reason)
        elif isinstance(ev, NodeDown):
            self._feed_record(names_feed.NameUpdate(names_feed.PURGE_NODE, self.k, node=ev.addr))
            self._abort_connections(ev.addr, ev.error)
        elif isinstance(ev, LinkUncongested):
            self._retry_held(now)

    def _link_binding(self, op: int, peer: int, row: int) -> names_feed.NameUpdate:
        return names_feed.NameUpdate(op, self.k, 2, peer, peer, TIPC_NODE_SCOPE, self.own, 0, row)

    # -- link rows ---------------------------------------------------------------------
    def _row_for(self, peer: int, state: int, now: float) -> int | None:
        row = self._rows.get(peer)
        if row is None:
            if not self._free_rows:
                self._log(logging.WARNING, "bearer %s: link table full", self.spec.label())
                return None
            row = self._free_rows.pop()
            self._rows[peer] = row
        self._write_row(peer, row, state)
        rows.bump_link_gen(self.seg, self.k)
        self._refresh_counters(now)
        return row

    def _write_row(self, peer: int, row: int, state: int) -> None:
        info = self._peer_info.get(peer)
        node = self.stack.peer(peer)
        entry = node.entry(0) if node is not None else None
        link = entry.link if entry is not None else None
        media = ""
        if entry is not None:
            try:
                media = str(UdpMediaAddr.decode(entry.media))
            except (ValueError, wire.WireError):
                media = ""
        old = self.seg.link_entry(row)
        up_since = old.up_since_ns if old is not None and old.peer == peer else 0
        if state == LinkRowState.UP and (old is None or old.state != LinkRowState.UP):
            up_since = time.time_ns()
        rows.write_link(
            self.seg,
            row,
            state=state,
            peer=peer,
            name=link.name if link is not None else "",
            peer_id=info.identity if info is not None else b"",
            media=media,
            caps=info.capabilities if info is not None else 0,
            mtu=link.mtu if link is not None else self.mtu,
            tolerance=getattr(link, "tolerance_ms", self.config.tolerance_ms),
            window=getattr(link, "window", self.config.window),
            priority=self.priority,
            up_since_ns=up_since,
        )

    def _refresh_counters(self, now: float) -> None:
        self._last_counters = now
        for peer, row in self._rows.items():
            node = self.stack.peer(peer)
            entry = node.entry(0) if node is not None else None
            if entry is None:
                continue
            link = entry.link
            stats = getattr(link, "statistics", None)
            if stats is None:
                continue
            st = stats()
            values = {ours: getattr(st, theirs, 0) for ours, theirs in _LINK_COUNTER_FIELDS.items()}
            values["send_queue_now"] = sum(link.queue_sizes().values())
            ups, downs = self._up_counts.get(peer, (0, 0))
            values["link_up_count"] = ups
            values["link_down_count"] = downs
            rows.set_link_counters(self.seg, row, values)

    # -- names -------------------------------------------------------------------------
    def _feed_record(self, update: names_feed.NameUpdate) -> None:
        self._feed_queue.append(names_feed.encode(update))
        self._drain_feed()

    def _drain_feed(self) -> None:
        q = self._feed_queue
        if not q:
            return
        p = self._feed
        if p is None:
            try:
                self._feed_inbox = Inbox.attach(
                    nametable_inbox_name(self.seg.name), trust=self.seg.trust, tag=self.seg.tag
                )
                p = self._feed = self._feed_inbox.producer()
            except OSError as exc:
                self._log(
                    logging.WARNING, "bearer %s: name-table inbox: %s", self.spec.label(), exc
                )
                return
        try:
            with p.lock:
                while q and p.write(q[0]):
                    q.popleft()
        except OSError as exc:  # the inbox was closed: the node is stopping
            self._log(logging.WARNING, "bearer %s: name-table inbox: %s", self.spec.label(), exc)

    def _sync_bindings(self, now: float) -> None:
        """Keep the stack's publications equal to this node's cluster-scope bindings."""
        seq = self.client.table_seq
        if seq == self._table_seq:
            return
        self._table_seq = seq
        want = {
            (b.type, b.lower, b.upper, b.port, b.key)
            for b in self.client.table().bindings()
            if b.node == self.own and b.scope == TIPC_CLUSTER_SCOPE and b.type != 0
        }
        for b in self._published - want:
            self._published.discard(b)
            try:
                self.stack.withdraw(*b, now)
            except LocalProtocolError:
                pass
        for b in want - self._published:
            try:
                self.stack.publish(*b, now)
            except LocalProtocolError as exc:
                self._log(logging.WARNING, "bearer %s: publish %s: %s", self.spec.label(), b, exc)
                continue
            self._published.add(b)

    # -- frames from local senders -----------------------------------------------------
    def _resume_inbox(self) -> None:
        if not self._reading:
            self._reading = True
            self.loop.add_reader(self.inbox.fileno(), self._on_inbox)

    def _pause_inbox(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.inbox.fileno())

    def _on_inbox(self) -> None:
        now = time.monotonic()
        inbox, u64, ci = self.inbox, self._u64, self._ci
        c_from, c_bad = ci["from_lanes"], ci["bad_from_lanes"]
        check, send = self._check_local, self._send_local
        drained = False
        for _ in range(INBOX_BATCH):
            if self._held is not None:
                break
            r = inbox.poll()
            if r is None:
                drained = True
                break
            buf, off, n, lane = r
            checked = check(buf, off, n)  # copies the frame out before it is checked
            inbox.release(lane)
            u64[c_from] += 1
            if checked is None:
                u64[c_bad] += 1
                continue
            dest, msg, imp = checked
            w0, w1 = _W01.unpack_from(msg)
            if w1 & wire.W1_ERRCODE_MASK:
                self._late.append((dest, msg, imp, now))  # an ending: after the data
                continue
            if w1 >> wire.W1_MTYPE_SHIFT >= _GRP_BCAST or wire.user_of(w0) == _GROUP_PROTOCOL:
                self._track_group(dest, msg, lane)  # (checked: no other user has such types)
            send(dest, msg, imp, now)
        self._flush_late(now, drained and self._held is None)
        self._after(now)

    def _flush_late(self, now: float, drained: bool) -> None:
        """Send the connection endings that waited for the data before them.

        An ending (a close, an abort, a returned connection message) must not overtake
        data of its connection, which the kernel keeps in order on one link queue. Here
        that data may still sit in a lane of this inbox (the dead process's, while the
        supervisor's abort came through its own lane) or be held for a congested link
        (while this worker returns an ack whose port closed). So endings wait until the
        inbox was found empty with nothing held, or at most LATE_MAX seconds."""
        late = self._late
        while late and (drained or now - late[0][3] >= LATE_MAX):
            dest, msg, imp, _since = late.popleft()
            self._send_local(dest, msg, imp, now)
            if self._held is not None:
                return

    def _check_local(self, buf: memoryview, off: int, n: int) -> tuple[int, bytes, int] | None:
        """(dest node, message, importance) of a valid frame from a local sender (the
        ``n`` bytes at ``buf[off:]``, a lane), else None.

        The lane is writable by its producer, so the message is first copied out (one
        copy, with this node as previous node in w3) and only the copy is checked: the
        generic header as the kernel's tipc_msg_validate (wire.link.scan: version, header
        and message sizes), its size exactly the frame's, users 0-3 or CONN_MANAGER,
        sequenced, and in a long header origin = this node, destination = the prefix's.
        """
        if n < _MIN_FRAME:
            return None
        dest, reserved = BEARER_FRAME_PREFIX.unpack_from(buf, off)
        if reserved != 0 or dest == 0 or dest == self.own:
            return None
        o = off + _PREFIX
        msg = b"".join((buf[o : o + _W3], self._own_w3, buf[o + _W3 + 4 : off + n]))
        try:
            user, size, non_seq, _seqno, _ack, _prev = scan(msg)
        except wire.WireError:
            return None
        if size != n - _PREFIX or user not in _LOCAL_USERS or non_seq:
            return None
        w0, w1 = _W01.unpack_from(msg)
        hsize = wire.hsize_of(w0)
        if hsize > wire.SHORT_H_SIZE:
            if _U32_FROM(msg, _W6)[0] != self.own:
                return None
            # a 28-byte header has no w7: its destination node reads as 0, never ``dest``
            if hsize <= _W7 or _U32_FROM(msg, _W7)[0] != dest:
                return None
        mtype = w1 >> wire.W1_MTYPE_SHIFT
        if (user == _GROUP_PROTOCOL or mtype >= _GRP_MEMBER_EVT) and not _group_ok(
            msg, user, w0, w1, mtype, hsize, size
        ):
            return None
        # CONN_MANAGER and GROUP_PROTOCOL at the high level (the link itself queues them
        # at SYSTEM importance, which is never congested but overflows into a reset)
        return dest, msg, (user if user <= 3 else 2)

    # -- group members of this node (LEAVE on behalf of a dead one) --------------------
    def _track_group(self, dest: int, msg: bytes, lane: int) -> None:
        """Remember what a local group member sent to node ``dest``: its group broadcast
        sequence as that node last saw it, and the members it sent JOIN to and not LEAVE
        (the api's "LEAVE on behalf"). A port is tracked from its first JOIN on until
        it has left every member it joined or its socket-table entry is no longer OPEN
        (see :meth:`_check_group_senders`)."""
        port = _U32_FROM(msg, wire.ORIG_PORT_OFFSET)[0]
        t = self._group_senders.get(port)
        w1 = _U32_FROM(msg, 4)[0]
        mtype = w1 >> wire.W1_MTYPE_SHIFT
        if wire.user_of(_U32_FROM(msg)[0]) == _GROUP_PROTOCOL:
            if mtype != _GRP_JOIN and mtype != _GRP_LEAVE:
                return
            member = (dest, _U32_FROM(msg, wire.DEST_PORT_OFFSET)[0])
            high = wgroup.w9_high(_U32_FROM(msg, _W9)[0])
            if mtype == _GRP_JOIN:
                if t is None:
                    t = self._new_group_sender(port)
                    if t is None:
                        return
                if len(t.members) < MAX_GROUP_SENDERS:
                    t.members.add(member)
            elif t is None:
                return
            else:
                t.members.discard(member)
            t.snd_nxt[dest] = high
            t.lane = lane
            if not t.members:
                del self._group_senders[port]
            return
        if t is None:
            return
        seqno = wgroup.w10_seqno(_U32_FROM(msg, _W10)[0])
        t.snd_nxt[dest] = seqno if mtype == _GRP_UCAST else (seqno + 1) & 0xFFFF
        t.lane = lane

    def _new_group_sender(self, port: int) -> _GroupSender | None:
        if len(self._group_senders) >= MAX_GROUP_SENDERS:
            self._log(logging.WARNING, "bearer %s: too many group members", self.spec.label())
            return None
        # Its socket may be closed already (it sent and closed before we read the lane):
        # then the LEAVE follows at once, as its own would have.
        index = self.seg.socket_index(port)
        t = self._group_senders[port] = _GroupSender(-1 if index is None else index)
        return t

    def _sock_open(self, index: int, port: int) -> bool:
        if index < 0:
            return False
        off = self.seg.sock_off(index)
        u32 = self.seg.u32
        return bool(
            u32[(off + S_PORT) // 4] == port and u32[(off + S_STATE) // 4] == SockState.OPEN
        )

    def _lane_busy(self, lane: int) -> bool:
        """Frames of ``lane`` are still queued in our inbox (any lane, for the shared
        overflow lane, which has no slot of its own)."""
        inbox = self.inbox
        if 0 <= lane < inbox.lanes:
            try:
                return int(inbox.lane_info(lane)["frames_queued"]) > 0
            except (IndexError, ValueError, OSError):
                return False
        return inbox.pending()

    def _check_group_senders(self, now: float) -> None:
        """A tracked member whose socket is no longer OPEN (closed, or its process died)
        without having left: once what its process queued in our inbox is sent, each
        member it joined gets a LEAVE from it carrying the sync point that member's node
        last saw, as the socket's own leave would have (tipc_sk_leave)."""
        for port, t in list(self._group_senders.items()):
            if self._sock_open(t.index, port):
                continue
            if not t.gone_since:
                t.gone_since = now
            if now - t.gone_since < LEAVE_WAIT and self._lane_busy(t.lane):
                continue  # its earlier frames first (at most LEAVE_WAIT)
            del self._group_senders[port]
            for node, dport in sorted(t.members):
                leave = wgroup.build_proto(
                    _GRP_LEAVE,
                    own_node=self.own,
                    own_port=port,
                    dest_node=node,
                    dest_port=dport,
                    high=t.snd_nxt.get(node, 0),
                )
                self._leaves.append((node, leave))
        self._flush_leaves(now)

    def _flush_leaves(self, now: float) -> None:
        """Send the LEAVEs on behalf, behind anything held for a congested link."""
        leaves = self._leaves
        while leaves and self._held is None:
            node, msg = leaves.popleft()
            self._send_local(node, msg, 2, now)

    def _awaited(self, dest: int, now: float) -> bool:
        """Whether a link to ``dest`` is expected back soon (see :meth:`start`)."""
        if dest in self._expected and now < self._expect_until:
            return True
        self._expected.discard(dest)
        return False

    def _send_local(self, dest: int, msg: bytes, imp: int, now: float) -> None:
        done = self.stack.offer(dest, msg, imp, now)  # the stack's events: at _after's flush
        if done == OFFER_SENT:
            return
        if done == OFFER_NO_LINK and not self._awaited(dest, now):
            self._return_local(msg, wire.ErrorCode.NO_NODE)
        else:
            self._hold(dest, msg, imp)

    def _hold(self, dest: int, msg: bytes, imp: int) -> None:
        self._held = (dest, msg, imp)
        self._u64[self._ci["held"]] += 1
        self._pause_inbox()

    def _retry_held(self, now: float) -> None:
        held = self._held
        if held is None:
            self._resume_inbox()
            return
        dest, msg, imp = held
        if not self.stack.link_up(dest) and self._awaited(dest, now):
            return
        if not self.stack.link_up(dest):
            self._held = None
            self._return_local(msg, wire.ErrorCode.NO_NODE)
        elif not self.stack.congested(dest, imp):
            self._held = None
            try:
                self.stack.send(dest, msg, now)
            except LocalProtocolError:
                self._held = held
                return
        else:
            return
        self._resume_inbox()
        self.inbox.keep_readable()

    def _return_local(self, msg: bytes, err: int) -> None:
        """Give a message we cannot send back to its local sender (tipc_msg_reverse)."""
        try:
            rej = wire.reverse_for_reject(msg, err, self.own)
        except (ValueError, wire.WireError):
            rej = None
        if rej is None:
            self.seg.bearer_count(self.k, "dropped")
            return
        self.seg.bearer_count(self.k, "rejected")
        port = wire.U32.unpack_from(rej, 20)[0]
        if not self._write_port(port, rej):
            self.seg.bearer_count(self.k, "dropped")

    # -- delivery into local sockets ---------------------------------------------------
    def _producer(self, port: int) -> Producer | None:
        """This worker's lane into socket ``port``'s inbox; None if there is no open
        socket ``port`` here (no inbox, or a closed one: the client's cached lane says so
        without scanning the socket table)."""
        try:
            return self.client.producer(port) if port else None
        except OSError:
            return None

    def _put(self, p: Producer, frame: bytes) -> bool:
        """One frame into a lane (False: full, or the inbox was closed meanwhile)."""
        try:
            with p.lock:
                ok = p.write(frame)
        except OSError:
            return False
        if ok:
            self._u64[self._ci["to_lanes"]] += 1
        return ok

    def _write_port(self, port: int, frame: bytes) -> bool:
        p = self._producer(port)
        return p is not None and self._put(p, frame)

    def _port_gone(self, port: int) -> bool:
        return self._producer(port) is None

    def _deliver(self, source: int, frame: bytes, now: float) -> None:
        """A data or CONN_MANAGER message a link delivered: into its socket's inbox."""
        try:
            # the generic header's checks (tipc_msg_validate), read word by word
            user, _size, _non_seq, _seqno, _ack, _prev = scan(frame)
        except wire.WireError:
            self._u64[self._ci["dropped"]] += 1
            return
        w0, w1 = _W01.unpack_from(frame)
        mtype = w1 >> wire.W1_MTYPE_SHIFT
        port = _U32_FROM(frame, wire.DEST_PORT_OFFSET)[0]
        if user == _GROUP_PROTOCOL or mtype >= _GRP_MEMBER_EVT:
            self._deliver_group(user, w0, w1, mtype, port, frame, source, now)
            return
        if mtype == _CONN_MSG or user == _CONN_MANAGER:
            self._deliver_conn(port, frame, source, now)
            return
        if mtype == _NAMED_MSG or mtype == _DIRECT_MSG:
            p = self._producer(port)
            if p is None and mtype == _NAMED_MSG:
                # the port is gone: the name may be bound to another socket here
                hsize = wire.hsize_of(w0)
                lower = _word(frame, hsize, wire.NAME_INSTANCE_OFFSET)
                local = self.client.table().lookup_mcast_sockets(
                    _word(frame, hsize, wire.NAME_TYPE_OFFSET), lower, lower, exact_scope=True
                )
                if not local:
                    self._reject(frame, wire.ErrorCode.NO_NAME, source, now)
                    return
                port = local[0]
                buf = bytearray(frame)
                _U32.pack_into(buf, wire.DEST_PORT_OFFSET, port)
                frame = bytes(buf)
                p = self._producer(port)
            if p is None:
                self._reject(frame, wire.ErrorCode.NO_PORT, source, now)
            elif w0 & wire.SYN_BIT:
                self._deliver_conn(port, frame, source, now)
            elif not self._put(p, frame):
                # the receiver is full: the kernel's overload (rejected unless droppable)
                gone = self._producer(port) is None  # closed meanwhile: no port after all
                err = wire.ErrorCode.NO_PORT if gone else wire.ErrorCode.OVERLOAD
                self._reject(frame, err, source, now)
            return
        if mtype == _MCAST_MSG:
            hsize = wire.hsize_of(w0)
            ports = self.client.table().lookup_mcast_sockets(
                _word(frame, hsize, wire.NAME_TYPE_OFFSET),
                _word(frame, hsize, wire.NAME_INSTANCE_OFFSET),
                _word(frame, hsize, wire.NAME_UPPER_OFFSET),
                exact_scope=True,
            )
            for dport in ports:
                if not self._write_port(dport, frame):
                    self._u64[self._ci["dropped"]] += 1
            return
        self._u64[self._ci["dropped"]] += 1

    def _deliver_group(
        self,
        user: int,
        w0: int,
        w1: int,
        mtype: int,
        port: int,
        frame: bytes,
        source: int,
        now: float,
    ) -> None:
        """Group traffic from a peer (either of its links), as tipc_sk_mcast_rcv: a
        GROUP_PROTOCOL message or a GRP_UCAST goes to its port; a GRP_BCAST/GRP_MCAST to
        every socket of this node bound to the group's type (any instance) with the
        message's lookup scope, which from another node must be cluster scope, one copy
        each naming that port in w5 (a broadcast-link packet has the cluster id there).
        Each port's group frames are kept in order and retried while it is full (the
        group's own flow control bounds them); a missing port drops them (see
        :meth:`_reject`). Malformed ones, and node-local member events, are dropped and
        counted."""
        hsize = wire.hsize_of(w0)
        if user == _GROUP_PROTOCOL:
            ok = hsize == wire.INT_H_SIZE and mtype <= _GRP_LAST_PROTO and port != 0
        elif mtype == _GRP_MEMBER_EVT or hsize != wire.GROUP_H_SIZE:
            ok = False
        elif mtype == _GRP_UCAST:
            ok = port != 0
        else:
            ok = wire.w1_lookup_scope(w1) == _CLUSTER
        if not ok:
            self._u64[self._ci["dropped"]] += 1
            return
        if user == _GROUP_PROTOCOL or mtype == _GRP_UCAST:
            self._deliver_conn(port, frame, source, now)
            return
        ports = self.client.table().lookup_mcast_sockets(
            _U32_FROM(frame, _W8)[0], 0, _ALL_INSTANCES, exact_scope=True
        )
        if not ports:
            self._u64[self._ci["dropped"]] += 1
            return
        buf = bytearray(frame)
        for dport in ports:
            _U32.pack_into(buf, wire.DEST_PORT_OFFSET, dport)
            self._deliver_conn(dport, bytes(buf), source, now)

    def _deliver_conn(self, port: int, frame: bytes, source: int, now: float) -> None:
        """Connection traffic is kept in order and retried, never dropped while its
        receiver lives."""
        waiting = self._waiting.get(port)
        if waiting:
            waiting.append(frame)
            return
        if self._write_port(port, frame):
            return
        if self._port_gone(port):
            self._reject(frame, wire.ErrorCode.NO_PORT, source, now)
            return
        self._waiting.setdefault(port, collections.deque()).append(frame)
        self.loop.set_timer("retry", time.monotonic() + RETRY_INTERVAL, self._on_retry)

    def _on_retry(self, now: float) -> None:
        self._retry_waiting()
        self._after(now)

    def _retry_waiting(self) -> None:
        now = time.monotonic()
        for port, q in list(self._waiting.items()):
            while q and self._write_port(port, q[0]):
                q.popleft()
            if q and self._port_gone(port):
                for frame in q:
                    self._reject(frame, wire.ErrorCode.NO_PORT, 0, now)
                q.clear()
            if not q:
                del self._waiting[port]
        if self._waiting:
            self.loop.set_timer("retry", now + RETRY_INTERVAL, self._on_retry)

    def _reject(self, frame: bytes, err: int, source: int, now: float) -> None:
        """Return a message from a peer to its sender over the link. Group traffic is
        never returned: its protocol messages are dest-droppable and a member that is
        gone is the group's business (its withdrawn binding), so it is dropped."""
        if _is_group(*_W01.unpack_from(frame)):
            self.seg.bearer_count(self.k, "dropped")
            return
        try:
            rej = wire.reverse_for_reject(frame, err, self.own)
        except (ValueError, wire.WireError):
            rej = None
        if rej is None:
            self.seg.bearer_count(self.k, "dropped")
            return
        dest = wire.U32.unpack_from(rej, _W7)[0]
        self.seg.bearer_count(self.k, "rejected")
        if self._late or self._held is not None or self.inbox.pending():
            # behind what local senders queued for the link (see _flush_late)
            self._late.append((dest, rej, 2, now))
            return
        try:
            self.stack.send(dest, rej, now)
        except LocalProtocolError:
            self.seg.bearer_count(self.k, "dropped")

    def _abort_connections(self, node: int, error: int) -> None:
        """Node down: every local connection socket whose peer is on ``node`` gets the
        kernel's abort (a 24-byte CONN_MSG from the peer port with TIPC_ERR_NO_NODE)."""
        seg = self.seg
        for e in seg.sockets():
            if e.state != SockState.OPEN or e.peer_node != node or e.type not in _CONN_SOCKETS:
                continue
            frame = wire.HDR24.pack(
                wire.make_w0(wire.User.CRITICAL_IMPORTANCE, wire.SHORT_H_SIZE, wire.SHORT_H_SIZE),
                wire.make_w1(wire.DataType.CONN_MSG, errcode=error),
                0,
                node,
                e.peer_port,
                e.port,
            )
            waiting = self._waiting.get(e.port)
            if waiting:  # after the data that arrived before the node went, as the kernel
                waiting.append(frame)
            elif not self._write_port(e.port, frame):
                self._waiting.setdefault(e.port, collections.deque()).append(frame)
                self.loop.set_timer("retry", time.monotonic() + RETRY_INTERVAL, self._on_retry)

    # -- commands ----------------------------------------------------------------------
    def _serve_command(self) -> None:
        cmd = rows.read_command(self.seg, self.k)
        if cmd is None:
            return
        req, op, link, value = cmd
        try:
            result = self._apply_command(op, link, value)
        except Exception:
            log.exception("bearer %s: command %d failed", self.spec.label(), op)
            result = errno.EPROTO
        rows.answer_command(self.seg, self.k, req, result)

    def _apply_command(self, op: int, link: int, value: int) -> int:
        if link == MAX_LINKS:
            targets = list(self._rows.items())
        else:
            targets = [(p, r) for p, r in self._rows.items() if r == link]
            if not targets:
                return errno.ENOENT
        if op == BearerCommand.SET_TOLERANCE:
            if not MIN_TOLERANCE_MS <= value <= MAX_TOLERANCE_MS:
                return errno.EINVAL
            if link == MAX_LINKS:
                self.stack.tolerance_ms = value
            for peer, _ in targets:
                lk = self._link(peer)
                if lk is not None:
                    lk.tolerance_ms = value
        elif op == BearerCommand.SET_WINDOW:
            if not MIN_LINK_WIN <= value <= MAX_LINK_WIN:
                return errno.EINVAL
            if link == MAX_LINKS:
                self.stack.window = value
            for peer, _ in targets:
                lk = self._link(peer)
                if lk is not None:
                    lk.window = value
                    lk._set_limits()  # noqa: SLF001 - the link's own limit rule
        elif op == BearerCommand.SET_PRIORITY:
            if not 0 <= value <= MAX_LINK_PRIORITY:
                return errno.EINVAL
            self.priority = value
        elif op == BearerCommand.RESET_STATS:
            rows.reset_bearer_counters(self.seg, self.k)
            return 0
        else:
            return errno.EOPNOTSUPP
        for peer, row in targets:
            e = self.seg.link_entry(row)
            self._write_row(peer, row, e.state if e is not None else LinkRowState.DOWN)
        rows.bump_link_gen(self.seg, self.k)
        return 0

    def _link(self, peer: int) -> object | None:
        node = self.stack.peer(peer)
        entry = node.entry(0) if node is not None else None
        return entry.link if entry is not None else None

    # -- running -----------------------------------------------------------------------
    def run(self) -> None:
        self.loop.beat()
        self.start()
        self.loop.set_timer("tick", time.monotonic() + COUNTER_INTERVAL, self._on_tick)
        while not self.loop.stopping:
            try:
                self.loop.run_once()
            except Exception:
                log.exception("bearer %s: error in the loop (going on)", self.spec.label())

    def close(self) -> None:
        self.loop.close()
        self.sock.close()
        if self.mcast_sock is not None:
            self.mcast_sock.close()
        if self._feed_inbox is not None:
            self._feed_inbox.detach()


def _is_group(w0: int, w1: int) -> bool:
    """A GROUP_PROTOCOL message or group data (wire.group.is_group_data)."""
    return wire.user_of(w0) == _GROUP_PROTOCOL or wgroup.is_group_data(w0, w1)


def _group_ok(msg: bytes, user: int, w0: int, w1: int, mtype: int, hsize: int, size: int) -> bool:
    """Whether a local sender's group frame is well formed (``_check_local`` has checked
    the generic header, the origin and the destination node already).

    GROUP_PROTOCOL: exactly a 40-byte header, a known type, dest-droppable, to a port.
    Group data (users 0-3): a GRP_BCAST/GRP_MCAST/GRP_UCAST with a 44-byte header and no
    error code; a broadcast or multicast goes to port 0 with cluster lookup scope (a
    node-scope group never leaves its node), a unicast to a port. GRP_MEMBER_EVT is
    node-local and never sent."""
    dport = _U32_FROM(msg, wire.DEST_PORT_OFFSET)[0]
    if user == _GROUP_PROTOCOL:
        return (
            hsize == wire.INT_H_SIZE
            and size == wire.INT_H_SIZE
            and mtype <= _GRP_LAST_PROTO
            and bool(w0 & wire.DEST_DROPPABLE_BIT)
            and not w1 & wire.W1_ERRCODE_MASK
            and dport != 0
        )
    if (
        user == _CONN_MANAGER
        or mtype == _GRP_MEMBER_EVT
        or hsize != wire.GROUP_H_SIZE
        or w1 & wire.W1_ERRCODE_MASK
    ):
        return False
    if mtype == _GRP_UCAST:
        return dport != 0
    return dport == 0 and wire.w1_lookup_scope(w1) == _CLUSTER


def _word(frame: bytes, hsize: int, off: int) -> int:
    """Header word at byte ``off``, 0 when the header is too short to have it (as the
    decoded Header reads absent address words)."""
    return int(_U32_FROM(frame, off)[0]) if off < hsize else 0


SLOT_WAIT = 5.0  # seconds a new worker waits for the supervisor to record it
LATE_MAX = 0.5  # seconds a connection ending waits at most for the data before it
# A restarted worker holds frames for its predecessor's peers this many link tolerances
# (then returns them with TIPC_ERR_NO_NODE): long enough for discovery and the handshake.
EXPECT_LINKS_FACTOR = 3
# A dead group member's LEAVEs wait at most this long for its frames still in our inbox.
LEAVE_WAIT = 2.0
# Group member sockets tracked for LEAVE on behalf, and members each one joined.
MAX_GROUP_SENDERS = 65536


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m tipcshm.workers.bearer NODE K", file=sys.stderr)
        return 2
    node, k = args[0], int(args[1])
    proc.die_with_parent(int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())))
    rundir.setup_logging(f"bearer{k}[{node}]")
    config = load_config(node)
    if not 0 <= k < len(config.bearers):
        log.error("no bearer %d in the configuration of node %s", k, node)
        return 2
    spec = config.bearers[k]
    seg = NodeSegment.attach(node)
    # The name-table worker takes our records only once the worker table names this
    # process (pid and start time), which the supervisor writes right after spawning us.
    me, deadline = proc.self_token(), time.monotonic() + SLOT_WAIT
    while (w := seg.worker(1 + k)) is None or (w.pid, w.start) != me:
        if time.monotonic() > deadline:
            log.error("bearer %d: the worker table never named this process", k)
            return 1
        time.sleep(0.005)
    inbox = Inbox.attach(bearer_inbox_name(node, k), trust=seg.trust, tag=seg.tag)
    client = attach_worker(node)
    try:
        worker = BearerWorker(seg, k, spec, config, inbox, client)
    except OSError as exc:
        log.error("bearer %s: %s", spec.label(), exc)
        return 1
    worker.loop.install_signals()
    profile_dir = os.environ.get(PROFILE_ENV)
    profiler = None
    if profile_dir:  # tools/bench/cluster_bench.py --profile: where the worker's time goes
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        worker.run()
    finally:
        worker.close()
        inbox.detach()
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"bearer-{node}-{k}-{os.getpid()}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
