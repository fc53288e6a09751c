"""tipcshm under asyncio: loop.sock_* on tipcshm sockets, tipcshm.asyncio.AsyncSocket,
stream reader/writer pairs and servers, cancellation, timeouts, and no busy waiting."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sys
import time

import pytest
from conftest import shm_leftovers
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
)
from tipcshm import asyncio as tasyncio
from tipcshm.testing import start_node, stop_node, unique_node_name

SERVICE = 7100
CONN_KINDS = [
    pytest.param(SOCK_STREAM, id="stream"),
    pytest.param(SOCK_SEQPACKET, id="seqpacket"),
]


pytestmark = pytest.mark.shared_node


def run(coro, timeout: float = 60.0):
    """Run ``coro`` on a fresh loop in debug mode (which also checks that the loop.sock_*
    calls are given non-blocking sockets), bounded so that a hang fails the test."""
    return asyncio.run(asyncio.wait_for(coro, timeout), debug=True)


def name(instance: int, service: int = SERVICE) -> tuple[int, int, int, int]:
    return (TIPC_ADDR_NAME, service, instance, 0)


def raw(node: str, kind: int = SOCK_RDM) -> tipcshm.Socket:
    s = tipcshm.socket(AF_TIPC, kind, node=node)
    s.setblocking(False)
    return s


# -- the event loop's own socket calls ----------------------------------------------------
@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="loop.sock_sendto/sock_recvfrom are new in Python 3.11"
)
def test_loop_sock_calls_echo_over_rdm(node: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv, cli = raw(node), raw(node)
        try:
            srv.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 9))

            async def echo(count: int) -> None:
                for _ in range(count):
                    data, sender = await loop.sock_recvfrom(srv, 1000)
                    await loop.sock_sendto(srv, data[::-1], sender)

            server = asyncio.create_task(echo(3))
            await loop.sock_sendto(cli, b"abc", name(3))
            assert await loop.sock_recv(cli, 1000) == b"cba"
            cli.connect(name(4))  # a default destination for send()
            await loop.sock_sendall(cli, b"hello")
            buf = bytearray(16)
            n = await loop.sock_recv_into(cli, buf)
            assert buf[:n] == b"olleh"
            await loop.sock_sendto(cli, b"xyz", name(5))
            n, sender = await loop.sock_recvfrom_into(cli, buf)
            assert buf[:n] == b"zyx" and sender == srv.getsockname()
            await server
        finally:
            srv.close()
            cli.close()

    run(main())


@pytest.mark.parametrize("kind", CONN_KINDS)
def test_loop_sock_calls_over_connections(node: str, kind: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        lst, cli = raw(node, kind), raw(node, kind)
        conn = None
        try:
            lst.bind(name(1))
            lst.listen()
            accepting = asyncio.create_task(loop.sock_accept(lst))
            await loop.sock_connect(cli, name(1))
            conn, peer = await accepting
            assert conn.getblocking() is False
            assert peer == cli.getsockname()
            await loop.sock_sendall(cli, b"ping")
            assert await loop.sock_recv(conn, 100) == b"ping"
            payload = bytes(range(256)) * 800 if kind == SOCK_STREAM else b"x" * 66000
            await loop.sock_sendall(conn, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await loop.sock_recv(cli, 1 << 20)
            assert got == payload
        finally:
            for s in (conn, cli, lst):
                if s is not None:
                    s.close()

    run(main())


def test_asyncio_own_stream_transport_takes_a_tipcshm_stream_socket(node: str) -> None:
    """asyncio.open_connection(sock=...) runs asyncio's selector transport on it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lst, cli = raw(node, SOCK_STREAM), raw(node, SOCK_STREAM)
        conn = None
        try:
            lst.bind(name(2))
            lst.listen()
            accepting = asyncio.create_task(loop.sock_accept(lst))
            await loop.sock_connect(cli, name(2))
            conn, _ = await accepting
            reader, writer = await asyncio.open_connection(sock=cli)
            writer.write(b"over asyncio's transport")
            await writer.drain()
            assert await loop.sock_recv(conn, 100) == b"over asyncio's transport"
            await loop.sock_sendall(conn, b"back")
            assert await reader.readexactly(4) == b"back"
            writer.close()
            await writer.wait_closed()
        finally:
            for s in (conn, cli, lst):
                if s is not None:
                    s.close()

    run(main())


