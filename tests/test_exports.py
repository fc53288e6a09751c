"""The public API, pinned by equality: ``import tipcshm as socket`` is the socket module.

The stdlib part is read from the running Python's ``socket`` module (so a newer Python's
names are required too); tipcshm's own part is written out here: changing it is an API
change and must change this file.
"""

from __future__ import annotations

import inspect
import socket as stdlib
import types

import tipcshm
import tipcshm.constants

# tipcshm's own names beside the stdlib's: its API, then the TIPC constants the stdlib lacks.
OWN_API = {
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
}
KERNEL_CONSTANTS = {  # <linux/tipc.h>, with its values
    "TIPC_ADDR_MCAST": 1,
    "TIPC_SERVICE_RANGE": 1,
    "TIPC_SERVICE_ADDR": 2,
    "TIPC_SOCKET_ADDR": 3,
    "TIPC_NODE_STATE": 0,
    "TIPC_LINK_STATE": 2,
    "TIPC_RESERVED_TYPES": 64,
    "TIPC_MAX_USER_MSG_SIZE": 66000,
    "TIPC_OK": 0,
    "TIPC_ERR_NO_NAME": 1,
    "TIPC_ERR_NO_PORT": 2,
    "TIPC_ERR_NO_NODE": 3,
    "TIPC_ERR_OVERLOAD": 4,
    "TIPC_CONN_SHUTDOWN": 5,
    "TIPC_ERRINFO": 1,
    "TIPC_RETDATA": 2,
    "TIPC_DESTNAME": 3,
    "TIPC_NODE_RECVQ_DEPTH": 131,
    "TIPC_SOCK_RECVQ_DEPTH": 132,
    "TIPC_MCAST_BROADCAST": 133,
    "TIPC_MCAST_REPLICAST": 134,
    "TIPC_GROUP_JOIN": 135,
    "TIPC_GROUP_LEAVE": 136,
    "TIPC_SOCK_RECVQ_USED": 137,
    "TIPC_NODELAY": 138,
    "TIPC_GROUP_LOOPBACK": 0x1,
    "TIPC_GROUP_MEMBER_EVTS": 0x2,
    "TIPC_NODEID_LEN": 16,
    "TIPC_MAX_MEDIA_NAME": 16,
    "TIPC_MAX_IF_NAME": 16,
    "TIPC_MAX_BEARER_NAME": 32,
    "TIPC_MAX_LINK_NAME": 68,
}
# The kernel's values of the TIPC names the stdlib has too (a Python built without them
# still gets them from tipcshm).
SHARED_CONSTANTS = {
    "AF_TIPC": 30,
    "SOL_TIPC": 271,
    "TIPC_ADDR_NAMESEQ": 1,
    "TIPC_ADDR_NAME": 2,
    "TIPC_ADDR_ID": 3,
    "TIPC_ZONE_SCOPE": 1,
    "TIPC_CLUSTER_SCOPE": 2,
    "TIPC_NODE_SCOPE": 3,
    "TIPC_LOW_IMPORTANCE": 0,
    "TIPC_MEDIUM_IMPORTANCE": 1,
    "TIPC_HIGH_IMPORTANCE": 2,
    "TIPC_CRITICAL_IMPORTANCE": 3,
    "TIPC_IMPORTANCE": 127,
    "TIPC_SRC_DROPPABLE": 128,
    "TIPC_DEST_DROPPABLE": 129,
    "TIPC_CONN_TIMEOUT": 130,
    "TIPC_CFG_SRV": 0,
    "TIPC_TOP_SRV": 1,
    "TIPC_SUB_PORTS": 1,
    "TIPC_SUB_SERVICE": 2,
    "TIPC_SUB_CANCEL": 4,
    "TIPC_WAIT_FOREVER": -1,
    "TIPC_PUBLISHED": 1,
    "TIPC_WITHDRAWN": 2,
    "TIPC_SUBSCR_TIMEOUT": 3,
}
# The stdlib names tipcshm replaces: they build tipcshm sockets for AF_TIPC.
REPLACED = {"socket", "SocketType", "socketpair", "fromfd"}


def stdlib_public_names() -> set[str]:
    """``socket.__all__`` and the public classes and functions socket.py defines
    without listing them there (``SocketIO``, ``MsgFlag``, ``AddressInfo``, ...)."""
    names = set(stdlib.__all__)
    for name, value in vars(stdlib).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and (value.__module__ == "socket"):
            names.add(name)
    return names


def test_names_are_the_stdlib_ones_and_ours_exactly() -> None:
    expected = stdlib_public_names() | OWN_API | set(KERNEL_CONSTANTS) | set(SHARED_CONSTANTS)
    assert set(tipcshm.__all__) == expected
    assert len(tipcshm.__all__) == len(expected)  # no duplicates either
    public = {
        name
        for name, value in vars(tipcshm).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == expected  # nothing public beside __all__ (no stray imports)


def test_stdlib_names_are_the_stdlib_objects() -> None:
    for name in stdlib_public_names() - REPLACED:
        ours, theirs = getattr(tipcshm, name), getattr(stdlib, name)
        assert ours is theirs or (
            not callable(theirs) and type(ours) is type(theirs) and ours == theirs
        ), name
    # the ones a ported program uses first, spelled out
    assert tipcshm.error is OSError and tipcshm.timeout is TimeoutError
    assert tipcshm.getdefaulttimeout is stdlib.getdefaulttimeout
    assert tipcshm.setdefaulttimeout is stdlib.setdefaulttimeout
    assert tipcshm.SOL_SOCKET == stdlib.SOL_SOCKET and tipcshm.SHUT_RDWR == stdlib.SHUT_RDWR
    assert tipcshm.AF_TIPC is stdlib.AF_TIPC  # the AddressFamily member, repr and all


def test_replaced_names_build_tipcshm_sockets_only_for_af_tipc() -> None:
    assert tipcshm.SocketType is tipcshm.socket is tipcshm.Socket
    assert tipcshm.socketpair is not stdlib.socketpair and tipcshm.fromfd is not stdlib.fromfd
    params = list(inspect.signature(stdlib.socket).parameters)
    assert params == ["family", "type", "proto", "fileno"]
    ours = inspect.signature(tipcshm.socket).parameters
    for name in params:
        default = inspect.signature(stdlib.socket).parameters[name].default
        assert ours[name].default == default, name


def test_tipc_constants_have_the_kernel_values() -> None:
    for name, value in {**KERNEL_CONSTANTS, **SHARED_CONSTANTS}.items():
        assert getattr(tipcshm, name) == value, name
        assert getattr(tipcshm.constants, name) == value, name  # also without the stdlib's
        if hasattr(stdlib, name):
            assert getattr(stdlib, name) == value, name
    for name in SHARED_CONSTANTS:  # the stdlib's objects win where it has them
        if hasattr(stdlib, name):
            assert getattr(tipcshm, name) is getattr(stdlib, name), name
    assert set(tipcshm.constants.__all__) >= set(KERNEL_CONSTANTS) | set(SHARED_CONSTANTS)
    for name in tipcshm.constants.__all__:  # every constant tipcshm defines agrees
        if hasattr(stdlib, name):
            assert getattr(tipcshm.constants, name) == getattr(stdlib, name), name
