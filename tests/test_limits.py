"""Fixed tables of a node: reaching a limit is an error naming it, and the node stays up."""

from __future__ import annotations

import errno
import os
import signal
import time

import numpy as np
import pytest

import tipcshm
from tests.helpers import Child
from tipcshm import proc
from tipcshm.core.nametable import Binding, NameTable
from tipcshm.errors import LimitReached
from tipcshm.shm.layout import (
    MAX_BINDINGS,
    MAX_PROCS,
    MAX_SOCKETS,
    P_PID,
    P_START,
    S_OWNER_START,
    S_PID,
    S_PORT,
    S_STATE,
    ProcRole,
    SockState,
)

SERVICE = 5000


def _wait(cond, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.slow
def test_the_binding_past_max_bindings_is_enospc_naming_the_limit(node: str) -> None:
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        seg = s._client.seg
        own = seg.addr
        pid, _, restarts = seg.nametable_worker
        # Fill the name table through the replica a restarted worker reloads (binding
        # 65,535 names one request at a time would take minutes): stop the single writer,
        # write the image, kill it.
        os.kill(pid, signal.SIGSTOP)
        got = seg.read_replica()
        assert got is not None
        table = NameTable.decode(got[1], own)
        instance = 0
        while len(table) < MAX_BINDINGS:
            instance += 1
            table.insert(Binding(SERVICE, instance, instance, 2, own, s.port, s.port + instance))
        seg.write_replica(table.encode())
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: seg.nametable_worker[2] == restarts + 1, "a restart")
        _wait(lambda: seg.nametable_worker[0] not in (0, pid), "the successor")
        with pytest.raises(LimitReached) as info:
            s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE + 1, 1, 0))
        assert info.value.errno == errno.ENOSPC
        assert f"MAX_BINDINGS = {MAX_BINDINGS}" in str(info.value)
        new_pid = seg.nametable_worker[0]
        assert proc.alive(new_pid, seg.nametable_worker[1])
        # Room again after a withdrawal: the table is a limit, not a wedge.
        s._bindings.append((SERVICE, 1, 1, 2, s.port + 1))
        s.unbind((tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0))
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE + 1, 1, 0))
        assert seg.nametable_worker[0] == new_pid


def test_full_socket_table_is_enobufs_naming_the_limit(node: str) -> None:
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        seg = s._client.seg
        pid, start = proc.self_token()
        # Fake entries owned by this (live) process, so the supervisor leaves them alone.
        with seg.lock():
            socks = seg._socks
            free = np.flatnonzero(socks[:, S_PORT // 4] == 0)
            socks[free, S_PID // 4] = pid
            socks[free, S_OWNER_START // 4] = start & 0xFFFFFFFF
            socks[free, S_OWNER_START // 4 + 1] = start >> 32
            socks[free, S_STATE // 4] = SockState.OPEN
            socks[free, S_PORT // 4] = 0xF0000000 + free
        try:
            assert len(seg.socket_indices()) == MAX_SOCKETS
            with pytest.raises(LimitReached) as info:
                tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
            assert info.value.errno == errno.ENOBUFS
            assert f"MAX_SOCKETS = {MAX_SOCKETS}" in str(info.value)
        finally:
            with seg.lock():
                seg._socks[free, S_PORT // 4] = 0
                seg._socks[free, S_STATE // 4] = SockState.FREE
            del socks
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0))  # the node still serves
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node):
            pass


def test_full_process_table_is_enobufs_naming_the_limit(node: str) -> None:
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        seg = s._client.seg
        pid, start = proc.self_token()
        with seg.lock():
            procs = seg._procs
            free = np.flatnonzero(procs[:, P_PID // 4] == 0)
            procs[free, P_START // 4] = start & 0xFFFFFFFF
            procs[free, P_START // 4 + 1] = start >> 32
            procs[free, P_PID // 4] = pid
        child = Child(
            node,
            """
            try:
                tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
                print("attached")
            except OSError as e:
                print(type(e).__name__, e.errno, e)
            """,
        )
        try:
            line = child.line()
            child.finish()
        finally:
            child.close()
            with seg.lock():
                seg._procs[free, P_PID // 4] = 0
            del procs
        assert line.startswith(f"LimitReached {errno.ENOBUFS} "), line
        assert f"MAX_PROCS = {MAX_PROCS}" in line
        with pytest.raises(LimitReached):  # and the same from the library call
            with seg.lock():
                seg._procs[free, P_PID // 4] = pid
            try:
                seg.register_process(pid, start + 1, ProcRole.CLIENT)
            finally:
                with seg.lock():
                    seg._procs[free, P_PID // 4] = 0
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 2, 0))
