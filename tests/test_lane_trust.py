"""Inboxes as untrusted input: who made the segment and the doorbell, which node
incarnation, a full /dev/shm, and garbage written into a live lane."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import test_lane as TL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipcshm.errors import UntrustedObject
from tipcshm.shm import lane as L
from tipcshm.shm.lane import Inbox, InboxError

names, make = TL.names, TL.make


# ----------------------------------------------------------------------------------------
# who made it
# ----------------------------------------------------------------------------------------


def test_attach_refuses_a_symlinked_doorbell(make: Callable[..., Inbox], tmp_path) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    bell = L._Doorbell.path(ib.name)
    os.unlink(bell)
    os.symlink(target, bell)
    with pytest.raises(UntrustedObject, match="symbolic link") as ei:
        Inbox.attach(ib.name)
    assert ei.value.errno == errno.EPERM and bell in str(ei.value)
    assert target.read_bytes() == b"precious"


def test_attach_refuses_a_doorbell_that_is_no_fifo(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    bell = L._Doorbell.path(ib.name)
    os.unlink(bell)
    with open(bell, "wb"):
        pass
    with pytest.raises(UntrustedObject, match="not a fifo"):
        Inbox.attach(ib.name)


def test_attach_refuses_a_segment_of_a_stranger(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    seg = "/dev/shm" + ib.name
    os.chmod(seg, 0o666)
    with pytest.raises(UntrustedObject, match="writable by every user"):
        Inbox.attach(ib.name)
    os.chmod(seg, 0o600)
    Inbox.attach(ib.name).detach()
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    os.chown(seg, 54321, -1)
    with pytest.raises(UntrustedObject, match="uid 54321"):
        Inbox.attach(ib.name)
    # the stranger is trusted when the caller says so (a node's owner, say)
    other = L.Trust(frozenset({54321}))
    os.chown(L._Doorbell.path(ib.name), 54321, -1)
    Inbox.attach(ib.name, trust=other).detach()


def test_attach_refuses_a_segment_symlink(make: Callable[..., Inbox], names) -> None:
    ib = make(lanes=1, lane_bytes=4096)
    alias = names()
    os.symlink("/dev/shm" + ib.name, "/dev/shm" + alias)
    try:
        with pytest.raises(UntrustedObject, match="symbolic link"):
            Inbox.attach(alias)
    finally:
        os.unlink("/dev/shm" + alias)


def test_create_checks_its_new_doorbell(names, monkeypatch) -> None:
    """A doorbell swapped for a symlink between mkfifo and open is refused."""
    name = names()
    real_mkfifo = os.mkfifo

    def racing_mkfifo(path: str, mode: int = 0o666) -> None:
        real_mkfifo(path, mode)
        os.unlink(path)
        os.symlink("/dev/null", path)

    monkeypatch.setattr(os, "mkfifo", racing_mkfifo)
    with pytest.raises(UntrustedObject):
        Inbox.create(name, lanes=1, lane_bytes=4096)
    monkeypatch.undo()
    assert not os.path.lexists("/dev/shm" + name)
    assert not os.path.lexists(L._Doorbell.path(name))


def test_node_tag(names) -> None:
    name = names()
    with pytest.raises(ValueError):
        Inbox.create(name, tag=1 << 64)
    ib = Inbox.create(name, lanes=1, lane_bytes=4096, tag=0xFEEDF00D_12345678)
    try:
        a = Inbox.attach(name, tag=0xFEEDF00D_12345678)
        assert a.tag == ib.tag == 0xFEEDF00D_12345678
        a.detach()
        Inbox.attach(name).detach()  # no tag asked for: any incarnation
        with pytest.raises(InboxError) as ei:
            Inbox.attach(name, tag=0xFEEDF00D_12345679)
        assert ei.value.errno == errno.ESTALE
        assert name in str(ei.value) and "0xfeedf00d12345678" in str(ei.value)
    finally:
        ib.detach()


# ----------------------------------------------------------------------------------------
# a full /dev/shm
# ----------------------------------------------------------------------------------------

_FULL_SCRIPT = textwrap.dedent(
    """
    import errno, os
    from tipcshm.errors import SharedMemoryFull
    from tipcshm.shm import lane as L
    from tipcshm.shm.lane import Inbox

    ib = Inbox.create("/full.a", lanes=4, lane_bytes=256 * 1024)
    mine = Inbox.attach("/full.a")
    p = mine.producer()  # lane 0, allocated now
    fd = os.open("/dev/shm/filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    os.close(fd)

    late = Inbox.attach("/full.a")
    try:
        late.producer(overflow=False)
        raise SystemExit("claimed a private lane on a full /dev/shm")
    except SharedMemoryFull as exc:
        assert exc.errno == errno.ENOSPC and "lane 1 of inbox /full.a" in str(exc), exc
    assert ib.lane_info(1)["state"] == L.SLOT_FREE
    try:
        late.producer()
        raise SystemExit("claimed the overflow lane on a full /dev/shm")
    except SharedMemoryFull:
        pass
    assert ib.lane_info(ib.overflow_lane)["state"] == L.SLOT_FREE
    try:
        Inbox.create("/full.b", lanes=2, lane_bytes=4096)
        raise SystemExit("created an inbox on a full /dev/shm")
    except SharedMemoryFull as exc:
        assert "inbox /full.b" in str(exc), exc
    assert sorted(os.listdir("/dev/shm")) == ["filler", "full.a", "full.a.bell"]

    # the lane claimed before keeps working, laps and all
    for i in range(3000):
        assert p.write(b"%d" % i + bytes(1000)), i
        assert ib.get() == b"%d" % i + bytes(1000)
    print("OK", flush=True)
    """
)


def test_full_dev_shm_is_an_error_not_sigbus() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount not permitted: {probe.stderr.decode().strip()}")
    cmd = f'mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {sys.executable} -c "$TIPCSHM_SCRIPT"'
    r = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", cmd],
        env={**os.environ, "TIPCSHM_SCRIPT": _FULL_SCRIPT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0 and "mount" in r.stderr and "permission denied" in r.stderr.lower():
        pytest.skip(f"mounting a tmpfs is not permitted: {r.stderr.strip()}")
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.strip() == "OK"


def _allocated(name: str) -> int:
    return os.stat("/dev/shm" + name).st_blocks * 512


def test_lanes_are_allocated_when_claimed_and_freed_when_reaped(names) -> None:
    lb = 64 * 1024
    ib = Inbox.create(names(), lanes=2, lane_bytes=lb)
    try:
        base = _allocated(ib.name)
        assert 0 < base < lb  # header and slot table only
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                p = Inbox.attach(ib.name).producer()
                for _ in range(10):
                    p.write(bytes(1000))
            finally:
                os._exit(0)
        assert TL.join(pid) == 0
        assert _allocated(ib.name) == base + lb  # the whole lane, at the claim
        assert len(TL.drain(ib)) == 10
        assert ib.reap() == 1
        assert _allocated(ib.name) == base  # given back
        a = Inbox.attach(ib.name)
        a.producer().write(b"x")
        assert _allocated(ib.name) == base + lb
        assert TL.drain(ib) == [b"x"]
        a.detach()  # drained: freed by its owner, pages too
        assert _allocated(ib.name) == base
    finally:
        ib.detach()


def test_a_clobbered_head_heals_when_the_consumer_idles(make: Callable[..., Inbox]) -> None:
    ib = make(lanes=1, lane_bytes=1024)
    a = Inbox.attach(ib.name)
    for _ in range(3):
        assert a.producer().write(b"x" * 400)
        assert TL.drain(ib) == [b"x" * 400]
    a.detach()  # drained: the slot is free again
    tail = ib._ctls[0][L._TAIL]
    ib._ctls[0][L._HEAD] = tail - 1016  # someone makes the ring look full
    b = Inbox.attach(ib.name)
    try:
        p = b.producer()
        assert p.lane == 0
        assert not p.wait_space(400, 0)
        assert not ib.wait(0.01)  # the consumer idles, sleeping once
        assert p.wait_space(400, 0)
        assert p.write(b"y" * 400)
        assert TL.drain(ib) == [b"y" * 400]
    finally:
        b.detach()


# ----------------------------------------------------------------------------------------
# garbage in a live lane
# ----------------------------------------------------------------------------------------

_WORD0 = struct.Struct(">I")  # lane << 24 | sequence number, as put_locked stores it


def _frame(lane: int, i: int, n: int) -> bytes:
    head = _WORD0.pack(lane << 24 | i)
    body = bytes([lane, i & 0xFF]) * (n // 2)
    return head + body + hashlib.blake2b(head + body, digest_size=8).digest()


def _good(frame: bytes) -> bool:
    return len(frame) >= 12 and hashlib.blake2b(frame[:-8], digest_size=8).digest() == frame[-8:]


def _intact(frame: bytes) -> int:
    """Sequence number of an intact frame (AssertionError otherwise)."""
    assert _good(frame), f"torn frame {frame!r}"
    return int(_WORD0.unpack_from(frame)[0]) & 0xFFFFFF


_word = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 1 << 20),
    st.sampled_from([0, 1, 2, 7, 8, L.WRAP, L.WRAP - 1, 1 << 63]),
)
_corrupt = st.tuples(
    st.just("corrupt"),
    st.sampled_from(["slot", "data"]),
    # where: a slot word (the counters more often) or a data offset, modulo the region
    st.one_of(st.sampled_from([L._TAIL, L._HEAD, L._STATE, L._PID]), st.integers(0, 1 << 20)),
    _word,
    st.integers(-64, 64),  # relative variant: tail/head +- this
)
_send = st.tuples(
    st.just("send"), st.sampled_from([0, 1]), st.integers(0, 300), st.just(0), st.just(0)
)
_recv = st.tuples(
    st.just("recv"),
    st.sampled_from(["get", "poll", "run", "gather", "wait"]),
    st.integers(1, 8),
    st.just(0),
    st.just(0),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    victim=st.sampled_from([0, 2]),
    steps=st.lists(st.one_of(_corrupt, _send, _send, _recv, _recv), min_size=5, max_size=80),
)
def test_garbage_in_a_lane_never_escapes_the_consumer(
    names: Callable[[], str], victim: int, steps: list[tuple[str, object, int, int, int]]
) -> None:
    """A private lane (0) or the overflow lane (2, the last in the segment) is written by
    an honest producer and scribbled over at random (slot header words, data bytes).
    Lane 1 must still deliver every frame intact and in order, the consumer's calls must
    not raise, and once the producers stop it must go idle within a lap of polls."""
    ib = Inbox.create(names(), lanes=2, lane_bytes=1024)
    senders = [Inbox.attach(ib.name) for _ in range(3)]
    try:
        ps = [s.producer() for s in senders]
        assert [p.lane for p in ps] == [0, 1, 2]
        ctl = ib._ctls[victim]
        data = ib._bufs[victim]
        sent = [0, 0, 0]
        got1: list[int] = []

        def take(frame: bytes, lane: int) -> None:
            if lane == 1:
                got1.append(_intact(frame))

        def recv(how: str, k: int) -> None:
            if how == "wait":
                ib.wait(0)
                return
            if how == "get":
                f = ib.get()
                # get() does not say which lane: garbage from the victim fails the hash, and
                # a torn frame of lane 1 shows as a gap in got1
                if f is not None and f[:1] == b"\x01" and _good(f):
                    got1.append(_intact(f))
                return
            r = ib.poll()
            if r is None:
                return
            buf, off, n, lane = r
            if how == "poll":
                take(bytes(buf[off : off + n]), lane)
                ib.release(lane)
            elif how == "run":
                run = ib.poll_run(lane, 4, k)
                for row in run:
                    take(row.tobytes(), lane)
                ib.release_run(lane, len(run))
            else:
                frames = ib.poll_gather(lane, k * 100)
                for o, m in frames:
                    take(bytes(buf[o : o + m]), lane)
                ib.release_gather(lane, len(frames))

        for op, a, b, c, d in steps:
            if op == "send":
                lane = 1 if a == 1 else victim
                f = _frame(lane, sent[lane], b)
                with ps[lane].lock:
                    if ps[lane].put_locked(f[:4], _WORD0.unpack_from(f)[0], f[4:]):
                        sent[lane] += 1
                ps[lane].notify()
            elif op == "recv":
                recv(str(a), b)
            elif a == "slot":
                word = b % (L.SLOT_BYTES // 8)
                ctl[word] = c if d == 0 else max(0, ctl[word] + d * 8) & ((1 << 64) - 1)
            else:
                at = b % len(data)
                chunk = c.to_bytes(8, "little")[: len(data) - at]
                data[at : at + len(chunk)] = chunk
        for _ in range(10_000):
            if len(got1) == sent[1]:
                break
            recv("poll", 1)
        assert got1 == list(range(sent[1])), (got1, sent)
        # nothing is sent any more: within a lap of the victim's ring the consumer is idle
        for _ in range(2 * ib.lane_bytes // 8 + 4):
            r = ib.poll()
            if r is None:
                break
            assert r[3] == victim
            ib.release(r[3])
        else:
            raise AssertionError("the consumer keeps finding frames in a silent lane")
        ib.stats()  # bounded even with a garbage tail
    finally:
        for s in senders:
            s.detach()
        ib.detach()
