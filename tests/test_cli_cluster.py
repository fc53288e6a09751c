"""``tipcshm node list``, ``link list``, ``link stat show|reset``, ``link set`` and the
cluster sections of ``tipcshm stat``.

Before bearer workers exist, a node segment is laid out by hand (the real layout, no
workers): bearer rows, worker rows and link rows are written here as a bearer worker
would, and a test thread plays the bearer worker's side of the command mailbox.
"""

from __future__ import annotations

import errno
import json
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from tipcshm import proc, wire
from tipcshm.cli import cluster
from tipcshm.cli.main import main
from tipcshm.cli.stat import render_prometheus, render_table, snapshot
from tipcshm.core.nametable import CLUSTER_SCOPE, NODE_SCOPE, Binding, NameTable
from tipcshm.errors import InvalidArgument, Timeout
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    B_CMD_ACK,
    B_CMD_LINK,
    B_CMD_OP,
    B_CMD_REQ,
    B_CMD_RESULT,
    B_CMD_VALUE,
    B_LOCAL,
    B_MTU,
    B_NAME,
    B_STATE,
    L_CAPS,
    L_COUNTERS,
    L_MEDIA,
    L_MTU,
    L_NAME,
    L_PEER,
    L_PEER_ID,
    L_PRIORITY,
    L_STATE,
    L_TOLERANCE,
    L_UP_SINCE_NS,
    L_WINDOW,
    LINK_COUNTER_INDEX,
    LINKS_PER_BEARER,
    MAX_LINKS,
    BearerCommand,
    BearerState,
    LinkRowState,
    NodeSegment,
    NodeState,
    WorkerKind,
    bearer_inbox_name,
)
from tipcshm.testing import unique_node_name

OWN_ID = b"clusterfake".ljust(16, b"\0")
PEER_A_ID = b"peer-a".ljust(16, b"\0")
PEER_B_ID = bytes.fromhex("c0a80010").ljust(16, b"\0")  # not text: shown in hex
PEER_A = wire.hash128to32(PEER_A_ID)
PEER_B = wire.hash128to32(PEER_B_ID)
PEER_C = 0x0C0C0C0C  # known only from its {0, C, C} binding
LINK_A0 = "clusterfake:udp0-peer-a:udp0"
LINK_B0 = "clusterfake:udp0-c0a8001:udp0"
LINK_A1 = "clusterfake:udp1-peer-a:udp1"
ROW_A0, ROW_B0, ROW_A1 = 0, 1, LINKS_PER_BEARER  # bearer 0, bearer 0, bearer 1


def _text(seg: NodeSegment, off: int, text: str, size: int) -> None:
    seg.mv[off : off + size] = text.encode().ljust(size, b"\0")


