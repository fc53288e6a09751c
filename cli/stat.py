"""``tipcshm stat``, ``tipcshm nametable show`` and ``tipcshm socket list``.

Theory of operation
-------------------
Like AeronStat, these commands read a node without disturbing it: they map the node
segment (:class:`tipcshm.shm.layout.NodeSegment`), never take its lock and never write to
it. Header fields, the process table and the socket table are plain loads; the name table
comes from the seqlocked replica (:meth:`NodeSegment.read_replica`), decoded with
:meth:`tipcshm.core.nametable.NameTable.decode`; a socket's queue fill comes from its inbox
(:meth:`tipcshm.shm.lane.Inbox.fill`); CPU and memory of the node's processes come from
psutil. Sockets and processes may come and go while we read: whatever vanishes in between
is shown as unknown (``None``), never as an error.

:func:`snapshot` gathers one read of the node into a plain, JSON-ready dict; the renderers
(:func:`render_table`, :func:`render_prometheus`, :func:`render_nametable`,
:func:`render_sockets`) are pure functions of such dicts, so they are tested without a
node. ``nametable show`` and ``socket list`` mirror iproute2's ``tipc nametable show``
(tipc/nametable.c) and ``tipc socket list`` (tipc/socket.c), see tipc-wire.md §12.

Snapshot shape (``schema`` 3; 2 had no ``workers``, ``bearers`` and ``links``; 1 counted
only the sockets' bindings in ``totals``)::

    {"schema": 3, "time_ns": <wall clock>,
     "node": {"name", "identity", "address": "0x0a0b0c0d", "state", "uptime_s",
              "supervisor_pid", "supervisor_alive", "heartbeat_age_ms",
              "nametable_worker": {"pid", "alive", "restarts", "heartbeat_age_ms"},
              "lanes", "lane_bytes", "conn_lane_bytes", "replica_seq", "nametable_bindings",
              "node_bindings": [{"type", "lower", "upper", "port", "what"}],
              "replica_error"},
     "counters": {<NODE_COUNTERS>: int},
     "processes": [{"pid", "role", "owner", "alive", "cpu_percent", "rss_bytes"}],
     "sockets": [{"port": "0x...", "pid", "owner", "type", "binding_count",
                  "bindings": [{"type", "lower", "upper", "scope", "key"}],
                  "inbox": {"used", "capacity", "percent", "allocated", "stats"} | None,
                  "shm_bytes": allocated inbox bytes + socket-table entry | None,
                  "counters": {<SOCK_COUNTERS>: int}}],
     "workers": [{"slot", "kind", "name", "pid", "state", "alive", "restarts",
                  "heartbeat_age_ms"}],
     "bearers": [{"bearer", "name", "state", "local", "port", "mtu", "net_id", "tolerance",
                  "window", "priority", "link_gen", "counters": {<BEARER_COUNTERS>: int}}],
     "links": [{"row", "bearer", "name", "state", "peer": "0x...", "peer_identity", "media",
                "mtu", "tolerance", "window", "priority", "caps", "up_for_s",
                "counters": {<LINK_COUNTERS>: int}}],
     "totals": {"sockets", "node_sockets", "bindings", "node_bindings", "remote_bindings",
                "processes", "node_processes", "tx_msgs", "tx_bytes", "rx_msgs", "rx_bytes",
                "drops", "returned"}}

Ages and uptime are ``None`` when the corresponding clock was never written.

Counts add up, so that the header, the sections and the totals can be reconciled. Every
socket, process and binding is either the node's own (``owner`` "node") or an
application's ("application"). The node's own are its workers (the supervisor, the
name-table worker and the bearer workers), the sockets of those workers (the topology
service's listener and one connection per subscriber), and the bindings a node always
holds: ``{0, addr, addr}``, which publishes the node's address (TIPC_NODE_STATE, held by
no socket: its port is 0), and ``{1, 1, 1}``, the topology service. ``totals["bindings"]``
counts the whole name table, as the header's ``nametable_bindings`` does: the bindings of
applications, the node's own (``node_bindings``) and those of other nodes
(``remote_bindings``). The sum of the sockets' ``binding_count`` is therefore the total
less the port-0 binding and the remote ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import psutil

from tipcshm import proc
from tipcshm.cli.options import node_from_option, node_option
from tipcshm.constants import (
    SOCK_DGRAM,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    TIPC_NODE_STATE,
    TIPC_TOP_SRV,
)
from tipcshm.core.nametable import CLUSTER_SCOPE, NODE_SCOPE, Binding, NameTable, NameTableError
from tipcshm.errors import NodeFailure, NodeNotRunning
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    MAX_BEARERS,
    NAMETABLE_SLOT,
    SOCK_COUNTERS,
    SOCK_ENTRY,
    BearerState,
    LinkEntry,
    LinkRowState,
    NodeSegment,
    NodeState,
    ProcRole,
    SockState,
    WorkerEntry,
    WorkerKind,
    WorkerState,
    inbox_name,
)
from tipcshm.wire import identity_to_str

__all__ = [
    "SCHEMA",
    "nametable",
    "nametable_rows",
    "render_nametable",
    "render_prometheus",
    "render_sockets",
    "render_table",
    "snapshot",
    "socket_group",
    "socket_rows",
    "stat",
]

SCHEMA = 3
SOCK_TYPE_NAMES = {
    SOCK_RDM: "RDM",
    SOCK_DGRAM: "DGRAM",
    SOCK_SEQPACKET: "SEQPACKET",
    SOCK_STREAM: "STREAM",
}
SCOPE_NAMES = {CLUSTER_SCOPE: "cluster", NODE_SCOPE: "node"}
SUPERVISOR_ROLE = "supervisor"
# Who a socket, process or binding belongs to: the node itself (its workers, the topology
# service, the node's address) or an application.
NODE_OWNER = "node"
APP_OWNER = "application"
REMOTE_OWNER = "other_nodes"  # bindings published by other nodes (Prometheus label only)
NAMETABLE_ROLE = ProcRole.NAMES.get(ProcRole.NAMETABLE, "nametable")
BEARER_ROLE = WorkerKind.NAMES[WorkerKind.BEARER]
# A one-shot `stat` waits this long so that CPU figures cover a real interval (psutil's
# first cpu_percent() call of a process has nothing to compare with and returns 0.0).
ONE_SHOT_CPU_SAMPLE_S = 0.1
# Prometheus values are rounded to this many decimals: every fraction stat shows (seconds,
# percent) is meaningful to far less than a microsecond or a millionth of a percent.
VALUE_DECIMALS = 6
# Shown in the table when at most this many bindings of a socket fit in its row.
BINDINGS_IN_ROW = 3

# psutil.Process objects by (pid, start time), kept between snapshots so that
# cpu_percent(interval=None) measures the time since the previous one (`--watch`).
_PS_CACHE: dict[tuple[int, int], psutil.Process] = {}


# --------------------------------------------------------------------------- reading


def _age_ms(beat_ns: int, now_ns: int) -> float | None:
    if not beat_ns:
        return None
    return round(max(0, now_ns - beat_ns) / 1e6, 1)


def _type_name(sock_type: int) -> str:
    return SOCK_TYPE_NAMES.get(sock_type, f"type{sock_type}")


def _scope_name(scope: int) -> str:
    return SCOPE_NAMES.get(scope, f"scope{scope}")


def _read_bindings(seg: NodeSegment) -> tuple[int, list[Binding], str | None]:
    """(replica seq, all bindings, error text or None) from the name-table replica."""
    got = seg.read_replica()
    if got is None:
        return seg.replica_seq(), [], "name-table replica kept changing while being read"
    seq, image = got
    if not image and seq == 0:
        return seq, [], None  # the worker has not published a table yet
    try:
        return seq, NameTable.decode(image, seg.addr).bindings(), None
    except NameTableError as exc:
        return seq, [], f"name-table replica unreadable: {exc}"


def _binding_dict(b: Binding) -> dict[str, Any]:
    return {
        "type": b.type,
        "lower": b.lower,
        "upper": b.upper,
        "scope": _scope_name(b.scope),
        "key": b.key,
    }


def _inbox(seg: NodeSegment, port: int) -> dict[str, Any] | None:
    """Fill of a socket's inbox and the shared memory it holds (allocated blocks, not its
    sparse size); None if it is gone (the socket closed meanwhile)."""
    name = inbox_name(seg.node, port)
    try:
        inbox = Inbox.attach(name, trust=seg.trust, tag=seg.tag)
    except (OSError, ValueError):
        return None
    try:
        allocated = os.stat(f"/dev/shm{name}").st_blocks * 512
        used, capacity = inbox.fill()
        stats = {k: v for k, v in inbox.stats().items() if isinstance(v, int | float)}
    except (OSError, ValueError):
        return None
    finally:
        inbox.detach()
    percent = round(100.0 * used / capacity, 1) if capacity else 0.0
    return {
        "used": used,
        "capacity": capacity,
        "percent": percent,
        "allocated": allocated,
        "stats": stats,
    }


def _node_pids(seg: NodeSegment) -> set[int]:
    """Pids of the node's own processes (its workers); 0 (never written) is left out."""
    pids = {seg.supervisor[0], seg.nametable_worker[0], *(w.pid for w in seg.workers())}
    return {pid for pid in pids if pid}


