"""Tests of tipcshm.core.topology: the topology service's codec and engine, sans-IO."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipcshm import constants as C
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import SubscriberRejected
from tipcshm.core.nametable import (
    CLUSTER_SCOPE,
    NODE_SCOPE,
    Binding,
    BindingAdded,
    BindingRemoved,
    DuplicateBinding,
    NameTable,
)
from tipcshm.core.topology import (
    EVENT_SIZE,
    SUBSCR_SIZE,
    TIPC_MAX_SUBSCR,
    TIPC_SUB_CANCEL,
    TIPC_SUB_CLUSTER_SCOPE,
    TIPC_SUB_NO_STATUS,
    TIPC_SUB_NODE_SCOPE,
    TIPC_SUB_PORTS,
    TIPC_SUB_SERVICE,
    TIPC_WAIT_FOREVER,
    EventType,
    InvalidSubscription,
    MalformedEvent,
    Outgoing,
    RejectReason,
    Subscription,
    SubscriptionRejected,
    TopologyEvent,
    TopologyService,
    decode_event,
    decode_subscription,
    detect_byteorder,
    encode_event,
    encode_subscription,
)

OWN = 0x1001
P1 = 0x2002
P2 = 0x3003
T = 1000  # a user service type
HANDLE = b"\x01\x02\x03\x04\x05\x06\x07\x08"
FOREVER = 0xFFFFFFFF


# ----------------------------------------------------------------------------- helpers
# Expected bytes are built by hand from the uapi field order, independently of the module:
#   struct tipc_subscr { struct tipc_service_range seq {type, lower, upper};
#                        __u32 timeout; __u32 filter; char usr_handle[8]; }
#   struct tipc_event  { __u32 event, found_lower, found_upper;
#                        struct tipc_socket_addr port {ref, node}; struct tipc_subscr s; }


def req(
    lower: int,
    upper: int,
    filt: int = TIPC_SUB_SERVICE,
    *,
    type: int = T,
    timeout: int = FOREVER,
    handle: bytes = HANDLE,
    order: str = "<",
) -> bytes:
    return struct.pack(order + "IIIII", type, lower, upper, timeout, filt) + handle


def evt(event: int, lo: int, up: int, ref: int, node: int, sub: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "IIIII", event, lo, up, ref, node) + sub


def summary(out: list[Outgoing]) -> list[tuple[int, int, int, int, int, int]]:
    """(conn, event, found_lower, found_upper, port, node) of each outgoing event."""
    rows = []
    for o in out:
        e = o.event
        rows.append((o.conn, int(e.kind), e.found_lower, e.found_upper, e.port, e.node))
    return rows


def bind(
    table: NameTable,
    lower: int,
    upper: int,
    port: int,
    *,
    node: int = OWN,
    scope: int = CLUSTER_SCOPE,
    key: int | None = None,
    type: int = T,
) -> BindingAdded:
    return table.insert(
        Binding(type, lower, upper, scope, node, port, port if key is None else key)
    )


def unbind(
    table: NameTable, lower: int, upper: int, port: int, *, node: int = OWN, type: int = T
) -> BindingRemoved:
    return table.remove(type, lower, upper, node, port)


@pytest.fixture
def table() -> NameTable:
    return NameTable(OWN)


@pytest.fixture
def srv() -> TopologyService:
    return TopologyService()


# ----------------------------------------------------------------------------- codec


def test_sizes_and_constants_match_the_socket_api() -> None:
    assert (SUBSCR_SIZE, EVENT_SIZE) == (28, 48)
    assert (TIPC_SUB_PORTS, TIPC_SUB_SERVICE, TIPC_SUB_CANCEL) == (
        C.TIPC_SUB_PORTS,
        C.TIPC_SUB_SERVICE,
        C.TIPC_SUB_CANCEL,
    )
    assert TIPC_WAIT_FOREVER == C.TIPC_WAIT_FOREVER == -1
    assert [int(e) for e in EventType] == [
        C.TIPC_PUBLISHED,
        C.TIPC_WITHDRAWN,
        C.TIPC_SUBSCR_TIMEOUT,
    ]
    assert (TIPC_SUB_CLUSTER_SCOPE, TIPC_SUB_NODE_SCOPE, TIPC_SUB_NO_STATUS) == (0x20, 0x40, 0x80)
    assert TIPC_MAX_SUBSCR == 65535


SUB = Subscription(0x11223344, 0x01020304, 0xA0B0C0D0, 1500, TIPC_SUB_PORTS, HANDLE)
SUB_LE = bytes.fromhex("44332211 04030201 d0c0b0a0 dc050000 01000000 0102030405060708")
SUB_BE = bytes.fromhex("11223344 01020304 a0b0c0d0 000005dc 00000001 0102030405060708")


def test_subscr_layout_is_byte_exact_in_both_orders() -> None:
    assert (
        encode_subscription(SUB, "<")
        == SUB_LE
        == req(0x01020304, 0xA0B0C0D0, TIPC_SUB_PORTS, type=0x11223344, timeout=1500)
    )
    assert (
        encode_subscription(SUB, ">")
        == SUB_BE
        == req(0x01020304, 0xA0B0C0D0, TIPC_SUB_PORTS, type=0x11223344, timeout=1500, order=">")
    )
    assert decode_subscription(SUB_LE, native="<") == (SUB, "<")
    assert decode_subscription(SUB_BE, native="<") == (SUB, ">")
    # On a big-endian host the roles swap, as in the kernel's tipc_sub_read.
    assert decode_subscription(SUB_BE, native=">") == (SUB, ">")
    assert decode_subscription(SUB_LE, native=">") == (SUB, "<")


def test_event_layout_is_byte_exact_in_both_orders() -> None:
    e = TopologyEvent(EventType.WITHDRAWN, 7, 0x10000, 0xDEADBEEF, P1, SUB)
    head_le = bytes.fromhex("02000000 07000000 00000100 efbeadde 02200000")
    head_be = bytes.fromhex("00000002 00000007 00010000 deadbeef 00002002")
    assert encode_event(e, "<") == head_le + SUB_LE == evt(2, 7, 0x10000, 0xDEADBEEF, P1, SUB_LE)
    assert encode_event(e, ">") == head_be + SUB_BE
    assert len(encode_event(e, "<")) == EVENT_SIZE
    assert decode_event(head_le + SUB_LE, native="<") == e
    assert decode_event(head_be + SUB_BE, native="<") == e
    assert decode_event(head_be + SUB_BE, ">") == e


def test_wait_forever_is_all_ones_on_the_wire() -> None:
    s = Subscription(T, 0, 9)
    assert s.timeout_ms == TIPC_WAIT_FOREVER and s.waits_forever
    assert encode_subscription(s, "<")[12:16] == b"\xff\xff\xff\xff"
    assert Subscription(T, 0, 9, 0xFFFFFFFF) == s  # stored as -1
    decoded, _ = decode_subscription(req(0, 9))
    assert decoded == Subscription(T, 0, 9, -1, TIPC_SUB_SERVICE, HANDLE)


def test_filter_without_mask_bits_is_read_as_byte_swapped() -> None:
    # The kernel decides the order from bits 0x7 only: an all-internal filter written in
    # host order looks swapped, and is then read (and answered) the other way round.
    sub, order = decode_subscription(req(0, 9, TIPC_SUB_NO_STATUS), native="<")
    assert order == ">"
    assert sub.filter == 0x80000000
    assert encode_subscription(sub, order) == req(0, 9, TIPC_SUB_NO_STATUS)


def test_longer_messages_use_their_first_28_bytes_and_short_ones_are_rejected() -> None:
    assert decode_subscription(SUB_LE + b"junk", native="<") == (SUB, "<")
    with pytest.raises(SubscriptionRejected) as ei:
        decode_subscription(SUB_LE[:27])
    assert ei.value.reason is RejectReason.SHORT and not ei.value.fatal


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": -1},
        {"lower": 1 << 32},
        {"filter": -2},
        {"timeout_ms": -2},
        {"timeout_ms": 1 << 32},
        {"usr_handle": b"short"},
        {"usr_handle": "8 chars!"},
    ],
)
def test_invalid_subscription_values_are_the_callers_fault(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"type": T, "lower": 0, "upper": 1}
    fields.update(kwargs)
    with pytest.raises(InvalidSubscription):
        Subscription(**fields)  # type: ignore[arg-type]
    assert issubclass(InvalidSubscription, ValueError)


def test_cancel_request_adds_only_the_cancel_bit() -> None:
    c = SUB.cancel_request()
    assert c.filter == TIPC_SUB_PORTS | TIPC_SUB_CANCEL
    assert c == Subscription(SUB.type, SUB.lower, SUB.upper, SUB.timeout_ms, c.filter, HANDLE)


def test_malformed_events() -> None:
    good = evt(1, 0, 0, 1, OWN, req(0, 0))
    with pytest.raises(MalformedEvent):
        decode_event(good[:47])
    with pytest.raises(MalformedEvent):
        decode_event(evt(4, 0, 0, 1, OWN, req(0, 0)))


@given(st.binary(min_size=SUBSCR_SIZE, max_size=SUBSCR_SIZE), st.sampled_from(["<", ">"]))
def test_subscription_round_trip(data: bytes, native: str) -> None:
    sub, order = decode_subscription(data, native=native)  # type: ignore[arg-type]
    assert encode_subscription(sub, order) == data


@given(st.binary(max_size=40))
def test_subscription_fuzz(data: bytes) -> None:
    try:
        sub, order = decode_subscription(data)
    except SubscriptionRejected as e:
        assert len(data) < SUBSCR_SIZE and e.reason is RejectReason.SHORT
    else:
        assert isinstance(sub, Subscription) and order in "<>"


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    u32 = st.integers(0, 0xFFFFFFFF)
    return Subscription(
        draw(u32),
        draw(u32),
        draw(u32),
        draw(st.integers(-1, 0xFFFFFFFF)),
        draw(u32),
        draw(st.binary(min_size=8, max_size=8)),
    )


@given(
    subscriptions(),
    st.sampled_from(list(EventType)),
    st.tuples(*[st.integers(0, 0xFFFFFFFF)] * 4),
    st.sampled_from(["<", ">"]),
)
def test_event_round_trip(
    sub: Subscription, kind: EventType, nums: tuple[int, int, int, int], order: str
) -> None:
    e = TopologyEvent(kind, *nums, sub)
    data = encode_event(e, order)  # type: ignore[arg-type]
    assert len(data) == EVENT_SIZE
    assert decode_event(data, order) == e  # type: ignore[arg-type]


@given(st.binary(min_size=EVENT_SIZE, max_size=EVENT_SIZE))
def test_event_fuzz(data: bytes) -> None:
    try:
        e = decode_event(data)
    except MalformedEvent:
        order = detect_byteorder(data[20:])
        assert struct.unpack(order + "I", data[:4])[0] not in (1, 2, 3)
    else:
        assert e.kind in EventType


# ----------------------------------------------------------------------------- engine: reporting


def test_sub_ports_reports_every_overlapping_binding(
    srv: TopologyService, table: NameTable
) -> None:
    sub = req(10, 20, TIPC_SUB_PORTS)
    assert srv.subscribe(1, sub, 0.0, table) == []
    out = []
    out += srv.binding_added(bind(table, 5, 10, 1))  # touches 10: overlaps
    out += srv.binding_added(bind(table, 5, 10, 2))  # same range, second binding
    out += srv.binding_added(bind(table, 21, 30, 3))  # outside
    out += srv.binding_added(bind(table, 15, 15, 4, node=P1))
    out += srv.binding_added(bind(table, 15, 15, 4, type=T + 1))  # other type
    out += srv.binding_removed(unbind(table, 5, 10, 1))
    out += srv.binding_removed(unbind(table, 5, 10, 2))
    assert summary(out) == [
        (1, 1, 5, 10, 1, OWN),
        (1, 1, 5, 10, 2, OWN),
        (1, 1, 15, 15, 4, P1),
        (1, 2, 5, 10, 1, OWN),
        (1, 2, 5, 10, 2, OWN),
    ]
    # found_lower/upper are the binding's own range (5..10), not clipped to 10..20.
    assert out[0].data == evt(1, 5, 10, 1, OWN, sub)


def test_sub_service_reports_first_and_last_binding_of_each_range(
    srv: TopologyService, table: NameTable
) -> None:
    srv.subscribe(7, req(0, 100), 0.0, table)
    out = []
    out += srv.binding_added(bind(table, 1, 50, 1))  # first of 1..50
    out += srv.binding_added(bind(table, 1, 50, 2, node=P1))  # not first
    out += srv.binding_added(bind(table, 40, 60, 3))  # overlapping but distinct range: first
    out += srv.binding_removed(unbind(table, 1, 50, 1))  # not last
    out += srv.binding_removed(unbind(table, 1, 50, 2, node=P1))  # last: port of that one
    out += srv.binding_removed(unbind(table, 40, 60, 3))
    assert summary(out) == [
        (7, 1, 1, 50, 1, OWN),
        (7, 1, 40, 60, 3, OWN),
        (7, 2, 1, 50, 2, P1),
        (7, 2, 40, 60, 3, OWN),
    ]


@pytest.mark.skipif(sys.byteorder != "little", reason="plays a big-endian subscriber")
def test_filter_with_neither_ports_nor_service_behaves_like_service(
    srv: TopologyService, table: NameTable
) -> None:
    # No bit of 0x7: always taken as byte-swapped, so only a subscriber of the other
    # byte order can use it. Accepted, and reported at first/last only, like SERVICE.
    sub = req(0, 9, 0, order=">")
    bind(table, 1, 1, 1)
    bind(table, 1, 1, 2)
    init = srv.subscribe(1, sub, 0.0, table)
    assert summary(init) == [(1, 1, 1, 1, 1, OWN)]
    assert init[0].data == evt(1, 1, 1, 1, OWN, sub, order=">")
    assert srv.binding_added(bind(table, 1, 1, 3)) == []


def test_initial_report_ports_all_bindings_oldest_first(
    srv: TopologyService, table: NameTable
) -> None:
    bind(table, 8, 9, 1)  # oldest, highest range
    bind(table, 1, 2, 2)
    bind(table, 8, 9, 3, node=P1)
    bind(table, 4, 4, 4)
    bind(table, 50, 60, 5)  # outside
    out = srv.subscribe(3, req(0, 10, TIPC_SUB_PORTS), 0.0, table)
    assert summary(out) == [
        (3, 1, 8, 9, 1, OWN),
        (3, 1, 1, 2, 2, OWN),
        (3, 1, 8, 9, 3, P1),
        (3, 1, 4, 4, 4, OWN),
    ]


def test_initial_report_service_oldest_binding_per_range(
    srv: TopologyService, table: NameTable
) -> None:
    bind(table, 8, 9, 1, node=P1)
    bind(table, 1, 2, 2)
    bind(table, 8, 9, 3)
    bind(table, 1, 2, 4)
    bind(table, 2, 3, 5)
    out = srv.subscribe(3, req(0, 10), 0.0, table)
    assert summary(out) == [(3, 1, 8, 9, 1, P1), (3, 1, 1, 2, 2, OWN), (3, 1, 2, 3, 5, OWN)]


def test_no_status_bit_suppresses_only_the_initial_report(
    srv: TopologyService, table: NameTable
) -> None:
    bind(table, 1, 1, 1)
    assert srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_NO_STATUS), 0.0, table) == []
    assert summary(srv.binding_added(bind(table, 2, 2, 2))) == [(1, 1, 2, 2, 2, OWN)]


def test_big_endian_subscriber_gets_big_endian_events(
    srv: TopologyService, table: NameTable
) -> None:
    sub = req(0, 0xFFFF, TIPC_SUB_PORTS, timeout=2000, order=">")
    bind(table, 10, 20, 77)
    (init,) = srv.subscribe(1, sub, 0.0, table)
    assert init.data == evt(1, 10, 20, 77, OWN, sub, order=">")
    (w,) = srv.binding_removed(unbind(table, 10, 20, 77))
    assert w.data == evt(2, 10, 20, 77, OWN, sub, order=">")
    (t,) = srv.expire(2.0)
    assert t.data == evt(3, 0, 0xFFFF, 0, 0, sub, order=">")
    assert t.event.subscription == decode_subscription(sub)[0]


def test_scope_filters(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_CLUSTER_SCOPE), 0.0, table)
    srv.subscribe(2, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_NODE_SCOPE), 0.0, table)
    srv.subscribe(3, req(0, 9, TIPC_SUB_PORTS), 0.0, table)
    node_b = srv.binding_added(bind(table, 1, 1, 1, scope=NODE_SCOPE))
    cluster_b = srv.binding_added(bind(table, 2, 2, 2))
    assert sorted(o.conn for o in node_b) == [2, 3]
    assert sorted(o.conn for o in cluster_b) == [1, 3]
    # Initial reports are filtered the same way.
    assert [o.event.port for o in srv.subscribe(4, req(0, 9, 0x21), 0.0, table)] == [2]
    assert [o.event.port for o in srv.subscribe(5, req(0, 9, 0x41), 0.0, table)] == [1]


def test_service_scope_filter_applies_to_the_ranges_oldest_binding(
    srv: TopologyService, table: NameTable
) -> None:
    # As tipc_service_subscribe: the oldest binding is picked first, then filtered; so a
    # range whose first binding has node scope stays invisible to a cluster-only filter.
    bind(table, 5, 5, 1, scope=NODE_SCOPE)
    bind(table, 5, 5, 2)
    assert srv.subscribe(1, req(0, 9, TIPC_SUB_SERVICE | TIPC_SUB_CLUSTER_SCOPE), 0.0, table) == []
    assert srv.binding_added(bind(table, 5, 5, 3)) == []  # not first in range


def test_fan_out_visits_newest_subscription_first(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS), 0.0, table)
    srv.subscribe(2, req(0, 9), 0.0, table)
    srv.subscribe(1, req(5, 5), 0.0, table)
    out = srv.binding_added(bind(table, 5, 5, 9))
    assert [(o.conn, o.event.subscription.lower) for o in out] == [(1, 5), (2, 0), (1, 0)]


def test_node_tracking_reports_the_node_address(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, FOREVER, TIPC_SUB_SERVICE, type=C.TIPC_NODE_STATE), 0.0, table)
    (up,) = srv.binding_added(bind(table, P1, P1, 0, node=P1, key=P1, type=C.TIPC_NODE_STATE))
    assert (up.event.kind, up.event.found_lower, up.event.node) == (EventType.PUBLISHED, P1, P1)
    (down,) = srv.binding_removed(table.remove(C.TIPC_NODE_STATE, P1, P1, P1, P1))
    assert down.event.kind is EventType.WITHDRAWN


# ------------------------------------------------------------------------ engine: cancel, close


def test_cancel_removes_the_identical_subscription(srv: TopologyService, table: NameTable) -> None:
    a = req(0, 9, TIPC_SUB_PORTS)
    b = req(0, 9, TIPC_SUB_PORTS, handle=b"other!!!")
    srv.subscribe(1, a, 0.0, table)
    srv.subscribe(1, b, 0.0, table)
    # A different handle, range or conn does not match.
    assert (
        srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_CANCEL, handle=bytes(8)), 0, table)
        == []
    )
    assert srv.subscribe(1, req(0, 8, TIPC_SUB_PORTS | TIPC_SUB_CANCEL), 0.0, table) == []
    assert srv.subscribe(2, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_CANCEL), 0.0, table) == []
    assert len(srv) == 2
    assert srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_CANCEL), 0.0, table) == []
    assert srv.subscriptions(1) == [decode_subscription(b)[0]]
    out = srv.binding_added(bind(table, 1, 1, 1))
    assert [o.data[20:] for o in out] == [b]
    assert srv.statistics().cancels == 1


def test_cancel_in_swapped_byte_order(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9, TIPC_SUB_SERVICE, timeout=500, order=">"), 0.0, table)
    srv.subscribe(
        1, req(0, 9, TIPC_SUB_SERVICE | TIPC_SUB_CANCEL, timeout=500, order=">"), 0.0, table
    )
    assert len(srv) == 0
    assert srv.next_deadline() is None
    assert srv.expire(10.0) == []


def test_cancel_removes_one_of_identical_twins(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9), 0.0, table)
    srv.subscribe(1, req(0, 9), 0.0, table)
    srv.subscribe(1, req(0, 9, TIPC_SUB_SERVICE | TIPC_SUB_CANCEL), 0.0, table)
    assert len(srv) == 1
    assert len(srv.binding_added(bind(table, 1, 1, 1))) == 1


def test_cancel_ignores_validity_and_limit(table: NameTable) -> None:
    srv = TopologyService(max_subscriptions=1)
    srv.subscribe(1, req(0, 9), 0.0, table)
    # lower > upper in a cancel is not rejected: it simply matches nothing.
    assert srv.subscribe(1, req(9, 0, TIPC_SUB_SERVICE | TIPC_SUB_CANCEL), 0.0, table) == []
    srv.subscribe(1, req(0, 9, TIPC_SUB_SERVICE | TIPC_SUB_CANCEL), 0.0, table)
    assert len(srv) == 0
    srv.subscribe(1, req(0, 9), 0.0, table)  # the slot is free again


def test_close_drops_subscriptions_silently(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS, timeout=100), 0.0, table)
    srv.subscribe(2, req(0, 9, TIPC_SUB_PORTS), 0.0, table)
    srv.close(1)
    srv.close(1)
    srv.close(99)
    assert srv.connections() == [2]
    assert [o.conn for o in srv.binding_added(bind(table, 1, 1, 1))] == [2]
    assert srv.next_deadline() is None and srv.expire(1.0) == []


# ----------------------------------------------------------------------------- engine: time


def test_timeout_ends_the_subscription_with_one_event(
    srv: TopologyService, table: NameTable
) -> None:
    sub = req(3, 7, TIPC_SUB_PORTS, timeout=1500)
    srv.subscribe(5, sub, 10.0, table)
    assert srv.next_deadline() == 11.5
    assert srv.expire(11.499) == []
    (t,) = srv.expire(11.5)
    assert t.conn == 5
    assert t.data == evt(C.TIPC_SUBSCR_TIMEOUT, 3, 7, 0, 0, sub)
    assert (t.event.kind, t.event.port, t.event.node) == (EventType.SUBSCR_TIMEOUT, 0, 0)
    assert srv.next_deadline() is None
    assert srv.expire(100.0) == []
    assert srv.binding_added(bind(table, 5, 5, 1)) == []
    assert len(srv) == 0 and srv.statistics().timeouts == 1


def test_timeout_zero_reports_first_then_expires(srv: TopologyService, table: NameTable) -> None:
    bind(table, 1, 1, 1)
    init = srv.subscribe(1, req(0, 9, timeout=0), 3.0, table)
    assert summary(init) == [(1, 1, 1, 1, 1, OWN)]
    assert srv.next_deadline() == 3.0
    assert summary(srv.expire(3.0)) == [(1, 3, 0, 9, 0, 0)]


def test_timeouts_expire_in_deadline_order(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 1, timeout=3000), 0.0, table)
    srv.subscribe(2, req(0, 2, timeout=1000), 0.0, table)
    srv.subscribe(3, req(0, 3), 0.0, table)  # forever
    srv.subscribe(4, req(0, 4, timeout=1000), 0.0, table)
    assert srv.next_deadline() == 1.0
    assert [o.conn for o in srv.expire(5.0)] == [2, 4, 1]
    assert srv.subscriptions() == [decode_subscription(req(0, 3))[0]]
    assert srv.next_deadline() is None


def test_cancelled_timers_do_not_pile_up(srv: TopologyService, table: NameTable) -> None:
    for i in range(2000):
        srv.subscribe(1, req(0, i, timeout=60_000), 0.0, table)
        srv.subscribe(1, req(0, i, TIPC_SUB_SERVICE | TIPC_SUB_CANCEL, timeout=60_000), 0.0, table)
    assert len(srv._timers) < 200  # stale entries are compacted
    srv.subscribe(1, req(0, 0, timeout=1), 0.0, table)
    assert srv.next_deadline() == 0.001
    assert len(srv.expire(61.0)) == 1


# ----------------------------------------------------------------------------- engine: rejection


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_SERVICE), RejectReason.PORTS_AND_SERVICE),
        (req(9, 0), RejectReason.LOWER_ABOVE_UPPER),
        (req(9, 0, order=">"), RejectReason.LOWER_ABOVE_UPPER),
    ],
)
def test_illegal_requests_are_fatal_for_the_connection(
    srv: TopologyService, table: NameTable, data: bytes, reason: RejectReason
) -> None:
    srv.subscribe(1, req(0, 9, TIPC_SUB_PORTS, timeout=100), 0.0, table)
    srv.subscribe(2, req(0, 9, TIPC_SUB_PORTS), 0.0, table)
    with pytest.raises(SubscriptionRejected) as ei:
        srv.subscribe(1, data, 0.0, table)
    assert ei.value.reason is reason and ei.value.fatal and ei.value.conn == 1
    assert "connection 1" in str(ei.value)
    # As the kernel closes the connection, connection 1 lost everything; 2 is untouched.
    assert srv.connections() == [2]
    assert srv.next_deadline() is None
    assert srv.statistics().rejected == 1


def test_short_request_is_ignored_without_closing(srv: TopologyService, table: NameTable) -> None:
    srv.subscribe(1, req(0, 9), 0.0, table)
    with pytest.raises(SubscriptionRejected) as ei:
        srv.subscribe(1, req(0, 9)[:20], 0.0, table)
    assert ei.value.reason is RejectReason.SHORT and not ei.value.fatal and ei.value.conn == 1
    assert len(srv) == 1


def test_at_most_65535_subscriptions_node_wide(srv: TopologyService, table: NameTable) -> None:
    one = req(0, 9, TIPC_SUB_PORTS)
    for i in range(TIPC_MAX_SUBSCR):
        srv.subscribe(i % 7, one, 0.0, table)
    assert len(srv) == TIPC_MAX_SUBSCR
    with pytest.raises(SubscriptionRejected) as ei:
        srv.subscribe(100, one, 0.0, table)
    assert ei.value.reason is RejectReason.LIMIT and ei.value.fatal
    with pytest.raises(SubscriptionRejected):
        srv.subscribe(3, one, 0.0, table)  # fatal: connection 3's share is dropped
    assert len(srv) == TIPC_MAX_SUBSCR - len(range(3, TIPC_MAX_SUBSCR, 7))
    srv.subscribe(100, one, 0.0, table)


@given(st.binary(max_size=40))
@settings(max_examples=300)
def test_engine_fuzz_gives_events_or_rejection(data: bytes) -> None:
    table = NameTable(OWN)
    if len(data) >= SUBSCR_SIZE:  # one binding of the requested type, everywhere
        bind(table, 0, 0xFFFFFFFF, 1, type=decode_subscription(data)[0].type)
    srv = TopologyService()
    try:
        out = srv.subscribe(1, data, 0.0, table)
    except SubscriptionRejected as e:
        assert e.conn == 1 and len(srv) == 0
    else:
        for o in out:
            assert len(o.data) == EVENT_SIZE and o.data[20:] == data[:SUBSCR_SIZE]
            assert decode_event(o.data) == o.event


# ----------------------------------------------------------------------------- properties

RANGES = [(lo, up) for lo in range(5) for up in range(lo, 5)]


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[tuple[str, int, int]], int, tuple[int, int]]:
    """Operations ("add", range index, who) / ("del", pick, 0), a subscribe step, a range."""
    ops = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("add"), st.integers(0, len(RANGES) - 1), st.integers(0, 5)),
                st.tuples(st.just("del"), st.integers(0, 1000), st.just(0)),
            ),
            max_size=40,
        )
    )
    at = draw(st.integers(0, len(ops)))
    lo = draw(st.integers(0, 4))
    return ops, at, (lo, draw(st.integers(lo, 4)))


@given(scripts())
@settings(max_examples=300, deadline=None)
def test_service_events_track_empty_to_nonempty_ranges(
    script: tuple[list[tuple[str, int, int]], int, tuple[int, int]],
) -> None:
    ops, at, (slo, sup) = script
    table = NameTable(OWN)
    srv = TopologyService()
    held: list[Binding] = []
    count: dict[tuple[int, int], int] = {}
    ports_seen: list[tuple[int, int, int, int]] = []
    expected_ports: list[tuple[int, int, int, int]] = []

    def overlaps(rng: tuple[int, int]) -> bool:
        return rng[0] <= sup and rng[1] >= slo

    for step, (op, a, who) in enumerate([*ops, ("end", 0, 0)]):
        if step == at:
            init = srv.subscribe(1, req(slo, sup), 0.0, table)
            live = {r for r, n in count.items() if n and overlaps(r)}
            assert {(o.event.found_lower, o.event.found_upper) for o in init} == live
            assert len(init) == len(live)
            srv.subscribe(2, req(slo, sup, TIPC_SUB_PORTS | TIPC_SUB_NO_STATUS), 0.0, table)
        if op == "add":
            rng = RANGES[a]
            node = (OWN, P1, P2)[who % 3]
            b = Binding(T, *rng, CLUSTER_SCOPE, node, 10 + who, who)
            try:
                ev = table.insert(b)
            except DuplicateBinding:  # the table refused it: nothing changes
                continue
            held.append(b)
            out = srv.binding_added(ev)
            before = count.get(rng, 0)
            count[rng] = before + 1
            kind = EventType.PUBLISHED
            service_expected = before == 0
        elif op == "del" and held:
            b = held.pop(a % len(held))
            out = srv.binding_removed(table.remove(T, b.lower, b.upper, b.node, b.key))
            rng = (b.lower, b.upper)
            count[rng] -= 1
            kind = EventType.WITHDRAWN
            service_expected = count[rng] == 0
        else:
            continue
        # Another type never reaches these subscriptions.
        assert (
            srv.binding_added(table.insert(Binding(T + 1, *rng, CLUSTER_SCOPE, OWN, 1, step))) == []
        )
        subscribed = step >= at
        service = [o for o in out if o.conn == 1]
        want = (
            [(kind, *rng, b.port, b.node)]
            if subscribed and overlaps(rng) and service_expected
            else []
        )
        got = [
            (o.event.kind, o.event.found_lower, o.event.found_upper, o.event.port, o.event.node)
            for o in service
        ]
        assert got == want
        if subscribed and overlaps(rng):
            expected_ports.append((int(kind), *rng, b.port))
        ports_seen += [
            (int(o.event.kind), o.event.found_lower, o.event.found_upper, o.event.port)
            for o in out
            if o.conn == 2
        ]
    assert ports_seen == expected_ports


# ----------------------------------------------------------------------------- contract
# The core's contract (tipcshm.core.contract): frames are (connection id, bytes) pairs.
# Import purity of the module is checked for all of core/ by tests/test_core_purity.py.


def drain(srv: TopologyService) -> list[tuple[int, bytes]]:
    return srv.frames_to_send(0.0)


def test_receive_queues_what_subscribe_returns(table: NameTable) -> None:
    bind(table, 1, 2, 10)
    bind(table, 5, 5, 11, scope=NODE_SCOPE)
    old, new = TopologyService(), TopologyService(table=table)
    r = req(0, 9, TIPC_SUB_PORTS, timeout=1500)
    want = old.subscribe(7, r, 0.0, table)
    assert len(want) == 2
    new.receive((7, r), 0.0)
    assert drain(new) == [(o.conn, o.data) for o in want]
    assert drain(new) == [] and new.next_event() is None
    assert new.next_timer() == old.next_deadline() == 1.5


def test_contract_timeouts(table: NameTable) -> None:
    srv = TopologyService(table=table)
    assert srv.next_timer() is None
    srv.receive((1, req(0, 9, timeout=250)), 10.0)
    srv.receive((2, req(0, 9)), 10.0)
    assert srv.next_timer() == 10.25
    srv.handle_timer(10.2)  # early: nothing happens
    assert drain(srv) == [] and len(srv) == 2
    srv.handle_timer(10.25)
    assert drain(srv) == [(1, evt(3, 0, 9, 0, 0, req(0, 9, timeout=250)))]
    assert srv.next_timer() is None and len(srv) == 1


def test_contract_name_table_changes(table: NameTable) -> None:
    srv = TopologyService(table=table)
    srv.receive((4, req(0, 9)), 0.0)
    srv.notify_added(bind(table, 3, 4, 20, node=P1))
    srv.notify_removed(unbind(table, 3, 4, 20, node=P1))
    assert drain(srv) == [
        (4, evt(1, 3, 4, 20, P1, req(0, 9))),
        (4, evt(2, 3, 4, 20, P1, req(0, 9))),
    ]


def test_contract_short_request_raises_remote_error_and_changes_nothing(
    table: NameTable,
) -> None:
    srv = TopologyService(table=table)
    srv.receive((1, req(0, 9)), 0.0)
    before = srv.subscriptions(1)
    with pytest.raises(RemoteProtocolError) as ei:
        srv.receive((1, req(0, 9)[:27]), 0.0)
    assert isinstance(ei.value, SubscriptionRejected) and not ei.value.fatal
    assert srv.subscriptions(1) == before and drain(srv) == [] and srv.next_event() is None


@pytest.mark.parametrize(
    "request_bytes",
    [req(0, 9, TIPC_SUB_PORTS | TIPC_SUB_SERVICE), req(9, 0)],
)
def test_contract_refused_request_emits_subscriber_rejected(
    table: NameTable, request_bytes: bytes
) -> None:
    srv = TopologyService(table=table)
    srv.receive((1, req(0, 9)), 0.0)
    srv.receive((2, req(0, 9)), 0.0)
    srv.receive((1, request_bytes), 0.0)  # no exception: state changed, owner closes
    ev = srv.next_event()
    assert isinstance(ev, SubscriberRejected) and ev.conn == 1 and ev.reason
    assert srv.next_event() is None
    assert srv.subscriptions(1) == [] and len(srv.subscriptions(2)) == 1


def test_contract_receive_without_a_table_is_the_callers_fault() -> None:
    with pytest.raises(LocalProtocolError):
        TopologyService().receive((1, req(0, 9)), 0.0)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 3), st.binary(max_size=40)),
            st.tuples(
                st.integers(0, 3),
                st.builds(
                    req,
                    st.integers(0, 6),
                    st.integers(0, 6),
                    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 0x81, 0x22, 0x42]),
                    timeout=st.sampled_from([0, 100, FOREVER]),
                ),
            ),
            st.tuples(st.just(-1), st.integers(0, 6)),  # a binding change at lower=n
        ),
        max_size=25,
    )
)
@settings(max_examples=200, deadline=None)
def test_contract_fuzz_only_remote_protocol_error(steps: list[tuple[int, object]]) -> None:
    table = NameTable(OWN)
    srv = TopologyService(table=table, max_subscriptions=8)
    held: list[Binding] = []
    now = 0.0
    for conn, payload in steps:
        now += 0.05
        if conn == -1:
            assert isinstance(payload, int)
            if held and payload % 2:
                b = held.pop()
                srv.notify_removed(table.remove(b.type, b.lower, b.upper, b.node, b.key))
            else:
                b = Binding(T, payload, payload + 1, CLUSTER_SCOPE, P1, 50, int(now * 100))
                srv.notify_added(table.insert(b))
                held.append(b)
        else:
            assert isinstance(payload, bytes)
            subs_before = srv.subscriptions()
            try:
                srv.receive((conn, payload), now)
            except RemoteProtocolError:
                assert len(payload) < SUBSCR_SIZE and srv.subscriptions() == subs_before
        timer = srv.next_timer()
        if timer is not None and timer <= now:
            srv.handle_timer(now)
        while (ev := srv.next_event()) is not None:
            assert isinstance(ev, SubscriberRejected) and srv.subscriptions(ev.conn) == []
        for to, data in drain(srv):
            assert 0 <= to <= 3 and len(data) == EVENT_SIZE
            decode_event(data)
        assert len(srv) <= 8
