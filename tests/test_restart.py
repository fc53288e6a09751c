"""A node that stops is never silent.

After `tipcshm stop` (or a stop and a new start under the same name) every call on a
socket of the old node raises NodeNotRunning, and no send reports success for a message
nobody can receive; sockets made afterwards attach to the node running then.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from conftest import shm_leftovers
from helpers import connected_trio

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_DGRAM,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
)
from tipcshm.testing import start_node, stop_node

SERVICE = 7300


def expect_not_running(what: str, call: Callable[[], object]) -> None:
    with pytest.raises(tipcshm.NodeNotRunning) as info:
        call()
    assert isinstance(info.value, OSError), what
    assert info.value.errno == errno.ENOENT, what


def connected(node: str, kind: int, instance: int):
    return connected_trio(node, kind, SERVICE, instance)


def old_sockets(node: str) -> dict[str, tipcshm.Socket]:
    socks: dict[str, tipcshm.Socket] = {}
    socks["rx"] = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    socks["rx"].bind((TIPC_ADDR_NAME, SERVICE, 100, 0))
    socks["tx"] = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    socks["dgram"] = tipcshm.socket(AF_TIPC, SOCK_DGRAM, node=node)
    # a route the sender has cached (its fast path), and a message it delivered
    for _ in range(3):
        socks["tx"].sendto(b"before", (TIPC_ADDR_NAME, SERVICE, 100, 0))
    assert socks["rx"].recv(100) == b"before"
    for kind, name, inst in ((SOCK_SEQPACKET, "seq", 1), (SOCK_STREAM, "stream", 2)):
        srv, c, b = connected(node, kind, inst)
        socks[f"{name} listener"], socks[f"{name} client"], socks[f"{name} server"] = srv, c, b
        c.sendall(b"hello")
        assert b.recv(10) == b"hello"
    return socks


def calls_on(s: dict[str, tipcshm.Socket]) -> list[tuple[str, Callable[[], object]]]:
    to_service = (TIPC_ADDR_NAME, SERVICE, 100, 0)
    return [
        ("cached sendto", lambda: s["tx"].sendto(b"after", to_service)),
        ("sendto a socket", lambda: s["tx"].sendto(b"x", (TIPC_ADDR_ID, 0, s["rx"].port, 0))),
        ("dgram sendto", lambda: s["dgram"].sendto(b"x", to_service)),
        ("recv", lambda: s["tx"].recv(10)),
        ("recvfrom", lambda: s["tx"].recvfrom(10)),
        ("recv_into", lambda: s["tx"].recv_into(bytearray(10))),
        ("recvmsg", lambda: s["tx"].recvmsg(10, 64)),
        ("bind", lambda: s["tx"].bind((TIPC_ADDR_NAME, SERVICE, 7, 0))),
        ("getsockopt", lambda: s["tx"].getsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE)),
        ("setsockopt", lambda: s["tx"].setsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE, 1)),
        ("getsockname", lambda: s["tx"].getsockname()),
        ("seq send", lambda: s["seq client"].send(b"x")),
        ("seq recv", lambda: s["seq server"].recv(10)),
        ("stream sendall", lambda: s["stream client"].sendall(b"x" * 100000)),
        ("stream recv", lambda: s["stream server"].recv(10)),
        ("accept", lambda: s["seq listener"].accept()),
        ("connect", lambda: s["tx"].connect((TIPC_ADDR_NAME, SERVICE, 1, 0))),
        ("new connect", lambda: _fresh_connect(s["rx"].node)),
    ]


def _fresh_connect(node: str) -> None:
    """A socket made after the stop, on a stopped node: NodeNotRunning from the start."""
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
        c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))


def close_all(socks: dict[str, tipcshm.Socket]) -> None:
    for s in socks.values():
        s.close()
        s.close()  # idempotent, also on a stopped node


def test_every_call_after_stop_raises_node_not_running(node_name: str) -> None:
    start_node(node_name)
    try:
        socks = old_sockets(node_name)
    finally:
        stop_node(node_name)
    try:
        for what, call in calls_on(socks):
            expect_not_running(what, call)
    finally:
        close_all(socks)
    assert shm_leftovers(node_name) == []


def test_restart_under_the_same_name(node_name: str) -> None:
    start_node(node_name)
    try:
        socks = old_sockets(node_name)
    finally:
        stop_node(node_name)
    start_node(node_name)
    try:
        with (
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node_name) as fresh,
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node_name) as sender,
        ):
            # the new node binds the service the old sender had a route to
            fresh.bind((TIPC_ADDR_NAME, SERVICE, 100, 0))
            for what, call in calls_on(socks):
                if what != "new connect":
                    expect_not_running(what, call)
            # nothing of the old sockets reached the new node's socket
            fresh.setblocking(False)
            with pytest.raises(BlockingIOError):
                fresh.recv(10)
            # new sockets use the new node
            sender.sendto(b"new", (TIPC_ADDR_NAME, SERVICE, 100, 0))
            fresh.setblocking(True)
            assert fresh.recv(10) == b"new"
            srv, c, b = connected(node_name, SOCK_SEQPACKET, 1)
            with srv, c, b:
                c.send(b"ping")
                assert b.recv(10) == b"ping"
    finally:
        close_all(socks)
        stop_node(node_name)
    assert shm_leftovers(node_name) == []


def test_a_killed_node_is_never_silent_after_stop_cleans_up(node_name: str) -> None:
    """A supervisor killed with SIGKILL closes no inbox; `tipcshm stop` (cleaning up after
    it) does, so a sender's cached route fails instead of reporting success."""
    import os
    import signal

    from tipcshm import rundir

    start_node(node_name)
    try:
        rx = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node_name)
        tx = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node_name)
        rx.bind((TIPC_ADDR_NAME, SERVICE, 100, 0))
        for _ in range(3):  # the route is cached: the fast path, which reads no node state
            tx.sendto(b"before", (TIPC_ADDR_NAME, SERVICE, 100, 0))
        record = rundir.read_record(node_name)
        assert record is not None
        os.kill(record[0], signal.SIGKILL)
    finally:
        stop_node(node_name)
    try:
        expect_not_running(
            "cached sendto", lambda: tx.sendto(b"after", (TIPC_ADDR_NAME, SERVICE, 100, 0))
        )
    finally:
        rx.close()
        tx.close()
    assert shm_leftovers(node_name) == []


def test_a_socket_made_before_fork_works_in_the_child(node: str) -> None:
    """A forked child inherits the parent's sockets and uses them, as with kernel
    sockets; the checks that a node is still running must not read the child's copy of
    the parent's attachment as a stopped node."""
    import contextlib
    import os

    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as ls:
        ls.bind((TIPC_ADDR_NAME, SERVICE, 50, 0))
        ls.listen(1)
        pid = os.fork()
        if pid == 0:  # the child: accept on the inherited listener, answer, leave
            code = 1
            try:
                a, _ = ls.accept()
                a.send(b"from the child")
                with contextlib.suppress(ConnectionResetError):
                    a.recv(10)  # until the parent closes (a reset: close() aborts)
                code = 0
            finally:
                os._exit(code)
        with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
            c.settimeout(10)
            c.connect((TIPC_ADDR_NAME, SERVICE, 50, 0))
            assert c.recv(100) == b"from the child"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
