"""A deterministic network simulator for sans-IO protocol objects (users get it too).

Theory of operation. Every protocol object in :mod:`tipcshm.core` is driven by the same
five calls (:mod:`tipcshm.core.contract`): ``receive``, ``frames_to_send``,
``next_timer``, ``handle_timer`` and ``next_event``. That is all a simulator needs. A
:class:`SimNetwork` plays the bearer (one UDP subnet, say) that the nodes share:

* each attached object has a *media address* (the 32 bytes discovery advertises; any
  unique bytes do). Its ``frames_to_send`` yields ``(frame, dest_media)`` pairs, ``None``
  meaning the bearer broadcast (every other node hears it), as a NodeStack or a
  Discoverer does. A point-to-point object such as a Link yields bare frames; attach it
  with ``peer_media`` and they all go there.
* every directed path ``src -> dst`` applies :class:`Faults`: loss, duplication,
  reordering (a frame is held back so that later frames overtake it) and delay with
  jitter. Partitions cut paths; a frame sent on a cut path, or still in flight when its
  path is cut, is dropped and counted.
* time is a :class:`FakeClock`. The loop jumps straight to the next event: the earliest
  frame arrival or the earliest ``next_timer()`` of any object, so ten simulated
  seconds take as long as the work done in them, not ten seconds.
* after every arrival or timer, the touched objects are drained: their frames enter the
  network, their events are recorded (and handed to ``on_event`` if given), in node
  order. Nothing depends on the wall clock, hash order or the global ``random``: all
  randomness comes from one ``random.Random(seed)``, so one seed gives one trace
  (:meth:`SimNetwork.trace`), which is what makes a failing property reproducible.

The kernel has nothing like this (its tests run real nodes); it plays the part of the
Ethernet or UDP bearer of net/tipc/bearer.c, including ``tipc_bearer_xmit``'s
broadcast to every node on the medium. :class:`SimLinkPair` and :class:`SimCluster`
build on it for two links back to back and for a cluster of NodeStacks.
"""

from __future__ import annotations

import functools
import heapq
import random
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import (
    AddressCommitted,
    CoreEvent,
    Delivered,
    LinkCongested,
    LinkUncongested,
    LinkUp,
    NodeUp,
)
from tipcshm.core.link import Link
from tipcshm.core.stack import NodeStack
from tipcshm.wire import (
    BASIC_H_SIZE,
    DataType,
    Header,
    encode_header,
    hash128to32,
    validate_msg,
)
from tipcshm.wire.discovery import UdpMediaAddr

# -- clock ----------------------------------------------------------------------------


class FakeClock:
    """Simulated time in seconds. It only moves when told to, and never backwards."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    @property
    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        """The clock is also a ``time.monotonic`` stand-in."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move ``seconds`` (>= 0) forward; returns the new time."""
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by {seconds} s")
        self._now += seconds
        return self._now

    def jump(self, to: float) -> float:
        """Move forward to ``to``; a time already past leaves the clock where it is."""
        if to > self._now:
            self._now = to
        return self._now

    def jump_to_next(self, *deadlines: float | None) -> float | None:
        """Jump to the earliest of ``deadlines`` (``next_timer()`` values; ``None`` means
        none pending). Returns the deadline taken, or None if there was none."""
        pending = [d for d in deadlines if d is not None]
        if not pending:
            return None
        first = min(pending)
        self.jump(first)
        return first

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


# -- faults ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """What one directed path does to a frame. Probabilities are per frame in [0, 1].

    ``delay`` and ``jitter`` (seconds): a frame arrives ``delay + U(0, jitter)`` after it
    was sent. A *reordered* frame arrives ``reorder_delay * U(1, 2)`` later still, so the
    frames sent after it overtake it. A *duplicated* frame arrives twice, each copy with
    its own delay (and its own chance of being reordered).
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.001
    jitter: float = 0.0
    reorder_delay: float = 0.005

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p}")
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")


@dataclass(slots=True)
class PathStatistics:
    """Counters of one directed path (or of the whole network)."""

    sent: int = 0  # frames offered to the path (a broadcast counts once per receiver)
    delivered: int = 0  # receive() calls made, duplicates included
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    partitioned: int = 0  # dropped because the path was cut (at send or arrival)
    rejected: int = 0  # receive() raised RemoteProtocolError

    def add(self, other: PathStatistics) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """Totals over every path, plus what no path could carry."""

    paths: PathStatistics
    unroutable: int  # unicast to a media address no node has
    in_flight: int
    now: float


