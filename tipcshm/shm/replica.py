"""The name-table replica in shared memory: written in columns, looked up in place.

Theory of operation
-------------------
The name-table worker is the single writer of the node's bindings (its own sockets' and,
from the bearer workers, other nodes'); every process resolves service addresses from the
replica in the node segment without asking anyone. Until layout 3 the replica was one
encoded image that every client decoded whole whenever the sequence word moved: a bind
anywhere in the cluster cost every process on every node a decode of the whole table.
Now a client looks up in the shared buffers themselves and decodes nothing:

* Records are sorted by ``(type, lower, upper, seq)`` and stored column-wise (layout.py:
  ``REPLICA_COLUMNS``): ``key = type << 32 | lower`` is the sort key, and ``pmax = type <<
  32 | max(upper of this type's records so far)`` is non-decreasing too (a segmented
  prefix maximum that needs no segments: the type in the high bits restarts it). The
  records whose range may contain ``instance`` are then exactly ``[i, hi)`` with
  ``hi = bisect_right(key, type << 32 | instance)`` and ``i = bisect_left(pmax, type << 32
  | instance)``: every record before ``i`` ends below the instance (or is of a smaller
  type), every one from ``hi`` on starts above it. A range query uses the same two
  bisects with its own bounds. Each bisect runs first over a sparse index in the buffer
  (every 256th key and pmax: 8 KiB at 131,072 records, which stays in cache) and then
  within one block of 256 records, so a lookup touches a few cache lines of the columns
  however large they are: about 3-4 us from 1,000 to 100,000 bindings
  (tools/bench/nametable_bench.py), where bisecting the whole columns took 2.5 and 6 us.
* Within an exact range the records are in insertion order, so the anycast pick is as
  :class:`~tipcshm.core.nametable.NameTable`'s: the first range (ascending) containing the
  instance that has a suitable binding, local bindings first, round robin. The round
  robin's position is per process (:class:`ReplicaView` keeps a counter per range), as
  it was in the decoded table; it starts at the newest binding, as the kernel's list does.
* Crash safety is the seqlock and double buffer of layout 2: the writer fills the
  *inactive* buffer, then bumps ``seq`` to odd, flips ``active``, bumps ``seq`` to even. A
  reader reads ``seq``, looks up in the active buffer, and re-reads ``seq``; if it moved,
  the buffer may have been rewritten under it and it looks up again. A worker killed
  mid-write leaves the active buffer intact. A reader that meets garbage (someone wrote
  into the segment) gets a wrong answer but no exception and no unbounded loop: every
  index stays below the buffer's count, clamped to its capacity.
* The writer keeps the columns in its own numpy arrays (:class:`Mirror`), applies each
  batch of changes there (one ``np.delete``/``np.insert`` per column per batch, the
  prefix maxima by one ``np.maximum.accumulate``), and copies the whole image into the
  inactive buffer (a memcpy per column). So the worker pays O(n) memory bandwidth per
  batch (about a millisecond at 100,000 bindings), clients pay nothing.
* Change tokens: besides ``seq`` (moves on any change) the segment keeps TYPE_TOKENS
  counters, and a change of service type ``t`` bumps counter ``hash(t)`` after the flip
  (:func:`tipcshm.shm.layout.type_token_slot`). A route cache keyed by
  ``NodeClient.table_token(t)`` is then not flushed by churn of other types or other
  nodes' services (two types may share a counter: that costs a needless re-resolve).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tipcshm.core.nametable import (
    CLUSTER_SCOPE,
    Binding,
    BindingAdded,
    BindingRemoved,
    NameTable,
    image_parts,
)
from tipcshm.shm.layout import (
    IMAGE_RECORD,
    MAX_BINDINGS,
    R_ACTIVE,
    R_SEQ,
    RB_COUNT,
    REPLICA,
    REPLICA_BUF,
    REPLICA_BUF0,
    REPLICA_COLUMNS,
    SPARSE_SHIFT,
    NodeSegment,
)

__all__ = ["Mirror", "ReplicaView"]

_U32 = 0xFFFFFFFF
_SPINS = 1000  # seqlock retries before a lookup settles for what it read
_RR_MAX = 4096  # round-robin counters kept per process (then forgotten, restarting)

Ident = tuple[int, int, int, int, int]
_DTYPES = {"Q": np.uint64, "I": np.uint32}


# --------------------------------------------------------------------------- writer


class Mirror:
    """The worker's private copy of the replica's columns, updated by batches of changes."""

    def __init__(self, own: int) -> None:
        self.own = own
        self.n = 0
        self.cols: dict[str, Any] = {
            name: np.empty(0, dtype=_DTYPES[fmt]) for name, fmt in REPLICA_COLUMNS
        }
        self.next_seq = 0

    @classmethod
    def from_table(cls, table: NameTable, origins: Mapping[Ident, int]) -> Mirror:
        """Columns of ``table`` (in its own order and ages), with the bearer masks."""
        m = cls(table.own_node)
        _, count, _, records = image_parts(table.encode())
        rec = np.frombuffer(records, dtype=IMAGE_RECORD, count=count)
        types = rec["type"].astype(np.uint64) << np.uint64(32)
        cols = m.cols
        cols["key"] = types | rec["lower"]
        cols["seq"] = rec["seq"].copy()
        cols["upper"] = rec["upper"].copy()
        cols["node"] = rec["node"].copy()
        cols["port"] = rec["port"].copy()
        cols["bkey"] = rec["key"].copy()
        cols["scope"] = rec["scope"].copy()
        cols["origin"] = np.zeros(count, dtype=np.uint32)
        if origins:
            for i, r in enumerate(rec.tolist()):
                mask = origins.get((r[0], r[1], r[2], r[4], r[5]))
                if mask:
                    cols["origin"][i] = mask
        cols["pmax"] = np.maximum.accumulate(types | rec["upper"])
        m.n = count
        m.next_seq = int(rec["seq"].max()) + 1 if count else 0
        return m

    def _find(self, ident: Ident) -> int | None:
        t, lower, upper, node, key = ident
        cols = self.cols
        k = t << 32 | lower
        lo = int(np.searchsorted(cols["key"], k, "left"))
        hi = int(np.searchsorted(cols["key"], k, "right"))
        if lo == hi:
            return None
        hit = np.flatnonzero(
            (cols["upper"][lo:hi] == upper)
            & (cols["node"][lo:hi] == node)
            & (cols["bkey"][lo:hi] == key)
        )
        return lo + int(hit[0]) if len(hit) else None

    def _insert_pos(self, t: int, lower: int, upper: int) -> int:
        cols = self.cols
        k = t << 32 | lower
        lo = int(np.searchsorted(cols["key"], k, "left"))
        hi = int(np.searchsorted(cols["key"], k, "right"))
        return lo + int(np.searchsorted(cols["upper"][lo:hi], upper, "right"))

    def apply(
        self,
        events: Iterable[BindingAdded | BindingRemoved],
        origins: Mapping[Ident, int],
        origin_changed: Iterable[Ident] = (),
    ) -> set[int]:
        """Apply a batch of table changes (in the order they happened); returns the
        service types that changed. ``origins``: the feeds' masks now; ``origin_changed``:
        bindings whose mask changed without an insertion or removal."""
        added: dict[Ident, Binding] = {}
        removed: list[Ident] = []
        types: set[int] = set()
        for ev in events:
            b = ev.binding
            ident = (b.type, b.lower, b.upper, b.node, b.key)
            types.add(b.type)
            if isinstance(ev, BindingAdded):
                added[ident] = b
            elif ident in added:
                del added[ident]
            else:
                removed.append(ident)
        cols = self.cols
        if removed:
            pos = [p for ident in removed if (p := self._find(ident)) is not None]
            if pos:
                for name in cols:
                    cols[name] = np.delete(cols[name], pos)
                self.n -= len(pos)
        if added:
            seq0 = self.next_seq
            # In table order (a stable sort keeps a range's new bindings in insertion
            # order): np.insert puts the values given for one index in the order given.
            rows = sorted(
                (
                    (b, seq0 + i, origins.get(ident, 0))
                    for i, (ident, b) in enumerate(added.items())
                ),
                key=lambda r: (r[0].type, r[0].lower, r[0].upper),
            )
            pos = [self._insert_pos(b.type, b.lower, b.upper) for b, _, _ in rows]
            new: dict[str, Any] = {
                "key": np.array([b.type << 32 | b.lower for b, _, _ in rows], np.uint64),
                "pmax": np.zeros(len(rows), np.uint64),
                "seq": np.array([q for _, q, _ in rows], np.uint64),
                "upper": np.array([b.upper for b, _, _ in rows], np.uint32),
                "node": np.array([b.node for b, _, _ in rows], np.uint32),
                "port": np.array([b.port for b, _, _ in rows], np.uint32),
                "bkey": np.array([b.key for b, _, _ in rows], np.uint32),
                "scope": np.array([b.scope for b, _, _ in rows], np.uint32),
                "origin": np.array([o for _, _, o in rows], np.uint32),
            }
            for name in cols:
                cols[name] = np.insert(cols[name], pos, new[name])
            self.next_seq = seq0 + len(rows)
            self.n += len(rows)
        for ident in origin_changed:
            p = self._find(ident)
            if p is not None:
                cols["origin"][p] = origins.get(ident, 0)
        if removed or added:
            cols["pmax"] = np.maximum.accumulate(
                (cols["key"] & np.uint64(0xFFFFFFFF00000000)) | cols["upper"]
            )
        return types

    def publish(
        self, seg: NodeSegment, generation: int, types: Iterable[int], *, slots: bool = False
    ) -> int:
        """Write the columns into the segment's inactive buffer and flip to it."""
        return seg.publish_replica(self.cols, self.n, self.own, generation, types, slots=slots)


