"""Bearer workers feed other nodes' bindings to the name-table worker (tipcshm.shm.names_feed).

The tests play the bearer worker: this process claims a lane in the node's name-table
inbox and is named in the worker table as bearer k's worker (slot 1 + k), as the
supervisor names a real bearer worker. What the name-table worker accepts shows in the
replica (client lookups) and in topology events; what it refuses costs ``bad_requests``.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tipcshm
from tipcshm import proc
from tipcshm.addresses import ServiceRange
from tipcshm.client import get_client
from tipcshm.constants import TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE
from tipcshm.shm import names_feed
from tipcshm.shm.lane import Inbox, Producer
from tipcshm.shm.layout import (
    MAX_BEARERS,
    NodeSegment,
    WorkerKind,
    bearer_inbox_name,
    nametable_inbox_name,
)
from tipcshm.shm.names_feed import NameUpdate

PEER = 0x0A0B0C0D
PEER2 = 0x01020304
SERVICE = 4242


def _wait(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class FakeBearer:
    """This process as bearer ``bearer``'s worker: named in the worker table, with a lane
    into the name-table worker's inbox."""

    def __init__(self, node: str, bearer: int, *, register: bool = True) -> None:
        self.node = node
        self.bearer = bearer
        self.seg = NodeSegment.attach(node)
        if register:
            self.seg.set_worker(
                1 + bearer, WorkerKind.BEARER, f"udp:test{bearer}", bearer_inbox_name(node, bearer)
            )
            self.seg.set_worker_spawned(1 + bearer, *proc.self_token())
        self.inbox = Inbox.attach(
            nametable_inbox_name(node), trust=self.seg.trust, tag=self.seg.tag
        )
        self.producer: Producer = self.inbox.producer(overflow=False)

    @property
    def bad(self) -> int:
        return self.seg.counters()["bad_requests"]

    def send(self, frame: bytes) -> None:
        assert self.producer.write(frame)

    def update(self, op: int, **fields: int) -> None:
        fields.setdefault("bearer", self.bearer)
        self.send(names_feed.encode(NameUpdate(op, **fields)))

    def publish(self, type: int, lower: int, upper: int, node: int = PEER, **kw: int) -> None:
        kw.setdefault("scope", TIPC_CLUSTER_SCOPE)
        kw.setdefault("port", 77)
        kw.setdefault("key", 1)
        self.update(names_feed.PUBLISH, type=type, lower=lower, upper=upper, node=node, **kw)

    def withdraw(self, type: int, lower: int, upper: int, node: int = PEER, key: int = 1) -> None:
        self.update(names_feed.WITHDRAW, type=type, lower=lower, upper=upper, node=node, key=key)

    def refused(self, before: int, n: int = 1) -> None:
        """Wait until ``n`` more records were refused than ``before``."""
        _wait(lambda: self.bad >= before + n, f"{n} refused name updates")
        assert self.bad == before + n

    def close(self) -> None:
        self.inbox.detach()
        self.seg.close()


@pytest.fixture
def bearer(node: str) -> Iterator[FakeBearer]:
    b = FakeBearer(node, 0)
    yield b
    b.close()


def _lookup(node: str, type: int, instance: int) -> tuple[int, int] | None:
    return get_client(node).table().lookup_anycast(type, instance)


def _barrier(b: FakeBearer) -> None:
    """Wait until everything ``b`` wrote before was applied: a marker binding on another
    service appears (records of one lane are applied in order), then goes again."""
    b.publish(9999, 1, 1, node=PEER2, key=424242)
    _wait(lambda: _lookup(b.node, 9999, 1) is not None, "the marker binding")
    b.withdraw(9999, 1, 1, node=PEER2, key=424242)
    _wait(lambda: _lookup(b.node, 9999, 1) is None, "the marker withdrawal")


