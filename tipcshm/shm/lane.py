"""Inboxes and lanes: the shared-memory transport between tipcshm processes.

Theory of operation
===================

Every consumer (a socket, or a worker) owns one *inbox*: a POSIX shared-memory segment
holding a header and ``lanes`` *lane slots*. Each slot is a single-producer,
single-consumer (SPSC) ring of variable-length frames. The first time a process sends to
an inbox it claims a slot there (:meth:`Inbox.producer`); from then on it writes frames
into that ring without locks or system calls. The consumer reads all active lanes round
robin. A FIFO in /dev/shm (``<inbox name>.bell``, see :class:`_Doorbell`) is the
*doorbell* that wakes a consumer sleeping in :meth:`Inbox.wait` or in a selector. This
mirrors the role of the kernel's per-socket receive queue (net/tipc/socket.c,
``tipc_sk_rcv`` enqueues, ``tipc_recvmsg`` dequeues and sleeps in ``tipc_wait_for_rcvmsg``),
with one ring per sending process instead of one locked queue.

Rings
-----
``tail`` (written by the producer) and ``head`` (written by the consumer) are 64-bit byte
counters that only ever grow; ``pos & (lane_bytes - 1)`` is the offset in the data region.
``tail - head`` bytes are queued. A *record* is an 8-byte little-endian length word
followed by the frame, padded to a multiple of 8. A record never straddles the end of the
region: when it does not fit, the producer writes the ``WRAP`` word where it stands and
starts the record at offset 0 (the skipped bytes count as used until the consumer passes
them). Any record of at most ``lane_bytes / 2`` bytes therefore fits into an empty ring
wherever the counters stand, which is what :attr:`Inbox.max_frame` promises
(``lane_bytes // 2 - 8``, 131,064 bytes for the default 256 KiB, above TIPC's 66,060).
Counters are never reset, not even when a slot changes owner, so a consumer's cached view
of a lane always stays valid.

Both sides cache the other side's counter (the producer the head, the consumer the tail)
and read the shared one only when the ring looks full or empty. Counters are accessed
through ``memoryview.cast('Q')`` (30-60 ns) rather than numpy scalars (55-175 ns); numpy
provides the data-region view (:attr:`Inbox.data`) that the lane buffers are cut from.

Memory ordering
---------------
*x86-64 (TSO) -- the supported target.* Aligned 8-byte loads and stores are single-copy
atomic, stores become visible in program order, loads are not reordered with other loads
or with later stores, but a load may complete before an *earlier* store to another
location is visible (store buffering) unless a locked instruction or MFENCE separates
them. CPython executes each ``mv[i]`` access in its own opaque C
call (``pack_single``/``unpack_single`` compile to one 8-byte ``mov``, checked by
disassembly of the 3.11 build), so the compiler cannot reorder them either; what the
Python source says is what the CPU sees.

* Data path (no fence needed): the producer stores the record (bytes, then length word),
  then stores ``tail``. The consumer loads ``tail``, then loads the record. Store->store
  and load->load order are guaranteed, so a consumer that sees a ``tail`` sees every byte
  before it. The consumer reads the record and only then stores ``head``; load->store
  order is guaranteed, so the producer never overwrites bytes still being read.
* Doorbell (Dekker, a fence on each side). A consumer about to sleep stores
  ``armed = 1``, then loads every lane's ``tail``; a producer stores ``tail``, then loads
  ``armed``. TSO allows each load to pass the store before it (store buffering), and then
  both sides miss each other: the consumer sleeps on data nobody rings for. Hence
  :func:`full_fence` sits exactly there: in :meth:`Producer.commit` between the ``tail``
  store and the ``armed`` load, and in :meth:`Inbox.wait` (and the select-mode settle)
  between the ``armed`` store and the re-check. With both fences at least one side sees
  the other's store, so either the consumer finds the frame or the producer rings. The
  re-check reads ``generation`` first: a producer's claim bumps it before its first
  ``tail`` store, so a lane claimed since the consumer's last rescan is covered too.
* A producer that rings first clears ``armed``, so a burst costs one ring (a one-byte write), not
  one per frame. This stays safe: a producer that reads ``armed == 0`` read either a store
  older than the consumer's last arming (then its ``tail`` is visible to the re-check that
  follows that arming) or the clear of a producer that rang after that arming. That bell
  is still pending when the consumer blocks (it wakes at once), or a drain consumed it, in
  which case the re-check after the drain sees the ringer's frame, so the consumer stays
  busy and arms again before it next idles. The re-check after that new arming sees the
  silent producer's tail.
* :func:`full_fence` is ``Lock.acquire(); Lock.release()`` on a private uncontended lock.
  On CPython 3.11 (``sys.thread_info.lock == 'semaphore'``) that is ``sem_trywait`` plus
  ``sem_post``; glibc implements both with ``lock cmpxchg`` (verified by disassembling
  this machine's libc). On 3.13+ ``PyMutex`` lock/unlock are sequentially consistent
  ``cmpxchg``. A locked instruction is a full barrier on x86-64, so it costs 70-110 ns
  per commit and needs no C extension. (Measured: with both fences removed, 600,000
  ping-pong trips that slept on both sides (820,000 sleeps) showed no lost wake-up; the
  window is a few instructions wide. The fence is there because rare is not never.)

*Other architectures (AArch64, POWER, RISC-V).* None of the above holds. Stores may
become visible out of order, so even the data path would need a release store of
``tail`` and an acquire load of it, which pure Python cannot express. The lock trick is
no full fence there either: glibc's ``sem_wait`` CAS has acquire and ``sem_post`` release
semantics only, and an LL/SC acquire-release pair lets an earlier store and a later load
pass each other (Linux adds ``dmb ish`` for that reason). This module therefore logs a
warning off x86 and shortens the sleep backstop to 20 ms (:data:`BACKSTOP`), so that a
missed bell costs latency, not a hang. Sleeps that time out yet find data are counted as
``late_wakeups`` in :meth:`Inbox.stats`, so stress tests can see lost wake-ups. On x86-64
the backstop (1 s) is only a safety net for a producer that dies between publishing a
frame and ringing; the stress tests assert that no late wake-ups happen there.

Spinning and the CPU
--------------------
Both spins (:meth:`Inbox.wait`, :meth:`Producer.wait_space`) call ``sched_yield`` as
they go (the consumer every 8th poll, ~1-2 us apart, the producer every poll). When the
peer shares this CPU (a one-CPU container, a busy machine) it is waiting to run and
nothing can arrive until the spinner gives the CPU up: without the yield a 64-byte
ping-pong pinned to one CPU took 124-133 us per round trip (the 50 us spin on each side,
then a sleep), with it 13-16 us over RDM and 21-23 us over SEQPACKET (AF_UNIX: 9 us; not
spinning at all gave 18 and 24 us, the doorbell's wake-up costs more than a socket's).
With an idle second CPU ``sched_yield`` returns at once, and yielding every 8th poll kept
the two-CPU round trip within noise of the plain spin (4.8 vs 4.7 us; yielding every poll
cost ~1 us).

Doorbell and selectors
----------------------
Sleep mode (:meth:`Inbox.wait`): spin for :attr:`Inbox.spin` seconds (50 us by default;
a wake-up costs 7-14 us on these VMs), then arm, fence, re-check, and block in
``select`` on the FIFO, then consume the bell. Select mode starts at the first
:meth:`Inbox.fileno` call: the bell then stays queued while frames may be pending, and
:meth:`Inbox.poll` drains it only after finding every lane empty (arm, fence, drain,
re-check; if the re-check finds a frame the bell is posted again), so the descriptor
behaves level-triggered. One readiness followed by an empty ``poll()`` can happen; the
workers, which read whatever comes, live with that.

Sockets do not use that mode: a socket's ``fileno()`` is a descriptor of
:mod:`tipcshm.readiness`, exact as a kernel socket's. There one thread per process is the
only waiter on the doorbells (:meth:`Inbox.bell_fileno`), and a consumer that finds every
lane empty re-arms with :meth:`Inbox.rearm` (arm, fence, drain the bell, re-check) so that
the next commit rings for that thread.

Hot path
--------
Producer: ``off = p.reserve(n)`` (None: full, see :meth:`Producer.wait_space`), write the
frame into ``p.buf[off : off + n]``, ``p.commit(n)``. Consumer: ``r = inbox.poll()``, read
``r[0][r[1] : r[1] + r[2]]`` in place (valid until released), ``inbox.release(r[3])``.
No system call and no allocation beyond the returned tuple and ints; a call costs
0.1-0.3 us (reserve ~0.12, commit ~0.28 with the fence, poll + release ~0.3). Bulk data
(a STREAM write of 1 MiB is 16 frames) goes in *runs*: :meth:`Producer.put_run_locked`
writes frames of one size and header back to back with two numpy copies and one ``tail``
store, and :meth:`Inbox.poll_run` / :meth:`Inbox.release_run` hand the consumer such a
run as one array; :meth:`Inbox.poll_gather` / :meth:`Inbox.release_gather` hand it
the places of several frames of any sizes, to be copied out together and consumed with
one ``head`` store. The ordering argument above is unchanged: numpy copies with ordinary
stores (glibc's non-temporal copies, used only far above these sizes, end with
``sfence``), all before the ``tail`` store, and the consumer stores ``head`` after it
has read the run. Per-frame
counters would cost ~90 ns each, so producers keep none: :meth:`Inbox.stats` derives
``frames_written`` from the consumer's count and the records still queued.

Slots and processes
-------------------
A producer claims a slot under ``flock`` on a fresh descriptor of the segment (a lock
that dies with its holder and that a forked child does not share). A slot is free when
its state is FREE, or when its owner is dead (:func:`tipcshm.proc.alive` on pid and start
time, so pid reuse does not count) and its ring is empty. A dead producer's committed
frames are still delivered; the consumer keeps reading until the ring is empty. Claims
and releases bump ``generation``, which tells the consumer to rescan the slot table.
After ``fork()`` the child's cached :class:`Producer` objects are invalidated, and the
child claims a slot of its own. Detaching releases a slot (FREE if its ring is empty,
else ownerless until drained). A sleeping consumer frees drained slots of dead producers
(:meth:`Inbox.reap`, at most every 5 s) so that it does not keep polling them.

The overflow lane
-----------------
After its ``lanes`` private slots every inbox has one more, the *overflow lane*, so that
the number of sending processes is not capped (it was: the 65th got ENOBUFS). A process
that finds no private slot free gets a producer on it (:class:`_OverflowProducer`); the
slot turns SHARED at its first use and stays so, and only then does the consumer poll it
(an idle inbox polls nothing). Its writers take turns under :attr:`Producer.lock`, which
there is the thread lock plus an OFD lock (``F_OFD_SETLKW``) on one byte of the segment,
held on a descriptor of the producer's own: the kernel drops it when the holder dies,
even by SIGKILL, and a holder that died published nothing past its last ``tail`` store,
so the next one simply overwrites its half-written record. Taking the lock re-reads
``tail`` and ``head``, after which the SPSC code runs unchanged. Costs two ``fcntl``
calls per locked section: ``tools/bench/overflow_bench.py`` compares the two kinds.

Memory and trust
----------------
tmpfs allocates pages when first touched, and a write that finds /dev/shm full dies of
SIGBUS. So :meth:`Inbox.create` allocates the header and slot table (``posix_fallocate``)
and a claim allocates its lane before marking it taken (a drained lane freed by
:meth:`Inbox.reap` or a detach gives its pages back); a full /dev/shm raises
:class:`~tipcshm.errors.SharedMemoryFull` there instead (a lane stays allocated; calling
fallocate again on one costs 8 us for 256 KiB, 0.27 ms for 4 MiB, the first call 0.09
and 5 ms). :meth:`Inbox.attach` opens segment and doorbell without following symlinks
and checks their owner, type and mode (:mod:`tipcshm.shm.trust`), and with ``tag=``
refuses an inbox of another incarnation of the node. Every producer may write every
slot and ring, so the consumer trusts none of it: a ``tail`` that is not 1..lane_bytes
ahead of its head, or a record that would leave its lane or pass the tail, makes it skip
that lane's queued bytes (``corrupt`` in :meth:`Inbox.stats`); other lanes are untouched.

The doorbell was a POSIX message queue until Linux's limit of 256 queues per machine for
unprivileged users (``/proc/sys/fs/mqueue/queues_max``) showed it would cap a node at
about 250 sockets; a FIFO costs the same one system call per ring and has no such limit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import platform
import select
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import posix_ipc

from tipcshm import proc
from tipcshm.errors import SharedMemoryFull, UntrustedObject
from tipcshm.shm.trust import Trust, default_trust, open_checked
from tipcshm.wire import U32 as _U32BE

__all__ = [
    "BACKSTOP",
    "LAYOUT_VERSION",
    "MAGIC",
    "Inbox",
    "InboxClosed",
    "InboxError",
    "InboxNoLane",
    "Producer",
    "full_fence",
]

log = logging.getLogger("tipcshm.shm.lane")

# --------------------------------------------------------------------------------------
# Layout: every offset, once. All fields are little-endian u64 (accessed as words).
#
#  Segment header, 256 bytes (4 cache lines)
#  off  name          writer      notes
#    0  MAGIC         create      b"TIPCINBX"; written last, so attach never sees a half-made
#    8  VERSION       create      LAYOUT_VERSION
#   16  LANES         create      number of slots
#   24  LANE_BYTES    create      ring size, a power of two
#   32  OWNER_PID     create      consumer process (proc token)
#   40  OWNER_START   create
#   48  SLOTS_OFF     create      offset of the slot table
#   56  DATA_OFF      create      offset of lane 0's data (page aligned)
#   64  CLOSED        consumer    1 once mark_closed() ran
#   72  GENERATION    producers*  bumped on every slot claim / release (*under flock)
#   80  TAG           create      the creating node's incarnation tag (attach(tag=) checks it)
#   96  QLIMIT        consumer    bytes a sender may have queued in its lane (SO_RCVBUF); 0: all
#  128  ARMED         consumer=1  producers clear it when they ring; alone on its line
#  192  SLEEPS        consumer    sleeps in wait()
#  200  WAKEUPS       consumer    sleeps ended by the bell that found a frame
#  208  LATE          consumer    sleeps ended by timeout that found a frame
#  216  SPURIOUS      consumer    sleeps ended by the bell that found nothing
#  224  CORRUPT       consumer    records with an impossible length (lane was skipped)
#
#  Slot i header at SLOTS_OFF + i * 256, for i in 0..LANES (slot LANES is the overflow lane)
#    0  STATE         claimer*    FREE=0, ACTIVE=1, SHARED=2 (the overflow lane, once used)
#    8  PID           claimer*    producer token; 0 = released by its owner
#   16  START         claimer*
#   24  CLAIMS        claimer*    how often the slot was claimed
#   64  TAIL          producer    bytes ever written (incl. length words, padding, wraps)
#   80  FULL_WAITS    producer    wait_space() calls that had to wait
#   88  BELLS         producer    doorbells rung
#  128  HEAD          consumer    bytes ever consumed
#  136  FRAMES_R      consumer    frames released (published when the consumer idles)
#  (192..255 unused: keeps HEAD's adjacent-line prefetch pair free of producer writes)
#
#  Data: lane i occupies [DATA_OFF + i * LANE_BYTES, + LANE_BYTES), i in 0..LANES.
#  Record: u64 length n (or WRAP), n frame bytes, zero..7 padding bytes to 8 alignment.
# --------------------------------------------------------------------------------------

MAGIC = int.from_bytes(b"TIPCINBX", "little")
LAYOUT_VERSION = 2  # 2: the overflow lane, TAG
HEADER_BYTES = 256
SLOT_BYTES = 256
DATA_ALIGN = 4096  # lane data starts page aligned

H_MAGIC, H_VERSION, H_LANES, H_LANE_BYTES = 0, 8, 16, 24
H_OWNER_PID, H_OWNER_START, H_SLOTS_OFF, H_DATA_OFF = 32, 40, 48, 56
H_CLOSED, H_GENERATION, H_TAG, H_QLIMIT = 64, 72, 80, 96
H_ARMED = 128
H_SLEEPS, H_WAKEUPS, H_LATE, H_SPURIOUS, H_CORRUPT = 192, 200, 208, 216, 224

S_STATE, S_PID, S_START, S_CLAIMS = 0, 8, 16, 24
S_TAIL, S_FULL_WAITS, S_BELLS = 64, 80, 88
S_HEAD, S_FRAMES_R = 128, 136

SLOT_FREE, SLOT_ACTIVE, SLOT_SHARED = 0, 1, 2
WRAP = (1 << 64) - 1
RECORD_HDR = 8
_U64LE = struct.Struct("<Q")  # a record's length word
_NO_ARRAY = np.zeros(0, np.uint8)
MIN_LANE_BYTES = 64
MAX_LANE_BYTES = 1 << 30
MAX_LANES = 4096

# word indices for the memoryview('Q') views (header view / per-slot view)
_MAGIC, _VERSION, _LANES, _LANE_BYTES = (
    H_MAGIC // 8,
    H_VERSION // 8,
    H_LANES // 8,
    H_LANE_BYTES // 8,
)
_OWNER_PID, _OWNER_START = H_OWNER_PID // 8, H_OWNER_START // 8
_SLOTS_OFF, _DATA_OFF = H_SLOTS_OFF // 8, H_DATA_OFF // 8
_CLOSED, _GEN, _ARMED, _TAG = H_CLOSED // 8, H_GENERATION // 8, H_ARMED // 8, H_TAG // 8
_QLIMIT = H_QLIMIT // 8
_GONE_HQ = memoryview(bytearray(8 * (max(_CLOSED, _GEN, _ARMED) + 1))).cast("Q")
_GONE_HQ[_CLOSED] = 1  # what an invalidated producer reads instead of the inbox header
_SLEEPS, _WAKEUPS, _LATE = H_SLEEPS // 8, H_WAKEUPS // 8, H_LATE // 8
_SPURIOUS, _CORRUPT = H_SPURIOUS // 8, H_CORRUPT // 8
_STATE, _PID, _START, _CLAIMS = S_STATE // 8, S_PID // 8, S_START // 8, S_CLAIMS // 8
_TAIL, _FULL_WAITS, _BELLS = S_TAIL // 8, S_FULL_WAITS // 8, S_BELLS // 8
_HEAD, _FRAMES_R = S_HEAD // 8, S_FRAMES_R // 8

TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")
#: Longest single sleep (s). On x86-64 a missed bell cannot happen (see module docstring);
#: elsewhere the fence is not a full barrier and this bounds the cost of a missed bell.
BACKSTOP = 1.0 if TSO else 0.02
#: Default busy-poll before sleeping (s): a wake-up costs 7-14 us here.
SPIN = 50e-6
_REAP_INTERVAL = 5.0
_OWNER_CHECK_INTERVAL = 0.1
_BELL = b"\x00"

if not TSO:  # pragma: no cover - exercised only off x86
    log.warning(
        "tipcshm lanes rely on x86-64 total store order; on %s ordering is not guaranteed "
        "and the doorbell falls back on a %.0f ms backstop",
        platform.machine(),
        BACKSTOP * 1e3,
    )


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class InboxError(OSError):
    """Base of inbox failures; ``errno`` says which, ``filename`` names the inbox."""


class InboxNoLane(InboxError):
    """Every slot of the destination inbox belongs to a live producer (``ENOBUFS``)."""


class InboxClosed(InboxError):
    """The consumer marked the inbox closed, or is gone (``EPIPE``)."""


def _err(cls: type[InboxError], code: int, msg: str, name: str) -> InboxError:
    return cls(code, msg, name)


# --------------------------------------------------------------------------------------
# The fence
# --------------------------------------------------------------------------------------

_fence_lock = threading.Lock()


def full_fence() -> None:
    """Store->load barrier usable from Python (a locked instruction on x86-64).

    ``Lock.acquire()`` + ``release()`` on an uncontended lock run ``lock cmpxchg`` twice
    (glibc ``sem_trywait``/``sem_post`` on CPython <= 3.12, ``PyMutex`` on 3.13+). Only a
    full barrier on x86-64; see the module docstring for other architectures.
    """
    _fence_lock.acquire()
    _fence_lock.release()


# --------------------------------------------------------------------------------------
# Fork handling
# --------------------------------------------------------------------------------------

_live_inboxes: weakref.WeakSet[Inbox] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ib in list(_live_inboxes):
        ib._forget_producer_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _bell_name(name: str) -> str:
    return name + ".bell"


def _check_name(name: str) -> None:
    if not name.startswith("/") or "/" in name[1:] or len(name) < 2:
        raise ValueError(f"inbox name must look like '/name' without further '/': {name!r}")
    if len(_bell_name(name)) > 255:
        raise ValueError(f"inbox name too long: {name!r}")


def _layout(lanes: int, lane_bytes: int) -> tuple[int, int, int]:
    """(slots_off, data_off, total size) for a geometry: ``lanes`` private lanes + overflow."""
    slots_off = HEADER_BYTES
    data_off = -(-(slots_off + (lanes + 1) * SLOT_BYTES) // DATA_ALIGN) * DATA_ALIGN
    return slots_off, data_off, data_off + (lanes + 1) * lane_bytes


class _Doorbell:
    """A FIFO in /dev/shm next to the inbox segment: ``<segment>.bell``.

    Written to ring, readable (so ``selectors`` can wait on it) while a ring is pending.
    Everyone opens it O_RDWR | O_NONBLOCK: opening never blocks, a write never meets "no
    reader", and a full pipe (64 KiB of pending rings) is as good as one ring. A FIFO
    rather than a POSIX message queue because Linux allows unprivileged users only 256
    message queues per machine (one per socket would cap a node at ~250 sockets), and
    because a crashed node's FIFOs are listed in /dev/shm for cleanup, unlike queues.
    """

    __slots__ = ("fd", "_poll")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._poll = select.poll()  # reused: cheaper than select.select per sleep
        self._poll.register(fd, select.POLLIN)

    @staticmethod
    def path(name: str) -> str:
        return f"/dev/shm{_bell_name(name)}"

    @classmethod
    def create(cls, name: str, mode: int, gid: int = -1) -> _Doorbell:
        path = cls.path(name)
        try:
            os.mkfifo(path, mode)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "doorbell exists", _bell_name(name)) from None
        # Between mkfifo and open someone may have swapped the name for a symlink or a
        # FIFO of their own (the directory is sticky, but root's name can be raced).
        try:
            fd = open_checked(path, os.O_RDWR | os.O_NONBLOCK, _self_only(), "fifo")
        except BaseException:
            cls.unlink(name)  # the name is ours (mkfifo made it), whatever now sits there
            raise
        bell = cls(fd)
        os.fchmod(bell.fd, mode)  # the umask must not change what was asked for
        if gid >= 0:
            os.fchown(bell.fd, -1, gid)
        return bell

    @classmethod
    def open(cls, name: str, trust: Trust) -> _Doorbell:
        try:
            return cls(open_checked(cls.path(name), os.O_RDWR | os.O_NONBLOCK, trust, "fifo"))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "inbox has no doorbell", name) from None

    @classmethod
    def unlink(cls, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cls.path(name))

    def ring(self) -> None:
        try:
            os.write(self.fd, _BELL)
        except BlockingIOError:
            pass  # the pipe is full of rings already

    def take(self) -> bool:
        """Consume every pending ring without blocking; True if there was one."""
        try:
            while len(os.read(self.fd, 4096)) == 4096:
                pass  # more rings than one read takes: keep draining
        except BlockingIOError:
            return False
        return True

    def sleep(self, timeout: float) -> bool:
        """Block until rung (True, ring consumed) or ``timeout`` seconds pass (False)."""
        if not self._poll.poll(timeout * 1e3 + 1):  # ms, rounded up: never wake early
            return False
        return self.take()

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _self_only() -> Trust:
    return Trust(frozenset({os.geteuid()}))


def _allocate(fd: int, off: int, n: int, what: str) -> None:
    """posix_fallocate, so that a full /dev/shm is an error here and not a SIGBUS later."""
    try:
        os.posix_fallocate(fd, off, n)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SharedMemoryFull(what, n) from None
        raise


def _send_bell(bell: _Doorbell) -> None:
    """Ring; a pending ring is as good."""
    bell.ring()


class _RxLane:
    """Consumer-side state of one active lane (private to the consumer process)."""

    __slots__ = (
        "idx",
        "ctl",
        "q",
        "buf",
        "base",
        "head",
        "tail",
        "cur",
        "run",
        "ends",
        "nxt",
        "nread",
    )

    def __init__(
        self, idx: int, ctl: memoryview, q: memoryview, buf: memoryview, base: int
    ) -> None:
        self.idx = idx
        self.base = base  # offset of this lane's data region in the mapping (for get())
        self.ctl = ctl
        self.q = q
        self.buf = buf
        self.head: int = ctl[_HEAD]
        self.tail: int = self.head
        self.cur = -1  # length of the record poll() returned and release() has not consumed
        self.run = 0  # frames in the run poll_run() returned for that record
        self.ends: list[int] = [-1]  # poll_gather(): head before its frames, then after each
        self.nxt: _RxLane = self
        self.nread: int = ctl[_FRAMES_R]  # published to the slot when the consumer idles


# --------------------------------------------------------------------------------------
# Producer
# --------------------------------------------------------------------------------------


class Producer:
    """This process's lane into one inbox: lock-free ``reserve`` / ``commit``.

    SPSC per process: when several threads send, they hold :attr:`lock` across
    ``reserve() .. commit()``.
    """

    __slots__ = (
        "buf",
        "lock",
        "lane",
        "_q",
        "_ctl",
        "_hq",
        "_tail",
        "_limit",
        "_cap",
        "_mask",
        "_maxf",
        "_inbox",
        "_bell",
        "_facq",
        "_frel",
        "_valid",
        "_arr",
        "__weakref__",
    )

    buf: memoryview
    lock: Any  # threading.Lock, or the overflow lane's _OverflowLock
    #: True for the shared overflow lane (see :class:`_OverflowProducer`)
    overflow = False

    def __init__(self, inbox: Inbox, lane: int) -> None:
        self._inbox = inbox
        self.lane = lane
        self.buf = inbox._bufs[lane]
        self.lock = threading.Lock()
        self._q = inbox._qs[lane]
        self._ctl = ctl = inbox._ctls[lane]
        self._hq = inbox._hq
        self._cap = inbox.lane_bytes
        self._mask = inbox.lane_bytes - 1
        self._maxf = inbox.max_frame
        self._tail: int = ctl[_TAIL]
        self._limit: int = self._lane_limit(ctl[_HEAD])
        self._bell = inbox._nb_bell()
        fl = threading.Lock()
        self._facq = fl.acquire
        self._frel = fl.release
        self._valid = True
        self._arr = np.frombuffer(self.buf, np.uint8)

    def __repr__(self) -> str:
        state = "" if self._valid else " invalid"
        return f"<Producer {self._inbox.name} lane={self.lane}{state}>"

    # ---- hot path ----------------------------------------------------------------

    def reserve(self, n: int) -> int | None:
        """Offset in :attr:`buf` where ``n`` contiguous bytes may be written, or None if full.

        Calling it again before :meth:`commit` returns the same offset. ValueError when
        ``n`` exceeds :attr:`Inbox.max_frame`; :class:`InboxError` (``ESTALE``) when this
        producer was invalidated by ``detach()`` or by ``fork()`` (in the child).
        """
        t = self._tail
        rec = (n + 15) & -8
        off = t & self._mask
        if off + rec <= self._cap and t + rec <= self._limit and 0 <= n <= self._maxf:
            return off + 8
        return self._reserve_slow(n)

    def commit(self, n: int) -> None:
        """Publish ``n`` bytes (at most what was reserved) written at the reserved offset.

        Same as :meth:`publish` followed by :meth:`wake`, inlined.
        """
        t = self._tail
        self._q[(t & self._mask) >> 3] = n
        t += (n + 15) & -8
        self._tail = t
        self._ctl[_TAIL] = t  # publish: record bytes and length word are stored before this
        self._facq()  # full fence: the tail store above is globally visible before ...
        self._frel()
        if self._hq[_ARMED]:  # ... this load (Dekker with Inbox.wait)
            self._ring()

    def put_locked(self, head: bytes, first_word: int, data: bytes | bytearray) -> bool:
        """Write one frame ``head + data`` and publish it; False (nothing written) when the
        ring is full, the inbox is closed or this producer was invalidated (detach, fork).
        The send hot path in one call.

        Call with :attr:`lock` held, then release the lock, then call :meth:`notify`:
        releasing the lock is a locked instruction (sem_post / PyMutex cmpxchg), which is
        the store->load fence between this tail store and notify()'s load of ``armed``;
        so the hot path pays for one lock, not a lock and a fence.

        TIPC frames start with word 0, which carries the frame size: ``first_word`` is
        stored big-endian over the first four bytes of ``head``, so one cached header
        template serves frames of every size.
        """
        hs = len(head)
        n = hs + len(data)
        t = self._tail
        rec = (n + 15) & -8
        off = t & self._mask
        if self._hq[_CLOSED]:
            return False  # never into a closed inbox: the caller re-resolves or rejects
        if off + rec > self._cap or t + rec > self._limit or n > self._maxf:
            if self._reserve_slow(n) is None:
                return False
            t = self._tail  # a wrap moved it to the start of the next lap
            off = t & self._mask
        buf = self.buf
        o = off + RECORD_HDR
        e = o + hs
        buf[o:e] = head
        _U32BE.pack_into(buf, o, first_word)
        buf[e : o + n] = data
        self._q[off >> 3] = n
        t += rec
        self._tail = t
        self._ctl[_TAIL] = t  # publish: record bytes and length word are stored before this
        return True

    def put_run_locked(
        self, head: bytes, first_word: int, data: Any, piece: int, count: int
    ) -> int:
        """Write up to ``count`` frames ``head + data[i * piece : (i + 1) * piece]`` back to
        back and publish them with one ``tail`` store; returns how many (0: the ring is
        full or the inbox closed). Locking and :meth:`notify` as for :meth:`put_locked`.

        Every frame of the run has the same size, so its length word and header are the
        same 8 + ``len(head)`` bytes: numpy writes them to all records with one broadcast
        and the payloads with one strided copy, instead of a Python call per frame (a
        STREAM write of 1 MiB is 16 frames). Stops at the end of the lap or of the free
        space, whichever comes first; the caller goes on from where it stopped.
        """
        hs = len(head)
        n = hs + piece
        rec = (n + 15) & -8
        if n > self._maxf or not self._valid:
            self._reserve_slow(n)  # raises: too big, or detached / inherited across fork
        if self._hq[_CLOSED] or count <= 0:
            return 0
        t = self._tail
        off = t & self._mask
        room = min(self._cap - off, self._limit - t) // rec
        if room < count:
            self._limit = self._lane_limit(self._ctl[_HEAD])  # the consumer moved on?
            room = min(self._cap - off, self._limit - t) // rec
            if not room:
                if self._reserve_slow(n) is None:  # wraps to the next lap if that helps
                    return 0
                t = self._tail
                off = t & self._mask
                room = min(self._cap - off, self._limit - t) // rec
        k = min(count, room)
        records = self._arr[off : off + k * rec].reshape(k, rec)
        prefix = bytearray(RECORD_HDR + hs)
        _U64LE.pack_into(prefix, 0, n)
        prefix[RECORD_HDR:] = head
        _U32BE.pack_into(prefix, RECORD_HDR, first_word)
        o = RECORD_HDR + hs
        records[:, :o] = np.frombuffer(prefix, np.uint8)
        records[:, o : o + piece] = np.frombuffer(data, np.uint8, k * piece).reshape(k, piece)
        t += k * rec
        self._tail = t
        self._ctl[_TAIL] = t  # publish: every record of the run is stored before this
        return k

    def notify(self) -> None:
        """After put_locked() and the lock's release (the fence): ring if the consumer sleeps."""
        if self._hq[_ARMED]:
            self._ring()

    def publish(self, n: int) -> None:
        """Like :meth:`commit` but without waking the consumer; follow a batch with :meth:`wake`.

        Saves the fence (~0.1 us) per frame when a caller writes several frames in a row.
        Frames published and not yet followed by ``wake()`` may sit unseen by a sleeping
        consumer.
        """
        t = self._tail
        self._q[(t & self._mask) >> 3] = n
        t += (n + 15) & -8
        self._tail = t
        self._ctl[_TAIL] = t

    def wake(self) -> None:
        """Ring the doorbell if the consumer sleeps (fence, then load ``armed``)."""
        self._facq()
        self._frel()
        if self._hq[_ARMED]:
            self._ring()

    def write(self, *parts: bytes | bytearray | memoryview) -> bool:
        """Reserve, copy ``parts`` back to back as one frame, commit. False when full."""
        n = 0
        for p in parts:
            n += p.nbytes if isinstance(p, memoryview) else len(p)
        off = self.reserve(n)
        if off is None:
            return False
        buf = self.buf
        for p in parts:
            if isinstance(p, memoryview) and p.format != "B":
                p = p.cast("B")
            k = len(p)
            buf[off : off + k] = p
            off += k
        self.commit(n)
        return True

    # ---- slow paths ----------------------------------------------------------------

    def _reserve_slow(self, n: int) -> int | None:
        if not self._valid:
            raise _err(
                InboxError,
                errno.ESTALE,
                "producer is no longer valid (detached, or inherited across fork): "
                "call Inbox.producer() again",
                self._inbox.name,
            )
        if not 0 <= n <= self._maxf:
            raise ValueError(f"frame of {n} bytes exceeds max_frame {self._maxf}")
        cap = self._cap
        rec = (n + 15) & -8
        t = self._tail
        head = self._ctl[_HEAD]
        limit = self._limit = self._lane_limit(head)
        if t == head:
            limit = head + cap  # an empty lane takes one frame of any size (QLIMIT)
        off = t & self._mask
        if off + rec <= cap:
            if t + rec <= limit:
                return off + 8
        elif t + (cap - off) + rec <= limit:
            # Not enough room before the end: mark the rest of the lap skipped and start
            # at offset 0. Unpublished until the next commit, so harmless if abandoned.
            self._q[off >> 3] = WRAP
            self._tail = t + cap - off
            return 8
        return None

    def _lane_limit(self, head: int) -> int:
        """How far the tail may go: a ring's worth past the head, or the consumer's queue
        limit (QLIMIT, its SO_RCVBUF) past it when that is smaller. Read only here, off
        the hot path, which compares against the bound computed then: a limit set later
        reaches a producer at its next slow-path reserve. (An empty lane takes one frame
        of any size all the same, as the kernel's queue takes one message whatever its
        limit: see _reserve_slow.)"""
        q = self._hq[_QLIMIT]
        return head + (q if 0 < q < self._cap else self._cap)

    def _ring(self) -> None:
        self._hq[_ARMED] = 0
        self._ctl[_BELLS] += 1
        _send_bell(self._bell)

    def wait_space(self, n: int, timeout: float | None = None) -> bool:
        """Block until ``reserve(n)`` can succeed (True), or give up (False).

        Spins for :attr:`Inbox.spin`, then sleeps with exponential back-off (20 us .. 2 ms).
        Returns False on timeout, and as soon as the inbox is marked closed or its owner
        process is found dead (checked every 0.1 s): callers tell these apart with
        :attr:`Inbox.closed` / :meth:`Inbox.owner_alive`. A full receiver blocks the
        sender; nothing is dropped or overwritten.
        """
        space = self._space
        if space(n):
            return True
        hq = self._hq
        if hq[_CLOSED]:
            return False
        self._ctl[_FULL_WAITS] += 1
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        pc = time.perf_counter
        spin_end = pc() + self._inbox.spin
        while pc() < spin_end:
            if space(n):
                return True
            os.sched_yield()  # the reader may be waiting for this CPU to free the space
        delay = 20e-6
        next_check = now + _OWNER_CHECK_INTERVAL
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return space(n)
            if hq[_CLOSED]:
                return False
            if now >= next_check:
                next_check = now + _OWNER_CHECK_INTERVAL
                if not self._inbox.owner_alive():
                    return False
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))
            delay = min(delay * 2, 2e-3)
            if space(n):
                return True

    def _space(self, n: int) -> bool:
        return self.reserve(n) is not None

    def fits(self, n: int) -> bool:
        """Whether a frame of ``n`` bytes would fit now, read without reserving anything
        (so any thread may ask; the answer is as old as the counters it read)."""
        cap = self._cap
        rec = (n + 15) & -8
        t = self._ctl[_TAIL]
        limit = self._ctl[_HEAD] + cap
        off = t & self._mask
        if off + rec > cap:
            t += cap - off
        return t + rec <= limit

    def _invalidate(self) -> None:
        self._valid = False
        self._limit = -1  # forces every reserve() into the slow path, which raises
        self._arr = _NO_ARRAY  # drop the export of buf, so that detach() can unmap
        # A sender still holding this producer (a cached route, another thread) must see
        # "closed" from put_locked()/notify(), not touch views detach() is about to release.
        self._hq = _GONE_HQ


