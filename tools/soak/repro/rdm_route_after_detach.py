"""RDM sendto raises ValueError (released memoryview) after a receiver dies (found by the soak).

A sender caches a route per destination address. When the receiver behind two cached
addresses is killed, the first send finds its inbox closed and the client forgets (and
detaches) the lane; the second address's route still holds that lane, and while the
name-table replica has not moved yet (here: the worker is held with SIGSTOP, in the soak
it was being restarted or busy) its fast path writes into the released mapping.
"""

import os
import re
import signal
import subprocess
import sys
import time

import psutil

import tipcshm
from tipcshm.testing import stop_node, unique_node_name

CHILD = """
import tipcshm, sys, time
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=sys.argv[1])
s.bind((tipcshm.TIPC_ADDR_NAMESEQ, 7002, 0, 99))
print("bound", flush=True)
time.sleep(60)
"""

node = unique_node_name("r")
out = subprocess.run(
    [sys.executable, "-m", "tipcshm.cli", "start", "--name", node],
    capture_output=True,
    text=True,
    check=True,
).stdout
sup = int(re.search(r"supervisor pid (\d+)", out).group(1))  # type: ignore[union-attr]
try:
    p = subprocess.Popen([sys.executable, "-c", CHILD, node], stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip())  # type: ignore[union-attr]
    s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
    for inst in (1, 2):
        for _ in range(2):  # the second send takes (and so proves) the cached route
            s.sendto(b"hi", (tipcshm.TIPC_ADDR_NAME, 7002, inst, 0))
    worker = next(c for c in psutil.Process(sup).children() if "nametable" in " ".join(c.cmdline()))
    os.kill(worker.pid, signal.SIGSTOP)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.3)  # the supervisor has closed the dead receiver's inbox
    for inst in (1, 2):
        try:
            s.sendto(b"hi", (tipcshm.TIPC_ADDR_NAME, 7002, inst, 0))
            print(f"sendto instance {inst}: ok (dropped: dest-droppable)")
        except Exception as exc:
            print(f"sendto instance {inst}: {exc!r}")
    os.kill(worker.pid, signal.SIGCONT)
    s.close()
    p.stdout.close()  # type: ignore[union-attr]
finally:
    stop_node(node)
