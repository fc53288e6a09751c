"""One unicast link endpoint towards one peer node, sans-IO.

Mirrors net/tipc/link.c: the FSM of ``tipc_link_fsm_evt``, the supervision of
``tipc_link_timeout`` (driven by node.c ``tipc_node_timeout``), the send path of
``tipc_link_xmit`` / ``tipc_link_advance_backlog``, the receive path of ``tipc_link_rcv``
/ ``tipc_link_input`` / ``tipc_link_proto_rcv`` with ``tipc_link_validate_msg``, the
release and NACK-driven retransmission of ``tipc_link_advance_transmq`` with
``link_retransmit_failure``, and the protocol messages of ``tipc_link_build_proto_msg``.
The node.c steps a single-link node takes around its link (``__tipc_node_link_up``,
``__tipc_node_link_down``) are done here too, so an owner sees one object.

Theory of operation
-------------------
The link starts in LINK_RESET and sends RESET_MSGs on its timer. A RESET or ACTIVATE
from the peer (``PEER_RESET`` event) moves it to LINK_ESTABLISHING, where it sends
ACTIVATE_MSGs echoing the peer's session; an ACTIVATE received there, or any STATE or
sequenced packet from the peer, brings it up (``ESTABLISH``): it sends a STATE and the
broadcast-init BCAST_PROTOCOL packet (sequenced #1, as a kernel does) and emits
:class:`LinkUp`. Sessions keep stale protocol messages out: ours is random and grows on
every reset, the peer's is learnt from its RESET/ACTIVATE.

Up, every message gets a 16-bit seqno, our ack (``rcv_nxt - 1``) and the bcast ack
(the ``last_bcast`` the peer's bcast-init told us, tipc-wire §13) when it enters the
transmit queue (at most ``window`` packets); the rest waits in one FIFO backlog counted
per importance, where small messages are bundled while the window is full. The receiver
delivers in order, defers out-of-order packets (NACKing at 3, 19, 35 ... deferred) and
acks with a STATE every 16 packets or on the timer. The sender retransmits only what a
NACK (``seq_gap``) names, each packet at most once per millisecond; a head packet still
unacked 10 x tolerance after its first retransmission fails the link.

Supervision: a tick every ``min(tolerance/4, 500 ms)``; each tick on an up link sends a
STATE (a probe when nothing was received or sent since the last tick) and counts a
silent interval; any received packet clears the count. When ``tolerance / tick`` silent
intervals have passed the link fails ("link timeout"). The kernel checks with ``>`` and
therefore waits one tick more; we use ``>=`` so that a silent peer is declared down no
earlier than ``tolerance`` after its last packet and no later than one tick after that.

Losing the link (peer reset, timeout, retransmission failure, caller reset) empties the
queues, emits :class:`LinkDown`, bumps our session and sends a RESET with
``peer_stopping`` set, as ``__tipc_node_link_down`` does for a node's last link.

Fragmentation (``_segment``, seg's ``fragment``) and bundling (``_backlog_add``, seg's
``BundleBuilder``) each plug in at one place; reassembly and unbundling at ``_input``.

The peer's broadcast link is received by a :class:`~tipcshm.core.bcast.BcastRcvLink`
(shared with the owning PeerNode, or the link's own when it stands alone): the link
feeds it the bcast init (and a legacy peer's RESET/ACTIVATE) and the ``last_bcast`` of
the peer's STATEs, stamps its ack into w1 of every packet, and puts ack, ``bc_gap`` and
``bc_ack_invalid`` (clear once the receive link is up) into our STATEs
(``tipc_link_build_proto_msg``); :meth:`Link.send_state` is how the receive link gets a
STATE out.

Not implemented: gap-ACK blocks (we do not advertise TIPC_GAP_ACK_BLOCK, so a kernel sends
none to us; a STATE body is ignored, :mod:`tipcshm.wire.link` can parse it), a broadcast
send link (we never broadcast: our bcast init says last_bcast 0), failover/synch (the FSM
table has their states and events; nothing triggers them), the link monitor record.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from tipcshm.core.bcast import BcastRcvLink
from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import Delivered, LinkCongested, LinkDown, LinkUncongested, LinkUp
from tipcshm.core.reassembly import Reassembler
from tipcshm.wire.bundle import BundleBuilder, bundlable, unbundle_select
from tipcshm.wire.discovery import DEFAULT_CAPS, Capability
from tipcshm.wire.fragment import fragment, fragment_fields
from tipcshm.wire.header import (
    INT_H_SIZE,
    SEQ_MASK,
    LinkMsgType,
    User,
    WireError,
    seq_add,
    seq_less,
    seq_less_eq,
    seq_more,
)
from tipcshm.wire.link import (
    DELIVERED_USERS,
    MAX_BC_GAP,
    MAX_LINK_WIN,
    MAX_SEQ_GAP,
    MIN_LINK_WIN,
    BcastProtoMsg,
    LinkProtoMsg,
    restamp_acks,
    scan,
    send_importance,
    stamped,
)
from tipcshm.wire.names import DISTR_ITEM_SIZE, MAX_PUBL

__all__ = [
    "LINK_STATES",
    "TRANSITIONS",
    "Link",
    "LinkEvent",
    "LinkState",
    "LinkStatistics",
]


class LinkState(IntEnum):
    """Link states, with the kernel's names and values (link.c)."""

    LINK_ESTABLISHED = 0xE
    LINK_ESTABLISHING = 0xE0
    LINK_RESET = 0x100
    LINK_RESETTING = 0x2000
    LINK_PEER_RESET = 0xD0000
    LINK_FAILINGOVER = 0xF00000
    LINK_SYNCHING = 0xC000000


class LinkEvent(IntEnum):
    """FSM events, with the kernel's names and values (link.c)."""

    LINK_ESTABLISH_EVT = 0xEC1AB1E
    LINK_PEER_RESET_EVT = 0x9EED0E
    LINK_FAILURE_EVT = 0xFA110E
    LINK_RESET_EVT = 0x10CA1D0E
    LINK_FAILOVER_BEGIN_EVT = 0xFB9EB
    LINK_FAILOVER_END_EVT = 0xFE9D
    LINK_SYNCH_BEGIN_EVT = 0xC1CCBB
    LINK_SYNCH_END_EVT = 0xC1CCE


