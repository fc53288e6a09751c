"""The supervisor: creates a node, runs its workers, reaps dead processes, stops cleanly.

``tipcshm start`` runs :func:`serve` in a detached process (or in the foreground). It

* creates the node segment and the name-table worker's inbox, starts the worker and marks the
  node READY once the worker beats;
* watches every process attached to the node through a pidfd (readable the instant the
  process ends, kill -9 included): it closes the dead process's sockets, marks their table
  entries CLOSING (so a bind still in flight from the dead process is refused) and rings the
  name-table worker, which withdraws their bindings and frees the entries; it unlinks their
  inboxes;
* restarts the name-table worker when it dies; bindings survive in the replica;
* on SIGTERM (``tipcshm stop``) closes every inbox so blocked callers wake, stops the worker
  and unlinks every segment and queue of the node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from tipcshm import proc, wire
from tipcshm.errors import NodeAlreadyRunning, NodeFailure
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    H_MAGIC,
    MAGIC,
    NodeSegment,
    NodeState,
    SockState,
    check_node_name,
    inbox_name,
    nametable_inbox_name,
    node_segment_exists,
    segment_name,
)

log = logging.getLogger("tipcshm.workers.supervisor")

SCAN_INTERVAL = 0.02  # new processes are noticed within this; deaths at once (pidfd)
HEARTBEAT_INTERVAL = 0.1
WORKER_READY_TIMEOUT = 15.0
RESTART_BACKOFF = 0.2
# Connection sockets carry bulk streams: a ring this deep lets the sender run ahead of the
# reader (measured, tools/bench/conn_bench.py: 256 KiB lanes gave 0.7x the bandwidth of
# 1-4 MiB ones). Pages are touched only as a stream cycles through them.
CONN_LANE_BYTES = 4 << 20


@dataclass
class NodeConfig:
    node: str
    identity: bytes
    lanes: int = 64
    lane_bytes: int = 256 * 1024
    mode: int = 0o600
    gid: int = -1
    conn_lane_bytes: int = CONN_LANE_BYTES


def identity_for(text: str | None) -> bytes:
    """The node identity from --identity, or a random 128-bit one."""
    if text is None:
        return secrets.token_bytes(16)
    return wire.identity_from_str(text)


# -- leftovers -----------------------------------------------------------------------
def running_supervisor(node: str) -> int | None:
    """Pid of the live supervisor of ``node``, or None."""
    if not node_segment_exists(node):
        return None
    try:
        seg = NodeSegment.attach(node)
    except OSError:
        return None
    try:
        pid, start = seg.supervisor
        return pid if pid and proc.alive(pid, start) else None
    finally:
        seg.close()


def _stale_names(node: str) -> list[str]:
    prefix = f"tipcshm.{node}.in."
    try:
        return sorted("/" + n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def clean_leftovers(node: str) -> list[str]:
    """Remove what a crashed node left: its workers (by recorded pid), inboxes, segment."""
    removed: list[str] = []
    names = set(_stale_names(node))
    if node_segment_exists(node):
        try:
            seg = _map_raw(node)
        except OSError:
            seg = None
        if seg is not None:
            try:
                for e in seg.sockets():
                    names.add(inbox_name(node, e.port))
                pid, start, _ = seg.nametable_worker
                if pid and proc.alive(pid, start):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            finally:
                seg.close()
        NodeSegment.unlink(node)
        removed.append(segment_name(node))
    names.add(nametable_inbox_name(node))
    for name in sorted(names):
        existed = os.path.exists(f"/dev/shm{name}")
        Inbox.unlink_name(name)
        if existed:
            removed.append(name)
    return removed


def _map_raw(node: str) -> NodeSegment:
    """Map a segment whatever its state (for cleaning up a crashed node)."""
    import posix_ipc

    from tipcshm.shm.layout import SEGMENT_BYTES

    shm = posix_ipc.SharedMemory(segment_name(node))
    try:
        if os.fstat(shm.fd).st_size < SEGMENT_BYTES:
            raise OSError("segment truncated")
        return NodeSegment(node, shm, False)
    finally:
        os.close(shm.fd)


# -- the supervisor ------------------------------------------------------------------
class Supervisor:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = config.node
        self.stopping = False
        self.seg: NodeSegment | None = None
        self.worker_inbox: Inbox | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_started = 0.0
        self.selector = selectors.DefaultSelector()
        self.watched: dict[tuple[int, int], int] = {}  # (pid, start) -> pidfd
        self.pid, self.start = proc.self_token()
        self.scanned_generation = -1

    # -- start ---------------------------------------------------------------------
    def create(self) -> None:
        cfg = self.config
        pid = running_supervisor(self.node)
        if pid is not None:
            raise NodeAlreadyRunning(self.node, pid)
        for name in clean_leftovers(self.node):
            log.info("removed leftover %s", name)
        seg = NodeSegment.create(self.node, mode=cfg.mode)
        self.seg = seg
        if cfg.gid >= 0:
            seg.set_group(cfg.gid)
            os.fchown(seg._fd, -1, cfg.gid)
        seg.set_identity(cfg.identity, wire.hash128to32(cfg.identity.ljust(16, b"\0")))
        seg.set_lane_geometry(cfg.lanes, cfg.lane_bytes, cfg.conn_lane_bytes)
        seg.set_supervisor(self.pid, self.start)
        self.worker_inbox = Inbox.create(
            nametable_inbox_name(self.node),
            lanes=cfg.lanes,
            lane_bytes=cfg.lane_bytes,
            mode=cfg.mode,
            owner=(self.pid, self.start),
        )
        seg.beat()
        seg.publish_magic()

    def spawn_worker(self) -> None:
        assert self.seg is not None
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "tipcshm.workers.nametable", self.node],
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        self.worker_started = time.monotonic()
        log.info("name-table worker started, pid %d", self.worker.pid)

    def wait_worker_ready(self) -> None:
        assert self.seg is not None and self.worker is not None
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while self.seg.nametable_worker[0] != self.worker.pid:
            if self.worker.poll() is not None:
                raise NodeFailure(
                    self.node, f"name-table worker exited with {self.worker.returncode}"
                )
            if time.monotonic() > deadline:
                raise NodeFailure(self.node, "name-table worker did not become ready")
            time.sleep(0.005)

    # -- watching processes ---------------------------------------------------------
    def _tokens(self) -> set[tuple[int, int]]:
        assert self.seg is not None
        tokens = self.seg.owner_tokens()
        tokens.discard((self.pid, self.start))
        if self.worker is not None:
            tokens = {t for t in tokens if t[0] != self.worker.pid}
        return tokens

    def scan(self) -> None:
        assert self.seg is not None
        generation = self.seg.table_generation
        if generation == self.scanned_generation:
            return  # nobody registered since the last scan
        self.scanned_generation = generation
        for token in self._tokens() - self.watched.keys():
            pid, start = token
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self.reap(token)
                continue
            if not proc.alive(pid, start):  # pid reused by another process
                os.close(fd)
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
        for e in seg.sockets_of(pid, start):
            name = inbox_name(self.node, e.port)
            with contextlib.suppress(OSError):
                inbox = Inbox.attach(name)
                inbox.mark_closed()
                inbox.detach()
            if e.peer_port and e.state == SockState.OPEN:  # a CLOSING one told its peer
                self.abort_peer(e.port, e.peer_node, e.peer_port)
            # CLOSING refuses a bind still in flight; the worker withdraws the bindings
            # and only then frees the entry, so the port is not reused before.
            seg.close_socket(e.index, e.port)
            Inbox.unlink_name(name)
            ports.append(e.port)
        if ports and self.worker_inbox is not None:
            self.worker_inbox.ring()
        for index in seg.process_indices(pid, start):
            seg.free_process(index)
        seg.bump("processes_reaped")
        log.info("process %d ended; released %d socket(s)", pid, len(ports))

    def abort_peer(self, port: int, peer_node: int, peer_port: int) -> None:
        """Tell a dead socket's connection peer, as the kernel does when a port goes away:
        a 24-byte CONN_MSG from the dead port with TIPC_ERR_NO_PORT (its recv raises
        ECONNRESET, its send fails)."""
        assert self.seg is not None
        own = self.seg.addr
        if peer_node not in (0, own):
            return  # inter-node connections do not exist yet
        frame = wire.HDR24.pack(
            wire.make_w0(wire.User.CRITICAL_IMPORTANCE, wire.SHORT_H_SIZE, wire.SHORT_H_SIZE),
            wire.make_w1(wire.DataType.CONN_MSG, errcode=wire.ErrorCode.NO_PORT),
            0,
            own,
            port,
            peer_port,
        )
        try:
            inbox = Inbox.attach(inbox_name(self.node, peer_port))
        except OSError:
            return  # the peer is gone too
        try:
            p = inbox.producer()
            with p.lock:
                if not p.write(frame) and p.wait_space(len(frame), 0.1):
                    p.write(frame)
        except OSError:
            pass  # closed meanwhile
        finally:
            inbox.detach()

    def check_worker(self) -> None:
        assert self.worker is not None and self.seg is not None
        if self.worker.poll() is None:
            return
        log.warning(
            "name-table worker %d exited with %s; restarting",
            self.worker.pid,
            self.worker.returncode,
        )
        # Its own sockets (the topology service and its subscribers' connections) go the
        # way of any dead process's: peers get aborts, and the successor, which drops
        # bindings of sockets that are gone, binds a fresh topology service.
        pid, start, _ = self.seg.nametable_worker
        if pid == self.worker.pid:
            self.reap((pid, start))
        if time.monotonic() - self.worker_started < RESTART_BACKOFF:
            time.sleep(RESTART_BACKOFF)
        self.seg.count_nametable_restart()
        self.spawn_worker()

    # -- main loop ------------------------------------------------------------------
    def serve(self, ready: Callable[[], None] | None = None) -> None:
        assert self.seg is not None
        self.spawn_worker()
        self.wait_worker_ready()
        self.seg.state = NodeState.READY
        log.info("node %s ready (address %#010x)", self.node, self.seg.addr)
        if ready is not None:
            ready()
        last_beat = 0.0
        while not self.stopping:
            for key, _ in self.selector.select(SCAN_INTERVAL):
                self.reap(key.data)
            self.scan()
            self.check_worker()
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_INTERVAL:
                self.seg.beat()
                last_beat = now

    def shutdown(self) -> None:
        seg = self.seg
        if seg is not None:
            seg.state = NodeState.STOPPING
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(3)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        if seg is not None:
            for e in seg.sockets():
                name = inbox_name(self.node, e.port)
                with contextlib.suppress(OSError):
                    inbox = Inbox.attach(name)
                    inbox.mark_closed()  # blocked callers wake and see the node stopped
                    inbox.detach()
                Inbox.unlink_name(name)
        if self.worker_inbox is not None:
            self.worker_inbox.unlink()
            self.worker_inbox.detach()
        for fd in self.watched.values():
            os.close(fd)
        self.watched.clear()
        if seg is not None:
            seg.u64[H_MAGIC // 8] = 0
            seg.close()
        NodeSegment.unlink(self.node)
        for name in _stale_names(self.node):
            Inbox.unlink_name(name)
        log.info("node %s stopped", self.node)


def serve(config: NodeConfig, ready: Callable[[], None] | None = None) -> int:
    """Run a node until SIGTERM/SIGINT. Returns the exit status."""
    check_node_name(config.node)
    sup = Supervisor(config)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        sup.create()
        sup.serve(ready)
    finally:
        sup.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tipcshm.workers.supervisor")
    parser.add_argument("node")
    parser.add_argument("--identity-hex", required=True)
    parser.add_argument("--lanes", type=int, default=64)
    parser.add_argument("--lane-bytes", type=int, default=256 * 1024)
    parser.add_argument("--conn-lane-bytes", type=int, default=CONN_LANE_BYTES)
    parser.add_argument("--mode", type=lambda s: int(s, 8), default=0o600)
    parser.add_argument("--gid", type=int, default=-1)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s supervisor[{args.node}] %(message)s"
    )
    config = NodeConfig(
        args.node,
        bytes.fromhex(args.identity_hex),
        args.lanes,
        args.lane_bytes,
        args.mode,
        args.gid,
        args.conn_lane_bytes,
    )
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["NodeConfig", "Supervisor", "serve", "clean_leftovers", "running_supervisor", "MAGIC"]
