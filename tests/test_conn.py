"""Connection sockets (SOCK_SEQPACKET, SOCK_STREAM) on a real node, across real processes."""

from __future__ import annotations

import errno
import hashlib
import random
import selectors
import socket
import struct
import threading
import time

import pytest
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
)
from tipcshm.constants import MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, MSG_WAITALL
from tipcshm.testing import stop_node

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node

SERVICE = 6000


def sock(node: str, kind: int = SOCK_SEQPACKET) -> tipcshm.Socket:
    return tipcshm.socket(AF_TIPC, kind, node=node)


def listener(node: str, kind: int = SOCK_SEQPACKET, instance: int = 1) -> tipcshm.Socket:
    s = sock(node, kind)
    s.bind((TIPC_ADDR_NAME, SERVICE, instance, 0))
    s.listen(16)
    return s


def connect_in_thread(c: tipcshm.Socket, address: tuple) -> threading.Thread:
    """connect() blocks until the listener accepts (the kernel's too): run it aside."""
    t = threading.Thread(target=c.connect, args=(address,))
    t.start()
    return t


def pair(node: str, kind: int = SOCK_SEQPACKET, instance: int = 1):
    """A listener, a client and the accepted server side, connected."""
    srv = listener(node, kind, instance)
    c = sock(node, kind)
    t = connect_in_thread(c, (TIPC_ADDR_NAME, SERVICE, instance, 0))
    b, _ = srv.accept()
    t.join(10)
    assert c.getpeername() == b.getsockname()[:3] + (0, 0)
    return srv, c, b


ECHO = """
kind = tipcshm.{kind}
s = tipcshm.socket(tipcshm.AF_TIPC, kind, node=NODE)
s.bind((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
s.listen(5)
print("ready", s.getsockname()[2], flush=True)
c, addr = s.accept()
print("peer", addr[2], c.getpeername()[2], flush=True)
while True:
    try:
        d = c.recv(70000)
    except ConnectionResetError:
        print("reset", flush=True)
        break
    if not d:
        print("eof", flush=True)
        break
    c.sendall(d.upper())
c.close()
s.close()
"""


def test_lifecycle_across_processes(node: str) -> None:
    child = Child(node, ECHO.format(kind="SOCK_SEQPACKET", service=SERVICE))
    try:
        tag, _listen_port = child.line().split()
        assert tag == "ready"
        with sock(node) as c:
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
            peer = c.getpeername()
            assert peer[0] == TIPC_ADDR_ID and peer[2] != 0
            tag, peer_seen, peer_self = child.line().split()
            assert tag == "peer" and int(peer_seen) == c.port == int(peer_self)
            for msg in (b"a", b"hello", b"x" * 66000):
                c.send(msg)
                assert c.recv(70000) == msg.upper()
        child.expect("reset")  # close() sends TIPC_ERR_NO_PORT: ECONNRESET, as the kernel
        child.finish()
    finally:
        child.close()


@pytest.mark.parametrize("kind", ["SEQPACKET", "STREAM"])
def test_shutdown_gives_eof_and_close_gives_reset(node: str, kind: str) -> None:
    """What Linux 6.1's TIPC gives (observed in the kernel VM, both socket types): a
    peer's shutdown reads as EOF once, then like an empty queue; a peer's close reads
    as ECONNRESET on every call, after the data sent before it; sends then fail with
    EPIPE; after a local shutdown recv gives ENOTCONN."""
    srv, a, b = pair(node, getattr(tipcshm, f"SOCK_{kind}"))
    with srv, a:
        addr = b.getpeername()
        with b:
            assert addr == a.getsockname()[:3] + (0, 0)
            assert b.getpeername() == addr
            assert a.getpeername() == b.getsockname()[:3] + (0, 0)
            a.send(b"last")
            a.shutdown(2)
            assert b.recv(10) == b"last"
            assert b.recv(10) == b""
            with pytest.raises(BlockingIOError):
                b.recv(10, MSG_DONTWAIT)
            b.settimeout(0.05)
            with pytest.raises(TimeoutError):
                b.recv(10)
            with pytest.raises(BrokenPipeError) as pipe:
                a.send(b"more")
            assert pipe.value.errno == errno.EPIPE
            with pytest.raises(OSError) as notconn:
                a.recv(10)
            assert notconn.value.errno == errno.ENOTCONN
            with pytest.raises(BrokenPipeError):
                b.send(b"to a shut connection")
    srv, a, b = pair(node, getattr(tipcshm, f"SOCK_{kind}"), instance=2)
    with srv, a:
        b.send(b"0123456789")
        b.close()
        assert a.recv(100) == b"0123456789"
        for _ in range(3):
            with pytest.raises(ConnectionResetError) as info:
                a.recv(10)
            assert info.value.errno == errno.ECONNRESET
        with pytest.raises(BrokenPipeError):
            a.send(b"x")
        with pytest.raises(ConnectionResetError):
            a.recv(10)


