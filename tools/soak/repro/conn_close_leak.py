"""Closed connections leave a descriptor and a mapping behind (found by the soak).

Opens and closes 100 SEQPACKET connections in one process and prints its descriptors and
its mappings of node segments that no longer exist (``(deleted)``): both grow by about
one per end and connection, because the cached lane into the peer's inbox is kept after
the connection closes.
"""

import os
import threading

import tipcshm
from tipcshm.testing import running_node


def counts() -> tuple[int, int, int]:
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if "/dev/shm/tipcshm." in line:
                maps.add(line.split(None, 5)[-1].strip())
    deleted = sum(m.endswith("(deleted)") for m in maps)
    return len(os.listdir("/proc/self/fd")), len(maps), deleted


with running_node() as node:
    ls = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node)
    ls.bind((tipcshm.TIPC_ADDR_NAME, 7000, 1, 0))
    ls.listen(8)

    def one() -> None:
        c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node)
        t = threading.Thread(target=c.connect, args=((tipcshm.TIPC_ADDR_NAME, 7000, 1, 0),))
        t.start()
        b, _ = ls.accept()
        t.join()
        c.send(b"x")
        b.recv(10)
        b.send(b"y")
        c.recv(10)
        c.close()
        b.close()

    one()
    print("after 1 connection (fds, shm mappings, of removed segments):", counts())
    for _ in range(100):
        one()
    print("after 101 connections (fds, shm mappings, of removed segments):", counts())
    ls.close()
