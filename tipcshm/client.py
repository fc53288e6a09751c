"""The per-process attachment to a node: segment, replica, destination lanes, control path.

One :class:`NodeClient` exists per (process, node). Sockets share it: it maps the node
segment, looks service addresses up in the name-table replica in place
(:mod:`tipcshm.shm.replica`), caches this process's lanes into destination inboxes, and
posts control requests (bind, unbind) to the name-table worker.

A cached lane costs a mapping and a descriptor (the inbox's doorbell), so the cache lets go
of what it no longer needs: a connection socket holds its peer's lane (:meth:`hold`) and
releases it when it closes; a lane into an inbox that its consumer closed is dropped when
a send finds it closed, and otherwise by a sweep that runs whenever the cache has doubled
since the last one (so it never holds more than about twice the live destinations). A
dropped lane's inbox is unmapped: the send routes built on it are invalidated first
(:meth:`register_route`).

Destinations are ``(node, port)`` (:meth:`NodeClient.lane`, the one seam between the
socket layer and where a destination lives): a port of this node gets this process's lane
into its inbox; a port on another node gets :class:`BearerLane`, this process's lane into
the inbox of the bearer worker whose link to that node is up (its row in the link table
says UP), which puts BEARER_FRAME_PREFIX (destination node, 0) in front of every message.
Which bearer reaches which node is cached while the bearers' B_LINK_GEN words stay
unchanged. No link up to the node: :class:`NodeUnreachable` (EHOSTUNREACH, as the
kernel's tipc_node_xmit answers a node it has no active link to).

After ``fork()`` the child must not reuse the parent's attachment (its lanes are the
parent's SPSC lanes and its process-table entry is the parent's), so the cache is dropped in
the child and rebuilt on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
import time
import weakref
from typing import Any

from tipcshm import proc
from tipcshm.errors import HostUnreachable, NodeFailure, NodeNotRunning
from tipcshm.shm import control
from tipcshm.shm.lane import MAX_LANE_BYTES, MAX_LANES, Inbox, Producer
from tipcshm.shm.layout import (
    B_LINK_GEN,
    BEARER_FRAME_PREFIX,
    LINKS_PER_BEARER,
    MAX_BEARERS,
    NODE_MIN_LANE_BYTES,
    R_SEQ,
    R_TOKENS,
    REPLICA,
    S_CTL_ACK,
    S_CTL_RESULT,
    NodeSegment,
    NodeState,
    ProcRole,
    bearer_inbox_name,
    inbox_name,
    nametable_inbox_name,
    resolve_node_name,
    type_token_slot,
)
from tipcshm.shm.replica import ReplicaView

log = logging.getLogger("tipcshm.client")

CONTROL_TIMEOUT = 10.0  # seconds a bind may wait for the name-table worker (restarts included)
SWEEP_MIN = 64  # cached destination lanes before the first sweep for closed ones
_PREFIX = BEARER_FRAME_PREFIX.size
_U32BE = struct.Struct(">I")


class NodeUnreachable(HostUnreachable):
    """No link is up to ``node`` (EHOSTUNREACH): what tipc_node_xmit answers for a node
    it has no active link to. ``node`` is the unreachable node's address."""

    def __init__(self, node: int, why: str = "no link is up to this node") -> None:
        super().__init__(f"node {node:#010x}", why)
        self.node = node


