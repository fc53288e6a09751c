"""tipcshm nodes against Linux kernel TIPC nodes in VMs (tests/kernelvm.py), over UDP.

The acceptance list of issue 12: links up by multicast discovery and with a unicast
remote; names both ways, withdrawals included; RDM both ways (66000-byte messages too);
SEQPACKET and STREAM both ways, 10 MB checksummed; the kernel's topology server reports
our service and node and ours the kernel's; multicast to a range reaches two kernel VMs
and a tipcshm node; a side stopped or a silent link is noticed within the tolerance, and
a restart brings the link back.

One VM boot per module fixture (seconds each). Skipped with the reason without /dev/kvm,
root or the harness.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import kernelvm
import pytest
from kernelvm import ECHO_TYPE, RDM_ECHO, SEQPACKET_ECHO, STREAM_ECHO, KernelVMs

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
    TIPC_PUBLISHED,
    TIPC_SUB_SERVICE,
    TIPC_TOP_SRV,
)

pytestmark = [pytest.mark.kvm, pytest.mark.slow, pytest.mark.timeout(300)]

HOST = kernelvm.host_node(1)
VM1, VM2 = kernelvm.vm_node(1), kernelvm.vm_node(2)
TOLERANCE_MS = 1000
MB10 = 10 * 1024 * 1024


def _boot(vms: KernelVMs) -> KernelVMs:
    """``vms`` to be entered with ``with`` (it boots them), or the test skipped."""
    if reason := kernelvm.unavailable():
        pytest.skip(f"no kernel VM: {reason}")
    return vms


def _start(vms: KernelVMs, **kw: object) -> str:
    return vms.start_tipcshm_node(**kw)  # type: ignore[arg-type]


class Cluster:
    def __init__(self, vms: KernelVMs, node: str) -> None:
        self.vms, self.node = vms, node


@pytest.fixture(scope="module")
def one_vm() -> Iterator[KernelVMs]:
    with _boot(KernelVMs(1)) as vms:
        yield vms


@pytest.fixture
def cluster(one_vm: KernelVMs) -> Iterator[Cluster]:
    """VM 1 (multicast discovery) and a tipcshm node on 192.0.2.1, linked, with the
    kernel's echo servers in our name table (its bulk follows the link up)."""
    node = _start(one_vm, extra=("--tolerance", str(TOLERANCE_MS)))
    try:
        kernelvm.wait_link(node, VM1, timeout=10)
        for inst in (RDM_ECHO, STREAM_ECHO, SEQPACKET_ECHO):
            assert tipcshm.wait_for_service((TIPC_ADDR_NAME, ECHO_TYPE, inst, 0), 10, node=node)
        yield Cluster(one_vm, node)
    finally:
        one_vm.stop_tipcshm_node(node)


def kernel_links_up(out: str) -> bool:
    """Whether `tipc link list` shows the link to our node up (not the broadcast link)."""
    return any(
        f"-{HOST:08x}:" in line and line.rstrip().endswith(": up") for line in out.splitlines()
    )


# -- links ---------------------------------------------------------------------------
def test_link_up_by_multicast_discovery(cluster: Cluster) -> None:
    out = cluster.vms.wait_kernel(1, "tipc link list", kernel_links_up)
    assert "broadcast-link: up" in out
    ours = kernelvm.tipcshm_cli("link", "list", "--name", cluster.node)
    assert ours.returncode == 0, ours.stderr
    assert f"{VM1:08x}" in ours.stdout and "up" in ours.stdout


def test_link_up_with_a_unicast_remote() -> None:
    # The VM's bearer has remoteip 192.0.2.1 and joins no multicast group: the link can
    # only come from unicast discovery both ways.
    with _boot(KernelVMs(1, mode="unicast")) as vms:
        node = _start(vms, remotes=(kernelvm.vm_ip(1),))
        kernelvm.wait_link(node, VM1, timeout=10)
        vms.wait_kernel(1, "tipc link list", kernel_links_up)
        ours = kernelvm.tipcshm_cli("link", "list", "--name", node)
        assert f"{VM1:08x}" in ours.stdout


