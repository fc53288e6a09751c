"""tipcshm: TIPC semantics in user space, over shared-memory rings.

Use it like ``socket.socket(socket.AF_TIPC, ...)``::

    import tipcshm
    srv = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM)
    srv.bind((tipcshm.TIPC_ADDR_NAMESEQ, 18888, 0, 99))
    cli = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM)
    cli.sendto(b"hi", (tipcshm.TIPC_ADDR_NAME, 18888, 17, 0))
    data, sender = srv.recvfrom(1024)

The node is picked by ``node=``, else ``$TIPCSHM_NODE``, else ``default``; start it with
``tipcshm start``.
"""

import tipcshm.constants as _constants
from tipcshm.addresses import ServiceAddr, ServiceRange, SocketAddr, parse_address
from tipcshm.constants import *  # noqa: F403 - the socket-compatible constants are the API
from tipcshm.errors import (
    NodeAlreadyRunning,
    NodeFailure,
    NodeNotRunning,
    NotSupportedYet,
    TipcError,
)
from tipcshm.sock import Socket, socket
from tipcshm.tracking import ServiceEvent, ServiceSubscription, subscribe, wait_for_service

__version__ = "0.1.0"

_CONSTANT_NAMES = [n for n in vars(_constants) if n.isupper() and not n.startswith("_")]

__all__ = [
    "Socket",
    "socket",
    "ServiceAddr",
    "ServiceRange",
    "SocketAddr",
    "parse_address",
    "TipcError",
    "NodeNotRunning",
    "NodeAlreadyRunning",
    "NodeFailure",
    "NotSupportedYet",
    "ServiceEvent",
    "ServiceSubscription",
    "subscribe",
    "wait_for_service",
    *_CONSTANT_NAMES,
]
