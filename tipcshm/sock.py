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
import socket as _stdlib_socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from tipcshm import wire
from tipcshm.addresses import (
    AddressLike,
    ServiceAddr,
    ServiceRange,
    SocketAddr,
    check_service_range,
    parse_address,
)
from tipcshm.client import NodeClient, get_client
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
    NotSupportedYet,
    ProtocolOptionError,
    SocketClosed,
    Timeout,
    TipcError,
    WouldBlock,
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
    inbox_name,
)

_W01 = wire.HDR_W01
_U32 = wire.U32
_U32LE = struct.Struct("=I")  # a socket option's value, in the host's byte order
_ANC_ERRINFO = struct.Struct("=II")
_ANC_DESTNAME = struct.Struct("=III")
_WAIT_SLICE = 0.25  # blocked calls re-check closure and node liveness this often (seconds)
_ERRCODE_MASK = 0xF << 25  # w1 bits 28:25
_MAX_ROUTES = 1024  # cached destinations per socket
# The hot-path counters reach the socket table after each of a socket's first 1024
# messages (quiet sockets read exactly in `tipcshm stat`), then every 64th.
_EXACT_UNTIL = 1024
_FLUSH_EVERY = 63


class _Route:
    """A destination resolved to one socket: our lane into it and the frame's header.

    Valid while the replica's sequence number is ``seq``: any bind or unbind on the node
    moves it, and the next send resolves again.
    """

    __slots__ = ("seq", "producer", "inbox", "head", "hsize", "w0", "__weakref__")

    def __init__(
        self, seq: int, producer: Producer, inbox: Inbox, head: bytes, hsize: int, w0: int
    ) -> None:
        self.seq = seq
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
            from tipcshm.conn import ConnSocket

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
        self._bindings: list[tuple[int, int, int, int, int]] = []  # type, lower, upper, scope, key
        self._pub_count = 0
        self._ctl_seq = 0
        self._default_dest: ServiceAddr | ServiceRange | SocketAddr | None = None
        self._recv_lock = threading.Lock()
        self._ctl_lock = threading.Lock()
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
        """Withdraw the bindings, return unread messages that asked for it, free the port."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):  # the node may be gone: close anyway
            self._flush_counters()
        self._client.forget(self._port)  # this process's own lane into it, if it sent here
        self._finalizer()

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

    # -- options ---------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

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
            raise NotSupportedYet("communication groups (TIPC_GROUP_JOIN/LEAVE)")
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
            self._conn_timeout_ms = word
        elif option in (TIPC_MCAST_BROADCAST, TIPC_MCAST_REPLICAST, TIPC_NODELAY):
            pass  # transmission-method hints: one node has one method
        elif option == TIPC_GROUP_LEAVE:
            raise NotSupportedYet("communication groups (TIPC_GROUP_JOIN/LEAVE)")
        else:
            raise InvalidArgument(f"no SOL_TIPC option {option}")
        self._update_w0()
        self._routes.clear()  # their header words carry the old flags

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        self._check_open()
        if level == _stdlib_socket.SOL_SOCKET:
            if option == _stdlib_socket.SO_ERROR:
                value = self.so_error()
            elif option == _stdlib_socket.SO_TYPE:
                value = self.type
            else:
                raise ProtocolOptionError(level, option, "of SOL_SOCKET only SO_ERROR, SO_TYPE")
        elif level != SOL_TIPC:
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
            raise NotSupportedYet("communication groups (TIPC_GROUP_JOIN/LEAVE)")
        else:
            raise ProtocolOptionError(level, option)
        if buflen:
            return struct.pack("=I", value)[:buflen]
        return value

    def so_error(self) -> int:
        """getsockopt(SOL_SOCKET, SO_ERROR): connectionless sockets have none pending."""
        return 0

    def fileno(self) -> int:
        """A descriptor that selectors report readable when a message is waiting."""
        self._check_open()
        return self._inbox.fileno()

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
            or route.seq != self._u64[self._seq_i]
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
        nonblock = bool(flags & MSG_DONTWAIT) or self._timeout == 0.0
        seq = self._u64[self._seq_i]
        table = self._client.table()
        if isinstance(addr, ServiceRange):
            ports = table.lookup_mcast_sockets(addr.type, addr.lower, addr.upper, exact_scope=False)
            if not ports:
                raise HostUnreachable(addr)
            words: tuple[int, ...] = (
                wire.make_w1(wire.DataType.MCAST_MSG, lookup_scope=TIPC_CLUSTER_SCOPE),
                0,
                self._own,
                self._port,
                0,
                self._own,
                0,
                addr.type,
                addr.lower,
                addr.upper,
            )
            for port in ports:
                self._deliver(
                    port,
                    wire.HDR44,
                    wire.MCAST_H_SIZE,
                    words,
                    data,
                    n,
                    nonblock,
                    wire.ErrorCode.NO_NAME,
                )
            return n
        if isinstance(addr, ServiceAddr):
            found = table.lookup_anycast(addr.type, addr.instance)
            if found is None:
                raise HostUnreachable(addr)
            node, port = found
            # Cache a route only when the lookup has one answer (round robin over several
            # must look up on every send). Two lookups in a row differ iff it has several;
            # the probe runs once per address and replica sequence, and its answer is the
            # round robin's next turn, so that is where this message goes.
            single = False
            if self._multi.get(address) != seq:
                probe = table.lookup_anycast(addr.type, addr.instance)
                single = probe == found
                if not single:
                    node, port = probe  # type: ignore[misc]
                    if isinstance(address, (tuple, ServiceAddr)):
                        if len(self._multi) >= _MAX_ROUTES:
                            self._multi.clear()
                        self._multi[address] = seq
            if node != self._own:
                raise HostUnreachable(
                    addr, f"binding on node {node:#010x}: inter-node links are not supported yet"
                )
            words = self._named_words(addr.type, addr.instance, port)
            hdr, hsize, missing = wire.HDR40, wire.NAMED_H_SIZE, wire.ErrorCode.NO_NAME
        else:
            node = addr.node or self._own
            if node != self._own:
                raise HostUnreachable(
                    addr,
                    f"node {node:#010x} is not reachable: inter-node links are not supported yet",
                )
            port = addr.port
            words = self._direct_words(port, node)
            hdr, hsize, missing = wire.HDR32, wire.BASIC_H_SIZE, wire.ErrorCode.NO_PORT
            single = True
        if single and isinstance(address, (tuple, ServiceAddr, SocketAddr)):
            self._remember_route(address, seq, port, hdr, hsize, words)
        self._deliver(port, hdr, hsize, words, data, n, nonblock, missing)
        return n

    def _named_words(self, type_: int, instance: int, port: int) -> tuple[int, ...]:
        """Words 1-9 of a NAMED_MSG from this socket to local ``port`` ({type, instance})."""
        own = self._own
        w1 = wire.make_w1(wire.DataType.NAMED_MSG, lookup_scope=TIPC_CLUSTER_SCOPE)
        return (w1, 0, own, self._port, port, own, own, type_, instance)

    def _direct_words(self, port: int, node: int) -> tuple[int, ...]:
        """Words 1-7 of a DIRECT_MSG from this socket to socket ``<node:port>``."""
        own = self._own
        return (wire.make_w1(wire.DataType.DIRECT_MSG), 0, own, self._port, port, own, node)

    def _remember_route(
        self,
        address: Any,
        seq: int,
        port: int,
        hdr: struct.Struct,
        hsize: int,
        words: tuple[int, ...],
    ) -> None:
        client = self._client
        p = client.producer(port)
        inbox = client._dest_inbox.get(port)
        if p is None or inbox is None:
            self._routes.pop(address, None)  # its lane was dropped: the socket is gone
            return
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        w0 = self._w0_flags | (hsize << 19)
        head = hdr.pack(w0, *words)
        route = _Route(seq, p, inbox, head, hsize, w0)
        self._routes[address] = route
        client.register_route(port, route)  # a dropped lane invalidates it

    def _deliver(
        self,
        port: int,
        hdr: struct.Struct,
        hsize: int,
        words: tuple[int, ...],
        data: Any,
        n: int,
        nonblock: bool,
        missing_err: int,
    ) -> None:
        """Write one frame into ``port``'s inbox: block while it is full (RDM), drop (DGRAM)."""
        p = self._client.producer(port)
        size = hsize + n
        w0 = self._w0_flags | (hsize << 19) | size
        if p is None:
            self._undeliverable(hdr, w0, words, data, missing_err)
            return
        with p.lock:
            try:
                off = p.reserve(size)
                if off is None:
                    if self.type == SOCK_DGRAM:
                        self._counters[self._c_drops] += 1
                        return
                    if nonblock:
                        raise WouldBlock(
                            f"receiving socket <{self._own:#010x}:{port:#010x}> is full"
                        )
                    off = self._wait_space(p, port, size)
            except InboxError as e:
                # Closed, or the lane was detached since producer() returned it (another
                # thread forgot the port: ESTALE); either way the receiver went away.
                if not isinstance(e, InboxClosed) and e.errno != errno.ESTALE:
                    raise
                off = None
            if off is not None:
                hdr.pack_into(p.buf, off, w0, *words)
                p.buf[off + hsize : off + size] = data
                p.commit(size)
        if off is None:  # the receiver closed: the message is undeliverable
            self._client.forget(port)  # not under p.lock: forget() takes it to detach
            self._undeliverable(hdr, w0, words, data, missing_err)
            return
        self._tx_msgs += 1
        self._tx_bytes += n
        self._flush_counters()

    def _wait_space(self, p: Producer, port: int, size: int) -> int | None:
        self._flush_counters()
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            off = p.reserve(size)
            if off is not None:
                return off
            if self._client.gone(port):
                return None
            if self._closed:
                raise SocketClosed(self._port)
            remaining = (
                _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            )
            if remaining <= 0:
                raise Timeout(
                    f"timed out sending to <{self._own:#010x}:{port:#010x}> (receiver full)"
                )
            p.wait_space(size, remaining)
            self._client.check_alive()

    def _undeliverable(
        self, hdr: struct.Struct, w0: int, words: tuple[int, ...], data: Any, err: int
    ) -> None:
        """The kernel's reject path: return to sender unless dest-droppable, else drop."""
        if self._dest_droppable:
            return
        frame = bytearray(hdr.size + len(data))
        hdr.pack_into(frame, 0, w0, *words)
        frame[hdr.size :] = data
        returned = wire.reverse_for_reject(frame, err, self._own)
        if returned is not None:
            _post(self._client, self._port, returned)

    # -- receiving -------------------------------------------------------------------
    def _next_frame(self, flags: int) -> tuple[memoryview, int, int, int]:
        if self._closed:
            raise SocketClosed(self._port)
        inbox = self._inbox
        r = inbox.poll()
        if r is not None:
            return r
        if flags & MSG_DONTWAIT or self._timeout == 0.0:
            raise WouldBlock(f"no message waiting on socket {self._port:#010x}")
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = (
                _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            )
            if remaining <= 0:
                raise Timeout(f"timed out waiting for a message on socket {self._port:#010x}")
            try:
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
            if (w0 >> 25) & 0xF <= TIPC_CRITICAL_IMPORTANCE:
                return buf, off, lane, w0, w1, (w0 & 0x1FFFF) - ((w0 >> 19) & 0x3C)
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
            if (w0 >> 25) & 0xF > TIPC_CRITICAL_IMPORTANCE or w1 & _ERRCODE_MASK:
                return self._odd_frame(frame, bufsize)[0]
            hs = (w0 >> 19) & 0x3C
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
            if (w0 >> 25) & 0xF > TIPC_CRITICAL_IMPORTANCE or w1 & _ERRCODE_MASK:
                return self._odd_frame(frame, bufsize)
            hs = (w0 >> 19) & 0x3C
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
            if (w0 >> 25) & 0xF <= TIPC_CRITICAL_IMPORTANCE:
                hs = (w0 >> 19) & 0x3C
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
            hsize = (w0 >> 19) & 0x3C
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
                start = off + ((w0 >> 19) & 0x3C)
                target[:n] = buf[start : start + n]
            self._consumed(lane, dlen, flags, w1)
            return n

    def recvfrom_into(
        self, buffer: Any, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, tuple[int, int, int, int, int]]:
        target, flags = recv_target(buffer, nbytes, flags, "recvfrom_into")
        with self._recv_lock:
            buf, off, lane, w0, w1, dlen = self._take(flags)
            hsize = (w0 >> 19) & 0x3C
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
            hsize = (w0 >> 19) & 0x3C
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