S = LinkState
E = LinkEvent

LINK_STATES: Final = tuple(LinkState)

#: (state, event) -> (next state, link goes down). Pairs the kernel accepts without a
#: move are listed with the same state; a pair not listed is an illegal event (the
#: kernel logs it and changes nothing; we count it in ``illegal_fsm_events``).
TRANSITIONS: Final[dict[tuple[LinkState, LinkEvent], tuple[LinkState, bool]]] = {
    (S.LINK_RESETTING, E.LINK_PEER_RESET_EVT): (S.LINK_PEER_RESET, False),
    (S.LINK_RESETTING, E.LINK_RESET_EVT): (S.LINK_RESET, False),
    (S.LINK_RESETTING, E.LINK_FAILURE_EVT): (S.LINK_RESETTING, False),
    (S.LINK_RESET, E.LINK_PEER_RESET_EVT): (S.LINK_ESTABLISHING, False),
    (S.LINK_RESET, E.LINK_FAILOVER_BEGIN_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_RESET, E.LINK_FAILURE_EVT): (S.LINK_RESET, False),
    (S.LINK_RESET, E.LINK_RESET_EVT): (S.LINK_RESET, False),
    (S.LINK_RESET, E.LINK_ESTABLISH_EVT): (S.LINK_RESET, False),
    (S.LINK_PEER_RESET, E.LINK_RESET_EVT): (S.LINK_ESTABLISHING, False),
    (S.LINK_PEER_RESET, E.LINK_PEER_RESET_EVT): (S.LINK_PEER_RESET, False),
    (S.LINK_PEER_RESET, E.LINK_ESTABLISH_EVT): (S.LINK_PEER_RESET, False),
    (S.LINK_PEER_RESET, E.LINK_FAILURE_EVT): (S.LINK_PEER_RESET, False),
    (S.LINK_PEER_RESET, E.LINK_FAILOVER_BEGIN_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_FAILINGOVER, E.LINK_FAILOVER_END_EVT): (S.LINK_RESET, False),
    (S.LINK_FAILINGOVER, E.LINK_PEER_RESET_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_FAILINGOVER, E.LINK_RESET_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_FAILINGOVER, E.LINK_ESTABLISH_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_FAILINGOVER, E.LINK_FAILURE_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_ESTABLISHING, E.LINK_ESTABLISH_EVT): (S.LINK_ESTABLISHED, False),
    (S.LINK_ESTABLISHING, E.LINK_FAILOVER_BEGIN_EVT): (S.LINK_FAILINGOVER, False),
    (S.LINK_ESTABLISHING, E.LINK_RESET_EVT): (S.LINK_RESET, False),
    (S.LINK_ESTABLISHING, E.LINK_FAILURE_EVT): (S.LINK_ESTABLISHING, False),
    (S.LINK_ESTABLISHING, E.LINK_PEER_RESET_EVT): (S.LINK_ESTABLISHING, False),
    (S.LINK_ESTABLISHED, E.LINK_PEER_RESET_EVT): (S.LINK_PEER_RESET, True),
    (S.LINK_ESTABLISHED, E.LINK_FAILURE_EVT): (S.LINK_RESETTING, True),
    (S.LINK_ESTABLISHED, E.LINK_RESET_EVT): (S.LINK_RESET, False),
    (S.LINK_ESTABLISHED, E.LINK_ESTABLISH_EVT): (S.LINK_ESTABLISHED, False),
    (S.LINK_ESTABLISHED, E.LINK_SYNCH_END_EVT): (S.LINK_ESTABLISHED, False),
    (S.LINK_ESTABLISHED, E.LINK_SYNCH_BEGIN_EVT): (S.LINK_SYNCHING, False),
    (S.LINK_SYNCHING, E.LINK_PEER_RESET_EVT): (S.LINK_PEER_RESET, True),
    (S.LINK_SYNCHING, E.LINK_FAILURE_EVT): (S.LINK_RESETTING, True),
    (S.LINK_SYNCHING, E.LINK_RESET_EVT): (S.LINK_RESET, False),
    (S.LINK_SYNCHING, E.LINK_ESTABLISH_EVT): (S.LINK_SYNCHING, False),
    (S.LINK_SYNCHING, E.LINK_SYNCH_BEGIN_EVT): (S.LINK_SYNCHING, False),
    (S.LINK_SYNCHING, E.LINK_SYNCH_END_EVT): (S.LINK_ESTABLISHED, False),
}

_UP_STATES: Final = frozenset({S.LINK_ESTABLISHED, S.LINK_SYNCHING})
# No protocol messages leave a link in these states (tipc_link_is_blocked).
_BLOCKED_STATES: Final = frozenset({S.LINK_RESETTING, S.LINK_PEER_RESET, S.LINK_FAILINGOVER})

