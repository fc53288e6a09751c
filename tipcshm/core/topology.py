"""The topology service (service tracking): subscriptions and their events, sans-IO.

Theory of operation
-------------------
Mirrors ``net/tipc/topsrv.c`` (the server behind ``{TIPC_TOP_SRV, 1}``), ``net/tipc/subscr.c``
(one subscription) and the subscription half of ``net/tipc/name_table.c``. A subscriber
opens a SEQPACKET connection to the service and writes 28-byte ``struct tipc_subscr``
requests; the service answers with 48-byte ``struct tipc_event`` messages. This module
owns no socket and no clock. A connection is an opaque ``int`` chosen by the worker.

:class:`TopologyService` follows the core's contract (:mod:`tipcshm.core.contract`).
It talks to many subscriber connections at once, so -- as aioquic pairs each datagram
with its network address in ``receive_datagram(data, addr, now)`` and
``datagrams_to_send(now) -> [(data, addr)]`` -- its frames are ``(connection id,
bytes)`` pairs both ways:

``receive((conn, request), now)``
    One message read from connection ``conn``; the initial report is queued. A request
    shorter than 28 bytes raises :class:`SubscriptionRejected` (a
    :class:`~tipcshm.core.errors.RemoteProtocolError`; nothing changed, the connection
    stays open, as in the kernel). A refused request (PORTS with SERVICE, lower > upper,
    the node-wide limit) drops every subscription of ``conn`` and emits
    :class:`~tipcshm.core.events.SubscriberRejected`: the owner closes the connection.
``frames_to_send(now)``
    ``(conn, event)`` pairs, each event the 48 bytes to write to ``conn``, in order.
``next_timer()`` / ``handle_timer(now)``
    The earliest subscription timeout / expire what is due (``TIPC_SUBSCR_TIMEOUT``).
``notify_added(ev)`` / ``notify_removed(ev)``
    The name table changed (the owner applied the change); events are queued.
``close(conn)``
    The subscriber went away.

The name table the initial reports read is :attr:`TopologyService.table`, given at
construction. The older call-and-return methods (:meth:`~TopologyService.subscribe`,
:meth:`~TopologyService.binding_added`, :meth:`~TopologyService.binding_removed`,
:meth:`~TopologyService.expire`, :meth:`~TopologyService.next_deadline`) remain: they
return :class:`Outgoing` values (the bytes plus the decoded event) instead of queueing,
which tests and tools that want the decoded events use. Use one style per object.

Wire format (``<linux/tipc.h>``), all fields u32 in the *subscriber's* byte order::

    struct tipc_subscr (SUBSCR_SIZE = 28)      struct tipc_event (EVENT_SIZE = 48)
      0  type   \\                               0  event        1 PUBLISHED, 2 WITHDRAWN,
      4  lower   } seq (service range)                         3 SUBSCR_TIMEOUT
      8  upper  /                               4  found_lower
     12  timeout  ms, 0xffffffff = forever      8  found_upper
     16  filter                                12  port.ref
     20  usr_handle  8 opaque bytes            16  port.node
                                               20  s      the subscription, as received

The byte order is detected as the kernel's ``tipc_sub_read`` does: if the filter read in
host order has any of the bits 0x7 set the request is in host order, otherwise it is
taken as byte-swapped; events go back in the order detected (``tipc_evt_write``). The
embedded subscription is the 28 bytes exactly as received, so a subscriber can match an
event against its request with ``memcmp``.

Operations and the kernel functions they mirror:

- :meth:`TopologyService.subscribe` -- ``tipc_conn_rcv_from_sock`` and
  ``tipc_conn_rcv_sub``. A message shorter than 28 bytes is ignored by the kernel (the
  connection stays open); here it raises a non-fatal :class:`SubscriptionRejected`. Longer
  messages are truncated to their first 28 bytes, as a SEQPACKET read into a 28-byte
  buffer is. A request with ``TIPC_SUB_CANCEL`` deletes the connection's most recent
  subscription whose 28 bytes equal the request's with the cancel bit cleared (in the
  subscriber's byte order) -- ``tipc_conn_delete_sub`` after the 2020 fix; nothing is
  sent back, and an unmatched cancel is silently ignored. Otherwise the node-wide limit
  (``TIPC_MAX_SUBSCR`` = 65535) and then ``tipc_sub_subscribe``'s checks apply: PORTS
  together with SERVICE, or ``lower > upper``, is refused. A refused request makes the
  kernel close the connection, dropping all its subscriptions; the engine forgets them
  before raising a fatal :class:`SubscriptionRejected`, and the worker must close the
  socket. A filter with neither PORTS nor SERVICE is accepted and behaves like SERVICE.
- The initial report -- ``tipc_nametbl_subscribe``/``tipc_service_subscribe``: unless the
  filter has ``TIPC_SUB_NO_STATUS`` (0x80), the existing bindings overlapping the range
  are reported as ``TIPC_PUBLISHED``, oldest first: with PORTS every binding, otherwise
  each overlapping range's *oldest* binding. The scope filters are applied after that
  choice, so a SERVICE subscription with ``TIPC_SUB_CLUSTER_SCOPE`` does not see a range
  whose oldest binding has node scope (as in the kernel).
- :meth:`TopologyService.binding_added` / :meth:`TopologyService.binding_removed` -- the
  loops over ``service->subscriptions`` in ``tipc_service_insert_publ`` and
  ``tipc_service_remove_publ``, calling ``tipc_sub_report_overlap`` with
  ``must = first/last in range``: the binding's range must overlap the subscribed range
  (``tipc_sub_check_overlap``); PORTS reports every binding, anything else only when
  ``must``; ``TIPC_SUB_CLUSTER_SCOPE`` (0x20) skips node-scope bindings and
  ``TIPC_SUB_NODE_SCOPE`` (0x40) skips the others. ``found_lower``/``found_upper`` are the
  binding's own range, not clipped; the port is the binding's ``<node:port>``
  (``tipc_sub_send_event``). Subscriptions of a type are visited newest first, as the
  kernel's ``list_add`` orders them.
- :meth:`TopologyService.expire` -- ``tipc_sub_timeout`` followed by the send path's
  ``tipc_conn_delete_sub``: a subscription with a finite timeout ends with one
  ``TIPC_SUBSCR_TIMEOUT`` event carrying the subscribed range and port 0/0. The timer is
  armed after the initial report, so a timeout of 0 reports first and expires at the
  next :meth:`~TopologyService.expire`. (The kernel then deletes the connection's most
  recent byte-identical subscription, which for identical twins may be the other one;
  here the one that expired is deleted.) :meth:`~TopologyService.next_deadline` is the
  single timer the worker arms.
- :meth:`TopologyService.close` -- ``tipc_conn_close``: the connection's subscriptions
  vanish without events.

Node and link tracking need nothing special here: ``{TIPC_NODE_STATE 0, n, n}`` and
``{TIPC_LINK_STATE 2, peer, peer}`` (port = link id, node = own node) are ordinary
bindings that the node and link layers insert into the name table, so subscribing to
``{0, 0, ~0}`` or ``{2, 0, ~0}`` yields their events through the paths above.

The name table is reached only through :class:`BindingSource` and the ``binding`` /
``first_in_range`` / ``last_in_range`` attributes of its change events (the contract of
:mod:`tipcshm.core.nametable`), so this module imports nothing but the standard library
and the core's contract, errors and events.
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum, IntEnum
from typing import Final, Literal, Protocol

from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import SubscriberRejected

__all__ = [
    "EVENT_SIZE",
    "NATIVE_ORDER",
    "SUBSCR_SIZE",
    "TIPC_FILTER_MASK",
    "TIPC_MAX_SUBSCR",
    "TIPC_SUB_CANCEL",
    "TIPC_SUB_CLUSTER_SCOPE",
    "TIPC_SUB_NODE_SCOPE",
    "TIPC_SUB_NO_STATUS",
    "TIPC_SUB_PORTS",
    "TIPC_SUB_SERVICE",
    "TIPC_WAIT_FOREVER",
    "BindingAddedLike",
    "BindingLike",
    "BindingRemovedLike",
    "BindingSource",
    "ByteOrder",
    "EventType",
    "InvalidSubscription",
    "MalformedEvent",
    "Outgoing",
    "RejectReason",
    "Subscription",
    "SubscriptionRejected",
    "TopologyError",
    "TopologyEvent",
    "TopologyService",
    "TopologyStatistics",
    "decode_event",
    "decode_subscription",
    "detect_byteorder",
    "encode_event",
    "encode_subscription",
]

# ----------------------------------------------------------------------------- constants
# Values of <linux/tipc.h> and net/tipc/topsrv.h/subscr.h. Defined here rather than taken
# from tipcshm.constants, which imports the stdlib socket module.

TIPC_SUB_PORTS: Final = 0x01
TIPC_SUB_SERVICE: Final = 0x02
TIPC_SUB_CANCEL: Final = 0x04
TIPC_FILTER_MASK: Final = TIPC_SUB_PORTS | TIPC_SUB_SERVICE | TIPC_SUB_CANCEL
TIPC_SUB_CLUSTER_SCOPE: Final = 0x20  # kernel-internal: cluster-scope bindings only
TIPC_SUB_NODE_SCOPE: Final = 0x40  # kernel-internal: node-scope bindings only
TIPC_SUB_NO_STATUS: Final = 0x80  # kernel-internal: no initial report
TIPC_WAIT_FOREVER: Final = -1  # as Python's socket module has it; 0xffffffff on the wire
TIPC_MAX_SUBSCR: Final = 65535

_NODE_SCOPE: Final = 3  # TIPC_NODE_SCOPE
_U32: Final = 0xFFFFFFFF
_FOREVER_WIRE: Final = 0xFFFFFFFF

SUBSCR_SIZE: Final = 28
EVENT_SIZE: Final = 48

ByteOrder = Literal["<", ">"]
#: The host's order, in which the kernel reads a subscription first.
NATIVE_ORDER: Final[ByteOrder] = "<" if sys.byteorder == "little" else ">"

_SUBSCR = {o: struct.Struct(o + "5I8s") for o in ("<", ">")}
_EVT_HEAD = {o: struct.Struct(o + "5I") for o in ("<", ">")}
_FILTER_OFFSET = 16
_EVT_HEAD_SIZE = 20
assert _SUBSCR["<"].size == SUBSCR_SIZE
assert _EVT_HEAD_SIZE + SUBSCR_SIZE == EVENT_SIZE


class EventType(IntEnum):
    """``struct tipc_event.event``."""

    PUBLISHED = 1  # TIPC_PUBLISHED
    WITHDRAWN = 2  # TIPC_WITHDRAWN
    SUBSCR_TIMEOUT = 3  # TIPC_SUBSCR_TIMEOUT


# ----------------------------------------------------------------------------- errors


class TopologyError(Exception):
    """Base of the topology service's errors."""


