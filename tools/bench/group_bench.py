#!/usr/bin/env python3
"""Group broadcast on one node: tipcshm communication groups vs AF_UNIX fan-out, one run.

One sender broadcasts M messages (``--msgs``) of each size (``--sizes``, 64 bytes and one
larger size) to N members (``--members``, 8), each member in its own process. Every
transport runs in every one of R runs (``--runs``, at least 5 for a report); the table gives
min/median/max over the runs, and each ratio is the median of the per-run ratios (only
same-run ratios mean anything on these machines). Definitions:

* tipcshm: every process opens an RDM socket on one node and joins group {GROUP, i} with
  ``setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, ...)`` (node scope, member events on; the sender is
  instance 0, member k instance k). Each member waits until it has seen the sender's join
  event and the sender until it has seen N join events; then the sender's clock starts and
  it calls ``send(payload)`` M times (a group broadcast; it blocks while the group's flow
  control says a member is congested). A member ``recv()``s until it has M data messages.
* AF_UNIX: N SOCK_SEQPACKET socketpairs (4 MiB buffers, as ipc_bench.py); one sender
  process writes each message to each of the N sockets in turn, N reader processes each
  ``recv()`` from theirs and count.
* total msgs/s = N * M / (the last member's clock after its last message - the sender's
  clock before its first send); per member msgs/s = M / (that member's end - the sender's
  start), the median member of the run. perf_counter_ns is CLOCK_MONOTONIC, one clock for
  every process.
* tipcshm RDM xN: the same fan-out without a group, N ``sendto`` per message to N RDM
  sockets (cached routes): the floor the group broadcast path builds on.
* CPU us/msg: the sender's and the median member's ``time.process_time()`` over the timed
  loop, per message. With N + 1 processes on few CPUs, the rate follows sender + N * member.
* the weather: an AF_UNIX SOCK_SEQPACKET socketpair's 64-byte round trip (median of 5,000,
  two forked processes), measured at the start of every run: how busy the machine was.

``--profile DIR``: after the timed runs, one more run per transport and size with cProfile
in the sender and in member 1 (their main threads: a member's readiness thread is not in
it); the stats go to DIR/<transport>-<size>-<role>.prof and the top functions are printed
(profiled runs are not in the table: cProfile slows Python 2-3x).

    python tools/bench/group_bench.py [--runs 5] [--msgs 20000] [--members 8]
        [--sizes 64,4096] [--only unix,tipcshm,rdm] [--profile DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GROUP = 18890  # the group's service type
SENDER_INSTANCE = 0
RTT_WARMUP, RTT_N = 500, 5000
DEADLINE_S = 300.0  # one transport at one size; a hung run is reported, not waited for
TOP = 25  # functions printed per profile


class Unavailable(Exception):
    """A figure that cannot be measured here (and why)."""


# -- profiling -----------------------------------------------------------------------------
def _profiled(path: str | None, fn: Callable[[], int]) -> int:
    """``fn()``; with a path, under cProfile, the stats dumped to ``path``."""
    if path is None:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return int(prof.runcall(fn))
    finally:
        prof.dump_stats(path)


# -- the weather ---------------------------------------------------------------------------
def weather_rtt_us(n: int = RTT_N) -> float:
    """Median 64-byte round trip over an AF_UNIX SOCK_SEQPACKET socketpair, in us."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            a.close()
            for _ in range(RTT_WARMUP + n):
                b.send(b.recv(2048))
            code = 0
        finally:
            os._exit(code)
    b.close()
    payload, samples = bytes(64), []
    try:
        for i in range(RTT_WARMUP + n):
            t0 = time.perf_counter_ns()
            a.send(payload)
            a.recv(2048)
            if i >= RTT_WARMUP:
                samples.append(time.perf_counter_ns() - t0)
    finally:
        a.close()
        os.waitpid(pid, 0)
    return statistics.median(samples) / 1000


# -- AF_UNIX fan-out -----------------------------------------------------------------------
def unix_pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    pairs = []
    for _ in range(n):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        pairs.append((a, b))
    return pairs


