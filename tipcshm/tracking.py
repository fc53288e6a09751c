"""Service tracking, the Pythonic way, on top of the kernel-compatible topology service.

``subscribe()`` opens a SOCK_SEQPACKET connection to ``{TIPC_TOP_SRV, TIPC_TOP_SRV}``, sends
one binary ``struct tipc_subscr`` and yields the ``struct tipc_event`` replies as
:class:`ServiceEvent` values; exactly what a C program does with the kernel's server::

    with tipcshm.subscribe(ServiceRange(18888, 0, 99)) as sub:
        for event in sub:          # published / withdrawn, as they happen
            print(event)

``wait_for_service()`` returns as soon as a service address has a binding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tipcshm.addresses import AddressLike, ServiceAddr, ServiceRange, SocketAddr, parse_address
from tipcshm.constants import (
    AF_TIPC,
    SOCK_SEQPACKET,
    TIPC_ADDR_NAME,
    TIPC_PUBLISHED,
    TIPC_SUB_CANCEL,
    TIPC_SUB_PORTS,
    TIPC_SUB_SERVICE,
    TIPC_SUBSCR_TIMEOUT,
    TIPC_TOP_SRV,
    TIPC_WAIT_FOREVER,
    TIPC_WITHDRAWN,
)
from tipcshm.core.topology import (
    EVENT_SIZE,
    Subscription,
    decode_event,
    encode_subscription,
)
from tipcshm.sock import Socket

_KINDS = {TIPC_PUBLISHED: "published", TIPC_WITHDRAWN: "withdrawn", TIPC_SUBSCR_TIMEOUT: "timeout"}


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """One topology event: a binding appeared or went, or the subscription timed out."""

    kind: str  # "published", "withdrawn" or "timeout"
    service: ServiceRange  # the binding's own range (the subscribed one for "timeout")
    socket: SocketAddr  # the bound socket (port 0 for "timeout")

    def __str__(self) -> str:
        return f"{self.kind} {self.service} at {self.socket}"


class ServiceSubscription:
    """A live subscription: an iterator of :class:`ServiceEvent`, and a context manager."""

    def __init__(
        self,
        service: ServiceRange,
        *,
        ports: bool,
        timeout: float | None,
        node: str | None,
    ) -> None:
        self.service = service
        self._sub = Subscription(
            service.type,
            service.lower,
            service.upper,
            TIPC_WAIT_FOREVER if timeout is None else max(0, int(timeout * 1000)),
            TIPC_SUB_PORTS if ports else TIPC_SUB_SERVICE,
        )
        self._sock: Any = Socket(AF_TIPC, SOCK_SEQPACKET, node=node)
        try:
            self._sock.connect((TIPC_ADDR_NAME, TIPC_TOP_SRV, TIPC_TOP_SRV, 0))
            self._sock.send(encode_subscription(self._sub))
        except BaseException:
            self._sock.close()
            raise
        self._ended = False

    def get(self, timeout: float | None = None) -> ServiceEvent | None:
        """The next event; None if ``timeout`` seconds pass or the subscription ended."""
        if self._ended:
            return None
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(EVENT_SIZE)
        except TimeoutError:
            return None
        if not data:
            self._ended = True
            return None
        ev = decode_event(data)
        kind = _KINDS.get(int(ev.kind), str(int(ev.kind)))
        if kind == "timeout":
            self._ended = True
        return ServiceEvent(
            kind,
            ServiceRange(self.service.type, ev.found_lower, ev.found_upper, self.service.scope),
            SocketAddr(ev.node, ev.port),
        )

    def __iter__(self) -> ServiceSubscription:
        return self

    def __next__(self) -> ServiceEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    def cancel(self) -> None:
        """Ask the server to end the subscription (TIPC_SUB_CANCEL), then close."""
        if not self._ended:
            cancel = Subscription(
                self._sub.type,
                self._sub.lower,
                self._sub.upper,
                self._sub.timeout_ms,
                self._sub.filter | TIPC_SUB_CANCEL,
                self._sub.usr_handle,
            )
            try:
                self._sock.send(encode_subscription(cancel))
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        self._ended = True
        self._sock.close()

    def __enter__(self) -> ServiceSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_range(service: AddressLike) -> ServiceRange:
    addr = parse_address(service)
    if isinstance(addr, ServiceAddr):
        return ServiceRange(addr.type, addr.instance, addr.instance, addr.scope)
    if isinstance(addr, ServiceRange):
        return addr
    raise TypeError(f"a service address or range is needed, not a socket address {addr}")


def subscribe(
    service: AddressLike,
    *,
    ports: bool = False,
    timeout: float | None = None,
    node: str | None = None,
) -> ServiceSubscription:
    """Track a service range: with ``ports=False`` (TIPC_SUB_SERVICE) an event when the
    range gets its first binding or loses its last; with ``ports=True`` (TIPC_SUB_PORTS)
    one per binding. Existing bindings are reported first. ``timeout`` (seconds) ends the
    subscription with a "timeout" event; None waits forever."""
    return ServiceSubscription(_as_range(service), ports=ports, timeout=timeout, node=node)


def wait_for_service(
    service: AddressLike, timeout: float | None = None, *, node: str | None = None
) -> bool:
    """Block until something is bound at ``service`` (True) or ``timeout`` passes (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with subscribe(service, timeout=timeout, node=node) as sub:
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = sub.get(remaining)
            if event is None or event.kind == "timeout":
                return False
            if event.kind == "published":
                return True
