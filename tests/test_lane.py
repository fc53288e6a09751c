"""Unit and property tests of tipcshm.shm.lane (inboxes, lanes) and tipcshm.proc."""

from __future__ import annotations

import errno
import os
import secrets
import selectors
import signal
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import posix_ipc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tipcshm import proc
from tipcshm.shm import lane as L
from tipcshm.shm.lane import Inbox, InboxClosed, InboxError, InboxNoLane, full_fence

# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------


def unique_name(tag: str = "t") -> str:
    return f"/tipcshm.test{os.getpid()}.{tag}.in.{secrets.token_hex(4)}"


def shm_path(name: str) -> str:
    return "/dev/shm" + name


@pytest.fixture
def names() -> Iterator[Callable[[], str]]:
    """Unique inbox names; every one handed out is unlinked afterwards, even on failure."""
    made: list[str] = []

    def new() -> str:
        n = unique_name()
        made.append(n)
        return n

    yield new
    for n in made:
        Inbox.unlink_name(n)
        assert not os.path.exists(shm_path(n))


@pytest.fixture
def make(names: Callable[[], str]) -> Iterator[Callable[..., Inbox]]:
    """Inbox factory (consumer side); detached and unlinked afterwards."""
    made: list[Inbox] = []

    def new(**kw: Any) -> Inbox:
        ib = Inbox.create(names(), **kw)
        made.append(ib)
        return ib

    yield new
    for ib in made:
        ib.detach()


