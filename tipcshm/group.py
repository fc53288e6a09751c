"""Communication groups: what a TIPC socket does once it joined one (TIPC_GROUP_JOIN), and
:class:`Group`, the Pythonic face on top.

The kernel's model (net/tipc/group.c, socket.c), which this follows call for call:

* ``setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, struct.pack("4I", type, instance, scope,
  flags))`` subscribes the socket to the bindings of ``type`` (the name-table worker then
  hands it a member-event frame for every binding that comes or goes), takes the bindings
  that exist as members, binds ``{type, instance}`` and sends each member a JOIN.
* The decisions (member states, per-pair windows, broadcast sequence numbers, re-sorting,
  events) are the sans-IO :class:`tipcshm.core.group.Group`; this module moves frames
  between it and the inboxes: it feeds the frames and events arriving in the socket's
  inbox, writes what the core wants sent, and hands the application what the core
  delivered, in order.
* Sending without an address broadcasts (GRP_BCAST_MSG: one copy per local member and one
  per other node hosting members, which the bearer worker there hands to its members);
  to a service address it anycasts to one member of that instance; to a socket address
  it unicasts; to a service range it multicasts to the members of the range's lower bound.
  A member whose window is used up blocks the sender (BlockingIOError when it must not
  wait) until its reader advertises more: nothing is dropped or overwritten.
* Member events (TIPC_GROUP_MEMBER_EVTS) arrive as 0-byte messages with MSG_OOB
  (MSG_OOB | MSG_EOR for a leave) from the member's socket address.

A grouped socket is still a :class:`tipcshm.sock.Socket`: it becomes a
:class:`GroupSocket` (the class is swapped on join and back on leave), so sockets that
never join pay nothing on their paths.

Protocol frames the core wants sent never block the caller: a full lane keeps them
queued, in order per destination, until it has room (the kernel's link queues). While a
sender waits for a window, or a receiver for a message, the socket keeps reading its
inbox, so two members blocked on each other still exchange advertisements.
"""

from __future__ import annotations

import contextlib
import select
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tipcshm import plumbing, wire
from tipcshm import sock as _sock
from tipcshm.addresses import ServiceAddr, ServiceRange, SocketAddr, parse_address
from tipcshm.client import NodeUnreachable
from tipcshm.constants import (
    AF_TIPC,
    MSG_DONTWAIT,
    MSG_EOR,
    MSG_OOB,
    MSG_PEEK,
    MSG_TRUNC,
    SOCK_DGRAM,
    SOCK_RDM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
    TIPC_GROUP_JOIN,
    TIPC_GROUP_LEAVE,
    TIPC_GROUP_LOOPBACK,
    TIPC_GROUP_MEMBER_EVTS,
    TIPC_MAX_USER_MSG_SIZE,
    TIPC_NODE_SCOPE,
    TIPC_PUBLISHED,
    TIPC_WITHDRAWN,
)
from tipcshm.core.group import Delivery, Member
from tipcshm.core.group import Group as _Core
from tipcshm.errors import (
    AccessDenied,
    HostUnreachable,
    InvalidArgument,
    MessageTooLong,
    NodeNotRunning,
    SocketClosed,
    TipcError,
    WouldBlock,
)
from tipcshm.shm import control
from tipcshm.shm.lane import InboxClosed, InboxError
from tipcshm.wire import group as gw

__all__ = ["Group", "GroupMember", "GroupMessage", "GroupSocket", "join"]

_GROUP_REQ = struct.Struct("=IIII")  # struct tipc_group_req: type, instance, scope, flags
_W01 = wire.HDR_W01
_HDR44 = wire.HDR44
_U32 = wire.U32
_USER_SHIFT = wire.W0_USER_SHIFT
_TOP_SRV = wire.User.TOP_SRV
_GROUP_PROTOCOL = wire.User.GROUP_PROTOCOL
_HSZ_SHIFT = wire.W0_HSIZE_BYTES_SHIFT
_HSZ_MASK = wire.W0_HSIZE_BYTES_MASK
_BCAST_W1 = wire.DataType.GRP_BCAST_MSG
_MCAST_W1 = wire.DataType.GRP_MCAST_MSG
_UCAST_W1 = wire.DataType.GRP_UCAST_MSG
_PUMP_BATCH = 256  # frames read per pass of the inbox
_GONE_AFTER = 4096  # frames read before a pending "member gone" is applied anyway
_WAIT = 0.02  # a blocked call re-reads its inbox at least this often (seconds)
_LEAVE_WAIT = 2.0  # close/leave waits this long for room for its LEAVE messages
_ALL = 0xFFFFFFFF


def _scope_of(raw: int) -> int:
    """tipc_sk_join: node scope stays; anything else is cluster scope."""
    return TIPC_NODE_SCOPE if raw == TIPC_NODE_SCOPE else TIPC_CLUSTER_SCOPE