# struct flock on Linux x86-64 / AArch64: l_type, l_whence, pad, l_start, l_len, l_pid, pad
_FLOCK = struct.Struct("hhxxxxqqixxxx")


class _OverflowLock:
    """:attr:`Producer.lock` of an overflow producer: this process's thread lock, then
    an OFD lock on one byte of the segment, then a re-read of the shared counters.

    Open-file-description locks belong to the producer's own descriptor of the segment,
    so the kernel drops them when a holder dies (even by SIGKILL): a dead sender cannot
    wedge the lane. They do not interact with the ``flock`` of the slot table.
    """

    __slots__ = ("_p", "_t")

    def __init__(self, p: _OverflowProducer) -> None:
        self._p = p
        self._t = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._t.acquire(blocking, timeout):
            return False
        try:
            if self._p._lock_lane(blocking):
                return True
        except BaseException:
            self._t.release()
            raise
        self._t.release()
        return False

    def release(self) -> None:
        try:
            self._p._unlock_lane()
        finally:
            self._t.release()

    def locked(self) -> bool:
        return self._t.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _OverflowProducer(Producer):
    """A producer on the inbox's shared overflow lane, for senders that found no free slot.

    Many processes write this ring, one at a time under :attr:`lock` (see
    :class:`_OverflowLock`). The hot-path methods are the SPSC ones: taking the lock
    loads the shared ``tail`` and ``head`` into the producer's caches, so between
    acquire and release this process is, for the ring, its only producer. A process
    killed while holding the lock published nothing past the ``tail`` it last stored
    (the tail store is the publication), so the next holder overwrites its half-written
    record. Frames of one sender stay in order; frames of different senders interleave.
    """

    __slots__ = ("_fd", "_lk", "_unlk", "_held")
    overflow = True

    def __init__(self, inbox: Inbox, lane: int, fd: int) -> None:
        super().__init__(inbox, lane)
        self._fd = fd
        at = inbox._slots_off + lane * SLOT_BYTES  # the byte locked: the slot's first
        self._lk = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, at, 1, 0)
        self._unlk = _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, at, 1, 0)
        self._held = False
        self.lock = _OverflowLock(self)
        self._limit = -1  # nothing may be reserved without the lock

    def __repr__(self) -> str:
        return super().__repr__().replace("<Producer", "<Producer overflow", 1)

    def _lock_lane(self, blocking: bool) -> bool:
        if not self._valid or self._fd < 0:
            return True  # the caller gets ESTALE from the first reserve (_limit is -1)
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW if blocking else fcntl.F_OFD_SETLK, self._lk)
        except OSError as exc:
            if not blocking and exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._held = True
        ctl = self._ctl
        self._tail = ctl[_TAIL]
        self._limit = self._lane_limit(ctl[_HEAD])
        return True

    def _unlock_lane(self) -> None:
        if self._held:
            self._held = False
            self._limit = -1
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, self._unlk)

    def _space(self, n: int) -> bool:
        """Room for an ``n``-byte frame now, from the shared counters; writes nothing
        (wait_space() may run without the lock, and a WRAP word written then could land
        on another process's record)."""
        if not self._valid or not 0 <= n <= self._maxf:
            self._reserve_slow(n)  # raises the error reserve() would
        ctl = self._ctl
        t = ctl[_TAIL]
        rec = (n + 15) & -8
        off = t & self._mask
        need = rec if off + rec <= self._cap else self._cap - off + rec
        head = ctl[_HEAD]
        return t + need <= (head + self._cap if t == head else self._lane_limit(head))

    def _invalidate(self) -> None:
        super()._invalidate()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._held = False
            os.close(fd)  # in a forked child the parent's descriptor keeps its lock