def test_remote_publish_and_withdraw(node: str, bearer: FakeBearer) -> None:
    before = bearer.bad
    bearer.publish(SERVICE, 10, 20, port=77)
    assert _wait(lambda: _lookup(node, SERVICE, 15), "the remote binding") == (PEER, 77)
    table = get_client(node).table()
    assert table.lookup_anycast(SERVICE, 9) is None
    assert table.lookup_mcast_nodes(SERVICE, 0, 100) == {PEER}
    assert table.lookup_mcast_sockets(SERVICE, 0, 100, exact_scope=False) == []
    bearer.withdraw(SERVICE, 10, 20)
    _wait(lambda: _lookup(node, SERVICE, 15) is None, "the withdrawal")
    assert bearer.bad == before


def test_local_binding_preferred_over_remote(node: str, bearer: FakeBearer) -> None:
    bearer.publish(SERVICE, 0, 100, port=77)
    _wait(lambda: _lookup(node, SERVICE, 5), "the remote binding")
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        s.bind((tipcshm.TIPC_ADDR_NAMESEQ, SERVICE, 0, 100))
        own = get_client(node).addr
        for _ in range(3):
            assert _lookup(node, SERVICE, 5) == (own, s.getsockname()[2])
    _wait(lambda: _lookup(node, SERVICE, 5) == (PEER, 77), "the remote binding again")


@pytest.mark.parametrize(
    "frame, why",
    [
        (b"", "empty"),
        (b"\x01" * 35, "short"),
        (b"\x01" * 37, "long"),
        (struct.pack("<9I", 9, 0, 1, 1, 1, 2, PEER, 1, 1), "unknown op"),
        (struct.pack("<9I", 1, MAX_BEARERS, SERVICE, 1, 1, 2, PEER, 1, 1), "bearer range"),
        (struct.pack("<9I", 1, 1, SERVICE, 1, 1, 2, PEER, 1, 1), "another bearer's record"),
        (struct.pack("<9I", 1, 0, SERVICE, 5, 4, 2, PEER, 1, 1), "lower > upper"),
        (struct.pack("<9I", 1, 0, SERVICE, 1, 1, 7, PEER, 1, 1), "bad scope"),
        (struct.pack("<9I", 1, 0, SERVICE, 1, 1, 2, 0, 1, 1), "node 0"),
        (struct.pack("<9I", 1, 0, SERVICE, 1, 1, 3, PEER, 1, 1), "node scope, remote"),
        (struct.pack("<9I", 2, 0, SERVICE, 1, 1, 2, PEER, 1, 1), "withdraw unknown"),
        (struct.pack("<9I", 3, 0, 0, 0, 0, 0, 0, 0, 0), "purge node 0"),
    ],
)
def test_bad_records_refused_and_counted(
    node: str, bearer: FakeBearer, frame: bytes, why: str
) -> None:
    before = bearer.bad
    bearer.send(frame)
    bearer.refused(before)
    _barrier(bearer)
    assert bearer.bad == before + 1, why
    assert _lookup(node, SERVICE, 1) is None


def test_own_node_records_refused(node: str, bearer: FakeBearer) -> None:
    own = get_client(node).addr
    before = bearer.bad
    # a cluster-scope binding of this node: only its sockets bind those
    bearer.publish(SERVICE, 1, 1, node=own)
    # node scope: only link-state bindings {2, peer, peer} of this node
    bearer.publish(SERVICE, 1, 1, node=own, scope=TIPC_NODE_SCOPE)
    bearer.publish(2, 5, 6, node=own, scope=TIPC_NODE_SCOPE)  # not one peer
    bearer.publish(2, own, own, node=own, scope=TIPC_NODE_SCOPE)  # itself
    bearer.update(names_feed.PURGE_NODE, node=own)
    bearer.refused(before, 5)
    assert _lookup(node, SERVICE, 1) is None
    assert _lookup(node, 2, 5) is None


