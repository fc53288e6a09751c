"""TIPC addresses: the stdlib's AF_TIPC tuples and readable wrappers.

CPython's socketmodule.c gives AF_TIPC addresses as ``(addr_type, v1, v2, v3[, scope])``:
NAMESEQ -> (type, lower, upper), NAME -> (type, instance, ignored), ID -> (node, port,
ignored); scope defaults to TIPC_CLUSTER_SCOPE. Returned addresses use five elements. The
wrappers convert to and from those tuples; every socket method accepts either form.
"""

from __future__ import annotations

from dataclasses import dataclass

from tipcshm.constants import (
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
    TIPC_NODE_SCOPE,
    TIPC_ZONE_SCOPE,
)

_U32 = 0xFFFFFFFF
_SCOPE_NAMES = {TIPC_CLUSTER_SCOPE: "cluster", TIPC_NODE_SCOPE: "node"}


def _scope_text(scope: int) -> str:
    return _SCOPE_NAMES.get(scope, str(scope))


@dataclass(frozen=True, slots=True)
class ServiceAddr:
    """``{type, instance}``: anycast destination, or a single-instance binding."""

    type: int
    instance: int
    scope: int = TIPC_CLUSTER_SCOPE

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_NAME, self.type, self.instance, 0, self.scope)

    def __str__(self) -> str:
        return f"{{{self.type}, {self.instance}}} ({_scope_text(self.scope)} scope)"


@dataclass(frozen=True, slots=True)
class ServiceRange:
    """``{type, lower, upper}``: multicast destination, or a range binding."""

    type: int
    lower: int
    upper: int
    scope: int = TIPC_CLUSTER_SCOPE

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_NAMESEQ, self.type, self.lower, self.upper, self.scope)

    def __str__(self) -> str:
        return f"{{{self.type}, {self.lower}, {self.upper}}} ({_scope_text(self.scope)} scope)"


@dataclass(frozen=True, slots=True)
class SocketAddr:
    """``{node, port}``: the address every socket has."""

    node: int
    port: int

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (TIPC_ADDR_ID, self.node, self.port, 0, 0)

    def __str__(self) -> str:
        return f"<{self.node:#010x}:{self.port:#010x}>"


Address = ServiceAddr | ServiceRange | SocketAddr
AddressLike = Address | tuple


def _u32(value: object, field: str, addr: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"AF_TIPC address {addr!r}: {field} must be an int, not {type(value).__name__}"
        )
    if not 0 <= value <= _U32:
        raise ValueError(f"AF_TIPC address {addr!r}: {field} {value} is outside 0..{_U32:#x}")
    return value


def parse_address(addr: AddressLike, *, allow_negative_scope: bool = False) -> Address:
    """Turn a stdlib tuple (or a wrapper) into a wrapper; TypeError/ValueError name the fault.

    Scope 0 and the deprecated zone scope mean cluster scope, as in the kernel. A negative
    scope (bind's "unbind" convention) is kept only when ``allow_negative_scope``.
    """
    if isinstance(addr, (ServiceAddr, ServiceRange, SocketAddr)):
        return addr
    if not isinstance(addr, tuple):
        raise TypeError(
            "AF_TIPC address must be a tuple (addr_type, v1, v2, v3[, scope]), "
            f"not {type(addr).__name__}: {addr!r}"
        )
    if len(addr) not in (4, 5):
        raise TypeError(
            f"AF_TIPC address must have 4 or 5 elements (addr_type, v1, v2, v3[, scope]), "
            f"got {len(addr)}: {addr!r}"
        )
    atype = _u32(addr[0], "addr_type", addr)
    v1 = _u32(addr[1], "v1", addr)
    v2 = _u32(addr[2], "v2", addr)
    if isinstance(addr[3], bool) or not isinstance(addr[3], int):
        raise TypeError(f"AF_TIPC address {addr!r}: v3 must be an int")
    scope = addr[4] if len(addr) == 5 else TIPC_CLUSTER_SCOPE
    if isinstance(scope, bool) or not isinstance(scope, int):
        raise TypeError(f"AF_TIPC address {addr!r}: scope must be an int")
    if scope < 0:
        if not allow_negative_scope:
            raise ValueError(f"AF_TIPC address {addr!r}: negative scope is only valid for bind")
    elif scope in (0, TIPC_ZONE_SCOPE):
        scope = TIPC_CLUSTER_SCOPE
    elif scope not in (TIPC_CLUSTER_SCOPE, TIPC_NODE_SCOPE):
        raise ValueError(f"AF_TIPC address {addr!r}: scope {scope} is not 2 (cluster) or 3 (node)")
    if atype == TIPC_ADDR_NAMESEQ:
        v3 = _u32(addr[3], "upper", addr)
        if v2 > v3:
            raise ValueError(f"AF_TIPC address {addr!r}: lower {v2} is above upper {v3}")
        return ServiceRange(v1, v2, v3, scope)
    if atype == TIPC_ADDR_NAME:
        return ServiceAddr(v1, v2, scope)
    if atype == TIPC_ADDR_ID:
        return SocketAddr(v1, v2)
    raise ValueError(
        f"AF_TIPC address {addr!r}: addr_type {atype} is not 1 (NAMESEQ), 2 (NAME) or 3 (ID)"
    )
