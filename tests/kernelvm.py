"""Linux kernel TIPC nodes in VMs, and tipcshm nodes next to them, for interop tests.

A thin layer over the kernel-TIPC harness (``tipcvm.py``, see its README; found as
tools/interop/sockcheck.py finds it): :class:`KernelVMs` boots N VMs in a network
namespace of its own (``kvm<pid>x<n>``), with a bridge whose host side is 192.0.2.1 (and
192.0.2.2.. with ``host_octets``); VM k is 192.0.2.(10+k), TIPC node 0xc000020a+k
(identity derived from its IP), bearer ``udp:b1``, echo servers on VM 1 (or every VM):
RDM {18888, 17}, STREAM {18888, 18}, SEQPACKET {18888, 19}, and RDM {18888, 100+k} on
every VM; with ``tools=True`` the VMs also have the project's /bin/sockcheck and
/bin/groupcheck (tools/interop). ``exec(k, cmd)`` runs a shell command in VM k;
``console(k)`` is its console log.
``start_tipcshm_node()`` starts a tipcshm node whose supervisor (and so its bearer worker)
runs inside the namespace; the test process attaches to it through /dev/shm as usual.
Everything is stopped and removed on exit: the nodes by name (their supervisor's pid
record), the VMs by the harness's ``down`` (the PIDs it recorded), the namespace with it.

:func:`unavailable` says why no VM can be booted here (no /dev/kvm, not root, no harness or
build cache); the fixtures skip with that reason. Booting takes seconds, so the fixtures
are module-scoped: one boot per test module.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from netns import Namespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "interop"))

import sockcheck  # noqa: E402 - the harness lookup, shared with the interop tools

SUBNET = "192.0.2"
ECHO_TYPE = 18888
RDM_ECHO, STREAM_ECHO, SEQPACKET_ECHO = 17, 18, 19
_counter = itertools.count(1)


class Unavailable(Exception):
    """No kernel VM (or no tipcshm node next to it) can be had here: why."""


def unavailable() -> str | None:
    try:
        sockcheck.prerequisites()
    except sockcheck.Skipped as why:
        return str(why)
    return None


def vm_ip(k: int) -> str:
    return f"{SUBNET}.{10 + k}"


def vm_node(k: int) -> int:
    """VM k's TIPC node address: the hash of an IPv4-derived identity is the address."""
    return int.from_bytes(bytes(int(x) for x in vm_ip(k).split(".")), "big")


def host_node(octet: int = 1) -> int:
    return int.from_bytes(bytes([192, 0, 2, octet]), "big")