# Defaults and limits (tipc-wire §11, §5.4-5.6)
DEFAULT_TOLERANCE_MS: Final = 1500
MIN_TOLERANCE_MS: Final = 50
MAX_TOLERANCE_MS: Final = 30000
MAX_LINK_PRIORITY: Final = 31
MIN_BEARER_MTU: Final = 100  # MAX_H_SIZE + INT_H_SIZE
MAX_TICK_S: Final = 0.5
RETRANSMIT_INTERVAL_S: Final = 0.001
# Once a whole tick passed without a packet from the peer, probe this many times per
# tick instead of once (silence is still counted per tick). Not in the kernel: on a
# lossy path (30 % each way) a single probe per tick lets 4 silent ticks in a row happen
# every few hundred ticks, and each is a link reset that loses the queues.
FAST_PROBES: Final = 4
RETRANSMIT_FAIL_FACTOR: Final = 10  # x tolerance
RESET_BURST: Final = 5  # RESETs on the first ticks after a reset ...
RESET_EVERY: Final = 16  # ... then one every this many ticks
NACK_FIRST: Final = 3  # NACK when the deferred queue holds 3, 19, 35, ...
NACK_EVERY: Final = 16
_SYSTEM: Final = int(User.SYSTEM_IMPORTANCE)
_PROFILE_LIMITS: Final = (64, 256, 1024, 4096, 16384, 32768, 66000)
_PROFILE_BUCKETS: Final = len(_PROFILE_LIMITS)
_LINK_PROTOCOL: Final = int(User.LINK_PROTOCOL)
_BCAST_PROTOCOL: Final = int(User.BCAST_PROTOCOL)
_MSG_BUNDLER: Final = int(User.MSG_BUNDLER)
_MSG_FRAGMENTER: Final = int(User.MSG_FRAGMENTER)
_HALF_SEQ: Final = 0x7FFF


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """The counters ``tipc link statistics show`` prints (link.c ``struct tipc_stats``),
    plus ``dropped`` (frames refused: malformed, old session, not for this link) and
    ``illegal_fsm_events``."""

    name: str
    state: str
    mtu: int
    priority: int
    tolerance_ms: int
    window: int
    rx_packets: int
    rx_fragments: int
    rx_fragmented: int
    rx_bundles: int
    rx_bundled: int
    tx_packets: int
    tx_fragments: int
    tx_fragmented: int
    tx_bundles: int
    tx_bundled: int
    rx_states: int
    rx_probes: int
    rx_naks: int
    rx_defs: int
    rx_dups: int
    tx_states: int
    tx_probes: int
    tx_naks: int
    tx_acks: int
    tx_retrans: int
    link_congs: int
    send_queue_max: int
    send_queue_avg: int
    profile_samples: int
    profile_avg_len: int
    profile: tuple[int, ...]  # % of sampled messages <= 64, 256, 1K, 4K, 16K, 32K, 66000
    dropped: int
    illegal_fsm_events: int


@dataclass(slots=True)
class _Stats:
    rx_packets: int = 0
    rx_fragments: int = 0
    rx_fragmented: int = 0
    rx_bundles: int = 0
    rx_bundled: int = 0
    tx_packets: int = 0
    tx_fragments: int = 0
    tx_fragmented: int = 0
    tx_bundles: int = 0
    tx_bundled: int = 0
    rx_states: int = 0
    rx_probes: int = 0
    rx_naks: int = 0
    rx_defs: int = 0
    rx_dups: int = 0
    tx_states: int = 0
    tx_probes: int = 0
    tx_naks: int = 0
    tx_acks: int = 0
    tx_retrans: int = 0
    link_congs: int = 0
    queue_max: int = 0
    queue_accu: int = 0
    queue_samples: int = 0
    profile_samples: int = 0
    profile_total: int = 0
    profile: list[int] = field(default_factory=lambda: [0] * len(_PROFILE_LIMITS))
    dropped: int = 0
    illegal_fsm_events: int = 0


class _Sent:
    """One packet in the transmit queue, with its retransmission bookkeeping."""

    __slots__ = ("frame", "next_retransmit", "retransmits", "seqno", "first_retransmit")

    def __init__(self, seqno: int, frame: bytes) -> None:
        self.seqno = seqno
        self.frame = frame
        self.next_retransmit = 0.0
        self.retransmits = 0
        self.first_retransmit = 0.0


# What receive() read while checking a sequenced packet: a bundle's inner messages
# (those the link delivers) and how many others it held, a fragment's type, number and
# payload, a bcast-init; None for a packet delivered as it is.
_Parsed = tuple[list[bytes], int] | tuple[int, int, memoryview] | BcastProtoMsg | None


class _Packet:
    """One checked sequenced packet on its way to _input (possibly via the deferred
    queue)."""

    __slots__ = ("data", "parsed", "user")

    def __init__(self, data: bytes, user: int, parsed: _Parsed) -> None:
        self.data = data
        self.user = user
        self.parsed = parsed


class _Waiting:
    """One backlog entry: a message, or a bundle being filled, and its class."""

    __slots__ = ("bundle", "frame", "importance")

    def __init__(self, frame: bytes, importance: int) -> None:
        self.frame = frame
        self.importance = importance
        self.bundle: BundleBuilder | None = None

    def encode(self) -> bytes:
        return self.frame if self.bundle is None else self.bundle.encode()


