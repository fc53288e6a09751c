"""The LINK_CONFIG codec (tipcshm.wire.discovery): round trips, fuzz, the kernel captures."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm.wire.discovery import (
    DEFAULT_CAPS,
    DISC_MSG_SIZE,
    KERNEL_CAPS,
    MEDIA_INFO_SIZE,
    Capability,
    DiscoveryMsg,
    UdpMediaAddr,
    domain_names_node,
    in_scope,
    is_discovery,
    wire_signature,
)
from tipcshm.wire.header import (
    DiscMsgType,
    Header,
    User,
    WireError,
    decode_header,
    encode_header,
)

u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.binary(min_size=4, max_size=4).filter(lambda b: not 224 <= b[0] <= 239)
ipv6 = st.binary(min_size=16, max_size=16).filter(lambda b: b[0] != 0xFF)
media_addrs = st.builds(UdpMediaAddr, st.one_of(ipv4, ipv6), st.integers(0, 0xFFFF))


@st.composite
def messages(draw: st.DrawFn) -> DiscoveryMsg:
    caps = draw(st.integers(0, 0x1FFF))
    return DiscoveryMsg(
        mtype=draw(st.integers(0, 7)),
        capabilities=caps,
        signature=wire_signature(draw(st.integers(0, 0xFFFF)), caps),
        dest_domain=draw(u32),
        sender=draw(u32),
        net_id=draw(u32),
        media=draw(
            st.one_of(media_addrs.map(UdpMediaAddr.encode), st.binary(min_size=32, max_size=32))
        ),
        identity=draw(st.binary(min_size=16, max_size=16)),
        net_hash=draw(u32),
        sugg_addr=draw(u32),
        w0_spare=draw(st.integers(0, 7)),
        w1_spare=draw(st.integers(0, 1)),
    )


def _capture_frames() -> list[tuple[str, object]]:
    out = []
    for path in sorted(pcap_dir().glob("0[1-4]-*.pcap")):
        for dgram in read_udp(path):
            if is_discovery(dgram.payload):
                out.append((path.name, dgram))
    return out


needs_pcaps = pytest.mark.skipif(not pcap_dir().is_dir(), reason="kernel captures absent")


# -- round trips and fuzz ------------------------------------------------------------------


@given(messages())
@settings(max_examples=300)
def test_message_round_trip(msg: DiscoveryMsg) -> None:
    raw = msg.encode()
    assert len(raw) == DISC_MSG_SIZE
    assert DiscoveryMsg.decode(raw) == msg
    hdr = decode_header(raw)
    assert (hdr.user, hdr.hsize, hdr.size, hdr.non_seq) == (User.LINK_CONFIG, 60, 76, True)


@given(st.binary(max_size=120))
@settings(max_examples=300)
def test_decode_garbage_gives_message_or_wire_error(raw: bytes) -> None:
    try:
        msg = DiscoveryMsg.decode(raw)
    except WireError:
        return
    assert msg.encode() == raw[:DISC_MSG_SIZE]


@given(messages(), st.lists(st.tuples(st.integers(0, 75), st.integers(0, 255)), max_size=4))
@settings(max_examples=300)
def test_decode_mutated_frames(msg: DiscoveryMsg, edits: list[tuple[int, int]]) -> None:
    raw = bytearray(msg.encode())
    for pos, value in edits:
        raw[pos] = value
    try:
        again = DiscoveryMsg.decode(raw)
    except WireError:
        return
    assert again.encode() == bytes(raw)


def test_truncated_and_foreign_frames_are_refused() -> None:
    msg = DiscoveryMsg(
        mtype=0,
        capabilities=DEFAULT_CAPS,
        signature=wire_signature(0x1234, DEFAULT_CAPS),
        dest_domain=0,
        sender=0x01020304,
        net_id=4711,
        media=UdpMediaAddr.parse("10.0.0.1").encode(),
        identity=b"x" * 16,
    )
    raw = msg.encode()
    for n in (0, 4, 24, 59, 60, 75):
        with pytest.raises(WireError):
            DiscoveryMsg.decode(raw[:n])
    assert DiscoveryMsg.decode(raw + b"trailing") == msg  # bytes past the size are ignored
    (w0,) = struct.unpack_from(">I", raw)
    for bad_w0 in (
        w0 & ~(0xF << 25) | (User.LINK_PROTOCOL << 25),  # another user
        w0 & ~(1 << 20),  # sequenced
        (w0 & ~0x1FFFF) | 80,  # size 80
    ):
        bad = struct.pack(">I", bad_w0) + raw[4:] + bytes(4)
        with pytest.raises(WireError):
            DiscoveryMsg.decode(bad)


def test_encode_refuses_fields_that_do_not_fit() -> None:
    good = DiscoveryMsg(
        mtype=0,
        capabilities=0,
        signature=0,
        dest_domain=0,
        sender=1,
        net_id=1,
        media=bytes(32),
        identity=bytes(16),
    )
    good.encode()
    for change in (
        {"mtype": 8},
        {"capabilities": 0x2000},
        {"signature": 0x10000},
        {"sender": -1},
        {"net_hash": 1 << 32},
        {"media": bytes(31)},
        {"identity": bytes(17)},
        {"w0_spare": 8},
    ):
        bad = DiscoveryMsg(**{**{f: getattr(good, f) for f in good.__slots__}, **change})
        with pytest.raises(ValueError):
            bad.encode()


# -- the bit-15 overlap ------------------------------------------------------------------


def test_capability_bit0_owns_signature_bit15() -> None:
    media, ident = bytes(32), bytes(16)
    base = dict(mtype=0, dest_domain=0, sender=1, net_id=1, media=media, identity=ident)
    # Signature without bit 15, capabilities with bit 0: the wire carries bit 15 set.
    raw = DiscoveryMsg(capabilities=0x001, signature=0x1234, **base).encode()  # type: ignore[arg-type]
    (w1,) = struct.unpack_from(">I", raw, 4)
    assert w1 & 0xFFFF == 0x9234
    assert DiscoveryMsg.decode(raw).signature == 0x9234
    # And the other way round: bit 15 of the signature is cleared by capability bit 0 = 0.
    raw = DiscoveryMsg(capabilities=0x030, signature=0xF234, **base).encode()  # type: ignore[arg-type]
    assert DiscoveryMsg.decode(raw).signature == 0x7234
    assert DiscoveryMsg.decode(raw).capabilities == 0x030
    assert wire_signature(0x1234, 0x001) == 0x9234
    assert wire_signature(0xF234, 0x030) == 0x7234


def test_capability_constants() -> None:
    assert int(DEFAULT_CAPS) == 0x031
    assert DEFAULT_CAPS == Capability.SYN_BIT | Capability.BCAST_RCAST | Capability.NODE_ID128
    assert int(KERNEL_CAPS) == 0xFFF
    assert [int(c) for c in Capability] == [1 << i for i in range(12)]
    assert Capability.NAMED_BCAST not in DEFAULT_CAPS


def test_scope_helpers() -> None:
    assert in_scope(0, 0x12345678) and in_scope(0x12345678, 0x12345678)
    assert not in_scope(0x12345679, 0x12345678)
    assert not domain_names_node(0) and not domain_names_node(0x01001000)
    assert domain_names_node(0x01001001)


# -- UDP media address -------------------------------------------------------------------


@given(media_addrs)
def test_media_round_trip(addr: UdpMediaAddr) -> None:
    raw = addr.encode()
    assert len(raw) == MEDIA_INFO_SIZE and raw[3] == 3
    assert UdpMediaAddr.decode(raw) == addr
    assert str(addr).endswith(f":{addr.port}")


@given(st.binary(min_size=0, max_size=40))
def test_media_decode_garbage(raw: bytes) -> None:
    try:
        addr = UdpMediaAddr.decode(raw)
    except WireError:
        return
    assert len(raw) == MEDIA_INFO_SIZE and not addr.is_multicast


def test_media_layout_and_refusals() -> None:
    v4 = UdpMediaAddr.parse("192.0.2.1", 6118).encode()
    assert v4 == bytes(3) + b"\x03\x08\x00\x17\xe6\xc0\x00\x02\x01" + bytes(20)
    v6 = UdpMediaAddr.parse("2001:db8::5", 7000)
    assert v6.encode()[4:8] == b"\x86\xdd\x1b\x58" and UdpMediaAddr.decode(v6.encode()) == v6
    assert str(v6) == "[2001:db8::5]:7000"
    for group in ("228.0.18.103", "224.0.0.1", "239.255.255.255", "ff02::4711"):
        raw = UdpMediaAddr.parse(group).encode()
        with pytest.raises(WireError, match="multicast"):
            UdpMediaAddr.decode(raw)
        assert UdpMediaAddr.decode(raw, allow_multicast=True).host == group
    eth = bytearray(v4)
    eth[3] = 1  # Ethernet media
    with pytest.raises(WireError):
        UdpMediaAddr.decode(bytes(eth))
    odd = bytearray(v4)
    odd[4:6] = b"\x12\x34"  # neither IPv4 nor IPv6
    with pytest.raises(WireError):
        UdpMediaAddr.decode(bytes(odd))
    with pytest.raises(ValueError):
        UdpMediaAddr(b"\x01\x02\x03", 1).encode()
    with pytest.raises(ValueError):
        UdpMediaAddr(b"\x01\x02\x03\x04", 70000).encode()


# -- the kernel captures -----------------------------------------------------------------


@needs_pcaps
def test_every_capture_discovery_frame_reencodes_byte_for_byte() -> None:
    frames = _capture_frames()
    assert len(frames) > 100
    for name, dgram in frames:
        msg = DiscoveryMsg.decode(dgram.payload)  # type: ignore[attr-defined]
        assert msg.encode() == dgram.payload, (name, dgram.number)  # type: ignore[attr-defined]


@needs_pcaps
def test_capture_fields_mean_what_the_codec_says() -> None:
    types = set()
    for name, dgram in _capture_frames():
        msg = DiscoveryMsg.decode(dgram.payload)  # type: ignore[attr-defined]
        media = UdpMediaAddr.decode(msg.media)
        # Every sender advertises its own IP and the TIPC port in the media info.
        assert media.host == dgram.src and media.port == 6118, (name, dgram.number)  # type: ignore[attr-defined]
        assert msg.net_id == 4711
        assert msg.capabilities in (0xFFF, DEFAULT_CAPS)
        # IP-derived identities: the IPv4 address then zeros, and the address is its hash.
        assert msg.identity == ipaddress.ip_address(dgram.src).packed + bytes(12)  # type: ignore[attr-defined]
        assert msg.sender == int(ipaddress.ip_address(dgram.src))  # type: ignore[attr-defined]
        # Responses name their addressee, requests nobody.
        if msg.mtype == DiscMsgType.DSC_RESP_MSG:
            assert msg.dest_domain == int(ipaddress.ip_address(dgram.dst))  # type: ignore[attr-defined]
        elif msg.mtype in (DiscMsgType.DSC_REQ_MSG, DiscMsgType.DSC_TRIAL_MSG):
            assert msg.dest_domain == 0
        types.add(msg.msg_type)
    assert {DiscMsgType.DSC_REQ_MSG, DiscMsgType.DSC_RESP_MSG, DiscMsgType.DSC_TRIAL_MSG} <= types


@pytest.mark.parametrize("hsize", [24, 40, 60])
def test_a_valid_but_short_message_is_a_wire_error(hsize: int) -> None:
    # Found by the stack's fuzz property: a well-formed TIPC message shorter than 76 bytes
    # passed validate_msg and then overran the 76-byte unpack (struct.error escaped).
    extra = bytes(max(0, hsize - 44))
    frame = encode_header(
        Header(user=User.LINK_CONFIG, hsize=hsize, size=hsize, non_seq=True, extra=extra)
    )
    with pytest.raises(WireError):
        DiscoveryMsg.decode(frame)
