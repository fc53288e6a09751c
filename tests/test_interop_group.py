"""Communication groups against Linux kernel TIPC in VMs (tests/kernelvm.py).

Kernel members are ``groupcheck`` (tools/interop/groupcheck.c) processes in the VMs: each
prints one line per join/leave event, received message and send, so the order a member saw
is checked line by line. Payloads are ``TAG.KIND.I`` with I counting the sender's sends, so
each receiver's sequence from one sender must be exactly the sender's order.

First the kernel against itself (the reference the tipcshm tests are held to), then groups
with members on tipcshm nodes and kernel VMs. Skipped with the reason without /dev/kvm,
root or the harness.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kernelvm
import pytest
from kernelvm import KernelVMs

pytestmark = [pytest.mark.kvm, pytest.mark.slow, pytest.mark.timeout(300)]

VM1, VM2 = kernelvm.vm_node(1), kernelvm.vm_node(2)
_types = itertools.count(4711)  # a group type of its own per test: no stale members
_logs = itertools.count(1)

LINE = re.compile(
    r"(?P<what>rx|evt join|evt leave) node=0x(?P<node>[0-9a-f]+) port=(?P<port>\d+) "
    r"inst=(?P<inst>\d+) len=(?P<len>\d+) flags=(?P<flags>\S+)(?: namelen=\d+)?"
    r'(?: data="(?P<data>[^"]*)")?'
)


@dataclass(frozen=True)
class Seen:
    """One line of a member's output: a message received or a member event."""

    what: str  # "rx", "join" or "leave"
    node: int
    port: int
    inst: int
    flags: str
    data: str | None

    @property
    def source(self) -> tuple[int, int]:
        return (self.node, self.port)


def parse(log: str) -> tuple[tuple[int, int] | None, list[Seen]]:
    """The member's own (node, port) from its ``self`` line, and what it received."""
    me = None
    seen = []
    for line in log.splitlines():
        if line.startswith("self "):
            fields = dict(f.split("=", 1) for f in line.split()[1:])
            me = (int(fields["node"], 16), int(fields["port"]))
        elif m := LINE.match(line):
            node, port, inst = int(m["node"], 16), int(m["port"]), int(m["inst"])
            what = m["what"].removeprefix("evt ")
            seen.append(Seen(what, node, port, inst, m["flags"], m["data"]))
    return me, seen


class KernelMember:
    """A groupcheck process in VM k, output to a log file in the VM."""

    def __init__(self, vms: KernelVMs, k: int, type_: int, inst: int, *args: str) -> None:
        self.vms, self.k = vms, k
        self.log = f"/tmp/groupcheck{next(_logs)}.log"
        argv = " ".join(["groupcheck", "member", str(type_), str(inst), *args])
        run = vms.exec(k, f"{argv} >{self.log} 2>&1 & echo $!")
        assert run.returncode == 0, run.stdout + run.stderr
        self.pid = int(run.stdout.split()[-1])

    def output(self) -> str:
        return self.vms.exec(self.k, f"cat {self.log}").stdout

    def wait(self, text: str, timeout: float = 40) -> str:
        """Until the log shows ``text`` (fails at once on the tool's timeout or error)."""
        end = time.monotonic() + timeout
        while True:
            out = self.output()
            if text in out:
                return out
            if re.search(r"^(timeout|error) ", out, re.M) or time.monotonic() > end:
                raise AssertionError(f"vm{self.k} member never printed {text!r}:\n{out}")
            time.sleep(0.3)

    def me(self) -> tuple[int, int]:
        me, _ = parse(self.wait("self "))
        assert me is not None
        return me

    def stop(self) -> None:
        self.vms.exec(self.k, f"kill {self.pid} 2>/dev/null; true")


def _boot(vms: KernelVMs) -> KernelVMs:
    if reason := kernelvm.unavailable():
        pytest.skip(f"no kernel VM: {reason}")
    return vms


