"""Two nodes on loopback link over UDP bearer workers."""

from __future__ import annotations

import signal
import socket
import struct

import pytest
from bearer_helpers import bearer_worker_process, linked_pair, up_peers, wait_for

import tipcshm
from tipcshm import wire
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    BEARER_FRAME_PREFIX,
    LinkRowState,
    NodeSegment,
    WorkerState,
    bearer_inbox_name,
)

pytestmark = pytest.mark.timeout(60)


def test_two_nodes_get_a_link_up_in_both_link_tables() -> None:
    with linked_pair() as (a, b, pa, pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) == {sb.addr} and up_peers(sb) == {sa.addr}, 5, "links")
            (la,) = sa.links()
            assert la.state == LinkRowState.UP and la.peer == sb.addr
            assert la.peer_id == sb.identity
            assert la.media == f"127.0.0.1:{pb}"
            assert la.name.startswith(wire.identity_to_str(sa.identity)[:16])
            assert la.up_since_ns > 0
            wait_for(lambda: sa.links()[0].counters["link_up_count"] == 1, 2, "counters")
            assert sa.bearer_counters(0)["rx_datagrams"] > 0
            assert sa.bearer_counters(0)["rx_bad"] == 0
            w = sa.worker(1)
            assert w is not None and w.state == WorkerState.RUNNING
        finally:
            sa.close()
            sb.close()


def test_a_killed_bearer_worker_is_restarted_and_links_again() -> None:
    with linked_pair() as (a, b, _pa, _pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) and up_peers(sb), 5, "links")
            victim = bearer_worker_process(a)
            victim.send_signal(signal.SIGKILL)
            victim.wait(5)

            def restarted() -> bool:
                w = sa.worker(1)
                return w is not None and w.restarts == 1 and w.state == WorkerState.RUNNING

            wait_for(restarted, 10, "restart")
            assert bearer_worker_process(a).pid != victim.pid
            # B's side notices the peer's new session (or its timeout); both end up again
            wait_for(lambda: up_peers(sa) == {sb.addr} and up_peers(sb) == {sa.addr}, 10, "relink")
        finally:
            sa.close()
            sb.close()


def test_garbage_datagrams_are_counted_not_fatal() -> None:
    with linked_pair() as (a, b, pa, _pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) and up_peers(sb), 5, "links")
            pid = bearer_worker_process(a).pid
            junk = [b"", b"x", bytes(23), bytes(76), b"\xff" * 200, bytes(range(256)) * 4]
            # a header that claims more bytes than it has, and one of an unknown node
            junk.append(struct.pack(">II", (2 << 29) | (10 << 21) | 1000, 0) + bytes(32))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for j in junk:
                    s.sendto(j, ("127.0.0.1", pa))
            wait_for(lambda: sa.bearer_counters(0)["rx_bad"] >= 5, 5, "rx_bad")
            assert bearer_worker_process(a).pid == pid
            w = sa.worker(1)
            assert w is not None and w.restarts == 0
            assert up_peers(sa) == {sb.addr}
        finally:
            sa.close()
            sb.close()


def _direct(src: int, src_port: int, dst: int, dst_port: int, data: bytes) -> bytes:
    h = wire.Header(
        user=wire.User.LOW_IMPORTANCE,
        hsize=wire.BASIC_H_SIZE,
        size=wire.BASIC_H_SIZE + len(data),
        mtype=wire.DataType.DIRECT_MSG,
        prev_node=src,
        orig_port=src_port,
        dest_port=dst_port,
        orig_node=src,
        dest_node=dst,
    )
    return wire.encode_message(h, data)


def test_a_frame_in_the_bearer_inbox_reaches_a_socket_on_the_other_node() -> None:
    with linked_pair() as (a, b, _pa, _pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) and up_peers(sb), 5, "links")
            with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=b) as rx:
                rx.settimeout(5)
                node_b, port = _sockid(rx)
                assert node_b == sb.addr
                msg = _direct(sa.addr, 4242, sb.addr, port, b"over the wire")
                with Inbox.attach(bearer_inbox_name(a, 0), trust=sa.trust, tag=sa.tag) as inbox:
                    p = inbox.producer()
                    with p.lock:
                        assert p.write(BEARER_FRAME_PREFIX.pack(sb.addr, 0) + msg)
                    data, addr = rx.recvfrom(100)
                assert data == b"over the wire"
                assert tuple(addr)[:3] == (tipcshm.TIPC_ADDR_ID, sa.addr, 4242)
            assert sa.bearer_counters(0)["from_lanes"] == 1
            wait_for(lambda: sb.bearer_counters(0)["to_lanes"] >= 1, 2, "delivery count")
        finally:
            sa.close()
            sb.close()


def _sockid(s: tipcshm.socket) -> tuple[int, int]:
    name = tuple(s.getsockname())
    # (TIPC_ADDR_ID, node, ref, 0, scope) as CPython reports it
    return int(name[1]), int(name[2])


def test_garbage_frames_in_the_bearer_inbox_are_counted_not_fatal() -> None:
    with linked_pair() as (a, b, _pa, _pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) and up_peers(sb), 5, "links")
            pid = bearer_worker_process(a).pid
            good = _direct(sa.addr, 1, sb.addr, 2, b"x")
            bad = [
                b"",
                b"1234567",
                BEARER_FRAME_PREFIX.pack(sb.addr, 0) + b"garbage" * 10,
                BEARER_FRAME_PREFIX.pack(sb.addr, 7) + good,  # reserved word set
                BEARER_FRAME_PREFIX.pack(sa.addr, 0) + good,  # to ourselves
                BEARER_FRAME_PREFIX.pack(0, 0) + good,
                BEARER_FRAME_PREFIX.pack(sb.addr, 0) + good[:-1],  # short
                BEARER_FRAME_PREFIX.pack(sb.addr, 0) + _direct(12345, 1, sb.addr, 2, b"x"),
                BEARER_FRAME_PREFIX.pack(sb.addr + 1, 0) + good,  # prefix != w7
            ]
            with Inbox.attach(bearer_inbox_name(a, 0), trust=sa.trust, tag=sa.tag) as inbox:
                p = inbox.producer()
                with p.lock:
                    for f in bad:
                        assert p.write(f)
            wait_for(lambda: sa.bearer_counters(0)["bad_from_lanes"] == len(bad), 5, "counted")
            assert sa.bearer_counters(0)["from_lanes"] == len(bad)
            assert bearer_worker_process(a).pid == pid
            assert up_peers(sa) == {sb.addr}
        finally:
            sa.close()
            sb.close()
