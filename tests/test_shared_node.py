"""The shared node of tests/conftest.py hands each test an empty node, or fails loudly."""

from __future__ import annotations

import conftest
import pytest
from conftest import _SharedNode, shm_leftovers

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, TIPC_ADDR_NAME


def test_a_test_that_leaves_a_socket_fails_and_the_next_gets_a_new_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "QUIET_TIMEOUT", 0.5)
    shared = _SharedNode()
    try:
        first = shared.get()
        assert shared.get() == first  # one node for the module
        kept = tipcshm.socket(AF_TIPC, SOCK_RDM, node=first)
        kept.bind((TIPC_ADDR_NAME, 9100, 1, 0))
        with pytest.raises(pytest.fail.Exception, match=r"socket 0x[0-9a-f]+ of pid \d+"):
            shared.settle()
        kept.close()
        assert shm_leftovers(first) == []  # the spoilt node was stopped and removed
        second = shared.get()
        assert second != first
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=second) as s:
            s.bind((TIPC_ADDR_NAME, 9100, 1, 0))
        shared.settle()  # closed and withdrawn: the node is kept for the next test
        assert shared.get() == second
    finally:
        shared.close()
