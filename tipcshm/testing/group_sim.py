"""An in-memory harness for the sans-IO group core (:class:`tipcshm.core.group.Group`).

:class:`GroupSim` holds N group sockets and a FIFO channel per (sender, receiver) pair;
one seeded :class:`random.Random` picks which channel delivers next, so traffic between
pairs interleaves arbitrarily while each pair stays in order, as over a TIPC link. The
binding events of the topology subscription travel on the member's channels too (the
kernel's name distribution and the member's own messages share the link), in the order
the member caused them: its binding before its JOINs, its LEAVEs before the withdrawal.

It also keeps the books a test needs: what each sender sent to whom (the receivers the
core counted at send time), what each receiver consumed from whom, and per pair the
blocks sent but not yet consumed, so properties can be stated over a run
(:meth:`GroupSim.check`). Senders respect flow control: :meth:`GroupSim.bcast` and
friends queue the message in the sender's outbox, and it leaves only when the core says
the destination is not congested (a blocked sender waits, as a blocking socket would).

Example::

    sim = GroupSim(seed=1)
    a, b = sim.add(), sim.add()
    sim.bcast(a, b"hello")
    sim.run()
    assert sim.received[b] == [(a, "join"), (a, b"hello")]
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tipcshm.core.group import Group, MemberState
from tipcshm.core.nametable import CLUSTER_SCOPE
from tipcshm.wire.group import blocks, build_group_msg
from tipcshm.wire.header import GROUP_H_SIZE, DataType, GroupMsgType, User, w0_user, w1_mtype

__all__ = ["GroupSim", "SimDeadlock"]

_PUBLISHED = 1
_WITHDRAWN = 2


class SimDeadlock(AssertionError):
    """Nothing can move, yet messages are still waiting to be sent."""


@dataclass
class _Outgoing:
    kind: str  # "bcast", "mcast", "ucast"
    data: bytes
    dest: int = 0  # ucast: the destination port; mcast: the instance


@dataclass
class _Sock:
    port: int
    node: int
    instance: int
    group: Group
    outbox: deque[_Outgoing] = field(default_factory=deque)


# A channel item: ("frame", bytes) or ("event", (event, instance, gone)).
_Item = tuple[str, object]


class GroupSim:
    """N group sockets of one group type connected by per-pair FIFO channels."""

    def __init__(
        self,
        seed: int = 0,
        *,
        type: int = 4711,
        nodes: int = 1,
        scope: int = CLUSTER_SCOPE,
        loopback: bool = False,
        events: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.type = type
        self.scope = scope
        self.loopback = loopback
        self.events = events
        self._nodes = [0x1001 + i for i in range(nodes)]
        self._next_port = 1000
        self.socks: dict[int, _Sock] = {}
        self.channels: dict[tuple[int, int], deque[_Item]] = {}
        #: per receiver: (sender, "join" | "leave" | data) in delivery-to-user order
        self.received: dict[int, list[tuple[int, object]]] = {}
        #: per (sender, receiver): data the core counted that receiver for, in send order
        self.expected: dict[tuple[int, int], list[bytes]] = {}
        #: per (sender, receiver): blocks sent and not yet consumed
        self.outstanding: Counter[tuple[int, int]] = Counter()
        #: GROUP_PROTOCOL messages seen, by type name (JOIN, ADV, RECLAIM, ...)
        self.proto_count: Counter[str] = Counter()
        self.max_outstanding_violation: list[str] = []
        self.gone: set[int] = set()
        self._node_by_port: dict[int, int] = {}

    # ------------------------------------------------------------------ membership

    def add(self, instance: int | None = None, *, node: int | None = None) -> int:
        """A new socket joins; returns its port (the simulator's handle)."""
        port = self._next_port
        self._next_port += 1
        node = self._nodes[port % len(self._nodes)] if node is None else node
        inst = port if instance is None else instance
        g = Group(
            node,
            port,
            self.type,
            inst,
            self.scope,
            loopback=self.loopback,
            events=self.events,
        )
        # Subscription first, snapshot of the bindings that exist, then our own binding.
        snapshot = [(s.node, s.port, s.instance) for s in self.socks.values()]
        sock = _Sock(port, node, inst, g)
        self._node_by_port[port] = node
        self.socks[port] = sock
        self.received[port] = []
        for other in list(self.socks):
            if other != port or self.loopback:
                self._chan(port, other).append(("event", (_PUBLISHED, inst, False)))
        g.join(snapshot)
        self._flush(port)
        return port

    def leave(self, port: int) -> None:
        """The socket leaves the group (LEAVEs, then its binding is withdrawn)."""
        sock = self.socks[port]
        sock.group.leave()
        self._flush(port)
        for other in self.socks:
            if other != port or self.loopback:
                self._chan(port, other).append(("event", (_WITHDRAWN, sock.instance, False)))
        self._retire(port)

    def kill(self, port: int) -> None:
        """The socket's process dies: no LEAVE; the name-table worker reports EVT_GONE."""
        sock = self.socks[port]
        for other in self.socks:
            if other != port:
                self._chan(port, other).append(("event", (_WITHDRAWN, sock.instance, True)))
        self._retire(port)

    def _retire(self, port: int) -> None:
        del self.socks[port]
        self.gone.add(port)
        for key in list(self.channels):
            if key[1] == port:
                del self.channels[key]
        for key in list(self.outstanding):
            if key[1] == port:
                del self.outstanding[key]

    # ------------------------------------------------------------------ traffic

    def bcast(self, port: int, data: bytes) -> None:
        self.socks[port].outbox.append(_Outgoing("bcast", data))

    def mcast(self, port: int, instance: int, data: bytes) -> None:
        self.socks[port].outbox.append(_Outgoing("mcast", data, instance))

    def ucast(self, port: int, dest: int, data: bytes) -> None:
        self.socks[port].outbox.append(_Outgoing("ucast", data, dest))

    def try_send(self, port: int) -> bool:
        """Send the head of ``port``'s outbox if flow control allows; True if sent (or
        dropped because its destination is no receiver)."""
        sock = self.socks[port]
        if not sock.outbox:
            return False
        out = sock.outbox[0]
        g = sock.group
        blks = blocks(GROUP_H_SIZE + len(out.data))
        if out.kind == "ucast":
            dest = self.socks.get(out.dest)
            if dest is None:
                sock.outbox.popleft()
                return True
            cong, m = g.cong(dest.node, dest.port, blks)
            self._flush(port)
            if cong:
                return False
            sock.outbox.popleft()
            if m is None:
                return True  # not (or no longer) a receiver: the socket would fail
            frame = build_group_msg(
                DataType.GRP_UCAST_MSG,
                out.data,
                own_node=sock.node,
                own_port=port,
                dest_node=dest.node,
                dest_port=dest.port,
                type=self.type,
                seqno=g.bc_snd_nxt,
            )
            self._send_data(port, dest.port, frame, blks)
            g.sent_unicast(m, blks)
            return True
        if g.bc_cong(blks):
            self._flush(port)
            return False
        self._flush(port)
        sock.outbox.popleft()
        receivers = [
            m.port for m in g.members() if m.state not in (MemberState.JOINING, MemberState.LEAVING)
        ]
        mtype = DataType.GRP_BCAST_MSG if out.kind == "bcast" else DataType.GRP_MCAST_MSG
        frame = build_group_msg(
            mtype,
            out.data,
            own_node=sock.node,
            own_port=port,
            dest_node=0,
            dest_port=0,
            type=self.type,
            instance=out.dest,
            seqno=g.bc_snd_nxt,
            ack_req=g.bcast_ack_req(),
        )
        for r in receivers:
            if r in self.socks:
                rsock = self.socks[r]
                to_me = out.kind == "bcast" or out.dest == rsock.instance
                self._send_data(port, r, frame, blks, expect=to_me)
        g.sent_bcast(blks)
        return True

    def _send_data(
        self, src: int, dst: int, frame: bytes, blks: int, *, expect: bool = True
    ) -> None:
        self._chan(src, dst).append(("frame", frame))
        self.outstanding[(src, dst)] += blks
        self._check_pair(src, dst)
        if expect:
            self.expected.setdefault((src, dst), []).append(frame[GROUP_H_SIZE:])

    # ------------------------------------------------------------------ delivery

    def step(self) -> bool:
        """Deliver the head of one non-empty channel, chosen at random."""
        busy = [k for k, q in self.channels.items() if q]
        if not busy:
            return False
        src, dst = busy[self.rng.randrange(len(busy))]
        kind, what = self.channels[(src, dst)].popleft()
        sock = self.socks[dst]
        g = sock.group
        if kind == "event":
            assert isinstance(what, tuple)
            event, instance, gone = what
            g.member_event(event, self._node_of(src), src, instance, node_up=True, gone=gone)
        else:
            assert isinstance(what, bytes)
            if w0_user(int.from_bytes(what[:4], "big")) == User.GROUP_PROTOCOL:
                mtype = w1_mtype(int.from_bytes(what[4:8], "big"))
                self.proto_count[GroupMsgType(mtype).name] += 1
            elif w1_mtype(int.from_bytes(what[4:8], "big")) == DataType.GRP_MCAST_MSG:
                inst = int.from_bytes(what[36:40], "big")
                if inst != sock.instance:
                    # The core counts it consumed when it reaches the head of the stream.
                    self.outstanding[(src, dst)] -= blocks(len(what))
            ok = g.receive(what)
            assert ok, "the simulator built a frame the core calls malformed"
        self._flush(dst)
        self._check_windows(dst)
        return True

    def consume(self, port: int, limit: int = 1) -> int:
        """The application of ``port`` takes up to ``limit`` deliveries."""
        g = self.socks[port].group
        n = 0
        while g.delivered and n < limit:
            d = g.delivered.popleft()
            n += 1
            if d.event:
                self.received[port].append((d.port, "join" if d.event == _PUBLISHED else "leave"))
                continue
            self.received[port].append((d.port, d.frame[GROUP_H_SIZE:]))
            g.consumed(d.node, d.port, d.blocks)
            self.outstanding[(d.port, port)] -= d.blocks
            self._flush(port)
        return n

    def run(self, *, max_steps: int = 1_000_000, consume_bias: float = 0.3) -> None:
        """Move everything until nothing is left to send, deliver or consume; raise
        :class:`SimDeadlock` if messages wait for windows that never open."""
        for _ in range(max_steps):
            if self.quiescent():
                return
            moved = False
            r = self.rng.random()
            ports = list(self.socks)
            if r < consume_bias:
                p = ports[self.rng.randrange(len(ports))]
                moved = self.consume(p, self.rng.randint(1, 4)) > 0
            elif r < 0.6:
                p = ports[self.rng.randrange(len(ports))]
                moved = self.try_send(p)
            else:
                moved = self.step()
            if not moved and not self._any_move():
                raise SimDeadlock(self._describe())
        raise SimDeadlock("no quiescence after max_steps: " + self._describe())

    def _any_move(self) -> bool:
        if any(self.channels.values()):
            return True
        if any(s.group.delivered for s in self.socks.values()):
            return True
        return any(self.try_send(p) for p in list(self.socks))

    def quiescent(self) -> bool:
        return (
            not any(self.channels.values())
            and not any(s.outbox for s in self.socks.values())
            and not any(s.group.delivered for s in self.socks.values())
        )

    def _describe(self) -> str:
        parts = []
        for s in self.socks.values():
            g = s.group
            parts.append(
                f"port {s.port}: outbox {len(s.outbox)} bc_ackers {g.bc_ackers} "
                f"active {g.active_cnt}/{g.max_active} members "
                + ", ".join(
                    f"{m.port}:{m.state.name} w{m.window} a{m.advertised}" for m in g.members()
                )
            )
        return "\n".join(parts)

    # ------------------------------------------------------------------ checks

    def _check_windows(self, port: int) -> None:
        """Per pair: blocks sent to ``port`` and not yet consumed never exceed what
        ``port`` advertised to the sender."""
        for m in self.socks[port].group.members():
            self._check_pair(m.port, port)

    def _check_pair(self, src: int, dst: int) -> None:
        m = self.socks[dst].group.member(self._node_of(src), src)
        if m is None or m.state <= MemberState.PUBLISHED or m.state == MemberState.LEAVING:
            return
        out = self.outstanding[(src, dst)]
        if out > m.advertised:
            self.max_outstanding_violation.append(
                f"{src}->{dst}: {out} blocks unconsumed, {m.advertised} advertised ({m.state.name})"
            )

    def check(self, ports: Iterable[int] | None = None) -> None:
        """Assert the run's guarantees for every pair of sockets (after :meth:`run`):
        each receiver got each sender's messages exactly once, in send order, after the
        sender's join event and before its leave event."""
        assert not self.max_outstanding_violation, self.max_outstanding_violation[:5]
        targets = list(self.socks) if ports is None else list(ports)
        for r in targets:
            by_sender: dict[int, list[object]] = {}
            for sender, item in self.received[r]:
                by_sender.setdefault(sender, []).append(item)
            for (s, rr), sent in self.expected.items():
                if rr != r:
                    continue
                items = by_sender.get(s, [])
                data = [x for x in items if isinstance(x, bytes)]
                assert data == sent, f"{s}->{r}: got {len(data)} of {len(sent)} in order"
            for s, items in by_sender.items():
                if self.events and any(isinstance(x, bytes) for x in items):
                    assert items[0] == "join", f"{s}->{r}: data before the join event"
                if "leave" in items:
                    assert items[-1] == "leave", f"{s}->{r}: something after the leave event"
                assert items.count("join") <= 1 and items.count("leave") <= 1

    # ------------------------------------------------------------------ plumbing

    def _chan(self, src: int, dst: int) -> deque[_Item]:
        q = self.channels.get((src, dst))
        if q is None:
            q = self.channels[(src, dst)] = deque()
        return q

    def _node_of(self, port: int) -> int:
        return self._node_by_port[port]

    def _flush(self, port: int) -> None:
        sock = self.socks.get(port)
        if sock is None:
            return
        for node, dport, frame in sock.group.frames_to_send():
            assert node == self._node_of(dport)
            if dport in self.socks:
                self._chan(port, dport).append(("frame", frame))