# -- AsyncSocket ------------------------------------------------------------------------
def test_async_socket_echo_over_rdm(node: str) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
        ):
            srv.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 9))
            assert srv.sock.getblocking() is False

            async def echo() -> None:
                while True:
                    data, sender = await srv.recvfrom(1000)
                    if data == b"stop":
                        return
                    await srv.sendto(data.upper(), sender)

            server = asyncio.create_task(echo())
            for i in range(20):
                await cli.sendto(b"msg %d" % i, name(i % 10))
                assert await cli.recv(1000) == b"MSG %d" % i
            await cli.sendto(b"stop", name(0))
            await server
            # recv_into, recvfrom_into and recvmsg wait the same way
            await srv.sendto(b"into", cli.getsockname())
            buf = bytearray(10)
            assert await cli.recv_into(buf) == 4 and buf[:4] == b"into"
            await srv.sendto(b"from", cli.getsockname())
            n, sender = await cli.recvfrom_into(buf)
            assert buf[:n] == b"from" and sender == srv.getsockname()
            await srv.sendto(b"msg", cli.getsockname())
            data, _anc, _flags, sender = await cli.recvmsg(100)
            assert data == b"msg" and sender == srv.getsockname()

    run(main())


@pytest.mark.parametrize("kind", CONN_KINDS)
def test_async_socket_connect_accept_send_recv(node: str, kind: int) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, kind, node=node) as lst,
            tasyncio.socket(AF_TIPC, kind, node=node) as cli,
        ):
            lst.bind(name(3))
            lst.listen()
            accepting = asyncio.create_task(lst.accept())
            await cli.connect(name(3))
            conn, peer = await accepting
            with conn:
                assert isinstance(conn, tasyncio.AsyncSocket)
                assert peer == cli.getsockname()
                assert cli.getpeername() == conn.getsockname()
                await cli.send(b"hello")
                assert await conn.recv(100) == b"hello"
                if kind == SOCK_STREAM:
                    # sendall of more than the peer's ring holds: sent in parts as the
                    # reader makes room
                    blob = hashlib.sha256(b"seed").digest() * (320 * 1024)  # 10 MiB
                    sending = asyncio.create_task(conn.sendall(blob))
                    h = hashlib.sha256()
                    got = 0
                    while got < len(blob):
                        part = await cli.recv(1 << 20)
                        h.update(part)
                        got += len(part)
                    await sending
                    assert h.digest() == hashlib.sha256(blob).digest()
                else:

                    async def sends() -> None:
                        for i in range(1500):  # past the send window: acks must come back
                            await conn.send(b"m%d" % i)

                    sending = asyncio.create_task(sends())
                    for i in range(1500):
                        assert await cli.recv(100) == b"m%d" % i
                    await sending

    run(main())


def test_async_connect_refused(node: str) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as bound,
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as cli,
        ):
            bound.bind(name(4))  # bound, never listening
            with pytest.raises(ConnectionRefusedError):
                await cli.connect(name(4))

    run(main())


# -- cancellation and timeouts -------------------------------------------------------------
def test_cancelled_recv_then_a_later_recv_gets_the_message(node: str) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
        ):
            srv.bind(name(5))
            waiting = asyncio.create_task(srv.recv(100))
            await asyncio.sleep(0)  # it is now waiting on the descriptor
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await cli.sendto(b"kept", name(5))
            assert await srv.recv(100) == b"kept"

    run(main())


