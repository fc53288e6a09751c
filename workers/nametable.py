"""The name-table worker: single writer of the node's binding table and its replica.

Loop: wait on the worker inbox, apply every control request found (bind, unbind, release
port) to the sans-IO :class:`~tipcshm.core.nametable.NameTable`, publish the new replica
image, then acknowledge each request in its socket's table entry, and only then release the
request frames. A worker killed at any point therefore loses nothing: the replica it had
published is intact (double buffering), and requests not yet released are read again by its
successor; replaying a bind whose first pass completed meets DuplicateBinding and is
acknowledged as done.

Run as ``python -m tipcshm.workers.nametable NODE`` by the supervisor.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import sys
import time
from types import FrameType

from tipcshm import proc, rundir, wire
from tipcshm.client import attach_worker
from tipcshm.constants import TIPC_CLUSTER_SCOPE, TIPC_NODE_STATE
from tipcshm.core.nametable import (
    Binding,
    BindingAdded,
    BindingRemoved,
    DuplicateBinding,
    NameTable,
    NameTableError,
    NoSuchBinding,
    ReplicaFormatError,
)
from tipcshm.shm import control
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    S_CTL_ACK,
    S_CTL_RESULT,
    S_NBIND,
    S_PORT,
    NodeSegment,
    nametable_inbox_name,
)
from tipcshm.workers.topology import TopologyServer

log = logging.getLogger("tipcshm.workers.nametable")

HEARTBEAT_INTERVAL = 0.1
SUPERVISOR_PID_ENV = "TIPCSHM_SUPERVISOR_PID"  # set by the supervisor for its workers


class NameTableWorker:
    def __init__(self, seg: NodeSegment, inbox: Inbox) -> None:
        self.seg = seg
        self.inbox = inbox
        self.own = seg.addr
        self.table = self._load()
        self.stopping = False
        self.events: list[BindingAdded | BindingRemoved] = []  # for the topology service
        self.topology: TopologyServer | None = None

    def _load(self) -> NameTable:
        """The bindings that survived a restart, minus those of sockets that are gone."""
        got = self.seg.read_replica()
        table = NameTable(self.own)
        if got is not None and got[1]:
            try:
                table = NameTable.decode(got[1], self.own)
            except ReplicaFormatError as exc:
                log.error("replica unreadable, starting empty: %s", exc)
        live = {e.port for e in self.seg.sockets()}
        for b in table.bindings():
            if b.node == self.own and b.port and b.port not in live:
                table.remove_port(b.node, b.port)
        node_binding = Binding(
            TIPC_NODE_STATE, self.own, self.own, TIPC_CLUSTER_SCOPE, self.own, 0, self.own
        )
        try:
            table.insert(node_binding)
        except DuplicateBinding:
            pass
        self.seg.write_replica(table.encode())
        self._recount(table)
        return table

    def _recount(self, table: NameTable) -> None:
        counts: dict[int, int] = {}
        for b in table.bindings():
            if b.node == self.own:
                counts[b.port] = counts.get(b.port, 0) + 1
        for e in self.seg.sockets():
            self.seg.u32[(self.seg.sock_off(e.index) + S_NBIND) // 4] = counts.get(e.port, 0)

    def apply(self, req: control.Request) -> int:
        """Apply one request to the table; returns an errno (0 = done)."""
        seg = self.seg
        if req.op == control.OP_RELEASE_PORT:
            self.events.extend(self.table.remove_port(self.own, req.port))
            return 0
        if req.slot == control.NO_ACK or req.slot >= 1 << 16:
            return errno.EINVAL
        # A socket freed (closed, or reaped after its process died) gets no new bindings.
        if seg.u32[(seg.sock_off(req.slot) + S_PORT) // 4] != req.port:
            return errno.EBADF
        try:
            if req.op == control.OP_BIND:
                self.events.append(
                    self.table.insert(
                        Binding(
                            req.type, req.lower, req.upper, req.scope, self.own, req.port, req.key
                        )
                    )
                )
                seg.bump("bind_requests")
            elif req.op == control.OP_UNBIND:
                self.events.append(
                    self.table.remove(req.type, req.lower, req.upper, self.own, req.key)
                )
                seg.bump("unbind_requests")
            else:
                return errno.EOPNOTSUPP
        except DuplicateBinding:
            return 0  # a replay of a bind already done before a restart
        except NoSuchBinding:
            return errno.EINVAL
        except NameTableError:
            return errno.EINVAL
        return 0

    def run_once(self) -> int:
        """Serve the requests waiting now, without blocking; returns how many.

        Each request is applied, published, acknowledged and only then released, so a
        worker killed anywhere in between leaves the request for its successor.
        """
        inbox = self.inbox
        served = 0
        while (r := inbox.poll()) is not None:
            buf, off, length, lane = r
            try:
                req = control.unpack_request(buf[off : off + length])
            except wire.WireError as exc:
                log.warning("dropping a malformed control frame: %s", exc)
                inbox.release(lane)
                continue
            generation = self.table.generation
            err = self.apply(req)
            if self.table.generation != generation:
                self.seg.write_replica(self.table.encode())
                self._recount(self.table)
            self._acknowledge(req, err)
            inbox.release(lane)
            served += 1
        return served

    def _acknowledge(self, req: control.Request, err: int) -> None:
        if req.slot == control.NO_ACK or req.slot >= 1 << 16:
            return
        seg = self.seg
        base = seg.sock_off(req.slot)
        if seg.u32[(base + S_PORT) // 4] != req.port:
            return  # the socket is gone; nobody waits
        seg.i32[(base + S_CTL_RESULT) // 4] = err
        seg.u32[(base + S_CTL_ACK) // 4] = req.seq  # last: the client reads the result after it

    def start_topology(self) -> None:
        """Open the topology service; done before the worker announces itself ready, so a
        node that `tipcshm start` reports ready already serves subscriptions."""
        attach_worker(self.seg.name)
        self.topology = TopologyServer(self.seg.name, self.own)
        self.events.append(self.table.insert(self.topology.binding))
        self.seg.write_replica(self.table.encode())
        self._recount(self.table)

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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tipcshm.workers.nametable NODE", file=sys.stderr)
        return 2
    node = args[0]
    proc.die_with_parent(int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())))
    rundir.setup_logging(f"nametable[{node}]")
    seg = NodeSegment.attach(node)
    inbox = Inbox.attach(nametable_inbox_name(node))
    worker = NameTableWorker(seg, inbox)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start_topology()
    pid, start = proc.self_token()
    seg.set_nametable_worker(pid, start)
    seg.nametable_beat()
    try:
        worker.run()
    finally:
        inbox.detach()
        seg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