@pytest.fixture
def attach() -> Iterator[Callable[[str], Inbox]]:
    made: list[Inbox] = []

    def new(name: str) -> Inbox:
        ib = Inbox.attach(name)
        made.append(ib)
        return ib

    yield new
    for ib in made:
        ib.detach()


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Pids of forked children; any still running at teardown are killed and reaped."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def fork(pids: list[int], fn: Callable[[], None]) -> int:
    """Run ``fn`` in a child that leaves through os._exit (0 = fn returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    pids.append(pid)
    return pid


def join(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def read_one(ib: Inbox) -> bytes | None:
    r = ib.poll()
    if r is None:
        return None
    buf, off, n, lane = r
    data = bytes(buf[off : off + n])
    ib.release(lane)
    return data


def drain(ib: Inbox) -> list[bytes]:
    out = []
    while (d := read_one(ib)) is not None:
        out.append(d)
    return out


# ----------------------------------------------------------------------------------------
# proc
# ----------------------------------------------------------------------------------------


def test_proc_self() -> None:
    pid, st = proc.self_token()
    assert pid == os.getpid()
    assert st == proc.start_time(pid)
    assert proc.alive(pid, st)
    assert not proc.alive(pid, st + 1)  # same pid, other start time: pid reuse
    assert proc.self_token() is proc.self_token()  # cached


def test_proc_missing_pid() -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        beyond = int(f.read()) + 1
    assert proc.start_time(beyond) is None
    assert not proc.alive(beyond, 1)
    assert proc.start_time(0) is None and proc.start_time(-3) is None


def test_proc_comm_with_spaces_and_parens(children: list[int]) -> None:
    r, w = os.pipe()

    def child() -> None:
        with open("/proc/self/comm", "w") as f:
            f.write("a) b (c) 9 9")
        os.write(w, b"x")
        time.sleep(30)

    pid = fork(children, child)
    assert os.read(r, 1) == b"x"
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            assert b"a) b (c) 9 9" in f.read()
        st = proc.start_time(pid)
        assert st is not None and st >= proc.self_token()[1]
        assert proc.alive(pid, st)
    finally:
        os.kill(pid, signal.SIGKILL)
        join(pid)
    assert proc.start_time(pid) is None
    assert not proc.alive(pid, st)


def test_proc_zombie_is_dead(children: list[int]) -> None:
    pid = fork(children, lambda: None)
    deadline = time.monotonic() + 10
    while proc.stat_state(pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.001)
    st = proc.start_time(pid)
    assert st is not None  # still listed ...
    assert not proc.alive(pid, st)  # ... but will never write again
    assert join(pid) == 0


def test_proc_token_recomputed_after_fork(children: list[int]) -> None:
    parent = proc.self_token()
    r, w = os.pipe()

    def child() -> None:
        os.write(w, struct.pack("qq", *proc.self_token()))

    pid = fork(children, child)
    got = struct.unpack("qq", os.read(r, 16))
    assert join(pid) == 0
    assert got[0] == pid and got != parent
    assert proc.self_token() == parent


# ----------------------------------------------------------------------------------------
# life cycle
# ----------------------------------------------------------------------------------------


def test_create_attach_unlink(names: Callable[[], str]) -> None:
    name = names()
    ib = Inbox.create(name)
    assert (ib.name, ib.lanes, ib.lane_bytes) == (name, 64, 256 * 1024)
    assert ib.max_frame >= 66060
    assert ib.owner == proc.self_token() and ib.owner_alive()
    assert not ib.closed
    other = Inbox.attach(name)
    assert (other.lanes, other.lane_bytes, other.max_frame) == (64, 256 * 1024, ib.max_frame)
    assert other.owner == ib.owner
    other.detach()
    other.detach()  # idempotent
    ib.unlink()
    ib.unlink()  # idempotent
    assert not os.path.exists(shm_path(name))
    with pytest.raises(FileNotFoundError):
        Inbox.attach(name)
    assert not os.path.exists(shm_path(name + ".bell"))
    ib.detach()
    Inbox.unlink_name(name)  # missing is fine


def test_create_exclusive(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=2, lane_bytes=4096)
    with pytest.raises(FileExistsError):
        Inbox.create(ib.name)
    assert Inbox.attach(ib.name).lanes == 2  # the first one is untouched


def test_create_bell_taken_cleans_segment(names: Callable[[], str]) -> None:
    name = names()
    os.mkfifo(shm_path(name + ".bell"), 0o600)
    with pytest.raises(FileExistsError):
        Inbox.create(name)
    assert not os.path.exists(shm_path(name))  # our half-made segment went away


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660])
@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_mode_exact_despite_umask(names: Callable[[], str], mode: int, umask: int) -> None:
    name = names()
    old = os.umask(umask)
    try:
        ib = Inbox.create(name, lanes=1, lane_bytes=4096, mode=mode)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(shm_path(name)).st_mode) == mode
        assert stat.S_IMODE(os.stat(shm_path(name + ".bell")).st_mode) == mode
    finally:
        ib.detach()


def test_default_mode_0600(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    assert stat.S_IMODE(os.stat(shm_path(ib.name)).st_mode) == 0o600


@pytest.mark.parametrize(
    "kw",
    [
        {"lane_bytes": 1000},
        {"lane_bytes": 32},
        {"lane_bytes": 1 << 31},
        {"lanes": 0},
        {"lanes": L.MAX_LANES + 1},
        {"mode": 0o666},
        {"mode": 0o602},
        {"mode": 0o4600},
    ],
)
def test_create_validates(names: Callable[[], str], kw: dict[str, Any]) -> None:
    name = names()
    with pytest.raises(ValueError):
        Inbox.create(name, **kw)
    assert not os.path.exists(shm_path(name))


@pytest.mark.parametrize("bad", ["noslash", "/a/b", "/", "/" + "x" * 260])
def test_bad_names(bad: str) -> None:
    with pytest.raises(ValueError):
        Inbox.create(bad)


def test_attach_validates_layout(names: Callable[[], str]) -> None:
    name = names()
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=8192)
    os.close(shm.fd)
    with pytest.raises(InboxError) as ei:
        Inbox.attach(name)
    assert ei.value.errno == errno.EPROTO and name in str(ei.value)
    Inbox.unlink_name(name)

    ib = Inbox.create(name, lanes=1, lane_bytes=4096)
    ib._hq[L._VERSION] = L.LAYOUT_VERSION + 1
    with pytest.raises(InboxError, match="layout version"):
        Inbox.attach(name)
    ib._hq[L._VERSION] = L.LAYOUT_VERSION
    ib._hq[L._LANES] = 2
    with pytest.raises(InboxError, match="inconsistent"):
        Inbox.attach(name)
    ib._hq[L._LANES] = 1
    Inbox.attach(name).detach()
    ib.detach()


def test_context_manager_detaches(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    with Inbox.attach(ib.name) as other:
        p = other.producer()
        assert p.write(b"x")
    with pytest.raises(ValueError):  # released view
        p.buf[0]
    assert drain(ib) == [b"x"]


# ----------------------------------------------------------------------------------------
# data path
# ----------------------------------------------------------------------------------------


def test_roundtrip_and_poll_is_idempotent(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=4096)
    p = attach(ib.name).producer()
    assert ib.poll() is None
    off = p.reserve(5)
    assert off is not None and off % 8 == 0
    assert p.reserve(5) == off  # idempotent until commit
    p.buf[off : off + 5] = b"hello"
    assert ib.poll() is None  # not yet published
    p.commit(5)
    r1, r2 = ib.poll(), ib.poll()
    assert r1 is not None and r1 == r2
    buf, o, n, lane = r1
    assert (bytes(buf[o : o + n]), lane) == (b"hello", p.lane)
    ib.release(lane)
    assert ib.poll() is None
    with pytest.raises(InboxError) as ei:
        ib.release(lane)
    assert ei.value.errno == errno.EINVAL


def test_frame_sizes(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1)
    p = attach(ib.name).producer()
    for n in (0, 1, 7, 8, 9, 66060, ib.max_frame):
        data = secrets.token_bytes(n)
        assert p.write(data)
        assert read_one(ib) == data
    with pytest.raises(ValueError):
        p.reserve(ib.max_frame + 1)
    with pytest.raises(ValueError):
        p.reserve(-1)


def test_write_parts(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    words = memoryview(struct.pack("<2Q", 1, 2)).cast("Q")
    assert p.write(b"ab", bytearray(b"cd"), memoryview(b"ef"), words)
    assert read_one(ib) == b"abcdef" + struct.pack("<2Q", 1, 2)


def test_full_then_space(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=256)
    p = attach(ib.name).producer()
    sent = 0
    while p.write(bytes([sent]) * 20):  # 32-byte records
        sent += 1
    assert sent == 256 // 32
    assert p.reserve(20) is None
    assert not p.wait_space(20, 0.01)  # times out, nothing dropped
    assert ib.fill() == (256, 256)
    assert read_one(ib) == bytes([0]) * 20
    assert p.wait_space(20, 0.01)
    assert p.write(b"z" * 20)
    got = drain(ib)
    assert got == [bytes([i]) * 20 for i in range(1, sent)] + [b"z" * 20]
    assert ib.stats()["full_waits"] == 1


def test_wrap_marker(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=256)
    p = attach(ib.name).producer()
    assert ib.max_frame == 120
    assert p.write(b"a" * 100)  # 112-byte record at 0
    assert read_one(ib) == b"a" * 100
    assert p.write(b"b" * 120)  # 128 at 112: 240
    assert p.write(b"c" * 100)  # does not fit in the last 16 bytes: wraps to 0
    assert ib.lane_info(p.lane)["tail"] == 256 + 112
    assert drain(ib) == [b"b" * 120, b"c" * 100]
    assert ib.fill() == (0, 256)


def test_wait_space_wakes_when_drained(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=256)
    p = attach(ib.name).producer()
    while p.write(b"x" * 100):
        pass
    t = threading.Timer(0.05, lambda: read_one(ib))
    t.start()
    t0 = time.monotonic()
    assert p.wait_space(100, 5)
    assert 0.03 < time.monotonic() - t0 < 2
    t.join()


def test_spinning_gives_the_cpu_up(
    make: Callable[..., Inbox], attach, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both spins yield the CPU as they go, so a peer sharing the CPU can run and send
    (or drain) instead of waiting for the spinner's whole budget; see "Spinning and the
    CPU" in tipcshm.shm.lane."""
    yields = [0]
    real = os.sched_yield

    def counting() -> None:
        yields[0] += 1
        real()

    monkeypatch.setattr(L.os, "sched_yield", counting)
    ib = make(lanes=1, lane_bytes=256)
    ib.spin = 0.002
    assert not ib.wait(0.001)  # nothing comes: spins, then gives up
    assert yields[0] > 0
    p = attach(ib.name).producer()
    while p.write(b"x" * 100):
        pass
    yields[0] = 0
    p._inbox.spin = 0.002
    assert not p.wait_space(100, 0.001)  # nobody drains
    assert yields[0] > 0


