"""Client of rdm_select_server.py: sends requests to instances of {18888, 0..99}, waits for
each answer with a timeout, then tells the server to stop.

    python rdm_client.py [COUNT]
"""

import socket
import sys


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    sock = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    sock.settimeout(5.0)
    for i in range(count):
        request = f"request {i}".encode()
        sock.sendto(request, (socket.TIPC_ADDR_NAME, 18888, i % 100, 0))
        try:
            answer, server = sock.recvfrom(65535)
        except socket.timeout:  # noqa: UP041 - the spelling ported programs use
            print(f"no answer to request {i}", file=sys.stderr)
            return 1
        if answer != request.upper():
            print(f"wrong answer to request {i}: {answer!r}", file=sys.stderr)
            return 1
    print(f"{count} answers", flush=True)
    sock.sendto(b"stop", (socket.TIPC_ADDR_NAME, 18889, 0, 0))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
