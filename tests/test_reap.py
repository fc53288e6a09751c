"""What a killed process's sockets leave to others: the supervisor releases them as the
kernel's tipc_release would (unread messages go back to their senders, a connection's
peer is told), however far the dead socket had got."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

import pytest
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
)
from tipcshm.client import get_client
from tipcshm.shm.lane import Inbox

SERVICE = 7100


def _reaped(node: str, before: int, timeout: float = 10.0) -> None:
    """Wait until the supervisor has reaped one more process than ``before``."""
    seg = get_client(node).seg
    deadline = time.monotonic() + timeout
    while seg.counters()["processes_reaped"] <= before:
        assert time.monotonic() < deadline, "the supervisor did not reap the process"
        time.sleep(0.005)


def _reaped_count(node: str) -> int:
    return get_client(node).seg.counters()["processes_reaped"]


CONNECTING = """
c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.{kind}, node=NODE)
c.setblocking(False)
try:
    c.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
except BlockingIOError:
    pass
print("syn sent", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("kind", ["SOCK_SEQPACKET", "SOCK_STREAM"])
def test_client_killed_before_reading_the_accept_resets_the_server(node: str, kind: str) -> None:
    ls = tipcshm.socket(AF_TIPC, getattr(tipcshm, kind), node=node)
    ls.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
    ls.listen(8)
    child = Child(node, CONNECTING.format(kind=kind, service=SERVICE))
    try:
        child.expect("syn sent")
        ls.settimeout(10)
        b, _ = ls.accept()  # its answer waits, unread, in the client's inbox
        child.kill9()
        b.settimeout(1.0)
        t = time.monotonic()
        with pytest.raises(ConnectionResetError):
            b.recv(10)
        assert time.monotonic() - t < 1.0
        with pytest.raises(BrokenPipeError):
            b.send(b"x")
        b.close()
    finally:
        child.close()
        ls.close()


RDM_RECEIVER = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
print(s.port, flush=True)
sys.stdin.readline()
"""


def test_rdm_message_queued_to_a_killed_process_comes_back(node: str) -> None:
    a = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    child = Child(node, RDM_RECEIVER)
    try:
        port = int(child.line())
        a.sendto(b"dropped", (TIPC_ADDR_ID, 0, port, 0))  # dest-droppable: not returned
        a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
        a.sendto(b"come back", (TIPC_ADDR_ID, 0, port, 0))
        a.sendto(b"me too", (TIPC_ADDR_ID, 0, port, 0))
        before = _reaped_count(node)
        child.kill9()
        a.settimeout(5)
        for text in (b"come back", b"me too"):
            data, anc, _, addr = a.recvmsg(100, 256)
            assert data == b""
            info = struct.pack("=II", tipcshm.TIPC_ERR_NO_PORT, len(text))
            assert (SOL_TIPC, tipcshm.TIPC_ERRINFO, info) in anc
            assert (SOL_TIPC, tipcshm.TIPC_RETDATA, text) in anc
            assert addr[2] == port
        _reaped(node, before)
        counters = get_client(node).seg.counters()
        assert counters["messages_returned"] == 2
        assert counters["reap_dropped"] == 1
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(10)
    finally:
        child.close()
        a.close()


CONNECTED = """
c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
c.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
print("connected", flush=True)
sys.stdin.readline()
"""


def test_connected_peer_gets_its_first_unread_message_back(node: str) -> None:
    """tipc_release of an established socket returns the first unread message to the peer
    as the abort (recvmsg shows it as TIPC_RETDATA) and drops the rest."""
    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
    ls.listen(8)
    child = Child(node, CONNECTED.format(service=SERVICE))
    try:
        ls.settimeout(10)
        b, _ = ls.accept()
        child.expect("connected")
        b.send(b"first")
        b.send(b"second")
        before = _reaped_count(node)
        child.kill9()
        _reaped(node, before)
        b.settimeout(2)
        data, anc, _, _ = b.recvmsg(100, 256)
        assert data == b""
        info = struct.pack("=II", tipcshm.TIPC_ERR_NO_PORT, len(b"first"))
        assert (SOL_TIPC, tipcshm.TIPC_ERRINFO, info) in anc
        assert (SOL_TIPC, tipcshm.TIPC_RETDATA, b"first") in anc
        with pytest.raises(BrokenPipeError):
            b.send(b"x")
        assert get_client(node).seg.counters()["reap_dropped"] == 1  # "second"
        b.close()
    finally:
        child.close()
        ls.close()


LISTENER = """
ls = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
ls.bind((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
ls.listen(8)
print("listening", flush=True)
sys.stdin.readline()
"""


def test_connect_queued_at_a_killed_listener_is_refused_at_once(node: str) -> None:
    child = Child(node, LISTENER.format(service=SERVICE))
    c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    try:
        child.expect("listening")
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
        child.kill9()
        t = time.monotonic()
        assert select.select([c.fileno()], [], [], 5)[0]  # not the 8 s connect timeout
        assert time.monotonic() - t < 2
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    finally:
        child.close()
        c.close()


FLOODED = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
print(s.port, flush=True)
sys.stdin.readline()
"""

SENDER = """
import sys
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
s.setsockopt(tipcshm.SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
s.setblocking(False)
port = {port}
n = 0
try:
    while True:
        s.sendto(b"x" * 8, (tipcshm.TIPC_ADDR_ID, 0, port, 0))
        n += 1
except BlockingIOError:
    pass
print(n, flush=True)
sys.stdin.readline()
"""


def test_a_full_inbox_of_a_killed_process_does_not_stall_the_supervisor(node: str) -> None:
    """Every lane of the dead socket's inbox full: the supervisor returns what it can in
    bounded time, counts what it drops, and goes on serving."""
    victim = Child(node, FLOODED)
    senders: list[Child] = []
    try:
        port = int(victim.line())
        senders = [Child(node, SENDER.format(port=port)) for _ in range(4)]
        queued = sum(int(s.line(60)) for s in senders)
        assert queued > 20000
        before = _reaped_count(node)
        t = time.monotonic()
        victim.kill9()
        _reaped(node, before)
        assert time.monotonic() - t < 2.0
        counters = get_client(node).seg.counters()
        # what the supervisor had no time to return is dropped, and every one is counted
        assert counters["messages_returned"] > 0
        assert counters["reap_dropped"] > 0
        assert counters["messages_returned"] + counters["reap_dropped"] == queued
        with (
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as a,
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as b,
        ):
            b.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))  # the node still serves
            a.sendto(b"alive", (TIPC_ADDR_NAME, SERVICE, 1, 0))
            b.settimeout(5)
            assert b.recv(10) == b"alive"
    finally:
        for s in senders:
            s.close()
        victim.close()


def test_reject_unread_is_bounded_and_drops_garbage() -> None:
    """reject_unread reads untrusted frames: garbage is dropped, the budget is kept."""
    from tipcshm import wire
    from tipcshm.sock import reject_unread
    from tipcshm.testing import unique_node_name

    name = f"/tipcshm.{unique_node_name('u')}.in.00000001"
    inbox = Inbox.create(name, lanes=1, lane_bytes=64 * 1024)
    try:
        p = inbox.producer()
        good = wire.HDR32.pack(
            wire.make_w0(0, wire.BASIC_H_SIZE, wire.BASIC_H_SIZE + 2),
            wire.make_w1(wire.DataType.DIRECT_MSG),
            0,
            5,
            77,
            1,
            5,
            5,
        )
        for _ in range(10):
            assert p.write(good, b"hi")
            assert p.write(b"\xff" * 40)  # not a TIPC message
        posted: list[tuple[int, bytes]] = []

        def post(port: int, frame: bytes) -> bool:
            posted.append((port, frame))
            return True

        done = reject_unread(inbox, 5, post, max_frames=6)
        assert (done.returned, done.dropped, done.cut) == (3, 3, True)
        assert all(port == 77 for port, _ in posted)
        assert wire.decode_header(posted[0][1]).errcode == wire.ErrorCode.NO_PORT
        done = reject_unread(inbox, 5, post, deadline=time.monotonic() - 1)
        assert (done.returned, done.dropped, done.cut) == (0, 0, True)
        done = reject_unread(inbox, 5, post)
        assert (done.returned, done.dropped, done.cut) == (7, 7, False)
    finally:
        inbox.unlink()
        inbox.detach()


FORGER = """
from tipcshm.shm.layout import S_PORT
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
seg = s._client.seg
victim, as_port = (int(x) for x in sys.stdin.readline().split())
if as_port:  # claim to be the victim's peer: the same port in a second entry
    seg.u32[(seg.sock_off(s._slot) + S_PORT) // 4] = as_port
seg.set_peer(s._slot, seg.addr, victim)
print("forged", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("as_peer", [False, True], ids=["other-port", "peer-port"])
def test_a_forged_socket_entry_does_not_end_a_victims_connection(node: str, as_peer: bool) -> None:
    """A dead process's table entry names a live connection as its peer (the table is
    anyone's to write), even under the port of that connection's real peer: the reap must
    not end the connection (nor close or remove the real peer's inbox)."""
    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
    ls.listen(8)
    c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    child = Child(node, FORGER)
    try:
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
        ls.settimeout(10)
        b, _ = ls.accept()
        c.settimeout(5)
        b.settimeout(5)
        c.send(b"before")
        assert b.recv(10) == b"before"
        child.send(f"{b.port} {c.port if as_peer else 0}")
        child.expect("forged")
        before = _reaped_count(node)
        child.kill9()
        _reaped(node, before)
        b.send(b"still")
        assert c.recv(10) == b"still"
        c.send(b"here")
        assert b.recv(10) == b"here"
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(10)  # no abort queued behind
        b.close()
    finally:
        child.close()
        c.close()
        ls.close()


BOTH = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
print(s.port, flush=True)
c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
c.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
print("connected", flush=True)
sys.stdin.readline()
"""


def test_reaping_leaves_the_supervisor_nothing_attached(node: str) -> None:
    """The supervisor attaches dead sockets' inboxes, their peers' and the senders' it
    returns messages to: all are let go once the process is reaped."""
    from workers.supervisor import running_supervisor

    sup = running_supervisor(node)
    assert sup is not None

    def sup_counts() -> tuple[int, int]:
        with open(f"/proc/{sup}/maps") as f:
            maps = {line.split(None, 5)[-1] for line in f if f"tipcshm.{node}.in." in line}
        return len(os.listdir(f"/proc/{sup}/fd")), len(maps)

    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
    ls.listen(8)
    ls.settimeout(10)
    a = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
    a.settimeout(5)
    before = (0, 0)
    for i in range(10):
        if i == 1:  # the first round attached this process's own (watched from then on)
            before = sup_counts()
        reaped = _reaped_count(node)
        child = Child(node, BOTH.format(service=SERVICE))
        try:
            port = int(child.line())
            b, _ = ls.accept()
            child.expect("connected")
            a.sendto(b"back", (TIPC_ADDR_ID, 0, port, 0))
            b.send(b"unread")
            child.kill9()
            assert a.recvmsg(100, 256)[1]  # returned
            b.settimeout(5)
            with pytest.raises(ConnectionResetError):
                b.recv(10)
            b.close()
            _reaped(node, reaped)
        finally:
            child.close()
    # The supervisor's own periodic work (a scan of /dev/shm, a /proc read) holds a
    # descriptor for a moment now and then; a leak would never give it back.
    deadline = time.monotonic() + 5.0
    while (after := sup_counts()) != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert after == before
    a.close()
    ls.close()


GARBAGE = """
import random
from tipcshm.shm.lane import _TAIL, Inbox
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
mine = Inbox.attach(s._inbox.name)
p = mine.producer()
rnd = random.Random(7)
for _ in range(200):
    p.write(rnd.randbytes(rnd.randrange(1, 200)))  # records, but no TIPC messages
p._ctl[_TAIL] += 1 << 40  # and a tail far beyond anything written
print(s.port, flush=True)
sys.stdin.readline()
"""


def test_garbage_in_a_killed_process_inbox_costs_the_node_nothing(node: str) -> None:
    child = Child(node, GARBAGE)
    try:
        port = int(child.line())
        before = _reaped_count(node)
        t = time.monotonic()
        child.kill9()
        _reaped(node, before)
        assert time.monotonic() - t < 2.0
        # The absurd tail makes the lane skip its queued bytes as corrupt (lane.py bounds
        # every tail it reads), so the garbage is neither returned nor read one by one.
        assert not os.path.exists(f"/dev/shm/tipcshm.{node}.in.{port:08x}")
        with (
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as a,
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as b,
        ):
            b.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))  # the node still serves
            a.sendto(b"alive", (TIPC_ADDR_NAME, SERVICE, 1, 0))
            b.settimeout(5)
            assert b.recv(10) == b"alive"
    finally:
        child.close()
