"""Test helpers that users can use too: isolated nodes that clean up after themselves."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

from tipcshm.client import drop_client


def unique_node_name(prefix: str = "t") -> str:
    """A node name no other test (or run) uses: prefix, pid and a random suffix."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"


def start_node(node: str, *extra: str) -> None:
    """Start ``node`` with the CLI (exactly what a user runs); raises on failure."""
    subprocess.run(
        [sys.executable, "-m", "tipcshm.cli", "start", "--name", node, *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )


def stop_node(node: str) -> None:
    """Stop ``node``, forget this process's attachment to it, and remove its log (a test
    node's name is used once; `tipcshm stop` itself keeps the log)."""
    from tipcshm.cli.main import log_path
    from tipcshm.cli.main import stop_node as _stop

    drop_client(node)
    _stop(node)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(log_path(node))


@contextlib.contextmanager
def running_node(node: str | None = None, *extra: str) -> Iterator[str]:
    """A node that exists for the ``with`` block and leaves nothing behind."""
    name = node or unique_node_name()
    start_node(name, *extra)
    try:
        yield name
    finally:
        stop_node(name)
