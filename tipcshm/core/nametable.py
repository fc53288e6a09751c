"""The name table: service bindings and their lookups, sans-IO.

Theory of operation
-------------------
Mirrors ``net/tipc/name_table.c``. A :class:`Binding` binds a service range
``{type, lower, upper}`` to a socket ``<node:port>`` with a scope and a key (the key
tells two bindings of the same socket to the same range apart). Per service type the
table keeps the distinct ranges in ascending ``(lower, upper)`` order; ranges may
overlap arbitrarily, and identical ranges share one entry holding all its bindings
(every node) and, counted separately, its local bindings (``node == own_node``).
The kernel keeps the ranges in an augmented rb-tree; here a service holds a sorted
list of ranges plus two lazily rebuilt helper lists (lower bounds, prefix maxima of
upper bounds), so the first range containing an instance is found with two bisects
and the common one-range service takes a short path. (One deliberate difference: the
kernel's tree is keyed on ``lower`` alone and puts a newly created range before older
ones with the same ``lower``; this table orders such ranges by ``upper``, so the order
does not depend on history and survives the replica.)

Operations and the kernel functions they mirror:

- :meth:`NameTable.insert` -- ``tipc_service_insert_publ``: a binding whose range
  already holds one with the same key and node is refused (:class:`DuplicateBinding`).
  A new binding goes to the *head* of its range's lists (the kernel's ``list_add``), so
  it is the next one picked by round robin. The event says whether it is the range's
  first binding (what a ``TIPC_SUB_SERVICE`` subscription reports as published).
- :meth:`NameTable.remove` -- ``tipc_nametbl_remove_publ``/``tipc_service_remove_publ``:
  matches type, exact range, key and node. The event says whether the range lost its
  last binding; an empty range is deleted, and so is an empty service.
- :meth:`NameTable.remove_port`, :meth:`NameTable.remove_node` -- the socket's withdraw
  on release (``tipc_sk_withdraw``) and the lost-peer purge (``tipc_publ_notify``).
- :meth:`NameTable.lookup_anycast` -- ``tipc_nametbl_lookup_anycast``: walks the ranges
  containing the instance in ascending order and uses only the *first* suitable one.
  Lookup node = own node: local bindings only, and a range without any is skipped.
  Otherwise, with ``prefer_local`` and local bindings in that range (the kernel does this
  for legacy addressing): round robin over the local ones; else round robin over all.
  Round robin takes the head and moves it to the tail; that state lives in this object.
  A lookup node that is neither 0 nor this node is deferred as in the kernel: the
  answer is ``(lookup_node, 0)``, i.e. send there with port 0 and let it resolve.
- :meth:`NameTable.lookup_mcast_sockets` -- ``tipc_nametbl_lookup_mcast_sockets``:
  local sockets with an overlapping binding, each once; with ``exact_scope`` (a message
  from another node) only cluster-scope bindings count.
- :meth:`NameTable.lookup_mcast_nodes` -- ``tipc_nametbl_lookup_mcast_nodes``, minus
  this node: peers with an overlapping (necessarily cluster-scope) binding.
- :meth:`NameTable.overlapping` -- the initial report of ``tipc_service_subscribe``:
  every overlapping binding, oldest first.

Node-scope bindings exist only locally: inserting one for another node is refused,
and they are never reported by :meth:`NameTable.lookup_mcast_nodes`. Every successful
change bumps :attr:`NameTable.generation`.

Replica image
-------------
The name-table worker publishes :meth:`NameTable.encode` in shared memory; clients
rebuild a table with :meth:`NameTable.decode` and look up locally. All little-endian::

    header (HEADER_SIZE = 32 bytes)
      0  4s  magic        b"TNTB"
      4  u16 version      1
      6  u16 record_size  RECORD_SIZE
      8  u32 own_node
     12  u32 count        number of records
     16  u64 generation
     24  u32 crc32        zlib.crc32 of the count * RECORD_SIZE record bytes
     28  u32 reserved     0
    record (RECORD_SIZE = 36 bytes), count of them
      0  u32 type, 4 u32 lower, 8 u32 upper, 12 u32 port, 16 u32 node, 20 u32 key,
     24  u32 scope (2 cluster, 3 node), 28 u64 seq (insertion serial, unique)

Records come in :meth:`NameTable.bindings` order -- ascending ``(type, lower, upper)``,
then ascending ``seq`` -- and decode insists on it, so within-range insertion order
(round robin) and global age (``overlapping``, oldest first) survive a round trip.
Round-robin positions are per-table state and are not transferred: a decoded table
starts as if its bindings had just been inserted in order (newest at the head).
Bytes after the last record are ignored, so a whole shared-memory region may be
passed; anything malformed raises :class:`ReplicaFormatError`.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "CLUSTER_SCOPE",
    "HEADER_SIZE",
    "NODE_SCOPE",
    "RECORD_SIZE",
    "REPLICA_MAGIC",
    "REPLICA_VERSION",
    "Binding",
    "BindingAdded",
    "BindingRemoved",
    "DuplicateBinding",
    "InvalidBinding",
    "NameTable",
    "NameTableError",
    "NoSuchBinding",
    "ReplicaFormatError",
    "build_image",
    "encoded_size",
    "image_parts",
    "peek_generation",
]

# Scopes, as in <linux/tipc.h> (TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE). Defined here rather
# than imported so that this module pulls in nothing but the standard library.
CLUSTER_SCOPE = 2
NODE_SCOPE = 3

_U32 = 0xFFFFFFFF

REPLICA_MAGIC = b"TNTB"
REPLICA_VERSION = 1
_HEADER = struct.Struct("<4sHHIIQII")
_RECORD = struct.Struct("<7IQ")
HEADER_SIZE = _HEADER.size
RECORD_SIZE = _RECORD.size


def encoded_size(count: int) -> int:
    """Bytes taken by the replica image of a table holding ``count`` bindings."""
    return HEADER_SIZE + count * RECORD_SIZE


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Binding:
    """One service binding: ``{type, lower, upper}`` bound to socket ``<node:port>``."""

    type: int
    lower: int
    upper: int
    scope: int
    node: int
    port: int
    key: int

    def __str__(self) -> str:
        return (
            f"{{{self.type},{self.lower},{self.upper}}} -> <{self.node:#x}:{self.port}>"
            f" key {self.key} scope {self.scope}"
        )


@dataclass(frozen=True, slots=True)
class BindingAdded:
    """Result of :meth:`NameTable.insert`; ``first_in_range``: the range was empty."""

    binding: Binding
    first_in_range: bool


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """Result of a removal; ``last_in_range``: the range is now empty."""

    binding: Binding
    last_in_range: bool


class NameTableError(Exception):
    """Base of the name table's errors."""


