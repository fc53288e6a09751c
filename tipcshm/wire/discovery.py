"""LINK_CONFIG (user 13): the neighbour-discovery message and the UDP media address.

Mirrors the discovery accessors of the kernel's ``net/tipc/msg.h`` (``msg_node_sig``,
``msg_node_capabilities``, ``msg_dest_domain``, ``msg_bc_netid``, ``msg_media_addr``,
``msg_peer_net_hash``, ``msg_sugg_node_addr``, ``msg_node_id``), the message built by
``tipc_disc_init_msg`` (discover.c), the capability bits of ``node.h`` and the UDP media
codec of ``udp_media.c`` (``tipc_udp_addr2msg`` / ``tipc_udp_msg2addr``). Facts from
tipc-wire.md §1.6, §3, §4 and §5.11; no kernel code is copied.

Theory of operation
-------------------
A discovery message is always 76 bytes: a 60-byte header and the sender's 16-byte node
identity. Its words, as the kernel writes them::

    w0          version 2, user 13, header 15 words, non-sequenced, size 76
    w1  31:29   message type (DSC_REQ / DSC_RESP / DSC_TRIAL / DSC_TRIAL_FAIL)
    w1  27:15   capabilities (13 bits)          \\ bit 15 is shared: the signature is
    w1  15:0    node signature (16 bits)        / written first, the capabilities last
    w2          destination domain (0, or the addressee in responses and TRIAL_FAIL)
    w3          sender's (trial) address
    w4          cluster id (net id)
    w5..w12     32-byte media info (overwrites the generic w6/w7 the header init wrote)
    w13         peer net hash (same-host detection; a remote node may send 0)
    w14         suggested address (TRIAL_FAIL only)
    data        16-byte node identity

Because the capabilities field overlaps the signature's top bit, the signature a receiver
reads (``w1 & 0xffff``) has bit 15 equal to capability bit 0. :class:`DiscoveryMsg` keeps
both as the kernel reads them, and :meth:`DiscoveryMsg.encode` writes them in the kernel's
order, so ``decode(b).encode() == b`` for every frame; a message whose signature bit 15
disagrees with capability bit 0 cannot exist on the wire (``encode`` lets the capability
bit win, as the kernel does). Bits LINK_CONFIG does not define (w0[19:17], w1[28]) are
kept in ``w0_spare`` / ``w1_spare`` so that re-encoding is exact.

The 32-byte media info of a UDP bearer: byte 3 is the media type (3 = UDP), bytes 4..5 the
IP protocol (0x0800 / 0x86DD), 6..7 the UDP port, 8..23 the address (IPv4 in 8..11), the
rest zero. :class:`UdpMediaAddr` is that address; decoding refuses other media types,
unknown protocols and, like ``tipc_disc_rcv``, multicast addresses ("Rcv corrupt
discovery message"): a peer must advertise an address a reply can go to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntFlag
from struct import Struct
from typing import Final

from tipcshm.wire.header import (
    MAX_H_SIZE,
    NODE_ID_LEN,
    DiscMsgType,
    User,
    WireError,
    make_w0,
    validate_msg,
    w0_user,
)

# ---------------------------------------------------------------------------------------
# Capability bits (node.h), carried in discovery w1[27:15]
# ---------------------------------------------------------------------------------------


class Capability(IntFlag):
    """The node capability bits of ``node.h`` (kernel names without the ``TIPC_`` prefix)."""

    SYN_BIT = 0x001
    BCAST_SYNCH = 0x002
    BCAST_STATE_NACK = 0x004
    BLOCK_FLOWCTL = 0x008
    BCAST_RCAST = 0x010
    NODE_ID128 = 0x020
    LINK_PROTO_SEQNO = 0x040
    MCAST_RBCTL = 0x080
    GAP_ACK_BLOCK = 0x100
    TUNNEL_ENHANCED = 0x200
    NAGLE = 0x400
    NAMED_BCAST = 0x800


#: What tipcshm implements and therefore advertises (tipc-wire.md §13).
DEFAULT_CAPS: Final = Capability.SYN_BIT | Capability.BCAST_RCAST | Capability.NODE_ID128
#: What a current Linux kernel advertises (``TIPC_NODE_CAPABILITIES``).
KERNEL_CAPS: Final = Capability(0xFFF)

# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------

DISC_MSG_SIZE: Final = MAX_H_SIZE + NODE_ID_LEN  # 76
MEDIA_INFO_OFFSET: Final = 20  # w5
MEDIA_INFO_SIZE: Final = 32  # w5..w12
MEDIA_TYPE_OFFSET: Final = 3  # within the media info
MEDIA_ADDR_OFFSET: Final = 4
MEDIA_TYPE_UDP: Final = 3
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
TIPC_UDP_PORT: Final = 6118

W1_CAPS_SHIFT: Final = 15
W1_CAPS_BITS: Final = 13
W1_SIG_BITS: Final = 16
W1_SPARE_SHIFT: Final = 28  # between the capabilities and the message type
W0_SPARE_SHIFT: Final = 17  # the SYN / src- / dest-droppable bits discovery leaves alone
W0_SPARE_BITS: Final = 3
_MTYPE_SHIFT: Final = 29
_MTYPE_BITS: Final = 3

_CAPS_M: Final = (1 << W1_CAPS_BITS) - 1
_SIG_M: Final = (1 << W1_SIG_BITS) - 1
_W0_SPARE_M: Final = (1 << W0_SPARE_BITS) - 1
_U32_M: Final = 0xFFFFFFFF
#: w0 of every discovery message before the spare bits are or-ed in.
W0_DISCOVERY: Final = make_w0(User.LINK_CONFIG, MAX_H_SIZE, DISC_MSG_SIZE, non_seq=True)
_W0_FIXED_M: Final = _U32_M & ~(_W0_SPARE_M << W0_SPARE_SHIFT)

# w0..w4, 32 media bytes, w13, w14, 16 identity bytes
_DISC: Final = Struct(f">5I{MEDIA_INFO_SIZE}sII{NODE_ID_LEN}s")
_MEDIA_HEAD: Final = Struct(">HH")
_W0: Final = Struct(">I")  # protocol, port at MEDIA_ADDR_OFFSET

# Legacy <Z.C.N> node part (uapi tipc.h TIPC_NODE_MASK): a bearer domain with a non-zero
# node part names one node, and discovery stops once that node has a link.
NODE_MASK: Final = 0xFFF


def in_scope(domain: int, addr: int) -> bool:
    """``tipc_in_scope`` for a node in non-legacy mode: domain 0 covers every node,
    anything else only that exact address."""
    return domain == 0 or domain == addr


def domain_names_node(domain: int) -> bool:
    """True if ``domain`` names a single node (discovery stops once it is found)."""
    return bool(domain & NODE_MASK)


def _nbytes(buf: bytes | bytearray | memoryview) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


# ---------------------------------------------------------------------------------------
# UDP media address
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpMediaAddr:
    """A UDP bearer's media address: ``ip`` is 4 (IPv4) or 16 (IPv6) raw bytes."""

    ip: bytes
    port: int = TIPC_UDP_PORT

    @classmethod
    def parse(cls, host: str, port: int = TIPC_UDP_PORT) -> UdpMediaAddr:
        """From a textual IPv4/IPv6 address (ValueError if it is not one)."""
        return cls(ipaddress.ip_address(host).packed, port)

    @property
    def is_ipv6(self) -> bool:
        return len(self.ip) == 16

    @property
    def is_multicast(self) -> bool:
        return ipaddress.ip_address(self.ip).is_multicast

    @property
    def host(self) -> str:
        """The address as text (``"192.0.2.1"``, ``"2001:db8::1"``)."""
        return str(ipaddress.ip_address(self.ip))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"

    def encode(self) -> bytes:
        """The 32-byte media info (``tipc_udp_addr2msg``); ValueError for a bad address."""
        if len(self.ip) not in (4, 16):
            raise ValueError(f"UDP media address needs 4 or 16 address bytes, got {self.ip!r}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"UDP port {self.port} out of range")
        out = bytearray(MEDIA_INFO_SIZE)
        out[MEDIA_TYPE_OFFSET] = MEDIA_TYPE_UDP
        proto = ETH_P_IPV6 if self.is_ipv6 else ETH_P_IP
        _MEDIA_HEAD.pack_into(out, MEDIA_ADDR_OFFSET, proto, self.port)
        start = MEDIA_ADDR_OFFSET + _MEDIA_HEAD.size
        out[start : start + len(self.ip)] = self.ip
        return bytes(out)

    @classmethod
    def decode(
        cls, buf: bytes | bytearray | memoryview, *, allow_multicast: bool = False
    ) -> UdpMediaAddr:
        """Read 32 bytes of media info (``tipc_udp_msg2addr`` + the broadcast check of
        ``tipc_disc_rcv``). WireError for another length or media type, an unknown IP
        protocol, or (unless ``allow_multicast``) a multicast address. Bytes the kernel
        does not read (0..2, 24..31, the unused tail of an IPv4 address) are ignored."""
        n = _nbytes(buf)
        if n != MEDIA_INFO_SIZE:
            raise WireError(f"media info must be {MEDIA_INFO_SIZE} bytes, got {n}")
        raw = bytes(buf)
        if raw[MEDIA_TYPE_OFFSET] != MEDIA_TYPE_UDP:
            raise WireError(f"media type {raw[MEDIA_TYPE_OFFSET]} is not UDP ({MEDIA_TYPE_UDP})")
        proto, port = _MEDIA_HEAD.unpack_from(raw, MEDIA_ADDR_OFFSET)
        start = MEDIA_ADDR_OFFSET + _MEDIA_HEAD.size
        if proto == ETH_P_IP:
            ip = raw[start : start + 4]
        elif proto == ETH_P_IPV6:
            ip = raw[start : start + 16]
        else:
            raise WireError(f"UDP media protocol {proto:#06x} is neither IPv4 nor IPv6")
        addr = cls(ip, port)
        if not allow_multicast and addr.is_multicast:
            raise WireError(f"media address {addr} is multicast (corrupt discovery message)")
        return addr


# ---------------------------------------------------------------------------------------
# The discovery message
# ---------------------------------------------------------------------------------------

_FIELD_BITS: Final = (
    ("mtype", _MTYPE_BITS),
    ("capabilities", W1_CAPS_BITS),
    ("signature", W1_SIG_BITS),
    ("dest_domain", 32),
    ("sender", 32),
    ("net_id", 32),
    ("net_hash", 32),
    ("sugg_addr", 32),
    ("w0_spare", W0_SPARE_BITS),
    ("w1_spare", 1),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryMsg:
    """One LINK_CONFIG message, every field as the kernel reads it (see the module doc).

    ``media`` is the raw 32-byte media info (decode it with :meth:`UdpMediaAddr.decode`);
    ``identity`` the sender's 16-byte node identity. Valid when every value fits its
    field, ``media``/``identity`` have 32/16 bytes and bit 15 of ``signature`` equals
    capability bit 0; valid messages survive ``decode(encode(m)) == m``.
    """

    mtype: int
    capabilities: int
    signature: int
    dest_domain: int
    sender: int
    net_id: int
    media: bytes
    identity: bytes
    net_hash: int = 0
    sugg_addr: int = 0
    w0_spare: int = 0
    w1_spare: int = 0

    @property
    def msg_type(self) -> DiscMsgType | None:
        """``mtype`` as :class:`DiscMsgType`, or None for the undefined values 4..7."""
        try:
            return DiscMsgType(self.mtype)
        except ValueError:
            return None

    @property
    def caps(self) -> Capability:
        return Capability(self.capabilities)

    def check(self) -> None:
        """ValueError naming the first field that does not fit."""
        for name, bits in _FIELD_BITS:
            value = getattr(self, name)
            if not 0 <= value < (1 << bits):
                raise ValueError(f"DiscoveryMsg.{name}={value!r} does not fit in {bits} bits")
        if len(self.media) != MEDIA_INFO_SIZE:
            raise ValueError(f"DiscoveryMsg.media needs {MEDIA_INFO_SIZE} bytes")
        if len(self.identity) != NODE_ID_LEN:
            raise ValueError(f"DiscoveryMsg.identity needs {NODE_ID_LEN} bytes")

    def encode(self) -> bytes:
        """The 76 bytes on the wire; ValueError if a field does not fit."""
        self.check()
        w0 = W0_DISCOVERY | (self.w0_spare << W0_SPARE_SHIFT)
        # Signature first, capabilities last: the capability field owns bit 15.
        w1 = (self.mtype << _MTYPE_SHIFT) | (self.w1_spare << W1_SPARE_SHIFT) | self.signature
        w1 = (w1 & ~(_CAPS_M << W1_CAPS_SHIFT)) | (self.capabilities << W1_CAPS_SHIFT)
        return _DISC.pack(
            w0,
            w1,
            self.dest_domain,
            self.sender,
            self.net_id,
            bytes(self.media),
            self.net_hash,
            self.sugg_addr,
            bytes(self.identity),
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> DiscoveryMsg:
        """Parse one discovery message (the UDP payload; bytes after the 76 are ignored,
        as ``tipc_msg_validate`` ignores them). WireError unless it is a valid TIPC
        message of user LINK_CONFIG, non-sequenced, with a 60-byte header and size 76."""
        validate_msg(buf)
        # A valid message may still be shorter than a discovery message (any user with a
        # 24-byte header): check word 0 before unpacking all 76 bytes.
        if _nbytes(buf) < DISC_MSG_SIZE:
            raise WireError(f"{_nbytes(buf)} bytes: a discovery message has {DISC_MSG_SIZE}")
        w0, w1, w2, w3, w4, media, w13, w14, identity = _DISC.unpack_from(buf)
        if w0 & _W0_FIXED_M != W0_DISCOVERY:
            raise WireError(
                f"not a discovery message: w0={w0:#010x}, expected user 13, non-sequenced, "
                f"60-byte header, size {DISC_MSG_SIZE}"
            )
        return cls(
            mtype=(w1 >> _MTYPE_SHIFT) & ((1 << _MTYPE_BITS) - 1),
            capabilities=(w1 >> W1_CAPS_SHIFT) & _CAPS_M,
            signature=w1 & _SIG_M,
            dest_domain=w2,
            sender=w3,
            net_id=w4,
            media=media,
            identity=identity,
            net_hash=w13,
            sugg_addr=w14,
            w0_spare=(w0 >> W0_SPARE_SHIFT) & _W0_SPARE_M,
            w1_spare=(w1 >> W1_SPARE_SHIFT) & 1,
        )


def wire_signature(signature: int, capabilities: int) -> int:
    """The signature a receiver reads when ``signature`` goes out with ``capabilities``
    (bit 15 belongs to the capability field)."""
    sig_bit = 1 << (W1_SIG_BITS - 1)
    return (signature & _SIG_M & ~sig_bit) | (sig_bit if capabilities & 1 else 0)


def is_discovery(buf: bytes | bytearray | memoryview) -> bool:
    """Cheap routing test: is this frame's user LINK_CONFIG (no validation)?"""
    if _nbytes(buf) < 4:
        return False
    return w0_user(_W0.unpack_from(buf)[0]) == User.LINK_CONFIG


__all__ = [
    "W1_SIG_BITS",
    "DEFAULT_CAPS",
    "DISC_MSG_SIZE",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "KERNEL_CAPS",
    "MEDIA_INFO_SIZE",
    "MEDIA_TYPE_UDP",
    "NODE_MASK",
    "TIPC_UDP_PORT",
    "Capability",
    "DiscoveryMsg",
    "UdpMediaAddr",
    "domain_names_node",
    "in_scope",
    "is_discovery",
    "wire_signature",
]
