"""A group member in its own process, driven line by line from a test (tests/test_group_local.py).

Run as ``python -m tests.group_agent NODE``. Each line on stdin is one JSON command; each
answer is one JSON line on stdout. Commands (``op`` plus arguments):

- ``join`` type, instance, flags (TIPC_GROUP_*), scope: a socket joins; answers its port
- ``bcast`` / ``mcast`` instance / ``acast`` instance / ``ucast`` node, port: send
  ``data`` (a string; ``count`` copies numbered ``data.0 .. data.N-1`` when given);
  ``nonblock``: stop at the first BlockingIOError and answer how many went
- ``recv`` count, timeout: receive ``count`` items (messages and member events) with
  recvmsg; answers them as [kind, data, node, port] (kind "msg", "join", "leave")
- ``leave``: TIPC_GROUP_LEAVE; ``close``: close the socket; ``exit``: end the process
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import tipcshm
from tipcshm.constants import (
    MSG_EOR,
    MSG_OOB,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
    TIPC_ADDR_NAMESEQ,
    TIPC_CLUSTER_SCOPE,
    TIPC_GROUP_JOIN,
    TIPC_GROUP_LEAVE,
)


def item(s: Any, timeout: float) -> list[Any]:
    s.settimeout(timeout)
    data, _anc, flags, addr = s.recvmsg(70000)
    kind = "msg"
    if flags & MSG_OOB:
        kind = "leave" if flags & MSG_EOR else "join"
    return [kind, data.decode(), addr[1], addr[2]]


def send(s: Any, cmd: dict[str, Any]) -> int:
    op = cmd["op"]
    datas = [cmd["data"]]
    if "count" in cmd:
        datas = [f"{cmd['data']}.{i}" for i in range(cmd["count"])]
    s.setblocking(not cmd.get("nonblock", False))
    sent = 0
    for d in datas:
        payload = d.encode()
        try:
            if op == "bcast":
                s.send(payload)
            elif op == "mcast":
                inst = cmd["instance"]
                s.sendto(payload, (TIPC_ADDR_NAMESEQ, cmd["type"], inst, inst))
            elif op == "acast":
                s.sendto(payload, (TIPC_ADDR_NAME, cmd["type"], cmd["instance"], 0))
            else:
                s.sendto(payload, (TIPC_ADDR_ID, cmd["node"], cmd["port"], 0))
        except BlockingIOError:
            break
        sent += 1
    s.setblocking(True)
    return sent


def main() -> None:
    node = sys.argv[1]
    s: Any = None
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        answer: Any = None
        try:
            if op == "join":
                s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=node)
                req = struct.pack(
                    "4I",
                    cmd["type"],
                    cmd["instance"],
                    cmd.get("scope", TIPC_CLUSTER_SCOPE),
                    cmd.get("flags", 0),
                )
                s.setsockopt(SOL_TIPC, TIPC_GROUP_JOIN, req)
                answer = [s.getsockname()[1], s.getsockname()[2]]
            elif op in ("bcast", "mcast", "acast", "ucast"):
                answer = send(s, cmd)
            elif op == "recv":
                answer = [item(s, cmd.get("timeout", 10.0)) for _ in range(cmd["count"])]
            elif op == "leave":
                s.setsockopt(SOL_TIPC, TIPC_GROUP_LEAVE, None, 0)
                answer = 0
            elif op == "close":
                s.close()
                answer = 0
            elif op == "exit":
                out.write(json.dumps({"ok": 0}) + "\n")
                out.flush()
                return
            else:
                raise ValueError(f"unknown op {op}")
            out.write(json.dumps({"ok": answer}) + "\n")
        except Exception as exc:  # the test sees it as a failed command
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
