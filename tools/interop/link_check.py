#!/usr/bin/env python3
"""Does tipcshm's sans-IO core link with a real Linux kernel? A check, not a bearer worker.

Drives one :class:`tipcshm.core.stack.NodeStack` with a real UDP socket and the real
clock: discovery, the link handshake, name distribution and data, against a Linux kernel
TIPC node in the kernel VM harness (its UDP bearer on the harness bridge). Run it inside
the harness's network namespace, with the host address of the bridge:

    ip netns exec tipcvm python tools/interop/link_check.py --local 192.0.2.1 \\
        --peer 192.0.2.11 --seconds 20

It reports, each as PASS or FAIL:

1. a link to the kernel node comes up (LinkUp, then NodeUp);
2. the kernel's bulk name distribution arrives: its RDM echo server ``{18888, 17}``
   appears in our name table;
3. an RDM message to that server, sent over the link, comes back from it (the echo);
4. a binding we publish, ``{18888, 4242}``, is sent to the kernel (the VM's
   ``tipc nametable show`` can confirm it; this tool prints the command);
5. with ``--hold S``: the link then stays up for S seconds of idle supervision.

``--vm`` does it all in a VM of its own and also asks the kernel's ``tipc`` tool whether
it shows the link up and our binding.

Discovery goes unicast to ``--peer`` (replicast, as for a kernel bearer with
``remoteip``) and to the multicast group of the netid. The process exits 0 only if every
check passed. Nothing here is part of the library: the next step, a bearer worker,
will own sockets and clocks the same way.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import select
import socket
import struct
import sys
import time

from tipcshm.core.events import Delivered, LinkDown, LinkUp, NodeDown, NodeUp
from tipcshm.core.stack import NodeStack
from tipcshm.testing.sim import data_message
from tipcshm.wire.discovery import TIPC_UDP_PORT, UdpMediaAddr
from tipcshm.wire.header import BASIC_H_SIZE, hash128to32, validate_msg

ECHO_TYPE, ECHO_INSTANCE = 18888, 17
OUR_INSTANCE = 4242
OUR_PORT = 0x7150C0DE  # the socket address our echo request comes from


def mcast_group(net_id: int) -> str:
    """The group a kernel UDP bearer without remoteip uses (iproute2 tipc/bearer.c)."""
    return f"228.0.{(net_id >> 8) & 0xFF}.{net_id & 0xFF}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--local", default="192.0.2.1", help="our IPv4 address on the bridge")
    ap.add_argument("--peer", action="append", default=[], help="kernel node IPv4 (repeatable)")
    ap.add_argument("--port", type=int, default=TIPC_UDP_PORT)
    ap.add_argument("--netid", type=int, default=4711)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--hold", type=float, default=0.0, help="keep the link up this long after the checks"
    )
    ap.add_argument(
        "--vm",
        action="store_true",
        help="boot a kernel VM with the harness in a namespace of its own, run this check in "
        "it, and ask the kernel whether it sees our link and binding (root, /dev/kvm)",
    )
    args = ap.parse_args(argv)
    if args.vm:
        return run_with_vm(args.seconds)
    peers = args.peer or ["192.0.2.11"]

    ip = ipaddress.IPv4Address(args.local)
    identity = ip.packed + bytes(12)  # as a kernel UDP bearer derives it: IPv4 + zeros
    media = UdpMediaAddr(ip.packed, args.port).encode()
    group = mcast_group(args.netid)
    now = time.monotonic
    stack = NodeStack(
        identity=identity,
        addr=hash128to32(identity),
        media=media,
        if_name="udp0",
        rng=random.Random(),
        now=now(),
        net_id=args.netid,
    )

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", args.port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), ip.packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ip.packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

    def transmit() -> None:
        for frame, dest in stack.frames_to_send(now()):
            if dest is None:  # the bearer's broadcast: the group, and every configured peer
                targets = [(group, args.port)] + [(p, args.port) for p in peers]
            else:
                addr = UdpMediaAddr.decode(dest)
                targets = [(str(ipaddress.ip_address(addr.ip)), addr.port)]
            for target in targets:
                sock.sendto(frame, target)

    passed: dict[str, bool] = {
        "link up": False,
        "kernel names arrived": False,
        "echo returned": False,
        "our binding sent": False,
    }
    kernel: int | None = None
    echo_sent = False
    published = False
    deadline = now() + args.seconds
    hold_until: float | None = None
    downs = downs_at_ready = 0
    buf = bytearray(66_000 + 100)
    while now() < deadline and (hold_until is None or now() < hold_until):
        if hold_until is None and all(passed.values()):
            hold_until = now() + args.hold
            downs_at_ready = downs
            print("READY", flush=True)
        transmit()
        while (ev := stack.next_event()) is not None:
            if isinstance(ev, LinkUp):
                print(f"LinkUp {ev.name} mtu {ev.mtu}")
            elif isinstance(ev, NodeUp):
                kernel = ev.addr
                passed["link up"] = True
                print(f"NodeUp {ev.addr:#010x}")
            elif isinstance(ev, (LinkDown, NodeDown)):
                downs += isinstance(ev, LinkDown)
                print(f"{type(ev).__name__}: {ev}")
            elif isinstance(ev, Delivered):
                hdr = validate_msg(ev.frame)
                payload = bytes(ev.frame[hdr.hsize : hdr.size])
                print(f"delivered from {ev.source:#010x}: {payload[:40]!r}")
                if hdr.dest_port == OUR_PORT and payload.startswith(b"tipcshm echo"):
                    passed["echo returned"] = True
        if kernel is not None and not published:
            stack.publish(ECHO_TYPE, OUR_INSTANCE, OUR_INSTANCE, OUR_PORT, OUR_PORT, now())
            published = passed["our binding sent"] = True
        if kernel is not None and not echo_sent:
            found = stack.nametable.lookup_anycast(ECHO_TYPE, ECHO_INSTANCE)
            if found is not None:
                passed["kernel names arrived"] = True
                node, port = found
                msg = data_message(
                    stack.addr or 0, node, b"tipcshm echo", src_port=OUR_PORT, dst_port=port
                )
                assert len(msg) > BASIC_H_SIZE
                stack.send(node, msg, now())
                echo_sent = True
                print(f"echo request to {{{ECHO_TYPE}, {ECHO_INSTANCE}}} = <{node:#x}:{port:#x}>")
        transmit()
        due = stack.next_timer()
        wait = 0.05 if due is None else max(0.0, min(0.05, due - now()))
        if select.select([sock], [], [], wait)[0]:
            n, (src_ip, src_port) = sock.recvfrom_into(buf)
            if src_ip == args.local:
                continue  # our own multicast, should loopback be on somewhere
            src = UdpMediaAddr(ipaddress.IPv4Address(src_ip).packed, src_port).encode()
            try:
                stack.receive(bytes(buf[:n]), now(), src)
            except Exception as exc:  # report, keep going: a check, not a node
                print(f"receive refused a frame from {src_ip}: {exc}")
        due = stack.next_timer()
        if due is not None and due <= now():
            stack.handle_timer(now())

    if hold_until is not None and args.hold:
        # Supervision against the kernel: probes both ways, no link timeout while idle.
        passed[f"link stayed up for {args.hold:g} s"] = downs == downs_at_ready
    for what, ok in passed.items():
        print(f"{'PASS' if ok else 'FAIL'}: {what}")
    print(
        f"confirm in the VM: tipc nametable show | grep {OUR_INSTANCE}; tipc link list"
        " (run them while this tool runs)"
    )
    print(stack.statistics())
    sock.close()
    return 0 if all(passed.values()) else 1


def run_with_vm(seconds: float) -> int:
    """Boot one kernel VM (sockcheck.py's prerequisites and namespace handling), run the
    check inside its namespace, and ask the kernel's own tools what they see meanwhile."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sockcheck

    try:
        harness, _env, _initrd = sockcheck.prerequisites()
    except sockcheck.Skipped as why:
        print(f"SKIPPED: {why}")
        return 0
    ns = f"linkchk{os.getpid()}"

    def tipcvm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "tipcvm.py", "--ns", ns, *args],
            cwd=harness,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    child: subprocess.Popen[str] | None = None
    try:
        up = tipcvm("up", "-n", "1", "--status", "0")
        if up.returncode != 0:
            print(f"FAIL: the VM did not boot:\n{up.stdout}{up.stderr}")
            return 1
        child = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                __file__,
                "--local",
                "192.0.2.1",
                "--peer",
                "192.0.2.11",
                "--seconds",
                str(seconds),
                "--hold",
                "8",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            print(line, end="")
            if line.startswith("READY"):
                break
        kernel_sees = {"link up": False, "our binding": False}
        if lines and lines[-1].startswith("READY"):
            end = time.monotonic() + 6
            while time.monotonic() < end and not all(kernel_sees.values()):
                shown = tipcvm("exec", "1", "tipc link list; tipc nametable show").stdout
                kernel_sees["link up"] = "c0000201" in shown and ": up" in shown
                kernel_sees["our binding"] = any(
                    f"{ECHO_TYPE}" in row and f"{OUR_INSTANCE}" in row for row in shown.splitlines()
                )
                time.sleep(0.5)
        for rest in child.stdout:
            print(rest, end="")
        rc = child.wait(timeout=seconds + 30)
        for what, ok in kernel_sees.items():
            print(f"{'PASS' if ok else 'FAIL'}: the kernel's tipc tool shows {what}")
        return 0 if rc == 0 and all(kernel_sees.values()) else 1
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        tipcvm("down", timeout=60)
        # the harness keeps a stopped run's logs; this check has printed what it needs
        last = Path(os.environ.get("TIPCVM_RUN", "/run/tipcvm")) / f"{ns}.last"
        if last.is_dir():
            shutil.rmtree(last)


if __name__ == "__main__":
    sys.exit(main())
