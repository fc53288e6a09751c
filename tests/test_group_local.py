"""Communication groups on one node, across processes: the guarantees of issue 13.

Members live in separate processes (tests/group_agent.py, driven line by line) and in
this one, and use the stdlib-style API (setsockopt TIPC_GROUP_JOIN, send/sendto,
recvmsg), as a program written for kernel TIPC would:

- membership: a member is announced (TIPC_GROUP_MEMBER_EVTS) once; its leave, close or
  death (kill -9, within 100 ms) is announced at the others; with TIPC_GROUP_LOOPBACK a
  socket sees its own join; a leave is announced after every message sent before it;
- ordering: broadcasts, unicasts, multicasts and anycasts of one sender arrive in order;
- flow control: a fast broadcaster to a member that does not read blocks (or gets
  BlockingIOError), loses and overwrites nothing, and its unicasts to a third member
  still flow;
- scale: 64 members all broadcasting, everything delivered exactly once and in order.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tipcshm
from tipcshm.constants import (
    MSG_EOR,
    MSG_OOB,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_CLUSTER_SCOPE,
    TIPC_GROUP_JOIN,
    TIPC_GROUP_LOOPBACK,
    TIPC_GROUP_MEMBER_EVTS,
)

GROUP = 5100
ROOT = Path(__file__).resolve().parent.parent
EVTS = TIPC_GROUP_MEMBER_EVTS


class Agent:
    """A member process (tests/group_agent.py)."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.group_agent", node],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.node = 0
        self.port = 0

    def call(self, op: str, **kw: Any) -> Any:
        self.start(op, **kw)
        return self.answer()

    def start(self, op: str, **kw: Any) -> None:
        """Send a command without waiting for its answer (:meth:`answer` reads it)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"agent {self.proc.pid} ended (rc {self.proc.poll()})"
        got = json.loads(line)
        assert "error" not in got, got["error"]
        return got["ok"]

    def join(self, instance: int, flags: int = EVTS, type: int = GROUP) -> Agent:
        self.node, self.port = self.call("join", type=type, instance=instance, flags=flags)
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Ask it to end (it may be stuck in a blocking send: then it is killed)."""
        if self.proc.poll() is None:
            try:
                self.start("exit")
                self.proc.wait(timeout=5)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for a in made:
        a.close()


def _agent(agents: list[Agent], node: str) -> Agent:
    a = Agent(node)
    agents.append(a)
    return a


def _join(node: str, instance: int, flags: int = EVTS, type: int = GROUP) -> Any:
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    s.setsockopt(
        SOL_TIPC, TIPC_GROUP_JOIN, struct.pack("4I", type, instance, TIPC_CLUSTER_SCOPE, flags)
    )
    return s


def _item(s: Any, timeout: float = 10.0) -> tuple[str, bytes, int, int]:
    s.settimeout(timeout)
    data, _anc, flags, addr = s.recvmsg(70000)
    kind = "msg"
    if flags & MSG_OOB:
        kind = "leave" if flags & MSG_EOR else "join"
    assert addr[0] == TIPC_ADDR_ID
    return kind, data, addr[1], addr[2]


def _nothing_now(s: Any) -> bool:
    s.setblocking(False)
    try:
        s.recvmsg(70000)
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)
    return False


# -- membership -----------------------------------------------------------------------


def test_a_member_is_announced_once(node: str, agents: list[Agent]) -> None:
    with _join(node, 1) as s:
        b = _agent(agents, node).join(2)
        assert _item(s) == ("join", b"", b.node, b.port)
        assert b.call("bcast", data="after") == 1
        # the next item is the message: no second join
        assert _item(s) == ("msg", b"after", b.node, b.port)
        got = b.call("recv", count=1)  # b sees s, which joined before it, once too
        assert got == [["join", "", s.getsockname()[1], s.getsockname()[2]]]