class Link(Machine[bytes]):
    """A unicast link endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        own_addr: int,
        peer_addr: int,
        own_if: str,
        peer_if: str = "",
        own_id_str: str,
        peer_id_str: str,
        bearer_id: int = 0,
        mtu: int = 1472,
        tolerance_ms: int = DEFAULT_TOLERANCE_MS,
        window: int = 50,
        peer_caps: int = 0,
        own_caps: int = DEFAULT_CAPS,
        rng: random.Random,
        now: float,
        bcast: BcastRcvLink | None = None,
    ) -> None:
        super().__init__()
        # The receive end of the peer's broadcast link: the node's (it outlives a link
        # reset; the node closes it when it goes down), or our own, closed on reset.
        self._owns_bcast = bcast is None
        self._bcast = (
            BcastRcvLink(own_addr=own_addr, peer_addr=peer_addr, net_id=0, peer_caps=peer_caps)
            if bcast is None
            else bcast
        )
        if mtu < MIN_BEARER_MTU or mtu % 4:
            raise LocalProtocolError(f"mtu {mtu}: must be a multiple of 4, >= {MIN_BEARER_MTU}")
        if not MIN_TOLERANCE_MS <= tolerance_ms <= MAX_TOLERANCE_MS:
            raise LocalProtocolError(f"tolerance {tolerance_ms} ms outside 50..30000")
        if not MIN_LINK_WIN <= window <= MAX_LINK_WIN:
            raise LocalProtocolError(f"window {window} outside 16..8191")
        self.own_addr = own_addr
        self.peer_addr = peer_addr
        self.own_if = own_if
        self.peer_if = peer_if
        self._own_id_str = own_id_str
        self._peer_id_str = peer_id_str
        self.bearer_id = bearer_id
        self.advertised_mtu = mtu
        self.mtu = mtu
        self.tolerance_ms = tolerance_ms
        self._configured_tolerance = tolerance_ms
        self.window = window
        self.peer_caps = peer_caps
        self.own_caps = own_caps
        self.priority = 0
        self.peer_bearer_id = 0
        self._rng = rng
        self.state = S.LINK_RESET
        self.session = rng.getrandbits(16)
        self.peer_session = 0
        self.in_session = False
        self._stats = _Stats()
        self._transmq: deque[_Sent] = deque()
        self._backlog: deque[_Waiting] = deque()
        self._backlog_len = [0] * (_SYSTEM + 1)
        self._congested: set[int] = set()
        self._deferred: dict[int, _Packet] = {}
        # Per importance, the backlog entry new small messages are bundled into
        # (the kernel's backlog[imp].target_bskb).
        self._target: list[_Waiting | None] = [None] * (_SYSTEM + 1)
        self._reasm = Reassembler()
        self._reset_sequence()
        self._set_limits()
        self._next_tick: float | None = now
        self._next_probe: float | None = None

    # -- identity ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        peer_if = self.peer_if or "unknown"
        return f"{self._own_id_str}:{self.own_if}-{self._peer_id_str}:{peer_if}"

    @property
    def is_up(self) -> bool:
        return self.state in _UP_STATES

    @property
    def mss(self) -> int:
        """Largest packet the link builds (tipc_link_mss: room for a tunnel header)."""
        return self.mtu - INT_H_SIZE

    @property
    def tick(self) -> float:
        return min(self.tolerance_ms / 4000.0, MAX_TICK_S)

    @property
    def abort_limit(self) -> int:
        return max(1, int(self.tolerance_ms / (self.tick * 1000.0) + 1e-9))

    # -- the contract ------------------------------------------------------------------

    def next_timer(self) -> float | None:
        if self._next_probe is not None and self._next_tick is not None:
            return min(self._next_tick, self._next_probe)
        return self._next_tick

    def handle_timer(self, now: float) -> None:
        if self._next_tick is None:
            return
        if now >= self._next_tick:
            self._next_tick = now + self.tick
            self._next_probe = None
            self._timeout(now)
            if self.is_up and self._silent > 1:
                self._next_probe = now + self.tick / FAST_PROBES
        elif self._next_probe is not None and now >= self._next_probe:
            self._next_probe = now + self.tick / FAST_PROBES
            if not self.is_up or self._silent <= 1:
                self._next_probe = None
                return
            self._proto_msg(LinkMsgType.STATE_MSG, probe=True)

    def receive(self, frame: bytes | memoryview, now: float) -> None:
        # Every check happens here, before any state changes, and only once: what the
        # checks read (a bundle's inner messages, a fragment's fields) travels with
        # the packet, through the deferred queue if need be, to _input.
        try:
            user, size, non_seq, seqno, ack, prev_node = scan(frame)
            if user == _LINK_PROTOCOL:
                proto = LinkProtoMsg.decode(frame)
            elif non_seq or prev_node != self.peer_addr:
                pass
            else:
                data = bytes(frame[:size])
                parsed: _Parsed = None
                if user == _MSG_BUNDLER:
                    parsed = unbundle_select(data, DELIVERED_USERS)
                elif user == _MSG_FRAGMENTER:
                    parsed = fragment_fields(data)
                elif user == _BCAST_PROTOCOL:
                    parsed = BcastProtoMsg.decode(data)
        except WireError as exc:
            raise RemoteProtocolError(f"link {self.name}: {exc}") from None
        if prev_node != self.peer_addr:
            self._stats.dropped += 1
            return
        if user == _LINK_PROTOCOL:
            self._proto_rcv(proto, now)
        elif non_seq:
            # Broadcast-link packets: tipcshm has no bcast receive link (tipc-wire §13).
            self._stats.dropped += 1
        else:
            self._data_rcv(_Packet(data, user, parsed), seqno, ack, now)

    def send(self, msg: bytes, now: float) -> None:
        if self.state not in _UP_STATES:
            raise LocalProtocolError(f"link {self.name} is not up")
        try:
            imp = send_importance(msg)
        except WireError as exc:
            raise LocalProtocolError(f"not a TIPC message: {exc}") from None
        if imp in self._congested:  # only importances below SYSTEM get there
            raise LocalProtocolError(f"link {self.name} congested at importance {imp}")
        if imp == _SYSTEM and self._backlog_len[imp] >= self._limits[imp]:
            self._link_down(now, "link overflow")
            return
        size = len(msg)
        if size <= self.mtu - INT_H_SIZE:
            # One packet, tipc_link_xmit's common case, inlined (this runs per message):
            # into the window, else into the importance's open bundle (the first branch
            # of _backlog_add, which leaves the backlog and its counts as they are),
            # else into the backlog.
            st = self._stats
            st.profile_samples += 1  # _profile, inlined
            st.profile_total += size
            i = bisect_left(_PROFILE_LIMITS, size)  # the first limit >= size
            if i < _PROFILE_BUCKETS:
                st.profile[i] += 1
            backlog = self._backlog
            if not backlog and len(self._transmq) < self.window:
                self._transmit(msg)
            else:
                target = self._target[imp]
                if (
                    target is not None
                    and target.bundle is not None
                    and backlog[-1] is target
                    and target.bundle.try_add(msg)
                ):
                    st.tx_bundled += 1
                    return
                self._backlog_add(msg, imp, True)
        else:
            self._xmit(self._segment(msg), imp, now)
        if imp < _SYSTEM and self._backlog_len[imp] >= self._limits[imp]:
            self._congested.add(imp)
            self._stats.link_congs += 1
            self._emit(LinkCongested(self.peer_addr, imp))

    def congested(self, importance: int) -> bool:
        return importance in self._congested

    def send_state(self, now: float) -> None:
        """Send a STATE now (tipc_link_build_state_msg): the broadcast receive link
        wants its ack or NACK out. Nothing while the link is not up."""
        self._proto_msg(LinkMsgType.STATE_MSG)

    @property
    def bcast(self) -> BcastRcvLink:
        """The receive end of the peer's broadcast link this link acks for."""
        return self._bcast

    def reset(self, now: float, reason: str = "reset by caller") -> None:
        if self.is_up:
            self._fsm(E.LINK_FAILURE_EVT)
            self._link_down(now, reason)
        else:
            self._fsm(E.LINK_RESET_EVT)
            self._reset_link()

    def queue_sizes(self) -> dict[str, int]:
        sizes = {"transmq": len(self._transmq), "deferdq": len(self._deferred)}
        sizes["backlog"] = len(self._backlog)
        for imp, n in enumerate(self._backlog_len):
            sizes[f"backlog{imp}"] = n
        return sizes

    def statistics(self) -> LinkStatistics:
        st = self._stats
        samples = st.profile_samples
        return LinkStatistics(
            name=self.name,
            state=self.state.name,
            mtu=self.mtu,
            priority=self.priority,
            tolerance_ms=self.tolerance_ms,
            window=self.window,
            rx_packets=st.rx_packets,
            rx_fragments=st.rx_fragments,
            rx_fragmented=st.rx_fragmented,
            rx_bundles=st.rx_bundles,
            rx_bundled=st.rx_bundled,
            tx_packets=st.tx_packets,
            tx_fragments=st.tx_fragments,
            tx_fragmented=st.tx_fragmented,
            tx_bundles=st.tx_bundles,
            tx_bundled=st.tx_bundled,
            rx_states=st.rx_states,
            rx_probes=st.rx_probes,
            rx_naks=st.rx_naks,
            rx_defs=st.rx_defs,
            rx_dups=st.rx_dups,
            tx_states=st.tx_states,
            tx_probes=st.tx_probes,
            tx_naks=st.tx_naks,
            tx_acks=st.tx_acks,
            tx_retrans=st.tx_retrans,
            link_congs=st.link_congs,
            send_queue_max=st.queue_max,
            send_queue_avg=st.queue_accu // st.queue_samples if st.queue_samples else 0,
            profile_samples=samples,
            profile_avg_len=st.profile_total // samples if samples else 0,
            profile=tuple(100 * n // samples if samples else 0 for n in st.profile),
            dropped=st.dropped,
            illegal_fsm_events=st.illegal_fsm_events,
        )

    # -- FSM ---------------------------------------------------------------------------

    def _fsm(self, evt: LinkEvent) -> bool:
        """Apply ``evt``; True if the link just went down."""
        move = TRANSITIONS.get((self.state, evt))
        if move is None:
            self._stats.illegal_fsm_events += 1
            return False
        self.state, down = move
        return down

    # -- setup, teardown ---------------------------------------------------------------

    def _reset_sequence(self) -> None:
        self.snd_nxt = 1
        self.rcv_nxt = 1
        self._snd_nxt_state = 1
        self._rcv_nxt_state = 1
        self._rcv_unacked = 0
        self._silent = 0
        self._reset_ticks = 0
        self._checkpoint = 1

    def _set_limits(self) -> None:
        """tipc_link_set_queue_limits: backlog limits per importance."""
        w = self.window
        max_bulk = MAX_PUBL // max(1, self.mtu // DISTR_ITEM_SIZE)
        self._limits = [2 * w, 4 * w, 6 * w, 8 * w, max_bulk]

    def _reset_link(self) -> None:
        """tipc_link_reset: forget the peer's session and every queue."""
        self.in_session = False
        self.peer_session = seq_add(self.peer_session, -1)
        self.session = seq_add(self.session, 1)
        self.mtu = self.advertised_mtu
        self._transmq.clear()
        self._backlog.clear()
        self._backlog_len = [0] * (_SYSTEM + 1)
        self._target = [None] * (_SYSTEM + 1)
        self._deferred.clear()
        self._reassembly_reset()
        self._reset_sequence()
        if self._owns_bcast:
            self._bcast.close()
        self._stats = _Stats(dropped=self._stats.dropped)
        self._set_limits()
        if self._congested:
            self._congested.clear()
            self._emit(LinkUncongested(self.peer_addr))

    def _link_up(self, now: float) -> None:
        """__tipc_node_link_up for a node's only link."""
        self._fsm(E.LINK_ESTABLISH_EVT)
        if not self.is_up:
            return
        self._silent = 0
        self._set_limits()
        self._emit(LinkUp(self.peer_addr, self.name, self.mtu))
        self._proto_msg(LinkMsgType.STATE_MSG)
        # tipc_bcast_add_peer: the bcast-init tells the peer where our bcast link starts
        # (we never send on it: last_bcast 0) and is sequenced packet #1.
        init = BcastProtoMsg(
            bcast_ack=self._bcast.ack,
            bc_ack_invalid=True,
            prev_node=self.own_addr,
            orig_node=self.own_addr,
            dest_node=self.peer_addr,
        )
        self._xmit([init.encode()], _SYSTEM, now)

    def _link_down(self, now: float, reason: str) -> None:
        """__tipc_node_link_down for a node's only link: report, reset, tell the peer."""
        name = self.name
        self._fsm(E.LINK_RESET_EVT)
        self._reset_link()
        self._emit(LinkDown(self.peer_addr, name, reason))
        self._proto_msg(LinkMsgType.RESET_MSG, peer_stopping=True)

    # -- timer -------------------------------------------------------------------------

    def _timeout(self, now: float) -> None:
        """tipc_link_timeout."""
        state = self.state
        if state in _UP_STATES:
            if self._silent >= self.abort_limit:
                self._fsm(E.LINK_FAILURE_EVT)
                self._link_down(now, "link timeout")
                return
            want_state = bool(self._rcv_unacked or self._transmq or self._bcast.rcv_unacked)
            probe = bool(self._silent or self._deferred)
            if self.snd_nxt == self._checkpoint:
                probe = True
            self._silent += 1
            self._checkpoint = self.snd_nxt
            if want_state or probe:
                self._proto_msg(LinkMsgType.STATE_MSG, probe=probe)
            self._sample_queue()
        elif state == S.LINK_RESET:
            setup = self._reset_ticks < RESET_BURST
            self._reset_ticks += 1
            if setup or self._reset_ticks % RESET_EVERY == 0:
                self._proto_msg(LinkMsgType.RESET_MSG)
        elif state == S.LINK_ESTABLISHING:
            self._proto_msg(LinkMsgType.ACTIVATE_MSG)

    def _sample_queue(self) -> None:
        st = self._stats
        n = len(self._transmq) + len(self._backlog)
        st.queue_max = max(st.queue_max, n)
        st.queue_accu += n
        st.queue_samples += 1

    # -- protocol messages -------------------------------------------------------------

    def _proto_msg(
        self,
        mtype: LinkMsgType,
        *,
        probe: bool = False,
        probe_reply: bool = False,
        rcvgap: int = 0,
        peer_stopping: bool = False,
    ) -> None:
        """tipc_link_build_proto_msg."""
        if self.state in _BLOCKED_STATES:
            return
        if mtype == LinkMsgType.STATE_MSG and not self.is_up:
            return
        if (probe or probe_reply) and self._deferred:
            rcvgap = (self._first_deferred() - self.rcv_nxt) & SEQ_MASK
        common = {
            "prev_node": self.own_addr,
            "orig_node": self.own_addr,
            "dest_node": self.peer_addr,
            "ack": seq_add(self.rcv_nxt, -1),
            "next_sent": self.snd_nxt,
            "last_bcast": 0,
            "session": self.session,
            "bearer_id": self.bearer_id,
            "bc_ack_invalid": True,
        }
        if mtype == LinkMsgType.STATE_MSG:
            seqno = self._snd_nxt_state if self.peer_caps & Capability.LINK_PROTO_SEQNO else None
            if seqno is not None:
                self._snd_nxt_state = seq_add(seqno, 1)
            else:
                seqno = seq_add(self.snd_nxt, _HALF_SEQ)
            # Our broadcast receive state: ack, gap, and whether the ack is valid yet.
            bc = self._bcast
            bc_up = bc.is_up
            bc_gap = min(bc.gap, MAX_BC_GAP) if bc_up else 0
            common["bc_ack_invalid"] = not bc_up
            msg = LinkProtoMsg(
                mtype=mtype,
                seqno=seqno,
                seq_gap=min(rcvgap, MAX_SEQ_GAP),
                bcast_ack=bc.ack,
                bc_gap=bc_gap,
                redundant_link=bc_up,
                probe=probe,
                keepalive=probe or probe_reply,
                **common,  # type: ignore[arg-type]
            )
            if bc_up:
                bc.state_sent(bc_gap)
            self._stats.tx_states += 1
            self._rcv_unacked = 0
            if rcvgap:
                self._stats.tx_naks += 1
            elif not probe:
                self._stats.tx_acks += 1
        else:
            extra: dict[str, int] = {"bcast_ack": self._bcast.ack}
            if mtype == LinkMsgType.ACTIVATE_MSG:
                extra = LinkProtoMsg.activate_fields(self.peer_session)
            tolerance = 0
            if self.tolerance_ms != DEFAULT_TOLERANCE_MS:
                tolerance = self.tolerance_ms
            msg = LinkProtoMsg(
                mtype=mtype,
                seqno=seq_add(self.snd_nxt, _HALF_SEQ),
                max_pkt=self.advertised_mtu,
                tolerance=tolerance,
                peer_stopping=peer_stopping,
                body=LinkProtoMsg.if_name_body(self.own_if),
                **extra,  # type: ignore[arg-type]
                **common,  # type: ignore[arg-type]
            )
        if probe:
            self._stats.tx_probes += 1
        self._outbox.append(msg.encode())

    def _proto_rcv(self, msg: LinkProtoMsg, now: float) -> None:
        """tipc_link_proto_rcv, after tipc_link_validate_msg."""
        if self.state in _BLOCKED_STATES:
            self._stats.dropped += 1
            return
        if not self._validate(msg):
            self._stats.dropped += 1
            return
        mtype = msg.mtype
        if mtype in (LinkMsgType.RESET_MSG, LinkMsgType.ACTIVATE_MSG):
            self._reset_or_activate_rcv(msg, now)
            return
        # STATE_MSG
        self._rcv_nxt_state = seq_add(msg.seqno, 1)
        self._stats.rx_states += 1
        if msg.probe:
            self._stats.rx_probes += 1
        self._silent = 0
        if MIN_TOLERANCE_MS <= msg.tolerance <= MAX_TOLERANCE_MS:
            self.tolerance_ms = msg.tolerance
        if 1 <= msg.priority <= MAX_LINK_PRIORITY and msg.priority != self.priority:
            self.priority = msg.priority
            if self.is_up:
                self._fsm(E.LINK_FAILURE_EVT)
                self._link_down(now, "priority change")
                return
        if not self.is_up:
            if self.state == S.LINK_ESTABLISHING:
                self._link_up(now)
            return
        if msg.seq_gap:
            self._stats.rx_naks += 1
        # tipc_node_bc_sync_rcv: the peer's last_bcast shows what we miss of its
        # broadcasts; a STATE then carries our bc_gap (a probe gets one anyway).
        bc_state = False
        if not msg.bc_ack_invalid:
            self._bcast.sync_rcv(msg.last_bcast, msg.ack)
            bc_state = self._bcast.take_state_request()
        rcvgap = 0
        if (
            (msg.probe or msg.keepalive)
            and seq_more(msg.next_sent, self.rcv_nxt)
            and not self._deferred
        ):
            rcvgap = (msg.next_sent - self.rcv_nxt) & SEQ_MASK
        if rcvgap or msg.probe or bc_state:
            self._proto_msg(LinkMsgType.STATE_MSG, probe_reply=msg.probe, rcvgap=rcvgap)
        self._advance_transmq(msg.ack, msg.seq_gap, now)

    def _validate(self, msg: LinkProtoMsg) -> bool:
        """tipc_link_validate_msg: sessions keep old protocol messages out."""
        mtype = msg.mtype
        if mtype == LinkMsgType.RESET_MSG:
            return not self.in_session or seq_more(msg.session, self.peer_session)
        if mtype == LinkMsgType.ACTIVATE_MSG:
            return not self.in_session or not seq_less(msg.session, self.peer_session)
        if mtype == LinkMsgType.STATE_MSG:
            if not self.in_session or msg.session != self.peer_session:
                return False
            if not self.is_up and msg.ack:
                return False
            # A peer numbers its STATEs only when the capabilities it saw from us (ours)
            # include LINK_PROTO_SEQNO; otherwise their seqno is snd_nxt + 32767, which
            # repeats. Checking by the peer's bit (what a kernel does, where both ends have
            # the same bits) rejected every STATE of a kernel after the first, and the
            # link timed out (found against Linux 6.1 with tools/interop/link_check.py).
            if not self.own_caps & Capability.LINK_PROTO_SEQNO:
                return True
            return not seq_less(msg.seqno, self._rcv_nxt_state)
        return False

    def _reset_or_activate_rcv(self, msg: LinkProtoMsg, now: float) -> None:
        if msg.max_pkt < MIN_BEARER_MTU or len(msg.body) < len(LinkProtoMsg.if_name_body("")):
            self._stats.dropped += 1
            return
        self.peer_if = msg.if_name
        # tipc_bcast_sync_rcv for RESET/ACTIVATE: a legacy peer's broadcast start point.
        self._bcast.legacy_init(msg.mtype, msg.last_bcast, msg.redundant_link)
        if MIN_TOLERANCE_MS <= msg.tolerance <= MAX_TOLERANCE_MS:
            self.tolerance_ms = msg.tolerance
        if self.priority < msg.priority <= MAX_LINK_PRIORITY:
            self.priority = msg.priority
        if msg.peer_stopping:
            # The peer went down: a full re-establishment, not a quick re-synch.
            if self._fsm(E.LINK_FAILURE_EVT):
                self._link_down(now, "peer stopping")
            return
        is_activate = msg.mtype == LinkMsgType.ACTIVATE_MSG
        if is_activate and msg.dest_session_valid and msg.dest_session != self.session:
            # The peer answers a session of ours it saw before a restart: make ours newer.
            if seq_less(self.session, msg.dest_session):
                self.session = seq_add(msg.dest_session, 1)
            return
        went_down = False
        was = self.state
        if not is_activate or not self.is_up:
            went_down = self._fsm(E.LINK_PEER_RESET_EVT)
        if went_down:
            # __tipc_node_link_down: our RESET_EVT moves PEER_RESET -> ESTABLISHING.
            name = self.name
            self._fsm(E.LINK_RESET_EVT)
            self._reset_link()
            self._emit(LinkDown(self.peer_addr, name, "peer reset"))
        # Stored after any reset (the kernel stores it before tipc_link_reset forgets it
        # again and then needs one more RESET from the peer to re-learn it).
        self.peer_session = msg.session
        self.in_session = True
        self.peer_bearer_id = msg.bearer_id
        if self.mtu > msg.max_pkt:
            self.mtu = msg.max_pkt & ~3
        if went_down or (not is_activate and was == S.LINK_RESET):
            # Answer at once rather than on the next tick (the captures show the
            # kernel's ACTIVATE ~10 ms after the RESET, well before its timer).
            self._proto_msg(LinkMsgType.ACTIVATE_MSG)
        elif is_activate and self.state == S.LINK_ESTABLISHING:
            self._link_up(now)

    # -- receive path ------------------------------------------------------------------

    def _data_rcv(self, pkt: _Packet, seqno: int, ack: int, now: float) -> None:
        """tipc_link_rcv for a sequenced packet that is not LINK_PROTOCOL."""
        if self.state not in _UP_STATES:
            if self.state == S.LINK_ESTABLISHING:
                # Proof that the peer is up; the packet itself is dropped (it will be
                # retransmitted on the peer's NACK-driven path).
                self._link_up(now)
            self._stats.dropped += 1
            return
        self._silent = 0
        rcv_nxt = self.rcv_nxt
        if seqno != rcv_nxt and (
            seq_less(seqno, rcv_nxt) or seq_more(seqno, seq_add(rcv_nxt, MAX_LINK_WIN))
        ):
            self._stats.rx_dups += 1
            return
        self._advance_transmq(ack, 0, now)
        if self.state not in _UP_STATES:
            return
        if seqno != rcv_nxt:
            if seqno in self._deferred:
                self._stats.rx_dups += 1
            else:
                self._deferred[seqno] = pkt
            self._build_nack()
            return
        stats = self._stats
        deferred = self._deferred
        while True:
            rcv_nxt = self.rcv_nxt = seq_add(rcv_nxt, 1)
            stats.rx_packets += 1
            if pkt.user in DELIVERED_USERS:
                # tipc_data_input's common case, inlined: delivering changes no state.
                self._events.append(Delivered(self.peer_addr, pkt.data))
            else:
                self._input(pkt, now)
                if self.state not in _UP_STATES:
                    return
                stats = self._stats  # a reset replaces the counters
            self._rcv_unacked += 1
            if self._rcv_unacked >= MIN_LINK_WIN:
                self._proto_msg(LinkMsgType.STATE_MSG)
            if not deferred:
                return
            nxt = deferred.pop(rcv_nxt, None)
            if nxt is None:
                return
            pkt = nxt

    def _first_deferred(self) -> int:
        base = self.rcv_nxt
        return min(self._deferred, key=lambda s: (s - base) & SEQ_MASK)

    def _build_nack(self) -> None:
        """tipc_link_build_nack_msg: NACK when the deferred queue holds 3, 19, 35, ..."""
        self._stats.rx_defs += 1
        n = len(self._deferred)
        if n >= NACK_FIRST and (n - NACK_FIRST) % NACK_EVERY == 0:
            gap = (self._first_deferred() - self.rcv_nxt) & SEQ_MASK
            self._proto_msg(LinkMsgType.STATE_MSG, rcvgap=gap)

    def _input(self, pkt: _Packet, now: float) -> None:
        """tipc_link_input / tipc_data_input: deliver, unbundle, reassemble."""
        user = pkt.user
        if user in DELIVERED_USERS:
            self._events.append(Delivered(self.peer_addr, pkt.data))
        elif user == _MSG_BUNDLER:
            self._unbundle(pkt.parsed)  # type: ignore[arg-type]
        elif user == _MSG_FRAGMENTER:
            self._reassemble(pkt.parsed, now)  # type: ignore[arg-type]
        elif user == _BCAST_PROTOCOL:
            init: BcastProtoMsg = pkt.parsed  # type: ignore[assignment]
            # tipc_link_bc_init_rcv: where the peer's bcast link starts; we ack exactly
            # that point forever (we have no bcast receive link, tipc-wire §13).
            self._bcast.init_rcv(init.last_bcast)
        else:
            self._stats.dropped += 1

    def _unbundle(self, split: tuple[list[bytes], int]) -> None:
        """tipc_msg_extract: every inner message goes the way a packet would (the
        users other than data, CONN_MANAGER, GROUP_PROTOCOL and NAME_DISTRIBUTOR are
        dropped; receive() split and checked the bundle already)."""
        msgs, others = split
        stats = self._stats
        stats.rx_bundles += 1
        stats.rx_bundled += len(msgs) + others
        stats.dropped += others
        peer = self.peer_addr
        self._events.extend([Delivered(peer, m) for m in msgs])

    def _reassemble(self, fields: tuple[int, int, memoryview], now: float) -> None:
        """tipc_buf_append; a fragment that cannot belong fails the link, as
        tipc_link_input does."""
        self._stats.rx_fragments += 1
        try:
            msg = self._reasm.push_fields(*fields)
        except RemoteProtocolError:
            self._fsm(E.LINK_FAILURE_EVT)
            self._link_down(now, "reassembly failure")
            return
        if msg is not None:
            self._stats.rx_fragmented += 1
            # tipc_data_input: a reassembled message is delivered if it is data, else
            # dropped (a bundle or protocol packet is never fragmented by a kernel).
            if scan(msg)[0] in DELIVERED_USERS:
                self._events.append(Delivered(self.peer_addr, msg))
            else:
                self._stats.dropped += 1

    def _reassembly_reset(self) -> None:
        self._reasm.reset()

    def _segment(self, msg: bytes) -> list[bytes]:
        """tipc_msg_build: fragments of at most mss bytes when the message is bigger."""
        mss = self.mss
        if len(msg) <= mss:
            return [msg]
        try:
            return fragment(msg, mss, own_addr=self.own_addr, dest_addr=self.peer_addr)
        except ValueError as exc:
            raise LocalProtocolError(f"cannot fragment for link {self.name}: {exc}") from None

    # -- send path ---------------------------------------------------------------------

    def _xmit(self, packets: list[bytes], imp: int, now: float) -> None:
        """tipc_link_xmit: stamp what fits in the window, queue the rest."""
        if len(packets) > 1:
            self._stats.tx_fragmented += 1
            self._stats.tx_fragments += len(packets)
        for pkt in packets:
            self._profile(len(pkt))
            if len(self._transmq) < self.window and not self._backlog:
                self._transmit(pkt)
            else:
                self._backlog_add(pkt, imp, len(packets) == 1)

    def _transmit(self, pkt: bytes) -> None:
        seqno = self.snd_nxt
        frame = stamped(pkt, seqno, seq_add(self.rcv_nxt, -1), self._bcast.ack)
        self._transmq.append(_Sent(seqno, frame))
        self._outbox.append(frame)
        self._rcv_unacked = 0
        self._stats.tx_packets += 1
        self.snd_nxt = seq_add(seqno, 1)

    def _backlog_add(self, pkt: bytes, imp: int, single: bool) -> None:
        """tipc_msg_try_bundle: a small message joins the importance's open bundle (the
        first one waiting becomes it) if that is the newest entry; else it queues."""
        stats = self._stats
        target = self._target[imp]
        # Only into the newest entry: the kernel also bundles into an older one of the
        # same importance, which overtakes other importances queued in between; we keep
        # the link's single order.
        if single and target is not None and self._backlog and self._backlog[-1] is target:
            if target.bundle is None:
                try:
                    bundle = BundleBuilder(
                        target.frame,
                        own_addr=self.own_addr,
                        dest_addr=self.peer_addr,
                        max_size=self.mss,
                    )
                except ValueError:
                    bundle = None
                if bundle is not None and bundle.try_add(pkt):
                    target.bundle = bundle
                    stats.tx_bundles += 1
                    stats.tx_bundled += 2
                    return
            elif target.bundle.try_add(pkt):
                stats.tx_bundled += 1
                return
        entry = _Waiting(pkt, imp)
        self._backlog.append(entry)
        self._backlog_len[imp] += 1
        self._target[imp] = entry if single and bundlable(pkt, self.mss) else None

    def _advance_backlog(self) -> None:
        """tipc_link_advance_backlog: move waiting packets into the freed window."""
        while self._backlog and len(self._transmq) < self.window:
            entry = self._backlog.popleft()
            self._backlog_len[entry.importance] -= 1
            if self._target[entry.importance] is entry:
                self._target[entry.importance] = None
            self._transmit(entry.encode())
        if self._congested:
            still = {i for i in self._congested if self._backlog_len[i] >= self._limits[i]}
            if not still:
                self._congested.clear()
                self._emit(LinkUncongested(self.peer_addr))
            else:
                self._congested = still

    def _advance_transmq(self, ack: int, gap: int, now: float) -> None:
        """tipc_link_advance_transmq: release what ``ack`` covers, retransmit the ``gap``
        packets after it (each at most once per millisecond)."""
        q = self._transmq
        released = 0
        while q and seq_less_eq(q[0].seqno, ack) and seq_less(q[0].seqno, self.snd_nxt):
            q.popleft()
            released += 1
        if gap:
            last = seq_add(ack, gap)
            for entry in q:
                if not seq_less_eq(entry.seqno, last):
                    break
                if entry.seqno == seq_add(ack, 1) and self._retransmit_failure(now):
                    return
                if now < entry.next_retransmit:
                    continue
                entry.next_retransmit = now + RETRANSMIT_INTERVAL_S
                self._outbox.append(
                    restamp_acks(entry.frame, seq_add(self.rcv_nxt, -1), self._bcast.ack)
                )
                self._stats.tx_retrans += 1
                self._rcv_unacked = 0
                if entry.retransmits == 0:
                    entry.first_retransmit = now
                entry.retransmits += 1
        if released:
            self._advance_backlog()

    def _retransmit_failure(self, now: float) -> bool:
        """link_retransmit_failure: the head packet has been retransmitted for longer
        than 10 x tolerance."""
        head = self._transmq[0]
        if not head.retransmits:
            return False
        if now <= head.first_retransmit + RETRANSMIT_FAIL_FACTOR * self.tolerance_ms / 1000.0:
            return False
        self._fsm(E.LINK_FAILURE_EVT)
        self._link_down(now, "retransmission failure")
        return True

    def _profile(self, size: int) -> None:
        st = self._stats
        st.profile_samples += 1
        st.profile_total += size
        i = bisect_left(_PROFILE_LIMITS, size)  # the first limit >= size
        if i < _PROFILE_BUCKETS:
            st.profile[i] += 1
