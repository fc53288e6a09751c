"""Connections and topology events between two tipcshm nodes on loopback: a stream
checksummed both ways, a peer process killed with kill -9 and a peer node stopped (both
end the other side's blocked recv with ECONNRESET at once or within the link tolerance),
and node and link events (types 0 and 2) through tipcshm.subscribe."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
)
from tipcshm.shm.layout import NodeSegment
from tipcshm.testing import free_udp_port, start_node, stop_node, unique_node_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TOLERANCE_MS = 1000
SERVICE = 18900


def _addr(node: str) -> int:
    seg = NodeSegment.attach(node)
    try:
        return int(seg.addr)
    finally:
        seg.close()


def _links_up(node: str) -> set[int]:
    seg = NodeSegment.attach(node)
    try:
        return {peer for _row, peer in seg.link_rows_up()}
    finally:
        seg.close()


def _wait(pred: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """Two linked nodes on 127.0.0.1 (own UDP ports, each the other's remote); extra
    `start` options from the test's ``start_options`` mark."""
    mark = request.node.get_closest_marker("start_options")
    extra = tuple(mark.args) if mark else ()
    pa, pb = free_udp_port(), free_udp_port()
    a, b = unique_node_name("ca"), unique_node_name("cb")
    started: list[str] = []
    try:
        for name, own, other in ((a, pa, pb), (b, pb, pa)):
            start_node(
                name,
                *extra,
                "--tolerance",
                str(TOLERANCE_MS),
                bearers=[f"udp:127.0.0.1:{own}"],
                remotes=[f"127.0.0.1:{other}"],
            )
            started.append(name)
        _wait(lambda: _addr(b) in _links_up(a) and _addr(a) in _links_up(b), "link")
        yield a, b
    finally:
        for name in started:
            stop_node(name)


def _listen(node: str, kind: int, instance: int) -> tipcshm.socket:
    ls = tipcshm.socket(AF_TIPC, kind, node=node)
    ls.bind((TIPC_ADDR_NAMESEQ, SERVICE, instance, instance, TIPC_CLUSTER_SCOPE))
    ls.listen(1)
    return ls


def _wait_name(node: str, instance: int) -> None:
    client = tipcshm.client.get_client(node)
    _wait(lambda: client.table().lookup_anycast(SERVICE, instance) is not None, "binding")


@pytest.mark.parametrize("kind", [SOCK_STREAM, SOCK_SEQPACKET], ids=["stream", "seqpacket"])
def test_a_connection_carries_a_checksummed_stream_both_ways(
    pair: tuple[str, str], kind: int
) -> None:
    a, b = pair
    ls = _listen(b, kind, 1)
    chunk = 60000 if kind == SOCK_SEQPACKET else 1 << 20
    total = 2 << 20
    sums: dict[str, str] = {}

    def echo() -> None:
        conn, peer = ls.accept()
        assert peer[1] == _addr(a)  # (TIPC_ADDR_ID, node, port, 0, 0)
        with conn:
            h, n = hashlib.sha256(), 0
            while n < total:
                data = conn.recv(chunk)
                assert data
                h.update(data)
                n += len(data)
                conn.sendall(data)
            sums["server"] = h.hexdigest()

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    try:
        _wait_name(a, 1)
        with tipcshm.socket(AF_TIPC, kind, node=a) as c:
            c.settimeout(30)
            c.connect((TIPC_ADDR_NAME, SERVICE, 1, 0))
            sent, back = hashlib.sha256(), hashlib.sha256()
            got = 0
            for i in range(total // chunk + 1):
                part = os.urandom(min(chunk, total - i * chunk))
                if not part:
                    break
                sent.update(part)
                c.sendall(part)
                want = got + len(part)
                while got < want:
                    data = c.recv(chunk)
                    assert data
                    back.update(data)
                    got += len(data)
        t.join(30)
        assert sums["server"] == sent.hexdigest() == back.hexdigest()
    finally:
        ls.close()


_CLIENT = """
import sys, time, tipcshm
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=sys.argv[1])
s.connect((tipcshm.TIPC_ADDR_NAME, int(sys.argv[2]), 2, 0))
s.sendall(b"hello")
print("connected", flush=True)
time.sleep(60)
"""


def test_a_killed_peer_process_resets_the_connection_on_the_other_node(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    ls = _listen(b, SOCK_STREAM, 2)
    try:
        _wait_name(a, 2)
        accepted: list[tipcshm.socket] = []
        t = threading.Thread(target=lambda: accepted.append(ls.accept()[0]), daemon=True)
        t.start()  # tipcshm answers a connection request in accept()
        child = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, a, str(SERVICE)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "connected"
            t.join(10)
            with accepted[0] as conn:
                conn.settimeout(10)
                assert conn.recv(100) == b"hello"
                os.kill(child.pid, signal.SIGKILL)
                t0 = time.monotonic()
                with pytest.raises(ConnectionResetError):
                    conn.recv(100)
                assert time.monotonic() - t0 < 2.0  # the supervisor's abort, not a timeout
        finally:
            child.kill()
            child.wait()
    finally:
        ls.close()


def test_losing_the_peer_node_resets_its_connections_within_tolerance(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    ls = _listen(b, SOCK_SEQPACKET, 3)
    try:
        _wait_name(a, 3)
        accepted: list[tipcshm.socket] = []
        t = threading.Thread(target=lambda: accepted.append(ls.accept()[0]), daemon=True)
        t.start()  # tipcshm answers a connection request in accept()
        c = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=a)
        c.settimeout(10)
        c.connect((TIPC_ADDR_NAME, SERVICE, 3, 0))
        c.send(b"x")
        t.join(10)
        conn = accepted[0]
        conn.settimeout(10)
        assert conn.recv(10) == b"x"
        stop_node(a)  # its node goes: b's link times out, and its connections with it
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            conn.recv(10)
        assert time.monotonic() - t0 < TOLERANCE_MS / 1000 * 1.5 + 1.0
        conn.close()
        c.close()
    finally:
        ls.close()


def test_node_and_link_events_through_subscribe(pair: tuple[str, str]) -> None:
    a, b = pair
    peer = _addr(a)
    with (
        tipcshm.subscribe((TIPC_ADDR_NAMESEQ, 0, peer, peer), node=b) as nodes,
        tipcshm.subscribe((TIPC_ADDR_NAMESEQ, 2, peer, peer), node=b) as links,
    ):
        up = nodes.get(5)
        assert up is not None and up.kind == "published" and up.socket.node == peer
        lk = links.get(5)
        assert lk is not None and lk.kind == "published" and lk.socket.node == _addr(b)
        stop_node(a)
        down = nodes.get(TOLERANCE_MS / 1000 * 1.5 + 2)
        assert down is not None and down.kind == "withdrawn"
        lk = links.get(2)
        assert lk is not None and lk.kind == "withdrawn"


def test_ipv6_bearers_link_and_carry_messages() -> None:
    """Two nodes on ::1, as the kernel's UDP media runs over IPv6."""
    pa, pb = free_udp_port("::1"), free_udp_port("::1")
    a, b = unique_node_name("v6a"), unique_node_name("v6b")
    start_node(a, bearers=[f"udp:[::1]:{pa}"], remotes=[f"[::1]:{pb}"])
    try:
        start_node(b, bearers=[f"udp:[::1]:{pb}"], remotes=[f"[::1]:{pa}"])
        try:
            _wait(lambda: _addr(b) in _links_up(a), "link over IPv6")
            with (
                tipcshm.socket(AF_TIPC, tipcshm.SOCK_RDM, node=b) as rx,
                tipcshm.socket(AF_TIPC, tipcshm.SOCK_RDM, node=a) as tx,
            ):
                rx.bind((TIPC_ADDR_NAMESEQ, SERVICE, 9, 9, TIPC_CLUSTER_SCOPE))
                assert tipcshm.wait_for_service((TIPC_ADDR_NAME, SERVICE, 9, 0), 10, node=a)
                tx.sendto(b"over IPv6", (TIPC_ADDR_NAME, SERVICE, 9, 0))
                rx.settimeout(5)
                data, src = rx.recvfrom(100)
                assert data == b"over IPv6" and src[1] == _addr(a)
        finally:
            stop_node(b)
    finally:
        stop_node(a)


_STREAMER = """
import sys, tipcshm
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=sys.argv[1])
s.connect((tipcshm.TIPC_ADDR_NAME, int(sys.argv[2]), 5, 0))
chunk = bytes(range(256)) * 4096
for _ in range(int(sys.argv[3])):
    s.sendall(chunk)
s.close()
"""


@pytest.mark.start_options("--lane-kib", "2048")
def test_a_close_right_after_the_data_does_not_overtake_it(pair: tuple[str, str]) -> None:
    """A sender that closes (and exits) right after a burst: its data may still wait in
    its lane into the bearer worker, held for the congested link, when the receiver's
    acks meet its closed port and are returned. Those endings go behind the data, as on
    the kernel's one link queue: every byte arrives, then ECONNRESET."""
    a, b = pair
    ls = _listen(b, SOCK_STREAM, 5)
    mib = 32
    got: dict[str, object] = {}

    def sink() -> None:
        conn, _ = ls.accept()
        n = 0
        with conn:
            conn.settimeout(30)
            try:
                while data := conn.recv(1 << 20):
                    n += len(data)
            except ConnectionResetError:
                got["reset"] = True
        got["n"] = n

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    try:
        _wait_name(a, 5)
        run = subprocess.run(
            [sys.executable, "-c", _STREAMER, a, str(SERVICE), str(mib)], timeout=60
        )
        assert run.returncode == 0
        t.join(60)
        assert got.get("n") == mib << 20 and got.get("reset")
    finally:
        ls.close()
