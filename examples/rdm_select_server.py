"""An RDM server with a classic select() loop, written for Linux's AF_TIPC.

It binds two services on two sockets: requests on {18888, 0..99}, where every datagram is
answered (upper-cased) to its sender, and control on {18889, 0}, where b"stop" ends the
loop. select() decides which socket to read, so a socket that stayed readable after being
drained would block the loop in recvfrom().

    python rdm_select_server.py          # with kernel TIPC (modprobe tipc)
    python -m tipcshm.run rdm_select_server.py   # the same file on tipcshm
"""

import select
import socket
import sys

REQUESTS = (socket.TIPC_ADDR_NAMESEQ, 18888, 0, 99)
CONTROL = (socket.TIPC_ADDR_NAMESEQ, 18889, 0, 0)


def main():
    requests = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    control = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    requests.bind(REQUESTS)
    control.bind(CONTROL)
    print("serving", flush=True)
    answered = 0
    running = True
    while running:
        readable, _, _ = select.select([requests, control], [], [], 30.0)
        if not readable:
            print("idle for 30 s, giving up", file=sys.stderr)
            return 1
        for sock in readable:
            data, sender = sock.recvfrom(65535)
            if sock is control:
                running = data != b"stop"
            else:
                sock.sendto(data.upper(), sender)
                answered += 1
    print(f"answered {answered} requests", flush=True)
    requests.close()
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