def test_cancel_in_the_same_loop_pass_as_the_readiness_report_loses_nothing(node: str) -> None:
    """The hard case: the message arrives and the waiting recv is cancelled in one pass
    of the loop (another descriptor, ready at the same moment, cancels it). Whatever
    order the loop runs the two callbacks in, the message is received exactly once."""
    rounds = 60

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bell_r, bell_w = os.pipe()
        got: list[bytes] = []
        try:
            with (
                tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as rx,
                tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as tx,
            ):
                rx.bind(name(22))
                for i in range(rounds):
                    waiting = asyncio.create_task(rx.recv(100))
                    await asyncio.sleep(0.002)  # it is waiting on the descriptor now

                    def cancel(task: asyncio.Task[bytes] = waiting) -> None:
                        os.read(bell_r, 1)
                        loop.remove_reader(bell_r)
                        task.cancel()

                    loop.add_reader(bell_r, cancel)
                    tx.sock.sendto(b"%d" % i, name(22))  # both ready before the next pass
                    os.write(bell_w, b"!")
                    try:
                        got.append(await waiting)
                    except asyncio.CancelledError:
                        pass
                while True:
                    try:
                        got.append(rx.sock.recv(100))
                    except BlockingIOError:
                        break
        finally:
            os.close(bell_r)
            os.close(bell_w)
        assert got == [b"%d" % i for i in range(rounds)]

    run(main())


def test_recv_timeout_with_wait_for_leaves_the_socket_usable(node: str) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as srv,
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as cli,
        ):
            srv.bind(name(6))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(srv.recv(100), 0.2)
            await cli.sendto(b"after the timeout", name(6))
            assert await asyncio.wait_for(srv.recv(100), 10) == b"after the timeout"

    run(main())


@pytest.mark.parametrize(
    "kind", [SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM], ids=["rdm", "seqpacket", "stream"]
)
def test_cancelling_receives_at_random_loses_no_message(node: str, kind: int) -> None:
    """Receives cut short by timeouts while messages keep arriving: every message is
    received exactly once, in order."""
    count = 300

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == SOCK_RDM:
            rx = tasyncio.socket(AF_TIPC, SOCK_RDM, node=node)
            tx = tasyncio.socket(AF_TIPC, SOCK_RDM, node=node)
            rx.bind(name(7))
            lst = None

            async def send(data: bytes) -> None:
                await tx.sendto(data, name(7))
        else:
            lst = tasyncio.socket(AF_TIPC, kind, node=node)
            lst.bind(name(7))
            lst.listen()
            tx = tasyncio.socket(AF_TIPC, kind, node=node)
            accepting = asyncio.create_task(lst.accept())
            await tx.connect(name(7))
            rx, _ = await accepting

            async def send(data: bytes) -> None:
                await tx.sendall(data)

        async def sender() -> None:
            for i in range(count):
                await send(b"%05d" % i)
                if i % 7 == 0:
                    await asyncio.sleep(0.001)

        got = bytearray()
        sending = asyncio.create_task(sender())
        deadline = loop.time() + 50
        try:
            while len(got) < 5 * count and loop.time() < deadline:
                try:
                    got += await asyncio.wait_for(rx.recv(5), 0.0005)
                except asyncio.TimeoutError:
                    pass
            await sending
        finally:
            for s in (rx, tx, lst):
                if s is not None:
                    s.close()
        assert bytes(got) == b"".join(b"%05d" % i for i in range(count))

    run(main())


def test_accept_timeout_and_cancelled_accept_lose_no_connection(node: str) -> None:
    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as lst,
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as cli,
        ):
            lst.bind(name(20))
            lst.listen()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(lst.accept(), 0.2)
            waiting = asyncio.create_task(lst.accept())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            connecting = asyncio.create_task(cli.connect(name(20)))
            conn, peer = await asyncio.wait_for(lst.accept(), 10)
            with conn:
                await connecting
                assert peer == cli.getsockname()
                await conn.send(b"accepted")
                assert await cli.recv(100) == b"accepted"

    run(main())


def test_cancelled_send_to_a_full_receiver_sends_nothing(node: str) -> None:
    """A send waiting for room, cancelled, did not send; the socket sends on after."""

    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as rx,
            tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as tx,
        ):
            rx.bind(name(21))
            big = b"f" * 60000
            queued = 0
            while True:  # fill our lane into the receiver
                try:
                    tx.sock.sendto(big, name(21))
                except BlockingIOError:
                    break
                queued += 1
            waiting = asyncio.create_task(tx.sendto(b"c" * 60000, name(21)))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            for _ in range(queued):
                assert await rx.recv(66000) == big
            await tx.sendto(b"after", name(21))
            assert await rx.recv(100) == b"after"

    run(main())


