"""Name-table benchmark: lookups in the shared replica at scale, and what churn costs a client.

Two parts, each figure min / median / max over ``--runs`` runs:

* ``lookup``: ``NodeClient.table().lookup_anycast`` on a replica holding 1k, 10k and 100k
  bindings (other nodes' bindings, spread over 7 service types; a standalone node
  segment, no node running), per lookup. The goal (issue 12): flat, i.e. logarithmic, as
  the lookup is two bisects in shared memory and decodes nothing.
* ``churn``: on a running node with ``--churn-base`` bindings (fed as another node's, as
  a bearer worker does), one client sends to a local socket; before each send a binding
  of another service changes: ``remote`` = a bearer feeds a binding of another node (and
  withdraws it the next round), ``local`` = a socket of this node binds (and unbinds).
  The figure is the time of the ``sendto`` right after the change became visible (the
  replica's sequence moved; then 2 ms for the worker to finish its turn), i.e. what a
  change elsewhere costs the sender. Goal: remote
  no dearer than local (both re-resolve; neither decodes the table).

A *weather* figure says how fast this machine is right now: a bare Python loop
(iterations per second). Compare figures between runs only together with their weather.

Usage: ``python tools/bench/nametable_bench.py [--runs 5] [--lookups 20000] [--rounds 300]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from tipcshm import proc
from tipcshm.core.nametable import Binding, NameTable
from tipcshm.shm import names_feed
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    TYPE_TOKENS,
    NodeSegment,
    WorkerKind,
    bearer_inbox_name,
    nametable_inbox_name,
)
from tipcshm.shm.replica import Mirror, ReplicaView
from tipcshm.testing import running_node, unique_node_name

OWN = 0x1001001
PEER = 0x2002002
TYPES = 7


def weather(n: int = 2_000_000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    return n / (time.perf_counter() - t0)


def fmt(values: list[float], unit: float = 1e6, suffix: str = "us") -> str:
    v = [x * unit for x in values]
    return f"{min(v):8.2f} / {statistics.median(v):8.2f} / {max(v):8.2f} {suffix}"


def lookup_bench(sizes: list[int], runs: int, lookups: int) -> dict[int, list[float]]:
    name = unique_node_name("ntbench")
    seg = NodeSegment.create(name)
    seg.set_identity(b"\x01" * 16, OWN)
    out: dict[int, list[float]] = {}
    try:
        for n in sizes:
            table = NameTable(OWN)
            events = [
                table.insert(Binding(1000 + i % TYPES, i, i, 2, PEER, i + 1, i)) for i in range(n)
            ]
            mirror = Mirror(OWN)
            mirror.apply(events, {})
            mirror.publish(seg, table.generation, range(TYPE_TOKENS), slots=True)
            view = ReplicaView(seg)
            rng = random.Random(n)
            queries = [(1000 + (i := rng.randrange(n)) % TYPES, i) for _ in range(lookups)]
            look = view.lookup_anycast
            per: list[float] = []
            try:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    for t, inst in queries:
                        look(t, inst)
                    per.append((time.perf_counter() - t0) / lookups)
            finally:
                view.close()
            out[n] = per
    finally:
        seg.close()
        NodeSegment.unlink(name)
    return out


class Feeder:
    """This process as bearer 0's worker: a lane into the name-table worker's inbox."""

    def __init__(self, node: str) -> None:
        self.seg = NodeSegment.attach(node)
        self.seg.set_worker(1, WorkerKind.BEARER, "udp:bench", bearer_inbox_name(node, 0))
        self.seg.set_worker_spawned(1, *proc.self_token())
        self.inbox = Inbox.attach(
            nametable_inbox_name(node), trust=self.seg.trust, tag=self.seg.tag
        )
        self.producer = self.inbox.producer(overflow=False)

    def send(self, op: int, type: int, instance: int, key: int) -> None:
        rec = names_feed.encode(
            names_feed.NameUpdate(op, 0, type, instance, instance, 2, PEER, key, key)
        )
        while not self.producer.write(rec):
            self.producer.wait_space(len(rec) + 8, 1.0)

    def close(self) -> None:
        self.inbox.detach()
        self.seg.close()


def churn_bench(base: int, rounds: int, runs: int) -> dict[str, list[float]]:
    import tipcshm
    from tipcshm.client import get_client

    out: dict[str, list[float]] = {"remote": [], "local": []}
    with running_node() as node:
        feeder = Feeder(node)
        client = get_client(node)
        for i in range(base):
            feeder.send(names_feed.PUBLISH, 3000 + i % TYPES, i, i + 1)
        deadline = time.monotonic() + 120
        while len(client.table()) < base and time.monotonic() < deadline:
            time.sleep(0.01)
        rx = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        rx.bind((tipcshm.TIPC_ADDR_NAME, 2000, 1, 0))
        tx = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        other = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
        dest = (tipcshm.TIPC_ADDR_NAME, 2000, 1, 0)
        try:

            def settle(before: int) -> None:
                while client.table_seq == before:
                    pass

            def remote(k: int) -> None:
                before = client.table_seq
                op = names_feed.PUBLISH if k % 2 == 0 else names_feed.WITHDRAW
                feeder.send(op, 2500, 1, 7)
                feeder.inbox.ring()
                settle(before)

            def local(k: int) -> None:
                addr = (tipcshm.TIPC_ADDR_NAME, 2501, 1, 0)
                if k % 2 == 0:
                    other.bind(addr)
                else:
                    other.unbind(addr)

            changes: dict[str, Callable[[int], None]] = {"remote": remote, "local": local}
            for _ in range(runs):
                for kind, change in changes.items():
                    spent = 0.0
                    for k in range(rounds):
                        change(k)
                        # Let the worker finish its turn (tokens, topology) so that the
                        # figure is the sender's own cost, not CPU contention with it.
                        time.sleep(0.002)
                        t0 = time.perf_counter()
                        tx.sendto(b"x", dest)
                        spent += time.perf_counter() - t0
                        rx.recv(16)
                    out[kind].append(spent / rounds)
        finally:
            for s in (rx, tx, other):
                s.close()
            feeder.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lookups", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--churn-base", type=int, default=10000)
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    print(f"weather: bare loop {weather() / 1e6:.1f} M iterations/s")
    sizes = [int(x) for x in args.sizes.split(",")]
    print("lookup_anycast per call (min / median / max):")
    for n, per in lookup_bench(sizes, args.runs, args.lookups).items():
        print(f"  {n:>7} bindings: {fmt(per)}")
    print(f"sendto right after a change, {args.churn_base} other bindings (min / median / max):")
    for kind, per in churn_bench(args.churn_base, args.rounds, args.runs).items():
        print(f"  {kind:>6} bind: {fmt(per)}")
    print(f"weather: bare loop {weather() / 1e6:.1f} M iterations/s")


if __name__ == "__main__":
    main()