def test_refused_when_nobody_is_bound(node: str) -> None:
    with sock(node) as c:  # no binding: the lookup fails before any SYN (Linux 6.1)
        with pytest.raises(OSError) as info:
            c.connect((TIPC_ADDR_NAME, SERVICE, 99, 0))
        assert info.value.errno == errno.EHOSTUNREACH
        assert c.connect_ex((TIPC_ADDR_NAME, SERVICE, 99, 0)) == errno.EHOSTUNREACH
    with sock(node) as c:
        with pytest.raises(ConnectionRefusedError):
            c.connect((TIPC_ADDR_ID, 0, 12345, 0))
    with listener(node) as srv, sock(node) as c:
        srv_port = srv.port
    # a listener that closes with a SYN still queued refuses it
    srv = listener(node)
    c = sock(node)
    t = threading.Thread(target=lambda: (time.sleep(0.3), srv.close()))
    t.start()
    with pytest.raises(ConnectionRefusedError):
        c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
    t.join()
    c.close()
    assert srv_port


def test_connect_timeout_when_nobody_accepts(node: str) -> None:
    with listener(node) as srv, sock(node) as c:
        c.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, 300)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
        assert info.value.errno == errno.ETIMEDOUT
        assert 0.25 < time.monotonic() - t0 < 5
        assert srv.port


def test_implicit_connect_and_message_boundaries(node: str) -> None:
    with listener(node) as srv, sock(node) as c:
        done: list[object] = []

        def client() -> None:
            c.sendto(b"syn-data", (TIPC_ADDR_NAME, SERVICE, 1, 0))
            for n in (1, 0, 7, 66000, 3):
                c.send(b"m" * n)
            done.append(True)

        t = threading.Thread(target=client)
        t.start()
        b, _ = srv.accept()
        with b:
            assert b.recv(100) == b"syn-data"
            assert b.recv(100, MSG_PEEK) == b"m"
            assert b.recv(100) == b"m"
            # an empty message is skipped by recv (tipc_recvmsg) - the next one is 7 bytes
            assert b.recv(3) == b"mmm"  # truncated: the rest of the message is gone
            assert b.recv(70000) == b"m" * 66000
            assert b.recv(100) == b"mmm"
            t.join()
            assert done
            with pytest.raises(OSError) as info:
                c.send(b"m" * 66001)
            assert info.value.errno == errno.EMSGSIZE


