#!/usr/bin/env python3
"""An Ethernet relay between two interfaces that loses, duplicates, delays and reorders.

For machines whose kernel has no ``sch_netem`` (``tc qdisc ... netem`` answers "Specified
qdisc kind is unknown"): tests/netns.py puts this relay in a middle network namespace,
between the veth ends of two other namespaces, so that everything one side sends (ARP,
multicast discovery, TIPC over UDP) reaches the other only through it:

    ns a [va] ==veth== [ma] ns m: l2relay [mb] ==veth== [vb] ns b

    ip netns exec M python tools/interop/l2relay.py ma mb --loss 10 --duplicate 5 \\
        --reorder 20 --delay-ms 5 --seed 1

Each frame received on one interface (AF_PACKET, frames the host itself sent skipped) is,
independently and per direction: dropped with probability ``loss``; else sent once, or
twice with probability ``duplicate``; a frame is held ``delay-ms`` unless it is picked for
reordering (probability ``reorder``), which sends it at once, overtaking the held ones (as
netem's reorder does). ``--drop-all`` passes nothing (a cable pulled). SIGUSR1 toggles
``--drop-all``; SIGTERM ends it, printing one JSON line of counters. It prints ``READY``
once both sockets are bound. Frames over the interface MTU cannot be sent and are counted
(``too_big``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("left")
    ap.add_argument("right")
    ap.add_argument("--loss", type=float, default=0.0, help="percent")
    ap.add_argument("--duplicate", type=float, default=0.0, help="percent")
    ap.add_argument("--reorder", type=float, default=0.0, help="percent")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--drop-all", action="store_true")
    ap.add_argument(
        "--one-way",
        action="store_true",
        help="impair only frames from LEFT to RIGHT; the other direction passes untouched",
    )
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    socks = {}
    for name in (args.left, args.right):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        socks[name] = s
    other = {args.left: socks[args.right], args.right: socks[args.left]}
    by_fd = {s.fileno(): n for n, s in socks.items()}
    counters = dict.fromkeys(
        ("received", "sent", "lost", "duplicated", "reordered", "too_big", "cut"), 0
    )
    state = {"drop_all": args.drop_all, "stop": False}

    def toggle(_sig: int, _frm: object) -> None:
        state["drop_all"] = not state["drop_all"]

    def stop(_sig: int, _frm: object) -> None:
        state["stop"] = True

    signal.signal(signal.SIGUSR1, toggle)
    signal.signal(signal.SIGTERM, stop)
    held: list[tuple[float, int, bytes, str]] = []
    seq = 0
    delay = args.delay_ms / 1000.0

    def emit(frame: bytes, out: str) -> None:
        try:
            other[out].send(frame)
            counters["sent"] += 1
        except OSError:
            counters["too_big"] += 1

    print("READY", flush=True)
    while not state["stop"]:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, frame, src = heapq.heappop(held)
            emit(frame, src)
        wait = max(0.0, held[0][0] - now) if held else 0.5
        try:
            ready, _, _ = select.select(list(by_fd), [], [], wait)
        except InterruptedError:
            continue
        for fd in ready:
            src = by_fd[fd]
            while True:
                try:
                    frame, addr = socks[src].recvfrom(65600)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                counters["received"] += 1
                if state["drop_all"]:
                    counters["cut"] += 1
                    continue
                if args.one_way and src != args.left:
                    emit(frame, src)
                    continue
                if args.loss and rng.random() * 100 < args.loss:
                    counters["lost"] += 1
                    continue
                copies = 1
                if args.duplicate and rng.random() * 100 < args.duplicate:
                    copies = 2
                    counters["duplicated"] += 1
                for _ in range(copies):
                    if delay and not (args.reorder and rng.random() * 100 < args.reorder):
                        seq += 1
                        heapq.heappush(held, (time.monotonic() + delay, seq, frame, src))
                    else:
                        counters["reordered"] += bool(held)
                        emit(frame, src)
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
