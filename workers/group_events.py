"""Group subscriptions of the name-table worker: member events for communication groups.

The kernel's group socket subscribes to its group's service type through the topology
service (net/tipc/group.c tipc_group_create / tipc_group_member_evt) and learns from its
PUBLISHED/WITHDRAWN events which sockets joined and left. Here the name-table worker, which
applies every binding change, writes those events itself: a socket asks with
``control.OP_GROUP_SUB`` (see :mod:`tipcshm.shm.control`), and from then on every binding of
its type whose scope equals the subscription's (a node-scope subscription: only this
node's node-scope bindings, the only ones there are) that is added or removed produces one
:func:`tipcshm.wire.group.build_member_event` frame in the socket's inbox, in the order the
name table applied the changes, the socket's own binding included (the client skips it).

- A removal caused by the worker's sweep of a socket of this node that closed or whose
  process died carries :data:`~tipcshm.wire.group.EVT_GONE` (no LEAVE of its own may
  follow); a removal because a peer node or a bearer went away (PURGE_NODE, RESET_BEARER)
  or an ordinary unbind does not.
- Frames go through this process's own private lane into each subscriber's inbox (never
  the shared overflow lane), so the socket can check whose they are
  (:func:`tipcshm.shm.control.from_nametable_worker`). A lane that is full (a subscriber
  that does not read) loses the frame, which is counted in its entry (``S_GROUP_DROPS``)
  and the node's ``group_event_drops``: the worker never queues for a reader, so it never
  grows because of one; a socket that sees its drop count move re-reads the replica.
- The subscription lives in the socket-table entry (``S_GROUP_TYPE``/``S_GROUP_SCOPE``),
  written by the worker only; a restarted worker reloads it (:meth:`GroupEvents.load`) and
  goes on. Frames the dead worker left in its lanes stay readable and trusted (the header
  names it as the predecessor). So that a subscriber does not read the successor's events
  before the predecessor's (the inbox polls its lanes round robin), the successor holds a
  subscriber's events until the predecessor's lane into that inbox is drained (bounded
  like a lane: past :data:`MAX_HELD` frames the rest are dropped and counted).
- Events stop when the subscription ends, when the entry turns CLOSING or is freed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from tipcshm.constants import TIPC_NODE_SCOPE, TIPC_PUBLISHED, TIPC_WITHDRAWN
from tipcshm.core.nametable import BindingAdded, BindingRemoved
from tipcshm.shm.lane import Inbox, InboxError, InboxNoLane, Producer
from tipcshm.shm.layout import S_PORT, S_STATE, NodeSegment, SockState, inbox_name
from tipcshm.wire.group import EVT_GONE, build_member_event

log = logging.getLogger("tipcshm.workers.nametable")

MAX_HELD = 4096  # events held for one subscriber while its predecessor lane drains
LOG_INTERVAL = 5.0

Change = tuple[BindingAdded | BindingRemoved, bool]  # (the change, caused by a sweep)


@dataclass(slots=True)
class _Sub:
    slot: int
    port: int
    type: int
    scope: int
    since: int = 0  # index of the first change of the current batch it is told of
    inbox: Inbox | None = None
    producer: Producer | None = None
    held: deque[bytes] = field(default_factory=deque)
    clear: bool = False  # the predecessor's lane into its inbox is drained (or absent)


class GroupEvents:
    """The subscriptions, by port and by type, and the writing of their frames."""

    def __init__(self, seg: NodeSegment, own: int) -> None:
        self.seg = seg
        self.own = own
        self.by_port: dict[int, _Sub] = {}
        self.by_type: dict[int, dict[int, _Sub]] = {}
        self._predecessor: tuple[int, int] = (0, 0)
        self._next_log = 0.0

    # -- subscriptions ---------------------------------------------------------------
    def load(self, valid_type: int) -> None:
        """Take over the subscriptions recorded in OPEN entries (a restart); clear the
        ones that make no sense (scribbled: the entry's owner gets no events)."""
        seg = self.seg
        self._predecessor = seg.name_event_writers()[0]
        for slot in seg.group_subscribers():
            port = seg.u32[(seg.sock_off(slot) + S_PORT) // 4]
            type_, scope = seg.group_sub(slot)
            if type_ < valid_type or scope not in (2, 3) or not port:
                log.warning("socket-table entry %d: bad group subscription cleared", slot)
                seg.bump("bad_requests")
                seg.set_group_sub(slot, 0, 0)
                continue
            self._add(_Sub(slot, port, type_, scope))

    def subscription(self, port: int) -> tuple[int, int] | None:
        s = self.by_port.get(port)
        return None if s is None else (s.type, s.scope)

    def subscribe(self, slot: int, port: int, type: int, scope: int, since: int) -> None:
        """Start telling ``port`` (entry ``slot``) of changes of ``type`` from change
        ``since`` of the current batch on (the caller validated everything)."""
        self.seg.set_group_sub(slot, type, scope)
        self._add(_Sub(slot, port, type, scope, since=since))

    def unsubscribe(self, port: int) -> None:
        s = self.by_port.pop(port, None)
        if s is None:
            return
        subs = self.by_type.get(s.type)
        if subs is not None:
            subs.pop(port, None)
            if not subs:
                del self.by_type[s.type]
        if self.seg.u32[(self.seg.sock_off(s.slot) + S_PORT) // 4] == port:
            self.seg.set_group_sub(s.slot, 0, 0)
        if s.inbox is not None:
            s.inbox.detach()
            s.inbox = s.producer = None

    def _add(self, s: _Sub) -> None:
        old = self.by_port.get(s.port)
        if old is not None:
            self.unsubscribe(s.port)
        self.by_port[s.port] = s
        self.by_type.setdefault(s.type, {})[s.port] = s

    def close(self) -> None:
        for port in list(self.by_port):
            s = self.by_port.pop(port)
            if s.inbox is not None:
                s.inbox.detach()
        self.by_type.clear()

    # -- events ------------------------------------------------------------------------
    def changed(self, changes: list[Change]) -> None:
        """Tell every subscriber of the changes of one batch, in order."""
        if not self.by_port:
            return
        seg = self.seg
        for i, (change, gone) in enumerate(changes):
            b = change.binding
            subs = self.by_type.get(b.type)
            if not subs:
                continue
            if b.scope == TIPC_NODE_SCOPE and b.node != self.own:
                continue  # never happens (node scope stays home), but never tell of it
            event = TIPC_PUBLISHED if isinstance(change, BindingAdded) else TIPC_WITHDRAWN
            for s in list(subs.values()):
                if s.scope != b.scope or i < s.since:
                    continue
                off = seg.sock_off(s.slot)
                if (
                    seg.u32[(off + S_PORT) // 4] != s.port
                    or seg.u32[(off + S_STATE) // 4] != SockState.OPEN
                ):
                    continue  # closing: the sweep ends the subscription
                frame = build_member_event(
                    event,
                    own_node=self.own,
                    dest_port=s.port,
                    type=b.type,
                    lower=b.lower,
                    upper=b.upper,
                    port=b.port,
                    node=b.node,
                    flags=EVT_GONE if gone and event == TIPC_WITHDRAWN else 0,
                )
                self._write(s, frame)
        for s in self.by_port.values():
            s.since = 0

    def flush(self) -> None:
        """Forget subscribers whose entry was freed behind the worker's back (its owner
        may free an entry it never bound with); write what is held for subscribers whose
        predecessor lane has drained since."""
        seg = self.seg
        for s in list(self.by_port.values()):
            if seg.u32[(seg.sock_off(s.slot) + S_PORT) // 4] != s.port:
                self.unsubscribe(s.port)
            elif s.held and self._ready(s):
                self._drain_held(s)

    def _write(self, s: _Sub, frame: bytes) -> None:
        if not self._ready(s):
            if len(s.held) >= MAX_HELD:
                self.seg.count_group_event(s.slot, dropped=True)
            else:
                s.held.append(frame)
            return
        if s.held:
            self._drain_held(s)
            if s.held:
                if len(s.held) >= MAX_HELD:
                    self.seg.count_group_event(s.slot, dropped=True)
                else:
                    s.held.append(frame)
                return
        self._put(s, frame)

    def _drain_held(self, s: _Sub) -> None:
        while s.held:
            if not self._put(s, s.held[0]):
                if s.producer is not None:
                    # full: the held frames are lost like any frame to a full lane
                    for _ in s.held:
                        self.seg.count_group_event(s.slot, dropped=True)
                s.held.clear()
                return
            s.held.popleft()

    def _put(self, s: _Sub, frame: bytes) -> bool:
        """Write one frame into ``s``'s inbox; False if it could not be (counted as a
        drop when the lane is full or no private lane is free; an inbox that is gone or
        closed is the socket closing, which is no drop)."""
        p = self._producer(s)
        if p is None:
            return False
        try:
            ok = p.write(frame)
        except (InboxError, ValueError):
            ok = False
            self._detach(s)
        if not ok:
            if s.inbox is not None and not s.inbox.closed:
                self.seg.count_group_event(s.slot, dropped=True)
            return False
        self.seg.count_group_event(s.slot, dropped=False)
        return True

    def _producer(self, s: _Sub) -> Producer | None:
        if s.producer is not None:
            return s.producer
        seg = self.seg
        try:
            inbox = Inbox.attach(inbox_name(seg.node, s.port), trust=seg.trust, tag=seg.tag)
        except FileNotFoundError:
            return None  # the socket is going away
        except (OSError, ValueError) as exc:
            # out of descriptors, or an inbox that fails the trust checks: the event is
            # lost, and said so
            self.seg.count_group_event(s.slot, dropped=True)
            now = time.monotonic()
            if now >= self._next_log:  # at most one line per LOG_INTERVAL
                self._next_log = now + LOG_INTERVAL
                log.warning("group events for socket %#010x: inbox not usable: %s", s.port, exc)
            return None
        try:
            p = inbox.producer(overflow=False)
        except InboxNoLane:  # every private lane is taken by a live producer
            inbox.detach()
            self.seg.count_group_event(s.slot, dropped=True)
            return None
        except InboxError:
            inbox.detach()
            return None
        s.inbox, s.producer = inbox, p
        return p

    def _detach(self, s: _Sub) -> None:
        if s.inbox is not None:
            s.inbox.detach()
        s.inbox = s.producer = None

    def _ready(self, s: _Sub) -> bool:
        """No undrained lane of the predecessor worker in ``s``'s inbox."""
        if s.clear:
            return True
        pred = self._predecessor
        if not pred[0]:
            s.clear = True
            return True
        if self._producer(s) is None or s.inbox is None:
            return True  # nothing to order against: _put decides
        inbox = s.inbox
        for lane in range(inbox.lanes):
            if inbox.lane_producer(lane) == pred:
                info = inbox.lane_info(lane)
                if info["tail"] != info["head"]:
                    return False
        s.clear = True
        return True
