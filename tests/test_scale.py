"""Scale: hundreds of processes binding at once, thousands of sockets in one process.

A smaller version of tools/bench/scale.py (1,000 processes, 10,000 sockets).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback

import pytest

import tipcshm
from tipcshm.client import get_client

SERVER = 7000
CHILD_SERVICE = 7001
NPROC = 300
# One server socket takes every sender: 64 get private lanes, the rest share the overflow lane.
NSERVERS = 1
NSOCKETS = 3000

pytestmark = pytest.mark.slow


def _wait(cond, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _child(node: str, i: int, ready_w: int, go_r: int) -> None:
    code = 1
    try:
        s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        s.bind((tipcshm.TIPC_ADDR_NAME, CHILD_SERVICE, i, 0))
        s.sendto(i.to_bytes(4, "little"), (tipcshm.TIPC_ADDR_NAME, SERVER, i % NSERVERS, 0))
        os.write(ready_w, b"k")
        os.read(go_r, 1)  # EOF once the parent lets go: exit without closing (a reap)
        code = 0
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _bound(node: str) -> set[int]:
    table = get_client(node).table()
    return {b.lower for b in table.overlapping(CHILD_SERVICE, 0, 0xFFFFFFFF)}


def test_300_processes_bind_distinct_services_and_send(node: str) -> None:
    servers = []
    for k in range(NSERVERS):
        srv = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        srv.bind((tipcshm.TIPC_ADDR_NAME, SERVER, k, 0))
        servers.append(srv)
    seg = servers[0]._client.seg
    baseline = len(seg.socket_indices())
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pids: list[int] = []
    try:
        for i in range(NPROC):
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                os.close(go_w)
                _child(node, i, ready_w, go_r)
            pids.append(pid)
        os.close(ready_w)
        os.close(go_r)
        got = 0
        deadline = time.monotonic() + 120
        while got < NPROC:
            assert select.select([ready_r], [], [], max(0.0, deadline - time.monotonic()))[0], (
                f"only {got} of {NPROC} children bound and sent"
            )
            chunk = os.read(ready_r, 4096)
            assert chunk, f"children died: only {got} of {NPROC} bound and sent"
            got += len(chunk)
        assert _bound(node) == set(range(NPROC))
        seen: set[int] = set()
        for srv in servers:
            srv.settimeout(10)
            for _ in range(NPROC // NSERVERS):
                seen.add(int.from_bytes(srv.recv(64), "little"))
        assert seen == set(range(NPROC))
        # kill -9 of half the binders withdraws exactly their bindings.
        killed = pids[: NPROC // 2]
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        for pid in killed:
            os.waitpid(pid, 0)
        _wait(lambda: _bound(node) == set(range(NPROC // 2, NPROC)), "the reaped bindings")
        # The others exit without closing: reaped, withdrawn, entries freed.
        os.close(go_w)
        go_w = -1
        for pid in pids[NPROC // 2 :]:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        pids.clear()
        _wait(lambda: not _bound(node), "every binding withdrawn")
        _wait(lambda: len(seg.socket_indices()) == baseline, "every entry freed")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if go_w >= 0:
            os.close(go_w)
        os.close(ready_r)
        for srv in servers:
            srv.close()


def test_3000_sockets_in_one_process(node: str) -> None:
    socks = [tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) for _ in range(NSOCKETS)]
    try:
        seg = socks[0]._client.seg
        assert len(seg.socket_indices()) >= NSOCKETS
        s = socks[NSOCKETS // 2]
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVER, 1, 0))  # timed in tools/bench/scale.py
        assert get_client(node).table().overlapping(SERVER, 1, 1)
        s.unbind((tipcshm.TIPC_ADDR_NAME, SERVER, 1, 0))
        assert not get_client(node).table().overlapping(SERVER, 1, 1)
    finally:
        for sk in socks:
            sk.close()
    _wait(lambda: len(seg.socket_indices()) < NSOCKETS, "the entries to be freed")
