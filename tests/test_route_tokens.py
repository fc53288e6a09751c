"""A socket's cached route to a service address is kept while other service types churn
(on this node or another), and rebuilt when a binding of its own type changes."""

from __future__ import annotations

import tipcshm
from tipcshm import AF_TIPC, SOCK_RDM, TIPC_ADDR_NAME, TIPC_ADDR_NAMESEQ, TIPC_NODE_SCOPE


def test_routes_survive_churn_of_other_types(node: str) -> None:
    dest = (TIPC_ADDR_NAME, 4100, 1, 0)
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as rx,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as tx,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as other,
    ):
        rx.bind((TIPC_ADDR_NAMESEQ, 4100, 1, 1, TIPC_NODE_SCOPE))
        tx.sendto(b"a", dest)
        route = tx._routes[dest]
        client = tx._client
        # another type whose change token differs from ours (types may share one)
        other_type = next(
            t for t in range(5000, 6000) if client.token_index(t) != client.token_index(4100)
        )
        for i in range(5):
            other.bind((TIPC_ADDR_NAMESEQ, other_type, i, i, TIPC_NODE_SCOPE))
            tx.sendto(b"b", dest)
            assert tx._routes[dest] is route  # not re-resolved
        rx.bind((TIPC_ADDR_NAMESEQ, 4100, 2, 2, TIPC_NODE_SCOPE))  # our type changed
        tx.sendto(b"c", dest)
        assert tx._routes[dest] is not route
        rx.settimeout(5)
        assert [rx.recv(10) for _ in range(7)] == [b"a"] + [b"b"] * 5 + [b"c"]