def test_records_from_the_wrong_process_refused(node: str, bearer: FakeBearer) -> None:
    """The slot names this process; a record written by another process (a child with its
    own lane, claiming bearer 0) is refused, as is one from a stale start time."""
    before = bearer.bad
    code = (
        "import sys\n"
        "from tipcshm.shm.lane import Inbox\n"
        "from tipcshm.shm.layout import NodeSegment, nametable_inbox_name\n"
        "from tipcshm.shm import names_feed\n"
        "seg = NodeSegment.attach(sys.argv[1])\n"
        "ib = Inbox.attach(nametable_inbox_name(sys.argv[1]), trust=seg.trust, tag=seg.tag)\n"
        f"u = names_feed.NameUpdate(1, 0, {SERVICE}, 1, 1, 2, {PEER}, 5, 1)\n"
        "assert ib.producer(overflow=False).write(names_feed.encode(u))\n"
        "ib.detach(); seg.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, node], check=True, timeout=60)
    bearer.refused(before)
    pid, start = proc.self_token()
    bearer.seg.set_worker_spawned(1, pid, start + 1)  # a previous process of this pid
    bearer.publish(SERVICE, 1, 1)
    bearer.refused(before + 1)
    bearer.seg.set_worker_spawned(1, pid, start)
    _barrier(bearer)
    assert _lookup(node, SERVICE, 1) is None


def test_unregistered_bearer_refused(node: str) -> None:
    b = FakeBearer(node, 3, register=False)
    try:
        before = b.bad
        b.publish(SERVICE, 1, 1)
        b.refused(before)
    finally:
        b.close()


def test_purge_node_and_reset_bearer(node: str, bearer: FakeBearer) -> None:
    bearer.publish(SERVICE, 1, 1, node=PEER, port=1)
    bearer.publish(SERVICE, 2, 2, node=PEER, port=2)
    bearer.publish(SERVICE, 3, 3, node=PEER2, port=3)
    _wait(lambda: _lookup(node, SERVICE, 3), "the bindings")
    bearer.update(names_feed.PURGE_NODE, node=PEER)
    _wait(lambda: _lookup(node, SERVICE, 1) is None, "the purge")
    assert _lookup(node, SERVICE, 2) is None
    assert _lookup(node, SERVICE, 3) == (PEER2, 3)
    bearer.update(names_feed.RESET_BEARER)
    _wait(lambda: _lookup(node, SERVICE, 3) is None, "the reset")


def test_two_bearers_feeding_one_binding(node: str) -> None:
    """Two bearers with links to one peer both feed its binding: it stays until the last
    of them withdraws it (or resets)."""
    b0, b1 = FakeBearer(node, 0), FakeBearer(node, 1)
    try:
        before = b0.bad
        b0.publish(SERVICE, 7, 7)
        b1.publish(SERVICE, 7, 7)
        _barrier(b1)
        _wait(lambda: _lookup(node, SERVICE, 7), "the binding")
        b0.update(names_feed.RESET_BEARER)
        _barrier(b0)
        assert _lookup(node, SERVICE, 7) == (PEER, 77)
        b1.withdraw(SERVICE, 7, 7)
        _wait(lambda: _lookup(node, SERVICE, 7) is None, "the last withdrawal")
        assert b0.bad == before
    finally:
        b0.close()
        b1.close()


def test_topology_events_for_remote_bindings(node: str, bearer: FakeBearer) -> None:
    with tipcshm.subscribe(ServiceRange(SERVICE, 0, 100), ports=True, node=node) as sub:
        bearer.publish(SERVICE, 10, 20, port=77)
        ev = sub.get(10)
        assert ev is not None and ev.kind == "published"
        assert (ev.socket.node, ev.socket.port) == (PEER, 77)
        assert (ev.service.lower, ev.service.upper) == (10, 20)
        bearer.withdraw(SERVICE, 10, 20)
        ev = sub.get(10)
        assert ev is not None and ev.kind == "withdrawn"
        assert (ev.socket.node, ev.socket.port) == (PEER, 77)


def test_node_and_link_up_down_events(node: str, bearer: FakeBearer) -> None:
    """{0, node, node} (node tracking) and {2, peer, peer} (link tracking), as the kernel's
    topology server reports them (tipc-wire section 7)."""
    own = get_client(node).addr
    with (
        tipcshm.subscribe(ServiceRange(0, 0, 0xFFFFFFFF), ports=True, node=node) as nodes,
        tipcshm.subscribe(ServiceRange(2, 0, 0xFFFFFFFF), ports=True, node=node) as links,
    ):
        ev = nodes.get(10)  # the initial report: this node
        assert ev is not None and ev.kind == "published" and ev.service.lower == own
        # the peer's node binding arrives by name distribution; the link is the bearer's
        bearer.publish(0, PEER, PEER, node=PEER, port=0, key=PEER)
        bearer.publish(2, PEER, PEER, node=own, scope=TIPC_NODE_SCOPE, port=0, key=5)
        ev = nodes.get(10)
        assert ev is not None and ev.kind == "published"
        assert (ev.service.lower, ev.socket.node) == (PEER, PEER)
        ev = links.get(10)
        assert ev is not None and ev.kind == "published"
        assert (ev.service.lower, ev.socket.node) == (PEER, own)
        bearer.withdraw(2, PEER, PEER, node=own, key=5)
        bearer.update(names_feed.PURGE_NODE, node=PEER)
        ev = links.get(10)
        assert ev is not None and ev.kind == "withdrawn" and ev.service.lower == PEER
        ev = nodes.get(10)
        assert ev is not None and ev.kind == "withdrawn" and ev.service.lower == PEER


def test_fed_bindings_survive_a_worker_restart(node: str) -> None:
    """The replica keeps which bearers fed each binding: after a name-table worker
    restart the bindings are still there, and a bearer's reset removes only its own."""
    b0, b1 = FakeBearer(node, 0), FakeBearer(node, 1)
    try:
        b0.publish(SERVICE, 1, 1, port=1)
        b0.publish(SERVICE, 2, 2, port=2)
        b1.publish(SERVICE, 2, 2, port=2)
        _barrier(b0)
        _barrier(b1)
        seg = b0.seg
        pid, _, restarts = seg.nametable_worker
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: seg.nametable_worker[2] == restarts + 1, "a restart")
        _wait(lambda: seg.nametable_worker[0] not in (0, pid), "the successor")
        assert _lookup(node, SERVICE, 1) == (PEER, 1)
        assert _lookup(node, SERVICE, 2) == (PEER, 2)
        b0.update(names_feed.RESET_BEARER)
        _wait(lambda: _lookup(node, SERVICE, 1) is None, "bearer 0's reset")
        assert _lookup(node, SERVICE, 2) == (PEER, 2)  # bearer 1 fed it too
    finally:
        b0.close()
        b1.close()


@pytest.mark.slow
def test_100k_remote_bindings(node: str, bearer: FakeBearer) -> None:
    """A peer with 100,000 bindings: all applied, looked up in place, purged at once."""
    n = 100_000
    for i in range(n):
        rec = names_feed.encode(
            NameUpdate(names_feed.PUBLISH, 0, SERVICE + i % 5, i, i, 2, PEER, i + 1, i)
        )
        while not bearer.producer.write(rec):
            bearer.producer.wait_space(len(rec) + 8, 1.0)
    client = get_client(node)
    _wait(lambda: len(client.table()) >= n + 2, "100,000 bindings", timeout=300)
    table = client.table()
    for i in range(0, n, 997):
        assert table.lookup_anycast(SERVICE + i % 5, i) == (PEER, i + 1)
    assert table.lookup_mcast_nodes(SERVICE, 0, 0xFFFFFFFF) == {PEER}
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 5, 0))  # a local bind among them
        assert table.lookup_anycast(SERVICE, 5) == (client.addr, s.getsockname()[2])
    bearer.update(names_feed.PURGE_NODE, node=PEER)
    _wait(lambda: len(client.table()) < 10, "the purge", timeout=120)
