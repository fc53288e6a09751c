"""The destination seam for connection sockets: a peer on another node.

The SYN, data (24-byte CONN_MSG: the prefix names the node), CONN_MANAGER acks and the
endings all go into the bearer inbox; the peer's frames come into the socket's inbox (the
test plays the bearer worker and the peer: tests/seam_helpers.py). Flow control is the
kernel's without TIPC_BLOCK_FLOWCTL (tipcshm does not advertise it, and a kernel picks the
mode from its peer's capabilities): 512 messages in flight, an ack per 128 consumed,
whatever the peer advertises. A node-down abort from the bearer worker ends blocked calls
at once with ECONNRESET.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest
from seam_helpers import PEER, FakePeer, conn_msg, fake_peer

import tipcshm
from tipcshm import wire
from tipcshm.errors import HostUnreachable
from tipcshm.wire import connmgr

SEQ = tipcshm.SOCK_SEQPACKET
ID, NAME = tipcshm.TIPC_ADDR_ID, tipcshm.TIPC_ADDR_NAME
PEER_PORT = 0x0BEEF001


def _connect(peer: FakePeer, s: tipcshm.socket, address: tuple) -> wire.Header:
    """Connect ``s`` (blocking, in a thread) and answer its SYN from <PEER:PEER_PORT>."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            s.connect(address)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    syn = peer.take()
    assert syn.dest == PEER
    peer.deliver(s.port, conn_msg(PEER_PORT, s.port))  # accept()'s empty answer
    t.join(10)
    assert not t.is_alive() and not err
    return syn.hdr


def test_connect_send_recv_and_acks_with_a_remote_peer(node: str) -> None:
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, SEQ, node=node) as s:
        h = _connect(peer, s, (ID, PEER, 0x77, 0))
        assert h.syn and h.mtype == wire.DataType.DIRECT_MSG and h.hsize == wire.BASIC_H_SIZE
        assert (h.orig_node, h.dest_node, h.orig_port, h.dest_port) == (
            peer.own,
            PEER,
            s.port,
            0x77,
        )
        assert not h.dest_droppable and h.size == h.hsize  # connect(): an empty SYN
        assert s.getpeername() == (ID, PEER, PEER_PORT, 0, 0)
        # data out: 24-byte CONN_MSGs, the prefix saying where
        for msg in (b"one", b"two" * 1000):
            assert s.send(msg) == len(msg)
            f = peer.take()
            d = f.hdr
            assert f.dest == PEER
            assert d.hsize == wire.SHORT_H_SIZE and d.mtype == wire.DataType.CONN_MSG
            assert (d.prev_node, d.orig_port, d.dest_port) == (peer.own, s.port, PEER_PORT)
            assert f.data == msg
        # data in, and the ack after 128 consumed (message-based flow control)
        for i in range(128):
            peer.deliver(s.port, conn_msg(PEER_PORT, s.port, b"m%d" % i))
        for i in range(128):
            assert s.recv(100) == b"m%d" % i
        f = peer.take()
        ack = connmgr.ConnMgrMsg.decode(f.msg)
        assert f.dest == PEER
        assert ack.mtype == wire.ConnMgrType.CONN_ACK and ack.acked == 128
        assert (ack.orig_node, ack.orig_port, ack.dest_node, ack.dest_port) == (
            peer.own,
            s.port,
            PEER,
            PEER_PORT,
        )
        assert ack.adv_window == 0  # no TIPC_BLOCK_FLOWCTL: no advertised window
        # a message from the right port but another node is not the peer's: returned
        stray = conn_msg(PEER_PORT, s.port, b"x")
        stray = stray[:12] + (0x01009999).to_bytes(4, "big") + stray[16:]
        peer.deliver(s.port, stray)
        peer.deliver(s.port, conn_msg(PEER_PORT, s.port, b"real"))
        assert s.recv(100) == b"real"
        s.close()
        # close(): the ending goes to the peer through the bearer
        while True:
            f = peer.take()
            if f.dest == 0x01009999:
                continue  # the stray's rejection (no link there: the node drops it)
            break
        end = f.hdr
        assert f.dest == PEER
        assert end.hsize == wire.SHORT_H_SIZE and end.errcode == wire.ErrorCode.NO_PORT
        assert (end.orig_port, end.dest_port) == (s.port, PEER_PORT)


def test_named_connect_to_a_remote_domain(node: str) -> None:
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, SEQ, node=node) as s:
        h = _connect(peer, s, (NAME, 4000, 9, PEER))
        assert h.syn and h.mtype == wire.DataType.NAMED_MSG and h.hsize == wire.NAMED_H_SIZE
        assert (h.name_type, h.name_instance, h.dest_node, h.dest_port) == (4000, 9, PEER, 0)
        assert h.lookup_scope == wire.LOOKUP_SCOPE_NODE


def test_connect_without_a_link_is_ehostunreachable(node: str) -> None:
    with fake_peer(node, linked=False), tipcshm.socket(tipcshm.AF_TIPC, SEQ, node=node) as s:
        with pytest.raises(HostUnreachable) as e:
            s.connect((ID, PEER, 0x77, 0))
        assert e.value.errno == errno.EHOSTUNREACH


def test_window_is_512_messages_whatever_the_peer_advertises(node: str) -> None:
    """The peer's link row says TIPC_BLOCK_FLOWCTL (a kernel's 0xFFF); tipcshm does not
    advertise it, so both ends count messages: 512 unacked, then the sender waits for a
    CONN_ACK, which counts consumed messages."""
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, SEQ, node=node) as s:
        _connect(peer, s, (ID, PEER, 0x77, 0))
        s.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                s.send(b"x" * 10)
                sent += 1
                if sent % 64 == 0:
                    peer.drain()  # the link takes them; only acks open the window
        assert sent == 512
        ack = connmgr.build_ack(PEER, PEER_PORT, peer.own, s.port, 100)
        peer.deliver(s.port, ack)
        for _ in range(100):
            s.send(b"y")
        with pytest.raises(BlockingIOError):
            s.send(b"y")


def test_node_down_abort_ends_a_blocked_recv_at_once(node: str) -> None:
    """The bearer worker's abort (a 24-byte CONN_MSG from the peer with TIPC_ERR_NO_NODE,
    as node.c builds it when the peer node is lost): recv raises ECONNRESET at once, a send
    then EPIPE."""
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, SEQ, node=node) as s:
        _connect(peer, s, (ID, PEER, 0x77, 0))
        got: list[BaseException] = []

        def blocked() -> None:
            try:
                s.recv(100)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                got.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)  # let it block (the test asserts how fast it wakes, not this)
        start = time.monotonic()
        peer.unlink()
        peer.deliver(
            s.port,
            conn_msg(
                PEER_PORT,
                s.port,
                err=wire.ErrorCode.NO_NODE,
                user=wire.User.CRITICAL_IMPORTANCE,
            ),
        )
        t.join(5)
        assert not t.is_alive()
        assert time.monotonic() - start < 1.0
        assert len(got) == 1 and isinstance(got[0], ConnectionResetError)
        with pytest.raises(BrokenPipeError):
            s.send(b"after")
