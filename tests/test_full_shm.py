"""A full /dev/shm is an error with advice, never SIGBUS; start and stop still work.

The node runs in a private mount namespace whose /dev/shm is a small tmpfs, so the test can
fill it without touching the machine's own (and leaves nothing there: the tmpfs goes with
the namespace). Needs root and unshare(1); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tipcshm import rundir

SCRIPT = textwrap.dedent(
    """
    import errno, os, subprocess, sys
    import tipcshm

    node = sys.argv[1]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tipcshm.cli", *args, "--name", node],
            capture_output=True, text=True, timeout=60,
        )

    def fill(leave):
        st = os.statvfs("/dev/shm")
        fd = os.open("/dev/shm/filler", os.O_CREAT | os.O_WRONLY, 0o600)
        size = os.fstat(fd).st_size
        room = st.f_bavail * st.f_frsize - leave
        if room > 0:
            os.posix_fallocate(fd, size, room)
        os.close(fd)

    fill(1 << 20)
    out = cli("start")
    assert out.returncode != 0 and "no space in /dev/shm" in out.stderr, out
    assert "--shm-size" in out.stderr, out.stderr
    assert sorted(os.listdir("/dev/shm")) == ["filler"], os.listdir("/dev/shm")
    print("start on a full /dev/shm: clear error")

    os.unlink("/dev/shm/filler")
    out = cli("start", "--lanes", "4")
    assert out.returncode == 0, out
    server = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    server.bind((tipcshm.TIPC_ADDR_NAME, 7000, 1, 0))
    client = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    fill(0)
    try:
        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC and "--shm-size" in str(exc), exc
    else:
        raise AssertionError("a socket was created on a full /dev/shm")
    print("socket on a full /dev/shm: ENOSPC")
    try:
        client.sendto(b"x", (tipcshm.TIPC_ADDR_NAME, 7000, 1, 0))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    else:
        raise AssertionError("a new lane was written on a full /dev/shm")
    print("first send to a new destination on a full /dev/shm: ENOSPC")
    client.close()
    server.close()
    out = cli("stop")
    assert out.returncode == 0, out
    assert sorted(os.listdir("/dev/shm")) == ["filler"], os.listdir("/dev/shm")
    print("stop on a full /dev/shm: clean")
    """
)


def test_a_full_dev_shm_is_an_error_not_sigbus(node_name: str) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/shm")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    shell = (
        f'mount -t tmpfs -o size=32m tipcshm-test /dev/shm && exec "{sys.executable}" -c "$0" "$1"'
    )
    try:
        out = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                shell,
                SCRIPT,
                node_name,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        rundir.remove_files(node_name)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "stop on a full /dev/shm: clean" in out.stdout