# --------------------------------------------------------------------------- reader


class ReplicaView:
    """Lookups straight in the replica's shared buffers (the API of NameTable's lookups)."""

    def __init__(self, seg: NodeSegment) -> None:
        self.own_node = seg.addr
        self._u64 = seg.u64
        self._u32 = seg.u32
        self._seq_i = (REPLICA + R_SEQ) // 8
        self._active_i = (REPLICA + R_ACTIVE) // 4
        self._count_i = [(REPLICA_BUF0 + b * REPLICA_BUF + RB_COUNT) // 4 for b in (0, 1)]
        self._cols = [
            (*(seg.replica_column(b, name) for name, _ in REPLICA_COLUMNS), *seg.replica_sparse(b))
            for b in (0, 1)
        ]
        self._rr: dict[tuple[int, int, int, int], int] = {}

    def close(self) -> None:
        """Release the views (the segment cannot be unmapped while they exist)."""
        for cols in self._cols:
            for c in cols:
                c.release()
        self._cols = []

    def _read(self, fn: Any, *args: Any) -> Any:
        """``fn(columns, count, *args)`` under the seqlock."""
        u64 = self._u64
        seq_i = self._seq_i
        for _ in range(_SPINS):
            s1 = u64[seq_i]
            if s1 & 1:
                continue
            b = self._u32[self._active_i] & 1
            n = min(self._u32[self._count_i[b]], MAX_BINDINGS)
            got = fn(self._cols[b], n, *args)
            if u64[seq_i] == s1:
                return got
        # The writer never settled (stopped mid-write, or a scribbled seq word): answer
        # from what is there rather than hang; the worker repairs the word at its next write.
        b = self._u32[self._active_i] & 1
        return fn(self._cols[b], min(self._u32[self._count_i[b]], MAX_BINDINGS), *args)

    # ------------------------------------------------------------------ lookups

    def lookup_anycast(
        self,
        type: int,
        instance: int,
        domain: int = 0,
        *,
        lookup_node: int | None = None,
        prefer_local: bool = True,
    ) -> tuple[int, int] | None:
        """The ``(node, port)`` a message to ``{type, instance}`` goes to, or None.

        ``domain`` 0: any node, this node's bindings first; this node: its bindings only;
        another node: that node's bindings only (``lookup_node`` is the same argument
        under :meth:`NameTable.lookup_anycast`'s name)."""
        if lookup_node is not None:
            domain = lookup_node
        # _read inlined: this is every uncached send's lookup
        u64 = self._u64
        u32 = self._u32
        seq_i = self._seq_i
        for _ in range(_SPINS):
            s1 = u64[seq_i]
            if s1 & 1:
                continue
            b = u32[self._active_i] & 1
            n = u32[self._count_i[b]]
            got = _anycast_range(
                self._cols[b],
                n if n < MAX_BINDINGS else MAX_BINDINGS,
                type,
                instance,
                domain,
                self.own_node,
                prefer_local,
            )
            if u64[seq_i] == s1:
                break
        else:
            got = self._read(_anycast_range, type, instance, domain, self.own_node, prefer_local)
        if got is None:
            return None
        pick, rkey = got
        if len(pick) == 1:
            return pick[0]
        rr = self._rr
        c = rr.get(rkey, 0)
        if len(rr) >= _RR_MAX and rkey not in rr:
            rr.clear()
        rr[rkey] = c + 1
        return pick[len(pick) - 1 - c % len(pick)]  # newest first, as the kernel's list

    def lookup_mcast_sockets(
        self, type: int, lower: int, upper: int, exact_scope: bool = False
    ) -> list[int]:
        """This node's ports with a binding overlapping ``[lower, upper]``, each once;
        ``exact_scope``: cluster-scope bindings only."""
        if lower > upper:
            return []
        got: list[int] = self._read(_mcast_sockets, type, lower, upper, exact_scope, self.own_node)
        return got

    def lookup_mcast_nodes(self, type: int, lower: int, upper: int) -> set[int]:
        """Other nodes with a cluster-scope binding overlapping ``[lower, upper]``."""
        if lower > upper:
            return set()
        got: set[int] = self._read(_mcast_nodes, type, lower, upper, self.own_node)
        return got

    def overlapping(self, type: int, lower: int, upper: int) -> list[Binding]:
        """Every binding overlapping ``[lower, upper]``, oldest first."""
        if lower > upper:
            return []
        rows: list[tuple[int, Binding]] = self._read(_overlapping, type, lower, upper)
        rows.sort(key=lambda r: r[0])
        return [b for _, b in rows]

    def bindings(self) -> list[Binding]:
        """All bindings, by ``(type, lower, upper)`` and then age."""
        got: list[Binding] = self._read(_all)
        return got

    def __len__(self) -> int:
        b = self._u32[self._active_i] & 1
        return min(self._u32[self._count_i[b]], MAX_BINDINGS)


# Column order in a view tuple (REPLICA_COLUMNS, then the sparse index).
_KEY, _PMAX, _SEQ, _UPPER, _NODE, _PORT, _BKEY, _SCOPE, _ORIGIN, _SKEY, _SPMAX = range(11)
_SB = 1 << SPARSE_SHIFT


def _span(cols: Any, n: int, type: int, lower: int, upper: int) -> tuple[int, int]:
    """Records ``[i, hi)`` that may overlap ``[lower, upper]`` of ``type`` (module notes).

    Each bisect first runs over the sparse index (every _SB-th entry): its answer ``b``
    says the full answer lies in ``((b - 1) * _SB, b * _SB]``, one block."""
    nb = (n + _SB - 1) >> SPARSE_SHIFT
    k = type << 32 | upper
    b = bisect_right(cols[_SKEY], k, 0, nb)
    hi = bisect_right(cols[_KEY], k, (b - 1) << SPARSE_SHIFT, min(b << SPARSE_SHIFT, n)) if b else 0
    p = type << 32 | lower
    b = bisect_left(cols[_SPMAX], p, 0, nb)
    lo = bisect_left(cols[_PMAX], p, (b - 1) << SPARSE_SHIFT if b else 0, min(b << SPARSE_SHIFT, n))
    return min(lo, hi), hi


def _anycast_range(
    cols: Any, n: int, type: int, instance: int, domain: int, own: int, prefer_local: bool
) -> tuple[list[tuple[int, int]], tuple[int, int, int, int]] | None:
    if not (0 <= type <= _U32 and 0 <= instance <= _U32):
        return None
    key, upper, node, port = cols[_KEY], cols[_UPPER], cols[_NODE], cols[_PORT]
    i, hi = _span(cols, n, type, instance, instance)
    j = i
    while j < hi:
        k = key[j]
        u = upper[j]
        e = j + 1  # the exact range's records: [j, e)
        while e < hi and key[e] == k and upper[e] == u:
            e += 1
        if u >= instance and e == j + 1 and not domain:  # the common case: one binding
            return [(node[j], port[j])], (k, u, 0, 0)
        if u >= instance:
            # The round-robin counter of a range's local bindings is shared by "this node
            # first" and "this node only" lookups, as the kernel's local list is.
            if domain:
                pick = [(node[x], port[x]) for x in range(j, e) if node[x] == domain]
                mode = 1 if domain == own else 2
            else:
                pick = [(node[x], port[x]) for x in range(j, e)]
                local = [p for p in pick if p[0] == own] if prefer_local else []
                if local:
                    pick, mode = local, 1
                else:
                    mode = 0
            if pick:
                return pick, (k, u, mode, domain if mode == 2 else 0)
        j = e
    return None


def _mcast_sockets(
    cols: Any, n: int, type: int, lower: int, upper: int, exact: bool, own: int
) -> list[int]:
    i, hi = _span(cols, n, type, lower, upper)
    up, node, port, scope = cols[_UPPER], cols[_NODE], cols[_PORT], cols[_SCOPE]
    ports: dict[int, None] = {}
    for j in range(i, hi):
        if up[j] >= lower and node[j] == own and (not exact or scope[j] == CLUSTER_SCOPE):
            ports[port[j]] = None
    return list(ports)


def _mcast_nodes(cols: Any, n: int, type: int, lower: int, upper: int, own: int) -> set[int]:
    i, hi = _span(cols, n, type, lower, upper)
    up, node, scope = cols[_UPPER], cols[_NODE], cols[_SCOPE]
    return {
        node[j]
        for j in range(i, hi)
        if up[j] >= lower and node[j] != own and scope[j] == CLUSTER_SCOPE
    }


def _binding(cols: Any, j: int) -> Binding:
    k = cols[_KEY][j]
    return Binding(
        k >> 32,
        k & _U32,
        cols[_UPPER][j],
        cols[_SCOPE][j],
        cols[_NODE][j],
        cols[_PORT][j],
        cols[_BKEY][j],
    )


def _overlapping(cols: Any, n: int, type: int, lower: int, upper: int) -> list[tuple[int, Binding]]:
    i, hi = _span(cols, n, type, lower, upper)
    up, seq = cols[_UPPER], cols[_SEQ]
    return [(seq[j], _binding(cols, j)) for j in range(i, hi) if up[j] >= lower]


def _all(cols: Any, n: int) -> list[Binding]:
    return [_binding(cols, j) for j in range(n)]
