"""``tipcshm node list``, ``link list``, ``link stat show|reset`` and ``link set``.

Theory of operation
-------------------
The cluster commands mirror iproute2's ``tipc node list``, ``tipc link list``, ``tipc link
statistics show|reset`` and ``tipc link set`` (tipc/node.c, tipc/link.c; tipc-wire.md §12),
reading a node's segment instead of asking the kernel over netlink.

Reading is what ``tipcshm stat`` does (:mod:`tipcshm.cli.stat`): map the segment, take no
lock, write nothing. The node's peers are the union of the link table's rows (each bearer
worker keeps one row per peer node, DOWN while only discovered, UP while the link is up)
and the name-table replica's ``{0, N, N}`` bindings of other nodes (TIPC_NODE_STATE, which
every node publishes for itself while it is reachable). Everything read is untrusted: text
is decoded leniently, unknown states are shown as ``unknown(N)``.

Changing a link goes through its bearer's command mailbox in the bearer table (the
B_CMD_* fields of :mod:`tipcshm.shm.layout`, the same protocol as the sockets' control
mailboxes, :mod:`tipcshm.shm.control`): the tool writes the operation, the link row (or
MAX_LINKS: every row of the bearer) and the value, then ``B_CMD_REQ`` = previous + 1, and
rings the bearer worker's inbox bell; the worker validates and applies it and answers
``B_CMD_RESULT`` (0 or an errno), then ``B_CMD_ACK`` = ``B_CMD_REQ``. The mailbox holds
one request at a time, so tools serialise on a POSIX record lock over the bearer's
``B_CMD_REQ`` word of the segment file (never the segment's flock, which the node's own
table changes take). A worker that does not answer within ``--timeout`` is reported as
such, with its state from the worker table.

What differs from ``tipc``: ``node list`` also lists the node itself (first); ``link stat
show`` prints no TX profile (message length histogram: not counted) and the send queue's
current length instead of its average; tipcshm sends multicast as replicast over the
unicast links, so ``broadcast-link`` appears in ``link list`` (as the kernel always lists
it) but keeps no statistics of its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from tipcshm.cli.options import node_from_option, node_option
from tipcshm.cli.stat import _json, _read, _read_bindings, bearer_rows, link_rows, worker_rows
from tipcshm.constants import TIPC_NODE_STATE
from tipcshm.core.link import (
    MAX_LINK_PRIORITY,
    MAX_LINK_WIN,
    MAX_TOLERANCE_MS,
    MIN_LINK_WIN,
    MIN_TOLERANCE_MS,
)
from tipcshm.errors import (
    InvalidArgument,
    NodeFailure,
    NodeNotRunning,
    NotSupportedYet,
    Timeout,
    TipcError,
)
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    B_CMD_ACK,
    B_CMD_LINK,
    B_CMD_OP,
    B_CMD_REQ,
    B_CMD_RESULT,
    B_CMD_VALUE,
    LINKS_PER_BEARER,
    MAX_BEARERS,
    MAX_LINKS,
    BearerCommand,
    NodeSegment,
    bearer_inbox_name,
)
from tipcshm.wire import identity_to_str

__all__ = [
    "BROADCAST_LINK",
    "COMMAND_TIMEOUT_S",
    "bearer_command",
    "link_group",
    "link_stat_rows",
    "node_group",
    "node_rows",
    "render_link_list",
    "render_link_stats",
    "render_node_list",
]

BROADCAST_LINK = "broadcast-link"
COMMAND_TIMEOUT_S = 3.0
# Kernel limits of the values `link set` takes (tipc-wire §11).
SETTABLE = {
    "tolerance": (BearerCommand.SET_TOLERANCE, MIN_TOLERANCE_MS, MAX_TOLERANCE_MS, " ms"),
    "window": (BearerCommand.SET_WINDOW, MIN_LINK_WIN, MAX_LINK_WIN, " packets"),
    "priority": (BearerCommand.SET_PRIORITY, 0, MAX_LINK_PRIORITY, ""),
}
# Waiting for an ack: poll the mailbox, first often, then every few ms.
_POLL_FIRST_S = 0.0005
_POLL_MAX_S = 0.01
_mailbox_threads = threading.Lock()  # record locks do not exclude threads of one process


# --------------------------------------------------------------------------- reading


def _with_segment(node: str) -> NodeSegment:
    return NodeSegment.attach(node)


def node_rows(node: str) -> list[dict[str, Any]]:
    """The node itself, then every peer node it knows, by address.

    A peer is known from its link rows (identity, up when one of them is up) or from its
    ``{0, N, N}`` binding in the name table (identity unknown: shown as its address, as
    ``tipc`` does; up, since a node's binding is held only while it is reachable).
    """
    seg = _with_segment(node)
    try:
        own = seg.addr
        own_row = {
            "address": f"{own:#010x}",
            "identity": identity_to_str(seg.identity),
            "state": "up",
            "own": True,
            "links": [],
        }
        links = link_rows(seg)
        _, bindings, error = _read_bindings(seg)
    finally:
        seg.close()
    if error is not None:
        raise NodeFailure(node, error)
    peers: dict[int, dict[str, Any]] = {}
    for lk in links:
        addr = int(lk["peer"], 16)
        if addr == own or addr == 0:
            continue  # a row naming ourselves (or nobody) is not a peer: a bad row
        row = peers.setdefault(
            addr,
            {
                "address": f"{addr:#010x}",
                "identity": lk["peer_identity"] or f"{addr:x}",
                "state": "down",
                "own": False,
                "links": [],
            },
        )
        row["links"].append(lk["name"])
        if lk["state"] == "up":
            row["state"] = "up"
    for b in bindings:
        if b.type != TIPC_NODE_STATE or b.lower != b.upper or b.node != b.lower:
            continue
        if b.node == own or b.node in peers:
            continue
        peers[b.node] = {
            "address": f"{b.node:#010x}",
            "identity": f"{b.node:x}",
            "state": "up",
            "own": False,
            "links": [],
        }
    return [own_row, *(peers[a] for a in sorted(peers))]


def _link_status(links: Sequence[dict[str, Any]]) -> dict[int, str]:
    """ACTIVE, STANDBY or DEFUNCT by row, as ``tipc link stat show`` names them: of the up
    links to one peer, those of the highest priority carry traffic (ACTIVE)."""
    best: dict[str, int] = {}
    for lk in links:
        if lk["state"] == "up":
            best[lk["peer"]] = max(best.get(lk["peer"], -1), lk["priority"])
    out = {}
    for lk in links:
        if lk["state"] != "up":
            out[lk["row"]] = "DEFUNCT"
        else:
            out[lk["row"]] = "ACTIVE" if lk["priority"] == best[lk["peer"]] else "STANDBY"
    return out


def link_stat_rows(node: str) -> list[dict[str, Any]]:
    """Every link row with its ``status`` (ACTIVE/STANDBY/DEFUNCT), by peer then bearer."""
    seg = _with_segment(node)
    try:
        links = link_rows(seg)
    finally:
        seg.close()
    status = _link_status(links)
    for lk in links:
        lk["status"] = status[lk["row"]]
    links.sort(key=lambda lk: (int(lk["peer"], 16), lk["bearer"], lk["row"]))
    return links


def _select(links: list[dict[str, Any]], name: str | None, node: str) -> list[dict[str, Any]]:
    """The rows named ``name`` (every row if None); clear errors for the others."""
    if name is None:
        return links
    if name == BROADCAST_LINK:
        raise NotSupportedYet(
            "statistics and settings of the broadcast link (tipcshm sends multicast as "
            "replicast over the unicast links)"
        )
    chosen = [lk for lk in links if lk["name"] == name]
    if not chosen:
        known = ", ".join(sorted({lk["name"] for lk in links})) or "none"
        raise InvalidArgument(f"node {node!r} has no link {name!r} (links: {known})")
    return chosen


# --------------------------------------------------------------------------- rendering


def render_node_list(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`node_rows` in ``tipc node list``'s columns."""
    lines = ["Node Identity                    Hash     State"]
    lines += [f"{r['identity']:<32} {int(r['address'], 16):08x} {r['state']}" for r in rows]
    return "\n".join(lines)


def render_link_list(links: Sequence[dict[str, Any]]) -> str:
    """``tipc link list``: the broadcast link, then ``<name>: up|down`` per link."""
    lines = [f"{BROADCAST_LINK}: up"]
    lines += [f"{lk['name']}: {'up' if lk['state'] == 'up' else 'down'}" for lk in links]
    return "\n".join(lines)


def render_link_stats(links: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`link_stat_rows` as ``tipc link statistics show`` prints a unicast
    link (no TX profile; the send queue's current length instead of its average)."""
    out = []
    for lk in links:
        c = lk["counters"]
        out += [
            "",
            f"Link <{lk['name']}>",
            f"  {lk['status']}  MTU:{lk['mtu']}  Priority:{lk['priority']}"
            f"  Tolerance:{lk['tolerance']} ms  Window:{lk['window']} packets",
            f"  RX packets:{c['rx_packets']} fragments:{c['rx_fragments']}"
            f"/{c['rx_fragmented']} bundles:{c['rx_bundles']}/{c['rx_bundled']}",
            f"  TX packets:{c['tx_packets']} fragments:{c['tx_fragments']}"
            f"/{c['tx_fragmented']} bundles:{c['tx_bundles']}/{c['tx_bundled']}",
            f"  RX states:{c['rx_states']} probes:{c['rx_probes']} naks:{c['rx_nacks']}"
            f" defs:{c['rx_deferred']} dups:{c['duplicates']}",
            f"  TX states:{c['tx_states']} probes:{c['tx_probes']} naks:{c['tx_nacks']}"
            f" acks:{c['tx_acks']} retrans:{c['retransmitted']}",
            f"  Congestion link:{c['link_congestion']}  Send queue"
            f" max:{c['send_queue_max']} now:{c['send_queue_now']}",
        ]
    return "\n".join(out[1:])


# --------------------------------------------------------------------------- the mailbox


@contextlib.contextmanager
def _mailbox(seg: NodeSegment, bearer: int) -> Iterator[None]:
    """Exclusive use of ``bearer``'s command mailbox among tools (threads and processes)."""
    fd = os.open(seg.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with _mailbox_threads:
            fcntl.lockf(fd, fcntl.LOCK_EX, 4, seg.bearer_off(bearer) + B_CMD_REQ, os.SEEK_SET)
            yield  # closing the descriptor drops the record lock
    finally:
        os.close(fd)


def _ring(seg: NodeSegment, bearer: int) -> None:
    """Wake the bearer's worker (best effort: without an inbox there is no worker)."""
    try:
        inbox = Inbox.attach(bearer_inbox_name(seg.node, bearer), trust=seg.trust, tag=seg.tag)
    except (OSError, ValueError):
        return
    try:
        inbox.ring()
    finally:
        inbox.detach()


def _worker_state(seg: NodeSegment, bearer: int) -> str:
    for w in worker_rows(seg):
        if w["slot"] == 1 + bearer:
            alive = "" if w["alive"] else ", not alive"
            return f"worker {w['state']}{alive}, pid {w['pid'] or '-'}"
    return "no worker"


def bearer_command(
    seg: NodeSegment,
    bearer: int,
    op: int,
    row: int,
    value: int = 0,
    *,
    timeout: float = COMMAND_TIMEOUT_S,
) -> None:
    """Post ``op`` for link ``row`` of ``bearer`` (MAX_LINKS: all its rows) and wait for
    the worker's answer. Timeout when it gives none; an OSError with its errno when it
    refuses (InvalidArgument for EINVAL)."""
    if not 0 <= bearer < MAX_BEARERS:
        raise InvalidArgument(f"bearer {bearer} out of range 0..{MAX_BEARERS - 1}")
    if row != MAX_LINKS and row // LINKS_PER_BEARER != bearer:
        raise InvalidArgument(f"link row {row} does not belong to bearer {bearer}")
    what = BearerCommand.NAMES.get(op, f"command {op}")
    off = seg.bearer_off(bearer)
    u32 = seg.u32
    with _mailbox(seg, bearer):
        req = (u32[(off + B_CMD_REQ) // 4] + 1) & 0xFFFFFFFF or 1
        u32[(off + B_CMD_OP) // 4] = op
        u32[(off + B_CMD_LINK) // 4] = row
        u32[(off + B_CMD_VALUE) // 4] = value
        u32[(off + B_CMD_REQ) // 4] = req  # last: the request is complete when it moves
        _ring(seg, bearer)
        deadline = time.monotonic() + timeout
        pause = _POLL_FIRST_S
        while u32[(off + B_CMD_ACK) // 4] != req:
            if time.monotonic() >= deadline:
                raise Timeout(
                    f"tipcshm node {seg.node!r}: bearer {bearer}'s worker did not answer "
                    f"{what!r} within {timeout:g} s ({_worker_state(seg, bearer)})"
                )
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
        result = seg.i32[(off + B_CMD_RESULT) // 4]
    if result == 0:
        return
    if not 0 < result < 4096:
        raise NodeFailure(seg.node, f"bearer {bearer}'s worker answered {what!r} with {result}")
    target = "every link" if row == MAX_LINKS else f"link row {row}"
    text = f"bearer {bearer}'s worker refused {what!r} of {value} for {target}"
    if result == errno.EINVAL:
        raise InvalidArgument(f"{text}: value out of range")
    raise TipcError(result, f"{text}: {os.strerror(result)}")


def _command(node: str, op: int, link: str | None, value: int, timeout: float) -> list[str]:
    """Apply ``op`` to the link named ``link`` (every link of every bearer if None);
    the names of what was changed."""
    seg = _with_segment(node)
    try:
        links = link_rows(seg)
        if link is None:
            bearers = [b["bearer"] for b in bearer_rows(seg) if b["state"] == "enabled"]
            if not bearers:
                raise InvalidArgument(f"node {node!r} has no enabled bearer")
            for k in bearers:
                bearer_command(seg, k, op, MAX_LINKS, value, timeout=timeout)
            return [lk["name"] for lk in links if lk["bearer"] in bearers]
        chosen = _select(links, link, node)
        for lk in chosen:
            bearer_command(seg, lk["bearer"], op, lk["row"], value, timeout=timeout)
        return [lk["name"] for lk in chosen]
    finally:
        seg.close()


# --------------------------------------------------------------------------- commands


def _run(action: Any) -> Any:
    try:
        return action()
    except NotSupportedYet as exc:
        raise click.ClickException(str(exc)) from None
    except (NodeNotRunning, NodeFailure, TipcError) as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=COMMAND_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the bearer worker's answer.",
)


@click.group("node")
def node_group() -> None:
    """Inspect the cluster's nodes."""


@node_group.command("list")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as JSON.")
def node_list(name: str | None, as_json: bool) -> None:
    """This node and every peer: identity, address (hash), up/down (like `tipc node list`)."""
    rows = _read(node_rows, node_from_option(name))
    click.echo(_json(rows) if as_json else render_node_list(rows))


@click.group("link")
def link_group() -> None:
    """Inspect and tune the node's links."""


@link_group.command("list")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the links as JSON.")
def link_list(name: str | None, as_json: bool) -> None:
    """Every link and its state, `<name>: up|down` (like `tipc link list`)."""
    rows = _read(link_stat_rows, node_from_option(name))
    click.echo(_json(rows) if as_json else render_link_list(rows))


@link_group.group("stat")
def link_stat() -> None:
    """Link statistics (like `tipc link statistics`)."""


link_group.add_command(link_stat, "statistics")


@link_stat.command("show")
@node_option
@click.option("--link", "link", default=None, help="Only this link (by name).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def link_stat_show(name: str | None, link: str | None, as_json: bool) -> None:
    """Counters of every link, or of one (like `tipc link statistics show`)."""
    node = node_from_option(name)
    rows = _run(lambda: _select(_read(link_stat_rows, node), link, node))
    if as_json:
        click.echo(_json(rows))
    elif rows:
        click.echo(render_link_stats(rows))


@link_stat.command("reset")
@node_option
@click.option("--link", "link", default=None, help="Only this link (by name); default all.")
@timeout_option
def link_stat_reset(name: str | None, link: str | None, timeout: float) -> None:
    """Zero the counters of a link, or of every link (like `tipc link statistics reset`)."""
    node = node_from_option(name)
    done = _run(lambda: _command(node, BearerCommand.RESET_STATS, link, 0, timeout))
    click.echo(f"statistics reset: {', '.join(done) if done else 'no links yet'}")


@link_group.command("set")
@click.argument("prop", metavar="tolerance|window|priority", type=click.Choice(list(SETTABLE)))
@click.argument("value", type=int)
@click.option("--link", "link", required=True, help="The link to change (by name).")
@node_option
@timeout_option
def link_set(prop: str, value: int, link: str, name: str | None, timeout: float) -> None:
    """Set a link's tolerance (ms), window (packets) or priority (like `tipc link set`)."""
    op, low, high, unit = SETTABLE[prop]
    if not low <= value <= high:
        raise click.BadParameter(f"{prop} {value} outside {low}..{high}", param_hint="VALUE")
    node = node_from_option(name)
    done = _run(lambda: _command(node, op, link, value, timeout))
    click.echo(f"{prop} of {', '.join(done)} set to {value}{unit}")
