"""The socket API: ``tipcshm.socket`` behaves like ``socket.socket(AF_TIPC, ...)``.

``tipcshm.socket`` (this module's :class:`Socket`) is called as the stdlib's socket class;
for families other than AF_TIPC it hands back the stdlib's own socket (:class:`_SocketMeta`).

Send path (one readable line of work per step, STYLE.md 8)::

    sendto -> resolve (replica, no round trip) -> reserve in our lane of the destination's
    inbox -> header words + payload written in place (the single copy) -> commit (+ doorbell)

Receive path: poll our inbox's lanes -> read header words and payload in place -> release.

Semantics follow net/tipc/socket.c for connectionless sockets (SOCK_RDM, SOCK_DGRAM):
anycast to a service address picks one binding of the first matching range, round robin,
local bindings preferred; a service range multicasts to every matching socket once; a
socket address sends directly. Undeliverable messages are dropped when dest-droppable is
set (the default) and otherwise come back to the sender with the TIPC error code, readable
with recvmsg ancillary data as with the kernel. Where the kernel would reject for overload,
tipcshm blocks the sender instead (RDM loses nothing); DGRAM drops and counts.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import select
import socket as _stdlib_socket
import struct
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from tipcshm import plumbing, readiness, sockfile, sockopt, wire
from tipcshm.addresses import (
    AddressLike,
    ServiceAddr,
    ServiceRange,
    SocketAddr,
    check_service_range,
    parse_address,
)
from tipcshm.client import BearerLane, NodeClient, NodeUnreachable, get_client
from tipcshm.constants import (
    AF_TIPC,
    MSG_DONTWAIT,
    MSG_PEEK,
    SOCK_DGRAM,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_CLUSTER_SCOPE,
    TIPC_CONN_TIMEOUT,
    TIPC_CRITICAL_IMPORTANCE,
    TIPC_DEST_DROPPABLE,
    TIPC_DESTNAME,
    TIPC_ERRINFO,
    TIPC_GROUP_JOIN,
    TIPC_GROUP_LEAVE,
    TIPC_IMPORTANCE,
    TIPC_MAX_USER_MSG_SIZE,
    TIPC_MCAST_BROADCAST,
    TIPC_MCAST_REPLICAST,
    TIPC_NODE_RECVQ_DEPTH,
    TIPC_NODE_SCOPE,
    TIPC_NODELAY,
    TIPC_RESERVED_TYPES,
    TIPC_RETDATA,
    TIPC_SOCK_RECVQ_DEPTH,
    TIPC_SOCK_RECVQ_USED,
    TIPC_SRC_DROPPABLE,
)
from tipcshm.errors import (
    AccessDenied,
    AddressFamilyNotSupported,
    HostUnreachable,
    InvalidArgument,
    LimitReached,
    MessageTooLong,
    NodeNotRunning,
    NotASocketDescriptor,
    NotConnected,
    NotSupportedYet,
    ProtocolOptionError,
    SocketClosed,
    TimedOut,
    Timeout,
    TipcError,
    WouldBlock,
)
from tipcshm.plumbing import (  # noqa: F401 - Rejected, reject_unread: the supervisor's
    Rejected,
    recv_args,
    recv_target,
    recvmsg_args,
    reject_unread,
    shutdown_how,
)
from tipcshm.plumbing import (
    bytes_view as _bytes_view,
)
from tipcshm.plumbing import (
    c_int as _c_int,
)
from tipcshm.plumbing import (
    post as _post,
)
from tipcshm.plumbing import (
    return_unread as _return_unread,
)
from tipcshm.shm import control
from tipcshm.shm.lane import Inbox, InboxClosed, InboxError, Producer
from tipcshm.shm.layout import (
    MAX_BINDINGS,
    S_DROPS,
    S_RETURNED,
    S_RX_BYTES,
    S_RX_MSGS,
    S_TX_BYTES,
    S_TX_MSGS,
    NodeState,
    inbox_name,
)

_W01 = wire.HDR_W01
_U32 = wire.U32
_U32LE = struct.Struct("=I")  # a socket option's value, in the host's byte order
_ANC_ERRINFO = plumbing.ANC_ERRINFO
_ANC_DESTNAME = plumbing.ANC_DESTNAME
_WAIT_SLICE = plumbing.WAIT_SLICE
_SEND_SLICE = 0.05  # a sender facing a full receiver re-checks its own closure this often
_CLOSE_WAIT = 2.0  # close() waits this long for another thread's call to let go (seconds)
_ERRCODE_MASK = wire.W1_ERRCODE_MASK
# Precomputed word tests of the hot paths (tipcshm.wire names every bit and offset).
_NON_DATA = wire.W0_NON_DATA_USER_MASK  # w0 & _NON_DATA: not a data importance
_HSZ_SHIFT = wire.W0_HSIZE_BYTES_SHIFT  # (w0 >> _HSZ_SHIFT) & _HSZ_MASK: header bytes
_HSZ_MASK = wire.W0_HSIZE_BYTES_MASK
_SIZE = wire.SIZE_MASK
_ORIG_PORT = wire.ORIG_PORT_OFFSET
_ORIG_NODE = wire.ORIG_NODE_OFFSET
_PREV_NODE = wire.PREV_NODE_OFFSET
_SHORT = wire.SHORT_H_SIZE
_MAX_ROUTES = 1024  # cached destinations per socket
_MCAST_W1 = wire.make_w1(wire.DataType.MCAST_MSG, lookup_scope=TIPC_CLUSTER_SCOPE)
_NAMED_W1 = wire.make_w1(wire.DataType.NAMED_MSG, lookup_scope=TIPC_CLUSTER_SCOPE)
_NAMED_W1_NODE = wire.make_w1(wire.DataType.NAMED_MSG, lookup_scope=TIPC_NODE_SCOPE)
_NO_NAME = wire.ErrorCode.NO_NAME
# The hot-path counters reach the socket table after each of a socket's first 1024
# messages (quiet sockets read exactly in `tipcshm stat`), then every 64th.
_EXACT_UNTIL = 1024
_FLUSH_EVERY = 63


def anycast(table: Any, addr: ServiceAddr, own: int) -> tuple[int, int] | None:
    """tipc_nametbl_lookup_anycast for a service address and its lookup domain: 0 looks
    everywhere (this node's bindings first, round robin), this node's address only here,
    another node's defers the lookup to that node (``(domain, 0)``: it resolves the name
    on arrival), without looking at the table."""
    domain = addr.domain
    if not domain:
        found: tuple[int, int] | None = table.lookup_anycast(addr.type, addr.instance)
        return found
    if domain != own:
        return (domain, 0)
    found = table.lookup_anycast(addr.type, addr.instance, lookup_node=own)
    return found


class _Route:
    """A destination resolved to one socket: our lane into it and the frame's header.

    Valid while word ``tok_i`` of the node segment still reads ``seq``: for a service
    address the change token of its type (a bind or unbind of that type, on any node,
    moves it, and churn of other types does not), for a socket address the replica's
    sequence word. A dropped lane sets ``seq`` to -1.
    """

    __slots__ = ("seq", "tok_i", "producer", "inbox", "head", "hsize", "w0", "__weakref__")

    def __init__(
        self,
        seq: int,
        tok_i: int,
        producer: Producer | BearerLane,
        inbox: Inbox,
        head: bytes,
        hsize: int,
        w0: int,
    ) -> None:
        self.seq = seq
        self.tok_i = tok_i
        self.producer = producer
        self.inbox = inbox
        self.head = head  # the header; word 0 is rewritten with each frame's size
        self.hsize = hsize
        self.w0 = w0  # word 0 without the size


_SOCK_NONBLOCK = int(getattr(_stdlib_socket, "SOCK_NONBLOCK", 0))
_SOCK_CLOEXEC = int(getattr(_stdlib_socket, "SOCK_CLOEXEC", 0))
_SOCK_TYPE_MASK = 0xF  # the kernel's: the rest of a socket() type are flags
_SOCK_MAX = 10
_connection_classes: dict[type, type] = {}
#: tipcshm.conn.ConnSocket, which registers itself here when imported (tipcshm's package
#: import does that): this module does not import the connection module
_conn_socket: list[type] = []


def register_connection_class(cls: type) -> None:
    """What SOCK_SEQPACKET and SOCK_STREAM sockets are built as (tipcshm.conn calls it)."""
    _conn_socket[:] = [cls]


def _connection_socket_class() -> Any:
    if not _conn_socket:
        raise NotSupportedYet(
            "connection sockets: tipcshm.conn is not imported (import tipcshm does that)"
        )
    return _conn_socket[0]


def _enum(value: int, kind: Any) -> int:
    """``value`` as the stdlib's IntEnum member (what socket.family / .type give), if any."""
    try:
        member: int = kind(value)
        return member
    except ValueError:
        return value