@pytest.fixture(scope="module")
def two_vms() -> Iterator[KernelVMs]:
    with _boot(KernelVMs(2, echo="none", tools=True)) as vms:
        vms._tipcvm("wait-links")
        yield vms


def data_from(seen: list[Seen], source: tuple[int, int]) -> list[str | None]:
    return [s.data for s in seen if s.what == "rx" and s.source == source]


# -- the kernel against itself: what the tipcshm tests below are held to -------------
def test_kernel_to_kernel_group(two_vms: KernelVMs) -> None:
    vms, gtype = two_vms, next(_types)
    # vm2: joins, takes vm1's six messages, answers with a broadcast and a unicast, then
    # waits for vm1's leave; vm1: waits for vm2, sends every kind, interleaving unicasts
    # with broadcasts (the kernel re-sorts them by the group sequence number), takes vm2's
    # two messages and exits (close() leaves the group)
    m2 = KernelMember(
        vms, 2, gtype, 2, "--tag k2 --events --wait-join 1 --recv 6 --bcast 1",
        "--unicast members 1 --wait-leave 1",
    )  # fmt: skip
    m1 = KernelMember(
        vms, 1, gtype, 1, "--tag k1 --events --wait-join 1 --bcast 2 --unicast members 1",
        "--bcast 1 --anycast 2 1 --mcast 2 1 --mcast 3 1 --recv 2",
    )  # fmt: skip
    try:
        out1, out2 = m1.wait("done "), m2.wait("done ")
    finally:
        m1.stop()
        m2.stop()
    me1, seen1 = parse(out1)
    me2, seen2 = parse(out2)
    assert me1 is not None and me2 is not None and me1[0] == VM1 and me2[0] == VM2
    tx1 = [line for line in out1.splitlines() if line.startswith("tx ")]
    assert [t.split()[1] for t in tx1] == ["b", "b", "u", "b", "a", "m", "m"], out1
    assert all(" rc=6" in t and "errno" not in t for t in tx1[:-1]), tx1
    # vm2: vm1's join (instance 1), vm1's messages in vm1's send order, vm1's leave
    assert seen2[0] == Seen("join", *me1, 1, "OOB", None), out2
    assert data_from(seen2, me1) == ["k1.b.0", "k1.b.1", "k1.u.2", "k1.b.3", "k1.a.4", "k1.m.5"]
    assert all(s.inst == 1 and s.flags == "-" for s in seen2 if s.what == "rx")
    assert seen2[-1] == Seen("leave", *me1, 1, "OOB|EOR", None), out2
    assert len(seen2) == 8, out2
    # vm1: vm2's join (instance 2), then vm2's broadcast and unicast in order
    assert seen1[0] == Seen("join", *me2, 2, "OOB", None), out1
    assert data_from(seen1, me2) == ["k2.b.0", "k2.u.1"]
    assert len(seen1) == 3, out1
    # a multicast to an instance no member has: EHOSTUNREACH (113), nothing sent
    assert " rc=-1 " in tx1[-1] and tx1[-1].endswith("errno=113"), tx1


# -- tipcshm members on two nodes and a kernel member --------------------------------
HOST_A, HOST_B = kernelvm.host_node(1), kernelvm.host_node(2)


@pytest.fixture(scope="module")
def mixed() -> Iterator[tuple[KernelVMs, str, str]]:
    """VM 1 and tipcshm nodes on 192.0.2.1 and 192.0.2.2, all three linked."""
    with _boot(KernelVMs(1, echo="none", tools=True, host_octets=(1, 2))) as vms:
        a = vms.start_tipcshm_node(octet=1)
        b = vms.start_tipcshm_node(octet=2)
        for node, peers in ((a, (VM1, HOST_B)), (b, (VM1, HOST_A))):
            for peer in peers:
                kernelvm.wait_link(node, peer, timeout=15)
        yield vms, a, b