# -- names ---------------------------------------------------------------------------
def _nametable_has(instance: int, node: int) -> object:
    def check(out: str) -> bool:
        return any(
            str(ECHO_TYPE) in row and f" {instance} " in f" {row} " and f"{node:08x}" in row
            for row in out.splitlines()
        )

    return check


def test_names_both_ways_and_withdrawals(cluster: Cluster) -> None:
    vms, node = cluster.vms, cluster.node
    # ours in the kernel's table, and gone when the socket closes
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    s.bind((TIPC_ADDR_NAMESEQ, ECHO_TYPE, 4242, 4242, TIPC_CLUSTER_SCOPE))
    vms.wait_kernel(1, "tipc nametable show", _nametable_has(4242, HOST))
    s.close()
    vms.wait_kernel(1, "tipc nametable show", lambda out: "4242" not in out)
    # the kernel's in ours, and gone when its socket closes
    table = kernelvm.tipcshm_cli("nametable", "show", "--name", node)
    assert table.returncode == 0, table.stderr
    assert _nametable_has(RDM_ECHO, VM1)(table.stdout), table.stdout
    pid = vms.background(1, f"tipctest rdm-echo {ECHO_TYPE} 77")
    deadline = time.monotonic() + 5
    while not _nametable_has(77, VM1)(
        kernelvm.tipcshm_cli("nametable", "show", "--name", node).stdout
    ):
        assert time.monotonic() < deadline, "the kernel's {18888, 77} never reached our table"
        time.sleep(0.1)
    vms.exec(1, f"kill {pid}")
    deadline = time.monotonic() + 5
    while _nametable_has(77, VM1)(kernelvm.tipcshm_cli("nametable", "show", "--name", node).stdout):
        assert time.monotonic() < deadline, "the kernel's withdrawal of {18888, 77} never arrived"
        time.sleep(0.1)


# -- RDM -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 1400, 66000])
def test_rdm_to_the_kernel_echo_server(cluster: Cluster, size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=cluster.node) as s:
        s.settimeout(5)
        s.sendto(payload, (TIPC_ADDR_NAME, ECHO_TYPE, RDM_ECHO, 0))
        data, addr = s.recvfrom(70000)
    assert data == payload
    assert addr[1] == VM1  # (TIPC_ADDR_ID, node, port, 0, 0) of the kernel's echo socket


def _echo_server(sock: tipcshm.Socket, count: int, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while count and not stop.is_set():
        try:
            data, addr = sock.recvfrom(70000)
        except TimeoutError:
            continue
        sock.sendto(data, addr)
        count -= 1


@pytest.mark.parametrize("spec", ["hello", "@66000"])
def test_rdm_from_the_kernel_to_us(cluster: Cluster, spec: str) -> None:
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=cluster.node)
    s.bind((TIPC_ADDR_NAMESEQ, ECHO_TYPE, 4243, 4243, TIPC_CLUSTER_SCOPE))
    stop = threading.Event()
    t = threading.Thread(target=_echo_server, args=(s, 3, stop))
    t.start()
    try:
        cluster.vms.wait_kernel(1, "tipc nametable show", _nametable_has(4243, HOST))
        run = cluster.vms.exec(1, f"tipctest rdm-send {ECHO_TYPE} 4243 {spec} 3 3000")
        assert run.returncode == 0, run.stdout
        assert "3/3 echoed" in run.stdout
    finally:
        stop.set()
        t.join()
        s.close()


