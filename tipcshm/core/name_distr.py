"""Name distribution: keeping every node's cluster-scope bindings in every name table.

Mirrors the kernel's ``net/tipc/name_distr.c``: ``tipc_named_node_up`` /
``named_distribute`` (bulk at node up), ``tipc_named_publish`` / ``tipc_named_withdraw``
(incremental updates), ``tipc_named_rcv`` / ``tipc_named_dequeue`` /
``tipc_update_nametbl`` (reception) and ``tipc_publ_notify`` (a lost node's bindings go);
facts from tipc-wire.md §6 and §13 item 5. No kernel code is copied.

Theory of operation
-------------------
The owner (a :class:`~tipcshm.core.stack.NodeStack`) tells the distributor about peers
(:meth:`NameDistributor.node_up` / :meth:`NameDistributor.node_down`), about this node's
own bindings (:meth:`NameDistributor.publish` / :meth:`NameDistributor.withdraw`) and
hands it every NAME_DISTRIBUTOR message a link delivered
(:meth:`NameDistributor.receive`). Out come ``(peer address, message)`` pairs to send over
that peer's link and :class:`~tipcshm.core.events.Published` /
:class:`~tipcshm.core.events.Withdrawn` events for every change of the name table
(:attr:`NameDistributor.nametable`, a :class:`~tipcshm.core.nametable.NameTable`).

Sending:

* At node up the whole own cluster-scope list goes to that peer as *bulk* messages of
  ``items_per_message(mss)`` items each, ``mss`` being the largest message the link
  sends unfragmented (what the kernel's tipc_node_get_mtu returns: link mtu - 40); the
  last one is marked last-bulk and carries our next distribution seqno. The list is never
  empty: once the address is known it holds the node-state binding ``{0, addr, addr}``
  port 0 key ``addr`` (tipc_net_finalize).
* Each later publish/withdraw is one message with one item and the next seqno, copied to
  every peer that is up. We never advertise TIPC_NAMED_BCAST, so there is no broadcast
  link to use; the kernel replicates over unicast links for such peers too.
* **Legacy or not.** By default (``legacy=True``) incremental updates go out in the
  legacy format (non-legacy bit clear), as tipc-wire.md §13 item 5 recommends: a kernel
  applies them on arrival, whatever its per-node "open" state and expected seqno are
  (they survive our restarts and any seqno mismatch). Nothing is lost by it: every one of
  our updates to a peer travels on the same in-order link after the bulk, so arrival
  order already is publication order. ``legacy=False`` sends the kernel's own format
  (non-legacy + seqno), which the receive side below handles too. Bulk messages always
  use the kernel's bulk format.

Receiving (per peer, ``tipc_named_dequeue``): bulk and legacy messages are applied at
once; a last-bulk message also opens the peer's incremental stream at its seqno; a
non-legacy incremental is applied when the stream is open and its seqno is the expected
one, dropped when older, else kept until its turn (at most ``max_deferred`` wait; more
are dropped and counted). Items are inserted with cluster scope and node = the message's
originating node; a duplicate (same range, key and node) is refused by the name table
and counted; a withdrawal must match type, exact range, key and node, or it is counted.
Node down removes every binding of that node and forgets its deferred messages.

Two checks the kernel does not make, because our owner routes by link and not by table:
a message whose originating node is not the peer that delivered it is dropped
(otherwise bindings of a third node would outlive that peer), and so is one from a peer
that is not up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import Published, Withdrawn
from tipcshm.core.nametable import (
    CLUSTER_SCOPE,
    Binding,
    DuplicateBinding,
    InvalidBinding,
    NameTable,
    NoSuchBinding,
)
from tipcshm.wire import NameDistrType, WireError, seq_add, seq_less
from tipcshm.wire.names import MAX_PUBL, DistrItem, NameDistrMsg, items_per_message

__all__ = ["NODE_STATE_TYPE", "NameDistrStatistics", "NameDistributor"]

#: TIPC_NODE_STATE: the service type of every node's own {0, addr, addr} binding.
NODE_STATE_TYPE = 0
_U32 = 0xFFFFFFFF

_OwnKey = tuple[int, int, int, int]  # type, lower, upper, key


@dataclass(frozen=True, slots=True)
class NameDistrStatistics:
    """Counters of one :class:`NameDistributor` (all since creation)."""

    own_bindings: int
    peers_up: int
    bulk_messages_sent: int
    updates_sent: int
    messages_received: int
    items_published: int
    items_withdrawn: int
    duplicate_publications: int
    unknown_withdrawals: int
    invalid_items: int
    unknown_type: int
    stale_dropped: int
    deferred: int
    deferred_overflow: int
    foreign_origin: int
    peer_not_up: int
    table_full: int  # publications refused: max_bindings are known already


@dataclass(slots=True)
class _PeerRx:
    """Receive state of one peer's incremental stream (the kernel's named_rcv_nxt,
    named_open and the peer's part of namedq)."""

    rcv_nxt: int = 0
    open: bool = False
    queue: list[NameDistrMsg] = field(default_factory=list)


