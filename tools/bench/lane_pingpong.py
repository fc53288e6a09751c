"""Raw-lane micro-benchmark: 64-byte ping-pong RTT and one-way msgs/s between two processes.

Measures :mod:`tipcshm.shm.lane` alone, the way the client library will drive it:
sender ``reserve`` -> ``pack_into`` header + payload copy -> ``commit``; receiver ``poll``
-> copy the frame out as ``bytes`` -> ``release``; ``wait`` / ``wait_space`` when
empty / full. Definitions as in docs/benchmarks.md:

* RTT: A sends 64 bytes, B copies them out as ``bytes`` and sends that object back, A
  receives it. ``--warmup`` trips, then ``--trips`` timed ones (perf_counter_ns each,
  the ~0.07 us call included); median / p99 over the samples, mean = loop time / N.
* msgs/s: A sends ``--msgs`` 64-byte frames back to back (blocking when full); B copies
  each out and counts. Rate = count / (B's clock after the last - A's clock before the
  first); CLOCK_MONOTONIC is shared by both processes.

Usage: ``python tools/bench/lane_pingpong.py [--pin] [--runs 3] [--spin 50e-6]``
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable

from tipcshm.shm.lane import Inbox

HDR = struct.Struct("<QQ")  # sequence number, send timestamp: stands in for a TIPC header
FRAME = 64


def _name(tag: str) -> str:
    return f"/tipcshm.bench{os.getpid()}.{tag}.{random.randrange(1 << 32):08x}"


def _fork(fn: Callable[[], object], cpu: int | None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _join(pids: list[int]) -> None:
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"child {pid} failed")


def rtt(args: argparse.Namespace) -> dict[str, float]:
    na, nb = _name("a"), _name("b")
    ia = Inbox.create(na, lanes=4)
    ib = Inbox.create(nb, lanes=4)
    rd, wr = os.pipe()
    total = args.warmup + args.trips
    payload = bytes(FRAME - HDR.size)
    try:

        def side_b() -> None:
            os.close(rd)
            ib.spin = args.spin
            out = Inbox.attach(na).producer()
            poll, release, wait = ib.poll, ib.release, ib.wait
            reserve, commit, obuf = out.reserve, out.commit, out.buf
            for _ in range(total):
                r = poll()
                while r is None:
                    wait(None)
                    r = poll()
                buf, off, n, lane = r
                data = bytes(buf[off : off + n])
                release(lane)
                o = reserve(n)
                while o is None:
                    out.wait_space(n, None)
                    o = reserve(n)
                obuf[o : o + n] = data
                commit(n)
            os.write(wr, repr(ib.stats()).encode())
            os.close(wr)

        pb = _fork(side_b, 1 if args.pin else None)
        os.close(wr)
        if args.pin:
            os.sched_setaffinity(0, {0})
        ia.spin = args.spin
        out = Inbox.attach(nb).producer()
        poll, release, wait = ia.poll, ia.release, ia.wait
        reserve, commit, obuf, pack = out.reserve, out.commit, out.buf, HDR.pack_into
        clock = time.perf_counter_ns
        samples = [0] * args.trips
        h = HDR.size
        t_start = 0
        for i in range(total):
            if i == args.warmup:
                t_start = clock()
            t0 = clock()
            o = reserve(FRAME)
            while o is None:
                out.wait_space(FRAME, None)
                o = reserve(FRAME)
            pack(obuf, o, i, t0)
            obuf[o + h : o + FRAME] = payload
            commit(FRAME)
            r = poll()
            while r is None:
                wait(None)
                r = poll()
            buf, off, n, lane = r
            data = bytes(buf[off : off + n])
            release(lane)
            t1 = clock()
            if i >= args.warmup:
                samples[i - args.warmup] = t1 - t0
            if n != FRAME or HDR.unpack_from(data)[0] != i:
                raise AssertionError(f"trip {i}: bad echo")
        t_end = clock()
        a_stats = ia.stats()
        with os.fdopen(rd, "rb") as f:
            b_stats = f.read().decode()
        _join([pb])
    finally:
        for ibx in (ia, ib):
            ibx.detach()
            ibx.unlink()
    samples.sort()
    res = {
        "median_us": statistics.median(samples) / 1e3,
        "p99_us": samples[int(len(samples) * 0.99)] / 1e3,
        "mean_us": (t_end - t_start) / args.trips / 1e3,
    }
    if args.verbose:
        print(f"    A inbox stats: {a_stats}")
        print(f"    B inbox stats: {b_stats}")
    return res


def throughput(args: argparse.Namespace) -> dict[str, float]:
    nb = _name("t")
    ib = Inbox.create(nb, lanes=4, lane_bytes=args.lane_bytes)
    rd, wr = os.pipe()
    n_msgs = args.msgs
    try:

        def side_a() -> None:
            os.close(rd)
            inbox = Inbox.attach(nb)
            inbox.spin = args.spin
            out = inbox.producer()
            reserve, commit, obuf, pack = out.reserve, out.commit, out.buf, HDR.pack_into
            payload = bytes(FRAME - HDR.size)
            h = HDR.size
            time.sleep(0.05)  # let B reach its loop
            t0 = time.perf_counter_ns()
            for i in range(n_msgs):
                o = reserve(FRAME)
                while o is None:
                    out.wait_space(FRAME, None)
                    o = reserve(FRAME)
                pack(obuf, o, i, 0)
                obuf[o + h : o + FRAME] = payload
                commit(FRAME)
            os.write(wr, str(t0).encode())
            os.close(wr)

        pa = _fork(side_a, 0 if args.pin else None)
        os.close(wr)
        if args.pin:
            os.sched_setaffinity(0, {1})
        ib.spin = args.spin
        poll, release, wait = ib.poll, ib.release, ib.wait
        count = 0
        last = -1
        unpack = HDR.unpack_from
        while count < n_msgs:
            r = poll()
            if r is None:
                wait(None)
                continue
            buf, off, n, lane = r
            data = bytes(buf[off : off + n])
            release(lane)
            count += 1
            if count & 0xFFFF == 0:  # spot-check order without slowing the loop
                seq = unpack(data)[0]
                if seq <= last:
                    raise AssertionError("out of order")
                last = seq
        t_end = time.perf_counter_ns()
        with os.fdopen(rd, "rb") as f:
            t0 = int(f.read())
        _join([pa])
        st = ib.stats()
    finally:
        ib.detach()
        ib.unlink()
    if args.verbose:
        print(f"    inbox stats: {st}")
    return {
        "msgs_per_s": count / ((t_end - t0) / 1e9),
        "full_waits": st["full_waits"],
        "sleeps": st["sleeps"],
    }


class _L1Ring:
    """Baseline: the simplest Python ring (fixed 64-byte slots, memoryview('Q')
    counters, busy-poll, no wake-up), measured in the same run as the lanes."""

    SLOTS = 4096

    def __init__(self, mm: mmap.mmap, base: int) -> None:
        self.idx = memoryview(mm)[base : base + 128].cast("Q")  # [0] tail, [8] head
        self.data = memoryview(mm)[base + 128 : base + 128 + self.SLOTS * FRAME]

    def send(self, payload: bytes, tail: int) -> int:
        idx = self.idx
        while tail - idx[8] >= self.SLOTS:
            pass
        o = (tail % self.SLOTS) * FRAME
        self.data[o : o + FRAME] = payload
        tail += 1
        idx[0] = tail
        return tail

    def recv(self, head: int) -> tuple[bytes, int]:
        idx = self.idx
        while idx[0] == head:
            pass
        o = (head % self.SLOTS) * FRAME
        data = bytes(self.data[o : o + FRAME])
        head += 1
        idx[8] = head
        return data, head


def baseline(args: argparse.Namespace) -> dict[str, float]:
    size = 2 * (128 + _L1Ring.SLOTS * FRAME)
    mm = mmap.mmap(-1, size)
    half = size // 2
    total = args.warmup + args.trips
    payload = bytes(FRAME)

    def side_b() -> None:
        rx, tx = _L1Ring(mm, half), _L1Ring(mm, 0)
        head = tail = 0
        for _ in range(total):
            data, head = rx.recv(head)
            tail = tx.send(data, tail)
        for _ in range(args.msgs):
            data, head = rx.recv(head)
        mm[size - 8 : size] = time.perf_counter_ns().to_bytes(8, "little")

    pb = _fork(side_b, 1 if args.pin else None)
    if args.pin:
        os.sched_setaffinity(0, {0})
    tx, rx = _L1Ring(mm, half), _L1Ring(mm, 0)
    clock = time.perf_counter_ns
    samples = [0] * args.trips
    head = tail = 0
    for i in range(total):
        t0 = clock()
        tail = tx.send(payload, tail)
        _, head = rx.recv(head)
        if i >= args.warmup:
            samples[i - args.warmup] = clock() - t0
    t0 = clock()
    for _ in range(args.msgs):
        tail = tx.send(payload, tail)
    _join([pb])
    t_end = int.from_bytes(mm[size - 8 : size], "little")
    samples.sort()
    return {
        "median_us": statistics.median(samples) / 1e3,
        "p99_us": samples[int(len(samples) * 0.99)] / 1e3,
        "msgs_per_s": args.msgs / ((t_end - t0) / 1e9),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pin", action="store_true", help="A on CPU 0, B on CPU 1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trips", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--msgs", type=int, default=200_000)
    ap.add_argument("--spin", type=float, default=50e-6, help="Inbox.spin in seconds")
    ap.add_argument("--lane-bytes", type=int, default=256 * 1024)
    ap.add_argument("--only", choices=("rtt", "tput"))
    ap.add_argument("--baseline", action="store_true", help="also run the L1 busy-poll ring")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    print(
        f"lane ping-pong, 64 B frames, spin {args.spin * 1e6:.0f} us, "
        f"{'pinned' if args.pin else 'unpinned'}, python {sys.version.split()[0]}"
    )
    rtts, tputs, bases = [], [], []
    for run in range(args.runs):
        if args.baseline:
            b = baseline(args)
            bases.append(b)
            print(
                f"  run {run}: L1 baseline RTT median {b['median_us']:.2f} us  "
                f"p99 {b['p99_us']:.2f} us  one-way {b['msgs_per_s'] / 1e6:.2f} M msgs/s"
            )
        if args.only != "tput":
            r = rtt(args)
            rtts.append(r)
            print(
                f"  run {run}: RTT median {r['median_us']:.2f} us  p99 {r['p99_us']:.2f} us  "
                f"mean {r['mean_us']:.2f} us"
            )
        if args.only != "rtt":
            t = throughput(args)
            tputs.append(t)
            print(
                f"  run {run}: one-way {t['msgs_per_s'] / 1e6:.2f} M msgs/s "
                f"(full-waits {t['full_waits']}, consumer sleeps {t['sleeps']})"
            )
    if bases:
        print(
            "L1 baseline median of runs: RTT {:.2f} us, p99 {:.2f} us, {:.2f} M msgs/s".format(
                statistics.median(b["median_us"] for b in bases),
                statistics.median(b["p99_us"] for b in bases),
                statistics.median(b["msgs_per_s"] for b in bases) / 1e6,
            )
        )
    if rtts:
        print(
            "RTT median of runs: median {:.2f} us, p99 {:.2f} us, mean {:.2f} us".format(
                statistics.median(r["median_us"] for r in rtts),
                statistics.median(r["p99_us"] for r in rtts),
                statistics.median(r["mean_us"] for r in rtts),
            )
        )
    if tputs:
        print(
            "one-way median of runs: {:.2f} M msgs/s".format(
                statistics.median(t["msgs_per_s"] for t in tputs) / 1e6
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