# -- arguments, checked as socket.socket and the kernel check them, before any data moves --
_C_INT_MIN, _C_INT_MAX = -(1 << 31), (1 << 31) - 1
_SSIZE_MAX = (1 << 63) - 1


def _c_int(value: Any) -> int:
    """An argument the stdlib parses as a C int: TypeError unless an integer, OverflowError
    outside the C range."""
    v = operator.index(value)
    if v > _C_INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if v < _C_INT_MIN:
        raise OverflowError("signed integer is less than minimum")
    return v


def _ssize(value: Any) -> int:
    v = operator.index(value)
    if not -_SSIZE_MAX - 1 <= v <= _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return v


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


def _bytes_view(data: Any) -> memoryview:
    """Data to send as bytes (a view), or the stdlib's TypeError: len() of a view of
    wider items would count items, not bytes."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


def recv_args(bufsize: Any, flags: Any, what: str) -> tuple[int, int]:
    """(bufsize, flags) of a recv/recvfrom/recvmsg call, or the error the stdlib raises for
    them (TypeError, OverflowError, ValueError), or EINVAL for a zero size as
    tipc_recvmsg/tipc_recvstream give it."""
    n = _ssize(bufsize)
    f = _c_int(flags)
    if n < 0:
        raise ValueError(
            "negative buffer size in recvmsg()"
            if what == "recvmsg"
            else f"negative buffersize in {what}"
        )
    if n == 0:
        raise InvalidArgument(f"{what}: a buffer of 0 bytes (the kernel's EINVAL)")
    return n, f


def recvmsg_args(bufsize: Any, ancbufsize: Any, flags: Any) -> tuple[int, int, int]:
    """recvmsg()'s sizes and flags, checked as the stdlib and then the kernel check them."""
    n = _ssize(bufsize)
    anc = _ssize(ancbufsize)
    f = _c_int(flags)
    if anc < 0:
        raise ValueError("invalid ancillary data buffer length")
    n, _ = recv_args(n, f, "recvmsg")
    return n, anc, f