def unix_sender(
    socks: list[socket.socket], m: int, size: int, go: Any, out: Any, prof: str | None
) -> None:
    payload = b"x" * size
    sends = [s.send for s in socks]

    def run() -> int:
        for _ in range(m):
            for send in sends:
                send(payload)
        return m

    go.wait()
    start, cpu = time.perf_counter_ns(), time.process_time()
    out.put(("sent", _profiled(prof, run), time.process_time() - cpu))
    out.put(("start", start))


def unix_reader(
    k: int, sock: socket.socket, m: int, size: int, ready: Any, out: Any, prof: str | None
) -> None:
    recv, bufsize = sock.recv, size + 64

    def run() -> int:
        count = 0
        while count < m:
            if recv(bufsize):
                count += 1
        return count

    ready.put(k)
    cpu = time.process_time()
    count = _profiled(prof, run)
    out.put(("end", k, time.perf_counter_ns(), count, time.process_time() - cpu))


# -- tipcshm group -------------------------------------------------------------------------
def _join(node: str, instance: int) -> Any:
    import struct

    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    req = struct.pack(
        "4I", GROUP, instance, tipcshm.TIPC_NODE_SCOPE, tipcshm.TIPC_GROUP_MEMBER_EVTS
    )
    s.setsockopt(tipcshm.SOL_TIPC, tipcshm.TIPC_GROUP_JOIN, req)
    return s


def _is_join_event(flags: int, data: bytes) -> bool:
    import tipcshm

    return bool(flags & tipcshm.MSG_OOB) and not data and not flags & tipcshm.MSG_EOR


def tipc_sender(
    node: str, n: int, m: int, size: int, go: Any, done: Any, out: Any, prof: str | None
) -> None:
    s = _join(node, SENDER_INSTANCE)
    out.put(("port", s.getsockname()[1:3]))
    joined = set()
    while len(joined) < n:  # every member's join event: all N will get each broadcast
        data, _anc, flags, addr = s.recvmsg(64)
        if _is_join_event(flags, data):
            joined.add(addr[1:3])
    payload = b"x" * size
    send = s.send

    def run() -> int:
        for _ in range(m):
            send(payload)
        return m

    go.wait()
    start, cpu = time.perf_counter_ns(), time.process_time()
    out.put(("sent", _profiled(prof, run), time.process_time() - cpu))
    out.put(("start", start))
    done.wait()  # leave only once every member has everything: closing is not measured
    s.close()


def tipc_member(
    k: int,
    node: str,
    sender: tuple[int, int],
    m: int,
    size: int,
    ready: Any,
    done: Any,
    out: Any,
    prof: str | None,
) -> None:
    s = _join(node, k)
    while True:  # until the sender's join: from then on its broadcasts reach us
        data, _anc, flags, addr = s.recvmsg(64)
        if _is_join_event(flags, data) and tuple(addr[1:3]) == tuple(sender):
            break
    ready.put(k)
    recv, bufsize = s.recv, size + 64

    def run() -> int:
        count = 0
        while count < m:
            if recv(bufsize):  # b'' is a member event (another member joining late)
                count += 1
        return count

    cpu = time.process_time()
    count = _profiled(prof, run)
    out.put(("end", k, time.perf_counter_ns(), count, time.process_time() - cpu))
    done.wait()
    s.close()


# -- tipcshm RDM replicast: the same fan-out without groups (a floor for the group path) --
def rdm_member(
    k: int, node: str, m: int, size: int, ready: Any, done: Any, out: Any, prof: str | None
) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    recv, bufsize = s.recv, size + 64

    def run() -> int:
        count = 0
        while count < m:
            if recv(bufsize):
                count += 1
        return count

    ready.put(s.getsockname()[:4])
    cpu = time.process_time()
    count = _profiled(prof, run)
    out.put(("end", k, time.perf_counter_ns(), count, time.process_time() - cpu))
    done.wait()
    s.close()


def rdm_sender(
    node: str, dests: list[tuple[int, ...]], m: int, size: int, go: Any, out: Any, prof: str | None
) -> None:
    import tipcshm

    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    payload = b"x" * size
    sendto = s.sendto

    def run() -> int:
        for _ in range(m):
            for dest in dests:
                sendto(payload, dest)
        return m

    go.wait()
    start, cpu = time.perf_counter_ns(), time.process_time()
    out.put(("sent", _profiled(prof, run), time.process_time() - cpu))
    out.put(("start", start))
    s.close()


