"""Test helpers that users can use too.

* isolated nodes that clean up after themselves (:func:`running_node` and friends);
* a deterministic network simulator for the sans-IO protocol core
  (:mod:`tipcshm.testing.sim`): :class:`FakeClock`, :class:`SimNetwork` with seeded
  loss, duplication, reordering, delay and partitions, and the clusters built on it;
* an in-memory harness for the communication-group core
  (:mod:`tipcshm.testing.group_sim`): :class:`GroupSim`.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Iterator

from tipcshm.client import drop_client
from tipcshm.errors import NodeFailure
from tipcshm.testing.group_sim import GroupSim, SimDeadlock
from tipcshm.testing.sim import (
    FakeClock,
    Faults,
    NetworkStatistics,
    PathStatistics,
    SimCluster,
    SimLinkPair,
    SimNetwork,
    data_message,
)

__all__ = [
    "FakeClock",
    "Faults",
    "GroupSim",
    "NetworkStatistics",
    "PathStatistics",
    "SimCluster",
    "SimDeadlock",
    "SimLinkPair",
    "SimNetwork",
    "data_message",
    "free_udp_port",
    "running_node",
    "start_node",
    "stop_node",
    "unique_node_name",
]


def unique_node_name(prefix: str = "t") -> str:
    """A node name no other test (or run) uses: prefix, pid and a random suffix."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"


def start_node(
    node: str,
    *extra: str,
    bearers: list[str] | tuple[str, ...] = (),
    remotes: list[str] | tuple[str, ...] = (),
) -> None:
    """Start ``node`` with the CLI's ``start`` command (the code a user runs); raises
    :class:`tipcshm.errors.NodeFailure` (an OSError) with the command's message on failure.

    ``bearers`` (``udp:LOCALIP[:PORT]``) and ``remotes`` (``IP[:PORT]``) become
    ``--bearer``/``--remote`` options: tests on one host use 127.0.0.0/8, a free port per
    node (:func:`free_udp_port`) and remotes (replicast, no multicast). A node with a
    bearer gets a random identity unless ``extra`` names one: without ``--identity``,
    ``start`` derives it from the bearer's IP address, as the kernel does, and nodes
    sharing 127.0.0.1 would then share an address.

    The command runs in this process rather than in a new interpreter: the supervisor and
    its worker start exactly as from a shell, but half a second of imports per node is
    saved (a test suite starts hundreds). The supervisor is then a child of this process;
    after it ends, :mod:`subprocess` reaps it at its next start of a process, and until then
    it counts as dead for :func:`tipcshm.proc.alive`, which treats zombies so.
    """
    import click

    from tipcshm.cli.main import main

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            args = ["start", "--name", node, *extra]
            if (bearers or "--bearer" in extra) and "--identity" not in extra:
                args += ["--identity", os.urandom(16).hex()]
            for b in bearers:
                args += ["--bearer", b]
            for r in remotes:
                args += ["--remote", r]
            main.main(args, "tipcshm", standalone_mode=False)
    except click.ClickException as exc:
        raise NodeFailure(node, f"`tipcshm start` failed: {exc.format_message()}") from None


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody on ``host`` uses right now (the kernel picks it)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