def test_round_robin_between_lanes(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=4, lane_bytes=4096)
    pa = attach(ib.name).producer()
    pb = attach(ib.name).producer()
    assert pa.lane != pb.lane
    for i in range(5):
        assert pa.write(b"a%d" % i)
    for i in range(5):
        assert pb.write(b"b%d" % i)
    got = drain(ib)
    assert sorted(got) == sorted([b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)])
    assert [g for g in got if g[:1] == b"a"] == [b"a%d" % i for i in range(5)]
    # fairness: strictly alternating while both lanes have frames
    assert [g[:1] for g in got] in ([b"a", b"b"] * 5, [b"b", b"a"] * 5)


def test_new_lane_found_while_busy(make: Callable[..., Inbox], attach) -> None:
    """A producer that joins while another keeps the consumer busy is noticed within one
    batch of the busy lane (the frames that lane had published when it was last read)."""
    ib = make(lanes=4, lane_bytes=4096)
    pa = attach(ib.name).producer()
    for i in range(10):
        pa.write(b"a%d" % i)
    assert read_one(ib) == b"a0"
    pb = attach(ib.name).producer()
    pb.write(b"b")
    for i in range(10, 20):
        pa.write(b"a%d" % i)
    got = drain(ib)
    assert len(got) == 20
    assert got.index(b"b") <= 10


# ----------------------------------------------------------------------------------------
# slots: claim, no lane, dead producers, fork, detach
# ----------------------------------------------------------------------------------------


def test_no_lane(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=4096)
    a, b, c = attach(ib.name), attach(ib.name), attach(ib.name)
    pa, pb = a.producer(), b.producer()
    assert a.producer() is pa  # cached per Inbox object
    assert {pa.lane, pb.lane} == {0, 1}
    with pytest.raises(InboxNoLane) as ei:
        c.producer(overflow=False)
    assert ei.value.errno == errno.ENOBUFS
    assert ib.name in str(ei.value)
    assert isinstance(ei.value, InboxError) and isinstance(ei.value, OSError)


def test_dead_producer_frames_delivered_then_slot_reused(
    make: Callable[..., Inbox], attach, children: list[int]
) -> None:
    ib = make(lanes=1, lane_bytes=4096)

    def child() -> None:
        p = Inbox.attach(ib.name).producer()
        for i in range(10):
            assert p.write(b"frame %d" % i)
        # exits without detaching: the slot stays ACTIVE with a dead owner

    pid = fork(children, child)
    assert join(pid) == 0
    info = ib.lane_info(0)
    assert info["state"] == L.SLOT_ACTIVE and info["pid"] == pid
    late = attach(ib.name)
    with pytest.raises(InboxNoLane):  # dead but undrained: frames must not be lost
        late.producer(overflow=False)
    assert ib.reap() == 0
    assert read_one(ib) == b"frame 0"
    with pytest.raises(InboxNoLane):
        late.producer(overflow=False)
    assert drain(ib) == [b"frame %d" % i for i in range(1, 10)]
    p = late.producer()  # dead and drained: reclaimed
    assert p.lane == 0
    assert ib.lane_info(0)["claims"] == 2
    assert ib.lane_info(0)["pid"] == os.getpid()
    assert p.write(b"new owner")
    assert drain(ib) == [b"new owner"]
    st = ib.stats()
    assert st["frames_read"] == st["frames_written"] == 11


