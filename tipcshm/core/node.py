"""One peer node as this node sees it: its links and whether it is up.

Mirrors the per-peer part of the kernel's ``net/tipc/node.c``: the node FSM of
``tipc_node_fsm_evt``, the admission check of ``tipc_node_check_state`` that ``tipc_rcv``
runs for a node that is not fully up, and the node-level halves of
``__tipc_node_link_up`` / ``__tipc_node_link_down`` / ``node_lost_contact``; facts from
tipc-wire.md §5.9. No kernel code is copied.

Theory of operation
-------------------
A :class:`PeerNode` owns the link endpoints to one peer (a list of :class:`LinkEntry`,
one per bearer; today there is one, and failover/synch between two is where a second
would plug in) and the node state, a table :data:`TRANSITIONS` in the kernel's names:

* It starts in SELF_DOWN_PEER_LEAVING, as ``tipc_node_create`` does: until the peer sends
  a RESET or ACTIVATE *without* redundant_link, every frame that implies the peer still
  has a working link to us (a STATE, any non-link-protocol packet, a redundant
  RESET/ACTIVATE) is discarded and counted -- it is a leftover of an old session.
  Such a clean RESET/ACTIVATE is PEER_LOST_CONTACT_EVT -> SELF_DOWN_PEER_DOWN.
* When the first link comes up: SELF_ESTABL_CONTACT_EVT -> SELF_UP_PEER_COMING. The node
  is reported up (:class:`~tipcshm.core.events.NodeUp`) only at SELF_UP_PEER_UP, i.e.
  once a STATE or data packet shows that the peer's link is up too
  (PEER_ESTABL_CONTACT_EVT). One shortcut the kernel does not take: if the very packet
  that brought our link up was such a packet, the peer is up already and we say so at
  once instead of waiting for its next packet (otherwise data delivered by that packet
  would precede NodeUp).
* When the last link goes down: PEER_LOST_CONTACT_EVT first if the peer reset the link
  ("peer reset": it knows), then SELF_LOST_CONTACT_EVT. A node that was reported up is
  reported down (:class:`~tipcshm.core.events.NodeDown` with the link's reason); the
  owner withdraws the peer's bindings and aborts connections to it (TIPC_ERR_NO_NODE).
  After a timeout the node sits in SELF_DOWN_PEER_LEAVING again, discarding as above.

The link itself does the per-link halves of link up/down (its own reset and RESET
message), so the node never resets a link because it went down. Frames are admitted
before the link sees them; a frame the link then rejects as malformed
(RemoteProtocolError) leaves the node state unchanged too, because the FSM events the
admission implied are applied only after the link accepted the frame.

Out of the node come ``(frame, media address)`` pairs -- each link's frames with the
media address of that link's peer end -- and events: the links' (LinkUp, LinkDown,
Delivered, LinkCongested, LinkUncongested) followed by the node's own at the right
moment (NodeUp after the LinkUp or before the first Delivered that made it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Protocol

from tipcshm.core.bcast import BcastRcvLink
from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import CoreEvent, LinkDown, LinkUp, NodeDown, NodeUp
from tipcshm.wire.header import LinkMsgType, User, WireError
from tipcshm.wire.link import LinkProtoMsg, scan

__all__ = [
    "NODE_STATES",
    "TRANSITIONS",
    "LinkEntry",
    "LinkLike",
    "NodeEvent",
    "NodeState",
    "NodeStatistics",
    "PeerNode",
]


class NodeState(IntEnum):
    """Node states with the kernel's names and values (node.c)."""

    SELF_DOWN_PEER_DOWN = 0xDD
    SELF_UP_PEER_UP = 0xAA
    SELF_DOWN_PEER_LEAVING = 0xD1
    SELF_UP_PEER_COMING = 0xAC
    SELF_COMING_PEER_UP = 0xCA
    SELF_LEAVING_PEER_DOWN = 0x1D
    NODE_FAILINGOVER = 0xF0
    NODE_SYNCHING = 0xCC


