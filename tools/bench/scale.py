#!/usr/bin/env python3
"""Scale check of one node (issue 9 targets: 1,000 processes, 10,000 sockets).

* sockets: one process opens N sockets (default 10,000; as many as RLIMIT_NOFILE allows,
  a helper process the rest: a socket costs two descriptors) and times it; with all of them
  open, times a bind + unbind of one of them (median of 50); then closes them all and
  times until the name-table worker has freed every entry.
* processes: P forked processes (default 1,000) each open a socket, bind a distinct
  service and send one message to one of S server sockets (default 1: 64 senders get
  private lanes, the others share its overflow lane); times until every
  process has bound and sent, and until the servers received every message; then kills
  them all (kill -9) and times until every binding is withdrawn.
* RSS of this process, the supervisor and the name-table worker, and the bytes of
  /dev/shm the node holds (allocated blocks), at the peak.

    python tools/bench/scale.py [--sockets 10000] [--procs 1000] [--servers S]

Starts and stops its own node.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import statistics
import sys
import time

import psutil

import tipcshm
from tipcshm.client import get_client
from tipcshm.testing import running_node

SERVER = 7000
CHILD_SERVICE = 7001


def _wait(cond, what: str, timeout: float = 600.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def _shm_bytes(node: str) -> int:
    total = 0
    for name in os.listdir("/dev/shm"):
        if name == f"tipcshm.{node}" or name.startswith(f"tipcshm.{node}."):
            try:
                total += os.stat(f"/dev/shm/{name}").st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _rss(node: str) -> dict[str, int]:
    seg = get_client(node).seg
    out = {"this process": psutil.Process().memory_info().rss}
    for what, pid in (
        ("supervisor", seg.supervisor[0]),
        ("name-table worker", seg.nametable_worker[0]),
    ):
        try:
            out[what] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return out


def _report_memory(node: str, label: str) -> None:
    mib = 1 << 20
    rss = ", ".join(f"{k} {v / mib:.0f} MiB" for k, v in _rss(node).items())
    print(f"  {label}: RSS {rss}; /dev/shm {_shm_bytes(node) / mib:.1f} MiB")


def _fd_cap() -> int:
    """Sockets one process can hold: each costs two descriptors (its doorbell FIFO, and the
    one Python 3.11's mmap keeps for its mapping), so RLIMIT_NOFILE bounds it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return (hard - 256) // 2


def bench_sockets(node: str, n: int) -> None:
    mine = min(n, _fd_cap())
    helper = 0
    done_r = go_w = -1
    if mine < n:  # the rest in a helper process, so the node still holds n
        done_r, done_w = os.pipe()
        go_r, go_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            code = 1
            try:
                os.close(done_r)
                os.close(go_w)
                _fd_cap()
                held = [
                    tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
                    for _ in range(n - mine)
                ]
                os.write(done_w, b"k")
                os.read(go_r, 1)
                for sk in held:
                    sk.close()
                code = 0
            finally:
                os._exit(code)
        os.close(done_w)
        os.close(go_r)
        os.read(done_r, 1)
        print(f"sockets: {n - mine} held by a helper process (the fd limit), {mine} here")
    print(f"sockets: {mine} opened in one process")
    t0 = time.perf_counter()
    socks = [tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) for _ in range(mine)]
    dt = time.perf_counter() - t0
    print(f"  open {mine}: {dt:.2f} s ({dt / mine * 1e6:.0f} us per socket)")
    seg = socks[0]._client.seg
    print(f"  sockets open on the node: {len(seg.socket_indices())}")
    s = socks[mine // 2]
    times = []
    for i in range(50):
        t0 = time.perf_counter()
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVER, i, 0))
        s.unbind((tipcshm.TIPC_ADDR_NAME, SERVER, i, 0))
        times.append(time.perf_counter() - t0)
    print(f"  bind + unbind of one socket: median {statistics.median(times) * 1e3:.2f} ms")
    _report_memory(node, f"{n} sockets open")
    idle = _shm_bytes(node)
    t0 = time.perf_counter()
    for sk in socks:
        sk.close()
    closed = time.perf_counter() - t0
    if helper:
        os.close(go_w)
        os.waitpid(helper, 0)
        os.close(done_r)
    _wait(lambda: len(seg.socket_indices()) < 2, "the entries to be freed")
    dt = time.perf_counter() - t0
    print(f"  close all {n}: {closed:.2f} s here, every entry freed by the worker after {dt:.2f} s")
    per = (idle - _shm_bytes(node)) / n
    print(f"  shared memory per idle socket: {per / 1024:.1f} KiB (inbox blocks + table entry)")


def bench_processes(node: str, nproc: int, nservers: int) -> None:
    print(f"processes: {nproc} forked, each binds and sends to one of {nservers} servers")
    servers = []
    for k in range(nservers):
        srv = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        srv.bind((tipcshm.TIPC_ADDR_NAME, SERVER, k, 0))
        servers.append(srv)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    t0 = time.perf_counter()
    for i in range(nproc):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
                s.bind((tipcshm.TIPC_ADDR_NAME, CHILD_SERVICE, i, 0))
                s.sendto(b"x" * 64, (tipcshm.TIPC_ADDR_NAME, SERVER, i % nservers, 0))
                os.write(ready_w, b"k")
                os.read(go_r, 1)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    forked = time.perf_counter() - t0
    got = 0
    while got < nproc:
        if not select.select([ready_r], [], [], 600)[0]:
            raise SystemExit(f"only {got} of {nproc} processes bound")
        chunk = os.read(ready_r, 65536)
        if not chunk:
            raise SystemExit(f"children died: {got} of {nproc} bound")
        got += len(chunk)
    bound = time.perf_counter() - t0
    received = 0
    for k, srv in enumerate(servers):
        srv.settimeout(60)
        for _ in range(len(range(k, nproc, nservers))):
            srv.recv(128)
            received += 1
    sent = time.perf_counter() - t0
    table = get_client(node).table()
    nb = len(table.overlapping(CHILD_SERVICE, 0, 0xFFFFFFFF))
    print(f"  fork {nproc}: {forked:.2f} s; all attached, bound and sent: {bound:.2f} s")
    print(f"  {received} messages received: {sent:.2f} s; {nb} bindings in the table")
    _report_memory(node, f"{nproc} processes attached")
    t0 = time.perf_counter()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)
    _wait(
        lambda: not get_client(node).table().overlapping(CHILD_SERVICE, 0, 0xFFFFFFFF),
        "the bindings to be withdrawn",
    )
    print(f"  kill -9 all: every binding withdrawn after {time.perf_counter() - t0:.2f} s")
    os.close(go_w)
    os.close(ready_r)
    for srv in servers:
        srv.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=1_000)
    ap.add_argument("--servers", type=int, default=1)
    args = ap.parse_args()
    nservers = max(1, args.servers)
    with running_node() as node:
        # Processes first: forking a process that held 10,000 sockets copies its page tables.
        if args.procs:
            bench_processes(node, args.procs, nservers)
        if args.sockets:
            bench_sockets(node, args.sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