def test_stream_waitall_and_large_writes(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c:
        with b:
            blob = bytes(range(256)) * 800  # 204,800 bytes: split into 66000-byte messages
            c.sendall(blob)
            assert b.recv(len(blob), MSG_WAITALL) == blob
            c.send(b"abc")
            c.send(b"defg")
            got = b""
            while len(got) < 7:
                got += b.recv(5)
            assert got == b"abcdefg"
            buf = bytearray(10)
            c.send(b"0123456789")
            assert b.recv_into(buf, 4) == 4 and buf[:4] == b"0123"
            assert b.recv(100, MSG_PEEK) == b"456789"
            assert b.recv(100) == b"456789"
            c.close()
            with pytest.raises(ConnectionResetError):
                b.recv(10)


SENDER = """
import errno
import hashlib
TOTAL = {total}
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=NODE)
s.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
chunk = os.urandom(1 << 20)
h = hashlib.sha256()
sent = 0
while sent < TOTAL:
    piece = chunk[: min(len(chunk), TOTAL - sent)]
    s.sendall(piece)
    h.update(piece)
    sent += len(piece)
print(h.hexdigest(), flush=True)
s.shutdown(2)
try:
    s.recv(10)
except OSError as e:  # after a local shutdown the kernel's recv gives ENOTCONN
    print("after shutdown:", errno.errorcode[e.errno], flush=True)
s.close()
"""


def test_stream_200mb_with_checksum(node: str) -> None:
    total = 200 * 1024 * 1024
    with listener(node, SOCK_STREAM) as srv:
        child = Child(node, SENDER.format(total=total, service=SERVICE))
        try:
            b, _ = srv.accept()
            t0 = time.monotonic()
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            mv = memoryview(buf)
            got = 0
            while True:
                n = b.recv_into(buf)
                if not n:
                    break
                h.update(mv[:n])
                got += n
            elapsed = time.monotonic() - t0
            print(f"200 MB stream: {elapsed:.2f} s, {got / elapsed / 1e6:.0f} MB/s")
            assert got == total
            assert child.line(60) == h.hexdigest()
            assert child.line() == "after shutdown: ENOTCONN"
            b.close()
            child.finish()
        finally:
            child.close()


MANY = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
s.bind((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
s.listen(256)
print("ready", flush=True)
conns = [s.accept()[0] for _ in range({n})]
print("accepted", flush=True)
for c in conns:
    c.send(c.recv(100) + b"!")
print("done", flush=True)
sys.stdin.readline()
"""


def test_200_concurrent_connections(node: str) -> None:
    n = 200
    child = Child(node, MANY.format(service=SERVICE, n=n))
    clients: list[tipcshm.Socket] = []
    try:
        child.expect("ready")
        for _ in range(n):
            c = sock(node)
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
            clients.append(c)
        child.expect("accepted", 60)
        for i, c in enumerate(clients):
            c.send(b"%d" % i)
        for i, c in enumerate(clients):
            assert c.recv(100) == b"%d!" % i
        child.expect("done", 60)
        assert len({c.getpeername() for c in clients}) == n
        child.send("bye")
        child.finish()
    finally:
        for c in clients:
            c.close()
        child.close()


PEER = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_{kind}, node=NODE)
s.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
print("connected", flush=True)
time.sleep(600)
"""

SERVER_PEER = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_{kind}, node=NODE)
s.bind((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
print("accepted", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["SEQPACKET", "STREAM"])
def test_kill9_client_resets_blocked_server(node: str, kind: str) -> None:
    with listener(node, getattr(tipcshm, f"SOCK_{kind}")) as srv:
        child = Child(node, PEER.format(kind=kind, service=SERVICE))
        try:
            b, _ = srv.accept()
            child.expect("connected")
            errors: list[BaseException] = []
            ended = []

            def blocked() -> None:
                try:
                    b.recv(100)
                except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                    errors.append(e)
                ended.append(time.monotonic())

            t = threading.Thread(target=blocked)
            t.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            child.kill9()
            t.join(10)
            took = ended[0] - t0
            print(f"kill -9 of the client: blocked recv ended after {took * 1e3:.1f} ms")
            assert took < 5
            assert isinstance(errors[0], ConnectionResetError)
            b.close()
        finally:
            child.close()


@pytest.mark.parametrize("kind", ["SEQPACKET", "STREAM"])
def test_kill9_server_resets_blocked_client_send(node: str, kind: str) -> None:
    """SEQPACKET: 1000-byte messages fill the window of 512 messages first; STREAM: 1 MiB
    writes fill the peer's ring first (the sender then waits for its acks)."""
    child = Child(node, SERVER_PEER.format(kind=kind, service=SERVICE))
    try:
        child.expect("ready")
        with sock(node, getattr(tipcshm, f"SOCK_{kind}")) as c:
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))  # the child accepts
            child.expect("accepted")
            errors: list[BaseException] = []
            ended = []
            chunk = b"z" * (1000 if kind == "SEQPACKET" else 1 << 20)

            def flood() -> None:  # nobody reads: send blocks
                try:
                    while True:
                        c.sendall(chunk)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                ended.append(time.monotonic())

            t = threading.Thread(target=flood)
            t.start()
            time.sleep(0.3)
            assert not ended, "the sender should be blocked"
            t0 = time.monotonic()
            child.kill9()
            t.join(10)
            took = ended[0] - t0
            print(f"kill -9 of the server: blocked send ended after {took * 1e3:.1f} ms")
            assert took < 5
            # EPIPE, as the kernel's blocked send gets (tipc_wait_for_cond ->
            # tipc_sk_sock_err on a DISCONNECTING socket); a recv would get ECONNRESET.
            assert isinstance(errors[0], BrokenPipeError)
            with pytest.raises(ConnectionResetError):
                c.recv(10)
    finally:
        child.close()


def test_stream_any_write_and_read_sizes(node: str) -> None:
    """Writes and reads of every kind of size against each other (less than, exactly and
    more than a 66,000-byte message, runs of whole messages, several MiB that fill the
    ring), by every receive call (copying and zero-copy), a reader that sometimes
    dawdles: the bytes arrive exactly, in order."""
    rng = random.Random(1)
    sizes = [1, 999, 65999, 66000, 66001, 132000, 132001, 200000, 1 << 20, 5 << 20]
    writes = sizes + [rng.choice(sizes) for _ in range(30)] + [rng.randrange(1, 300000)]
    blob = rng.randbytes(sum(writes))
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        failed: list[BaseException] = []

        def write() -> None:
            at = 0
            try:
                for n in writes:
                    if n % 3:
                        c.sendall(blob[at : at + n])
                    else:  # send() on a blocking socket sends it all too
                        assert c.send(memoryview(blob)[at : at + n]) == n
                    at += n
            except BaseException as e:  # noqa: BLE001
                failed.append(e)

        t = threading.Thread(target=write)
        t.start()
        got = bytearray()
        buf = bytearray(3 << 20)
        while len(got) < len(blob):
            want = rng.choice([1, 1000, 66000, 100000, 132000, 1 << 20, 3 << 20])
            want = min(want, len(blob) - len(got))
            how = rng.randrange(6)
            if how == 0:
                got += b.recv(want)
            elif how == 1:
                n = b.recv_into(buf, want, MSG_WAITALL)
                assert n == want
                got += buf[:n]
            elif how == 4:  # zero copy, whole pieces: at least one, at most want bytes
                with b.recv_array(want) as rows:
                    assert rows.size and (rows.size <= want or len(rows) == 1)
                    got += rows.tobytes()
            elif how == 5:
                with b.recv_buffer() as view:
                    got += view
            else:
                n = b.recv_into(memoryview(buf)[:want])
                got += buf[:n]
            if rng.random() < 0.05:
                time.sleep(0.01)  # the writer meets a full ring
        t.join(30)
        assert not failed and not t.is_alive()
        assert got == blob
        with pytest.raises(BlockingIOError):
            b.recv(1, MSG_DONTWAIT)


def test_stream_nonblocking_send_returns_what_went(node: str) -> None:
    """A non-blocking send() of more than the peer's ring takes returns the bytes that
    went, as __tipc_sendstream does; sending the rest then loses and repeats nothing."""
    blob = random.Random(2).randbytes(12 << 20)  # three times the 4 MiB ring
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.setblocking(False)
        n = c.send(blob)
        assert 0 < n < len(blob) and n % 66000 == 0
        with pytest.raises(BlockingIOError):
            c.send(blob[n:])
        with pytest.raises(BlockingIOError):
            c.sendall(blob[n:])  # nothing went: the ring is still full
        assert b.recv(n, MSG_WAITALL) == blob[:n]
        c.setblocking(True)
        t = threading.Thread(target=c.sendall, args=(blob[n:],))
        t.start()
        assert b.recv(len(blob) - n, MSG_WAITALL) == blob[n:]
        t.join(10)


def test_stream_reader_acks_each_quarter_ring(node: str) -> None:
    """The reader acks once it read a quarter of its ring (1 MiB of the default 4 MiB),
    not only every 128 messages (8 MiB here): a writer facing a full ring waits for
    that ack instead of polling. White-box: the writer's count of unacked messages."""
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.sendall(bytes(40 * 66000))
        assert c._conn.snt_unacked == 40
        assert len(b.recv(17 * 66000, MSG_WAITALL)) == 17 * 66000
        with pytest.raises(BlockingIOError):
            c.recv(1, MSG_DONTWAIT)  # reads the ack
        # the 16th message passed 1 MiB; read one by one the ack covers 16, read as one
        # run (recv and recv_into take runs of whole messages) all 17
        assert 40 - 17 <= c._conn.snt_unacked <= 40 - 16


def test_stream_recv_returns_what_is_queued_whatever_bufsize(node: str) -> None:
    """recv() reads straight from the ring; without MSG_WAITALL it returns what is
    queued at once, messages of any sizes together, and never sizes a buffer by an
    absurd bufsize; with MSG_WAITALL it waits for the rest; MSG_DONTWAIT never waits."""
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.sendall(b"abc")
        assert b.recv(1 << 40) == b"abc"
        c.sendall(b"0123456789")
        assert b.recv(4) == b"0123"
        assert b.recv(1 << 40) == b"456789"  # the rest of a split piece: the buffer path
        blob = random.Random(3).randbytes(300000)
        c.sendall(blob[:1000])
        t = threading.Timer(0.05, c.sendall, args=(blob[1000:],))
        t.start()
        assert b.recv(len(blob), MSG_WAITALL) == blob
        t.join()
        with pytest.raises(BlockingIOError):
            b.recv(10, MSG_DONTWAIT)
        for piece in (b"a" * 10, b"b" * 20, b"c" * 30):
            c.send(piece)
        assert b.recv(1000, MSG_DONTWAIT) == b"a" * 10 + b"b" * 20 + b"c" * 30  # all queued
        c.sendall(b"xy")
        c.shutdown(2)
        assert b.recv(10, MSG_WAITALL) == b"xy"  # the end cuts a waiting recv short
        assert b.recv(10) == b""


def test_stream_waitall_timeout_returns_what_came(node: str) -> None:
    """MSG_WAITALL that times out returns the bytes it took (as tipc_recvstream), on the
    ring path and on the general path (data a waiting send read ahead); they used to be
    lost with the Timeout."""
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        b.settimeout(0.05)
        c.sendall(b"0123456789")
        assert b.recv(100, MSG_WAITALL) == b"0123456789"
        c.sendall(b"abc")
        assert b.recv(100, MSG_WAITALL | MSG_DONTWAIT) == b"abc"
        c.sendall(b"abcdefghij")
        for _ in range(512):  # c's window: c reads nothing, so no acks come back
            b.send(b"r")
        with pytest.raises(TimeoutError):
            b.send(b"one too many")  # pumps its inbox meanwhile: c's data is read ahead
        assert b._rxq  # white-box: so the next recv takes the general path
        assert b.recv(100, MSG_WAITALL) == b"abcdefghij"


def test_recv_into_needs_a_writable_buffer(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.send(b"abc")
        with pytest.raises(TypeError):
            b.recv_into(b"xyz")
        assert b.recv(3) == b"abc"


def test_flow_control_slow_reader(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c:
        with b:
            c.setblocking(False)
            sent = 0
            with pytest.raises(BlockingIOError):
                while True:
                    c.send(b"%08d" % sent)
                    sent += 1
            assert sent == 512  # the message window, as without TIPC_BLOCK_FLOWCTL
            c.setblocking(True)
            total = 3000
            t = threading.Thread(target=lambda: [c.send(b"%08d" % i) for i in range(sent, total)])
            t.start()
            for i in range(total):
                if i % 500 == 0:
                    time.sleep(0.05)  # a slow reader: the sender waits, nothing is lost
                assert b.recv(100) == b"%08d" % i
            t.join(10)
            assert not t.is_alive()
            with pytest.raises(BlockingIOError):
                b.recv(100, MSG_DONTWAIT)


@pytest.mark.fresh_node
def test_node_stop_ends_blocked_calls(node: str) -> None:
    srv, c, b = pair(node)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            b.recv(100)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    stop_node(node)
    t.join(10)
    print(f"node stop: blocked recv ended after {(time.monotonic() - t0) * 1e3:.0f} ms")
    assert not t.is_alive()
    assert isinstance(errors[0], OSError)
    for s in (b, c, srv):
        s.close()


def test_fileno_stays_readable_for_frames_read_ahead(node: str) -> None:
    """Data a send moved to the socket's own queue (while waiting for acks) must keep
    fileno() readable, or a selector would sleep on waiting data."""
    import selectors
    import threading

    listener = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node)
    listener.bind((tipcshm.TIPC_ADDR_NAME, 7100, 1, 0))
    listener.listen()
    client = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node)
    t = threading.Thread(target=client.connect, args=((tipcshm.TIPC_ADDR_NAME, 7100, 1, 0),))
    t.start()
    server, _ = listener.accept()
    t.join()
    try:
        sel = selectors.DefaultSelector()
        sel.register(server.fileno(), selectors.EVENT_READ)
        client.send(b"one")
        client.send(b"two")
        assert sel.select(5), "not readable with data in the rings"
        server._pump(None, nonblock=True)  # what a send waiting for acks does
        assert len(server._rxq) == 2  # the rings are empty now, the socket's queue is not
        assert sel.select(1), "not readable with data read ahead"
        assert server.recv(10) == b"one"
        assert sel.select(1)
        assert server.recv(10) == b"two"
        sel.close()
    finally:
        for s in (server, client, listener):
            s.close()


def test_connect_to_a_socket_that_does_not_listen_is_refused_at_once(node: str) -> None:
    import time

    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node) as idle:
        idle.bind((tipcshm.TIPC_ADDR_NAME, 7200, 1, 0))  # bound, never listens
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node) as c:
            t0 = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                c.connect((tipcshm.TIPC_ADDR_NAME, 7200, 1, 0))
            assert time.monotonic() - t0 < 2  # not the 8 s connect timeout


