"""The receive end of a peer's broadcast link, sans-IO.

Mirrors the receive half of net/tipc/bcast.c and the ``tipc_link_bc_*`` functions of
net/tipc/link.c (a per-peer ``bc_rcvlink`` in the kernel's node.c ``bc_entry``):
``tipc_link_bc_init_rcv`` (where the peer's broadcast sequence starts),
``tipc_bcast_rcv`` / ``tipc_link_rcv`` on a broadcast receive link (in-order delivery,
deferral, duplicates), ``tipc_link_bc_sync_rcv`` (the peer's ``last_bcast`` in its STATE
messages reveals a tail we missed) and the broadcast branches of
``tipc_link_build_state_msg`` / ``tipc_link_build_nack_msg`` (when a STATE carrying our
broadcast ack and ``bc_gap`` is due). No kernel code is copied.

Theory of operation
-------------------
A peer node that multicasts to several nodes sends each packet once on its broadcast
link: non-sequenced (w0 bit 20), w5 overwritten with the cluster id, seqnos from the
peer's own broadcast sequence, bundles and fragments as on a unicast link. Nothing on
this link travels back: acks and NACKs ride on our unicast link to that peer.

* Opening: the peer's unicast link sends a BCAST_PROTOCOL "bcast init" as its first
  sequenced packet; its ``last_bcast`` sets ``rcv_nxt = last_bcast + 1`` and opens the
  link (:meth:`init_rcv`). A peer without TIPC_BCAST_SYNCH is legacy: its RESET/ACTIVATE
  carries the start point (:meth:`legacy_init`) and the first NAME_DISTRIBUTOR message on
  the unicast link opens the link (:meth:`establish`).
* Receiving (:meth:`receive`): a packet whose w5 is not our cluster id, or that arrives
  while the link is closed, is dropped; seqnos below ``rcv_nxt`` or beyond
  ``rcv_nxt + 8191`` are duplicates; out-of-order packets wait in a deferred queue; in
  order, each is delivered as :class:`~tipcshm.core.events.Delivered` (bundles opened,
  fragments joined) just as the unicast link delivers.
* Acking: our broadcast ack is ``rcv_nxt - 1`` (:attr:`ack`). The unicast link stamps it
  into w1 of every packet it sends and puts it, with ``bc_gap`` (:attr:`gap`) and
  ``bc_ack_invalid`` cleared (:attr:`is_up`), into its STATE messages. A STATE is asked
  for (:meth:`take_state_request`) every 16 in-order packets (staggered by our address,
  as the kernel does so that the receivers of one broadcast do not all ack at once), when
  the deferred count matches our address modulo 16, and when a STATE of the peer shows
  packets we never saw (:meth:`sync_rcv`). The unicast link's timer also sends a STATE
  while broadcast packets are unacked (:attr:`rcv_unacked`).
* NACKs go in STATE ``bc_gap``: a kernel sender reads ``bc_gap`` from every STATE whose
  ``bc_ack_invalid`` is clear (``tipc_bcast_sync_rcv`` -> ``tipc_link_bc_ack_rcv``),
  whatever capabilities we advertise, so the legacy BCAST_PROTOCOL NACK (only for senders
  without TIPC_BCAST_STATE_NACK, i.e. kernels older than 4.8) is not sent. Legacy NACKs of
  other nodes reaching us are counted and dropped: we have no broadcast send link.
* Closing: the owner closes the link when the peer node goes down (:meth:`close`); the
  next bcast init opens it again.
* A fragment that cannot belong to the open reassembly fails the peer's links, as the
  kernel's ``tipc_link_input`` does on any link (:meth:`take_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tipcshm.core.contract import Machine
from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import Delivered
from tipcshm.core.reassembly import Reassembler
from tipcshm.wire.bundle import unbundle_select
from tipcshm.wire.discovery import Capability
from tipcshm.wire.fragment import fragment_fields
from tipcshm.wire.header import (
    SEQ_MASK,
    LinkMsgType,
    User,
    WireError,
    seq_add,
    seq_less,
    seq_more,
)
from tipcshm.wire.link import DELIVERED_USERS, MAX_LINK_WIN, MIN_LINK_WIN, scan

__all__ = ["BC_RCV_WINDOW", "BcastRcvLink", "BcastRcvStatistics"]

#: The peer's broadcast window the sync check allows for (the kernel's bcast send link
#: window, BCLINK_WIN_DEFAULT; the receive link takes its window from it).
BC_RCV_WINDOW: Final = 50
_NIBBLE: Final = 0xF
_MC_NETID_OFFSET: Final = 20  # w5: the cluster id on the broadcast link
_MSG_BUNDLER: Final = int(User.MSG_BUNDLER)
_MSG_FRAGMENTER: Final = int(User.MSG_FRAGMENTER)
_BCAST_PROTOCOL: Final = int(User.BCAST_PROTOCOL)


@dataclass(frozen=True, slots=True)
class BcastRcvStatistics:
    """Counters of one receive link (the receive half of ``tipc link statistics show
    broadcast-link``), plus what was dropped and why."""

    peer: int
    up: bool
    rcv_nxt: int
    peer_snd_nxt: int
    deferred: int
    rx_packets: int
    rx_fragments: int
    rx_fragmented: int
    rx_bundles: int
    rx_bundled: int
    rx_defs: int
    rx_dups: int
    nack_states: int
    ack_states: int
    dropped_closed: int
    dropped_netid: int
    dropped_other: int
    legacy_nacks: int


# What receive() read of a packet: a bundle's inner messages and how many others it
# held, a fragment's type, number and payload, or None for a packet delivered as it is.
_Parsed = tuple[list[bytes], int] | tuple[int, int, memoryview] | None


class _Pkt:
    __slots__ = ("data", "parsed", "user")

    def __init__(self, data: bytes, user: int, parsed: _Parsed) -> None:
        self.data = data
        self.user = user
        self.parsed = parsed


class BcastRcvLink(Machine[bytes]):
    """The receive end of node ``peer_addr``'s broadcast link (see the module docstring).

    Sends nothing itself (its outbox stays empty): what it wants sent travels in the
    unicast link's STATE messages, asked for through :meth:`take_state_request`.
    """

    def __init__(
        self,
        *,
        own_addr: int,
        peer_addr: int,
        net_id: int,
        peer_caps: int = 0,
        window: int = BC_RCV_WINDOW,
    ) -> None:
        super().__init__()
        self.own_addr = own_addr
        self.peer_addr = peer_addr
        self.net_id = net_id
        self.peer_caps = peer_caps
        self.window = window
        self.is_up = False
        self.rcv_nxt = 1
        self.snd_nxt = 1  # the peer's broadcast snd_nxt, as its STATEs tell it
        self.ack = 0  # rcv_nxt - 1, kept ready for the unicast link's hot path
        self.rcv_unacked = 0
        self.peer_acked = False  # the kernel's bc_peer_is_up
        self._deferred: dict[int, _Pkt] = {}
        self._reasm = Reassembler()
        self._want_state = False
        self._failure: str | None = None
        self._stats = dict.fromkeys(
            (
                "rx_packets",
                "rx_fragments",
                "rx_fragmented",
                "rx_bundles",
                "rx_bundled",
                "rx_defs",
                "rx_dups",
                "nack_states",
                "ack_states",
                "dropped_closed",
                "dropped_netid",
                "dropped_other",
                "legacy_nacks",
            ),
            0,
        )

    # -- opening and closing -------------------------------------------------------------

    def _start_at(self, last_bcast: int) -> None:
        self.rcv_nxt = seq_add(last_bcast, 1)
        self.snd_nxt = self.rcv_nxt
        self.ack = last_bcast & SEQ_MASK

    def init_rcv(self, last_bcast: int) -> None:
        """The peer's bcast init (BCAST_PROTOCOL on the unicast link): start after
        ``last_bcast`` and open. Ignored while open (tipc_link_bc_init_rcv)."""
        if self.is_up:
            return
        self._start_at(last_bcast)
        self.is_up = True

    def legacy_init(self, mtype: int, last_bcast: int, peer_node_up: bool) -> None:
        """A RESET/ACTIVATE of a peer without TIPC_BCAST_SYNCH carries the start point
        (when it does not imply that the peer still sees us); the link stays closed
        until :meth:`establish`."""
        if self.is_up or self.peer_caps & Capability.BCAST_SYNCH or peer_node_up:
            return
        if mtype in (LinkMsgType.RESET_MSG, LinkMsgType.ACTIVATE_MSG):
            self._start_at(last_bcast)

    def establish(self) -> None:
        """A NAME_DISTRIBUTOR message arrived on the unicast link (tipc_data_input):
        a legacy peer's broadcast link is open from now on."""
        self.is_up = True

    def close(self) -> None:
        """The peer node went down (tipc_bcast_remove_peer): forget everything."""
        self.is_up = False
        self.peer_acked = False
        self._deferred.clear()
        self._reasm.reset()
        self.rcv_unacked = 0
        self._want_state = False
        self._start_at(0)

    # -- what the unicast link asks --------------------------------------------------------

    @property
    def gap(self) -> int:
        """link_bc_rcv_gap: how many packets we miss before the first deferred one, or
        up to the peer's snd_nxt."""
        gap = 0
        if seq_more(self.snd_nxt, self.rcv_nxt):
            gap = (self.snd_nxt - self.rcv_nxt) & SEQ_MASK
        if self._deferred:
            gap = (self._first_deferred() - self.rcv_nxt) & SEQ_MASK
        return gap

    def take_state_request(self) -> bool:
        """Whether a STATE with our broadcast ack/gap is due (cleared by the call)."""
        want, self._want_state = self._want_state, False
        return want

    def take_failure(self) -> str | None:
        """A reason to fail the peer's links, once (cleared by the call)."""
        reason, self._failure = self._failure, None
        return reason

    def state_sent(self, gap: int) -> None:
        """The unicast link sent a STATE carrying :attr:`ack` and ``gap``."""
        self.rcv_unacked = 0
        if gap:
            self._stats["nack_states"] += 1
        else:
            self._stats["ack_states"] += 1

    def sync_rcv(self, last_bcast: int, unicast_ack: int) -> None:
        """A STATE of the peer with bc_ack_invalid clear (tipc_link_bc_sync_rcv): learn
        its broadcast snd_nxt; ask for a STATE if we miss packets."""
        if not self.is_up:
            return
        if unicast_ack:
            self.peer_acked = True
        if not self.peer_acked:
            return
        peers_snd_nxt = seq_add(last_bcast, 1)
        if seq_more(peers_snd_nxt, seq_add(self.rcv_nxt, self.window)):
            return
        self.snd_nxt = peers_snd_nxt
        if self.gap:
            self._want_state = True

    # -- the contract ----------------------------------------------------------------------

    def next_timer(self) -> float | None:
        return None  # the unicast link's timer carries the acks

    def handle_timer(self, now: float) -> None:
        return None

    def receive(self, frame: bytes | memoryview, now: float) -> None:
        """One non-sequenced packet from the peer (tipc_bcast_rcv). RemoteProtocolError
        (nothing changed) for a malformed one; others that do not belong are counted."""
        stats = self._stats
        try:
            user, size, _non_seq, seqno, _ack, prev_node = scan(frame)
            if size < 24 or len(frame) < _MC_NETID_OFFSET + 4:
                raise WireError("too short for a broadcast packet")
            net_id = int.from_bytes(frame[_MC_NETID_OFFSET : _MC_NETID_OFFSET + 4], "big")
            data = bytes(frame[:size])
            parsed: _Parsed = None
            if user == _MSG_BUNDLER:
                parsed = unbundle_select(data, DELIVERED_USERS)
            elif user == _MSG_FRAGMENTER:
                parsed = fragment_fields(data)
        except WireError as exc:
            raise RemoteProtocolError(
                f"broadcast packet from node {self.peer_addr:#x}: {exc}"
            ) from None
        if prev_node != self.peer_addr:
            stats["dropped_other"] += 1
            return
        if net_id != self.net_id:
            stats["dropped_netid"] += 1
            return
        if not self.is_up:
            stats["dropped_closed"] += 1
            return
        if user == _BCAST_PROTOCOL:
            # A legacy NACK: for our own broadcasts (we send none) or another node's.
            stats["legacy_nacks"] += 1
            return
        rcv_nxt = self.rcv_nxt
        if seqno != rcv_nxt and (
            seq_less(seqno, rcv_nxt) or seq_more(seqno, seq_add(rcv_nxt, MAX_LINK_WIN))
        ):
            stats["rx_dups"] += 1
            return
        pkt = _Pkt(data, user, parsed)
        if seqno != rcv_nxt:
            if seqno in self._deferred:
                stats["rx_dups"] += 1
            else:
                self._deferred[seqno] = pkt
            # tipc_link_build_nack_msg on a bcast receive link: the receivers of one
            # broadcast NACK in turn, by their address modulo 16.
            stats["rx_defs"] += 1
            if stats["rx_defs"] & _NIBBLE == self.own_addr & _NIBBLE:
                self._want_state = True
            return
        while True:
            self.rcv_nxt = rcv_nxt = seq_add(rcv_nxt, 1)
            self.ack = seq_add(rcv_nxt, -1)
            if seq_more(rcv_nxt, self.snd_nxt):
                self.snd_nxt = rcv_nxt
            stats["rx_packets"] += 1
            self._input(pkt, now)
            if self._failure is not None:
                return
            self.rcv_unacked += 1
            if self.rcv_unacked >= MIN_LINK_WIN and (
                (rcv_nxt ^ self.own_addr) & _NIBBLE == _NIBBLE
            ):
                self._want_state = True
            nxt = self._deferred.pop(rcv_nxt, None)
            if nxt is None:
                return
            pkt = nxt

    # -- delivery --------------------------------------------------------------------------

    def _input(self, pkt: _Pkt, now: float) -> None:
        user = pkt.user
        stats = self._stats
        peer = self.peer_addr
        if user in DELIVERED_USERS:
            self._events.append(Delivered(peer, pkt.data))
        elif user == _MSG_BUNDLER:
            msgs: list[bytes]
            others: int
            msgs, others = pkt.parsed  # type: ignore[misc]
            stats["rx_bundles"] += 1
            stats["rx_bundled"] += len(msgs) + others
            stats["dropped_other"] += others
            self._events.extend([Delivered(peer, m) for m in msgs])
        elif user == _MSG_FRAGMENTER:
            stats["rx_fragments"] += 1
            try:
                msg = self._reasm.push_fields(*pkt.parsed)  # type: ignore[misc]
            except RemoteProtocolError:
                self._failure = "broadcast reassembly failure"
                return
            if msg is not None:
                stats["rx_fragmented"] += 1
                if scan(msg)[0] in DELIVERED_USERS:
                    self._events.append(Delivered(peer, msg))
                else:
                    stats["dropped_other"] += 1
        else:
            stats["dropped_other"] += 1

    def _first_deferred(self) -> int:
        base = self.rcv_nxt
        return min(self._deferred, key=lambda s: (s - base) & SEQ_MASK)

    def statistics(self) -> BcastRcvStatistics:
        return BcastRcvStatistics(
            peer=self.peer_addr,
            up=self.is_up,
            rcv_nxt=self.rcv_nxt,
            peer_snd_nxt=self.snd_nxt,
            deferred=len(self._deferred),
            **self._stats,
        )
