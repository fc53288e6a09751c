"""Sockets as files: makefile(), sendfile(), dup(), detach(), fromfd()."""

from __future__ import annotations

import errno
import gc
import hashlib
import io
import os
import select
import socket
import tempfile
import threading

import pytest
from helpers import connected_trio

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM, sockfile

pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file

SERVICE = 7400


def connected(node: str, kind: int, instance: int = 1):
    srv, c, b = connected_trio(node, kind, SERVICE, instance)
    srv.close()
    return c, b


def expect_ebadf(call) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == errno.EBADF


def test_makefile_text_lines_over_stream(node: str) -> None:
    c, b = connected(node, SOCK_STREAM)
    with c, b:
        w = c.makefile("w", encoding="utf-8", newline="\n")
        r = b.makefile("r", encoding="utf-8", newline="\n")
        lines = [f"line {i}: {'é' * (i % 7)}\n" for i in range(200)]
        w.writelines(lines)
        w.write("no newline at the end")
        w.flush()
        assert [r.readline() for _ in lines] == lines
        w.close()
        c.shutdown(socket.SHUT_RDWR)
        assert r.read() == "no newline at the end"  # then EOF: the peer shut down
        r.close()


def test_makefile_binary_readline_over_seqpacket(node: str) -> None:
    """Messages read back to back as one byte stream, as on a kernel SEQPACKET socket."""
    c, b = connected(node, SOCK_SEQPACKET, 2)
    with c, b:
        for msg in (b"first line\nsecond ", b"half\n", b"third\nfour", b"th\n"):
            c.send(msg)
        with b.makefile("rb") as f:
            assert isinstance(f, io.BufferedReader)
            assert [f.readline() for _ in range(4)] == [
                b"first line\n",
                b"second half\n",
                b"third\n",
                b"fourth\n",
            ]
        with c.makefile("wb") as f:
            f.write(b"one message")  # buffered: one send on flush
        assert b.recv(100) == b"one message"


def test_makefile_read_exact_and_timeout(node: str) -> None:
    c, b = connected(node, SOCK_STREAM, 3)
    with c, b:
        f = b.makefile("rwb", buffering=0)
        sent = bytes(range(256)) * 40
        c.sendall(sent)
        got = b""
        while len(got) < len(sent):  # unbuffered: each read is one recv_into
            got += f.read(len(sent) - len(got))
        assert got == sent
        b.settimeout(0.2)
        with pytest.raises(socket.timeout):
            f.read(1)
        with pytest.raises(OSError, match="timed out object"):
            f.read(1)  # the stdlib's SocketIO, refusing after a timeout
        f.close()


def test_close_waits_for_the_files_made_from_the_socket(node: str) -> None:
    """socket.close() with files open: the socket works until the last one closes."""
    c, b = connected(node, SOCK_STREAM, 4)
    with c:
        f = b.makefile("rb")
        b.close()  # not yet: f is open
        c.sendall(b"still here\n")
        assert f.readline() == b"still here\n"
        f.close()  # now b closes: the peer sees its abort
        expect_ebadf(b.getsockname)
        with pytest.raises(ConnectionResetError):
            c.recv(10)


def test_sendfile_stream_and_seqpacket(node: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 123)
    with tempfile.TemporaryFile() as tf:
        tf.write(payload)
        tf.seek(0)
        c, b = connected(node, SOCK_STREAM, 5)
        with c, b:
            got = bytearray()

            def read_all() -> None:
                while len(got) < len(payload):
                    got.extend(b.recv(1 << 20))

            t = threading.Thread(target=read_all)
            t.start()
            assert c.sendfile(tf) == len(payload)
            t.join(30)
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            assert tf.tell() == len(payload)
            # offset and count, and the file's position after what was sent
            assert c.sendfile(tf, 1000, 5000) == 5000
            assert b.recv(5000, socket.MSG_WAITALL) == payload[1000:6000]
            assert tf.tell() == 6000
        c, b = connected(node, SOCK_SEQPACKET, 6)
        with c, b:
            tf.seek(0)
            assert c.sendfile(tf, 0, 20000) == 20000
            assert b.recv(65536) == payload[:8192]  # one message per block
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as r, tempfile.TemporaryFile() as tf:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            r.sendfile(tf)
    with tempfile.TemporaryFile("w+") as text:
        c, b = connected(node, SOCK_STREAM, 7)
        with c, b:
            with pytest.raises(ValueError, match="binary mode"):
                c.sendfile(text)
            c.setblocking(False)
            with tempfile.TemporaryFile() as tf, pytest.raises(ValueError, match="non-blocking"):
                c.sendfile(tf)


def test_dup_shares_the_socket_until_every_handle_closes(node: str) -> None:
    c, b = connected(node, SOCK_SEQPACKET, 8)
    with b:
        d = c.dup()
        assert d.getsockname() == c.getsockname()
        assert d.type == SOCK_SEQPACKET
        c.close()
        d.send(b"from the dup")
        assert b.recv(100) == b"from the dup"
        b.send(b"to the dup")
        assert d.recv(100) == b"to the dup"
        d.close()
        d.close()
        assert d.fileno() == -1
        expect_ebadf(lambda: d.send(b"x"))
        expect_ebadf(c.getsockname)
        with pytest.raises(ConnectionResetError):
            b.recv(10)


def test_detach_and_attach_again(node: str) -> None:
    c, b = connected(node, SOCK_SEQPACKET, 9)
    with b:
        number = c.detach()
        assert isinstance(number, int) and number >= 0
        expect_ebadf(lambda: c.send(b"x"))
        c.close()  # closing the detached object releases nothing
        b.send(b"kept")
        handle = sockfile.fromfd(number, AF_TIPC, SOCK_SEQPACKET)
        assert handle.recv(10) == b"kept"
        handle.close()
        again = sockfile.attach(number)
        assert again.fileno() == number
        again.send(b"back")
        assert b.recv(10) == b"back"
        again.close()
        with pytest.raises(ConnectionResetError):
            b.recv(10)
    for bad in (number, 0, 99999):
        with pytest.raises(io.UnsupportedOperation, match="not a tipcshm socket"):
            sockfile.attach(bad)
        with pytest.raises(io.UnsupportedOperation, match="another process"):
            sockfile.fromfd(bad, AF_TIPC, SOCK_SEQPACKET)


def test_detach_refused_while_files_are_open(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        f = s.makefile("rb")
        with pytest.raises(io.UnsupportedOperation, match="makefile"):
            s.detach()
        f.close()


def test_detached_socket_keeps_exact_readiness_after_the_old_object_is_gone(node: str) -> None:
    c, b = connected(node, SOCK_SEQPACKET, 9)
    with b:
        number = c.detach()
        del c
        gc.collect()  # the reactor's weak reference must not have pointed at that object
        again = sockfile.attach(number)
        assert select.select([number], [], [], 0)[0] == []
        b.send(b"ping")
        assert select.select([number], [], [], 10)[0] == [number]
        assert again.recv(10) == b"ping"
        assert select.select([number], [], [], 0)[0] == []
        again.close()
