"""tipcshm nodes linked with each other over UDP bearers: on loopback, and in network
namespaces whose link loses, duplicates and reorders (tests/netns.py's relay).

What must hold: links come up between every pair; RDM messages arrive exactly once and in
order whatever the network does; a silent peer is noticed within the link tolerance and
the link comes back when the network does; a bearer worker killed with SIGKILL is
restarted by the supervisor and its links come back (see that test for what is lost).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import kernelvm
import netns
import psutil
import pytest
from netns import Namespace, VethPair

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, TIPC_ADDR_NAME, TIPC_ADDR_NAMESEQ, TIPC_CLUSTER_SCOPE
from tipcshm.testing import start_node, stop_node, unique_node_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
impaired_pair = netns.impaired_pair

SERVICE = 18888
TOLERANCE_MS = 1000


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_address(name: str) -> int:
    from tipcshm.shm.layout import NodeSegment

    seg = NodeSegment.attach(name)
    try:
        return int(seg.addr)
    finally:
        seg.close()


@pytest.fixture
def loopback_nodes() -> Iterator[list[str]]:
    """Three nodes on 127.0.0.1, each with its own UDP port and the others as remotes."""
    ports = [free_udp_port() for _ in range(3)]
    names = [unique_node_name("cl") for _ in ports]
    started: list[str] = []
    try:
        for name, port in zip(names, ports, strict=True):
            args = ["--bearer", f"udp:127.0.0.1:{port}", "--tolerance", str(TOLERANCE_MS)]
            for other in ports:
                if other != port:
                    args += ["--remote", f"127.0.0.1:{other}"]
            start_node(name, *args)
            started.append(name)
        yield names
    finally:
        for name in started:
            stop_node(name)


def ns_node(ns: Namespace, peer: Namespace, name: str) -> None:
    """A node whose supervisor (and bearer worker) runs in ``ns``, remote = ``peer``."""
    run = ns.run(
        [sys.executable, "-m", "tipcshm.cli", "start", "--name", name]
        + ["--bearer", f"udp:{ns.addr}", "--remote", peer.addr, "--tolerance", str(TOLERANCE_MS)]
    )
    if run.returncode != 0:
        err = (run.stderr or run.stdout).strip()
        raise AssertionError(f"node {name} in {ns.name} did not start: {err}")


@pytest.fixture
def ns_nodes(impaired_pair: VethPair) -> Iterator[tuple[VethPair, str, str]]:
    """Node A in namespace a and node B in b, linked through the relay (not impaired yet)."""
    a, b = unique_node_name("na"), unique_node_name("nb")
    started: list[str] = []
    try:
        for name, ns, peer in (
            (a, impaired_pair.a, impaired_pair.b),
            (b, impaired_pair.b, impaired_pair.a),
        ):
            ns_node(ns, peer, name)
            started.append(name)
        kernelvm.wait_link(a, node_address(b), timeout=10)
        kernelvm.wait_link(b, node_address(a), timeout=10)
        yield impaired_pair, a, b
    finally:
        for name in started:
            stop_node(name)


def transfer(src: str, dst: str, count: int, instance: int = 1) -> list[int]:
    """``count`` numbered RDM messages from node src to {SERVICE, instance} on dst;
    the numbers in the order they arrived (waits until quiet for 3 s).

    The receiver reads while the sender sends, as a real one does: a message that meets
    a full receiving socket on another node is rejected with TIPC_ERR_OVERLOAD, as the
    kernel rejects one past the socket's receive buffer."""
    rx = tipcshm.socket(AF_TIPC, SOCK_RDM, node=dst)
    rx.bind((TIPC_ADDR_NAMESEQ, SERVICE, instance, instance, TIPC_CLUSTER_SCOPE))
    got: list[int] = []

    def receive() -> None:
        rx.settimeout(3)
        while len(got) < count + 10:
            try:
                got.append(int.from_bytes(rx.recv(100)[:4], "big"))
            except TimeoutError:
                break

    reader = threading.Thread(target=receive, daemon=True)
    try:
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=src) as tx:
            deadline = time.monotonic() + 10
            while tipcshm.client.get_client(src).table().lookup_anycast(SERVICE, instance) is None:
                assert time.monotonic() < deadline, "the binding never reached the sender's node"
                time.sleep(0.02)
            reader.start()
            for i in range(count):
                tx.sendto(i.to_bytes(4, "big") + bytes(60), (TIPC_ADDR_NAME, SERVICE, instance, 0))
            reader.join(120)
    finally:
        rx.close()
    return got


def test_three_loopback_nodes_link_with_each_other(loopback_nodes: list[str]) -> None:
    addrs = {name: node_address(name) for name in loopback_nodes}
    for name in loopback_nodes:
        for other in loopback_nodes:
            if other != name:
                kernelvm.wait_link(name, addrs[other], timeout=10)


def test_rdm_between_loopback_nodes_exactly_once_in_order(loopback_nodes: list[str]) -> None:
    a, b, _c = loopback_nodes
    kernelvm.wait_link(a, node_address(b), timeout=10)
    assert transfer(a, b, 5000) == list(range(5000))


