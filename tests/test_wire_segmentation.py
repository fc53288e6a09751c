"""Codecs of MSG_FRAGMENTER (tipcshm.wire.fragment) and MSG_BUNDLER (tipcshm.wire.bundle).

Kernel vectors: the 20000-byte RDM messages of capture 03
(03-two-kernels-link-setup-and-traffic.pcap, frames 97/103 from VM2 and 114/119 from VM1)
travel as a FIRST_FRAGMENT of 13928 bytes and a LAST_FRAGMENT; the kernels sent no bundle
in any capture, so bundles are checked against the layout of tipc-wire.md §5.7.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm.wire import (
    INT_H_SIZE,
    MAX_USER_MSG_SIZE,
    DataType,
    FragType,
    Header,
    User,
    WireError,
    decode_header,
    encode_header,
    validate_msg,
)
from tipcshm.wire.bundle import (
    NEVER_BUNDLED,
    BundleBuilder,
    BundleMsg,
    align4,
    bundlable,
    unbundle,
)
from tipcshm.wire.fragment import (
    MAX_FRAGMENTS,
    MIN_FRAGMENT_MSS,
    FragmentMsg,
    fragment,
    message_importance,
)

OWN, PEER = 0xC000020C, 0xC000020B
CAPTURE = "03-two-kernels-link-setup-and-traffic.pcap"


def data_msg(
    dlen: int,
    *,
    user: int = 0,
    hsize: int = 40,
    fill: int = 0x5A,
    errcode: int = 0,
) -> bytes:
    """A NAMED (40) / DIRECT (32) / CONN (24) data message with ``dlen`` data bytes."""
    mtype = {24: DataType.CONN_MSG, 32: DataType.DIRECT_MSG}.get(hsize, DataType.NAMED_MSG)
    hdr = Header(
        user=user,
        hsize=hsize,
        size=hsize + dlen,
        mtype=int(mtype),
        errcode=errcode,
        prev_node=OWN,
        orig_port=1234,
        dest_port=5678,
        orig_node=OWN,
        dest_node=PEER if hsize > 24 else 0,
        name_type=18888 if hsize >= 40 else 0,
        name_instance=17 if hsize >= 40 else 0,
    )
    return encode_header(hdr) + bytes((fill + i) & 0xFF for i in range(dlen))


def capture_frames(user: int) -> list[bytes]:
    path = pcap_dir() / CAPTURE
    if not path.exists():
        pytest.skip(f"kernel capture {path} not available")
    out = []
    for dgram in read_udp(path):
        try:
            hdr = decode_header(dgram.payload)
        except WireError:
            continue
        if hdr.user == user:
            out.append(dgram.payload)
    return out


# -- fragmenter codec -------------------------------------------------------------------


def test_capture_fragments_decode_and_reencode_byte_for_byte() -> None:
    frames = capture_frames(User.MSG_FRAGMENTER)
    assert len(frames) == 4
    decoded = [FragmentMsg.decode(f) for f in frames]
    for frame, frag in zip(frames, decoded, strict=True):
        assert frag.encode() == frame
        assert frag.importance == 0 and frag.nof_fragms == 0
    assert [(f.frag_type, f.fragm_no) for f in decoded] == [
        (FragType.FIRST_FRAGMENT, 1),
        (FragType.LAST_FRAGMENT, 2),
    ] * 2
    # the first fragment's payload starts with the complete original header
    assert decode_header(decoded[0].payload).size == 20040
    assert decode_header(decoded[2].payload).size == 20032


def test_our_fragments_of_the_capture_message_match_the_kernels() -> None:
    """Rebuild VM2's 20040-byte NAMED message from its two fragments, fragment it again
    with the kernel's segment size (13928) and compare with the kernel's bytes, link
    words aside."""
    frames = capture_frames(User.MSG_FRAGMENTER)
    first, last = FragmentMsg.decode(frames[0]), FragmentMsg.decode(frames[1])
    original = first.payload + last.payload
    ours = fragment(original, 13928, own_addr=first.header.prev_node, dest_addr=PEER)
    assert len(ours) == 2
    for mine, theirs in zip(ours, frames[:2], strict=True):
        assert mine[8:12] == bytes(4)  # link ack/seqno: the link stamps them later
        assert mine[:8] == theirs[:8] and mine[12:] == theirs[12:]


@st.composite
def fragment_msgs(draw: st.DrawFn) -> FragmentMsg:
    msg = FragmentMsg.build(
        frag_type=draw(st.sampled_from(list(FragType))),
        fragm_no=draw(st.integers(0, MAX_FRAGMENTS)),
        nof_fragms=draw(st.integers(0, 0xFFFF)),
        importance=draw(st.integers(0, 7)),
        own_addr=draw(st.integers(0, 2**32 - 1)),
        dest_addr=draw(st.integers(0, 2**32 - 1)),
        payload=draw(st.binary(max_size=200)),
    )
    hdr = dataclasses.replace(
        msg.header,
        link_ack=draw(st.integers(0, 0xFFFF)),
        link_seqno=draw(st.integers(0, 0xFFFF)),
        bcast_ack=draw(st.integers(0, 0xFFFF)),
    )
    return FragmentMsg(hdr, msg.payload)


@given(fragment_msgs())
@settings(max_examples=200)
def test_fragment_msg_round_trip(msg: FragmentMsg) -> None:
    raw = msg.encode()
    assert FragmentMsg.decode(raw) == msg
    assert FragmentMsg.decode(raw + b"trailing") == msg


@given(st.binary(max_size=120))
@settings(max_examples=300)
def test_fragment_decode_fuzz_raises_only_wire_error(raw: bytes) -> None:
    try:
        msg = FragmentMsg.decode(raw)
    except WireError:
        return
    assert msg.encode() == raw[: msg.header.size]


def test_fragment_decode_rejects_other_users_and_types() -> None:
    good = FragmentMsg.build(
        frag_type=FragType.FRAGMENT,
        fragm_no=2,
        importance=1,
        own_addr=1,
        dest_addr=2,
        payload=b"abcd",
    ).encode()
    FragmentMsg.decode(good)
    other_user = bytearray(good)
    other_user[0] = (other_user[0] & 0xE1) | (int(User.MSG_BUNDLER) << 1)
    with pytest.raises(WireError, match="MSG_FRAGMENTER"):
        FragmentMsg.decode(bytes(other_user))
    bad_type = bytearray(good)
    bad_type[4] = 3 << 5
    with pytest.raises(WireError, match="fragment type"):
        FragmentMsg.decode(bytes(bad_type))
    with pytest.raises(WireError):
        FragmentMsg.decode(good[:-1])


# -- fragment() ------------------------------------------------------------------------


def test_fragment_layout() -> None:
    msg = data_msg(1000, user=2)
    frags = fragment(msg, 400, own_addr=OWN, dest_addr=PEER)
    chunk = 400 - INT_H_SIZE
    assert len(frags) == -(-len(msg) // chunk) == 3
    decoded = [FragmentMsg.decode(f) for f in frags]
    assert [d.frag_type for d in decoded] == [
        FragType.FIRST_FRAGMENT,
        FragType.FRAGMENT,
        FragType.LAST_FRAGMENT,
    ]
    assert [d.fragm_no for d in decoded] == [1, 2, 3]
    assert [len(f) for f in frags] == [400, 400, len(msg) - 2 * chunk + INT_H_SIZE]
    for d in decoded:
        h = d.header
        assert (h.prev_node, h.orig_node, h.dest_node) == (OWN, OWN, PEER)
        assert d.importance == 2 and h.hsize == INT_H_SIZE
        assert (h.link_ack, h.link_seqno, h.bcast_ack) == (0, 0, 0)
    assert b"".join(d.payload for d in decoded) == msg


def test_fragment_importance_follows_msg_importance() -> None:
    assert message_importance(decode_header(data_msg(0, user=3))) == 3
    # a data message carrying an error code is a system message (importance 4)
    rejected = data_msg(500, user=1, errcode=2)
    frags = fragment(rejected, 200, own_addr=OWN, dest_addr=PEER)
    assert {FragmentMsg.decode(f).importance for f in frags} == {4}
    distr = encode_header(
        Header(user=User.NAME_DISTRIBUTOR, hsize=40, size=40 + 400, prev_node=OWN)
    ) + bytes(400)
    assert {
        FragmentMsg.decode(f).importance for f in fragment(distr, 200, own_addr=1, dest_addr=2)
    } == {4}


def test_fragment_refuses_what_it_should_not_split() -> None:
    msg = data_msg(100)
    with pytest.raises(ValueError, match="fits"):
        fragment(msg, len(msg), own_addr=OWN, dest_addr=PEER)
    with pytest.raises(ValueError, match="below"):
        fragment(data_msg(1000), MIN_FRAGMENT_MSS - 1, own_addr=OWN, dest_addr=PEER)
    with pytest.raises(ValueError, match="valid"):
        fragment(msg[:-1], 100, own_addr=OWN, dest_addr=PEER)
    with pytest.raises(ValueError, match="u32"):
        fragment(data_msg(1000), 400, own_addr=-1, dest_addr=PEER)
    # the smallest segment size still carries the longest header in the first fragment
    frags = fragment(data_msg(MAX_USER_MSG_SIZE), MIN_FRAGMENT_MSS, own_addr=1, dest_addr=2)
    assert len(frags) <= MAX_FRAGMENTS
    decode_header(FragmentMsg.decode(frags[0]).payload)


# -- bundler ---------------------------------------------------------------------------


def test_bundle_layout() -> None:
    a, b, c = data_msg(5, user=1), data_msg(0, hsize=24), data_msg(7, hsize=32, user=3)
    builder = BundleBuilder(a, own_addr=OWN, dest_addr=PEER, max_size=1000)
    assert builder.try_add(b) and builder.try_add(c)
    raw = builder.encode()
    assert builder.count == 3 and builder.size == len(raw)
    outer = validate_msg(raw)
    assert outer.user == User.MSG_BUNDLER and outer.hsize == INT_H_SIZE
    assert (outer.prev_node, outer.orig_node, outer.dest_node) == (OWN, OWN, PEER)
    assert outer.name_instance == (3 << 16) | 1  # w9: count 3, importance of the first
    offsets = [INT_H_SIZE, INT_H_SIZE + align4(len(a))]
    offsets.append(offsets[1] + align4(len(b)))
    assert raw[offsets[0] : offsets[0] + len(a)] == a
    assert raw[offsets[1] : offsets[1] + len(b)] == b
    assert raw[offsets[2] :] == c
    assert raw[offsets[0] + len(a) : offsets[1]] == bytes(offsets[1] - offsets[0] - len(a))
    assert len(raw) == offsets[2] + len(c)  # no padding after the last message
    assert unbundle(raw) == [a, b, c]
    assert encode_header(builder.header()) == raw[:INT_H_SIZE]
    with pytest.raises(ValueError, match="not a valid"):
        BundleBuilder(a[:-1], own_addr=OWN, dest_addr=PEER, max_size=1000)


def test_bundle_room_and_refusals() -> None:
    a = data_msg(57)  # 97 bytes, padded to 100 inside the bundle
    builder = BundleBuilder(a, own_addr=OWN, dest_addr=PEER, max_size=INT_H_SIZE + 100 + 60)
    assert not builder.try_add(data_msg(21))  # 61 bytes: one too many
    assert builder.try_add(data_msg(20))  # exactly 60
    assert builder.size == INT_H_SIZE + 160 and not builder.try_add(data_msg(0, hsize=24))
    for user in NEVER_BUNDLED:
        msg = encode_header(Header(user=user, hsize=40, size=44)) + bytes(4)
        assert not bundlable(msg, 1000)
        with pytest.raises(ValueError):
            BundleBuilder(msg, own_addr=1, dest_addr=2, max_size=1000)
    big = data_msg(100)
    assert not bundlable(big, INT_H_SIZE + len(big))
    assert bundlable(big, INT_H_SIZE + len(big) + 1)
    assert not bundlable(b"short", 1000)


msgs = st.builds(
    data_msg,
    st.integers(0, 120),
    user=st.integers(0, 3),
    hsize=st.sampled_from([24, 32, 40]),
    fill=st.integers(0, 255),
)


@given(st.lists(msgs, min_size=1, max_size=12), st.integers(200, 1500))
@settings(max_examples=200)
def test_unbundle_inverts_bundle_builder(messages: list[bytes], max_size: int) -> None:
    first, rest = messages[0], messages[1:]
    if not bundlable(first, max_size):
        return
    builder = BundleBuilder(first, own_addr=OWN, dest_addr=PEER, max_size=max_size)
    added = [first] + [m for m in rest if builder.try_add(m)]
    raw = builder.encode()
    assert len(raw) <= max_size
    assert unbundle(raw) == added
    decoded = BundleMsg.decode(raw)
    assert decoded.encode() == raw and decoded.messages == added
    assert decoded.count == len(added) and decoded.importance == message_importance(
        decode_header(first)
    )


@given(st.lists(msgs, min_size=2, max_size=6), st.data())
@settings(max_examples=200)
def test_bundle_msg_round_trip_keeps_padding(messages: list[bytes], data: st.DataObject) -> None:
    builder = BundleBuilder(messages[0], own_addr=OWN, dest_addr=PEER, max_size=66000)
    for m in messages[1:]:
        assert builder.try_add(m)
    raw = bytearray(builder.encode())
    # the kernel does not clear the padding: any bytes there must survive re-encoding
    pos = INT_H_SIZE
    for m in messages[:-1]:
        end = pos + len(m)
        for i in range(end, align4(end - INT_H_SIZE) + INT_H_SIZE):
            raw[i] = data.draw(st.integers(0, 255))
        pos = align4(end - INT_H_SIZE) + INT_H_SIZE
    msg = BundleMsg.decode(bytes(raw))
    assert msg.encode() == bytes(raw)
    assert BundleMsg.decode(msg.encode()) == msg
    assert msg.messages == messages


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_unbundle_fuzz_raises_only_wire_error(raw: bytes) -> None:
    try:
        inner = unbundle(raw)
    except WireError:
        return
    assert inner and all(validate_msg(m).size == len(m) for m in inner)


@given(st.lists(msgs, min_size=1, max_size=5), st.integers(0, 10_000), st.integers(0, 255))
@settings(max_examples=300)
def test_unbundle_of_a_damaged_bundle_raises_only_wire_error(
    messages: list[bytes], where: int, value: int
) -> None:
    builder = BundleBuilder(messages[0], own_addr=OWN, dest_addr=PEER, max_size=66000)
    for m in messages[1:]:
        builder.try_add(m)
    raw = bytearray(builder.encode())
    raw[where % len(raw)] = value
    try:
        inner = unbundle(bytes(raw))
    except WireError:
        return
    assert all(validate_msg(m).size == len(m) for m in inner)


def test_unbundle_inconsistencies() -> None:
    a, b = data_msg(3), data_msg(8)
    builder = BundleBuilder(a, own_addr=OWN, dest_addr=PEER, max_size=1000)
    builder.try_add(b)
    raw = builder.encode()
    w9 = struct.unpack_from(">I", raw, 36)[0]
    wrong_count = raw[:36] + struct.pack(">I", w9 + (1 << 16)) + raw[40:]
    with pytest.raises(WireError, match="announces 3"):
        unbundle(wrong_count)
    # an inner size running past the bundle
    long_inner = bytearray(raw)
    struct.pack_into(">I", long_inner, 40, struct.unpack_from(">I", raw, 40)[0] + 200)
    with pytest.raises(WireError):
        unbundle(bytes(long_inner))
    # a few trailing bytes that cannot be a message
    grown = bytearray(raw + bytes(8))
    struct.pack_into(">I", grown, 0, struct.unpack_from(">I", raw, 0)[0] + 8)
    with pytest.raises(WireError, match="left"):
        unbundle(bytes(grown))
    with pytest.raises(WireError, match="empty"):
        unbundle(encode_header(Header(user=User.MSG_BUNDLER, hsize=40, size=40)))
    frag = fragment(data_msg(300), 200, own_addr=1, dest_addr=2)[0]
    nested = bytearray(BundleBuilder(a, own_addr=1, dest_addr=2, max_size=1000).encode())
    nested += bytes(align4(len(nested)) - len(nested)) + frag
    struct.pack_into(
        ">I", nested, 0, (struct.unpack_from(">I", nested, 0)[0] & ~0x1FFFF) | len(nested)
    )
    struct.pack_into(">I", nested, 36, (2 << 16) | 0)
    with pytest.raises(WireError, match="inside a bundle"):
        unbundle(bytes(nested))
    with pytest.raises(WireError, match="MSG_BUNDLER"):
        unbundle(a)
