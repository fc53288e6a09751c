#!/usr/bin/env python3
"""tipcshm between two nodes over a real network, next to raw UDP/TCP, in one run.

Two network namespaces joined by a veth pair (tests/netns.py: 192.0.2.1 and 192.0.2.2,
deleted afterwards; needs root). Every figure below is measured between the same two
namespaces in the same run, R times (``--runs``); the report gives min/median/max over
the runs and the ratios of the medians. Definitions:

* RTT: the client in namespace a sends 64 bytes, the server in b sends them back; 500
  warm-up round trips, then N timed ones (``--rtt``), each timed with perf_counter_ns; a
  run's figure is the median round trip.
  raw: Python UDP sockets. tipcshm: RDM to the service {18888, 1} bound on node B,
  answered to the sender's socket address.
* one-way msgs/s: M 64-byte messages (``--msgs``), one datagram per message, zero loss.
  raw UDP has no flow control, so the raw sender keeps at most 4096 unacknowledged
  (the receiver acknowledges every 256) and a run that loses anything fails (it says so).
  rate = M / (receiver's clock after the last message - sender's clock before the first);
  perf_counter_ns is CLOCK_MONOTONIC, the same clock in every network namespace.
  tipcshm: RDM to {18888, 1}; the link's own window and the bearer lane's back-pressure.
* STREAM: S MiB (``--stream-mib``) written in 1 MiB writes; MB/s at the receiver.
  raw: TCP. tipcshm: SOCK_STREAM connected to {18888, 2} on node B.
* the weather: an AF_UNIX SOCK_DGRAM socketpair's 64-byte RTT, measured in the same run,
  in the host namespace: how busy the machine was.
* ``--kernel``: boots two kernel TIPC VMs (the harness of tests/kernelvm.py) and reports
  kernel-to-kernel RDM RTT (vm2's ``tipctest rdm-send`` to vm1's echo server, 200 round
  trips; it prints each round trip, in 10 us steps; the VMs' timer makes these slow, about
  12 ms on the development machine) next to tipcshm-to-kernel (a tipcshm node in the VMs'
  namespace, RDM to vm1's echo server {18888, 17}).

A tipcshm figure that cannot be measured yet (no ``start --bearer``, a node that does not
come up, a link that does not) is reported as unavailable with the reason; the raw halves
always run.

    sudo python tools/bench/cluster_bench.py [--runs 3] [--rtt 5000] [--msgs 50000]
        [--stream-mib 64] [--kernel] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

PORT = 47001
SERVICE = 18888
WARMUP = 500
WINDOW, ACK_EVERY = 4096, 256
CHUNK = 1 << 20


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -- roles: run inside a namespace as `cluster_bench.py --role NAME ARGS...` ----------------
def role_udp_echo(addr: str, n: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, PORT))
    emit({"ready": True})
    s.settimeout(10)
    for _ in range(WARMUP + int(n)):
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def role_udp_rtt(dest: str, n: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dest, PORT))
    s.settimeout(5)
    payload = bytes(64)
    samples = []
    for i in range(WARMUP + int(n)):
        t0 = time.perf_counter_ns()
        s.send(payload)
        s.recv(2048)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    emit({"rtt_us": statistics.median(samples) / 1000})


def role_udp_sink(addr: str, m: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((addr, PORT))
    emit({"ready": True})
    s.settimeout(3)
    count, total, peer = 0, int(m), None
    try:
        while count < total:
            _, peer = s.recvfrom(2048)
            count += 1
            if count % ACK_EVERY == 0 or count == total:
                s.sendto(count.to_bytes(4, "big"), peer)
    except TimeoutError:
        pass
    emit({"end_ns": time.perf_counter_ns(), "count": count})


def role_udp_blast(dest: str, m: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dest, PORT))
    s.settimeout(3)
    payload = bytearray(64)
    acked, total = 0, int(m)
    start = time.perf_counter_ns()
    try:
        for i in range(total):
            while i - acked >= WINDOW:
                acked = int.from_bytes(s.recv(16), "big")
            payload[:4] = i.to_bytes(4, "big")
            s.send(payload)
    except TimeoutError:
        pass
    emit({"start_ns": start})


def role_tcp_sink(addr: str, total: str) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, PORT))
    ls.listen(1)
    emit({"ready": True})
    conn, _ = ls.accept()
    buf = bytearray(CHUNK)
    got, want = 0, int(total)
    while got < want:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    emit({"end_ns": time.perf_counter_ns(), "bytes": got})


def role_tcp_send(dest: str, total: str) -> None:
    s = socket.create_connection((dest, PORT), timeout=10)
    chunk = bytes(CHUNK)
    start = time.perf_counter_ns()
    for _ in range(int(total) // CHUNK):
        s.sendall(chunk)
    emit({"start_ns": start})
    s.close()


def _tipc() -> Any:
    import tipcshm

    return tipcshm


def role_tipc_echo(node: str, n: str) -> None:
    t = _tipc()
    s = t.socket(t.AF_TIPC, t.SOCK_RDM, node=node)
    s.bind((t.TIPC_ADDR_NAMESEQ, SERVICE, 1, 1, t.TIPC_CLUSTER_SCOPE))
    emit({"ready": True})
    for _ in range(WARMUP + int(n)):
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
    s.close()


def role_tipc_rtt(node: str, n: str, instance: str = "1") -> None:
    t = _tipc()
    s = t.socket(t.AF_TIPC, t.SOCK_RDM, node=node)
    dest = (t.TIPC_ADDR_NAME, SERVICE, int(instance), 0)
    payload = bytes(64)
    samples = []
    for i in range(WARMUP + int(n)):
        t0 = time.perf_counter_ns()
        s.sendto(payload, dest)
        s.recv(2048)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    emit({"rtt_us": statistics.median(samples) / 1000})
    s.close()


def role_tipc_sink(node: str, m: str) -> None:
    t = _tipc()
    s = t.socket(t.AF_TIPC, t.SOCK_RDM, node=node)
    s.bind((t.TIPC_ADDR_NAMESEQ, SERVICE, 1, 1, t.TIPC_CLUSTER_SCOPE))
    emit({"ready": True})
    s.settimeout(5)
    count, total = 0, int(m)
    try:
        while count < total:
            s.recv(2048)
            count += 1
    except TimeoutError:
        pass
    emit({"end_ns": time.perf_counter_ns(), "count": count})
    s.close()


def role_tipc_blast(node: str, m: str) -> None:
    t = _tipc()
    s = t.socket(t.AF_TIPC, t.SOCK_RDM, node=node)
    dest = (t.TIPC_ADDR_NAME, SERVICE, 1, 0)
    payload = bytes(64)
    start = time.perf_counter_ns()
    for _ in range(int(m)):
        s.sendto(payload, dest)
    emit({"start_ns": start})
    s.close()


def role_tipc_stream_sink(node: str, total: str) -> None:
    t = _tipc()
    ls = t.socket(t.AF_TIPC, t.SOCK_STREAM, node=node)
    ls.bind((t.TIPC_ADDR_NAMESEQ, SERVICE, 2, 2, t.TIPC_CLUSTER_SCOPE))
    ls.listen(1)
    emit({"ready": True})
    conn, _ = ls.accept()
    got, want = 0, int(total)
    while got < want:
        data = conn.recv(CHUNK)
        if not data:
            break
        got += len(data)
    emit({"end_ns": time.perf_counter_ns(), "bytes": got})
    conn.close()
    ls.close()


def role_tipc_stream_send(node: str, total: str) -> None:
    t = _tipc()
    s = t.socket(t.AF_TIPC, t.SOCK_STREAM, node=node)
    s.connect((t.TIPC_ADDR_NAME, SERVICE, 2, 0))
    chunk = bytes(CHUNK)
    start = time.perf_counter_ns()
    for _ in range(int(total) // CHUNK):
        s.sendall(chunk)
    emit({"start_ns": start})
    s.close()


ROLES: dict[str, Callable[..., None]] = {
    name[5:].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("role_")
}


# -- driver ---------------------------------------------------------------------------------
class Unavailable(Exception):
    """A figure that cannot be measured here: why."""


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def pair_run(
    server_ns: Any, server: list[str], client_ns: Any, client: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the server role, wait for its ready line, run the client role; both results."""
    me = [sys.executable, str(Path(__file__).resolve()), "--role"]
    srv = server_ns.popen(me + server, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert srv.stdout is not None
        first = srv.stdout.readline()
        if not first.startswith("{"):
            srv.kill()
            _, err = srv.communicate()
            raise Unavailable(f"{server[0]} did not start: {first.strip()} {err.strip()[-300:]}")
        cli = client_ns.run(me + client, timeout=300)
        if cli.returncode != 0:
            raise Unavailable(f"{client[0]} failed: {cli.stderr.strip()[-300:]}")
        out, err = srv.communicate(timeout=60)
        if srv.returncode != 0:
            raise Unavailable(f"{server[0]} failed: {err.strip()[-300:]}")
        return _json_lines(first + out)[-1], _json_lines(cli.stdout)[-1]
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def unix_rtt(n: int) -> float:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        try:
            for _ in range(WARMUP + n):
                b.send(b.recv(2048))
        finally:
            os._exit(0)
    b.close()
    payload, samples = bytes(64), []
    for i in range(WARMUP + n):
        t0 = time.perf_counter_ns()
        a.send(payload)
        a.recv(2048)
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    os.waitpid(pid, 0)
    a.close()
    return statistics.median(samples) / 1000


class Nodes:
    """tipcshm node A in namespace a and B in b, each with a UDP bearer to the other."""

    def __init__(self, pair: Any) -> None:
        from tipcshm.testing import unique_node_name

        self.pair = pair
        self.names = (unique_node_name("cb"), unique_node_name("cb"))
        self.started: list[str] = []
        self.bport = _free_port_hint()

    def start(self) -> None:
        tipcshm_cli = [sys.executable, "-m", "tipcshm.cli"]
        for name, ns, peer in (
            (self.names[0], self.pair.a, self.pair.b),
            (self.names[1], self.pair.b, self.pair.a),
        ):
            run = ns.run(
                tipcshm_cli
                + ["start", "--name", name, "--bearer", f"udp:{ns.addr}:{self.bport}"]
                + ["--remote", f"{peer.addr}:{self.bport}"],
                timeout=60,
            )
            if run.returncode != 0:
                said = (run.stderr or run.stdout).strip().splitlines()
                raise Unavailable(f"`tipcshm start --bearer` failed: {said[-1] if said else ''}")
            self.started.append(name)
        wait_links(self.names, 1, 15)

    def stop(self) -> None:
        from tipcshm.testing import stop_node

        for name in self.started:
            try:
                stop_node(name)
            except OSError as exc:
                print(f"stopping {name}: {exc}", file=sys.stderr)
        self.started.clear()


def _free_port_hint() -> int:
    return 6118  # each namespace has its own ports: the kernel's default is free in both


def wait_links(nodes: tuple[str, ...] | list[str], count: int, timeout: float) -> None:
    """Until every node has ``count`` links up (its segment's link table)."""
    from tipcshm.shm.layout import NodeSegment

    end = time.monotonic() + timeout
    while True:
        ups = []
        for name in nodes:
            seg = NodeSegment.attach(name)
            try:
                ups.append(len(seg.link_rows_up()))
            finally:
                seg.close()
        if all(u >= count for u in ups):
            return
        if time.monotonic() > end:
            raise Unavailable(f"links up after {timeout} s: {dict(zip(nodes, ups, strict=True))}")
        time.sleep(0.05)


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import netns

    if reason := netns.unavailable():
        raise SystemExit(f"cluster_bench needs network namespaces: {reason}")
    results: dict[str, list[float]] = {}
    unavailable: dict[str, str] = {}

    def record(key: str, fn: Callable[[], float]) -> None:
        if key in unavailable:
            return
        try:
            value = fn()  # before setdefault: a figure that fails at once has no entry
        except Unavailable as why:
            unavailable[key] = str(why)
            return
        results.setdefault(key, []).append(value)

    total = args.stream_mib * CHUNK
    with netns.veth_pair() as pair:
        a, b = pair.a, pair.b

        def udp_rtt() -> float:
            _, cli = pair_run(
                b, ["udp-echo", b.addr, str(args.rtt)], a, ["udp-rtt", b.addr, str(args.rtt)]
            )
            return float(cli["rtt_us"])

        def udp_rate() -> float:
            srv, cli = pair_run(
                b, ["udp-sink", b.addr, str(args.msgs)], a, ["udp-blast", b.addr, str(args.msgs)]
            )
            if srv["count"] != args.msgs:
                raise Unavailable(f"raw UDP lost {args.msgs - srv['count']} of {args.msgs}")
            return args.msgs / ((srv["end_ns"] - cli["start_ns"]) / 1e9)

        def tcp_rate() -> float:
            srv, cli = pair_run(
                b, ["tcp-sink", b.addr, str(total)], a, ["tcp-send", b.addr, str(total)]
            )
            return srv["bytes"] / ((srv["end_ns"] - cli["start_ns"]) / 1e9) / 1e6

        nodes = Nodes(pair)
        try:
            if not args.raw_only:
                try:
                    nodes.start()
                except Unavailable as why:
                    for key in ("tipcshm rdm rtt us", "tipcshm rdm msgs/s", "tipcshm stream MB/s"):
                        unavailable[key] = str(why)
            na, nb = nodes.names

            def tipc_rtt() -> float:
                _, cli = pair_run(
                    b, ["tipc-echo", nb, str(args.rtt)], a, ["tipc-rtt", na, str(args.rtt)]
                )
                return float(cli["rtt_us"])

            def tipc_rate() -> float:
                srv, cli = pair_run(
                    b, ["tipc-sink", nb, str(args.msgs)], a, ["tipc-blast", na, str(args.msgs)]
                )
                if srv["count"] != args.msgs:
                    raise Unavailable(f"tipcshm lost {args.msgs - srv['count']} of {args.msgs}")
                return args.msgs / ((srv["end_ns"] - cli["start_ns"]) / 1e9)

            def tipc_stream() -> float:
                srv, cli = pair_run(
                    b, ["tipc-stream-sink", nb, str(total)], a, ["tipc-stream-send", na, str(total)]
                )
                return srv["bytes"] / ((srv["end_ns"] - cli["start_ns"]) / 1e9) / 1e6

            only = set(args.only.split(","))
            for run in range(args.runs):
                print(f"run {run + 1}/{args.runs}", file=sys.stderr)
                record("weather: AF_UNIX rtt us", lambda: unix_rtt(args.rtt))
                if "rtt" in only:
                    record("raw UDP rtt us", udp_rtt)
                    record("tipcshm rdm rtt us", tipc_rtt)
                if "rate" in only:
                    record("raw UDP msgs/s", udp_rate)
                    record("tipcshm rdm msgs/s", tipc_rate)
                if "stream" in only:
                    record("raw TCP MB/s", tcp_rate)
                    record("tipcshm stream MB/s", tipc_stream)
        finally:
            nodes.stop()
    if args.kernel:
        kernel_figures(args, results, unavailable)
    return {
        "results": {k: summary(v) for k, v in results.items()},
        "raw": results,
        "unavailable": unavailable,
    }


def kernel_figures(
    args: argparse.Namespace, results: dict[str, list[float]], unavailable: dict[str, str]
) -> None:
    """Kernel-to-kernel RDM RTT (two VMs) next to tipcshm-to-kernel RTT."""
    import kernelvm

    if reason := kernelvm.unavailable():
        unavailable["kernel-to-kernel rdm rtt us"] = reason
        unavailable["tipcshm-to-kernel rdm rtt us"] = reason
        return
    with kernelvm.KernelVMs(2) as vms:
        for _ in range(args.runs):
            run = vms.exec(
                2, f"tipctest rdm-send {SERVICE} 17 @64 {min(args.rtt, 200)} 2000", timeout=120
            )
            rtts = [
                float(w[4:-2])
                for w in run.stdout.split()
                if w.startswith("rtt=") and w.endswith("ms")
            ]
            if not rtts:
                unavailable["kernel-to-kernel rdm rtt us"] = f"no rtt in: {run.stdout[-300:]}"
                break
            results.setdefault("kernel-to-kernel rdm rtt us", []).append(
                statistics.median(rtts) * 1000
            )
        try:
            node = vms.start_tipcshm_node()
        except kernelvm.Unavailable as why:
            unavailable["tipcshm-to-kernel rdm rtt us"] = str(why)
            return
        try:
            for _ in range(args.runs):
                run = vms.host.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--role",
                        "tipc-rtt",
                        node,
                        str(args.rtt),
                        "17",
                    ],
                    timeout=300,
                )
                if run.returncode != 0:
                    unavailable["tipcshm-to-kernel rdm rtt us"] = run.stderr.strip()[-300:]
                    break
                results.setdefault("tipcshm-to-kernel rdm rtt us", []).append(
                    _json_lines(run.stdout)[-1]["rtt_us"]
                )
        finally:
            vms.stop_tipcshm_node(node)


