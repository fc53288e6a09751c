"""tipcshm: TIPC semantics in user space, over shared-memory rings.

This module is a drop-in for the stdlib's ``socket`` module: a program written for kernel
TIPC ports by changing its import::

    import tipcshm as socket

    srv = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    srv.bind((socket.TIPC_ADDR_NAMESEQ, 18888, 0, 99))
    cli = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    cli.sendto(b"hi", (socket.TIPC_ADDR_NAME, 18888, 17, 0))
    data, sender = srv.recvfrom(1024)

Every public name of the running Python's ``socket`` module is here, as the same object
(``error``, ``timeout``, ``SOL_SOCKET``, ``getdefaulttimeout``, ``create_connection``,
...), except those that build sockets from a family: :class:`socket` (also
``SocketType``), :func:`socketpair` and :func:`fromfd` build tipcshm sockets for AF_TIPC
and the stdlib's own sockets for every other family, so TCP, UDP and UNIX code keeps
working beside TIPC code. The TIPC constants carry the kernel's values, also those the
stdlib lacks. tipcshm's own API (node selection, readable addresses, service tracking) heads
``__all__``.

The node is picked by ``node=``, else ``$TIPCSHM_NODE``, else ``default``; start it with
``tipcshm start``.
"""

import socket as _stdlib_socket
from socket import *  # noqa: F403 - the stdlib module's names are this module's API
from types import FunctionType as _FunctionType

import tipcshm.conn  # noqa: F401 - registers the connection socket class with Socket
import tipcshm.constants as _constants
from tipcshm.addresses import ServiceAddr, ServiceRange, SocketAddr, parse_address
from tipcshm.constants import *  # noqa: F403 - TIPC constants, also those the stdlib lacks
from tipcshm.errors import (
    LimitReached,
    NodeAlreadyRunning,
    NodeFailure,
    NodeNotRunning,
    NotASocketDescriptor,
    NotSupportedYet,
    SharedMemoryFull,
    TipcError,
    UntrustedObject,
)

# Typed as the stdlib's (star import above), which is the interface they keep.
from tipcshm.functions import fromfd, socketpair  # type: ignore[assignment]
from tipcshm.group import Group, GroupMember, GroupMessage
from tipcshm.sock import Socket, socket  # type: ignore[assignment]
from tipcshm.tracking import ServiceEvent, ServiceSubscription, subscribe, wait_for_service

__version__ = "0.1.0"


def _stdlib_public_names() -> list[str]:
    """The socket module's public names: its ``__all__`` and the public classes and
    functions it defines without listing them there (``SocketIO``, ``MsgFlag``, ...)."""
    names = set(_stdlib_socket.__all__)
    for name, value in vars(_stdlib_socket).items():
        if not name.startswith("_") and isinstance(value, (type, _FunctionType)):
            if value.__module__ == "socket":
                names.add(name)
    return sorted(names)


# What tipcshm replaces of the stdlib's names: the socket builders.
_OVERRIDES = {"socket": socket, "SocketType": socket, "socketpair": socketpair, "fromfd": fromfd}
_STDLIB_NAMES = _stdlib_public_names()
for _name in _STDLIB_NAMES:
    # The stdlib's objects, also for the TIPC constants it has (AF_TIPC is its
    # AddressFamily member); tests/test_exports.py checks constants.py agrees with them.
    globals()[_name] = _OVERRIDES.get(_name, getattr(_stdlib_socket, _name))

# tipcshm's own API, and the stdlib names it replaces (tests/test_exports.py pins both).
__all__ = [
    "socket",
    "socketpair",
    "fromfd",
    "Socket",
    "Group",
    "GroupMember",
    "GroupMessage",
    "ServiceAddr",
    "ServiceRange",
    "SocketAddr",
    "parse_address",
    "TipcError",
    "NodeNotRunning",
    "NodeAlreadyRunning",
    "NodeFailure",
    "NotSupportedYet",
    "NotASocketDescriptor",
    "LimitReached",
    "SharedMemoryFull",
    "UntrustedObject",
    "ServiceEvent",
    "ServiceSubscription",
    "subscribe",
    "wait_for_service",
]
__all__ += sorted({*_STDLIB_NAMES, *_constants.__all__} - set(__all__))