@pytest.mark.parametrize("accepted_first", [False, True], ids=["waiting", "accepted-first"])
def test_connect_timeout_then_a_later_connect_completes(node: str, accepted_first: bool) -> None:
    """A connection completes when the listener accepts it; a connect cut short by
    wait_for leaves the request pending, and connecting again gives its outcome, whether
    the listener accepts while the second call waits or before it is made."""

    async def main() -> None:
        with (
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as lst,
            tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as cli,
        ):
            lst.bind(name(23))
            lst.listen()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(cli.connect(name(23)), 0.2)
            if accepted_first:
                conn, peer = await asyncio.wait_for(lst.accept(), 10)
                await asyncio.wait_for(cli.connect(name(23)), 10)
            else:
                connecting = asyncio.create_task(cli.connect(name(23)))
                await asyncio.sleep(0.05)
                assert not connecting.done()
                conn, peer = await asyncio.wait_for(lst.accept(), 10)
                await asyncio.wait_for(connecting, 10)
            with conn:
                assert peer == cli.getsockname()
                await cli.send(b"connected")
                assert await conn.recv(100) == b"connected"
                with pytest.raises(OSError) as info:  # connected now: as the kernel says
                    await cli.connect(name(23))
                assert info.value.errno == errno.EISCONN

    run(main())


def test_open_connection_cut_short_leaves_no_descriptor(node: str) -> None:
    async def main() -> None:
        with tasyncio.socket(AF_TIPC, SOCK_STREAM, node=node) as lst:
            lst.bind(name(24))
            lst.listen()  # never accepts

            async def cut_short() -> None:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(tasyncio.open_connection(name(24), node=node), 0.1)

            await cut_short()  # the first opens this process's lane into the listener
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(3):
                await cut_short()
            assert len(os.listdir("/proc/self/fd")) == before

    run(main())


def test_close_wakes_a_waiting_recv_with_ebadf(node: str) -> None:
    async def main() -> None:
        s = tasyncio.socket(AF_TIPC, SOCK_RDM, node=node)
        s.bind(name(8))
        waiting = asyncio.create_task(s.recv(100))
        await asyncio.sleep(0.05)
        s.close()
        with pytest.raises(OSError) as info:
            await waiting
        assert info.value.errno == errno.EBADF

    run(main())


# -- streams and servers -------------------------------------------------------------------
async def _upper_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("kind", CONN_KINDS)
def test_streams_echo(node: str, kind: int) -> None:
    async def main() -> None:
        async with await tasyncio.start_server(
            _upper_echo, name(10), type=kind, node=node
        ) as server:
            assert server.is_serving()
            (lst,) = server.sockets
            reader, writer = await tasyncio.open_connection(name(10), type=kind, node=node)
            sock = writer.get_extra_info("socket")
            assert writer.get_extra_info("peername") == sock.getpeername()
            assert writer.get_extra_info("sockname") == sock.getsockname()
            writer.write(b"first line\nsecond ")
            writer.write(b"line\n")
            await writer.drain()
            assert await reader.readline() == b"FIRST LINE\n"
            assert await reader.readline() == b"SECOND LINE\n"
            assert not writer.can_write_eof()
            # close() sends what is buffered, then shuts down: the server reads EOF,
            # ends its loop and closes its side
            writer.write(b"last\n")
            writer.close()
            await writer.wait_closed()
            assert await reader.read() == b""
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(OSError):
            lst.getsockname()  # the listening socket is closed

    run(main())


