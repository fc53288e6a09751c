"""SOL_SOCKET options, answered as a kernel TIPC socket answers them.

Mirrors net/core/sock.c sk_setsockopt / sk_getsockopt, which serve level SOL_SOCKET for
every address family (TIPC adds nothing of its own there): a table maps each option to
how its value is stored and read back, so that every option, including those a TIPC
socket merely stores, gets the kernel's value or errno rather than a branch of its own.

What the kernel's answers depend on is asked of the running kernel where it can answer
(the clock tick behind SO_RCVTIMEO's rounding, the minimum buffer sizes: from a throwaway
AF_UNIX socket, whose SOL_SOCKET code is the same; the buffer maxima from
/proc/sys/net/core), and taken from the kernel's sources otherwise (TIPC's default
receive buffer, sysctl_tipc_rmem[1] = 2 MiB).

Calling conventions are CPython's socket.setsockopt / getsockopt: an int value travels
as 4 bytes, a bytes-like one as is, ``None`` with an optlen as a NULL pointer; getsockopt
without ``buflen`` (or with 0) reads 4 bytes into an int, with ``buflen`` (1..1024) returns
the bytes the kernel wrote.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import socket as _stdlib_socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tipcshm.errors import NotSupportedYet, TipcError

SOL_SOCKET = _stdlib_socket.SOL_SOCKET

# asm-generic/socket.h numbers (x86-64); the stdlib module lacks some of them.
SO_DEBUG = 1
SO_REUSEADDR = 2
SO_TYPE = 3
SO_ERROR = 4
SO_DONTROUTE = 5
SO_BROADCAST = 6
SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_OOBINLINE = 10
SO_NO_CHECK = 11
SO_PRIORITY = 12
SO_LINGER = 13
SO_BSDCOMPAT = 14
SO_REUSEPORT = 15
SO_PASSCRED = 16
SO_PEERCRED = 17
SO_RCVLOWAT = 18
SO_SNDLOWAT = 19
SO_RCVTIMEO = 20
SO_SNDTIMEO = 21
SO_BINDTODEVICE = 25
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SO_PEERNAME = 28
SO_TIMESTAMP = 29
SO_ACCEPTCONN = 30
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SO_PASSSEC = 34
SO_TIMESTAMPNS = 35
SO_MARK = 36
SO_TIMESTAMPING = 37
SO_PROTOCOL = 38
SO_DOMAIN = 39
SO_RXQ_OVFL = 40
SO_WIFI_STATUS = 41
SO_PEEK_OFF = 42
SO_NOFCS = 43
SO_LOCK_FILTER = 44
SO_SELECT_ERR_QUEUE = 45
SO_BUSY_POLL = 46
SO_ATTACH_BPF = 50
SO_INCOMING_CPU = 49
SO_COOKIE = 57

#: the options that set the receive buffer (the socket applies it to its inbox)
RCVBUF_OPTIONS = frozenset((SO_RCVBUF, SO_RCVBUFFORCE))

_INT = struct.Struct("=i")
_TIMEVAL = struct.Struct("=qq")  # struct __kernel_old_timeval on x86-64: 16 bytes
_LINGER = struct.Struct("=ii")
_UCRED = struct.Struct("=iII")
_INT_MAX = (1 << 31) - 1
_IFNAMSIZ = 16
_GETSOCKOPT_MAX = 1024  # CPython refuses a larger buflen before asking the kernel
_USEC = 1_000_000

#: TIPC's default receive buffer (tipc_sk_create: sysctl_tipc_rmem[1] = RCVBUF_DEF)
TIPC_RCVBUF_DEFAULT = 1024 * 1024 * 2

_cookies = itertools.count(1)


def _sysctl(name: str, fallback: int) -> int:
    try:
        with open(f"/proc/sys/net/core/{name}") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return fallback


@functools.lru_cache(maxsize=1)
def kernel_facts() -> tuple[int, int, int]:
    """(HZ, SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF) of the running kernel, asked of an AF_UNIX
    socket (its SOL_SOCKET answers come from the same generic code); HZ 250 and the
    x86-64 minima if that fails."""
    try:
        with _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_DGRAM) as s:
            s.setsockopt(SOL_SOCKET, SO_RCVTIMEO, _TIMEVAL.pack(0, 1))
            usec = _TIMEVAL.unpack(s.getsockopt(SOL_SOCKET, SO_RCVTIMEO, _TIMEVAL.size))[1]
            s.setsockopt(SOL_SOCKET, SO_RCVBUF, 0)
            s.setsockopt(SOL_SOCKET, SO_SNDBUF, 0)
            min_rcv = s.getsockopt(SOL_SOCKET, SO_RCVBUF)
            min_snd = s.getsockopt(SOL_SOCKET, SO_SNDBUF)
        return (_USEC // usec if usec else 250), min_rcv, min_snd
    except OSError:
        return 250, 2304, 4608


def _privileged() -> bool:
    """CAP_NET_ADMIN / CAP_NET_RAW, as far as a user-space node can tell: root."""
    return os.geteuid() == 0


class SocketOptions:
    """One socket's SOL_SOCKET state (struct sock's fields that these options touch)."""

    __slots__ = (
        "flags",
        "rcvbuf",
        "sndbuf",
        "rcvtimeo",
        "sndtimeo",
        "rcvtimeo_s",
        "sndtimeo_s",
        "rcvlowat",
        "priority",
        "mark",
        "linger",
        "bound_dev",
        "busy_poll",
        "incoming_cpu",
        "cookie",
    )

    def __init__(self) -> None:
        self.flags: dict[int, int] = {}  # boolean options that are set
        self.rcvbuf = TIPC_RCVBUF_DEFAULT
        self.sndbuf = 0  # 0: net.core.wmem_default, read when first asked (sock_init_data)
        #: None: wait forever (MAX_SCHEDULE_TIMEOUT); else jiffies (0: do not wait)
        self.rcvtimeo: int | None = None
        self.sndtimeo: int | None = None
        #: the same in seconds, for the wait paths
        self.rcvtimeo_s: float | None = None
        self.sndtimeo_s: float | None = None
        self.rcvlowat = 1
        self.priority = 0
        self.mark = 0
        self.linger: tuple[int, int] = (0, 0)  # (on, seconds)
        self.bound_dev = ""
        self.busy_poll = 0
        self.incoming_cpu = -1
        self.cookie = 0

    def set_timeo(self, attr: str, jiffies: int | None) -> None:
        setattr(self, attr, jiffies)
        seconds = None if jiffies is None else jiffies / kernel_facts()[0]
        setattr(self, f"{attr}_s", seconds)


@dataclass(frozen=True)
class _Option:
    name: str
    get: Callable[[Any, SocketOptions], bytes] | None  # None: ENOPROTOOPT
    set: Callable[[Any, SocketOptions, int, bytes], None] | None  # None: ENOPROTOOPT


def _fail(code: int, name: str, why: str) -> TipcError:
    return TipcError(code, f"SOL_SOCKET option {name}: {why}")


def _int(v: int) -> bytes:
    return _INT.pack(v)


def _flag(option: int, name: str) -> _Option:
    def get(_sock: Any, o: SocketOptions) -> bytes:
        return _int(o.flags.get(option, 0))

    def set_(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
        o.flags[option] = 1 if val else 0

    return _Option(name, get, set_)


def _get_only(name: str, get: Callable[[Any, SocketOptions], bytes]) -> _Option:
    return _Option(name, get, None)


def _buf(which: str, force: bool) -> Callable[[Any, SocketOptions, int, bytes], None]:
    """SO_RCVBUF / SO_SNDBUF (and the FORCE forms): clamped to the sysctl maximum (not
    for FORCE, which needs CAP_NET_ADMIN), doubled for the kernel's overhead, never below
    its minimum (sock_setsockopt's set_rcvbuf / set_sndbuf)."""
    name = {
        ("rcvbuf", False): "SO_RCVBUF",
        ("rcvbuf", True): "SO_RCVBUFFORCE",
        ("sndbuf", False): "SO_SNDBUF",
        ("sndbuf", True): "SO_SNDBUFFORCE",
    }[(which, force)]

    def set_(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
        if force:
            if not _privileged():
                raise _fail(errno.EPERM, name, "needs CAP_NET_ADMIN")
            val = max(val, 0)
        else:
            limit = _sysctl("rmem_max" if which == "rcvbuf" else "wmem_max", 212992)
            val = min(val & 0xFFFFFFFF, limit)  # compared as u32: a negative is huge
        val = min(val, _INT_MAX // 2)
        _hz, min_rcv, min_snd = kernel_facts()
        setattr(o, which, max(val * 2, min_rcv if which == "rcvbuf" else min_snd))

    return set_


def _timeo(attr: str, name: str) -> _Option:
    def get(_sock: Any, o: SocketOptions) -> bytes:
        j = getattr(o, attr)
        if j is None:
            return _TIMEVAL.pack(0, 0)
        hz = kernel_facts()[0]
        return _TIMEVAL.pack(j // hz, (j % hz) * _USEC // hz)

    def set_(_sock: Any, o: SocketOptions, _val: int, raw: bytes) -> None:
        # sock_set_timeout: the whole timeval, usec in range, a negative time means
        # "do not wait", 0/0 means "forever", else rounded up to the clock tick
        if len(raw) < _TIMEVAL.size:
            raise _fail(errno.EINVAL, name, f"the value must be a {_TIMEVAL.size}-byte timeval")
        sec, usec = _TIMEVAL.unpack_from(raw)
        if not 0 <= usec < _USEC:
            raise _fail(errno.EDOM, name, f"tv_usec {usec} is not 0..999999")
        if sec < 0:
            o.set_timeo(attr, 0)
            return
        if sec == 0 and usec == 0:
            o.set_timeo(attr, None)
            return
        hz = kernel_facts()[0]
        o.set_timeo(attr, sec * hz + -(-usec // (_USEC // hz)))

    return _Option(name, get, set_)


def _set_priority(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    if not (0 <= val <= 6 or _privileged()):
        raise _fail(errno.EPERM, "SO_PRIORITY", f"{val} is not 0..6 and needs CAP_NET_ADMIN")
    o.priority = val


def _set_mark(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    if not _privileged():
        raise _fail(errno.EPERM, "SO_MARK", "needs CAP_NET_ADMIN")
    o.mark = val & 0xFFFFFFFF


def _set_debug(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    if val and not _privileged():
        raise _fail(errno.EACCES, "SO_DEBUG", "needs CAP_NET_ADMIN")
    o.flags[SO_DEBUG] = 1 if val else 0


def _set_rcvlowat(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    o.rcvlowat = _INT_MAX if val < 0 else (val or 1)


def _set_linger(_sock: Any, o: SocketOptions, _val: int, raw: bytes) -> None:
    if len(raw) < _LINGER.size:
        raise _fail(errno.EINVAL, "SO_LINGER", "the value must be an 8-byte struct linger")
    on, secs = _LINGER.unpack_from(raw)
    o.linger = (1 if on else 0, (secs & 0xFFFFFFFF) if on else o.linger[1])


def _set_lock_filter(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    if o.flags.get(SO_LOCK_FILTER) and not val:
        raise _fail(errno.EPERM, "SO_LOCK_FILTER", "the filter is locked")
    o.flags[SO_LOCK_FILTER] = 1 if val else 0


def _set_busy_poll(_sock: Any, o: SocketOptions, val: int, _raw: bytes) -> None:
    if val > o.busy_poll and not _privileged():
        raise _fail(errno.EPERM, "SO_BUSY_POLL", "raising it needs CAP_NET_ADMIN")
    if val < 0:
        raise _fail(errno.EINVAL, "SO_BUSY_POLL", f"{val} is negative")
    o.busy_poll = val


def _set_timestamp(name: str) -> Callable[[Any, SocketOptions, int, bytes], None]:
    def set_(_sock: Any, _o: SocketOptions, val: int, _raw: bytes) -> None:
        if val:
            raise NotSupportedYet(f"receive timestamps ({name})")

    return set_


def _no_filter(name: str) -> Callable[[Any, SocketOptions, int, bytes], None]:
    def set_(_sock: Any, _o: SocketOptions, _val: int, _raw: bytes) -> None:
        raise NotSupportedYet(f"socket filters ({name})")

    return set_


def _detach_filter(_sock: Any, _o: SocketOptions, _val: int, _raw: bytes) -> None:
    raise _fail(errno.ENOENT, "SO_DETACH_FILTER", "no filter is attached")


def _peek_off(_sock: Any, _o: SocketOptions, *_: Any) -> bytes:
    raise _fail(errno.EOPNOTSUPP, "SO_PEEK_OFF", "TIPC sockets have no peek offset")


def _get_cookie(_sock: Any, o: SocketOptions) -> bytes:
    if not o.cookie:
        o.cookie = next(_cookies)
    return struct.pack("=Q", o.cookie)


def _get_bindtodevice(_sock: Any, o: SocketOptions) -> bytes:
    return o.bound_dev.encode() + b"\0" if o.bound_dev else b""


def _get_error(sock: Any, _o: SocketOptions) -> bytes:
    return _int(sock.so_error())


def _set_reuseport(_sock: Any, _o: SocketOptions, val: int, _raw: bytes) -> None:
    """sock_setsockopt: port reuse is for inet sockets; anything else may only turn it off."""
    if val:
        raise _fail(errno.EOPNOTSUPP, "SO_REUSEPORT", "port reuse is for inet sockets only")


def _get_acceptconn(sock: Any, _o: SocketOptions) -> bytes:
    return _int(1 if sock._listening() else 0)


_TABLE: dict[int, _Option] = {
    SO_DEBUG: _Option("SO_DEBUG", lambda s, o: _int(o.flags.get(SO_DEBUG, 0)), _set_debug),
    SO_REUSEADDR: _flag(SO_REUSEADDR, "SO_REUSEADDR"),
    SO_REUSEPORT: _Option("SO_REUSEPORT", lambda s, o: _int(0), _set_reuseport),
    SO_DONTROUTE: _flag(SO_DONTROUTE, "SO_DONTROUTE"),
    SO_BROADCAST: _flag(SO_BROADCAST, "SO_BROADCAST"),
    SO_KEEPALIVE: _flag(SO_KEEPALIVE, "SO_KEEPALIVE"),
    SO_OOBINLINE: _flag(SO_OOBINLINE, "SO_OOBINLINE"),
    SO_NO_CHECK: _flag(SO_NO_CHECK, "SO_NO_CHECK"),
    SO_PASSCRED: _flag(SO_PASSCRED, "SO_PASSCRED"),
    SO_PASSSEC: _flag(SO_PASSSEC, "SO_PASSSEC"),
    SO_RXQ_OVFL: _flag(SO_RXQ_OVFL, "SO_RXQ_OVFL"),
    SO_WIFI_STATUS: _flag(SO_WIFI_STATUS, "SO_WIFI_STATUS"),
    SO_NOFCS: _flag(SO_NOFCS, "SO_NOFCS"),
    SO_SELECT_ERR_QUEUE: _flag(SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE"),
    SO_LOCK_FILTER: _Option(
        "SO_LOCK_FILTER", lambda s, o: _int(o.flags.get(SO_LOCK_FILTER, 0)), _set_lock_filter
    ),
    SO_BSDCOMPAT: _Option("SO_BSDCOMPAT", lambda s, o: _int(0), lambda s, o, v, r: None),
    SO_TYPE: _get_only("SO_TYPE", lambda s, o: _int(s.type)),
    SO_PROTOCOL: _get_only("SO_PROTOCOL", lambda s, o: _int(s.proto)),
    SO_DOMAIN: _get_only("SO_DOMAIN", lambda s, o: _int(s.family)),
    SO_ERROR: _get_only("SO_ERROR", _get_error),
    SO_ACCEPTCONN: _get_only("SO_ACCEPTCONN", _get_acceptconn),
    SO_SNDLOWAT: _get_only("SO_SNDLOWAT", lambda s, o: _int(1)),
    # the kernel keeps no peer credentials for TIPC: cred_to_ucred(NULL, NULL)
    SO_PEERCRED: _get_only("SO_PEERCRED", lambda s, o: _UCRED.pack(0, 0xFFFFFFFF, 0xFFFFFFFF)),
    SO_COOKIE: _get_only("SO_COOKIE", _get_cookie),
    SO_SNDBUF: _Option(
        "SO_SNDBUF",
        lambda s, o: _int(o.sndbuf or _sysctl("wmem_default", 212992)),
        _buf("sndbuf", False),
    ),
    SO_RCVBUF: _Option("SO_RCVBUF", lambda s, o: _int(o.rcvbuf), _buf("rcvbuf", False)),
    SO_SNDBUFFORCE: _Option("SO_SNDBUFFORCE", None, _buf("sndbuf", True)),
    SO_RCVBUFFORCE: _Option("SO_RCVBUFFORCE", None, _buf("rcvbuf", True)),
    SO_RCVTIMEO: _timeo("rcvtimeo", "SO_RCVTIMEO"),
    SO_SNDTIMEO: _timeo("sndtimeo", "SO_SNDTIMEO"),
    SO_RCVLOWAT: _Option("SO_RCVLOWAT", lambda s, o: _int(o.rcvlowat), _set_rcvlowat),
    SO_PRIORITY: _Option("SO_PRIORITY", lambda s, o: _int(o.priority), _set_priority),
    SO_MARK: _Option("SO_MARK", lambda s, o: _int(o.mark), _set_mark),
    SO_LINGER: _Option("SO_LINGER", lambda s, o: _LINGER.pack(*o.linger), _set_linger),
    SO_BUSY_POLL: _Option("SO_BUSY_POLL", lambda s, o: _int(o.busy_poll), _set_busy_poll),
    SO_INCOMING_CPU: _Option(
        "SO_INCOMING_CPU",
        lambda s, o: _int(o.incoming_cpu),
        lambda s, o, v, r: setattr(o, "incoming_cpu", v),
    ),
    SO_TIMESTAMP: _Option("SO_TIMESTAMP", lambda s, o: _int(0), _set_timestamp("SO_TIMESTAMP")),
    SO_TIMESTAMPNS: _Option(
        "SO_TIMESTAMPNS", lambda s, o: _int(0), _set_timestamp("SO_TIMESTAMPNS")
    ),
    SO_TIMESTAMPING: _Option(
        "SO_TIMESTAMPING", lambda s, o: _int(0), _set_timestamp("SO_TIMESTAMPING")
    ),
    SO_ATTACH_FILTER: _Option("SO_ATTACH_FILTER", None, _no_filter("SO_ATTACH_FILTER")),
    SO_ATTACH_BPF: _Option("SO_ATTACH_BPF", None, _no_filter("SO_ATTACH_BPF")),
    SO_DETACH_FILTER: _Option("SO_DETACH_FILTER", None, _detach_filter),
    SO_PEEK_OFF: _Option("SO_PEEK_OFF", _peek_off, _peek_off),  # type: ignore[arg-type]
    SO_BINDTODEVICE: _Option("SO_BINDTODEVICE", _get_bindtodevice, None),  # see set_option
}


def option_name(option: int) -> str:
    spec = _TABLE.get(option)
    return spec.name if spec is not None else f"option {option}"


def raw_value(value: Any, optlen: Any) -> bytes | None:
    """setsockopt()'s value as the bytes the kernel would copy (None: a NULL pointer with
    ``optlen`` bytes), as CPython passes them; TypeError as CPython raises it."""
    if optlen is not None:
        if value is not None:
            raise TypeError("setsockopt() takes None as the value when an optlen is given")
        return None
    if isinstance(value, int):
        try:
            return _INT.pack(value)
        except struct.error:
            pass  # out of the C int range: CPython then tries the buffer form
    try:
        return bytes(memoryview(value).cast("B"))
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'") from None


def set_option(sock: Any, o: SocketOptions, option: int, raw: bytes | None, optlen: int) -> None:
    """sk_setsockopt for ``option`` with the value ``raw`` (None: NULL, ``optlen`` bytes)."""
    name = option_name(option)
    if option == SO_BINDTODEVICE:
        _set_bindtodevice(o, raw, optlen)
        return
    if optlen < _INT.size:
        raise _fail(errno.EINVAL, name, f"the value must be at least 4 bytes, not {optlen}")
    if raw is None:
        raise _fail(errno.EFAULT, name, f"no value (NULL, {optlen})")
    spec = _TABLE.get(option)
    if spec is None or spec.set is None:
        raise _fail(errno.ENOPROTOOPT, name, "cannot be set")
    spec.set(sock, o, _INT.unpack_from(raw)[0], raw)


def _set_bindtodevice(o: SocketOptions, raw: bytes | None, optlen: int) -> None:
    """sock_setbindtodevice: a device name (or "" / 0 bytes: unbind); it must exist."""
    if optlen and raw is None:
        raise _fail(errno.EFAULT, "SO_BINDTODEVICE", f"no value (NULL, {optlen})")
    name = (raw or b"")[: _IFNAMSIZ - 1].split(b"\0", 1)[0]
    if name:
        try:
            _stdlib_socket.if_nametoindex(name.decode(errors="replace"))
        except OSError:
            raise _fail(errno.ENODEV, "SO_BINDTODEVICE", f"no network device {name!r}") from None
    if o.bound_dev and not _privileged():  # sock_bindtoindex_locked: also to unbind
        raise _fail(errno.EPERM, "SO_BINDTODEVICE", "changing a binding needs CAP_NET_RAW")
    o.bound_dev = name.decode(errors="replace")


def get_option(sock: Any, o: SocketOptions, option: int, buflen: int) -> int | bytes:
    """sk_getsockopt for ``option``, returned as CPython's getsockopt returns it."""
    name = option_name(option)
    as_int = buflen == 0
    if not as_int and not 0 < buflen <= _GETSOCKOPT_MAX:
        raise OSError("getsockopt buflen out of range")
    length = _INT.size if as_int else buflen
    spec = _TABLE.get(option)
    if spec is None or spec.get is None:
        raise _fail(errno.ENOPROTOOPT, name, "cannot be read")
    value = spec.get(sock, o)
    if option == SO_COOKIE and length < len(value):
        raise _fail(errno.EINVAL, name, f"needs {len(value)} bytes, not {length}")
    if option == SO_BINDTODEVICE and value and length < _IFNAMSIZ:
        raise _fail(errno.EINVAL, name, f"needs {_IFNAMSIZ} bytes, not {length}")
    value = value[:length]
    if as_int:
        return int(_INT.unpack(value.ljust(_INT.size, b"\0"))[0])
    return value