class InvalidBinding(NameTableError, ValueError):
    """The caller passed a malformed binding (bounds, 32-bit range, scope, node)."""


class DuplicateBinding(NameTableError):
    """The range already holds a binding with the same key and node."""


class NoSuchBinding(NameTableError):
    """No binding matches the withdrawal (type, exact range, key and node)."""


class ReplicaFormatError(NameTableError):
    """A replica image is truncated, corrupt or of an unknown version."""


# --------------------------------------------------------------------------- internals

# A stored binding, per range: (node, port, key, scope, seq). Tuples keep decode cheap;
# Binding objects are only built for results that need them.
_Publ = tuple[int, int, int, int, int]
_NODE, _PORT, _KEY, _SCOPE, _SEQ = range(5)
# What remove() takes: (type, lower, upper, node, key); sets of them keep age order.
_Ident = tuple[int, int, int, int, int]
_IdentSet = dict[_Ident, None]


class _Range:
    """All bindings of one exact ``(lower, upper)`` (the kernel's ``service_range``)."""

    __slots__ = ("lower", "upper", "publ", "nlocal", "rr_all", "rr_local")

    def __init__(self, lower: int, upper: int) -> None:
        self.lower = lower
        self.upper = upper
        # (node << 32 | key) -> publication, in insertion order (oldest first).
        self.publ: dict[int, _Publ] = {}
        self.nlocal = 0
        # Round-robin orders, materialized on first need. Until then the order is the
        # kernel's list order after list_add insertions: newest first.
        self.rr_all: deque[_Publ] | None = None
        self.rr_local: deque[_Publ] | None = None


