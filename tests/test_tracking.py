"""Service tracking on a real node: the kernel's binary protocol, and the Pythonic face."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_PUBLISHED,
    TIPC_SUB_PORTS,
    TIPC_SUB_SERVICE,
    TIPC_SUBSCR_TIMEOUT,
    TIPC_TOP_SRV,
    TIPC_WITHDRAWN,
)

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node

SERVICE = 6000
# struct tipc_subscr / struct tipc_event as <linux/tipc.h> lays them out, host byte order.
SUBSCR = struct.Struct("=5I8s")
EVENT = struct.Struct("=5I")  # event, found_lower, found_upper, port.ref, port.node


def topsrv(node: str) -> tipcshm.Socket:
    """A C program's view: SEQPACKET connected to the topology server."""
    s = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
    s.connect((TIPC_ADDR_NAME, TIPC_TOP_SRV, TIPC_TOP_SRV, 0))
    s.settimeout(5)
    return s


def next_event(s: tipcshm.Socket) -> tuple[int, int, int, int, int, bytes]:
    data = s.recv(48)
    assert len(data) == 48
    return (*EVENT.unpack_from(data), data[20:])


def test_kernel_protocol_ports_and_service(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as early:
        early.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 9))
        own = early.getsockname()[1]
        ports, service = topsrv(node), topsrv(node)
        sub_p = SUBSCR.pack(SERVICE, 0, 100, 0xFFFFFFFF, TIPC_SUB_PORTS, b"handle-p")
        sub_s = SUBSCR.pack(SERVICE, 0, 100, 0xFFFFFFFF, TIPC_SUB_SERVICE, b"handle-s")
        ports.send(sub_p)
        service.send(sub_s)
        # Existing bindings are reported first; the event carries the subscription back.
        assert next_event(ports) == (TIPC_PUBLISHED, 0, 9, early.port, own, sub_p)
        assert next_event(service) == (TIPC_PUBLISHED, 0, 9, early.port, own, sub_s)
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as late:
            late.bind((TIPC_ADDR_NAMESEQ, SERVICE, 0, 9))  # same range: PORTS only
            late.bind((TIPC_ADDR_NAME, SERVICE, 50, 0))  # new range: both
            assert next_event(ports)[:4] == (TIPC_PUBLISHED, 0, 9, late.port)
            assert next_event(ports)[:4] == (TIPC_PUBLISHED, 50, 50, late.port)
            assert next_event(service)[:4] == (TIPC_PUBLISHED, 50, 50, late.port)
        # late closed: its two bindings go; only {50} loses its last binding.
        withdrawn = {next_event(ports)[:4] for _ in range(2)}
        assert withdrawn == {
            (TIPC_WITHDRAWN, 0, 9, late.port),
            (TIPC_WITHDRAWN, 50, 50, late.port),
        }
        assert next_event(service)[:4] == (TIPC_WITHDRAWN, 50, 50, late.port)
        service.settimeout(0.2)
        with pytest.raises(TimeoutError):
            service.recv(48)
        ports.close()
        service.close()


def test_kernel_protocol_timeout_and_cancel(node: str) -> None:
    s = topsrv(node)
    timed = SUBSCR.pack(SERVICE, 0, 0, 100, TIPC_SUB_SERVICE, bytes(8))
    s.send(timed)
    assert next_event(s) == (TIPC_SUBSCR_TIMEOUT, 0, 0, 0, 0, timed)
    forever = SUBSCR.pack(SERVICE, 1, 1, 0xFFFFFFFF, TIPC_SUB_SERVICE, bytes(8))
    s.send(forever)
    s.send(SUBSCR.pack(SERVICE, 1, 1, 0xFFFFFFFF, TIPC_SUB_SERVICE | 4, bytes(8)))  # cancel
    # One connection's messages are served in order: this marker's timeout event proves the
    # cancel was applied (no sleeping on a guess).
    marker = SUBSCR.pack(SERVICE + 1, 0, 0, 0, TIPC_SUB_SERVICE, bytes(8))
    s.send(marker)
    assert next_event(s) == (TIPC_SUBSCR_TIMEOUT, 0, 0, 0, 0, marker)
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as b:
        b.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(48)  # cancelled: no event
    s.close()