def join(sock: _sock.Socket, value: Any) -> None:
    """TIPC_GROUP_JOIN on ``sock`` (value already checked by Socket.setsockopt)."""
    type_, instance, raw_scope, flags = _GROUP_REQ.unpack_from(memoryview(value).cast("B"))
    scope = _scope_of(raw_scope)
    if getattr(sock, "_group", None) is not None:
        raise AccessDenied(f"TIPC_GROUP_JOIN: socket {sock._port:#010x} is already in a group")
    if sock.type not in (SOCK_RDM, SOCK_DGRAM):
        _join_connection_socket(sock, type_, instance, scope)
        return
    client = sock._client
    own, port = sock._own, sock._port
    with sock._ctl_lock:
        err = sock._control(control.OP_GROUP_SUB, type_, 0, 0, scope, 0)
        if err:
            raise TipcError(err, f"TIPC_GROUP_JOIN {type_}: subscribing failed ({err})")
        try:
            # Taken after the subscription is live: what changes later comes as events.
            snapshot = [
                (b.node, b.port, b.lower)
                for b in client.table().overlapping(type_, 0, _ALL)
                if b.scope == scope
                and (scope == TIPC_CLUSTER_SCOPE or b.node == own)
                and not (b.node == own and b.port == port)
            ]
            core = _Core(
                own,
                port,
                type_,
                instance,
                scope,
                loopback=bool(flags & TIPC_GROUP_LOOPBACK),
                events=bool(flags & TIPC_GROUP_MEMBER_EVTS),
            )
            core.join(snapshot)
            binding = _bind_group(sock, type_, instance, scope)
        except BaseException:
            with contextlib.suppress(OSError):
                sock._control(control.OP_GROUP_UNSUB, type_, 0, 0, scope, 0)
            raise
        GroupSocket._become(sock, core, binding)
    assert isinstance(sock, GroupSocket)
    # The kernel handles group protocol messages as they arrive, whatever the application
    # is doing: the keeper reads the inbox of a member none of whose calls is under way
    # (see _Keeper), so a member that only sends still answers JOINs and ACK requests.
    _keeper.add(sock)
    sock._gflush()
    sock._sel_touch()


@dataclass(slots=True)
class _HeldGroup:
    """What a SEQPACKET/STREAM socket that joined holds: tipc_sk_join accepts connection
    sockets, but their sends never take the group paths, so all that shows is the group
    binding, the type getsockopt answers, and bind/connect refused."""

    type: int
    binding: tuple[int, int, int, int, int]


def _bind_group(
    sock: _sock.Socket, type_: int, instance: int, scope: int
) -> tuple[int, int, int, int, int]:
    key = (sock._port + sock._pub_count + 1) & 0xFFFFFFFF
    err = sock._control(control.OP_BIND, type_, instance, instance, scope, key)
    if err:
        raise TipcError(err, f"TIPC_GROUP_JOIN {type_}: binding {{{type_}, {instance}}}")
    sock._pub_count += 1
    binding = (type_, instance, instance, scope, key)
    sock._bindings.append(binding)
    return binding


def _join_connection_socket(sock: _sock.Socket, type_: int, instance: int, scope: int) -> None:
    with sock._ctl_lock:
        binding = _bind_group(sock, type_, instance, scope)
        sock._group = _HeldGroup(type_, binding)  # type: ignore[attr-defined]


def _unbind_group(sock: _sock.Socket, binding: tuple[int, int, int, int, int]) -> None:
    with sock._ctl_lock:
        if binding in sock._bindings:
            t, lo, up, sc, key = binding
            err = sock._control(control.OP_UNBIND, t, lo, up, sc, key)
            sock._bindings.remove(binding)
            if err:
                raise TipcError(err, f"TIPC_GROUP_LEAVE: withdrawing {{{t}, {lo}}}")


def leave(sock: _sock.Socket) -> None:
    """TIPC_GROUP_LEAVE on ``sock`` (its value already checked): EINVAL outside a group."""
    if isinstance(sock, GroupSocket):
        sock.leave()
        return
    held = getattr(sock, "_group", None)
    if held is None:  # tipc_sk_leave
        raise InvalidArgument(f"TIPC_GROUP_LEAVE: socket {sock._port:#010x} is in no group")
    _unbind_group(sock, held.binding)
    sock._group = None  # type: ignore[attr-defined]


