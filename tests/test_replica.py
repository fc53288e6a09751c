"""The name-table replica in shared memory (tipcshm.shm.replica): lookups in place equal
the NameTable's, for tables built by the worker's incremental path, and stay so at scale."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipcshm.core.name_feeds import NameFeeds
from tipcshm.core.nametable import Binding, NameTable, NameTableError
from tipcshm.shm.layout import MAX_BINDINGS, R_SEQ, REPLICA, TYPE_TOKENS, NodeSegment
from tipcshm.shm.replica import Mirror, ReplicaView
from tipcshm.testing import unique_node_name

OWN = 0x1001001
PEERS = (0x2002002, 0x3003003)


@pytest.fixture(scope="module")
def seg() -> Iterator[NodeSegment]:
    name = unique_node_name("replica")
    s = NodeSegment.create(name)
    s.set_identity(b"\x01" * 16, OWN)
    try:
        yield s
    finally:
        s.close()
        NodeSegment.unlink(name)


def _published(seg: NodeSegment, table: NameTable, mirror: Mirror) -> ReplicaView:
    mirror.publish(seg, table.generation, range(TYPE_TOKENS), slots=True)
    return ReplicaView(seg)


# Small values so that ranges overlap, repeat and share types.
_bindings = st.builds(
    lambda t, lo, span, node, port, key, local_scope: Binding(
        t,
        lo,
        lo + span,
        3 if node == OWN and local_scope else 2,
        node,
        port,
        key,
    ),
    st.integers(100, 103),
    st.integers(0, 12),
    st.integers(0, 4),
    st.sampled_from((OWN, *PEERS)),
    st.integers(1, 5),
    st.integers(0, 3),
    st.booleans(),
)
_ops = st.lists(st.tuples(st.booleans(), _bindings), max_size=60)


def _build(ops: list[tuple[bool, Binding]], batch: int) -> tuple[NameTable, Mirror]:
    """Apply inserts (and removals of earlier ones) to a NameTable and, in batches of
    ``batch`` events, to a Mirror: the worker's incremental path."""
    table = NameTable(OWN)
    mirror = Mirror(OWN)
    events: list = []  # type: ignore[type-arg]
    held: list[Binding] = []
    for remove, b in ops:
        try:
            if remove and held:
                victim = held.pop(b.port % len(held))
                events.append(
                    table.remove(victim.type, victim.lower, victim.upper, victim.node, victim.key)
                )
            else:
                events.append(table.insert(b))
                held.append(b)
        except NameTableError:
            continue
        if len(events) >= batch:
            mirror.apply(events, {})
            events = []
    mirror.apply(events, {})
    return table, mirror


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops, batch=st.sampled_from((1, 3, 1000)), data=st.data())
def test_replica_lookups_equal_the_name_table(
    seg: NodeSegment, ops: list[tuple[bool, Binding]], batch: int, data: st.DataObject
) -> None:
    table, mirror = _build(ops, batch)
    assert mirror.n == len(table)
    view = _published(seg, table, mirror)
    try:
        fresh = NameTable.decode(table.encode(), OWN)  # round robin from the start, as the view
        assert view.bindings() == table.bindings()
        assert len(view) == len(table)
        for _ in range(8):
            t = data.draw(st.integers(99, 104))
            lo = data.draw(st.integers(0, 18))
            hi = lo + data.draw(st.integers(0, 6))
            for _ in range(3):  # round robin turns
                assert view.lookup_anycast(t, lo) == fresh.lookup_anycast(t, lo)
            for _ in range(2):
                assert view.lookup_anycast(t, lo, OWN) == fresh.lookup_anycast(
                    t, lo, lookup_node=OWN
                )
            for exact in (False, True):
                assert view.lookup_mcast_sockets(t, lo, hi, exact) == fresh.lookup_mcast_sockets(
                    t, lo, hi, exact_scope=exact
                )
            assert view.lookup_mcast_nodes(t, lo, hi) == fresh.lookup_mcast_nodes(t, lo, hi)
            assert view.overlapping(t, lo, hi) == fresh.overlapping(t, lo, hi)
            # another node as the domain: that node's bindings only, in the first range
            # holding one
            peer = PEERS[0]
            want = [(b.node, b.port) for b in fresh.overlapping(t, lo, lo) if b.node == peer]
            got = view.lookup_anycast(t, lo, peer)
            assert (got is None) == (not want)
            assert got is None or got in want
        # the image read back is the table's, ages included
        got = seg.read_replica()
        assert got is not None
        assert NameTable.decode(got[1], OWN) == table
    finally:
        view.close()