# -- driver --------------------------------------------------------------------------------
class Children:
    """Forked benchmark processes: started, watched against a deadline, killed on failure."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("fork")
        self.procs: list[Any] = []
        self.errors = self.ctx.Queue()

    def start(self, target: Callable[..., None], *args: Any) -> None:
        p = self.ctx.Process(target=self._run, args=(target, args), daemon=True)
        p.start()
        self.procs.append(p)

    def _run(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            target(*args)
        except BaseException as exc:
            self.errors.put(f"{target.__name__}: {type(exc).__name__}: {exc}")
            raise

    def failed(self) -> list[str]:
        """Why children failed: their exceptions, else their exit codes (empty: none did)."""
        codes = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
        if not codes:
            return []
        why = []
        with contextlib.suppress(queue.Empty):
            while True:
                why.append(self.errors.get(timeout=0.5 if not why else 0.05))
        return why or [f"exit code {c}" for c in codes]

    def join(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
        self.kill()
        if bad := self.failed():
            raise Unavailable(f"a benchmark process failed: {'; '.join(bad)}")

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join()


def _collect(out: Any, kids: Children, want: Callable[[list[tuple]], bool], what: str) -> list:
    """Results from ``out`` until ``want(results)``; a dead child or the deadline: Unavailable."""
    results: list[tuple] = []
    deadline = time.monotonic() + DEADLINE_S
    while not want(results):
        try:
            results.append(out.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        if bad := kids.failed():
            raise Unavailable(f"{what}: {'; '.join(bad)}")
        if time.monotonic() > deadline:
            raise Unavailable(f"{what}: no progress after {DEADLINE_S:.0f} s")
    return results


def _wait_ready(ready: Any, n: int, kids: Children, what: str, timeout: float = 60.0) -> list[Any]:
    """What ``n`` processes said when ready; a dead child or the timeout: Unavailable."""
    deadline = time.monotonic() + timeout
    said = []
    for _ in range(n):
        while True:
            try:
                said.append(ready.get(timeout=0.2))
                break
            except queue.Empty:
                if bad := kids.failed():
                    raise Unavailable(f"{what}: {'; '.join(bad)}") from None
                if time.monotonic() > deadline:
                    raise Unavailable(f"{what}: not all ready after {timeout:.0f} s") from None
    return said


def _rates(results: list[tuple], n: int, m: int) -> dict[str, float]:
    start = next(r[1] for r in results if r[0] == "start")
    ends = [r for r in results if r[0] == "end"]
    short = [(r[1], r[3]) for r in ends if r[3] != m]
    if short:
        raise Unavailable(f"members got fewer than {m} messages: {short}")
    last = max(r[2] for r in ends)
    per_member = [m / ((r[2] - start) / 1e9) for r in ends]
    sender_cpu = next(r[2] for r in results if r[0] == "sent")
    return {
        "total": n * m / ((last - start) / 1e9),
        "member": statistics.median(per_member),
        "sender_cpu": sender_cpu / m * 1e6,
        "member_cpu": statistics.median(r[4] for r in ends) / m * 1e6,
    }


def _ends(n: int) -> Callable[[list[tuple]], bool]:
    return lambda rs: sum(r[0] == "end" for r in rs) == n and any(r[0] == "start" for r in rs)


def _prof_path(profile: str | None, transport: str, size: int, role: str) -> str | None:
    if profile is None:
        return None
    return os.path.join(profile, f"{transport}-{size}-{role}.prof")


def measure_unix(n: int, m: int, size: int, profile: str | None = None) -> dict[str, float]:
    kids = Children()
    out, ready, go = kids.ctx.Queue(), kids.ctx.Queue(), kids.ctx.Event()
    pairs = unix_pairs(n)
    try:
        for k, (_, b) in enumerate(pairs, 1):
            prof = _prof_path(profile, "unix", size, "member") if k == 1 else None
            kids.start(unix_reader, k, b, m, size, ready, out, prof)
        kids.start(
            unix_sender, [a for a, _ in pairs], m, size, go, out,
            _prof_path(profile, "unix", size, "sender"),
        )  # fmt: skip
        for s in (s for pair in pairs for s in pair):
            s.close()  # the children have their own copies
        _wait_ready(ready, n, kids, "AF_UNIX readers")
        go.set()
        results = _collect(out, kids, _ends(n), "AF_UNIX fan-out")
        kids.join()
    finally:
        kids.kill()
        for s in (s for pair in pairs for s in pair):
            s.close()
    return _rates(results, n, m)


def measure_tipcshm(
    node: str, n: int, m: int, size: int, profile: str | None = None
) -> dict[str, float]:
    kids = Children()
    out, ready = kids.ctx.Queue(), kids.ctx.Queue()
    go, done = kids.ctx.Event(), kids.ctx.Event()
    try:
        kids.start(
            tipc_sender, node, n, m, size, go, done, out,
            _prof_path(profile, "tipcshm", size, "sender"),
        )  # fmt: skip
        first = _collect(out, kids, lambda rs: bool(rs), "tipcshm sender joining")
        if first[0][0] != "port":
            raise Unavailable(f"tipcshm sender said {first[0]!r} before its port")
        sender = first[0][1]
        for k in range(1, n + 1):
            prof = _prof_path(profile, "tipcshm", size, "member") if k == 1 else None
            kids.start(tipc_member, k, node, sender, m, size, ready, done, out, prof)
        _wait_ready(ready, n, kids, "tipcshm group members joining")
        go.set()
        results = _collect(out, kids, _ends(n), "tipcshm group broadcast")
        done.set()
        kids.join()
    finally:
        done.set()
        kids.kill()
    return _rates(results, n, m)


def measure_rdm(
    node: str, n: int, m: int, size: int, profile: str | None = None
) -> dict[str, float]:
    kids = Children()
    out, ready = kids.ctx.Queue(), kids.ctx.Queue()
    go, done = kids.ctx.Event(), kids.ctx.Event()
    try:
        for k in range(1, n + 1):
            prof = _prof_path(profile, "rdm", size, "member") if k == 1 else None
            kids.start(rdm_member, k, node, m, size, ready, done, out, prof)
        dests = _wait_ready(ready, n, kids, "tipcshm RDM readers")
        prof = _prof_path(profile, "rdm", size, "sender")
        kids.start(rdm_sender, node, dests, m, size, go, out, prof)
        go.set()
        results = _collect(out, kids, _ends(n), "tipcshm RDM replicast")
        done.set()
        kids.join()
    finally:
        done.set()
        kids.kill()
    return _rates(results, n, m)


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from tipcshm.testing import running_node, unique_node_name

    sizes = [int(x) for x in args.sizes.split(",")]
    only = set(args.only.split(","))
    raw: dict[str, list[float]] = {}
    unavailable: dict[str, str] = {}
    runs: list[dict[str, float]] = []

    def record(this_run: dict[str, float], key: str, fn: Callable[[], dict[str, float]]) -> None:
        """One measurement: its figures under ``key + " " + figure``; a failure, its reason."""
        if key in unavailable:
            return
        try:
            got = fn()
        except (Unavailable, OSError) as why:
            unavailable[key] = f"{type(why).__name__}: {why}"
            return
        for figure, value in got.items():
            this_run[f"{key} {figure}"] = value
            raw.setdefault(f"{key} {figure}", []).append(value)

    need_node = bool(only & {"tipcshm", "rdm"})
    ctx = running_node(unique_node_name("gbench")) if need_node else contextlib.nullcontext("")
    with ctx as node:

        def one(transport: str, size: int, profile: str | None = None) -> dict[str, float]:
            if transport == "unix":
                return measure_unix(args.members, args.msgs, size, profile)
            if transport == "rdm":
                return measure_rdm(node, args.members, args.msgs, size, profile)
            return measure_tipcshm(node, args.members, args.msgs, size, profile)

        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", file=sys.stderr)
            this: dict[str, float] = {}
            record(this, "weather", lambda: {"rtt": weather_rtt_us()})
            for size in sizes:
                for transport in TRANSPORTS:
                    if transport in only:
                        record(this, f"{transport} {size}B", lambda t=transport, s=size: one(t, s))
            runs.append(this)
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            for size in sizes:
                for transport in TRANSPORTS:
                    if transport not in only:
                        continue
                    try:
                        one(transport, size, args.profile)
                    except (Unavailable, OSError) as why:
                        unavailable[f"{transport} {size}B profile"] = str(why)
    ratios: dict[str, list[float]] = {}
    for this in runs:
        for size in sizes:
            for figure, _label in FIGURES:
                u = this.get(f"unix {size}B {figure}")
                for transport in TRANSPORTS[1:]:
                    t = this.get(f"{transport} {size}B {figure}")
                    if t and u:
                        ratios.setdefault(f"{transport} {size}B {figure}", []).append(t / u)
    return {
        "config": {"runs": args.runs, "msgs": args.msgs, "members": args.members, "sizes": sizes},
        "results": {k: summary(v) for k, v in raw.items()},
        "ratios": {k: summary(v) for k, v in ratios.items()},
        "raw": raw,
        "unavailable": unavailable,
    }


TRANSPORTS = ("unix", "tipcshm", "rdm")
FIGURES = (
    ("total", "total msgs/s"),
    ("member", "per member msgs/s"),
    ("sender_cpu", "sender CPU us/msg"),
    ("member_cpu", "member CPU us/msg"),
)


def _fmt(v: float) -> str:
    if v < 1000:
        return f"{v:.1f}"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k"


def report(out: dict[str, Any]) -> str:
    cfg, res, rat = out["config"], out["results"], out["ratios"]
    n = cfg["members"]
    lines = [
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; one sender -> {n} members, "
        f"{cfg['msgs']} messages per size; cells: min / median / max of {cfg['runs']} runs; "
        "ratios: X / AF_UNIX, median (min-max) of the per-run ratios",
        f"{'figure':26} {'AF_UNIX fan-out':>24} {'tipcshm group':>24} {'ratio':>17}"
        f" {f'tipcshm RDM x{n}':>24} {'ratio':>17}",
    ]
    for size in cfg["sizes"]:
        for figure, label in FIGURES:
            cells = []
            for transport in TRANSPORTS:
                s = res.get(f"{transport} {size}B {figure}")
                cells.append(" / ".join(_fmt(s[k]) for k in ("min", "median", "max")) if s else "-")
                if transport != "unix":
                    r = rat.get(f"{transport} {size}B {figure}")
                    cells.append(
                        f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})" if r else "-"
                    )
            lines.append(
                f"{f'{size} B ' + label:26} {cells[0]:>24} {cells[1]:>24} {cells[2]:>17}"
                f" {cells[3]:>24} {cells[4]:>17}"
            )
    w = res.get("weather rtt")
    if w:
        cell = " / ".join(f"{w[k]:.1f}" for k in ("min", "median", "max"))
        lines.append(f"{'weather: AF_UNIX RTT us':26} {cell:>24}")
    lines.append(
        "goal: tipcshm group total msgs/s >= 2.00x AF_UNIX (CPU rows: lower is better; "
        f"RDM x{n} = {n} sendto per message, no group: what the group path builds on)"
    )
    for key, why in out["unavailable"].items():
        lines.append(f"{key}: not measured: {why}")
    return "\n".join(lines)


def print_profiles(directory: str, msgs: int) -> None:
    """Each profile's total per message, then its top functions by own time."""
    import pstats

    for path in sorted(Path(directory).glob("*.prof")):
        st = pstats.Stats(str(path), stream=sys.stdout)
        total = st.total_tt  # type: ignore[attr-defined]
        print(f"\n== {path.name}: {total:.3f} s profiled, {total / msgs * 1e6:.2f} us per message")
        st.sort_stats("tottime").print_stats(TOP)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs (>= 5 for a report)")
    ap.add_argument("--msgs", type=int, default=20000, help="messages broadcast per size per run")
    ap.add_argument("--members", type=int, default=8, help="receiving members")
    ap.add_argument("--sizes", default="64,4096", help="payload sizes, comma-separated")
    ap.add_argument("--only", default="unix,tipcshm,rdm", help="subset of unix,tipcshm,rdm")
    ap.add_argument("--profile", metavar="DIR", help="one extra cProfiled run per size into DIR")
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.msgs < 1 or args.members < 1:
        ap.error("--runs, --msgs and --members must be positive")
    out = measure(args)
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.profile:
        print_profiles(args.profile, args.msgs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
