"""TIPC addresses: the stdlib's AF_TIPC tuples and readable wrappers.

CPython's socketmodule.c gives AF_TIPC addresses as ``(addr_type, v1, v2, v3[, scope])``:
NAMESEQ -> (type, lower, upper), NAME -> (type, instance, domain), ID -> (node, port,
ignored); scope defaults to TIPC_CLUSTER_SCOPE. Returned addresses use five elements. The
wrappers convert to and from those tuples; every socket method accepts either form.

One deliberate difference: CPython drops a NAME tuple's v3 (the kernel then sees lookup
domain 0); tipcshm keeps it as :attr:`ServiceAddr.domain` and honours it as the kernel
honours ``addr.name.domain`` of the C API (0: any node; else only that node's bindings).

A tuple is taken exactly as CPython's getsockaddrarg takes it (format ``"IIII|I"``), so a
program sees the same results after ``import tipcshm as socket``: every field is any
integer (``__index__``), masked to 32 bits as a C ``unsigned int`` (``~0`` is 0xFFFFFFFF,
the "all instances" idiom; nothing overflows), and the scope is then stored in the
``signed char`` of ``struct sockaddr_tipc``. Wrong shapes and types are CPython's
TypeErrors. What the kernel then refuses (a range whose lower is above its upper:
tipc_uaddr_valid) is an OSError with its errno; a scope is read as __tipc_bind reads it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from tipcshm.constants import (
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
    TIPC_NODE_SCOPE,
)
from tipcshm.errors import InvalidArgument

_U32 = 0xFFFFFFFF
_SCOPE_NAMES = {TIPC_CLUSTER_SCOPE: "cluster", TIPC_NODE_SCOPE: "node"}
_WRAPPER_SCOPES = (TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE, -TIPC_CLUSTER_SCOPE, -TIPC_NODE_SCOPE)
_SHAPE = "AF_TIPC address must be a tuple (addr_type, v1, v2, v3[, scope])"


def _scope_text(scope: int) -> str:
    if scope < 0:
        return f"unbind, {_SCOPE_NAMES.get(-scope, str(-scope))}"
    return _SCOPE_NAMES.get(scope, str(scope))


def _field(obj: object, name: str, value: object) -> None:
    """A wrapper's field: an int in 0..0xFFFFFFFF (struct packing would fail later)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{obj.__class__.__name__}.{name} must be an int, not {value!r}")
    if not 0 <= value <= _U32:
        raise ValueError(f"{obj.__class__.__name__}.{name} {value} is outside 0..{_U32:#x}")


def _scope_field(obj: object, scope: object) -> None:
    if scope not in _WRAPPER_SCOPES or isinstance(scope, bool):
        raise ValueError(
            f"{obj.__class__.__name__}.scope {scope!r} must be TIPC_CLUSTER_SCOPE (2) or "
            "TIPC_NODE_SCOPE (3), negated to unbind"
        )


@dataclass(frozen=True, slots=True)
class ServiceAddr:
    """``{type, instance}``: anycast destination, or a single-instance binding.

    ``domain`` is the lookup domain of ``struct sockaddr_tipc`` (``addr.name.domain``, the
    tuple's v3): 0 resolves the name among every node's bindings, a node address only
    among that node's (tipc_nametbl_lookup_anycast). A binding ignores it."""

    type: int
    instance: int
    scope: int = TIPC_CLUSTER_SCOPE
    domain: int = 0

    def __post_init__(self) -> None:
        _field(self, "type", self.type)
        _field(self, "instance", self.instance)
        _scope_field(self, self.scope)
        _field(self, "domain", self.domain)

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_NAME, self.type, self.instance, self.domain, self.scope)

    def __str__(self) -> str:
        where = f" on node {self.domain:#010x}" if self.domain else ""
        return f"{{{self.type}, {self.instance}}}{where} ({_scope_text(self.scope)} scope)"


@dataclass(frozen=True, slots=True)
class ServiceRange:
    """``{type, lower, upper}``: multicast destination, or a range binding.

    A range whose lower is above its upper can be built, as the tuple can: the socket
    call refuses it with EINVAL, as the kernel does.
    """

    type: int
    lower: int
    upper: int
    scope: int = TIPC_CLUSTER_SCOPE

    def __post_init__(self) -> None:
        _field(self, "type", self.type)
        _field(self, "lower", self.lower)
        _field(self, "upper", self.upper)
        _scope_field(self, self.scope)

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_NAMESEQ, self.type, self.lower, self.upper, self.scope)

    def __str__(self) -> str:
        return f"{{{self.type}, {self.lower}, {self.upper}}} ({_scope_text(self.scope)} scope)"


