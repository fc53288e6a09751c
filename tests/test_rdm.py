"""Connectionless sockets (SOCK_RDM, SOCK_DGRAM) on a real node, across real processes."""

from __future__ import annotations

import errno
import os
import selectors
import struct
import time

import pytest
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_DGRAM,
    SOCK_RDM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_NODE_SCOPE,
)

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node

SERVICE = 5000


def rdm(node: str, kind: int = SOCK_RDM) -> tipcshm.Socket:
    return tipcshm.socket(AF_TIPC, kind, node=node)


SERVER = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
s.bind((tipcshm.TIPC_ADDR_NAMESEQ, {service}, {lower}, {upper}))
print("ready", flush=True)
s.settimeout(20)
count = 0
while True:
    data = s.recv(100)
    if data == b"stop":
        break
    count += 1
print(count, flush=True)
"""


def test_anycast_round_robin_over_three_servers(node: str) -> None:
    servers = [Child(node, SERVER.format(service=SERVICE, lower=0, upper=100)) for _ in range(3)]
    try:
        for s in servers:
            s.expect("ready")
        with rdm(node) as c:
            for _ in range(30):
                c.sendto(b"job", (TIPC_ADDR_NAME, SERVICE, 7, 0))
            c.sendto(b"stop", (TIPC_ADDR_NAMESEQ, SERVICE, 0, 100))
        counts = [int(s.line()) for s in servers]
        assert counts == [10, 10, 10]
    finally:
        for s in servers:
            s.close()


def test_anycast_round_robin_over_two_sockets(node: str) -> None:
    with rdm(node) as a, rdm(node) as b, rdm(node) as c:
        for s in (a, b):
            s.bind((TIPC_ADDR_NAME, SERVICE, 3, 0))
            s.setblocking(False)
        for _ in range(10):
            c.sendto(b"x", (TIPC_ADDR_NAME, SERVICE, 3, 0))
        counts = []
        for s in (a, b):
            n = 0
            with pytest.raises(BlockingIOError):
                while True:
                    s.recv(10)
                    n += 1
            counts.append(n)
        assert counts == [5, 5]


def test_anycast_uses_first_matching_range_only(node: str) -> None:
    with rdm(node) as low, rdm(node) as high, rdm(node) as c:
        low.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 10))
        high.bind((TIPC_ADDR_NAMESEQ, SERVICE, 5, 20))
        for _ in range(4):
            c.sendto(b"x", (TIPC_ADDR_NAME, SERVICE, 7, 0))
        high.setblocking(False)
        assert [low.recv(10) for _ in range(4)] == [b"x"] * 4
        with pytest.raises(BlockingIOError):
            high.recv(10)
        c.sendto(b"y", (TIPC_ADDR_NAME, SERVICE, 15, 0))
        assert high.recv(10) == b"y"


def test_multicast_reaches_every_matching_socket_once(node: str) -> None:
    with rdm(node) as a, rdm(node) as b, rdm(node) as other, rdm(node) as c:
        a.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 9))
        a.bind((TIPC_ADDR_NAMESEQ, SERVICE, 5, 15))  # overlapping twice: still one copy
        b.bind((TIPC_ADDR_NAME, SERVICE, 12, 0, TIPC_NODE_SCOPE))
        other.bind((TIPC_ADDR_NAMESEQ, SERVICE, 50, 60))
        c.sendto(b"all", (TIPC_ADDR_NAMESEQ, SERVICE, 0, 20))
        for s in (a, b, other):
            s.setblocking(False)
        assert a.recv(10) == b"all"
        assert b.recv(10) == b"all"
        with pytest.raises(BlockingIOError):
            a.recv(10)
        with pytest.raises(BlockingIOError):
            other.recv(10)


def test_direct_send_and_recvfrom_address(node: str) -> None:
    with rdm(node) as a, rdm(node) as b:
        kind, own, port, _, _ = b.getsockname()
        assert kind == TIPC_ADDR_ID and port == b.port
        a.sendto(b"direct", (TIPC_ADDR_ID, own, port, 0))
        data, addr = b.recvfrom(100)
        assert data == b"direct"
        assert addr == a.getsockname()
        # The readable wrappers are accepted too, and node 0 means this node.
        a.sendto(b"again", tipcshm.SocketAddr(0, port))
        assert b.recv(100) == b"again"


def test_messages_cross_processes_in_order(node: str) -> None:
    with rdm(node) as srv:
        srv.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
        child = Child(
            node,
            f"""
            c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
            for i in range(20000):
                c.sendto(i.to_bytes(4, "big") * 8, (tipcshm.TIPC_ADDR_NAME, {SERVICE}, 1, 0))
            print("sent", c.getsockname()[2], flush=True)
            """,
        )
        try:
            srv.settimeout(20)
            for i in range(20000):
                assert srv.recv(64) == i.to_bytes(4, "big") * 8
            assert child.line().startswith("sent")
            child.finish()
        finally:
            child.close()


def test_recv_variants(node: str) -> None:
    with rdm(node) as a, rdm(node) as b:
        dest = (TIPC_ADDR_ID, 0, b.port, 0)
        a.sendto(b"peekaboo", dest)
        assert b.recv(100, tipcshm.MSG_PEEK) == b"peekaboo"
        buf = bytearray(4)
        assert b.recv_into(buf) == 4  # truncated, the rest of the datagram is discarded
        assert bytes(buf) == b"peek"
        a.sendto(b"second", dest)
        n, addr = b.recvfrom_into(buf := bytearray(16))
        assert (bytes(buf[:n]), addr) == (b"second", a.getsockname())
        a.sendto(b"named", (TIPC_ADDR_ID, 0, b.port, 0))
        data, anc, flags, addr = b.recvmsg(3, 64)
        assert data == b"nam"
        assert flags & tipcshm.MSG_TRUNC
        assert anc == []  # a direct message carries no destination name


def test_recvmsg_destname_for_named_and_mcast(node: str) -> None:
    with rdm(node) as a, rdm(node) as b:
        b.bind((TIPC_ADDR_NAMESEQ, SERVICE, 10, 20))
        a.sendto(b"n", (TIPC_ADDR_NAME, SERVICE, 15, 0))
        data, anc, _, _ = b.recvmsg(10, 64)
        assert data == b"n"
        assert anc == [(SOL_TIPC, tipcshm.TIPC_DESTNAME, struct.pack("=III", SERVICE, 15, 15))]
        a.sendto(b"m", (TIPC_ADDR_NAMESEQ, SERVICE, 12, 30))
        _, anc, _, _ = b.recvmsg(10, 64)
        assert anc == [(SOL_TIPC, tipcshm.TIPC_DESTNAME, struct.pack("=III", SERVICE, 12, 30))]


def test_unreachable_service_raises_ehostunreach(node: str) -> None:
    with rdm(node) as c:
        with pytest.raises(OSError) as info:
            c.sendto(b"x", (TIPC_ADDR_NAME, 4242, 1, 0))
        assert info.value.errno == errno.EHOSTUNREACH
        assert "4242" in str(info.value)
        with pytest.raises(OSError) as info:
            c.sendto(b"x", (TIPC_ADDR_NAMESEQ, 4242, 0, 9))
        assert info.value.errno == errno.EHOSTUNREACH


def test_returned_message_when_not_dest_droppable(node: str) -> None:
    with rdm(node) as a, rdm(node) as gone:
        dead_port = gone.port
        gone.close()
        # Default (dest-droppable): silently dropped, as with the kernel.
        a.sendto(b"lost", (TIPC_ADDR_ID, 0, dead_port, 0))
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(10)
        a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
        a.sendto(b"come back", (TIPC_ADDR_ID, 0, dead_port, 0))
        data, anc, _, addr = a.recvmsg(100, 256)
        assert data == b""
        assert (
            SOL_TIPC,
            tipcshm.TIPC_ERRINFO,
            struct.pack("=II", tipcshm.TIPC_ERR_NO_PORT, 9),
        ) in anc
        assert (SOL_TIPC, tipcshm.TIPC_RETDATA, b"come back") in anc
        assert addr[2] == dead_port


def test_unread_messages_return_on_close(node: str) -> None:
    with rdm(node) as a:
        a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
        b = rdm(node)
        a.sendto(b"unread", (TIPC_ADDR_ID, 0, b.port, 0))
        b.close()
        a.settimeout(5)
        _, anc, _, _ = a.recvmsg(100, 256)
        assert (SOL_TIPC, tipcshm.TIPC_RETDATA, b"unread") in anc


def test_errors_name_what_is_wrong(node: str) -> None:
    with rdm(node) as s:
        with pytest.raises(OSError) as info:
            s.bind((TIPC_ADDR_NAME, 10, 1, 0))
        assert info.value.errno == errno.EACCES
        with pytest.raises(OSError) as info:
            s.sendto(b"x" * 66001, (TIPC_ADDR_NAME, SERVICE, 1, 0))
        assert info.value.errno == errno.EMSGSIZE
        with pytest.raises(TypeError, match="tuple"):
            s.sendto(b"x", [TIPC_ADDR_NAME, SERVICE, 1, 0])
        with pytest.raises(TypeError, match="Invalid address type 9"):  # CPython's check
            s.sendto(b"x", (9, SERVICE, 1, 0))
        with pytest.raises(OSError, match="lower 5 is above upper 1") as info:
            s.bind((TIPC_ADDR_NAMESEQ, SERVICE, 5, 1))
        assert info.value.errno == errno.EINVAL  # the kernel's tipc_uaddr_valid
        with pytest.raises(OSError) as info:
            s.bind((TIPC_ADDR_ID, 1, 2, 0))
        assert info.value.errno == errno.EAFNOSUPPORT
        with pytest.raises(OSError) as info:
            s.send(b"x")
        assert info.value.errno == errno.EDESTADDRREQ
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.EBADF


def test_bind_unbind_negative_scope(node: str) -> None:
    with rdm(node) as s, rdm(node) as c:
        s.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 5))
        c.sendto(b"a", (TIPC_ADDR_NAME, SERVICE, 3, 0))
        assert s.recv(10) == b"a"
        s.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 5, -tipcshm.TIPC_CLUSTER_SCOPE))
        with pytest.raises(OSError) as info:
            c.sendto(b"b", (TIPC_ADDR_NAME, SERVICE, 3, 0))
        assert info.value.errno == errno.EHOSTUNREACH
        with pytest.raises(OSError) as info:
            s.unbind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 5))
        assert info.value.errno == errno.EINVAL


def test_connect_sets_default_destination(node: str) -> None:
    with rdm(node) as s, rdm(node) as c:
        s.bind((TIPC_ADDR_NAME, SERVICE, 9, 0))
        c.connect((TIPC_ADDR_NAME, SERVICE, 9, 0))
        c.send(b"default")
        assert s.recv(10) == b"default"


def test_timeouts_and_nonblocking(node: str) -> None:
    with rdm(node) as s:
        s.settimeout(0.05)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert time.monotonic() - t0 >= 0.05
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(10)
        assert s.getblocking() is False


def test_fileno_works_with_selectors(node: str) -> None:
    with rdm(node) as s, rdm(node) as c:
        sel = selectors.DefaultSelector()
        sel.register(s.fileno(), selectors.EVENT_READ)
        assert sel.select(0.05) == []
        for _ in range(3):
            c.sendto(b"ping", (TIPC_ADDR_ID, 0, s.port, 0))
            assert sel.select(5), "fileno() did not become readable"
            assert s.recv(10) == b"ping"
        sel.close()


def test_full_receiver_blocks_sender_and_loses_nothing(node: str) -> None:
    with rdm(node) as s, rdm(node) as c:
        c.setblocking(False)
        dest = (TIPC_ADDR_ID, 0, s.port, 0)
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                c.sendto(sent.to_bytes(4, "big") + bytes(1020), dest)
                sent += 1
        assert sent > 10
        c.settimeout(0.1)
        with pytest.raises(TimeoutError):
            c.sendto(sent.to_bytes(4, "big") + bytes(1020), dest)
        # A blocked sender resumes as soon as the receiver reads.
        child = Child(
            node,
            f"""
            c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
            c.sendto(b"after", (tipcshm.TIPC_ADDR_ID, 0, {s.port}, 0))
            print("sent", flush=True)
            """,
        )
        try:
            for i in range(sent):
                assert s.recv(2000)[:4] == i.to_bytes(4, "big")
            assert child.line() == "sent"
            assert s.recv(100) == b"after"
        finally:
            child.close()


def test_dgram_drops_at_full_receiver_and_counts(node: str) -> None:
    with rdm(node) as s, rdm(node, SOCK_DGRAM) as c:
        dest = (TIPC_ADDR_ID, 0, s.port, 0)
        for _ in range(2000):
            c.sendto(bytes(1024), dest)
        stats = c.statistics()
        assert stats["drops"] > 0
        assert stats["tx_msgs"] + stats["drops"] == 2000


def test_socket_options(node: str) -> None:
    with rdm(node) as s, rdm(node) as c:
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE) == 0
        s.setsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE, tipcshm.TIPC_HIGH_IMPORTANCE)
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE) == 2
        with pytest.raises(OSError) as info:
            s.setsockopt(SOL_TIPC, tipcshm.TIPC_IMPORTANCE, 7)
        assert info.value.errno == errno.EINVAL
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE) == 1
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_SRC_DROPPABLE) == 0
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT) == 8000
        for _ in range(3):
            c.sendto(b"12345", (TIPC_ADDR_ID, 0, s.port, 0))
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_SOCK_RECVQ_DEPTH) == 3
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_SOCK_RECVQ_USED) > 0
        with pytest.raises(OSError) as info:
            s.getsockopt(1, 999)  # no such SOL_SOCKET option
        assert info.value.errno == errno.ENOPROTOOPT
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_GROUP_JOIN) == 0  # in no group


def test_socket_type_picks_the_implementation(node: str) -> None:
    from tipcshm.conn import ConnSocket

    for kind in (tipcshm.SOCK_SEQPACKET, tipcshm.SOCK_STREAM):
        with tipcshm.socket(AF_TIPC, kind, node=node) as s:
            assert isinstance(s, ConnSocket) and s.type == kind
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        assert not isinstance(s, ConnSocket)


def test_kill9_application_withdraws_its_bindings(node: str) -> None:
    child = Child(
        node,
        f"""
        s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
        s.bind((tipcshm.TIPC_ADDR_NAME, {SERVICE}, 77, 0))
        print(s.port, flush=True)
        time.sleep(60)
        """,
    )
    try:
        child_port = int(child.line())
        with rdm(node) as c:
            c.sendto(b"alive?", (TIPC_ADDR_NAME, SERVICE, 77, 0))
            child.kill9()
            t0 = time.monotonic()
            while True:
                try:
                    c.sendto(b"alive?", (TIPC_ADDR_NAME, SERVICE, 77, 0))
                except OSError as exc:
                    assert exc.errno == errno.EHOSTUNREACH
                    break
                assert time.monotonic() - t0 < 5, "binding of a killed process still there"
                time.sleep(0.001)
            print(f"binding withdrawn {1000 * (time.monotonic() - t0):.1f} ms after kill -9")
        # Its inbox goes too (the supervisor unlinks it right after the withdrawal).
        inbox = f"tipcshm.{node}.in.{child_port:08x}"
        while inbox in os.listdir("/dev/shm"):
            assert time.monotonic() - t0 < 5, "inbox of a killed process left behind"
            time.sleep(0.001)
    finally:
        child.close()


@pytest.mark.fresh_node
def test_kill9_nametable_worker_keeps_bindings(node: str) -> None:
    from tipcshm.client import get_client

    with rdm(node) as s, rdm(node) as c:
        s.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
        seg = get_client(node).seg
        pid, _, restarts = seg.nametable_worker
        os.kill(pid, 9)
        t0 = time.monotonic()
        while seg.nametable_worker[0] in (pid, 0):
            assert time.monotonic() - t0 < 10, "name-table worker was not restarted"
            time.sleep(0.01)
        assert seg.nametable_worker[2] == restarts + 1
        c.sendto(b"still bound", (TIPC_ADDR_NAME, SERVICE, 1, 0))
        assert s.recv(100) == b"still bound"
        s.bind((TIPC_ADDR_NAME, SERVICE, 2, 0))  # and the new worker serves binds
        c.sendto(b"new", (TIPC_ADDR_NAME, SERVICE, 2, 0))
        assert s.recv(100) == b"new"


def test_node_not_running_says_how_to_start() -> None:
    with pytest.raises(tipcshm.NodeNotRunning, match="tipcshm start --name nosuchnode"):
        tipcshm.socket(AF_TIPC, SOCK_RDM, node="nosuchnode")


@pytest.mark.fresh_node
def test_socket_leaves_nothing_after_close(node: str) -> None:
    def mine() -> set[str]:  # other nodes (other tests, other users) may come and go
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"tipcshm.{node}.")}

    before = mine()
    s = rdm(node)
    s.bind((TIPC_ADDR_NAME, SERVICE, 3, 0))
    s.close()
    s.close()  # idempotent
    assert mine() - before == set()