def _owner(pid: int, node_pids: set[int]) -> str:
    return NODE_OWNER if pid in node_pids else APP_OWNER


def _binding_what(b: Binding, node_ports: set[int]) -> str | None:
    """What a binding of the node's own is for; None for an application's binding."""
    if b.port == 0 and b.type == TIPC_NODE_STATE:
        return "node address"
    if b.port in node_ports:
        return "topology service" if b.type == TIPC_TOP_SRV else "node worker"
    return None


def _sockets(
    seg: NodeSegment, bindings: Iterable[Binding], node_pids: set[int], *, with_inbox: bool
) -> list[dict[str, Any]]:
    own = seg.addr
    by_port: dict[int, list[dict[str, Any]]] = {}
    for b in bindings:
        if b.node == own:
            by_port.setdefault(b.port, []).append(_binding_dict(b))
    out = []
    for e in seg.sockets():
        if e.state != SockState.OPEN:
            continue  # closed; the name-table worker is withdrawing its bindings
        row: dict[str, Any] = {
            "port": f"{e.port:#010x}",
            "pid": e.pid,
            "owner": _owner(e.pid, node_pids),
            "type": _type_name(e.type),
            "binding_count": e.nbind,
            "bindings": by_port.get(e.port, []),
        }
        if with_inbox:
            inbox = _inbox(seg, e.port)
            row["inbox"] = inbox
            # What an idle socket costs the machine: its inbox's pages plus its table entry.
            row["shm_bytes"] = None if inbox is None else inbox["allocated"] + SOCK_ENTRY
        row["counters"] = dict(e.counters)
        out.append(row)
    out.sort(key=lambda r: int(r["port"], 16))
    return out