@dataclass(frozen=True, slots=True)
class SocketAddr:
    """``{node, port}``: the address every socket has."""

    node: int
    port: int

    def __post_init__(self) -> None:
        _field(self, "node", self.node)
        _field(self, "port", self.port)

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_ID, self.node, self.port, 0, 0)

    def __str__(self) -> str:
        return f"<{self.node:#010x}:{self.port:#010x}>"


Address = ServiceAddr | ServiceRange | SocketAddr
AddressLike = Address | tuple


def _c_uint(value: object, field: str, addr: object, caller: str) -> int:
    """CPython's "I" conversion: any integer, masked to 32 bits; TypeError otherwise."""
    try:
        return operator.index(value) & _U32  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{caller}(): '{type(value).__name__}' object cannot be interpreted as an integer "
            f"({field} of the AF_TIPC address {addr!r})"
        ) from None


def sockaddr_fields(addr: object, caller: str = "address") -> tuple[int, int, int, int, int]:
    """``(addr_type, v1, v2, v3, scope)`` as CPython hands them to the kernel: each field
    masked to 32 bits, the scope as the ``signed char`` it is stored in. TypeError, as
    CPython's, for anything that is not such a tuple (``caller`` names the call)."""
    if not isinstance(addr, tuple):
        raise TypeError(
            f"{caller}(): AF_TIPC address must be tuple, not {type(addr).__name__}: {addr!r}"
        )
    if len(addr) not in (4, 5):
        raise TypeError(f"{caller}(): {_SHAPE}, got {len(addr)} elements: {addr!r}")
    atype = _c_uint(addr[0], "addr_type", addr, caller)
    v1 = _c_uint(addr[1], "v1", addr, caller)
    v2 = _c_uint(addr[2], "v2", addr, caller)
    v3 = _c_uint(addr[3], "v3", addr, caller)
    scope = _c_uint(addr[4], "scope", addr, caller) if len(addr) == 5 else TIPC_CLUSTER_SCOPE
    if atype not in (TIPC_ADDR_NAMESEQ, TIPC_ADDR_NAME, TIPC_ADDR_ID):
        raise TypeError(
            f"{caller}(): Invalid address type {atype} in AF_TIPC address {addr!r}: "
            "1 (TIPC_ADDR_NAMESEQ), 2 (TIPC_ADDR_NAME) or 3 (TIPC_ADDR_ID)"
        )
    scope &= 0xFF
    return atype, v1, v2, v3, scope - 0x100 if scope & 0x80 else scope


def parse_address(
    addr: AddressLike,
    *,
    allow_negative_scope: bool = False,
    caller: str = "address",
    check_range: bool = True,
) -> Address:
    """Turn a stdlib tuple (or a wrapper) into a wrapper, as CPython and the kernel read it.

    TypeError (CPython's) for a malformed tuple; :class:`tipcshm.errors.InvalidArgument`
    (EINVAL, the kernel's tipc_uaddr_valid) for a range whose lower is above its upper,
    unless ``check_range`` is false (sendto checks the message size first, as the kernel
    does). The scope is read as __tipc_bind reads it: negative means "unbind" (kept as a
    negative scope only when ``allow_negative_scope``), then node scope (3) stays node
    scope and everything else is cluster scope. Elsewhere the kernel ignores the scope.
    """
    if isinstance(addr, (ServiceAddr, ServiceRange, SocketAddr)):
        parsed: Address = addr
        if not allow_negative_scope and not isinstance(addr, SocketAddr) and addr.scope < 0:
            parsed = _with_scope(addr, -addr.scope)
    else:
        atype, v1, v2, v3, raw_scope = sockaddr_fields(addr, caller)
        unbind = raw_scope < 0 and allow_negative_scope
        scope = TIPC_NODE_SCOPE if abs(raw_scope) == TIPC_NODE_SCOPE else TIPC_CLUSTER_SCOPE
        if unbind:
            scope = -scope
        if atype == TIPC_ADDR_NAMESEQ:
            parsed = ServiceRange(v1, v2, v3, scope)
        elif atype == TIPC_ADDR_NAME:
            parsed = ServiceAddr(v1, v2, scope, v3)
        else:
            parsed = SocketAddr(v1, v2)
    if check_range:
        check_service_range(parsed, caller, addr)
    return parsed


def check_service_range(parsed: Address, caller: str, addr: object) -> None:
    """EINVAL for a range whose lower is above its upper, as tipc_uaddr_valid refuses it."""
    if isinstance(parsed, ServiceRange) and parsed.lower > parsed.upper:
        raise InvalidArgument(
            f"{caller}(): AF_TIPC service range {addr!r}: lower {parsed.lower} is above "
            f"upper {parsed.upper}"
        )


def _with_scope(addr: ServiceAddr | ServiceRange, scope: int) -> Address:
    if isinstance(addr, ServiceAddr):
        return ServiceAddr(addr.type, addr.instance, scope, addr.domain)
    return ServiceRange(addr.type, addr.lower, addr.upper, scope)
