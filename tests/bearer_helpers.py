"""Two nodes linked over UDP on loopback, for the bearer tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import psutil

from tipcshm import rundir
from tipcshm.shm.layout import NodeSegment
from tipcshm.testing import free_udp_port, start_node, stop_node, unique_node_name


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def linked_pair() -> Iterator[tuple[str, str, int, int]]:
    """Nodes A and B, each with one bearer on 127.0.0.1 naming the other as remote."""
    a, b = unique_node_name("ba"), unique_node_name("bb")
    pa, pb = free_udp_port(), free_udp_port()
    start_node(a, bearers=[f"udp:127.0.0.1:{pa}"], remotes=[f"127.0.0.1:{pb}"])
    try:
        start_node(b, bearers=[f"udp:127.0.0.1:{pb}"], remotes=[f"127.0.0.1:{pa}"])
        try:
            yield a, b, pa, pb
        finally:
            stop_node(b)
    finally:
        stop_node(a)


def bearer_worker_process(node: str) -> psutil.Process:
    """The bearer worker, found as a child of the supervisor named by the owner-only
    record (never by a pid read from shared memory)."""
    record = rundir.read_record(node)
    assert record is not None
    sup = psutil.Process(record[0])
    for child in sup.children():
        if "tipcshm.workers.bearer" in child.cmdline():
            return child
    raise AssertionError("no bearer worker")


def up_peers(seg: NodeSegment) -> set[int]:
    return {peer for _, peer in seg.link_rows_up()}
