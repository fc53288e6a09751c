"""``tipcshm stat``, ``nametable show`` and ``socket list``.

Three layers: the pure renderers from a hand-built snapshot; the reader against a node
segment built by hand (the real layout, no workers); and the commands on a real node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import tipcshm
from tipcshm import proc, wire
from tipcshm.cli import stat as stat_mod
from tipcshm.cli.main import main
from tipcshm.cli.stat import (
    render_nametable,
    render_prometheus,
    render_sockets,
    render_table,
    snapshot,
)
from tipcshm.core.nametable import CLUSTER_SCOPE, NODE_SCOPE, Binding, NameTable
from tipcshm.shm.layout import S_NBIND, NodeSegment, NodeState, ProcRole
from tipcshm.testing import running_node, unique_node_name

MIB = 1024 * 1024


def sample_snapshot() -> dict[str, Any]:
    return {
        "schema": 2,
        "time_ns": 1_700_000_000_000_000_000,
        "node": {
            "name": "demo",
            "identity": "node1",
            "address": "0x6e6f6431",
            "state": "ready",
            "uptime_s": 3723.5,
            "supervisor_pid": 100,
            "supervisor_alive": True,
            "heartbeat_age_ms": 12.3,
            "nametable_worker": {
                "pid": 101,
                "alive": True,
                "restarts": 2,
                "heartbeat_age_ms": 40.0,
            },
            "lanes": 64,
            "lane_bytes": 262144,
            "conn_lane_bytes": 4194304,
            "replica_seq": 10,
            "nametable_bindings": 3,
            "node_bindings": [
                {
                    "type": 0,
                    "lower": 0x6E6F6431,
                    "upper": 0x6E6F6431,
                    "port": 0,
                    "what": "node address",
                }
            ],
            "replica_error": None,
        },
        "counters": {
            "sockets_opened": 3,
            "sockets_closed": 1,
            "processes_reaped": 0,
            "worker_restarts": 2,
            "bind_requests": 2,
            "unbind_requests": 0,
            "replica_updates": 5,
            "messages_returned": 1,
        },
        "processes": [
            {
                "pid": 100,
                "role": "supervisor",
                "owner": "node",
                "alive": True,
                "cpu_percent": 0.5,
                "rss_bytes": 25 * MIB,
            },
            {
                "pid": 4242,
                "role": "client",
                "owner": "application",
                "alive": False,
                "cpu_percent": None,
                "rss_bytes": None,
            },
        ],
        "sockets": [
            {
                "port": "0x8be70001",
                "pid": 4242,
                "owner": "application",
                "type": "RDM",
                "binding_count": 2,
                "bindings": [
                    {"type": 1000, "lower": 0, "upper": 10, "scope": "cluster", "key": 1},
                    {"type": 1001, "lower": 5, "upper": 5, "scope": "node", "key": 2},
                ],
                "inbox": {"used": 2048, "capacity": 16 * MIB, "percent": 0.0, "stats": {}},
                "counters": {
                    "tx_msgs": 5,
                    "tx_bytes": 500,
                    "rx_msgs": 7,
                    "rx_bytes": 7000,
                    "drops": 0,
                    "returned": 1,
                },
            },
            {
                "port": "0x8be70002",
                "pid": 4242,
                "owner": "application",
                "type": "DGRAM",
                "binding_count": 0,
                "bindings": [],
                "inbox": None,
                "counters": {
                    "tx_msgs": 1,
                    "tx_bytes": 10,
                    "rx_msgs": 0,
                    "rx_bytes": 0,
                    "drops": 3,
                    "returned": 0,
                },
            },
        ],
        "totals": {
            "sockets": 2,
            "node_sockets": 0,
            "bindings": 3,
            "node_bindings": 1,
            "remote_bindings": 0,
            "processes": 2,
            "node_processes": 1,
            "tx_msgs": 6,
            "tx_bytes": 510,
            "rx_msgs": 7,
            "rx_bytes": 7000,
            "drops": 3,
            "returned": 1,
        },
    }


# --------------------------------------------------------------------------- table


def test_table_has_the_four_sections_in_order() -> None:
    lines = render_table(sample_snapshot()).splitlines()
    heads = [line for line in lines if line and not line.startswith(" ")]
    assert heads == ["Node demo", "Processes (2)", "Sockets (2)", "Totals"]


def test_table_node_section() -> None:
    lines = render_table(sample_snapshot()).splitlines()
    assert "  identity    node1" in lines
    assert "  address     0x6e6f6431" in lines
    assert "  state       ready" in lines
    assert "  uptime      1h 02m 03s" in lines
    assert "  supervisor  pid 100, heartbeat 12.3 ms ago" in lines
    assert "  name table  pid 101, 2 restarts, heartbeat 40.0 ms ago" in lines
    assert "              3 bindings, replica seq 10" in lines
    assert "              the node's own: {0,1852793905,1852793905} node address" in lines
    assert "  lanes       64 x 256 KiB per inbox (connections: 4 MiB)" in lines
    assert any(re.fullmatch(r" +bind_requests +2", line) for line in lines)
    assert any(re.fullmatch(r" +messages_returned +1", line) for line in lines)


def test_table_warns_when_the_supervisor_is_gone() -> None:
    snap = sample_snapshot()
    snap["node"]["supervisor_alive"] = False
    snap["node"]["nametable_worker"]["alive"] = False
    snap["node"]["heartbeat_age_ms"] = None
    text = render_table(snap)
    assert "heartbeat never (NOT RUNNING: clean up with `tipcshm stop --name demo`)" in text
    assert "heartbeat 40.0 ms ago (not running)" in text


def _rows_after(lines: list[str], header_start: str) -> tuple[str, list[str]]:
    i = next(i for i, line in enumerate(lines) if line.strip().startswith(header_start))
    rows = []
    for line in lines[i + 1 :]:
        if not line:
            break
        rows.append(line)
    return lines[i], rows


def test_table_processes_are_aligned_and_tolerate_gone_ones() -> None:
    header, rows = _rows_after(render_table(sample_snapshot()).splitlines(), "PID  ROLE")
    assert header.split() == ["PID", "ROLE", "CPU%", "RSS"]
    assert rows[0].split() == ["100", "supervisor", "0.5", "25", "MiB"]
    assert rows[1].split() == ["4242", "client", "-", "-", "gone"]
    # Right-aligned numeric columns end in the same place as their headers.
    for col in ("PID", "CPU%", "RSS"):
        end = header.index(col) + len(col)
        assert all(row[end - 1] != " " and (len(row) == end or row[end] == " ") for row in rows)


def test_table_sockets_row() -> None:
    header, rows = _rows_after(render_table(sample_snapshot()).splitlines(), "PORT")
    assert header.split()[:4] == ["PORT", "PID", "TYPE", "BINDS"]
    assert header.rstrip().endswith("BOUND TO")
    first = rows[0].split()
    assert first[:5] == ["0x8be70001", "4242", "RDM", "2", "2"]
    assert rows[0].endswith("{1000,0,10} {1001,5,5}")
    assert "0.0%" in first
    # The socket whose inbox is gone shows dashes, not an error.
    assert rows[1].split()[:6] == ["0x8be70002", "4242", "DGRAM", "0", "-", "-"]
    # All rows start their columns where the header does.
    for col in ("TYPE", "BOUND TO"):
        start = header.index(col)
        assert rows[0][start - 2 : start] == "  "


def test_table_shortens_long_binding_lists() -> None:
    snap = sample_snapshot()
    snap["sockets"][0]["bindings"] = [
        {"type": 2000 + i, "lower": i, "upper": i, "scope": "cluster", "key": i} for i in range(5)
    ]
    _, rows = _rows_after(render_table(snap).splitlines(), "PORT")
    assert rows[0].endswith("{2000,0,0} {2001,1,1} {2002,2,2} +2 more")


def test_table_totals() -> None:
    lines = render_table(sample_snapshot()).splitlines()
    assert lines[-4:] == [
        "  sockets 2 = 2 applications' + 0 node's own",
        "  bindings 3 = 2 applications' + 1 node's own",
        "  processes 2 = 1 applications' + 1 node's own",
        "  tx 6 msgs, 510 B   rx 7 msgs, 6.8 KiB   drops 3   returned 1",
    ]


def test_table_totals_agree_with_the_header_and_name_other_nodes() -> None:
    """The header's binding count is the total's; the node's own sockets are marked."""
    snap = sample_snapshot()
    snap["node"]["nametable_bindings"] = 5
    snap["totals"].update(bindings=5, remote_bindings=1, node_bindings=2, node_sockets=1)
    snap["sockets"][1]["owner"] = "node"
    lines = render_table(snap).splitlines()
    assert "              5 bindings, replica seq 10" in lines
    assert "  bindings 5 = 2 applications' + 2 node's own + 1 other nodes'" in lines
    assert "  sockets 2 = 1 applications' + 1 node's own" in lines
    _, rows = _rows_after(lines, "PORT")
    assert rows[1].endswith("(node)") and "(node)" not in rows[0]


