"""fileno() readiness is level-triggered and exact, as a kernel TIPC socket's (tipc_poll).

Every state is read four ways (select.select, select.poll, select.epoll, selectors) and
the four must agree. A change made by this thread's own call shows when the call returns;
one made by another socket (a message, a SYN, the peer's end) shows once the reactor has
seen the doorbell, so those are awaited with a bounded wait, never a sleep.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import select
import selectors
import socket as stdlib_socket
import threading
import time

import pytest

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM, TIPC_ADDR_NAME

pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file

SERVICE = 18800
WAIT = 5.0  # longest wait for a change another socket made (fails the test, never hangs)


def state(fd: int) -> tuple[bool, bool]:
    """(readable, writable), the same through select, poll, epoll and selectors."""
    r, w, _ = select.select([fd], [fd], [], 0)
    via_select = (bool(r), bool(w))
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLOUT)
    pm = dict(p.poll(0)).get(fd, 0)
    via_poll = (bool(pm & (select.POLLIN | select.POLLHUP)), bool(pm & select.POLLOUT))
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN | select.EPOLLOUT)
        em = dict(ep.poll(0)).get(fd, 0)
    finally:
        ep.close()
    via_epoll = (bool(em & (select.EPOLLIN | select.EPOLLHUP)), bool(em & select.EPOLLOUT))
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ | selectors.EVENT_WRITE)
        got = sel.select(0)
        sm = got[0][1] if got else 0
    via_selectors = (bool(sm & selectors.EVENT_READ), bool(sm & selectors.EVENT_WRITE))
    if pm & select.POLLHUP:  # EpollSelector reports any event but EPOLLIN as EVENT_WRITE,
        via_selectors = (via_selectors[0], via_poll[1])  # for kernel sockets too
    assert via_select == via_poll == via_epoll == via_selectors, (
        via_select,
        via_poll,
        via_epoll,
        via_selectors,
    )
    return via_select


def hung_up(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(dict(p.poll(0)).get(fd, 0) & select.POLLHUP)


def await_readable(fd: int) -> None:
    assert select.select([fd], [], [], WAIT)[0], "fileno() did not turn readable"


def await_writable(fd: int) -> None:
    assert select.select([], [fd], [], WAIT)[1], "fileno() did not turn writable"


def name(instance: int = 1) -> tuple[int, int, int, int]:
    return (TIPC_ADDR_NAME, SERVICE, instance, 0)


# -- RDM -----------------------------------------------------------------------------


def test_rdm_readable_exactly_while_a_message_is_queued(node: str) -> None:
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
    ):
        srv.bind(name())
        fd = srv.fileno()
        assert state(fd) == (False, True)  # nothing queued; RDM is always writable
        cli.sendto(b"one", name())
        await_readable(fd)
        assert state(fd) == (True, True)
        assert srv.recv(100) == b"one"
        assert state(fd) == (False, True)  # drained: not readable any more, at once
        cli.sendto(b"a", name())
        cli.sendto(b"b", name())
        await_readable(fd)
        assert srv.recv(100) == b"a"
        assert state(fd) == (True, True)  # one left
        assert srv.recv(100) == b"b"
        assert state(fd) == (False, True)
        assert not hung_up(fd)


def test_a_collected_socket_never_unwatches_the_one_reusing_its_key() -> None:
    """The reactor keys sockets by a descriptor number. A closed socket gives its number
    back, but its weak reference may outlive the entry (the reactor's loop may still hold
    the entry); its later collection notice must not unwatch the socket that reuses the
    number (seen: the reactor stopped with a live socket watched, and acks went unseen)."""
    from tipcshm import readiness

    class Watched:
        def _sel_evaluate(self) -> bool:
            return True

    r, w = os.pipe()
    try:
        first = Watched()
        key = readiness.watch(first, r)
        reactor = readiness._reactor
        assert reactor is not None
        held = reactor.entries[key]  # as the reactor's loop may hold it
        readiness.unwatch(key)
        second = Watched()
        again = readiness.watch(second, r)
        try:
            assert again == key, "the descriptor number was not reused; nothing to check"
            del first
            gc.collect()
            deadline = time.monotonic() + 10
            while readiness._dead:  # the reactor acts on the collection notice
                assert time.monotonic() < deadline
                time.sleep(0.005)
            live = readiness._reactor
            assert live is not None and key in live.entries, "the reused key was unwatched"
        finally:
            readiness.unwatch(again)
            del held
    finally:
        os.close(r)
        os.close(w)


def test_rdm_peek_keeps_it_readable(node: str) -> None:
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
    ):
        srv.bind(name())
        fd = srv.fileno()
        cli.sendto(b"x", name())
        await_readable(fd)
        assert srv.recv(10, stdlib_socket.MSG_PEEK) == b"x"
        assert state(fd) == (True, True)
        assert srv.recv(10) == b"x"
        assert state(fd) == (False, True)


def test_rdm_returned_message_makes_it_readable(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli:
        cli.setsockopt(tipcshm.SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
        fd = cli.fileno()
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv:
            srv.bind(name())
            cli.sendto(b"back", name())
        await_readable(fd)  # srv closed unread: the message came back
        data, anc, _flags, _addr = cli.recvmsg(100, 1024)
        assert data == b"" and anc
        assert state(fd) == (False, True)


def test_rdm_shutdown_as_the_kernel(node: str) -> None:
    """tipc_shutdown on a connectionless socket: queued messages go back with
    TIPC_ERR_CONN_SHUTDOWN, sk_shutdown is set (POLLIN|POLLHUP, still POLLOUT), and the
    call says ENOTCONN; a blocking recv then gives ENOTCONN, a non-blocking one EAGAIN."""
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
    ):
        srv.bind(name())
        cli.setsockopt(tipcshm.SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
        fd = srv.fileno()
        cli.sendto(b"queued", name())
        await_readable(fd)
        with pytest.raises(OSError) as e:
            srv.shutdown(stdlib_socket.SHUT_RDWR)
        assert e.value.errno == errno.ENOTCONN
        assert state(fd) == (True, True)
        assert hung_up(fd)
        srv.settimeout(1)
        with pytest.raises(OSError) as e:
            srv.recv(10)
        assert e.value.errno == errno.ENOTCONN
        with pytest.raises(BlockingIOError):
            srv.recv(10, stdlib_socket.MSG_DONTWAIT)
        cli.settimeout(WAIT)
        data, anc, _flags, _addr = cli.recvmsg(100, 1024)
        errinfo = [a for a in anc if a[1] == tipcshm.TIPC_ERRINFO]
        assert data == b"" and errinfo
        assert int.from_bytes(errinfo[0][2][:4], "little") == 5  # TIPC_ERR_CONN_SHUTDOWN
        with pytest.raises(OSError) as e:
            srv.shutdown(0)
        assert e.value.errno == errno.EINVAL


def test_rdm_node_stop_makes_it_readable(node_name: str) -> None:
    from tipcshm.testing import start_node, stop_node

    start_node(node_name)
    try:
        s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node_name)
        fd = s.fileno()
        assert state(fd) == (False, True)
    finally:
        stop_node(node_name)
    try:
        await_readable(fd)  # the next call fails at once: it must not be slept on
        with pytest.raises(OSError):
            s.recv(10)
    finally:
        s.close()


# -- connections ---------------------------------------------------------------------


@pytest.fixture(params=[SOCK_SEQPACKET, SOCK_STREAM], ids=["seqpacket", "stream"])
def kind(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def connected(node: str, kind: int) -> tuple[tipcshm.socket, tipcshm.socket, tipcshm.socket]:
    ls = tipcshm.socket(AF_TIPC, kind, node=node)
    ls.bind(name())
    ls.listen(8)
    c = tipcshm.socket(AF_TIPC, kind, node=node)
    c.setblocking(False)  # the answer comes from accept(), in this same thread
    with pytest.raises(BlockingIOError):
        c.connect(name())
    a, _ = ls.accept()
    await_writable(c.fileno())
    c.setblocking(True)
    return ls, c, a


def test_listener_readable_while_a_connection_is_pending(node: str, kind: int) -> None:
    with tipcshm.socket(AF_TIPC, kind, node=node) as ls:
        fd = ls.fileno()
        assert state(fd) == (False, True)  # OPEN: writable, as tipc_poll says
        ls.bind(name())
        ls.listen(8)
        assert state(fd) == (False, False)  # LISTEN is never writable
        with tipcshm.socket(AF_TIPC, kind, node=node) as c:
            c.setblocking(False)
            cfd = c.fileno()
            with pytest.raises(BlockingIOError):
                c.connect(name())
            assert state(cfd) == (False, False)  # CONNECTING: neither
            await_readable(fd)
            assert state(fd) == (True, False)
            a, _ = ls.accept()
            assert state(fd) == (False, False)
            await_writable(cfd)  # the answer came: ESTABLISHED
            assert state(cfd) == (False, True)
            a.close()


def test_connection_readable_exactly_while_data_is_queued(node: str, kind: int) -> None:
    ls, c, a = connected(node, kind)
    with ls, c, a:
        fd = a.fileno()
        assert state(fd) == (False, True)
        c.send(b"one")
        await_readable(fd)
        assert state(fd) == (True, True)
        assert a.recv(100) == b"one"
        assert state(fd) == (False, True)
        c.send(b"a")
        c.send(b"b")
        await_readable(fd)
        # one recv of a STREAM may take both: then nothing is left, as the kernel's
        first = a.recv(1)
        assert first == b"a"
        assert state(fd) == (True, True)
        assert a.recv(100) == b"b"
        assert state(fd) == (False, True)


def test_acks_and_probes_do_not_make_it_readable(node: str, kind: int) -> None:
    """The peer's acks arrive in the sender's inbox; they are not for recv."""
    ls, c, a = connected(node, kind)
    with ls, c, a:
        cfd = c.fileno()
        for _ in range(300):  # more than one ack's worth (an ack per 128 read)
            c.send(b"x" * 10)
        got = 0
        a.settimeout(WAIT)
        while got < 3000:
            got += len(a.recv(3000 - got))
        end = time.monotonic() + WAIT
        while c._conn.snt_unacked >= 300 - 128 and time.monotonic() < end:
            select.select([], [cfd], [], 0.05)  # the reactor takes the acks
        assert c._conn.snt_unacked < 300 - 128
        assert state(cfd) == (False, True)


def test_window_full_is_not_writable(node: str, kind: int) -> None:
    ls, c, a = connected(node, kind)
    with ls, c, a:
        c.setblocking(False)
        cfd = c.fileno()
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                sent += c.send(b"y" * 1000)
        assert state(cfd) == (False, False)  # the window (or the peer's ring) is full
        a.settimeout(WAIT)
        got = 0
        while got < sent:
            got += len(a.recv(65536))
        await_writable(cfd)
        assert state(cfd) == (False, True)


@pytest.mark.parametrize("ending", ["close", "shutdown"])
def test_peer_end_is_readable_and_hung_up(node: str, kind: int, ending: str) -> None:
    ls, c, a = connected(node, kind)
    with ls, c, a:
        fd = a.fileno()
        c.send(b"last")
        getattr(c, ending)(*(() if ending == "close" else (stdlib_socket.SHUT_RDWR,)))
        await_readable(fd)
        # The ending waits behind the data in the ring (readiness.py: residual), so
        # DISCONNECTING shows once the data was read: POLLIN | POLLHUP, no POLLOUT.
        assert a.recv(100) == b"last"
        assert state(fd) == (True, False)
        assert hung_up(fd)
        assert state(fd) == (True, False)  # for good, as the kernel's
        if ending == "shutdown":
            cfd = c.fileno()
            assert state(cfd) == (True, False) and hung_up(cfd)


def test_refused_connect_is_readable_and_hung_up(node: str) -> None:
    ls = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    ls.bind(name())
    ls.listen(8)
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
        c.setblocking(False)
        fd = c.fileno()
        with pytest.raises(BlockingIOError):
            c.connect(name())
        assert state(fd) == (False, False)
        ls.close()  # the pending SYN is refused
        await_readable(fd)
        assert state(fd) == (True, False)
        assert hung_up(fd)
        assert c.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ERROR) == (
            errno.ECONNREFUSED
        )


# -- the classic loops ---------------------------------------------------------------


def test_blocking_select_rdm_server_loop_never_hangs(node: str) -> None:
    n = 400
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
    ):
        srv.bind(name())
        srv.settimeout(WAIT)  # a recv that would block fails the test instead of hanging

        def produce() -> None:
            for i in range(n):
                cli.sendto(b"%d" % i, name())
                if i % 37 == 0:
                    time.sleep(0.001)

        t = threading.Thread(target=produce)
        t.start()
        got = []
        try:
            while len(got) < n:
                r, _, _ = select.select([srv], [], [], WAIT)
                assert r, f"select hung after {len(got)} messages"
                got.append(int(srv.recv(100)))
        finally:
            t.join(WAIT)
        assert got == list(range(n))
        assert state(srv.fileno()) == (False, True)


def test_blocking_select_accept_recv_server_loop_never_hangs(node: str, kind: int) -> None:
    clients, per = 30, 3
    ls = tipcshm.socket(AF_TIPC, kind, node=node)
    ls.bind(name())
    ls.listen(64)
    ls.settimeout(WAIT)

    def client(i: int) -> None:
        with tipcshm.socket(AF_TIPC, kind, node=node) as c:
            c.connect(name())
            for j in range(per):
                c.sendall(b"%d.%d;" % (i, j))
            c.shutdown(stdlib_socket.SHUT_RDWR)

    threads = []
    conns: list[tipcshm.socket] = []
    received = bytearray()
    ended = 0
    try:
        for i in range(clients):
            threads.append(threading.Thread(target=client, args=(i,)))
            threads[-1].start()
        while ended < clients:
            r, _, _ = select.select([ls, *conns], [], [], WAIT)
            assert r, f"select hung with {ended} connections ended"
            for s in r:
                if s is ls:
                    a, _ = ls.accept()  # must not block: select said readable
                    a.settimeout(WAIT)
                    conns.append(a)
                    continue
                data = s.recv(4096)
                if data:
                    received += data
                else:
                    conns.remove(s)
                    s.close()
                    ended += 1
    finally:
        for t in threads:
            t.join(WAIT)
        for s in conns:
            s.close()
        ls.close()
    assert sorted(received.decode().split(";")[:-1]) == sorted(
        f"{i}.{j}" for i in range(clients) for j in range(per)
    )


def test_asyncio_add_reader_on_an_idle_socket_uses_no_cpu(node: str) -> None:
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
    ):
        srv.bind(name())
        srv.setblocking(False)

        async def main() -> tuple[float, bytes]:
            loop = asyncio.get_running_loop()
            got: asyncio.Future[bytes] = loop.create_future()
            calls = 0

            def on_readable() -> None:
                nonlocal calls
                calls += 1
                if not got.done():
                    got.set_result(srv.recv(100))

            loop.add_reader(srv.fileno(), on_readable)
            try:
                cpu = time.process_time()
                await asyncio.sleep(1.0)  # idle: the reader must not fire, nothing spins
                used = time.process_time() - cpu
                assert calls == 0
                cli.sendto(b"wake", name())
                return used, await asyncio.wait_for(got, WAIT)
            finally:
                loop.remove_reader(srv.fileno())

        used, data = asyncio.run(main())
        assert data == b"wake"
        # Busy polling would burn most of the second; an idle loop uses a few ms.
        assert used < 0.2, f"{used:.3f} s of CPU in 1 s of idling"
