"""``tipcshm bearer list|enable|disable``: a node's bearers.

The configuration lives in the node's owner-only run directory (tipcshm.rundir); enable
and disable edit it and send SIGHUP to the supervisor through a pidfd opened on the pid
of its owner-only record (checked against the record's start time, as ``stop`` does), and
the supervisor starts or stops the bearer's worker (tipcshm.workers.supervisor
``apply_config``). A disabled bearer keeps its slot; its row reads ``disabled``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import click

from tipcshm import proc, rundir
from tipcshm.cli.options import node_from_option, node_option
from tipcshm.errors import NodeNotRunning, TipcError
from tipcshm.shm.layout import MAX_BEARERS, BearerState, LinkRowState, NodeSegment, WorkerState

APPLY_TIMEOUT = 10.0


@click.group("bearer")
def bearer() -> None:
    """List, enable or disable a node's bearers."""


def _attach(node: str) -> NodeSegment:
    try:
        return NodeSegment.attach(node)
    except (NodeNotRunning, FileNotFoundError):
        raise click.ClickException(f"node {node!r} is not running") from None


@bearer.command("list")
@node_option
def list_bearers(name: str | None) -> None:
    """One line per bearer: name, state, local address, links up."""
    from tipcshm.workers import rows

    node = node_from_option(name)
    seg = _attach(node)
    try:
        up = seg.link_rows_up()
        for k in range(MAX_BEARERS):
            row = rows.bearer_row(seg, k)
            if row is None:
                continue
            w = seg.worker(1 + k)
            wstate = WorkerState.NAMES.get(w.state, "?") if w is not None else "-"
            n_up = sum(1 for r, _ in up if r // 64 == k)
            links = [e for e in seg.links() if e.bearer == k]
            click.echo(
                f"{row.name}: {BearerState.NAMES.get(row.state, '?')} (worker {wstate}) "
                f"local {row.local} links {n_up} up / {len(links)}"
            )
            for e in links:
                click.echo(f"  {e.name or hex(e.peer)}: {LinkRowState.NAMES.get(e.state, '?')}")
    finally:
        seg.close()


def _signal_supervisor(node: str) -> None:
    record = rundir.read_record(node)
    if record is None:
        raise click.ClickException(f"node {node!r} is not running")
    pid, start = record
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise click.ClickException(f"node {node!r} is not running") from None
    try:
        if not proc.alive(pid, start):
            raise click.ClickException(f"node {node!r} is not running")
        signal.pidfd_send_signal(fd, signal.SIGHUP)
    finally:
        os.close(fd)


def _edit(node: str, text: str, enabled: bool) -> int:
    from tipcshm.workers.supervisor import BearerSpec, load_config

    try:
        cfg = load_config(node)
        spec = BearerSpec.parse(text)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for k, b in enumerate(cfg.bearers):
        if (b.local, b.port) == (spec.local, spec.port):
            cfg.bearers[k] = dataclasses.replace(b, enabled=enabled)
            break
    else:
        if not enabled:
            raise click.ClickException(f"node {node!r} has no bearer {text}")
        if len(cfg.bearers) >= MAX_BEARERS:
            raise click.ClickException(f"node {node!r} has {MAX_BEARERS} bearers already")
        cfg.bearers.append(spec)
        k = len(cfg.bearers) - 1
    try:
        cfg.check()
        rundir.write_config(node, cfg.to_json())
    except (OSError, ValueError, TipcError) as exc:
        raise click.ClickException(str(exc)) from None
    return k


def _wait_state(node: str, k: int, state: int) -> None:
    seg = _attach(node)
    try:
        from tipcshm.workers import rows

        deadline = time.monotonic() + APPLY_TIMEOUT
        while True:
            row = rows.bearer_row(seg, k)
            w = seg.worker(1 + k)
            running = w is not None and w.state == WorkerState.RUNNING
            if row is not None and row.state == state:
                if state == BearerState.DISABLED or running:
                    return
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"node {node!r}: the supervisor did not apply the change within "
                    f"{APPLY_TIMEOUT:.0f} s; see {rundir.log_path(node)}"
                )
            time.sleep(0.02)
    finally:
        seg.close()


@bearer.command("enable")
@node_option
@click.argument("bearer_name", metavar="udp:LOCALIP[:PORT]")
def enable(name: str | None, bearer_name: str) -> None:
    """Enable a configured bearer, or add and enable a new one."""
    node = node_from_option(name)
    k = _edit(node, bearer_name, True)
    _signal_supervisor(node)
    _wait_state(node, k, BearerState.ENABLED)
    click.echo(f"bearer {bearer_name} enabled")


@bearer.command("disable")
@node_option
@click.argument("bearer_name", metavar="udp:LOCALIP[:PORT]")
def disable(name: str | None, bearer_name: str) -> None:
    """Stop a bearer's worker; its links go down, its slot stays."""
    node = node_from_option(name)
    k = _edit(node, bearer_name, False)
    _signal_supervisor(node)
    _wait_state(node, k, BearerState.DISABLED)
    click.echo(f"bearer {bearer_name} disabled")