# --------------------------------------------------------------------------------------
# Inbox
# --------------------------------------------------------------------------------------


class Inbox:
    """One consumer's set of lanes in one shared-memory segment, plus its doorbell."""

    name: str
    lanes: int
    lane_bytes: int
    max_frame: int
    #: busy-poll time (s) before sleeping, in wait() and Producer.wait_space()
    spin: float
    #: longest single sleep (s); see BACKSTOP
    backstop: float

    def __init__(
        self,
        name: str,
        mm: mmap.mmap,
        ino: tuple[int, int],
        bell_nb: _Doorbell,
    ) -> None:
        self.name = name
        self._mm: mmap.mmap | None = mm
        self._ino = ino
        self._bell_nb: _Doorbell | None = bell_nb
        mv = memoryview(mm)
        hq = mv[:HEADER_BYTES].cast("Q")
        self._hq = hq
        self.lanes = lanes = hq[_LANES]
        self.lane_bytes = lb = hq[_LANE_BYTES]
        self.max_frame = lb // 2 - RECORD_HDR
        self._mask = lb - 1
        self._fit = lb - RECORD_HDR  # a record's frame ends at most here in its lane
        #: index of the shared overflow lane (slot ``lanes``, after the private ones)
        self.overflow_lane = lanes
        nslots = self._nslots = lanes + 1
        slots_off, data_off = hq[_SLOTS_OFF], hq[_DATA_OFF]
        self._slots_off = slots_off
        self._data_off = data_off
        self._owner = (hq[_OWNER_PID], hq[_OWNER_START])
        #: the creating node's incarnation tag
        self.tag: int = hq[_TAG]
        #: numpy uint8 view of every lane's data region (lane i at [i*lane_bytes, ...))
        self.data = np.frombuffer(mm, np.uint8, count=nslots * lb, offset=data_off)
        self._ctls = [
            mv[slots_off + i * SLOT_BYTES : slots_off + (i + 1) * SLOT_BYTES].cast("Q")
            for i in range(nslots)
        ]
        region: Any = self.data  # numpy exports the buffer protocol (stubs lag behind)
        self._bufs = [memoryview(region[i * lb : (i + 1) * lb]) for i in range(nslots)]
        self._qs = [b.cast("Q") for b in self._bufs]
        self._views: list[memoryview] = [mv, hq, *self._ctls, *self._bufs, *self._qs]
        self.spin = SPIN
        self.backstop = BACKSTOP
        # producer side
        self._producer: Producer | None = None
        self._claim_lock = threading.RLock()
        # consumer side
        self._rx: list[_RxLane | None] = [None] * nslots  # by slot index
        self._active: list[_RxLane] = []  # the round-robin cycle, in slot order
        self._rr: _RxLane | None = None  # where the next poll() starts
        self._gen = -1
        self._select = False
        self._next_reap = 0.0
        self._odd_depth = 0
        self._detached = False
        _live_inboxes.add(self)

    # ---- life cycle ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        lanes: int = 64,
        lane_bytes: int = 256 * 1024,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
        gid: int = -1,
        tag: int = 0,
    ) -> Inbox:
        """Create the inbox ``name`` (consumer side). FileExistsError if the name is taken.

        Both the segment and ``<name>.bell`` are created exclusively with exactly ``mode``
        (fchmod, so the umask neither widens nor narrows it). World-writable modes are
        refused. ``owner`` defaults to the calling process; ``tag`` (a u64) is the node
        incarnation that :meth:`attach` can insist on.

        The header and slot table are allocated now (the lanes when claimed), so a full
        /dev/shm raises :class:`~tipcshm.errors.SharedMemoryFull` here and leaves nothing
        behind, instead of a SIGBUS at the first write.
        """
        _check_name(name)
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}, not {lanes}")
        if (
            lane_bytes < MIN_LANE_BYTES
            or lane_bytes > MAX_LANE_BYTES
            or lane_bytes & (lane_bytes - 1)
        ):
            raise ValueError(
                f"lane_bytes must be a power of two in {MIN_LANE_BYTES}..{MAX_LANE_BYTES} "
                f"(it holds two records of max_frame = lane_bytes // 2 - 8), not {lane_bytes}"
            )
        if mode & ~0o777 or mode & 0o002:
            raise ValueError(f"mode {mode:#o} must be permission bits without o+w")
        if not 0 <= tag < 1 << 64:
            raise ValueError(f"tag must be a u64, not {tag}")
        owner = owner or proc.self_token()
        slots_off, data_off, size = _layout(lanes, lane_bytes)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError:
            raise FileExistsError(errno.EEXIST, "inbox exists", name) from None
        except posix_ipc.PermissionsError as e:
            raise PermissionError(errno.EACCES, str(e), name) from None
        bell: _Doorbell | None = None
        try:
            os.fchmod(shm.fd, mode)
            if gid >= 0:  # a node opened to a group: its members send here too
                os.fchown(shm.fd, -1, gid)
            _allocate(shm.fd, 0, data_off, f"inbox {name}")
            bell = _Doorbell.create(name, mode, gid)
            st = os.fstat(shm.fd)
            mm = mmap.mmap(shm.fd, size)
            hq = memoryview(mm)[:HEADER_BYTES].cast("Q")
            hq[_VERSION] = LAYOUT_VERSION
            hq[_LANES] = lanes
            hq[_LANE_BYTES] = lane_bytes
            hq[_OWNER_PID], hq[_OWNER_START] = owner
            hq[_SLOTS_OFF] = slots_off
            hq[_DATA_OFF] = data_off
            hq[_TAG] = tag
            hq[_MAGIC] = MAGIC  # last: attach() refuses a segment without it
            hq.release()
        except BaseException:
            with _suppress_missing():
                posix_ipc.unlink_shared_memory(name)
            if bell is not None:
                bell.close()
                _Doorbell.unlink(name)
            raise
        finally:
            shm.close_fd()
        assert bell is not None
        return cls(name, mm, (st.st_dev, st.st_ino), bell)

    @classmethod
    def attach(cls, name: str, *, trust: Trust | None = None, tag: int | None = None) -> Inbox:
        """Open an existing inbox (producer side). FileNotFoundError if it does not exist.

        The segment and its doorbell must pass ``trust`` (:func:`default_trust` when
        None): a regular file and a FIFO, not symlinks, of a trusted owner, else
        :class:`~tipcshm.errors.UntrustedObject`. With ``tag``, an inbox created with
        another tag (by an earlier incarnation of the node) raises InboxError ``ESTALE``.
        """
        _check_name(name)
        trust = default_trust() if trust is None else trust
        try:
            fd = open_checked(f"/dev/shm{name}", os.O_RDWR, trust, "file")
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such inbox", name) from None
        except PermissionError as e:
            if isinstance(e, UntrustedObject):
                raise
            raise PermissionError(errno.EACCES, str(e), name) from None
        try:
            st = os.fstat(fd)
            if st.st_size < HEADER_BYTES:
                raise _err(InboxError, errno.EPROTO, "segment too small for an inbox", name)
            mm = mmap.mmap(fd, st.st_size)
        finally:
            os.close(fd)
        try:
            hq = memoryview(mm)[:HEADER_BYTES].cast("Q")
            try:
                magic, version = hq[_MAGIC], hq[_VERSION]
                lanes, lb = hq[_LANES], hq[_LANE_BYTES]
                slots_off, data_off = hq[_SLOTS_OFF], hq[_DATA_OFF]
                their_tag = hq[_TAG]
            finally:
                hq.release()
            if magic != MAGIC:
                raise _err(InboxError, errno.EPROTO, "not an inbox (or not initialised yet)", name)
            if version != LAYOUT_VERSION:
                raise _err(
                    InboxError,
                    errno.EPROTO,
                    f"inbox layout version {version}, this library speaks {LAYOUT_VERSION}",
                    name,
                )
            ok = (
                1 <= lanes <= MAX_LANES
                and MIN_LANE_BYTES <= lb <= MAX_LANE_BYTES
                and lb & (lb - 1) == 0
                and (slots_off, data_off, st.st_size) == _layout(lanes, lb)
            )
            if not ok:
                raise _err(InboxError, errno.EPROTO, "inconsistent inbox header", name)
            if tag is not None and their_tag != tag:
                raise _err(
                    InboxError,
                    errno.ESTALE,
                    f"inbox {name} belongs to another incarnation of the node "
                    f"(tag {their_tag:#x}, expected {tag:#x})",
                    name,
                )
            bell = _Doorbell.open(name, trust)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, (st.st_dev, st.st_ino), bell)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        return f"<Inbox {self.name} lanes={self.lanes} lane_bytes={self.lane_bytes}>"

    def detach(self) -> None:
        """Release this process's slot (if any), unmap, close descriptors. Idempotent."""
        if self._detached:
            return
        self._detached = True
        _live_inboxes.discard(self)
        p = self._producer
        if p is not None:
            self._release_slot(p)
        self._producer = None
        self._publish_reads()
        self._rx = [None] * self._nslots
        self._active = []
        self._rr = None
        if self._bell_nb is not None:
            self._bell_nb.close()
        self._bell_nb = None
        for v in reversed(self._views):
            try:
                v.release()
            except BufferError:  # a caller still holds a view derived from it
                pass
        self._views = []
        del self.data
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                log.debug("%s: views still exported, mapping freed by the GC", self.name)

    def unlink(self) -> None:
        """Remove the segment and doorbell names (idempotent). Mappings stay valid."""
        self.unlink_name(self.name)

    @staticmethod
    def unlink_name(name: str) -> None:
        """Remove an inbox by name without opening it; missing parts are fine.

        The doorbell goes first: create() takes the segment name first, so a bell without
        a segment cannot be left behind by a concurrent unlink.
        """
        _Doorbell.unlink(name)
        with _suppress_missing():
            posix_ipc.unlink_shared_memory(name)

    @property
    def closed(self) -> bool:
        """True once the consumer ran :meth:`mark_closed`."""
        return bool(self._hq[_CLOSED])

    def restore_header(self) -> None:
        """Rewrite the header fields fixed at creation from this mapping's own copy.

        For the creator of a long-lived inbox (a worker's): any process that may send to it
        can also scribble on its header, and producers refuse to attach to an inconsistent
        one; the consumer's copy is what the header must say.
        """
        hq = self._hq
        slots_off, data_off, _size = _layout(self.lanes, self.lane_bytes)
        hq[_VERSION] = LAYOUT_VERSION
        hq[_LANES] = self.lanes
        hq[_LANE_BYTES] = self.lane_bytes
        hq[_OWNER_PID], hq[_OWNER_START] = self._owner
        hq[_SLOTS_OFF] = slots_off
        hq[_DATA_OFF] = data_off
        hq[_TAG] = self.tag
        hq[_QLIMIT] = 0  # workers' inboxes set no queue limit: one written is a scribble
        hq[_CLOSED] = 0
        hq[_MAGIC] = MAGIC

    def ring(self) -> None:
        """Ring the doorbell unconditionally: for work posted outside the lanes (control
        requests in the socket table), whose poster cannot see ``armed``'s fence."""
        _send_bell(self._nb_bell())

    def set_queue_limit(self, nbytes: int) -> None:
        """Let each producer have at most ``nbytes`` queued in its lane (0: a whole
        ring); the consumer's SO_RCVBUF. A producer over it finds its lane full."""
        self._hq[_QLIMIT] = max(0, nbytes)

    def mark_closed(self) -> None:
        """Tell producers no more frames will be read, and wake a waiting consumer."""
        self._hq[_CLOSED] = 1
        if self._bell_nb is not None:
            _send_bell(self._bell_nb)

    @property
    def owner(self) -> tuple[int, int]:
        """``(pid, start_time)`` of the consumer process."""
        return self._owner

    def owner_alive(self) -> bool:
        return proc.alive(*self._owner)

    # ---- slot control path -------------------------------------------------------

    def _open_segment(self) -> int:
        """A fresh descriptor of our segment (InboxClosed once the name left or moved on)."""
        try:
            shm = posix_ipc.SharedMemory(self.name)
        except posix_ipc.ExistentialError:
            raise _err(InboxClosed, errno.EPIPE, "inbox was removed", self.name) from None
        fd: int = shm.fd
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if (st.st_dev, st.st_ino) != self._ino:
            os.close(fd)
            raise _err(InboxClosed, errno.EPIPE, "inbox was removed", self.name)
        return fd

    @contextmanager
    def _slot_table_locked(self) -> Iterator[int]:
        """flock on a fresh descriptor of the segment (not shared with forked children);
        yields that descriptor."""
        with self._claim_lock:
            fd = self._open_segment()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield fd
            finally:
                os.close(fd)  # drops the flock

    def producer(self, *, overflow: bool = True) -> Producer:
        """This process's lane into the inbox, claimed on first use and cached.

        Reuses a FREE slot, else one whose producer is dead and whose ring is empty. When
        every private slot has a live (or undrained) producer, returns a producer on the
        shared overflow lane (its :attr:`Producer.lock` also serialises processes), or
        with ``overflow=False`` raises :class:`InboxNoLane`. Raises :class:`InboxClosed`
        when the consumer closed the inbox, and
        :class:`~tipcshm.errors.SharedMemoryFull` when /dev/shm has no room for the lane.
        """
        p = self._producer
        if p is not None and p._valid and (overflow or not p.overflow):
            return p
        with self._claim_lock:
            return self._claim(overflow)

    def _claim(self, overflow: bool) -> Producer:
        p = self._producer
        if p is not None and p._valid:  # another thread claimed meanwhile
            if overflow or not p.overflow:
                return p
            raise self._no_lane("this process already sends through the overflow lane")
        if self._detached:
            raise _err(InboxError, errno.EBADF, "inbox is detached", self.name)
        if self._hq[_CLOSED]:
            raise _err(InboxClosed, errno.EPIPE, "inbox closed by its consumer", self.name)
        me = proc.self_token()
        with self._slot_table_locked() as fd:
            lane = self._find_slot()
            if lane is None:
                if not overflow:
                    raise self._no_lane(f"all {self.lanes} lanes taken by live producers")
                lane = self.overflow_lane
                ctl = self._ctls[lane]
                if ctl[_STATE] != SLOT_SHARED:
                    self._allocate_lane(fd, lane)
                    ctl[_STATE] = SLOT_SHARED
                    self._hq[_GEN] += 1
                ctl[_CLAIMS] += 1
                own = self._open_segment()  # the OFD lock's own description
                p = self._producer = _OverflowProducer(self, lane, own)
                return p
            self._allocate_lane(fd, lane)  # before ACTIVE: a full /dev/shm claims nothing
            ctl = self._ctls[lane]
            ctl[_PID], ctl[_START] = me
            ctl[_STATE] = SLOT_ACTIVE
            ctl[_CLAIMS] += 1
            self._hq[_GEN] += 1
        p = self._producer = Producer(self, lane)
        return p

    def _no_lane(self, why: str) -> InboxError:
        return _err(InboxNoLane, errno.ENOBUFS, why, self.name)

    def _allocate_lane(self, fd: int, lane: int) -> None:
        """Back lane ``lane``'s data with memory now (a no-op where it already is)."""
        lb = self.lane_bytes
        _allocate(fd, self._data_off + lane * lb, lb, f"lane {lane} of inbox {self.name}")

    def _find_slot(self) -> int | None:
        ctls = self._ctls[: self.lanes]
        for i, c in enumerate(ctls):
            if c[_STATE] == SLOT_FREE:
                return i
        for i, c in enumerate(ctls):
            if c[_HEAD] == c[_TAIL] and not proc.alive(c[_PID], c[_START]):
                return i
        return None

    def _release_slot(self, p: Producer) -> None:
        p._invalidate()
        if p.overflow:
            return  # the overflow lane has no owner to release
        ctl = self._ctls[p.lane]
        if (ctl[_PID], ctl[_START]) != proc.self_token():
            return  # not ours (e.g. inherited across fork)
        try:
            with self._slot_table_locked():
                if ctl[_HEAD] == ctl[_TAIL]:
                    ctl[_STATE] = SLOT_FREE
                    self._discard_lane(p.lane)
                ctl[_PID] = ctl[_START] = 0  # ownerless: reclaimable once drained
                self._hq[_GEN] += 1
        except InboxClosed:
            pass  # segment already unlinked: nobody will claim the slot again

    def reap(self) -> int:
        """Free slots whose producer is dead and whose ring is drained; returns how many.

        Called by :meth:`wait` before sleeping, at most every 5 s, so that short-lived
        senders do not leave empty lanes for the consumer to poll.
        """
        n = 0
        try:
            with self._slot_table_locked():
                for i, c in enumerate(self._ctls[: self.lanes]):
                    if (
                        c[_STATE] == SLOT_ACTIVE
                        and c[_HEAD] == c[_TAIL]
                        and not proc.alive(c[_PID], c[_START])
                    ):
                        c[_STATE] = SLOT_FREE
                        c[_PID] = c[_START] = 0
                        self._discard_lane(i)
                        n += 1
                if n:
                    self._hq[_GEN] += 1
        except InboxClosed:
            return 0
        return n

    def _discard_lane(self, lane: int) -> None:
        """Give a freed, drained lane's pages back to /dev/shm (the next claim allocates
        them again). Call under the slot-table lock, so no claim runs meanwhile."""
        lb = self.lane_bytes
        mm = self._mm
        if lb % mmap.PAGESIZE or mm is None:
            return  # lanes smaller than a page share pages with their neighbours
        with contextlib.suppress(OSError):  # a file system without hole punching
            mm.madvise(mmap.MADV_REMOVE, self._data_off + lane * lb, lb)

    def _forget_producer_after_fork(self) -> None:
        p = self._producer
        if p is not None:
            p._invalidate()
        self._producer = None
        self._claim_lock = threading.RLock()

    def _nb_bell(self) -> _Doorbell:
        if self._bell_nb is None:
            raise _err(InboxError, errno.EBADF, "inbox is detached", self.name)
        return self._bell_nb

    # ---- consumer side -----------------------------------------------------------

    def _refresh(self) -> None:
        """Rebuild the round-robin list of active lanes after a generation change."""
        gen = self._hq[_GEN]
        rx = self._rx
        active: list[_RxLane] = []
        for i, c in enumerate(self._ctls):
            ln = rx[i]
            state = c[_STATE]
            if state == SLOT_ACTIVE or state == SLOT_SHARED or (ln is not None and ln.cur >= 0):
                if ln is None:
                    base = self._data_off + i * self.lane_bytes
                    ln = rx[i] = _RxLane(i, c, self._qs[i], self._bufs[i], base)
                active.append(ln)
            elif ln is not None:
                c[_FRAMES_R] = ln.nread
                rx[i] = None
        for a, b in zip(active, active[1:] + active[:1], strict=True):
            a.nxt = b
        self._active = active
        rr = self._rr
        self._rr = rr if rr is not None and rr in active else (active[0] if active else None)
        self._gen = gen

    def poll(self) -> tuple[memoryview, int, int, int] | None:
        """Next frame as ``(lane buffer, offset, length, lane)`` without consuming it.

        Round robin over active lanes, one frame per lane per turn. Calling it (or
        :meth:`get`) again before :meth:`release` returns the same frame.

        Slot headers and rings are writable by every producer, so nothing read there is
        trusted: a ``tail`` more than a ring ahead of (or behind) the head, or a record
        that would leave its lane, skips the lane's queued bytes (counted in ``corrupt``).
        """
        ln = start = self._rr
        if ln is None:
            return self._poll_idle()
        while True:
            h = ln.head
            if h < ln.tail:
                break
            t = ln.ctl[_TAIL]
            if t != h:
                if not 0 < t - h <= self.lane_bytes:
                    return self._poll_odd(ln, -1)
                ln.tail = t
                if self._hq[_GEN] != self._gen:  # new producers: rescan, keep it fair
                    self._refresh()
                break
            ln = ln.nxt
            if ln is start:
                return self._poll_idle()
        # The turn stays on this lane until release(): a poll that does not consume (a
        # peek) and the read after it must see the same frame, even if an earlier lane
        # got one meanwhile.
        self._rr = ln
        off = h & self._mask
        m = ln.q[off >> 3]
        if m > self.max_frame or off + m > self._fit:
            return self._poll_odd(ln, m)
        ln.cur = m
        ln.run = 0
        return (ln.buf, off + 8, m, ln.idx)

    def _poll_odd(self, ln: _RxLane, m: int) -> tuple[memoryview, int, int, int] | None:
        """A WRAP word (skip to offset 0 of the next lap), a corrupt length or tail (-1)."""
        if m == WRAP:
            h = ln.head
            h += self.lane_bytes - (h & self._mask)
            m = ln.q[0]
            # the WRAP word and the record after it were published by one tail store
            if m <= self.max_frame and h + RECORD_HDR + m <= ln.tail:
                ln.head = h
                ln.cur = m
                ln.run = 0
                return (ln.buf, 8, m, ln.idx)
            m = WRAP
        t = ln.ctl[_TAIL]
        log.error(
            "%s lane %d: impossible %s at %d; skipping to tail %d",
            self.name,
            ln.idx,
            "tail" if m < 0 else f"record length {m:#x}",
            ln.head,
            t,
        )
        self._hq[_CORRUPT] += 1
        ln.head = ln.tail = t
        ln.ctl[_HEAD] = t
        ln.cur = -1
        if self._odd_depth >= 4:  # a lane rewritten faster than we skip: report later
            return None
        self._odd_depth += 1
        try:
            return self.poll()
        finally:
            self._odd_depth -= 1

    def _poll_idle(self) -> tuple[memoryview, int, int, int] | None:
        self._publish_reads()
        if self._hq[_GEN] != self._gen:
            self._refresh()
            if self._pending():
                return self.poll()
        if self._select and self._settle() and self._pending():
            return self.poll()
        return None

    def get(self) -> bytes | None:
        """The next frame as ``bytes``, consumed: poll + copy out + release in one call.

        The receive hot path: one copy, straight from the mapping (a slice of the mmap
        object costs about half a ``bytes(memoryview)``), no tuple, no second call. Falls
        back to :meth:`poll` whenever the current lane has nothing ready.
        """
        ln = self._rr
        if ln is not None:
            h = ln.head
            if h >= ln.tail:
                t = ln.ctl[_TAIL]
                if not 0 < t - h <= self.lane_bytes or self._hq[_GEN] != self._gen:
                    return self._get_slow()  # nothing, a rescan, or a corrupt tail
                ln.tail = t
            off = h & self._mask
            m = ln.q[off >> 3]
            if m <= self.max_frame and off + m <= self._fit:
                start = ln.base + off + RECORD_HDR
                frame = self._mm[start : start + m]  # type: ignore[index]
                h += (m + 15) & -8
                ln.cur = -1
                ln.head = h
                ln.ctl[_HEAD] = h  # after the frame was copied (load->store order)
                ln.nread += 1
                self._rr = ln.nxt
                return frame
        return self._get_slow()

    def poll_run(self, lane: int, same: int, limit: int) -> Any:
        """After :meth:`poll` returned a frame on ``lane``: that frame and the ones after
        it in the same lane that have its length and its first ``same`` bytes, published
        and back to back in the ring, at most ``limit``, as a read-only numpy ``(k,
        length)`` uint8 array (row i is frame i, in place like poll()'s view). Consume
        them with :meth:`release_run` (``k = len(array)``).

        This is how a consumer takes a run of frames a producer wrote with
        :meth:`Producer.put_run_locked` in a few numpy operations instead of a poll and a
        release per frame. The comparison covers the length word, so a WRAP word ends
        the run as surely as a frame of another size or header.
        """
        ln = self._rx[lane]
        if ln is None or ln.cur < 0:
            raise _err(InboxError, errno.EINVAL, f"poll_run({lane}) without poll()", self.name)
        m = ln.cur
        rec = (m + 15) & -8
        h = ln.head
        off = h & self._mask
        t = ln.tail
        if (t - h) // rec < limit:
            t = ln.ctl[_TAIL]
            if 0 < t - h <= self.lane_bytes:
                ln.tail = t
            else:
                t = ln.tail  # corrupt: poll() skips the lane once this frame is released
        k = max(1, min(limit, (t - h) // rec, (self.lane_bytes - off) // rec))
        start = lane * self.lane_bytes + off
        if k > 1:
            records = self.data[start : start + k * rec].reshape(k, rec)
            prefixes = records[:, : RECORD_HDR + min(same, m)]
            match = (prefixes == prefixes[0]).all(axis=1)
            if not match.all():
                k = int(match.argmin())  # the first that differs
                records = records[:k]
            run = records[:, RECORD_HDR : RECORD_HDR + m]
        else:  # poll() checked that this one frame lies inside the lane
            run = self.data[start + RECORD_HDR : start + RECORD_HDR + m].reshape(1, m)
        ln.run = k
        run.flags.writeable = False
        return run

    def release_run(self, lane: int, k: int) -> None:
        """Consume the first ``k`` frames of the run :meth:`poll_run` returned."""
        ln = self._rx[lane]
        if ln is None or ln.cur < 0 or not 1 <= k <= ln.run:
            raise _err(
                InboxError, errno.EINVAL, f"release_run({lane}, {k}) without poll_run()", self.name
            )
        self._advance(ln, ln.head + k * ((ln.cur + 15) & -8), k)

    def poll_gather(self, lane: int, max_bytes: int, skip: int = 0) -> list[tuple[int, int]]:
        """After :meth:`poll` returned a frame on ``lane``: ``(offset, length)`` of that
        frame and of the published frames after it in the lane, in order, until their
        lengths less ``skip`` each add up to ``max_bytes`` (always the polled one).
        Unlike a run (:meth:`poll_run`) they may differ in size and header and may go on
        past a WRAP word into the next lap. Offsets are into poll()'s buffer; the frames
        stay put until :meth:`release_gather` consumes the first k of them.

        This is how a consumer joins the payloads of many frames into one object with one
        copy (``b"".join`` of views into the ring), as STREAM recv() does.
        """
        ln = self._rx[lane]
        if ln is None or ln.cur < 0:
            raise _err(InboxError, errno.EINVAL, f"poll_gather({lane}) without poll()", self.name)
        mask = self._mask
        q = ln.q
        maxf = self.max_frame
        fit = self._fit
        cap = self.lane_bytes
        m = ln.cur
        h = head = ln.head
        frames = [((h & mask) + RECORD_HDR, m)]
        ends = [h]
        h += (m + 15) & -8
        ends.append(h)
        total = m - skip
        t = ln.tail
        while total < max_bytes:
            if h >= t:
                t = ln.ctl[_TAIL]
                if h >= t or t - head > cap:
                    t = ln.tail
                    break  # nothing more, or a corrupt tail poll() will report
                ln.tail = t
            off = h & mask
            m = q[off >> 3]
            if m > maxf or off + m > fit or h + RECORD_HDR + m > t:
                if m != WRAP:
                    break  # corrupt: poll() reports it when it gets there
                h += cap - off
                continue
            frames.append((off + RECORD_HDR, m))
            h += (m + 15) & -8
            ends.append(h)
            total += m - skip
        ln.ends = ends
        return frames

    def release_gather(self, lane: int, k: int) -> None:
        """Consume the first ``k`` frames :meth:`poll_gather` returned."""
        ln = self._rx[lane]
        if ln is None or ln.cur < 0 or ln.ends[0] != ln.head or not 1 <= k < len(ln.ends):
            raise _err(
                InboxError,
                errno.EINVAL,
                f"release_gather({lane}, {k}) without poll_gather()",
                self.name,
            )
        h = ln.ends[k]
        ln.ends = [-1]
        self._advance(ln, h, k)

    def _advance(self, ln: _RxLane, h: int, k: int) -> None:
        """Consume k frames of ``ln`` up to ``h``: release_run's and release_gather's end
        (release() spells it out: it is the per-frame hot path)."""
        ln.cur = -1
        ln.head = h
        ln.ctl[_HEAD] = h  # after the frames were read (load->store order)
        ln.nread += k
        self._rr = ln.nxt

    def _get_slow(self) -> bytes | None:
        r = self.poll()
        if r is None:
            return None
        buf, off, m, lane = r
        frame = bytes(buf[off : off + m])
        self.release(lane)
        return frame

    def release(self, lane: int) -> None:
        """Consume the frame :meth:`poll` last returned on ``lane``; its view becomes stale."""
        ln = self._rx[lane]
        if ln is None or ln.cur < 0:
            raise _err(InboxError, errno.EINVAL, f"release({lane}) without poll()", self.name)
        h = ln.head + ((ln.cur + 15) & -8)
        ln.cur = -1
        ln.head = h
        ln.ctl[_HEAD] = h  # after the frame was read (load->store order)
        ln.nread += 1
        self._rr = ln.nxt

    def pending(self) -> bool:
        """True if any lane holds a frame not yet taken (no side effects)."""
        return self._pending()

    def _pending(self) -> bool:
        """True if any lane holds a frame (reads the shared tails; no side effects)."""
        if self._hq[_GEN] != self._gen:
            self._refresh()
        ln = start = self._rr
        if ln is None:
            return False
        while True:
            if ln.head != ln.ctl[_TAIL]:
                return True
            ln = ln.nxt
            if ln is start:
                return False

    def _settle(self) -> bool:
        """Select mode, about to idle: arm, fence, drain the bell, re-check.

        Returns True (and re-posts the bell) if a frame is pending after all.
        """
        hq = self._hq
        bell = self._nb_bell()
        hq[_ARMED] = 1
        full_fence()
        bell.take()
        if self._pending() or hq[_CLOSED]:
            hq[_ARMED] = 0
            _send_bell(bell)
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a frame is available (True) or ``timeout`` seconds pass (False).

        Spins :attr:`spin` seconds, then sleeps on the doorbell in slices of at most
        :attr:`backstop`. Frames already queued are reported even after
        :meth:`mark_closed`; once none are left, a closed inbox raises
        :class:`InboxClosed` instead of sleeping. ``None`` waits forever.
        """
        if self._pending():
            return True
        if timeout is not None and timeout <= 0:
            return False
        hq = self._hq
        if self.spin > 0:
            pc = time.perf_counter
            end = pc() + self.spin
            i = 0
            while pc() < end:
                if self._pending():
                    return True
                i += 1
                if not i & 7:  # see "Spinning and the CPU" in the module docstring
                    os.sched_yield()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._select:
            return self._wait_select(deadline)
        if self._detached:
            raise _err(InboxError, errno.EBADF, "inbox is detached", self.name)
        bell = self._nb_bell()
        while True:
            now = time.monotonic()
            if now >= self._next_reap:
                self._next_reap = now + _REAP_INTERVAL
                self.reap()
            hq[_ARMED] = 1
            full_fence()  # the armed store is visible before the tails are re-read
            if self._pending():
                hq[_ARMED] = 0
                return True
            if hq[_CLOSED]:
                hq[_ARMED] = 0
                raise _err(InboxClosed, errno.EPIPE, "inbox closed", self.name)
            if deadline is None:
                slice_ = self.backstop
            else:
                slice_ = min(deadline - now, self.backstop)
                if slice_ <= 0:
                    hq[_ARMED] = 0
                    return False
            hq[_SLEEPS] += 1
            self._publish_reads()
            rung = bell.sleep(slice_)
            hq[_ARMED] = 0
            if self._pending():
                hq[_WAKEUPS if rung else _LATE] += 1
                return True
            if rung:
                hq[_SPURIOUS] += 1

    def _wait_select(self, deadline: float | None) -> bool:
        bell = self._nb_bell()
        poller = select.poll()
        poller.register(bell.fileno(), select.POLLIN)
        hq = self._hq
        while True:
            if self._settle():
                if hq[_CLOSED] and not self._pending():
                    raise _err(InboxClosed, errno.EPIPE, "inbox closed", self.name)
                return True
            now = time.monotonic()
            slice_ = self.backstop if deadline is None else min(deadline - now, self.backstop)
            if slice_ <= 0:
                return False
            hq[_SLEEPS] += 1
            if poller.poll(slice_ * 1e3 + 1):
                hq[_WAKEUPS] += 1
            elif self._pending():
                hq[_LATE] += 1

    def bell_fileno(self) -> int:
        """The doorbell's descriptor, for a waiter of the consumer's own that drains it
        (tipcshm.readiness); unlike :meth:`fileno` it leaves the inbox's mode alone."""
        return self._nb_bell().fileno()

    def rearm(self) -> bool:
        """For a consumer whose own waiter watches the doorbell (:meth:`bell_fileno`),
        having found every lane empty: arm, fence, drain the bell, re-check. True if a
        frame is pending after all (then disarmed: the caller keeps reading); else the
        next producer's commit rings the bell (module docstring, Doorbell)."""
        hq = self._hq
        hq[_ARMED] = 1
        full_fence()
        self._nb_bell().take()
        if self._pending():
            hq[_ARMED] = 0
            return True
        return False

    def fileno(self) -> int:
        """Doorbell descriptor for selectors; switches the inbox to level-triggered mode.

        From the first call on, the descriptor is readable whenever a frame is pending,
        and stops being readable after :meth:`poll` has found every lane empty.
        """
        bell = self._nb_bell()
        if not self._select:
            self._select = True
            self._settle()
        return bell.fileno()

    # ---- observability -----------------------------------------------------------

    def keep_readable(self) -> None:
        """For a consumer holding frames it read ahead into a queue of its own: in select
        mode make :meth:`fileno` readable now (draining the rings drained the bell too);
        a no-op otherwise."""
        if self._select and self._bell_nb is not None:
            self._bell_nb.ring()

    def fill(self) -> tuple[int, int]:
        """(bytes queued over all lanes, total ring capacity of the private lanes)."""
        q = sum(c[_TAIL] - c[_HEAD] for c in self._ctls)
        return q, self.lanes * self.lane_bytes

    def _publish_reads(self) -> None:
        """Copy the consumer's per-lane frame counts to the slots (done when idle), and
        its heads: a ``head`` some producer overwrote would otherwise make the lane look
        full to its writers for as long as the consumer finds nothing to release."""
        for ln in self._active:
            ln.ctl[_FRAMES_R] = ln.nread
            ln.ctl[_HEAD] = ln.head

    def _lane_counts(self, i: int) -> tuple[int, int]:
        """(frames read, frames queued) of slot ``i``.

        Exact in the consumer process; from elsewhere an estimate built from the counters
        the consumer last published (it publishes whenever it goes idle). Producers keep
        no per-frame counter (that would cost ~90 ns a frame); queued frames are counted
        by walking the records between head and tail.
        """
        c = self._ctls[i]
        ln = self._rx[i]
        if ln is not None:
            head, nread = ln.head, ln.nread
        else:
            head, nread = c[_HEAD], c[_FRAMES_R]
        tail = c[_TAIL]
        q, mask, cap, maxf = self._qs[i], self._mask, self.lane_bytes, self.max_frame
        queued = 0
        steps = min((tail - head) // 8 + 1, cap // 8 + 1)  # a garbage tail: stay bounded
        while head < tail and steps > 0:
            steps -= 1
            off = head & mask
            m = q[off >> 3]
            if m == WRAP:
                head += cap - off
            elif m <= maxf:
                head += (m + 15) & -8
                queued += 1
            else:
                break  # overwritten under our feet (foreign reader) or corrupt
        return nread, queued

    def stats(self) -> dict[str, int]:
        """Counters of the whole inbox, readable by any attached process.

        ``bytes_*`` count ring bytes (length words and padding included); ``frames_*``
        are exact in the consumer process, see :meth:`_lane_counts` for other readers.
        """
        hq = self._hq
        cs = self._ctls
        queued, cap = self.fill()
        nread = nqueued = 0
        for i in range(self._nslots):
            r, q = self._lane_counts(i)
            nread += r
            nqueued += q
        return {
            "frames_written": nread + nqueued,
            "frames_read": nread,
            "frames_queued": nqueued,
            "bytes_written": sum(c[_TAIL] for c in cs),
            "bytes_read": sum(c[_HEAD] for c in cs),
            "queued_bytes": queued,
            "capacity": cap,
            "lanes_active": sum(1 for c in cs if c[_STATE] in (SLOT_ACTIVE, SLOT_SHARED)),
            "claims": sum(c[_CLAIMS] for c in cs),
            "generation": hq[_GEN],
            "sleeps": hq[_SLEEPS],
            "wakeups": hq[_WAKEUPS],
            "late_wakeups": hq[_LATE],
            "spurious_wakeups": hq[_SPURIOUS],
            "full_waits": sum(c[_FULL_WAITS] for c in cs),
            "bells": sum(c[_BELLS] for c in cs),
            "corrupt": hq[_CORRUPT],
            "closed": hq[_CLOSED],
        }

    def lane_producer(self, lane: int) -> tuple[int, int] | None:
        """``(pid, start time)`` that claimed private lane ``lane``, as its slot says now;
        None for the shared overflow lane, an out-of-range lane, or a slot that is not
        ACTIVE (free, or released by its owner). Any producer can write its slot header,
        so this names the claimer only as far as the producers are trusted not to forge
        each other's tokens; a consumer that accepts frames only from a given process
        compares this with the token that a more trusted table gives for it."""
        if not 0 <= lane < self.lanes:
            return None
        c = self._ctls[lane]
        if c[_STATE] != SLOT_ACTIVE:
            return None
        pid, start = c[_PID], c[_START]
        return (pid, start) if pid else None

    def lane_info(self, lane: int) -> dict[str, Any]:
        """Slot ``lane``'s header fields (for ``tipcshm stat`` and tests)."""
        c = self._ctls[lane]
        return {
            "state": c[_STATE],
            "pid": c[_PID],
            "start": c[_START],
            "claims": c[_CLAIMS],
            "tail": c[_TAIL],
            "head": c[_HEAD],
            "frames_read": self._lane_counts(lane)[0],
            "frames_queued": self._lane_counts(lane)[1],
            "full_waits": c[_FULL_WAITS],
            "bells": c[_BELLS],
        }


@contextmanager
def _suppress_missing() -> Iterator[None]:
    try:
        yield
    except posix_ipc.ExistentialError:
        pass