class GroupSocket(_sock.Socket):
    """An RDM/DGRAM socket while it is a group member (see the module docstring)."""

    _group: _Core
    _gbinding: tuple[int, int, int, int, int]
    _gout: dict[tuple[int, int], deque[bytes]]
    _ggone: list[gw.MemberEvent]
    _gseen: int
    _gcond: threading.Condition
    _gwaiters: int
    _glocal: tuple[int, list[int]]
    _grr: int
    _gbad: int
    _gsend_lock: threading.Lock
    _gw0: int
    _gscope_w1: int

    @staticmethod
    def _become(sock: _sock.Socket, core: _Core, binding: tuple[int, int, int, int, int]) -> None:
        s: Any = sock
        s._group = core
        s._gbinding = binding
        s._gout = {}  # (node, port) -> deque of frames waiting for room in that lane
        s._ggone = []  # "member gone" events waiting for the inbox to be drained
        s._gseen = 0  # frames read since the first of them
        s._gcond = threading.Condition(threading.Lock())
        s._gwaiters = 0
        s._glocal = (-1, [])  # (type token, local member ports) for broadcasts
        s._grr = 0  # anycast round robin
        s._gbad = 0
        s._gsend_lock = threading.Lock()
        s._routes.clear()
        s.__class__ = _group_class(type(sock))
        s._gset_w0()

    # -- header words ------------------------------------------------------------------
    def _gset_w0(self) -> None:
        # tipc_sk_join: group messages are dest-droppable whatever the option says
        self._gw0 = wire.make_w0(
            self._importance,
            wire.GROUP_H_SIZE,
            0,
            dest_droppable=True,
            src_droppable=self._src_droppable,
        )
        self._gscope_w1 = self._group.scope << wire.W1_LOOKUP_SCOPE_SHIFT

    def _update_w0(self) -> None:
        super()._update_w0()
        if getattr(self, "_group", None) is not None:
            self._gset_w0()

    # -- what the stdlib calls do differently in a group -------------------------------------
    def unbind(self, address: Any) -> None:
        self._check_open()
        raise AccessDenied(f"unbind(): socket {self._port:#010x} is a group member")

    def connect(self, address: Any) -> None:
        self._check_open()
        raise InvalidArgument(
            f"connect(): socket {self._port:#010x} is in group {self._group.type}"
        )

    def close(self) -> None:
        if not self._closed and self._io_refs <= 0:
            with contextlib.suppress(OSError, ValueError):
                self._leave(unbind=False)
        super().close()

    def leave(self) -> None:
        """TIPC_GROUP_LEAVE: LEAVE to every member, withdraw the group binding, stop the
        subscription; the socket is an ordinary RDM/DGRAM socket again."""
        self._leave(unbind=True)
        _keeper.discard(self)
        self.__class__ = _plain_class(type(self))
        self._group = None  # type: ignore[assignment]  # getsockopt answers 0 again
        self._routes.clear()
        self._sel_touch()

    def _leave(self, unbind: bool) -> None:
        core = self._group
        with self._recv_lock:
            core.leave()
            self._gflush(wait=_LEAVE_WAIT)
        if unbind:
            _unbind_group(self, self._gbinding)
        with contextlib.suppress(OSError):
            self._control(control.OP_GROUP_UNSUB, core.type, 0, 0, core.scope, 0)

    # -- frames out ----------------------------------------------------------------------
    def _gflush(self, wait: float = 0.0) -> None:
        """Write what the core wants sent; a full lane keeps its frames queued, in order.
        With ``wait``, keep trying (reading our inbox meanwhile) for that many seconds."""
        out = self._gout
        for node, port, frame in self._group.frames_to_send():
            q = out.get((node, port))
            if q is not None:
                q.append(frame)
            elif not self._gput_frame(node, port, frame):
                out[(node, port)] = deque([frame])
        if not out:
            return
        end = time.monotonic() + wait
        while True:
            for key in list(out):
                q = out[key]
                while q and self._gput_frame(key[0], key[1], q[0]):
                    q.popleft()
                if not q:
                    del out[key]
            if not out or time.monotonic() >= end:
                return
            time.sleep(0.001)

    def _gput_frame(self, node: int, port: int, frame: bytes) -> bool:
        """One whole frame into ``<node:port>``'s lane; True when written or when there is
        nowhere to write it (a destination gone), False when its lane is full."""
        client = self._client
        try:
            p = client.producer(port) if node == self._own else client.remote_lane(node)
        except (NodeUnreachable, HostUnreachable):
            return True
        if p is None:
            return True
        try:
            with p.lock:
                ok = p.put_locked(frame, _U32.unpack_from(frame)[0], b"")
        except (InboxError, ValueError):
            return True
        if ok:
            p.notify()
            return True
        return client.gone(node, port)

    def _gput(
        self, node: int, port: int, head: bytes, w0: int, data: Any, nonblock: bool, deadline: Any
    ) -> bool:
        """A data frame into ``<node:port>``'s lane, waiting for room (reading our inbox
        meanwhile) unless ``nonblock``; False when the destination is gone."""
        client = self._client
        q = self._gout.get((node, port))
        if q:  # protocol frames to it are waiting: they go first
            self._gflush()
        while True:
            try:
                p = client.producer(port) if node == self._own else client.remote_lane(node)
            except (NodeUnreachable, HostUnreachable):
                return False
            if p is None:
                return False
            try:
                with p.lock:
                    ok = p.put_locked(head, w0, data)
            except (InboxError, ValueError):
                return False
            if ok:
                p.notify()
                return True
            if client.gone(node, port):
                return False
            if nonblock:
                raise WouldBlock(
                    f"group member <{node:#010x}:{port:#010x}> is full (its reader is behind)"
                )
            self._gwait_room(p, len(head) + len(data), deadline)

    # -- frames in -----------------------------------------------------------------------
    def _from_worker(self, lane: int) -> bool:
        """The lane is the name-table worker's: only it may tell us of members."""
        return control.from_nametable_worker(self._client.seg, self._inbox, lane)

    def _gpump(self, limit: int = _PUMP_BATCH) -> int:
        """Read up to ``limit`` frames of our inbox into the core (receive lock held);
        returns how many."""
        inbox = self._inbox
        core = self._group
        n = 0
        while n < limit:
            r = inbox.poll()
            if r is None:
                break
            buf, off, length, lane = r
            try:
                w0 = _U32.unpack_from(buf, off)[0]
                user = (w0 >> _USER_SHIFT) & 0xF
                if user == _TOP_SRV:
                    self._gevent(buf[off : off + length], lane)
                elif user == _GROUP_PROTOCOL or user <= 3:
                    if not core.receive(bytes(buf[off : off + length])):
                        self._gbad += 1
                else:
                    self._gbad += 1
            finally:
                inbox.release(lane)
            n += 1
        if self._ggone:
            self._gseen += n
            if r is None or self._gseen >= _GONE_AFTER:
                gone, self._ggone = self._ggone, []
                for ev in gone:
                    core.member_event(ev.event, ev.node, ev.port, ev.lower, node_up=True, gone=True)
        if n:
            self._gflush()
            if self._gwaiters:
                with self._gcond:
                    self._gcond.notify_all()
        return n

    def _gevent(self, frame: Any, lane: int) -> None:
        ev = gw.decode_member_event(frame)
        core = self._group
        if ev is None or ev.dest_port != self._port or ev.type != core.type:
            self._gbad += 1
            return
        if not self._from_worker(lane):
            self._gbad += 1
            return
        if ev.flags & gw.EVT_GONE and ev.node == self._own:
            # Its process wrote everything it will ever send before the worker saw it
            # go: read our inbox to the end first, so its leave follows its messages.
            if not self._ggone:
                self._gseen = 0
            self._ggone.append(ev)
            return
        node_up = ev.node == self._own or self._client.reachable(ev.node)
        core.member_event(ev.event, ev.node, ev.port, ev.lower, node_up=node_up)

    def _gwait(self, deadline: float | None, kind: str) -> None:
        """Wait a little for something to arrive (send side: for a window or room)."""
        if self._closed:
            raise SocketClosed(self._port)
        remaining = _WAIT if deadline is None else min(_WAIT, deadline - time.monotonic())
        if remaining <= 0:
            raise self._timed_out(kind, f"{kind} on group socket {self._port:#010x}")
        lock = self._recv_lock
        if lock.acquire(blocking=False):
            try:
                pumped = self._gpump()
                if not pumped and self._ready is None:
                    # nobody else reads the doorbell: sleep on it, as a receiver does
                    with contextlib.suppress(InboxClosed):
                        self._inbox.wait(remaining)
                    pumped = self._gpump()
            finally:
                lock.release()  # select mode: this re-arms the doorbell for the reactor
            if pumped or self._ready is None:
                self._client.check_alive()
                return
        # the readiness thread (or a receiving thread) reads the inbox and tells us
        with self._gcond:
            self._gwaiters += 1
            try:
                self._gcond.wait(remaining)
            finally:
                self._gwaiters -= 1
        self._client.check_alive()

    def _gwait_room(self, p: Any, size: int, deadline: float | None) -> None:
        """Wait a little for room in lane ``p``, reading our own inbox first (the member
        we wait for may be waiting for us)."""
        if self._closed:
            raise SocketClosed(self._port)
        remaining = _WAIT if deadline is None else min(_WAIT, deadline - time.monotonic())
        if remaining <= 0:
            raise self._timed_out("send", f"send on group socket {self._port:#010x}")
        lock = self._recv_lock
        if lock.acquire(blocking=False):
            try:
                self._gpump()
            finally:
                lock.release()
        p.wait_space(size, min(remaining, 0.005))
        self._client.check_alive()

    def _gnext(self, flags: int) -> Delivery:
        """The next delivered item (receive lock held), waiting per the socket's timeout."""
        core = self._group
        deadline: float | None = None
        nonblock = None
        while True:
            d = core.delivered
            if d:
                return d[0] if flags & MSG_PEEK else d.popleft()
            if self._closed:
                raise SocketClosed(self._port)
            if self._gpump():
                continue
            if nonblock is None:
                deadline, nonblock = self._deadline(flags, "recv")
            if nonblock:
                if self._inbox.closed:
                    raise NodeNotRunning(self.node, "the node stopped and closed this socket")
                raise WouldBlock(f"no message waiting on group socket {self._port:#010x}")
            remaining = (
                plumbing.WAIT_SLICE
                if deadline is None
                else min(plumbing.WAIT_SLICE, deadline - time.monotonic())
            )
            if remaining <= 0:
                raise self._timed_out("recv", f"recv on group socket {self._port:#010x}")
            try:
                if self._ready is not None:
                    self._wait_ready(select.POLLIN, remaining)
                else:  # on the doorbell, as an RDM socket waits: nobody else reads it
                    self._inbox.wait(remaining)
            except InboxClosed:
                if self._closed:
                    raise SocketClosed(self._port) from None
                raise NodeNotRunning(self.node, "the node stopped and closed this socket") from None

    def _quiesce(self) -> bool:
        with self._gcond:  # a sender waiting for a window wakes and sees the close
            self._gcond.notify_all()
        return super()._quiesce()

    def _gtake(self, flags: int) -> Delivery:
        d = self._gnext(flags)
        if not flags & MSG_PEEK and not d.event:
            self._group.consumed(d.node, d.port, d.blocks)
            self._gflush()
            self._rx_msgs += 1
            self._rx_bytes += len(d.frame) - wire.GROUP_H_SIZE
            self._flush_counters()
        return d

    # -- receiving -------------------------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        bufsize, flags = plumbing.recv_args(bufsize, flags, "recv")
        with self._recv_lock:
            d = self._gtake(flags)
        return b"" if d.event else d.frame[wire.GROUP_H_SIZE : wire.GROUP_H_SIZE + bufsize]

    def recvfrom(
        self, bufsize: int, flags: int = 0
    ) -> tuple[bytes, tuple[int, int, int, int, int]]:
        bufsize, flags = plumbing.recv_args(bufsize, flags, "recvfrom")
        with self._recv_lock:
            d = self._gtake(flags)
        data = b"" if d.event else d.frame[wire.GROUP_H_SIZE : wire.GROUP_H_SIZE + bufsize]
        return data, (TIPC_ADDR_ID, d.node, d.port, 0, 0)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        target, flags = plumbing.recv_target(buffer, nbytes, flags, "recv_into")
        with self._recv_lock:
            d = self._gtake(flags)
        if d.event:
            return 0
        data = memoryview(d.frame)[wire.GROUP_H_SIZE :]
        n = min(len(data), len(target))
        target[:n] = data[:n]
        return n

    def recvfrom_into(
        self, buffer: Any, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, tuple[int, int, int, int, int]]:
        target, flags = plumbing.recv_target(buffer, nbytes, flags, "recvfrom_into")
        with self._recv_lock:
            d = self._gtake(flags)
        n = 0
        if not d.event:
            data = memoryview(d.frame)[wire.GROUP_H_SIZE :]
            n = min(len(data), len(target))
            target[:n] = data[:n]
        return n, (TIPC_ADDR_ID, d.node, d.port, 0, 0)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[int, int, int, int, int]]:
        """As tipc_recvmsg in a group: member events are 0 bytes with MSG_OOB (and MSG_EOR
        for a leave); data carries no ancillary items."""
        bufsize, ancbufsize, flags = plumbing.recvmsg_args(bufsize, ancbufsize, flags)
        with self._recv_lock:
            d = self._gtake(flags)
        addr = (TIPC_ADDR_ID, d.node, d.port, 0, 0)
        if d.event:
            return b"", [], MSG_OOB | (MSG_EOR if d.event == TIPC_WITHDRAWN else 0), addr
        payload = d.frame[wire.GROUP_H_SIZE :]
        msg_flags = MSG_TRUNC if len(payload) > bufsize else 0
        return payload[:bufsize], [], msg_flags, addr

    def recv_member(self, flags: int = 0) -> Delivery:
        """The next item with everything the core knows of it (tipcshm.Group uses it)."""
        with self._recv_lock:
            return self._gtake(flags)

    # -- sending ---------------------------------------------------------------------------
    def send(self, data: Any, flags: int = 0) -> int:
        return self._gsend(data, flags, None)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._gsend(data, flags, None)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = flags_or_address
        if address is None:
            raise TypeError("sendto() argument 2 must be a TIPC address tuple, not None")
        return self._gsend(data, flags, address)

    def _gsend(self, data: Any, flags: int, address: Any) -> int:
        if self._closed:
            raise SocketClosed(self._port)
        if data.__class__ is not bytes and data.__class__ is not bytearray:
            data = plumbing.bytes_view(data)
        flags = plumbing.c_int(flags)
        addr = (
            None if address is None else parse_address(address, caller="sendto", check_range=False)
        )
        n = len(data)
        if n > TIPC_MAX_USER_MSG_SIZE:
            raise MessageTooLong(n, TIPC_MAX_USER_MSG_SIZE)
        if isinstance(addr, ServiceRange) and addr.lower > addr.upper:
            raise InvalidArgument(f"sendto(): {address} is an empty range")
        deadline, nonblock = self._deadline(flags, "send")
        blks = gw.blocks(wire.GROUP_H_SIZE + n)
        with self._gsend_lock:  # one sender at a time (the kernel's socket lock)
            if addr is None:
                self._gbcast(data, n, blks, None, nonblock, deadline)
            elif isinstance(addr, SocketAddr):
                self._gunicast(addr.node, addr.port, data, n, blks, nonblock, deadline)
            elif isinstance(addr, ServiceAddr):
                self._ganycast(addr.instance, data, n, blks, nonblock, deadline)
            else:
                inst = addr.lower  # tipc_send_group_mcast reads the range's lower bound
                with self._recv_lock:
                    dests = self._gmembers_of(inst)
                if not dests:
                    raise HostUnreachable(
                        addr, f"no member of group {self._group.type} has instance {inst}"
                    )
                if len(dests) == 1:
                    m = dests[0]
                    self._gunicast(m.node, m.port, data, n, blks, nonblock, deadline)
                else:
                    self._gbcast(data, n, blks, inst, nonblock, deadline)
        self._tx_msgs += 1
        self._tx_bytes += n
        self._flush_counters()
        return n

    # The core is touched under the receive lock only: the readiness thread feeds it
    # under that lock whenever the doorbell rings, so a send's checks and updates must
    # not interleave with its reading.

    def _gmembers_of(self, instance: int) -> list[Member]:
        """Members with ``instance`` that can receive (tipc_nametbl_lookup_group);
        receive lock held."""
        core = self._group
        excl = None if core.loopback else (self._own, self._port)
        return [
            m
            for m in core.members()
            if m.instance == instance
            and m.state not in (_JOINING, _LEAVING)
            and (m.node, m.port) != excl
        ]

    def _gblock(self, congested: Any, nonblock: bool, deadline: float | None, what: str) -> None:
        """tipc_wait_for_cond: wait while ``congested()`` (called under the receive lock)
        says so."""
        while True:
            with self._recv_lock:
                if not congested():
                    return
            if nonblock:
                raise WouldBlock(f"group {self._group.type}: {what} (the receiver is behind)")
            self._gwait(deadline, "send")

    def _gunicast(
        self,
        node: int,
        port: int,
        data: Any,
        n: int,
        blks: int,
        nonblock: bool,
        deadline: float | None,
    ) -> None:
        core = self._group
        if not node and not port:
            raise HostUnreachable(SocketAddr(node, port), "no member is socket <0:0>")
        found: list[Member | None] = [None]

        def congested() -> bool:
            cong, found[0] = core.cong(node, port, blks)
            self._gflush()  # cong() may have queued an ADV
            return cong

        self._gblock(congested, nonblock, deadline, f"member <{node:#010x}:{port:#010x}> is full")
        m = found[0]
        if m is None:
            raise HostUnreachable(
                SocketAddr(node, port), f"<{node:#010x}:{port:#010x}> is not a member"
            )
        self._gsend_ucast(m, data, n, blks, deadline)

    def _gsend_ucast(self, m: Member, data: Any, n: int, blks: int, deadline: float | None) -> None:
        core = self._group
        own = self._own
        w0 = self._gw0 | (wire.GROUP_H_SIZE + n)
        w1 = (_UCAST_W1 << wire.W1_MTYPE_SHIFT) | self._gscope_w1
        with self._recv_lock:
            head = _HDR44.pack(
                w0, w1, 0, own, self._port, m.port, own, m.node, core.type, 0,
                gw.grp_w10(core.bc_snd_nxt),
            )  # fmt: skip
            core.sent_unicast(m, blks)
        # The window was taken: the copy goes out even if that means waiting for room.
        self._gput(m.node, m.port, head, w0, data, False, deadline)

    def _ganycast(
        self, instance: int, data: Any, n: int, blks: int, nonblock: bool, deadline: float | None
    ) -> None:
        core = self._group
        while True:
            with self._recv_lock:
                dests = self._gmembers_of(instance)
                chosen = None
                k = len(dests)
                start = self._grr % k if k else 0
                for i in range(k):
                    m = dests[(start + i) % k]
                    cong, mm = core.cong(m.node, m.port, blks)
                    if mm is not None and not cong:
                        self._grr = start + i + 1
                        chosen = mm
                        break
                self._gflush()
            if not dests:
                raise HostUnreachable(
                    ServiceAddr(core.type, instance),
                    f"no member of group {core.type} has instance {instance}",
                )
            if chosen is not None:
                self._gsend_ucast(chosen, data, n, blks, deadline)
                return
            if nonblock:
                raise WouldBlock(
                    f"group {core.type}: every member with instance {instance} is full"
                )
            self._gwait(deadline, "send")

    def _glocal_ports(self) -> list[int]:
        """This node's sockets bound to the group's type with the group's scope (cached
        per change of that type's bindings): a broadcast's local copies."""
        core = self._group
        client = self._client
        tok = client.table_token(core.type)
        cached = self._glocal
        if cached[0] == tok:
            return cached[1]
        own, port = self._own, self._port
        ports = sorted(
            {
                b.port
                for b in client.table().overlapping(core.type, 0, _ALL)
                if b.node == own and b.scope == core.scope and (core.loopback or b.port != port)
            }
        )
        self._glocal = (tok, ports)
        return ports

    def _gbcast(
        self,
        data: Any,
        n: int,
        blks: int,
        instance: int | None,
        nonblock: bool,
        deadline: float | None,
    ) -> None:
        core = self._group

        def congested() -> bool:
            cong = core.bc_cong(blks)
            self._gflush()  # bc_cong() may have queued an ADV
            return cong

        own = self._own
        w0 = self._gw0 | (wire.GROUP_H_SIZE + n)
        mtype = _BCAST_W1 if instance is None else _MCAST_W1
        w1 = (mtype << wire.W1_MTYPE_SHIFT) | self._gscope_w1
        inst = instance or 0
        while True:
            self._gblock(congested, nonblock, deadline, "a member is full")
            with self._recv_lock:
                if core.bc_cong(blks):  # the readiness thread got in between
                    continue
                nodes = core.dest_nodes()
                if not nodes:
                    raise HostUnreachable(
                        ServiceRange(core.type, 0, _ALL), f"group {core.type} has no other member"
                    )
                local = self._glocal_ports() if own in nodes else []
                remote = [nd for nd in sorted(nodes) if nd != own]
                if nonblock:
                    # All or nothing: a copy that cannot be written now must not leave the
                    # others sent under a sequence number the sender then takes back.
                    self._gcheck_room(local, remote, wire.GROUP_H_SIZE + n)
                w10 = gw.grp_w10(core.bc_snd_nxt, ack_req=core.bcast_ack_req())
                # Counted before the copies go out, under the lock the readiness thread
                # reads under: a receiver's ACK must find the acks it answers expected
                # (the kernel holds the socket lock over both).
                core.sent_bcast(blks)
                break
        head = _HDR44.pack(w0, w1, 0, own, self._port, 0, own, 0, core.type, inst, w10)
        for p in local:
            self._gput(own, p, head, w0, data, False, deadline)
        for nd in remote:
            head = _HDR44.pack(w0, w1, 0, own, self._port, 0, own, nd, core.type, inst, w10)
            self._gput(nd, 0, head, w0, data, False, deadline)

    def _gcheck_room(self, local: list[int], remote: list[int], size: int) -> None:
        """WouldBlock unless every copy of a broadcast fits in its lane now."""
        client = self._client
        core = self._group
        for p in local:
            lane = client.producer(p)
            if lane is not None and not lane.fits(size):
                raise WouldBlock(f"group {core.type}: member <{self._own:#010x}:{p:#010x}> is full")
        for nd in remote:
            try:
                blane = client.remote_lane(nd)
            except (NodeUnreachable, HostUnreachable):
                continue
            if not blane.fits(size):
                raise WouldBlock(f"group {core.type}: the link to node {nd:#010x} is congested")

    def _gkeep(self) -> bool:
        """The keeper's turn: read what waits if no call of ours is under way."""
        if self._closed:
            return False
        if self._ready is not None or not (self._gout or self._ggone or self._inbox.pending()):
            return False
        lock = self._recv_lock
        if not lock.acquire(blocking=False):
            return False
        try:
            if self._closed or not isinstance(self, GroupSocket):
                return False
            n = self._gpump()
            if not n and self._gout:
                self._gflush()
            return bool(n)
        finally:
            lock.release()

    # -- readiness ---------------------------------------------------------------------------
    def _sel_refresh(self) -> None:
        """tipc_poll for a group member: readable while something is delivered, writable
        while the group is open (no member was found full since its window last grew)."""
        ready = self._ready
        if ready is None or self._closed:
            return
        if self._inbox.closed:
            ready.set(True, True)
            return
        # Read to the end and re-arm the doorbell every time, whether or not deliveries
        # wait for the application: an unarmed bell never rings again, and protocol
        # messages and member events (a JOIN to answer, a member to JOIN) would then sit
        # unread until the application next calls in.
        while True:
            while self._gpump():
                pass
            if not self._inbox.rearm():
                break
        ready.set(bool(self._group.delivered), self._group.open)

    # -- inspection --------------------------------------------------------------------------
    def group_members(self) -> list[tuple[int, int, int, str]]:
        """(node, port, instance, state name) of every member this socket knows."""
        with self._recv_lock:
            self._gpump()
            return [(m.node, m.port, m.instance, m.state.name) for m in self._group.members()]

    def statistics(self) -> dict[str, Any]:
        stats = super().statistics()
        core = self._group
        stats["group"] = {
            "type": core.type,
            "instance": core.instance,
            "scope": core.scope,
            "members": core.member_cnt,
            "active": core.active_cnt,
            "max_active": core.max_active,
            "bc_snd_nxt": core.bc_snd_nxt,
            "bad_frames": self._gbad + core.bad,
        }
        return stats


