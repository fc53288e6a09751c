"""Socket-API constants, with the names and values of Python's ``socket`` module.

A program written for ``socket.socket(socket.AF_TIPC, ...)`` ports to tipcshm by swapping
its import, so every name here matches the stdlib (and <linux/tipc.h>) exactly. The options
131-138, which the stdlib does not export, carry their <linux/tipc.h> values. Wire-level
numbers (users, message types, error codes) live in :mod:`tipcshm.wire`; the error codes
are re-exported here under their uapi names because applications see them in TIPC_ERRINFO.
"""

from __future__ import annotations

import socket as _stdlib_socket

from tipcshm.wire import ErrorCode

AF_TIPC = 30
SOL_TIPC = 271

# Socket types: the stdlib's values (they are the Linux ones).
SOCK_STREAM = int(_stdlib_socket.SOCK_STREAM)
SOCK_DGRAM = int(_stdlib_socket.SOCK_DGRAM)
SOCK_RDM = int(getattr(_stdlib_socket, "SOCK_RDM", 4))
SOCK_SEQPACKET = int(_stdlib_socket.SOCK_SEQPACKET)

# Address types (struct sockaddr_tipc.addrtype).
TIPC_ADDR_NAMESEQ = 1
TIPC_ADDR_MCAST = 1
TIPC_SERVICE_RANGE = 1
TIPC_ADDR_NAME = 2
TIPC_SERVICE_ADDR = 2
TIPC_ADDR_ID = 3
TIPC_SOCKET_ADDR = 3

# Scopes.
TIPC_ZONE_SCOPE = 1
TIPC_CLUSTER_SCOPE = 2
TIPC_NODE_SCOPE = 3

# Importances.
TIPC_LOW_IMPORTANCE = 0
TIPC_MEDIUM_IMPORTANCE = 1
TIPC_HIGH_IMPORTANCE = 2
TIPC_CRITICAL_IMPORTANCE = 3

# Socket options at level SOL_TIPC.
TIPC_IMPORTANCE = 127
TIPC_SRC_DROPPABLE = 128
TIPC_DEST_DROPPABLE = 129
TIPC_CONN_TIMEOUT = 130
TIPC_NODE_RECVQ_DEPTH = 131
TIPC_SOCK_RECVQ_DEPTH = 132
TIPC_MCAST_BROADCAST = 133
TIPC_MCAST_REPLICAST = 134
TIPC_GROUP_JOIN = 135
TIPC_GROUP_LEAVE = 136
TIPC_SOCK_RECVQ_USED = 137
TIPC_NODELAY = 138

# Ancillary data types (recvmsg, level SOL_TIPC).
TIPC_ERRINFO = 1
TIPC_RETDATA = 2
TIPC_DESTNAME = 3

# Error codes carried in TIPC_ERRINFO.
TIPC_OK = int(ErrorCode.OK)
TIPC_ERR_NO_NAME = int(ErrorCode.NO_NAME)
TIPC_ERR_NO_PORT = int(ErrorCode.NO_PORT)
TIPC_ERR_NO_NODE = int(ErrorCode.NO_NODE)
TIPC_ERR_OVERLOAD = int(ErrorCode.OVERLOAD)
TIPC_CONN_SHUTDOWN = int(ErrorCode.CONN_SHUTDOWN)

# Reserved service types.
TIPC_NODE_STATE = 0
TIPC_CFG_SRV = 0
TIPC_TOP_SRV = 1
TIPC_LINK_STATE = 2
TIPC_RESERVED_TYPES = 64

# Topology service.
TIPC_SUB_PORTS = 0x01
TIPC_SUB_SERVICE = 0x02
TIPC_SUB_CANCEL = 0x04
TIPC_WAIT_FOREVER = -1
TIPC_PUBLISHED = 1
TIPC_WITHDRAWN = 2
TIPC_SUBSCR_TIMEOUT = 3

# Message size limits (uapi tipc.h).
TIPC_MAX_USER_MSG_SIZE = 66000

# Name lengths of nodes, media, interfaces, bearers and links.
TIPC_NODEID_LEN = 16
TIPC_MAX_MEDIA_NAME = 16
TIPC_MAX_IF_NAME = 16
TIPC_MAX_BEARER_NAME = 32
TIPC_MAX_LINK_NAME = 68

# Group join flags.
TIPC_GROUP_LOOPBACK = 0x1
TIPC_GROUP_MEMBER_EVTS = 0x2

# recvmsg flags the stdlib exports; used for group events later.
MSG_OOB = int(_stdlib_socket.MSG_OOB)
MSG_EOR = int(_stdlib_socket.MSG_EOR)
MSG_PEEK = int(_stdlib_socket.MSG_PEEK)
MSG_DONTWAIT = int(_stdlib_socket.MSG_DONTWAIT)
MSG_WAITALL = int(_stdlib_socket.MSG_WAITALL)
MSG_TRUNC = int(_stdlib_socket.MSG_TRUNC)
MSG_CTRUNC = int(_stdlib_socket.MSG_CTRUNC)

# The constants only: `from tipcshm.constants import *` must not carry this module's imports.
__all__ = [name for name in dict(globals()) if name.isupper() and not name.startswith("_")]
