"""Shared fixtures: every test that needs a node gets one, and it must leave nothing.

``node`` is a fresh node per test, unless the test's module is marked ``shared_node``
(``pytestmark = pytest.mark.shared_node``): then its tests share one node, started for the
first of them, and each test must leave that node as it found it: when it ends, every socket
it opened is closed and every binding withdrawn (waited for, with a deadline; a test that
leaves something fails, and the next test gets a new node). Starting a node costs about a
second on these machines, so a module of tests that only open sockets saves most of its
run time. A test of such a module that kills a worker, stops the node or reads node-wide
counters is marked ``fresh_node`` and gets its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tipcshm.cli.main import log_path
from tipcshm.testing import start_node, stop_node, unique_node_name

# How long a shared node may take to withdraw what a finished test held (a killed child's
# sockets are released by the supervisor within milliseconds; this is for a loaded machine).
QUIET_TIMEOUT = 20.0


def shm_leftovers(node: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir("/dev/shm")
        if n == f"tipcshm.{node}" or n.startswith(f"tipcshm.{node}.")
    )


def _stop_and_check(node: str) -> None:
    stop_node(node)
    assert shm_leftovers(node) == []
    assert not os.path.exists(log_path(node))


def _leftovers_of_tests(node: str) -> list[str]:
    """What the node holds beyond its own sockets and bindings: the sockets and bindings
    of applications (this process, its children), and entries not yet freed."""
    from tipcshm.cli.stat import APP_OWNER, nametable_rows, socket_rows
    from tipcshm.shm.layout import NodeSegment, SockState

    sockets = socket_rows(node)
    node_ports = {int(s["port"], 16) for s in sockets if s["owner"] != APP_OWNER}
    left = [f"socket {s['port']} of pid {s['pid']}" for s in sockets if s["owner"] == APP_OWNER]
    left += [
        f"binding {{{b['type']},{b['lower']},{b['upper']}}} of port {b['port']:#010x}"
        for b in nametable_rows(node)
        if b["port"] and b["port"] not in node_ports
    ]
    seg = NodeSegment.attach(node)
    try:
        closing = sum(1 for e in seg.sockets() if e.state == SockState.CLOSING)
    finally:
        seg.close()
    if closing:
        left.append(f"{closing} socket entries still closing")
    return left


class _SharedNode:
    """The node a ``shared_node`` module's tests use, replaced when a test spoils it."""

    def __init__(self) -> None:
        self.name: str | None = None

    def get(self) -> str:
        if self.name is None:
            self.name = unique_node_name()
            start_node(self.name)
        return self.name

    def settle(self) -> None:
        """Wait until the last test's sockets and bindings are gone; on failure, drop the
        node (the next test starts a new one) and fail the test that left them."""
        if self.name is None:
            return
        deadline = time.monotonic() + QUIET_TIMEOUT
        while True:
            try:
                left = _leftovers_of_tests(self.name)
            except OSError as exc:  # the test stopped or broke the node
                left = [f"node unreadable: {exc}"]
                break
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if left:
            name, self.name = self.name, None
            _stop_and_check(name)
            pytest.fail(f"test left on the shared node {name}: {', '.join(left)}")

    def close(self) -> None:
        if self.name is not None:
            name, self.name = self.name, None
            _stop_and_check(name)


@pytest.fixture(scope="module")
def _module_node() -> Iterator[_SharedNode]:
    shared = _SharedNode()
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def node_name() -> str:
    return unique_node_name()


@pytest.fixture
def node(request: pytest.FixtureRequest, node_name: str) -> Iterator[str]:
    """A running isolated node, checked to leave no segment behind (see the module doc)."""
    shared = request.node.get_closest_marker("shared_node") is not None
    if shared and request.node.get_closest_marker("fresh_node") is None:
        module_node: _SharedNode = request.getfixturevalue("_module_node")
        yield module_node.get()
        module_node.settle()
        return
    start_node(node_name)
    try:
        yield node_name
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []
    assert not os.path.exists(log_path(node_name))


def pytest_report_header(config: pytest.Config) -> list[str]:
    kvm = os.path.exists("/dev/kvm")
    return [
        f"tipcshm: /dev/kvm {'present' if kvm else 'missing: kernel interop tests will be skipped'}"
    ]
