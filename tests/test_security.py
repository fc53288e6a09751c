"""Root's tools never act on what another user planted or wrote (issue 9, security).

A throwaway unprivileged user plays the attacker. Its files are made by root and handed to
it with chown: what the node sees (an object in /dev/shm owned by someone else) is exactly
what the user could have made, and the user needs no Python of its own (root's interpreter
lives in /root, which it may not read).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import shm_leftovers

import tipcshm
from tipcshm import proc, rundir
from tipcshm.errors import UntrustedObject
from tipcshm.shm.layout import NodeSegment, NodeState
from tipcshm.testing import start_node, stop_node


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tipcshm.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def stranger() -> Iterator[pwd.struct_passwd]:
    """A throwaway unprivileged user (and its group), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a throwaway user needs root")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"tsh{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An innocent process whose pid an attacker writes into shared memory."""
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def plant_segment(node: str, owner: int, pid: int) -> str:
    """A node segment that looks alive and names ``pid`` as its supervisor and worker."""
    seg = NodeSegment.create(node)
    start = proc.start_time(pid)
    assert start is not None
    seg.set_supervisor(pid, start)
    seg.set_nametable_worker(pid, start)
    seg.restore_fixed(NodeState.READY)
    seg.close()
    path = f"/dev/shm/tipcshm.{node}"
    os.chown(path, owner, owner)
    return path


def test_a_planted_segment_is_refused_and_nobody_is_signalled(
    node_name: str, stranger: pwd.struct_passwd, victim: subprocess.Popen[bytes]
) -> None:
    path = plant_segment(node_name, stranger.pw_uid, victim.pid)
    try:
        out = cli("start", "--name", node_name)
        assert out.returncode != 0
        assert path in out.stderr and f"uid {stranger.pw_uid}" in out.stderr, out.stderr
        out = cli("stop", "--name", node_name)
        assert out.returncode != 0 and path in out.stderr, out.stderr
        with pytest.raises(UntrustedObject, match=str(stranger.pw_uid)) as info:
            tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        assert isinstance(info.value, PermissionError)
        assert victim.poll() is None, "a pid written by another user was signalled"
        assert os.path.exists(path), "another user's file was used or removed"
    finally:
        os.unlink(path)
        rundir.remove_files(node_name)


def test_stop_signals_the_recorded_supervisor_not_the_pid_in_shared_memory(
    node_name: str, victim: subprocess.Popen[bytes]
) -> None:
    start_node(node_name)
    try:
        record = rundir.read_record(node_name)
        assert record is not None
        seg = NodeSegment.attach(node_name)
        start = proc.start_time(victim.pid)
        assert start is not None
        seg.set_supervisor(victim.pid, start)  # what any process attached to the node can do
        seg.close()
        assert cli("stop", "--name", node_name).returncode == 0
        assert not proc.alive(*record), "the real supervisor still runs"
        assert victim.poll() is None, "stop signalled the pid written into shared memory"
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []


def test_the_supervisor_restores_what_others_scribble_on_its_header(node: str) -> None:
    seg = NodeSegment.attach(node)
    try:
        addr, sup = seg.addr, seg.supervisor
        seg.set_identity(b"forged".ljust(16, b"\0"), 0x1234)
        seg.set_supervisor(1, 1)
        seg.state = NodeState.STOPPING
        deadline = time.monotonic() + 10
        while (seg.addr, seg.supervisor, seg.state) != (addr, sup, NodeState.READY):
            assert time.monotonic() < deadline, "the header stayed forged"
            time.sleep(0.01)
    finally:
        seg.close()
    with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node) as s:
        assert s.getsockname()[1] == addr


def test_node_files_are_private_and_the_log_goes_with_stop(node_name: str) -> None:
    start_node(node_name)
    try:
        directory = rundir.runtime_dir()
        st = os.stat(directory)
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
        for path in (rundir.log_path(node_name), rundir.record_path(node_name)):
            st = os.stat(path)
            assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600, path
    finally:
        out = cli("stop", "--name", node_name, "--keep-log")
    assert out.returncode == 0, out.stderr
    assert os.path.exists(rundir.log_path(node_name)), "--keep-log removed the log"
    assert not os.path.exists(rundir.record_path(node_name))
    assert not os.path.exists(rundir.lock_path(node_name))
    os.unlink(rundir.log_path(node_name))


def test_a_symlink_in_place_of_the_log_is_refused(node_name: str, tmp_path: object) -> None:
    target = os.path.join(str(tmp_path), "precious")
    with open(target, "w") as f:
        f.write("keep me")
    os.symlink(target, rundir.log_path(node_name))
    try:
        out = cli("start", "--name", node_name)
        assert out.returncode != 0 and "symbolic link" in out.stderr, out.stderr
        with open(target) as f:
            assert f.read() == "keep me"
    finally:
        os.unlink(rundir.log_path(node_name))
        stop_node(node_name)


def test_the_log_is_capped(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "node.log")
    with open(path, "a") as stream:
        handler = rundir.CappedLogHandler(stream, limit=4096)
        logger = logging.getLogger(f"tipcshm.test.{secrets.token_hex(3)}")
        logger.propagate = False
        logger.addHandler(handler)
        for i in range(2000):
            logger.warning("malformed request %d from a flooding client", i)
        logger.removeHandler(handler)
    size = os.path.getsize(path)
    assert 0 < size <= 4096 + 200, size
    with open(path) as f:
        text = f.read()
    assert "malformed request 1999" in text and "log restarted" in text


def test_concurrent_starts_one_wins(node_name: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tipcshm.cli", "start", "--name", node_name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        results = [(p.wait(60), *p.communicate()) for p in procs]
        winners = [r for r in results if r[0] == 0]
        assert len(winners) == 1, results
        for code, _out, err in results:
            if code:
                assert "already running" in err, err
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name) as s:
            s.bind((tipcshm.TIPC_ADDR_NAME, 4000, 7, 0))
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []
    assert not os.path.exists(rundir.lock_path(node_name))
    assert not os.path.exists(rundir.record_path(node_name))


def test_supervisor_death_ends_blocked_calls_at_once(node_name: str) -> None:
    start_node(node_name)
    record = rundir.read_record(node_name)
    assert record is not None
    import psutil

    workers = [c.pid for c in psutil.Process(record[0]).children()]
    assert workers, "the supervisor runs no worker"
    try:
        receiver = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        server = tipcshm.socket(
            tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name
        )  # never reads: the sender fills it and blocks
        server.bind((tipcshm.TIPC_ADDR_NAME, 4100, 1, 0))
        sender = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        ended: dict[str, tuple[float, BaseException]] = {}

        def blocked(what: str, call: object) -> None:
            try:
                call()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
                ended[what] = (time.monotonic(), exc)

        full = threading.Event()
        dest = (tipcshm.TIPC_ADDR_NAME, 4100, 1, 0)

        def flood() -> None:
            sender.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    sender.sendto(b"x" * 1000, dest)
            sender.setblocking(True)
            full.set()
            while True:
                sender.sendto(b"x" * 1000, dest)

        listener = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node_name)
        listener.bind((tipcshm.TIPC_ADDR_NAME, 4101, 1, 0))
        listener.listen()
        client = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=node_name)
        stream_listener = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_STREAM, node=node_name)
        stream_listener.bind((tipcshm.TIPC_ADDR_NAME, 4101, 2, 0))
        stream_listener.listen()
        accepted: list[tipcshm.Socket] = []
        acceptor = threading.Thread(target=lambda: accepted.append(stream_listener.accept()[0]))
        acceptor.start()
        client.connect((tipcshm.TIPC_ADDR_NAME, 4101, 2, 0))
        acceptor.join(10)
        threads = [
            threading.Thread(target=blocked, args=("recv", lambda: receiver.recv(10))),
            threading.Thread(target=blocked, args=("send", flood)),
            threading.Thread(target=blocked, args=("accept", listener.accept)),
            threading.Thread(target=blocked, args=("conn recv", lambda: accepted[0].recv(10))),
            threading.Thread(target=blocked, args=("conn client recv", lambda: client.recv(10))),
        ]
        for t in threads:
            t.start()
        assert full.wait(10), "the receiver never filled up"
        killed = time.monotonic()
        os.kill(record[0], signal.SIGKILL)
        for t in threads:
            t.join(10)
            assert not t.is_alive(), "a blocked call outlived the supervisor"
        for what in ("recv", "send", "accept", "conn recv", "conn client recv"):
            when, exc = ended[what]
            assert isinstance(exc, tipcshm.NodeNotRunning), (what, exc)
            assert when - killed < 0.5, f"{what} took {when - killed:.3f} s"
        with pytest.raises(tipcshm.NodeNotRunning):
            receiver.recv(10)
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(w) and psutil.Process(w).status() != "zombie" for w in workers):
            assert time.monotonic() < deadline, "the workers outlived their supervisor"
            time.sleep(0.01)
        # A new node under the same name: the old sockets stay dead and deliver nothing.
        start_node(node_name)
        with tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name) as fresh:
            fresh.bind((tipcshm.TIPC_ADDR_NAME, 4100, 1, 0))
            with pytest.raises(tipcshm.NodeNotRunning):
                sender.sendto(b"old", (tipcshm.TIPC_ADDR_NAME, 4100, 1, 0))
            fresh.settimeout(0.2)
            with pytest.raises(TimeoutError):
                fresh.recv(10)
        for s in (receiver, server, sender, listener, client, stream_listener, *accepted):
            s.close()
    finally:
        stop_node(node_name)
    assert shm_leftovers(node_name) == []


def test_runtime_dir_of_another_owner_is_refused(
    stranger: pwd.struct_passwd, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.path.join(str(tmp_path), "rundir")
    os.mkdir(path, 0o700)
    os.chown(path, stranger.pw_uid, stranger.pw_gid)
    monkeypatch.setenv(rundir.RUNDIR_ENV, path)
    with pytest.raises(UntrustedObject, match="owned by uid"):
        rundir.runtime_dir()
    with contextlib.suppress(OSError):
        os.rmdir(path)


def as_user(pw: pwd.struct_passwd, fn: Callable[[], object], timeout: float = 30) -> object:
    """Run ``fn`` in a forked child that became ``pw`` (a member of its own group only).

    The interpreter lives under /root, which the user may not read: modules the child
    imports lazily are imported here first.
    """
    import secrets  # noqa: F401
    import selectors  # noqa: F401

    import numpy.typing  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def target() -> None:
        os.setgroups([pw.pw_gid])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        try:
            writer.send(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - carried to the test process
            writer.send(("error", f"{type(exc).__name__}: {exc}"))

    child = ctx.Process(target=target)
    child.start()
    try:
        assert reader.poll(timeout), "the member process did not answer"
        status, value = reader.recv()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    assert status == "ok", value
    return value


def test_a_group_member_uses_the_node_but_cannot_turn_the_owners_tools(
    node_name: str,
    stranger: pwd.struct_passwd,
    victim: subprocess.Popen[bytes],
    tmp_path: object,
) -> None:
    precious = os.path.join(str(tmp_path), "precious")
    with open(precious, "w") as f:
        f.write("keep me")
    start_node(node_name, "--group", str(stranger.pw_gid))
    try:
        server = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
        server.bind((tipcshm.TIPC_ADDR_NAME, 6000, 1, 0))
        server.settimeout(20)

        def member() -> object:
            s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node_name)
            s.bind((tipcshm.TIPC_ADDR_NAME, 6001, 1, 0))
            with tipcshm.subscribe((tipcshm.TIPC_ADDR_NAME, 6000, 1, 0), node=node_name) as sub:
                event = sub.get(10)
                assert event is not None and event.kind == "published", event
            s.sendto(b"from the member", (tipcshm.TIPC_ADDR_NAME, 6000, 1, 0))
            s.settimeout(10)
            reply = s.recv(100)
            # Now turn hostile: name an innocent process in the node's tables, and put a
            # symlink to a file of the owner's where the owner's tools remove inboxes.
            seg = NodeSegment.attach(node_name)
            start = proc.start_time(victim.pid)
            assert start is not None
            seg.register_process(victim.pid, start, 1)
            seg.alloc_socket(0x0BADC0DE, victim.pid, start, tipcshm.SOCK_RDM)
            seg.close()
            os.symlink(precious, f"/dev/shm/tipcshm.{node_name}.in.0badc0de")
            os.symlink(precious, f"/dev/shm/tipcshm.{node_name}.in.0badc0de.bell")
            return reply

        box: list[object] = []
        runner = threading.Thread(target=lambda: box.append(as_user(stranger, member)))
        runner.start()
        data, sender = server.recvfrom(100)
        assert data == b"from the member"
        server.sendto(b"hello member", (tipcshm.TIPC_ADDR_NAME, 6001, 1, 0))
        runner.join(60)
        assert box == [b"hello member"]
        server.close()
    finally:
        stop_node(node_name)
    assert victim.poll() is None, "the owner's tools signalled a pid a member wrote"
    with open(precious) as f:
        assert f.read() == "keep me"
    assert shm_leftovers(node_name) == []


def test_supervisor_death_reaches_a_process_with_many_descriptors(node_name: str) -> None:
    """The watch must not use select(): descriptors above 1023 are ordinary in servers."""
    from helpers import Child

    start_node(node_name)
    child = Child(
        node_name,
        """
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        spare = [os.dup(0) for _ in range(1100)]
        s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
        print("ready", flush=True)
        try:
            s.recv(10)
        except tipcshm.NodeNotRunning:
            print("node not running", flush=True)
        """,
    )
    try:
        child.expect("ready")
        record = rundir.read_record(node_name)
        assert record is not None
        os.kill(record[0], signal.SIGKILL)
        child.expect("node not running", timeout=10)
        child.finish()
    finally:
        child.close()
        stop_node(node_name)
    assert shm_leftovers(node_name) == []