class _Keeper:
    """One thread per process that reads the inboxes of group members whose owner is not
    in a call: the kernel handles a member's protocol messages (JOIN, ADV, ACK requests,
    RECLAIM) on arrival, and a program that only sends, or does something else for a
    while, must still answer them. A member in a call reads its inbox itself, and one in
    select mode (fileno()) has the readiness thread; the keeper skips both. It looks
    every few milliseconds while it finds work and backs off to :data:`_KEEP_IDLE` when
    it does not, and ends when no member is left."""

    def __init__(self) -> None:
        self._socks: weakref.WeakSet[GroupSocket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, sock: GroupSocket) -> None:
        with self._lock:
            self._socks.add(sock)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tipcshm-group-keeper", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def discard(self, sock: GroupSocket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def _run(self) -> None:
        delay = _KEEP_BUSY
        while True:
            with self._lock:
                socks = list(self._socks)
                if not socks:
                    self._thread = None
                    return
            worked = False
            for sock in socks:
                with contextlib.suppress(Exception):  # a socket's trouble is its calls' to report
                    worked |= sock._gkeep()
            del socks, sock
            delay = _KEEP_BUSY if worked else min(delay * 2, _KEEP_IDLE)
            self._wake.wait(delay)
            self._wake.clear()


_KEEP_BUSY = 0.002
_KEEP_IDLE = 0.05
_keeper = _Keeper()
_JOINING = 0
_LEAVING = 7
_GROUP_CLASSES: dict[type, type] = {}
_PLAIN_CLASSES: dict[type, type] = {}


