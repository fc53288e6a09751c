"""Network namespaces joined by a veth pair, for tests that put nodes on a real network.

Every namespace and veth name carries the test process's pid and a counter, so parallel
tests (``pytest -n 2``) and parallel runs never meet; everything is deleted when the
``with`` block or fixture ends, also when the test fails. Addresses are only ever the
documentation networks 192.0.2.0/24 or 198.51.100.0/24, inside namespaces this module
created: nothing can leave them (no route, no other interface).

* :func:`veth_pair` (context manager) and the fixture ``netns_pair``: two namespaces
  ``a`` and ``b``, one veth end each, ``a`` = .1 and ``b`` = .2 of the subnet, loopback
  up, and the route 224.0.0.0/4 on the veth so that multicast discovery works.
* :class:`Namespace`: ``run``/``popen`` a command inside (``ip netns exec``), ``call`` a
  Python function inside (a forked child that enters the namespace with ``setns``; the
  result comes back pickled), ``netem(...)`` loss, duplication, reordering and delay on
  its veth end's egress with ``tc netem`` (where the kernel has sch_netem), ``link(up)``.
* ``veth_pair(relay=True)`` and the fixture ``impaired_pair``: the same, but the link runs
  through a third namespace where tools/interop/l2relay.py forwards Ethernet frames, and
  :meth:`VethPair.impair` makes it lose, duplicate, delay, reorder or pass nothing. This
  works on kernels without netem (the development VM's has none) and counts what it did.
* :func:`unavailable`: why namespaces cannot be used here (not root, no ``ip``, creating
  one fails), or None; the fixture skips with that reason, printed in the summary.

Shared memory in /dev/shm is the same in every network namespace, so a node whose
supervisor was started inside a namespace (its bearer worker's socket lives there) is
attached to from the test process as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUBNETS = ("192.0.2", "198.51.100")  # TEST-NET-1, TEST-NET-2: never routed anywhere
CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_unavailable: list[str | None] = []
_netem_unavailable: list[str | None] = []


class NamespaceError(RuntimeError):
    """An ``ip``/``tc`` command failed: which one, and what it said."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and run.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {run.stderr.strip() or run.returncode}")
    return run


def unavailable() -> str | None:
    """Why network namespaces cannot be used by this process, or None (checked once)."""
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "needs root to create network namespaces and veth pairs"
    elif shutil.which("ip") is None:
        reason = "the iproute2 `ip` command is not installed"
    else:
        probe = f"tnprobe{os.getpid()}"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            reason = f"`ip netns add` fails here: {made.stderr.strip()}"
        else:
            _ip("netns", "del", probe, check=False)
    _unavailable.append(reason)
    return reason


