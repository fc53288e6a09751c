"""The one shape every sans-IO protocol object in :mod:`tipcshm.core` has (after aioquic).

An object never touches a socket, shared memory or a clock. Its owner (a worker, the
client library, the simulator in :mod:`tipcshm.testing`) drives it with five calls:

``receive(frame, now)``
    Feed one frame that arrived. Raises :class:`~tipcshm.core.errors.RemoteProtocolError`
    for a malformed frame (nothing changed; count and drop it), never anything else.
``frames_to_send(now)``
    Drain the frames the object wants sent, oldest first. What an item is depends on who
    the object talks to: a link endpoint talks to one peer and yields ``bytes``;
    discovery talks to a bearer and yields ``(bytes, destination)`` pairs.
``next_timer()``
    The absolute time (seconds, same clock as ``now``) at which :meth:`handle_timer`
    must be called, or None when nothing is pending. Calling it earlier is harmless.
``handle_timer(now)``
    Let time pass: supervision ticks, retransmissions, discovery intervals, timeouts.
``next_event()``
    The next event (a frozen dataclass from :mod:`tipcshm.core.events`), or None.

The owner's loop is therefore the same everywhere::

    obj.receive(frame, now)            # for each frame that arrived
    obj.handle_timer(now)              # when next_timer() has passed
    for item in obj.frames_to_send(now): transmit(item)
    while (ev := obj.next_event()) is not None: act(ev)
    arm(obj.next_timer())

Time is a float in seconds on any monotonic clock the owner picks; only differences
matter, so tests start at 0 and jump from timer to timer.

:class:`SansIO` is the typing contract; :class:`Machine` is a small base class that
holds the outbox and the event queue for objects that want it.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

from tipcshm.core.events import CoreEvent

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out")
OutT = TypeVar("OutT")


class SansIO(Protocol[In, Out]):
    """What every protocol object in :mod:`tipcshm.core` provides (see the module doc)."""

    def receive(self, frame: In, now: float) -> None: ...

    def frames_to_send(self, now: float) -> list[Out]: ...

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> CoreEvent | None: ...


class Machine(Generic[OutT]):
    """Outbox and event queue shared by the core's protocol objects.

    Subclasses append to :attr:`_outbox` and call :meth:`_emit`; the owner drains both.
    """

    def __init__(self) -> None:
        self._outbox: list[OutT] = []
        self._events: deque[CoreEvent] = deque()

    def _emit(self, event: CoreEvent) -> None:
        self._events.append(event)

    def next_event(self) -> CoreEvent | None:
        return self._events.popleft() if self._events else None

    def frames_to_send(self, now: float) -> list[OutT]:
        out, self._outbox = self._outbox, []
        return out


__all__ = ["Machine", "SansIO"]
