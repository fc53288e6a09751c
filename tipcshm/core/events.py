"""Every event a sans-IO protocol object reports, as frozen dataclasses (values, not
callbacks). An owner drains them with ``next_event()`` and decides what they mean for
sockets, shared memory and the name table.

Node addresses are the 32-bit TIPC addresses (``hash128to32`` of the identity); times
are the owner's clock in seconds. Sections follow the object that emits the event.
"""

from __future__ import annotations

from dataclasses import dataclass


class CoreEvent:
    """Base class of every event (for isinstance checks and typing)."""

    __slots__ = ()


# -- discovery (core/discovery.py) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressCommitted(CoreEvent):
    """Our address trial ended quietly: this node now uses ``addr`` (tipc_net_finalize)."""

    addr: int


@dataclass(frozen=True, slots=True)
class PeerDiscovered(CoreEvent):
    """A peer answered or asked on this bearer and a link to it should exist (or be
    refreshed): tipc_node_check_dest said "create the link / accept the signature".
    ``media`` is the peer's 32-byte media address (replies and link traffic go there),
    ``rebooted`` is True when a known peer came back with a new signature."""

    addr: int
    identity: bytes
    media: bytes
    signature: int
    capabilities: int
    rebooted: bool = False


@dataclass(frozen=True, slots=True)
class DuplicateAddress(CoreEvent):
    """Another identity uses ``addr`` (disc_dupl_alert: logged, nothing else)."""

    addr: int
    identity: bytes


# -- link endpoint (core/link.py) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUp(CoreEvent):
    """The link reached ESTABLISHED (tipc_link_fsm_evt ... LINK_ESTABLISH)."""

    peer: int
    name: str
    mtu: int


@dataclass(frozen=True, slots=True)
class LinkDown(CoreEvent):
    """The link left the up states. ``reason`` is the kernel's words where it has them:
    "peer reset", "link timeout" (tolerance expired), "retransmission failure",
    "peer stopping", "priority change", "reset by caller"."""

    peer: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Delivered(CoreEvent):
    """A complete message (header + data, bundles opened, fragments joined) that arrived
    in order from node ``source``. The connection core uses the same event for data its
    socket should queue."""

    source: int
    frame: bytes


# A link emits one Delivered per message it receives, so its construction is on the
# hot path. The frozen dataclass __init__ sets each field through object.__setattr__;
# writing the slots through their descriptors does the same (the instance stays frozen
# for everyone else: setattr still raises FrozenInstanceError) at about half the cost.
_set_source = vars(Delivered)["source"].__set__
_set_frame = vars(Delivered)["frame"].__set__


def _delivered_init(self: Delivered, source: int, frame: bytes) -> None:
    _set_source(self, source)
    _set_frame(self, frame)


Delivered.__init__ = _delivered_init  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class LinkCongested(CoreEvent):
    """The send backlog of ``importance`` is full: the sender must wait (-ELINKCONG)."""

    peer: int
    importance: int


@dataclass(frozen=True, slots=True)
class LinkUncongested(CoreEvent):
    """Room again in every backlog that reported :class:`LinkCongested` (tipc_link_wakeup)."""

    peer: int


# -- peer node and name distribution (core/node.py, core/name_distr.py) -----------------


@dataclass(frozen=True, slots=True)
class NodeUp(CoreEvent):
    """The first link to ``addr`` came up and the peer sees us (SELF_UP_PEER_UP)."""

    addr: int
    identity: bytes


@dataclass(frozen=True, slots=True)
class NodeDown(CoreEvent):
    """The last link to ``addr`` went down. Consequences (node.c tipc_node_lost_contact):
    every binding of that node is withdrawn (reported as :class:`Withdrawn` events) and
    every connection to it must be aborted with ``error`` (TIPC_ERR_NO_NODE)."""

    addr: int
    reason: str
    error: int = 3  # TIPC_ERR_NO_NODE (wire.ErrorCode.NO_NODE)


@dataclass(frozen=True, slots=True)
class Published(CoreEvent):
    """A binding of node ``node`` appeared (name distribution, cluster scope)."""

    type: int
    lower: int
    upper: int
    port: int
    key: int
    node: int


@dataclass(frozen=True, slots=True)
class Withdrawn(CoreEvent):
    """A binding of node ``node`` went away (withdrawal or node loss)."""

    type: int
    lower: int
    upper: int
    port: int
    key: int
    node: int


# -- topology service (core/topology.py) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberRejected(CoreEvent):
    """The topology service refused a request on subscriber connection ``conn`` and
    dropped all of its subscriptions; the owner must close the connection, as topsrv.c
    does (``tipc_conn_close``). ``reason`` says why (PORTS with SERVICE, lower > upper,
    the node-wide limit)."""

    conn: int
    reason: str


# -- connection (core/connection.py) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionEstablished(CoreEvent):
    """CONNECTING -> ESTABLISHED: the peer socket answered."""

    peer_node: int
    peer_port: int


@dataclass(frozen=True, slots=True)
class ConnectionRefused(CoreEvent):
    """The SYN came back with ``error`` (connect fails with ECONNREFUSED)."""

    error: int


@dataclass(frozen=True, slots=True)
class ConnectionTimedOut(CoreEvent):
    """No answer to the SYN within TIPC_CONN_TIMEOUT (connect fails with ETIMEDOUT)."""


@dataclass(frozen=True, slots=True)
class ConnectionEnded(CoreEvent):
    """The peer ended the connection: ``error`` TIPC_CONN_SHUTDOWN reads as EOF, any
    other (TIPC_ERR_NO_PORT, TIPC_ERR_NO_NODE) as ECONNRESET. ``frame`` is the peer's
    ending message (its data is what recvmsg reports as TIPC_RETDATA), empty when the
    owner reported the loss (:meth:`Connection.abort`)."""

    error: int
    frame: bytes = b""


@dataclass(frozen=True, slots=True)
class ConnectionRequested(CoreEvent):
    """LISTEN: a SYN from ``peer_node``/``peer_port`` waits for accept() (``frame`` is the
    whole SYN; its data, if any, is the new connection's first message)."""

    peer_node: int
    peer_port: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class ConnectionAborted(CoreEvent):
    """Supervision gave up: a CONN_PROBE went unanswered (ECONNABORTED)."""

    reason: str


@dataclass(frozen=True, slots=True)
class WindowOpened(CoreEvent):
    """A CONN_ACK made room in the send window."""

    room: int


@dataclass(frozen=True, slots=True)
class Rejected(CoreEvent):
    """A message we sent came back with TIPC error ``error`` (tipc_msg_reverse)."""

    error: int
    frame: bytes


__all__ = [
    "AddressCommitted",
    "ConnectionAborted",
    "ConnectionEnded",
    "ConnectionEstablished",
    "ConnectionRefused",
    "ConnectionRequested",
    "ConnectionTimedOut",
    "CoreEvent",
    "Delivered",
    "DuplicateAddress",
    "LinkCongested",
    "LinkDown",
    "LinkUncongested",
    "LinkUp",
    "NodeDown",
    "NodeUp",
    "PeerDiscovered",
    "Published",
    "Rejected",
    "SubscriberRejected",
    "WindowOpened",
    "Withdrawn",
]