class BearerLane:
    """This process's lane into a bearer worker's inbox, addressed to one other node.

    What :meth:`NodeClient.lane` gives for a destination on another node. It offers what
    the socket layer uses of a :class:`~tipcshm.shm.lane.Producer` (``lock``, ``buf``,
    ``reserve``/``commit``, ``put_locked``, ``put_run_locked``, ``write``, ``notify``,
    ``wait_space``, ``fits``), and puts BEARER_FRAME_PREFIX (destination node, 0) in
    front of every message written through it, so the socket layer writes the same TIPC
    message whether the destination is local or not. Every BearerLane of one bearer
    shares the one Producer (and its lock) this process has into that bearer's inbox: a
    full lane blocks every sender of the process to that bearer's nodes, which is the
    back-pressure of a congested link.

    ``checked`` lanes (cached routes of connectionless sockets) refuse ``put_locked``
    once the bearer's link rows changed (B_LINK_GEN moved), so the sender resolves
    again; connection sockets use unchecked ones (a link going down ends the connection
    with the bearer worker's abort).
    """

    __slots__ = (
        "producer",
        "inbox",
        "node",
        "bearer",
        "lock",
        "checked",
        "_prefix",
        "_first",
        "_u32",
        "_gen_i",
        "_gen",
        "__weakref__",
    )
    overflow = False

    def __init__(
        self, producer: Producer, inbox: Inbox, node: int, bearer: int, u32: Any, gen: int
    ) -> None:
        self.producer = producer
        self.inbox = inbox
        self.node = node
        self.bearer = bearer
        self.lock = producer.lock
        self.checked = False
        self._prefix = BEARER_FRAME_PREFIX.pack(node, 0)
        # put_locked stores its first word big-endian at the frame's start, which is where
        # the prefix begins: this number stored so gives the prefix's own first 4 bytes
        self._first = _U32BE.unpack_from(self._prefix)[0]
        self._u32 = u32
        self._gen_i = (NodeSegment.bearer_off(bearer) + B_LINK_GEN) // 4
        self._gen = gen

    def __repr__(self) -> str:
        return f"<BearerLane bearer={self.bearer} node={self.node:#010x}>"

    def checked_copy(self) -> BearerLane:
        lane = BearerLane(self.producer, self.inbox, self.node, self.bearer, self._u32, self._gen)
        lane.checked = True
        return lane

    @property
    def buf(self) -> memoryview:
        return self.producer.buf

    @property
    def current(self) -> bool:
        """The bearer's link rows are as they were when this lane was made."""
        return bool(self._u32[self._gen_i] == self._gen)

    def _head(self, head: bytes, first_word: int) -> bytes:
        h = bytearray(self._prefix)
        h += head
        _U32BE.pack_into(h, _PREFIX, first_word)
        return bytes(h)

    def put_locked(self, head: bytes, first_word: int, data: bytes | bytearray) -> bool:
        if self.checked and self._u32[self._gen_i] != self._gen:
            return False  # the link rows changed: the sender resolves again
        return self.producer.put_locked(self._head(head, first_word), self._first, data)

    def put_run_locked(
        self, head: bytes, first_word: int, data: Any, piece: int, count: int
    ) -> int:
        return self.producer.put_run_locked(
            self._head(head, first_word), self._first, data, piece, count
        )

    def reserve(self, n: int) -> int | None:
        off = self.producer.reserve(n + _PREFIX)
        if off is None:
            return None
        self.producer.buf[off : off + _PREFIX] = self._prefix
        return off + _PREFIX

    def commit(self, n: int) -> None:
        self.producer.commit(n + _PREFIX)

    def write(self, *parts: bytes | bytearray | memoryview) -> bool:
        return self.producer.write(self._prefix, *parts)

    def notify(self) -> None:
        self.producer.notify()

    def wait_space(self, n: int, timeout: float | None = None) -> bool:
        return self.producer.wait_space(n + _PREFIX, timeout)

    def fits(self, n: int) -> bool:
        return self.producer.fits(n + _PREFIX)


