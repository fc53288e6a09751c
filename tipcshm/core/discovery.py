"""Neighbour discovery on one bearer, sans-IO: mirrors net/tipc/discover.c
(``tipc_disc_create``, ``tipc_disc_timeout``, ``tipc_disc_rcv``,
``tipc_disc_addr_trial_msg``, ``tipc_disc_add_dest`` / ``tipc_disc_remove_dest``) and the
parts of net/tipc/node.c it calls (``tipc_node_check_dest``, ``tipc_node_try_addr``,
``tipc_node_suggest_addr``). Facts from tipc-wire.md §2, §3 and §13; no kernel code copied.

Theory of operation
-------------------
A :class:`Discoverer` speaks for this node on one bearer. It yields ``(frame, dest)``
pairs: ``dest`` None means the bearer's broadcast (multicast group, or every configured
replicast peer); otherwise it is the 32-byte media info a reply must go to -- the address
*advertised inside* the peer's message, never the UDP source.

**Requests** (``tipc_disc_timeout``). The first request goes out at construction, the next
after ``DISC_INIT`` (125 ms). While the address trial runs the interval stays 125 ms and the
requests are DSC_TRIAL. The first expiry after the trial commits the address
(:class:`~tipcshm.core.events.AddressCommitted`) and sends nothing; from then on each
expiry sends a DSC_REQ and doubles the interval, capped at ``DISC_FAST`` (1 s) while the
bearer has no link up and ``DISC_SLOW`` (60 s) once it has one. When the last link goes
down (:meth:`Discoverer.link_down`) the interval restarts at 125 ms. If the bearer
``domain`` names one node, requests stop once a link is up.

**Address trial** (``tipc_disc_addr_trial_msg``, ``tipc_node_try_addr``). Without a
configured address the node tries ``hash128to32(identity)`` for 1 s. A peer that knows the
address under another identity, knows our identity under another address, or is trying
the same address itself answers DSC_TRIAL_FAIL with a suggestion; we take it (only if it
contests our current trial address) and restart the 1 s trial. While our trial runs we
ignore regular requests; trial messages never create peers.

**Reception** (``tipc_disc_rcv``), in the kernel's order: the media address must decode and
must not be multicast (else :class:`RemoteProtocolError`); our own media address (our
broadcast looped back) is ignored; another cluster id is ignored; trial handling; a sender
address of 0 ("self") is ignored and one equal to ours is a
:class:`~tipcshm.core.events.DuplicateAddress`; the destination domain must be 0 or us and
our bearer domain must cover the sender. Then ``tipc_node_check_dest`` weighs three facts
about the sender's record -- same signature, same media address, link up -- (table
``CHECK_DEST`` below) and decides whether to accept the (new) media address, accept a new
signature, report a duplicate and whether to respond. Only a DSC_REQ gets a DSC_RESP.

The Discoverer keeps one small record per peer address (identity, signature, capabilities,
media, link up). The owner creates links: a :class:`~tipcshm.core.events.PeerDiscovered`
means "a link to ``addr`` at ``media`` should exist". If that peer's link already exists
with another media address the owner points it at the new one and resets it
(``tipc_node_check_dest``'s reset of a link that is not already resetting). The owner
reports link state with :meth:`Discoverer.link_up` / :meth:`Discoverer.link_down`, naming
the peer so that the signature/media/link checks see it.

Deliberate differences from the kernel: peers are looked up by address only (the kernel
falls back to the identity when creating a node); a suggested address is never 0 nor our
own; a TRIAL_FAIL suggesting 0 is ignored; bearer domains use the non-legacy rule (0 or
the exact address).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from tipcshm.core.contract import Machine
from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import AddressCommitted, DuplicateAddress, PeerDiscovered
from tipcshm.wire.discovery import (
    DEFAULT_CAPS,
    W1_SIG_BITS,
    Capability,
    DiscoveryMsg,
    UdpMediaAddr,
    domain_names_node,
    in_scope,
    wire_signature,
)
from tipcshm.wire.header import NODE_ID_LEN, DiscMsgType, WireError, hash128to32

if TYPE_CHECKING:
    import random

DISC_INIT: Final = 0.125  # TIPC_DISC_INIT: first interval, and the interval during a trial
DISC_FAST: Final = 1.0  # TIPC_DISC_FAST: cap while the bearer has no link up
DISC_SLOW: Final = 60.0  # TIPC_DISC_SLOW: cap once it has one
#: Peers one bearer keeps records (and the owner links) for; the kernel has no such limit,
#: but TIPC clusters are designed for up to about a thousand nodes.
MAX_PEERS: Final = 4096
ADDR_TRIAL: Final = 1.0  # how long a trial address must stay uncontested
DEFAULT_NET_ID: Final = 4711
_U32: Final = 0xFFFFFFFF
_SIG_MAX: Final = (1 << W1_SIG_BITS) - 1  # the signature is the low 16 bits of the random

#: tipc_node_check_dest as a table: (signature matches, media matches, link up) ->
#: (accept media address, accept signature, duplicate alert, respond). Accepting the media
#: address also accepts the signature and means "a link to this media should exist".
CHECK_DEST: Final[dict[tuple[bool, bool, bool], tuple[bool, bool, bool, bool]]] = {
    # sign   media  up        accept  sig    dupl   respond
    (True, True, True): (False, False, False, False),  # all is well
    (True, True, False): (False, False, False, True),  # the link will come up in time
    (True, False, True): (False, False, True, False),  # cloned peer, or moved i/f: ignore
    (True, False, False): (True, True, False, True),  # moved i/f without reboot: accept
    (False, True, True): (False, True, False, False),  # rebooted, link already back
    (False, True, False): (False, True, False, True),  # rebooted: known peer, accept
    (False, False, True): (False, False, True, False),  # new/duplicate peer: ignore
    (False, False, False): (True, True, False, True),  # new peer, or rebooted and moved
}


@dataclass(slots=True)
class _Peer:
    """What node.c keeps about a peer, as far as discovery needs it."""

    addr: int
    identity: bytes
    capabilities: int
    signature: int | None = None  # None: INVALID_NODE_SIG, matches nothing
    media: bytes | None = None  # raw media info; None until accepted (no link yet)
    maddr: UdpMediaAddr | None = None
    link_up: bool = False


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    """Counters and state of one :class:`Discoverer` (all counters since construction)."""

    addr: int | None
    trial_addr: int
    in_trial: bool
    interval: float | None  # current request interval; None once requests stopped
    links_up: int
    peers: int
    trials_sent: int
    requests_sent: int
    responses_sent: int
    trial_fails_sent: int
    received: int
    malformed: int  # RemoteProtocolError raised
    own: int  # our own frames looped back
    wrong_net_id: int
    dropped_in_trial: int  # regular messages ignored while our trial runs
    trial_fails_ignored: int
    suggestions_taken: int
    from_self_addr: int  # sender address 0 or ours
    out_of_scope: int
    duplicates: int  # DuplicateAddress events
    peers_discovered: int  # PeerDiscovered events
    signatures_updated: int  # rebooted peer whose link was already up again
    peer_table_full: int  # new peers ignored: max_peers are known already


class Discoverer(Machine[tuple[bytes, bytes | None]]):
    """Discovery for one node on one bearer (see the module doc).

    ``identity`` is the 16-byte node identity; ``addr`` the configured node address, or
    None to run the 1 s address trial with ``hash128to32(identity)``; ``media`` our own
    32-byte media info (:meth:`UdpMediaAddr.encode`); ``domain`` the bearer domain (0 =
    whole cluster). ``signature`` (16 bits) defaults to a value drawn from ``rng``; as on
    the wire, its bit 15 is capability bit 0. ``net_hash`` fills w13 (0 = not in a shared
    kernel). Raises :class:`LocalProtocolError` for impossible arguments.

    A configured ``addr`` is reported at once as :class:`AddressCommitted` (so an owner
    reacts to that one event whichever way the address came), a trial address when the
    trial ends.
    """

    def __init__(
        self,
        *,
        identity: bytes,
        addr: int | None,
        media: bytes,
        net_id: int = DEFAULT_NET_ID,
        capabilities: int = DEFAULT_CAPS,
        domain: int = 0,
        rng: random.Random,
        now: float,
        net_hash: int = 0,
        signature: int | None = None,
        max_peers: int = MAX_PEERS,
    ) -> None:
        super().__init__()
        identity = bytes(identity)
        if len(identity) != NODE_ID_LEN or not any(identity):
            raise LocalProtocolError(f"node identity must be {NODE_ID_LEN} bytes, not all 0")
        if addr is not None and not 0 < addr <= _U32:
            raise LocalProtocolError(f"node address {addr!r} must be a non-zero u32")
        try:
            self._own_maddr = UdpMediaAddr.decode(media)
        except WireError as exc:
            raise LocalProtocolError(f"own media address: {exc}") from exc
        if signature is not None and not 0 <= signature <= _SIG_MAX:
            raise LocalProtocolError(f"signature {signature!r} must fit in 16 bits")
        self.identity = identity
        self.addr: int | None = addr
        self.trial_addr = addr if addr is not None else hash128to32(identity)
        self.net_id = net_id
        self.domain = domain
        self.capabilities = capabilities
        # tipc_net's random: the signature is its low 16 bits, suggestions xor all 32.
        self._random = rng.getrandbits(32)
        if signature is not None:
            self._random = (self._random & ~_SIG_MAX) | signature
        self.signature = wire_signature(self._random, capabilities)
        self._template = DiscoveryMsg(
            mtype=DiscMsgType.DSC_REQ_MSG,
            capabilities=capabilities,
            signature=self.signature,
            dest_domain=domain,
            sender=self.trial_addr,
            net_id=net_id,
            media=bytes(media),
            identity=identity,
            net_hash=net_hash,
        )
        try:
            self._template.encode()
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._trial_end = now + ADDR_TRIAL if addr is None else now
        self._interval: float | None = DISC_INIT
        self._timer: float | None = now + DISC_INIT
        self._links_up = 0
        self._peers: dict[int, _Peer] = {}
        self.max_peers = max_peers
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "trials_sent",
                "requests_sent",
                "responses_sent",
                "trial_fails_sent",
                "received",
                "malformed",
                "own",
                "wrong_net_id",
                "dropped_in_trial",
                "trial_fails_ignored",
                "suggestions_taken",
                "from_self_addr",
                "out_of_scope",
                "duplicates",
                "peers_discovered",
                "signatures_updated",
                "peer_table_full",
            ),
            0,
        )
        if addr is not None:
            self._emit(AddressCommitted(addr))
        self._send_request()

    # -- owner's view -------------------------------------------------------------------

    def in_trial(self, now: float) -> bool:
        """True while the address trial runs (no address yet and the 1 s not over)."""
        return self.addr is None and now < self._trial_end

    def known_peers(self) -> dict[int, bytes]:
        """Every peer address seen in a regular discovery message, with its identity."""
        return {a: p.identity for a, p in self._peers.items()}

    def next_timer(self) -> float | None:
        return self._timer

    def statistics(self) -> DiscoveryStatistics:
        return DiscoveryStatistics(
            addr=self.addr,
            trial_addr=self.trial_addr,
            in_trial=self.addr is None,
            interval=self._interval,
            links_up=self._links_up,
            peers=len(self._peers),
            **self._stats,
        )

    # -- link state from the owner (tipc_disc_add_dest / tipc_disc_remove_dest) ---------

    def link_up(self, now: float, peer: int | None = None) -> None:
        """A link on this bearer came up (to ``peer``, if given: name it so the
        signature/media checks know that link is working). Call once per link going up,
        as the kernel counts links, not peers. Lets requests slow down to 60 s."""
        self._links_up += 1
        record = self._peers.get(peer) if peer is not None else None
        if record is not None:
            record.link_up = True

    def link_down(self, now: float, peer: int | None = None) -> None:
        """A link on this bearer went down. When it was the last one, requests restart
        at 125 ms (unless they are already at the fast rate)."""
        self._links_up = max(0, self._links_up - 1)
        record = self._peers.get(peer) if peer is not None else None
        if record is not None:
            record.link_up = False
        if not self._links_up and (self._interval is None or self._interval > DISC_FAST):
            self._interval = DISC_INIT
            self._timer = now + DISC_INIT

    # -- time ---------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """``tipc_disc_timeout``: send the periodic request and re-arm."""
        if self._timer is None or now < self._timer:
            return
        if domain_names_node(self.domain) and self._links_up:
            self._interval = self._timer = None  # the one node we look for is found
            return
        if self.addr is None and now >= self._trial_end:
            # The trial just ended quietly: take the address, send at the next expiry.
            self._commit()
            self._timer = now + DISC_INIT
            return
        assert self._interval is not None
        if self.addr is None:
            self._interval = DISC_INIT
        else:
            cap = DISC_SLOW if self._links_up else DISC_FAST
            self._interval = min(self._interval * 2, cap)
        self._timer = now + self._interval
        self._send_request()

    # -- reception ----------------------------------------------------------------------

    def receive(
        self, frame: bytes | bytearray | memoryview, now: float, src_media: bytes | None = None
    ) -> None:
        """One LINK_CONFIG frame from the bearer (``tipc_disc_rcv``). ``src_media`` (the
        datagram's source) is not used: replies go to the address inside the message."""
        try:
            msg = DiscoveryMsg.decode(frame)
            maddr = UdpMediaAddr.decode(msg.media)
        except WireError as exc:
            self._stats["malformed"] += 1
            raise RemoteProtocolError(f"corrupt discovery message: {exc}") from exc
        self._stats["received"] += 1
        if msg.capabilities & Capability.NODE_ID128:
            identity = msg.identity
        else:  # a peer without 128-bit identities is known by its address in hex
            identity = f"{msg.sender:x}".encode().ljust(NODE_ID_LEN, b"\0")
        if maddr == self._own_maddr:
            self._stats["own"] += 1
            return
        if msg.net_id != self.net_id:
            self._stats["wrong_net_id"] += 1
            return
        if self._trial_msg(msg, identity, now):
            return
        src = msg.sender
        if src == 0 or src == self.addr:
            self._stats["from_self_addr"] += 1
            if src:
                self._stats["duplicates"] += 1
                self._emit(DuplicateAddress(src, identity))
            return
        assert self.addr is not None  # _trial_msg committed it or dropped the message
        if not in_scope(msg.dest_domain, self.addr) or not in_scope(self.domain, src):
            self._stats["out_of_scope"] += 1
            return
        if self._check_dest(msg, identity, maddr) and msg.mtype == DiscMsgType.DSC_REQ_MSG:
            self._send(DiscMsgType.DSC_RESP_MSG, msg.media, dest_domain=src)
            self._stats["responses_sent"] += 1

    def _trial_msg(self, msg: DiscoveryMsg, identity: bytes, now: float) -> bool:
        """``tipc_disc_addr_trial_msg``: True if the message is consumed here."""
        trial = self.in_trial(now)
        if msg.mtype == DiscMsgType.DSC_TRIAL_FAIL_MSG:
            if not trial or msg.dest_domain != self.trial_addr or msg.sugg_addr == 0:
                self._stats["trial_fails_ignored"] += 1
                return True
            self.trial_addr = msg.sugg_addr
            self._trial_end = now + ADDR_TRIAL
            self._stats["suggestions_taken"] += 1
            return True
        if not trial and self.addr is None:
            self._commit()
        if msg.mtype != DiscMsgType.DSC_TRIAL_MSG:
            if trial:
                self._stats["dropped_in_trial"] += 1
            return trial
        sugg = self._try_addr(identity, msg.sender)
        if sugg:
            self._send(DiscMsgType.DSC_TRIAL_FAIL_MSG, msg.media, dest_domain=msg.sender, sugg=sugg)
            self._stats["trial_fails_sent"] += 1
        return True

    def _try_addr(self, identity: bytes, addr: int) -> int:
        """``tipc_node_try_addr``: an address to suggest to a node trying ``addr``, or 0."""
        known = self._peers.get(addr)
        if known is not None:
            return 0 if known.identity == identity else self._suggest(addr)
        for peer in self._peers.values():
            if peer.identity == identity:
                return peer.addr
        if addr == self.trial_addr:
            return self._suggest(addr)
        return 0

    def _suggest(self, addr: int) -> int:
        """``tipc_node_suggest_addr``: our random mixed in, then the next free address."""
        addr = (addr ^ self._random) & _U32
        while addr in self._peers or addr == 0 or addr == self.trial_addr:
            addr = (addr + 1) & _U32
        return addr

    def _check_dest(self, msg: DiscoveryMsg, identity: bytes, maddr: UdpMediaAddr) -> bool:
        """``tipc_node_check_dest``: update the sender's record; True to respond."""
        peer = self._peers.get(msg.sender)
        if peer is None:
            if len(self._peers) >= self.max_peers:
                # Anyone who can reach the bearer can invent addresses: each new peer
                # costs a record here and a node with a link at the owner.
                self._stats["peer_table_full"] += 1
                return False
            peer = self._peers[msg.sender] = _Peer(msg.sender, identity, msg.capabilities)
        peer.capabilities = msg.capabilities
        sign_match = peer.signature == msg.signature
        addr_match = peer.maddr is not None and peer.maddr == maddr
        link_up = peer.link_up and peer.maddr is not None
        accept, accept_sig, dupl, respond = CHECK_DEST[(sign_match, addr_match, link_up)]
        if dupl:
            self._stats["duplicates"] += 1
            self._emit(DuplicateAddress(msg.sender, identity))
            return False
        rebooted = not sign_match and peer.signature is not None
        if accept_sig:
            peer.signature = msg.signature
        if accept:
            peer.media, peer.maddr, peer.identity = bytes(msg.media), maddr, identity
        if accept or (rebooted and respond):
            self._stats["peers_discovered"] += 1
            self._emit(
                PeerDiscovered(
                    addr=msg.sender,
                    identity=peer.identity,
                    media=bytes(msg.media),
                    signature=msg.signature,
                    capabilities=msg.capabilities,
                    rebooted=rebooted,
                )
            )
        elif rebooted:
            self._stats["signatures_updated"] += 1
        return respond

    # -- sending ------------------------------------------------------------------------

    def _commit(self) -> None:
        """``tipc_net_finalize``: the trial address becomes ours."""
        self.addr = self.trial_addr
        self._emit(AddressCommitted(self.addr))

    def _send_request(self) -> None:
        if self.addr is None:
            self._send(DiscMsgType.DSC_TRIAL_MSG, None, dest_domain=self.domain)
            self._stats["trials_sent"] += 1
        else:
            self._send(DiscMsgType.DSC_REQ_MSG, None, dest_domain=self.domain)
            self._stats["requests_sent"] += 1

    def _send(self, mtype: int, dest: bytes | None, *, dest_domain: int, sugg: int = 0) -> None:
        msg = replace(
            self._template,
            mtype=mtype,
            sender=self.trial_addr,
            dest_domain=dest_domain,
            sugg_addr=sugg,
        )
        self._outbox.append((msg.encode(), dest))


__all__ = [
    "ADDR_TRIAL",
    "CHECK_DEST",
    "DISC_FAST",
    "DISC_INIT",
    "DISC_SLOW",
    "MAX_PEERS",
    "DiscoveryStatistics",
    "Discoverer",
]
