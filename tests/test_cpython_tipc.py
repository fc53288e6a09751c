"""What CPython's own AF_TIPC tests (Lib/test/test_socket.py, TIPCTest and
TIPCThreadableTest) check, written anew and run through ``import tipcshm as socket``;
and the stdlib's tests themselves, run against tipcshm by tools/cpython/run_tipc_tests.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tipcshm as socket

ROOT = Path(__file__).resolve().parent.parent
SERVICE, LOWER, UPPER = 2000, 200, 210
MIDDLE = LOWER + (UPPER - LOWER) // 2
# not ASCII, and ends in CR LF: what comes out must be these bytes, untouched
PAYLOAD = "tipcshm was here \u1234\r\n".encode()


@pytest.fixture
def on_node(node: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The per-test node, chosen as a ported program's sockets would find it."""
    monkeypatch.setenv("TIPCSHM_NODE", node)
    yield node


def test_module_has_what_the_stdlib_tests_use() -> None:
    names = [
        "AF_TIPC", "SOCK_RDM", "SOCK_STREAM", "SOL_SOCKET", "SO_REUSEADDR",
        "TIPC_ADDR_NAMESEQ", "TIPC_ADDR_NAME", "socket",
    ]  # fmt: skip
    missing = [n for n in names if not hasattr(socket, n)]
    assert missing == []


def test_rdm_service_range_datagram_and_sender_address(on_node: str) -> None:
    """An unbound RDM client sends to one instance of a range a server bound (after
    SO_REUSEADDR); the server receives the bytes and, as the sender's address, exactly
    what the client's getsockname() says."""
    srv = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    cli = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    with srv, cli:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE, LOWER, UPPER))
        cli.sendto(PAYLOAD, (socket.TIPC_ADDR_NAME, SERVICE, MIDDLE, 0))
        data, sender = srv.recvfrom(1024)
        assert data == PAYLOAD
        assert sender == cli.getsockname()
        assert sender[0] == socket.TIPC_ADDR_ID and len(sender) == 5


def test_stream_connection_between_threads(on_node: str) -> None:
    """A STREAM server listens with the default backlog and accepts in one thread while a
    client thread connects by service name, sends and closes at once: the server reads
    the bytes sent before the close, and accept's address is the client's own name."""
    srv = socket.socket(socket.AF_TIPC, socket.SOCK_STREAM)
    with srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE, LOWER, UPPER))
        srv.listen()
        client_name: list[object] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                cli = socket.socket(socket.AF_TIPC, socket.SOCK_STREAM)
                with cli:
                    cli.connect((socket.TIPC_ADDR_NAME, SERVICE, MIDDLE, 0))
                    client_name.append(cli.getsockname())
                    cli.send(PAYLOAD)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        try:
            conn, conn_addr = srv.accept()
            with conn:
                data = conn.recv(1024)
        finally:
            thread.join(30)
        assert not thread.is_alive()
        assert errors == []
        assert data == PAYLOAD
        assert [conn_addr] == client_name


def test_stdlib_tipc_tests_pass_against_tipcshm(on_node: str) -> None:
    """The stdlib's TIPCTest and TIPCThreadableTest themselves, with their module's
    ``socket`` replaced by tipcshm (tools/cpython/run_tipc_tests.py)."""
    tool = ROOT / "tools" / "cpython" / "run_tipc_tests.py"
    run = subprocess.run(
        [sys.executable, str(tool), "-v"],
        capture_output=True,
        text=True,
        timeout=100,
        env=dict(os.environ, TIPCSHM_NODE=on_node),
    )
    if run.stdout.startswith("SKIPPED:"):
        pytest.skip(run.stdout.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ran 2 of CPython's TIPC tests" in run.stdout
