"""The name-table worker: single writer of the node's binding table and its replica.

Loop: wait on the doorbell of the worker inbox; drain it, then scan the socket table (numpy,
one column compare) for control requests (``S_CTL_REQ != S_CTL_ACK``, see
:mod:`tipcshm.shm.control`) and for CLOSING entries. Requests are validated (everything in
shared memory is untrusted: a bad one costs its sender an errno and bumps ``bad_requests``)
and applied to the sans-IO :class:`~tipcshm.core.nametable.NameTable`; the bindings of CLOSING
sockets are withdrawn. Then the new replica is published, every request acknowledged, and
only then are the CLOSING entries freed.

A worker killed at any point loses nothing: the replica it had published is intact (double
buffering), unacknowledged requests are still posted for its successor (a replayed bind
meets DuplicateBinding and is acknowledged as done), and CLOSING entries are still CLOSING.
The one exception is deliberate: before applying a request the worker records it in the
segment header (``H_CTL_BUSY_*``), and a successor that finds its predecessor died *on* that
request answers it EPROTO instead of applying it again, so no request can crash-loop the node.
An exception while applying one request is caught, counted and answered EPROTO too.

Run as ``python -m tipcshm.workers.nametable NODE`` by the supervisor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import selectors
import signal
import sys
import time
from types import FrameType

from tipcshm import proc, rundir
from tipcshm.client import attach_worker
from tipcshm.constants import (
    TIPC_CLUSTER_SCOPE,
    TIPC_LINK_STATE,
    TIPC_NODE_SCOPE,
    TIPC_NODE_STATE,
    TIPC_RESERVED_TYPES,
)
from tipcshm.core.name_feeds import FeedRefused, Ident, NameFeeds
from tipcshm.core.nametable import (
    Binding,
    BindingAdded,
    BindingRemoved,
    DuplicateBinding,
    NameTable,
    NameTableError,
    NoSuchBinding,
)
from tipcshm.errors import NodeNotRunning
from tipcshm.shm import control, names_feed
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    H_CTL_BUSY_SEQ,
    H_CTL_BUSY_SLOT,
    MAX_BEARERS,
    MAX_BINDINGS,
    MAX_SOCKETS,
    S_CTL_ACK,
    S_CTL_REQ,
    S_CTL_RESULT,
    S_NBIND,
    S_PORT,
    S_STATE,
    TYPE_TOKENS,
    NodeSegment,
    SockState,
    WorkerKind,
    nametable_inbox_name,
)
from tipcshm.shm.replica import Mirror
from tipcshm.workers.group_events import Change, GroupEvents
from tipcshm.workers.topology import TopologyServer

log = logging.getLogger("tipcshm.workers.nametable")

HEARTBEAT_INTERVAL = 0.1
SUPERVISOR_PID_ENV = "TIPCSHM_SUPERVISOR_PID"  # set by the supervisor for its workers
LOG_INTERVAL = 5.0  # malformed input is logged at most once per this many seconds
_SCOPES = (TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE)
_OPS = (control.OP_BIND, control.OP_UNBIND, control.OP_GROUP_SUB, control.OP_GROUP_UNSUB)
FEED_BATCH = 4096  # name updates applied per turn of the loop


def _link_state(b: Binding) -> bool:
    """A link-state binding of this node ({2, peer, peer}, node scope): a bearer's, not a
    socket's, even if its port field (the link) equals a socket's port."""
    return b.type == TIPC_LINK_STATE and b.scope == TIPC_NODE_SCOPE


class _RateLimitedLog:
    """Log a message class at most once per interval, saying how many were suppressed: a
    flood of bad requests must not fill the disk."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next = 0.0
        self.suppressed = 0

    def __call__(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self.next:
            self.suppressed += 1
            return
        if self.suppressed:
            msg += f" ({self.suppressed} more suppressed)"
            self.suppressed = 0
        self.next = now + self.interval
        log.log(level, msg, *args, exc_info=exc_info)


class NameTableWorker:
    def __init__(self, seg: NodeSegment, inbox: Inbox) -> None:
        self.seg = seg
        self.inbox = inbox
        self.own = seg.addr
        self.stopping = False
        self.events: list[BindingAdded | BindingRemoved] = []  # for the topology service
        self.topology: TopologyServer | None = None
        self._bad_log = _RateLimitedLog(LOG_INTERVAL)
        self._error_log = _RateLimitedLog(LOG_INTERVAL)
        self._touched: set[int] = set()  # ports whose binding count changed
        # Member events (workers/group_events.py): the changes of the current batch, in
        # name-table order, each with "caused by the sweep of a closed or dead socket".
        self.groups = GroupEvents(seg, self.own)
        self._changes: list[Change] = []
        origins = seg.replica_origins()  # before anything is written
        self.table = self._load()
        self.feeds = NameFeeds(self.table, MAX_BINDINGS, MAX_BEARERS)
        self._restore_feeds(origins)
        self.mirror = Mirror.from_table(self.table, self.feeds.origins())
        seg.publish_replica(
            self.mirror.cols,
            self.mirror.n,
            self.own,
            self.table.generation,
            range(TYPE_TOKENS),
            slots=True,  # anything may have changed meanwhile: every token moves
        )
        self._recount_all(self.table)
        self.groups.load(TIPC_RESERVED_TYPES)
        self._answer_fatal_request()

    # -- start ---------------------------------------------------------------------
    def _load(self) -> NameTable:
        """The bindings that survived a restart, minus those of sockets that are not OPEN
        (gone, or CLOSING: their sweep resumes in the first :meth:`run_once`)."""
        table = NameTable(self.own)
        got = self.seg.read_replica()
        if got is not None and got[1]:
            try:
                table = NameTable.decode(got[1], self.own)
            except Exception as exc:  # untrusted image: any failure means "start empty"
                log.error("replica unreadable, starting empty: %s", exc)
                table = NameTable(self.own)
        seg = self.seg
        live = {
            seg.u32[(seg.sock_off(i) + S_PORT) // 4] for i in seg.socket_indices(SockState.OPEN)
        }
        for b in table.bindings():
            if b.node == self.own and b.port and b.port not in live and not _link_state(b):
                # a socket that closed or died while no worker ran: its group
                # subscribers hear of it (GroupEvents.load runs before the first batch)
                self._changes.extend((r, True) for r in table.remove_port(b.node, b.port))
        node_binding = Binding(
            TIPC_NODE_STATE, self.own, self.own, TIPC_CLUSTER_SCOPE, self.own, 0, self.own
        )
        try:
            table.insert(node_binding)
        except DuplicateBinding:
            pass
        return table

    def _restore_feeds(self, origins: list[tuple[Ident, int]]) -> None:
        """Bindings a previous worker held for bearers stay (other nodes' bindings and
        this node's link-state bindings), with the bearer masks the replica kept for
        them: a bearer that restarts resets and feeds its part again, the others' stays.
        One the replica names no bearer for (written by a worker before masks existed,
        or scribbled) is removed: a bearer re-feeds what it still knows at its next
        restart, and a binding nobody feeds must not live forever."""
        known = dict(origins)
        feeds = self.feeds
        feeds.restore((i, m) for i, m in known.items() if self.table.holds(*i))
        fed = feeds.origins()
        for b in self.table.bindings():
            ident = (b.type, b.lower, b.upper, b.node, b.key)
            if (b.node != self.own or _link_state(b)) and ident not in fed:
                self.table.remove(*ident)

    def _answer_fatal_request(self) -> None:
        """If the predecessor died while applying a request, answer it EPROTO, unapplied."""
        seg = self.seg
        slot = seg.u32[H_CTL_BUSY_SLOT // 4] - 1
        seq = seg.u32[H_CTL_BUSY_SEQ // 4]
        seg.u32[H_CTL_BUSY_SLOT // 4] = 0
        if not 0 <= slot < MAX_SOCKETS:
            return
        base = seg.sock_off(slot)
        if seg.u32[(base + S_CTL_REQ) // 4] != seq or seg.u32[(base + S_CTL_ACK) // 4] == seq:
            return  # answered before the death, or the socket moved on
        seg.bump("request_errors")
        log.error(
            "the previous worker died applying request %d of socket %#010x: answered EPROTO",
            seq,
            seg.u32[(base + S_PORT) // 4],
        )
        self._ack(slot, seq, errno.EPROTO)

    def _recount_all(self, table: NameTable) -> None:
        counts: dict[int, int] = {}
        for b in table.bindings():
            if b.node == self.own and not _link_state(b):
                counts[b.port] = counts.get(b.port, 0) + 1
        seg = self.seg
        for i in seg.socket_indices():
            off = seg.sock_off(i)
            seg.u32[(off + S_NBIND) // 4] = counts.get(seg.u32[(off + S_PORT) // 4], 0)

    # -- requests --------------------------------------------------------------------
    def _bad(self, req: control.Request, err: int, why: str) -> int:
        self.seg.bump("bad_requests")
        self._bad_log(
            logging.WARNING,
            "refused control request %d of socket-table entry %d: %s",
            req.seq,
            req.slot,
            why,
        )
        return err

    def apply(self, req: control.Request) -> int:
        """Validate and apply one request read from a mailbox; returns an errno (0 = done)."""
        seg = self.seg
        if not 0 <= req.slot < MAX_SOCKETS:
            return self._bad(req, errno.EINVAL, "entry out of range")
        base = seg.sock_off(req.slot)
        port = seg.u32[(base + S_PORT) // 4]
        state = seg.u32[(base + S_STATE) // 4]
        if not port or req.port != port:
            return self._bad(req, errno.EBADF, f"port {req.port:#010x} does not hold the entry")
        if state != SockState.OPEN:
            # Closed, or its process died (the supervisor marked it): a bind still in
            # flight must not outlive the socket.
            return self._bad(req, errno.EBADF, f"socket {port:#010x} is closing")
        if req.op not in _OPS:
            return self._bad(req, errno.EINVAL, f"unknown operation {req.op}")
        if req.op in (control.OP_GROUP_SUB, control.OP_GROUP_UNSUB):
            return self._apply_group(req, port)
        if req.scope not in _SCOPES:
            return self._bad(req, errno.EINVAL, f"scope {req.scope}")
        if req.lower > req.upper:
            return self._bad(req, errno.EINVAL, f"lower {req.lower} > upper {req.upper}")
        if req.type < TIPC_RESERVED_TYPES:
            return self._bad(req, errno.EACCES, f"reserved service type {req.type}")
        try:
            if req.op == control.OP_BIND:
                if len(self.table) >= MAX_BINDINGS:
                    self._bad_log(
                        logging.WARNING, "name table full (%d bindings): bind refused", MAX_BINDINGS
                    )
                    return errno.ENOSPC
                added = self.table.insert(
                    Binding(req.type, req.lower, req.upper, req.scope, self.own, port, req.key)
                )
                self.events.append(added)
                self._changes.append((added, False))
                seg.bump("bind_requests")
            else:
                removed = self.table.remove(req.type, req.lower, req.upper, self.own, req.key)
                self.events.append(removed)
                self._changes.append((removed, False))
                seg.bump("unbind_requests")
        except DuplicateBinding:
            return 0  # a replay of a bind done before a restart
        except NoSuchBinding:
            return errno.EINVAL
        except NameTableError as exc:
            return self._bad(req, errno.EINVAL, str(exc))
        self._touched.add(port)
        return 0

    def _apply_group(self, req: control.Request, port: int) -> int:
        """OP_GROUP_SUB / OP_GROUP_UNSUB of socket ``port`` (entry OPEN and its own)."""
        if req.lower or req.upper or req.key:
            return self._bad(req, errno.EINVAL, "group request with a range or key")
        current = self.groups.subscription(port)
        if req.op == control.OP_GROUP_UNSUB:
            if current is not None and (req.type, req.scope) not in ((0, 0), current):
                return self._bad(
                    req, errno.EINVAL, f"unsubscription of {req.type}/{req.scope}, not held"
                )
            self.groups.unsubscribe(port)
            return 0
        if req.scope not in _SCOPES:
            return self._bad(req, errno.EINVAL, f"scope {req.scope}")
        if req.type < TIPC_RESERVED_TYPES:
            return self._bad(req, errno.EACCES, f"reserved service type {req.type}")
        if current is not None:
            # the same again is a replay after a restart; another one is refused as the
            # kernel's tipc_sk_join refuses a socket already in a group
            return 0 if current == (req.type, req.scope) else errno.EACCES
        # told of the changes of this batch that come after it (those before are in the
        # replica it reads once answered, which is after this batch is published)
        self.groups.subscribe(req.slot, port, req.type, req.scope, len(self._changes))
        return 0

    def _apply_guarded(self, req: control.Request) -> int:
        seg = self.seg
        seg.u32[H_CTL_BUSY_SEQ // 4] = req.seq
        seg.u32[H_CTL_BUSY_SLOT // 4] = req.slot + 1  # last: names a complete (slot, seq)
        try:
            return self.apply(req)
        except Exception:
            seg.bump("request_errors")
            self._error_log(
                logging.ERROR,
                "failed on request %d of socket-table entry %d",
                req.seq,
                req.slot,
                exc_info=True,
            )
            return errno.EPROTO
        finally:
            seg.u32[H_CTL_BUSY_SLOT // 4] = 0

    def _ack(self, slot: int, seq: int, err: int) -> None:
        seg = self.seg
        base = seg.sock_off(slot)
        seg.i32[(base + S_CTL_RESULT) // 4] = err
        seg.u32[(base + S_CTL_ACK) // 4] = seq  # last: the client reads the result after it

    def _drain_inbox(self) -> None:
        """Drain the doorbell (before the scan: see tipcshm.shm.control) and apply the
        bearer workers' name updates waiting in the inbox's lanes (at most
        :data:`FEED_BATCH` per turn, so a flooding lane cannot starve the control path;
        the doorbell stays pending while frames remain). Control requests never come
        this way; any other frame is refused and counted."""
        inbox = self.inbox
        for _ in range(FEED_BATCH):
            r = inbox.poll()
            if r is None:
                return
            buf, off, length, lane = r
            try:
                self._feed(bytes(buf[off : off + length]), lane)
            except Exception:
                self.seg.bump("request_errors")
                self._error_log(
                    logging.ERROR, "failed on a name update from lane %d", lane, exc_info=True
                )
            finally:
                inbox.release(lane)

    # -- name updates from bearer workers (tipcshm.shm.names_feed) -------------------
    def _feed_bad(self, why: str, *args: object) -> None:
        self.seg.bump("bad_requests")
        self._bad_log(logging.WARNING, "refused a name update: " + why, *args)

    def _bearer_token(self, bearer: int) -> tuple[int, int] | None:
        """(pid, start) of bearer ``bearer``'s worker as the worker table names it."""
        w = self.seg.worker(1 + bearer)
        if w is None or w.kind != WorkerKind.BEARER or not w.pid:
            return None
        return (w.pid, w.start)

    def _feed(self, frame: bytes, lane: int) -> None:
        """Validate one record from inbox lane ``lane`` and apply it (see the module notes)."""
        try:
            u = names_feed.decode(frame)
        except ValueError as exc:
            self._feed_bad("lane %d: %s", lane, exc)
            return
        if not 0 <= u.bearer < MAX_BEARERS:
            self._feed_bad("lane %d: bearer %d out of range", lane, u.bearer)
            return
        token = self.inbox.lane_producer(lane)
        if token is None or token != self._bearer_token(u.bearer):
            self._feed_bad("lane %d (producer %s) is not bearer %d's worker", lane, token, u.bearer)
            return
        try:
            self._apply_update(u)
        except FeedRefused as exc:
            self._feed_bad("bearer %d %s: %s", u.bearer, names_feed.OP_NAMES[u.op], exc)

    def _apply_update(self, u: names_feed.NameUpdate) -> None:
        feeds = self.feeds
        changes: list[BindingAdded | BindingRemoved]
        if u.op == names_feed.PUBLISH:
            b = Binding(u.type, u.lower, u.upper, u.scope, u.node, u.port, u.key)
            added = feeds.publish(u.bearer, b)
            changes = [] if added is None else [added]
        elif u.op == names_feed.WITHDRAW:
            removed = feeds.withdraw(u.bearer, u.type, u.lower, u.upper, u.node, u.key)
            changes = [] if removed is None else [removed]
        elif u.op == names_feed.PURGE_NODE:
            changes = feeds.purge_node(u.bearer, u.node)
        else:  # RESET_BEARER (decode accepts no other operation)
            changes = feeds.reset_bearer(u.bearer)
        self.events.extend(changes)
        # a peer's or a bearer's loss is no EVT_GONE: the client sees the node unreachable
        self._changes.extend((c, False) for c in changes)

    def run_once(self) -> int:
        """Serve the requests and closings waiting now, without blocking; returns how many.

        Applied, then published, then acknowledged (and CLOSING entries freed), so a
        worker killed anywhere in between leaves the work for its successor.
        """
        generation = self.table.generation
        first_event = len(self.events)
        self._drain_inbox()
        fed = self.table.generation != generation
        seg = self.seg
        answers: list[tuple[int, int, int]] = []
        for slot in seg.pending_requests():
            req = control.read(seg, slot)
            answers.append((slot, req.seq, self._apply_guarded(req)))
        closing: list[tuple[int, int]] = []
        groups = self.groups
        for slot in seg.socket_indices(SockState.CLOSING):
            port = seg.u32[(seg.sock_off(slot) + S_PORT) // 4]
            if port:
                removed = self.table.remove_port(self.own, port)
                self.events.extend(removed)
                self._changes.extend((r, True) for r in removed)
                groups.unsubscribe(port)
                closing.append((slot, port))
        # Member events before the replica moves: a worker killed after this and before
        # publishing leaves its requests and sweeps to its successor, which tells of them
        # again (a repeated event is harmless; a lost one would not be).
        if self._changes:
            groups.changed(self._changes)
            self._changes.clear()
        groups.flush()
        masks = self.feeds.take_changed()
        if not answers and not closing and not fed and not masks:
            return 0
        if self.table.generation != generation or masks:
            self._publish(self.events[first_event:], masks)
            self._recount(self._touched)
        self._touched.clear()
        for slot, seq, err in answers:
            self._ack(slot, seq, err)
        for slot, port in closing:
            seg.free_socket(slot, port)
        return len(answers) + len(closing) + fed

    def _publish(self, events: list[BindingAdded | BindingRemoved], masks: list[Ident]) -> None:
        """Bring the replica up to the table: apply the changes to the mirror, write it."""
        mirror = self.mirror
        types = mirror.apply(events, self.feeds.origins(), masks)
        if mirror.n != len(self.table):  # a change without its event: never, but be sure
            log.error("replica mirror out of step with the table: rebuilt")
            self.mirror = mirror = Mirror.from_table(self.table, self.feeds.origins())
            mirror.publish(self.seg, self.table.generation, range(TYPE_TOKENS), slots=True)
            return
        mirror.publish(self.seg, self.table.generation, types)

    def _recount(self, ports: set[int]) -> None:
        if not ports:
            return
        counts = dict.fromkeys(ports, 0)
        for b in self.table.bindings():
            if b.node == self.own and b.port in counts and not _link_state(b):
                counts[b.port] += 1
        seg = self.seg
        for port, count in counts.items():
            slot = seg.socket_index(port)
            if slot is not None:
                seg.u32[(seg.sock_off(slot) + S_NBIND) // 4] = count

    def start_topology(self) -> None:
        """Open the topology service; done before the worker announces itself ready, so a
        node that `tipcshm start` reports ready already serves subscriptions."""
        attach_worker(self.seg.name)
        self.topology = TopologyServer(self.seg.name, self.own)
        added = self.table.insert(self.topology.binding)
        self.events.append(added)
        self._publish([added], [])
        self._recount_all(self.table)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.inbox.fileno(), selectors.EVENT_READ)
        registered: set[int] = set()
        last_beat = 0.0
        while not self.stopping:
            timeout = HEARTBEAT_INTERVAL
            topo = self.topology
            if topo is not None:
                deadline = topo.next_deadline()
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - time.monotonic()))
                fds = set(topo.filenos())
                for fd in fds - registered:
                    sel.register(fd, selectors.EVENT_READ)
                for fd in registered - fds:
                    sel.unregister(fd)
                registered = fds
            sel.select(timeout)
            self.run_once()
            now = time.monotonic()
            if topo is not None:
                if self.events:
                    topo.changed(self.events)
                topo.serve(now, self.table)
                topo.expire(now)
            self.events.clear()
            if now - last_beat >= HEARTBEAT_INTERVAL:
                self.seg.nametable_beat()
                last_beat = now
        if self.topology is not None:
            self.topology.close()
        self.groups.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tipcshm.workers.nametable NODE", file=sys.stderr)
        return 2
    node = args[0]
    proc.die_with_parent(int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())))
    rundir.setup_logging(f"nametable[{node}]")
    # One mapped inbox (and its doorbell) per group subscriber: as many descriptors as
    # the hard limit allows, not the soft default of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    seg = NodeSegment.attach(node)
    inbox = Inbox.attach(nametable_inbox_name(node), trust=seg.trust, tag=seg.tag)
    worker = NameTableWorker(seg, inbox)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start_topology()
    pid, start = proc.self_token()
    seg.set_name_event_writer(pid, start)
    seg.set_nametable_worker(pid, start)
    seg.nametable_beat()
    try:
        worker.run()
    except NodeNotRunning:
        # The supervisor is stopping the node (its state left READY) and will end this
        # process next: the topology service's sockets say so first. Not a crash.
        log.info("node stopping: name-table worker ends")
    finally:
        inbox.detach()
        seg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
