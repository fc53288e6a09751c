"""Garbage written into a live node's shared memory costs the writer, never the node.

Every process attached to a node can write its whole segment and every inbox it opens; a
buggy or hostile one can write anything. For each region, one at a time, random bytes go
into random places of a live node; then the supervisor and the name-table worker must still
be up (the worker at most restarted once, not crash-looping), and applications that did not
scribble keep working: a new process binds, sends and receives, and so does an old pair.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from helpers import Child

import tipcshm
from tipcshm import rundir
from tipcshm.shm import layout
from tipcshm.shm.lane import HEADER_BYTES as INBOX_HEADER
from tipcshm.shm.lane import SLOT_BYTES, Inbox
from tipcshm.shm.layout import NodeSegment, inbox_name, nametable_inbox_name

SEGMENT_REGIONS = {
    "header": (0, layout.HEADER_BYTES),
    "process table": (layout.PROC_TABLE, layout.SOCK_TABLE),
    "socket table": (layout.SOCK_TABLE, layout.WORKER_TABLE),
    "replica control": (layout.REPLICA, layout.REPLICA_BUF0),
    "replica buffers": (layout.REPLICA_BUF0, layout.SEGMENT_BYTES),
}
INBOX_PARTS = ("inbox header", "inbox slots", "inbox data")
ROUND_TRIP_CODE = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
s.bind((tipcshm.TIPC_ADDR_NAME, 5100, 2, 0))
c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
c.settimeout(5)
s.settimeout(5)
c.sendto(b"still here", (tipcshm.TIPC_ADDR_NAME, 5100, 2, 0))
print(s.recv(100).decode())
"""


def scribble(buf: memoryview, lo: int, hi: int, rng: random.Random, chunks: int = 16) -> None:
    for _ in range(chunks):
        size = rng.choice((1, 4, 8, 16, 64, 256, 4096))
        off = rng.randrange(lo, max(lo + 1, hi - size))
        end = min(hi, off + size)
        buf[off:end] = rng.randbytes(end - off)


def inbox_range(ib: Inbox, part: str) -> tuple[int, int]:
    data_off = ib._data_off
    if part == "inbox header":
        return 0, INBOX_HEADER
    if part == "inbox slots":
        return INBOX_HEADER, INBOX_HEADER + ib.lanes * SLOT_BYTES
    return data_off, data_off + min(ib.lanes * ib.lane_bytes, 1 << 20)


def round_trip_in_a_new_process(node: str, timeout: float = 15.0) -> None:
    """A new application must work again soon (the supervisor repairs within a beat)."""
    deadline = time.monotonic() + timeout
    while True:
        child = Child(node, ROUND_TRIP_CODE)
        try:
            child.expect("still here")
            child.finish()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        finally:
            child.close()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    "region",
    [
        *SEGMENT_REGIONS,
        *(f"name-table {p}" for p in INBOX_PARTS),
        *(f"app {p}" for p in INBOX_PARTS),
    ],
)
def test_garbage_in_a_region_does_not_take_the_node_down(node: str, region: str, seed: int) -> None:
    import psutil

    rng = random.Random(f"{region}/{seed}")
    record = rundir.read_record(node)
    assert record is not None
    sup = psutil.Process(record[0])

    def worker_pids() -> set[int]:
        return {c.pid for c in sup.children() if c.status() != psutil.STATUS_ZOMBIE}

    seen = worker_pids()
    old = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    old.bind((tipcshm.TIPC_ADDR_NAME, 5000, 1, 0))
    victim = tipcshm.socket(
        tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node
    )  # the scribbled application's own socket
    sender = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    sender.sendto(b"warm-up", (tipcshm.TIPC_ADDR_NAME, 5000, 1, 0))
    assert old.recv(100) == b"warm-up"
    try:
        if region in SEGMENT_REGIONS:
            seg = NodeSegment.attach(node)
            try:
                scribble(seg.mv, *SEGMENT_REGIONS[region], rng)
            finally:
                seg.close()
        else:
            owner, part = region.split(" ", 1)
            name = nametable_inbox_name(node) if owner == "name-table" else None
            name = name or inbox_name(node, victim.port)
            ib = Inbox.attach(name)
            try:
                mm = memoryview(ib._mm)  # type: ignore[arg-type]
                scribble(mm, *inbox_range(ib, part), rng)
                mm.release()
            finally:
                ib.detach()
        round_trip_in_a_new_process(node)
        seen |= worker_pids()
        old.settimeout(5)
        sender.sendto(b"old pair", (tipcshm.TIPC_ADDR_NAME, 5000, 1, 0))
        assert old.recv(100) == b"old pair"
        assert sup.is_running() and sup.status() != psutil.STATUS_ZOMBIE
        now = worker_pids()
        assert now, "no name-table worker runs"
        seen |= now
        assert len(seen) <= 2, f"the name-table worker crash-looped: pids {sorted(seen)}"
    finally:
        for s in (old, victim, sender):
            s.close()
    assert os.path.exists(f"/dev/shm/tipcshm.{node}")