@pytest.mark.parametrize(
    "impairment",
    [
        {"loss": 5.0},
        {"duplicate": 10.0},
        {"reorder": 25.0, "delay_ms": 3.0},
        {"loss": 3.0, "duplicate": 3.0, "reorder": 10.0, "delay_ms": 2.0},
    ],
    ids=["loss", "duplication", "reordering", "all"],
)
def test_nothing_lost_duplicated_or_reordered_across_a_bad_network(
    ns_nodes: tuple[VethPair, str, str], impairment: dict[str, float]
) -> None:
    pair, a, b = ns_nodes
    pair.impair(seed=12, **impairment)
    got = transfer(a, b, 3000)
    pair.clear()
    counters = pair.relay_counters[-1]
    assert sum(counters[k] for k in ("lost", "duplicated", "reordered")) > 0  # it did act
    assert got == list(range(3000))


def test_a_silent_peer_is_noticed_within_tolerance_and_comes_back(
    ns_nodes: tuple[VethPair, str, str],
) -> None:
    pair, a, b = ns_nodes
    peer = node_address(b)
    pair.impair(cut=True)
    took = kernelvm.wait_link(a, peer, up=False, timeout=10)
    assert took <= TOLERANCE_MS / 1000 * 1.5 + 1.0, f"noticed after {took:.2f} s"
    pair.clear()
    kernelvm.wait_link(a, peer, timeout=15)
    assert transfer(a, b, 100) == list(range(100))


def _bearer_worker_pid(node: str) -> int:
    """The pid of node's bearer 0 worker, checked to be that node's bearer worker (its
    command line) before anyone signals it: shared memory alone is not trusted."""
    from tipcshm.shm.layout import NodeSegment

    seg = NodeSegment.attach(node)
    try:
        entry = seg.worker(1)
    finally:
        seg.close()
    assert entry is not None and entry.pid > 0, f"{node} has no bearer worker in slot 1"
    cmdline = " ".join(psutil.Process(entry.pid).cmdline())
    assert "bearer" in cmdline and node in cmdline, cmdline
    return entry.pid


def test_a_killed_bearer_worker_is_restarted_and_its_links_come_back(
    ns_nodes: tuple[VethPair, str, str],
) -> None:
    """kill -9 of a bearer worker mid-stream is a link failure: the supervisor restarts the
    worker, its link comes back, and the stream goes on. Sends while no link is up fail
    with EHOSTUNREACH (the message was not accepted; the sender retries it, as it would
    on kernel TIPC). What arrives is in order and never twice. What the killed worker had
    taken from the lanes and the peer had not acknowledged is lost, and so is what its
    successor sent while the peer was still resetting the old link: a link reset empties
    its queue, as a kernel link's without a second link to fail over to. What the senders
    left in the inbox is held by the successor until the link is back."""
    pair, a, b = ns_nodes
    peer = node_address(b)
    count, instance = 20000, 7
    rx = tipcshm.socket(AF_TIPC, SOCK_RDM, node=b)
    rx.bind((TIPC_ADDR_NAMESEQ, SERVICE, instance, instance, TIPC_CLUSTER_SCOPE))
    got: list[int] = []
    refused = 0
    pid = _bearer_worker_pid(a)
    try:
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=a) as tx:
            deadline = time.monotonic() + 10
            while tipcshm.client.get_client(a).table().lookup_anycast(SERVICE, instance) is None:
                assert time.monotonic() < deadline, "the binding never reached the sender's node"
                time.sleep(0.02)
            rx.settimeout(0)
            killed_at = count // 4
            i = 0
            while i < count:
                if i == killed_at and pid:
                    os.kill(pid, signal.SIGKILL)
                    pid = 0
                try:
                    tx.sendto(
                        i.to_bytes(4, "big") + bytes(60), (TIPC_ADDR_NAME, SERVICE, instance, 0)
                    )
                except OSError as exc:  # no link (EHOSTUNREACH), or the name is gone meanwhile
                    assert exc.errno == errno.EHOSTUNREACH, exc
                    refused += 1
                    assert refused < 100000, "the link never came back"
                    time.sleep(0.001)
                    continue
                i += 1
                with contextlib.suppress(BlockingIOError):
                    while True:
                        got.append(int.from_bytes(rx.recv(100)[:4], "big"))
            rx.settimeout(3)
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(int.from_bytes(rx.recv(100)[:4], "big"))
    finally:
        rx.close()
    kernelvm.wait_link(a, peer, timeout=15)
    assert _bearer_worker_pid(a) != 0
    assert got == sorted(set(got)), "out of order or twice"
    lost = set(range(count)) - set(got)
    assert len(lost) < count - 2000  # the stream went on after the restart
    # Once the link is back and has settled, nothing is lost.
    time.sleep(3 * TOLERANCE_MS / 1000)
    assert transfer(a, b, 2000, instance=8) == list(range(2000))