LAST_WORDS = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_{kind}, node=NODE)
s.connect((tipcshm.TIPC_ADDR_NAME, {service}, 1, 0))
for i in range(200):
    s.send(b"%04d" % i)
print("sent", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["SEQPACKET", "STREAM"])
def test_data_sent_before_a_kill9_is_read_before_the_reset(node: str, kind: str) -> None:
    """The supervisor's abort for a dead process comes through its own lane and can
    be read before the dead process's last data; that data must still come first."""
    with listener(node, getattr(tipcshm, f"SOCK_{kind}")) as srv:
        child = Child(node, LAST_WORDS.format(kind=kind, service=SERVICE))
        try:
            b, _ = srv.accept()
            child.expect("sent")
            child.kill9()
            time.sleep(0.3)  # the supervisor has sent the abort by now
            got = b""
            with pytest.raises(ConnectionResetError):
                while True:
                    got += b.recv(1000)
            assert got == b"".join(b"%04d" % i for i in range(200))
            b.close()
        finally:
            child.close()


def test_recvmsg_on_connections(node: str) -> None:
    anc_destname = (SOL_TIPC, tipcshm.TIPC_DESTNAME, struct.pack("=III", SERVICE, 1, 1))
    srv, c, b = pair(node)  # connected through the service address {SERVICE, 1}
    with srv, b:
        c.send(b"x" * 100)
        data, anc, flags, addr = b.recvmsg(10, 64)
        assert (data, flags & MSG_TRUNC) == (b"x" * 10, MSG_TRUNC)
        assert addr == c.getsockname()[:3] + (0, 0)
        assert anc == [anc_destname]  # both ends know the service (tipc_sk_anc_data_recv)
        b.send(b"back")
        assert c.recvmsg(100, 64) == (b"back", [anc_destname], 0, b.getsockname()[:3] + (0, 0))
        c.send(b"plain")
        assert b.recvmsg(100) == (b"plain", [], 0, addr)
        c.close()
        # With room for control data the kernel reports the abort, not ECONNRESET ...
        data, anc, flags, _ = b.recvmsg(100, 64)
        errinfo = struct.pack("=II", tipcshm.TIPC_ERR_NO_PORT, 0)
        assert (data, anc) == (b"", [(SOL_TIPC, tipcshm.TIPC_ERRINFO, errinfo), anc_destname])
        # ... and consumes it: then the queue is empty.
        with pytest.raises(BlockingIOError):
            b.recvmsg(100, 64, MSG_DONTWAIT)
    srv, c, b = pair(node, SOCK_STREAM, instance=2)
    with srv, c:
        b.sendall(b"stream")
        b.shutdown(2)
        assert c.recvmsg(100)[0] == b"stream"
        data, anc, _, _ = c.recvmsg(100, 64)
        shut = struct.pack("=II", tipcshm.TIPC_CONN_SHUTDOWN, 0)
        assert data == b"" and anc[0] == (SOL_TIPC, tipcshm.TIPC_ERRINFO, shut)
        b.close()
    srv, c, b = pair(node, SOCK_STREAM, instance=3)
    with srv, c:
        b.close()
        with pytest.raises(ConnectionResetError):
            c.recvmsg(100)  # without control data: ECONNRESET, as recv


