"""Multi-process stress of the lanes: ordering, full rings, and no lost wake-ups.

Producers run in forked children, the consumer in the test process. Both sides pause at
random (sleeps of up to 2 ms every 1,000-5,000 frames) so that each falls asleep often:
the consumer in ``wait()`` on an empty inbox, the producer in ``wait_space()`` on a full
(64 KiB) lane. Every frame carries (producer id, sequence number), a size drawn from a
seeded table and a trailer byte, all checked in order. A lost wake-up would show as a
hang (pytest-timeout turns it into a failure) or, given the 1 s sleep backstop, as a
``late_wakeups`` count, which must stay 0 on x86-64.

Run with ``-s`` to see the sleep and wake-up counters.
"""

from __future__ import annotations

import functools
import os
import random
import secrets
import selectors
import signal
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from tipcshm.shm import lane as L
from tipcshm.shm.lane import Inbox

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

HDR = struct.Struct("<QQ")  # producer id, sequence number
LANE_BYTES = 64 * 1024
MAX_PAUSE = 0.002


def sizes_for(tag: int) -> list[int]:
    rng = random.Random(1000 + tag)
    return [rng.randrange(HDR.size + 1, 257) for _ in range(4096)]


class Pauser:
    """Sleep up to MAX_PAUSE every 1,000-5,000 calls."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.left = self.rng.randint(1000, 5000)
        self.pauses = 0

    def tick(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.left = self.rng.randint(1000, 5000)
            self.pauses += 1
            time.sleep(self.rng.random() * MAX_PAUSE)


@pytest.fixture
def inbox_name() -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def new() -> str:
        n = f"/tipcshm.stress{os.getpid()}.in.{secrets.token_hex(4)}"
        made.append(n)
        return n

    yield new
    for n in made:
        Inbox.unlink_name(n)


@pytest.fixture
def children() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:  # only still-running ones (a failed test): kill and reap
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def spawn(pids: list[int], fn: Callable[[], None]) -> int:
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


def reap(pids: list[int]) -> None:
    for pid in list(pids):
        _, status = os.waitpid(pid, 0)
        pids.remove(pid)
        assert os.waitstatus_to_exitcode(status) == 0, f"child {pid} failed"


def producer(name: str, tag: int, count: int, spin: float | None = None) -> None:
    """Child body: send ``count`` frames tagged ``tag``, with random pauses."""
    ib = Inbox.attach(name)
    if spin is not None:
        ib.spin = spin
    p = ib.producer()
    buf, reserve, commit, pack = p.buf, p.reserve, p.commit, HDR.pack_into
    sizes = sizes_for(tag)
    pause = Pauser(2000 + tag)
    for seq in range(count):
        n = sizes[seq & 4095]
        o = reserve(n)
        while o is None:
            if not p.wait_space(n, 60):
                raise AssertionError(f"producer {tag}: no space for 60 s at {seq}")
            o = reserve(n)
        pack(buf, o, tag, seq)
        buf[o + n - 1] = seq & 0xFF
        commit(n)
        pause.tick()


def consume(ib: Inbox, counts: dict[int, int]) -> float:
    """Read every frame, checking order, size and trailer per producer; returns seconds."""
    expected = dict.fromkeys(counts, 0)
    sizes = {tag: sizes_for(tag) for tag in counts}
    total = sum(counts.values())
    pause = Pauser(7)
    poll, release, wait, unpack = ib.poll, ib.release, ib.wait, HDR.unpack_from
    t0 = time.monotonic()
    got = 0
    while got < total:
        r = poll()
        if r is None:
            wait(None)
            continue
        buf, off, n, lane = r
        tag, seq = unpack(buf, off)
        if seq != expected[tag] or n != sizes[tag][seq & 4095] or buf[off + n - 1] != seq & 0xFF:
            raise AssertionError(
                f"producer {tag}: got seq {seq} (len {n}), expected {expected[tag]}"
            )
        release(lane)
        expected[tag] = seq + 1
        got += 1
        pause.tick()
    assert expected == counts
    assert poll() is None
    return time.monotonic() - t0


def report(capsys: pytest.CaptureFixture[str], what: str, st: dict[str, int], secs: float) -> None:
    with capsys.disabled():
        print(
            f"\n{what}: {st['frames_read']} frames in {secs:.1f} s "
            f"({st['frames_read'] / secs / 1e3:.0f} k/s); consumer sleeps {st['sleeps']}, "
            f"wake-ups {st['wakeups']}, late {st['late_wakeups']}, "
            f"spurious {st['spurious_wakeups']}; producer full-waits {st['full_waits']}, "
            f"bells {st['bells']}"
        )


def check_no_lost_wakeups(st: dict[str, int]) -> None:
    assert st["sleeps"] > 0, "the test did not make the consumer sleep"
    if L.TSO:
        assert st["late_wakeups"] == 0, "a sleep timed out with a frame pending: lost wake-up"


@pytest.mark.parametrize(
    ("count", "spin"),
    [(1_000_000, L.SPIN), (1_000_000, 0.0)],
    ids=["1M-spin", "1M-nospin"],
)
def test_one_producer(
    inbox_name: Callable[[], str],
    children: list[int],
    capsys: pytest.CaptureFixture[str],
    count: int,
    spin: float,
) -> None:
    ib = Inbox.create(inbox_name(), lanes=4, lane_bytes=LANE_BYTES)
    ib.spin = spin
    try:
        spawn(children, lambda: producer(ib.name, 1, count, spin))
        secs = consume(ib, {1: count})
        reap(children)
        st = ib.stats()
    finally:
        ib.mark_closed()
        ib.detach()
    report(capsys, f"1 producer, spin {spin * 1e6:.0f} us", st, secs)
    assert st["frames_read"] == st["frames_written"] == count
    assert st["full_waits"] > 0, "the test did not fill the lane"
    check_no_lost_wakeups(st)


def test_two_producers(
    inbox_name: Callable[[], str], children: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    count = 500_000
    ib = Inbox.create(inbox_name(), lanes=4, lane_bytes=LANE_BYTES)
    try:
        for tag in (1, 2):
            spawn(children, functools.partial(producer, ib.name, tag, count))
        secs = consume(ib, {1: count, 2: count})
        reap(children)
        st = ib.stats()
    finally:
        ib.mark_closed()
        ib.detach()
    report(capsys, "2 producers", st, secs)
    assert st["frames_read"] == 2 * count
    assert st["claims"] == 2  # one lane each (a finished one may already be reaped)
    check_no_lost_wakeups(st)


def test_ping_pong_always_sleeping(
    inbox_name: Callable[[], str], children: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    """No spinning on either side: every trip goes through arm / fence / sleep / bell."""
    trips = 200_000
    ia = Inbox.create(inbox_name(), lanes=2, lane_bytes=4096)
    ib = Inbox.create(inbox_name(), lanes=2, lane_bytes=4096)
    ia.spin = ib.spin = 0.0

    def echo() -> None:
        out = Inbox.attach(ia.name).producer()
        pause = Pauser(11)
        for _ in range(trips):
            r = ib.poll()
            while r is None:
                ib.wait(None)
                r = ib.poll()
            buf, off, n, lane = r
            data = bytes(buf[off : off + n])
            ib.release(lane)
            assert out.write(data)
            pause.tick()
        assert ib.poll() is None  # also publishes the frames-read counter

    try:
        spawn(children, echo)
        out = Inbox.attach(ib.name)
        p = out.producer()
        pause = Pauser(12)
        t0 = time.monotonic()
        for i in range(trips):
            assert p.write(HDR.pack(0, i))
            r = ia.poll()
            while r is None:
                ia.wait(None)
                r = ia.poll()
            buf, off, n, lane = r
            assert HDR.unpack_from(buf, off) == (0, i)
            ia.release(lane)
            pause.tick()
        secs = time.monotonic() - t0
        reap(children)
        out.detach()
        st_a, st_b = ia.stats(), ib.stats()
    finally:
        for x in (ia, ib):
            x.mark_closed()
            x.detach()
    report(capsys, "ping-pong A", st_a, secs)
    report(capsys, "ping-pong B", st_b, secs)
    for st in (st_a, st_b):
        assert st["frames_read"] == trips
        assert st["sleeps"] > trips // 4, "expected a sleep on most trips"
        check_no_lost_wakeups(st)


def test_selector_consumer(
    inbox_name: Callable[[], str], children: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Select mode: level-triggered readiness with a consumer that drains partially."""
    count = 200_000
    ib = Inbox.create(inbox_name(), lanes=4, lane_bytes=LANE_BYTES)
    sizes = sizes_for(1)
    rng = random.Random(5)
    selects = 0
    try:
        spawn(children, lambda: producer(ib.name, 1, count))
        with selectors.DefaultSelector() as sel:
            sel.register(ib, selectors.EVENT_READ)
            expected = 0
            t0 = time.monotonic()
            while expected < count:
                if not sel.select(30):
                    raise AssertionError(f"not readable for 30 s at frame {expected}: lost bell")
                selects += 1
                budget = rng.choice([1, 10, 1000, 1 << 30])  # sometimes leave frames queued
                while budget:
                    r = ib.poll()
                    if r is None:
                        break
                    buf, off, n, lane = r
                    tag, seq = HDR.unpack_from(buf, off)
                    assert (tag, seq, n) == (1, expected, sizes[seq & 4095])
                    ib.release(lane)
                    expected += 1
                    budget -= 1
            secs = time.monotonic() - t0
        reap(children)
        st = ib.stats()
    finally:
        ib.mark_closed()
        ib.detach()
    report(capsys, f"selector consumer ({selects} selects)", st, secs)
    assert st["frames_read"] == count