def test_type_tokens_move_only_for_changed_types(seg: NodeSegment) -> None:
    table = NameTable(OWN)
    mirror = Mirror.from_table(table, {})
    mirror.publish(seg, 0, ())
    before = {t: seg.replica_token(t) for t in (100, 101, 5000)}
    seq = seg.u64[(REPLICA + R_SEQ) // 8]
    ev = table.insert(Binding(101, 1, 1, 2, PEERS[0], 7, 1))
    mirror.publish(seg, table.generation, mirror.apply([ev], {}))
    assert seg.u64[(REPLICA + R_SEQ) // 8] == seq + 2
    assert seg.replica_token(101) == before[101] + 1
    assert seg.replica_token(100) == before[100]
    assert seg.replica_token(5000) == before[5000]


def test_origins_survive_in_the_replica(seg: NodeSegment) -> None:
    table = NameTable(OWN)
    feeds = NameFeeds(table, MAX_BINDINGS, 8)
    mirror = Mirror.from_table(table, {})
    events = [
        feeds.publish(0, Binding(200, 1, 1, 2, PEERS[0], 9, 1)),
        feeds.publish(2, Binding(200, 2, 2, 2, PEERS[1], 9, 1)),
        feeds.publish(0, Binding(2, PEERS[0], PEERS[0], 3, OWN, 0, 64)),
    ]
    assert feeds.publish(1, Binding(200, 1, 1, 2, PEERS[0], 9, 1)) is None  # a second bearer
    mirror.apply([e for e in events if e is not None], feeds.origins(), feeds.take_changed())
    mirror.publish(seg, table.generation, (200, 2))
    assert sorted(seg.replica_origins()) == sorted(
        [
            ((200, 1, 1, PEERS[0], 1), 0b11),
            ((200, 2, 2, PEERS[1], 1), 0b100),
            ((2, PEERS[0], PEERS[0], OWN, 64), 0b1),
        ]
    )
    # a restarted worker rebuilds the same masks from the image
    got = seg.read_replica()
    assert got is not None
    again = NameFeeds(NameTable.decode(got[1], OWN), MAX_BINDINGS, 8)
    again.restore(seg.replica_origins())
    assert again.origins() == feeds.origins()
    removed = again.reset_bearer(0)
    assert [r.binding.type for r in removed] == [2]  # {200,1,1} is bearer 1's too


def test_a_writer_killed_mid_write_leaves_the_active_image(seg: NodeSegment) -> None:
    """The writer fills the inactive buffer: garbage there (a write cut short) does not
    reach readers, who keep reading the active one."""
    table = NameTable(OWN)
    table.insert(Binding(300, 1, 5, 2, PEERS[0], 11, 1))
    mirror = Mirror.from_table(table, {})
    mirror.publish(seg, table.generation, (300,))
    view = ReplicaView(seg)
    try:
        inactive = 1 - seg.replica_active()
        for arr in seg.replica_arrays(inactive).values():
            arr[:64] = 0xDEAD
        assert view.lookup_anycast(300, 3) == (PEERS[0], 11)
        # a seq word left odd (killed between its bumps): readers still answer
        seq_i = (REPLICA + R_SEQ) // 8
        seg.u64[seq_i] += 1
        assert view.lookup_anycast(300, 3) == (PEERS[0], 11)
        mirror.publish(seg, table.generation, (300,))  # the next writer repairs it
        assert not seg.u64[seq_i] & 1
        assert view.lookup_anycast(300, 3) == (PEERS[0], 11)
    finally:
        view.close()


def test_garbage_in_the_active_buffer_costs_answers_not_the_reader(seg: NodeSegment) -> None:
    table = NameTable(OWN)
    mirror = Mirror.from_table(table, {})
    mirror.publish(seg, 0, ())
    view = ReplicaView(seg)
    try:
        active = seg.replica_active()
        for arr in seg.replica_arrays(active).values():
            arr[:1000] = (arr[:1000] * 0 + 0x12345678).astype(arr.dtype)
        seg.u32[seg.replica_count_index(active)] = 0xFFFFFFFF  # more than the capacity
        view.lookup_anycast(0x12345678 >> 0, 5)
        view.lookup_mcast_sockets(0, 0, 0xFFFFFFFF)
        view.lookup_mcast_nodes(0, 0, 0xFFFFFFFF)
        view.lookup_anycast(1 << 40, -1)  # out-of-range arguments
    finally:
        view.close()
    mirror.publish(seg, 0, ())


def _bulk(n: int) -> tuple[NameTable, Mirror]:
    table = NameTable(OWN)
    events = [
        table.insert(Binding(1000 + i % 7, i, i, 2, PEERS[i % 2], i + 1, i)) for i in range(n)
    ]
    mirror = Mirror(OWN)
    mirror.apply(events, {})
    return table, mirror


@pytest.mark.slow
def test_100k_bindings_lookups_flat(seg: NodeSegment) -> None:
    """At 100,000 bindings lookups stay within a small factor of 1,000's (no decode, two
    bisects), and a change costs the writer milliseconds, not a re-encode."""
    times = {}
    for n in (1000, 100_000):
        table, mirror = _bulk(n)
        view = _published(seg, table, mirror)
        try:
            for i in range(0, n, max(1, n // 50)):
                assert view.lookup_anycast(1000 + i % 7, i) == (PEERS[i % 2], i + 1)
            t0 = time.perf_counter()
            for i in range(2000):
                view.lookup_anycast(1000 + i % 7, (i * 7919) % n)
            times[n] = (time.perf_counter() - t0) / 2000
        finally:
            view.close()
        if n == 100_000:
            t0 = time.perf_counter()
            ev = table.insert(Binding(999, 5, 5, 2, PEERS[0], 1, 1))
            mirror.publish(seg, table.generation, mirror.apply([ev], {}))
            spent = time.perf_counter() - t0
            assert spent < 0.5, f"one change at 100k bindings took {spent * 1e3:.1f} ms"
            got = seg.read_replica()
            assert got is not None and NameTable.decode(got[1], OWN) == table
    print(f"lookup: {times[1000] * 1e6:.1f} us at 1k, {times[100_000] * 1e6:.1f} us at 100k")
    assert times[100_000] < 4 * times[1000] + 5e-6


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_replica_lookups_across_sparse_index_blocks(
    seg: NodeSegment, seed: int, data: st.DataObject
) -> None:
    """Tables of several index blocks (256 records each), with wide overlapping ranges."""
    rng = random.Random(seed)
    table = NameTable(OWN)
    events = []
    for i in range(rng.randrange(300, 1500)):
        lo = rng.randrange(0, 3000)
        b = Binding(
            rng.randrange(100, 103),
            lo,
            lo + rng.choice((0, 0, 5, 400)),
            2,
            rng.choice((OWN, *PEERS)),
            i + 1,
            i,
        )
        events.append(table.insert(b))
    mirror = Mirror(OWN)
    mirror.apply(events, {})
    view = _published(seg, table, mirror)
    try:
        fresh = NameTable.decode(table.encode(), OWN)
        for _ in range(40):
            t = data.draw(st.integers(99, 103))
            lo = data.draw(st.integers(0, 3500))
            hi = lo + data.draw(st.integers(0, 50))
            assert view.lookup_anycast(t, lo) == fresh.lookup_anycast(t, lo)
            assert view.lookup_mcast_sockets(t, lo, hi) == fresh.lookup_mcast_sockets(
                t, lo, hi, exact_scope=False
            )
            assert view.lookup_mcast_nodes(t, lo, hi) == fresh.lookup_mcast_nodes(t, lo, hi)
            assert view.overlapping(t, lo, hi) == fresh.overlapping(t, lo, hi)
    finally:
        view.close()
