"""The node lifecycle through the command line: start, stop, demo, crashes, environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import shm_leftovers

import tipcshm
import tipcshm.proc
from tipcshm.shm.layout import NodeSegment
from tipcshm.testing import start_node, stop_node, unique_node_name


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tipcshm.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_start_twice_is_a_clear_error(node: str) -> None:
    again = cli("start", "--name", node)
    assert again.returncode != 0
    assert "already running" in again.stderr and node in again.stderr


def test_demo_sends_messages_through_the_node(node: str) -> None:
    out = cli("demo", "--name", node, "--count", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("hello #") == 3


def test_stop_of_a_stopped_node_says_so(node_name: str) -> None:
    out = cli("stop", "--name", node_name)
    assert out.returncode == 0
    assert "was not running" in out.stdout


def test_bad_node_name_is_refused() -> None:
    out = cli("start", "--name", "no/slashes")
    assert out.returncode != 0
    assert "invalid tipcshm node name" in out.stderr


def test_crashed_node_is_cleaned_by_the_next_start(node_name: str) -> None:
    start_node(node_name)
    try:
        sock = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        sock.bind((tipcshm.TIPC_ADDR_NAME, 4000, 1, 0))
        seg = NodeSegment.attach(node_name)
        sup_pid, _ = seg.supervisor
        worker_pid = seg.nametable_worker[0]
        seg.close()
        sup = (sup_pid, tipcshm.proc.start_time(sup_pid))
        os.kill(sup_pid, signal.SIGKILL)
        os.kill(worker_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while tipcshm.proc.alive(*sup):  # the kill is asynchronous
            assert time.monotonic() < deadline
            time.sleep(0.005)
        sock.close()  # the node is gone: closing must still not raise
        assert shm_leftovers(node_name), "a crashed node leaves its segments behind"
        with pytest.raises(tipcshm.NodeNotRunning, match="supervisor died"):
            tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        tipcshm.client.drop_client(node_name)
        start_node(node_name)  # detects the crash and cleans up first
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name) as fresh:
            fresh.bind((tipcshm.TIPC_ADDR_NAME, 4000, 1, 0))
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []


def test_environment_variable_picks_the_node(node: str) -> None:
    env = dict(os.environ, TIPCSHM_NODE=node)
    out = cli("demo", "--count", "1", env=env)
    assert out.returncode == 0, out.stderr
    assert f"through node {node}" in out.stdout
    code = "import tipcshm; s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM); print(s.node)"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert child.stdout.strip() == node


def test_stop_wakes_a_blocked_receiver(node_name: str) -> None:
    start_node(node_name)
    try:
        sock = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        errors: list[BaseException] = []

        def receive() -> None:
            try:
                sock.recv(10)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(exc)

        waiter = threading.Thread(target=receive, daemon=True)
        waiter.start()
        time.sleep(0.1)
    finally:
        stop_node(node_name)
    waiter.join(10)
    assert not waiter.is_alive(), "recv kept blocking after the node stopped"
    assert errors and isinstance(errors[0], tipcshm.NodeNotRunning)
    sock.close()
    assert shm_leftovers(node_name) == []


def test_foreground_node_stops_on_sigterm(node_name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tipcshm.cli", "start", "--name", node_name, "--foreground"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "ready" in proc.stdout.readline()
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name) as s:
            s.bind((tipcshm.TIPC_ADDR_NAME, 4000, 2, 0))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tipcshm.client.drop_client(node_name)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert shm_leftovers(node_name) == []


def test_public_api_is_pinned() -> None:
    """The names applications import; changing this list is an API change."""
    expected = {
        "Socket",
        "socket",
        "ServiceAddr",
        "ServiceRange",
        "SocketAddr",
        "parse_address",
        "TipcError",
        "NodeNotRunning",
        "NodeAlreadyRunning",
        "NodeFailure",
        "NotSupportedYet",
    }
    assert expected <= set(tipcshm.__all__)
    import socket as stdlib

    for name in dir(stdlib):
        if "TIPC" in name:
            assert getattr(tipcshm, name) == getattr(stdlib, name), name
    for name in ("SOCK_RDM", "SOCK_DGRAM", "SOCK_SEQPACKET", "SOCK_STREAM"):
        assert getattr(tipcshm, name) == getattr(stdlib, name)
    assert tipcshm.TIPC_SOCK_RECVQ_DEPTH == 132 and tipcshm.TIPC_NODELAY == 138
    assert unique_node_name() != unique_node_name()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lane-kib", "300"), ("--lane-kib", "128"), ("--conn-lane-kib", "5000"), ("--lanes", "0")],
)
def test_bad_lane_geometry_is_refused_before_starting(
    node_name: str, option: str, value: str
) -> None:
    out = cli("start", "--name", node_name, option, value)
    assert out.returncode != 0
    assert option in out.stderr
    assert not shm_leftovers(node_name)


def test_connection_sockets_get_their_own_lane_size(node_name: str) -> None:
    start_node(node_name, "--lane-kib", "512", "--conn-lane-kib", "1024")
    try:
        with (
            tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name) as rdm,
            tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=node_name) as stream,
            tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node_name) as seq,
        ):
            assert rdm._inbox.lane_bytes == 512 * 1024
            assert stream._inbox.lane_bytes == seq._inbox.lane_bytes == 1024 * 1024
    finally:
        stop_node(node_name)


def test_small_dev_shm_is_warned_about() -> None:
    from tipcshm.cli.main import shm_space_warning

    assert shm_space_warning(4 << 20, "/nonexistent/path") is None
    st = os.statvfs("/dev/shm")
    free = st.f_bavail * st.f_frsize
    assert shm_space_warning(max(1, free // 64)) is None
    text = shm_space_warning(free)  # room for one lane only
    assert text is not None and "--conn-lane-kib" in text and "SIGBUS" in text
