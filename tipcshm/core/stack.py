"""One local TIPC node on one bearer: discovery, peer nodes with their links, name
distribution and the name table, composed into a single sans-IO object.

Mirrors the dispatch of the kernel's ``net/tipc/node.c`` ``tipc_rcv`` (which object a
received packet belongs to), ``tipc_node_check_dest``'s link creation (``node.c``), the
delivery split of ``link.c`` ``tipc_data_input`` (name distributor messages to
``name_distr.c``, data and connection-manager messages to the socket layer),
``tipc_net_finalize`` (the node-state binding once the address is committed) and the
node-up/down consequences of ``tipc_node_write_unlock``. No kernel code is copied.

Theory of operation
-------------------
A :class:`NodeStack` is what a bearer worker (or the simulator) runs for one node. Its
outbox items are ``(frame, destination media address)``, the destination None meaning
the bearer's broadcast (discovery requests). Received datagrams go:

* non-sequenced LINK_CONFIG -> the :class:`~tipcshm.core.discovery.Discoverer`;
* any other non-sequenced packet (a peer's broadcast link) by its previous node (w3) ->
  that peer's :class:`~tipcshm.core.bcast.BcastRcvLink` (through
  :meth:`~tipcshm.core.node.PeerNode.bcast_receive`); from a node we do not know, or
  before our address is known -> dropped and counted (``bcast_dropped``). Its w7 is
  not ours (a broadcast names no destination node), so it is not checked;
* everything else by its previous node (w3) -> that peer's
  :class:`~tipcshm.core.node.PeerNode` and on to its link; a packet from a node we have no
  link to, one addressed to another node (w7, headers longer than 24 bytes), or any
  sequenced packet before our address is known, is dropped and counted.

What the parts report is acted on and passed up as events, in order:

* ``AddressCommitted`` -> the name distributor takes the address and publishes the node
  state binding ``{0, addr, addr}``;
* ``PeerDiscovered`` -> a PeerNode with one :class:`~tipcshm.core.link.Link` whose peer
  end is the discovered media address (a known peer that moved gets its new address and
  a reset of a link that is not up);
* ``LinkUp``/``LinkDown`` -> told to the Discoverer (request rate, check_dest);
* ``NodeUp`` -> our bulk of bindings to that peer; ``NodeDown`` -> its bindings withdrawn;
* ``Delivered`` NAME_DISTRIBUTOR messages -> the name distributor (a malformed one is
  dropped and counted: the link has already accepted it); data (users 0-3),
  CONN_MANAGER and GROUP_PROTOCOL messages are passed up as ``Delivered``; other users
  are counted.

Nothing of a peer's traffic waits on the owner: after every call the stack drains the
events of its parts until none is left, so the owner's loop is the contract's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tipcshm.core.bcast import BcastRcvLink
from tipcshm.core.contract import Machine
from tipcshm.core.discovery import Discoverer, DiscoveryStatistics
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import (
    AddressCommitted,
    CoreEvent,
    Delivered,
    LinkDown,
    LinkUp,
    NodeDown,
    NodeUp,
    PeerDiscovered,
)
from tipcshm.core.link import Link
from tipcshm.core.name_distr import NameDistributor, NameDistrStatistics
from tipcshm.core.nametable import NameTable
from tipcshm.core.node import NodeStatistics, PeerNode
from tipcshm.wire.header import (
    DEST_NODE_OFFSET,
    INT_H_SIZE,
    SHORT_H_SIZE,
    U32,
    User,
    WireError,
    hsize_of,
    identity_to_str,
    user_of,
)
from tipcshm.wire.link import scan

__all__ = ["OFFER_CONGESTED", "OFFER_NO_LINK", "OFFER_SENT", "NodeStack", "NodeStackStatistics"]

# What NodeStack.offer() did with a message.
OFFER_SENT = 0
OFFER_NO_LINK = 1
OFFER_CONGESTED = 2

# Passed up as Delivered: data of the four importances, connection management and the
# group protocol (member sockets' JOIN/LEAVE/ADV/ACK/RECLAIM/REMIT).
_DELIVERED_USERS = frozenset(
    {
        User.LOW_IMPORTANCE,
        User.MEDIUM_IMPORTANCE,
        User.HIGH_IMPORTANCE,
        User.CRITICAL_IMPORTANCE,
        User.CONN_MANAGER,
        User.GROUP_PROTOCOL,
    }
)


@dataclass(frozen=True, slots=True)
class NodeStackStatistics:
    """Counters of a :class:`NodeStack` and the statistics of its parts."""

    addr: int | None
    peers: int
    links_up: int
    nodes_up: int
    received: int
    bcast_dropped: int
    unknown_peer: int
    wrong_dest: int
    not_addressed: int
    bad_name_msgs: int
    other_users_dropped: int
    distr_send_failures: int
    discovery: DiscoveryStatistics
    names: NameDistrStatistics
    nodes: tuple[NodeStatistics, ...]


class NodeStack(Machine[tuple[bytes, bytes | None]]):
    """One node on one bearer (see the module docstring)."""

    def __init__(
        self,
        *,
        identity: bytes,
        addr: int | None,
        media: bytes,
        if_name: str,
        rng: random.Random,
        now: float,
        net_id: int = 4711,
        mtu: int = 1472,
        tolerance_ms: int = 1500,
        window: int = 50,
    ) -> None:
        super().__init__()
        self.net_id = net_id
        self.identity = bytes(identity)
        self.media = bytes(media)
        self.if_name = if_name
        self.mtu = mtu
        self.tolerance_ms = tolerance_ms
        self.window = window
        self._rng = rng
        self._own_id_str = identity_to_str(self.identity)
        self._addr: int | None = None
        self._disc = Discoverer(
            identity=self.identity, addr=addr, media=self.media, net_id=net_id, rng=rng, now=now
        )
        self._names = NameDistributor(own_addr=None)
        self._nodes: dict[int, PeerNode] = {}
        self._unpumped = False  # offer() left events of some peer to the next _pump
        self._stats = dict.fromkeys(
            (
                "received",
                "bcast_dropped",
                "unknown_peer",
                "wrong_dest",
                "not_addressed",
                "bad_name_msgs",
                "other_users_dropped",
                "distr_send_failures",
            ),
            0,
        )
        self._pump(now)

    # ------------------------------------------------------------------ views

    @property
    def addr(self) -> int | None:
        """Our node address, None while the address trial runs."""
        return self._addr

    @property
    def nametable(self) -> NameTable:
        """Every binding this node knows (replaced once, when the address is committed)."""
        return self._names.nametable

    @property
    def discoverer(self) -> Discoverer:
        return self._disc

    @property
    def name_distributor(self) -> NameDistributor:
        return self._names

    def peer(self, addr: int) -> PeerNode | None:
        return self._nodes.get(addr)

    def peers(self) -> dict[int, PeerNode]:
        return dict(self._nodes)

    def links_up(self) -> set[int]:
        """Addresses of the peers with a link up."""
        return {a for a, n in self._nodes.items() if n.link_up}

    def link_up(self, addr: int) -> bool:
        """Whether a link to peer ``addr`` is up (one lookup: :meth:`links_up` builds a
        set over every peer)."""
        node = self._nodes.get(addr)
        return node is not None and node.link_up

    def nodes_up(self) -> set[int]:
        """Addresses of the peers reported up (NodeUp, not yet NodeDown)."""
        return {a for a, n in self._nodes.items() if n.is_up}

    # ------------------------------------------------------------------ contract

    def receive(
        self, frame: bytes | memoryview, now: float, src_media: bytes | None = None
    ) -> None:
        """One datagram from the bearer; ``src_media`` is where it came from.

        RemoteProtocolError (nothing changed) for a malformed frame; valid frames nobody
        wants are dropped and counted (:meth:`statistics`).
        """
        try:
            # Only what routing needs, without a Header object: this runs per datagram.
            user, _size, non_seq, _seqno, _ack, prev_node = scan(frame)
        except WireError as exc:
            raise RemoteProtocolError(f"bad frame: {exc}") from None
        if non_seq:
            if user == User.LINK_CONFIG:
                self._disc.receive(frame, now, src_media)
                self._stats["received"] += 1
            else:
                bnode = self._nodes.get(prev_node) if self._addr is not None else None
                if bnode is None:
                    self._stats["bcast_dropped"] += 1
                else:
                    bnode.bcast_receive(frame, now)
                    self._stats["received"] += 1
            self._pump(now)
            return
        own = self._addr
        node = self._nodes.get(prev_node)
        if own is None:
            self._stats["not_addressed"] += 1
        elif hsize_of(U32.unpack_from(frame)[0]) > SHORT_H_SIZE and (
            U32.unpack_from(frame, DEST_NODE_OFFSET)[0] != own
        ):
            self._stats["wrong_dest"] += 1
        elif node is None:
            self._stats["unknown_peer"] += 1
        else:
            node.receive(frame, now)
            self._stats["received"] += 1
            self._pump(now, node)
            return
        self._pump(now)

    def frames_to_send(self, now: float) -> list[tuple[bytes, bytes | None]]:
        out, self._outbox = self._outbox, []
        while True:
            # Draining a part can raise events whose handling queues more frames (a
            # bulk after NodeUp): go round until every part is quiet.
            self._pump(now)
            batch: list[tuple[bytes, bytes | None]] = list(self._disc.frames_to_send(now))
            for node in self._nodes.values():
                batch.extend(node.frames_to_send(now))
            if not batch:
                return out
            out.extend(batch)

    def next_timer(self) -> float | None:
        timers = [self._disc.next_timer()]
        timers.extend(n.next_timer() for n in self._nodes.values())
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        due = self._disc.next_timer()
        if due is not None and due <= now:
            self._disc.handle_timer(now)
        for node in list(self._nodes.values()):
            due = node.next_timer()
            if due is not None and due <= now:
                node.handle_timer(now)
        self._pump(now)

    # ------------------------------------------------------------------ the node's API

    def publish(self, type: int, lower: int, upper: int, port: int, key: int, now: float) -> None:
        """Bind ``{type, lower, upper}`` to our ``port`` with cluster scope; every peer
        learns it. LocalProtocolError for a bad or duplicate binding."""
        self._names.publish(type, lower, upper, port, key, now)
        self._pump(now)

    def withdraw(self, type: int, lower: int, upper: int, port: int, key: int, now: float) -> None:
        """Undo :meth:`publish`; LocalProtocolError if there is no such binding."""
        self._names.withdraw(type, lower, upper, port, key, now)
        self._pump(now)

    def send(self, dest_node: int, msg: bytes, now: float) -> None:
        """Send one complete TIPC message to ``dest_node`` over its link.

        LocalProtocolError if no link to that node is up (or the link refuses it)."""
        node = self._nodes.get(dest_node)
        if node is None or not node.link_up:
            raise LocalProtocolError(f"no link to node {dest_node:#x} is up")
        node.send(msg, now)
        self._pump(now, node)

    def offer(self, dest_node: int, msg: bytes, importance: int, now: float) -> int:
        """:meth:`send` for a burst from the owner's queue, without exceptions:
        OFFER_SENT; OFFER_NO_LINK (no link to that node is up); OFFER_CONGESTED (the
        link's backlog of ``importance`` is full, or the link refused the message as
        :meth:`send` would). Only OFFER_SENT took the message.

        What the link reports meanwhile is acted on by the next call that pumps (every
        other call does, :meth:`frames_to_send` included, which the owner's loop makes
        before it waits), so a burst of messages pays for that once, not per message."""
        node = self._nodes.get(dest_node)
        if node is None:
            return OFFER_NO_LINK
        link = node.active_link()
        if link is None:
            return OFFER_NO_LINK
        if link.congested(importance):
            return OFFER_CONGESTED
        self._unpumped = True
        try:
            node.send(msg, now)
        except LocalProtocolError:
            return OFFER_CONGESTED
        return OFFER_SENT

    def congested(self, dest_node: int, importance: int) -> bool:
        """Whether a message of ``importance`` to ``dest_node`` must wait: its link's
        backlog is full (LinkCongested until LinkUncongested) or no link is up."""
        node = self._nodes.get(dest_node)
        return node is None or node.congested(importance)

    def statistics(self) -> NodeStackStatistics:
        return NodeStackStatistics(
            addr=self._addr,
            peers=len(self._nodes),
            links_up=len(self.links_up()),
            nodes_up=len(self.nodes_up()),
            discovery=self._disc.statistics(),
            names=self._names.statistics(),
            nodes=tuple(n.statistics() for n in self._nodes.values()),
            **self._stats,
        )

    # ------------------------------------------------------------------ plumbing

    def _pump(self, now: float, only: PeerNode | None = None) -> None:
        """Act on every event of the parts until they are all quiet.

        ``only``: the one peer the call in hand touched (a datagram it received, a
        message sent to it). Events come out of a part only when it was called, so
        its events, the discoverer's and the name distributor's are all there can be;
        as soon as one of the others acts (the discoverer, the name distributor sending
        to some peer) every peer is looked at again. This keeps a data message's work
        independent of the number of peers."""
        disc, names = self._disc, self._names
        nodes: tuple[PeerNode, ...] | None = (only,) if only is not None else None
        if self._unpumped:  # offer() touched peers without pumping: look at them all
            self._unpumped = False
            nodes = None
        busy = True
        while busy:
            busy = False
            while (ev := disc.next_event()) is not None:
                busy = True
                nodes = None
                self._on_discovery(ev, now)
            for node in nodes if nodes is not None else list(self._nodes.values()):
                while (ev := node.next_event()) is not None:
                    busy = True
                    self._on_node(node, ev, now)
            for peer, msg in names.frames_to_send(now):
                busy = True
                nodes = None
                target = self._nodes.get(peer)
                try:
                    if target is None:
                        raise LocalProtocolError(f"no node {peer:#x}")
                    target.send(msg, now)
                except LocalProtocolError:
                    self._stats["distr_send_failures"] += 1
            while (ev := names.next_event()) is not None:
                busy = True
                self._emit(ev)

    def _on_discovery(self, ev: CoreEvent, now: float) -> None:
        if isinstance(ev, AddressCommitted):
            self._addr = ev.addr
            self._names.set_address(ev.addr, now)
        elif isinstance(ev, PeerDiscovered):
            self._peer_discovered(ev, now)
        self._emit(ev)

    def _peer_discovered(self, ev: PeerDiscovered, now: float) -> None:
        own = self._addr
        if own is None or ev.addr == own:
            return
        node = self._nodes.get(ev.addr)
        if node is None:
            bcast = BcastRcvLink(
                own_addr=own, peer_addr=ev.addr, net_id=self.net_id, peer_caps=ev.capabilities
            )
            node = PeerNode(
                addr=ev.addr,
                identity=ev.identity,
                capabilities=ev.capabilities,
                signature=ev.signature,
                bcast=bcast,
            )
            link = Link(
                own_addr=own,
                peer_addr=ev.addr,
                own_if=self.if_name,
                own_id_str=self._own_id_str,
                peer_id_str=identity_to_str(ev.identity),
                mtu=self.mtu,
                tolerance_ms=self.tolerance_ms,
                window=self.window,
                peer_caps=ev.capabilities,
                rng=self._rng,
                now=now,
                bcast=bcast,
            )
            node.add_link(link, media=ev.media)
            self._nodes[ev.addr] = node
            return
        node.signature = ev.signature
        node.capabilities = ev.capabilities
        if node.bcast is not None:
            node.bcast.peer_caps = ev.capabilities
        entry = node.entry(0)
        if entry is not None and entry.media != ev.media:
            entry.media = ev.media
            if not entry.link.is_up:
                entry.link.reset(now, "peer media address changed")

    def _on_node(self, node: PeerNode, ev: CoreEvent, now: float) -> None:
        if isinstance(ev, Delivered):
            self._delivered(ev, now)
            return
        self._emit(ev)
        if isinstance(ev, LinkUp):
            self._disc.link_up(now, node.addr)
        elif isinstance(ev, LinkDown):
            self._disc.link_down(now, node.addr)
        elif isinstance(ev, NodeUp):
            link = node.active_link()
            mss = link.mss if link is not None else self.mtu - INT_H_SIZE
            self._names.node_up(node.addr, mss, now)
        elif isinstance(ev, NodeDown):
            self._names.node_down(node.addr, now)

    def _delivered(self, ev: Delivered, now: float) -> None:
        # The link delivers only messages it has validated: word 0 names the user.
        user = user_of(U32.unpack_from(ev.frame)[0])
        if user == User.NAME_DISTRIBUTOR:
            # tipc_data_input: name distribution opens a legacy peer's broadcast link.
            peer = self._nodes.get(ev.source)
            if peer is not None and peer.bcast is not None:
                peer.bcast.establish()
            try:
                self._names.receive(ev.frame, now, source=ev.source)
            except RemoteProtocolError:
                self._stats["bad_name_msgs"] += 1
        elif user in _DELIVERED_USERS:
            self._emit(ev)
        else:
            self._stats["other_users_dropped"] += 1