def _node_bindings(
    own: int, bindings: Iterable[Binding], sockets: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The node's own bindings of the name table, each saying what it is for."""
    node_ports = {int(s["port"], 16) for s in sockets if s["owner"] == NODE_OWNER}
    out = []
    for b in bindings:
        what = _binding_what(b, node_ports) if b.node == own else None
        if what is not None:
            out.append(
                {"type": b.type, "lower": b.lower, "upper": b.upper, "port": b.port, "what": what}
            )
    out.sort(key=lambda r: (r["type"], r["lower"], r["upper"], r["port"]))
    return out


def _process_rows(
    entries: Sequence[tuple[int, int, str]], cpu_sample_s: float, node_pids: set[int]
) -> list[dict[str, Any]]:
    """CPU and RSS of ``(pid, start, role)`` entries; tolerates processes vanishing.

    ``alive`` comes from ``/proc`` (pid plus start time, so a reused pid is not taken for
    the original); CPU and RSS are None when psutil cannot tell (gone, or not ours).
    """
    alive = {(pid, start): proc.alive(pid, start) for pid, start, _ in entries}
    for stale in set(_PS_CACHE) - {key for key, up in alive.items() if up}:
        del _PS_CACHE[stale]
    fresh = False
    for key, up in alive.items():
        if up and key not in _PS_CACHE:
            try:
                p = psutil.Process(key[0])
                p.cpu_percent(interval=None)  # the first call only starts the measurement
            except psutil.Error:
                continue
            _PS_CACHE[key] = p
            fresh = True
    if fresh and cpu_sample_s > 0:
        time.sleep(cpu_sample_s)
    rows = []
    for pid, start, role in entries:
        cpu: float | None = None
        rss: int | None = None
        p = _PS_CACHE.get((pid, start))
        if p is not None:
            try:
                with p.oneshot():
                    cpu = round(p.cpu_percent(interval=None), 1)
                    rss = p.memory_info().rss
            except psutil.Error:
                _PS_CACHE.pop((pid, start), None)
        rows.append(
            {
                "pid": pid,
                "role": role,
                "owner": _owner(pid, node_pids),
                "alive": alive[(pid, start)],
                "cpu_percent": cpu,
                "rss_bytes": rss,
            }
        )
    return rows


def snapshot(node: str, *, cpu_sample_s: float = 0.0) -> dict[str, Any]:
    """One read of ``node`` (see the module docstring for the shape).

    NodeNotRunning if the node has no segment. ``cpu_sample_s`` > 0 waits that long when
    a process is seen for the first time, so that its CPU figure covers a real interval;
    otherwise a process's first figure is 0.0 and later snapshots measure the time since
    the previous one.
    """
    seg = NodeSegment.attach(node)
    try:
        now_wall = time.time_ns()
        now_mono = time.monotonic_ns()
        sup_pid, sup_start = seg.supervisor
        ntw_pid, ntw_start, ntw_restarts = seg.nametable_worker
        lanes, lane_bytes = seg.lane_geometry
        started = seg.started_ns
        state = seg.state
        header: dict[str, Any] = {
            "name": seg.name,
            "identity": identity_to_str(seg.identity),
            "address": f"{seg.addr:#010x}",
            "state": NodeState.NAMES.get(state, f"unknown({state})"),
            "uptime_s": round(max(0, now_wall - started) / 1e9, 3) if started else None,
            "supervisor_pid": sup_pid,
            "supervisor_alive": bool(sup_pid) and proc.alive(sup_pid, sup_start),
            "heartbeat_age_ms": _age_ms(seg.heartbeat_ns, now_mono),
            "nametable_worker": {
                "pid": ntw_pid,
                "alive": bool(ntw_pid) and proc.alive(ntw_pid, ntw_start),
                "restarts": ntw_restarts,
                "heartbeat_age_ms": _age_ms(seg.nametable_heartbeat_ns, now_mono),
            },
            "lanes": lanes,
            "lane_bytes": lane_bytes,
            "conn_lane_bytes": seg.conn_lane_bytes,
        }
        counters = seg.counters()
        entries = [
            (p.pid, p.start, ProcRole.NAMES.get(p.role, f"role{p.role}")) for p in seg.processes()
        ]
        seq, bindings, replica_error = _read_bindings(seg)
        own = seg.addr
        node_pids = _node_pids(seg)
        sockets = _sockets(seg, bindings, node_pids, with_inbox=True)
        node_bindings = _node_bindings(own, bindings, sockets)
        header["replica_seq"] = seq
        header["nametable_bindings"] = len(bindings)
        header["node_bindings"] = node_bindings
        header["replica_error"] = replica_error
        node_workers = worker_rows(seg, now_mono)
        bearer_procs = [
            (w.pid, w.start, BEARER_ROLE)
            for w in seg.workers()
            if w.kind == WorkerKind.BEARER and w.pid
        ]
        bearers = bearer_rows(seg)
        links = link_rows(seg, now_wall)
    finally:
        seg.close()
    # The workers are not in the process table; show them first.
    listed = {pid for pid, _, _ in entries}
    workers = [
        (sup_pid, sup_start, SUPERVISOR_ROLE),
        (ntw_pid, ntw_start, NAMETABLE_ROLE),
        *bearer_procs,
    ]
    entries = [w for w in workers if w[0] and w[0] not in listed] + entries
    processes = _process_rows(entries, cpu_sample_s, node_pids)
    # The same counts as the header's and the sections', split by owner (see the module
    # docstring): a reader can add them up.
    totals: dict[str, int] = {
        "sockets": len(sockets),
        "node_sockets": sum(s["owner"] == NODE_OWNER for s in sockets),
        "bindings": len(bindings),
        "node_bindings": len(node_bindings),
        "remote_bindings": sum(b.node != own for b in bindings),
        "processes": len(processes),
        "node_processes": sum(p["owner"] == NODE_OWNER for p in processes),
    }
    for name in SOCK_COUNTERS:
        totals[name] = sum(s["counters"].get(name, 0) for s in sockets)
    return {
        "schema": SCHEMA,
        "time_ns": now_wall,
        "node": header,
        "counters": counters,
        "processes": processes,
        "sockets": sockets,
        "workers": node_workers,
        "bearers": bearers,
        "links": links,
        "totals": totals,
    }


def nametable_rows(node: str) -> list[dict[str, Any]]:
    """Every binding of the node's name table, sorted, as ``nametable show`` lists them.

    NodeNotRunning if the node is not running; NodeFailure if its replica cannot be read.
    """
    seg = NodeSegment.attach(node)
    try:
        _, bindings, error = _read_bindings(seg)
    finally:
        seg.close()
    if error is not None:
        raise NodeFailure(node, error)
    bindings.sort(key=lambda b: (b.type, b.lower, b.upper, b.node, b.port, b.key))
    return [
        {
            "type": b.type,
            "lower": b.lower,
            "upper": b.upper,
            "scope": _scope_name(b.scope),
            "port": b.port,
            "node": f"{b.node:#010x}",
            "key": b.key,
        }
        for b in bindings
    ]


def socket_rows(node: str) -> list[dict[str, Any]]:
    """The node's sockets with their bindings (no inbox fill, no psutil)."""
    seg = NodeSegment.attach(node)
    try:
        _, bindings, _ = _read_bindings(seg)
        return _sockets(seg, bindings, _node_pids(seg), with_inbox=False)
    finally:
        seg.close()


def _state_name(names: dict[int, str], state: int) -> str:
    return names.get(state, f"unknown({state})")


def _worker_dict(w: WorkerEntry, now_mono: int) -> dict[str, Any]:
    return {
        "slot": w.slot,
        "kind": _state_name(WorkerKind.NAMES, w.kind),
        "name": w.name,
        "pid": w.pid,
        "state": _state_name(WorkerState.NAMES, w.state),
        "alive": bool(w.pid) and proc.alive(w.pid, w.start),
        "restarts": w.restarts,
        "heartbeat_age_ms": _age_ms(w.heartbeat_ns, now_mono),
    }


def worker_rows(seg: NodeSegment, now_mono: int | None = None) -> list[dict[str, Any]]:
    """Every used slot of the worker table (slot 0 the name-table worker, 1 + k bearer k's).

    A supervisor that records only the name-table worker's pid (no kind in slot 0) still
    gets its worker listed, as ``nametable``.
    """
    now = time.monotonic_ns() if now_mono is None else now_mono
    workers = seg.workers()
    if all(w.slot != NAMETABLE_SLOT for w in workers):
        pid, start, restarts = seg.nametable_worker
        if pid:
            entry = WorkerEntry(
                slot=NAMETABLE_SLOT,
                kind=WorkerKind.NAMETABLE,
                state=WorkerState.RUNNING if seg.nametable_heartbeat_ns else WorkerState.STARTING,
                pid=pid,
                start=start,
                restarts=restarts,
                heartbeat_ns=seg.nametable_heartbeat_ns,
                spawned_ns=0,
                name="nametable",
                inbox="",
            )
            workers.insert(0, entry)
    return [_worker_dict(w, now) for w in workers]


def bearer_rows(seg: NodeSegment) -> list[dict[str, Any]]:
    """Every bearer of the bearer table that is not free: settings, link generation and
    BEARER_COUNTERS, as its worker last wrote them (untrusted text is decoded leniently)."""
    from tipcshm.workers.rows import bearer_row

    out = []
    for k in range(MAX_BEARERS):
        row = bearer_row(seg, k)
        if row is None:
            continue
        d = dataclasses.asdict(row)
        d["state"] = _state_name(BearerState.NAMES, row.state)
        out.append(d)
    return out


def _link_dict(e: LinkEntry, now_wall: int) -> dict[str, Any]:
    up = e.state == LinkRowState.UP
    return {
        "row": e.row,
        "bearer": e.bearer,
        "name": e.name,
        "state": _state_name(LinkRowState.NAMES, e.state),
        "peer": f"{e.peer:#010x}",
        "peer_identity": identity_to_str(e.peer_id),
        "media": e.media,
        "mtu": e.mtu,
        "tolerance": e.tolerance,
        "window": e.window,
        "priority": e.priority,
        "caps": e.caps,
        "up_for_s": (
            round(max(0, now_wall - e.up_since_ns) / 1e9, 3) if up and e.up_since_ns else None
        ),
        "counters": dict(e.counters),
    }


def link_rows(seg: NodeSegment, now_wall: int | None = None) -> list[dict[str, Any]]:
    """Every used row of the link table (one per peer node of each bearer), by row."""
    now = time.time_ns() if now_wall is None else now_wall
    return [_link_dict(e, now) for e in seg.links()]


# --------------------------------------------------------------------------- rendering


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def _human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {s:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{seconds:.1f}s"


def _ago(ms: float | None) -> str:
    return "never" if ms is None else f"{ms:.1f} ms ago"


def _opt(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _grid(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Iterable[int] = (),
    indent: str = "  ",
) -> list[str]:
    """Aligned columns: left-aligned except the ``right`` ones; two spaces between."""
    right_set = set(right)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right_set else c.ljust(widths[i])
            for i, c in enumerate(cells)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _range_text(b: dict[str, Any]) -> str:
    return f"{{{b['type']},{b['lower']},{b['upper']}}}"


def _cluster_sections(snap: dict[str, Any]) -> list[str]:
    """Workers, Bearers and Links of a schema-3 snapshot (nothing for an older one)."""
    lines: list[str] = []
    if "workers" in snap:
        lines += ["", f"Workers ({len(snap['workers'])})"]
        rows = [
            [
                str(w["slot"]),
                w["kind"],
                w["name"] or "-",
                str(w["pid"] or "-"),
                w["state"] if w["alive"] or not w["pid"] else f"{w['state']} (gone)",
                str(w["restarts"]),
                _ago(w["heartbeat_age_ms"]),
            ]
            for w in snap["workers"]
        ]
        headers = ["SLOT", "KIND", "NAME", "PID", "STATE", "RESTARTS", "HEARTBEAT"]
        lines += _grid(headers, rows, right=(0, 3, 5)) if rows else ["  (none)"]
    if "bearers" in snap:
        lines += ["", f"Bearers ({len(snap['bearers'])})"]
        rows = []
        for b in snap["bearers"]:
            c = b["counters"]
            rows.append(
                [
                    str(b["bearer"]),
                    b["name"] or "-",
                    b["state"],
                    b["local"] or "-",
                    str(b["mtu"]),
                    f"{c.get('rx_datagrams', 0)}/{_human_bytes(c.get('rx_bytes', 0))}",
                    f"{c.get('tx_datagrams', 0)}/{_human_bytes(c.get('tx_bytes', 0))}",
                    str(c.get("rx_bad", 0) + c.get("tx_errors", 0) + c.get("bad_from_lanes", 0)),
                    str(c.get("rejected", 0)),
                    str(c.get("dropped", 0)),
                    str(c.get("held", 0)),
                ]
            )
        headers = [
            "ID", "NAME", "STATE", "LOCAL", "MTU", "RX DGRAMS/BYTES", "TX DGRAMS/BYTES",
            "ERRORS", "REJECTED", "DROPPED", "HELD",
        ]  # fmt: skip
        lines += _grid(headers, rows, right=(0, 4, 5, 6, 7, 8, 9, 10)) if rows else ["  (none)"]
    if "links" in snap:
        lines += ["", f"Links ({len(snap['links'])})"]
        rows = []
        for lk in snap["links"]:
            c = lk["counters"]
            rows.append(
                [
                    lk["name"] or f"row {lk['row']}",
                    lk["peer"],
                    lk["state"],
                    _human_duration(lk["up_for_s"]),
                    str(c.get("rx_packets", 0)),
                    str(c.get("tx_packets", 0)),
                    str(c.get("retransmitted", 0)),
                    str(c.get("link_congestion", 0)),
                    str(c.get("send_queue_now", 0)),
                    str(c.get("link_down_count", 0)),
                ]
            )
        headers = [
            "LINK", "PEER", "STATE", "UP FOR", "RX PKTS", "TX PKTS", "RETRANS", "CONGESTED",
            "QUEUE", "DOWNS",
        ]  # fmt: skip
        lines += _grid(headers, rows, right=(3, 4, 5, 6, 7, 8, 9)) if rows else ["  (none)"]
    return lines


def render_table(snap: dict[str, Any]) -> str:
    """The human-readable ``tipcshm stat`` report: Node, Processes, Workers, Bearers,
    Links, Sockets, Totals (Workers, Bearers and Links only from a schema-3 snapshot)."""
    n = snap["node"]
    ntw = n["nametable_worker"]
    lines = [f"Node {n['name']}"]
    supervisor = f"pid {n['supervisor_pid']}, heartbeat {_ago(n['heartbeat_age_ms'])}"
    if not n["supervisor_alive"]:
        supervisor += f" (NOT RUNNING: clean up with `tipcshm stop --name {n['name']}`)"
    worker = (
        f"pid {ntw['pid']}, {ntw['restarts']} restarts, heartbeat {_ago(ntw['heartbeat_age_ms'])}"
    )
    if not ntw["alive"]:
        worker += " (not running)"
    table = f"{n['nametable_bindings']} bindings, replica seq {n['replica_seq']}"
    if n["replica_error"]:
        table += f" ({n['replica_error']})"
    own = ", ".join(f"{_range_text(b)} {b['what']}" for b in n["node_bindings"])
    fields = [
        ("identity", n["identity"] or "-"),
        ("address", n["address"]),
        ("state", n["state"]),
        ("uptime", _human_duration(n["uptime_s"])),
        ("supervisor", supervisor),
        ("name table", worker),
        ("", table),
        *([("", f"the node's own: {own}")] if own else []),
        (
            "lanes",
            f"{n['lanes']} x {_human_bytes(n['lane_bytes'])} per inbox "
            f"(connections: {_human_bytes(n['conn_lane_bytes'])})",
        ),
    ]
    width = max(len(k) for k, _ in fields)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in fields]
    counters = snap["counters"]
    if counters:
        cwidth = max(len(k) for k in counters)
        lines.append("  counters")
        lines += [f"    {k.ljust(cwidth)}  {v:>12}" for k, v in counters.items()]

    lines += ["", f"Processes ({len(snap['processes'])})"]
    rows = [
        [
            str(p["pid"]),
            p["role"],
            _opt(p["cpu_percent"], "{:.1f}"),
            _human_bytes(p["rss_bytes"]),
            "" if p["alive"] else "gone",
        ]
        for p in snap["processes"]
    ]
    if rows:
        lines += _grid(["PID", "ROLE", "CPU%", "RSS", ""], rows, right=(0, 2, 3))
    else:
        lines.append("  (none)")

    lines += _cluster_sections(snap)

    lines += ["", f"Sockets ({len(snap['sockets'])})"]
    rows = []
    for s in snap["sockets"]:
        inbox = s.get("inbox")
        c = s["counters"]
        bound = [_range_text(b) for b in s["bindings"][:BINDINGS_IN_ROW]]
        if len(s["bindings"]) > BINDINGS_IN_ROW:
            bound.append(f"+{len(s['bindings']) - BINDINGS_IN_ROW} more")
        if s["owner"] == NODE_OWNER:
            bound.insert(0, "(node)")
        rows.append(
            [
                s["port"],
                str(s["pid"]),
                s["type"],
                str(s["binding_count"]),
                "-" if inbox is None else f"{_human_bytes(inbox['used'])}",
                "-" if inbox is None else f"{inbox['percent']:.1f}%",
                "-" if s.get("shm_bytes") is None else _human_bytes(s["shm_bytes"]),
                str(c.get("tx_msgs", 0)),
                _human_bytes(c.get("tx_bytes", 0)),
                str(c.get("rx_msgs", 0)),
                _human_bytes(c.get("rx_bytes", 0)),
                str(c.get("drops", 0)),
                str(c.get("returned", 0)),
                " ".join(bound),
            ]
        )
    if rows:
        headers = [
            "PORT", "PID", "TYPE", "BINDS", "INBOX", "FILL", "SHM", "TX MSGS", "TX BYTES",
            "RX MSGS", "RX BYTES", "DROPS", "RETURNED", "BOUND TO",
        ]  # fmt: skip
        lines += _grid(headers, rows, right=(1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12))
    else:
        lines.append("  (none)")

    t = snap["totals"]
    app_bindings = t["bindings"] - t["node_bindings"] - t["remote_bindings"]
    other_nodes = f" + {t['remote_bindings']} other nodes'" if t["remote_bindings"] else ""
    lines += [
        "",
        "Totals",
        f"  sockets {t['sockets']} = {t['sockets'] - t['node_sockets']} applications'"
        f" + {t['node_sockets']} node's own",
        f"  bindings {t['bindings']} = {app_bindings} applications'"
        f" + {t['node_bindings']} node's own{other_nodes}",
        f"  processes {t['processes']} = {t['processes'] - t['node_processes']} applications'"
        f" + {t['node_processes']} node's own",
        f"  tx {t['tx_msgs']} msgs, {_human_bytes(t['tx_bytes'])}"
        f"   rx {t['rx_msgs']} msgs, {_human_bytes(t['rx_bytes'])}"
        f"   drops {t['drops']}   returned {t['returned']}",
    ]
    return "\n".join(lines)


@dataclass
class _Family:
    """One Prometheus metric family: its samples share the HELP and TYPE lines."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float | int]] = field(default_factory=list)

    def add(self, labels: dict[str, str], value: float | int | None) -> None:
        if value is not None:
            self.samples.append((labels, value))


_NODE_COUNTER_HELP = {
    "sockets_opened": "Sockets opened on the node.",
    "sockets_closed": "Sockets closed on the node (by their owner or reclaimed).",
    "processes_reaped": "Crashed client processes whose resources the supervisor reclaimed.",
    "worker_restarts": "Restarts of the node's workers.",
    "bind_requests": "Bind requests handled by the name-table worker.",
    "unbind_requests": "Unbind requests handled by the name-table worker.",
    "replica_updates": "Name-table replica images published.",
    "messages_returned": "Messages returned to their sender with an error code.",
}
_SOCK_COUNTER_METRICS = {
    "tx_msgs": ("socket_tx_messages_total", "Messages sent by the socket."),
    "tx_bytes": ("socket_tx_bytes_total", "Payload bytes sent by the socket."),
    "rx_msgs": ("socket_rx_messages_total", "Messages received by the socket."),
    "rx_bytes": ("socket_rx_bytes_total", "Payload bytes received by the socket."),
    "drops": ("socket_drops_total", "DGRAM messages to the socket dropped at its full inbox."),
    "returned": ("socket_returned_total", "Messages returned to the socket with an error code."),
}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float | int) -> str:
    """A sample value as a reader expects it: integers (integral floats included) in
    plain digits, fractions rounded to microunits with no binary noise (0.3, never
    0.30000000000000004), never an exponent (1000000, never 1e+06)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    text = f"{value:.{VALUE_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# Link counters that are levels, not totals: exposed as gauges.
_LINK_GAUGES = {
    "send_queue_max": ("link_send_queue_max_packets", "Longest send queue of the link."),
    "send_queue_now": ("link_send_queue_packets", "Packets in the link's send queue now."),
}


def _cluster_families(
    snap: dict[str, Any], node: dict[str, str], family: Callable[[str, str, str], _Family]
) -> None:
    """Workers, bearers and links of a schema-3 snapshot (none for an older one)."""
    workers = snap.get("workers", [])
    if workers:
        info = family("worker_info", "gauge", "Node worker's kind, name, pid and state (value 1).")
        restarts = family("worker_restarts_total", "counter", "Restarts of the node worker.")
        age = family(
            "worker_heartbeat_age_seconds", "gauge", "Seconds since the worker's heartbeat."
        )
        for w in workers:
            labels = {**node, "slot": str(w["slot"]), "kind": w["kind"], "worker": w["name"]}
            info.add({**labels, "pid": str(w["pid"]), "state": w["state"]}, 1)
            restarts.add(labels, w["restarts"])
            ms = w["heartbeat_age_ms"]
            age.add(labels, None if ms is None else ms / 1000)
    bearers = snap.get("bearers", [])
    if bearers:
        info = family("bearer_info", "gauge", "Bearer's name, state and local address (value 1).")
        per_counter: dict[str, _Family] = {}
        for b in bearers:
            labels = {**node, "bearer": b["name"] or str(b["bearer"])}
            info.add({**labels, "state": b["state"], "local": b["local"]}, 1)
            for key, value in b["counters"].items():
                f = per_counter.get(key)
                if f is None:
                    f = per_counter[key] = family(
                        f"bearer_{key}_total", "counter", f"Bearer counter {key}."
                    )
                f.add(labels, value)
    links = snap.get("links", [])
    if links:
        up = family("link_up", "gauge", "1 if the link is up, 0 if the peer is known but not.")
        per_counter = {}
        for lk in links:
            labels = {**node, "link": lk["name"] or f"row{lk['row']}", "peer": lk["peer"]}
            up.add(labels, int(lk["state"] == "up"))
            for key, value in lk["counters"].items():
                f = per_counter.get(key)
                if f is None:
                    if key in _LINK_GAUGES:
                        metric, help = _LINK_GAUGES[key]
                        f = family(metric, "gauge", help)
                    else:
                        f = family(f"link_{key}_total", "counter", f"Link counter {key}.")
                    per_counter[key] = f
                f.add(labels, value)


def render_prometheus(snap: dict[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format (version 0.0.4)."""
    n = snap["node"]
    node = {"node": n["name"]}
    families: list[_Family] = []

    def family(name: str, kind: str, help: str) -> _Family:
        f = _Family(f"tipcshm_{name}", kind, help)
        families.append(f)
        return f

    family("node_info", "gauge", "Node identity, address and state (value 1).").add(
        {**node, "identity": n["identity"], "address": n["address"], "state": n["state"]}, 1
    )
    family("node_ready", "gauge", "1 if the node is ready and its supervisor runs.").add(
        node, int(n["state"] == "ready" and bool(n["supervisor_alive"]))
    )
    family("node_uptime_seconds", "gauge", "Seconds since the node started.").add(
        node, n["uptime_s"]
    )
    age = n["heartbeat_age_ms"]
    family(
        "supervisor_heartbeat_age_seconds", "gauge", "Seconds since the supervisor's heartbeat."
    ).add(node, None if age is None else age / 1000)
    ntw = n["nametable_worker"]
    age = ntw["heartbeat_age_ms"]
    family(
        "nametable_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since the name-table worker's heartbeat.",
    ).add(node, None if age is None else age / 1000)
    family("nametable_bindings", "gauge", "Bindings in the node's name table (all nodes).").add(
        node, n["nametable_bindings"]
    )
    family("inbox_lanes", "gauge", "Producer lanes per socket inbox.").add(node, n["lanes"])
    family("inbox_lane_bytes", "gauge", "Bytes per inbox lane.").add(node, n["lane_bytes"])
    family(
        "inbox_conn_lane_bytes", "gauge", "Bytes per inbox lane of SEQPACKET/STREAM sockets."
    ).add(node, n["conn_lane_bytes"])
    for name, value in snap["counters"].items():
        help = _NODE_COUNTER_HELP.get(name, f"Node counter {name}.")
        family(f"node_{name}_total", "counter", help).add(node, value)

    t = snap["totals"]
    # Split by owner so that the samples of a family add up to the node's total (and the
    # bindings to tipcshm_nametable_bindings).
    sockets = family("sockets", "gauge", "Open sockets on the node, by owner.")
    sockets.add({**node, "owner": APP_OWNER}, t["sockets"] - t["node_sockets"])
    sockets.add({**node, "owner": NODE_OWNER}, t["node_sockets"])
    bindings = family("bindings", "gauge", "Bindings in the node's name table, by owner.")
    bindings.add(
        {**node, "owner": APP_OWNER}, t["bindings"] - t["node_bindings"] - t["remote_bindings"]
    )
    bindings.add({**node, "owner": NODE_OWNER}, t["node_bindings"])
    bindings.add({**node, "owner": REMOTE_OWNER}, t["remote_bindings"])
    processes = family("processes", "gauge", "Processes attached to the node, by owner.")
    processes.add({**node, "owner": APP_OWNER}, t["processes"] - t["node_processes"])
    processes.add({**node, "owner": NODE_OWNER}, t["node_processes"])

    cpu = family("process_cpu_percent", "gauge", "CPU use of a node process, in percent.")
    rss = family("process_resident_memory_bytes", "gauge", "Resident memory of a node process.")
    for p in snap["processes"]:
        labels = {**node, "pid": str(p["pid"]), "role": p["role"], "owner": p["owner"]}
        cpu.add(labels, p["cpu_percent"])
        rss.add(labels, p["rss_bytes"])

    _cluster_families(snap, node, family)

    info = family("socket_info", "gauge", "Socket's process, owner and type (value 1).")
    binds = family("socket_bindings", "gauge", "Bindings held by the socket.")
    used = family("socket_inbox_used_bytes", "gauge", "Bytes queued in the socket's inbox.")
    cap = family("socket_inbox_capacity_bytes", "gauge", "Capacity of the socket's inbox.")
    shm = family(
        "socket_shm_bytes",
        "gauge",
        "Shared memory the socket holds: its inbox's allocated pages and its table entry.",
    )
    per_counter = {
        key: family(metric, "counter", help)
        for key, (metric, help) in _SOCK_COUNTER_METRICS.items()
    }
    for s in snap["sockets"]:
        labels = {**node, "port": s["port"]}
        info.add({**labels, "pid": str(s["pid"]), "owner": s["owner"], "type": s["type"]}, 1)
        binds.add(labels, s["binding_count"])
        inbox = s.get("inbox")
        if inbox is not None:
            used.add(labels, inbox["used"])
            cap.add(labels, inbox["capacity"])
        if s.get("shm_bytes") is not None:
            shm.add(labels, s["shm_bytes"])
        for key, value in s["counters"].items():
            f = per_counter.get(key)
            if f is None:
                f = per_counter[key] = family(
                    f"socket_{key}_total", "counter", f"Socket counter {key}."
                )
            f.add(labels, value)

    out = []
    for f in families:
        out.append(f"# HELP {f.name} {f.help}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            out.append(f"{f.name}{{{text}}} {_format_value(value)}")
    return "\n".join(out) + "\n"


def render_nametable(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`nametable_rows` in ``tipc nametable show``'s columns."""
    fmt = "{:<10} {:<10} {:<10} {:<8} {:<10} {}"
    lines = [fmt.format("Type", "Lower", "Upper", "Scope", "Port", "Node")]
    lines += [
        fmt.format(r["type"], r["lower"], r["upper"], r["scope"], r["port"], r["node"])
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def render_sockets(sockets: Sequence[dict[str, Any]]) -> str:
    """Sockets (as in a snapshot) the way ``tipc socket list`` shows them, plus owner and type.

    ``socket <port>`` (decimal, as ``tipc`` and ``getsockname()`` give it), then one
    ``bound to {type,lower,upper}`` line per binding.
    """
    lines = []
    for s in sockets:
        port = int(s["port"], 16)
        lines.append(f"socket {port} ({s['port']}, pid {s['pid']}, {s['type']})")
        lines += [f"        bound to {_range_text(b)}" for b in s["bindings"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def _read(reader: Callable[[str], Any], node: str) -> Any:
    try:
        return reader(node)
    except (NodeNotRunning, NodeFailure) as exc:
        raise click.ClickException(exc.strerror) from None


def _json(value: Any, *, compact: bool = False) -> str:
    if compact:
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value, indent=2)


@click.command("stat")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text exposition format.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.05),
    is_flag=False,
    flag_value=1.0,
    default=None,
    metavar="[SECONDS]",
    help="Redraw every SECONDS (default 1) until Ctrl-C; with --json, one JSON line each.",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="With --watch: stop after N redraws."
)
def stat(
    name: str | None, as_json: bool, prometheus: bool, watch: float | None, count: int | None
) -> None:
    """Show the node's state, processes, sockets and counters."""
    node = node_from_option(name)
    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus exclude each other")
    if count is not None and watch is None:
        raise click.UsageError("--count needs --watch")
    if watch is None:
        snap = _read(lambda n: snapshot(n, cpu_sample_s=ONE_SHOT_CPU_SAMPLE_S), node)
        if as_json:
            click.echo(_json(snap))
        elif prometheus:
            click.echo(render_prometheus(snap), nl=False)
        else:
            click.echo(render_table(snap))
        return
    shown = 0
    try:
        while True:
            snap = _read(snapshot, node)
            if as_json:
                click.echo(_json(snap, compact=True))  # JSON Lines: no screen clearing
            else:
                text = render_prometheus(snap) if prometheus else render_table(snap) + "\n"
                click.clear()
                if not prometheus:
                    stamp = time.strftime("%H:%M:%S", time.localtime(snap["time_ns"] / 1e9))
                    text = f"tipcshm stat --name {node}   every {watch:g}s   {stamp}\n\n" + text
                click.echo(text, nl=False)
            shown += 1
            if count is not None and shown >= count:
                return
            time.sleep(watch)
    except KeyboardInterrupt:
        return


@click.group("nametable")
def nametable() -> None:
    """Inspect the node's name table."""


@nametable.command("show")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the bindings as JSON.")
def nametable_show(name: str | None, as_json: bool) -> None:
    """List every binding: Type Lower Upper Scope Port Node (like `tipc nametable show`)."""
    rows = _read(nametable_rows, node_from_option(name))
    click.echo(_json(rows) if as_json else render_nametable(rows))


@click.group("socket")
def socket_group() -> None:
    """Inspect the node's sockets."""


@socket_group.command("list")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the sockets as JSON.")
def socket_list(name: str | None, as_json: bool) -> None:
    """List the node's sockets and their bindings (like `tipc socket list`)."""
    rows = _read(socket_rows, node_from_option(name))
    if as_json:
        click.echo(_json(rows))
    elif rows:
        click.echo(render_sockets(rows))