def test_nonblocking_connect(node: str) -> None:
    address = (TIPC_ADDR_NAME, SERVICE, 1, 0)
    with listener(node) as srv, sock(node) as c:
        c.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            c.connect(address)
        assert info.value.errno == errno.EINPROGRESS
        assert c.connect_ex(address) == errno.EALREADY
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        b, _ = srv.accept()
        with b, selectors.DefaultSelector() as sel:
            sel.register(c, selectors.EVENT_WRITE)
            assert sel.select(5), "the answer to the SYN makes it writable (ESTABLISHED)"
            assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            assert c.connect_ex(address) == errno.EISCONN
            assert c.getpeername() == b.getsockname()[:3] + (0, 0)
            c.send(b"hi")
            assert b.recv(10) == b"hi"


def test_nonblocking_connect_refused(node: str) -> None:
    address = (TIPC_ADDR_NAME, SERVICE, 1, 0)
    srv = listener(node)
    with sock(node) as c:
        c.setblocking(False)
        assert c.connect_ex(address) == errno.EINPROGRESS
        srv.close()  # the SYN was never accepted: the listener's close refuses it
        with selectors.DefaultSelector() as sel:
            sel.register(c, selectors.EVENT_READ)
            assert sel.select(5)
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # reported once
        with pytest.raises(ConnectionRefusedError):
            c.recv(10)
        with pytest.raises(ConnectionRefusedError):
            c.connect(address)