class _Service:
    """All ranges of one service type (the kernel's ``tipc_service``)."""

    __slots__ = ("type", "ranges", "keys", "index", "lowers", "pmax")

    def __init__(self, type: int) -> None:
        self.type = type
        self.ranges: list[_Range] = []  # ascending (lower, upper)
        self.keys: list[int] = []  # lower << 32 | upper, parallel to ranges
        self.index: dict[int, _Range] = {}
        # Search helpers, rebuilt lazily after the set of ranges changes.
        self.lowers: list[int] | None = None
        self.pmax: list[int] | None = None  # prefix maxima of the upper bounds

    def bounds(self, lower: int, upper: int) -> tuple[int, int]:
        """Index span ``[i, hi)`` of ranges that may overlap ``[lower, upper]``.

        Every range before ``i`` ends below ``lower``; every one from ``hi`` on starts
        above ``upper``; ranges in between overlap iff their own upper >= ``lower``.
        """
        lowers = self.lowers
        pmax = self.pmax
        if lowers is None or pmax is None:
            ranges = self.ranges
            lowers = self.lowers = [r.lower for r in ranges]
            pmax = self.pmax = list(accumulate((r.upper for r in ranges), max))
        hi = bisect_right(lowers, upper)
        return bisect_left(pmax, lower, 0, hi), hi

    def overlap(self, lower: int, upper: int) -> Iterator[_Range]:
        ranges = self.ranges
        i, hi = self.bounds(lower, upper)
        for j in range(i, hi):
            r = ranges[j]
            if r.upper >= lower:
                yield r


def _check_u32(what: str, value: int) -> None:
    if not 0 <= value <= _U32:
        raise InvalidBinding(f"{what} {value!r} is not a 32-bit unsigned value")


def _rr_pick(rr: deque[_Publ]) -> _Publ:
    p = rr[0]
    rr.rotate(-1)
    return p


# --------------------------------------------------------------------------- the table