class NodeClient:
    def __init__(
        self, node: str, *, starting_ok: bool = False, role: int = ProcRole.CLIENT
    ) -> None:
        self.node = node
        self.starting_ok = starting_ok
        self.seg = NodeSegment.attach(node)
        try:
            state = self.seg.state
            if state != NodeState.READY and not (starting_ok and state == NodeState.STARTING):
                raise NodeNotRunning(node, NodeState.NAMES.get(state, f"state {state}"))
            self._sup_fd = proc.pidfd_of(*self.seg.supervisor)
            if self._sup_fd < 0:
                raise NodeNotRunning(node, "its supervisor died; `tipcshm start` cleans up")
            self.addr = self.seg.addr
            self.lanes, self.lane_bytes = self.seg.lane_geometry
            self.conn_lane_bytes = self.seg.conn_lane_bytes
            if not (
                1 <= self.lanes <= MAX_LANES
                and all(_lane_size_ok(n) for n in (self.lane_bytes, self.conn_lane_bytes))
            ):  # scribbled by someone: the supervisor restores it within a heartbeat
                raise NodeNotRunning(node, "its header is corrupt; retry shortly")
            self.pid, self.start = proc.self_token()
            self.proc_index = self.seg.register_process(self.pid, self.start, role)
            self.mode, self.gid = self.seg.object_mode, self.seg.object_gid
            #: the node's incarnation: inboxes of a later node of the same name are refused
            self.tag = self.seg.tag
        except BaseException:
            if getattr(self, "_sup_fd", -1) >= 0:
                os.close(self._sup_fd)
            self.seg.close()
            raise
        self._seq_i = (REPLICA + R_SEQ) // 8
        self._u64 = self.seg.u64
        self._table: ReplicaView | None = None
        self._dest: dict[int, Producer] = {}
        self._dest_inbox: dict[int, Inbox] = {}
        self._holds: dict[int, int] = {}  # connection sockets holding a destination's lane
        self._routes_to: dict[int, weakref.WeakSet[Any]] = {}  # sockets' routes, by port
        # other nodes: bearer k -> (its inbox, our lane into it); node -> the way there
        self._bearer_lanes: dict[int, tuple[Inbox, Producer]] = {}
        self._remote: dict[int, BearerLane] = {}
        self._remote_holds: dict[tuple[int, int], int] = {}
        self._remote_routes: dict[int, weakref.WeakSet[Any]] = {}  # routes, by node
        self._stale_bearers: list[tuple[Inbox, Producer]] = []
        self._link_gens: tuple[int, ...] = ()
        self._node_bearer: dict[int, int] = {}
        self._sweep_at = SWEEP_MIN
        self._worker_inbox: Inbox | None = None
        self._lock = threading.Lock()
        #: this process's own inboxes on the node (its sockets'), closed if the node dies
        self.own_inboxes: weakref.WeakSet[Inbox] = weakref.WeakSet()
        #: set once the supervisor is seen dead: every call fails with NodeNotRunning
        self.dead = False
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        # The watcher closes its pidfd when it ends: this copy answers supervisor_gone().
        self._sup_probe = os.dup(self._sup_fd)
        threading.Thread(target=self._watch, name=f"tipcshm-watch-{node}", daemon=True).start()

    # -- supervisor death ----------------------------------------------------------------
    def _watch(self) -> None:
        """Wait for the supervisor's end (its pidfd turns readable), then fail everything.

        A killed supervisor cannot close the inboxes as ``stop`` does, so every process
        does it for its own attachment: blocked receivers wake at once (their inbox is
        closed), blocked senders too (the destination is), and later calls see ``dead``.
        """
        sup_fd, stop_r = self._sup_fd, self._stop_r
        try:
            poller = select.poll()  # not select(): a process may hold descriptors past 1023
            poller.register(sup_fd, select.POLLIN)
            poller.register(stop_r, select.POLLIN)
            ready = [fd for fd, _ in poller.poll()]
        finally:
            os.close(stop_r)
            os.close(sup_fd)
        if sup_fd not in ready:
            return  # closed by this process
        self.dead = True
        with self._lock:
            inboxes = [
                *self.own_inboxes,
                *self._dest_inbox.values(),
                *(ib for ib, _ in self._bearer_lanes.values()),
            ]
        for inbox in inboxes:
            with contextlib.suppress(OSError, ValueError):
                inbox.mark_closed()
        with contextlib.suppress(ValueError):  # mapping closed meanwhile: a stop, not a crash
            if self.seg.state != NodeState.STOPPING:
                log.warning("node %s: its supervisor died; sockets on it are closed", self.node)

    def supervisor_gone(self) -> bool:
        """True once the supervisor has ended, asked now (the watcher thread learns it a
        moment later): for the paths that must not report success on a dead node."""
        if self.dead:
            return True
        if self._sup_probe < 0:  # closed, or a child after fork: the watcher decides
            return False
        poller = select.poll()
        poller.register(self._sup_probe, select.POLLIN)
        return bool(poller.poll(0))

    # -- name table ----------------------------------------------------------------
    def table(self) -> ReplicaView:
        """The node's name table: lookups run in the shared replica itself (nothing is
        decoded or copied; see tipcshm.shm.replica), so churn costs this process nothing
        until it looks up."""
        view = self._table
        if view is None:
            with self._lock:
                if self._table is None:
                    self._table = ReplicaView(self.seg)
                view = self._table
        return view

    @property
    def table_seq(self) -> int:
        """Moves on every change of the name table (any type, any node)."""
        return self._u64[self._seq_i]

    def token_index(self, type: int) -> int:
        """Index into the segment's u64 words of :meth:`table_token`'s counter for
        ``type`` (for a cache that checks it with one load)."""
        return (REPLICA + R_TOKENS) // 8 + type_token_slot(type)

    def table_token(self, type: int) -> int:
        """Moves whenever a binding of service ``type`` changes (and may move on changes
        of a few other types that share its counter): a route cache keyed by it is not
        flushed by churn elsewhere. Read it *before* looking up."""
        return self.seg.replica_token(type)

    # -- destinations ----------------------------------------------------------------
    def lane(self, node: int, port: int) -> Producer | BearerLane | None:
        """This process's lane to socket ``<node:port>``: the seam every send goes through.

        This node (``node`` 0 or its own address): the lane into the port's inbox, None if
        no such socket. Another node: the lane into the bearer worker that has the link
        to it (:class:`BearerLane`; whether the port exists there is the peer's to say);
        :class:`NodeUnreachable` if no link to it is up."""
        if not node or node == self.addr:
            return self.producer(port)
        return self.remote_lane(node)

    def remote_lane(self, node: int) -> BearerLane:
        """The lane to another node (see :meth:`lane`); NodeUnreachable without a link."""
        lane = self._remote.get(node)
        if lane is not None and lane.current:
            try:
                if not lane.inbox.closed:
                    return lane
            except ValueError:
                pass  # detached by another thread meanwhile
        if self.dead:
            raise NodeNotRunning(self.node, "its supervisor died; `tipcshm start` cleans up")
        k = self._bearer_of(node)
        if k is None:
            self._remote.pop(node, None)
            raise NodeUnreachable(node)
        with self._lock:
            got = self._bearer_lanes.get(k)
            if got is not None:
                try:
                    if got[0].closed:
                        got = None
                except ValueError:
                    got = None
            if got is None:
                old = self._bearer_lanes.pop(k, None)
                if old is not None:  # unmapped at close(): a sender may hold its lock now
                    self._stale_bearers.append(old)
                try:
                    inbox = Inbox.attach(
                        bearer_inbox_name(self.node, k), trust=self.seg.trust, tag=self.tag
                    )
                except FileNotFoundError:
                    raise NodeUnreachable(node, f"bearer {k} has no inbox") from None
                if inbox.closed:
                    inbox.detach()
                    raise NodeUnreachable(node, f"bearer {k}'s inbox is closed")
                try:
                    p = inbox.producer()
                except BaseException:
                    inbox.detach()
                    raise
                got = self._bearer_lanes[k] = (inbox, p)
            inbox, p = got
            gen = self.seg.u32[(NodeSegment.bearer_off(k) + B_LINK_GEN) // 4]
            lane = BearerLane(p, inbox, node, k, self.seg.u32, gen)
            # the row may have changed between the map's making and this gen's reading:
            # then the lane is not current and the next call looks again
            self._remote[node] = lane
            return lane

    def _bearer_of(self, node: int) -> int | None:
        """The bearer whose link to ``node`` is up (the lowest, if several), from a map of
        the link table kept while every bearer's B_LINK_GEN is unchanged."""
        gens = self.seg.bearer_link_gens()
        if gens != self._link_gens:
            up: dict[int, int] = {}
            for row, peer in self.seg.link_rows_up():
                k = row // LINKS_PER_BEARER
                if 0 <= k < MAX_BEARERS and peer and peer != self.addr:
                    up.setdefault(peer, k)
            self._node_bearer = up
            # a change during the scan makes the next call scan again
            self._link_gens = gens if gens == self.seg.bearer_link_gens() else ()
            for gone_node in [n for n in self._remote_routes if n not in up]:
                for route in self._remote_routes.pop(gone_node, ()):
                    route.seq = -1
        return self._node_bearer.get(node)

    def reachable(self, node: int) -> bool:
        """``node`` is this node, or a link to it is up."""
        return not node or node == self.addr or self._bearer_of(node) is not None

    def link_caps(self, node: int) -> int:
        """The capability bits of ``node`` as its link row says (0 if no link is up)."""
        k = self._bearer_of(node)
        if k is None:
            return 0
        for row, peer in self.seg.link_rows_up():
            if peer == node and row // LINKS_PER_BEARER == k:
                e = self.seg.link_entry(row)
                return 0 if e is None else e.caps
        return 0

    def producer(self, port: int) -> Producer | None:
        """This process's lane into socket ``port``'s inbox on this node; None if no such
        socket (:meth:`lane` for a destination that may be on another node)."""
        p = self._dest.get(port)
        if p is not None:
            inbox = self._dest_inbox.get(port)
            try:
                if inbox is not None and not inbox.closed:
                    return p
            except ValueError:
                pass  # another thread's forget() detached it meanwhile: its views are gone
            self._forget_local(port)
            return None
        if self.dead:
            raise NodeNotRunning(self.node, "its supervisor died; `tipcshm start` cleans up")
        if len(self._dest) >= self._sweep_at:
            self.sweep()
        with self._lock:
            try:
                inbox = Inbox.attach(
                    inbox_name(self.node, port), trust=self.seg.trust, tag=self.tag
                )
            except FileNotFoundError:
                return None
            if inbox.closed:
                inbox.detach()
                return None
            try:
                p = inbox.producer()
            except BaseException:
                inbox.detach()
                raise
            self._dest_inbox[port] = inbox
            self._dest[port] = p
            return p

    def _local(self, node: int) -> bool:
        return not node or node == self.addr

    def gone(self, node: int, port: int) -> bool:
        """True unless our lane to ``<node:port>`` is usable: on this node, cached and its
        receiver still reads it; on another, a link to that node is up."""
        if not self._local(node):
            try:
                lane = self.remote_lane(node)
                return bool(lane.inbox.closed)
            except (HostUnreachable, ValueError):
                return True
        inbox = self._dest_inbox.get(port)
        try:
            return inbox is None or inbox.closed
        except ValueError:
            return True  # another thread's forget() detached it: its views are gone

    def hold(self, node: int, port: int) -> tuple[Producer | BearerLane, Inbox] | None:
        """:meth:`lane`, kept until :meth:`release` (a connection's lane to its peer);
        None if there is no such socket here; NodeUnreachable as :meth:`lane`."""
        if not self._local(node):
            lane = self.remote_lane(node)
            with self._lock:
                key = (node, port)
                self._remote_holds[key] = self._remote_holds.get(key, 0) + 1
            return lane, lane.inbox
        p = self.producer(port)
        if p is None:
            return None
        with self._lock:
            inbox = self._dest_inbox.get(port)
            if inbox is None or self._dest.get(port) is not p:
                return None  # dropped meanwhile by another thread
            self._holds[port] = self._holds.get(port, 0) + 1
            return p, inbox

    def release(self, node: int, port: int, inbox: Inbox) -> None:
        """Give back a :meth:`hold`; the last one lets go of the lane. A lane dropped and
        attached again since (another ``inbox``) is not this hold's. A bearer's lane is
        shared by every destination behind it: it stays."""
        if not self._local(node):
            with self._lock:
                key = (node, port)
                n = self._remote_holds.get(key, 0) - 1
                if n > 0:
                    self._remote_holds[key] = n
                else:
                    self._remote_holds.pop(key, None)
            return
        with self._lock:
            if self._dest_inbox.get(port) is not inbox:
                return
            n = self._holds.get(port, 0) - 1
            if n > 0:
                self._holds[port] = n
                return
        self._forget_local(port)

    def register_route(self, node: int, port: int, route: Any) -> None:
        """Invalidate ``route`` (its ``seq`` set to -1) when the lane to ``<node:port>`` is
        dropped, or (another node) when no link to that node is up any more."""
        with self._lock:
            if not self._local(node):
                self._remote_routes.setdefault(node, weakref.WeakSet()).add(route)
            elif port in self._dest:
                self._routes_to.setdefault(port, weakref.WeakSet()).add(route)

    def forget(self, node: int, port: int) -> None:
        """Drop our lane to a receiver that went away. On this node the lane into its inbox
        is unmapped; for another node only the cached way there is dropped (the bearer's
        lane serves every other destination behind it)."""
        if not self._local(node):
            with self._lock:
                self._remote.pop(node, None)
                self._remote_holds.pop((node, port), None)
            return
        self._forget_local(port)

    def _forget_local(self, port: int) -> None:
        """Drop (and unmap) our lane into a receiver of this node that went away.

        Sockets may still hold its producer (cached routes, other threads): the detach
        runs under the producer's lock, which every send holds while it writes, and
        leaves the producer reading as closed, so a send never meets a released view.
        """
        with self._lock:
            p = self._dest.pop(port, None)
            self._holds.pop(port, None)
            inbox = self._dest_inbox.pop(port, None)
            for route in self._routes_to.pop(port, ()):
                route.seq = -1
        if inbox is not None:
            if p is None:
                inbox.detach()
            else:
                with p.lock:
                    inbox.detach()

    def sweep(self) -> int:
        """Drop the lanes into inboxes their consumers closed; returns how many. A held
        lane stays: its connection socket still uses it until it closes."""
        with self._lock:
            held = self._holds
            gone = [p for p, inbox in self._dest_inbox.items() if inbox.closed and p not in held]
        for port in gone:
            self._forget_local(port)
        self._sweep_at = max(SWEEP_MIN, 2 * len(self._dest))
        return len(gone)

    # -- control path ----------------------------------------------------------------
    def _worker_bell(self) -> Inbox:
        """The name-table worker's inbox, attached only to ring its doorbell: control
        requests travel in the socket table, so this process takes none of its lanes."""
        inbox = self._worker_inbox
        if inbox is None:
            with self._lock:
                if self._worker_inbox is None:
                    try:
                        self._worker_inbox = Inbox.attach(
                            nametable_inbox_name(self.node), trust=self.seg.trust, tag=self.tag
                        )
                    except FileNotFoundError:
                        raise NodeNotRunning(self.node, "its name-table inbox is gone") from None
                inbox = self._worker_inbox
        return inbox

    def wake_worker(self) -> None:
        """Ring the name-table worker after posting in, or closing, a socket-table entry."""
        self._worker_bell().ring()

    def control(self, req: control.Request) -> int:
        """Post ``req`` in its socket's mailbox and wait for the worker's errno (0 = done).

        The caller serialises the requests of one socket (one in flight per entry).
        """
        seg = self.seg
        control.post(seg, req)  # REQ stored before the ring (see tipcshm.shm.control)
        self.wake_worker()
        base = seg.sock_off(req.slot)
        ack_i = (base + S_CTL_ACK) // 4
        u32 = seg.u32
        deadline = time.monotonic() + CONTROL_TIMEOUT
        pause = 0.00002
        while u32[ack_i] != req.seq:
            if time.monotonic() > deadline:
                self.check_alive()
                raise NodeFailure(
                    self.node,
                    f"no answer from the name-table worker to {control.OP_NAMES[req.op]} "
                    f"of socket {req.port:#010x}",
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
        return seg.i32[(base + S_CTL_RESULT) // 4]

    def check_alive(self) -> None:
        """Raise NodeNotRunning if the node stopped or its supervisor died."""
        if self.dead:
            raise NodeNotRunning(self.node, "its supervisor died; `tipcshm start` cleans up")
        state = self.seg.state
        if state != NodeState.READY and not (self.starting_ok and state == NodeState.STARTING):
            raise NodeNotRunning(self.node, "it stopped")
        if not proc.alive(*self.seg.supervisor):
            raise NodeNotRunning(self.node, "its supervisor died; `tipcshm start` cleans up")

    def close(self) -> None:
        if self._sup_probe >= 0:
            os.close(self._sup_probe)
            self._sup_probe = -1
        if self._stop_w >= 0:
            os.close(self._stop_w)  # ends the watcher thread, which closes its descriptors
            self._stop_w = -1
        with self._lock:
            for routes in self._routes_to.values():
                for route in routes:
                    route.seq = -1
            for routes in self._remote_routes.values():
                for route in routes:
                    route.seq = -1
            for inbox in self._dest_inbox.values():
                inbox.detach()
            for inbox, p in [*self._bearer_lanes.values(), *self._stale_bearers]:
                with p.lock:
                    inbox.detach()
            self._bearer_lanes.clear()
            self._stale_bearers.clear()
            self._remote.clear()
            self._remote_holds.clear()
            self._remote_routes.clear()
            self._dest.clear()
            self._dest_inbox.clear()
            self._holds.clear()
            self._routes_to.clear()
            if self._worker_inbox is not None:
                self._worker_inbox.detach()
            self._worker_inbox = None
            if self._table is not None:
                self._table.close()
                self._table = None
        try:
            self.seg.free_process(self.proc_index)
        except (OSError, ValueError):
            pass
        self.seg.close()


def _lane_size_ok(n: int) -> bool:
    return NODE_MIN_LANE_BYTES <= n <= MAX_LANE_BYTES and n & (n - 1) == 0


_clients: dict[str, NodeClient] = {}
_clients_lock = threading.Lock()


def get_client(node: str | None) -> NodeClient:
    """This process's attachment to ``node``; a stopped or crashed node's is replaced.

    Checked once per new socket (not per message): a node that was restarted under the
    same name is a new segment, so the old attachment must not be reused.
    """
    name = resolve_node_name(node)
    with _clients_lock:
        client = _clients.get(name)
        if client is not None:
            try:
                client.check_alive()
                return client
            except NodeNotRunning:
                drop_client(name)  # sockets still open on it keep their own reference
        client = NodeClient(name)
        _clients[name] = client
        return client


def attach_worker(node: str) -> NodeClient:
    """The node's own workers attach while it is still starting (to open the topology
    service before the node is announced ready); applications wait for READY."""
    with _clients_lock:
        client = NodeClient(resolve_node_name(node), starting_ok=True, role=ProcRole.NAMETABLE)
        _clients[client.node] = client
        return client


def drop_client(node: str) -> None:
    """Forget a node's attachment, so the next socket attaches anew.

    It is not closed: sockets still open on it keep using (and then closing) it; its
    mapping goes when the last of them does.
    """
    _clients.pop(node, None)


def _after_fork_in_child() -> None:
    # The parent's mappings stay valid in the child but its lanes are the parent's: start over.
    # The supervisor watchers are the parent's threads; their descriptors are of no use here.
    for client in _clients.values():
        for fd in (client._sup_fd, client._stop_r, client._stop_w, client._sup_probe):
            with contextlib.suppress(OSError):
                os.close(fd)
        client._stop_w = client._sup_probe = -1
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
