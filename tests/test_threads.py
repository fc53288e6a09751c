"""A socket used from several threads behaves as a kernel socket does: one thread
receives while another sends; close() from another thread wakes a blocked call, which
raises OSError(EBADF) at once; fileno() after close() is -1."""

from __future__ import annotations

import errno
import select
import threading
import time
from collections.abc import Callable

import pytest
from helpers import Child

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM, TIPC_ADDR_NAME
from tipcshm.errors import SocketClosed

SERVICE = 18900
pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file

WAIT = 5.0


def name(instance: int = 1) -> tuple[int, int, int, int]:
    return (TIPC_ADDR_NAME, SERVICE, instance, 0)


def pair(node: str, kind: int) -> tuple[tipcshm.socket, tipcshm.socket, tipcshm.socket]:
    ls = tipcshm.socket(AF_TIPC, kind, node=node)
    ls.bind(name())
    ls.listen(8)
    c = tipcshm.socket(AF_TIPC, kind, node=node)
    c.setblocking(False)
    with pytest.raises(BlockingIOError):
        c.connect(name())
    a, _ = ls.accept()
    c.setblocking(True)
    c.settimeout(WAIT)
    c.send(b"")  # waits for the connect's answer
    return ls, c, a


def closed_while_blocked(sock: tipcshm.socket, call: Callable[[], object]) -> float:
    """Run ``call`` in a thread, close ``sock`` from this one once the thread is blocked;
    returns how long the call took to end after close(), and checks it raised EBADF."""
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    started.wait(WAIT)
    time.sleep(0.2)  # let it block: a close before the call would prove nothing
    assert t.is_alive(), f"{call} did not block"
    closed_at = time.monotonic()
    sock.close()
    t.join(WAIT)
    took = time.monotonic() - closed_at
    assert not t.is_alive(), "the blocked call did not wake up"
    err = outcome[0]
    assert isinstance(err, SocketClosed) and err.errno == errno.EBADF, repr(err)
    return took


