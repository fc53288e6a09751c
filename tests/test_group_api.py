"""Communication groups through the stdlib's socket calls and tipcshm.Group, on one node:
the kernel's API (TIPC_GROUP_JOIN/LEAVE, sending without an address, to a service address,
a socket address and a range) and its answers (tipc_sk_join, __tipc_bind, tipc_connect,
tipc_send_group_*, tipc_recvmsg)."""

from __future__ import annotations

import errno
import struct

import pytest

import tipcshm
from tipcshm import (
    AF_TIPC,
    MSG_DONTWAIT,
    MSG_EOR,
    MSG_OOB,
    SOCK_RDM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_GROUP_JOIN,
    TIPC_GROUP_LEAVE,
    TIPC_GROUP_LOOPBACK,
    TIPC_GROUP_MEMBER_EVTS,
)

pytestmark = pytest.mark.shared_node

GROUP = 4711
EVTS = TIPC_GROUP_MEMBER_EVTS


def member(node: str, inst: int, flags: int = EVTS, group: int = GROUP) -> tipcshm.Socket:
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    s.settimeout(10)
    s.setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, struct.pack("4I", group, inst, 2, flags))
    return s


def addr(s: tipcshm.Socket) -> tuple[int, int, int, int, int]:
    return s.getsockname()


def next_event(s: tipcshm.Socket) -> tuple[int, tuple[int, int, int, int, int]]:
    data, _anc, flags, src = s.recvmsg(100)
    assert data == b"" and flags & MSG_OOB, (data, flags)
    return flags, src


def test_join_answers_as_the_kernel(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        assert s.getsockopt(SOL_TIPC, TIPC_GROUP_JOIN) == 0
        with pytest.raises(OSError) as info:
            s.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, None, 0)
        assert info.value.errno == errno.EINVAL  # tipc_sk_leave: not in a group
        s.setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, struct.pack("4I", GROUP + 1, 7, 2, 0))
        assert s.getsockopt(SOL_TIPC, TIPC_GROUP_JOIN) == GROUP + 1
        for call, code in [
            (lambda: s.setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, struct.pack("4I", GROUP, 1, 2, 0)),
             errno.EACCES),  # already a member
            (lambda: s.bind((TIPC_ADDR_NAME, 5000, 1, 0)), errno.EACCES),
            (lambda: s.connect((TIPC_ADDR_NAME, 5000, 1, 0)), errno.EINVAL),
            (lambda: s.send(b"alone"), errno.EHOSTUNREACH),
            (lambda: s.sendto(b"x", (TIPC_ADDR_NAME, GROUP + 1, 3, 0)), errno.EHOSTUNREACH),
            (lambda: s.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, 1), errno.EINVAL),
        ]:  # fmt: skip
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == code
        assert tipcshm.wait_for_service((TIPC_ADDR_NAME, GROUP + 1, 7, 0), 5, node=node)
        s.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, None, 0)
        assert s.getsockopt(SOL_TIPC, TIPC_GROUP_JOIN) == 0
        s.bind((TIPC_ADDR_NAME, 5000, 1, 0))  # an ordinary socket again


def test_loopback_sees_its_own_join_and_broadcasts(node: str) -> None:
    with member(node, 3, EVTS | TIPC_GROUP_LOOPBACK, GROUP + 2) as s:
        flags, src = next_event(s)
        assert not flags & MSG_EOR and src == addr(s)
        assert s.send(b"to all") == 6
        assert s.recvfrom(100) == (b"to all", addr(s))


def test_members_exchange_broadcast_unicast_anycast_multicast(node: str) -> None:
    g = GROUP + 3
    with member(node, 1, group=g) as a, member(node, 2, group=g) as b:
        # each sees the other join (binding and JOIN both seen)
        assert next_event(a)[1] == addr(b)
        assert next_event(b)[1] == addr(a)
        a.send(b"bcast")
        a.sendto(b"ucast", (TIPC_ADDR_ID, addr(b)[1], addr(b)[2], 0))
        a.sendto(b"any", (TIPC_ADDR_NAME, g, 2, 0))
        a.sendto(b"mcast", (TIPC_ADDR_NAMESEQ, g, 2, 2))
        got = [b.recvfrom(100) for _ in range(4)]
        assert got == [(m, addr(a)) for m in (b"bcast", b"ucast", b"any", b"mcast")]
        with pytest.raises(OSError) as info:
            a.sendto(b"x", (TIPC_ADDR_NAME, g, 9, 0))
        assert info.value.errno == errno.EHOSTUNREACH
        with pytest.raises(BlockingIOError):
            a.recv(10, MSG_DONTWAIT)
        b.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, None, 0)
        flags, src = next_event(a)
        assert flags & MSG_EOR and src == addr(b)
        with pytest.raises(OSError) as info:
            a.send(b"alone again")
        assert info.value.errno == errno.EHOSTUNREACH


def test_close_and_group_object(node: str) -> None:
    g = GROUP + 4
    with tipcshm.Group(g, 10, node=node) as x:
        with tipcshm.Group(g, 20, node=node) as y:
            assert x.recv(timeout=10).event == "join"
            m = y.recv(timeout=10)
            assert (m.event, m.instance, (m.node, m.port)) == ("join", 10, x.address)
            assert [(p.instance, (p.node, p.port)) for p in x.members()] == [(20, y.address)]
            x.broadcast(b"one")
            x.multicast(20, b"two")
            x.anycast(20, b"three")
            x.unicast(y.address, b"four")
            got = [y.recv(timeout=10) for _ in range(4)]
            assert [(r.data, r.instance, r.event) for r in got] == [
                (b"one", 10, None),
                (b"two", 10, None),
                (b"three", 10, None),
                (b"four", 10, None),
            ]
        m = x.recv(timeout=10)
        assert m.event == "leave" and m.instance == 20
        assert x.members() == []
