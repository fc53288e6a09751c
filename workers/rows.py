"""The bearer and link rows of the node segment, as the supervisor and bearer workers
write them and tools read them (offsets from :mod:`tipcshm.shm.layout`).

Bearer row k and link rows ``k * LINKS_PER_BEARER ..`` have one writer: bearer k's
worker while it runs, the supervisor while it does not (before the first start, after a
death, while disabled). Readers treat every value as untrusted text and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tipcshm.shm.layout import (
    B_CMD_ACK,
    B_CMD_LINK,
    B_CMD_OP,
    B_CMD_REQ,
    B_CMD_RESULT,
    B_CMD_VALUE,
    B_COUNTERS,
    B_LINK_GEN,
    B_LOCAL,
    B_LOCAL_BYTES,
    B_MTU,
    B_NAME,
    B_NAME_BYTES,
    B_NET_ID,
    B_PORT,
    B_PRIORITY,
    B_STATE,
    B_TOLERANCE,
    B_WINDOW,
    BEARER_COUNTERS,
    BEARER_ENTRY,
    L_CAPS,
    L_COUNTERS,
    L_MEDIA,
    L_MEDIA_BYTES,
    L_MTU,
    L_NAME,
    L_NAME_BYTES,
    L_PEER,
    L_PEER_ID,
    L_PRIORITY,
    L_STATE,
    L_TOLERANCE,
    L_UP_SINCE_NS,
    L_WINDOW,
    LINK_COUNTER_INDEX,
    LINK_ENTRY,
    LINKS_PER_BEARER,
    MAX_BEARERS,
    BearerState,
    LinkRowState,
    NodeSegment,
)

__all__ = [
    "BearerRow",
    "bearer_row",
    "bump_link_gen",
    "clear_bearer",
    "clear_links",
    "known_peers",
    "links_down",
    "describe_bearer",
    "set_bearer_state",
    "write_link",
    "set_link_state",
    "set_link_counters",
    "read_command",
    "answer_command",
]


def _text(text: str, size: int) -> bytes:
    raw = text.encode()[: size - 1]
    return raw + b"\0" * (size - len(raw))


def _untext(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True, slots=True)
class BearerRow:
    bearer: int
    state: int
    name: str
    local: str
    port: int
    mtu: int
    net_id: int
    tolerance: int
    window: int
    priority: int
    link_gen: int
    counters: dict[str, int]


def _off(k: int) -> int:
    return NodeSegment.bearer_off(k)


def bearer_row(seg: NodeSegment, k: int) -> BearerRow | None:
    """Bearer ``k`` as read now; None for a free row or a bad index."""
    if not 0 <= k < MAX_BEARERS:
        return None
    off = _off(k)
    u32 = seg.u32
    state = u32[(off + B_STATE) // 4]
    if state == BearerState.FREE:
        return None
    return BearerRow(
        bearer=k,
        state=state,
        name=_untext(bytes(seg.mv[off + B_NAME : off + B_NAME + B_NAME_BYTES])),
        local=_untext(bytes(seg.mv[off + B_LOCAL : off + B_LOCAL + B_LOCAL_BYTES])),
        port=u32[(off + B_PORT) // 4],
        mtu=u32[(off + B_MTU) // 4],
        net_id=u32[(off + B_NET_ID) // 4],
        tolerance=u32[(off + B_TOLERANCE) // 4],
        window=u32[(off + B_WINDOW) // 4],
        priority=u32[(off + B_PRIORITY) // 4],
        link_gen=u32[(off + B_LINK_GEN) // 4],
        counters=seg.bearer_counters(k),
    )


def describe_bearer(
    seg: NodeSegment,
    k: int,
    *,
    state: int,
    name: str,
    local: str,
    port: int,
    mtu: int,
    net_id: int,
    tolerance: int,
    window: int,
    priority: int,
) -> None:
    off = _off(k)
    u32 = seg.u32
    seg.mv[off + B_NAME : off + B_NAME + B_NAME_BYTES] = _text(name, B_NAME_BYTES)
    seg.mv[off + B_LOCAL : off + B_LOCAL + B_LOCAL_BYTES] = _text(local, B_LOCAL_BYTES)
    u32[(off + B_PORT) // 4] = port
    u32[(off + B_MTU) // 4] = mtu
    u32[(off + B_NET_ID) // 4] = net_id
    u32[(off + B_TOLERANCE) // 4] = tolerance
    u32[(off + B_WINDOW) // 4] = window
    u32[(off + B_PRIORITY) // 4] = priority
    u32[(off + B_STATE) // 4] = state


def set_bearer_state(seg: NodeSegment, k: int, state: int) -> None:
    seg.u32[(_off(k) + B_STATE) // 4] = state


def clear_bearer(seg: NodeSegment, k: int) -> None:
    """Zero bearer row ``k`` except its command mailbox's sequence words (a tool waiting
    for an ack must not see REQ == ACK by accident) and its link generation."""
    off = _off(k)
    keep = {
        (off + B_CMD_REQ) // 4: seg.u32[(off + B_CMD_REQ) // 4],
        (off + B_CMD_ACK) // 4: seg.u32[(off + B_CMD_ACK) // 4],
        (off + B_LINK_GEN) // 4: seg.u32[(off + B_LINK_GEN) // 4],
    }
    seg.mv[off : off + BEARER_ENTRY] = bytes(BEARER_ENTRY)
    for i, v in keep.items():
        seg.u32[i] = v


def bump_link_gen(seg: NodeSegment, k: int) -> None:
    i = (_off(k) + B_LINK_GEN) // 4
    seg.u32[i] = (seg.u32[i] + 1) & 0xFFFFFFFF


def links_down(seg: NodeSegment, k: int) -> None:
    """Mark every link row of bearer ``k`` DOWN, keeping its peer (the worker died):
    clients stop routing into its inbox at once, and the successor learns from the rows
    which peers its predecessor was linked with (:func:`known_peers`)."""
    for row in range(k * LINKS_PER_BEARER, (k + 1) * LINKS_PER_BEARER):
        off = NodeSegment.link_off(row)
        if seg.u32[(off + L_STATE) // 4] == LinkRowState.UP:
            seg.u32[(off + L_STATE) // 4] = LinkRowState.DOWN
    bump_link_gen(seg, k)


def known_peers(seg: NodeSegment, k: int) -> set[int]:
    """The peers named by bearer ``k``'s link rows (untrusted: only ever used to hold
    frames for a while, never to signal or trust anyone)."""
    peers = set()
    for row in range(k * LINKS_PER_BEARER, (k + 1) * LINKS_PER_BEARER):
        off = NodeSegment.link_off(row)
        if seg.u32[(off + L_STATE) // 4] != LinkRowState.FREE:
            peers.add(seg.u32[(off + L_PEER) // 4])
    peers.discard(0)
    return peers


def clear_links(seg: NodeSegment, k: int) -> None:
    """Free every link row of bearer ``k`` (its worker died or stopped) and say so."""
    start = NodeSegment.link_off(k * LINKS_PER_BEARER)
    seg.mv[start : start + LINKS_PER_BEARER * LINK_ENTRY] = bytes(LINKS_PER_BEARER * LINK_ENTRY)
    bump_link_gen(seg, k)


def write_link(
    seg: NodeSegment,
    row: int,
    *,
    state: int,
    peer: int,
    name: str,
    peer_id: bytes,
    media: str,
    caps: int,
    mtu: int,
    tolerance: int,
    window: int,
    priority: int,
    up_since_ns: int,
) -> None:
    """Write a whole link row; the state last, so a reader that sees UP sees the rest."""
    off = NodeSegment.link_off(row)
    u32 = seg.u32
    u32[(off + L_PEER) // 4] = peer
    u32[(off + L_MTU) // 4] = mtu
    u32[(off + L_TOLERANCE) // 4] = tolerance
    u32[(off + L_WINDOW) // 4] = window
    u32[(off + L_PRIORITY) // 4] = priority
    u32[(off + L_CAPS) // 4] = caps
    seg.u64[(off + L_UP_SINCE_NS) // 8] = up_since_ns
    seg.mv[off + L_NAME : off + L_NAME + L_NAME_BYTES] = _text(name, L_NAME_BYTES)
    seg.mv[off + L_PEER_ID : off + L_PEER_ID + 16] = bytes(peer_id[:16]).ljust(16, b"\0")
    seg.mv[off + L_MEDIA : off + L_MEDIA + L_MEDIA_BYTES] = _text(media, L_MEDIA_BYTES)
    u32[(off + L_STATE) // 4] = state


def set_link_state(seg: NodeSegment, row: int, state: int) -> None:
    seg.u32[(NodeSegment.link_off(row) + L_STATE) // 4] = state


def free_link(seg: NodeSegment, row: int) -> None:
    off = NodeSegment.link_off(row)
    seg.mv[off : off + LINK_ENTRY] = bytes(LINK_ENTRY)


def set_link_counters(seg: NodeSegment, row: int, values: dict[str, int]) -> None:
    base = (NodeSegment.link_off(row) + L_COUNTERS) // 8
    u64 = seg.u64
    for name, v in values.items():
        u64[base + LINK_COUNTER_INDEX[name]] = max(0, int(v)) & 0xFFFFFFFFFFFFFFFF


def reset_bearer_counters(seg: NodeSegment, k: int) -> None:
    base = (_off(k) + B_COUNTERS) // 8
    for i in range(len(BEARER_COUNTERS)):
        seg.u64[base + i] = 0


def read_command(seg: NodeSegment, k: int) -> tuple[int, int, int, int] | None:
    """(req, op, link, value) of a posted and unanswered command of bearer ``k``."""
    off = _off(k)
    u32 = seg.u32
    req = u32[(off + B_CMD_REQ) // 4]
    if req == u32[(off + B_CMD_ACK) // 4]:
        return None
    return (
        req,
        u32[(off + B_CMD_OP) // 4],
        u32[(off + B_CMD_LINK) // 4],
        u32[(off + B_CMD_VALUE) // 4],
    )


def answer_command(seg: NodeSegment, k: int, req: int, result: int) -> None:
    off = _off(k)
    seg.i32[(off + B_CMD_RESULT) // 4] = result
    seg.u32[(off + B_CMD_ACK) // 4] = req  # last: the tool reads the result after it


_ = LinkRowState  # re-exported for the worker's readers
