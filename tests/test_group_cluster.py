"""Communication groups across two tipcshm nodes linked over UDP on loopback, end to end
with the real client (tipcshm.Group): members on both nodes, every kind of send both
ways, per-sender order, membership events, and leaves for a killed member and a stopped
node."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
from bearer_helpers import up_peers, wait_for

import tipcshm
from tipcshm.errors import TimedOut
from tipcshm.shm.layout import NodeSegment
from tipcshm.testing import free_udp_port, start_node, stop_node, unique_node_name

pytestmark = pytest.mark.timeout(90)

GTYPE = 4800
CLUSTER = tipcshm.TIPC_CLUSTER_SCOPE


_SEGS: list[NodeSegment] = []


def _diag() -> list[dict[str, int]]:
    keys = ("from_lanes", "bad_from_lanes", "to_lanes", "dropped", "rejected", "held")
    return [{k: v for k, v in seg.bearer_counters(0).items() if k in keys} for seg in _SEGS]


class Nodes:
    def __init__(self, a: str, b: str, sa: NodeSegment, sb: NodeSegment) -> None:
        self.a, self.b, self.sa, self.sb = a, b, sa, sb
        self.b_stopped = False
        self.a_stopped = False


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    a, b = unique_node_name("ga"), unique_node_name("gb")
    pa, pb = free_udp_port(), free_udp_port()
    start_node(a, bearers=[f"udp:127.0.0.1:{pa}"], remotes=[f"127.0.0.1:{pb}"])
    try:
        start_node(b, bearers=[f"udp:127.0.0.1:{pb}"], remotes=[f"127.0.0.1:{pa}"])
        try:
            sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
            try:
                wait_for(
                    lambda: up_peers(sa) == {sb.addr} and up_peers(sb) == {sa.addr}, 10, "links"
                )
                n = Nodes(a, b, sa, sb)
                _SEGS[:] = [sa, sb]
                yield n
            finally:
                sa.close()
                sb.close()
        finally:
            stop_node(b)
    finally:
        stop_node(a)


def me(g: tipcshm.Group) -> tuple[int, int]:
    return g.address


def recv(g: tipcshm.Group, timeout: float = 10.0) -> tipcshm.GroupMessage:
    return g.recv(timeout)


def events_until(g: tipcshm.Group, want: set[tuple[str, int, int]], timeout: float = 10.0):
    """Member events of ``g`` until every (event, node, port) of ``want`` was seen; the
    events in the order they came."""
    seen: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + timeout
    while not want <= set(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"events seen {seen}, wanted {want}")
        try:
            m = recv(g, left)
        except TimedOut:
            raise AssertionError(
                f"events seen {seen}, wanted {want}; members {g.socket.group_members()}, "
                f"{g.socket.statistics()}; bearers {_diag()}"
            ) from None
        assert m.event is not None, f"data before the events: {m}"
        seen.append((m.event, m.node, m.port))
    return seen


def wait_members(g: tipcshm.Group, want: set[tuple[int, int]], timeout: float = 10.0) -> None:
    wait_for(lambda: {(m.node, m.port) for m in g.members()} == want, timeout, "members")


def test_members_on_both_nodes_exchange_every_kind_of_message(nodes: Nodes) -> None:
    with (
        tipcshm.Group(GTYPE, 1, scope=CLUSTER, events=True, node=nodes.a) as ga,
        tipcshm.Group(GTYPE, 2, scope=CLUSTER, events=True, node=nodes.b) as gb,
    ):
        ida, idb = me(ga), me(gb)
        assert ida[0] == nodes.sa.addr and idb[0] == nodes.sb.addr
        events_until(ga, {("join", *idb)})
        events_until(gb, {("join", *ida)})
        wait_members(ga, {idb})
        wait_members(gb, {ida})

        ga.broadcast(b"bcast from A")
        m = recv(gb)
        assert (m.data, m.node, m.port, m.instance, m.event) == (b"bcast from A", *ida, 1, None)
        gb.broadcast(b"bcast from B")
        m = recv(ga)
        assert (m.data, m.node, m.port, m.instance) == (b"bcast from B", *idb, 2)

        ga.anycast(2, b"anycast to 2")
        m = recv(gb)
        assert (m.data, m.node, m.port) == (b"anycast to 2", *ida)
        gb.anycast(1, b"anycast to 1")
        assert recv(ga).data == b"anycast to 1"

        ga.unicast(idb, b"unicast A->B")
        m = recv(gb)
        assert (m.data, m.node, m.port) == (b"unicast A->B", *ida)
        gb.unicast(ida, b"unicast B->A")
        assert recv(ga).data == b"unicast B->A"

        ga.multicast(2, b"mcast to 2")
        assert recv(gb).data == b"mcast to 2"
        gb.multicast(1, b"mcast to 1")
        assert recv(ga).data == b"mcast to 1"


def test_mixed_broadcasts_and_unicasts_keep_each_senders_order(nodes: Nodes) -> None:
    with (
        tipcshm.Group(GTYPE, 1, scope=CLUSTER, events=True, node=nodes.a) as ga,
        tipcshm.Group(GTYPE, 2, scope=CLUSTER, events=True, node=nodes.b) as gb,
        tipcshm.Group(GTYPE, 3, scope=CLUSTER, events=True, node=nodes.b) as gb2,
    ):
        ida, idb, idb2 = me(ga), me(gb), me(gb2)
        events_until(ga, {("join", *idb), ("join", *idb2)})
        events_until(gb, {("join", *ida), ("join", *idb2)})
        events_until(gb2, {("join", *ida), ("join", *idb)})
        n = 600  # past the idle and active windows: flow control has to work
        payloads = [b"%d:" % i + b"p" * (i % 1500) for i in range(n)]
        want_b = [p for i, p in enumerate(payloads) if i % 4 != 3]
        want_b2 = [p for i, p in enumerate(payloads) if i % 4 in (0, 3)]
        got: dict[str, list[bytes]] = {"b": [], "b2": []}

        def reader(g: tipcshm.Group, key: str, count: int) -> None:
            # the receivers read while A sends: A blocks when their windows are used up
            for _ in range(count):
                got[key].append(recv(g, 20).data)

        threads = [
            threading.Thread(target=reader, args=(gb, "b", len(want_b))),
            threading.Thread(target=reader, args=(gb2, "b2", len(want_b2))),
        ]
        for t in threads:
            t.start()
        for i, data in enumerate(payloads):
            kind = i % 4
            if kind == 0:
                ga.broadcast(data)
            elif kind == 1:
                ga.unicast(idb, data)
            elif kind == 2:
                ga.multicast(2, data)
            else:
                ga.anycast(3, data)
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        assert got["b"] == want_b
        assert got["b2"] == want_b2


_MEMBER = textwrap.dedent(
    """
    import sys, time
    import tipcshm
    g = tipcshm.Group({gtype}, {inst}, scope=tipcshm.TIPC_CLUSTER_SCOPE, events=True,
                      node={node!r})
    g.__enter__()
    name = tuple(g.socket.getsockname())
    g.broadcast(b"hello from the victim")
    print(int(name[1]), int(name[2]), flush=True)
    time.sleep(60)
    """
)


def test_membership_events_agree_and_a_killed_member_leaves_within_tolerance(
    nodes: Nodes,
) -> None:
    with (
        tipcshm.Group(GTYPE, 1, scope=CLUSTER, events=True, node=nodes.a) as ga,
        tipcshm.Group(GTYPE, 2, scope=CLUSTER, events=True, node=nodes.b) as gb,
    ):
        ida, idb = me(ga), me(gb)
        events_until(ga, {("join", *idb)})
        events_until(gb, {("join", *ida)})
        code = _MEMBER.format(gtype=GTYPE, inst=9, node=nodes.a)
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
        )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.strip(), "the member process did not start"
            node_v, port_v = map(int, line.split())
            victim = (node_v, port_v)
            for g in (ga, gb):  # the join, then its broadcast, on both nodes
                assert events_until(g, {("join", *victim)}) == [("join", *victim)]
                m = recv(g)
                assert (m.data, m.node, m.port, m.instance) == (
                    b"hello from the victim",
                    *victim,
                    9,
                )
            assert {(m.node, m.port, m.instance) for m in ga.members()} == {(*idb, 2), (*victim, 9)}
            assert {(m.node, m.port, m.instance) for m in gb.members()} == {(*ida, 1), (*victim, 9)}
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            tolerance = 1.5  # the nodes' default link tolerance (seconds)
            for g in (gb, ga):
                assert events_until(g, {("leave", *victim)}, timeout=10) == [("leave", *victim)]
            assert time.monotonic() - t0 < tolerance + 1.0
            wait_members(ga, {idb})
            wait_members(gb, {ida})
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_stopping_a_node_gives_leave_events_for_its_members(nodes: Nodes) -> None:
    gb = tipcshm.Group(GTYPE, 2, scope=CLUSTER, events=True, node=nodes.b)
    with gb:
        ga1 = tipcshm.Group(GTYPE, 1, scope=CLUSTER, events=True, node=nodes.a)
        ga2 = tipcshm.Group(GTYPE, 3, scope=CLUSTER, events=True, node=nodes.a)
        try:
            ids = {me(ga1), me(ga2)}
            events_until(gb, {("join", *i) for i in ids})
            stop_node(nodes.a)  # the fixture's stop_node of a stopped node is harmless
            seen = events_until(gb, {("leave", *i) for i in ids}, timeout=15)
            assert sorted(seen) == sorted(("leave", *i) for i in ids)
            wait_members(gb, set())
        finally:
            for g in (ga1, ga2):
                with contextlib.suppress(OSError):
                    g.close()
