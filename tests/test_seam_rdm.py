"""The destination seam for connectionless sockets: (node, port) everywhere.

Sends to another node go into the bearer inbox of the bearer whose link row to that node
is UP, each frame BEARER_FRAME_PREFIX (destination node, 0) + the message exactly as the
kernel would put it on the wire; no link: EHOSTUNREACH (tipc_node_xmit). The test plays
the bearer worker (tests/seam_helpers.py).
"""

from __future__ import annotations

import ast
import errno
import threading
from pathlib import Path

import pytest
from seam_helpers import OTHER, PEER, fake_peer

import tipcshm
from tipcshm import wire
from tipcshm.core.nametable import Binding, NameTable
from tipcshm.errors import HostUnreachable

RDM = tipcshm.SOCK_RDM
ID, NAME, NAMESEQ = tipcshm.TIPC_ADDR_ID, tipcshm.TIPC_ADDR_NAME, tipcshm.TIPC_ADDR_NAMESEQ


def _with_remote_binding(sock: tipcshm.socket, type_: int, lower: int, upper: int, port: int):
    """Make the socket's client see PEER's cluster-scope binding, as the name-table worker's
    replica will once the bearer worker fed it: a decoded table with that binding added,
    returned by client.table() (the replica's own writer is not part of this test)."""
    client = sock._client
    real = client.table

    def table() -> NameTable:
        t = NameTable(client.addr)
        for b in real().bindings():
            t.insert(b)
        t.insert(
            Binding(
                type=type_,
                lower=lower,
                upper=upper,
                scope=tipcshm.TIPC_CLUSTER_SCOPE,
                node=PEER,
                port=port,
                key=port,
            )
        )
        return t

    client.table = table  # type: ignore[method-assign]
    return real


def test_direct_send_to_another_node_goes_to_the_bearer(node: str) -> None:
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as s:
        for payload in (b"first", b"second (cached route)", b"third"):
            assert s.sendto(payload, (ID, PEER, 0x1234, 0)) == len(payload)
            f = peer.take()
            assert (f.dest, f.reserved) == (PEER, 0)
            h = f.hdr
            assert h.user == wire.User.LOW_IMPORTANCE
            assert h.mtype == wire.DataType.DIRECT_MSG
            assert h.hsize == wire.BASIC_H_SIZE and h.size == len(f.msg)
            assert (h.prev_node, h.orig_node, h.dest_node) == (peer.own, peer.own, PEER)
            assert (h.orig_port, h.dest_port) == (s.port, 0x1234)
            assert h.lookup_scope == 0 and not h.syn and h.errcode == 0
            assert h.dest_droppable  # RDM's default, as the kernel's
            assert f.data == payload
        assert peer.none_waiting()


def test_no_link_is_ehostunreachable_and_a_link_down_is_noticed(node: str) -> None:
    with (
        fake_peer(node, linked=False) as peer,
        tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as s,
    ):
        with pytest.raises(HostUnreachable) as e:
            s.sendto(b"x", (ID, PEER, 7, 0))
        assert e.value.errno == errno.EHOSTUNREACH
        peer.link()
        s.sendto(b"up", (ID, PEER, 7, 0))  # the link row is read again once it changed
        assert peer.take().data == b"up"
        peer.unlink()
        with pytest.raises(HostUnreachable):  # the cached route sees the row change
            s.sendto(b"down", (ID, PEER, 7, 0))
        with pytest.raises(HostUnreachable):  # a node nobody links to
            s.sendto(b"x", (ID, OTHER, 7, 0))
        assert peer.none_waiting()


def test_anycast_with_a_remote_lookup_domain_defers_the_lookup(node: str) -> None:
    """tipc_nametbl_lookup_anycast: a lookup node other than this one is not looked up
    here; the NAMED_MSG goes to that node with dest port 0 and node lookup scope
    (tipc_node2scope), and that node resolves the name."""
    with fake_peer(node) as peer, tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as s:
        for _ in range(2):
            s.sendto(b"hello", (NAME, 1000, 5, PEER))
            f = peer.take()
            h = f.hdr
            assert f.dest == PEER
            assert h.mtype == wire.DataType.NAMED_MSG and h.hsize == wire.NAMED_H_SIZE
            assert (h.name_type, h.name_instance) == (1000, 5)
            assert h.lookup_scope == wire.LOOKUP_SCOPE_NODE
            assert (h.dest_node, h.dest_port, h.orig_node) == (PEER, 0, peer.own)
            assert f.data == b"hello"
        with pytest.raises(HostUnreachable):
            s.sendto(b"x", (NAME, 1000, 5, OTHER))