class NameTable:
    """A node's view of all service bindings in the cluster, without any I/O."""

    __slots__ = (
        "own_node",
        "generation",
        "_services",
        "_count",
        "_next_seq",
        "_by_port",
        "_by_node",
    )

    def __init__(self, own_node: int) -> None:
        _check_u32("own node", own_node)
        self.own_node = own_node
        self.generation = 0
        self._services: dict[int, _Service] = {}
        self._count = 0
        self._next_seq = 0
        # Lazily built indices for remove_port / remove_node: identity tuples
        # (type, lower, upper, node, key) in age order. Clients that only decode and
        # look up never pay for them.
        self._by_port: dict[tuple[int, int], _IdentSet] | None = None
        self._by_node: dict[int, _IdentSet] | None = None

    # ------------------------------------------------------------------ changes

    def insert(self, b: Binding) -> BindingAdded:
        """Add a binding (``tipc_service_insert_publ``)."""
        for what, value in (
            ("type", b.type),
            ("lower", b.lower),
            ("upper", b.upper),
            ("node", b.node),
            ("port", b.port),
            ("key", b.key),
        ):
            _check_u32(what, value)
        if b.lower > b.upper:
            raise InvalidBinding(f"lower {b.lower} > upper {b.upper} in {b}")
        if b.scope == NODE_SCOPE:
            if b.node != self.own_node:
                raise InvalidBinding(
                    f"node-scope binding for another node than {self.own_node:#x}: {b}"
                )
        elif b.scope != CLUSTER_SCOPE:
            raise InvalidBinding(f"scope {b.scope!r} is neither cluster (2) nor node (3): {b}")

        svc = self._services.get(b.type)
        rk = b.lower << 32 | b.upper
        r = svc.index.get(rk) if svc is not None else None
        pk = b.node << 32 | b.key
        if r is not None and pk in r.publ:
            node, port, key, scope, _ = r.publ[pk]
            held = Binding(b.type, b.lower, b.upper, scope, node, port, key)
            raise DuplicateBinding(f"{b} duplicates {held}")
        if svc is None:
            svc = self._services[b.type] = _Service(b.type)
        if r is None:
            r = svc.index[rk] = _Range(b.lower, b.upper)
            pos = bisect_left(svc.keys, rk)
            svc.keys.insert(pos, rk)
            svc.ranges.insert(pos, r)
            svc.lowers = svc.pmax = None

        first = not r.publ
        seq = self._next_seq
        self._next_seq = seq + 1
        p: _Publ = (b.node, b.port, b.key, b.scope, seq)
        r.publ[pk] = p
        if r.rr_all is not None:
            r.rr_all.appendleft(p)
        if b.node == self.own_node:
            r.nlocal += 1
            if r.rr_local is not None:
                r.rr_local.appendleft(p)
        if self._by_port is not None and self._by_node is not None:
            ident = (b.type, b.lower, b.upper, b.node, b.key)
            self._by_port.setdefault((b.node, b.port), {})[ident] = None
            self._by_node.setdefault(b.node, {})[ident] = None
        self._count += 1
        self.generation += 1
        return BindingAdded(b, first)

    def remove(self, type: int, lower: int, upper: int, node: int, key: int) -> BindingRemoved:
        """Withdraw the binding matching type, exact range, node and key."""
        for what, value in (("type", type), ("lower", lower), ("upper", upper), ("node", node)):
            _check_u32(what, value)
        _check_u32("key", key)
        svc = self._services.get(type)
        rk = lower << 32 | upper
        r = svc.index.get(rk) if svc is not None else None
        p = r.publ.pop(node << 32 | key, None) if r is not None else None
        if svc is None or r is None or p is None:
            raise NoSuchBinding(
                f"no binding {{{type},{lower},{upper}}} key {key} on node {node:#x}"
            )
        if r.rr_all is not None:
            r.rr_all.remove(p)
        if node == self.own_node:
            r.nlocal -= 1
            if r.rr_local is not None:
                r.rr_local.remove(p)
        last = not r.publ
        if last:
            del svc.index[rk]
            pos = bisect_left(svc.keys, rk)
            del svc.keys[pos]
            del svc.ranges[pos]
            svc.lowers = svc.pmax = None
            if not svc.ranges:
                del self._services[type]
        port = p[_PORT]
        if self._by_port is not None and self._by_node is not None:
            ident = (type, lower, upper, node, key)
            of_port = self._by_port[node, port]
            del of_port[ident]
            if not of_port:
                del self._by_port[node, port]
            of_node = self._by_node[node]
            del of_node[ident]
            if not of_node:
                del self._by_node[node]
        self._count -= 1
        self.generation += 1
        return BindingRemoved(Binding(type, lower, upper, p[_SCOPE], node, port, key), last)

    def holds(self, type: int, lower: int, upper: int, node: int, key: int) -> bool:
        """Whether a binding matching type, exact range, node and key is in the table."""
        svc = self._services.get(type)
        r = svc.index.get(lower << 32 | upper) if svc is not None else None
        return r is not None and (node << 32 | key) in r.publ

    def remove_port(self, node: int, port: int) -> list[BindingRemoved]:
        """Withdraw every binding of socket ``<node:port>``, oldest first."""
        by_port, _ = self._indices()
        idents = by_port.get((node, port))
        return [self.remove(*ident) for ident in list(idents or ())]

    def remove_node(self, node: int) -> list[BindingRemoved]:
        """Withdraw every binding of ``node`` (a lost peer), oldest first."""
        _, by_node = self._indices()
        idents = by_node.get(node)
        return [self.remove(*ident) for ident in list(idents or ())]

    def _indices(self) -> tuple[dict[tuple[int, int], _IdentSet], dict[int, _IdentSet]]:
        by_port = self._by_port
        by_node = self._by_node
        if by_port is None or by_node is None:
            by_port = {}
            by_node = {}
            rows = sorted(
                (p[_SEQ], (svc.type, r.lower, r.upper, p[_NODE], p[_KEY]), p[_PORT])
                for svc in self._services.values()
                for r in svc.ranges
                for p in r.publ.values()
            )
            for _, ident, port in rows:
                by_port.setdefault((ident[3], port), {})[ident] = None
                by_node.setdefault(ident[3], {})[ident] = None
            self._by_port = by_port
            self._by_node = by_node
        return by_port, by_node

    # ------------------------------------------------------------------ lookups

    def lookup_anycast(
        self,
        type: int,
        instance: int,
        *,
        lookup_node: int = 0,
        prefer_local: bool = True,
    ) -> tuple[int, int] | None:
        """Pick the ``(node, port)`` a message to ``{type, instance}`` goes to.

        Mirrors ``tipc_nametbl_lookup_anycast``; see the module notes. A lookup node
        other than 0 and this node defers the lookup: ``(lookup_node, 0)``.
        """
        own = self.own_node
        if lookup_node and lookup_node != own:
            return (lookup_node, 0)
        svc = self._services.get(type)
        if svc is None:
            return None
        local_only = lookup_node == own
        ranges = svc.ranges
        if len(ranges) == 1:
            i, hi = 0, 1
        else:
            i, hi = svc.bounds(instance, instance)
        for j in range(i, hi):
            r = ranges[j]
            if r.upper < instance or r.lower > instance:
                continue
            if r.nlocal and (local_only or prefer_local):
                if len(r.publ) == 1:
                    p = next(iter(r.publ.values()))
                else:
                    rr = r.rr_local
                    if rr is None:
                        rr = r.rr_local = deque(
                            q for q in reversed(r.publ.values()) if q[_NODE] == own
                        )
                    p = _rr_pick(rr)
            elif local_only:
                continue
            elif len(r.publ) == 1:
                p = next(iter(r.publ.values()))
            else:
                rr = r.rr_all
                if rr is None:
                    rr = r.rr_all = deque(reversed(r.publ.values()))
                p = _rr_pick(rr)
            return (p[_NODE], p[_PORT])
        return None

    def lookup_mcast_sockets(
        self, type: int, lower: int, upper: int, *, exact_scope: bool
    ) -> list[int]:
        """Local ports with a binding overlapping ``[lower, upper]``, each once.

        ``exact_scope`` (the message came from another node): cluster-scope bindings
        only. Order: ranges ascending, then binding age.
        """
        svc = self._services.get(type)
        if svc is None or lower > upper:
            return []
        own = self.own_node
        ports: dict[int, None] = {}
        for r in svc.overlap(lower, upper):
            if not r.nlocal:
                continue
            for p in r.publ.values():
                if p[_NODE] == own and (not exact_scope or p[_SCOPE] == CLUSTER_SCOPE):
                    ports[p[_PORT]] = None
        return list(ports)

    def lookup_mcast_nodes(self, type: int, lower: int, upper: int) -> set[int]:
        """Other nodes with a (cluster-scope) binding overlapping ``[lower, upper]``."""
        svc = self._services.get(type)
        if svc is None or lower > upper:
            return set()
        own = self.own_node
        nodes: set[int] = set()
        for r in svc.overlap(lower, upper):
            if r.nlocal == len(r.publ):
                continue
            for p in r.publ.values():
                if p[_NODE] != own and p[_SCOPE] == CLUSTER_SCOPE:
                    nodes.add(p[_NODE])
        return nodes

    def overlapping(self, type: int, lower: int, upper: int) -> list[Binding]:
        """Every binding whose range overlaps ``[lower, upper]``, oldest first."""
        svc = self._services.get(type)
        if svc is None or lower > upper:
            return []
        found = [(p, r) for r in svc.overlap(lower, upper) for p in r.publ.values()]
        found.sort(key=lambda pr: pr[0][_SEQ])
        return [
            Binding(type, r.lower, r.upper, p[_SCOPE], p[_NODE], p[_PORT], p[_KEY])
            for p, r in found
        ]

    def bindings(self) -> list[Binding]:
        """All bindings, by ``(type, lower, upper)`` and then insertion order."""
        return [
            Binding(t, r.lower, r.upper, p[_SCOPE], p[_NODE], p[_PORT], p[_KEY])
            for t, r, p in self._walk()
        ]

    def _walk(self) -> Iterator[tuple[int, _Range, _Publ]]:
        for t in sorted(self._services):
            for r in self._services[t].ranges:
                for p in r.publ.values():
                    yield t, r, p

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        """Same node, same bindings in the same order, same relative ages."""
        if not isinstance(other, NameTable):
            return NotImplemented
        if self.own_node != other.own_node or len(self) != len(other):
            return False
        mine = list(self._walk())
        theirs = list(other._walk())
        if [(t, r.lower, r.upper, p[:4]) for t, r, p in mine] != [
            (t, r.lower, r.upper, p[:4]) for t, r, p in theirs
        ]:
            return False
        by_age = sorted(range(len(mine)), key=lambda i: mine[i][2][_SEQ])
        return by_age == sorted(range(len(theirs)), key=lambda i: theirs[i][2][_SEQ])

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"NameTable(own_node={self.own_node:#x}, bindings={self._count},"
            f" generation={self.generation})"
        )

    # ------------------------------------------------------------------ replica

    def encode(self) -> bytes:
        """The replica image (format in the module docstring)."""
        buf = bytearray(encoded_size(self._count))
        pack = _RECORD.pack_into
        off = HEADER_SIZE
        for t, r, p in self._walk():
            node, port, key, scope, seq = p
            pack(buf, off, t, r.lower, r.upper, port, node, key, scope, seq)
            off += RECORD_SIZE
        crc = zlib.crc32(memoryview(buf)[HEADER_SIZE:])
        _HEADER.pack_into(
            buf,
            0,
            REPLICA_MAGIC,
            REPLICA_VERSION,
            RECORD_SIZE,
            self.own_node,
            self._count,
            self.generation & 0xFFFFFFFFFFFFFFFF,
            crc,
            0,
        )
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes | memoryview | bytearray, own_node: int) -> NameTable:
        """Rebuild a table from a replica image; :class:`ReplicaFormatError` if malformed.

        ``own_node`` must match the node the image was written for.
        """
        mv = memoryview(data).cast("B")
        count, generation = _check_header(mv, own_node)
        table = cls(own_node)
        services = table._services
        svc = _Service(-1)  # placeholders until the first record
        r = _Range(0, 0)
        cur_type = -1
        cur_rk = -1
        last_seq = -1
        max_seq = -1
        end = HEADER_SIZE + count * RECORD_SIZE
        for t, lo, up, port, node, key, scope, seq in _RECORD.iter_unpack(mv[HEADER_SIZE:end]):
            if lo > up:
                raise ReplicaFormatError(f"record with lower {lo} > upper {up}")
            if scope != CLUSTER_SCOPE and (scope != NODE_SCOPE or node != own_node):
                raise ReplicaFormatError(f"record with bad scope {scope} for node {node:#x}")
            if t != cur_type:
                if t < cur_type:
                    raise ReplicaFormatError("records not sorted by type")
                svc = services[t] = _Service(t)
                cur_type = t
                cur_rk = -1
            rk = lo << 32 | up
            if rk != cur_rk:
                if rk < cur_rk:
                    raise ReplicaFormatError("records not sorted by range")
                r = svc.index[rk] = _Range(lo, up)
                svc.ranges.append(r)
                svc.keys.append(rk)
                cur_rk = rk
                last_seq = -1
            if seq <= last_seq:
                raise ReplicaFormatError("records of a range not in insertion order")
            last_seq = seq
            if seq > max_seq:
                max_seq = seq
            pk = node << 32 | key
            if pk in r.publ:
                raise ReplicaFormatError(f"duplicate key {key} on node {node:#x} in a range")
            r.publ[pk] = (node, port, key, scope, seq)
            if node == own_node:
                r.nlocal += 1
        table._count = count
        table._next_seq = max_seq + 1
        table.generation = generation
        return table


