"""Bindings fed by bearer workers: which bearer brought which binding, sans-IO.

The name-table worker is the single writer of the node's :class:`NameTable`. Besides the
node's own sockets' bindings it holds what the bearer workers learn from their links
(other nodes' bindings, by name distribution) and the link-state bindings of their links
(``{TIPC_LINK_STATE, peer, peer}``, node scope, this node). :class:`NameFeeds` applies
those updates to the table and remembers, per binding, the set of bearers that fed it:

- ``publish(bearer, b)``: a binding of another node (cluster scope), or a link-state
  binding of this node (type 2, node scope, ``lower == upper`` = the peer). The first
  bearer to feed it inserts it; another bearer feeding the same identity (two bearers
  with links to one peer) only adds itself to its set; the same bearer again is a no-op.
- ``withdraw(bearer, ...)``: the bearer leaves the set; the last one removes the binding.
- ``purge_node(bearer, node)``: the bearer leaves the set of every binding of ``node``
  (the kernel drops a lost peer's bindings, ``tipc_publ_notify``).
- ``reset_bearer(bearer)``: the bearer leaves every set (its worker (re)started).

An identity is ``(type, lower, upper, node, key)``, what a withdrawal matches in the
kernel. Every refusal raises :class:`FeedRefused` and changes nothing; events for the
topology service are returned (only for real insertions and removals).

The sets are kept as bearer bit masks; :meth:`origins` gives them to the replica so that
a restarted name-table worker gets them back (:meth:`restore`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tipcshm.core.nametable import (
    CLUSTER_SCOPE,
    NODE_SCOPE,
    Binding,
    BindingAdded,
    BindingRemoved,
    DuplicateBinding,
    NameTable,
    NameTableError,
)

__all__ = ["FeedRefused", "Ident", "LINK_STATE", "MAX_FEED_BEARERS", "NameFeeds"]

LINK_STATE = 2  # TIPC_LINK_STATE (<linux/tipc.h>); the only node-scope type a bearer feeds
MAX_FEED_BEARERS = 31  # bits of a mask

Ident = tuple[int, int, int, int, int]  # type, lower, upper, node, key


class FeedRefused(Exception):
    """The update is malformed or does not fit what the bearer fed before."""


class NameFeeds:
    def __init__(self, table: NameTable, max_bindings: int, bearers: int) -> None:
        if not 1 <= bearers <= MAX_FEED_BEARERS:
            raise ValueError(f"bearers {bearers} not in 1..{MAX_FEED_BEARERS}")
        self.table = table
        self.own = table.own_node
        self.max_bindings = max_bindings
        self.bearers = bearers
        self._mask: dict[Ident, int] = {}
        self._by_node: dict[int, dict[Ident, None]] = {}
        self._changed: dict[Ident, None] = {}  # masks changed with the binding kept

    # ------------------------------------------------------------------ checks
    def _check_bearer(self, bearer: int) -> int:
        if not 0 <= bearer < self.bearers:
            raise FeedRefused(f"bearer {bearer} out of range")
        return 1 << bearer

    def _check(self, b: Binding) -> None:
        if b.lower > b.upper:
            raise FeedRefused(f"lower {b.lower} > upper {b.upper}")
        if b.scope == CLUSTER_SCOPE:
            if b.node == self.own or b.node == 0:
                raise FeedRefused(f"cluster-scope binding of node {b.node:#x} is not a peer's")
        elif b.scope == NODE_SCOPE:
            if b.type != LINK_STATE or b.node != self.own:
                raise FeedRefused(f"node-scope binding {b} is not a link-state binding")
            if b.lower != b.upper or b.lower in (0, self.own):
                raise FeedRefused(f"link-state binding {b} does not name one peer")
        else:
            raise FeedRefused(f"scope {b.scope}")

    # ------------------------------------------------------------------ updates
    def publish(self, bearer: int, b: Binding) -> BindingAdded | None:
        bit = self._check_bearer(bearer)
        self._check(b)
        ident = (b.type, b.lower, b.upper, b.node, b.key)
        mask = self._mask.get(ident)
        if mask is not None:
            if not mask & bit:
                self._mask[ident] = mask | bit
                self._changed[ident] = None
            return None
        if len(self.table) >= self.max_bindings:
            raise FeedRefused(f"name table full ({self.max_bindings} bindings): {b} refused")
        try:
            ev = self.table.insert(b)
        except DuplicateBinding as exc:  # held, but not as a feed: not the bearer's to add
            raise FeedRefused(str(exc)) from None
        except NameTableError as exc:
            raise FeedRefused(str(exc)) from None
        self._add(ident, bit)
        return ev

    def withdraw(
        self, bearer: int, type: int, lower: int, upper: int, node: int, key: int
    ) -> BindingRemoved | None:
        bit = self._check_bearer(bearer)
        ident = (type, lower, upper, node, key)
        mask = self._mask.get(ident)
        if mask is None or not mask & bit:
            raise FeedRefused(
                f"withdrawal of {{{type},{lower},{upper}}} key {key} of node {node:#x},"
                f" which bearer {bearer} did not publish"
            )
        return self._drop(ident, bit)

    def purge_node(self, bearer: int, node: int) -> list[BindingRemoved]:
        bit = self._check_bearer(bearer)
        if node == 0 or node == self.own:
            raise FeedRefused(f"purge of node {node:#x}, which is not a peer")
        return self._drop_all(list(self._by_node.get(node, ())), bit)

    def reset_bearer(self, bearer: int) -> list[BindingRemoved]:
        bit = self._check_bearer(bearer)
        return self._drop_all(list(self._mask), bit)

    # ------------------------------------------------------------------ state
    def origins(self) -> Mapping[Ident, int]:
        """Bearer mask per fed binding (bindings not listed are sockets')."""
        return self._mask

    def restore(self, origins: Iterable[tuple[Ident, int]]) -> None:
        """Take back the masks a previous worker left in the replica (the bindings are
        already in the table); bits naming no bearer are dropped."""
        valid = (1 << self.bearers) - 1
        for ident, mask in origins:
            if mask & valid:
                self._add(ident, mask & valid)

    def take_changed(self) -> list[Ident]:
        """Bindings whose mask changed (the binding stayed) since the last call."""
        out = list(self._changed)
        self._changed.clear()
        return out

    def __len__(self) -> int:
        return len(self._mask)

    # ------------------------------------------------------------------ internals
    def _add(self, ident: Ident, mask: int) -> None:
        self._mask[ident] = mask
        self._by_node.setdefault(ident[3], {})[ident] = None

    def _drop(self, ident: Ident, bit: int) -> BindingRemoved | None:
        mask = self._mask[ident] & ~bit
        if mask:
            self._mask[ident] = mask
            self._changed[ident] = None
            return None
        del self._mask[ident]
        of_node = self._by_node[ident[3]]
        del of_node[ident]
        if not of_node:
            del self._by_node[ident[3]]
        return self.table.remove(*ident)

    def _drop_all(self, idents: list[Ident], bit: int) -> list[BindingRemoved]:
        out = []
        for ident in idents:
            if self._mask[ident] & bit and (ev := self._drop(ident, bit)) is not None:
                out.append(ev)
        return out
