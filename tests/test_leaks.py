"""A process that talks to sockets that come and go keeps neither descriptors nor
mappings of theirs: connections let go of their peer's lane when they close, lanes into
closed inboxes are dropped (and the routes built on them with them)."""

from __future__ import annotations

import os
import threading

from helpers import Child

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, SOCK_SEQPACKET, TIPC_ADDR_ID, TIPC_ADDR_NAME
from tipcshm.client import SWEEP_MIN

SERVICE = 7200


def counts(node: str) -> tuple[int, int]:
    """This process's descriptors, and its mappings of the node's removed segments."""
    deleted = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if f"/dev/shm/tipcshm.{node}." in line and line.rstrip().endswith("(deleted)"):
                deleted.add(line.split(None, 5)[-1])
    return len(os.listdir("/proc/self/fd")), len(deleted)


def test_closed_connections_leave_no_descriptor_or_mapping(node: str) -> None:
    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
    ls.listen(8)

    def one(first: str) -> None:
        c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
        t = threading.Thread(target=c.connect, args=((TIPC_ADDR_NAME, SERVICE, 1, 0),))
        t.start()
        b, _ = ls.accept()
        t.join(10)
        c.send(b"x")
        assert b.recv(10) == b"x"
        b.send(b"y")
        assert c.recv(10) == b"y"
        # either end may close first
        for s in (c, b) if first == "client" else (b, c):
            s.close()

    one("client")
    one("server")
    before = counts(node)
    for i in range(100):
        one("client" if i % 2 else "server")
    fds, deleted = counts(node)
    assert fds <= before[0] + 2, f"{fds - before[0]} descriptors more after 100 connections"
    assert deleted <= before[1], f"{deleted} mappings of removed inboxes"
    ls.close()


RECEIVERS = """
while True:
    n = int(sys.stdin.readline())
    if not n:
        break
    socks = [tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE) for _ in range(n)]
    print(" ".join(str(s.port) for s in socks), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print("closed", flush=True)
"""


def test_rdm_destinations_that_come_and_go_leave_no_descriptor_or_mapping(node: str) -> None:
    """200 receivers in another process, a few at a time: the sender's lanes into those
    that closed are dropped when the cache sweeps, so what it keeps stays bounded."""
    a = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    child = Child(node, RECEIVERS)
    try:
        before = counts(node)
        for _ in range(20):
            child.send("10")
            ports = [int(p) for p in child.line().split()]
            for port in ports:
                for _ in range(2):  # the second send takes the cached route
                    a.sendto(b"hi", (TIPC_ADDR_ID, 0, port, 0))
            child.send("")
            child.expect("closed")
        fds, deleted = counts(node)
        # at most one sweep's worth (SWEEP_MIN) is cached at any time, not all 200
        assert fds - before[0] <= SWEEP_MIN + 10
        assert deleted - before[1] <= SWEEP_MIN + 10
        assert len(a._client._dest) <= SWEEP_MIN + 10
        child.send("0")
        child.finish()
    finally:
        child.close()
        a.close()


def test_routes_to_a_closed_socket_are_dropped_with_its_lane(node: str) -> None:
    """Two senders in one process with a cached route to one receiver that closes: the
    first to notice drops the lane (and unmaps it); the other's route must not be used."""
    a1 = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    a2 = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    child = Child(node, RECEIVERS)
    try:
        child.send("1")
        port = int(child.line())
        for s in (a1, a2):
            for _ in range(2):
                s.sendto(b"hi", (TIPC_ADDR_ID, 0, port, 0))
        child.send("")
        child.expect("closed")
        for s in (a1, a2, a1, a2):  # dest-droppable: dropped, as the kernel does
            assert s.sendto(b"hi", (TIPC_ADDR_ID, 0, port, 0)) == 2
        assert port not in a1._client._dest
        child.send("0")
        child.finish()
    finally:
        child.close()
        a1.close()
        a2.close()
