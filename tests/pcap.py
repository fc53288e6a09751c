"""Read the TIPC-over-UDP datagrams of a classic pcap file (Ethernet, IPv4, UDP).

The reference captures of real Linux TIPC traffic are in the kernel VM harness
(``$TIPCSHM_SHARED/tools/kernel-tipc/pcaps``, by default ``../shared`` beside the
checkout). The format is simple enough that a library would cost more than it saves:
a 24-byte file header, then per packet a 16-byte record header and the frame. IPv4
fragments are put back together (the kernel's 14000-byte UDP link MTU relies on IP
fragmentation), so each :class:`Datagram` is a whole UDP payload as the receiver saw it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

_FILE_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_MAGIC_USEC = 0xA1B2C3D4
_MAGIC_NSEC = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_ETH_IPV4 = 0x0800
_ETH_VLAN = 0x8100
_IPPROTO_UDP = 17
TIPC_UDP_PORT = 6118


@dataclass(frozen=True)
class Datagram:
    """One UDP payload: capture frame number (1-based, of its last fragment), time in
    seconds from the capture's start, source and destination IPv4 address and port."""

    number: int
    time: float
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def pcap_dir() -> Path:
    """Where the reference captures are (they may be absent outside CI and this repo's
    development machines; tests skip then)."""
    shared = os.environ.get("TIPCSHM_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return base / "tools" / "kernel-tipc" / "pcaps"


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_udp(path: str | os.PathLike[str], port: int = TIPC_UDP_PORT) -> list[Datagram]:
    """Every UDP datagram to or from ``port`` in the capture, IPv4 fragments reassembled."""
    data = Path(path).read_bytes()
    magic = _FILE_HDR.unpack_from(data)[0]
    if magic not in (_MAGIC_USEC, _MAGIC_NSEC):
        raise ValueError(f"{path}: not a little-endian classic pcap file")
    linktype = _FILE_HDR.unpack_from(data)[6]
    if linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, only Ethernet is read")
    scale = 1e-6 if magic == _MAGIC_USEC else 1e-9
    off, number = _FILE_HDR.size, 0
    t0: float | None = None
    frags: dict[tuple[bytes, bytes, int], dict[int, bytes]] = {}
    frag_total: dict[tuple[bytes, bytes, int], int] = {}
    out: list[Datagram] = []
    while off + _REC_HDR.size <= len(data):
        sec, frac, incl, _orig = _REC_HDR.unpack_from(data, off)
        off += _REC_HDR.size
        frame = data[off : off + incl]
        off += incl
        number += 1
        now = sec + frac * scale
        t0 = now if t0 is None else t0
        eth_type = struct.unpack_from(">H", frame, 12)[0]
        l3 = 14
        if eth_type == _ETH_VLAN:
            eth_type = struct.unpack_from(">H", frame, 16)[0]
            l3 = 18
        if eth_type != _ETH_IPV4 or len(frame) < l3 + 20:
            continue
        ihl = (frame[l3] & 0xF) * 4
        total = struct.unpack_from(">H", frame, l3 + 2)[0]
        ident, flags_off = struct.unpack_from(">HH", frame, l3 + 4)
        if frame[l3 + 9] != _IPPROTO_UDP:
            continue
        src, dst = frame[l3 + 12 : l3 + 16], frame[l3 + 16 : l3 + 20]
        body = frame[l3 + ihl : l3 + total]
        more, frag_off = flags_off & 0x2000, (flags_off & 0x1FFF) * 8
        if more or frag_off:
            key = (src, dst, ident)
            frags.setdefault(key, {})[frag_off] = body
            if not more:
                frag_total[key] = frag_off + len(body)
            got = frags[key]
            if key not in frag_total or sum(len(b) for b in got.values()) < frag_total[key]:
                continue
            body = b"".join(got[k] for k in sorted(got))
            del frags[key], frag_total[key]
        sport, dport, ulen = struct.unpack_from(">HHH", body)
        if port not in (sport, dport):
            continue
        out.append(
            Datagram(number, now - t0, _ip(src), _ip(dst), sport, dport, bytes(body[8:ulen]))
        )
    return out