def recv_target(buffer: Any, nbytes: Any, flags: Any, what: str) -> tuple[memoryview, int]:
    """(the writable bytes to fill, flags) of a recv_into/recvfrom_into call, checked as
    the stdlib and then the kernel check them."""
    try:
        target = memoryview(buffer)
    except TypeError:
        target = None
    if target is None or target.readonly:
        raise TypeError(
            f"{what}() argument 1 must be read-write bytes-like object, not {type(buffer).__name__}"
        )
    target = target.cast("B")
    n = _ssize(nbytes)
    f = _c_int(flags)
    if n < 0:
        raise ValueError(f"negative buffersize in {what}")
    if n > len(target):
        raise ValueError(
            "buffer too small for requested bytes"
            if what == "recv_into"
            else "nbytes is greater than the length of the buffer"
        )
    if n:
        target = target[:n]
    elif not len(target):
        raise InvalidArgument(f"{what}: a buffer of 0 bytes (the kernel's EINVAL)")
    return target, f


def shutdown_how(how: Any) -> None:
    """shutdown()'s argument: an integer (TypeError, as the stdlib), and SHUT_RDWR, the
    only one tipc_shutdown takes (EINVAL otherwise)."""
    if _c_int(how) != _stdlib_socket.SHUT_RDWR:
        raise InvalidArgument(f"shutdown({how}): TIPC sockets only shut down both ways (2)")