def _is_tipc(family: Any) -> bool:
    try:
        return operator.index(family) == AF_TIPC
    except TypeError:
        return False  # the stdlib raises its own TypeError for it


def _stdlib_socket_of(
    family: Any = -1,
    type: Any = -1,  # noqa: A002 - the stdlib's parameter name
    proto: Any = -1,
    fileno: Any = None,
    *,
    node: str | None = None,
) -> _stdlib_socket.socket:
    """``tipcshm.socket(...)`` for any family but AF_TIPC: the stdlib's own socket."""
    if node is not None:
        raise TypeError(
            f"socket(family={family!r}, node={node!r}): node= selects a tipcshm node and "
            f"applies to AF_TIPC ({AF_TIPC}) sockets only"
        )
    if family == -1 and fileno is None:
        family = _stdlib_socket.AF_INET  # the stdlib's default, said explicitly
    return _stdlib_socket.socket(family, type, proto, fileno)


class _SocketMeta(type):
    """``tipcshm.socket(...)`` for families other than AF_TIPC, and what counts as one.

    ``tipcshm.socket`` takes the stdlib's arguments, ``socket(family=-1, type=-1,
    proto=-1, fileno=None)`` plus tipcshm's ``node=``. AF_TIPC builds a tipcshm socket
    (see :meth:`Socket.__init__`); any other family builds the stdlib's own
    ``socket.socket``, so a program that mixes TIPC with TCP, UDP or UNIX sockets ports by
    swapping its import. For the same reason ``isinstance(s, tipcshm.socket)`` holds for
    both kinds. A program's subclass of tipcshm.socket is built the ordinary way (its own
    ``__init__`` may take other arguments), as a TIPC socket.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_covers_stdlib", False):  # tipcshm.socket itself
            fileno = args[3] if len(args) > 3 else kwargs.get("fileno")
            if fileno is not None and sockfile.is_detached(fileno):
                # A number this process's detach() gave: that socket, whatever the family
                # argument says (the stdlib reads the family from the descriptor).
                return sockfile.attach(fileno)
            family = args[0] if args else kwargs.get("family", -1)
            if not _is_tipc(family):
                return _stdlib_socket_of(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def __signature__(cls) -> Any:
        """What inspect and help() show for the call: ``__init__``'s parameters (the
        generic __call__ above would hide them)."""
        import inspect

        sig = inspect.signature(cls.__init__)  # type: ignore[misc]
        return sig.replace(
            parameters=list(sig.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    def __instancecheck__(cls, instance: Any) -> bool:
        if cls.__dict__.get("_covers_stdlib", False) and isinstance(
            instance, _stdlib_socket.socket
        ):
            return True
        return type.__instancecheck__(cls, instance)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        if (
            cls.__dict__.get("_covers_stdlib", False)
            and isinstance(subclass, type)
            and issubclass(subclass, _stdlib_socket.socket)
        ):
            return True
        return type.__subclasscheck__(cls, subclass)


def _connection_class(cls: type, conn: type) -> type:
    """``cls`` (tipcshm.socket or a program's subclass of it) with ConnSocket's methods,
    for SOCK_SEQPACKET and SOCK_STREAM: the subclass's overrides come first."""
    if cls is Socket:
        return conn
    combined = _connection_classes.get(cls)
    if combined is None:
        combined = _SocketMeta(
            cls.__name__,
            (cls, conn),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
        _connection_classes[cls] = combined
    return combined


def _socket_args(family: Any, type_: Any, proto: Any, fileno: Any, who: str) -> tuple[int, int]:
    """(socket type, flags) of an AF_TIPC socket() call, refused as CPython and then the
    kernel refuse them (sys_socket's flags, __sock_create's type range, tipc_sk_create's
    protocol and type)."""
    if not _is_tipc(family):
        _c_int(family)  # the stdlib's TypeError / OverflowError first
        raise TypeError(
            f"{who}(family={family!r}): a subclass of tipcshm.socket is an AF_TIPC socket; "
            "for other families subclass the stdlib's socket.socket"
        )
    kind = _c_int(type_)
    protocol = _c_int(proto)
    if fileno is not None:
        raise NotASocketDescriptor(f"{who}(AF_TIPC, fileno={fileno!r})", fileno)
    if kind == -1:
        kind = SOCK_STREAM  # CPython's default type, whatever the family
    flags = kind & ~_SOCK_TYPE_MASK
    kind &= _SOCK_TYPE_MASK
    if flags & ~(_SOCK_NONBLOCK | _SOCK_CLOEXEC) or kind >= _SOCK_MAX:
        raise InvalidArgument(f"{who}(AF_TIPC, type={type_!r}): not a socket type")
    if protocol not in (-1, 0):
        raise TipcError(
            errno.EPROTONOSUPPORT, f"{who}(AF_TIPC, proto={proto!r}): TIPC takes protocol 0"
        )
    if kind not in (SOCK_RDM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_STREAM):
        raise TipcError(
            errno.EPROTOTYPE,
            f"{who}(AF_TIPC, type={type_!r}): TIPC has SOCK_STREAM, SOCK_DGRAM, SOCK_RDM "
            "and SOCK_SEQPACKET",
        )
    return kind, flags


class Socket(metaclass=_SocketMeta):
    """A TIPC socket on a tipcshm node (see the module docstring); ``tipcshm.socket``.

    Called as the stdlib's ``socket.socket`` (other families: see :class:`_SocketMeta`).
    SOCK_SEQPACKET and SOCK_STREAM sockets are :class:`tipcshm.conn.ConnSocket`s
    (connection sockets, in their own module so that this class's connectionless hot
    paths stay as they are).
    """

    _connection_type = False
    #: dup() handles and makefile() files open on this socket (the stdlib's protocol)
    _io_refs = 0
    #: close() was called while some were open: it happens when the last one closes
    _close_pending = False
    _covers_stdlib = True  # isinstance(stdlib_socket, tipcshm.socket): see _SocketMeta

    def __init__(
        self,
        family: Any = -1,
        type: Any = -1,  # noqa: A002 - the stdlib's parameter name
        proto: Any = -1,
        fileno: Any = None,
        *,
        node: str | None = None,
    ) -> None:
        who = "socket" if self.__class__ is Socket else self.__class__.__name__
        kind, flags = _socket_args(family, type, proto, fileno, who)
        connection = kind in (SOCK_SEQPACKET, SOCK_STREAM)
        if connection != self._connection_type:
            ConnSocket = _connection_socket_class()  # noqa: N806 - a class
            if not connection:
                raise TypeError(f"{self.__class__.__name__} is for SOCK_SEQPACKET and SOCK_STREAM")
            # Become the connection socket the type asks for, keeping a subclass's methods
            # first, and build that (it calls back here for the common part).
            self.__class__ = _connection_class(self.__class__, ConnSocket)
            ConnSocket.__init__(self, AF_TIPC, kind, 0, node=node)  # type: ignore[arg-type]
        else:
            self._build(kind, node)
        if flags & _SOCK_NONBLOCK:
            self.setblocking(False)

    def _build(self, kind: int, node: str | None) -> None:
        """The state every TIPC socket has: a port, its inbox, its counters."""
        family = AF_TIPC
        type = kind  # noqa: A001 - as the stdlib names it
        proto = 0
        self._closed = True  # until fully built, so __del__/close are safe
        self.family = _enum(family, _stdlib_socket.AddressFamily)
        self.type = _enum(type, _stdlib_socket.SocketKind)
        self.proto = proto
        self._client: NodeClient = get_client(node)
        self.node = self._client.node
        self._own = self._client.addr
        self._timeout: float | None = _stdlib_socket.getdefaulttimeout()
        self._importance = 0
        self._src_droppable = type == SOCK_DGRAM
        self._dest_droppable = True
        self._conn_timeout_ms = 8000
        self._so = sockopt.SocketOptions()  # SOL_SOCKET state
        # sendall()'s deadline and the thread it belongs to: the sends under that call
        # count against it, another thread's sends meanwhile do not
        self._sendall_deadline: tuple[int, float] | None = None
        self._bindings: list[tuple[int, int, int, int, int]] = []  # type, lower, upper, scope, key
        self._pub_count = 0
        self._ctl_seq = 0
        self._default_dest: ServiceAddr | ServiceRange | SocketAddr | None = None
        self._recv_lock: Any = threading.Lock()  # a RefreshingLock once in select mode
        self._ctl_lock = threading.Lock()
        #: what fileno() returns, made by its first call ("select mode"), else None
        self._ready: readiness.Readiness | None = None
        self._ready_key = -1  # this socket's key at the readiness reactor
        self._shut = False  # shutdown() ran (the kernel's sk_shutdown == SHUTDOWN_MASK)
        self._port, self._slot, self._inbox = self._open_port()
        self._closed = False
        seg = self._client.seg
        base = seg.sock_off(self._slot)
        self._counters = seg.u64
        self._c_tx_msgs = (base + S_TX_MSGS) // 8
        self._c_tx_bytes = (base + S_TX_BYTES) // 8
        self._c_rx_msgs = (base + S_RX_MSGS) // 8
        self._c_rx_bytes = (base + S_RX_BYTES) // 8
        self._c_drops = (base + S_DROPS) // 8
        self._c_returned = (base + S_RETURNED) // 8
        self._u64 = self._client.seg.u64
        # Hot-path counters live here and reach the socket table as _EXACT_UNTIL says, and
        # whenever the socket waits, reports or closes (a shared-memory add costs ~70 ns).
        self._tx_msgs = self._tx_bytes = self._rx_msgs = self._rx_bytes = 0
        self._seq_i = self._client._seq_i
        self._routes: dict[Any, _Route] = {}
        self._multi: dict[Any, int] = {}  # anycast addresses with several bindings, by seq
        self._update_w0()
        self._finalizer: Any = weakref.finalize(
            self, Socket._release, self._client, self._port, self._slot, self._inbox, True
        )

    # -- construction / teardown -----------------------------------------------------
    def _open_port(self) -> tuple[int, int, Inbox]:
        import secrets

        client = self._client
        for _ in range(64):
            port = secrets.randbits(32)
            if port == 0:
                continue
            try:
                slot = client.seg.alloc_socket(port, client.pid, client.start, self.type)
            except FileExistsError:
                continue
            try:
                inbox = Inbox.create(
                    inbox_name(self.node, port),
                    lanes=client.lanes,
                    lane_bytes=client.conn_lane_bytes
                    if self._connection_type
                    else client.lane_bytes,
                    mode=client.mode,
                    gid=client.gid,
                    tag=client.tag,
                    owner=(client.pid, client.start),
                )
            except FileExistsError:
                client.seg.free_socket(slot, port)
                continue
            except BaseException:
                client.seg.free_socket(slot, port)
                raise
            client.own_inboxes.add(inbox)
            return port, slot, inbox
        raise TipcError(98, f"node {self.node!r}: could not allocate a free port")  # EADDRINUSE

    def _update_w0(self) -> None:
        self._w0_flags = wire.make_w0(
            self._importance,
            0,
            0,
            dest_droppable=self._dest_droppable,
            src_droppable=self._src_droppable,
        )

    @staticmethod
    def _release(client: NodeClient, port: int, slot: int, inbox: Inbox, withdraw: bool) -> None:
        """Give back everything the socket holds (also run by the GC finaliser).

        No request and no wait: the entry turns CLOSING and the name-table worker, rung,
        withdraws the bindings and then frees the entry (tipcshm.shm.layout).
        """
        try:
            inbox.mark_closed()
            _return_unread(client, inbox)
            if not withdraw:
                client.seg.free_socket(slot, port)
            elif client.seg.close_socket(slot, port):
                with contextlib.suppress(OSError, ValueError):
                    client.wake_worker()  # node gone: nothing left to withdraw from
        except (OSError, ValueError):
            pass
        finally:
            inbox.unlink()
            inbox.detach()

    def close(self) -> None:
        """Withdraw the bindings, return unread messages that asked for it, free the port.

        A call blocked in another thread wakes and raises SocketClosed (EBADF); close
        waits for it to let go of the receive side (at most _CLOSE_WAIT seconds, and not
        at all from inside this thread's own zero-copy receive block)."""
        if self._defer_close():
            return
        if self._closed:
            return
        self._closed = True
        held = self._quiesce()
        try:
            self._close_locked()
            with contextlib.suppress(ValueError, OSError):  # the node may be gone: close anyway
                self._flush_counters()
            self._client.forget(self._own, self._port)  # our own lane into it, if we sent here
            self._finalizer()
        finally:
            if held:
                self._recv_lock.release()
            self._close_ready()

    def _close_locked(self) -> None:
        """What a socket type does on close with its receive side taken (ConnSocket's)."""

    def _quiesce(self) -> bool:
        """Wake every call blocked on this socket (they see ``_closed`` and raise), then
        take the receive side; False if it could not be taken."""
        with contextlib.suppress(OSError, ValueError):
            self._inbox.mark_closed()  # sleepers on the doorbell wake with InboxClosed
        ready = self._ready
        if ready is not None:
            ready.close()  # sleepers on fileno() (it hangs up; closed once they left)
        if self._zc_owner():
            return False  # this thread holds it, in a zero-copy receive block
        return bool(self._recv_lock.acquire(timeout=_CLOSE_WAIT))

    def _zc_owner(self) -> bool:
        return False

    def _close_ready(self) -> None:
        if self._ready_key >= 0:
            readiness.unwatch(self._ready_key)
            self._ready_key = -1
        if self._ready is not None:
            self._ready.close()

    def _defer_close(self) -> bool:
        """socket.close() with makefile() files or dup() handles open leaves the socket
        working until the last of them closes, as the stdlib's does."""
        if self._io_refs > 0:
            self._close_pending = True
            return True
        return False

    def _decref_socketios(self) -> None:
        """A file or handle made from this socket closed (socket.SocketIO calls this)."""
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._close_pending and self._io_refs <= 0:
            self.close()

    # -- sockets as files (tipcshm.sockfile) -----------------------------------------
    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """The stdlib's socket.makefile over this socket's recv_into and send."""
        return sockfile.makefile(
            self, mode, buffering, encoding=encoding, errors=errors, newline=newline
        )

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send a binary file's bytes (STREAM or SEQPACKET), as socket.sendfile does."""
        return sockfile.sendfile(self, file, offset, count)

    def dup(self) -> sockfile.SocketHandle:
        """Another handle on this socket (tipcshm.sockfile.SocketHandle)."""
        return sockfile.SocketHandle(self)

    def detach(self) -> int:
        """Leave this object closed and park the socket under the number returned, for
        ``socket(fileno=N)`` in this process (tipcshm.sockfile)."""
        return sockfile.detach(self)

    def _move_out(self) -> Socket:
        """detach(): a new object takes over this socket's state and its release at
        collection; this one is left closed and owns nothing."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        _obj, func, args, kwargs = self._finalizer.detach()
        new._finalizer = weakref.finalize(new, func, *args, **kwargs)
        if self._ready is not None:
            # The reactor and the refreshing lock hold weak references to this object:
            # they must follow the state to its new owner, or nobody keeps fileno() true.
            readiness.unwatch(self._ready_key)
            inner = self._recv_lock._lock
            new._recv_lock = readiness.RefreshingLock(inner, new)
            new._ready_key = readiness.watch(new, new._inbox.bell_fileno())
            self._ready = None
            self._ready_key = -1
        self._closed = True
        return new

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"port={self._port:#010x}"
        kind = {SOCK_RDM: "SOCK_RDM", SOCK_DGRAM: "SOCK_DGRAM"}.get(self.type, str(self.type))
        return f"<tipcshm.socket node={self.node!r} {kind} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise SocketClosed(self._port)
        gone = self._node_gone()
        if gone is not None:
            raise gone

    def _node_gone(self) -> NodeNotRunning | None:
        """NodeNotRunning if the node this socket was made on is no longer running.

        Asked on every path that is not a per-message fast path (those find out through
        their inboxes, which a stopping node closes): a stopped node's socket must never
        look usable, even after a new node started under the same name (this socket still
        maps the old one, whose state says it stopped).
        """
        client = self._client
        try:
            state = client.seg.state
        except ValueError:  # its mapping is gone
            state = -1
        if (
            state != NodeState.READY and not (client.starting_ok and state == NodeState.STARTING)
        ) or client.supervisor_gone():
            return NodeNotRunning(
                self.node,
                f"it stopped; socket {self._port:#010x} belonged to it and is unusable: "
                "close it, and make a new socket once the node runs again",
            )
        return None

    # -- addresses -----------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def getsockname(self) -> tuple[int, int, int, int, int]:
        self._check_open()
        return (TIPC_ADDR_ID, self._own, self._port, 0, 0)

    def getpeername(self) -> tuple[int, int, int, int, int]:
        self._check_open()
        raise TipcError(107, f"socket {self._port:#010x} is not connected")  # ENOTCONN

    def bind(self, address: AddressLike) -> None:
        """Bind a service address or range; a negative scope removes that binding."""
        self._check_open()
        # tipc_bind's order: an invalid range (EINVAL), a socket address (EAFNOSUPPORT),
        # a reserved type (EACCES, for unbinding too), then bind or unbind.
        addr = parse_address(address, allow_negative_scope=True, caller="bind")
        if isinstance(addr, SocketAddr):
            raise AddressFamilyNotSupported(f"bind(): cannot bind a socket address {addr}")
        if isinstance(addr, ServiceAddr):
            type_, lower, upper, scope = addr.type, addr.instance, addr.instance, addr.scope
        else:
            type_, lower, upper, scope = addr.type, addr.lower, addr.upper, addr.scope
        if type_ < TIPC_RESERVED_TYPES:
            raise AccessDenied(f"service type {type_} is reserved (types below 64): {address}")
        group = getattr(self, "_group", None)
        if group is not None:  # __tipc_bind: a group member binds nothing else
            raise AccessDenied(f"bind(): socket {self._port:#010x} is in group {group.type}")
        if scope < 0:
            self._unbind(type_, lower, upper, -scope, address)
            return
        with self._ctl_lock:
            key = (self._port + self._pub_count + 1) & 0xFFFFFFFF
            if key == self._port:
                raise TipcError(98, f"socket {self._port:#010x} has used up its binding keys")
            err = self._control(control.OP_BIND, type_, lower, upper, scope, key)
            if err == errno.ENOSPC:
                raise LimitReached(
                    err,
                    f"bind {address} failed: the node's name table is full "
                    f"(MAX_BINDINGS = {MAX_BINDINGS} bindings)",
                )
            if err:
                raise TipcError(err, f"bind {address} failed: {os.strerror(err)}")
            self._pub_count += 1
            self._bindings.append((type_, lower, upper, scope, key))

    def unbind(self, address: AddressLike) -> None:
        """Remove one binding (the kernel's bind with negative scope)."""
        self._check_open()
        addr = parse_address(address, allow_negative_scope=True, caller="unbind")
        if isinstance(addr, ServiceAddr):
            self._unbind(addr.type, addr.instance, addr.instance, abs(addr.scope), address)
        elif isinstance(addr, ServiceRange):
            self._unbind(addr.type, addr.lower, addr.upper, abs(addr.scope), address)
        else:
            raise AddressFamilyNotSupported(f"cannot unbind a socket address {addr}")

    def _unbind(
        self, type_: int, lower: int, upper: int, scope: int | None, address: object
    ) -> None:
        with self._ctl_lock:
            for i, (t, lo, up, sc, key) in enumerate(self._bindings):
                if (t, lo, up) == (type_, lower, upper) and (scope is None or sc == scope):
                    err = self._control(control.OP_UNBIND, t, lo, up, sc, key)
                    if err:
                        raise TipcError(err, f"unbind {address} failed: {os.strerror(err)}")
                    del self._bindings[i]
                    return
        raise InvalidArgument(f"socket {self._port:#010x} has no binding {address}")

    def _control(self, op: int, type_: int, lower: int, upper: int, scope: int, key: int) -> int:
        self._ctl_seq = (self._ctl_seq + 1) & 0xFFFFFFFF or 1
        req = control.Request(
            op, self._port, self._ctl_seq, self._slot, type_, lower, upper, scope, key
        )
        return self._client.control(req)

    def listen(self, backlog: int = 0) -> None:
        """Connectionless sockets do not listen: EOPNOTSUPP, as the kernel's sock_no_listen."""
        self._check_open()
        _c_int(backlog)
        raise TipcError(
            errno.EOPNOTSUPP,
            f"listen(): socket {self._port:#010x} is connectionless ({self.type!r})",
        )

    def accept(self) -> tuple[Socket, tuple[int, int, int, int, int]]:
        """Connectionless sockets accept nothing: EOPNOTSUPP, as the kernel's sock_no_accept."""
        self._check_open()
        raise TipcError(
            errno.EOPNOTSUPP,
            f"accept(): socket {self._port:#010x} is connectionless ({self.type!r})",
        )

    def connect_ex(self, address: Any) -> int:
        """connect(), returning the errno instead of raising (0 on success), as socket does."""
        try:
            self.connect(address)
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    def connect(self, address: AddressLike) -> None:
        """On RDM/DGRAM: remember a default destination for send(), as the kernel does."""
        self._check_open()
        self._default_dest = parse_address(address, caller="connect")

    def shutdown(self, how: int) -> None:
        """As tipc_shutdown does on a connectionless socket: the queued messages go back
        to their senders with TIPC_ERR_CONN_SHUTDOWN (those that asked for it), the
        socket is shut down both ways (fileno() reads POLLIN | POLLHUP, still writable;
        a blocking recv of an empty queue raises ENOTCONN), and, as there is no
        connection, the call itself raises ENOTCONN."""
        shutdown_how(how)
        self._check_open()
        with self._recv_lock:
            self._shut = True
            client = self._client
            reject_unread(
                self._inbox,
                self._own,
                lambda port, frame: _post(client, plumbing.dest_node(frame), port, frame),
                select=lambda h: h.user != wire.User.CONN_MANAGER,
                error=wire.ErrorCode.CONN_SHUTDOWN,
            )
        raise NotConnected(f"socket {self._port:#010x} is not connected (it is shut down now)")

    # -- options ---------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        """As socket.settimeout: None blocks, 0 never waits, t > 0 bounds every call."""
        if value is not None:
            # CPython's _PyTime_FromSecondsObject: a float, else an integer (__index__)
            value = float(value if isinstance(value, float) else operator.index(value))
            if value != value:
                raise ValueError("Invalid value NaN (not a number)")
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def _deadline(self, flags: int, kind: str) -> tuple[float | None, bool]:
        """(when a wait of ``kind`` gives up, or None; whether it must not wait at all).

        ``kind`` is "recv", "send", "connect" or "accept". As a kernel socket under the
        stdlib: MSG_DONTWAIT or settimeout(0) never waits; a settimeout(t > 0) bounds the
        call (TimedOut, the stdlib's "timed out"); a blocking socket waits per the
        kernel's own timers: SO_RCVTIMEO for recv and accept, SO_SNDTIMEO for send
        (EAGAIN on expiry, sock_rcvtimeo / sock_sndtimeo), TIPC_CONN_TIMEOUT for connect
        (ETIMEDOUT, tipc_wait_for_connect; 0 makes connect non-blocking, as tipc_connect
        does). :meth:`_timed_out` builds the matching error.
        """
        t = self._timeout
        if flags & MSG_DONTWAIT or t == 0.0:
            return None, True
        if t is None:  # blocking: the kernel's timers (the common case: kept short)
            if kind == "connect":
                ms = self._conn_timeout_ms
                return (time.monotonic() + ms / 1000 if ms else None), not ms
            t = self._so.sndtimeo_s if kind == "send" else self._so.rcvtimeo_s
            if t is None:
                return None, False
            return time.monotonic() + t, False
        whole = self._sendall_deadline
        if kind == "send" and whole is not None and whole[0] == threading.get_ident():
            return whole[1], False
        return time.monotonic() + t, False

    def _timed_out(self, kind: str, what: str) -> OSError:
        """The error for a wait that reached :meth:`_deadline`'s deadline."""
        if self._timeout:
            return TimedOut(what)
        if kind == "connect":  # tipc_wait_for_connect's expiry, whichever timer it ran on
            return Timeout(f"{what}: no answer in time")
        opt = "SO_SNDTIMEO" if kind == "send" else "SO_RCVTIMEO"
        return WouldBlock(f"{what} ({opt} expired)")

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def setsockopt(
        self, level: int, option: int, value: int | bytes | None, optlen: int | None = None
    ) -> None:
        """As tipc_setsockopt: the value is checked whole before anything changes."""
        self._check_open()
        level, option = _c_int(level), _c_int(option)
        if level == _stdlib_socket.SOL_SOCKET:
            raw = sockopt.raw_value(value, optlen)
            length = len(raw) if raw is not None else _c_int(optlen)
            sockopt.set_option(self, self._so, option, raw, length)
            if option in sockopt.RCVBUF_OPTIONS and not self._connection_type:
                # the receive queue limit (tipc_sk_rcv's rcvbuf_limit), per sender lane
                self._inbox.set_queue_limit(self._so.rcvbuf)
            return
        word, length = _option_value(value, optlen)
        if level == _IPPROTO_TCP and self.type == SOCK_STREAM:
            return  # the kernel accepts and ignores TCP options on STREAM sockets
        if level != SOL_TIPC:
            raise ProtocolOptionError(level, option, "only SOL_TIPC options are supported")
        if option in _VALUE_OPTIONS:
            if length < 4:
                raise InvalidArgument(f"option {option}: the value must be at least 4 bytes")
            if word is None:
                raise TipcError(errno.EFAULT, f"option {option}: no value (NULL, {length})")
        elif option == TIPC_GROUP_JOIN:
            if length < 16:
                raise InvalidArgument("TIPC_GROUP_JOIN: the value must be a 16-byte request")
            if value is None:
                raise TipcError(errno.EFAULT, f"TIPC_GROUP_JOIN: no request (None, {length})")
            _check_group_request(value)
            from tipcshm import group  # noqa: PLC0415 - group builds on this module

            group.join(self, value)
            return
        elif value is not None or length:
            raise InvalidArgument(f"option {option} takes no value (None, 0)")
        if option == TIPC_IMPORTANCE:
            assert word is not None
            if word > TIPC_CRITICAL_IMPORTANCE:
                raise InvalidArgument(f"TIPC_IMPORTANCE {word} is not 0..3")
            self._importance = word
        elif option == TIPC_SRC_DROPPABLE:
            if self.type == SOCK_STREAM:
                raise ProtocolOptionError(level, option, "not on SOCK_STREAM")
            self._src_droppable = bool(word)
        elif option == TIPC_DEST_DROPPABLE:
            self._dest_droppable = bool(word)
        elif option == TIPC_CONN_TIMEOUT:
            assert word is not None
            self._conn_timeout_ms = word & 0xFFFF  # tipc_sock.conn_timeout is a u16
        elif option in (TIPC_MCAST_BROADCAST, TIPC_MCAST_REPLICAST, TIPC_NODELAY):
            pass  # transmission-method hints: one node has one method
        elif option == TIPC_GROUP_LEAVE:
            from tipcshm import group  # noqa: PLC0415 - group builds on this module

            group.leave(self)
            return
        else:
            raise InvalidArgument(f"no SOL_TIPC option {option}")
        self._update_w0()
        self._routes.clear()  # their header words carry the old flags

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        self._check_open()
        level, option, buflen = _c_int(level), _c_int(option), _c_int(buflen)
        if level == _stdlib_socket.SOL_SOCKET:
            return sockopt.get_option(self, self._so, option, buflen)
        if buflen and not 0 < buflen <= 1024:
            raise OSError("getsockopt buflen out of range")  # CPython's, before the kernel
        if level == _IPPROTO_TCP and self.type == SOCK_STREAM:
            return b"" if buflen else 0  # tipc_getsockopt answers TCP options with nothing
        if level != SOL_TIPC:
            raise ProtocolOptionError(level, option, "only SOL_TIPC options are supported")
        elif option == TIPC_IMPORTANCE:
            value = self._importance
        elif option == TIPC_SRC_DROPPABLE:
            value = int(self._src_droppable)
        elif option == TIPC_DEST_DROPPABLE:
            value = int(self._dest_droppable)
        elif option == TIPC_CONN_TIMEOUT:
            value = self._conn_timeout_ms
        elif option == TIPC_NODE_RECVQ_DEPTH:
            value = 0
        elif option == TIPC_SOCK_RECVQ_DEPTH:
            stats = self._inbox.stats()
            value = stats["frames_written"] - stats["frames_read"]
        elif option == TIPC_SOCK_RECVQ_USED:
            value = self._inbox.fill()[0]
        elif option == TIPC_GROUP_JOIN:
            group = getattr(self, "_group", None)  # tipc_group_self: the type, or 0
            value = 0 if group is None else group.type
        else:
            raise ProtocolOptionError(level, option)
        if buflen:
            if buflen < 4:  # tipc_getsockopt: the whole u32 or nothing
                raise InvalidArgument(f"SOL_TIPC option {option}: buflen {buflen} < 4")
            return struct.pack("=I", value)
        return value

    def so_error(self) -> int:
        """getsockopt(SOL_SOCKET, SO_ERROR): connectionless sockets have none pending."""
        return 0

    def _listening(self) -> bool:
        """SO_ACCEPTCONN: only connection sockets listen."""
        return False

    def fileno(self) -> int:
        """A descriptor for select, poll, epoll, selectors and asyncio, ready exactly when a
        kernel TIPC socket would be (tipcshm.readiness); -1 once the socket is closed.

        The first call switches the socket to select mode: from then on every call keeps
        the descriptor's state true, and a thread of the process (one for all sockets)
        watches the socket's inbox."""
        ready = self._ready
        if ready is None:
            if self._closed:
                return -1
            with self._ctl_lock:
                ready = self._ready
                if ready is None:
                    ready = self._enter_select_mode()
        return ready.fileno()

    def _enter_select_mode(self) -> readiness.Readiness:
        ready = readiness.Readiness()
        # The same mutex behind a lock whose release also refreshes `ready`: a call that
        # took the old object still excludes the others; the reactor's re-evaluation
        # (retried until it gets the lock) corrects what such a call leaves behind.
        self._recv_lock = readiness.RefreshingLock(self._recv_lock, self)
        self._ready = ready
        try:
            self._ready_key = readiness.watch(self, self._inbox.bell_fileno())
        except BaseException:
            self._ready = None
            ready.close()
            raise
        with contextlib.suppress(OSError, ValueError):
            self._inbox.ring()  # a receiver asleep on the doorbell moves over to `ready`
        self._sel_touch()  # the true state now, if no other thread is receiving
        return ready

    # -- readiness (select mode) -------------------------------------------------------
    def _sel_refresh(self) -> None:
        """Set fileno()'s state from the socket's (receive lock held): readable while a
        data or returned message is queued, writable always (an RDM/DGRAM socket is OPEN,
        and a local link is never congested), both at once when the node stopped (the
        next call fails at once), hung up and writable after shutdown() (tipc_poll)."""
        ready = self._ready
        if ready is None or self._closed:
            return
        if self._shut:
            ready.hangup(writable=True)
            return
        inbox = self._inbox
        readable = True
        if not inbox.closed:
            while True:
                r = inbox.poll()
                if r is None:
                    if inbox.rearm():
                        continue
                    readable = False
                    break
                buf, off, _length, lane = r
                if not _W01.unpack_from(buf, off)[0] & _NON_DATA:
                    break
                inbox.release(lane)  # not a data message: recv would drop it too
        ready.set(readable, True)

    def _sel_evaluate(self) -> bool:
        """The reactor's turn: re-evaluate if the receive side is free (False if not)."""
        lock = self._recv_lock
        if not lock.acquire(blocking=False):
            return False
        lock.release()  # a RefreshingLock: this is the re-evaluation
        return True

    def _sel_touch(self, wait: float = 0.002) -> None:
        """Select mode, after a change made without the receive lock (a send, connect,
        listen): refresh before returning, as the kernel's poll sees the new state at once.
        The lock is held only briefly in select mode (by the reactor's re-evaluation, or a
        call about to sleep on fileno()), so wait for it up to ``wait`` seconds; past that
        (a zero-copy block holds it, perhaps in this very thread) have the reactor do it."""
        if self._ready is None:
            return
        lock = self._recv_lock
        if lock.acquire(blocking=False) or lock.acquire(timeout=wait):
            lock.release()
        elif self._ready_key >= 0:
            readiness.poke(self._ready_key)

    def _wait_ready(self, events: int, timeout: float | None) -> bool:
        """Select mode, receive lock held: let go of it, sleep until fileno() reports
        ``events`` (or hangs up) or ``timeout`` passes, take it back."""
        ready = self._ready
        assert ready is not None
        lock = self._recv_lock
        lock.release()
        try:
            return ready.wait(events, timeout)
        finally:
            lock.acquire()
            if self._closed:  # by another thread, which woke us: the inbox is gone
                raise SocketClosed(self._port)

    # -- sending ---------------------------------------------------------------------
    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = flags_or_address
        # Fast path: a cached route to one socket, valid for this replica sequence number.
        try:
            route = self._routes[address]
        except (KeyError, TypeError):  # TypeError: an unhashable (malformed) address
            route = None  # _send is called outside the handler: its errors chain nothing
        if (
            route is None
            or route.seq != self._u64[route.tok_i]
            or flags
            or self._closed
            or (data.__class__ is not bytes and data.__class__ is not bytearray)
        ):
            return self._send(data, flags, address)
        n = len(data)
        p = route.producer
        lock = p.lock
        lock.acquire()
        try:
            sent = n <= TIPC_MAX_USER_MSG_SIZE and p.put_locked(
                route.head, route.w0 | (route.hsize + n), data
            )
        finally:
            lock.release()  # also the fence that notify() relies on
        if not sent:  # full, closed, gone or too long: the general path sorts it out
            del self._routes[address]  # it re-resolves, and re-caches a live lane
            return self._send(data, flags, address)
        p.notify()
        self._tx_msgs += 1
        self._tx_bytes += n
        if self._tx_msgs < _EXACT_UNTIL or not self._tx_msgs & _FLUSH_EVERY:
            self._flush_counters()
        return n

    def send(self, data: Any, flags: int = 0) -> int:
        if self._default_dest is None:
            _bytes_view(data)  # the stdlib's argument errors before the kernel's
            _c_int(flags)
            self._check_open()
            raise TipcError(
                89, f"socket {self._port:#010x} has no destination: use sendto or connect"
            )
        return self.sendto(data, flags, self._default_dest)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.send(data, flags)

    def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[Any] = (),
        flags: int = 0,
        address: Any = None,
    ) -> int:
        data = b"".join(bytes(b) for b in buffers)
        if address is None:
            return self.send(data, flags)
        return self.sendto(data, flags, address)

    def _send(self, data: Any, flags: int, address: Any) -> int:
        """The general path: resolve, (re)build the route, deliver; may block."""
        if self._closed:
            raise SocketClosed(self._port)
        if data.__class__ is not bytes and data.__class__ is not bytearray:
            data = _bytes_view(data)
        flags = _c_int(flags)
        addr = parse_address(address, caller="sendto", check_range=False)  # CPython's checks
        n = len(data)
        if n > TIPC_MAX_USER_MSG_SIZE:  # __tipc_sendmsg checks the size, then the address
            raise MessageTooLong(n, TIPC_MAX_USER_MSG_SIZE)
        check_service_range(addr, "sendto", address)
        nonblock = self._deadline(flags, "send")[1]
        # Read before the lookup: a change after it moves the token past what we cache.
        tok_i = (
            self._client.token_index(addr.type) if isinstance(addr, ServiceAddr) else self._seq_i
        )
        seq = self._u64[tok_i]
        table = self._client.table()
        if isinstance(addr, ServiceRange):
            self._send_mcast(table, addr, data, n, nonblock)
            return n
        if isinstance(addr, ServiceAddr):
            found = (
                anycast(table, addr, self._own)
                if addr.domain
                else table.lookup_anycast(addr.type, addr.instance)
            )
            if found is None:
                raise HostUnreachable(addr)
            node, port = found
            # Cache a route only when the lookup has one answer (round robin over several
            # must look up on every send). Two lookups in a row differ iff it has several;
            # the probe runs once per address and replica sequence, and its answer is the
            # round robin's next turn, so that is where this message goes.
            single = False
            if self._multi.get(address) != seq:
                probe = (
                    anycast(table, addr, self._own)
                    if addr.domain
                    else table.lookup_anycast(addr.type, addr.instance)
                )
                single = probe == found
                if not single:
                    node, port = probe  # type: ignore[misc]
                    if isinstance(address, (tuple, ServiceAddr)):
                        if len(self._multi) >= _MAX_ROUTES:
                            self._multi.clear()
                        self._multi[address] = seq
            words = self._named_words(addr.type, addr.instance, node, port, addr.domain)
            hdr, hsize, missing = wire.HDR40, wire.NAMED_H_SIZE, wire.ErrorCode.NO_NAME
        else:
            node = addr.node or self._own
            port = addr.port
            words = self._direct_words(port, node)
            hdr, hsize, missing = wire.HDR32, wire.BASIC_H_SIZE, wire.ErrorCode.NO_PORT
            single = True
        if node != self._own and not self._client.reachable(node):
            # tipc_node_xmit: no active link to the node (nothing is sent, nothing returned)
            raise HostUnreachable(addr, f"no link is up to node {node:#010x}")
        if single and isinstance(address, (tuple, ServiceAddr, SocketAddr)):
            self._remember_route(address, seq, tok_i, node, port, hdr, hsize, words)
        self._deliver(node, port, hdr, hsize, words, data, n, nonblock, missing)
        return n

    def _send_mcast(
        self, table: Any, addr: ServiceRange, data: Any, n: int, nonblock: bool
    ) -> None:
        """tipc_sendmcast: one copy per matching socket of this node, one per other node
        with a cluster-scope binding in the range (replicast: the copy names that node in
        w7 and says "sent by replicast" in w0[18]); EHOSTUNREACH when there is neither. A
        node no link reaches is skipped, as tipc_rcast_xmit ignores every error but
        link congestion."""
        ports = table.lookup_mcast_sockets(addr.type, addr.lower, addr.upper, exact_scope=False)
        nodes = sorted(table.lookup_mcast_nodes(addr.type, addr.lower, addr.upper) - {self._own})
        if not ports and not nodes:
            raise HostUnreachable(addr)
        own = self._own
        words: tuple[int, ...] = (
            _MCAST_W1,
            0,
            own,
            self._port,
            0,
            own,
            0,
            addr.type,
            addr.lower,
            addr.upper,
        )
        for port in ports:
            self._deliver(
                own, port, wire.HDR44, wire.MCAST_H_SIZE, words, data, n, nonblock, _NO_NAME
            )
        if not nodes:
            return
        saved = self._w0_flags
        self._w0_flags = saved | wire.SRC_DROPPABLE_BIT  # msg_set_is_rcast
        try:
            for node in nodes:
                if not self._client.reachable(node):
                    continue
                remote = (*words[:6], node, *words[7:])
                self._deliver(
                    node, 0, wire.HDR44, wire.MCAST_H_SIZE, remote, data, n, nonblock, _NO_NAME
                )
        finally:
            self._w0_flags = saved

    def _named_words(
        self, type_: int, instance: int, node: int, port: int, domain: int = 0
    ) -> tuple[int, ...]:
        """Words 1-9 of a NAMED_MSG from this socket to ``<node:port>`` ({type, instance};
        a lookup domain makes the lookup scope node scope, tipc_node2scope)."""
        own = self._own
        w1 = _NAMED_W1_NODE if domain else _NAMED_W1
        return (w1, 0, own, self._port, port, own, node, type_, instance)

    def _direct_words(self, port: int, node: int) -> tuple[int, ...]:
        """Words 1-7 of a DIRECT_MSG from this socket to socket ``<node:port>``."""
        own = self._own
        return (wire.make_w1(wire.DataType.DIRECT_MSG), 0, own, self._port, port, own, node)

    def _remember_route(
        self,
        address: Any,
        seq: int,
        tok_i: int,
        node: int,
        port: int,
        hdr: struct.Struct,
        hsize: int,
        words: tuple[int, ...],
    ) -> None:
        client = self._client
        p: Producer | BearerLane | None
        inbox: Inbox | None
        if node == self._own:
            p = client.producer(port)
            inbox = client._dest_inbox.get(port)
        else:
            try:
                lane = client.remote_lane(node)
            except HostUnreachable:
                lane = None
            p = None if lane is None else lane.checked_copy()
            inbox = None if lane is None else lane.inbox
        if p is None or inbox is None:
            self._routes.pop(address, None)  # its lane was dropped: the socket is gone
            return
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        w0 = self._w0_flags | (hsize << _HSZ_SHIFT)
        head = hdr.pack(w0, *words)
        route = _Route(seq, tok_i, p, inbox, head, hsize, w0)
        self._routes[address] = route
        client.register_route(node, port, route)  # a dropped lane invalidates it

    def _deliver(
        self,
        node: int,
        port: int,
        hdr: struct.Struct,
        hsize: int,
        words: tuple[int, ...],
        data: Any,
        n: int,
        nonblock: bool,
        missing_err: int,
    ) -> None:
        """Write one frame to ``<node:port>``: block while the lane is full (RDM; DGRAM
        drops at a full receiving socket of this node, and blocks at a full bearer lane,
        as the kernel's sender waits for a congested link)."""
        p: Producer | BearerLane | None
        if node == self._own:
            p = self._client.producer(port)
        else:
            try:
                p = self._client.remote_lane(node)
            except NodeUnreachable:
                raise HostUnreachable(
                    SocketAddr(node, port), f"no link is up to node {node:#010x}"
                ) from None
        size = hsize + n
        w0 = self._w0_flags | (hsize << _HSZ_SHIFT) | size
        if p is None:
            self._undeliverable(hdr, w0, words, data, missing_err)
            return
        with p.lock:
            try:
                off = p.reserve(size)
                if off is None:
                    if self.type == SOCK_DGRAM and p.__class__ is not BearerLane:
                        self._counters[self._c_drops] += 1
                        return
                    if nonblock:
                        raise WouldBlock(
                            f"receiving socket <{node:#010x}:{port:#010x}> is full"
                            if p.__class__ is not BearerLane
                            else f"the link to node {node:#010x} is congested"
                        )
                    off = self._wait_space(p, node, port, size)
            except InboxError as e:
                # Closed, or the lane was detached since lane() returned it (another
                # thread forgot the port: ESTALE); either way the receiver went away.
                if not isinstance(e, InboxClosed) and e.errno != errno.ESTALE:
                    raise
                off = None
            if off is not None:
                hdr.pack_into(p.buf, off, w0, *words)
                p.buf[off + hsize : off + size] = data
                p.commit(size)
        if off is None:  # the receiver closed: the message is undeliverable
            self._client.forget(node, port)  # not under p.lock: forget() takes it to detach
            if node != self._own:
                raise HostUnreachable(SocketAddr(node, port), f"no link is up to node {node:#010x}")
            self._undeliverable(hdr, w0, words, data, missing_err)
            return
        self._tx_msgs += 1
        self._tx_bytes += n
        self._flush_counters()

    def _wait_space(self, p: Producer | BearerLane, node: int, port: int, size: int) -> int | None:
        self._flush_counters()
        deadline, _ = self._deadline(0, "send")
        while True:
            off = p.reserve(size)
            if off is not None:
                return off
            if self._client.gone(node, port):
                return None
            if self._closed:
                raise SocketClosed(self._port)
            remaining = (
                _SEND_SLICE if deadline is None else min(_SEND_SLICE, deadline - time.monotonic())
            )
            if remaining <= 0:
                raise self._timed_out(
                    "send", f"sending to <{node:#010x}:{port:#010x}> (receiver full)"
                )
            p.wait_space(size, remaining)
            self._client.check_alive()

    def _undeliverable(
        self, hdr: struct.Struct, w0: int, words: tuple[int, ...], data: Any, err: int
    ) -> None:
        """The kernel's reject path: return to sender unless dest-droppable, else drop.

        Not when the node itself stopped: its closing closed every inbox, and a send must
        not report success for a message nobody can receive."""
        gone = self._node_gone()
        if gone is not None:
            raise gone
        if self._dest_droppable:
            return
        frame = bytearray(hdr.size + len(data))
        hdr.pack_into(frame, 0, w0, *words)
        frame[hdr.size :] = data
        returned = wire.reverse_for_reject(frame, err, self._own)
        if returned is not None:
            _post(self._client, self._own, self._port, returned)

    # -- receiving -------------------------------------------------------------------
    def _next_frame(self, flags: int) -> tuple[memoryview, int, int, int]:
        if self._closed:
            raise SocketClosed(self._port)
        inbox = self._inbox
        r = inbox.poll()
        if r is not None:
            return r
        deadline, nonblock = self._deadline(flags, "recv")
        if nonblock:
            if inbox.closed:  # not "try again": fileno() is readable and stays so
                raise NodeNotRunning(self.node, "the node stopped and closed this socket")
            raise WouldBlock(f"no message waiting on socket {self._port:#010x}")
        while True:
            if self._shut:  # tipc_wait_for_rcvmsg: nothing queued after RCV_SHUTDOWN
                raise NotConnected(f"socket {self._port:#010x} was shut down")
            remaining = (
                _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            )
            if remaining <= 0:
                raise self._timed_out("recv", f"recv on socket {self._port:#010x}")
            try:
                if self._ready is not None:
                    self._wait_ready(select.POLLIN, remaining)
                else:
                    inbox.wait(remaining)
            except InboxClosed:
                if self._closed:
                    raise SocketClosed(self._port) from None
                raise NodeNotRunning(self.node, "the node stopped and closed this socket") from None
            r = inbox.poll()
            if r is not None:
                return r
            if self._closed:
                raise SocketClosed(self._port)
            if inbox.closed:
                raise NodeNotRunning(self.node, "the node stopped and closed this socket")

    def _take(self, flags: int) -> tuple[memoryview, int, int, int, int, int]:
        """Next data frame: (buf, frame offset, lane, w0, w1, payload length)."""
        while True:
            buf, off, _length, lane = self._next_frame(flags)
            w0, w1 = _W01.unpack_from(buf, off)
            if not w0 & _NON_DATA:
                return buf, off, lane, w0, w1, (w0 & _SIZE) - ((w0 >> _HSZ_SHIFT) & _HSZ_MASK)
            self._inbox.release(lane)  # not a data message: nothing for this socket type

    def _consumed(self, lane: int, n: int, flags: int, w1: int) -> None:
        if flags & MSG_PEEK:
            return
        self._inbox.release(lane)
        if w1 & _ERRCODE_MASK:
            self._counters[self._c_returned] += 1
        else:
            self._rx_msgs += 1
            self._rx_bytes += n
            self._flush_counters()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if (  # anything but plain ints (0 flags, a size of 1 .. SSIZE_MAX) is checked there
            flags
            or flags.__class__ is not int
            or bufsize.__class__ is not int
            or not 0 < bufsize <= 0x7FFFFFFFFFFFFFFF
        ):
            return self._recv_polled(bufsize, flags, "recv")[0]
        lock = self._recv_lock
        lock.acquire()
        try:
            frame = None if self._closed else self._inbox.get()
            if frame is None:
                frame = self._get_blocking()
            w0, w1 = _W01.unpack_from(frame)
            if w0 & _NON_DATA or w1 & _ERRCODE_MASK:
                return self._odd_frame(frame, bufsize)[0]
            hs = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
            self._rx_msgs += 1
            self._rx_bytes += len(frame) - hs
            if self._rx_msgs < _EXACT_UNTIL or not self._rx_msgs & _FLUSH_EVERY:
                self._flush_counters()
            return frame[hs : hs + bufsize]
        finally:
            lock.release()

    def recvfrom(
        self, bufsize: int, flags: int = 0
    ) -> tuple[bytes, tuple[int, int, int, int, int]]:
        # recv's body again, on purpose: a shared helper costs a call on every message.
        if (  # anything but plain ints (0 flags, a size of 1 .. SSIZE_MAX) is checked there
            flags
            or flags.__class__ is not int
            or bufsize.__class__ is not int
            or not 0 < bufsize <= 0x7FFFFFFFFFFFFFFF
        ):
            return self._recv_polled(bufsize, flags, "recvfrom")
        lock = self._recv_lock
        lock.acquire()
        try:
            frame = None if self._closed else self._inbox.get()
            if frame is None:
                frame = self._get_blocking()
            w0, w1 = _W01.unpack_from(frame)
            if w0 & _NON_DATA or w1 & _ERRCODE_MASK:
                return self._odd_frame(frame, bufsize)
            hs = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
            self._rx_msgs += 1
            self._rx_bytes += len(frame) - hs
            if self._rx_msgs < _EXACT_UNTIL or not self._rx_msgs & _FLUSH_EVERY:
                self._flush_counters()
            return frame[hs : hs + bufsize], _source(frame, 0, hs)
        finally:
            lock.release()

    def _get_blocking(self) -> bytes:
        """Wait (per the socket's timeout) for the next frame and consume it."""
        self._flush_counters()
        while True:
            self._next_frame(0)
            frame = self._inbox.get()
            if frame is not None:
                return frame

    def _odd_frame(
        self, frame: bytes, bufsize: int
    ) -> tuple[bytes, tuple[int, int, int, int, int]]:
        """A consumed frame that is not plain data: a returned message, or not for us."""
        while True:
            w0, w1 = _W01.unpack_from(frame)
            if not w0 & _NON_DATA:
                hs = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
                if w1 & _ERRCODE_MASK:
                    self._counters[self._c_returned] += 1
                    return b"", _source(frame, 0, hs)
                self._rx_msgs += 1
                self._rx_bytes += len(frame) - hs
                return frame[hs : hs + bufsize], _source(frame, 0, hs)
            frame = self._inbox.get() or self._get_blocking()  # not a data message: skip

    def _recv_polled(
        self, bufsize: Any, flags: Any, what: str
    ) -> tuple[bytes, tuple[int, int, int, int, int]]:
        """recv/recvfrom with flags (MSG_PEEK, MSG_DONTWAIT) or odd arguments: checked,
        then read in place, maybe kept."""
        bufsize, flags = recv_args(bufsize, flags, what)
        with self._recv_lock:
            buf, off, lane, w0, w1, dlen = self._take(flags)
            hsize = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
            data = (
                b""
                if w1 & _ERRCODE_MASK
                else bytes(buf[off + hsize : off + hsize + min(dlen, bufsize)])
            )
            addr = _source(buf, off, hsize)
            self._consumed(lane, dlen, flags, w1)
            return data, addr

    def _flush_counters(self) -> None:
        c = self._counters
        c[self._c_tx_msgs] = self._tx_msgs
        c[self._c_tx_bytes] = self._tx_bytes
        c[self._c_rx_msgs] = self._rx_msgs
        c[self._c_rx_bytes] = self._rx_bytes

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        target, flags = recv_target(buffer, nbytes, flags, "recv_into")
        with self._recv_lock:
            buf, off, lane, w0, w1, dlen = self._take(flags)
            if w1 & _ERRCODE_MASK:
                n = 0
            else:
                n = min(dlen, len(target))
                start = off + ((w0 >> _HSZ_SHIFT) & _HSZ_MASK)
                target[:n] = buf[start : start + n]
            self._consumed(lane, dlen, flags, w1)
            return n

    def recvfrom_into(
        self, buffer: Any, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, tuple[int, int, int, int, int]]:
        target, flags = recv_target(buffer, nbytes, flags, "recvfrom_into")
        with self._recv_lock:
            buf, off, lane, w0, w1, dlen = self._take(flags)
            hsize = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
            n = 0 if w1 & _ERRCODE_MASK else min(dlen, len(target))
            target[:n] = buf[off + hsize : off + hsize + n]
            addr = _source(buf, off, hsize)
            self._consumed(lane, dlen, flags, w1)
            return n, addr

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[int, int, int, int, int]]:
        """Like socket.recvmsg; with ancbufsize > 0 it carries TIPC_ERRINFO, TIPC_RETDATA
        (returned messages) and TIPC_DESTNAME (messages sent to a service address)."""
        bufsize, ancbufsize, flags = recvmsg_args(bufsize, ancbufsize, flags)
        with self._recv_lock:
            buf, off, lane, w0, w1, dlen = self._take(flags)
            hsize = (w0 >> _HSZ_SHIFT) & _HSZ_MASK
            payload = bytes(buf[off + hsize : off + hsize + dlen])
            header = wire.decode_header(buf[off : off + hsize])
            addr = _source(buf, off, hsize)
            self._consumed(lane, dlen, flags, w1)
        msg_flags = 0
        ancdata: list[tuple[int, int, bytes]] = []
        if header.errcode:
            data = b""
            if ancbufsize > 0:
                ancdata.append((SOL_TIPC, TIPC_ERRINFO, _ANC_ERRINFO.pack(header.errcode, dlen)))
                if dlen:
                    ancdata.append((SOL_TIPC, TIPC_RETDATA, payload))
        else:
            data = payload[:bufsize]
            if dlen > bufsize:
                msg_flags |= _stdlib_socket.MSG_TRUNC
        if ancbufsize > 0 and header.user <= TIPC_CRITICAL_IMPORTANCE:
            if header.mtype == wire.DataType.NAMED_MSG:
                name = (header.name_type, header.name_instance, header.name_instance)
                ancdata.append((SOL_TIPC, TIPC_DESTNAME, _ANC_DESTNAME.pack(*name)))
            elif header.mtype == wire.DataType.MCAST_MSG:
                name = (header.name_type, header.name_instance, header.name_upper)
                ancdata.append((SOL_TIPC, TIPC_DESTNAME, _ANC_DESTNAME.pack(*name)))
        return data, ancdata, msg_flags, addr

    # -- the rest of socket.socket's surface ------------------------------------------------
    @property
    def timeout(self) -> float | None:
        """The stdlib's read-only ``sock.timeout``: what gettimeout() answers."""
        return self.gettimeout()

    def recvmsg_into(
        self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0
    ) -> tuple[int, list[tuple[int, int, bytes]], int, tuple[int, int, int, int, int]]:
        """socket.recvmsg_into: :meth:`recvmsg` scattered over writable buffers in turn
        (the kernel's iovec), returning the bytes stored instead of the data."""
        try:
            views = [memoryview(b) for b in buffers]
        except TypeError:
            raise TypeError(
                "recvmsg_into() argument 1 must be an iterable of read-write bytes-like objects"
            ) from None
        if any(v.readonly for v in views):
            raise TypeError("recvmsg_into() argument 1 must be read-write bytes-like objects")
        views = [v.cast("B") for v in views]
        data, ancdata, msg_flags, address = self.recvmsg(
            sum(len(v) for v in views), ancbufsize, flags
        )
        offset = 0
        for view in views:
            piece = data[offset : offset + len(view)]
            view[: len(piece)] = piece
            offset += len(piece)
        return len(data), ancdata, msg_flags, address

    def get_inheritable(self) -> bool:
        """Whether the descriptor fileno() gives passes to exec'd children, as the stdlib's;
        a child inherits the doorbell only, never the socket."""
        return os.get_inheritable(self.fileno())

    def set_inheritable(self, inheritable: bool) -> None:
        os.set_inheritable(self.fileno(), inheritable)

    # -- observability -------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        self._check_open()
        self._flush_counters()
        c = self._counters
        used, capacity = self._inbox.fill()
        return {
            "port": self._port,
            "bindings": [
                {"type": t, "lower": lo, "upper": up, "scope": sc}
                for t, lo, up, sc, _ in self._bindings
            ],
            "tx_msgs": c[self._c_tx_msgs],
            "tx_bytes": c[self._c_tx_bytes],
            "rx_msgs": c[self._c_rx_msgs],
            "rx_bytes": c[self._c_rx_bytes],
            "drops": c[self._c_drops],
            "returned": c[self._c_returned],
            "inbox_used": used,
            "inbox_capacity": capacity,
        }


_IPPROTO_TCP = 6
_VALUE_OPTIONS = frozenset(
    (TIPC_IMPORTANCE, TIPC_SRC_DROPPABLE, TIPC_DEST_DROPPABLE, TIPC_CONN_TIMEOUT, TIPC_NODELAY)
)


def _option_value(value: Any, optlen: Any) -> tuple[int | None, int]:
    """setsockopt()'s value as the kernel receives it: (its first word as a u32 or None,
    its length). The stdlib's forms: a C int (sent as 4 bytes), a bytes-like object, or
    None with an explicit optlen; anything else is its TypeError."""
    if optlen is not None:
        if value is not None:
            raise TypeError("setsockopt() takes None as the value when an optlen is given")
        length = _c_int(optlen)
        if length < 0:
            raise OverflowError("optlen must not be negative")
        return None, length
    if isinstance(value, int):
        try:
            return _c_int(value) & 0xFFFFFFFF, 4
        except OverflowError:
            pass  # the stdlib then tries the bytes form, and says so
    try:
        raw = memoryview(value).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'") from None
    if len(raw) < 4:
        return None, len(raw)
    return int(_U32LE.unpack_from(raw)[0]), len(raw)


_GROUP_REQ = struct.Struct("=IIII")  # struct tipc_group_req: type, instance, scope, flags


def _check_group_request(value: Any) -> None:
    """What tipc_sk_join refuses before it builds a group: a reserved type (EACCES), a
    scope above node scope (EINVAL)."""
    group, _instance, scope, _flags = _GROUP_REQ.unpack_from(memoryview(value).cast("B"))
    if group < TIPC_RESERVED_TYPES:
        raise AccessDenied(f"TIPC_GROUP_JOIN: group type {group} is reserved (types below 64)")
    if scope > TIPC_NODE_SCOPE:
        raise InvalidArgument(f"TIPC_GROUP_JOIN: scope {scope} is not 2 (cluster) or 3 (node)")


def _source(buf: memoryview | bytes, off: int, hsize: int) -> tuple[int, int, int, int, int]:
    """The sender's socket address, as recvfrom gives it: (TIPC_ADDR_ID, node, port, 0, 0)."""
    port = _U32.unpack_from(buf, off + _ORIG_PORT)[0]
    node = _U32.unpack_from(buf, off + (_ORIG_NODE if hsize > _SHORT else _PREV_NODE))[0]
    return (TIPC_ADDR_ID, node, port, 0, 0)


socket = Socket
