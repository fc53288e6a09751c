"""The control path: socket-table mailboxes, the worker's validation, no crash loop."""

from __future__ import annotations

import errno
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tipcshm
from tests.conftest import shm_leftovers
from tipcshm.client import get_client
from tipcshm.constants import TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE
from tipcshm.core.nametable import NameTable, ReplicaFormatError, encoded_size
from tipcshm.errors import TipcError
from tipcshm.shm import control
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    MAX_BINDINGS,
    MAX_SOCKETS,
    R_ACTIVE,
    REPLICA,
    REPLICA_BUF,
    REPLICA_BUF0,
    S_CTL_ACK,
    S_CTL_RESULT,
    NodeSegment,
    SockState,
    nametable_inbox_name,
)
from tipcshm.testing import start_node, stop_node, unique_node_name

SERVICE = 4711
CRASH_TYPE = 0xDEAD01  # the sitecustomize below makes the worker die on this type
RAISE_TYPE = 0xDEAD02  # ... and raise on this one


def _bound(node: str, type_: int, instance: int) -> bool:
    table = get_client(node).table()
    return bool(table.overlapping(type_, instance, instance))


def _wait(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _post(s: tipcshm.Socket, req: control.Request) -> int:
    """Post a hand-made request in ``s``'s mailbox, ring, and wait for the worker's errno."""
    client = s._client
    return client.control(req)


def _req(s: tipcshm.Socket, seq: int, **kw: int) -> control.Request:
    fields = {
        "op": control.OP_BIND,
        "port": s.port,
        "seq": seq,
        "slot": s._slot,
        "type": SERVICE,
        "lower": 1,
        "upper": 1,
        "scope": TIPC_CLUSTER_SCOPE,
        "key": s.port + 1000,
    }
    fields.update(kw)
    return control.Request(**fields)


def test_bind_travels_without_a_lane_into_the_worker(node: str) -> None:
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 5, 0))
        assert _bound(node, SERVICE, 5)
        inbox = Inbox.attach(nametable_inbox_name(node))
        try:
            assert inbox.stats()["lanes_active"] == 0
        finally:
            inbox.detach()
        s.unbind((tipcshm.TIPC_ADDR_NAME, SERVICE, 5, 0))
        assert not _bound(node, SERVICE, 5)


def test_malformed_requests_cost_the_sender_an_errno_and_are_counted(node: str) -> None:
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    seg = s._client.seg
    pid = seg.nametable_worker[0]
    before = seg.counters()["bad_requests"]
    bad = [
        (dict(op=99), errno.EINVAL),
        (dict(op=0), errno.EINVAL),
        (dict(scope=7), errno.EINVAL),
        (dict(scope=0), errno.EINVAL),
        (dict(lower=9, upper=3), errno.EINVAL),
        (dict(type=1), errno.EACCES),  # reserved types are the node's own
        (dict(port=s.port ^ 1), errno.EBADF),  # a stale or forged port
    ]
    seq = 100
    for fields, expected in bad:
        seq += 1
        assert _post(s, _req(s, seq, **fields)) == expected, fields
    assert seg.counters()["bad_requests"] - before == len(bad)
    assert seg.nametable_worker[0] == pid  # nothing of it cost the worker
    seq += 1
    assert _post(s, _req(s, seq, scope=TIPC_NODE_SCOPE)) == 0
    assert _bound(node, SERVICE, 1)
    s.close()
    _wait(lambda: not _bound(node, SERVICE, 1), "the close to withdraw the binding")


def test_frames_in_the_worker_inbox_are_discarded_and_counted(node: str) -> None:
    seg = get_client(node).seg
    pid = seg.nametable_worker[0]
    before = seg.counters()["bad_requests"]
    inbox = Inbox.attach(nametable_inbox_name(node))
    try:
        p = inbox.producer()
        with p.lock:
            assert p.write(b"\xff" * 40)
        inbox.ring()
    finally:
        inbox.detach()
    _wait(lambda: seg.counters()["bad_requests"] > before, "the frame to be counted")
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 2, 0))
        assert _bound(node, SERVICE, 2)
    assert seg.nametable_worker[0] == pid


def test_a_bind_still_in_flight_from_a_dead_socket_is_refused(node: str) -> None:
    """The supervisor (process died) or close() marks the entry CLOSING before the worker
    sees the bind: it must not outlive the socket, and the entry is then freed."""
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    seg = s._client.seg
    slot, port = s._slot, s.port
    control.post(seg, _req(s, 7, lower=3, upper=3))  # posted, not rung yet
    assert seg.close_socket(slot, port)
    get_client(node).wake_worker()
    # The worker answers EBADF, withdraws, frees: the entry goes FREE.
    _wait(lambda: seg.socket_entry(slot) is None or seg.socket_entry(slot).port != port, "free")
    assert not _bound(node, SERVICE, 3)
    s.close()


def test_close_withdraws_then_frees_and_the_port_is_not_reused_before(node: str) -> None:
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    seg = s._client.seg
    slot, port = s._slot, s.port
    s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 4, 0))
    os.kill(seg.nametable_worker[0], signal.SIGSTOP)  # the sweep cannot run now
    try:
        s.close()
        e = seg.socket_entry(slot)
        assert e is not None and e.state == SockState.CLOSING and e.port == port
        with pytest.raises(FileExistsError):
            seg.alloc_socket(port, os.getpid(), 1, tipcshm.SOCK_RDM)
    finally:
        os.kill(seg.nametable_worker[0], signal.SIGCONT)
    _wait(lambda: seg.socket_entry(slot) is None, "the worker to free the entry")
    assert not _bound(node, SERVICE, 4)


