"""``tipcshm`` command line: start, stop, demo, stat, nametable, socket."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

import click

from tipcshm import rundir
from tipcshm.cli.options import node_from_option, node_option
from tipcshm.errors import NodeAlreadyRunning, NodeNotRunning, TipcError
from tipcshm.rundir import log_path
from tipcshm.shm.lane import MAX_LANE_BYTES, MAX_LANES
from tipcshm.shm.layout import NODE_MIN_LANE_BYTES, check_node_name

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@click.group()
@click.version_option(package_name="tipcshm")
def main() -> None:
    """tipcshm: TIPC service addressing over shared memory."""


def shm_space_warning(conn_lane_bytes: int, path: str = "/dev/shm") -> str | None:
    """A warning when /dev/shm is small next to the lanes busy streams fill.

    Lanes are sparse: their pages are allocated as data first passes through them, so a
    full /dev/shm shows up as SIGBUS in the writing process, not as an error. Warn while
    fewer than 16 connection lanes would fit (e.g. Docker's 64 MB default).
    """
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= 16 * conn_lane_bytes:
        return None
    return (
        f"{path} has {free >> 20} MiB free, room for {free // conn_lane_bytes} busy "
        f"connection lanes of {conn_lane_bytes >> 10} KiB; a process writing into a "
        "full /dev/shm gets SIGBUS. Enlarge it (docker run --shm-size) or lower "
        "--conn-lane-kib."
    )


@main.command()
@node_option
@click.option(
    "--identity",
    default=None,
    help=(
        "Node identity (text up to 16 chars, or hex); if omitted, the first bearer's IP "
        "address, as the kernel does, else random."
    ),
)
@click.option("--foreground", is_flag=True, help="Stay attached (for systemd or containers).")
@click.option(
    "--group", "group", default=None, help="Open segments and queues to this group (mode 0660)."
)
@click.option("--lanes", default=64, show_default=True, help="Producer lanes per socket inbox.")
@click.option("--lane-kib", default=256, show_default=True, help="Size of one lane in KiB.")
@click.option(
    "--conn-lane-kib",
    default=4096,
    show_default=True,
    help="Lane size in KiB for SEQPACKET/STREAM sockets (deeper rings for bulk streams).",
)
@click.option(
    "--bearer",
    "bearers",
    multiple=True,
    metavar="udp:LOCALIP[:PORT]",
    help="A UDP bearer (port 6118 by default; IPv6 as udp:[ADDR]:PORT). Repeatable.",
)
@click.option(
    "--remote",
    "remotes",
    multiple=True,
    metavar="IP[:PORT]",
    help="A peer that discovery requests also go to (replicast), besides the multicast "
    "group. Applies to every --bearer of the same address family. Repeatable.",
)
@click.option("--netid", default=4711, show_default=True, help="Cluster id (1..9999).")
@click.option(
    "--tolerance", default=1500, show_default=True, help="Link tolerance in ms (50..30000)."
)
@click.option("--window", default=50, show_default=True, help="Link window (16..8191).")
@click.option("--priority", default=10, show_default=True, help="Link priority (0..31).")
def start(
    name: str | None,
    identity: str | None,
    foreground: bool,
    group: str | None,
    lanes: int,
    lane_kib: int,
    conn_lane_kib: int,
    bearers: tuple[str, ...],
    remotes: tuple[str, ...],
    netid: int,
    tolerance: int,
    window: int,
    priority: int,
) -> None:
    """Start a node; returns once it is ready."""
    from tipcshm.workers.supervisor import (
        NodeConfig,
        bearer_specs,
        identity_for,
        running_supervisor,
        serve,
    )

    node = node_from_option(name)
    pid = running_supervisor(node)
    if pid is not None:
        raise click.ClickException(str(NodeAlreadyRunning(node, pid).strerror))
    mode, gid = 0o600, -1
    if group is not None:
        import grp

        try:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
        except KeyError:
            raise click.BadParameter(f"no such group {group!r}", param_hint="--group") from None
        mode = 0o660
    if not 1 <= lanes <= MAX_LANES:
        raise click.BadParameter(f"must be in 1..{MAX_LANES}", param_hint="--lanes")
    for hint, kib in (("--lane-kib", lane_kib), ("--conn-lane-kib", conn_lane_kib)):
        low, high = NODE_MIN_LANE_BYTES >> 10, MAX_LANE_BYTES >> 10
        if kib < low or kib & (kib - 1) or kib > high:
            raise click.BadParameter(
                f"{kib} is not a power of two in {low}..{high} (a lane holds two maximum messages)",
                param_hint=hint,
            )
    try:
        specs = bearer_specs(bearers, remotes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bearer/--remote") from None
    try:
        ident = identity_for(identity, specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--identity") from None
    config = NodeConfig(
        node,
        ident,
        lanes,
        lane_kib * 1024,
        mode,
        gid,
        conn_lane_kib * 1024,
        bearers=specs,
        net_id=netid,
        tolerance_ms=tolerance,
        window=window,
        priority=priority,
    )
    try:
        config.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    warning = shm_space_warning(conn_lane_kib * 1024)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    try:
        if foreground:
            ready = lambda addr: click.echo(f"tipcshm node {node!r} ready (address {addr:#010x})")  # noqa: E731
            sys.exit(serve(config, ready=ready))
        logfile = log_path(node)
        logfd = rundir.open_log(node)
    except (TipcError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    rfd, wfd = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "tipcshm.workers.supervisor", "--ready-fd", str(wfd)],
            stdin=subprocess.PIPE,
            stdout=logfd,
            stderr=logfd,
            start_new_session=True,
            close_fds=True,
            pass_fds=(wfd,),
        )
    finally:
        os.close(wfd)
        os.close(logfd)
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died at once: its answer says why
        child.stdin.write(config.to_json().encode())
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()
    with os.fdopen(rfd, "rb") as pipe:
        answer = _read_answer(pipe, READY_TIMEOUT)
    if answer.startswith("ready "):
        addr = int(answer.split()[1])
        click.echo(
            f"tipcshm node {node!r} started (address {addr:#010x}, supervisor pid {child.pid})"
        )
        return
    if answer.startswith("error "):
        child.wait(READY_TIMEOUT)
        raise click.ClickException(answer[6:])
    if child.poll() is None:
        child.kill()  # our own child, not yet reaped: the pid is still its
        child.wait()
        raise click.ClickException(f"node {node!r} did not become ready; see {logfile}")
    raise click.ClickException(
        f"node {node!r} failed to start (exit {child.returncode}); see {logfile}"
    )


def _readable(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``fd`` (poll, not select: any descriptor number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1e3))


def _read_answer(pipe: object, timeout: float) -> str:
    """The supervisor's one-line answer on the ready pipe ('' if it ended without one)."""
    fd = pipe.fileno()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not _readable(fd, remaining):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace") if b"\n" in data else ""


def stop_node(node: str, timeout: float = STOP_TIMEOUT, *, keep_log: bool = False) -> bool:
    """Stop ``node`` and remove everything it created. False if it was not running.

    The supervisor is found through its owner-only record (never through shared memory)
    and signalled through a pidfd opened before its identity is checked, so a pid reused
    meanwhile cannot be hit. Leftovers of a crashed node are removed; another user's are
    refused (UntrustedObject).
    """
    import signal

    from tipcshm import proc
    from tipcshm.workers.supervisor import clean_leftovers

    found = False
    # Alive or dying: a supervisor killed with SIGKILL is no longer "alive" (a zombie, its
    # threads still exiting) but clients learn of its end only when it has fully exited
    # (its pidfd turns readable). Cleaning up before that would close every inbox while
    # senders still think the node runs, and a send to a vanished inbox would be dropped
    # as undeliverable instead of failing.
    record = rundir.read_record_any(node)
    if record is not None:
        pid, start = record
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = -1
        if pidfd >= 0:
            try:
                if proc.start_time(pid) != start:
                    pass  # the pid now names another process: the supervisor is long gone
                elif proc.alive(pid, start):  # checked after the pidfd pinned the process
                    found = True
                    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                    if not _readable(pidfd, timeout):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        _readable(pidfd, timeout)
                else:
                    # Dying (killed) but perhaps not yet exited: its lock is already free,
                    # while clients still see it alive. Let it finish first, so that after
                    # stop every client knows.
                    _readable(pidfd, 1.0)
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
    lock = rundir.try_lock(node, wait=True)
    assert lock is not None
    try:
        if rundir.read_record(node) is not None:
            return found  # a new start won the name meanwhile: it is not ours to clean
        found = bool(clean_leftovers(node)) or found
    finally:
        os.close(lock)
    rundir.remove_files(node, keep_log=keep_log)
    return found


@main.command()
@node_option
@click.option("--keep-log", is_flag=True, help="Keep the node's log (it is removed otherwise).")
def stop(name: str | None, keep_log: bool) -> None:
    """Stop a node and remove its segments, queues and log."""
    node = node_from_option(name)
    try:
        stopped = stop_node(node, keep_log=keep_log)
    except (TipcError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if stopped:
        click.echo(f"tipcshm node {node!r} stopped")
    else:
        click.echo(f"tipcshm node {node!r} was not running")


@main.command()
@node_option
@click.option("--count", default=3, show_default=True, help="Messages to send.")
def demo(name: str | None, count: int) -> None:
    """Send messages to a service address through the node and show them arrive."""
    import tipcshm

    node = node_from_option(name)
    service = 18888
    try:
        server = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    except NodeNotRunning as exc:
        raise click.ClickException(exc.strerror) from None
    with server, tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as client:
        server.bind((tipcshm.TIPC_ADDR_NAMESEQ, service, 0, 99, tipcshm.TIPC_NODE_SCOPE))
        server.settimeout(5)
        click.echo(f"server {server.getsockname()} bound to {{{service}, 0, 99}}")
        for i in range(count):
            payload = f"hello #{i} through node {node}".encode()
            t0 = time.perf_counter()
            client.sendto(payload, (tipcshm.TIPC_ADDR_NAME, service, i, 0))
            data, addr = server.recvfrom(1024)
            dt = (time.perf_counter() - t0) * 1e6
            click.echo(f"  {{{service}, {i}}} <- {addr}: {data.decode()!r} ({dt:.0f} us)")


def _register_stat_commands() -> None:
    from tipcshm.cli import stat as stat_commands

    main.add_command(stat_commands.stat)
    main.add_command(stat_commands.nametable)
    main.add_command(stat_commands.socket_group)
    from tipcshm.cli import cluster  # node list, link list|stat|set

    main.add_command(cluster.node_group)
    main.add_command(cluster.link_group)


_register_stat_commands()

from tipcshm.cli.bearer import bearer as _bearer_commands  # noqa: E402

main.add_command(_bearer_commands)

__all__ = ["main", "stop_node", "check_node_name", "log_path"]
