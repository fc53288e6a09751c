"""tipcshm.core.reassembly.Reassembler: fragments in, the original message out.

Kernel vector: the two 20000-byte RDM messages of capture 03
(03-two-kernels-link-setup-and-traffic.pcap; VM2's NAMED message in frames 97 + 103,
VM1's DIRECT reply in frames 114 + 119).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.reassembly import Reassembler
from tipcshm.wire import (
    INT_H_SIZE,
    MAX_MSG_SIZE,
    MAX_USER_MSG_SIZE,
    FragType,
    Header,
    User,
    WireError,
    decode_header,
    encode_header,
    validate_msg,
)
from tipcshm.wire.fragment import FragmentMsg, fragment

OWN, PEER = 0x01001001, 0x01001002
CAPTURE = "03-two-kernels-link-setup-and-traffic.pcap"
_PATTERN = bytes(range(256)) * 260


def make_msg(dlen: int, *, hsize: int = 40, user: int = 0, shift: int = 0) -> bytes:
    hdr = Header(
        user=user,
        hsize=hsize,
        size=hsize + dlen,
        mtype=2 if hsize >= 40 else 3,
        prev_node=OWN,
        orig_port=7,
        dest_port=9,
        orig_node=OWN,
        dest_node=PEER if hsize > 24 else 0,
        extra=bytes(max(0, hsize - 44)),
    )
    return encode_header(hdr) + _PATTERN[shift : shift + dlen]


def frag(ftype: FragType, no: int, payload: bytes) -> bytes:
    return FragmentMsg.build(
        frag_type=ftype,
        fragm_no=no,
        importance=0,
        own_addr=OWN,
        dest_addr=PEER,
        payload=payload,
    ).encode()


def test_capture_fragments_reassemble_into_the_20000_byte_messages() -> None:
    path = pcap_dir() / CAPTURE
    if not path.exists():
        pytest.skip(f"kernel capture {path} not available")
    frames = []
    for dgram in read_udp(path):
        try:
            if decode_header(dgram.payload).user == User.MSG_FRAGMENTER:
                frames.append(dgram.payload)
        except WireError:
            continue
    assert len(frames) == 4
    r = Reassembler()
    results = [r.push(f) for f in frames]
    assert results[0] is None and results[2] is None
    messages = [m for m in results if m is not None]
    assert len(messages) == 2
    for msg, dest in zip(messages, (0xC000020B, 0xC000020C), strict=True):
        hdr = validate_msg(msg)
        assert hdr.data_size == 20000 and hdr.size == len(msg)
        assert hdr.user == User.LOW_IMPORTANCE and hdr.dest_node == dest
        # the joined message re-encodes byte for byte: header codec + its data
        assert encode_header(hdr) + msg[hdr.hsize :] == msg
    # the kernel's message: the fragment payloads, joined
    assert (
        messages[0] == FragmentMsg.decode(frames[0]).payload + FragmentMsg.decode(frames[1]).payload
    )
    stats = r.statistics()
    assert (stats.fragments, stats.reassembled, stats.errors, stats.partial_bytes) == (4, 2, 0, 0)


@given(
    dlen=st.integers(1, MAX_USER_MSG_SIZE),
    hsize=st.sampled_from([24, 32, 40, 44, 60]),
    mss=st.integers(128, 14000),
    shift=st.integers(0, 255),
)
@settings(max_examples=200, deadline=None)
def test_fragment_then_push_gives_back_the_message(
    dlen: int, hsize: int, mss: int, shift: int
) -> None:
    msg = make_msg(dlen, hsize=hsize, shift=shift)
    if len(msg) <= mss:
        with pytest.raises(ValueError, match="fits"):
            fragment(msg, mss, own_addr=OWN, dest_addr=PEER)
        return
    frags = fragment(msg, mss, own_addr=OWN, dest_addr=PEER)
    assert all(len(f) <= mss for f in frags)
    r = Reassembler()
    for f in frags[:-1]:
        assert r.push(memoryview(f)) is None
        assert r.busy
    assert r.push(frags[-1]) == msg
    assert not r.busy
    # and the slot is ready for the next message
    assert [r.push(f) for f in frags][-1] == msg


def test_fragment_or_last_without_first() -> None:
    r = Reassembler()
    for ftype in (FragType.FRAGMENT, FragType.LAST_FRAGMENT):
        with pytest.raises(RemoteProtocolError, match="without a FIRST"):
            r.push(frag(ftype, 2, b"xxxx"))
    assert r.statistics().errors == 2


def test_first_while_open_drops_the_partial_message() -> None:
    frags = fragment(make_msg(500), 200, own_addr=OWN, dest_addr=PEER)
    r = Reassembler()
    r.push(frags[0])
    with pytest.raises(RemoteProtocolError, match="FIRST_FRAGMENT while"):
        r.push(frags[0])
    assert not r.busy
    # the rest of the old train now belongs to nothing
    with pytest.raises(RemoteProtocolError):
        r.push(frags[1])


def test_wrong_fragment_number() -> None:
    frags = fragment(make_msg(1000), 200, own_addr=OWN, dest_addr=PEER)
    r = Reassembler()
    r.push(frags[0])
    with pytest.raises(RemoteProtocolError, match="expected 2"):
        r.push(frags[2])
    assert not r.busy
    with pytest.raises(RemoteProtocolError, match="numbered 2"):
        r.push(frag(FragType.FIRST_FRAGMENT, 2, make_msg(300)[:100]))


def test_more_or_fewer_bytes_than_the_header_announces() -> None:
    msg = make_msg(300)
    r = Reassembler()
    r.push(frag(FragType.FIRST_FRAGMENT, 1, msg[:200]))
    with pytest.raises(RemoteProtocolError, match="joined"):
        r.push(frag(FragType.FRAGMENT, 2, msg[200:] + b"extra"))
    assert not r.busy
    r.push(frag(FragType.FIRST_FRAGMENT, 1, msg[:200]))
    with pytest.raises(RemoteProtocolError, match="last fragment ends"):
        r.push(frag(FragType.LAST_FRAGMENT, 2, msg[200:-1]))
    assert r.statistics().partial_bytes == 0


def test_first_fragment_must_start_with_a_valid_header_of_a_bigger_message() -> None:
    r = Reassembler()
    with pytest.raises(RemoteProtocolError, match="header"):
        r.push(frag(FragType.FIRST_FRAGMENT, 1, b"\x00" * 100))
    whole = make_msg(20)
    with pytest.raises(RemoteProtocolError, match="bytes of a"):
        r.push(frag(FragType.FIRST_FRAGMENT, 1, whole))
    assert not r.busy


def test_garbage_leaves_a_partial_message_alone() -> None:
    msg = make_msg(600)
    frags = fragment(msg, 300, own_addr=OWN, dest_addr=PEER)
    r = Reassembler()
    r.push(frags[0])
    before = r.statistics().partial_bytes
    with pytest.raises(RemoteProtocolError, match="not a fragment"):
        r.push(b"\x00" * 50)
    with pytest.raises(RemoteProtocolError, match="not a fragment"):
        r.push(make_msg(10))
    assert r.busy and r.statistics().partial_bytes == before
    for f in frags[1:-1]:
        r.push(f)
    assert r.push(frags[-1]) == msg


def test_reset_drops_the_partial_message() -> None:
    frags = fragment(make_msg(600), 300, own_addr=OWN, dest_addr=PEER)
    r = Reassembler()
    r.push(frags[0])
    r.reset()
    assert not r.busy and r.statistics().partial_bytes == 0
    with pytest.raises(RemoteProtocolError):
        r.push(frags[1])


def _mutations(frames: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    mutated = st.tuples(st.sampled_from(frames), st.integers(0, 10_000), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    )
    return st.lists(
        st.one_of(st.sampled_from(frames), mutated, st.binary(max_size=80)), max_size=12
    )


_TRAIN = fragment(make_msg(900), 250, own_addr=OWN, dest_addr=PEER)


@given(_mutations(_TRAIN))
@settings(max_examples=300)
def test_fuzz_push_raises_only_remote_protocol_error(frames: list[bytes]) -> None:
    r = Reassembler()
    for f in frames:
        try:
            out = r.push(f)
        except RemoteProtocolError:
            continue
        if out is not None:
            assert validate_msg(out).size == len(out)
        assert r.statistics().partial_bytes <= MAX_MSG_SIZE


def test_a_partial_message_never_exceeds_the_announced_size() -> None:
    """An endless train of empty-or-small fragments cannot make the slot grow past the
    original header's size (<= 66000 + 60)."""
    big = make_msg(MAX_USER_MSG_SIZE, hsize=60)
    r = Reassembler()
    r.push(frag(FragType.FIRST_FRAGMENT, 1, big[:1000]))
    no = 2
    with pytest.raises(RemoteProtocolError, match="joined"):
        while True:
            r.push(frag(FragType.FRAGMENT, no, bytes(14000 - INT_H_SIZE)))
            no += 1
            assert r.statistics().partial_bytes <= len(big) <= MAX_MSG_SIZE
    assert not r.busy