@pytest.fixture(params=[False, True], ids=["plain", "select-mode"])
def select_mode(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_close_wakes_a_blocked_rdm_recv(node: str, select_mode: bool) -> None:
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    if select_mode:
        s.fileno()
    assert closed_while_blocked(s, lambda: s.recv(10)) < 1.0
    assert s.fileno() == -1


def test_close_wakes_a_blocked_accept(node: str, select_mode: bool) -> None:
    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind(name())
    ls.listen(4)
    if select_mode:
        ls.fileno()
    assert closed_while_blocked(ls, ls.accept) < 1.0
    assert ls.fileno() == -1


@pytest.mark.parametrize("kind", [SOCK_SEQPACKET, SOCK_STREAM], ids=["seqpacket", "stream"])
def test_close_wakes_a_blocked_conn_recv(node: str, select_mode: bool, kind: int) -> None:
    ls, c, a = pair(node, kind)
    with ls, c:
        if select_mode:
            a.fileno()
        assert closed_while_blocked(a, lambda: a.recv(10)) < 1.0


def test_close_wakes_a_send_blocked_on_the_window(node: str, select_mode: bool) -> None:
    ls, c, a = pair(node, SOCK_SEQPACKET)
    with ls, a:
        c.settimeout(None)
        if select_mode:
            c.fileno()

        def flood() -> None:
            while True:
                c.send(b"z" * 100)  # nobody reads: the window closes, send blocks

        assert closed_while_blocked(c, flood) < 1.0


def test_close_wakes_a_blocked_connect(node: str, select_mode: bool) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as ls:
        ls.bind(name())
        ls.listen(4)  # never accepts: the connect waits for an answer
        c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
        if select_mode:
            c.fileno()
        assert closed_while_blocked(c, lambda: c.connect(name())) < 1.0


def test_fileno_after_close_is_minus_one(node: str) -> None:
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    s.close()
    assert s.fileno() == -1
    c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    fd = c.fileno()
    assert fd >= 0
    c.close()
    assert c.fileno() == -1


@pytest.mark.parametrize("kind", [SOCK_SEQPACKET, SOCK_STREAM], ids=["seqpacket", "stream"])
def test_one_thread_receives_while_another_sends(node: str, select_mode: bool, kind: int) -> None:
    """Echo through the peer: this socket's sends and its receives run in two threads."""
    n = 2000
    ls, c, a = pair(node, kind)
    with ls, c, a:
        if select_mode:
            c.fileno()
        a.settimeout(WAIT)

        def echo() -> None:
            got = 0
            while got < n * 4:
                data = a.recv(65536)
                if not data:
                    return
                a.sendall(data)
                got += len(data)

        received = bytearray()

        def receive() -> None:
            while len(received) < n * 4:
                received.extend(c.recv(65536))

        threads = [threading.Thread(target=echo), threading.Thread(target=receive)]
        for t in threads:
            t.start()
        for i in range(n):
            c.sendall(i.to_bytes(4, "big"))
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        assert bytes(received) == b"".join(i.to_bytes(4, "big") for i in range(n))


PRODUCER = """
import random

s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
rng = random.Random({seed})
print("ready", flush=True)
sys.stdin.readline()
for i in range({count}):
    s.sendto(b"%d:%d" % ({seed}, i), (tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
    if rng.random() < 0.02:
        time.sleep(rng.random() * 0.002)
s.close()
print("done", flush=True)
"""


def test_select_loop_with_producer_processes_loses_no_wakeup(node: str) -> None:
    """Every select() readiness is followed by a recv that does not block (no spurious
    readable), and every message comes (no lost wake-up)."""
    producers, count = 2, 2500
    srv = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    srv.bind(name())
    srv.settimeout(0.5)  # a recv after readiness that would block shows as a failure
    children = [
        Child(node, PRODUCER.format(seed=k, count=count, service=SERVICE)) for k in range(producers)
    ]
    try:
        for ch in children:
            ch.expect("ready")
        for ch in children:
            ch.send("go")
        seen = {k: 0 for k in range(producers)}
        fd = srv.fileno()
        for _ in range(producers * count):
            r, _, _ = select.select([fd], [], [], WAIT)
            assert r, f"lost wake-up after {sum(seen.values())} messages"
            k, i = map(int, srv.recv(100).split(b":"))
            assert i == seen[k]  # in order per sender
            seen[k] += 1
        for ch in children:
            ch.expect("done")
        assert not select.select([fd], [], [], 0)[0]  # drained: not readable
    finally:
        for ch in children:
            ch.close()
        srv.close()


@pytest.mark.parametrize("kind", [SOCK_SEQPACKET, SOCK_STREAM], ids=["seqpacket", "stream"])
def test_both_ways_at_once_with_full_rings(node: str, kind: int) -> None:
    """Each end sends large messages while another of its threads reads: the rings into
    both ends fill with data, and each reader's acks must still reach the other end (an
    ack that waited for room in a full ring waited for the other reader, which waited
    likewise: a stall of seconds and a lost ack)."""
    count, size = 160, 60000
    ls, c, a = pair(node, kind)
    with ls, c, a:
        a.settimeout(WAIT)
        c.settimeout(WAIT)
        errors: list[BaseException] = []
        totals = {id(c): 0, id(a): 0}

        def send(s: tipcshm.socket) -> None:
            try:
                for _ in range(count):
                    s.sendall(bytes(size))
            except BaseException as exc:  # reported by the test, not the thread hook
                errors.append(exc)

        def receive(s: tipcshm.socket) -> None:
            try:
                while totals[id(s)] < count * size:
                    totals[id(s)] += len(s.recv(65536))
            except BaseException as exc:
                errors.append(exc)

        senders = [threading.Thread(target=send, args=(s,)) for s in (c, a)]
        readers = [threading.Thread(target=receive, args=(s,)) for s in (c, a)]
        for t in senders:
            t.start()
        # Readers start once both rings are nearly full, so that every ack meets a full
        # ring that the other side's sender refills as soon as its reader frees room.
        deadline = time.monotonic() + WAIT
        while any(s._inbox.fill()[0] < s._inbox.lane_bytes * 0.8 for s in (c, a)):
            if time.monotonic() > deadline:
                break  # (a window may close first: then this is a plain two-way test)
            time.sleep(0.01)
        for t in readers:
            t.start()
        threads = senders + readers
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert totals == {id(c): count * size, id(a): count * size}
