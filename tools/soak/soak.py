"""Soak run: mixed traffic on one node under random kill -9, checked end to end.

Run as ``python tools/soak/soak.py --minutes 10`` (not part of the pytest suite). It starts
its own node, runs a bounded set of application processes (this same file in ``--worker``
mode) doing RDM, SEQPACKET and STREAM traffic, kills application processes, the name-table
worker and now and then the supervisor (followed by ``tipcshm stop`` and a new ``tipcshm
start``), and checks every message: see tools/soak/README.md for what counts as a violation.

Two halves talk through pipes. The orchestrator writes ``stop`` and ``epoch N`` lines to a
worker's stdin; a worker writes JSON lines to its stdout (cumulative stats, violations,
stalls, the outcome of every connection and RDM stream). Stats are cumulative and sent twice
a second, so a worker killed with kill -9 still counts what it did until shortly before.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import faulthandler
import functools
import json
import os
import random
import re
import secrets
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# -- wire format of the soak's own messages -------------------------------------------
# tag, sender id, connection (or RDM stream) id, sequence number, sender pid; then crc32 of
# the payload. Every message can be attributed and checked on its own.
HDR = struct.Struct("<4sIIQI")
CRC = struct.Struct("<I")
MSG_HEAD = HDR.size + CRC.size
MAX_MSG = 66000
# STREAM: tag, client id, connection id, client pid, data seed, total bytes.
STREAM_HDR = struct.Struct("<4sIIIQQ")
# STREAM answer: bytes seen, their crc32, server pid.
STREAM_END = struct.Struct("<QII")

T_RDM, T_SEQ, T_STREAM = 20001, 20002, 20003
IO_TIMEOUT = 5.0  # every blocking socket call ends within this
ACCEPT_TIMEOUT = 1.0
STALE_GRACE = 3.0  # a call on a dead node's socket should have failed by then
STATS_EVERY = 0.5

CLIENT_ROLES = ("rdm-sender", "seq-client", "stream-client")
SERVER_ROLES = ("rdm-server", "seq-server", "stream-server")
EXIT_WATCHDOG = 3
# A worker's descriptors or mappings of removed segments may grow a little (an attachment
# to a node that restarted); growth beyond this is reported as a leak.
WORKER_GROWTH = 64


# ======================================================================================
# worker side
# ======================================================================================
class Worker:
    """One application process: a role's loop plus the stdin reader, stats and watchdog."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.node: str = args.node
        self.wid: int = args.id
        self.role: str = args.worker
        self.rng = random.Random(args.seed)
        self.watchdog_s: float = args.watchdog
        self.inject: float = args.inject
        self.pid = os.getpid()
        self.stop = threading.Event()
        self.epoch = 0
        self.epoch_at = 0.0  # when this process learnt of the last supervisor kill
        self.out_lock = threading.Lock()
        self.stats: collections.Counter[str] = collections.Counter()
        self.stats_lock = threading.Lock()
        self.progress: dict[int, tuple[float, str]] = {}
        self.next_cid = 0
        # RDM receive side: last sequence per (sender, stream), and counts not yet reported.
        self.rdm_last: dict[tuple[int, int], int] = {}
        self.rdm_unreported: collections.Counter[tuple[int, int]] = collections.Counter()
        self.threads: list[threading.Thread] = []

    # -- plumbing ------------------------------------------------------------------
    def emit(self, **event: Any) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self.out_lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # the orchestrator is gone: nobody to report to

    def count(self, key: str, n: int = 1) -> None:
        with self.stats_lock:
            self.stats[key] += n

    def violation(self, what: str) -> None:
        self.count("violations")
        self.emit(t="violation", wid=self.wid, role=self.role, pid=self.pid, what=what)

    def stall(self, what: str) -> None:
        self.count("stalls")
        self.emit(t="stall", wid=self.wid, role=self.role, pid=self.pid, what=what)

    def tick(self, doing: str) -> None:
        """Progress of this thread, for the watchdog (every blocking call has a timeout,
        so a thread that stops ticking is stuck inside the library)."""
        self.progress[threading.get_ident()] = (time.monotonic(), doing)

    def untick(self) -> None:
        self.progress.pop(threading.get_ident(), None)

    def cid(self) -> int:
        self.next_cid += 1
        return self.next_cid

    def _stdin_reader(self) -> None:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["stop"]:
                self.stop.set()
            elif words[:1] == ["epoch"] and len(words) == 2:
                self.epoch_at = time.monotonic()
                self.epoch = int(words[1])
        # EOF: the orchestrator ended; leave soon whatever happens.
        self.stop.set()
        timer = threading.Timer(15.0, os._exit, (0,))
        timer.daemon = True
        timer.start()

    def _reporter(self) -> None:
        while True:
            done = self.stop.wait(STATS_EVERY) and not any(t.is_alive() for t in self.threads)
            self.flush_stats()
            if done:
                return

    def flush_stats(self) -> None:
        with self.stats_lock:
            stats = dict(self.stats)
            rdm = [[s, c, n] for (s, c), n in self.rdm_unreported.items()]
            self.rdm_unreported.clear()
        if rdm:
            self.emit(t="rdm_recv", wid=self.wid, streams=rdm)
        self.emit(t="stats", wid=self.wid, role=self.role, stats=stats, gauges=_gauges())

    def _watchdog(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            for _ident, (last, doing) in list(self.progress.items()):
                if now - last > self.watchdog_s:
                    self.stall(
                        f"watchdog: a thread made no progress for {now - last:.0f}s "
                        f"while {doing}; exiting (tracebacks in its stderr)"
                    )
                    self.flush_stats()
                    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                    sys.stderr.flush()
                    os._exit(EXIT_WATCHDOG)

    def start_thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        t = threading.Thread(target=self._guard, args=(target, *args), daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            self.emit(t="crash", wid=self.wid, role=self.role, pid=self.pid)
            self.flush_stats()
            os._exit(1)
        finally:
            self.untick()

    def run(self) -> int:
        threading.Thread(target=self._stdin_reader, daemon=True).start()
        threading.Thread(target=self._watchdog, daemon=True).start()
        self.start_thread(getattr(self, "role_" + self.role.replace("-", "_")))
        reporter = threading.Thread(target=self._reporter, daemon=True)
        reporter.start()
        for t in list(self.threads):
            t.join()
        while any(t.is_alive() for t in self.threads):  # servers add connection threads
            for t in list(self.threads):
                t.join()
        self.stop.set()
        reporter.join()
        return 0

    # -- helpers ---------------------------------------------------------------------
    def open_socket(self, kind: int) -> tuple[Any, int] | None:
        """A new socket on the node, waiting while it is down; None once told to stop."""
        import tipcshm

        while not self.stop.is_set():
            self.tick("opening a socket")
            epoch = self.epoch
            try:
                return tipcshm.socket(tipcshm.AF_TIPC, kind, node=self.node), epoch
            except tipcshm.NodeNotRunning:
                self.count("waits_for_node")
            except OSError as exc:
                self.count("socket_errors")
                self.emit(t="note", wid=self.wid, what=f"socket(): {exc!r}")
            self.stop.wait(0.1)
        return None

    def stale(self, epoch: int, doing: str) -> bool:
        """A call on a socket of a node whose supervisor we killed timed out: the library
        should have said NodeNotRunning (or ConnectionError) by now. Report it."""
        if epoch == self.epoch:
            return False
        waited = time.monotonic() - self.epoch_at
        if waited < STALE_GRACE:
            return False
        self.count("stale_after_restart")
        self.stall(
            f"{doing} on a socket of the node killed {waited:.1f}s ago timed out instead of "
            "raising NodeNotRunning/ConnectionError"
        )
        return True

    def injected(self) -> bool:
        """--inject: this message goes wrong on purpose (to see the checks catch it)."""
        if self.inject and self.rng.random() < self.inject:
            self.count("injected")
            return True
        return False

    def noticed(self, epoch: int, exc: BaseException, doing: str) -> None:
        """How long after a supervisor kill a call on the dead node's socket failed, and
        how (the figure prompt NodeNotRunning is meant to shrink)."""
        if epoch != self.epoch:
            self.emit(
                t="noticed",
                delay=time.monotonic() - self.epoch_at,
                exc=type(exc).__name__,
                doing=doing,
            )

    def payload(self) -> bytes:
        r = self.rng.random()
        if r < 0.02:
            size = self.rng.randint(8192, MAX_MSG - MSG_HEAD)
        elif r < 0.2:
            size = self.rng.randint(256, 8192)
        else:
            size = self.rng.randint(0, 256)
        return self.rng.randbytes(size)

    @staticmethod
    def pack(tag: bytes, sid: int, cid: int, seq: int, pid: int, body: bytes) -> bytes:
        return HDR.pack(tag, sid, cid, seq, pid) + CRC.pack(zlib.crc32(body)) + body

    def unpack(self, data: bytes, where: str) -> tuple[bytes, int, int, int, int, bytes] | None:
        if len(data) < MSG_HEAD:
            self.violation(f"{where}: short message of {len(data)} bytes")
            return None
        tag, sid, cid, seq, pid = HDR.unpack_from(data)
        (crc,) = CRC.unpack_from(data, HDR.size)
        body = data[MSG_HEAD:]
        if zlib.crc32(body) != crc:
            self.violation(f"{where}: corrupt payload from {sid}/{cid} seq {seq}")
            return None
        return tag, sid, cid, seq, pid, body

    def end_conn(
        self,
        kind: str,
        side: str,
        cid_key: tuple[int, int],
        outcome: str,
        why: str,
        peer: int,
        t0: float,
    ) -> None:
        self.count(f"{kind}_{side}_{outcome}")
        self.emit(
            t="conn",
            kind=kind,
            side=side,
            wid=self.wid,
            key=list(cid_key),
            outcome=outcome,
            why=why,
            peer=peer,
            t0=t0,
            t1=time.monotonic(),
        )

    # -- RDM ---------------------------------------------------------------------------
    def role_rdm_sender(self) -> None:
        import tipcshm

        while not self.stop.is_set():
            got = self.open_socket(tipcshm.SOCK_RDM)
            if got is None:
                return
            s, epoch = got
            cid, seq, t0, outcome = self.cid(), 0, time.monotonic(), "closed"
            life = self.rng.uniform(1.0, 5.0)
            try:
                s.settimeout(IO_TIMEOUT)
                while not self.stop.is_set() and time.monotonic() - t0 < life:
                    for _ in range(self.rng.randint(1, 40)):
                        body = self.payload()
                        msg = self.pack(b"RDM1", self.wid, cid, seq, self.pid, body)
                        dest = (tipcshm.TIPC_ADDR_NAME, T_RDM, self.rng.randrange(100), 0)
                        self.tick("RDM sendto")
                        try:
                            if self.injected():
                                if self.rng.random() < 0.5:
                                    seq += 1  # a "lost" message: counted, never sent
                                    continue
                                s.sendto(msg, dest)  # a duplicate
                            s.sendto(msg, dest)
                        except OSError as exc:
                            if exc.errno != errno.EHOSTUNREACH or isinstance(
                                exc, tipcshm.NodeNotRunning
                            ):
                                raise
                            self.count("rdm_unreachable")  # no server bound: same seq later
                            self.stop.wait(0.05)
                            break
                        seq += 1
                        self.count("rdm_sent")
                        self.count("rdm_bytes_sent", len(msg))
                    self.stop.wait(self.rng.uniform(0, 0.01))
            except (tipcshm.NodeNotRunning, ConnectionError) as exc:
                outcome = "aborted"
                self.noticed(epoch, exc, "RDM sendto")
            except TimeoutError:
                outcome = "aborted"
                if not self.stale(epoch, "RDM sendto"):
                    self.count("timeouts")
                    self.stall(f"RDM sendto stream {cid}: timed out after {IO_TIMEOUT}s")
            finally:
                with contextlib.suppress(OSError):
                    s.close()
                self.emit(
                    t="rdm_sent",
                    sid=self.wid,
                    cid=cid,
                    n=seq,
                    t0=t0,
                    t1=time.monotonic(),
                    outcome=outcome,
                )

    def role_rdm_server(self) -> None:
        import tipcshm

        while not self.stop.is_set():
            got = self.open_socket(tipcshm.SOCK_RDM)
            if got is None:
                return
            s, epoch = got
            rng_addr = (tipcshm.TIPC_ADDR_NAMESEQ, T_RDM, 0, 99, tipcshm.TIPC_NODE_SCOPE)
            try:
                s.settimeout(IO_TIMEOUT)
                self.tick("RDM bind")
                s.bind(rng_addr)
                s.settimeout(ACCEPT_TIMEOUT)
                draining = False
                while True:
                    if self.stop.is_set() and not draining:
                        # Unbound first, so nothing new comes; then read what is in flight.
                        draining = True
                        s.settimeout(IO_TIMEOUT)
                        s.unbind(
                            (tipcshm.TIPC_ADDR_NAMESEQ, T_RDM, 0, 99, -tipcshm.TIPC_NODE_SCOPE)
                        )
                        s.settimeout(0.5)
                    self.tick("RDM recv")
                    try:
                        data = s.recv(MAX_MSG + 100)
                    except TimeoutError:
                        if draining:
                            return
                        if self.stale(epoch, "RDM recv"):
                            break
                        continue
                    self.rdm_check(data)
            except (tipcshm.NodeNotRunning, ConnectionError) as exc:
                self.count("rdm_server_node_lost")
                self.noticed(epoch, exc, "RDM recv")
            except TimeoutError:
                if not self.stale(epoch, "RDM bind/unbind"):
                    self.stall(f"RDM bind/unbind timed out after {IO_TIMEOUT}s")
            finally:
                with contextlib.suppress(OSError):
                    s.close()

    def rdm_check(self, data: bytes) -> None:
        got = self.unpack(data, "RDM")
        if got is None:
            return
        tag, sid, cid, seq, _pid, _body = got
        if tag != b"RDM1":
            self.violation(f"RDM: unexpected tag {tag!r}")
            return
        key = (sid, cid)
        last = self.rdm_last.get(key, -1)
        if seq == last:
            self.violation(f"RDM {sid}/{cid}: seq {seq} received twice")
        elif seq < last:
            self.violation(f"RDM {sid}/{cid}: seq {seq} after {last} (reordered)")
        self.rdm_last[key] = max(seq, last)
        with self.stats_lock:
            self.rdm_unreported[key] += 1
            self.stats["rdm_recv"] += 1
            self.stats["rdm_bytes_recv"] += len(data)

    # -- connections: the client side's shared loop ---------------------------------------
    def client_loop(
        self, kind: str, sock_type: int, service: int, body: Callable[[Any, int, float], int]
    ) -> None:
        import tipcshm

        while not self.stop.is_set():
            got = self.open_socket(sock_type)
            if got is None:
                return
            s, epoch = got
            cid, t0 = self.cid(), time.monotonic()
            peer = [0]
            try:
                s.settimeout(IO_TIMEOUT)
                self.tick(f"{kind} connect")
                try:
                    s.connect((tipcshm.TIPC_ADDR_NAME, service, self.rng.randrange(100), 0))
                except (ConnectionRefusedError, TimeoutError) as exc:
                    # No listener (killed, or its binding not yet withdrawn): try again.
                    self.count(f"{kind}_refused")
                    if isinstance(exc, TimeoutError):
                        self.stale(epoch, f"{kind} connect")
                    self.stop.wait(0.05)
                    continue
                except OSError as exc:
                    if exc.errno == errno.EHOSTUNREACH and not isinstance(
                        exc, tipcshm.NodeNotRunning
                    ):
                        self.count(f"{kind}_unreachable")
                        self.stop.wait(0.05)
                        continue
                    raise
                peer[0] = body(s, cid, t0)
                self.end_conn(kind, "client", (self.wid, cid), "completed", "", peer[0], t0)
            except (tipcshm.NodeNotRunning, ConnectionError) as exc:
                self.end_conn(kind, "client", (self.wid, cid), "aborted", repr(exc), peer[0], t0)
                self.noticed(epoch, exc, f"{kind} client I/O")
                if isinstance(exc, tipcshm.NodeNotRunning):
                    self.stop.wait(0.05)
            except TimeoutError as exc:
                stale = self.stale(epoch, f"{kind} client I/O")
                if not stale:
                    self.count("timeouts")
                    self.stall(f"{kind} client conn {cid}: {exc}")
                self.end_conn(
                    kind,
                    "client",
                    (self.wid, cid),
                    "aborted",
                    "stale" if stale else "timeout",
                    peer[0],
                    t0,
                )
            except ProtocolBroken:
                self.end_conn(kind, "client", (self.wid, cid), "broken", "", peer[0], t0)
            finally:
                with contextlib.suppress(OSError):
                    s.close()
            self.stop.wait(self.rng.uniform(0, 0.05))

    def recv_exact(self, s: Any, n: int, doing: str) -> bytes:
        parts, got = [], 0
        while got < n:
            self.tick(doing)
            piece = s.recv(n - got)
            if not piece:
                raise ConnectionResetError(f"{doing}: EOF after {got} of {n} bytes")
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    # -- SEQPACKET: pipelined request/reply -------------------------------------------------
    def role_seq_client(self) -> None:
        import tipcshm

        self.client_loop("seq", tipcshm.SOCK_SEQPACKET, T_SEQ, self.seq_conversation)

    def seq_conversation(self, s: Any, cid: int, t0: float) -> int:
        nreq = self.rng.randint(1, 400)
        window = self.rng.randint(1, 8)
        outstanding: collections.deque[tuple[int, bytes]] = collections.deque()
        seq, peer = 0, 0
        while seq < nreq or outstanding:
            while seq < nreq and len(outstanding) < window:
                body = self.payload()
                self.tick("SEQ send")
                msg = self.pack(b"REQ1", self.wid, cid, seq, self.pid, body)
                if self.injected():
                    s.send(msg)  # a duplicate
                s.send(msg)
                outstanding.append((seq, _digest(body)))
                self.count("seq_requests")
                self.count("seq_bytes_sent", len(body) + MSG_HEAD)
                seq += 1
            self.tick("SEQ recv reply")
            data = s.recv(MAX_MSG + 100)
            got = self.unpack(data, f"SEQ reply on {self.wid}/{cid}")
            if got is None:
                raise ProtocolBroken
            tag, sid, rcid, rseq, peer, body = got
            want_seq, want_digest = outstanding.popleft()
            if (tag, sid, rcid, rseq) != (b"REP1", self.wid, cid, want_seq):
                self.violation(
                    f"SEQ {self.wid}/{cid}: expected reply to seq {want_seq}, got "
                    f"{tag!r} {sid}/{rcid} seq {rseq} (loss, duplication or reordering)"
                )
                raise ProtocolBroken
            if body[:16] != want_digest:
                self.violation(f"SEQ {self.wid}/{cid} seq {rseq}: reply for other content")
                raise ProtocolBroken
            self.count("seq_replies")
            self.count("seq_bytes_recv", len(data))
            if self.stop.is_set():
                nreq = seq  # wind down: finish what is outstanding, then END
        self.tick("SEQ END")
        s.send(self.pack(b"END1", self.wid, cid, nreq, self.pid, b""))
        got = self.unpack(s.recv(MAX_MSG + 100), f"SEQ END on {self.wid}/{cid}")
        if got is None or got[:4] != (b"ENDA", self.wid, cid, nreq):
            self.violation(f"SEQ {self.wid}/{cid}: END {nreq} answered with {got and got[:4]}")
            raise ProtocolBroken
        return peer

    def role_seq_server(self) -> None:
        import tipcshm

        self.server_loop("seq", tipcshm.SOCK_SEQPACKET, T_SEQ, self.seq_serve)

    def seq_serve(self, c: Any) -> tuple[tuple[int, int], int, bool]:
        """Answer one connection; returns its key, the client's pid, whether it ended."""
        expected, key, peer = 0, (0, 0), 0
        while True:
            self.tick("SEQ server recv")
            data = c.recv(MAX_MSG + 100)
            if not data:
                raise ConnectionResetError("EOF before END")
            got = self.unpack(data, "SEQ request")
            if got is None:
                raise ProtocolBroken
            tag, sid, cid, seq, peer, body = got
            if expected == 0 and key == (0, 0):
                key = (sid, cid)
            if (sid, cid) != key:
                self.violation(f"SEQ {key}: a message of connection {sid}/{cid} arrived on it")
                raise ProtocolBroken
            if tag == b"END1":
                if seq != expected:
                    self.violation(f"SEQ {key}: END says {seq} requests, {expected} arrived")
                    raise ProtocolBroken
                c.send(self.pack(b"ENDA", sid, cid, seq, self.pid, b""))
                return key, peer, True
            if tag != b"REQ1" or seq != expected:
                what = "lost" if seq > expected else "duplicated or reordered"
                self.violation(f"SEQ {key}: got {tag!r} seq {seq}, expected {expected} ({what})")
                raise ProtocolBroken
            expected += 1
            self.count("seq_served")
            filler = self.rng.randbytes(self.rng.choice((0, 0, 16, 200, 3000)))
            self.tick("SEQ server send")
            c.send(self.pack(b"REP1", sid, cid, seq, self.pid, _digest(body) + filler))

    # -- STREAM: bulk bytes from a seeded generator, checked byte by byte -------------------
    def role_stream_client(self) -> None:
        import tipcshm

        self.client_loop("stream", tipcshm.SOCK_STREAM, T_STREAM, self.stream_send)

    def write_size(self) -> int:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randint(1, 100)
        if r < 0.6:
            return self.rng.randint(100, 8192)
        if r < 0.9:
            return self.rng.randint(8192, 70000)
        return self.rng.randint(70000, 1 << 20)

    def stream_send(self, s: Any, cid: int, t0: float) -> int:
        seed = self.rng.getrandbits(63)
        total = self.rng.choice((1, 1000, 100_000, 1 << 20, 4 << 20, 16 << 20))
        total = self.rng.randint(1, total)
        data = StreamData(seed)
        self.tick("STREAM send header")
        s.sendall(STREAM_HDR.pack(b"STR1", self.wid, cid, self.pid, seed, total))
        sent, crc = 0, 0
        while sent < total:
            n = min(self.write_size(), total - sent)
            chunk = data.at(sent, n)
            self.tick("STREAM sendall")
            s.sendall(bytes([chunk[0] ^ 1]) + chunk[1:] if self.injected() else chunk)
            crc = zlib.crc32(chunk, crc)
            sent += n
            self.count("stream_bytes_sent", n)
            self.count("stream_writes")
        answer = self.recv_exact(s, STREAM_END.size, "STREAM recv answer")
        count, their_crc, peer = STREAM_END.unpack(answer)
        if (count, their_crc) != (total, crc):
            self.violation(
                f"STREAM {self.wid}/{cid}: sent {total} bytes crc {crc:#x}, server saw "
                f"{count} crc {their_crc:#x}"
            )
            raise ProtocolBroken
        return int(peer)

    def role_stream_server(self) -> None:
        import tipcshm

        self.server_loop("stream", tipcshm.SOCK_STREAM, T_STREAM, self.stream_serve)

    def stream_serve(self, c: Any) -> tuple[tuple[int, int], int, bool]:
        head = self.recv_exact(c, STREAM_HDR.size, "STREAM server recv header")
        tag, sid, cid, peer, seed, total = STREAM_HDR.unpack(head)
        key = (sid, cid)
        if tag != b"STR1":
            self.violation(f"STREAM: bad header {head!r}")
            raise ProtocolBroken
        expect = StreamData(seed)
        got, crc = 0, 0
        while got < total:
            self.tick("STREAM server recv")
            piece = c.recv(min(256 << 10, total - got))
            if not piece:
                raise ConnectionResetError(f"EOF after {got} of {total} bytes")
            want = expect.at(got, len(piece))
            if piece != want:
                at = next(i for i, (a, b) in enumerate(zip(piece, want, strict=True)) if a != b)
                self.violation(
                    f"STREAM {sid}/{cid}: byte {got + at} of {total} differs (piece of "
                    f"{len(piece)} bytes at {got}): lost, duplicated, reordered or corrupt"
                )
                raise ProtocolBroken
            crc = zlib.crc32(piece, crc)
            got += len(piece)
            self.count("stream_bytes_recv", len(piece))
        self.tick("STREAM server answer")
        c.sendall(STREAM_END.pack(got, crc, self.pid))
        return key, peer, True

    # -- connections: the server side's shared loop -----------------------------------------
    def server_loop(
        self,
        kind: str,
        sock_type: int,
        service: int,
        serve: Callable[[Any], tuple[tuple[int, int], int, bool]],
    ) -> None:
        import tipcshm

        while not self.stop.is_set():
            got = self.open_socket(sock_type)
            if got is None:
                return
            ls, epoch = got
            try:
                ls.settimeout(IO_TIMEOUT)
                self.tick(f"{kind} bind")
                ls.bind((tipcshm.TIPC_ADDR_NAMESEQ, service, 0, 99, tipcshm.TIPC_NODE_SCOPE))
                ls.listen(32)
                ls.settimeout(ACCEPT_TIMEOUT)
                while not self.stop.is_set():
                    self.tick(f"{kind} accept")
                    try:
                        c, _addr = ls.accept()
                    except (ConnectionError, tipcshm.NodeNotRunning) as exc:
                        # accept() answers the SYN; a client killed since makes it raise
                        # (BrokenPipe): the listener itself is fine, unless the node is gone.
                        if isinstance(exc, tipcshm.NodeNotRunning) or epoch != self.epoch:
                            raise
                        self.count(f"{kind}_accept_failed")
                        continue
                    except TimeoutError:
                        if self.stale(epoch, f"{kind} accept"):
                            break
                        continue
                    self.start_thread(self.serve_one, kind, c, epoch, serve)
            except (tipcshm.NodeNotRunning, ConnectionError) as exc:
                self.count(f"{kind}_listener_lost")
                self.noticed(epoch, exc, f"{kind} accept")
            except TimeoutError:
                if not self.stale(epoch, f"{kind} bind"):
                    self.stall(f"{kind} bind timed out after {IO_TIMEOUT}s")
            finally:
                with contextlib.suppress(OSError):
                    ls.close()

    def serve_one(
        self,
        kind: str,
        c: Any,
        epoch: int,
        serve: Callable[[Any], tuple[tuple[int, int], int, bool]],
    ) -> None:
        import tipcshm

        t0 = time.monotonic()
        key, peer = (0, 0), 0
        try:
            c.settimeout(IO_TIMEOUT)
            key, peer, _ = serve(c)
            # The client closes once it has our answer: ECONNRESET (or EOF) ends it.
            with contextlib.suppress(ConnectionError, tipcshm.NodeNotRunning, TimeoutError):
                self.tick(f"{kind} server waits for close")
                c.recv(16)
            self.end_conn(kind, "server", key, "completed", "", peer, t0)
        except (tipcshm.NodeNotRunning, ConnectionError) as exc:
            self.end_conn(kind, "server", key, "aborted", repr(exc), peer, t0)
            self.noticed(epoch, exc, f"{kind} server I/O")
        except TimeoutError as exc:
            stale = self.stale(epoch, f"{kind} server I/O")
            if not stale:
                self.count("timeouts")
                self.stall(f"{kind} server conn {key}: {exc}")
            self.end_conn(kind, "server", key, "aborted", "stale" if stale else "timeout", peer, t0)
        except ProtocolBroken:
            self.end_conn(kind, "server", key, "broken", "", peer, t0)
        finally:
            with contextlib.suppress(OSError):
                c.close()


class StreamData:
    """The bytes of a stream, a function of their offset (so the reader's pieces need not
    match the writer's writes): a random pattern of a prime length, repeated."""

    PERIOD = (1 << 20) + 7  # a prime longer than any write (1 MiB at most)

    def __init__(self, seed: int) -> None:
        pattern = random.Random(seed).randbytes(self.PERIOD)
        self.doubled = pattern + pattern[: 1 << 20]

    def at(self, offset: int, n: int) -> bytes:
        start = offset % self.PERIOD
        return self.doubled[start : start + n]


class ProtocolBroken(Exception):
    """A violation was reported on this connection; it cannot go on."""


def _digest(body: bytes) -> bytes:
    """16 bytes that a reply carries to prove which request it answers."""
    return struct.pack("<II8s", zlib.crc32(body), len(body), body[:8])


# ======================================================================================
# orchestrator side
# ======================================================================================
@dataclass
class Child:
    wid: int
    role: str
    proc: subprocess.Popen[bytes]
    errfile: str
    started: float
    buf: bytes = b""
    stats: dict[str, int] = field(default_factory=dict)
    first_gauges: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)
    killed: bool = False
    stopping: bool = False
    ended: float = 0.0


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    restarts: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.node: str = args.node or f"soak{os.getpid()}-{secrets.token_hex(2)}"
        self.py = sys.executable
        self.tmp = tempfile.mkdtemp(prefix="tipcshm-soak-")
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, Child] = {}  # by pid
        self.gone: list[Child] = []
        self.next_wid = 0
        self.epoch = 0
        self.supervisor = 0
        self.owned = False  # a node of that name that we did not start is not ours to stop
        self.known_node_pids: set[int] = set()
        self.report = Report()
        self.restart_windows: list[tuple[float, float]] = []
        self.stops: list[tuple[float, float]] = []  # (supervisor killed, tipcshm stop done)
        self.exits: dict[int, float] = {}  # pid -> when it ended (any way)
        self.rdm_sent: dict[tuple[int, int], dict[str, Any]] = {}
        self.rdm_recv: collections.Counter[tuple[int, int]] = collections.Counter()
        self.conns: list[dict[str, Any]] = []
        self.rdm_server_deaths: list[float] = []
        self.noticed: list[tuple[float, str]] = []  # (seconds after a supervisor kill, how)
        self.nametable_check: tuple[float, int] | None = None

    def log(self, text: str) -> None:
        if not self.args.quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- the node ----------------------------------------------------------------------
    def cli(self, *words: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.py, "-m", "tipcshm.cli", *words, "--name", self.node],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start_node(self) -> None:
        out = self.cli("start")
        if out.returncode != 0:
            raise SystemExit(f"tipcshm start failed: {out.stderr.strip()}")
        m = re.search(r"supervisor pid (\d+)", out.stdout)
        if m is None:
            raise SystemExit(f"tipcshm start printed no supervisor pid: {out.stdout!r}")
        self.supervisor = int(m.group(1))
        self.known_node_pids.add(self.supervisor)
        self.owned = True

    def stop_node(self, why: str) -> None:
        try:
            out = self.cli("stop")
        except subprocess.TimeoutExpired:
            self.report.leaks.append(f"tipcshm stop ({why}) did not return within 60s")
            return
        if out.returncode != 0:
            self.report.leaks.append(f"tipcshm stop ({why}) exited {out.returncode}: {out.stderr}")

    def nametable_worker(self) -> int | None:
        import psutil

        try:
            for p in psutil.Process(self.supervisor).children():
                if "tipcshm.workers.nametable" in " ".join(p.cmdline()):
                    return int(p.pid)
        except psutil.Error:
            pass
        return None

    def shm_entries(self) -> list[str]:
        return sorted(
            n
            for n in os.listdir("/dev/shm")
            if n == f"tipcshm.{self.node}" or n.startswith(f"tipcshm.{self.node}.")
        )

    def node_pids_alive(self) -> list[int]:
        import psutil

        alive = []
        for pid in sorted(self.known_node_pids):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE and self.node in " ".join(p.cmdline()):
                    alive.append(pid)
        return alive

    # -- workers -----------------------------------------------------------------------
    def spawn(self, role: str) -> None:
        self.next_wid += 1
        wid = self.next_wid
        errfile = os.path.join(self.tmp, f"w{wid}-{role}.err")
        with open(errfile, "wb") as err:
            proc = subprocess.Popen(
                [
                    self.py,
                    os.path.abspath(__file__),
                    "--worker",
                    role,
                    "--id",
                    str(wid),
                    "--node",
                    self.node,
                    "--seed",
                    str(self.rng.getrandbits(32)),
                    "--watchdog",
                    str(self.args.watchdog),
                    "--inject",
                    str(self.args.inject),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                close_fds=True,
            )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        child = Child(wid, role, proc, errfile, time.monotonic())
        self.children[proc.pid] = child
        self.sel.register(proc.stdout, selectors.EVENT_READ, child)
        self.tell(child, f"epoch {self.epoch}")

    def tell(self, child: Child, line: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            assert child.proc.stdin is not None
            child.proc.stdin.write(line.encode() + b"\n")
            child.proc.stdin.flush()

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            child: Child = key.data
            self.read_from(child)

    def read_from(self, child: Child) -> None:
        assert child.proc.stdout is not None
        try:
            data = os.read(child.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(child.proc.stdout)
            child.proc.stdout.close()
            return
        child.buf += data
        *lines, child.buf = child.buf.split(b"\n")
        for line in lines:
            try:
                self.handle(child, json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                self.report.violations.append(
                    f"worker {child.wid}: unreadable report {line!r}: {exc}"
                )

    def handle(self, child: Child, ev: dict[str, Any]) -> None:
        kind = ev["t"]
        who = f"w{child.wid} {child.role} pid {child.proc.pid}"
        if kind == "stats":
            child.stats = ev["stats"]
            child.gauges = ev["gauges"]
            if not child.first_gauges:
                child.first_gauges = ev["gauges"]
        elif kind == "violation":
            self.report.violations.append(f"{who}: {ev['what']}")
            self.log(f"VIOLATION {who}: {ev['what']}")
        elif kind == "stall":
            self.report.stalls.append(f"{who}: {ev['what']}")
            self.log(f"stall {who}: {ev['what']}")
        elif kind == "note":
            self.report.notes.append(f"{who}: {ev['what']}")
        elif kind == "noticed":
            self.noticed.append((ev["delay"], f"{ev['doing']}: {ev['exc']}"))
        elif kind == "crash":
            pass  # the exit status tells; stderr holds the traceback
        elif kind == "rdm_sent":
            self.rdm_sent[(ev["sid"], ev["cid"])] = ev
        elif kind == "rdm_recv":
            for sid, cid, n in ev["streams"]:
                self.rdm_recv[(sid, cid)] += n
        elif kind == "conn":
            ev["pid"] = child.proc.pid
            self.conns.append(ev)

    def reap(self) -> None:
        for pid, child in list(self.children.items()):
            rc = child.proc.poll()
            if rc is None:
                continue
            if child.proc.stdout is not None and not child.proc.stdout.closed:
                while not child.proc.stdout.closed:
                    self.read_from(child)
            del self.children[pid]
            child.ended = time.monotonic()
            self.exits[pid] = child.ended
            if child.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    child.proc.stdin.close()
            self.gone.append(child)
            if child.role == "rdm-server" and not (rc == 0 and child.stopping):
                self.rdm_server_deaths.append(child.ended)
            if rc == -signal.SIGKILL and child.killed:
                self.scan_stderr(child)
            elif rc == EXIT_WATCHDOG:
                self.report.stalls.append(
                    f"w{child.wid} {child.role} pid {pid}: watchdog exit; stack:\n"
                    + _tail(child.errfile, 40)
                )
            elif rc != 0 or not child.stopping:
                self.report.crashes.append(
                    f"w{child.wid} {child.role} pid {pid} exited {rc}:\n" + _tail(child.errfile, 30)
                )
                self.log(f"worker w{child.wid} {child.role} exited {rc}")
            elif rc == 0:
                self.scan_stderr(child)
            if not child.stopping:
                self.spawn(child.role)

    def scan_stderr(self, child: Child) -> None:
        """What the library logged or printed in a worker that ended normally or was killed
        (warnings, an exception ignored in a finaliser): notes for the report."""
        with contextlib.suppress(OSError), open(child.errfile, errors="replace") as f:
            for line in f:
                if re.search(r"warning|error|exception|traceback", line, re.I):
                    self.report.notes.append(f"w{child.wid} {child.role} stderr: {line.strip()}")

    # -- chaos -------------------------------------------------------------------------
    def chance(self, dt: float, every: float) -> bool:
        return every > 0 and self.rng.random() < dt / every

    def kill_app(self) -> None:
        live = [c for c in self.children.values() if not c.stopping and not c.killed]
        if not live:
            return
        victim = self.rng.choice(sorted(live, key=lambda c: c.wid))
        victim.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.proc.pid, signal.SIGKILL)
        self.report.kills[f"app:{victim.role}"] += 1
        self.log(f"kill -9 w{victim.wid} {victim.role} (pid {victim.proc.pid})")

    def kill_nametable(self) -> None:
        pid = self.nametable_worker()
        if pid is None:
            self.report.notes.append("no name-table worker found under the supervisor to kill")
            return
        self.known_node_pids.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.report.kills["nametable"] += 1
        self.nametable_check = (time.monotonic() + 5.0, pid)
        self.log(f"kill -9 name-table worker (pid {pid})")

    def check_nametable_back(self) -> None:
        if self.nametable_check is None or time.monotonic() < self.nametable_check[0]:
            return
        old = self.nametable_check[1]
        self.nametable_check = None
        new = self.nametable_worker()
        if new is None or new == old:
            self.report.stalls.append(
                f"the supervisor did not restart the name-table worker within 5s (old pid {old})"
            )

    def kill_supervisor(self) -> None:
        import psutil

        t_kill = time.monotonic()
        worker = self.nametable_worker()
        if worker is not None:
            self.known_node_pids.add(worker)
        self.log(f"kill -9 supervisor (pid {self.supervisor}), then tipcshm stop and start")
        # Told first, so that a prompt NodeNotRunning is not taken for the old epoch's.
        self.epoch += 1
        for child in self.children.values():
            self.tell(child, f"epoch {self.epoch}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.supervisor, signal.SIGKILL)
        self.report.kills["supervisor"] += 1
        with contextlib.suppress(psutil.Error):
            psutil.Process(self.supervisor).wait(10)
        self.pump_for(self.rng.uniform(0.0, 1.0))
        self.stop_node("after supervisor kill")
        self.stops.append((t_kill, time.monotonic()))
        left = self.shm_entries()
        if left:
            self.report.leaks.append(f"tipcshm stop after a supervisor kill left {left}")
        if worker is not None and psutil.pid_exists(worker):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(worker)
                if p.status() != psutil.STATUS_ZOMBIE:
                    self.report.leaks.append(
                        f"name-table worker {worker} survived its supervisor's kill -9 and "
                        "tipcshm stop"
                    )
                    os.kill(worker, signal.SIGKILL)  # it is the node's: ours to end
        self.pump_for(self.rng.uniform(0.0, 0.5))
        self.start_node()
        self.report.restarts += 1
        self.restart_windows.append((t_kill, time.monotonic()))

    def pump_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.pump(min(left, 0.1))

    # -- the run -------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        fds_before = _open_fds()
        self.log(f"node {self.node}, seed {a.seed}, {a.minutes} min")
        try:
            self.start_node()
            roles = (
                ["rdm-server"] * a.rdm_servers
                + ["rdm-sender"] * a.rdm_senders
                + ["seq-server"] * a.seq_servers
                + ["seq-client"] * a.seq_clients
                + ["stream-server"] * a.stream_servers
                + ["stream-client"] * a.stream_clients
            )
            for role in roles:
                self.spawn(role)
            t_end = time.monotonic() + a.minutes * 60
            warmup = time.monotonic() + min(3.0, a.minutes * 60 / 5)
            last, last_status = time.monotonic(), time.monotonic()
            while time.monotonic() < t_end:
                self.pump(0.1)
                self.reap()
                now = time.monotonic()
                dt, last = now - last, now
                self.check_nametable_back()
                if now > warmup:
                    if self.chance(dt, a.app_kill_every):
                        self.kill_app()
                    if self.chance(dt, a.nametable_kill_every):
                        self.kill_nametable()
                    if self.chance(dt, a.supervisor_kill_every) and now < t_end - 5:
                        self.kill_supervisor()
                if now - last_status > 10:
                    last_status = now
                    self.log(self.status_line())
            self.wind_down()
        finally:
            self.cleanup()
        self.check_leaks(fds_before)
        self.check_accounts()
        return self.summary()

    def stop_children(self, roles: tuple[str, ...], timeout: float) -> None:
        group = [c for c in self.children.values() if c.role in roles]
        for c in group:
            c.stopping = True
            self.tell(c, "stop")
        deadline = time.monotonic() + timeout
        while any(c.proc.poll() is None for c in group) and time.monotonic() < deadline:
            self.pump(0.1)
        for c in group:
            if c.proc.poll() is None:
                self.report.stalls.append(
                    f"w{c.wid} {c.role} pid {c.proc.pid} did not stop within {timeout:.0f}s; "
                    "killed:\n" + _tail(c.errfile, 20)
                )
                c.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.proc.pid, signal.SIGKILL)
                c.proc.wait(10)
        self.reap()

    def wind_down(self) -> None:
        self.log("stopping: clients first, then servers")
        self.stop_children(CLIENT_ROLES, 30.0)
        self.stop_children(SERVER_ROLES, 30.0)

    def cleanup(self) -> None:
        """Whatever happened: no worker and no node survives the soak."""
        for c in list(self.children.values()):
            c.stopping = c.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.proc.pid, signal.SIGKILL)
            c.proc.wait(10)
        self.reap()
        if self.owned:
            self.stop_node("at the end")
        self.sel.close()
        for c in self.gone:
            for stream in (c.proc.stdin, c.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.owned:
            self.scan_log()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def scan_log(self) -> None:
        from tipcshm.cli.main import log_path

        path = log_path(self.node)
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return
        for block in re.findall(r"Traceback.*?(?=\n\S|\Z)(?:\n\S[^\n]*)?", text, re.S):
            self.report.notes.append("node log traceback:\n" + block[-1500:])
        for line in text.splitlines():
            if " WARNING " in line.upper() or "ERROR" in line:
                self.report.notes.append("node log: " + line)
        os.unlink(path)  # the soak's node name is used once; the log is read
        if os.path.exists(path):
            self.report.leaks.append(f"node log {path} left behind")

    def check_leaks(self, fds_before: dict[int, str]) -> None:
        import psutil

        left = self.shm_entries()
        if left:
            self.report.leaks.append(f"/dev/shm entries left: {left}")
        kids = psutil.Process().children(recursive=True)
        if kids:
            self.report.leaks.append(f"child processes left: {[(k.pid, k.name()) for k in kids]}")
        alive = self.node_pids_alive()
        if alive:
            self.report.leaks.append(f"node processes left running: {alive}")
        for c in [*self.gone, *self.children.values()]:
            grew = {
                k: (c.first_gauges.get(k, 0), v)
                for k, v in c.gauges.items()
                if k in ("fds", "shm_deleted") and v - c.first_gauges.get(k, 0) > WORKER_GROWTH
            }
            if grew:
                conns = sum(v for k, v in c.stats.items() if k.endswith("_completed"))
                self.report.leaks.append(
                    f"w{c.wid} {c.role} grew "
                    + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in grew.items())
                    + f" over {conns} completed connections, {self.report.restarts} restarts"
                )
        fds_after = _open_fds()
        extra = {fd: t for fd, t in fds_after.items() if fds_before.get(fd) != t}
        if extra:
            self.report.leaks.append(f"file descriptors left open: {extra}")

    def explained(self, t0: float, t1: float, peer: int, peer_roles: tuple[str, ...]) -> bool:
        """Did something the soak did end this connection (a restart, the peer's end)?"""
        if any(k <= t1 + 1 and s >= t0 - 1 for k, s in self.restart_windows):
            return True
        if peer and peer in self.exits and self.exits[peer] <= t1 + 2:
            return True
        if not peer:  # died before it told us who it was: any end of that role will do
            return any(c.role in peer_roles and t0 - 1 <= c.ended <= t1 + 2 for c in self.gone)
        return False

    def check_accounts(self) -> None:
        """Cross-checks that need both ends: RDM loss and duplication, unexplained aborts."""
        self.rdm_unchecked = 0
        for key, ev in self.rdm_sent.items():
            got, n = self.rdm_recv.get(key, 0), ev["n"]
            slack = 0 if ev["outcome"] == "closed" else 1  # the send that raised may have gone
            if got > n + slack:
                self.report.violations.append(f"RDM {key}: {n} sent, {got} received (duplicates)")
            if got < n and ev["outcome"] == "closed":
                t0, t1 = ev["t0"], ev["t1"]
                if any(t0 - 1 <= d <= t1 + 2 for d in self.rdm_server_deaths) or any(
                    k <= t1 + 2 and s >= t0 - 1 for k, s in self.restart_windows
                ):
                    self.rdm_unchecked += 1
                    continue
                self.report.violations.append(
                    f"RDM {key}: {n} sent, {got} received, and no receiver died (loss)"
                )
        for _key in self.rdm_recv.keys() - self.rdm_sent.keys():
            self.rdm_unchecked += 1  # its sender was killed before it could say how many
        self.check_survivors()
        peers = {"seq": ("seq-server", "seq-client"), "stream": ("stream-server", "stream-client")}
        for ev in self.conns:
            if ev["outcome"] != "aborted" or ev["why"] in ("stale", "timeout"):
                continue
            roles = peers[ev["kind"]]
            peer_roles = (roles[0],) if ev["side"] == "client" else (roles[1],)
            if not self.explained(ev["t0"], ev["t1"], ev["peer"], peer_roles):
                self.report.violations.append(
                    f"{ev['kind']} {ev['side']} w{ev['wid']} conn {ev['key']}: aborted "
                    f"({ev['why']}) with no kill or restart to explain it"
                )

    def check_survivors(self) -> None:
        """Traffic that went on through a node after its supervisor was killed and `tipcshm
        stop` had removed it: the two processes still share the unlinked lanes, so nothing
        fails, but the node they use is gone (its successor cannot see them)."""
        spans = [
            (ev["t0"], ev["t1"], f"{ev['kind']} connection {ev['key']}")
            for ev in self.conns
            if ev["outcome"] == "completed" and ev["side"] == "client"
        ]
        spans += [
            (ev["t0"], ev["t1"], f"RDM stream {k}")
            for k, ev in self.rdm_sent.items()
            if ev["outcome"] == "closed"
        ]
        for t0, t1, what in spans:
            for killed, stopped in self.stops:
                if t0 < killed and t1 > stopped + 0.5:
                    self.report.survivors.append(
                        f"{what} completed normally {t1 - stopped:.1f}s after its node was "
                        "killed and stopped (no NodeNotRunning/ConnectionError)"
                    )
                    break

    def totals(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for c in [*self.gone, *self.children.values()]:
            total.update(c.stats)
        return total

    def notice_line(self) -> str:
        if not self.noticed:
            return "node deaths noticed by applications: none"
        delays = sorted(d for d, _ in self.noticed)
        how = collections.Counter(h for _, h in self.noticed)
        return (
            f"node deaths noticed by applications: {len(delays)} times, "
            f"{delays[0] * 1000:.0f} ms / {delays[len(delays) // 2] * 1000:.0f} ms / "
            f"{delays[-1] * 1000:.0f} ms (min/median/max after the kill), as "
            + ", ".join(f"{h} x{n}" for h, n in how.most_common())
        )

    def resource_line(self) -> str:
        """The worker whose holdings grew most (fds, shm mappings) and the most any held."""
        workers = [c for c in [*self.gone, *self.children.values()] if c.gauges]
        if not workers:
            return "worker resources: no reports"

        def grow(c: Child, k: str) -> int:
            return c.gauges.get(k, 0) - c.first_gauges.get(k, 0)

        parts = []
        for k in ("fds", "shm", "shm_deleted", "threads"):
            top = max(workers, key=functools.partial(grow, k=k))
            most = max(c.gauges.get(k, 0) for c in workers)
            parts.append(
                f"{k} max {most}, most growth {grow(top, k):+d} (w{top.wid} {top.role}, "
                f"{top.first_gauges.get(k, 0)} -> {top.gauges.get(k, 0)})"
            )
        return "worker resources: " + "; ".join(parts)

    def status_line(self) -> str:
        t = self.totals()
        return (
            f"rdm {t['rdm_sent']}/{t['rdm_recv']} seq {t['seq_replies']} "
            f"stream {t['stream_bytes_recv'] >> 20} MiB, conns "
            f"{t['seq_client_completed'] + t['stream_client_completed']} ok "
            f"{t['seq_client_aborted'] + t['stream_client_aborted']} aborted, kills "
            f"{sum(self.report.kills.values())}, restarts {self.report.restarts}, "
            f"violations {len(self.report.violations)}, stalls {len(self.report.stalls)}"
        )

    def summary(self) -> int:
        t, r = self.totals(), self.report
        msgs = t["rdm_sent"] + t["seq_requests"] + t["seq_replies"] + t["stream_writes"]
        nbytes = t["rdm_bytes_sent"] + t["seq_bytes_sent"] + t["stream_bytes_sent"]
        lines = [
            "",
            f"== soak summary: node {self.node}, seed {self.args.seed}, {self.args.minutes} min ==",
            f"messages sent: {msgs} (RDM {t['rdm_sent']} sent / {t['rdm_recv']} received; "
            f"SEQPACKET {t['seq_requests']} requests / {t['seq_replies']} replies; "
            f"STREAM {t['stream_writes']} writes)",
            f"bytes sent: {nbytes} (STREAM {t['stream_bytes_sent']} sent / "
            f"{t['stream_bytes_recv']} received; a killed worker's counts stop at its last "
            f"report, up to {STATS_EVERY}s before the kill)",
            f"RDM streams: {len(self.rdm_sent)} reported, {self.rdm_unchecked} not checkable "
            "for loss (a receiver or the node died, or the sender was killed)",
        ]
        for kind in ("seq", "stream"):
            lines.append(
                f"{kind} connections (client side): {t[f'{kind}_client_completed']} completed, "
                f"{t[f'{kind}_client_aborted']} aborted, {t[f'{kind}_client_broken']} broken; "
                f"server side {t[f'{kind}_server_completed']} completed, "
                f"{t[f'{kind}_server_aborted']} aborted; refused/unreachable connects "
                f"{t[f'{kind}_refused'] + t[f'{kind}_unreachable']}; accept() raised "
                f"{t[f'{kind}_accept_failed']}"
            )
        kills = ", ".join(f"{k} {v}" for k, v in sorted(r.kills.items())) or "none"
        lines.append(f"kills: {kills}; supervisor restarts: {r.restarts}")
        lines.append(
            f"waits for the node: {t['waits_for_node']}; socket() errors: {t['socket_errors']}; "
            f"timeouts: {t['timeouts']}; stale sockets after restart: {t['stale_after_restart']}; "
            f"faults injected (--inject): {t['injected']}"
        )
        lines.append(self.notice_line())
        lines.append(self.resource_line())
        for title, items in (
            ("violations", r.violations),
            ("stalls (hangs, timeouts with no cause)", r.stalls),
            ("traffic that outlived its node", r.survivors),
            ("worker crashes", r.crashes),
            ("leaks", r.leaks),
            ("notes", r.notes),
        ):
            lines.append(f"{title}: {len(items)}")
            for item in _dedup(items)[: self.args.show]:
                lines.append("  - " + item.replace("\n", "\n    "))
        print("\n".join(lines), flush=True)
        failed = bool(r.violations or r.leaks or r.crashes)
        if (r.stalls or r.survivors) and not self.args.tolerate_stalls:
            failed = True
        print("RESULT:", "FAIL" if failed else "PASS", flush=True)
        return 1 if failed else 0


def _gauges() -> dict[str, int]:
    """What a worker holds: descriptors, threads, and node segments it still maps (those of
    a stopped node show as deleted): growth across restarts is a leak in the library."""
    fds = len(os.listdir("/proc/self/fd"))
    maps: set[str] = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if "/dev/shm/tipcshm." in line:
                maps.add(line.split(None, 5)[-1].strip())
    deleted = sum(1 for m in maps if m.endswith("(deleted)"))
    return {
        "fds": fds,
        "threads": threading.active_count(),
        "shm": len(maps),
        "shm_deleted": deleted,
    }


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    # the listing's own descriptor is open while listing, and differs between calls
    return {fd: t for fd, t in fds.items() if not t.startswith("/proc/")}


def _tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip() or "(empty stderr)"
    except OSError:
        return "(no stderr)"


def _dedup(items: list[str]) -> list[str]:
    """Identical findings once, with a count (a hang hits every worker alike)."""
    seen: collections.Counter[str] = collections.Counter()
    key = re.compile(r"\d+")
    firsts: dict[str, str] = {}
    for item in items:
        k = key.sub("#", item)
        seen[k] += 1
        firsts.setdefault(k, item)
    return [f"{firsts[k]}" + (f"  [x{n}]" if n > 1 else "") for k, n in seen.items()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    p.add_argument("--node", default=None, help="node name (default: a unique one)")
    p.add_argument(
        "--app-kill-every",
        type=float,
        default=4.0,
        metavar="S",
        help="mean seconds between kill -9 of application processes (0: never)",
    )
    p.add_argument("--nametable-kill-every", type=float, default=15.0, metavar="S")
    p.add_argument("--supervisor-kill-every", type=float, default=40.0, metavar="S")
    p.add_argument("--rdm-servers", type=int, default=2)
    p.add_argument("--rdm-senders", type=int, default=2)
    p.add_argument("--seq-servers", type=int, default=1)
    p.add_argument("--seq-clients", type=int, default=2)
    p.add_argument("--stream-servers", type=int, default=1)
    p.add_argument("--stream-clients", type=int, default=1)
    p.add_argument(
        "--watchdog",
        type=float,
        default=30.0,
        metavar="S",
        help="a worker thread stuck this long dumps its stack and exits",
    )
    p.add_argument(
        "--tolerate-stalls",
        action="store_true",
        help="report hangs, timeouts and traffic that outlived its node, but pass",
    )
    p.add_argument(
        "--inject",
        type=float,
        default=0.0,
        metavar="P",
        help="check the checks: lose, duplicate or corrupt each message with probability P",
    )
    p.add_argument("--show", type=int, default=12, help="findings listed per category")
    p.add_argument("--quiet", action="store_true", help="only the summary")
    # worker mode (internal)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbits(32)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return Worker(args).run()
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
