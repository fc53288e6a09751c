"""Threaded SEQPACKET request/reply with timeouts, written for Linux's AF_TIPC.

A server thread accepts connections on {18890, 1} and serves each in a thread of its own:
b"time?" is answered, b"ignore me" is not. Several client threads connect by service
name, ask with a timeout on each socket, and one of them checks that an unanswered request
ends in socket.timeout after its timeout and not later.

    python seqpacket_reqrep.py [CLIENTS]
"""

import socket
import sys
import threading
import time

SERVICE = (socket.TIPC_ADDR_NAME, 18890, 1, 0)


def serve(listener, stop):
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except socket.timeout:  # noqa: UP041 - the spelling ported programs use
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def handle(conn):
    with conn:
        while True:
            try:
                request = conn.recv(1024)
            except OSError:
                return
            if not request:
                return
            if request == b"time?":
                conn.send(b"%d" % time.time_ns())


def client(number, results):
    with socket.socket(socket.AF_TIPC, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(5.0)
        sock.connect(SERVICE)
        for _ in range(3):
            sock.send(b"time?")
            if not sock.recv(1024).isdigit():
                results[number] = "bad answer"
                return
        sock.settimeout(0.5)
        sock.send(b"ignore me")
        started = time.monotonic()
        try:
            sock.recv(1024)
            results[number] = "an answer nobody sent"
        except socket.timeout:  # noqa: UP041 - the spelling ported programs use
            waited = time.monotonic() - started
            results[number] = "ok" if 0.4 < waited < 3.0 else f"timed out after {waited:.2f} s"


def main():
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    listener = socket.socket(socket.AF_TIPC, socket.SOCK_SEQPACKET)
    listener.bind((socket.TIPC_ADDR_NAMESEQ, 18890, 1, 1))
    listener.listen(clients)
    listener.settimeout(0.2)  # so the accept loop notices stop
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(listener, stop))
    server.start()
    results = {}
    threads = [threading.Thread(target=client, args=(n, results)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    server.join()
    listener.close()
    for n in range(clients):
        print(f"client {n}: {results.get(n, 'no result')}")
    return 0 if all(results.get(n) == "ok" for n in range(clients)) else 1


if __name__ == "__main__":
    sys.exit(main())