def test_send_on_a_pending_connect_is_enotconn(node: str) -> None:
    """As __tipc_sendstream answers it (tipc_sk_sock_err; Linux 6.1 in the conformance
    suite): a send while the connect is pending fails at once with ENOTCONN, blocking or
    not; a blocking connect() on the pending socket waits for the answer (tipc_connect)."""
    address = (TIPC_ADDR_NAME, SERVICE, 1, 0)
    with listener(node, SOCK_STREAM) as srv, sock(node, SOCK_STREAM) as c:
        c.setblocking(False)
        assert c.connect_ex(address) == errno.EINPROGRESS
        with pytest.raises(OSError) as info:
            c.send(b"too early")
        assert info.value.errno == errno.ENOTCONN
        c.setblocking(True)
        with pytest.raises(OSError) as info:
            c.sendall(b"still too early")
        assert info.value.errno == errno.ENOTCONN
        accepted: list = []
        t = threading.Timer(0.1, lambda: accepted.append(srv.accept()[0]))
        t.start()
        c.connect(address)
        c.sendall(b"after the accept")
        t.join(5)
        with accepted[0] as b:
            assert b.recv(100) == b"after the accept"


def test_a_timed_out_connect_is_still_pending(node: str) -> None:
    """tipc_wait_for_connect's ETIMEDOUT leaves the socket CONNECTING: poll reports
    nothing, and the SYN still queued at the listener completes it once accepted."""
    address = (TIPC_ADDR_NAME, SERVICE, 1, 0)
    with listener(node) as srv, sock(node) as c, selectors.DefaultSelector() as sel:
        c.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, 200)
        with pytest.raises(TimeoutError) as info:
            c.connect(address)
        assert info.value.errno == errno.ETIMEDOUT
        sel.register(c, selectors.EVENT_READ | selectors.EVENT_WRITE)
        assert not sel.select(0.1)
        b, _ = srv.accept()
        with b:
            events = sel.select(5)
            assert events and events[0][1] == selectors.EVENT_WRITE
            c.send(b"late but connected")
            assert b.recv(100) == b"late but connected"