def test_worker_killed_while_closing_resumes_the_sweep(node: str) -> None:
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    seg = s._client.seg
    slot = s._slot
    s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 6, 0))
    pid, _, restarts = seg.nametable_worker
    os.kill(pid, signal.SIGSTOP)
    s.close()  # CLOSING, rung, but nobody runs
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: seg.nametable_worker[2] == restarts + 1, "a restart")
    _wait(lambda: seg.socket_entry(slot) is None, "the successor to free the entry")
    assert not _bound(node, SERVICE, 6)


def test_slot_out_of_range_is_refused_by_the_client() -> None:
    with pytest.raises(ValueError):
        control.post(None, control.Request(control.OP_BIND, 1, 1, MAX_SOCKETS))  # type: ignore[arg-type]


# -- a worker that dies or raises on one request ------------------------------------
SITECUSTOMIZE = f"""
import os
import tipcshm.core.nametable as _nt

_insert = _nt.NameTable.insert

def insert(self, b):
    if b.type == {CRASH_TYPE}:
        os._exit(70)  # a hard crash: no exception handler runs
    if b.type == {RAISE_TYPE}:
        raise RuntimeError("injected by the test")
    return _insert(self, b)

_nt.NameTable.insert = insert
"""


@pytest.fixture
def faulty_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A node whose worker (and every process started from here) crashes on CRASH_TYPE."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    name = unique_node_name()
    start_node(name)
    monkeypatch.delenv("PYTHONPATH")
    try:
        yield name
    finally:
        stop_node(name)
    assert shm_leftovers(name) == []


def test_a_request_that_kills_the_worker_is_answered_eproto_once(faulty_node: str) -> None:
    node = faulty_node
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        seg = s._client.seg
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0))
        first, _, restarts = seg.nametable_worker
        with pytest.raises(TipcError) as info:
            s.bind((tipcshm.TIPC_ADDR_NAME, CRASH_TYPE, 1, 0))
        assert info.value.errno == errno.EPROTO
        # The successor answers before it announces itself; wait for that.
        _wait(lambda: seg.nametable_worker[0] not in (0, first), "the successor")
        assert seg.nametable_worker[2] == restarts + 1  # one death, no loop
        assert seg.counters()["request_errors"] == 1
        pid = seg.nametable_worker[0]
        with pytest.raises(TipcError) as info:
            s.bind((tipcshm.TIPC_ADDR_NAME, RAISE_TYPE, 1, 0))
        assert info.value.errno == errno.EPROTO
        assert seg.counters()["request_errors"] == 2
        assert seg.nametable_worker[0] == pid  # an exception costs no restart
        # The node keeps serving, and kept what it had.
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 2, 0))
        assert _bound(node, SERVICE, 1) and _bound(node, SERVICE, 2)
        assert not _bound(node, CRASH_TYPE, 1)
        base = seg.sock_off(s._slot)
        assert seg.u32[(base + S_CTL_ACK) // 4] == s._ctl_seq
        assert seg.i32[(base + S_CTL_RESULT) // 4] == 0


def test_worker_survives_a_garbage_replica(node: str) -> None:
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        seg = s._client.seg
        pid, _, restarts = seg.nametable_worker
        os.kill(pid, signal.SIGSTOP)  # the replica has one writer: make it us for a moment
        for buf in (0, 1):  # both buffers, count words included
            base = REPLICA_BUF0 + buf * REPLICA_BUF
            seg.mv[base : base + 3000] = os.urandom(3000)
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: seg.nametable_worker[2] == restarts + 1, "a restart")
        _wait(lambda: seg.nametable_worker[0] not in (0, pid), "the successor")
        s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 8, 0))
        assert _bound(node, SERVICE, 8)
        assert seg.nametable_worker[2] == restarts + 1


def test_replica_control_words_out_of_range_stay_inside_the_segment(node_name: str) -> None:
    """The replica's active index and counts are shared memory too: garbage there must
    neither read nor write outside the two buffers."""
    seg = NodeSegment.create(node_name)
    try:
        seg.u32[(REPLICA + R_ACTIVE) // 4] = 7
        seg.u32[seg.replica_count_index(0)] = 0xFFFFFFFF
        seg.u32[seg.replica_count_index(1)] = 0xFFFFFFFF
        got = seg.read_replica()
        assert got is not None and len(got[1]) == encoded_size(MAX_BINDINGS)
        with pytest.raises(ReplicaFormatError):
            NameTable.decode(got[1], 1)
        tail = bytes(seg.mv[-16:])
        with pytest.raises(ReplicaFormatError):
            seg.write_replica(b"abc")  # not an image: nothing written
        seg.write_replica(NameTable(1).encode())
        assert bytes(seg.mv[-16:]) == tail
        got = seg.read_replica()
        assert got is not None and NameTable.decode(got[1], 1) == NameTable(1)
    finally:
        seg.close()
        NodeSegment.unlink(node_name)
    assert shm_leftovers(node_name) == []
