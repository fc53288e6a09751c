"""The topology service endpoint, run inside the name-table worker.

Mirrors net/tipc/topsrv.c: a SOCK_SEQPACKET listener bound to {TIPC_TOP_SRV, TIPC_TOP_SRV}
with node scope accepts subscriber connections; each message on a connection is one
``struct tipc_subscr``; the server answers with ``struct tipc_event`` messages. All
decisions (matching, initial reports, SERVICE first/last, cancel, timeouts, byte order)
are the sans-IO :class:`~tipcshm.core.topology.TopologyService`; this module only moves
bytes between it and the sockets, and is fed the name table's binding events by the
worker that applies them. It drives the service through the core's contract: requests
go in as ``(connection id, bytes)`` with ``receive``, events come out of
``frames_to_send`` as the same pairs, ``next_timer``/``handle_timer`` run the
subscription timeouts, and a :class:`~tipcshm.core.events.SubscriberRejected` event
closes the connection it names.

The worker is the name table's single writer, so it binds the listener by inserting the
binding straight into its table (a bind request to itself would wait on itself).
Events for a subscriber that does not read are queued per connection, as topsrv.c's
outqueue does, and sent when the socket takes them; past MAX_QUEUED the subscriber is
dropped rather than let it grow the worker without bound.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from typing import Any

from tipcshm.constants import (
    AF_TIPC,
    SOCK_SEQPACKET,
    TIPC_NODE_SCOPE,
    TIPC_TOP_SRV,
)
from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import SubscriberRejected
from tipcshm.core.nametable import Binding, BindingAdded, BindingRemoved, NameTable
from tipcshm.core.topology import TopologyService

log = logging.getLogger("tipcshm.workers.topology")

MAX_QUEUED = 65536  # events waiting for one subscriber before it is dropped
RECV_SIZE = 4096


class TopologyServer:
    def __init__(self, node: str, own_node: int, table: NameTable | None = None) -> None:
        import tipcshm

        self.service = TopologyService(table=table)
        self.listener: Any = tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node)
        self.listener.setblocking(False)
        self.listener.listen(128)
        port = self.listener.port
        self.binding = Binding(
            TIPC_TOP_SRV, TIPC_TOP_SRV, TIPC_TOP_SRV, TIPC_NODE_SCOPE, own_node, port, port
        )
        self.conns: dict[int, Any] = {}  # connection id (the accepted socket's port) -> socket
        self.queues: dict[int, deque[bytes]] = {}

    # -- sockets -------------------------------------------------------------------
    def filenos(self) -> list[int]:
        return [self.listener.fileno(), *(s.fileno() for s in self.conns.values())]

    def serve(self, now: float, table: NameTable) -> None:
        """Accept new subscribers and read every subscription waiting (never blocks).
        ``table`` is the worker's name table (the initial reports read it)."""
        self.service.table = table
        while True:
            try:
                sock, _addr = self.listener.accept()
            except BlockingIOError:
                break
            sock.setblocking(False)
            self.conns[sock.port] = sock
            self.queues[sock.port] = deque()
        for conn, sock in list(self.conns.items()):
            while True:
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError:  # reset by a dead subscriber
                    self.drop(conn)
                    break
                if not data:  # the subscriber closed
                    self.drop(conn)
                    break
                try:
                    self.service.receive((conn, data), now)
                except RemoteProtocolError as exc:  # too short: ignored, connection kept
                    log.info("subscription on connection %#x ignored: %s", conn, exc)
                if self.pump(now) and conn not in self.conns:
                    break
        self.flush()

    def pump(self, now: float) -> bool:
        """Queue the service's outgoing events and act on its events; True if a
        connection was dropped."""
        self.send(self.service.frames_to_send(now))
        dropped = False
        while (ev := self.service.next_event()) is not None:
            if isinstance(ev, SubscriberRejected):
                log.info("subscription on connection %#x rejected: %s", ev.conn, ev.reason)
                self.drop(ev.conn)
                dropped = True
        return dropped

    def drop(self, conn: int) -> None:
        self.service.close(conn)
        self.queues.pop(conn, None)
        sock = self.conns.pop(conn, None)
        if sock is not None:
            # topsrv.c's tipc_conn_close shuts down before releasing: the peer reads EOF
            # (TIPC_CONN_SHUTDOWN), not a reset.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- events --------------------------------------------------------------------
    def changed(self, events: list[BindingAdded | BindingRemoved]) -> None:
        """The worker applied these binding changes: tell the subscribers."""
        for ev in events:
            if isinstance(ev, BindingAdded):
                self.service.notify_added(ev)
            else:
                self.service.notify_removed(ev)
        self.send(self.service.frames_to_send(0.0))
        self.flush()

    def expire(self, now: float) -> None:
        self.service.handle_timer(now)  # harmless before the deadline
        self.pump(now)
        self.flush()

    def next_deadline(self) -> float | None:
        return self.service.next_timer()

    def send(self, frames: list[tuple[int, bytes]]) -> None:
        for conn, data in frames:
            queue = self.queues.get(conn)
            if queue is None:
                continue
            queue.append(data)
            if len(queue) > MAX_QUEUED:
                log.warning("subscriber %#x does not read its events; dropped", conn)
                self.drop(conn)

    def flush(self) -> None:
        for conn, queue in list(self.queues.items()):
            sock = self.conns[conn]
            while queue:
                try:
                    sock.send(queue[0])
                except BlockingIOError:
                    break  # retried on the next pass, as topsrv.c requeues its work
                except OSError:
                    self.drop(conn)
                    break
                queue.popleft()

    def close(self) -> None:
        for conn in list(self.conns):
            self.drop(conn)
        self.listener.close()
