"""Capture 03 replay: our Link plays VM1 (c000020b, 192.0.2.11) and is fed VM2's unicast
frames with their capture times. It must answer with the message types VM1 sent, reach
ESTABLISHED, and deliver VM2's bulk name distribution and data messages in order."""

from __future__ import annotations

import random

import pytest
from pcap import Datagram, pcap_dir, read_udp

from tipcshm.core.events import Delivered, LinkDown, LinkUp
from tipcshm.core.link import Link, LinkState
from tipcshm.wire import LinkMsgType, User, decode_header
from tipcshm.wire.link import LinkProtoMsg, peek

CAPTURE = "03-two-kernels-link-setup-and-traffic.pcap"
US, PEER = "192.0.2.11", "192.0.2.12"
US_ADDR, PEER_ADDR = 0xC000020B, 0xC000020C
KERNEL_CAPS = 0x7FF  # what both kernels advertise in this capture's discovery
DELIVERED = {0, 1, 2, 3, User.CONN_MANAGER, User.GROUP_PROTOCOL, User.NAME_DISTRIBUTOR}


def unicast(frames: list[Datagram], src: str, dst: str) -> list[Datagram]:
    return [d for d in frames if d.src == src and d.dst == dst and peek(d.payload).user != 13]


def kind(frame: bytes) -> tuple[int, int]:
    info = peek(frame)
    return info.user, info.mtype


def collapse(kinds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for k in kinds:
        if not out or out[-1] != k:
            out.append(k)
    return out


def norm(frame: bytes) -> bytes:
    return frame[:6] + b"\0\0" + b"\0" * 4 + frame[12:]


@pytest.fixture(scope="module")
def capture() -> list[Datagram]:
    path = pcap_dir() / CAPTURE
    if not path.exists():
        pytest.skip(f"{path} missing")
    return read_udp(path)


def test_replay_capture_03(capture: list[Datagram]) -> None:
    theirs = unicast(capture, PEER, US)
    ours_ref = unicast(capture, US, PEER)
    first = theirs[0]
    assert LinkProtoMsg.decode(first.payload).mtype == LinkMsgType.RESET_MSG
    t0 = first.time
    link = Link(
        own_addr=US_ADDR,
        peer_addr=PEER_ADDR,
        own_if="b1",
        own_id_str="c000020b",
        peer_id_str="c000020c",
        mtu=14000,
        peer_caps=KERNEL_CAPS,
        rng=random.Random(0),
        now=t0,
    )
    link.session = LinkProtoMsg.decode(ours_ref[0].payload).session  # VM1's own session
    sent: list[bytes] = []
    events = []
    pending = list(theirs)
    now = t0
    up_at = None
    while pending:
        nxt = link.next_timer()
        if nxt is not None and nxt < pending[0].time:
            now = nxt
            link.handle_timer(now)
        else:
            dgram = pending.pop(0)
            now = dgram.time
            link.receive(dgram.payload, now)
        sent.extend(link.frames_to_send(now))
        while (ev := link.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, LinkUp) and up_at is None:
                up_at = now
                assert link.state == LinkState.LINK_ESTABLISHED
    assert up_at is not None and up_at - t0 < 0.1
    assert link.name == "c000020b:b1-c000020c:b1" and link.mtu == 14000

    # Link set-up: the same protocol messages in the same order as VM1 (the name
    # distribution is the owner's business, not the link's).
    ref_setup = [kind(d.payload) for d in ours_ref if kind(d.payload)[0] in (5, 7)][:3]
    assert (
        collapse([kind(f) for f in sent])[:3]
        == ref_setup
        == [
            (User.LINK_PROTOCOL, LinkMsgType.ACTIVATE_MSG),
            (User.LINK_PROTOCOL, LinkMsgType.STATE_MSG),
            (User.BCAST_PROTOCOL, LinkMsgType.STATE_MSG),
        ]
    )
    # Afterwards only STATEs, as VM1 sent between its data (and its final RESET when
    # VM2's bearer went away).
    assert {kind(f) for f in sent} <= {kind(d.payload) for d in ours_ref}

    # Delivery: VM2's name distribution and data, in order, fragments joined.
    want: list[bytes | int] = []
    seen: set[int] = set()
    for dgram in theirs:
        info = peek(dgram.payload)
        if info.user in (5, 7) or info.non_seq or info.seqno in seen:
            continue
        seen.add(info.seqno)
        if info.user in DELIVERED:
            want.append(norm(dgram.payload[: info.size]))
        elif info.user == User.MSG_FRAGMENTER and info.mtype == 2:  # LAST_FRAGMENT
            want.append(20000)
    got = [e.frame for e in events if isinstance(e, Delivered)]
    assert len(got) == len(want) and len(got) > 10
    for g, w in zip(got, want, strict=True):
        if isinstance(w, int):
            assert decode_header(g).data_size == w
        else:
            assert norm(g) == w
    assert peek(got[0]).user == User.NAME_DISTRIBUTOR  # the bulk comes first
    # The capture ends with `tipc bearer disable` on VM2: its RESET takes our link down.
    downs = [e for e in events if isinstance(e, LinkDown)]
    assert [d.reason for d in downs] == ["peer stopping"]
