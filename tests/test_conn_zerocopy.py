"""Zero-copy receive on connection sockets: ConnSocket.recv_buffer() and recv_array()."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import threading
import time

import numpy as np
import pytest
from helpers import Child
from test_conn import PEER, SERVICE, listener, pair

import tipcshm
from tipcshm import SOCK_SEQPACKET, SOCK_STREAM
from tipcshm.constants import MSG_DONTWAIT, MSG_WAITALL

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node


def test_seqpacket_messages_in_place_and_released_after_the_block(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        msgs = [os.urandom(n) for n in (1, 100, 66000, 7)]
        for m in msgs:
            c.send(m)
        for m in msgs:
            with b.recv_buffer() as view:
                assert view.readonly and bytes(view) == m
            with pytest.raises(ValueError):
                bytes(view)  # released: the ring space is the sender's again
        c.send(b"after")
        assert b.recv(100) == b"after"


def test_stream_pieces_add_up_to_what_was_sent(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    data = os.urandom(5 * 1024 * 1024 + 123)
    with srv, c, b:
        t = threading.Thread(target=c.sendall, args=(data,))
        t.start()
        got = hashlib.sha256()
        n = pieces = 0
        while n < len(data):
            with b.recv_buffer() as view:
                assert 0 < len(view) <= tipcshm.TIPC_MAX_USER_MSG_SIZE
                got.update(view)
                n += len(view)
                pieces += 1
        t.join(10)
        assert n == len(data) and got.digest() == hashlib.sha256(data).digest()
        assert pieces >= len(data) // tipcshm.TIPC_MAX_USER_MSG_SIZE


def test_stream_mixes_with_recv_and_recv_into(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.sendall(b"0123456789" * 3)
        assert b.recv(4) == b"0123"
        with b.recv_buffer() as view:  # the rest of the piece recv() split
            assert bytes(view) == (b"0123456789" * 3)[4:]
        c.sendall(b"abc")
        buf = bytearray(3)
        assert b.recv_into(buf, 3, MSG_WAITALL) == 3 and buf == b"abc"


def test_end_of_stream_and_reset(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.sendall(b"last")
        c.shutdown(2)
        with b.recv_buffer() as view:
            assert bytes(view) == b"last"
        with b.recv_buffer() as view:
            assert len(view) == 0  # EOF
    srv, c, b = pair(node, SOCK_SEQPACKET, instance=2)
    with srv, b:
        c.close()
        with pytest.raises(ConnectionResetError), b.recv_buffer():
            pass


def test_would_block_and_timeout(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        with pytest.raises(BlockingIOError), b.recv_buffer(MSG_DONTWAIT):
            pass
        b.settimeout(0.05)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError), b.recv_buffer():
            pass
        assert time.monotonic() - t0 >= 0.04
        with pytest.raises(tipcshm.TipcError) as ei:
            b.recv_buffer(MSG_WAITALL)
        assert ei.value.errno == errno.EINVAL and "MSG_DONTWAIT" in str(ei.value)


def test_export_outliving_the_block_is_an_error_not_silent_corruption(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        c.send(b"x" * 64)
        c.send(b"next")
        kept = None
        with pytest.raises(BufferError, match="outlived the block"), b.recv_buffer() as view:
            kept = pickle.PickleBuffer(view)  # holds a buffer export of the view itself
        assert kept is not None
        assert b.recv(10) == b"next"  # the message was consumed; the socket goes on


def test_numpy_on_the_view_reads_in_place(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        words = np.arange(1000, dtype=np.uint64)
        c.sendall(words.tobytes())
        with b.recv_buffer() as view:
            assert int(np.frombuffer(view, np.uint64).sum()) == int(words.sum())


def test_receiving_inside_the_block_raises_instead_of_hanging(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        c.send(b"one")
        c.send(b"two")
        with b.recv_buffer() as view:
            with pytest.raises(tipcshm.TipcError) as ei:
                b.recv(10)
            assert ei.value.errno == errno.EDEADLK
            with pytest.raises(tipcshm.TipcError):
                b.recv_buffer().__enter__()
            assert bytes(view) == b"one"
        assert b.recv(10) == b"two"


def test_send_waiting_for_acks_inside_the_block_raises(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        c.send(b"hello")
        with b.recv_buffer() as view:
            assert bytes(view) == b"hello"
            for _ in range(512):  # the window: c reads nothing, so no acks come back
                b.send(b"r")
            with pytest.raises(tipcshm.TipcError) as ei:
                b.send(b"one too many")
            assert ei.value.errno == errno.EDEADLK
        for _ in range(512):
            assert c.recv(10) == b"r"
        b.send(b"window open again")
        assert c.recv(100) == b"window open again"


def test_other_thread_waits_for_the_block(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        c.send(b"first")
        c.send(b"second")
        got: list[bytes] = []
        with b.recv_buffer() as view:
            t = threading.Thread(target=lambda: got.append(b.recv(100)))
            t.start()
            time.sleep(0.05)
            assert not got  # blocked on the receive side the block holds
            first = bytes(view)
        t.join(5)
        assert (first, got) == (b"first", [b"second"])


def test_peer_killed_while_reader_waits_in_recv_buffer(node: str) -> None:
    lst = listener(node)
    child = Child(node, PEER.format(kind="SEQPACKET", service=SERVICE))
    try:
        conn, _ = lst.accept()
        assert child.line() == "connected"
        result: list[BaseException] = []

        def reader() -> None:
            try:
                with conn.recv_buffer():
                    pass
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                result.append(e)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.05)
        child.kill9()
        t.join(5)
        assert not t.is_alive() and isinstance(result[0], ConnectionResetError)
        conn.close()
    finally:
        child.close()
        lst.close()


# -- recv_array(): runs of same-size messages as one read-only (k, size) numpy array -----

PIECE = tipcshm.TIPC_MAX_USER_MSG_SIZE


def test_array_of_stream_pieces_in_place(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    data = os.urandom(1 << 20)  # 15 whole pieces and one of 58,576 bytes
    with srv, c, b:
        c.sendall(data)
        with b.recv_array(1 << 20) as rows:
            assert rows.shape == (15, PIECE) and rows.dtype == np.uint8
            assert not rows.flags.writeable
            assert rows.tobytes() == data[: 15 * PIECE]
            words = rows.view(np.uint64)  # pieces are multiples of 8: whole words
            assert int(words.sum()) == int(np.frombuffer(data[: 15 * PIECE], np.uint64).sum())
        with b.recv_array(1 << 20) as rows:
            assert rows.shape == (1, len(data) - 15 * PIECE)
            assert rows.tobytes() == data[15 * PIECE :]
        with pytest.raises(BlockingIOError):
            b.recv(1, MSG_DONTWAIT)  # all of it was consumed


def test_array_rows_are_limited_by_max_bytes_but_never_empty(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    data = os.urandom(5 * PIECE)
    with srv, c, b:
        c.sendall(data)
        with b.recv_array(2 * PIECE + 1) as rows:
            assert rows.shape == (2, PIECE)
        with b.recv_array(1) as rows:  # less than a piece: still the next one, whole
            assert rows.shape == (1, PIECE)
        with b.recv_array() as rows:
            assert rows.tobytes() == data[3 * PIECE :]
        for bad in (0, -1):
            with pytest.raises(tipcshm.TipcError) as ei:
                b.recv_array(bad)
            assert ei.value.errno == errno.EINVAL and "max_bytes" in str(ei.value)


def test_array_of_seqpacket_messages_keeps_their_boundaries(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        msgs = [bytes([i]) * 100 for i in range(5)] + [b"y" * 200, b"z" * 200, b"!"]
        for m in msgs:
            c.send(m)
        with b.recv_array() as rows:  # a row per message, as many as have one size
            assert [bytes(r) for r in rows] == msgs[:5]
        with b.recv_array() as rows:
            assert rows.shape == (2, 200)
        with b.recv_array() as rows:
            assert rows.tobytes() == b"!"


def test_array_takes_what_recv_left_and_ends_like_recv(node: str) -> None:
    srv, c, b = pair(node, SOCK_STREAM)
    with srv, c, b:
        c.sendall(b"0123456789")
        assert b.recv(4) == b"0123"
        with b.recv_array() as rows:  # the rest of the piece recv() split
            assert rows.tobytes() == b"456789" and not rows.flags.writeable
        c.sendall(b"last")
        c.shutdown(2)
        with b.recv_array() as rows:
            assert rows.tobytes() == b"last"
        with b.recv_array() as rows:
            assert rows.size == 0  # EOF
    srv, c, b = pair(node, SOCK_SEQPACKET, instance=2)
    with srv, b:
        with pytest.raises(BlockingIOError), b.recv_array(flags=MSG_DONTWAIT):
            pass
        with pytest.raises(tipcshm.TipcError) as ei:
            b.recv_array(flags=MSG_WAITALL)
        assert ei.value.errno == errno.EINVAL
        c.close()
        with pytest.raises(ConnectionResetError), b.recv_array():
            pass


def test_array_block_holds_the_receive_side(node: str) -> None:
    srv, c, b = pair(node)
    with srv, c, b:
        c.send(b"one")
        c.send(b"two!")
        with b.recv_array() as rows:
            for call in (lambda: b.recv(10), lambda: b.recv_array().__enter__()):
                with pytest.raises(tipcshm.TipcError) as ei:
                    call()
                assert ei.value.errno == errno.EDEADLK
            assert rows.tobytes() == b"one"
        assert b.recv(10) == b"two!"


def test_array_reader_keeps_a_writer_on_a_full_ring_going(node: str) -> None:
    """Consuming k messages at once acks them all: a writer that fills the ring again
    and again gets through, and the bytes add up."""
    srv, c, b = pair(node, SOCK_STREAM)
    data = os.urandom(48 << 20)  # 12 times the ring, 763 pieces: more than a window
    with srv, c, b:
        t = threading.Thread(target=c.sendall, args=(data,))
        t.start()
        got = hashlib.sha256()
        n = 0
        while n < len(data):
            with b.recv_array(3 << 20) as rows:
                got.update(rows.tobytes())
                n += rows.size
        t.join(10)
        assert not t.is_alive()
        assert n == len(data) and got.digest() == hashlib.sha256(data).digest()