class RejectReason(Enum):
    """Why a subscription request was refused."""

    SHORT = "shorter than struct tipc_subscr"
    PORTS_AND_SERVICE = "TIPC_SUB_PORTS together with TIPC_SUB_SERVICE"
    LOWER_ABOVE_UPPER = "lower > upper"
    LIMIT = f"node-wide limit of {TIPC_MAX_SUBSCR} subscriptions reached"


class SubscriptionRejected(TopologyError, RemoteProtocolError):
    """The subscriber sent a request the service refuses (the subscriber's fault).

    ``fatal``: the kernel closes the connection for this; the engine has already
    forgotten the connection's subscriptions and the worker must close the socket.
    A short message is not fatal: the kernel ignores it and keeps the connection.
    """

    def __init__(
        self, reason: RejectReason, detail: str, *, conn: int | None = None, fatal: bool = True
    ) -> None:
        where = f"connection {conn}: " if conn is not None else ""
        super().__init__(f"{where}subscription rejected, {reason.value}: {detail}")
        self.reason = reason
        self.conn = conn
        self.fatal = fatal


class InvalidSubscription(TopologyError, ValueError):
    """The caller built a :class:`Subscription` that cannot be encoded (the caller's fault)."""


class MalformedEvent(TopologyError):
    """Bytes that are not a ``struct tipc_event`` (the service's fault, seen by a client)."""


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Subscription:
    """One ``struct tipc_subscr``, fields as read in the subscriber's byte order.

    ``timeout_ms`` is :data:`TIPC_WAIT_FOREVER` (-1) for "never"; 0xffffffff is accepted
    and stored as -1. ``filter`` is the whole 32-bit word, internal bits included.
    """

    type: int
    lower: int
    upper: int
    timeout_ms: int = TIPC_WAIT_FOREVER
    filter: int = TIPC_SUB_SERVICE
    usr_handle: bytes = bytes(8)

    def __post_init__(self) -> None:
        for name in ("type", "lower", "upper", "filter"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= _U32:
                raise InvalidSubscription(f"{name} {value!r} is not a 32-bit unsigned value")
        t = self.timeout_ms
        if not isinstance(t, int) or not -1 <= t <= _U32:
            raise InvalidSubscription(f"timeout {t!r} is neither -1 nor a 32-bit value")
        if t == _FOREVER_WIRE:
            object.__setattr__(self, "timeout_ms", TIPC_WAIT_FOREVER)
        h = self.usr_handle
        if not isinstance(h, bytes | bytearray | memoryview) or len(h) != 8:
            raise InvalidSubscription(f"usr_handle must be 8 bytes, not {h!r}")
        if not isinstance(h, bytes):
            object.__setattr__(self, "usr_handle", bytes(h))

    @property
    def waits_forever(self) -> bool:
        return self.timeout_ms == TIPC_WAIT_FOREVER

    def cancel_request(self) -> Subscription:
        """The request that cancels this subscription (same struct, plus the cancel bit)."""
        return replace(self, filter=self.filter | TIPC_SUB_CANCEL)

    def __str__(self) -> str:
        t = "forever" if self.waits_forever else f"{self.timeout_ms} ms"
        return f"{{{self.type},{self.lower},{self.upper}}} filter {self.filter:#x} timeout {t}"


@dataclass(frozen=True, slots=True)
class TopologyEvent:
    """One ``struct tipc_event``; ``port``/``node`` are ``port.ref``/``port.node``."""

    kind: EventType
    found_lower: int
    found_upper: int
    port: int
    node: int
    subscription: Subscription


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A 48-byte event to write to connection ``conn``, and the same event decoded."""

    conn: int
    data: bytes
    event: TopologyEvent


@dataclass(frozen=True, slots=True)
class TopologyStatistics:
    subscriptions: int
    connections: int
    events: int
    timeouts: int
    cancels: int
    rejected: int


# The name table as this module sees it (tipcshm.core.nametable's contract).


class BindingLike(Protocol):
    @property
    def type(self) -> int: ...
    @property
    def lower(self) -> int: ...
    @property
    def upper(self) -> int: ...
    @property
    def scope(self) -> int: ...
    @property
    def node(self) -> int: ...
    @property
    def port(self) -> int: ...


class BindingAddedLike(Protocol):
    @property
    def binding(self) -> BindingLike: ...
    @property
    def first_in_range(self) -> bool: ...


class BindingRemovedLike(Protocol):
    @property
    def binding(self) -> BindingLike: ...
    @property
    def last_in_range(self) -> bool: ...


class BindingSource(Protocol):
    def overlapping(self, type: int, lower: int, upper: int) -> Sequence[BindingLike]:
        """Every binding overlapping ``[lower, upper]``, oldest first."""
        ...


# ----------------------------------------------------------------------------- codec


def detect_byteorder(
    data: bytes | bytearray | memoryview, native: ByteOrder = NATIVE_ORDER
) -> ByteOrder:
    """The subscriber's byte order, from the filter word at offset 16 (``tipc_sub_read``)."""
    f = int.from_bytes(
        data[_FILTER_OFFSET : _FILTER_OFFSET + 4], "little" if native == "<" else "big"
    )
    if f & TIPC_FILTER_MASK:
        return native
    return ">" if native == "<" else "<"


def decode_subscription(
    data: bytes | bytearray | memoryview, *, native: ByteOrder = NATIVE_ORDER
) -> tuple[Subscription, ByteOrder]:
    """Decode a request: the subscription and the byte order it was written in.

    Only the first :data:`SUBSCR_SIZE` bytes count. Raises a non-fatal
    :class:`SubscriptionRejected` if there are fewer. ``native`` is the host order the
    kernel would read with; it exists so tests can play a big-endian host.
    """
    if len(data) < SUBSCR_SIZE:
        raise SubscriptionRejected(
            RejectReason.SHORT, f"{len(data)} bytes, need {SUBSCR_SIZE}", fatal=False
        )
    order = detect_byteorder(data, native)
    type_, lower, upper, timeout, filt, handle = _SUBSCR[order].unpack_from(data)
    return Subscription(type_, lower, upper, timeout, filt, handle), order


def encode_subscription(sub: Subscription, byteorder: ByteOrder = NATIVE_ORDER) -> bytes:
    """The 28 bytes of ``sub`` in ``byteorder`` (a client writes these to the service)."""
    return _SUBSCR[byteorder].pack(
        sub.type, sub.lower, sub.upper, sub.timeout_ms & _U32, sub.filter, sub.usr_handle
    )


def encode_event(event: TopologyEvent, byteorder: ByteOrder = NATIVE_ORDER) -> bytes:
    """The 48 bytes of ``event``, its subscription included, in ``byteorder``."""
    head = _EVT_HEAD[byteorder].pack(
        int(event.kind), event.found_lower, event.found_upper, event.port, event.node
    )
    return head + encode_subscription(event.subscription, byteorder)


def decode_event(
    data: bytes | bytearray | memoryview,
    byteorder: ByteOrder | None = None,
    *,
    native: ByteOrder = NATIVE_ORDER,
) -> TopologyEvent:
    """Decode an event; the byte order is detected from the embedded filter unless given.

    Raises :class:`MalformedEvent` unless ``data`` is exactly :data:`EVENT_SIZE` bytes
    with a known event code.
    """
    if len(data) != EVENT_SIZE:
        raise MalformedEvent(f"event of {len(data)} bytes, expected {EVENT_SIZE}")
    sub_bytes = bytes(data[_EVT_HEAD_SIZE:])
    order = byteorder or detect_byteorder(sub_bytes, native)
    kind, lo, up, port, node = _EVT_HEAD[order].unpack_from(data)
    if kind not in EventType._value2member_map_:
        raise MalformedEvent(f"unknown event code {kind:#x}")
    type_, lower, upper, timeout, filt, handle = _SUBSCR[order].unpack(sub_bytes)
    sub = Subscription(type_, lower, upper, timeout, filt, handle)
    return TopologyEvent(EventType(kind), lo, up, port, node, sub)


# ----------------------------------------------------------------------------- engine


class _Sub:
    """A live subscription (the kernel's ``struct tipc_subscription``)."""

    __slots__ = ("id", "conn", "sub", "order", "raw", "head", "deadline")

    def __init__(self, id: int, conn: int, sub: Subscription, order: ByteOrder, raw: bytes) -> None:
        self.id = id
        self.conn = conn
        self.sub = sub
        self.order = order
        self.raw = raw  # the 28 bytes as received: memcmp key and event tail
        self.head = _EVT_HEAD[order]
        self.deadline: float | None = None


class TopologyService(Machine[tuple[int, bytes]]):
    """One node's topology server, without I/O (see the module notes).

    Frames in and out are ``(connection id, bytes)`` pairs. ``table`` is the name table
    that initial reports read (needed by :meth:`receive`; the older :meth:`subscribe`
    takes it as an argument).
    """

    __slots__ = (
        "max_subscriptions",
        "table",
        "_subs",
        "_by_type",
        "_by_conn",
        "_timers",
        "_next_id",
        "_stale",
        "_sent",
        "_timeouts",
        "_cancels",
        "_rejected",
    )

    def __init__(
        self, *, table: BindingSource | None = None, max_subscriptions: int = TIPC_MAX_SUBSCR
    ) -> None:
        super().__init__()
        self.max_subscriptions = max_subscriptions
        self.table = table
        self._subs: dict[int, _Sub] = {}
        # Per service type and per connection, in subscription order (oldest first).
        self._by_type: dict[int, dict[int, _Sub]] = {}
        self._by_conn: dict[int, dict[int, _Sub]] = {}
        self._timers: list[tuple[float, int]] = []  # (deadline, id); stale entries skipped
        self._next_id = 0
        self._stale = 0  # timer entries of subscriptions dropped before their deadline
        self._sent = 0  # events produced (Machine owns _events, the queue)
        self._timeouts = 0
        self._cancels = 0
        self._rejected = 0

    # ------------------------------------------------------------------ contract

    def receive(self, frame: tuple[int, bytes | bytearray | memoryview], now: float) -> None:
        """One request read from connection ``frame[0]`` (see the module notes).

        Raises :class:`SubscriptionRejected` (a RemoteProtocolError) for a request too
        short to read, changing nothing; LocalProtocolError if no :attr:`table` was
        given. A refused request emits :class:`SubscriberRejected` instead of raising,
        because it does change state: the connection's subscriptions are gone.
        """
        conn, data = frame
        table = self.table
        if table is None:
            raise LocalProtocolError("TopologyService.receive needs the name table (table=)")
        try:
            out = self.subscribe(conn, data, now, table)
        except SubscriptionRejected as exc:
            if not exc.fatal:
                raise
            self._emit(SubscriberRejected(conn, exc.reason.value))
            return
        self._queue(out)

    def notify_added(self, ev: BindingAddedLike) -> None:
        """The name table gained a binding: queue the events (:meth:`binding_added`)."""
        self._queue(self.binding_added(ev))

    def notify_removed(self, ev: BindingRemovedLike) -> None:
        """The name table lost a binding: queue the events (:meth:`binding_removed`)."""
        self._queue(self.binding_removed(ev))

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (the earliest subscription timeout)."""
        return self.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Expire every subscription whose timeout has passed; the events are queued."""
        self._queue(self.expire(now))

    def _queue(self, out: list[Outgoing]) -> None:
        self._outbox.extend((o.conn, o.data) for o in out)

    # ------------------------------------------------------------------ requests

    def subscribe(
        self, conn: int, data: bytes | bytearray | memoryview, now: float, table: BindingSource
    ) -> list[Outgoing]:
        """Handle one request from ``conn``; returns the initial report (maybe empty).

        Raises :class:`SubscriptionRejected`; when it is ``fatal`` the connection's
        subscriptions are gone and the worker must close the connection.
        """
        try:
            sub, order = decode_subscription(data)
        except SubscriptionRejected as e:
            self._rejected += 1
            raise SubscriptionRejected(e.reason, str(e), conn=conn, fatal=False) from None
        raw = bytes(data[:SUBSCR_SIZE])
        filt = sub.filter
        if filt & TIPC_SUB_CANCEL:
            self._cancel(
                conn, encode_subscription(replace(sub, filter=filt & ~TIPC_SUB_CANCEL), order)
            )
            return []
        if len(self._subs) >= self.max_subscriptions:
            self._reject(conn, RejectReason.LIMIT, str(sub))
        if filt & TIPC_SUB_PORTS and filt & TIPC_SUB_SERVICE:
            self._reject(conn, RejectReason.PORTS_AND_SERVICE, str(sub))
        if sub.lower > sub.upper:
            self._reject(conn, RejectReason.LOWER_ABOVE_UPPER, str(sub))

        s = _Sub(self._next_id, conn, sub, order, raw)
        self._next_id += 1
        self._subs[s.id] = s
        self._by_type.setdefault(sub.type, {})[s.id] = s
        self._by_conn.setdefault(conn, {})[s.id] = s
        out = [] if filt & TIPC_SUB_NO_STATUS else self._initial_report(s, table)
        if not sub.waits_forever:
            s.deadline = now + sub.timeout_ms / 1000.0
            heapq.heappush(self._timers, (s.deadline, s.id))
        return out

    def _initial_report(self, s: _Sub, table: BindingSource) -> list[Outgoing]:
        sub = s.sub
        found = table.overlapping(sub.type, sub.lower, sub.upper)
        if not sub.filter & TIPC_SUB_PORTS:
            # The oldest binding of each range: `found` is oldest first, so the first one
            # seen per range is it, and the picks stay in age order.
            seen: set[tuple[int, int]] = set()
            picked = []
            for b in found:
                rng = (b.lower, b.upper)
                if rng not in seen:
                    seen.add(rng)
                    picked.append(b)
            found = picked
        return [
            self._event(s, EventType.PUBLISHED, b.lower, b.upper, b.port, b.node)
            for b in found
            if _scope_ok(sub.filter, b.scope)
        ]

    def _cancel(self, conn: int, key: bytes) -> None:
        for s in reversed((self._by_conn.get(conn) or {}).values()):
            if s.raw == key:
                self._drop(s)
                self._cancels += 1
                return

    def _reject(self, conn: int, reason: RejectReason, detail: str) -> None:
        self._rejected += 1
        self.close(conn)
        raise SubscriptionRejected(reason, detail, conn=conn, fatal=True)

    def close(self, conn: int) -> None:
        """Forget every subscription of ``conn``, sending nothing. Idempotent."""
        for s in list((self._by_conn.get(conn) or {}).values()):
            self._drop(s)

    def _drop(self, s: _Sub) -> None:
        del self._subs[s.id]
        of_type = self._by_type[s.sub.type]
        del of_type[s.id]
        if not of_type:
            del self._by_type[s.sub.type]
        of_conn = self._by_conn[s.conn]
        del of_conn[s.id]
        if not of_conn:
            del self._by_conn[s.conn]
        if s.deadline is not None:
            # Its timer entry goes stale: skipped when it surfaces, and the heap is
            # rebuilt once stale entries are the majority, so cancel loops cannot grow it.
            self._stale += 1
            if self._stale > 64 and 2 * self._stale > len(self._timers):
                subs = self._subs
                self._timers = [t for t in self._timers if t[1] in subs]
                heapq.heapify(self._timers)
                self._stale = 0

    # ------------------------------------------------------------------ name table

    def binding_added(self, ev: BindingAddedLike) -> list[Outgoing]:
        """Report a new binding (``tipc_service_insert_publ``)."""
        return self._report(ev.binding, EventType.PUBLISHED, ev.first_in_range)

    def binding_removed(self, ev: BindingRemovedLike) -> list[Outgoing]:
        """Report a withdrawn binding (``tipc_service_remove_publ``)."""
        return self._report(ev.binding, EventType.WITHDRAWN, ev.last_in_range)

    def _report(self, b: BindingLike, kind: EventType, must: bool) -> list[Outgoing]:
        of_type = self._by_type.get(b.type)
        if not of_type:
            return []
        lower, upper, scope = b.lower, b.upper, b.scope
        out = []
        for s in reversed(of_type.values()):  # newest subscription first, as list_add
            sub = s.sub
            if lower > sub.upper or upper < sub.lower:  # tipc_sub_check_overlap
                continue
            filt = sub.filter
            if not must and not filt & TIPC_SUB_PORTS:
                continue
            if not _scope_ok(filt, scope):
                continue
            out.append(self._event(s, kind, lower, upper, b.port, b.node))
        return out

    def _event(
        self, s: _Sub, kind: EventType, lower: int, upper: int, port: int, node: int
    ) -> Outgoing:
        self._sent += 1
        data = s.head.pack(kind, lower, upper, port, node) + s.raw
        return Outgoing(s.conn, data, TopologyEvent(kind, lower, upper, port, node, s.sub))

    # ------------------------------------------------------------------ time (returning)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next, or None if no timer runs."""
        timers = self._timers
        while timers and timers[0][1] not in self._subs:
            heapq.heappop(timers)
            self._stale -= 1
        return timers[0][0] if timers else None

    def expire(self, now: float) -> list[Outgoing]:
        """End every subscription whose timeout has passed, each with its timeout event.

        Events come in deadline order (ties: subscription order).
        """
        out = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, sid = heapq.heappop(timers)
            s = self._subs.get(sid)
            if s is None:
                self._stale -= 1
                continue
            sub = s.sub
            out.append(self._event(s, EventType.SUBSCR_TIMEOUT, sub.lower, sub.upper, 0, 0))
            self._timeouts += 1
            s.deadline = None  # its heap entry is already gone
            self._drop(s)
        return out

    # ------------------------------------------------------------------ introspection

    def subscriptions(self, conn: int | None = None) -> list[Subscription]:
        """Live subscriptions, oldest first: all of them, or those of ``conn``."""
        pool = self._subs if conn is None else self._by_conn.get(conn, {})
        return [s.sub for s in pool.values()]

    def connections(self) -> list[int]:
        """Connections holding at least one subscription."""
        return list(self._by_conn)

    def __len__(self) -> int:
        return len(self._subs)

    def statistics(self) -> TopologyStatistics:
        return TopologyStatistics(
            subscriptions=len(self._subs),
            connections=len(self._by_conn),
            events=self._sent,
            timeouts=self._timeouts,
            cancels=self._cancels,
            rejected=self._rejected,
        )

    def __repr__(self) -> str:
        return f"TopologyService(subscriptions={len(self._subs)}, connections={len(self._by_conn)})"


def _scope_ok(filt: int, scope: int) -> bool:
    if filt & TIPC_SUB_CLUSTER_SCOPE and scope == _NODE_SCOPE:
        return False
    return not (filt & TIPC_SUB_NODE_SCOPE and scope != _NODE_SCOPE)
