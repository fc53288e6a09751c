"""The simulator itself (tipcshm.testing.sim), driven by tiny fake sans-IO endpoints:
the clock, determinism, the fault rates it claims, broadcast, partitions, accounting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import CoreEvent, Delivered
from tipcshm.testing import FakeClock, Faults, SimNetwork


class Beacon:
    """Sends a numbered frame every ``interval`` seconds (``count`` in all) to ``dest``
    (a media address, or None for the broadcast); records what it receives. Frames
    starting with b"BAD" are refused as a malformed frame would be."""

    def __init__(
        self,
        me: int,
        *,
        dest: bytes | None = None,
        interval: float = 0.001,
        count: int = 0,
        start: float = 0.0,
    ) -> None:
        self.me = me
        self.dest = dest
        self.interval = interval
        self.left = count
        self.sent = 0
        self.timer: float | None = start if count else None
        self.outbox: list[tuple[bytes, bytes | None]] = []
        self.got: list[tuple[float, bytes | None, bytes]] = []
        self.timer_calls: list[float] = []
        self.events: list[CoreEvent] = []

    def receive(self, frame: bytes, now: float, src_media: bytes | None = None) -> None:
        if frame.startswith(b"BAD"):
            raise RemoteProtocolError("bad frame")
        self.got.append((now, src_media, frame))
        self.events.append(Delivered(int(frame.split(b":")[0]), frame))

    def frames_to_send(self, now: float) -> list[tuple[bytes, bytes | None]]:
        out, self.outbox = self.outbox, []
        return out

    def next_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        if self.timer is None or now < self.timer:
            return
        self.timer_calls.append(now)
        self.outbox.append((f"{self.me}:{self.sent}".encode(), self.dest))
        self.sent += 1
        self.left -= 1
        self.timer = self.timer + self.interval if self.left > 0 else None

    def next_event(self) -> CoreEvent | None:
        return self.events.pop(0) if self.events else None

    def numbers(self) -> list[int]:
        return [int(f.split(b":")[1]) for _, _, f in self.got]


def media(i: int) -> bytes:
    return bytes([i + 1]) * 32


def pair(seed: int, count: int, **faults: float) -> tuple[SimNetwork, Beacon, Beacon]:
    net = SimNetwork(seed, **faults)
    a = Beacon(0, dest=media(1), count=count)
    b = Beacon(1)
    net.attach(a, media(0))
    net.attach(b, media(1))
    return net, a, b


# -- clock ------------------------------------------------------------------------------


def test_fake_clock_moves_only_forward() -> None:
    clock = FakeClock(5.0)
    assert clock.now == 5.0 and clock() == 5.0
    assert clock.advance(0.5) == 5.5
    assert clock.jump(4.0) == 5.5  # the past is ignored
    assert clock.jump(7.0) == 7.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.jump_to_next(None, 9.0, 8.0) == 8.0 and clock.now == 8.0
    assert clock.jump_to_next(None, None) is None and clock.now == 8.0


def test_faults_are_checked() -> None:
    with pytest.raises(ValueError):
        Faults(loss=1.5)
    with pytest.raises(ValueError):
        Faults(delay=-0.1)
    with pytest.raises(TypeError):
        SimNetwork(faults=Faults(), loss=0.1)


def test_the_clock_jumps_to_each_timer_and_run_ends_on_time() -> None:
    net = SimNetwork(1)
    a = Beacon(0, dest=media(1), interval=0.25, count=4, start=0.1)
    b = Beacon(1)
    net.attach(a, media(0))
    net.attach(b, media(1))
    net.run(10.0)
    assert a.timer_calls == [0.1, 0.35, 0.6, 0.85]
    # default delay 1 ms, no jitter: each frame arrives 1 ms after its timer
    assert [round(t, 9) for t, _, _ in b.got] == [0.101, 0.351, 0.601, 0.851]
    assert net.clock.now == 10.0
    assert [src for _, src, _ in b.got] == [media(0)] * 4


# -- determinism ---------------------------------------------------------------------------


def faulty_run(seed: int, loss: float, dup: float, reorder: float) -> list[tuple]:
    net, a, b = pair(seed, 300, loss=loss, duplicate=dup, reorder=reorder, jitter=0.002)
    c = Beacon(2, dest=None, count=50, interval=0.003)
    net.attach(c, media(2))
    net.run(2.0)
    return net.trace()


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    one = faulty_run(11, 0.3, 0.1, 0.3)
    assert one == faulty_run(11, 0.3, 0.1, 0.3)
    assert one != faulty_run(12, 0.3, 0.1, 0.3)
    kinds = {entry[1] for entry in one}
    assert {"send", "lose", "deliver", "Delivered"} <= kinds


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0, 0.6),
    dup=st.floats(0, 0.4),
    reorder=st.floats(0, 0.6),
)
def test_determinism_and_accounting(seed: int, loss: float, dup: float, reorder: float) -> None:
    net, a, b = pair(seed, 120, loss=loss, duplicate=dup, reorder=reorder, jitter=0.001)
    net.run(1.0)
    twin, _, _ = pair(seed, 120, loss=loss, duplicate=dup, reorder=reorder, jitter=0.001)
    twin.run(1.0)
    assert net.trace() == twin.trace()
    s = net.path_statistics(0, 1)
    assert net.in_flight() == 0
    assert s.sent == 120 == a.sent
    assert s.delivered == s.sent - s.lost - s.partitioned + s.duplicated == len(b.got)
    assert s.rejected == 0 and s.partitioned == 0


# -- fault rates ---------------------------------------------------------------------------


def within(observed: int, n: int, p: float) -> bool:
    """``observed`` successes of ``n`` is within 5 standard deviations of ``n * p``."""
    return abs(observed - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_observed_rates_match_the_configuration(seed: int) -> None:
    n = 4000
    net, a, b = pair(seed, n, loss=0.3, duplicate=0.1, reorder=0.3)
    net.run(n * 0.001 + 1)
    nums = b.numbers()
    distinct = set(nums)
    assert within(n - len(distinct), n, 0.3), n - len(distinct)  # lost
    dups = len(nums) - len(distinct)
    assert within(dups, len(distinct), 0.1), dups
    # reordered: arrived (first copy) after a frame sent later had arrived
    seen: set[int] = set()
    late = 0
    highest = -1
    for k in nums:
        if k in seen:
            continue
        seen.add(k)
        if k < highest:
            late += 1
        highest = max(highest, k)
    # a duplicated frame has two chances to be held back; its first copy is late only
    # if both were, so the observed rate sits a little under the configured 0.3
    assert within(late, len(distinct), 0.3 * (1 - 0.1 * 0.7)), late
    s = net.path_statistics(0, 1)
    assert (s.lost, s.duplicated) == (n - len(distinct), dups)


def test_no_faults_means_in_order_exactly_once() -> None:
    net, a, b = pair(5, 500, jitter=0.0)
    net.run(1.0)
    assert b.numbers() == list(range(500))


def test_per_path_faults() -> None:
    net = SimNetwork(3)
    a = Beacon(0, dest=media(1), count=100)
    b = Beacon(1, dest=media(0), count=100)
    net.attach(a, media(0))
    net.attach(b, media(1))
    net.set_faults(0, 1, loss=1.0)
    net.run(1.0)
    assert b.got == [] and len(a.got) == 100
    assert net.path_statistics(0, 1).lost == 100
    assert net.faults(1, 0) == Faults()


# -- broadcast, routing, partitions ----------------------------------------------------------


def test_broadcast_reaches_every_other_node() -> None:
    net = SimNetwork(4)
    nodes = [
        Beacon(i, dest=None if i == 0 else media(0), count=3 if i == 0 else 0) for i in range(4)
    ]
    for i, n in enumerate(nodes):
        net.attach(n, media(i))
    net.run(1.0)
    assert nodes[0].got == []
    for n in nodes[1:]:
        assert n.numbers() == [0, 1, 2]
    assert net.statistics().paths.sent == 9


def test_unicast_to_an_unknown_address_is_counted() -> None:
    net = SimNetwork(4)
    net.attach(Beacon(0, dest=b"\x77" * 32, count=5), media(0))
    net.attach(Beacon(1), media(1))
    net.run(1.0)
    assert net.statistics().unroutable == 5
    with pytest.raises(ValueError):
        net.attach(Beacon(2), media(1))


def test_partition_drops_between_groups_and_heal_restores() -> None:
    net = SimNetwork(6)
    nodes = [Beacon(i, dest=None, count=1000, interval=0.01) for i in range(3)]
    for i, n in enumerate(nodes):
        net.attach(n, media(i))
    net.run(1.0)
    before = [len(n.got) for n in nodes]
    net.partition({0}, {1, 2})
    net.run(1.0)
    # node 0 hears nobody, 1 and 2 still hear each other
    assert len(nodes[0].got) == before[0]
    assert len(nodes[1].got) - before[1] == 100
    assert net.path_statistics(0, 1).partitioned == 100
    assert net.path_statistics(2, 0).partitioned == 100
    assert not net.connected(0, 2) and net.connected(1, 2)
    net.heal()
    net.run(1.0)
    assert len(nodes[0].got) - before[0] == 200
    with pytest.raises(ValueError):
        net.partition({0, 1}, {1})


def test_frames_in_flight_on_a_path_cut_later_are_dropped() -> None:
    net, a, b = pair(7, 1, delay=0.5)
    net.run(0.1)
    assert net.in_flight() == 1
    net.cut(0, 1)
    net.run(1.0)
    assert b.got == [] and net.path_statistics(0, 1).partitioned == 1


def test_point_to_point_objects() -> None:
    class Wire:
        def __init__(self, first: bytes | None) -> None:
            self.out = [first] if first else []
            self.got: list[bytes] = []

        def receive(self, frame: bytes, now: float) -> None:
            self.got.append(frame)
            if len(self.got) < 3:
                self.out.append(frame + b"!")

        def frames_to_send(self, now: float) -> list[bytes]:
            out, self.out = self.out, []
            return [f for f in out if f]

        def next_timer(self) -> float | None:
            return None

        def handle_timer(self, now: float) -> None:
            pass

        def next_event(self) -> CoreEvent | None:
            return None

    net = SimNetwork(8)
    x, y = Wire(b"ping"), Wire(None)
    net.attach(x, b"x", peer_media=b"y")
    net.attach(y, b"y", peer_media=b"x")
    net.run(1.0)
    assert y.got == [b"ping", b"ping!!", b"ping!!!!"]
    assert x.got == [b"ping!", b"ping!!!"]


# -- misbehaving objects -----------------------------------------------------------------------


def test_remote_protocol_errors_are_counted_and_do_not_stop_the_run() -> None:
    net, a, b = pair(9, 10)
    net.inject(0, b"BAD frame", media(1))
    net.run(1.0)
    assert b.numbers() == list(range(10))
    assert net.path_statistics(0, 1).rejected == 1
    assert [f for _, f, _ in net.rejected(1)] == [b"BAD frame"]


def test_other_exceptions_escape() -> None:
    net, a, b = pair(9, 0)
    net.inject(0, b"not-a-number", media(1))
    with pytest.raises(ValueError):
        net.run(1.0)


def test_a_timer_that_never_moves_is_a_livelock() -> None:
    class Stuck(Beacon):
        def next_timer(self) -> float | None:
            return 0.5

        def handle_timer(self, now: float) -> None:
            pass

    net = SimNetwork(0)
    net.attach(Stuck(0), media(0))
    with pytest.raises(RuntimeError, match="livelock"):
        net.run(1.0)


# -- events --------------------------------------------------------------------------------------


def test_events_are_collected_and_on_event_may_act() -> None:
    replies: list[int] = []

    def echo(index: int, now: float, ev: CoreEvent) -> None:
        assert isinstance(ev, Delivered)
        if index == 1 and len(replies) < 3:
            replies.append(ev.source)
            net.node(1).outbox.append((b"1:%d" % len(replies), media(0)))
            net.touch(1)

    net = SimNetwork(10, on_event=echo)
    a = Beacon(0, dest=media(1), count=3, interval=0.1)
    net.attach(a, media(0))
    net.attach(Beacon(1), media(1))
    net.run(1.0)
    assert [ev.source for _, ev in net.events(1)] == [0, 0, 0]  # type: ignore[attr-defined]
    assert a.numbers() == [1, 2, 3]
    assert len(net.take_events(1)) == 3 and net.events(1) == []