def _check_header(mv: memoryview, own_node: int) -> tuple[int, int]:
    if len(mv) < HEADER_SIZE:
        raise ReplicaFormatError(f"image of {len(mv)} bytes is shorter than its header")
    magic, version, rsize, node, count, generation, crc, reserved = _HEADER.unpack_from(mv)
    if magic != REPLICA_MAGIC:
        raise ReplicaFormatError(f"bad magic {magic!r}")
    if version != REPLICA_VERSION:
        raise ReplicaFormatError(f"unknown replica version {version}")
    if rsize != RECORD_SIZE or reserved != 0:
        raise ReplicaFormatError(f"bad record size {rsize} or reserved word {reserved:#x}")
    if node != own_node:
        raise ReplicaFormatError(f"image is for node {node:#x}, not {own_node:#x}")
    end = encoded_size(count)
    if len(mv) < end:
        raise ReplicaFormatError(f"image of {len(mv)} bytes is truncated (needs {end})")
    if zlib.crc32(mv[HEADER_SIZE:end]) != crc:
        raise ReplicaFormatError("record checksum mismatch (torn or corrupt image)")
    return count, generation


def image_parts(data: bytes | memoryview | bytearray) -> tuple[int, int, int, memoryview]:
    """``(own node, count, generation, record bytes)`` of a checked image (header, size and
    checksum; the records themselves are checked by :meth:`NameTable.decode`)."""
    mv = memoryview(data).cast("B")
    if len(mv) < HEADER_SIZE:
        raise ReplicaFormatError(f"image of {len(mv)} bytes is shorter than its header")
    node = _HEADER.unpack_from(mv)[3]
    count, generation = _check_header(mv, node)
    return node, count, generation, mv[HEADER_SIZE : HEADER_SIZE + count * RECORD_SIZE]