class NodeEvent(IntEnum):
    """Node FSM events with the kernel's names and values (node.c)."""

    SELF_ESTABL_CONTACT_EVT = 0xECE
    SELF_LOST_CONTACT_EVT = 0x1CE
    PEER_ESTABL_CONTACT_EVT = 0x9ECE
    PEER_LOST_CONTACT_EVT = 0x91CE
    NODE_FAILOVER_BEGIN_EVT = 0xFBE
    NODE_FAILOVER_END_EVT = 0xFEE
    NODE_SYNCH_BEGIN_EVT = 0xCBE
    NODE_SYNCH_END_EVT = 0xCEE


NODE_STATES: Final = tuple(NodeState)

_S = NodeState
_E = NodeEvent

#: (state, event) -> next state. A pair that is absent is an illegal event: the kernel
#: logs it and keeps the state, and so do we (counted in ``illegal_events``).
TRANSITIONS: Final[dict[tuple[NodeState, NodeEvent], NodeState]] = {
    # SELF_DOWN_PEER_DOWN
    (_S.SELF_DOWN_PEER_DOWN, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_COMING,
    (_S.SELF_DOWN_PEER_DOWN, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_COMING_PEER_UP,
    (_S.SELF_DOWN_PEER_DOWN, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    (_S.SELF_DOWN_PEER_DOWN, _E.PEER_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    # SELF_UP_PEER_UP
    (_S.SELF_UP_PEER_UP, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    (_S.SELF_UP_PEER_UP, _E.PEER_LOST_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    (_S.SELF_UP_PEER_UP, _E.NODE_SYNCH_BEGIN_EVT): _S.NODE_SYNCHING,
    (_S.SELF_UP_PEER_UP, _E.NODE_FAILOVER_BEGIN_EVT): _S.NODE_FAILINGOVER,
    (_S.SELF_UP_PEER_UP, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_UP,
    (_S.SELF_UP_PEER_UP, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_UP,
    (_S.SELF_UP_PEER_UP, _E.NODE_SYNCH_END_EVT): _S.SELF_UP_PEER_UP,
    (_S.SELF_UP_PEER_UP, _E.NODE_FAILOVER_END_EVT): _S.SELF_UP_PEER_UP,
    # SELF_DOWN_PEER_LEAVING
    (_S.SELF_DOWN_PEER_LEAVING, _E.PEER_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    (_S.SELF_DOWN_PEER_LEAVING, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    (_S.SELF_DOWN_PEER_LEAVING, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    (_S.SELF_DOWN_PEER_LEAVING, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    # SELF_UP_PEER_COMING
    (_S.SELF_UP_PEER_COMING, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_UP,
    (_S.SELF_UP_PEER_COMING, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    (_S.SELF_UP_PEER_COMING, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_COMING,
    (_S.SELF_UP_PEER_COMING, _E.PEER_LOST_CONTACT_EVT): _S.SELF_UP_PEER_COMING,
    (_S.SELF_UP_PEER_COMING, _E.NODE_SYNCH_END_EVT): _S.SELF_UP_PEER_COMING,
    (_S.SELF_UP_PEER_COMING, _E.NODE_FAILOVER_BEGIN_EVT): _S.SELF_UP_PEER_COMING,
    # SELF_COMING_PEER_UP
    (_S.SELF_COMING_PEER_UP, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_UP_PEER_UP,
    (_S.SELF_COMING_PEER_UP, _E.PEER_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    (_S.SELF_COMING_PEER_UP, _E.SELF_LOST_CONTACT_EVT): _S.SELF_COMING_PEER_UP,
    (_S.SELF_COMING_PEER_UP, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_COMING_PEER_UP,
    # SELF_LEAVING_PEER_DOWN
    (_S.SELF_LEAVING_PEER_DOWN, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_DOWN,
    (_S.SELF_LEAVING_PEER_DOWN, _E.SELF_ESTABL_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    (_S.SELF_LEAVING_PEER_DOWN, _E.PEER_ESTABL_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    (_S.SELF_LEAVING_PEER_DOWN, _E.PEER_LOST_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    # NODE_FAILINGOVER
    (_S.NODE_FAILINGOVER, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    (_S.NODE_FAILINGOVER, _E.PEER_LOST_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    (_S.NODE_FAILINGOVER, _E.NODE_FAILOVER_END_EVT): _S.SELF_UP_PEER_UP,
    (_S.NODE_FAILINGOVER, _E.NODE_FAILOVER_BEGIN_EVT): _S.NODE_FAILINGOVER,
    (_S.NODE_FAILINGOVER, _E.SELF_ESTABL_CONTACT_EVT): _S.NODE_FAILINGOVER,
    (_S.NODE_FAILINGOVER, _E.PEER_ESTABL_CONTACT_EVT): _S.NODE_FAILINGOVER,
    # NODE_SYNCHING
    (_S.NODE_SYNCHING, _E.SELF_LOST_CONTACT_EVT): _S.SELF_DOWN_PEER_LEAVING,
    (_S.NODE_SYNCHING, _E.PEER_LOST_CONTACT_EVT): _S.SELF_LEAVING_PEER_DOWN,
    (_S.NODE_SYNCHING, _E.NODE_SYNCH_END_EVT): _S.SELF_UP_PEER_UP,
    (_S.NODE_SYNCHING, _E.NODE_FAILOVER_BEGIN_EVT): _S.NODE_FAILINGOVER,
    (_S.NODE_SYNCHING, _E.NODE_SYNCH_BEGIN_EVT): _S.NODE_SYNCHING,
    (_S.NODE_SYNCHING, _E.SELF_ESTABL_CONTACT_EVT): _S.NODE_SYNCHING,
    (_S.NODE_SYNCHING, _E.PEER_ESTABL_CONTACT_EVT): _S.NODE_SYNCHING,
}

# States in which the kernel counts the node as up for its users (a working link and the
# peer knows it): NodeUp has been reported.
_UP_STATES: Final = frozenset({_S.SELF_UP_PEER_UP, _S.NODE_FAILINGOVER, _S.NODE_SYNCHING})

# LinkDown reason meaning the peer reset the link itself (tipc_link_peer_is_down).
_PEER_RESET_REASON: Final = "peer reset"


class LinkLike(Protocol):
    """What a PeerNode needs of a link endpoint (tipcshm.core.link.Link provides it)."""

    @property
    def name(self) -> str: ...

    @property
    def is_up(self) -> bool: ...

    @property
    def mtu(self) -> int: ...

    @property
    def mss(self) -> int: ...

    def receive(self, frame: bytes | memoryview, now: float) -> None: ...

    def send(self, msg: bytes, now: float) -> None: ...

    def congested(self, importance: int) -> bool: ...

    def reset(self, now: float, reason: str = ...) -> None: ...

    def send_state(self, now: float) -> None: ...

    def frames_to_send(self, now: float) -> list[bytes]: ...

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> CoreEvent | None: ...

    def queue_sizes(self) -> dict[str, int]: ...


@dataclass(slots=True)
class LinkEntry:
    """One link to the peer (the kernel's ``tipc_link_entry``): the endpoint, the bearer
    it runs on and the peer's media address on that bearer."""

    link: LinkLike
    bearer_id: int
    media: bytes


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of one :class:`PeerNode`."""

    addr: int
    state: str
    links: int
    links_up: int
    received: int
    discarded_peer_leaving: int
    no_link: int
    illegal_events: int
    up_count: int
    down_count: int
    bcast_received: int
    bcast_no_link: int


class PeerNode(Machine[tuple[bytes, bytes]]):
    """A peer node and its links; outbox items are ``(frame, peer media address)``."""

    def __init__(
        self,
        *,
        addr: int,
        identity: bytes,
        capabilities: int = 0,
        signature: int = 0,
        bcast: BcastRcvLink | None = None,
    ) -> None:
        super().__init__()
        self.addr = addr
        #: The receive end of this node's broadcast link (node.c bc_entry.link), shared
        #: with the links that ack for it; None: broadcast packets are dropped.
        self.bcast = bcast
        self.identity = identity
        self.capabilities = capabilities
        self.signature = signature
        # tipc_node_create starts a node here: old-session leftovers are discarded.
        self.state = NodeState.SELF_DOWN_PEER_LEAVING
        self.links: list[LinkEntry] = []
        self._reported_up = False
        self._stats = dict.fromkeys(
            (
                "received",
                "discarded_peer_leaving",
                "no_link",
                "illegal_events",
                "up_count",
                "down_count",
                "bcast_received",
                "bcast_no_link",
            ),
            0,
        )

    # ------------------------------------------------------------------ links

    def add_link(self, link: LinkLike, *, media: bytes, bearer_id: int = 0) -> LinkEntry:
        """Attach the link on ``bearer_id`` (one per bearer, as the kernel's links[])."""
        if self.entry(bearer_id) is not None:
            raise LocalProtocolError(f"node {self.addr:#x} has a link on bearer {bearer_id}")
        entry = LinkEntry(link, bearer_id, media)
        self.links.append(entry)
        return entry

    def entry(self, bearer_id: int = 0) -> LinkEntry | None:
        for entry in self.links:
            if entry.bearer_id == bearer_id:
                return entry
        return None

    def active_link(self) -> LinkLike | None:
        """The link traffic goes out on (the first that is up), or None."""
        for entry in self.links:
            if entry.link.is_up:
                return entry.link
        return None

    @property
    def link_up(self) -> bool:
        """At least one link is up."""
        return self.active_link() is not None

    @property
    def is_up(self) -> bool:
        """The node was reported up (NodeUp) and not down since."""
        return self._reported_up

    # ------------------------------------------------------------------ FSM

    def _fsm(self, evt: NodeEvent) -> None:
        new = TRANSITIONS.get((self.state, evt))
        if new is None:
            self._stats["illegal_events"] += 1
            return
        self.state = new
        if new in _UP_STATES and not self._reported_up:
            self._reported_up = True
            self._stats["up_count"] += 1
            self._emit(NodeUp(self.addr, self.identity))

    def _link_up(self, entry: LinkEntry, peer_link_up: bool) -> None:
        """Node half of __tipc_node_link_up."""
        if any(e is not entry and e.link.is_up for e in self.links):
            return  # a second parallel link: synch would start here (not implemented)
        self._fsm(NodeEvent.SELF_ESTABL_CONTACT_EVT)
        if peer_link_up and self.state == NodeState.SELF_UP_PEER_COMING:
            self._fsm(NodeEvent.PEER_ESTABL_CONTACT_EVT)

    def _link_down(self, entry: LinkEntry, reason: str) -> None:
        """Node half of __tipc_node_link_down and node_lost_contact."""
        if any(e is not entry and e.link.is_up for e in self.links):
            return  # another link still works: failover would start here
        if self.bcast is not None:
            # node_lost_contact -> tipc_bcast_remove_peer: the next bcast init reopens it.
            self.bcast.close()
        if reason == _PEER_RESET_REASON:
            self._fsm(NodeEvent.PEER_LOST_CONTACT_EVT)
        self._fsm(NodeEvent.SELF_LOST_CONTACT_EVT)
        if self._reported_up and self.state not in _UP_STATES:
            self._reported_up = False
            self._stats["down_count"] += 1
            self._emit(NodeDown(self.addr, reason))

    def _drain(self, entry: LinkEntry, peer_link_up: bool = False) -> None:
        link = entry.link
        while (ev := link.next_event()) is not None:
            self._emit(ev)
            if isinstance(ev, LinkUp):
                self._link_up(entry, peer_link_up)
            elif isinstance(ev, LinkDown):
                self._link_down(entry, ev.reason)

    # ------------------------------------------------------------------ contract

    def receive(self, frame: bytes | memoryview, now: float, bearer_id: int = 0) -> None:
        """One frame from this peer on ``bearer_id`` (tipc_rcv after the node lookup).

        RemoteProtocolError (nothing changed) for a malformed frame; frames the node
        state does not admit, or for a bearer without a link, are dropped and counted.
        """
        try:
            # Data needs only its user (this runs per packet); protocol messages, rare,
            # are decoded in full.
            user = scan(frame)[0]
            redundant = is_state = False
            if user == User.LINK_PROTOCOL:
                proto = LinkProtoMsg.decode(frame)
                redundant = proto.redundant_link
                is_state = proto.mtype == LinkMsgType.STATE_MSG
        except WireError as exc:
            raise RemoteProtocolError(f"from node {self.addr:#x}: {exc}") from None
        entry = self.entry(bearer_id)
        if entry is None:
            self._stats["no_link"] += 1
            return
        # msg_peer_link_is_up / msg_peer_node_is_up: does this packet imply that the
        # peer has a working link (or, for peer_node, any link) to us?
        peer_link_up = user != User.LINK_PROTOCOL or is_state
        peer_node_up = peer_link_up or redundant
        pending: list[NodeEvent] = []
        state = self.state
        if state == NodeState.SELF_DOWN_PEER_LEAVING:
            if peer_node_up:
                self._stats["discarded_peer_leaving"] += 1
                return
            pending.append(NodeEvent.PEER_LOST_CONTACT_EVT)
        elif state == NodeState.SELF_LEAVING_PEER_DOWN:
            self._stats["discarded_peer_leaving"] += 1
            return
        elif state == NodeState.SELF_UP_PEER_COMING and entry.link.is_up and peer_link_up:
            pending.append(NodeEvent.PEER_ESTABL_CONTACT_EVT)
        entry.link.receive(frame, now)  # RemoteProtocolError: nothing applied yet
        self._stats["received"] += 1
        for evt in pending:
            self._fsm(evt)
        self._drain(entry, peer_link_up)

    def bcast_receive(self, frame: bytes | memoryview, now: float) -> None:
        """One packet of this node's broadcast link (node.c tipc_node_bc_rcv).

        RemoteProtocolError (nothing changed) for a malformed frame; without a receive
        link, or while it is closed, the packet is dropped and counted."""
        bc = self.bcast
        if bc is None:
            self._stats["bcast_no_link"] += 1
            return
        bc.receive(frame, now)
        self._stats["bcast_received"] += 1
        while (ev := bc.next_event()) is not None:
            self._emit(ev)
        reason = bc.take_failure()
        if reason is not None:
            self.reset(now, reason)  # tipc_node_reset_links
            return
        if bc.take_state_request():
            for entry in self.links:
                if entry.link.is_up:
                    entry.link.send_state(now)
                    self._drain(entry)
                    break

    def send(self, msg: bytes, now: float) -> None:
        """Send one complete message on the active link; LocalProtocolError if none."""
        link = self.active_link()
        if link is None:
            raise LocalProtocolError(f"no link to node {self.addr:#x} is up")
        for entry in self.links:
            if entry.link is link:
                link.send(msg, now)
                self._drain(entry)
                return

    def congested(self, importance: int) -> bool:
        """The active link's backlog of ``importance`` is full (or no link is up)."""
        link = self.active_link()
        return link is None or link.congested(importance)

    def reset(self, now: float, reason: str = "reset by caller") -> None:
        """Reset every link (the node goes down through the links' LinkDown events)."""
        for entry in self.links:
            entry.link.reset(now, reason)
            self._drain(entry)

    def frames_to_send(self, now: float) -> list[tuple[bytes, bytes]]:
        out, self._outbox = self._outbox, []
        for entry in self.links:
            out.extend((frame, entry.media) for frame in entry.link.frames_to_send(now))
            self._drain(entry)
        return out

    def next_timer(self) -> float | None:
        timers = [t for e in self.links if (t := e.link.next_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for entry in self.links:
            due = entry.link.next_timer()
            if due is not None and due <= now:
                entry.link.handle_timer(now)
            self._drain(entry)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            addr=self.addr,
            state=self.state.name,
            links=len(self.links),
            links_up=sum(1 for e in self.links if e.link.is_up),
            **self._stats,
        )