def write_bearer(seg: NodeSegment, k: int, name: str, local: str) -> None:
    off = seg.bearer_off(k)
    _text(seg, off + B_NAME, name, 64)
    _text(seg, off + B_LOCAL, local, 64)
    seg.u32[(off + B_MTU) // 4] = 14000
    seg.u32[(off + B_STATE) // 4] = BearerState.ENABLED


def write_link(
    seg: NodeSegment,
    row: int,
    state: int,
    peer: int,
    peer_id: bytes,
    name: str,
    *,
    priority: int = 10,
    counters: dict[str, int] | None = None,
) -> None:
    off = seg.link_off(row)
    u32 = seg.u32
    u32[(off + L_PEER) // 4] = peer
    u32[(off + L_MTU) // 4] = 1472
    u32[(off + L_TOLERANCE) // 4] = 1500
    u32[(off + L_WINDOW) // 4] = 50
    u32[(off + L_PRIORITY) // 4] = priority
    u32[(off + L_CAPS) // 4] = 0x31
    seg.u64[(off + L_UP_SINCE_NS) // 8] = time.time_ns() - 5 * 10**9
    _text(seg, off + L_NAME, name, 64)
    seg.mv[off + L_PEER_ID : off + L_PEER_ID + 16] = peer_id
    _text(seg, off + L_MEDIA, "127.0.0.2:6118", 48)
    for key, value in (counters or {}).items():
        seg.u64[(off + L_COUNTERS) // 8 + LINK_COUNTER_INDEX[key]] = value
    u32[(off + L_STATE) // 4] = state  # last, as the bearer worker does


@pytest.fixture
def cluster_node() -> Iterator[tuple[str, NodeSegment]]:
    """A hand-built node with two bearers: bearer 0 links up to A and down to B, bearer 1
    up to A at a lower priority; the replica holds {0, own}, {0, A}, {0, C} and A's
    {1000, 1, 1}; worker slot 0 is this process (name table), slot 1 bearer 0's."""
    name = unique_node_name("clusterfake")
    addr = wire.hash128to32(OWN_ID)
    seg = NodeSegment.create(name)
    try:
        seg.set_identity(OWN_ID, addr)
        pid, start = proc.self_token()
        seg.set_supervisor(pid, start)
        seg.set_started()
        seg.beat()
        seg.set_lane_geometry(4, 256 * 1024, 1 << 20)
        seg.set_worker(0, WorkerKind.NAMETABLE, "nametable", "/x")
        seg.set_worker_spawned(0, pid, start)
        seg.worker_beat(0)
        seg.set_worker(1, WorkerKind.BEARER, "udp:127.0.0.1", "/y")
        seg.set_worker_spawned(1, pid, start)
        write_bearer(seg, 0, "udp:127.0.0.1", "127.0.0.1:6118")
        write_bearer(seg, 1, "udp:127.0.0.3", "127.0.0.3:6118")
        write_link(
            seg,
            ROW_A0,
            LinkRowState.UP,
            PEER_A,
            PEER_A_ID,
            LINK_A0,
            counters={"rx_packets": 11, "tx_packets": 12, "retransmitted": 3, "tx_acks": 4},
        )
        write_link(seg, ROW_B0, LinkRowState.DOWN, PEER_B, PEER_B_ID, LINK_B0)
        write_link(seg, ROW_A1, LinkRowState.UP, PEER_A, PEER_A_ID, LINK_A1, priority=5)
        seg.bearer_count(0, "rx_datagrams", 7)
        table = NameTable(addr)
        table.insert(Binding(0, addr, addr, CLUSTER_SCOPE, addr, 0, addr))
        table.insert(Binding(0, PEER_A, PEER_A, CLUSTER_SCOPE, PEER_A, 0, PEER_A))
        table.insert(Binding(0, PEER_C, PEER_C, CLUSTER_SCOPE, PEER_C, 0, PEER_C))
        table.insert(Binding(1000, 1, 1, CLUSTER_SCOPE, PEER_A, 77, 1))
        table.insert(Binding(2, PEER_A, PEER_A, NODE_SCOPE, addr, 0, ROW_A0))
        seg.write_replica(table.encode())
        seg.state = NodeState.READY
        seg.publish_magic()
        yield name, seg
    finally:
        seg.close()
        NodeSegment.unlink(name)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# --------------------------------------------------------------------------- reading


def test_node_list_from_links_and_bindings(cluster_node: tuple[str, NodeSegment]) -> None:
    name, seg = cluster_node
    code, out = run("node", "list", "--name", name)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "Node Identity                    Hash     State"
    assert lines[1] == f"{'clusterfake':<32} {seg.addr:08x} up"  # the node itself first
    # then the peers, by address: A and B from their link rows, C from its binding
    peers = [line.split() for line in lines[2:]]
    assert [int(p[1], 16) for p in peers] == sorted([PEER_A, PEER_B, PEER_C])
    by_addr = {int(p[1], 16): (p[0], p[2]) for p in peers}
    assert by_addr == {
        PEER_A: ("peer-a", "up"),
        PEER_B: ("c0a8001", "down"),
        PEER_C: (f"{PEER_C:x}", "up"),
    }


def test_node_list_json(cluster_node: tuple[str, NodeSegment]) -> None:
    name, seg = cluster_node
    code, out = run("node", "list", "--name", name, "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert rows[0] == {
        "address": f"{seg.addr:#010x}",
        "identity": "clusterfake",
        "state": "up",
        "own": True,
        "links": [],
    }
    a = next(r for r in rows if r["address"] == f"{PEER_A:#010x}")
    assert sorted(a["links"]) == sorted([LINK_A0, LINK_A1])


def test_node_list_ignores_a_row_naming_the_node_itself(
    cluster_node: tuple[str, NodeSegment],
) -> None:
    name, seg = cluster_node
    write_link(seg, 5, LinkRowState.UP, seg.addr, OWN_ID, "bogus")
    rows = cluster.node_rows(name)
    assert [r["address"] for r in rows].count(f"{seg.addr:#010x}") == 1


def test_link_list_like_tipc(cluster_node: tuple[str, NodeSegment]) -> None:
    name, _ = cluster_node
    code, out = run("link", "list", "--name", name)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "broadcast-link: up"
    assert sorted(lines[1:]) == sorted([f"{LINK_A0}: up", f"{LINK_A1}: up", f"{LINK_B0}: down"])


def test_link_stat_show_all(cluster_node: tuple[str, NodeSegment]) -> None:
    name, _ = cluster_node
    code, out = run("link", "stat", "show", "--name", name)
    assert code == 0, out
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in out.strip().split("\n\n")}
    assert set(blocks) == {f"Link <{LINK_A0}>", f"Link <{LINK_A1}>", f"Link <{LINK_B0}>"}
    a0 = blocks[f"Link <{LINK_A0}>"]
    assert a0[0] == "  ACTIVE  MTU:1472  Priority:10  Tolerance:1500 ms  Window:50 packets"
    assert a0[1] == "  RX packets:11 fragments:0/0 bundles:0/0"
    assert a0[2] == "  TX packets:12 fragments:0/0 bundles:0/0"
    assert a0[3] == "  RX states:0 probes:0 naks:0 defs:0 dups:0"
    assert a0[4] == "  TX states:0 probes:0 naks:0 acks:4 retrans:3"
    assert a0[5] == "  Congestion link:0  Send queue max:0 now:0"
    # Same peer, lower priority: standby; a link that is not up: defunct.
    assert blocks[f"Link <{LINK_A1}>"][0].startswith("  STANDBY  MTU:1472  Priority:5")
    assert blocks[f"Link <{LINK_B0}>"][0].startswith("  DEFUNCT")


def test_link_stat_show_one_and_json(cluster_node: tuple[str, NodeSegment]) -> None:
    name, _ = cluster_node
    code, out = run("link", "statistics", "show", "--name", name, "--link", LINK_B0)
    assert code == 0, out
    assert out.splitlines()[0] == f"Link <{LINK_B0}>"
    code, out = run("link", "stat", "show", "--name", name, "--link", LINK_A0, "--json")
    assert code == 0, out
    (row,) = json.loads(out)
    assert (row["row"], row["bearer"], row["status"], row["peer"]) == (
        ROW_A0,
        0,
        "ACTIVE",
        f"{PEER_A:#010x}",
    )
    assert row["counters"]["rx_packets"] == 11 and row["peer_identity"] == "peer-a"


@pytest.mark.parametrize("command", [["stat", "show"], ["stat", "reset"]])
def test_unknown_link_is_a_clear_error(
    cluster_node: tuple[str, NodeSegment], command: list[str]
) -> None:
    name, _ = cluster_node
    code, out = run("link", *command, "--name", name, "--link", "nosuch")
    assert code == 1
    assert f"node {name!r} has no link 'nosuch'" in out
    assert LINK_A0 in out  # the known links are named


def test_broadcast_link_statistics_not_kept(cluster_node: tuple[str, NodeSegment]) -> None:
    name, _ = cluster_node
    code, out = run("link", "stat", "show", "--name", name, "--link", "broadcast-link")
    assert code == 1
    assert "broadcast link" in out and "not supported" in out


@pytest.mark.parametrize(
    "args",
    [
        ["node", "list"],
        ["link", "list"],
        ["link", "stat", "show"],
        ["link", "stat", "reset"],
        ["link", "set", "tolerance", "1000", "--link", "x"],
    ],
)
def test_not_running_node(args: list[str]) -> None:
    name = unique_node_name("nonode")
    code, out = run(*args, "--name", name)
    assert code == 1
    assert f"tipcshm node {name!r} is not running" in out


# --------------------------------------------------------------------------- the mailbox


@dataclass
class FakeBearerWorker:
    """Answers the command mailboxes of ``bearers`` as a bearer worker would: records
    each request and answers ``answer(op, row, value)`` (an errno, 0 = done)."""

    seg: NodeSegment
    bearers: tuple[int, ...]
    answer: Callable[[int, int, int], int] = lambda op, row, value: 0
    seen: list[tuple[int, int, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        u32 = self.seg.u32
        while not self.stop.is_set():
            for k in self.bearers:
                off = self.seg.bearer_off(k)
                req = u32[(off + B_CMD_REQ) // 4]
                if req == u32[(off + B_CMD_ACK) // 4]:
                    continue
                op = u32[(off + B_CMD_OP) // 4]
                row = u32[(off + B_CMD_LINK) // 4]
                value = u32[(off + B_CMD_VALUE) // 4]
                self.seen.append((k, op, row, value))
                self.seg.i32[(off + B_CMD_RESULT) // 4] = self.answer(op, row, value)
                u32[(off + B_CMD_ACK) // 4] = req
            time.sleep(0.0005)


@pytest.fixture
def fake_worker(cluster_node: tuple[str, NodeSegment]) -> Iterator[FakeBearerWorker]:
    _, seg = cluster_node
    worker = FakeBearerWorker(seg, (0, 1))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        thread.join(5)


@pytest.mark.parametrize(
    ("prop", "value", "op", "unit"),
    [
        ("tolerance", 3000, BearerCommand.SET_TOLERANCE, " ms"),
        ("window", 100, BearerCommand.SET_WINDOW, " packets"),
        ("priority", 20, BearerCommand.SET_PRIORITY, ""),
    ],
)
def test_link_set_through_the_mailbox(
    cluster_node: tuple[str, NodeSegment],
    fake_worker: FakeBearerWorker,
    prop: str,
    value: int,
    op: int,
    unit: str,
) -> None:
    name, _ = cluster_node
    code, out = run("link", "set", prop, str(value), "--link", LINK_A1, "--name", name)
    assert code == 0, out
    assert out.strip() == f"{prop} of {LINK_A1} set to {value}{unit}"
    assert fake_worker.seen == [(1, op, ROW_A1, value)]


def test_link_set_value_refused_by_the_worker(
    cluster_node: tuple[str, NodeSegment], fake_worker: FakeBearerWorker
) -> None:
    name, _ = cluster_node
    fake_worker.answer = lambda op, row, value: errno.EINVAL
    code, out = run("link", "set", "window", "100", "--link", LINK_A0, "--name", name)
    assert code == 1
    assert "bearer 0's worker refused 'set window' of 100 for link row 0" in out
    assert "out of range" in out


def test_link_set_other_errno_from_the_worker(
    cluster_node: tuple[str, NodeSegment], fake_worker: FakeBearerWorker
) -> None:
    _, seg = cluster_node
    fake_worker.answer = lambda op, row, value: errno.ENOENT
    with pytest.raises(OSError) as info:
        cluster.bearer_command(seg, 0, BearerCommand.SET_PRIORITY, ROW_B0, 3)
    assert info.value.errno == errno.ENOENT
    assert "link row 1" in str(info.value)


@pytest.mark.parametrize(
    ("prop", "value"),
    [("tolerance", "49"), ("tolerance", "30001"), ("window", "15"), ("window", "8192"),
     ("priority", "32")],
)  # fmt: skip
def test_link_set_checks_the_kernel_limits_first(
    cluster_node: tuple[str, NodeSegment], prop: str, value: str
) -> None:
    name, seg = cluster_node
    code, out = run("link", "set", prop, value, "--link", LINK_A0, "--name", name)
    assert code == 2
    assert f"{prop} {value} outside" in out
    assert seg.u32[(seg.bearer_off(0) + B_CMD_REQ) // 4] == 0  # nothing was posted


def test_link_set_needs_a_link(cluster_node: tuple[str, NodeSegment]) -> None:
    name, _ = cluster_node
    code, out = run("link", "set", "tolerance", "1000", "--name", name)
    assert code == 2 and "--link" in out


def test_link_set_without_answer_times_out(cluster_node: tuple[str, NodeSegment]) -> None:
    name, seg = cluster_node
    args = ["link", "set", "tolerance", "1000", "--link", LINK_A0, "--name", name]
    code, out = run(*args, "--timeout", "0.2")
    assert code == 1
    assert "bearer 0's worker did not answer 'set tolerance' within 0.2 s" in out
    assert "worker starting" in out  # slot 1 never beat
    off = seg.bearer_off(0)
    assert seg.u32[(off + B_CMD_REQ) // 4] == 1 and seg.u32[(off + B_CMD_ACK) // 4] == 0
    # A bearer without any worker slot says so.
    with pytest.raises(Timeout, match=r"bearer 1's worker .*\(no worker\)"):
        cluster.bearer_command(seg, 1, BearerCommand.RESET_STATS, MAX_LINKS, timeout=0.05)


def test_link_stat_reset_one_and_all(
    cluster_node: tuple[str, NodeSegment], fake_worker: FakeBearerWorker
) -> None:
    name, _ = cluster_node
    code, out = run("link", "stat", "reset", "--link", LINK_B0, "--name", name)
    assert code == 0, out
    assert fake_worker.seen == [(0, BearerCommand.RESET_STATS, ROW_B0, 0)]
    fake_worker.seen.clear()
    code, out = run("link", "stat", "reset", "--name", name)
    assert code == 0, out
    assert fake_worker.seen == [
        (0, BearerCommand.RESET_STATS, MAX_LINKS, 0),
        (1, BearerCommand.RESET_STATS, MAX_LINKS, 0),
    ]
    assert out.startswith("statistics reset: ") and LINK_A1 in out


def test_reset_all_skips_disabled_bearers(
    cluster_node: tuple[str, NodeSegment], fake_worker: FakeBearerWorker
) -> None:
    name, seg = cluster_node
    seg.u32[(seg.bearer_off(1) + B_STATE) // 4] = BearerState.DISABLED
    code, out = run("link", "stat", "reset", "--name", name)
    assert code == 0, out
    assert fake_worker.seen == [(0, BearerCommand.RESET_STATS, MAX_LINKS, 0)]
    seg.u32[(seg.bearer_off(0) + B_STATE) // 4] = BearerState.DISABLED
    code, out = run("link", "stat", "reset", "--name", name)
    assert code == 1 and "has no enabled bearer" in out


def test_concurrent_tools_take_turns(
    cluster_node: tuple[str, NodeSegment], fake_worker: FakeBearerWorker
) -> None:
    """Each request is answered as posted, however many tools post at once."""
    _, seg = cluster_node
    errors: list[BaseException] = []

    def tool(value: int) -> None:
        try:
            cluster.bearer_command(seg, 0, BearerCommand.SET_TOLERANCE, ROW_A0, value)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=tool, args=(1000 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert sorted(v for _, _, _, v in fake_worker.seen) == [1000 + i for i in range(8)]


def test_command_rejects_a_row_of_another_bearer(cluster_node: tuple[str, NodeSegment]) -> None:
    _, seg = cluster_node
    with pytest.raises(InvalidArgument, match="does not belong to bearer 0"):
        cluster.bearer_command(seg, 0, BearerCommand.RESET_STATS, ROW_A1)
    with pytest.raises(InvalidArgument, match="out of range"):
        cluster.bearer_command(seg, 8, BearerCommand.RESET_STATS, MAX_LINKS)


# --------------------------------------------------------------------------- stat


def test_stat_lists_workers_bearers_and_links(cluster_node: tuple[str, NodeSegment]) -> None:
    name, seg = cluster_node
    seg.worker_beat(1)
    snap = snapshot(name)
    json.dumps(snap)
    assert snap["schema"] == 3
    workers = {w["slot"]: w for w in snap["workers"]}
    assert workers[0]["kind"] == "nametable" and workers[0]["state"] == "running"
    assert workers[1]["kind"] == "bearer" and workers[1]["name"] == "udp:127.0.0.1"
    assert workers[1]["pid"] == os.getpid() and workers[1]["alive"]
    assert 0 <= workers[1]["heartbeat_age_ms"] < 60_000
    bearers = {b["bearer"]: b for b in snap["bearers"]}
    assert set(bearers) == {0, 1}
    assert bearers[0]["name"] == "udp:127.0.0.1" and bearers[0]["state"] == "enabled"
    assert bearers[0]["local"] == "127.0.0.1:6118" and bearers[0]["mtu"] == 14000
    assert bearers[0]["counters"]["rx_datagrams"] == 7
    links = {lk["name"]: lk for lk in snap["links"]}
    assert links[LINK_A0]["state"] == "up" and links[LINK_B0]["state"] == "down"
    assert links[LINK_A0]["caps"] == 0x31 and links[LINK_A0]["media"] == "127.0.0.2:6118"
    assert 4 <= links[LINK_A0]["up_for_s"] < 60 and links[LINK_B0]["up_for_s"] is None

    text = render_table(snap)
    heads = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert heads == [
        f"Node {name}",
        "Processes (3)",  # supervisor, name-table worker, bearer worker (one pid here)
        "Workers (2)",
        "Bearers (2)",
        "Links (3)",
        "Sockets (0)",
        "Totals",
    ]
    row = next(line for line in text.splitlines() if line.strip().startswith(LINK_A0))
    assert row.split()[1:3] == [f"{PEER_A:#010x}", "up"]

    prom = render_prometheus(snap)
    labels = f'node="{name}",link="{LINK_A0}",peer="{PEER_A:#010x}"'
    assert f"tipcshm_link_up{{{labels}}} 1\n" in prom
    assert f"tipcshm_link_rx_packets_total{{{labels}}} 11\n" in prom
    assert "# TYPE tipcshm_link_send_queue_packets gauge" in prom
    assert f'tipcshm_bearer_rx_datagrams_total{{node="{name}",bearer="udp:127.0.0.1"}} 7' in prom
    assert f'tipcshm_worker_restarts_total{{node="{name}",slot="1",kind="bearer"' in prom


def test_stat_on_a_real_node_lists_its_workers(node: str) -> None:
    code, out = run("stat", "--name", node, "--json")
    assert code == 0, out
    snap = json.loads(out)
    (ntw,) = [w for w in snap["workers"] if w["kind"] == "nametable"]
    assert ntw["alive"] and ntw["pid"] == snap["node"]["nametable_worker"]["pid"]
    assert snap["links"] == [] and snap["bearers"] == []
    code, out = run("node", "list", "--name", node)
    assert code == 0, out
    ident = snap["node"]["identity"]
    assert out.splitlines()[1] == f"{ident:<32} {int(snap['node']['address'], 16):08x} up"
    code, out = run("link", "list", "--name", node)
    assert (code, out) == (0, "broadcast-link: up\n")


def test_the_tool_rings_the_bearer_workers_bell(cluster_node: tuple[str, NodeSegment]) -> None:
    """A worker that sleeps on its inbox's doorbell is woken for the command."""
    name, seg = cluster_node
    inbox = Inbox.create(bearer_inbox_name(name, 0), lanes=1, tag=seg.tag)
    seen: list[int] = []
    # Select mode first (it settles the bell), as a worker does before it reads its mailbox.
    bell = inbox.fileno()

    def worker() -> None:
        poller = select.poll()
        poller.register(bell, select.POLLIN)
        if not poller.poll(10_000):
            return  # never rung: the tool times out and the test fails
        off = seg.bearer_off(0)
        seen.append(seg.u32[(off + B_CMD_VALUE) // 4])
        seg.i32[(off + B_CMD_RESULT) // 4] = 0
        seg.u32[(off + B_CMD_ACK) // 4] = seg.u32[(off + B_CMD_REQ) // 4]

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        cluster.bearer_command(seg, 0, BearerCommand.SET_WINDOW, ROW_A0, 64, timeout=10)
        assert seen == [64]
    finally:
        thread.join(10)
        inbox.unlink()
        inbox.detach()