# -- what the network drives ------------------------------------------------------------


class BearerObject(Protocol):
    """A sans-IO object on a shared bearer (NodeStack, Discoverer): frames carry their
    destination media address, ``None`` for the broadcast."""

    def receive(self, frame: bytes, now: float, src_media: bytes | None = None) -> None: ...

    def frames_to_send(self, now: float) -> list[tuple[bytes, bytes | None]]: ...

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> CoreEvent | None: ...


class PointToPointObject(Protocol):
    """A sans-IO object that talks to one peer only (a Link)."""

    def receive(self, frame: bytes, now: float) -> None: ...

    def frames_to_send(self, now: float) -> list[bytes]: ...

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> CoreEvent | None: ...


@dataclass(slots=True)
class _Port:
    obj: Any
    media: bytes
    peer_media: bytes | None  # set for point-to-point objects
    name: str
    events: list[tuple[float, CoreEvent]] = field(default_factory=list)
    rejected: list[tuple[float, bytes, str]] = field(default_factory=list)
    spins: int = 0  # handle_timer calls in a row that left the timer in the past


#: How many times in a row an object may ask for a timer that is already due after
#: handle_timer ran at the same instant before the loop calls it a livelock.
MAX_SPINS = 10_000

TraceEntry = tuple[float, str, int, int, int, int]


