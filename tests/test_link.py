"""Two link endpoints back to back (tipcshm.core.link), with an explicit clock and a tiny
seeded lossy / duplicating / reordering pipe of our own (the public simulator lives in
tipcshm.testing)."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import (
    CoreEvent,
    Delivered,
    LinkCongested,
    LinkDown,
    LinkUncongested,
    LinkUp,
)
from tipcshm.core.link import LINK_STATES, TRANSITIONS, Link, LinkEvent, LinkState
from tipcshm.wire import DataType, Header, LinkMsgType, User, encode_header
from tipcshm.wire.link import LinkProtoMsg, peek

A_ADDR, B_ADDR = 0x1001, 0x2002


def data_msg(src: int, dst: int, payload: bytes, importance: int = 0, port: int = 7) -> bytes:
    hdr = Header(
        user=importance,
        hsize=32,
        size=32 + len(payload),
        mtype=DataType.DIRECT_MSG,
        prev_node=src,
        orig_node=src,
        dest_node=dst,
        orig_port=port,
        dest_port=port,
    )
    return encode_header(hdr) + payload


def norm(frame: bytes) -> bytes:
    """The message without the words the link stamps (w1 bcast ack, w2 ack/seqno)."""
    return frame[:6] + b"\0\0" + b"\0" * 4 + frame[12:]


def make_pair(
    seed: int = 1, *, tol: int = 1500, mtu: int = 1472, window: int = 50
) -> tuple[Link, Link]:
    rng = random.Random(seed)
    a = Link(
        own_addr=A_ADDR,
        peer_addr=B_ADDR,
        own_if="a0",
        own_id_str="1001",
        peer_id_str="2002",
        mtu=mtu,
        tolerance_ms=tol,
        window=window,
        rng=rng,
        now=0.0,
    )
    b = Link(
        own_addr=B_ADDR,
        peer_addr=A_ADDR,
        own_if="b0",
        own_id_str="2002",
        peer_id_str="1001",
        mtu=mtu,
        tolerance_ms=tol,
        window=window,
        rng=rng,
        now=0.0,
    )
    return a, b


@dataclass
class Pipe:
    """Frames between two links: seeded loss, duplication, reordering and delay."""

    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0005
    cut: bool = False
    queue: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    counter: int = 0

    def put(self, dst: int, frame: bytes, now: float) -> None:
        if self.cut or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            extra = self.rng.random() * 0.02 if self.rng.random() < self.reorder else 0.0
            self.counter += 1
            heapq.heappush(self.queue, (now + self.delay + extra, self.counter, dst, frame))


@dataclass
class Bench:
    a: Link
    b: Link
    pipe: Pipe
    now: float = 0.0
    events: dict[int, list[CoreEvent]] = field(default_factory=lambda: {0: [], 1: []})
    frames: dict[int, list[bytes]] = field(default_factory=lambda: {0: [], 1: []})
    max_queue: int = 0

    def links(self) -> tuple[Link, Link]:
        return self.a, self.b

    def flush(self) -> None:
        for i, link in enumerate(self.links()):
            for frame in link.frames_to_send(self.now):
                self.frames[i].append(frame)
                self.pipe.put(1 - i, frame, self.now)
            while (ev := link.next_event()) is not None:
                self.events[i].append(ev)
            q = link.queue_sizes()
            self.max_queue = max(self.max_queue, q["transmq"] + q["backlog"])

    def step(self) -> None:
        cands = [t for link in self.links() if (t := link.next_timer()) is not None]
        if self.pipe.queue:
            cands.append(self.pipe.queue[0][0])
        self.now = max(self.now, min(cands))
        while self.pipe.queue and self.pipe.queue[0][0] <= self.now:
            _, _, dst, frame = heapq.heappop(self.pipe.queue)
            self.links()[dst].receive(frame, self.now)
            self.flush()
        for link in self.links():
            link.handle_timer(self.now)
        self.flush()

    def run(self, until: float) -> None:
        while self.now < until:
            self.step()

    def run_until(self, cond, limit: float) -> None:  # type: ignore[no-untyped-def]
        while not cond() and self.now < limit:
            self.step()

    def delivered(self, i: int) -> list[bytes]:
        return [norm(e.frame) for e in self.events[i] if isinstance(e, Delivered)]


def bench(seed: int = 1, **faults: float) -> Bench:
    a, b = make_pair(seed)
    return Bench(a, b, Pipe(random.Random(seed), **faults))


# -- FSM table ------------------------------------------------------------------------


def test_fsm_table_uses_kernel_names_and_values() -> None:
    assert LinkState.LINK_ESTABLISHED == 0xE and LinkState.LINK_RESET == 0x100
    assert LinkEvent.LINK_FAILURE_EVT == 0xFA110E
    for (state, evt), (nxt, _down) in TRANSITIONS.items():
        assert state in LINK_STATES and nxt in LINK_STATES and evt in LinkEvent
    downs = {k for k, (_, down) in TRANSITIONS.items() if down}
    assert {s for s, _ in downs} == {LinkState.LINK_ESTABLISHED, LinkState.LINK_SYNCHING}


# -- handshake --------------------------------------------------------------------------


def test_handshake_reset_activate_state() -> None:
    bn = bench()
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, 5.0)
    assert bn.a.is_up and bn.b.is_up
    assert bn.now < 0.1  # both send RESET at once, so one round trip suffices
    for i, link in enumerate(bn.links()):
        ups = [e for e in bn.events[i] if isinstance(e, LinkUp)]
        assert len(ups) == 1 and ups[0].name == link.name
    assert bn.a.name == "1001:a0-2002:b0" and bn.b.name == "2002:b0-1001:a0"
    types = [peek(f).user for f in bn.frames[0]]
    assert types[0] == User.LINK_PROTOCOL
    assert LinkProtoMsg.decode(bn.frames[0][0]).mtype == LinkMsgType.RESET_MSG
    # The bcast-init is sequenced packet #1 on both sides; nothing is delivered for it.
    inits = [f for f in bn.frames[0] if peek(f).user == User.BCAST_PROTOCOL]
    assert len(inits) == 1 and peek(inits[0]).seqno == 1
    assert bn.delivered(0) == bn.delivered(1) == []


def test_one_side_late_still_comes_up() -> None:
    bn = bench()
    bn.pipe.cut = True
    bn.run(3.0)
    assert not bn.a.is_up
    bn.pipe.cut = False
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, 30.0)
    assert bn.a.is_up and bn.b.is_up


def test_mtu_is_the_minimum_of_both() -> None:
    rng = random.Random(3)
    a = Link(own_addr=1, peer_addr=2, own_if="a", own_id_str="1", peer_id_str="2",
             mtu=1000, rng=rng, now=0.0)  # fmt: skip
    b = Link(own_addr=2, peer_addr=1, own_if="b", own_id_str="2", peer_id_str="1",
             mtu=1472, rng=rng, now=0.0)  # fmt: skip
    bn = Bench(a, b, Pipe(random.Random(1)))
    bn.run_until(lambda: a.is_up and b.is_up, 5.0)
    assert a.mtu == b.mtu == 1000
    bn.run(bn.now + 1.0)
    big = data_msg(1, 2, b"x" * 2000)
    a.send(big, bn.now)
    frames = a.frames_to_send(bn.now)
    assert len(frames) == 3 and all(len(f) <= 1000 - 40 for f in frames)
    assert {peek(f).user for f in frames} == {User.MSG_FRAGMENTER}
    for f in frames:
        b.receive(f, bn.now)
    got = [e.frame for e in iter(b.next_event, None) if isinstance(e, Delivered)]
    assert [norm(g) for g in got] == [norm(big)]
    with pytest.raises(LocalProtocolError):
        a.send(big[:-1], bn.now)  # shorter than its header says


def test_send_before_up_is_local_error() -> None:
    a, _ = make_pair()
    with pytest.raises(LocalProtocolError):
        a.send(data_msg(A_ADDR, B_ADDR, b"hi"), 0.0)
    with pytest.raises(LocalProtocolError):
        a.send(b"\x00" * 10, 0.0)


# -- delivery ---------------------------------------------------------------------------


def up_bench(seed: int, **faults: float) -> Bench:
    bn = bench(seed, **faults)
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, 60.0)
    assert bn.a.is_up and bn.b.is_up
    return bn


def send_all(bn: Bench, msgs: list[bytes], src: int = 0, limit: float = 600.0) -> None:
    """Send respecting congestion (as a socket sleeping on -ELINKCONG would)."""
    link = bn.links()[src]
    pending = list(msgs)
    while pending and bn.now < limit:
        while pending and not link.congested(peek(pending[0]).importance):
            link.send(pending.pop(0), bn.now)
            bn.flush()
        bn.step()


def test_in_order_delivery_no_faults_and_acks() -> None:
    bn = up_bench(2)
    msgs = [norm(data_msg(A_ADDR, B_ADDR, i.to_bytes(4, "big") * 10)) for i in range(500)]
    send_all(bn, msgs)
    bn.run_until(lambda: len(bn.delivered(1)) == 500, bn.now + 10)
    assert bn.delivered(1) == msgs
    bn.run(bn.now + 1.0)
    assert bn.a.queue_sizes()["transmq"] == 0  # everything acked
    st = bn.a.statistics()
    sent_msgs = st.tx_packets - st.tx_bundles + st.tx_bundled
    assert sent_msgs >= 500 and st.tx_bundles > 0  # the window filled: bundles were made
    rb = bn.b.statistics()
    assert rb.rx_bundles == st.tx_bundles and rb.rx_bundled == st.tx_bundled
    assert bn.b.statistics().tx_states >= rb.rx_packets // 16


def test_window_and_backlog_and_congestion() -> None:
    bn = up_bench(4)
    bn.run(bn.now + 1.0)  # the bcast-init gets acked
    bn.pipe.cut = True  # nothing gets acked: the window fills, then the backlog
    a = bn.a
    sent = 0
    with pytest.raises(LocalProtocolError):
        while True:
            a.send(data_msg(A_ADDR, B_ADDR, b"z" * 100), bn.now)
            sent += 1
    q = a.queue_sizes()
    # 100-byte messages are bundled while they wait: the backlog counts bundles
    assert q["transmq"] == 50 and q["backlog0"] == 100 and sent > 150
    assert a.statistics().tx_bundled == sent - 50 - 100 + a.statistics().tx_bundles
    assert a.congested(0) and not a.congested(1)
    evs = []
    while (ev := a.next_event()) is not None:
        evs.append(ev)
    assert evs == [LinkCongested(B_ADDR, 0)]
    a.send(data_msg(A_ADDR, B_ADDR, b"hi", importance=1), bn.now)  # other class still fine
    bn.pipe.cut = False
    bn.run_until(lambda: len(bn.delivered(1)) == sent + 1, bn.now + 10)
    assert len(bn.delivered(1)) == sent + 1
    assert any(isinstance(e, LinkUncongested) for e in bn.events[0])
    assert not a.congested(0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_exactly_once_in_order_under_faults(seed: int, n: int) -> None:
    bn = up_bench(seed, loss=0.3, dup=0.1, reorder=0.3)
    rng = random.Random(seed)
    msgs = [
        data_msg(A_ADDR, B_ADDR, rng.randbytes(rng.randint(1, 1400)), importance=rng.randint(0, 3))
        for _ in range(n)
    ]
    back = [data_msg(B_ADDR, A_ADDR, bytes([i % 256]) * (i % 50 + 1)) for i in range(n // 2)]
    send_all(bn, back, src=1)
    send_all(bn, msgs)
    bn.run_until(lambda: len(bn.delivered(1)) >= n and len(bn.delivered(0)) >= n // 2, bn.now + 600)
    assert bn.delivered(1) == [norm(m) for m in msgs]
    assert bn.delivered(0) == [norm(m) for m in back]
    assert not [e for ev in bn.events.values() for e in ev if isinstance(e, LinkDown)]
    # bounded: window + the backlog limit of the highest class in use
    assert bn.max_queue <= 50 + 400


# -- supervision -----------------------------------------------------------------------


@pytest.mark.parametrize("tol", [50, 400, 1500, 3000])
def test_silent_peer_declared_down_within_tolerance_not_before(tol: int) -> None:
    a, b = make_pair(5, tol=tol)
    bn = Bench(a, b, Pipe(random.Random(5)))
    bn.run_until(lambda: a.is_up and b.is_up, 5.0)
    bn.run(bn.now + 2.0)
    assert a.is_up
    last_rx = bn.now
    bn.pipe.cut = True
    # in-flight frames still arrive; the last one counts
    bn.pipe.queue.clear()
    bn.run_until(lambda: not a.is_up, last_rx + 60)
    downs = [e for e in bn.events[0] if isinstance(e, LinkDown)]
    assert downs and downs[0].reason == "link timeout"
    tick = min(tol / 4000, 0.5)
    assert last_rx + tol / 1000 - 1e-9 <= bn.now <= last_rx + tol / 1000 + tick + 1e-9


def test_link_comes_back_after_partition() -> None:
    bn = up_bench(6)
    bn.pipe.cut = True
    bn.run(bn.now + 5.0)
    assert not bn.a.is_up and not bn.b.is_up
    bn.pipe.cut = False
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, bn.now + 30)
    assert bn.a.is_up and bn.b.is_up
    msgs = [norm(data_msg(A_ADDR, B_ADDR, b"after"))]
    send_all(bn, msgs)
    bn.run(bn.now + 1)
    assert bn.delivered(1)[-1:] == msgs


def test_caller_reset_brings_peer_down_and_back() -> None:
    bn = up_bench(7)
    bn.a.reset(bn.now)
    bn.flush()
    assert any(isinstance(e, LinkDown) and e.reason == "reset by caller" for e in bn.events[0])
    bn.run_until(lambda: any(isinstance(e, LinkDown) for e in bn.events[1]), bn.now + 5)
    assert [e.reason for e in bn.events[1] if isinstance(e, LinkDown)] == ["peer stopping"]
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, bn.now + 30)
    assert bn.a.is_up and bn.b.is_up


def test_nack_at_three_deferred_and_retransmit() -> None:
    bn = up_bench(8)
    a, b = bn.a, bn.b
    bn.run(bn.now + 0.01)
    bn.pipe.cut = True
    a.send(data_msg(A_ADDR, B_ADDR, b"lost"), bn.now)
    a.frames_to_send(bn.now)  # the first one is lost
    bn.pipe.cut = False
    for i in range(3):
        a.send(data_msg(A_ADDR, B_ADDR, bytes([i])), bn.now)
        for f in a.frames_to_send(bn.now):
            b.receive(f, bn.now)
    nacks = [LinkProtoMsg.decode(f) for f in b.frames_to_send(bn.now)]
    assert [m.seq_gap for m in nacks] == [1]
    for m in nacks:
        a.receive(m.encode(), bn.now)
    retrans = a.frames_to_send(bn.now)
    assert len(retrans) == 1
    # rate limit: the same NACK within 1 ms retransmits nothing
    a.receive(nacks[0].encode(), bn.now + 0.0005)
    assert a.frames_to_send(bn.now) == []
    b.receive(retrans[0], bn.now)
    got = [e.frame for e in iter(b.next_event, None) if isinstance(e, Delivered)]
    assert [g[32:] for g in got] == [b"lost", b"\x00", b"\x01", b"\x02"]
    assert b.statistics().tx_naks == 1 and a.statistics().tx_retrans == 1


# -- fuzz -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=120), max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=4),
)
def test_garbage_is_remote_error_or_nothing(frames: list[bytes], flips: list) -> None:  # type: ignore[type-arg]
    bn = up_bench(9)
    b = bn.b
    # valid-looking frames with mutations, plus raw garbage
    base = bytearray(bn.frames[0][-1])
    for pos, val in flips:
        if pos < len(base):
            base[pos] = val
    for frame in [*frames, bytes(base)]:
        try:
            b.receive(frame, bn.now)
        except RemoteProtocolError:
            pass
        b.handle_timer(bn.now + 1)
        b.frames_to_send(bn.now)
        while b.next_event() is not None:
            pass


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 66000), min_size=1, max_size=6),
)
def test_large_messages_fragmented_exactly_once_under_faults(seed: int, sizes: list[int]) -> None:
    bn = up_bench(seed, loss=0.3, dup=0.1, reorder=0.3)
    rng = random.Random(seed)
    msgs = [data_msg(A_ADDR, B_ADDR, rng.randbytes(n - 32 if n > 32 else n)) for n in sizes]
    send_all(bn, msgs)
    bn.run_until(lambda: len(bn.delivered(1)) >= len(msgs), bn.now + 600)
    assert bn.delivered(1) == [norm(m) for m in msgs]
    assert bn.max_queue <= 50 + 400
    if any(len(m) > bn.a.mss for m in msgs):
        assert bn.b.statistics().rx_fragmented > 0


def test_fragment_without_first_resets_the_link() -> None:
    bn = up_bench(11)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    a.send(data_msg(A_ADDR, B_ADDR, b"y" * 3000), bn.now)
    frames = a.frames_to_send(bn.now)
    assert len(frames) == 3
    b.receive(frames[0], bn.now)
    b.receive(frames[0], bn.now)  # a duplicate is dropped, not joined twice
    assert b.is_up
    # a forged FIRST in place of the next fragment cannot belong
    forged = bytearray(frames[1])
    forged[4] = frames[0][4]
    b.receive(bytes(forged), bn.now)
    downs = [e for e in iter(b.next_event, None) if isinstance(e, LinkDown)]
    assert [d.reason for d in downs] == ["reassembly failure"]


def test_retransmission_failure_after_ten_tolerances() -> None:
    bn = up_bench(12)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    a.send(data_msg(A_ADDR, B_ADDR, b"never arrives"), bn.now)
    a.frames_to_send(bn.now)
    start = bn.now
    t = start
    downs: list[LinkDown] = []
    while t < start + 20 and not downs:
        # b keeps NACKing the one packet (so a never sees silence)
        nack = LinkProtoMsg(
            mtype=LinkMsgType.STATE_MSG,
            prev_node=B_ADDR,
            orig_node=B_ADDR,
            dest_node=A_ADDR,
            session=b.session,
            ack=(a.snd_nxt - 2) & 0xFFFF,
            seq_gap=1,
            next_sent=b.snd_nxt,
            bc_ack_invalid=True,
        )
        a.receive(nack.encode(), t)
        a.handle_timer(t)
        a.frames_to_send(t)
        downs = [e for e in iter(a.next_event, None) if isinstance(e, LinkDown)]
        t += 0.1
    assert [d.reason for d in downs] == ["retransmission failure"]
    assert 15.0 < t - start <= 15.3  # 10 x 1500 ms after the first retransmission


def test_a_peer_with_more_capabilities_than_ours_stays_linked() -> None:
    """A kernel advertises LINK_PROTO_SEQNO (0x7ff) but numbers its STATEs only if we do
    too, which we do not (0x031): its seqno is then snd_nxt + 32767 and repeats. Our
    link must take those STATEs (they clear its silence), or an idle link to a kernel
    times out every 1.5 s (as it did against Linux 6.1 before this was fixed)."""
    bn = bench()
    kernel_caps = 0x7FF
    bn.a.peer_caps = kernel_caps  # we learnt the kernel's bits from discovery
    bn.b.own_caps = kernel_caps  # the kernel-like end checks nothing: its peer has no bit
    bn.run_until(lambda: bn.a.is_up and bn.b.is_up, 5.0)
    assert bn.a.is_up and bn.b.is_up
    bn.run(bn.now + 20.0)  # idle: only probes and their answers keep it up
    assert bn.a.is_up and bn.b.is_up
    assert not [e for i in (0, 1) for e in bn.events[i] if isinstance(e, LinkDown)]