def test_leave_close_and_kill_are_announced(node: str, agents: list[Agent]) -> None:
    with _join(node, 1) as s:
        b, c, d = (_agent(agents, node).join(i) for i in (2, 3, 4))
        joined = {(_item(s)[2:]) for _ in range(3)}
        assert joined == {(x.node, x.port) for x in (b, c, d)}
        b.call("leave")
        assert _item(s) == ("leave", b"", b.node, b.port)
        c.call("close")
        assert _item(s) == ("leave", b"", c.node, c.port)
        t0 = time.monotonic()
        os.kill(d.proc.pid, signal.SIGKILL)
        assert _item(s, timeout=5.0) == ("leave", b"", d.node, d.port)
        took = time.monotonic() - t0
        assert took < 0.1, f"leave of a killed member took {took * 1000:.0f} ms"


def test_loopback_sees_its_own_join(node: str) -> None:
    with _join(node, 1, flags=EVTS | TIPC_GROUP_LOOPBACK) as s:
        own = s.getsockname()
        assert _item(s) == ("join", b"", own[1], own[2])
        s.send(b"to all, me too")
        assert _item(s) == ("msg", b"to all, me too", own[1], own[2])


def test_no_join_events_without_member_evts(node: str, agents: list[Agent]) -> None:
    with _join(node, 1, flags=0) as s:
        b = _agent(agents, node).join(2)
        b.call("bcast", data="first")
        assert _item(s) == ("msg", b"first", b.node, b.port)


def test_leave_comes_after_every_message_sent_before(node: str, agents: list[Agent]) -> None:
    with _join(node, 1) as s:
        b = _agent(agents, node).join(2)
        assert _item(s)[0] == "join"
        n = 200  # more than one window: the sender waits for this reader
        b.start("bcast", data="m", count=n)
        b.start("leave")
        got = [_item(s) for _ in range(n + 1)]
        assert b.answer() == n and b.answer() == 0
        assert [g[1] for g in got[:n]] == [f"m.{i}".encode() for i in range(n)]
        assert got[n] == ("leave", b"", b.node, b.port)


# -- ordering ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_one_sender_mixing_every_kind_of_send_is_received_in_order(
    node: str, agents: list[Agent]
) -> None:
    with _join(node, 7) as s:
        own = s.getsockname()
        c = _agent(agents, node).join(8)  # another member: broadcasts are not unicasts
        b = _agent(agents, node).join(9)
        assert {_item(s)[0] for _ in range(2)} == {"join"}
        sent = []
        for i in range(60):
            kind = i % 4
            data = f"{kind}.{i}"
            if kind == 0:
                b.call("bcast", data=data)
            elif kind == 1:
                b.call("ucast", data=data, node=own[1], port=own[2])
            elif kind == 2:
                b.call("mcast", data=data, type=GROUP, instance=7)
            else:
                b.call("acast", data=data, type=GROUP, instance=7)
            sent.append(data.encode())
        got = [_item(s) for _ in range(len(sent))]
        assert [g[1] for g in got] == sent
        assert {(g[2], g[3]) for g in got} == {(b.node, b.port)}
        # c got the broadcasts only, in order, after the join events
        bcasts = [d.decode() for d in sent if d.startswith(b"0.")]
        items = c.call("recv", count=2 + len(bcasts))
        assert [i[1] for i in items if i[0] == "msg"] == bcasts


# -- flow control -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_slow_member_blocks_a_fast_broadcaster_and_loses_nothing(
    node: str, agents: list[Agent]
) -> None:
    with _join(node, 1) as slow:
        fast = _agent(agents, node).join(2)
        third = _agent(agents, node).join(3)
        assert {_item(slow)[0] for _ in range(2)} == {"join"}
        third.call("recv", count=2)  # its join events
        # the slow member reads nothing: non-blocking broadcasts stop at its window
        sent = fast.call("bcast", data="b", count=5000, nonblock=True)
        assert 0 < sent < 5000
        # blocked for the group, but a unicast to the third member still goes through
        assert fast.call("ucast", data="u", node=third.node, port=third.port) == 1
        got = third.call("recv", count=sent + 1)
        assert [g[1] for g in got] == [f"b.{i}" for i in range(sent)] + ["u"]
        # the slow member now reads everything: in order, nothing lost or overwritten
        for i in range(sent):
            assert _item(slow) == ("msg", f"b.{i}".encode(), fast.node, fast.port)
        assert _nothing_now(slow)
        more = fast.call("bcast", data="c", count=50)  # blocking: goes through now
        assert more == 50
        for i in range(50):
            assert _item(slow)[1] == f"c.{i}".encode()