class SimNetwork:
    """A seeded, simulated bearer with per-path faults, partitions and a fake clock.

    ``faults`` (or the keyword arguments of :class:`Faults`) apply to every path unless
    :meth:`set_faults` gives a path its own. ``trace=False`` stops recording the trace
    (benchmarks); ``on_event(index, now, event)`` sees every event as it is drained and
    may act on it (send, publish...), the simulator drains whatever that produces.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        faults: Faults | None = None,
        clock: FakeClock | None = None,
        trace: bool = True,
        on_event: Callable[[int, float, CoreEvent], None] | None = None,
        **fault_kwargs: float,
    ) -> None:
        if faults is not None and fault_kwargs:
            raise TypeError("give either faults= or the Faults keyword arguments, not both")
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock if clock is not None else FakeClock()
        self.default_faults = faults if faults is not None else Faults(**fault_kwargs)
        self.on_event = on_event
        self._ports: list[_Port] = []
        self._by_media: dict[bytes, int] = {}
        self._path_faults: dict[tuple[int, int], Faults] = {}
        self._cut: set[tuple[int, int]] = set()
        self._stats: dict[tuple[int, int], PathStatistics] = {}
        self._unroutable = 0
        self._heap: list[tuple[float, int, int, int, bytes]] = []
        self._seq = 0  # tie-break: equal arrival times keep their sending order
        self._dirty: set[int] = set()
        self._trace: list[TraceEntry] | None = [] if trace else None

    # -- membership ---------------------------------------------------------------------

    def attach(
        self,
        obj: BearerObject | PointToPointObject,
        media: bytes,
        *,
        peer_media: bytes | None = None,
        name: str | None = None,
    ) -> int:
        """Put ``obj`` on the network at ``media``; returns its index (0, 1, ...).

        With ``peer_media`` the object is point-to-point: it receives ``(frame, now)``
        and every frame it sends goes to ``peer_media``.
        """
        media = bytes(media)
        if media in self._by_media:
            raise ValueError(f"media address {media.hex()} is already attached")
        index = len(self._ports)
        self._ports.append(_Port(obj, media, peer_media, name or f"node{index}"))
        self._by_media[media] = index
        self._dirty.add(index)
        return index

    def __len__(self) -> int:
        return len(self._ports)

    def node(self, index: int) -> Any:
        """The object attached as ``index``."""
        return self._ports[index].obj

    def media(self, index: int) -> bytes:
        return self._ports[index].media

    def index_of(self, media: bytes) -> int | None:
        return self._by_media.get(bytes(media))

    def touch(self, index: int) -> None:
        """Say that ``index`` was called from outside (send, publish...): its frames and
        events are drained before time moves on."""
        self._dirty.add(index)

    # -- faults and partitions ----------------------------------------------------------

    def set_faults(self, src: int | None = None, dst: int | None = None, **changes: float) -> None:
        """Change the faults of path ``src -> dst``; ``None`` for either end means every
        node. Without ``src`` and ``dst`` the default for all paths changes (paths with
        their own faults keep them)."""
        if src is None and dst is None:
            self.default_faults = replace(self.default_faults, **changes)  # type: ignore[arg-type]
            return
        n = len(self._ports)
        for s in range(n) if src is None else [src]:
            for d in range(n) if dst is None else [dst]:
                if s != d:
                    base = self._path_faults.get((s, d), self.default_faults)
                    self._path_faults[(s, d)] = replace(base, **changes)  # type: ignore[arg-type]

    def faults(self, src: int, dst: int) -> Faults:
        return self._path_faults.get((src, dst), self.default_faults)

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every path between nodes of different ``groups`` (both directions).
        Nodes in no group keep their paths. Frames already in flight on a cut path are
        dropped when they would arrive."""
        sets = [set(g) for g in groups]
        for a_i, a in enumerate(sets):
            for b in sets[a_i + 1 :]:
                if a & b:
                    raise ValueError(f"node(s) {sorted(a & b)} in two partition groups")
                for s in a:
                    for d in b:
                        self._cut.add((s, d))
                        self._cut.add((d, s))

    def cut(self, src: int, dst: int) -> None:
        """Cut one direction only (an asymmetric failure)."""
        self._cut.add((src, dst))

    def heal(self) -> None:
        """Restore every cut path."""
        self._cut.clear()

    def connected(self, src: int, dst: int) -> bool:
        return (src, dst) not in self._cut

    # -- carrying frames -----------------------------------------------------------------

    def inject(self, src: int, frame: bytes, dest_media: bytes | None = None) -> None:
        """Send ``frame`` as if node ``src`` had sent it (faults apply): how a test plays
        a hostile or broken peer."""
        self._route(src, bytes(frame), dest_media, self.clock.now)

    def _path(self, src: int, dst: int) -> PathStatistics:
        st = self._stats.get((src, dst))
        if st is None:
            st = self._stats[(src, dst)] = PathStatistics()
        return st

    def _record(self, kind: str, src: int, dst: int, frame: bytes) -> None:
        if self._trace is not None:
            self._trace.append(
                (round(self.clock.now, 9), kind, src, dst, len(frame), zlib.crc32(frame))
            )

    def _route(self, src: int, frame: bytes, dest_media: bytes | None, now: float) -> None:
        if dest_media is None:
            for dst in range(len(self._ports)):
                if dst != src:
                    self._transmit(src, dst, frame, now)
            return
        dst_or_none = self._by_media.get(bytes(dest_media))
        if dst_or_none is None or dst_or_none == src:
            self._unroutable += 1
            self._record("unroutable", src, -1, frame)
            return
        self._transmit(src, dst_or_none, frame, now)

    def _transmit(self, src: int, dst: int, frame: bytes, now: float) -> None:
        st = self._path(src, dst)
        st.sent += 1
        if (src, dst) in self._cut:
            st.partitioned += 1
            self._record("cut", src, dst, frame)
            return
        f = self._path_faults.get((src, dst), self.default_faults)
        rng = self.rng
        if f.loss and rng.random() < f.loss:
            st.lost += 1
            self._record("lose", src, dst, frame)
            return
        copies = 1
        if f.duplicate and rng.random() < f.duplicate:
            copies = 2
            st.duplicated += 1
        for _ in range(copies):
            delay = f.delay
            if f.jitter:
                delay += rng.uniform(0.0, f.jitter)
            if f.reorder and rng.random() < f.reorder:
                delay += f.reorder_delay * (1.0 + rng.random())
                st.reordered += 1
            self._seq += 1
            heapq.heappush(self._heap, (now + delay, self._seq, src, dst, frame))
        self._record("send", src, dst, frame)

    # -- the loop --------------------------------------------------------------------------

    def _drain(self, index: int, now: float) -> None:
        port = self._ports[index]
        obj = port.obj
        items = obj.frames_to_send(now)
        if port.peer_media is not None:
            for frame in items:
                self._route(index, bytes(frame), port.peer_media, now)
        else:
            for frame, dest in items:
                self._route(index, bytes(frame), dest, now)
        while (ev := obj.next_event()) is not None:
            port.events.append((now, ev))
            if self._trace is not None:
                self._trace.append((round(now, 9), type(ev).__name__, index, -1, 0, 0))
            if self.on_event is not None:
                self.on_event(index, now, ev)

    def _flush(self) -> None:
        now = self.clock.now
        while self._dirty:
            for index in sorted(self._dirty):
                self._dirty.discard(index)
                self._drain(index, now)

    def _next_timer(self) -> tuple[float | None, int]:
        best: float | None = None
        who = -1
        for index, port in enumerate(self._ports):
            t = port.obj.next_timer()
            if t is not None and (best is None or t < best):
                best, who = t, index
        return best, who

    def next_deadline(self) -> float | None:
        """When something happens next (an arrival or a timer), or None if never."""
        self._flush()
        t_timer, _ = self._next_timer()
        t_arrival = self._heap[0][0] if self._heap else None
        if t_timer is None:
            return t_arrival
        if t_arrival is None:
            return t_timer
        return min(t_timer, t_arrival)

    def step(self, until: float | None = None) -> bool:
        """Jump to the next arrival or timer (not beyond ``until``) and process it.
        Returns False, without moving the clock, when nothing is due by ``until``."""
        self._flush()
        t_timer, _ = self._next_timer()
        t_arrival = self._heap[0][0] if self._heap else None
        if t_arrival is not None and (t_timer is None or t_arrival <= t_timer):
            t = t_arrival
        elif t_timer is not None:
            t = t_timer
        else:
            return False
        if until is not None and t > until:
            return False
        before = self.clock.now
        now = self.clock.jump(t)
        if now > before:
            for port in self._ports:
                port.spins = 0
        if t_arrival is not None and t_arrival <= now:
            self._arrive(now)
        else:
            self._timers(now)
        self._flush()
        return True

    def _arrive(self, now: float) -> None:
        _, _, src, dst, frame = heapq.heappop(self._heap)
        st = self._path(src, dst)
        if (src, dst) in self._cut:
            st.partitioned += 1
            self._record("cut", src, dst, frame)
            return
        port = self._ports[dst]
        st.delivered += 1
        self._record("deliver", src, dst, frame)
        try:
            if port.peer_media is not None:
                port.obj.receive(frame, now)
            else:
                port.obj.receive(frame, now, self._ports[src].media)
        except RemoteProtocolError as exc:
            st.rejected += 1
            port.rejected.append((now, frame, str(exc)))
            self._record("reject", src, dst, frame)
        self._dirty.add(dst)

    def _timers(self, now: float) -> None:
        for index, port in enumerate(self._ports):
            t = port.obj.next_timer()
            if t is not None and t <= now:
                port.obj.handle_timer(now)
                self._dirty.add(index)
                after = port.obj.next_timer()
                if after is not None and after <= now:
                    port.spins += 1
                    if port.spins > MAX_SPINS:
                        raise RuntimeError(
                            f"{port.name} ({type(port.obj).__name__}) keeps asking for a "
                            f"timer at {after} after handle_timer({now}): livelock"
                        )
                else:
                    port.spins = 0

    def run(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass; returns when the clock reaches it."""
        self.run_until(self.clock.now + seconds)

    def run_until(self, t: float) -> None:
        """Process everything due by time ``t``, then set the clock to ``t``."""
        while self.step(until=t):
            pass
        self.clock.jump(t)
        self._flush()

    def run_until_true(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` holds (checked after every step) or ``timeout``
        simulated seconds passed. Returns whether it holds."""
        deadline = self.clock.now + timeout
        self._flush()
        if predicate():
            return True
        while self.step(until=deadline):
            if predicate():
                return True
        self.clock.jump(deadline)
        self._flush()
        return predicate()

    # -- what happened ---------------------------------------------------------------------

    def events(self, index: int) -> list[tuple[float, CoreEvent]]:
        """Every event node ``index`` reported so far, with the time it was drained."""
        return list(self._ports[index].events)

    def take_events(self, index: int) -> list[tuple[float, CoreEvent]]:
        """Like :meth:`events`, and forget them (long runs keep memory flat)."""
        port = self._ports[index]
        out, port.events = port.events, []
        return out

    def rejected(self, index: int) -> list[tuple[float, bytes, str]]:
        """Frames node ``index`` refused with RemoteProtocolError: (time, frame, why)."""
        return list(self._ports[index].rejected)

    def trace(self) -> list[TraceEntry]:
        """Everything that happened, in order: (time, what, src, dst, length, crc32);
        events appear with their class name as ``what`` and dst -1. Same seed, same
        calls, same trace."""
        if self._trace is None:
            raise RuntimeError("this network was created with trace=False")
        return list(self._trace)

    def in_flight(self) -> int:
        return len(self._heap)

    def path_statistics(self, src: int, dst: int) -> PathStatistics:
        return replace(self._path(src, dst))

    def statistics(self) -> NetworkStatistics:
        total = PathStatistics()
        for st in self._stats.values():
            total.add(st)
        return NetworkStatistics(total, self._unroutable, len(self._heap), self.clock.now)


# -- messages ----------------------------------------------------------------------------


def data_message(
    src: int,
    dst: int,
    payload: bytes,
    *,
    importance: int = 0,
    src_port: int = 1,
    dst_port: int = 1,
) -> bytes:
    """A complete DIRECT_MSG from node ``src`` port ``src_port`` to node ``dst`` port
    ``dst_port`` carrying ``payload`` (up to 66000 bytes): what a socket hands a link."""
    return _data_header(src, dst, len(payload), importance, src_port, dst_port) + bytes(payload)


@functools.lru_cache(maxsize=4096)
def _data_header(
    src: int, dst: int, size: int, importance: int, src_port: int, dst_port: int
) -> bytes:
    # cached: simulations send many messages of few shapes, and a checked Header costs
    # more than the link's own send path
    hdr = Header(
        user=importance,
        hsize=BASIC_H_SIZE,
        size=BASIC_H_SIZE + size,
        mtype=DataType.DIRECT_MSG,
        prev_node=src,
        orig_port=src_port,
        dest_port=dst_port,
        orig_node=src,
        dest_node=dst,
    )
    return encode_header(hdr)


def message_payload(frame: bytes) -> bytes:
    """The data of a complete message (what follows its header)."""
    hdr = validate_msg(frame)
    return bytes(frame[hdr.hsize : hdr.size])


# -- two links back to back ------------------------------------------------------------------


class SimLinkPair:
    """Two :class:`~tipcshm.core.link.Link` endpoints, side 0 (node ``addr(0)``) and
    side 1, on one simulated point-to-point path with faults: how to test a link, or
    one's own use of it, under loss, duplication, reordering and partitions.

    :meth:`send` plays a socket: messages wait in a per-side queue and are handed to the
    link while it is up and that importance is not congested (the -ELINKCONG sleep),
    so nothing is lost to congestion. :meth:`delivered` lists the payloads each side
    received, in order.
    """

    ADDRS = (0x01001001, 0x01001002)

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.001,
        jitter: float = 0.0,
        mtu: int | tuple[int, int] = 1472,
        tolerance_ms: int | tuple[int, int] = 1500,
        window: int = 50,
        trace: bool = True,
    ) -> None:
        self.network = SimNetwork(
            seed,
            faults=Faults(loss, duplicate, reorder, delay, jitter),
            trace=trace,
            on_event=self._on_event,
        )
        mtus = mtu if isinstance(mtu, tuple) else (mtu, mtu)
        tols = tolerance_ms if isinstance(tolerance_ms, tuple) else (tolerance_ms, tolerance_ms)
        now = self.network.clock.now

        def link(side: int) -> Link:
            own, peer = self.ADDRS[side], self.ADDRS[1 - side]
            return Link(
                own_addr=own,
                peer_addr=peer,
                own_if=f"sim{side}",
                peer_if=f"sim{1 - side}",
                own_id_str=f"{own:x}",
                peer_id_str=f"{peer:x}",
                mtu=mtus[side],
                tolerance_ms=tols[side],
                window=window,
                rng=random.Random(self.network.rng.getrandbits(64)),
                now=now,
            )

        self.links: tuple[Link, Link] = (link(0), link(1))
        self.network.attach(self.links[0], b"side0", peer_media=b"side1", name="side0")
        self.network.attach(self.links[1], b"side1", peer_media=b"side0", name="side1")
        self._pending: tuple[deque[tuple[int, bytes]], deque[tuple[int, bytes]]] = (
            deque(),
            deque(),
        )
        self._delivered: tuple[list[bytes], list[bytes]] = ([], [])

    @property
    def clock(self) -> FakeClock:
        return self.network.clock

    def addr(self, side: int) -> int:
        return self.ADDRS[side]

    def link(self, side: int) -> Link:
        return self.links[side]

    def run(self, seconds: float) -> None:
        self.network.run(seconds)

    def run_until_up(self, timeout: float = 10.0) -> bool:
        return self.network.run_until_true(
            lambda: self.links[0].is_up and self.links[1].is_up, timeout
        )

    def send(self, side: int, payload: bytes, *, importance: int = 0) -> None:
        """Queue one data message of ``payload`` from ``side`` to the other side."""
        msg = data_message(self.ADDRS[side], self.ADDRS[1 - side], payload, importance=importance)
        self._pending[side].append((importance, msg))
        self._feed(side)

    def pending(self, side: int) -> int:
        """Messages :meth:`send` holds back (link down or congested)."""
        return len(self._pending[side])

    def _feed(self, side: int) -> None:
        link = self.links[side]
        queue = self._pending[side]
        now = self.network.clock.now
        while queue and link.is_up:
            importance, msg = queue[0]
            if link.congested(importance):
                break
            link.send(msg, now)
            queue.popleft()
        self.network.touch(side)

    def _on_event(self, index: int, now: float, ev: CoreEvent) -> None:
        if isinstance(ev, Delivered):
            self._delivered[index].append(message_payload(ev.frame))
        elif isinstance(ev, LinkUp | LinkUncongested):
            self._feed(index)

    def delivered(self, side: int) -> list[bytes]:
        """Payloads delivered at ``side``, in order."""
        return list(self._delivered[side])

    def delivered_count(self, side: int) -> int:
        """``len(delivered(side))`` without the copy (for run_until predicates)."""
        return len(self._delivered[side])

    def events(self, side: int) -> list[tuple[float, CoreEvent]]:
        return self.network.events(side)

    def partition(self) -> None:
        self.network.partition({0}, {1})

    def heal(self) -> None:
        self.network.heal()

    def trace(self) -> list[TraceEntry]:
        return self.network.trace()

    def statistics(self) -> NetworkStatistics:
        """What the simulated path did (see :meth:`SimNetwork.statistics`); each link
        has its own ``statistics()``."""
        return self.network.statistics()


