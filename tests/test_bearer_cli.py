"""`tipcshm bearer list|enable|disable` on a running node."""

from __future__ import annotations

import pytest
from bearer_helpers import linked_pair, up_peers, wait_for
from click.testing import CliRunner

from tipcshm.cli.main import main
from tipcshm.shm.layout import BearerState, NodeSegment, WorkerState
from tipcshm.workers import rows

pytestmark = pytest.mark.timeout(90)


def test_disable_stops_the_worker_and_enable_links_again() -> None:
    runner = CliRunner()
    with linked_pair() as (a, b, pa, _pb):
        sa, sb = NodeSegment.attach(a), NodeSegment.attach(b)
        try:
            wait_for(lambda: up_peers(sa) and up_peers(sb), 5, "links")
            out = runner.invoke(main, ["bearer", "list", "--name", a])
            assert out.exit_code == 0, out.output
            assert "udp:127.0.0.1: enabled (worker running)" in out.output
            assert "1 up / 1" in out.output
            out = runner.invoke(main, ["bearer", "disable", "--name", a, f"udp:127.0.0.1:{pa}"])
            assert out.exit_code == 0, out.output
            row = rows.bearer_row(sa, 0)
            assert row is not None and row.state == BearerState.DISABLED
            w = sa.worker(1)
            assert w is not None and w.state == WorkerState.STOPPED
            assert up_peers(sa) == set()
            out = runner.invoke(main, ["bearer", "enable", "--name", a, f"udp:127.0.0.1:{pa}"])
            assert out.exit_code == 0, out.output
            wait_for(lambda: up_peers(sa) == {sb.addr}, 10, "relink")
            out = runner.invoke(main, ["bearer", "disable", "--name", a, "udp:127.0.0.1:1"])
            assert out.exit_code != 0 and "no bearer" in out.output
        finally:
            sa.close()
            sb.close()