def test_reap_frees_dead_empty_slots(make: Callable[..., Inbox], children: list[int]) -> None:
    ib = make(lanes=2, lane_bytes=4096)

    def child() -> None:
        Inbox.attach(ib.name).producer().write(b"x")

    assert join(fork(children, child)) == 0
    assert drain(ib) == [b"x"]
    assert ib.stats()["lanes_active"] == 1
    assert ib.reap() == 1
    assert ib.stats()["lanes_active"] == 0
    assert ib.lane_info(0)["state"] == L.SLOT_FREE


def test_detach_releases_slot(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    a = Inbox.attach(ib.name)
    p = a.producer()
    a.detach()
    assert ib.lane_info(0)["state"] == L.SLOT_FREE
    with pytest.raises((InboxError, ValueError)):
        p.reserve(1)
    # with frames still queued, the slot becomes ownerless and is reused after draining
    b = Inbox.attach(ib.name)
    assert b.producer().write(b"left behind")
    b.detach()
    assert ib.lane_info(0)["state"] == L.SLOT_ACTIVE and ib.lane_info(0)["pid"] == 0
    c = Inbox.attach(ib.name)
    with pytest.raises(InboxNoLane):
        c.producer(overflow=False)
    assert drain(ib) == [b"left behind"]
    assert c.producer().lane == 0
    c.detach()


def test_fork_invalidates_producer(make: Callable[..., Inbox], attach, children: list[int]) -> None:
    ib = make(lanes=4, lane_bytes=4096)
    ob = attach(ib.name)
    p = ob.producer()
    assert p.write(b"parent 1")
    r, w = os.pipe()

    def child() -> None:
        try:
            p.reserve(8)
        except InboxError as e:
            assert e.errno == errno.ESTALE
        else:
            raise AssertionError("the parent's producer still works in the child")
        q = ob.producer()
        assert q is not p and q.lane != p.lane
        assert q.write(b"child")
        os.write(w, bytes([q.lane]))

    pid = fork(children, child)
    assert join(pid) == 0
    child_lane = os.read(r, 1)[0]
    assert p.write(b"parent 2")  # the parent's producer is untouched
    got = drain(ib)
    assert sorted(got) == [b"child", b"parent 1", b"parent 2"]
    assert ib.lane_info(child_lane)["pid"] == pid


# ----------------------------------------------------------------------------------------
# runs: put_run_locked / poll_run / release_run
# ----------------------------------------------------------------------------------------

HEAD = bytes(range(100, 124))  # a 24-byte header template


def run_frames(first_word: int, data: bytes, piece: int) -> list[bytes]:
    """What put_run_locked(HEAD, first_word, data, piece, ...) writes, frame by frame."""
    head = struct.pack(">I", first_word) + HEAD[4:]
    return [head + data[i : i + piece] for i in range(0, len(data) - piece + 1, piece)]


def put_run(p: L.Producer, first_word: int, data: bytes, piece: int, count: int) -> int:
    with p.lock:
        return p.put_run_locked(HEAD, first_word, data, piece, count)


def test_put_run_reads_back_as_frames(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=1024)
    p = attach(ib.name).producer()
    data = secrets.token_bytes(10 * 40)
    # 64-byte frames, 72-byte records: 14 fit in 1024 bytes
    assert put_run(p, 7, data, 40, 10) == 10
    assert drain(ib) == run_frames(7, data, 40)
    assert put_run(p, 8, data, 40, 10) == 4  # 720 + 4 * 72 = 1008: the lap ends there
    assert put_run(p, 9, data[160:], 40, 6) == 6  # wraps to the next lap first
    assert ib.lane_info(p.lane)["tail"] == 1024 + 6 * 72
    assert drain(ib) == run_frames(8, data[:160], 40) + run_frames(9, data[160:], 40)


def test_put_run_stops_where_the_ring_is_full(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=1024)
    p = attach(ib.name).producer()
    data = secrets.token_bytes(20 * 40)
    assert put_run(p, 1, data, 40, 20) == 14  # 1008 bytes
    assert put_run(p, 1, data[560:], 40, 6) == 0  # nothing written, nothing dropped
    assert read_one(ib) is not None and read_one(ib) is not None
    assert put_run(p, 1, data[560:], 40, 6) == 2  # wraps: the 144 bytes read are free
    assert put_run(p, 1, data[640:], 40, 4) == 0
    assert drain(ib) == run_frames(1, data[80:640], 40)
    assert put_run(p, 1, data[640:], 40, 4) == 4
    assert drain(ib) == run_frames(1, data[640:], 40)


def test_put_run_refuses_what_put_locked_refuses(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=1024)
    other = attach(ib.name)
    p = other.producer()
    with pytest.raises(ValueError):
        put_run(p, 1, bytes(1000), ib.max_frame - len(HEAD) + 1, 1)
    ib.mark_closed()
    assert put_run(p, 1, bytes(400), 40, 10) == 0
    other.detach()
    with pytest.raises(InboxError) as ei:
        put_run(p, 1, bytes(400), 40, 10)
    assert ei.value.errno == errno.ESTALE


def test_detach_unmaps_a_producer_that_wrote_runs(
    names: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    """put_run_locked's numpy view of the ring must not keep detach() from unmapping."""
    name = names()
    ib = Inbox.create(name, lanes=1, lane_bytes=1024)
    other = Inbox.attach(name)
    try:
        assert put_run(other.producer(), 1, bytes(400), 40, 10) == 10
        with caplog.at_level("DEBUG", logger="tipcshm.shm.lane"):
            other.detach()
        assert "still exported" not in caplog.text
    finally:
        other.detach()
        ib.detach()
        ib.unlink()


def test_poll_run_takes_frames_alike_and_back_to_back(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    data = secrets.token_bytes(8 * 40)
    assert put_run(p, 5, data[:160], 40, 4) == 4
    assert put_run(p, 6, data[160:], 40, 4) == 4  # another first word: another run
    assert p.write(b"x" * 64)  # same size, other bytes
    with pytest.raises(InboxError) as ei:
        ib.poll_run(0, 24, 10)  # nothing polled yet
    assert ei.value.errno == errno.EINVAL
    buf, off, n, lane = ib.poll()
    run = ib.poll_run(lane, 24, 10)
    assert run.shape == (4, 64) and not run.flags.writeable
    assert [bytes(r) for r in run] == run_frames(5, data[:160], 40)
    assert len(ib.poll_run(lane, 24, 3)) == 3  # at most the limit
    assert len(ib.poll_run(lane, 4, 10)) == 4  # the first words differ after 4 frames
    with pytest.raises(InboxError):
        ib.release_run(lane, 5)  # more than the run: would consume frames never looked at
    ib.release_run(lane, 2)
    with pytest.raises(InboxError):
        ib.release_run(lane, 1)  # the run is gone with its release
    ib.poll()
    assert [bytes(r) for r in ib.poll_run(lane, 24, 10)] == run_frames(5, data[80:160], 40)
    ib.release_run(lane, 2)
    ib.poll()
    assert len(ib.poll_run(lane, 0, 10)) == 5  # the length word alone: x*64 joins the run
    assert len(ib.poll_run(lane, 24, 10)) == 4
    ib.release_run(lane, 4)
    assert drain(ib) == [b"x" * 64]


def test_poll_run_ends_at_the_published_tail_and_at_a_wrap(
    make: Callable[..., Inbox], attach
) -> None:
    ib = make(lanes=1, lane_bytes=1024)
    p = attach(ib.name).producer()
    data = secrets.token_bytes(15 * 40)
    assert put_run(p, 3, data[:400], 40, 10) == 10
    ib.poll()
    lane = p.lane
    off = p.reserve(64)  # reserved, not published: not part of the run
    assert off is not None
    p.buf[off : off + 64] = run_frames(3, data[400:440], 40)[0]
    assert len(ib.poll_run(lane, 24, 20)) == 10
    p.commit(64)
    assert len(ib.poll_run(lane, 24, 20)) == 11
    ib.release_run(lane, 11)
    assert put_run(p, 3, data[440:], 40, 4) == 3  # 792 + 3 * 72 = 1008 ends the lap
    assert put_run(p, 3, data[560:], 40, 1) == 1  # at 0 of the next lap, after a WRAP
    ib.poll()
    run = ib.poll_run(lane, 24, 20)
    assert [bytes(r) for r in run] == run_frames(3, data[440:560], 40)
    ib.release_run(lane, len(run))
    assert drain(ib) == run_frames(3, data[560:], 40)


def test_poll_run_ends_with_the_lap_without_a_wrap_word(make: Callable[..., Inbox], attach) -> None:
    """A record that ends exactly at the end of the region is followed by one at offset
    0 with no WRAP word between them: back to back in the counters, not in memory, so
    the run (one array) stops there. (Found by the lane state machine.)"""
    ib = make(lanes=1, lane_bytes=256)
    p = attach(ib.name).producer()
    for i in range(15):  # 16-byte records: 15 of them end at 240
        assert p.write(bytes([i]) * 8)
    assert len(drain(ib)) == 15
    assert p.write(b"A" * 8) and p.write(b"B" * 8)  # at 240 (ends at 256), then at 0
    _, _, _, lane = ib.poll()
    assert [bytes(r) for r in ib.poll_run(lane, 0, 8)] == [b"A" * 8]
    ib.release_run(lane, 1)
    assert drain(ib) == [b"B" * 8]


def test_poll_gather_follows_the_lane_past_a_wrap(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=512)
    p = attach(ib.name).producer()
    assert p.write(b"a" * 200)  # a 208-byte record at 0
    assert drain(ib) == [b"a" * 200]
    # records of 32 at 208 and 208 at 240; a WRAP word at 448; 112 at 0 and 40 at 112
    frames = [b"b" * 20, b"c" * 200, b"d" * 100, b"e" * 30]
    for f in frames:
        assert p.write(f)
    off = p.reserve(8)  # reserved, not published: not gathered
    assert off is not None
    buf, _, _, lane = ib.poll()
    got = ib.poll_gather(lane, 1 << 20)
    assert [bytes(buf[o : o + n]) for o, n in got] == frames
    assert [o for o, _ in got] == [216, 248, 8, 120]
    assert ib.poll_gather(lane, 60) == got[:2]  # 20, then 220 >= 60: enough
    assert ib.poll_gather(lane, 205, skip=10) == got[:3]  # 10 + 190 < 205 <= 10 + 190 + 90
    ib.release_gather(lane, 2)
    with pytest.raises(InboxError):
        ib.release_gather(lane, 1)  # consumed: the gather is stale
    p.buf[off : off + 8] = b"f" * 8
    p.commit(8)
    assert drain(ib) == frames[2:] + [b"f" * 8]
    assert ib.fill() == (0, 512)


def test_release_gather_checks_what_it_releases(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=1024)
    p = attach(ib.name).producer()
    for f in (b"x", b"yy", b"zzz"):
        assert p.write(f)
    _, _, _, lane = ib.poll()
    with pytest.raises(InboxError):
        ib.release_gather(lane, 1)  # no gather yet
    assert len(ib.poll_gather(lane, 2)) == 2
    with pytest.raises(InboxError):
        ib.release_gather(lane, 3)  # more than it gathered
    ib.release(lane)  # consumed another way: the gather is stale
    ib.poll()
    with pytest.raises(InboxError):
        ib.release_gather(lane, 1)
    assert drain(ib) == [b"yy", b"zzz"]


# ----------------------------------------------------------------------------------------
# closing
# ----------------------------------------------------------------------------------------


def test_closed(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=256)
    other = attach(ib.name)
    p = other.producer()
    assert p.write(b"before")
    ib.mark_closed()
    assert ib.closed and other.closed
    assert p.write(b"after")  # producers check `closed`; a frame in flight may land
    with pytest.raises(InboxClosed) as ei:
        attach(ib.name).producer()
    assert ei.value.errno == errno.EPIPE
    while p.write(b"x" * 100):
        pass
    assert p.reserve(100) is None
    t0 = time.monotonic()
    assert not p.wait_space(100, None)  # returns at once: nobody will ever drain it
    assert time.monotonic() - t0 < 1
    assert ib.wait(1)  # queued frames are still delivered
    drain(ib)
    with pytest.raises(InboxClosed):
        ib.wait(1)


def test_wait_space_gives_up_when_owner_dies(names: Callable[[], str], children: list[int]) -> None:
    name = names()
    r, w = os.pipe()

    def owner() -> None:
        Inbox.create(name, lanes=1, lane_bytes=256)
        os.write(w, b"x")
        time.sleep(0.3)

    pid = fork(children, owner)
    assert os.read(r, 1) == b"x"
    ib = Inbox.attach(name)
    try:
        p = ib.producer()
        while p.write(b"x" * 100):
            pass
        t0 = time.monotonic()
        assert not p.wait_space(100, 10)
        assert time.monotonic() - t0 < 5
        assert not ib.owner_alive()
    finally:
        ib.detach()
    join(pid)


def test_mark_closed_wakes_waiter(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    ib.spin = 0
    t = threading.Timer(0.05, ib.mark_closed)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(InboxClosed):
        ib.wait(5)
    assert time.monotonic() - t0 < 1
    t.join()


# ----------------------------------------------------------------------------------------
# waiting
# ----------------------------------------------------------------------------------------


def test_wait_timeout(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    assert not ib.wait(0)
    t0 = time.monotonic()
    assert not ib.wait(0.05)
    assert 0.045 < time.monotonic() - t0 < 1
    st = ib.stats()
    assert st["sleeps"] >= 1 and st["late_wakeups"] == 0


def test_wait_true_at_once_when_pending(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    attach(ib.name).producer().write(b"x")
    t0 = time.monotonic()
    assert ib.wait(None)
    assert time.monotonic() - t0 < 0.5
    assert ib.stats()["sleeps"] == 0


def test_wait_wakes_on_commit_from_thread(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    t = threading.Timer(0.05, lambda: p.write(b"ring"))
    t.start()
    t0 = time.monotonic()
    assert ib.wait(5)
    assert time.monotonic() - t0 < 0.5
    t.join()
    st = ib.stats()
    assert st["sleeps"] >= 1 and st["wakeups"] == 1 and st["bells"] == 1
    assert st["late_wakeups"] == 0
    assert read_one(ib) == b"ring"


def test_wait_wakes_on_commit_from_process(make: Callable[..., Inbox], children: list[int]) -> None:
    ib = make(lanes=1, lane_bytes=4096)

    def child() -> None:
        time.sleep(0.05)
        Inbox.attach(ib.name).producer().write(b"ring")

    fork(children, child)
    assert ib.wait(5)
    assert read_one(ib) == b"ring"
    assert ib.stats()["wakeups"] == 1


def test_stale_bell_is_harmless(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    ib.spin = 0
    L._send_bell(ib._bell_nb)  # type: ignore[arg-type]
    assert not ib.wait(0.05)  # woken by the stale bell, found nothing, slept again
    assert ib.stats()["spurious_wakeups"] == 1


def test_publish_then_wake(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    for i in range(3):
        off = p.reserve(1)
        assert off is not None
        p.buf[off] = i
        p.publish(1)
    p.wake()
    assert drain(ib) == [b"\x00", b"\x01", b"\x02"]


def test_full_fence_callable() -> None:
    for _ in range(3):
        full_fence()


# ----------------------------------------------------------------------------------------
# selectors
# ----------------------------------------------------------------------------------------


def ready(sel: selectors.BaseSelector) -> bool:
    return bool(sel.select(0))


def test_fileno_level_triggered(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=4096)
    p = attach(ib.name).producer()
    with selectors.DefaultSelector() as sel:
        sel.register(ib, selectors.EVENT_READ)
        assert not ready(sel)
        assert p.write(b"1")
        assert ready(sel)
        assert ready(sel)  # still: level-triggered
        assert p.write(b"2")
        assert read_one(ib) == b"1"
        assert ready(sel)  # a frame is still pending
        assert read_one(ib) == b"2"
        assert ib.poll() is None  # every lane empty: the bell is drained
        assert not ready(sel)
        assert not ready(sel)
        # many frames, one bell
        for i in range(5):
            assert p.write(b"%d" % i)
        assert ready(sel)
        assert len(drain(ib)) == 5
        assert not ready(sel)
        assert ib.stats()["bells"] == 2


def test_fileno_with_frames_already_queued(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    assert p.write(b"early")  # consumer not armed: no bell rung
    with selectors.DefaultSelector() as sel:
        sel.register(ib.fileno(), selectors.EVENT_READ)
        assert ready(sel)  # fileno() noticed the pending frame
        assert drain(ib) == [b"early"]
        assert not ready(sel)


def test_wait_in_select_mode(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    p = attach(ib.name).producer()
    ib.fileno()
    assert not ib.wait(0.02)
    t = threading.Timer(0.05, lambda: p.write(b"x"))
    t.start()
    assert ib.wait(5)
    t.join()
    with selectors.DefaultSelector() as sel:
        sel.register(ib, selectors.EVENT_READ)
        assert ready(sel)  # wait() in select mode leaves the bell for the selector
        assert drain(ib) == [b"x"]
        assert not ready(sel)


# ----------------------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------------------


def test_stats_and_fill(make: Callable[..., Inbox], attach) -> None:
    ib = make(lanes=2, lane_bytes=4096)
    o = attach(ib.name)
    p = o.producer()
    for n in (1, 8, 9):
        assert p.write(b"x" * n)
    assert ib.fill() == (16 + 16 + 24, 2 * 4096)
    st = ib.stats()
    assert (st["frames_written"], st["frames_read"], st["frames_queued"]) == (3, 0, 3)
    assert read_one(ib) == b"x"
    st = ib.stats()
    assert (st["frames_written"], st["frames_read"], st["bytes_read"]) == (3, 1, 16)
    drain(ib)
    assert ib.stats()["frames_read"] == 3
    assert o.stats()["frames_read"] == 3  # published when the consumer went idle
    assert set(st) >= {
        "sleeps",
        "wakeups",
        "late_wakeups",
        "full_waits",
        "bells",
        "lanes_active",
    }


# ----------------------------------------------------------------------------------------
# property: random writes / reads against a model
# ----------------------------------------------------------------------------------------


class LaneMachine(RuleBasedStateMachine):
    """Two producers into a small inbox, compared with a model of the ring arithmetic.

    The model mirrors the specification (8-byte length word, 8-byte alignment, a record
    never straddles the end, skipped bytes count until passed), so that ``write`` returning
    False is checked to mean "really no room", not just "some failure".
    """

    def __init__(self) -> None:
        super().__init__()
        self.ib: Inbox | None = None
        self.others: list[Inbox] = []

    @initialize(lane_bytes=st.sampled_from([64, 128, 256, 1024]))
    def setup(self, lane_bytes: int) -> None:
        self.ib = Inbox.create(unique_name("hyp"), lanes=2, lane_bytes=lane_bytes)
        self.others = [Inbox.attach(self.ib.name), Inbox.attach(self.ib.name)]
        self.prods = [o.producer() for o in self.others]
        self.cap = lane_bytes
        self.maxf = self.ib.max_frame
        # per lane: queued (payload, record start) and the model's counters
        self.frames: dict[int, deque[tuple[bytes, int]]] = {p.lane: deque() for p in self.prods}
        self.tail = {p.lane: 0 for p in self.prods}  # producer's next record (wraps included)
        self.pub = {p.lane: 0 for p in self.prods}  # published tail
        self.head = {p.lane: 0 for p in self.prods}  # published head
        self.counter = 0

    def teardown(self) -> None:
        for o in self.others:
            o.detach()
        if self.ib is not None:
            self.ib.detach()
            self.ib.unlink()

    def _fits(self, lane: int, n: int) -> tuple[bool, int]:
        """(room for an n-byte frame?, where its record starts)"""
        rec = (n + 15) & -8
        t, h = self.tail[lane], self.head[lane]
        off = t % self.cap
        if off + rec <= self.cap:
            return t + rec - h <= self.cap, t
        t2 = t + self.cap - off  # skip to the next lap
        return t2 + rec - h <= self.cap, t2

    def _payload(self, n: int) -> bytes:
        self.counter += 1
        return bytes((self.counter + i) & 0xFF for i in range(n))

    @rule(which=st.integers(0, 1), data=st.data())
    def write(self, which: int, data: st.DataObject) -> None:
        n = data.draw(st.one_of(st.integers(0, self.maxf), st.sampled_from([0, self.maxf])))
        p = self.prods[which]
        payload = self._payload(n)
        fits, start = self._fits(p.lane, n)
        ok = p.write(payload)
        assert ok == fits
        if ok:
            self.tail[p.lane] = self.pub[p.lane] = start + ((n + 15) & -8)
            self.frames[p.lane].append((payload, start))

    @rule(which=st.integers(0, 1), data=st.data())
    def write_run(self, which: int, data: st.DataObject) -> None:
        """put_run_locked: frames alike, back to back, up to the end of the lap."""
        hs = data.draw(st.integers(4, 12))
        piece = data.draw(st.integers(0, self.maxf - hs))
        count = data.draw(st.integers(1, 6))
        p = self.prods[which]
        head = self._payload(hs)
        word = data.draw(st.integers(0, 2**32 - 1))
        payload = self._payload(piece * count)
        n = hs + piece
        rec = (n + 15) & -8
        expected = 0
        fits, start = self._fits(p.lane, n)
        if fits:
            lap_end = start - start % self.cap + self.cap
            room = min(lap_end - start, self.head[p.lane] + self.cap - start) // rec
            expected = min(count, room)
        with p.lock:
            k = p.put_run_locked(head, word, payload, piece, count)
        assert k == expected
        frame_head = struct.pack(">I", word) + head[4:]
        for i in range(k):
            self.frames[p.lane].append(
                (frame_head + payload[i * piece : (i + 1) * piece], start + i * rec)
            )
        if k:
            self.tail[p.lane] = self.pub[p.lane] = start + k * rec

    @rule(limit=st.integers(1, 8), same=st.integers(0, 16), data=st.data())
    def read_run(self, limit: int, same: int, data: st.DataObject) -> None:
        """poll_run: the longest run of queued frames alike and back to back."""
        assert self.ib is not None
        r = self.ib.poll()
        if r is None:
            assert not any(self.frames.values())
            return
        _, _, n, lane = r
        queued = self.frames[lane]
        first, start = queued[0]
        rec = (n + 15) & -8
        k = 1
        while (
            k < min(limit, len(queued))
            and queued[k][1] == start + k * rec
            and start % self.cap + (k + 1) * rec <= self.cap  # a run ends with the lap
            and len(queued[k][0]) == n
            and queued[k][0][:same] == first[:same]
        ):
            k += 1
        run = self.ib.poll_run(lane, same, limit)
        assert [bytes(row) for row in run] == [queued[i][0] for i in range(k)]
        take = data.draw(st.integers(1, k))
        self.ib.release_run(lane, take)
        for _ in range(take):
            payload, start = queued.popleft()
        self.head[lane] = start + rec

    @rule(max_bytes=st.integers(0, 600), skip=st.integers(0, 8), data=st.data())
    def read_gather(self, max_bytes: int, skip: int, data: st.DataObject) -> None:
        """poll_gather: queued frames in order, any sizes, across laps, until enough."""
        assert self.ib is not None
        r = self.ib.poll()
        if r is None:
            assert not any(self.frames.values())
            return
        buf, _, _, lane = r
        queued = self.frames[lane]
        k = total = 0
        while k < len(queued) and (k == 0 or total < max_bytes):
            total += len(queued[k][0]) - skip
            k += 1
        got = self.ib.poll_gather(lane, max_bytes, skip)
        assert [bytes(buf[o : o + n]) for o, n in got] == [queued[i][0] for i in range(k)]
        take = data.draw(st.integers(1, k))
        self.ib.release_gather(lane, take)
        for _ in range(take):
            payload, start = queued.popleft()
        self.head[lane] = start + ((len(payload) + 15) & -8)

    @rule(which=st.integers(0, 1), n=st.integers(0, 130))
    def reserve_and_abandon(self, which: int, n: int) -> None:
        """A reservation that is never committed must not disturb later frames."""
        n = min(n, self.maxf)
        p = self.prods[which]
        fits, start = self._fits(p.lane, n)
        off = p.reserve(n)
        assert (off is not None) == fits
        if off is not None:
            assert off == start % self.cap + 8
            p.buf[off : off + n] = b"\xee" * n  # garbage that must never be read
            self.tail[p.lane] = start  # a wrap, if one was needed, is kept

    @rule()
    def read(self) -> None:
        assert self.ib is not None
        r = self.ib.poll()
        if not any(self.frames.values()):
            assert r is None
            return
        assert r is not None
        buf, off, n, lane = r
        assert self.ib.poll() == r
        expected, start = self.frames[lane].popleft()
        assert (bytes(buf[off : off + n]), off) == (expected, start % self.cap + 8)
        self.ib.release(lane)
        self.head[lane] = start + ((n + 15) & -8)

    @precondition(lambda self: self.ib is not None)
    @rule()
    def drain_all(self) -> None:
        assert self.ib is not None
        while any(self.frames.values()):
            self.read()
        self.read()

    @invariant()
    def fill_matches(self) -> None:
        if self.ib is None:
            return
        queued = sum(self.pub[ln] - self.head[ln] for ln in self.pub)
        assert self.ib.fill() == (queued, 2 * self.cap)
        st_ = self.ib.stats()
        assert st_["frames_queued"] == sum(len(d) for d in self.frames.values())


LaneMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lane_machine = LaneMachine.TestCase
