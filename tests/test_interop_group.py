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
from collections.abc import Iterator
from dataclasses import dataclass

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