RATIOS = (
    ("tipcshm rdm rtt us", "raw UDP rtt us", "RDM RTT tipcshm / raw UDP"),
    ("tipcshm rdm msgs/s", "raw UDP msgs/s", "msgs/s tipcshm / raw UDP"),
    ("tipcshm stream MB/s", "raw TCP MB/s", "STREAM MB/s tipcshm / TCP"),
    ("raw UDP rtt us", "weather: AF_UNIX rtt us", "raw UDP RTT / AF_UNIX RTT (weather)"),
    (
        "tipcshm-to-kernel rdm rtt us",
        "kernel-to-kernel rdm rtt us",
        "RTT tipcshm->kernel / kernel->kernel",
    ),
)


def report(out: dict[str, Any]) -> None:
    res = out["results"]
    print(f"{'figure':34} {'min':>10} {'median':>10} {'max':>10}")
    for key, s in res.items():
        print(f"{key:34} {s['min']:10.1f} {s['median']:10.1f} {s['max']:10.1f}")
    for top, bottom, label in RATIOS:
        if top in res and bottom in res:
            ratio = res[top]["median"] / res[bottom]["median"]
            out.setdefault("ratios", {})[label] = ratio
            print(f"{label:44} {ratio:8.2f}")
    for key, why in out["unavailable"].items():
        print(f"{key}: not measured: {why}")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--role"]:
        ROLES[argv[1]](*argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rtt", type=int, default=5000, help="timed round trips per run")
    ap.add_argument("--msgs", type=int, default=50000, help="one-way messages per run")
    ap.add_argument("--stream-mib", type=int, default=64)
    ap.add_argument("--raw-only", action="store_true", help="skip the tipcshm figures")
    ap.add_argument("--kernel", action="store_true", help="also kernel VM RTTs (/dev/kvm)")
    ap.add_argument("--json", help="write the figures to this file too")
    ap.add_argument(
        "--only",
        default="rtt,rate,stream",
        help="comma-separated subset of rtt,rate,stream (the weather is always measured)",
    )
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile both nodes' bearer workers; their stats land in DIR when they stop",
    )
    args = ap.parse_args(argv)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        os.environ["TIPCSHM_BEARER_PROFILE"] = os.path.abspath(args.profile)
    out = measure(args)
    report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
