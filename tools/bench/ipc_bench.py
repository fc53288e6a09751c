#!/usr/bin/env python3
"""tipcshm vs AF_UNIX, measured in one run on this machine (a benchmark, not a test).

Definitions as in docs/benchmarks.md:
* RTT: A sends 64 bytes, B receives them as ``bytes`` and sends that object back, A receives;
  2,000 warm-up round trips, then N timed ones, each timed with perf_counter_ns.
  tipcshm: A sends to a *service address* {18888, 1}; B answers to the sender's socket
  address from recvfrom (what a TIPC RPC server does).
* msgs/s: A sends M 64-byte messages back to back (blocking when the receiver is full); B
  receives each as ``bytes`` and counts. rate = M / (B's clock after the last receive - A's
  clock before the first send); perf_counter_ns is CLOCK_MONOTONIC, shared by processes.

Each transport runs in two fresh forked processes. The ratios are tipcshm / AF_UNIX from the
same run: the machine is noisy, so only same-run ratios mean anything.

    python tools/bench/ipc_bench.py [--rtt 20000] [--msgs 200000] [--pin]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable

SERVICE = 18888
PAYLOAD = b"x" * 64
WARMUP = 2000


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# -- AF_UNIX SOCK_SEQPACKET socketpair ------------------------------------------------
def unix_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return a, b


def unix_rtt_a(sock: socket.socket, n: int, out: mp.Queue) -> None:
    samples = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter_ns()
        sock.send(PAYLOAD)
        sock.recv(128)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    out.put(("rtt", samples))


def unix_rtt_b(sock: socket.socket, n: int, out: mp.Queue) -> None:
    for _ in range(WARMUP + n):
        sock.send(sock.recv(128))


def unix_tput_a(sock: socket.socket, m: int, out: mp.Queue) -> None:
    out.put(("start", time.perf_counter_ns()))
    for _ in range(m):
        sock.send(PAYLOAD)


def unix_tput_b(sock: socket.socket, m: int, out: mp.Queue) -> None:
    count = 0
    for _ in range(m):
        sock.recv(128)
        count += 1
    out.put(("end", time.perf_counter_ns(), count))


# -- tipcshm RDM through a service address --------------------------------------------
def tipc_rtt_a(node: str, n: int, ready: mp.Event, out: mp.Queue) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    ready.wait()
    dest = (tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0)
    samples = []
    sendto, recv = s.sendto, s.recv
    for i in range(WARMUP + n):
        t0 = time.perf_counter_ns()
        sendto(PAYLOAD, dest)
        recv(128)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    out.put(("rtt", samples))
    s.close()


def tipc_rtt_b(node: str, n: int, ready: mp.Event, out: mp.Queue) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0))
    ready.set()
    recvfrom, sendto = s.recvfrom, s.sendto
    for _ in range(WARMUP + n):
        data, addr = recvfrom(128)
        sendto(data, addr)
    s.close()


def tipc_tput_a(node: str, m: int, ready: mp.Event, out: mp.Queue) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    ready.wait()
    dest = (tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0)
    sendto = s.sendto
    out.put(("start", time.perf_counter_ns()))
    for _ in range(m):
        sendto(PAYLOAD, dest)
    out.put(("sent", 0))
    s.close()


def tipc_tput_b(node: str, m: int, ready: mp.Event, out: mp.Queue) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    s.bind((tipcshm.TIPC_ADDR_NAME, SERVICE, 1, 0))
    ready.set()
    recv = s.recv
    count = 0
    for _ in range(m):
        recv(128)
        count += 1
    out.put(("end", time.perf_counter_ns(), count))
    s.close()


# -- driver ----------------------------------------------------------------------------
def _run_pair(
    fa: Callable[..., None], fb: Callable[..., None], args_a: tuple, args_b: tuple, pin: bool
) -> list[tuple]:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()

    def wrap(f: Callable[..., None], cpu: int | None, args: tuple) -> None:
        _pin(cpu)
        f(*args, out)

    pa = ctx.Process(target=wrap, args=(fa, 0 if pin else None, args_a))
    pb = ctx.Process(target=wrap, args=(fb, 1 if pin else None, args_b))
    pb.start()
    pa.start()
    results = []
    deadline = time.monotonic() + 300
    while pa.is_alive() or pb.is_alive() or not out.empty():
        try:
            results.append(out.get(timeout=0.5))
        except Exception:  # queue.Empty
            if time.monotonic() > deadline:
                pa.kill()
                pb.kill()
                raise RuntimeError("benchmark pair hung") from None
    pa.join()
    pb.join()
    if pa.exitcode or pb.exitcode:
        raise RuntimeError(f"benchmark child failed: A={pa.exitcode} B={pb.exitcode}")
    return results


def _rtt_stats(results: list[tuple]) -> tuple[float, float, float]:
    samples = next(r[1] for r in results if r[0] == "rtt")
    samples.sort()
    med = statistics.median(samples) / 1000
    p99 = samples[int(len(samples) * 0.99) - 1] / 1000
    mean = statistics.fmean(samples) / 1000
    return med, p99, mean


def _rate(results: list[tuple], m: int) -> float:
    start = next(r[1] for r in results if r[0] == "start")
    end, count = next((r[1], r[2]) for r in results if r[0] == "end")
    if count != m:
        raise RuntimeError(f"received {count} of {m} messages")
    return count / ((end - start) / 1e9)


def measure_unix(n: int, m: int, pin: bool) -> dict[str, float]:
    a, b = unix_pair()
    med, p99, mean = _rtt_stats(_run_pair(unix_rtt_a, unix_rtt_b, (a, n), (b, n), pin))
    a.close()
    b.close()
    a, b = unix_pair()
    rate = _rate(_run_pair(unix_tput_a, unix_tput_b, (a, m), (b, m), pin), m)
    a.close()
    b.close()
    return {"rtt_median": med, "rtt_p99": p99, "rtt_mean": mean, "msgs_per_s": rate}


def measure_tipcshm(node: str, n: int, m: int, pin: bool) -> dict[str, float]:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    rtt = _run_pair(tipc_rtt_a, tipc_rtt_b, (node, n, ready), (node, n, ready), pin)
    med, p99, mean = _rtt_stats(rtt)
    ready = ctx.Event()
    rate = _rate(_run_pair(tipc_tput_a, tipc_tput_b, (node, m, ready), (node, m, ready), pin), m)
    return {"rtt_median": med, "rtt_p99": p99, "rtt_mean": mean, "msgs_per_s": rate}


def report(rows: dict[str, dict[str, float]]) -> str:
    t, u = rows["tipcshm RDM (service address)"], rows["AF_UNIX SOCK_SEQPACKET socketpair"]
    lines = [
        f"{'transport':36} {'RTT median us':>14} {'RTT p99 us':>11} {'msgs/s 64B':>12}",
    ]
    for name, r in rows.items():
        lines.append(
            f"{name:36} {r['rtt_median']:14.2f} {r['rtt_p99']:11.2f} {r['msgs_per_s']:12,.0f}"
        )
    lines.append(
        f"{'ratio tipcshm / AF_UNIX':36} {t['rtt_median'] / u['rtt_median']:13.2f}x "
        f"{t['rtt_p99'] / u['rtt_p99']:10.2f}x {t['msgs_per_s'] / u['msgs_per_s']:11.2f}x"
    )
    lines.append("goals: RTT median <= 0.40x, msgs/s >= 2.00x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=int, default=20000, help="timed round trips")
    parser.add_argument("--msgs", type=int, default=200000, help="one-way messages")
    parser.add_argument("--pin", action="store_true", help="pin A to CPU 0 and B to CPU 1")
    args = parser.parse_args(argv)

    from tipcshm.testing import running_node, unique_node_name

    rows: dict[str, dict[str, float]] = {}
    with running_node(unique_node_name("bench")) as node:
        rows["tipcshm RDM (service address)"] = measure_tipcshm(node, args.rtt, args.msgs, args.pin)
    rows["AF_UNIX SOCK_SEQPACKET socketpair"] = measure_unix(args.rtt, args.msgs, args.pin)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, pinned={args.pin}, "
        f"{args.rtt} round trips, {args.msgs} one-way messages"
    )
    print(report(rows))
    import conn_bench  # connection sockets: SEQPACKET RTT, STREAM bandwidth (1 MiB writes)

    with running_node(unique_node_name("bench")) as node:
        conn_rows = conn_bench.measure(node, args.rtt, conn_bench.MIB, args.pin, rounds=5)
    print(conn_bench.report(conn_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
