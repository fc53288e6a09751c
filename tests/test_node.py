"""Tests for tipcshm.core.node: the node FSM table, admission (SELF_DOWN_PEER_LEAVING
discards, SELF_UP_PEER_COMING), NodeUp/NodeDown, with a scripted fake link."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipcshm.core.errors import LocalProtocolError, RemoteProtocolError
from tipcshm.core.events import CoreEvent, Delivered, LinkDown, LinkUp, NodeDown, NodeUp
from tipcshm.core.node import NODE_STATES, TRANSITIONS, NodeEvent, NodeState, PeerNode
from tipcshm.wire import Header, LinkMsgType, User, encode_header
from tipcshm.wire.link import LinkProtoMsg

OWN, PEER = 0x1001, 0x2002
MEDIA = b"m" * 32


class FakeLink:
    """Emits the events a test scripts for its next receive; validates nothing."""

    def __init__(self) -> None:
        self.is_up = False
        self.mtu = 1472
        self.mss = 1432
        self.name = "own:eth0-peer:eth0"
        self.script: deque[list[CoreEvent | str]] = deque()
        self.received: list[bytes] = []
        self.sent: list[bytes] = []
        self.events: deque[CoreEvent] = deque()
        self.timer: float | None = 0.0
        self.resets = 0

    def receive(self, frame: bytes | memoryview, now: float) -> None:
        frame = bytes(frame)
        if frame.endswith(b"BAD!"):
            raise RemoteProtocolError("fake link rejects it")
        self.received.append(frame)
        for step in self.script.popleft() if self.script else []:
            self._do(step)

    def _do(self, step: CoreEvent | str) -> None:
        if isinstance(step, LinkUp):
            self.is_up = True
        elif isinstance(step, LinkDown):
            self.is_up = False
        if isinstance(step, CoreEvent):
            self.events.append(step)

    def send(self, msg: bytes, now: float) -> None:
        if not self.is_up:
            raise LocalProtocolError("down")
        self.sent.append(msg)

    def congested(self, importance: int) -> bool:
        return importance == 3

    def reset(self, now: float, reason: str = "reset by caller") -> None:
        self.resets += 1
        if self.is_up:
            self._do(LinkDown(PEER, self.name, reason))

    def frames_to_send(self, now: float) -> list[bytes]:
        out, self.sent = self.sent, []
        return out

    def next_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        for step in self.script.popleft() if self.script else []:
            self._do(step)

    def next_event(self) -> CoreEvent | None:
        return self.events.popleft() if self.events else None


def _node() -> tuple[PeerNode, FakeLink]:
    node = PeerNode(addr=PEER, identity=b"p" * 16)
    link = FakeLink()
    node.add_link(link, media=MEDIA)
    return node, link


def _events(node: PeerNode) -> list[CoreEvent]:
    out = []
    while (ev := node.next_event()) is not None:
        out.append(ev)
    return out


def _proto(mtype: LinkMsgType, *, redundant: bool = False) -> bytes:
    return LinkProtoMsg(
        mtype=mtype,
        prev_node=PEER,
        orig_node=PEER,
        dest_node=OWN,
        redundant_link=redundant,
        max_pkt=1472,
        body=LinkProtoMsg.if_name_body("eth0"),
    ).encode()


def _data(payload: bytes = b"hello") -> bytes:
    hdr = Header(
        user=User.LOW_IMPORTANCE,
        hsize=32,
        size=32 + len(payload),
        mtype=3,
        prev_node=PEER,
        orig_node=PEER,
        dest_node=OWN,
    )
    return encode_header(hdr) + payload


UP = LinkUp(PEER, "l", 1472)


def test_table_is_complete_over_kernel_names() -> None:
    assert {s.name for s in NODE_STATES} == {
        "SELF_DOWN_PEER_DOWN",
        "SELF_UP_PEER_UP",
        "SELF_DOWN_PEER_LEAVING",
        "SELF_UP_PEER_COMING",
        "SELF_COMING_PEER_UP",
        "SELF_LEAVING_PEER_DOWN",
        "NODE_FAILINGOVER",
        "NODE_SYNCHING",
    }
    assert NodeState.SELF_UP_PEER_UP == 0xAA and NodeState.SELF_DOWN_PEER_LEAVING == 0xD1
    # Every state has an answer to the contact events; targets are states.
    for s in NodeState:
        assert (s, NodeEvent.SELF_LOST_CONTACT_EVT) in TRANSITIONS
    assert set(TRANSITIONS.values()) <= set(NodeState)
    # Illegal pairs stay out (the kernel logs them): e.g. synch end in SELF_DOWN_PEER_DOWN.
    assert (NodeState.SELF_DOWN_PEER_DOWN, NodeEvent.NODE_SYNCH_END_EVT) not in TRANSITIONS


def test_new_node_discards_until_clean_reset() -> None:
    node, link = _node()
    assert node.state == NodeState.SELF_DOWN_PEER_LEAVING
    for frame in (
        _proto(LinkMsgType.STATE_MSG),
        _data(),
        _proto(LinkMsgType.RESET_MSG, redundant=True),
        _proto(LinkMsgType.ACTIVATE_MSG, redundant=True),
    ):
        node.receive(frame, 0.0)
    assert link.received == [] and node.statistics().discarded_peer_leaving == 4
    node.receive(_proto(LinkMsgType.RESET_MSG), 0.0)
    assert node.state == NodeState.SELF_DOWN_PEER_DOWN and len(link.received) == 1
    node.receive(_data(), 0.0)
    assert len(link.received) == 2


def _bring_up(node: PeerNode, link: FakeLink, *, via_state: bool) -> list[CoreEvent]:
    node.receive(_proto(LinkMsgType.RESET_MSG), 0.0)
    if via_state:
        link.script.append([UP])
        node.receive(_proto(LinkMsgType.STATE_MSG), 0.0)
    else:
        link.script.append([UP])
        node.receive(_proto(LinkMsgType.ACTIVATE_MSG), 0.0)
    return _events(node)


def test_up_on_activate_waits_for_peer() -> None:
    node, link = _node()
    evs = _bring_up(node, link, via_state=False)
    assert evs == [UP]
    assert node.state == NodeState.SELF_UP_PEER_COMING and not node.is_up and node.link_up
    # A RESET/ACTIVATE does not show the peer's link up; a STATE does.
    node.receive(_proto(LinkMsgType.ACTIVATE_MSG), 0.0)
    assert node.state == NodeState.SELF_UP_PEER_COMING
    node.receive(_proto(LinkMsgType.STATE_MSG), 0.0)
    assert node.state == NodeState.SELF_UP_PEER_UP and node.is_up
    assert _events(node) == [NodeUp(PEER, b"p" * 16)]


def test_up_on_state_is_node_up_at_once_and_before_data() -> None:
    node, link = _node()
    node.receive(_proto(LinkMsgType.RESET_MSG), 0.0)
    link.script.append([UP, Delivered(PEER, b"x")])
    node.receive(_data(), 0.0)
    evs = _events(node)
    assert evs == [UP, NodeUp(PEER, b"p" * 16), Delivered(PEER, b"x")]


def test_data_in_peer_coming_makes_node_up_before_delivery() -> None:
    node, link = _node()
    _bring_up(node, link, via_state=False)
    link.script.append([Delivered(PEER, b"d")])
    node.receive(_data(), 0.0)
    assert _events(node) == [NodeUp(PEER, b"p" * 16), Delivered(PEER, b"d")]


def test_timeout_down_goes_to_peer_leaving_and_discards() -> None:
    node, link = _node()
    _bring_up(node, link, via_state=True)
    assert node.is_up
    down = LinkDown(PEER, "l", "link timeout")
    link.script.append([down])
    node.handle_timer(1.0)
    assert _events(node) == [down, NodeDown(PEER, "link timeout")]
    assert node.state == NodeState.SELF_DOWN_PEER_LEAVING and not node.is_up
    n = len(link.received)
    node.receive(_proto(LinkMsgType.STATE_MSG), 1.0)
    node.receive(_data(), 1.0)
    assert len(link.received) == n
    node.receive(_proto(LinkMsgType.RESET_MSG), 1.0)
    assert node.state == NodeState.SELF_DOWN_PEER_DOWN


def test_peer_reset_down_goes_to_peer_down() -> None:
    node, link = _node()
    _bring_up(node, link, via_state=True)
    down = LinkDown(PEER, "l", "peer reset")
    link.script.append([down])
    node.receive(_proto(LinkMsgType.RESET_MSG), 2.0)
    assert _events(node) == [down, NodeDown(PEER, "peer reset")]
    assert node.state == NodeState.SELF_DOWN_PEER_DOWN
    # It comes back at once: the link goes up again and NodeUp repeats.
    link.script.append([UP])
    node.receive(_proto(LinkMsgType.STATE_MSG), 2.0)
    assert _events(node) == [UP, NodeUp(PEER, b"p" * 16)]
    assert node.statistics().up_count == 2 and node.statistics().down_count == 1


def test_down_before_node_up_reports_no_node_down() -> None:
    node, link = _node()
    _bring_up(node, link, via_state=False)
    down = LinkDown(PEER, "l", "link timeout")
    link.script.append([down])
    node.handle_timer(1.0)
    assert _events(node) == [down]
    assert node.state == NodeState.SELF_DOWN_PEER_DOWN


def test_malformed_frames_change_nothing() -> None:
    node, link = _node()
    with pytest.raises(RemoteProtocolError):
        node.receive(b"\x00" * 10, 0.0)
    truncated = _proto(LinkMsgType.RESET_MSG)[:30]
    with pytest.raises(RemoteProtocolError):
        node.receive(truncated, 0.0)
    assert node.state == NodeState.SELF_DOWN_PEER_LEAVING and link.received == []
    # Admitted in SELF_UP_PEER_COMING as proof of the peer's link, but the link rejects
    # it: the PEER_ESTABL_CONTACT it implied is not applied.
    _bring_up(node, link, via_state=False)
    _events(node)
    with pytest.raises(RemoteProtocolError):
        node.receive(_data(b"BAD!"), 0.0)
    assert node.state == NodeState.SELF_UP_PEER_COMING and _events(node) == []


def test_send_and_misuse() -> None:
    node, link = _node()
    with pytest.raises(LocalProtocolError):
        node.send(_data(), 0.0)
    assert node.congested(0)  # nowhere to send counts as congested
    _bring_up(node, link, via_state=True)
    assert not node.congested(0) and node.congested(3)
    node.send(b"msg", 0.0)
    assert node.frames_to_send(0.0) == [(b"msg", MEDIA)]
    with pytest.raises(LocalProtocolError):
        node.add_link(FakeLink(), media=MEDIA)
    node.receive(_data(), 0.0, bearer_id=3)
    assert node.statistics().no_link == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_property_fuzz(data: bytes) -> None:
    node, link = _node()
    before = (node.state, node.statistics())
    try:
        node.receive(data, 0.0)
    except RemoteProtocolError:
        assert (node.state, node.statistics()) == before


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reset", "reset_red", "activate", "state", "data"]),
            st.sampled_from(["", "up", "down_timeout", "down_reset"]),
        ),
        max_size=30,
    )
)
def test_property_up_down_alternate(steps: list[tuple[str, str]]) -> None:
    """NodeUp and NodeDown strictly alternate, start with NodeUp, and is_up says which
    came last; NodeUp only while a link is up."""
    node, link = _node()
    frames = {
        "reset": _proto(LinkMsgType.RESET_MSG),
        "reset_red": _proto(LinkMsgType.RESET_MSG, redundant=True),
        "activate": _proto(LinkMsgType.ACTIVATE_MSG),
        "state": _proto(LinkMsgType.STATE_MSG),
        "data": _data(),
    }
    seen: list[type] = []
    up_now = False
    for frame_kind, action in steps:
        script: list[CoreEvent | str] = []
        if action == "up" and not link.is_up:
            script = [UP]
        elif action.startswith("down") and link.is_up:
            script = [LinkDown(PEER, "l", "peer reset" if action == "down_reset" else "x")]
        link.script.append(script)
        node.receive(frames[frame_kind], 0.0)
        if link.script:
            link.script.clear()
        for ev in _events(node):
            if isinstance(ev, (LinkUp, LinkDown)):
                up_now = isinstance(ev, LinkUp)
            if isinstance(ev, (NodeUp, NodeDown)):
                if isinstance(ev, NodeUp):
                    assert up_now
                seen.append(type(ev))
    assert seen == [NodeUp, NodeDown] * (len(seen) // 2) + [NodeUp] * (len(seen) % 2)
    assert node.is_up == (bool(seen) and seen[-1] is NodeUp)