def build_image(own_node: int, count: int, generation: int, records: bytes) -> bytes:
    """An image around ``count`` records already packed in :meth:`NameTable.encode`'s
    record format and order (for a replica kept in another form, e.g. columns)."""
    if len(records) != count * RECORD_SIZE:
        raise ValueError(f"{len(records)} record bytes for {count} records")
    header = _HEADER.pack(
        REPLICA_MAGIC,
        REPLICA_VERSION,
        RECORD_SIZE,
        own_node,
        count,
        generation & 0xFFFFFFFFFFFFFFFF,
        zlib.crc32(records),
        0,
    )
    return header + records


def peek_generation(data: bytes | memoryview | bytearray) -> int:
    """The generation stamped in an image's header, without decoding it.

    Lets a client skip decoding when nothing changed. Raises :class:`ReplicaFormatError`
    if the header is malformed (the records are not checked).
    """
    mv = memoryview(data).cast("B")
    if len(mv) < HEADER_SIZE:
        raise ReplicaFormatError(f"image of {len(mv)} bytes is shorter than its header")
    magic, version, rsize, _, _, generation, _, _ = _HEADER.unpack_from(mv)
    if magic != REPLICA_MAGIC or version != REPLICA_VERSION or rsize != RECORD_SIZE:
        raise ReplicaFormatError("not a name-table replica of a known version")
    return int(generation)