def test_node_state_subscription_reports_this_node(node: str) -> None:
    s = topsrv(node)
    s.send(SUBSCR.pack(0, 0, 0xFFFFFFFF, 0xFFFFFFFF, TIPC_SUB_SERVICE, bytes(8)))
    event, lower, upper, _port, _node, _ = next_event(s)
    own = tipcshm.client.get_client(node).addr
    assert (event, lower, upper) == (TIPC_PUBLISHED, own, own)
    s.close()


def test_kill9_produces_withdrawn_event(node: str) -> None:
    child = Child(
        node,
        f"""
        s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
        s.bind((tipcshm.TIPC_ADDR_NAME, {SERVICE}, 3, 0))
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    try:
        child.expect("ready")
        with tipcshm.subscribe((TIPC_ADDR_NAME, SERVICE, 3, 0), node=node) as sub:
            assert sub.get(5).kind == "published"
            child.kill9()
            t0 = time.monotonic()
            event = sub.get(5)
            elapsed = time.monotonic() - t0
            assert event is not None and event.kind == "withdrawn"
            print(f"withdrawn event {elapsed * 1000:.1f} ms after kill -9")
    finally:
        child.close()


def test_pythonic_subscribe_and_wait_for_service(node: str) -> None:
    assert tipcshm.wait_for_service((TIPC_ADDR_NAME, SERVICE, 8, 0), 0.1, node=node) is False
    server = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    binder = threading.Timer(0.2, server.bind, [(TIPC_ADDR_NAME, SERVICE, 8, 0)])
    binder.start()
    try:
        assert tipcshm.wait_for_service(tipcshm.ServiceAddr(SERVICE, 8), 10, node=node)
        with tipcshm.subscribe(
            tipcshm.ServiceRange(SERVICE, 0, 10), ports=True, timeout=0.3, node=node
        ) as sub:
            events = list(sub)  # initial report, then the timeout ends the iteration
        assert [e.kind for e in events] == ["published", "timeout"]
        assert events[0].service == tipcshm.ServiceRange(SERVICE, 8, 8)
        assert events[0].socket == tipcshm.SocketAddr(server.getsockname()[1], server.port)
    finally:
        binder.join()
        server.close()


def test_subscription_errors_are_typed(node: str) -> None:
    with pytest.raises(TypeError, match="socket address"):
        tipcshm.subscribe(tipcshm.SocketAddr(1, 2), node=node)
    s = topsrv(node)
    s.send(SUBSCR.pack(SERVICE, 5, 1, 0, TIPC_SUB_SERVICE, bytes(8)))  # lower > upper
    assert s.recv(48) == b""  # the server closes the connection, as the kernel does
    s.close()


@pytest.mark.fresh_node
def test_worker_restart_ends_subscriptions_and_serves_new_ones(node: str) -> None:
    import os

    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as bound:
        bound.bind((TIPC_ADDR_NAME, SERVICE, 4, 0))
        seg = tipcshm.client.get_client(node).seg
        old = topsrv(node)
        old.send(SUBSCR.pack(SERVICE, 4, 4, 0xFFFFFFFF, TIPC_SUB_SERVICE, bytes(8)))
        assert next_event(old)[0] == TIPC_PUBLISHED
        pid = seg.nametable_worker[0]
        os.kill(pid, 9)
        with pytest.raises(ConnectionResetError):
            old.recv(48)  # the subscriber is told, not left hanging
        old.close()
        deadline = time.monotonic() + 10
        while seg.nametable_worker[0] in (pid, 0):
            assert time.monotonic() < deadline, "name-table worker was not restarted"
            time.sleep(0.01)
        with tipcshm.subscribe((TIPC_ADDR_NAME, SERVICE, 4, 0), node=node) as sub:
            event = sub.get(5)
        assert event is not None and event.kind == "published"
        assert event.socket.port == bound.port
