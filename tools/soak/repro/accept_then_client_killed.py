"""A client killed after accept() but before it read the answer is never reported to the
server (found by the soak): the accepted socket's recv waits until its timeout (forever
without one) instead of raising ECONNRESET; only a send notices (EPIPE).

The supervisor aborts the peers of a dead process's connected sockets, but the client's
socket was still "connecting" (it had not taken the accept's answer), so it has no peer.
"""

import os
import signal
import subprocess
import sys
import time

import tipcshm
from tipcshm.testing import running_node

CHILD = """
import tipcshm, sys, time
c = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=sys.argv[1])
c.setblocking(False)
try:
    c.connect((tipcshm.TIPC_ADDR_NAME, 7001, 1, 0))
except BlockingIOError:
    pass
print("syn sent", flush=True)
time.sleep(60)
"""

with running_node() as node:
    ls = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_SEQPACKET, node=node)
    ls.bind((tipcshm.TIPC_ADDR_NAME, 7001, 1, 0))
    ls.listen(8)
    p = subprocess.Popen([sys.executable, "-c", CHILD, node], stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip())  # type: ignore[union-attr]
    ls.settimeout(5)
    b, addr = ls.accept()  # the client is alive but has not read the answer yet
    print("accepted", addr)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)  # the supervisor has reaped the client by now
    b.settimeout(3)
    t = time.monotonic()
    try:
        print("recv ->", b.recv(10))
    except Exception as exc:
        print(f"recv raised after {time.monotonic() - t:.2f}s: {exc!r}")
    try:
        b.send(b"x")
        print("send ok (to a dead peer)")
    except Exception as exc:
        print("send raised", repr(exc))
    b.close()
    ls.close()
    p.stdout.close()  # type: ignore[union-attr]