def test_anycast_with_own_domain_takes_only_local_bindings(node: str) -> None:
    with (
        fake_peer(node) as peer,
        tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as s,
        tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as r,
    ):
        r.bind((NAME, 1001, 1, 0))
        real = _with_remote_binding(s, 1001, 1, 10, 0x99)
        try:
            # domain 0: this node's binding first, as today
            s.sendto(b"any", (NAME, 1001, 1, 0))
            assert r.recv(10) == b"any"
            # own domain: only this node's bindings
            s.sendto(b"own", (NAME, 1001, 1, peer.own))
            assert r.recv(10) == b"own"
            # instance 2: only PEER has it; own domain finds nothing
            with pytest.raises(HostUnreachable):
                s.sendto(b"x", (NAME, 1001, 2, peer.own))
            s.sendto(b"remote", (NAME, 1001, 2, 0))
            h = peer.take().hdr
            assert (h.dest_node, h.dest_port) == (PEER, 0x99)
            assert h.lookup_scope == wire.LOOKUP_SCOPE_CLUSTER
            assert (h.name_type, h.name_instance) == (1001, 2)
        finally:
            s._client.table = real  # type: ignore[method-assign]
        assert peer.none_waiting()


def test_multicast_replicates_to_remote_nodes(node: str) -> None:
    with (
        fake_peer(node) as peer,
        tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as s,
        tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node) as r,
    ):
        r.bind((NAMESEQ, 1002, 0, 10))
        real = _with_remote_binding(s, 1002, 5, 20, 0x77)
        try:
            s.sendto(b"all", (NAMESEQ, 1002, 3, 8))
            assert r.recv(10) == b"all"
            f = peer.take()
            h = f.hdr
            assert f.dest == PEER
            assert h.mtype == wire.DataType.MCAST_MSG and h.hsize == wire.MCAST_H_SIZE
            assert (h.name_type, h.name_lower, h.name_upper) == (1002, 3, 8)
            assert (h.dest_node, h.dest_port, h.orig_node) == (PEER, 0, peer.own)
            assert h.lookup_scope == wire.LOOKUP_SCOPE_CLUSTER
            assert h.src_droppable  # msg_is_rcast: sent by replicast
            assert f.data == b"all"
            # only the remote node has {1002, 15}: no local copy, one remote
            s.sendto(b"far", (NAMESEQ, 1002, 15, 15))
            assert peer.take().data == b"far"
            # a remote binding whose node has no link: skipped, as tipc_rcast_xmit does
            peer.unlink()
            s.sendto(b"near", (NAMESEQ, 1002, 3, 8))
            assert r.recv(10) == b"near"
            s.sendto(b"lost", (NAMESEQ, 1002, 15, 15))
        finally:
            s._client.table = real  # type: ignore[method-assign]
        assert peer.none_waiting()


def test_a_full_bearer_lane_blocks_the_sender(node: str) -> None:
    """Back-pressure of a congested link: RDM and DGRAM both wait (the kernel's sender
    waits for a congested link whatever its type), non-blocking ones get EAGAIN."""
    with fake_peer(node) as peer:
        for kind in (RDM, tipcshm.SOCK_DGRAM):
            with tipcshm.socket(tipcshm.AF_TIPC, kind, node=node) as s:
                s.setblocking(False)
                big = b"z" * 60000
                sent = 0
                with pytest.raises(BlockingIOError):
                    while True:
                        s.sendto(big, (ID, PEER, 5, 0))
                        sent += 1
                assert sent >= 2
                s.setblocking(True)
                done = threading.Event()
                t = threading.Thread(
                    target=lambda s=s, big=big, done=done: (
                        s.sendto(big, (ID, PEER, 5, 0)),
                        done.set(),
                    )
                )
                t.start()
                assert not done.wait(0.3)  # blocked on the full lane
                assert peer.drain() == sent
                assert done.wait(10)
                t.join()
                assert peer.drain() == 1


def test_returned_messages_go_back_to_the_remote_sender(node: str) -> None:
    """A message from another node that asked to be returned (not dest-droppable) and was
    never read goes back through the bearer when the socket closes (tsk_rej_rx_queue)."""
    with fake_peer(node) as peer:
        r = tipcshm.socket(tipcshm.AF_TIPC, RDM, node=node)
        h = wire.Header(
            hsize=wire.BASIC_H_SIZE,
            size=wire.BASIC_H_SIZE + 4,
            mtype=wire.DataType.DIRECT_MSG,
            prev_node=PEER,
            orig_port=0x4242,
            dest_port=r.port,
            orig_node=PEER,
            dest_node=peer.own,
        )
        peer.deliver(r.port, wire.encode_message(h, b"back"))
        r.close()
        f = peer.take()
        back = f.hdr
        assert f.dest == PEER
        assert back.errcode == wire.ErrorCode.NO_PORT
        assert (back.dest_node, back.dest_port) == (PEER, 0x4242)
        assert (back.orig_node, back.orig_port) == (peer.own, h.dest_port)
        assert f.data == b"back"


def test_sock_does_not_import_conn() -> None:
    """sock.py and conn.py share tipcshm.plumbing instead of importing each other (conn
    builds on sock's Socket and registers itself)."""
    src = Path(tipcshm.sock.__file__).read_text()
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(ast.parse(src))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert "tipcshm.conn" not in imported
    assert "tipcshm.plumbing" in imported