# -- connections ---------------------------------------------------------------------
def test_stream_10mb_to_the_kernel_echo_server(cluster: Cluster) -> None:
    data = hashlib.sha256(b"seed").digest() * (MB10 // 32)
    with tipcshm.socket(AF_TIPC, SOCK_STREAM, node=cluster.node) as s:
        s.settimeout(30)
        s.connect((TIPC_ADDR_NAME, ECHO_TYPE, STREAM_ECHO, 0))
        back = hashlib.sha256()
        got = 0
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        while got < len(data):
            chunk = s.recv(1 << 20)
            assert chunk, "the kernel closed the stream early"
            back.update(chunk)
            got += len(chunk)
        sender.join()
    assert back.digest() == hashlib.sha256(data).digest()


def test_seqpacket_10mb_to_the_kernel_echo_server(cluster: Cluster) -> None:
    msg = 65536
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=cluster.node) as s:
        s.settimeout(30)
        s.connect((TIPC_ADDR_NAME, ECHO_TYPE, SEQPACKET_ECHO, 0))
        sent, back = hashlib.sha256(), hashlib.sha256()
        for i in range(MB10 // msg):
            m = (i.to_bytes(4, "big") * (msg // 4))[:msg]
            sent.update(m)
            s.send(m)
            reply = s.recv(msg + 1)
            assert len(reply) == msg  # message boundaries kept
            back.update(reply)
    assert back.digest() == sent.digest()


def _conn_echo(listener: tipcshm.Socket, done: threading.Event) -> None:
    conn, _ = listener.accept()
    with conn:
        try:
            while data := conn.recv(1 << 20):
                conn.sendall(data)
        except ConnectionResetError:
            pass  # the kernel client's close() after the echo: kernel TIPC reports a reset
    done.set()


@pytest.mark.parametrize(
    ("kind", "command", "spec"),
    [
        (SOCK_STREAM, "stream-send", f"@{MB10}"),
        (SOCK_SEQPACKET, "seqpacket-send", "@66000"),
    ],
)
def test_connections_from_the_kernel_to_us(
    cluster: Cluster, kind: int, command: str, spec: str
) -> None:
    ls = tipcshm.socket(AF_TIPC, kind, node=cluster.node)
    ls.bind((TIPC_ADDR_NAMESEQ, ECHO_TYPE, 4244, 4244, TIPC_CLUSTER_SCOPE))
    ls.listen(1)
    done = threading.Event()
    t = threading.Thread(target=_conn_echo, args=(ls, done), daemon=True)
    t.start()
    try:
        cluster.vms.wait_kernel(1, "tipc nametable show", _nametable_has(4244, HOST))
        run = cluster.vms.exec(1, f"tipctest {command} {ECHO_TYPE} 4244 {spec} 20000", timeout=90)
        assert run.returncode == 0 and "MATCH" in run.stdout, run.stdout  # tipctest's memcmp
        assert done.wait(10)
    finally:
        ls.close()


# -- topology ------------------------------------------------------------------------
def test_the_kernel_topology_server_reports_our_service_and_node(cluster: Cluster) -> None:
    vms = cluster.vms
    start = len(vms.console(1))
    pid = vms.background(1, f"tipctest topsub {ECHO_TYPE} 4245 4245")
    try:
        vms.wait_console(1, "topsub: subscribed", start=start)
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=cluster.node) as s:
            s.bind((TIPC_ADDR_NAMESEQ, ECHO_TYPE, 4245, 4245, TIPC_CLUSTER_SCOPE))
            want = f"type={ECHO_TYPE} found=4245..4245 node=0x{HOST:08x}"
            con = vms.wait_console(1, want, start=start)  # the node's own event comes first
        assert want in con[start:]
        # the node-state subscription reports our node as up (it already is)
        assert f"type=0 found={HOST}..{HOST}" in con[start:] or f"{HOST:#010x}" in con[start:]
    finally:
        vms.exec(1, f"kill {pid}")


SUBSCR_FMT = "=5I8s"


def test_our_topology_server_reports_the_kernel_service_and_node(cluster: Cluster) -> None:
    import struct

    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=cluster.node) as top:
        top.settimeout(5)
        top.connect((TIPC_ADDR_NAME, TIPC_TOP_SRV, TIPC_TOP_SRV, 0))
        top.send(
            struct.pack(
                SUBSCR_FMT, ECHO_TYPE, RDM_ECHO, RDM_ECHO, 0xFFFFFFFF, TIPC_SUB_SERVICE, b"svc"
            )
        )
        top.send(struct.pack(SUBSCR_FMT, 0, VM1, VM1, 0xFFFFFFFF, TIPC_SUB_SERVICE, b"node"))
        events = {}
        for _ in range(2):
            ev = top.recv(48)
            event, lower, upper, _port, node = struct.unpack_from("=5I", ev)
            events[ev[40:48].rstrip(b"\0")] = (event, lower, upper, node)
    assert events[b"svc"] == (TIPC_PUBLISHED, RDM_ECHO, RDM_ECHO, VM1)
    assert events[b"node"][0] == TIPC_PUBLISHED and events[b"node"][3] == VM1


# -- multicast across three nodes ----------------------------------------------------
def test_multicast_to_a_range_reaches_two_kernel_vms_and_a_tipcshm_node() -> None:
    with _boot(KernelVMs(2, echo="all")) as vms:
        node = _start(vms)
        kernelvm.wait_link(node, VM1, timeout=10)
        kernelvm.wait_link(node, VM2, timeout=10)
        with (
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as ours,
            tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as sender,
        ):
            ours.bind((TIPC_ADDR_NAMESEQ, ECHO_TYPE, 150, 150, TIPC_CLUSTER_SCOPE))
            for k in (1, 2):
                vms.wait_kernel(k, "tipc nametable show", _nametable_has(150, HOST))
            # from us: our own socket, and vm1's {18888,101} and vm2's {18888,102} echoes
            sender.settimeout(5)
            ours.settimeout(5)
            sender.sendto(b"mcast from tipcshm", (TIPC_ADDR_NAMESEQ, ECHO_TYPE, 100, 200))
            assert ours.recv(100) == b"mcast from tipcshm"
            echoed = {sender.recvfrom(100)[1][1] for _ in range(2)}  # the nodes
            assert echoed == {VM1, VM2}
            # from vm2: vm1's echo server, vm2's own, and our socket
            start = len(vms.console(1))
            run = vms.exec(2, f"tipctest rdm-mcast {ECHO_TYPE} 100 200 from-vm2")
            assert run.returncode == 0, run.stdout
            assert ours.recv(100) == b"from-vm2"
            vms.wait_console(1, '"from-vm2"', start=start)


# -- failure detection ---------------------------------------------------------------
def _tolerance_bound() -> float:
    return TOLERANCE_MS / 1000 * 1.5 + 1.0  # the kernel's probing granularity, plus slack


def test_a_silent_link_is_noticed_within_tolerance_and_comes_back(cluster: Cluster) -> None:
    vms, node = cluster.vms, cluster.node
    tap = vms.host.run(["ip", "link", "set", "tap1", "down"])
    assert tap.returncode == 0, tap.stderr
    try:
        took = kernelvm.wait_link(node, VM1, up=False, timeout=10)
        assert took <= _tolerance_bound(), f"link loss noticed after {took:.2f} s"
    finally:
        vms.host.run(["ip", "link", "set", "tap1", "up"])
    kernelvm.wait_link(node, VM1, timeout=15)


def test_the_kernel_stopping_and_restarting_its_bearer(cluster: Cluster) -> None:
    vms, node = cluster.vms, cluster.node
    vms.exec(1, "tipc bearer disable media udp name b1")
    try:
        took = kernelvm.wait_link(node, VM1, up=False, timeout=10)
        assert took <= _tolerance_bound()
    finally:
        vms.exec(1, f"tipc bearer enable media udp name b1 localip {kernelvm.vm_ip(1)}")
    kernelvm.wait_link(node, VM1, timeout=15)


def test_our_node_stopping_and_restarting(one_vm: KernelVMs) -> None:
    node = _start(one_vm, extra=("--tolerance", str(TOLERANCE_MS)))
    kernelvm.wait_link(node, VM1, timeout=10)
    one_vm.wait_kernel(1, "tipc link list", kernel_links_up)
    one_vm.stop_tipcshm_node(node)
    t0 = time.monotonic()
    one_vm.wait_kernel(1, "tipc link list", lambda out: not kernel_links_up(out), timeout=10)
    assert time.monotonic() - t0 <= _tolerance_bound() + 1  # + the exec channel's delay
    node = _start(one_vm, extra=("--tolerance", str(TOLERANCE_MS)))
    try:
        kernelvm.wait_link(node, VM1, timeout=10)
        one_vm.wait_kernel(1, "tipc link list", kernel_links_up)
    finally:
        one_vm.stop_tipcshm_node(node)