def test_a_blocking_broadcaster_waits_for_the_slow_member(node: str, agents: list[Agent]) -> None:
    with _join(node, 1) as slow:
        fast = _agent(agents, node).join(2)
        assert _item(slow)[0] == "join"
        n = 3000
        assert fast.proc.stdin is not None
        fast.proc.stdin.write(json.dumps({"op": "bcast", "data": "x", "count": n}) + "\n")
        fast.proc.stdin.flush()
        time.sleep(0.3)  # the sender runs into the window meanwhile (not a sync point)
        for i in range(n):
            assert _item(slow)[1] == f"x.{i}".encode()
        assert fast.proc.stdout is not None
        assert json.loads(fast.proc.stdout.readline()) == {"ok": n}


# -- scale ------------------------------------------------------------------------------

SCALE_CHILD = textwrap.dedent(
    """
    import struct, sys, threading, time, tipcshm
    from tipcshm.constants import *
    node, group, first, count, n, members = sys.argv[1], *map(int, sys.argv[2:7])
    socks = []
    for i in range(first, first + count):
        s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        s.setsockopt(SOL_TIPC, TIPC_GROUP_JOIN,
                     struct.pack("4I", group, i, TIPC_CLUSTER_SCOPE, TIPC_GROUP_MEMBER_EVTS))
        socks.append(s)
    print("joined", flush=True)
    sys.stdin.readline()  # go
    errors = []

    def member(s):
        own = s.getsockname()[2]
        want = (members - 1) * n
        seen = {}
        joins = 0
        got = 0
        sent = 0
        s.setblocking(False)
        deadline = time.monotonic() + 120
        while got < want or sent < n:
            if time.monotonic() > deadline:
                errors.append(f"{own}: sent {sent} got {got} of {want}")
                return
            if sent < n:
                try:
                    s.send(b"%d.%d" % (own, sent))
                    sent += 1
                except BlockingIOError:
                    pass
            while True:
                try:
                    data, _a, flags, addr = s.recvmsg(100)
                except BlockingIOError:
                    if sent >= n:
                        s.settimeout(1.0)
                        try:
                            data, _a, flags, addr = s.recvmsg(100)
                        except TimeoutError:
                            break
                        finally:
                            s.setblocking(False)
                    else:
                        break
                if flags & MSG_OOB:
                    joins += 1
                    continue
                port, seq = map(int, data.split(b"."))
                if port != addr[2] or seen.get(port, -1) + 1 != seq:
                    errors.append(f"{own}: from {addr[2]} got {data!r} after {seen.get(port)}")
                    return
                seen[port] = seq
                got += 1
        if got != want:
            errors.append(f"{own}: got {got} of {want}")

    threads = [threading.Thread(target=member, args=(s,)) for s in socks]
    for t in threads: t.start()
    for t in threads: t.join()
    print("errors" if errors else "ok", *errors[:5], flush=True)
    sys.stdin.readline()  # leave after everyone is done
    """
)


@pytest.mark.timeout(300)
def test_sixty_four_members_all_broadcasting(node: str) -> None:
    procs, per, n = 8, 8, 30
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCALE_CHILD,
                node,
                str(GROUP),
                str(k * per),
                str(per),
                str(n),
                str(procs * per),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(procs)
    ]
    try:
        for c in children:
            assert c.stdout is not None and c.stdout.readline().strip() == "joined"
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        results = []
        for c in children:
            assert c.stdout is not None
            results.append(c.stdout.readline().strip())
        assert results == ["ok"] * procs, results
        for c in children:
            assert c.stdin is not None
            c.stdin.write("done\n")
            c.stdin.flush()
        for c in children:
            assert c.wait(timeout=60) == 0
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