def test_table_with_no_sockets_or_processes() -> None:
    snap = sample_snapshot()
    snap["sockets"] = []
    snap["processes"] = []
    text = render_table(snap)
    assert "Processes (0)\n  (none)" in text
    assert "Sockets (0)\n  (none)" in text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (25 * MIB, "25 MiB"),
        (3 * 1024**4, "3 TiB"),
        (5000 * 1024**4, "5000 TiB"),
    ],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert stat_mod._human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (4.3, "4.3s"), (65, "1m 05s"), (3723.5, "1h 02m 03s"), (90061, "1d 01h 01m 01s")],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert stat_mod._human_duration(seconds) == text


# --------------------------------------------------------------------------- prometheus

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({METRIC_NAME})\{{(.*)\}} (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_prometheus(
    text: str,
) -> tuple[dict[str, str], dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(help by name, type by name, samples) of a text exposition; asserts its syntax."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert name not in helps, f"second HELP for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge")
            assert name not in types, f"second TYPE for {name}"
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, label_text, value = m.groups()
            labels = dict(LABEL.findall(label_text))
            assert ",".join(f'{k}="{v}"' for k, v in labels.items()) == label_text
            assert name in types, f"sample of {name} before its TYPE"
            samples.append((name, labels, float(value)))
    return helps, types, samples


def test_prometheus_syntax_help_and_type_for_every_metric() -> None:
    helps, types, samples = parse_prometheus(render_prometheus(sample_snapshot()))
    assert samples
    assert set(helps) == set(types)
    for name, labels, _ in samples:
        assert name.startswith("tipcshm_")
        assert name in helps and helps[name]
        assert labels["node"] == "demo"
        assert name.endswith("_total") == (types[name] == "counter"), name


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_prometheus_values() -> None:
    _, _, s = parse_prometheus(render_prometheus(sample_snapshot()))
    assert _value(s, "tipcshm_node_info", address="0x6e6f6431", state="ready") == 1
    assert _value(s, "tipcshm_node_ready") == 1
    assert _value(s, "tipcshm_node_uptime_seconds") == 3723.5
    assert _value(s, "tipcshm_supervisor_heartbeat_age_seconds") == pytest.approx(0.0123)
    assert _value(s, "tipcshm_nametable_bindings") == 3
    assert _value(s, "tipcshm_bindings", owner="application") == 2
    assert _value(s, "tipcshm_bindings", owner="node") == 1
    assert _value(s, "tipcshm_bindings", owner="other_nodes") == 0
    assert _value(s, "tipcshm_processes", owner="node") == 1
    assert _value(s, "tipcshm_processes", owner="application") == 1
    assert _value(s, "tipcshm_node_bind_requests_total") == 2
    assert _value(s, "tipcshm_node_messages_returned_total") == 1
    assert _value(s, "tipcshm_sockets", owner="application") == 2
    assert _value(s, "tipcshm_sockets", owner="node") == 0
    assert _value(s, "tipcshm_process_cpu_percent", pid="100", role="supervisor") == 0.5
    assert _value(s, "tipcshm_process_resident_memory_bytes", pid="100") == 25 * MIB
    info = {"port": "0x8be70001", "pid": "4242", "owner": "application", "type": "RDM"}
    assert _value(s, "tipcshm_socket_info", **info) == 1
    assert _value(s, "tipcshm_socket_bindings", port="0x8be70001") == 2
    assert _value(s, "tipcshm_socket_inbox_used_bytes", port="0x8be70001") == 2048
    assert _value(s, "tipcshm_socket_inbox_capacity_bytes", port="0x8be70001") == 16 * MIB
    assert _value(s, "tipcshm_socket_tx_messages_total", port="0x8be70001") == 5
    assert _value(s, "tipcshm_socket_rx_bytes_total", port="0x8be70001") == 7000
    assert _value(s, "tipcshm_socket_drops_total", port="0x8be70002") == 3
    assert _value(s, "tipcshm_socket_returned_total", port="0x8be70001") == 1


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1 + 0.2, "0.3"),
        (1e6, "1000000"),
        (1e6 + 0.5, "1000000.5"),
        (1e20, "100000000000000000000"),
        (12.3 / 1000, "0.0123"),
        (3723.0, "3723"),
        (0.0, "0"),
        (-0.0000001, "0"),
        (2.5e-5, "0.000025"),
        (7, "7"),
        (2**64, "18446744073709551616"),
        (True, "1"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_prometheus_value_has_no_float_noise(value: float, text: str) -> None:
    assert stat_mod._format_value(value) == text


PLAIN_VALUE = re.compile(r"-?[0-9]+(\.[0-9]{1,6})?|NaN|[+-]Inf")


def test_prometheus_output_has_no_float_noise() -> None:
    """Figures computed in floating point come out as a person would write them."""
    snap = sample_snapshot()
    snap["node"]["uptime_s"] = 1e6
    snap["node"]["heartbeat_age_ms"] = 0.1 + 0.2
    snap["processes"][0]["cpu_percent"] = 100.0
    text = render_prometheus(snap)
    _, _, s = parse_prometheus(text)
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")]
    assert values and all(PLAIN_VALUE.fullmatch(v) for v in values), values
    assert 'tipcshm_node_uptime_seconds{node="demo"} 1000000\n' in text
    assert 'tipcshm_supervisor_heartbeat_age_seconds{node="demo"} 0.0003\n' in text
    assert 'role="supervisor",owner="node"} 100\n' in text


def test_prometheus_counts_add_up_to_the_totals() -> None:
    snap = sample_snapshot()
    _, _, s = parse_prometheus(render_prometheus(snap))

    def total(name: str) -> float:
        return sum(v for n, _, v in s if n == name)

    assert total("tipcshm_bindings") == _value(s, "tipcshm_nametable_bindings") == 3
    assert total("tipcshm_sockets") == len(snap["sockets"])
    assert total("tipcshm_processes") == len(snap["processes"])


def test_prometheus_leaves_out_unknown_values() -> None:
    """A gone process and a gone inbox give no samples (rather than fake zeros)."""
    _, _, s = parse_prometheus(render_prometheus(sample_snapshot()))
    assert not [lab for n, lab, _ in s if n.startswith("tipcshm_process_") and lab["pid"] == "4242"]
    assert not [
        lab
        for n, lab, _ in s
        if n.startswith("tipcshm_socket_inbox_") and lab["port"] == "0x8be70002"
    ]


def test_prometheus_not_ready_and_escaped_labels() -> None:
    snap = sample_snapshot()
    snap["node"]["supervisor_alive"] = False
    snap["node"]["identity"] = 'a"b\\c'
    snap["node"]["uptime_s"] = None
    text = render_prometheus(snap)
    _, _, s = parse_prometheus(text)
    assert 'identity="a\\"b\\\\c"' in text
    assert _value(s, "tipcshm_node_ready") == 0
    assert not [n for n, _, _ in s if n == "tipcshm_node_uptime_seconds"]


def test_prometheus_unknown_socket_counter_still_has_help_and_type() -> None:
    snap = sample_snapshot()
    snap["sockets"][0]["counters"]["rejects"] = 4
    helps, types, s = parse_prometheus(render_prometheus(snap))
    assert types["tipcshm_socket_rejects_total"] == "counter"
    assert helps["tipcshm_socket_rejects_total"]
    assert _value(s, "tipcshm_socket_rejects_total", port="0x8be70001") == 4


# --------------------------------------------------------------------------- nametable, sockets

NAMETABLE_ROWS = [
    {
        "type": 0,
        "lower": 16777217,
        "upper": 16777217,
        "scope": "cluster",
        "port": 0,
        "node": "0x01000001",
        "key": 16777217,
    },
    {
        "type": 1000,
        "lower": 0,
        "upper": 10,
        "scope": "node",
        "port": 2347171841,
        "node": "0x01000001",
        "key": 1,
    },
]


def test_nametable_like_tipc() -> None:
    assert render_nametable(NAMETABLE_ROWS).splitlines() == [
        "Type       Lower      Upper      Scope    Port       Node",
        "0          16777217   16777217   cluster  0          0x01000001",
        "1000       0          10         node     2347171841 0x01000001",
    ]


def test_nametable_empty_is_just_the_header() -> None:
    assert render_nametable([]) == "Type       Lower      Upper      Scope    Port       Node"


def test_sockets_like_tipc() -> None:
    assert render_sockets(sample_snapshot()["sockets"]).splitlines() == [
        "socket 2347171841 (0x8be70001, pid 4242, RDM)",
        "        bound to {1000,0,10}",
        "        bound to {1001,5,5}",
        "socket 2347171842 (0x8be70002, pid 4242, DGRAM)",
    ]
    assert render_sockets([]) == ""


# --------------------------------------------------------------------------- commands, faked


@pytest.fixture
def fake_snapshot(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make `stat` read sample snapshots instead of a node; returns the calls' kwargs."""
    calls: list[dict[str, Any]] = []

    def fake(node: str, **kwargs: Any) -> dict[str, Any]:
        assert node == "demo"
        calls.append(kwargs)
        return sample_snapshot()

    monkeypatch.setattr(stat_mod, "snapshot", fake)
    monkeypatch.setattr(stat_mod.time, "sleep", lambda s: None)
    return calls


def test_stat_command_table_json_prometheus(fake_snapshot: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["stat", "--name", "demo"])
    assert res.exit_code == 0, res.output
    assert res.output == render_table(sample_snapshot()) + "\n"
    assert fake_snapshot[-1]["cpu_sample_s"] > 0  # one shot: CPU over a real interval
    res = runner.invoke(main, ["stat", "--name", "demo", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == sample_snapshot()
    res = runner.invoke(main, ["stat", "--name", "demo", "--prometheus"])
    assert res.exit_code == 0, res.output
    assert res.output == render_prometheus(sample_snapshot())


def test_stat_name_from_environment(fake_snapshot: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(main, ["stat", "--json"], env={"TIPCSHM_NODE": "demo"})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["node"]["name"] == "demo"


def test_stat_watch_redraws(
    fake_snapshot: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clears: list[int] = []
    monkeypatch.setattr(stat_mod.click, "clear", lambda: clears.append(1))
    res = CliRunner().invoke(main, ["stat", "--name", "demo", "--watch", "--count", "3"])
    assert res.exit_code == 0, res.output
    assert len(fake_snapshot) == 3 and len(clears) == 3
    assert res.output.count("Node demo") == 3
    assert "every 1s" in res.output


def test_stat_watch_json_lines(fake_snapshot: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(
        main, ["stat", "--name", "demo", "--json", "--watch", "0.5", "--count", "2"]
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 2
    assert all(json.loads(line) == sample_snapshot() for line in lines)


def test_stat_watch_stops_quietly_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = iter([sample_snapshot()])

    def fake(node: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return next(snaps)
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(stat_mod, "snapshot", fake)
    monkeypatch.setattr(stat_mod.time, "sleep", lambda s: None)
    res = CliRunner().invoke(main, ["stat", "--name", "demo", "--watch"])
    assert res.exit_code == 0, res.output
    assert res.output.count("Node demo") == 1


@pytest.mark.parametrize(
    "args",
    [["--json", "--prometheus"], ["--count", "2"], ["--watch", "0"], ["--name", "no such"]],
)
def test_stat_usage_errors(args: list[str], fake_snapshot: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(main, ["stat", *args])
    assert res.exit_code == 2, res.output
    assert fake_snapshot == []


@pytest.mark.parametrize(
    "args", [["stat"], ["stat", "--json"], ["nametable", "show"], ["socket", "list"]]
)
def test_not_running_node(args: list[str]) -> None:
    name = unique_node_name("absent")
    res = CliRunner().invoke(main, [*args, "--name", name])
    assert res.exit_code == 1
    assert f"tipcshm node {name!r} is not running" in res.output
    assert f"tipcshm start --name {name}" in res.output


# ---------------------------------------------------------------- reader, hand-built segment

PORT_A = 0x8BE70001
PORT_B = 0x8BE70002


@pytest.fixture
def fake_node() -> Iterator[tuple[str, int, int]]:
    """A node segment laid out by hand (no workers): (name, address, dead client pid).

    This process is its supervisor; a socket of a dead client holds one binding, another
    holds none; the replica also holds the node's own {0, addr, addr} and a remote binding.
    """
    name = unique_node_name("statfake")
    identity = b"statfake".ljust(16, b"\0")
    addr = wire.hash128to32(identity)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    seg = NodeSegment.create(name)
    try:
        seg.set_identity(identity, addr)
        seg.set_supervisor(os.getpid(), proc.self_token()[1])
        seg.set_started()
        seg.beat()
        seg.set_lane_geometry(4, 256 * 1024, 1 << 20)
        seg.register_process(child.pid, 1, ProcRole.CLIENT)  # start time 1: surely dead
        slot = seg.alloc_socket(PORT_A, child.pid, 1, tipcshm.SOCK_RDM)
        seg.alloc_socket(PORT_B, child.pid, 1, tipcshm.SOCK_DGRAM)
        table = NameTable(addr)
        table.insert(Binding(0, addr, addr, CLUSTER_SCOPE, addr, 0, addr))
        table.insert(Binding(1000, 0, 10, NODE_SCOPE, addr, PORT_A, 7))
        table.insert(Binding(1000, 5, 5, CLUSTER_SCOPE, 0x2002, PORT_A, 9))  # remote
        seg.write_replica(table.encode())
        seg.u32[(seg.sock_off(slot) + S_NBIND) // 4] = 1
        seg.state = NodeState.READY
        seg.publish_magic()
        yield name, addr, child.pid
    finally:
        seg.close()
        NodeSegment.unlink(name)


def test_snapshot_of_hand_built_segment(fake_node: tuple[str, int, int]) -> None:
    name, addr, dead = fake_node
    snap = snapshot(name)
    json.dumps(snap)  # JSON-ready
    n = snap["node"]
    assert n["name"] == name
    assert n["identity"] == "statfake"
    assert n["address"] == f"{addr:#010x}"
    assert n["state"] == "ready"
    assert n["supervisor_pid"] == os.getpid() and n["supervisor_alive"]
    assert 0 <= n["heartbeat_age_ms"] < 60_000
    assert n["nametable_worker"] == {
        "pid": 0,
        "alive": False,
        "restarts": 0,
        "heartbeat_age_ms": None,
    }
    assert (n["lanes"], n["lane_bytes"], n["conn_lane_bytes"]) == (4, 256 * 1024, 1 << 20)
    assert n["nametable_bindings"] == 3 and n["replica_error"] is None
    assert 0 <= n["uptime_s"] < 60
    assert snap["counters"]["sockets_opened"] == 2
    assert snap["counters"]["replica_updates"] == 1

    by_pid = {p["pid"]: p for p in snap["processes"]}
    assert by_pid[os.getpid()]["role"] == "supervisor" and by_pid[os.getpid()]["alive"]
    assert by_pid[os.getpid()]["rss_bytes"] > 0
    assert isinstance(by_pid[os.getpid()]["cpu_percent"], float)
    assert by_pid[os.getpid()]["owner"] == "node"
    assert by_pid[dead] == {
        "pid": dead,
        "role": "client",
        "owner": "application",
        "alive": False,
        "cpu_percent": None,
        "rss_bytes": None,
    }

    a, b = snap["sockets"]
    assert (a["port"], a["pid"], a["type"], a["binding_count"]) == ("0x8be70001", dead, "RDM", 1)
    # Only this node's bindings of the port: the remote one with the same port number is not.
    assert a["bindings"] == [{"type": 1000, "lower": 0, "upper": 10, "scope": "node", "key": 7}]
    assert a["inbox"] is None  # no inbox was created: shown as unknown, not an error
    assert a["counters"] == dict.fromkeys(
        ("tx_msgs", "tx_bytes", "rx_msgs", "rx_bytes", "drops", "returned"), 0
    )
    assert (b["port"], b["type"], b["binding_count"], b["bindings"]) == (
        "0x8be70002",
        "DGRAM",
        0,
        [],
    )
    # The whole name table: the application's binding, the node's address (port 0, no
    # socket) and the remote one; this process is the supervisor, so the node's own.
    assert snap["node"]["node_bindings"] == [
        {"type": 0, "lower": addr, "upper": addr, "port": 0, "what": "node address"}
    ]
    assert snap["totals"] == {
        "sockets": 2,
        "node_sockets": 0,
        "bindings": 3,
        "node_bindings": 1,
        "remote_bindings": 1,
        "processes": 2,
        "node_processes": 1,
        "tx_msgs": 0,
        "tx_bytes": 0,
        "rx_msgs": 0,
        "rx_bytes": 0,
        "drops": 0,
        "returned": 0,
    }
    render_table(snap)
    parse_prometheus(render_prometheus(snap))


def test_psutil_handles_are_kept_between_snapshots(fake_node: tuple[str, int, int]) -> None:
    name, _, _ = fake_node
    snapshot(name)
    handle = stat_mod._PS_CACHE[proc.self_token()]
    sum(range(200_000))  # some CPU for the second figure to measure
    snap = snapshot(name)
    assert stat_mod._PS_CACHE[proc.self_token()] is handle
    me = next(p for p in snap["processes"] if p["pid"] == os.getpid())
    assert me["cpu_percent"] >= 0.0
    # The dead client never gets a psutil handle.
    assert all(key[0] == os.getpid() for key in stat_mod._PS_CACHE)


def test_hand_built_segment_commands(fake_node: tuple[str, int, int]) -> None:
    name, addr, dead = fake_node
    runner = CliRunner()
    res = runner.invoke(main, ["nametable", "show", "--name", name])
    assert res.exit_code == 0, res.output
    assert [line.split() for line in res.output.splitlines()] == [
        ["Type", "Lower", "Upper", "Scope", "Port", "Node"],
        ["0", str(addr), str(addr), "cluster", "0", f"{addr:#010x}"],
        ["1000", "0", "10", "node", str(PORT_A), f"{addr:#010x}"],
        ["1000", "5", "5", "cluster", str(PORT_A), "0x00002002"],
    ]
    res = runner.invoke(main, ["nametable", "show", "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[1] == {
        "type": 1000,
        "lower": 0,
        "upper": 10,
        "scope": "node",
        "port": PORT_A,
        "node": f"{addr:#010x}",
        "key": 7,
    }
    res = runner.invoke(main, ["socket", "list", "--name", name])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"socket {PORT_A} (0x8be70001, pid {dead}, RDM)",
        "        bound to {1000,0,10}",
        f"socket {PORT_B} (0x8be70002, pid {dead}, DGRAM)",
    ]
    res = runner.invoke(main, ["socket", "list", "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    assert [s["port"] for s in json.loads(res.output)] == ["0x8be70001", "0x8be70002"]


def test_unreadable_replica(fake_node: tuple[str, int, int]) -> None:
    name, _, _ = fake_node
    seg = NodeSegment.attach(name)
    try:
        # records no image may hold (scope 99) in the active buffer
        active = seg.replica_active()
        scope = seg.replica_arrays(active)["scope"]
        scope[:8] = 99
        del scope  # a view of the mapping: close() cannot unmap while it exists
        seg.u32[seg.replica_count_index(active)] = 8
    finally:
        seg.close()
    snap = snapshot(name)
    assert snap["node"]["replica_error"].startswith("name-table replica unreadable")
    assert snap["sockets"][0]["bindings"] == [] and snap["sockets"][0]["binding_count"] == 1
    assert "name-table replica unreadable" in render_table(snap)
    res = CliRunner().invoke(main, ["nametable", "show", "--name", name])
    assert res.exit_code == 1
    assert "name-table replica unreadable" in res.output


# --------------------------------------------------------------------------- a real node

SERVICE = (tipcshm.TIPC_ADDR_NAMESEQ, 1000, 0, 10)


def shm_leftovers(node: str) -> list[str]:
    own = f"tipcshm.{node}"
    return [n for n in os.listdir("/dev/shm") if n == own or n.startswith(own + ".")]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, tipcshm.Socket]]:
    """A running node with one RDM socket of this process bound to {1000, 0, 10}."""
    with running_node() as name:
        sock = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=name)
        try:
            sock.bind(SERVICE)
            yield name, sock
        finally:
            sock.close()
    assert shm_leftovers(name) == []


def _addr_port(sock: tipcshm.Socket) -> tuple[int, int]:
    _, addr, port, _, _ = sock.getsockname()
    return addr, port


def test_live_stat_table(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    addr, port = _addr_port(sock)
    res = CliRunner().invoke(main, ["stat", "--name", name])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"Node {name}"
    assert f"  address     {addr:#010x}" in lines
    assert "  state       ready" in lines
    row = next(line for line in lines if line.startswith(f"  {port:#010x}"))
    assert row.split()[1:4] == [str(os.getpid()), "RDM", "1"]
    assert row.endswith("{1000,0,10}")


def test_live_stat_json(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    addr, port = _addr_port(sock)
    res = CliRunner().invoke(main, ["stat", "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    snap = json.loads(res.output)
    n = snap["node"]
    assert (n["name"], n["address"], n["state"]) == (name, f"{addr:#010x}", "ready")
    assert n["supervisor_alive"] and n["nametable_worker"]["alive"]
    assert (
        n["heartbeat_age_ms"] is not None and n["nametable_worker"]["heartbeat_age_ms"] is not None
    )
    assert n["replica_error"] is None
    mine = [s for s in snap["sockets"] if s["port"] == f"{port:#010x}"]
    assert len(mine) == 1
    s = mine[0]
    assert (s["pid"], s["type"], s["binding_count"]) == (os.getpid(), "RDM", 1)
    assert [(b["type"], b["lower"], b["upper"], b["scope"]) for b in s["bindings"]] == [
        (1000, 0, 10, "cluster")
    ]
    assert s["inbox"] is not None and s["inbox"]["capacity"] > 0 and s["inbox"]["used"] == 0
    roles = {(p["pid"], p["role"]) for p in snap["processes"]}
    assert (os.getpid(), "client") in roles
    assert (n["supervisor_pid"], "supervisor") in roles
    assert snap["totals"]["sockets"] == len(snap["sockets"]) >= 1
    assert snap["totals"]["bindings"] >= 1


def test_live_stat_shows_shared_memory_per_socket(live: tuple[str, tipcshm.Socket]) -> None:
    """An idle socket holds its inbox's allocated pages (not its sparse size) and its entry."""
    from tipcshm.shm.layout import SOCK_ENTRY, inbox_name

    name, sock = live
    _, port = _addr_port(sock)
    snap = snapshot(name)
    mine = next(s for s in snap["sockets"] if s["port"] == f"{port:#010x}")
    blocks = os.stat(f"/dev/shm{inbox_name(name, port)}").st_blocks * 512
    assert mine["inbox"]["allocated"] == blocks
    assert mine["shm_bytes"] == blocks + SOCK_ENTRY
    assert 0 < mine["shm_bytes"] < mine["inbox"]["capacity"]  # sparse: far below the rings
    header, rows = _rows_after(render_table(snap).splitlines(), "PORT")
    assert "SHM" in header.split()
    row = next(r for r in rows if r.split()[0] == f"{port:#010x}")
    start = header.index("SHM")
    assert stat_mod._human_bytes(mine["shm_bytes"]) in row[start - 8 : start + 4]
    res = CliRunner().invoke(main, ["stat", "--name", name, "--prometheus"])
    assert res.exit_code == 0, res.output
    assert f'tipcshm_socket_shm_bytes{{node="{name}",port="{port:#010x}"}} ' in res.output


def test_live_stat_counts_traffic(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    _, port = _addr_port(sock)
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=name) as sender:
        sender.sendto(b"x" * 100, (tipcshm.TIPC_ADDR_NAME, 1000, 3, 0))
        _, sender_port = _addr_port(sender)
        sock.settimeout(10)
        assert sock.recv(200) == b"x" * 100
        snap = snapshot(name)
    by_port = {s["port"]: s for s in snap["sockets"]}
    assert by_port[f"{sender_port:#010x}"]["counters"]["tx_msgs"] == 1
    assert by_port[f"{sender_port:#010x}"]["counters"]["tx_bytes"] == 100
    assert by_port[f"{port:#010x}"]["counters"]["rx_msgs"] >= 1
    assert snap["totals"]["tx_msgs"] >= 1 and snap["totals"]["rx_bytes"] >= 100


def test_live_stat_prometheus(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    _, port = _addr_port(sock)
    res = CliRunner().invoke(main, ["stat", "--name", name, "--prometheus"])
    assert res.exit_code == 0, res.output
    helps, types, s = parse_prometheus(res.output)
    assert _value(s, "tipcshm_node_ready", node=name) == 1
    info = {"node": name, "port": f"{port:#010x}", "pid": str(os.getpid()), "type": "RDM"}
    assert _value(s, "tipcshm_socket_info", **info) == 1
    assert _value(s, "tipcshm_socket_bindings", port=f"{port:#010x}") == 1
    assert _value(s, "tipcshm_process_resident_memory_bytes", pid=str(os.getpid())) > 0


def test_live_nametable_show(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    addr, port = _addr_port(sock)
    res = CliRunner().invoke(main, ["nametable", "show", "--name", name])
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines()]
    assert rows[0] == ["Type", "Lower", "Upper", "Scope", "Port", "Node"]
    assert ["0", str(addr), str(addr), "cluster", "0", f"{addr:#010x}"] in rows
    assert ["1000", "0", "10", "cluster", str(port), f"{addr:#010x}"] in rows
    assert rows[1:] == sorted(rows[1:], key=lambda r: (int(r[0]), int(r[1]), int(r[2])))
    res = CliRunner().invoke(main, ["nametable", "show", "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    assert {
        "type": 1000,
        "lower": 0,
        "upper": 10,
        "scope": "cluster",
        "port": port,
        "node": f"{addr:#010x}",
    }.items() <= next(r for r in json.loads(res.output) if r["type"] == 1000).items()


def test_live_socket_list(live: tuple[str, tipcshm.Socket]) -> None:
    name, sock = live
    _, port = _addr_port(sock)
    res = CliRunner().invoke(main, ["socket", "list", "--name", name])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    i = lines.index(f"socket {port} ({port:#010x}, pid {os.getpid()}, RDM)")
    assert lines[i + 1] == "        bound to {1000,0,10}"
    res = CliRunner().invoke(main, ["socket", "list", "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    mine = next(s for s in json.loads(res.output) if s["port"] == f"{port:#010x}")
    assert "inbox" not in mine and mine["binding_count"] == 1


def test_live_closed_socket_disappears(live: tuple[str, tipcshm.Socket]) -> None:
    name, _ = live
    extra = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=name)
    try:
        _, port = _addr_port(extra)
        assert f"{port:#010x}" in {s["port"] for s in snapshot(name)["sockets"]}
    finally:
        extra.close()
    assert f"{port:#010x}" not in {s["port"] for s in snapshot(name)["sockets"]}


def test_live_stat_counts_agree(live: tuple[str, tipcshm.Socket]) -> None:
    """The header, the sections and the totals of a real node can be reconciled: the node's
    own bindings ({0, addr, addr} and the topology service's {1, 1, 1}) are named."""
    name, sock = live
    addr, _ = _addr_port(sock)
    snap = snapshot(name)
    n, t = snap["node"], snap["totals"]
    assert t["bindings"] == n["nametable_bindings"]
    assert {(b["type"], b["lower"], b["upper"], b["what"]) for b in n["node_bindings"]} == {
        (0, addr, addr, "node address"),
        (1, 1, 1, "topology service"),
    }
    assert t["node_bindings"] == 2 and t["remote_bindings"] == 0
    # Every binding but the node address's (port 0) is held by a socket of the table.
    assert sum(s["binding_count"] for s in snap["sockets"]) == t["bindings"] - 1
    node_sockets = [s for s in snap["sockets"] if s["owner"] == "node"]
    assert t["node_sockets"] == len(node_sockets) >= 1
    assert {s["pid"] for s in node_sockets} == {n["nametable_worker"]["pid"]}
    topology = [s for s in node_sockets if s["bindings"]]
    assert [(b["type"], b["lower"], b["upper"]) for b in topology[0]["bindings"]] == [(1, 1, 1)]
    assert {p["role"] for p in snap["processes"] if p["owner"] == "node"} == {
        "supervisor",
        "nametable",
    }
    assert t["node_processes"] == 2
    lines = render_table(snap).splitlines()
    apps = t["bindings"] - 2
    assert f"  bindings {t['bindings']} = {apps} applications' + 2 node's own" in lines
    assert (
        f"              the node's own: {{0,{addr},{addr}}} node address, "
        "{1,1,1} topology service" in lines
    )


def test_live_prometheus_counts_and_values(live: tuple[str, tipcshm.Socket]) -> None:
    name, _ = live
    res = CliRunner().invoke(main, ["stat", "--name", name, "--prometheus"])
    assert res.exit_code == 0, res.output
    _, _, s = parse_prometheus(res.output)
    values = [line.rsplit(" ", 1)[1] for line in res.output.splitlines() if line[:1] != "#"]
    assert all(PLAIN_VALUE.fullmatch(v) for v in values), values
    bindings = sum(v for n, _, v in s if n == "tipcshm_bindings")
    assert bindings == _value(s, "tipcshm_nametable_bindings", node=name)
    assert _value(s, "tipcshm_bindings", node=name, owner="node") == 2
    assert _value(s, "tipcshm_processes", node=name, owner="node") == 2