def test_fileno_stays_readable_once_the_peer_ended(node: str) -> None:
    """Kernel poll gives POLLIN | POLLHUP from the peer's ending on (checked on Linux 6.1),
    also when a send read the ending from the inbox before any recv did."""
    srv, a, b = pair(node)
    with srv, a, selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ)
        assert not sel.select(0.05)
        b.close()
        assert sel.select(5)
        with pytest.raises(ConnectionResetError):
            a.recv(10)
        assert sel.select(0.5), "still readable after the reset was reported"
        with pytest.raises(BrokenPipeError):
            a.send(b"x")
        assert sel.select(0.5)


def test_shutdown_then_close_with_acks_unread_reads_as_eof(node: str) -> None:
    """The closing side's unread acks must not come back as an abort: the peer reads the
    EOF of the shutdown, as from the kernel (which never queues protocol messages)."""
    with listener(node, SOCK_STREAM) as srv:
        a = tipcshm.socket(tipcshm.AF_TIPC, SOCK_STREAM, node=node)
        box: list[tipcshm.Socket] = []
        t = threading.Thread(target=lambda: box.append(srv.accept()[0]))
        t.start()
        a.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
        t.join(10)
        b = box[0]
        b.settimeout(10)
        for _ in range(300):  # b acks them; a never reads its inbox again
            a.send(b"x" * 100)
        got = 0
        while got < 300 * 100:
            got += len(b.recv(1 << 16))
        a.shutdown(2)
        a.close()
        assert b.recv(10) == b""
        b.close()