@pytest.mark.parametrize("kind", CONN_KINDS)
def test_streams_large_transfer_with_flow_control(node: str, kind: int) -> None:
    """16 MiB through a StreamWriter (drain() waits while the peer is slow to read)."""
    size = 16 << 20
    blob = hashlib.sha256(b"flow").digest() * (size // 32)

    async def main() -> None:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            got = 0
            while got < size:
                part = await reader.read(1 << 16)
                assert part
                h.update(part)
                got += len(part)
                if got % (1 << 20) < len(part):
                    await asyncio.sleep(0.001)  # a slow reader, now and then
            done.set_result(h.digest())
            writer.close()

        async with await tasyncio.start_server(sink, name(11), type=kind, node=node):
            reader, writer = await tasyncio.open_connection(name(11), type=kind, node=node)
            for i in range(0, size, 1 << 20):
                writer.write(blob[i : i + (1 << 20)])
                await writer.drain()
            assert await done == hashlib.sha256(blob).digest()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(main())


def test_seqpacket_stream_writes_are_messages(node: str) -> None:
    """Over SEQPACKET a write() is one message; a longer one is cut at 66000 bytes."""

    async def main() -> None:
        with tasyncio.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as lst:
            lst.bind(name(25))
            lst.listen()
            accepting = asyncio.create_task(lst.accept())
            reader, writer = await tasyncio.open_connection(
                name(25), type=SOCK_SEQPACKET, node=node
            )
            conn, _ = await accepting
            with conn:
                writer.write(b"a" * 10)
                writer.write(b"b" * 70000)
                await writer.drain()
                assert [len(await conn.recv(100000)) for _ in range(3)] == [10, 66000, 4000]
                await conn.send(b"")  # an empty message, if delivered, is not an end
                await conn.send(b"reply")
                assert await reader.readexactly(5) == b"reply"
                conn.shutdown()
                assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(main())


def test_streams_many_concurrent_clients(node: str) -> None:
    clients = 40

    async def main() -> None:
        async with await tasyncio.start_server(_upper_echo, name(12), node=node):

            async def client(i: int) -> bytes:
                reader, writer = await tasyncio.open_connection(name(12), node=node)
                for k in range(5):
                    writer.write(b"client %d line %d\n" % (i, k))
                    await asyncio.sleep(0)
                await writer.drain()
                lines = [await reader.readline() for _ in range(5)]
                writer.close()
                await writer.wait_closed()
                return b"".join(lines)

            results = await asyncio.gather(*(client(i) for i in range(clients)))
            for i, got in enumerate(results):
                assert got == b"".join(b"CLIENT %d LINE %d\n" % (i, k) for k in range(5))

    run(main())


def test_peer_abort_reads_as_connection_reset(node: str) -> None:
    async def main() -> None:
        outcome: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

        async def reader_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                outcome.set_result(await reader.read())
            except OSError as e:
                outcome.set_result(e)
            writer.close()

        async with await tasyncio.start_server(reader_side, name(13), node=node):
            _reader, writer = await tasyncio.open_connection(name(13), node=node)
            writer.write(b"data first")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()  # a TIPC close: the peer reads ECONNRESET
            got = await outcome
            assert isinstance(got, ConnectionResetError), got

    run(main())


def test_server_close_refuses_new_connections_and_waits_for_open_ones(node: str) -> None:
    async def main() -> None:
        server = await tasyncio.start_server(_upper_echo, name(14), node=node)
        reader, writer = await tasyncio.open_connection(name(14), node=node)
        writer.write(b"before\n")
        assert await reader.readline() == b"BEFORE\n"
        server.close()
        assert not server.is_serving()
        with pytest.raises(OSError):  # nothing is bound there any more
            await tasyncio.open_connection(name(14), node=node)
        # the open connection goes on until it ends; wait_closed() waits for it
        closed = asyncio.create_task(server.wait_closed())
        writer.write(b"still served\n")
        assert await reader.readline() == b"STILL SERVED\n"
        await asyncio.sleep(0.05)
        assert not closed.done()
        writer.close()
        await writer.wait_closed()
        await closed

    run(main())


def test_serve_forever_ends_on_cancel_and_closes(node: str) -> None:
    async def main() -> None:
        server = await tasyncio.start_server(_upper_echo, name(15), node=node, start_serving=False)
        assert not server.is_serving()
        forever = asyncio.create_task(server.serve_forever())
        reader, writer = await tasyncio.open_connection(name(15), node=node)
        writer.write(b"served\n")
        assert await reader.readline() == b"SERVED\n"
        writer.close()
        await writer.wait_closed()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert server.sockets == ()

    run(main())


def test_server_close_clients(node: str) -> None:
    async def main() -> None:
        server = await tasyncio.start_server(_upper_echo, name(16), node=node)
        reader, writer = await tasyncio.open_connection(name(16), node=node)
        writer.write(b"x\n")
        assert await reader.readline() == b"X\n"
        server.close()
        server.close_clients()  # shut down: the client reads end of stream
        assert await reader.read() == b""
        await server.wait_closed()
        writer.close()
        await writer.wait_closed()

    run(main())


def test_asyncio_server_serves_another_process(node: str) -> None:
    """Readiness crosses processes: a plain blocking client in a child process."""

    async def main() -> None:
        async with await tasyncio.start_server(
            _upper_echo, name(17), type=SOCK_SEQPACKET, node=node
        ):
            child = Child(
                node,
                f"""
                s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=NODE)
                s.settimeout(20)
                s.connect((tipcshm.TIPC_ADDR_NAME, {SERVICE}, 17, 0))
                for i in range(50):
                    s.send(b"line %d\\n" % i)
                    print(s.recv(100).decode().strip(), flush=True)
                s.shutdown(2)
                s.close()
                """,
            )
            try:
                for i in range(50):
                    line = await asyncio.to_thread(child.line)
                    assert line == f"LINE {i}"
                await asyncio.to_thread(child.finish)
            finally:
                child.close()

    run(main())


# -- no busy waiting -------------------------------------------------------------------
def test_an_idle_server_uses_no_cpu(node: str) -> None:
    """A server with an open connection and a pending RDM receive, idle for a second:
    its process uses a small fraction of that second of CPU (a busy poll uses all of it)."""

    async def main() -> tuple[float, float]:
        async with await tasyncio.start_server(_upper_echo, name(18), node=node):
            reader, writer = await tasyncio.open_connection(name(18), node=node)
            writer.write(b"warm up\n")
            assert await reader.readline() == b"WARM UP\n"
            with tasyncio.socket(AF_TIPC, SOCK_RDM, node=node) as rdm:
                rdm.bind(name(19))
                pending = asyncio.create_task(rdm.recv(100))
                waiting = asyncio.create_task(reader.readline())
                await asyncio.sleep(0.05)
                cpu0, wall0 = time.process_time(), time.monotonic()
                await asyncio.sleep(1.0)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                assert not pending.done() and not waiting.done()
                pending.cancel()
                waiting.cancel()
            writer.close()
            await writer.wait_closed()
            return cpu, wall

    cpu, wall = run(main())
    assert cpu < 0.2 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s idle"


# -- a node that stops ---------------------------------------------------------------------
def test_a_node_stop_ends_waiting_calls_streams_and_servers() -> None:
    """Waiting calls end with an error when their node stops (a closed inbox is not
    "try again"), stream readers get an error instead of waiting forever, and a server
    whose listener fails for good closes itself."""
    own = unique_node_name()
    start_node(own)
    errors: list[BaseException] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: errors.append(context["exception"])
        )
        s = tasyncio.socket(AF_TIPC, SOCK_RDM, node=own)
        s.bind(name(1))
        server = await tasyncio.start_server(_upper_echo, name(2), node=own)
        reader, writer = await tasyncio.open_connection(name(2), node=own)
        writer.write(b"up\n")
        assert await reader.readline() == b"UP\n"
        waiting = asyncio.create_task(s.recv(100))
        reading = asyncio.create_task(reader.read())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(stop_node, own)
        with pytest.raises(tipcshm.NodeNotRunning):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(OSError):  # ConnectionResetError or NodeNotRunning
            await asyncio.wait_for(reading, 10)
        await asyncio.wait_for(server.wait_closed(), 10)
        assert not server.is_serving()
        s.close()
        writer.close()

    try:
        run(main())
    finally:
        stop_node(own)
    assert shm_leftovers(own) == []
    assert all(isinstance(e, OSError) for e in errors), errors