# -- a cluster of nodes ------------------------------------------------------------------------

#: Service types below this are TIPC's own (node state, link state); :meth:`SimCluster.name_table`
#: hides them unless asked.
RESERVED_TYPES = 64


class SimCluster:
    """``n`` complete nodes (:class:`~tipcshm.core.stack.NodeStack`: discovery, peer
    nodes with their links, name distribution, a name table) on one simulated UDP
    bearer with faults on every path. Node ``i`` has media address 127.0.0.(i+1):6118
    and a 128-bit identity drawn from the seed; nodes are named by index everywhere.

    ::

        sim = SimCluster(3, seed=7, loss=0.3, duplicate=0.1, reorder=0.3)
        sim.run(seconds=10)              # simulated time; returns at once in real time
        sim.links_up()                   # {(0, 1), (1, 0), ...}: i has a link up to j
        sim.publish(0, 18888, 0, 99)     # node 0 binds {18888, 0..99}, cluster scope
        sim.name_table(2)                # [(18888, 0, 99, 0), ...]: what node 2 knows
        sim.send(0, 2, b"payload")       # one data message from node 0 to node 2
        sim.delivered(2)                 # [(0, b"payload")]
        sim.partition({0}, {1, 2}); sim.heal()

    :meth:`send` plays a socket: a message waits until a link to the destination is up
    and not congested, then goes to the stack; a message the stack already took is lost
    if its link then goes down (the kernel without a second link does the same: there
    is no failover yet), so delivery is exactly once and in order while the link
    stays up, at most once and in order across a reset. ``trial=True`` lets discovery pick each
    node's address (the 1 s duplicate-address trial) instead of giving it from the
    identity.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.001,
        jitter: float = 0.0,
        mtu: int = 1472,
        tolerance_ms: int = 1500,
        window: int = 50,
        net_id: int = 4711,
        trial: bool = False,
        trace: bool = True,
    ) -> None:
        if not 1 <= n <= 254:
            raise ValueError(f"a simulated cluster has 1..254 nodes, not {n}")
        self.network = SimNetwork(
            seed,
            faults=Faults(loss, duplicate, reorder, delay, jitter),
            trace=trace,
            on_event=self._on_event,
        )
        rng = self.network.rng
        self.identities: list[bytes] = []
        addrs: list[int] = []
        while len(self.identities) < n:
            identity = rng.randbytes(16)
            addr = hash128to32(identity)
            if addr and addr not in addrs:
                self.identities.append(identity)
                addrs.append(addr)
        self._addr: list[int | None] = [None if trial else a for a in addrs]
        self._index: dict[int, int] = {a: i for i, a in enumerate(self._addr) if a is not None}
        self.stacks: list[NodeStack] = []
        now = self.network.clock.now
        for i in range(n):
            media = UdpMediaAddr(bytes([127, 0, 0, i + 1]), 6118).encode()
            stack = NodeStack(
                identity=self.identities[i],
                addr=self._addr[i],
                media=media,
                if_name="udp0",
                rng=random.Random(rng.getrandbits(64)),
                now=now,
                net_id=net_id,
                mtu=mtu,
                tolerance_ms=tolerance_ms,
                window=window,
            )
            self.stacks.append(stack)
            self.network.attach(stack, media, name=f"node{i}")
        self._pending: list[dict[int, deque[tuple[int, bytes]]]] = [{} for _ in range(n)]
        self._congested: set[tuple[int, int]] = set()  # (node index, peer address)
        self._delivered: list[list[tuple[int, bytes]]] = [[] for _ in range(n)]
        self._bindings: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
        self._next_port = 1000

    # -- time ----------------------------------------------------------------------------

    @property
    def clock(self) -> FakeClock:
        return self.network.clock

    @property
    def now(self) -> float:
        return self.network.clock.now

    def __len__(self) -> int:
        return len(self.stacks)

    def run(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (returns at once in real time)."""
        self.network.run(seconds)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` holds or ``timeout`` simulated seconds passed."""
        return self.network.run_until_true(predicate, timeout)

    def run_until_connected(self, timeout: float = 30.0) -> bool:
        """Run until every node has a link up to every other node."""
        n = len(self.stacks)
        return self.run_until(lambda: len(self.links_up()) == n * (n - 1), timeout)

    def quiescent(self) -> bool:
        """True when every message has arrived: nothing waits in :meth:`send`, and every
        link of every node has an empty transmit queue and backlog (all it sent was
        acknowledged, so the peer has delivered it). Probes and acks may still be on
        the way; they carry nothing a node would apply."""
        if any(q for pending in self._pending for q in pending.values()):
            return False
        for stack in self.stacks:
            for node in stack.peers().values():
                for entry in node.links:
                    q = entry.link.queue_sizes()
                    if q["transmq"] or q["backlog"]:
                        return False
        return True

    # -- nodes -----------------------------------------------------------------------------

    def stack(self, i: int) -> NodeStack:
        """Node ``i``'s :class:`~tipcshm.core.stack.NodeStack` (to look or poke inside)."""
        return self.stacks[i]

    def addr(self, i: int) -> int | None:
        """Node ``i``'s 32-bit TIPC address (None while its address trial runs)."""
        return self._addr[i]

    def index(self, addr: int) -> int | None:
        """The index of the node with address ``addr``, if any."""
        return self._index.get(addr)

    def links_up(self) -> set[tuple[int, int]]:
        """``(i, j)`` for every node ``i`` that has a link up to node ``j``."""
        out: set[tuple[int, int]] = set()
        for i, stack in enumerate(self.stacks):
            for peer in stack.links_up():
                j = self._index.get(peer)
                if j is not None:
                    out.add((i, j))
        return out

    # -- names -----------------------------------------------------------------------------

    def publish(
        self,
        i: int,
        type: int,
        lower: int,
        upper: int,
        *,
        port: int | None = None,
        key: int | None = None,
    ) -> tuple[int, int]:
        """Node ``i`` binds ``{type, lower, upper}`` with cluster scope. Port and key
        default to fresh numbers; returns them (a withdrawal must name both)."""
        if port is None:
            port = self._next_port
            self._next_port += 1
        if key is None:
            key = port
        self.stacks[i].publish(type, lower, upper, port, key, self.now)
        self._bindings.setdefault((i, type, lower, upper), []).append((port, key))
        self.network.touch(i)
        return port, key

    def withdraw(
        self,
        i: int,
        type: int,
        lower: int,
        upper: int,
        *,
        port: int | None = None,
        key: int | None = None,
    ) -> None:
        """Node ``i`` withdraws a binding; without port/key its latest one of that range."""
        made = self._bindings.get((i, type, lower, upper), [])
        if port is None or key is None:
            if not made:
                raise ValueError(f"node {i} has no binding {{{type}, {lower}, {upper}}}")
            port, key = made[-1]
        if (port, key) in made:
            made.remove((port, key))
        self.stacks[i].withdraw(type, lower, upper, port, key, self.now)
        self.network.touch(i)

    def name_table(self, i: int, *, reserved: bool = False) -> list[tuple[int, int, int, int]]:
        """The bindings node ``i`` knows, as sorted ``(type, lower, upper, node_index)``;
        TIPC's own service types (< 64: node and link state) only with ``reserved``."""
        out = []
        for b in self.stacks[i].nametable.bindings():
            if b.type < RESERVED_TYPES and not reserved:
                continue
            j = self._index.get(b.node, -1)
            out.append((b.type, b.lower, b.upper, j))
        return sorted(out)

    # -- data ------------------------------------------------------------------------------

    def send(self, i: int, j: int, payload: bytes, *, importance: int = 0) -> None:
        """One data message of ``payload`` from node ``i`` to node ``j`` over their link.
        It waits (as a socket would) while no link is up or the link is congested."""
        src, dst = self._addr[i], self._addr[j]
        if src is None or dst is None:
            raise ValueError(f"node {i if src is None else j} has no address yet")
        msg = data_message(src, dst, payload, importance=importance)
        self._pending[i].setdefault(j, deque()).append((importance, msg))
        self._feed(i)

    def pending(self, i: int) -> int:
        """Messages node ``i`` holds back (no link, or congested)."""
        return sum(len(q) for q in self._pending[i].values())

    def _feed(self, i: int) -> None:
        stack = self.stacks[i]
        up = stack.links_up()
        for j, queue in self._pending[i].items():
            dst = self._addr[j]
            if dst is None:
                continue
            while queue and dst in up and (i, dst) not in self._congested:
                importance, msg = queue[0]
                if self._link_congested(stack, dst, importance):
                    self._congested.add((i, dst))
                    break
                stack.send(dst, msg, self.now)
                queue.popleft()
        self.network.touch(i)

    @staticmethod
    def _link_congested(stack: NodeStack, peer: int, importance: int) -> bool:
        return stack.congested(peer, importance)

    def _on_event(self, i: int, now: float, ev: CoreEvent) -> None:
        if isinstance(ev, Delivered):
            hdr = validate_msg(ev.frame)
            if hdr.is_data:
                src = self._index.get(ev.source, -1)
                self._delivered[i].append((src, bytes(ev.frame[hdr.hsize : hdr.size])))
        elif isinstance(ev, AddressCommitted):
            self._addr[i] = ev.addr
            self._index[ev.addr] = i
        elif isinstance(ev, LinkCongested):
            self._congested.add((i, ev.peer))
        elif isinstance(ev, LinkUncongested):
            self._congested.discard((i, ev.peer))
            self._feed(i)
        elif isinstance(ev, LinkUp | NodeUp):
            self._feed(i)

    def delivered(self, j: int) -> list[tuple[int, bytes]]:
        """``(source_index, payload)`` of every data message delivered at node ``j``,
        in order."""
        return list(self._delivered[j])

    def delivered_count(self, j: int) -> int:
        """``len(delivered(j))`` without the copy (for run_until predicates)."""
        return len(self._delivered[j])

    def events(self, i: int) -> list[tuple[float, CoreEvent]]:
        """Every event node ``i``'s stack reported, with its time."""
        return self.network.events(i)

    # -- faults ------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every path between nodes of different groups: ``partition({0}, {1, 2})``."""
        self.network.partition(*groups)

    def heal(self) -> None:
        """Restore every path."""
        self.network.heal()

    def trace(self) -> list[TraceEntry]:
        """Everything that happened (see :meth:`SimNetwork.trace`): same seed, same trace."""
        return self.network.trace()

    def statistics(self) -> NetworkStatistics:
        """What the simulated bearer did (see :meth:`SimNetwork.statistics`); each
        node's stack has its own ``statistics()``."""
        return self.network.statistics()


__all__ = [
    "BearerObject",
    "FakeClock",
    "Faults",
    "NetworkStatistics",
    "PathStatistics",
    "PointToPointObject",
    "SimCluster",
    "SimLinkPair",
    "SimNetwork",
    "data_message",
    "message_payload",
]
