"""Name distribution through a bearer worker: the records it feeds the name-table worker.

Node A runs a real bearer worker; node B's bearer worker runs in this process (the same
class, driven through its loop) with its names-feed output captured, so the records are
checked as the name-table worker will receive them.
"""

from __future__ import annotations

import time

import pytest

import tipcshm
from tipcshm.client import get_client
from tipcshm.constants import TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE
from tipcshm.shm import names_feed
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import NodeSegment, bearer_inbox_name
from tipcshm.testing import free_udp_port, start_node, stop_node, unique_node_name
from tipcshm.workers.bearer import BearerWorker
from tipcshm.workers.supervisor import BearerSpec, NodeConfig

pytestmark = pytest.mark.timeout(60)


class _Captured(BearerWorker):
    records: list[names_feed.NameUpdate]

    def _feed_record(self, update: names_feed.NameUpdate) -> None:
        self.records.append(update)


def _drive(w: BearerWorker, cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        w.loop.run_once(0.01)


def test_peer_bindings_and_link_state_become_feed_records() -> None:
    a, b = unique_node_name("na"), unique_node_name("nb")
    pa, pb = free_udp_port(), free_udp_port()
    start_node(a, bearers=[f"udp:127.0.0.1:{pa}"], remotes=[f"127.0.0.1:{pb}"])
    try:
        start_node(b)
        try:
            _run(a, b, pa, pb)
        finally:
            stop_node(b)
    finally:
        stop_node(a)


def _run(a: str, b: str, pa: int, pb: int) -> None:
    sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
    spec = BearerSpec("127.0.0.1", pb, (("127.0.0.1", pa),))
    cfg = NodeConfig(b, sb.identity, bearers=[spec])
    inbox = Inbox.create(bearer_inbox_name(b, 0), lanes=4, lane_bytes=256 << 10, tag=sb.tag)
    w = _Captured(sb, 0, spec, cfg, inbox, get_client(b))
    w.records = []
    try:
        w.loop.beat()
        w.start()
        assert w.records[0] == names_feed.NameUpdate(names_feed.RESET_BEARER, 0)
        _drive(w, lambda: sa.addr in w.stack.links_up(), 5, "link up")
        link = [r for r in w.records if r.op == names_feed.PUBLISH and r.type == 2]
        assert link == [
            names_feed.NameUpdate(
                names_feed.PUBLISH, 0, 2, sa.addr, sa.addr, TIPC_NODE_SCOPE, sb.addr, 0, 0
            )
        ]
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=a) as s:
            s.bind((tipcshm.TIPC_ADDR_NAMESEQ, 5000, 10, 20, TIPC_CLUSTER_SCOPE))
            port = tuple(s.getsockname())[2]

            def published() -> bool:
                return any(r.op == names_feed.PUBLISH and r.type == 5000 for r in w.records)

            _drive(w, published, 5, "publication")
            (r,) = [r for r in w.records if r.type == 5000]
            assert (r.lower, r.upper, r.scope, r.node, r.port) == (
                10,
                20,
                TIPC_CLUSTER_SCOPE,
                sa.addr,
                port,
            )
        _drive(
            w,
            lambda: any(r.op == names_feed.WITHDRAW and r.type == 5000 for r in w.records),
            5,
            "withdrawal",
        )
        # the node state binding {0, A, A} came with the bulk
        assert any(r.type == 0 and r.lower == sa.addr and r.node == sa.addr for r in w.records)
    finally:
        w.close()
        inbox.unlink()
        inbox.detach()
        sa.close()
        sb.close()