def _group_class(cls: type) -> type:
    """The grouped version of ``cls`` (a Socket or a subclass of it)."""
    if issubclass(cls, GroupSocket):
        return cls
    got = _GROUP_CLASSES.get(cls)
    if got is None:
        got = GroupSocket if cls is _sock.Socket else type(cls.__name__, (GroupSocket, cls), {})
        _GROUP_CLASSES[cls] = got
        _PLAIN_CLASSES[got] = cls
    return got


def _plain_class(cls: type) -> type:
    return _PLAIN_CLASSES.get(cls, _sock.Socket)


# -- the Pythonic face ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GroupMember:
    """A member of a group: its socket address and its instance."""

    node: int
    port: int
    instance: int


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A message or membership event from the group. ``event`` is None for data, "join"
    or "leave" for an event (``data`` is then empty)."""

    data: bytes
    node: int
    port: int
    instance: int
    event: str | None = None

    @property
    def member(self) -> GroupMember:
        return GroupMember(self.node, self.port, self.instance)


class Group:
    """A communication group membership, on a socket of its own.

    >>> with tipcshm.Group(4711, 1) as g:          # join {4711, 1}, events on
    ...     g.broadcast(b"hello")
    ...     for msg in g:                             # data and join/leave events
    ...         print(msg.member, msg.event, msg.data)

    ``scope`` is TIPC_CLUSTER_SCOPE (default) or TIPC_NODE_SCOPE; ``loopback`` also
    delivers the member's own broadcasts to it; ``events`` (default on) reports members
    joining and leaving; ``node`` names the tipcshm node (default: the default node).
    Everything raises what the socket calls raise (tipcshm.errors).
    """

    def __init__(
        self,
        type: int,  # noqa: A002 - TIPC's word for it
        instance: int,
        *,
        scope: int = TIPC_CLUSTER_SCOPE,
        loopback: bool = False,
        events: bool = True,
        node: str | None = None,
        socket_type: int = SOCK_RDM,
    ) -> None:
        flags = (TIPC_GROUP_LOOPBACK if loopback else 0) | (TIPC_GROUP_MEMBER_EVTS if events else 0)
        self.type, self.instance = type, instance
        self.socket: Any = _sock.Socket(AF_TIPC, socket_type, node=node)
        try:
            self.socket.setsockopt(
                SOL_TIPC, TIPC_GROUP_JOIN, _GROUP_REQ.pack(type, instance, scope, flags)
            )
        except BaseException:
            self.socket.close()
            raise
        self._members: dict[tuple[int, int], GroupMember] = {}

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the group and close the socket."""
        self.socket.close()

    def leave(self) -> None:
        """Leave the group; the socket stays open (an ordinary RDM socket)."""
        self.socket.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, None, 0)

    @property
    def address(self) -> tuple[int, int]:
        """This member's socket address (node, port)."""
        return self.socket._own, self.socket._port

    def members(self) -> list[GroupMember]:
        """The members this one can send to now (joined and not leaving), by address."""
        return [
            GroupMember(node, port, inst)
            for node, port, inst, state in self.socket.group_members()
            if state not in ("JOINING", "PUBLISHED", "LEAVING")
        ]

    def broadcast(self, data: Any, *, block: bool = True) -> int:
        """To every other member (and to this one with loopback)."""
        return int(self.socket.send(data, 0 if block else MSG_DONTWAIT))

    def anycast(self, instance: int, data: Any, *, block: bool = True) -> int:
        """To one member with ``instance`` (round robin, skipping full ones)."""
        return int(
            self.socket.sendto(
                data, 0 if block else MSG_DONTWAIT, (TIPC_ADDR_NAME, self.type, instance, 0)
            )
        )

    def multicast(self, instance: int, data: Any, *, block: bool = True) -> int:
        """To every member with ``instance``."""
        return int(
            self.socket.sendto(
                data,
                0 if block else MSG_DONTWAIT,
                (TIPC_ADDR_NAMESEQ, self.type, instance, instance),
            )
        )

    def unicast(
        self, member: GroupMember | tuple[int, int], data: Any, *, block: bool = True
    ) -> int:
        """To one member, by its socket address (node, port)."""
        node, port = (member.node, member.port) if isinstance(member, GroupMember) else member
        return int(
            self.socket.sendto(data, 0 if block else MSG_DONTWAIT, (TIPC_ADDR_ID, node, port, 0))
        )

    def recv(self, timeout: float | None = None) -> GroupMessage:
        """The next message or event; TimeoutError-like (tipcshm.errors) past ``timeout``."""
        s = self.socket
        old = s.gettimeout()
        if timeout is not None:
            s.settimeout(timeout)
        try:
            d = s.recv_member()
        finally:
            if timeout is not None:
                s.settimeout(old)
        if d.event == TIPC_PUBLISHED:
            return GroupMessage(b"", d.node, d.port, d.instance, "join")
        if d.event == TIPC_WITHDRAWN:
            return GroupMessage(b"", d.node, d.port, d.instance, "leave")
        return GroupMessage(d.frame[wire.GROUP_H_SIZE :], d.node, d.port, d.instance)

    def __iter__(self) -> Iterator[GroupMessage]:
        while True:
            yield self.recv()

    def fileno(self) -> int:
        return int(self.socket.fileno())

    def __repr__(self) -> str:
        return f"<tipcshm.Group {{{self.type}, {self.instance}}} {self.socket!r}>"