class Collector:
    """Everything a tipcshm group member received, in order, as (what, node, port, inst,
    data) like the kernel member's lines."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.seen: list[Seen] = []

    def until(self, done: Callable[[list[Seen]], bool], timeout: float = 30) -> list[Seen]:
        end = time.monotonic() + timeout
        while not done(self.seen):
            assert time.monotonic() < end, f"member saw only {self.seen}"
            try:
                msg = self.group.recv(timeout=0.2)
            except TimeoutError:
                continue
            what = {None: "rx", "join": "join", "leave": "leave"}[msg.event]
            data = None if msg.event else msg.data.decode()
            self.seen.append(Seen(what, msg.node, msg.port, msg.instance, "-", data))
        return self.seen


def joined(*members: tuple[int, int]) -> Callable[[list[Seen]], bool]:
    return lambda seen: set(members) <= {s.source for s in seen if s.what == "join"}


def expected_from_kernel(out: str, member: tuple[int, int], inst: int, tag: str = "k") -> list[str]:
    """What ``member`` (instance ``inst``) must receive from a kernel member, in order: its
    broadcasts, its unicasts to ``member``, its anycasts and multicasts to ``inst``."""
    want = []
    for line in out.splitlines():
        f = line.split()
        if not f or f[0] != "tx" or "errno" in line:
            continue
        extra = dict(x.split("=", 1) for x in f[3:])
        kind, i = f[1], f[2]
        to = extra.get("to")
        if (
            kind == "b"
            or (kind == "u" and to == f"0x{member[0]:08x}:{member[1]}")
            or (kind in "am" and extra.get("inst") == str(inst))
        ):
            want.append((kind, i))
    return [f"{tag}.{k}.{i}" for k, i in want]


def test_group_of_two_tipcshm_nodes_and_a_kernel(mixed: tuple[KernelVMs, str, str]) -> None:
    import tipcshm

    vms, node_a, node_b = mixed
    gtype = next(_types)
    # the kernel member (instance 12) waits for both tipcshm members, sends every kind
    # (unicasts to each member between broadcasts), takes their six messages, waits for
    # b's leave and exits: its leave must reach a
    k = KernelMember(
        vms, 1, gtype, 12, "--tag k --events --wait-join 2 --bcast 1 --unicast members 1",
        "--bcast 1 --anycast 10 1 --mcast 11 1 --recv 6 --wait-leave 1",
    )  # fmt: skip
    a = tipcshm.Group(gtype, 10, events=True, node=node_a)
    b = tipcshm.Group(gtype, 11, events=True, node=node_b)
    try:
        for g in (a, b):
            g.socket.settimeout(10)  # a send that blocks this long fails the test, named
        ca, cb = Collector(a), Collector(b)
        me_k = k.me()
        me_a, me_b = a.address, b.address
        ca.until(joined(me_b, me_k))
        cb.until(joined(me_a, me_k))
        # a: broadcast, unicast to the kernel, broadcast, multicast to the kernel's instance
        a.broadcast(b"a.b.0")
        a.unicast(me_k, b"a.u.1")
        a.broadcast(b"a.b.2")
        a.multicast(12, b"a.m.3")
        # b: anycast to the kernel's instance, broadcast, unicast to a
        b.anycast(12, b"b.a.0")
        b.broadcast(b"b.b.1")
        b.unicast(me_a, b"b.u.2")
        deadline = time.monotonic() + 30
        while len([s for s in parse(k.output())[1] if s.what == "rx"]) < 6:
            assert time.monotonic() < deadline, k.output()
            time.sleep(0.3)
        # b takes what the kernel sent it (all sent before the kernel's receives), then
        # leaves by closing
        want_b = expected_from_kernel(k.output(), me_b, 11)
        cb.until(
            lambda seen: (
                len(data_from(seen, me_k)) >= len(want_b) and len(data_from(seen, me_a)) >= 2
            )  # a's two broadcasts, also read before
        )
        b.close()
        out_k = k.wait("done ")
        ca.until(lambda seen: any(s.what == "leave" and s.source == me_k for s in seen))
    finally:
        k.stop()
        a.close()
        b.close()
    _, seen_k = parse(out_k)
    # the kernel: both joins with their instances, each sender's messages in its order,
    # b's leave
    joins_k = {(s.source, s.inst) for s in seen_k if s.what == "join"}
    assert joins_k == {(me_a, 10), (me_b, 11)}, out_k
    assert data_from(seen_k, me_a) == ["a.b.0", "a.u.1", "a.b.2", "a.m.3"], out_k
    assert data_from(seen_k, me_b) == ["b.a.0", "b.b.1"], out_k
    assert all(s.inst == {me_a: 10, me_b: 11}[s.source] for s in seen_k if s.what == "rx")
    assert [(s.what, s.source, s.flags) for s in seen_k if s.what == "leave"] == [
        ("leave", me_b, "OOB|EOR")
    ]
    # a: b's and the kernel's joins, their messages in order, b's leave then the kernel's
    seen_a = ca.seen
    assert {(s.source, s.inst) for s in seen_a if s.what == "join"} == {(me_b, 11), (me_k, 12)}
    assert data_from(seen_a, me_k) == expected_from_kernel(out_k, me_a, 10)
    assert data_from(seen_a, me_b) == ["b.b.1", "b.u.2"]
    assert all(s.inst == {me_b: 11, me_k: 12}[s.source] for s in seen_a if s.what == "rx")
    leaves_a = [(s.source, s.inst) for s in seen_a if s.what == "leave"]
    assert leaves_a == [(me_b, 11), (me_k, 12)], seen_a
    # b: a's and the kernel's joins, their messages in order
    seen_b = cb.seen
    assert {(s.source, s.inst) for s in seen_b if s.what == "join"} == {(me_a, 10), (me_k, 12)}
    assert data_from(seen_b, me_k) == expected_from_kernel(out_k, me_b, 11)
    assert data_from(seen_b, me_a) == ["a.b.0", "a.b.2"]


def test_a_tipcshm_member_and_a_kernel_member(mixed: tuple[KernelVMs, str, str]) -> None:
    """One tipcshm member and one kernel member: every kind both ways, unicasts between
    broadcasts, join events on both sides, the kernel's leave (it exits) reaches us."""
    import tipcshm

    vms, node_a, _ = mixed
    gtype = next(_types)
    k = KernelMember(
        vms, 1, gtype, 12, "--tag k --events --wait-join 1 --bcast 1 --unicast members 1",
        "--bcast 1 --anycast 10 1 --mcast 10 1 --bcast 1 --recv 5",
    )  # fmt: skip
    a = tipcshm.Group(gtype, 10, events=True, node=node_a)
    try:
        a.socket.settimeout(10)
        ca = Collector(a)
        me_k, me_a = k.me(), a.address
        ca.until(joined(me_k))
        a.broadcast(b"a.b.0")
        a.unicast(me_k, b"a.u.1")
        a.broadcast(b"a.b.2")
        a.anycast(12, b"a.a.3")
        a.multicast(12, b"a.m.4")
        out_k = k.wait("done ")
        ca.until(lambda seen: any(s.what == "leave" and s.source == me_k for s in seen))
    finally:
        k.stop()
        a.close()
    _, seen_k = parse(out_k)
    assert seen_k[0] == Seen("join", *me_a, 10, "OOB", None), out_k
    assert data_from(seen_k, me_a) == ["a.b.0", "a.u.1", "a.b.2", "a.a.3", "a.m.4"], out_k
    assert all(s.inst == 10 for s in seen_k if s.what == "rx"), out_k
    seen_a = ca.seen
    assert seen_a[0] == Seen("join", *me_k, 12, "-", None), seen_a
    assert data_from(seen_a, me_k) == expected_from_kernel(out_k, me_a, 10)
    assert data_from(seen_a, me_k) == ["k.b.0", "k.u.1", "k.b.2", "k.a.3", "k.m.4", "k.b.5"]
    assert all(s.inst == 12 for s in seen_a if s.what == "rx"), seen_a
    assert seen_a[-1] == Seen("leave", *me_k, 12, "-", None), seen_a
    assert len(seen_a) == 8, seen_a