def netem_unavailable() -> str | None:
    """Why ``tc netem`` cannot be used (no ``tc``; the kernel has no sch_netem), or None;
    probed once on a veth pair in a scratch namespace."""
    if _netem_unavailable:
        return _netem_unavailable[0]
    reason: str | None = None
    if shutil.which("tc") is None:
        reason = "the iproute2 `tc` command is not installed"
    elif reason := unavailable():
        pass
    else:
        probe = f"tnprobe{os.getpid()}q"
        _ip("netns", "add", probe)
        try:
            _ip("-n", probe, "link", "add", "q0", "type", "veth", "peer", "name", "q1")
            run = subprocess.run(
                ["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "q0", "root", "netem"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if run.returncode != 0:
                reason = f"tc netem does not work here: {run.stderr.strip()}"
        finally:
            _ip("netns", "del", probe, check=False)
    _netem_unavailable.append(reason)
    return reason


def unique_prefix() -> str:
    """A short name no other test of any process uses: pid and a counter."""
    return f"{os.getpid()}x{next(_counter)}"


@dataclass
class Namespace:
    """One network namespace with one veth end ``dev`` carrying ``addr``/24."""

    name: str
    dev: str
    addr: str

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: list[str], *, timeout: float = 60, check: bool = False, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace, output captured as text."""
        kw.setdefault("capture_output", True)
        return subprocess.run(self.argv(argv), text=True, timeout=timeout, check=check, **kw)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace (the caller ends it, by its pid)."""
        return subprocess.Popen(self.argv(argv), text=True, **kw)

    def python(
        self, code: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet with this interpreter inside the namespace."""
        return self.run([sys.executable, "-c", code, *args], timeout=timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
        """``fn(*args)`` in a forked child that first enters this namespace; returns its
        result or raises NamespaceError with the child's traceback."""
        return call_in_netns(self.name, fn, *args, timeout=timeout)

    def netem(
        self,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Replace the egress qdisc of this end with netem: percentages of loss,
        duplication and reordering, and a delay (reordering needs a delay: the reordered
        packets are the ones sent at once, the rest wait)."""
        if reason := netem_unavailable():
            raise NamespaceError(reason)
        args = ["tc", "qdisc", "replace", "dev", self.dev, "root", "netem"]
        if reorder and not delay_ms:
            delay_ms = 5.0
        if delay_ms:
            args += ["delay", f"{delay_ms}ms"]
            if jitter_ms:
                args += [f"{jitter_ms}ms"]
        if loss:
            args += ["loss", f"{loss}%"]
        if duplicate:
            args += ["duplicate", f"{duplicate}%"]
        if reorder:
            args += ["reorder", f"{reorder}%", "50%"]
        if seed is not None:
            args += ["seed", str(seed)]
        run = self.run(args)
        if run.returncode != 0:
            raise NamespaceError(f"{' '.join(args)} in {self.name}: {run.stderr.strip()}")

    def clear_netem(self) -> None:
        self.run(["tc", "qdisc", "del", "dev", self.dev, "root"])

    def link(self, up: bool) -> None:
        """Take the veth end down or up (a cable pulled)."""
        run = self.run(["ip", "link", "set", self.dev, "up" if up else "down"])
        if run.returncode != 0:
            raise NamespaceError(f"ip link set {self.dev}: {run.stderr.strip()}")


RELAY = Path(__file__).resolve().parents[1] / "tools" / "interop" / "l2relay.py"


@dataclass
class VethPair:
    """Namespaces ``a`` and ``b`` on one link; with ``middle``, the link runs through an
    Ethernet relay in that third namespace (tools/interop/l2relay.py), which is how
    :meth:`impair` works where the kernel has no netem."""

    a: Namespace
    b: Namespace
    middle: str | None = None
    relay_devs: tuple[str, str] = ("", "")
    relay: subprocess.Popen[str] | None = None
    relay_counters: list[dict[str, int]] = field(default_factory=list)

    def impair(
        self,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay_ms: float = 0.0,
        seed: int | None = None,
        cut: bool = False,
        one_way: bool = False,
    ) -> None:
        """Loss, duplication, reordering (percentages) and delay on both directions (or,
        ``one_way``, only from a to b); ``cut`` passes nothing. Through the relay when the
        pair has one, else with tc netem on both ends (no ``cut``/``one_way`` there)."""
        if self.middle is None:
            if cut or one_way:
                raise NamespaceError("cut/one_way need a pair made with relay=True")
            self.a.netem(
                loss=loss, duplicate=duplicate, reorder=reorder, delay_ms=delay_ms, seed=seed
            )
            self.b.netem(
                loss=loss, duplicate=duplicate, reorder=reorder, delay_ms=delay_ms, seed=seed
            )
            return
        argv = [sys.executable, str(RELAY), *self.relay_devs]
        argv += ["--loss", str(loss), "--duplicate", str(duplicate), "--reorder", str(reorder)]
        argv += ["--delay-ms", str(delay_ms)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if cut:
            argv.append("--drop-all")
        if one_way:
            argv.append("--one-way")
        self._stop_relay()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.middle, *argv], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            proc.kill()
            proc.wait()
            raise NamespaceError(f"the relay in {self.middle} did not start: {line!r}")
        self.relay = proc

    def clear(self) -> None:
        """No impairment: the relay passes everything, or netem is removed."""
        if self.middle is None:
            self.a.clear_netem()
            self.b.clear_netem()
        else:
            self.impair()

    def _stop_relay(self) -> None:
        proc, self.relay = self.relay, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                self.relay_counters.append(json.loads(line))


def _delete(names: list[str]) -> None:
    for name in names:
        _ip("netns", "del", name, check=False)


@contextlib.contextmanager
def veth_pair(subnet: str = SUBNETS[0], *, relay: bool = False) -> Iterator[VethPair]:
    """Two fresh namespaces joined by a veth pair (.1 and .2 of ``subnet``), or with
    ``relay`` by two veth pairs through a middle namespace running the relay (passing
    everything until :meth:`VethPair.impair`); all deleted afterwards. Raises
    NamespaceError if they cannot be made (see :func:`unavailable`)."""
    if subnet not in SUBNETS:
        raise ValueError(f"subnet {subnet!r}: only {', '.join(SUBNETS)} (documentation nets)")
    tag = unique_prefix()
    a = Namespace(f"tn{tag}a", f"v{tag}a", f"{subnet}.1")
    b = Namespace(f"tn{tag}b", f"v{tag}b", f"{subnet}.2")
    if len(a.dev) > 15:
        raise NamespaceError(f"interface name {a.dev} too long")
    made: list[str] = []
    pair = VethPair(a, b)
    try:
        for ns in (a, b):
            _ip("netns", "add", ns.name)
            made.append(ns.name)
        if relay:
            pair.middle = f"tn{tag}m"
            pair.relay_devs = (f"m{tag}a", f"m{tag}b")
            _ip("netns", "add", pair.middle)
            made.append(pair.middle)
            for ns, mdev in zip((a, b), pair.relay_devs, strict=True):
                _ip(
                    "link",
                    "add",
                    ns.dev,
                    "netns",
                    ns.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    mdev,
                    "netns",
                    pair.middle,
                )
                _ip("-n", pair.middle, "link", "set", mdev, "promisc", "on", "up")
            with contextlib.suppress(OSError):
                # nothing of the middle's own (IPv6 autoconf) on the wire
                for mdev in pair.relay_devs:
                    _ip(
                        "netns",
                        "exec",
                        pair.middle,
                        "sysctl",
                        "-q",
                        "-w",
                        f"net.ipv6.conf.{mdev}.disable_ipv6=1",
                        check=False,
                    )
        else:
            _ip(
                "link",
                "add",
                a.dev,
                "netns",
                a.name,
                "type",
                "veth",
                "peer",
                "name",
                b.dev,
                "netns",
                b.name,
            )
        for ns in (a, b):
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.addr}/24", "dev", ns.dev)
            _ip("-n", ns.name, "link", "set", ns.dev, "up")
            _ip("-n", ns.name, "route", "add", "224.0.0.0/4", "dev", ns.dev)
        if relay:
            for ns in (a, b):
                ns.call(_complete_frames, ns.dev)
            pair.impair()
        yield pair
    finally:
        pair._stop_relay()
        _delete(made)


@contextlib.contextmanager
def namespace_of_own(name: str | None = None) -> Iterator[str]:
    """One empty namespace (loopback only), deleted afterwards; yields its name."""
    name = name or f"tn{unique_prefix()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _delete([name])


def enter_netns(name: str) -> None:
    """Move the calling thread (in a single-threaded child: the process) into ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


ETHTOOL_STXCSUM = 0x17  # linux/ethtool.h: set TX checksum offload
ETHTOOL_SGSO = 0x24  # set generic segmentation offload
SIOCETHTOOL = 0x8946


def ethtool_set(dev: str, cmd: int, value: int) -> None:
    """One ETHTOOL_S* value on ``dev`` in this namespace (the ``ethtool`` tool may be
    missing). The relay needs the veth ends to send complete frames: with checksum
    offload a veth hands on UDP/TCP frames whose checksum nobody has filled in yet, which
    are dropped once a relay forwards them as raw frames."""
    import fcntl
    import socket
    import struct

    val = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifreq = struct.pack("16sP", dev.encode(), ctypes.addressof(val)) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


def _complete_frames(dev: str) -> None:
    ethtool_set(dev, ETHTOOL_STXCSUM, 0)
    ethtool_set(dev, ETHTOOL_SGSO, 0)


def call_in_netns(name: str, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
    """Run ``fn(*args)`` in a forked child inside namespace ``name``; its pickled result
    (or traceback) comes back through a pipe. The child ends with os._exit."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        code = 0
        try:
            enter_netns(name)
            out = pickle.dumps(("ok", fn(*args)))
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            out = pickle.dumps(("err", traceback.format_exc()))
            code = 1
        try:
            with os.fdopen(wfd, "wb") as w:
                w.write(out)
        finally:
            os._exit(code)
    os.close(wfd)
    import select

    chunks = []
    try:
        with os.fdopen(rfd, "rb") as r:
            while True:
                ready, _, _ = select.select([r], [], [], timeout)
                if not ready:
                    os.kill(pid, 9)
                    raise NamespaceError(f"{fn.__name__} in {name}: no answer in {timeout} s")
                data = os.read(r.fileno(), 1 << 16)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.waitpid(pid, 0)
    if not chunks:
        raise NamespaceError(f"{fn.__name__} in {name}: the child died without an answer")
    status, value = pickle.loads(b"".join(chunks))
    if status != "ok":
        raise NamespaceError(f"{fn.__name__} in {name} failed:\n{value}")
    return value


@pytest.fixture
def netns_pair() -> Iterator[VethPair]:
    """Two namespaces joined by a veth pair on 192.0.2.0/24 (module doc); skipped, with
    the reason, where namespaces cannot be made."""
    if reason := unavailable():
        pytest.skip(f"no network namespaces: {reason}")
    with veth_pair() as pair:
        yield pair


@pytest.fixture
def impaired_pair() -> Iterator[VethPair]:
    """Like ``netns_pair``, but the link runs through the relay, so ``pair.impair(...)``
    (loss, duplication, reordering, delay, cut) works with or without netem."""
    if reason := unavailable():
        pytest.skip(f"no network namespaces: {reason}")
    with veth_pair(relay=True) as pair:
        yield pair