class NameDistributor(Machine[tuple[int, bytes]]):
    """One node's name distribution; outbox items are ``(peer address, message)``."""

    def __init__(
        self,
        *,
        own_addr: int | None,
        legacy: bool = True,
        max_deferred: int = 1024,
        max_bindings: int = MAX_PUBL,
    ) -> None:
        super().__init__()
        self.max_bindings = max_bindings
        self.legacy = legacy
        self.max_deferred = max_deferred
        self.own_addr: int | None = None
        self._table = NameTable(0)
        # Own cluster-scope bindings, oldest first (the kernel's cluster_scope list).
        self._own: dict[_OwnKey, DistrItem] = {}
        self._snd_nxt = 0
        self._up: dict[int, int] = {}  # peer -> link mss, in node-up order
        self._rx: dict[int, _PeerRx] = {}
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "bulk_messages_sent",
                "updates_sent",
                "messages_received",
                "items_published",
                "items_withdrawn",
                "duplicate_publications",
                "unknown_withdrawals",
                "invalid_items",
                "unknown_type",
                "stale_dropped",
                "deferred_overflow",
                "foreign_origin",
                "peer_not_up",
                "table_full",
            ),
            0,
        )
        if own_addr is not None:
            self.set_address(own_addr, 0.0)

    # ------------------------------------------------------------------ own side

    @property
    def nametable(self) -> NameTable:
        """Every binding this node knows (its own and its peers')."""
        return self._table

    def set_address(self, addr: int, now: float) -> None:
        """Our address is committed (tipc_net_finalize): the table becomes this node's,
        bindings made before now get their node, and the node-state binding appears."""
        if not 0 < addr <= _U32:
            raise LocalProtocolError(f"node address {addr!r} must be a non-zero u32")
        if self.own_addr == addr:
            return
        if self.own_addr is not None:
            raise LocalProtocolError(
                f"address already set to {self.own_addr:#x}; cannot change to {addr:#x}"
            )
        self.own_addr = addr
        self._table = NameTable(addr)
        node_state = DistrItem(NODE_STATE_TYPE, addr, addr, 0, addr)
        self._own.setdefault(self._own_key(node_state), node_state)
        for item in self._own.values():
            self._insert(item, addr)

    def publish(self, type: int, lower: int, upper: int, port: int, key: int, now: float) -> None:
        """Bind ``{type, lower, upper}`` to our ``port`` with cluster scope and tell every
        peer that is up. LocalProtocolError for a bad range or a duplicate (same range and
        key). Before the address is known the binding waits for :meth:`set_address`."""
        item = DistrItem(type, lower, upper, port, key)
        self._check_item(item)
        k = self._own_key(item)
        if k in self._own:
            raise LocalProtocolError(f"{{{type},{lower},{upper}}} key {key} is already bound")
        self._own[k] = item
        if self.own_addr is not None:
            self._insert(item, self.own_addr)
            self._distribute(NameDistrType.PUBLICATION, item)

    def withdraw(self, type: int, lower: int, upper: int, port: int, key: int, now: float) -> None:
        """Undo :meth:`publish` (type, exact range, port and key must match)."""
        k = (type, lower, upper, key)
        item = self._own.get(k)
        if item is None or item.port != port:
            raise LocalProtocolError(
                f"no own binding {{{type},{lower},{upper}}} port {port} key {key}"
            )
        del self._own[k]
        if self.own_addr is not None:
            removed = self._table.remove(type, lower, upper, self.own_addr, key)
            self._emit_withdrawn(removed.binding)
            self._distribute(NameDistrType.WITHDRAWAL, item)

    def own_bindings(self) -> list[DistrItem]:
        """Our cluster-scope bindings in publication order (what a bulk carries)."""
        return list(self._own.values())

    @staticmethod
    def _own_key(item: DistrItem) -> _OwnKey:
        return (item.type, item.lower, item.upper, item.key)

    @staticmethod
    def _check_item(item: DistrItem) -> None:
        for name in ("type", "lower", "upper", "port", "key"):
            value = getattr(item, name)
            if not 0 <= value <= _U32:
                raise LocalProtocolError(f"{name} {value!r} is not a u32")
        if item.lower > item.upper:
            raise LocalProtocolError(f"lower {item.lower} > upper {item.upper}")

    def _distribute(self, mtype: NameDistrType, item: DistrItem) -> None:
        own = self.own_addr
        assert own is not None
        seqno = self._snd_nxt
        self._snd_nxt = seq_add(seqno, 1)
        for peer in self._up:
            msg = NameDistrMsg(
                mtype=mtype,
                prev_node=own,
                orig_node=own,
                dest_node=peer,
                items=(item,),
                non_legacy=not self.legacy,
                seqno=seqno,
            )
            self._outbox.append((peer, msg.encode()))
            self._stats["updates_sent"] += 1

    # ------------------------------------------------------------------ peers

    def node_up(self, peer: int, mss: int, now: float) -> None:
        """``peer`` came up over a link whose messages may be ``mss`` bytes long without
        fragmentation: send it our bulk."""
        own = self.own_addr
        if own is None:
            raise LocalProtocolError("a peer cannot come up before our address is set")
        if peer == own or not 0 < peer <= _U32:
            raise LocalProtocolError(f"bad peer address {peer!r}")
        self._up[peer] = mss
        self._rx[peer] = _PeerRx()
        items = list(self._own.values())
        per = items_per_message(mss)
        chunks = [tuple(items[i : i + per]) for i in range(0, len(items), per)]
        for n, chunk in enumerate(chunks, start=1):
            last = n == len(chunks)
            msg = NameDistrMsg(
                mtype=NameDistrType.PUBLICATION,
                prev_node=own,
                orig_node=own,
                dest_node=peer,
                items=chunk,
                bulk=True,
                last_bulk=last,
                non_legacy=True,
                seqno=self._snd_nxt if last else 0,
                bc_ack_invalid=True,
            )
            self._outbox.append((peer, msg.encode()))
            self._stats["bulk_messages_sent"] += 1

    def node_down(self, peer: int, now: float) -> None:
        """``peer`` is lost: forget its stream and withdraw every binding it had."""
        self._up.pop(peer, None)
        self._rx.pop(peer, None)
        if peer == self.own_addr:
            return
        for removed in self._table.remove_node(peer):
            self._emit_withdrawn(removed.binding)

    def peers_up(self) -> list[int]:
        return list(self._up)

    # ------------------------------------------------------------------ receive

    def receive(
        self, frame: bytes | bytearray | memoryview, now: float, source: int | None = None
    ) -> None:
        """One NAME_DISTRIBUTOR message that a link delivered from ``source``.

        RemoteProtocolError (nothing changed) if it is not a well-formed message. Valid
        but unwanted messages are dropped and counted (see :meth:`statistics`).
        """
        try:
            msg = NameDistrMsg.decode(frame)
        except WireError as exc:
            raise RemoteProtocolError(f"bad name distributor message: {exc}") from exc
        stats = self._stats
        stats["messages_received"] += 1
        node = msg.orig_node
        if source is not None and node != source:
            stats["foreign_origin"] += 1
            return
        rx = self._rx.get(node)
        if rx is None:
            stats["peer_not_up"] += 1
            return
        if msg.mtype not in (NameDistrType.PUBLICATION, NameDistrType.WITHDRAWAL):
            stats["unknown_type"] += 1
            return
        if len(rx.queue) >= self.max_deferred:
            stats["deferred_overflow"] += 1
            return
        rx.queue.append(msg)
        while (ready := self._dequeue(rx)) is not None:
            self._apply(ready, node)

    def _dequeue(self, rx: _PeerRx) -> NameDistrMsg | None:
        """The next message of this peer that may be applied now, or None."""
        queue = rx.queue
        i = 0
        while i < len(queue):
            msg = queue[i]
            if msg.last_bulk:
                rx.rcv_nxt = msg.seqno
                rx.open = True
            if msg.bulk or msg.is_legacy:
                return queue.pop(i)
            if rx.open and msg.seqno == rx.rcv_nxt:
                rx.rcv_nxt = seq_add(rx.rcv_nxt, 1)
                return queue.pop(i)
            if seq_less(msg.seqno, rx.rcv_nxt):
                del queue[i]
                self._stats["stale_dropped"] += 1
                continue
            i += 1
        return None

    def _apply(self, msg: NameDistrMsg, node: int) -> None:
        stats = self._stats
        for item in msg.items:
            if msg.mtype == NameDistrType.PUBLICATION:
                if len(self._table) >= self.max_bindings:
                    # the replica every process maps holds this many: a peer publishing
                    # without end costs its own publications, not the node's memory
                    stats["table_full"] += 1
                    continue
                try:
                    self._insert(item, node)
                except DuplicateBinding:
                    stats["duplicate_publications"] += 1
                except InvalidBinding:
                    stats["invalid_items"] += 1
            else:
                try:
                    removed = self._table.remove(item.type, item.lower, item.upper, node, item.key)
                except NoSuchBinding:
                    stats["unknown_withdrawals"] += 1
                    continue
                self._emit_withdrawn(removed.binding)

    # ------------------------------------------------------------------ table + events

    def _insert(self, item: DistrItem, node: int) -> None:
        b = Binding(item.type, item.lower, item.upper, CLUSTER_SCOPE, node, item.port, item.key)
        self._table.insert(b)
        self._stats["items_published"] += 1
        self._emit(Published(b.type, b.lower, b.upper, b.port, b.key, b.node))

    def _emit_withdrawn(self, b: Binding) -> None:
        self._stats["items_withdrawn"] += 1
        self._emit(Withdrawn(b.type, b.lower, b.upper, b.port, b.key, b.node))

    # ------------------------------------------------------------------ contract

    def next_timer(self) -> float | None:
        return None  # nothing here waits for time

    def handle_timer(self, now: float) -> None:
        return None

    def statistics(self) -> NameDistrStatistics:
        return NameDistrStatistics(
            own_bindings=len(self._own),
            peers_up=len(self._up),
            deferred=sum(len(rx.queue) for rx in self._rx.values()),
            **self._stats,
        )