def _source(buf: memoryview | bytes, off: int, hsize: int) -> tuple[int, int, int, int, int]:
    """The sender's socket address, as recvfrom gives it: (TIPC_ADDR_ID, node, port, 0, 0)."""
    port = _U32.unpack_from(buf, off + 16)[0]
    node = _U32.unpack_from(buf, off + (24 if hsize > wire.SHORT_H_SIZE else 12))[0]
    return (TIPC_ADDR_ID, node, port, 0, 0)


def _post(client: NodeClient, port: int, frame: bytes) -> bool:
    """Best-effort, non-blocking delivery of a node-generated frame (returned messages)."""
    p = client.producer(port)
    if p is None:
        return False
    with p.lock:
        try:
            if not p.write(frame):
                return False
        except InboxError as e:  # the lane was detached meanwhile: the sender is gone
            if e.errno != errno.ESTALE:
                raise
            return False
    client.seg.bump("messages_returned")
    return True


def _return_unread(client: NodeClient, inbox: Inbox) -> None:
    """On close, unread messages that are not dest-droppable go back with TIPC_ERR_NO_PORT.

    Connection protocol messages (acks, probes) are not: the kernel consumes them on
    arrival (tipc_sk_conn_proto_rcv), so they are never in a released socket's queue.
    Returned, a peer's ack read as an abort and turned the EOF of its shutdown into
    ECONNRESET whenever the closing side had acks left unread.
    """
    reject_unread(
        inbox,
        client.addr,
        lambda port, frame: _post(client, port, frame),
        select=lambda h: h.user != wire.User.CONN_MANAGER,
    )