class KernelVMs:
    """N kernel TIPC VMs in a namespace of their own (module doc)."""

    def __init__(
        self,
        n: int = 1,
        *,
        mode: str = "mcast",
        echo: str = "first",
        host_octets: tuple[int, ...] = (1,),
        extra: tuple[str, ...] = (),
        tools: bool = False,
    ) -> None:
        self.n = n
        self.tools = tools  # boot an initramfs that also holds /bin/sockcheck, /bin/groupcheck
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._env: dict[str, str] | None = None
        self.ns = f"kvm{os.getpid()}x{next(_counter)}"
        self.mode, self.echo, self.host_octets, self.extra = mode, echo, host_octets, extra
        self.host = Namespace(self.ns, "br0", f"{SUBNET}.{host_octets[0]}")
        self.nodes: list[str] = []
        self.harness: Path | None = None
        self.booted = False

    def _tipcvm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.harness is not None
        return subprocess.run(
            [sys.executable, "tipcvm.py", "--ns", self.ns, *args],
            cwd=self.harness,
            env=self._env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    def __enter__(self) -> KernelVMs:
        try:
            self.harness, base_env, base_initrd = sockcheck.prerequisites()
        except sockcheck.Skipped as why:
            raise Unavailable(str(why)) from None
        if self.tools:  # the project's VM programs, compiled and appended as sockcheck.py does
            self._workdir = tempfile.TemporaryDirectory(prefix="kernelvm.")
            cache = sockcheck.build_cache(Path(self._workdir.name), base_env, base_initrd)
            self._env = dict(os.environ, TIPCVM_CACHE=str(cache))
        args = ["up", "-n", str(self.n), "--status", "0", "--mode", self.mode, "--echo", self.echo]
        args += ["--host-octets", ",".join(map(str, self.host_octets)), *self.extra]
        self.booted = True
        up = self._tipcvm(*args, timeout=180)
        if up.returncode != 0:
            self.close()
            raise RuntimeError(f"the kernel VMs did not boot:\n{up.stdout}{up.stderr}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for name in list(self.nodes):
            self.stop_tipcshm_node(name)
        if self.booted:
            self.booted = False
            self._tipcvm("down", timeout=60)
            last = Path(os.environ.get("TIPCVM_RUN", "/run/tipcvm")) / f"{self.ns}.last"
            if last.is_dir():
                shutil.rmtree(last)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def exec(self, k: int, cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``cmd`` with /bin/sh in VM k (its stdout, stderr and exit status)."""
        return self._tipcvm("exec", "--timeout", str(timeout), str(k), cmd, timeout=timeout + 15)

    def background(self, k: int, cmd: str) -> int:
        """Start ``cmd`` in VM k in the background (output to its console); its pid."""
        run = self.exec(k, f"{cmd} >/dev/console 2>&1 & echo $!")
        return int(run.stdout.strip().splitlines()[-1])

    def console(self, k: int) -> str:
        path = (
            Path(os.environ.get("TIPCVM_RUN", "/run/tipcvm")) / self.ns / f"vm{k}" / "console.log"
        )
        return path.read_text(errors="replace")

    def wait_console(self, k: int, text: str, timeout: float = 10, start: int = 0) -> str:
        """Until VM k's console shows ``text`` after offset ``start``; the console."""
        end = time.monotonic() + timeout
        while True:
            con = self.console(k)
            if text in con[start:]:
                return con
            if time.monotonic() > end:
                raise AssertionError(f"vm{k} console has no {text!r} after {timeout} s")
            time.sleep(0.1)

    def wait_kernel(self, k: int, cmd: str, want: Any, timeout: float = 10) -> str:
        """Run ``cmd`` in VM k until ``want(stdout)`` is true; the last stdout."""
        end = time.monotonic() + timeout
        while True:
            out = self.exec(k, cmd).stdout
            if want(out):
                return out
            if time.monotonic() > end:
                raise AssertionError(f"vm{k}: `{cmd}` still shows, after {timeout} s:\n{out}")
            time.sleep(0.2)

    def start_tipcshm_node(
        self,
        name: str | None = None,
        *,
        octet: int | None = None,
        remotes: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> str:
        """A tipcshm node with a UDP bearer on host address .``octet`` (default: the first
        host address), supervisor inside the namespace; its name."""
        from tipcshm.testing import unique_node_name

        name = name or unique_node_name("kv")
        ip = f"{SUBNET}.{octet or self.host_octets[0]}"
        argv = [sys.executable, "-m", "tipcshm.cli", "start", "--name", name]
        argv += ["--bearer", f"udp:{ip}"]
        for remote in remotes:
            argv += ["--remote", remote]
        run = self.host.run(argv + list(extra), timeout=60)
        if run.returncode != 0:
            raise Unavailable(
                f"`tipcshm start --bearer udp:{ip}` failed: "
                f"{(run.stderr or run.stdout).strip().splitlines()[-1]}"
            )
        self.nodes.append(name)
        return name

    def stop_tipcshm_node(self, name: str) -> None:
        from tipcshm.testing import stop_node

        if name in self.nodes:
            self.nodes.remove(name)
        stop_node(name)


def links_up(node: str) -> list[int]:
    """Peer node addresses of ``node``'s links that are up (its segment's link table)."""
    from tipcshm.shm.layout import NodeSegment

    seg = NodeSegment.attach(node)
    try:
        return [peer for _row, peer in seg.link_rows_up()]
    finally:
        seg.close()


def wait_link(node: str, peer: int, up: bool = True, timeout: float = 10) -> float:
    """Until ``node`` has (or no longer has) a link up to ``peer``; the seconds it took."""
    t0 = time.monotonic()
    while (peer in links_up(node)) != up:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"{node}: link to {peer:#010x} not {'up' if up else 'down'} after {timeout} s"
            )
        time.sleep(0.02)
    return time.monotonic() - t0


def tipcshm_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tipcshm.cli", *args], capture_output=True, text=True, timeout=60
    )
