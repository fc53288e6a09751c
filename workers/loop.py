"""The loop every worker runs: wait on descriptors and one timer, beat, stop on SIGTERM.

A worker owns sockets, inboxes and a clock; its protocol logic is sans-IO (tipcshm.core).
So its loop is the same everywhere: wait until a registered descriptor is readable or the
earliest registered timer is due (one ``select`` timeout: the minimum of the timers and
the next heartbeat), run the callbacks of what is ready, then the due timers, and write
the worker's heartbeat into its worker-table slot (:meth:`NodeSegment.worker_beat`) at
least every :data:`HEARTBEAT_INTERVAL`: the first beat marks the worker RUNNING.

SIGTERM and SIGINT set :attr:`WorkerLoop.stopping`; the loop returns after the pass it is
in, so the worker closes what it holds in its own ``finally``.
"""

from __future__ import annotations

import logging
import selectors
import signal
import time
from collections.abc import Callable
from types import FrameType

from tipcshm.shm.layout import NodeSegment

__all__ = ["HEARTBEAT_INTERVAL", "WorkerLoop"]

log = logging.getLogger("tipcshm.workers.loop")

HEARTBEAT_INTERVAL = 0.1


class WorkerLoop:
    def __init__(
        self, seg: NodeSegment, slot: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seg = seg
        self.slot = slot
        self.clock = clock
        self.stopping = False
        self._sel = selectors.DefaultSelector()
        self._readers: dict[int, Callable[[], None]] = {}
        self._timers: dict[str, tuple[float, Callable[[float], None]]] = {}
        self._next_beat = 0.0

    # -- registration ------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        if fd in self._readers:
            self._readers[fd] = callback
            return
        self._readers[fd] = callback
        self._sel.register(fd, selectors.EVENT_READ, fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._sel.unregister(fd)

    def set_timer(self, name: str, when: float | None, callback: Callable[[float], None]) -> None:
        """Arm (or with ``when`` None, disarm) the timer ``name``; one callback per name."""
        if when is None:
            self._timers.pop(name, None)
        else:
            self._timers[name] = (when, callback)

    def install_signals(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    # -- running -----------------------------------------------------------------------
    def beat(self) -> None:
        self.seg.worker_beat(self.slot)
        self._next_beat = self.clock() + HEARTBEAT_INTERVAL

    def run_once(self, max_wait: float = HEARTBEAT_INTERVAL) -> None:
        now = self.clock()
        due = min((t for t, _ in self._timers.values()), default=now + max_wait)
        timeout = max(0.0, min(due, self._next_beat, now + max_wait) - now)
        for key, _ in self._sel.select(timeout):
            cb = self._readers.get(key.data)
            if cb is not None:
                cb()
        now = self.clock()
        for name, (when, cb) in list(self._timers.items()):
            if when <= now and self._timers.get(name, (None, None))[0] == when:
                del self._timers[name]
                cb(now)
        if now >= self._next_beat:
            self.beat()

    def run(self) -> None:
        self.beat()
        while not self.stopping:
            self.run_once()

    def close(self) -> None:
        self._sel.close()
        self._readers.clear()
        self._timers.clear()
