"""Shared fixtures: every test that needs a node gets its own, and it must leave nothing."""

from __future__ import annotations

import os

import pytest

from tipcshm.cli.main import log_path
from tipcshm.testing import start_node, stop_node, unique_node_name


def shm_leftovers(node: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir("/dev/shm")
        if n == f"tipcshm.{node}" or n.startswith(f"tipcshm.{node}.")
    )


@pytest.fixture
def node_name() -> str:
    return unique_node_name()


@pytest.fixture
def node(node_name: str):
    """A running isolated node; stopped afterwards, and checked to leave no segment behind."""
    start_node(node_name)
    try:
        yield node_name
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []
    assert not os.path.exists(log_path(node_name))


def pytest_report_header(config: pytest.Config) -> list[str]:
    kvm = os.path.exists("/dev/kvm")
    return [
        f"tipcshm: /dev/kvm {'present' if kvm else 'missing: kernel interop tests will be skipped'}"
    ]
