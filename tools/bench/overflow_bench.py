"""Private lane vs the shared overflow lane: one-way 64-byte frames/s and ping-pong RTT.

Both send the way the client library does (``with p.lock: p.put_locked(...)`` then
``p.notify()``) and receive with ``Inbox.get()`` / ``wait()``. The only difference is the
lane: with ``overflow`` every private slot of the receiving inbox is held by a live
process first, so the sender's :meth:`Inbox.producer` returns the overflow producer, whose
lock adds an OFD lock and unlock (two ``fcntl`` calls) and a re-read of the counters.

Usage: ``python tools/bench/overflow_bench.py [--runs 5] [--msgs 200000] [--trips 20000]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from tipcshm.shm.lane import Inbox, Producer

FRAME = 64
HEAD = bytes(16)  # stands in for a TIPC header; put_locked stores word 0 over it
PAYLOAD = bytes(FRAME - len(HEAD))


def _name(tag: str) -> str:
    return f"/tipcshm.obench{os.getpid()}.{tag}.{random.randrange(1 << 32):08x}"


def _fork(fn: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _join(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {pid} failed")


def _producer(name: str, overflow: bool) -> Producer:
    p = Inbox.attach(name).producer()
    if p.overflow != overflow:
        raise AssertionError(f"wanted overflow={overflow}, got {p!r}")
    return p


def _send(p: Producer, w0: int) -> None:
    while True:
        with p.lock:
            ok = p.put_locked(HEAD, w0, PAYLOAD)
        if ok:
            p.notify()
            return
        p.wait_space(FRAME, None)


def _recv(ib: Inbox) -> bytes:
    while True:
        f = ib.get()
        if f is not None:
            return f
        ib.wait(None)


def _inbox(overflow: bool) -> tuple[Inbox, Inbox | None]:
    """An inbox with one private lane, held by a blocker when the overflow is wanted."""
    ib = Inbox.create(_name("in"), lanes=1)
    blocker = None
    if overflow:
        blocker = Inbox.attach(ib.name)
        blocker.producer()  # this live process holds the only private lane
    return ib, blocker


def _close(*ibs: Inbox | None) -> None:
    for ib in ibs:
        if ib is not None:
            ib.detach()
            Inbox.unlink_name(ib.name)


def one_way(overflow: bool, msgs: int) -> float:
    ib, blocker = _inbox(overflow)
    rd, wr = os.pipe()
    try:

        def sender() -> None:
            os.close(rd)
            p = _producer(ib.name, overflow)
            t0 = time.perf_counter_ns()
            for i in range(msgs):
                _send(p, i)
            os.write(wr, str(t0).encode())

        pid = _fork(sender)
        os.close(wr)
        for i in range(msgs):
            f = _recv(ib)
            if f[:4] != i.to_bytes(4, "big"):
                raise AssertionError(f"frame {i}: out of order")
        t_end = time.perf_counter_ns()
        with os.fdopen(rd, "rb") as f_:
            t0 = int(f_.read())
        _join(pid)
    finally:
        _close(ib, blocker)
    return msgs / ((t_end - t0) / 1e9)


def rtt(overflow: bool, trips: int, warmup: int) -> float:
    """Median round trip (us); both directions through the kind of lane measured."""
    ia, ba = _inbox(overflow)
    ib, bb = _inbox(overflow)
    try:

        def echo() -> None:
            out = _producer(ia.name, overflow)
            for _ in range(trips + warmup):
                f = _recv(ib)
                _send(out, int.from_bytes(f[:4], "big"))

        pid = _fork(echo)
        out = _producer(ib.name, overflow)
        clock = time.perf_counter_ns
        samples = []
        for i in range(trips + warmup):
            t0 = clock()
            _send(out, i)
            f = _recv(ia)
            t1 = clock()
            if f[:4] != i.to_bytes(4, "big"):
                raise AssertionError(f"trip {i}: bad echo")
            if i >= warmup:
                samples.append(t1 - t0)
        _join(pid)
    finally:
        _close(ia, ib, ba, bb)
    return statistics.median(samples) / 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--msgs", type=int, default=200_000)
    ap.add_argument("--trips", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    args = ap.parse_args(argv)
    print(
        f"private vs overflow lane, 64 B frames, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {args.runs} runs (min / median / max)"
    )
    res: dict[str, list[float]] = {}
    for run in range(args.runs):
        for kind in ("private", "overflow"):
            ov = kind == "overflow"
            res.setdefault(f"{kind} one-way k frames/s", []).append(one_way(ov, args.msgs) / 1e3)
            res.setdefault(f"{kind} RTT us", []).append(rtt(ov, args.trips, args.warmup))
        print(f"  run {run} done", flush=True)
    for key, v in res.items():
        print(f"  {key:30s} {min(v):9.2f} {statistics.median(v):9.2f} {max(v):9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
