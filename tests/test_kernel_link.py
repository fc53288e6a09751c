"""The sans-IO core against a real Linux kernel: tools/interop/link_check.py --vm boots a
kernel VM with the harness, drives a NodeStack over UDP in the VM's network namespace,
and checks link set-up, the kernel's names, an RDM echo, our binding in the kernel's
name table and idle supervision (tools/interop/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "interop" / "link_check.py"


@pytest.mark.kvm
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_core_links_with_a_linux_kernel() -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm: the core is not checked against a kernel")
    run = subprocess.run(
        [sys.executable, str(TOOL), "--vm", "--seconds", "30"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    if run.stdout.startswith("SKIPPED:"):
        pytest.skip(f"not checked against a kernel: {run.stdout.strip()[9:]}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAIL" not in run.stdout
    for check in ("link up", "echo returned", "link stayed up", "shows our binding"):
        assert check in run.stdout, run.stdout
