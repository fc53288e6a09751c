"""The node configuration the supervisor gets once and its workers read from the run dir."""

from __future__ import annotations

import pytest

from tipcshm import rundir
from tipcshm.shm.layout import BearerState, NodeSegment, WorkerKind
from tipcshm.testing import free_udp_port, running_node
from tipcshm.workers import rows
from tipcshm.workers.supervisor import BearerSpec, NodeConfig, bearer_specs, load_config


def test_config_round_trips_through_json() -> None:
    cfg = NodeConfig(
        "n1",
        bytes(range(16)),
        bearers=[
            BearerSpec("127.0.0.1", 7000, (("127.0.0.2", 7001),)),
            BearerSpec("::1", 7002, enabled=False, name="lo6"),
        ],
        net_id=1234,
        tolerance_ms=900,
        window=100,
        priority=5,
    )
    back = NodeConfig.from_json(cfg.to_json())
    assert back == cfg


@pytest.mark.parametrize(
    ("text", "local", "port"),
    [
        ("udp:127.0.0.1", "127.0.0.1", 6118),
        ("udp:127.0.0.1:7000", "127.0.0.1", 7000),
        ("udp:[::1]:7001", "::1", 7001),
        ("udp:::1", "::1", 6118),
    ],
)
def test_bearer_option_parses(text: str, local: str, port: int) -> None:
    spec = BearerSpec.parse(text)
    assert (spec.local, spec.port) == (local, port)


@pytest.mark.parametrize(
    "text", ["eth:127.0.0.1", "udp:not-an-ip", "udp:127.0.0.1:0", "udp:228.0.18.103", "udp:0.0.0.0"]
)
def test_bad_bearer_options_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        BearerSpec.parse(text)


def test_remotes_go_to_bearers_of_their_family() -> None:
    specs = bearer_specs(["udp:127.0.0.1:7000", "udp:[::1]:7000"], ["127.0.0.2:7001", "::2"])
    assert specs[0].remotes == (("127.0.0.2", 7001),)
    assert specs[1].remotes == (("::2", 6118),)
    with pytest.raises(ValueError, match="no bearer"):
        bearer_specs(["udp:127.0.0.1"], ["::2"])


@pytest.mark.parametrize(
    "change",
    [{"net_id": 0}, {"tolerance_ms": 49}, {"window": 8192}, {"priority": 32}],
)
def test_out_of_range_settings_are_refused(change: dict[str, int]) -> None:
    cfg = NodeConfig("n1", bytes(16), **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cfg.check()


def test_malformed_config_text_is_a_value_error() -> None:
    for text in ["", "{", "[]", '{"node": "x"}', '{"node": "x", "identity": "zz"}']:
        with pytest.raises(ValueError):
            NodeConfig.from_json(text)


def test_started_node_keeps_its_config_and_describes_its_bearer() -> None:
    port = free_udp_port()
    with running_node(None, "--netid", "4712", "--tolerance", "1000") as node:
        pass  # a node without bearers: no bearer rows
    extra = ("--bearer", f"udp:127.0.0.1:{port}", "--netid", "4712", "--tolerance", "1000")
    with running_node(None, *extra) as node:
        cfg = load_config(node)
        assert cfg.net_id == 4712 and cfg.tolerance_ms == 1000
        assert cfg.bearers == [BearerSpec("127.0.0.1", port)]
        seg = NodeSegment.attach(node)
        try:
            w = seg.worker(1)
            assert w is not None and w.kind == WorkerKind.BEARER
            assert w.name == f"udp:127.0.0.1:{port}"
            row = rows.bearer_row(seg, 0)
            assert row is not None
            assert row.state == BearerState.ENABLED
            assert row.name == "udp:127.0.0.1"
            assert (row.port, row.net_id, row.tolerance) == (port, 4712, 1000)
            assert rows.bearer_row(seg, 1) is None
        finally:
            seg.close()
    assert rundir.read_config(node) is None  # stop removes it
