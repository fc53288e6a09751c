"""Core benchmark: what the sans-IO link costs per message, with no network in the way.

Two :class:`tipcshm.core.link.Link` endpoints, A and B, run back to back on the
simulator's :class:`~tipcshm.testing.FakeClock` with no faults (the link handshake,
acks and probes are the real ones). The loop plays both owners:

* A's *send path*: ``send(msg)`` for each message while the link accepts it, then
  ``frames_to_send`` and ``receive`` of B's acks. Time spent there, divided into the
  messages, is A's cost per message.
* B's *receive path*: ``receive(frame)`` for each frame of A, draining ``next_event``
  (the Delivered events) and ``frames_to_send`` (acks). Same for B.

Figures, each min / median / max over ``--runs`` runs (msgs/s = messages / seconds of
that side's own calls):

* ``64 B bundled``: A pushes until the link reports congestion, so once the window of
  50 packets is full the rest are bundled in the backlog (tipc_link_xmit).
* ``64 B unbundled``: A sends only while the transmit queue has room (the bench asks
  ``queue_sizes`` once per round, not per message: its own question is not the link's
  cost), so every message is its own packet.
* ``66000 B``: fragmentation on A, reassembly on B (48 fragments per message at
  MTU 1472).
* ``64 B via SimLinkPair``: the same traffic through the public simulator, both ends
  and the simulator's loop together (what a user's simulation costs).

A *weather* figure from the same run says how fast this machine is right now: a bare
Python loop (iterations/s) and a 64 KiB ``bytes`` copy rate (GB/s). Compare figures
between runs only together with their weather. Goal (issue 11): >= 300k 64-byte
msgs/s per direction with bundling.

Usage: ``python tools/bench/core_bench.py [--runs 5] [--msgs 200000] [--big 300]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tipcshm.core.events import Delivered
from tipcshm.testing import FakeClock
from tipcshm.testing.sim import data_message

A_ADDR, B_ADDR = 0x01001001, 0x01001002


@dataclass
class Result:
    msgs: int
    send_s: float
    recv_s: float

    @property
    def send_rate(self) -> float:
        return self.msgs / self.send_s

    @property
    def recv_rate(self) -> float:
        return self.msgs / self.recv_s


def make_pair(clock: FakeClock, mtu: int) -> tuple:
    from tipcshm.core.link import Link

    rng = random.Random(1)
    a = Link(
        own_addr=A_ADDR,
        peer_addr=B_ADDR,
        own_if="a",
        peer_if="b",
        own_id_str="a",
        peer_id_str="b",
        mtu=mtu,
        rng=rng,
        now=clock.now,
    )
    b = Link(
        own_addr=B_ADDR,
        peer_addr=A_ADDR,
        own_if="b",
        peer_if="a",
        own_id_str="b",
        peer_id_str="a",
        mtu=mtu,
        rng=rng,
        now=clock.now,
    )
    return a, b


def settle(a, b, clock: FakeClock, until: Callable[[], bool], limit: float = 30.0) -> None:
    """Untimed: exchange frames and run timers until ``until()`` (the handshake)."""
    end = clock.now + limit
    while not until():
        moved = False
        for x, y in ((a, b), (b, a)):
            for f in x.frames_to_send(clock.now):
                y.receive(f, clock.now)
                moved = True
            while x.next_event() is not None:
                pass
        if not moved:
            nxt = [t for t in (a.next_timer(), b.next_timer()) if t is not None]
            if not nxt or clock.now >= end:
                raise RuntimeError("link did not come up")
            clock.jump(min(nxt))
            for x in (a, b):
                t = x.next_timer()
                if t is not None and t <= clock.now:
                    x.handle_timer(clock.now)


def run_once(n: int, size: int, bundle: bool, mtu: int = 1472) -> Result:
    clock = FakeClock()
    a, b = make_pair(clock, mtu)
    settle(a, b, clock, lambda: a.is_up and b.is_up)
    msg = data_message(A_ADDR, B_ADDR, b"x" * size)
    window = 50
    perf = time.perf_counter
    send_s = recv_s = 0.0
    sent = got = 0
    step = 0.0002  # simulated time per round: timers (acks, probes) run as they would
    while got < n:
        now = clock.advance(step)
        # -- A: send path ----------------------------------------------------------------
        t0 = perf()
        if bundle:
            while sent < n and not a.congested(0):
                a.send(msg, now)
                sent += 1
        else:
            # Room in the window, asked once per round: nothing leaves the transmit
            # queue while A sends, so this is the same test as asking before each send.
            room = window - a.queue_sizes()["transmq"]
            while sent < n and room > 0:
                a.send(msg, now)
                sent += 1
                room -= 1
        t = a.next_timer()
        if t is not None and t <= now:
            a.handle_timer(now)
        frames = a.frames_to_send(now)
        while a.next_event() is not None:
            pass
        t1 = perf()
        send_s += t1 - t0
        # -- B: receive path -----------------------------------------------------------------
        for f in frames:
            b.receive(f, now)
        while (ev := b.next_event()) is not None:
            if isinstance(ev, Delivered):
                got += 1
        t = b.next_timer()
        if t is not None and t <= now:
            b.handle_timer(now)
        acks = b.frames_to_send(now)
        t2 = perf()
        recv_s += t2 - t1
        # acks back into A (A's send path: it frees the window)
        for f in acks:
            a.receive(f, now)
        send_s += perf() - t2
    if got != n:
        raise RuntimeError(f"delivered {got} of {n}")
    return Result(n, send_s, recv_s)


def run_simulated(n: int, size: int) -> float:
    """Whole-simulator rate: :class:`~tipcshm.testing.SimLinkPair` without faults or
    trace, both ends and the network loop together (msgs/s of wall time)."""
    from tipcshm.testing import SimLinkPair

    pair = SimLinkPair(1, trace=False)
    if not pair.run_until_up(10.0):
        raise RuntimeError("link did not come up")
    payload = b"x" * size
    t0 = time.perf_counter()
    for _ in range(n):
        pair.send(0, payload)
    if not pair.network.run_until_true(lambda: pair.delivered_count(1) >= n, 3600.0):
        raise RuntimeError("not everything arrived")
    return n / (time.perf_counter() - t0)


def weather() -> tuple[float, float]:
    perf = time.perf_counter
    n = 2_000_000
    t0 = perf()
    for _ in range(n):
        pass
    loop = n / (perf() - t0)
    blob = b"y" * 65536
    reps = 20_000
    t0 = perf()
    for _ in range(reps):
        bytearray(blob)
    copy = reps * len(blob) / (perf() - t0) / 1e9
    return loop, copy


def fmt(rates: list[float]) -> str:
    return f"{min(rates):>10,.0f} {statistics.median(rates):>10,.0f} {max(rates):>10,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--msgs", type=int, default=200_000, help="64-byte messages per run")
    p.add_argument("--big", type=int, default=300, help="66000-byte messages per run")
    args = p.parse_args(argv)
    cases = [
        ("64 B bundled", args.msgs, 64, True),
        ("64 B unbundled", args.msgs, 64, False),
        ("66000 B", args.big, 66000, True),
    ]
    results: dict[str, list[Result]] = {name: [] for name, *_ in cases}
    weathers = []
    simulated: list[float] = []
    for _ in range(args.runs):
        weathers.append(weather())
        for name, n, size, bundle in cases:
            results[name].append(run_once(n, size, bundle))
        simulated.append(run_simulated(args.msgs // 4, 64))
    print(f"python {sys.version.split()[0]}, {args.runs} runs; msgs/s as min median max")
    print(f"{'case':<16} {'A send path':>32}   {'B receive path':>32}")
    for name, *_ in cases:
        rs = results[name]
        print(f"{name:<16} {fmt([r.send_rate for r in rs])}   {fmt([r.recv_rate for r in rs])}")
    print(f"{'64 B via SimLinkPair (both ends + network loop)':<48} {fmt(simulated)}")
    loops = [w[0] for w in weathers]
    copies = [w[1] for w in weathers]
    print(
        f"weather: bare loop {fmt(loops)} it/s; 64 KiB bytes copy "
        f"{min(copies):.1f} {statistics.median(copies):.1f} {max(copies):.1f} GB/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