class Rejected:
    """What :func:`reject_unread` did: frames returned, frames dropped (undecodable, not to
    be returned, or their sender's inbox full or gone), and whether its budget ran out
    with frames still queued."""

    __slots__ = ("returned", "dropped", "cut")

    def __init__(self) -> None:
        self.returned = 0
        self.dropped = 0
        self.cut = False


def reject_unread(
    inbox: Inbox,
    own: int,
    post: Callable[[int, bytes], bool],
    *,
    select: Callable[[wire.Header], bool] | None = None,
    max_frames: int | None = None,
    deadline: float | None = None,
) -> Rejected:
    """Consume every frame still queued in ``inbox`` and return each to its sender with
    TIPC_ERR_NO_PORT, as the kernel rejects a released socket's queue (tsk_rej_rx_queue):
    ``post(port, frame)`` delivers the returned frame; frames that are dest-droppable or
    already carry an error are dropped (wire.reverse_for_reject). ``select`` (given the
    decoded header, in queue order) keeps only the frames it answers True for; the rest
    are dropped. The frames are untrusted: undecodable ones are dropped. ``max_frames``
    and ``deadline`` (time.monotonic) bound the work; frames left then stay unread.
    """
    done = Rejected()
    n = 0
    while True:
        if (max_frames is not None and n >= max_frames) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            done.cut = inbox.poll() is not None
            return done
        r = inbox.poll()
        if r is None:
            return done
        buf, off, length, lane = r
        frame = bytes(buf[off : off + length])
        inbox.release(lane)
        n += 1
        try:
            if select is not None and not select(wire.validate_msg(frame)):
                returned = None
            else:
                returned = wire.reverse_for_reject(frame, wire.ErrorCode.NO_PORT, own)
        except (wire.WireError, ValueError):
            returned = None
        if returned is not None and post(_U32.unpack_from(returned, 20)[0], returned):
            done.returned += 1
        else:
            done.dropped += 1


socket = Socket
