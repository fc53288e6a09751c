"""Group subscriptions in the name-table worker: member-event frames (issue 13).

Raw level: a socket posts ``OP_GROUP_SUB`` through its own mailbox (``Socket._control``)
and reads the worker's frames straight from its inbox. A bind or unbind returns only
after the worker acknowledged it, and the worker writes member events before it
acknowledges anything of the same batch, so after ``bind()`` returns its event is already
in every subscriber's inbox: the tests read without waiting, except for what happens
asynchronously (a close's sweep, a process killed, a worker restarted).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tipcshm
from tests.test_names_feed import PEER, PEER2, FakeBearer
from tipcshm.client import get_client
from tipcshm.constants import (
    TIPC_CLUSTER_SCOPE,
    TIPC_NODE_SCOPE,
    TIPC_PUBLISHED,
    TIPC_WITHDRAWN,
)
from tipcshm.shm import control, names_feed
from tipcshm.wire.group import EVT_GONE, MemberEvent, decode_member_event

GROUP = 4800
OTHER = 4801


def _wait(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _rdm(node: str) -> tipcshm.Socket:
    return tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)


def _sub(s: tipcshm.Socket, type_: int = GROUP, scope: int = TIPC_CLUSTER_SCOPE) -> int:
    return int(s._control(control.OP_GROUP_SUB, type_, 0, 0, scope, 0))


def _unsub(s: tipcshm.Socket) -> int:
    return int(s._control(control.OP_GROUP_UNSUB, 0, 0, 0, 0, 0))


def _bind(
    s: tipcshm.Socket, inst: int, type_: int = GROUP, scope: int = TIPC_CLUSTER_SCOPE
) -> None:
    s.bind((tipcshm.TIPC_ADDR_NAMESEQ, type_, inst, inst, scope))


def _unbind(
    s: tipcshm.Socket, inst: int, type_: int = GROUP, scope: int = TIPC_CLUSTER_SCOPE
) -> None:
    s.unbind((tipcshm.TIPC_ADDR_NAMESEQ, type_, inst, inst, scope))


def _frames(s: tipcshm.Socket) -> list[tuple[MemberEvent, tuple[int, int] | None]]:
    """Every frame now in ``s``'s inbox, decoded, with its lane's producer as read then
    (asserted to be the name-table worker's, as a client checks)."""
    out = []
    inbox = s._inbox
    seg = s._client.seg
    while True:
        got = inbox.poll()
        if got is None:
            return out
        buf, off, length, lane = got
        try:
            evt = decode_member_event(bytes(buf[off : off + length]))
            assert evt is not None, bytes(buf[off : off + length]).hex()
            assert control.from_nametable_worker(seg, inbox, lane), lane
            producer = inbox.lane_producer(lane)
        finally:
            inbox.release(lane)
        out.append((evt, producer))


def _events(s: tipcshm.Socket) -> list[tuple[int, int, int, int, int]]:
    """(event, lower, port, node, flags) of every frame now in ``s``'s inbox."""
    return [(e.event, e.lower, e.port, e.node, e.flags) for e, _ in _frames(s)]


def _wait_frames(
    s: tipcshm.Socket, n: int, timeout: float = 10.0
) -> list[tuple[MemberEvent, tuple[int, int] | None]]:
    """At least ``n`` frames, waiting for them (then whatever else is there)."""
    got: list[tuple[MemberEvent, tuple[int, int] | None]] = []
    deadline = time.monotonic() + timeout
    while True:
        got += _frames(s)
        if len(got) >= n:
            return got
        assert time.monotonic() < deadline, f"timed out: {got}"
        s._inbox.wait(0.05)


def _wait_events(s: tipcshm.Socket, n: int, timeout: float = 10.0) -> list[tuple[int, ...]]:
    return [(e.event, e.lower, e.port, e.node, e.flags) for e, _ in _wait_frames(s, n, timeout)]


@pytest.fixture
def sub(node: str) -> Iterator[tipcshm.Socket]:
    s = _rdm(node)
    assert _sub(s) == 0
    yield s
    s.close()


def test_events_for_binds_and_unbinds_of_the_type_only(node: str, sub: tipcshm.Socket) -> None:
    own = get_client(node).addr
    with _rdm(node) as a:
        _bind(a, 5)
        _bind(a, 5, type_=OTHER)
        _bind(a, 6, type_=GROUP + 1000)
        _unbind(a, 5)
        _unbind(a, 5, type_=OTHER)
        _bind(sub, 9)  # the subscriber's own binding is told too
        assert _events(sub) == [
            (TIPC_PUBLISHED, 5, a.port, own, 0),
            (TIPC_WITHDRAWN, 5, a.port, own, 0),
            (TIPC_PUBLISHED, 9, sub.port, own, 0),
        ]
        frames = [e for e, _ in _frames(sub)]
        assert frames == []
        _bind(a, 7)
        (e, producer), *rest = _frames(sub)
        assert not rest
        assert (e.dest_port, e.type, e.lower, e.upper) == (sub.port, GROUP, 7, 7)
        seg = sub._client.seg
        w = seg.worker(0)
        assert w is not None and producer == (w.pid, w.start)
    assert _wait_events(sub, 1) == [(TIPC_WITHDRAWN, 7, a.port, own, EVT_GONE)]
    # counted just after the write: the frame may be read first
    _wait(lambda: seg.group_event_counts(sub._slot) == (5, 0), "5 events counted, 0 dropped")


def test_bindings_before_the_subscription_are_in_the_replica_not_in_events(node: str) -> None:
    with _rdm(node) as a, _rdm(node) as s:
        _bind(a, 1)
        _bind(a, 2, scope=TIPC_NODE_SCOPE)
        assert _sub(s) == 0
        table = get_client(node).table()
        assert table.lookup_anycast(GROUP, 1) is not None
        assert table.lookup_anycast(GROUP, 2) is not None
        assert _events(s) == []
        _bind(a, 3)
        assert [e[:2] for e in _events(s)] == [(TIPC_PUBLISHED, 3)]


def test_scope_filtering(node: str) -> None:
    own = get_client(node).addr
    with _rdm(node) as a, _rdm(node) as n, _rdm(node) as c:
        assert _sub(n, scope=TIPC_NODE_SCOPE) == 0
        assert _sub(c, scope=TIPC_CLUSTER_SCOPE) == 0
        _bind(a, 1, scope=TIPC_CLUSTER_SCOPE)
        _bind(a, 2, scope=TIPC_NODE_SCOPE)
        _unbind(a, 1)
        _unbind(a, 2, scope=TIPC_NODE_SCOPE)
        assert _events(n) == [
            (TIPC_PUBLISHED, 2, a.port, own, 0),
            (TIPC_WITHDRAWN, 2, a.port, own, 0),
        ]
        assert _events(c) == [
            (TIPC_PUBLISHED, 1, a.port, own, 0),
            (TIPC_WITHDRAWN, 1, a.port, own, 0),
        ]


def test_gone_on_close_but_not_on_unbind(node: str, sub: tipcshm.Socket) -> None:
    own = get_client(node).addr
    a = _rdm(node)
    _bind(a, 1)
    _bind(a, 2)
    _unbind(a, 1)
    port = a.port
    a.close()
    assert _wait_events(sub, 4) == [
        (TIPC_PUBLISHED, 1, port, own, 0),
        (TIPC_PUBLISHED, 2, port, own, 0),
        (TIPC_WITHDRAWN, 1, port, own, 0),
        (TIPC_WITHDRAWN, 2, port, own, EVT_GONE),
    ]


CHILD = textwrap.dedent(
    """
    import sys, time, tipcshm
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=sys.argv[1])
    s.bind((tipcshm.TIPC_ADDR_NAME, int(sys.argv[2]), int(sys.argv[3]), 0))
    print(s.port, flush=True)
    time.sleep(60)
    """
)


def test_gone_on_kill_9_of_the_binder(node: str, sub: tipcshm.Socket) -> None:
    own = get_client(node).addr
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, node, str(GROUP), "11"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert _events(sub) == [(TIPC_PUBLISHED, 11, port, own, 0)]
        t0 = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        assert _wait_events(sub, 1) == [(TIPC_WITHDRAWN, 11, port, own, EVT_GONE)]
        assert time.monotonic() - t0 < 2.0
    finally:
        child.kill()
        child.wait()


def test_unsubscribe_and_close_stop_the_events(node: str) -> None:
    seg = get_client(node).seg
    with _rdm(node) as a:
        s1, s2 = _rdm(node), _rdm(node)
        assert _sub(s1) == 0 and _sub(s2) == 0
        assert seg.group_sub(s1._slot) == (GROUP, TIPC_CLUSTER_SCOPE)
        _bind(a, 1)
        assert len(_events(s1)) == len(_events(s2)) == 1
        assert _unsub(s1) == 0
        assert _unsub(s1) == 0  # nothing held: still fine (a replay after a restart)
        assert seg.group_sub(s1._slot) == (0, 0)
        _bind(a, 2)
        assert _events(s1) == []
        assert len(_events(s2)) == 1
        slot2 = s2._slot
        s2.close()
        _wait(lambda: seg.socket_entry(slot2) is None, "the subscriber's entry to be freed")
        before = seg.counters()["group_events"]
        _bind(a, 3)
        _unbind(a, 3)
        assert seg.counters()["group_events"] == before
        assert _sub(s1) == 0  # subscribes again
        _bind(a, 4)
        assert [e[:2] for e in _events(s1)] == [(TIPC_PUBLISHED, 4)]
        s1.close()


def test_malformed_group_requests_are_refused_and_counted(node: str) -> None:
    with _rdm(node) as s:
        seg = s._client.seg
        pid = seg.nametable_worker[0]
        before = seg.counters()["bad_requests"]
        c = s._control
        bad = [
            (lambda: c(control.OP_GROUP_SUB, GROUP, 0, 0, 7, 0), errno.EINVAL),  # scope
            (lambda: c(control.OP_GROUP_SUB, GROUP, 0, 0, 0, 0), errno.EINVAL),  # no scope
            (lambda: c(control.OP_GROUP_SUB, 10, 0, 0, TIPC_CLUSTER_SCOPE, 0), errno.EACCES),
            (lambda: c(control.OP_GROUP_SUB, GROUP, 1, 1, TIPC_CLUSTER_SCOPE, 0), errno.EINVAL),
            (lambda: c(control.OP_GROUP_SUB, GROUP, 0, 0, TIPC_CLUSTER_SCOPE, 5), errno.EINVAL),
            (lambda: c(control.OP_GROUP_UNSUB, 0, 0, 3, 0, 0), errno.EINVAL),
        ]
        for call, expected in bad:
            assert call() == expected
        assert seg.counters()["bad_requests"] - before == len(bad)
        assert seg.group_sub(s._slot) == (0, 0)
        # a forged port is refused like any request from a socket not holding the entry
        req = control.Request(
            control.OP_GROUP_SUB, s.port ^ 1, 999, s._slot, GROUP, scope=TIPC_CLUSTER_SCOPE
        )
        assert s._client.control(req) == errno.EBADF
        assert _sub(s) == 0
        assert _sub(s) == 0  # the same again: done already
        assert _sub(s, GROUP + 1) == errno.EACCES  # one group per socket
        assert _sub(s, scope=TIPC_NODE_SCOPE) == errno.EACCES
        assert c(control.OP_GROUP_UNSUB, GROUP + 1, 0, 0, 0, 0) == errno.EINVAL
        assert seg.group_sub(s._slot) == (GROUP, TIPC_CLUSTER_SCOPE)
        assert c(control.OP_GROUP_UNSUB, GROUP, 0, 0, TIPC_CLUSTER_SCOPE, 0) == 0
        assert seg.nametable_worker[0] == pid


def _restart_worker(node: str, *, stop_first: Callable[[], None] | None = None) -> None:
    seg = get_client(node).seg
    pid, _, restarts = seg.nametable_worker
    if stop_first is not None:
        os.kill(pid, signal.SIGSTOP)
        stop_first()
    os.kill(pid, signal.SIGKILL)
    _wait(
        lambda: seg.nametable_worker[2] == restarts + 1 and seg.nametable_worker[0] not in (0, pid),
        "the successor to name itself",
    )


def test_subscriptions_survive_a_worker_restart(node: str, sub: tipcshm.Socket) -> None:
    own = get_client(node).addr
    seg = sub._client.seg
    with _rdm(node) as a:
        _bind(a, 1)  # left unread in the dead worker's lane
        old = seg.nametable_worker[:2]
        _restart_worker(node)
        _bind(a, 2)
        frames = _wait_frames(sub, 2)
        assert [(e.event, e.lower) for e, _ in frames] == [(1, 1), (1, 2)]
        assert [p for _, p in frames] == [old, seg.nametable_worker[:2]]
        assert seg.name_event_writers() == (seg.nametable_worker[:2], old)
        assert seg.group_sub(sub._slot) == (GROUP, TIPC_CLUSTER_SCOPE)
        assert _sub(sub) == 0  # a replayed subscription is no error
        _unbind(a, 2)
        assert _events(sub) == [(TIPC_WITHDRAWN, 2, a.port, own, 0)]


def test_a_close_while_no_worker_runs_is_told_gone_by_the_successor(
    node: str, sub: tipcshm.Socket
) -> None:
    own = get_client(node).addr
    a = _rdm(node)
    _bind(a, 3)
    port = a.port
    assert _events(sub) == [(TIPC_PUBLISHED, 3, port, own, 0)]
    _restart_worker(node, stop_first=a.close)
    assert _wait_events(sub, 1) == [(TIPC_WITHDRAWN, 3, port, own, EVT_GONE)]


def test_successor_events_wait_for_the_predecessor_lane(node: str, sub: tipcshm.Socket) -> None:
    """Frames of the dead worker still unread come first, though the inbox reads its lanes
    round robin: the successor holds its own until they are read."""
    with _rdm(node) as a:
        for i in range(1, 4):
            _bind(a, i)
        _restart_worker(node)
        for i in range(4, 7):
            _bind(a, i)
        assert [e.lower for e, _ in _wait_frames(sub, 6)] == [1, 2, 3, 4, 5, 6]


def test_remote_bindings_and_peer_loss_are_no_gone(node: str, sub: tipcshm.Socket) -> None:
    bearer = FakeBearer(node, 0)
    try:
        bearer.publish(GROUP, 1, 1, node=PEER, port=10)
        bearer.publish(GROUP, 2, 2, node=PEER2, port=20)
        bearer.publish(OTHER, 2, 2, node=PEER2, port=20, key=2)
        bearer.publish(GROUP, 3, 3, node=PEER, port=30, scope=TIPC_NODE_SCOPE)  # not ours
        bearer.withdraw(GROUP, 1, 1, node=PEER)
        bearer.publish(GROUP, 4, 4, node=PEER, port=40)
        bearer.update(names_feed.PURGE_NODE, node=PEER)
        bearer.update(names_feed.RESET_BEARER)
        assert _wait_events(sub, 6) == [
            (TIPC_PUBLISHED, 1, 10, PEER, 0),
            (TIPC_PUBLISHED, 2, 20, PEER2, 0),
            (TIPC_WITHDRAWN, 1, 10, PEER, 0),
            (TIPC_PUBLISHED, 4, 40, PEER, 0),
            (TIPC_WITHDRAWN, 4, 40, PEER, 0),
            (TIPC_WITHDRAWN, 2, 20, PEER2, 0),
        ]
    finally:
        bearer.close()


def test_a_subscriber_that_does_not_read_costs_drops_not_memory(node: str) -> None:
    with _rdm(node) as a, _rdm(node) as s:
        s._inbox.set_queue_limit(1024)  # as a tiny SO_RCVBUF: 16 event records
        assert _sub(s) == 0
        seg = s._client.seg
        for i in range(40):
            _bind(a, i)
        written, dropped = seg.group_event_counts(s._slot)
        assert written + dropped == 40 and dropped > 0 and written >= 15
        assert seg.counters()["group_event_drops"] == dropped
        got = _events(s)
        assert [e[1] for e in got] == list(range(written))  # a prefix, never overwritten
        _bind(a, 100)
        assert [e[1] for e in _events(s)] == [100]


def test_the_entry_state_stops_events_at_closing(node: str) -> None:
    """A subscriber whose entry turned CLOSING (its close, or its process's death) gets
    nothing more, even before the sweep frees it."""
    with _rdm(node) as a, _rdm(node) as s:
        assert _sub(s) == 0
        seg = s._client.seg
        pid = seg.nametable_worker[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert seg.close_socket(s._slot, s.port)
        finally:
            os.kill(pid, signal.SIGCONT)
        before = seg.counters()["group_events"]
        _bind(a, 1)
        assert seg.counters()["group_events"] == before
        assert _events(s) == []


def test_scribbled_subscriptions_are_cleared_by_a_restarted_worker(node: str) -> None:
    with _rdm(node) as s, _rdm(node) as t, _rdm(node) as a:
        seg = s._client.seg
        seg.set_group_sub(s._slot, 5, TIPC_CLUSTER_SCOPE)  # a reserved type
        seg.set_group_sub(t._slot, GROUP, 9)  # no such scope
        before = seg.counters()["bad_requests"]
        _restart_worker(node)
        assert seg.group_sub(s._slot) == (0, 0) and seg.group_sub(t._slot) == (0, 0)
        assert seg.counters()["bad_requests"] == before + 2
        _bind(a, 1)
        assert _events(s) == [] and _events(t) == []


def test_sixty_four_subscribers_each_see_every_change_in_order(node: str) -> None:
    own = get_client(node).addr
    socks = [_rdm(node) for _ in range(64)]
    try:
        for s in socks:
            assert _sub(s) == 0
        for s in socks:
            _bind(s, s.port)
        for s in socks[:8]:
            _unbind(s, s.port)
        want = [(TIPC_PUBLISHED, s.port, s.port, own, 0) for s in socks]
        want += [(TIPC_WITHDRAWN, s.port, s.port, own, 0) for s in socks[:8]]
        for s in socks:
            assert _events(s) == want
    finally:
        for s in socks:
            s.close()
