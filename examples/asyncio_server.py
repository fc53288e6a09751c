"""An asyncio SEQPACKET echo server on {18891, 0}, written for Linux's AF_TIPC, with the
event loop's own socket calls (loop.sock_accept, sock_recv, sock_sendall, sock_connect).

It runs a few clients against itself and exits 0 when every echo came back.

    python asyncio_server.py [CLIENTS]
"""

import asyncio
import socket
import sys

SERVICE = (socket.TIPC_ADDR_NAME, 18891, 0, 0)


async def echo(loop, conn):
    with conn:
        while True:
            try:
                data = await loop.sock_recv(conn, 66000)
            except ConnectionResetError:
                return  # a TIPC peer's close() reads as a reset; its shutdown() as EOF
            if not data:
                return
            await loop.sock_sendall(conn, data)


async def serve(loop, listener):
    handlers = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = asyncio.create_task(echo(loop, conn))
            handlers.add(task)
            task.add_done_callback(handlers.discard)
    finally:
        for task in handlers:
            task.cancel()


async def client(loop, number):
    sock = socket.socket(socket.AF_TIPC, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    with sock:
        await asyncio.wait_for(loop.sock_connect(sock, SERVICE), 5)
        for i in range(5):
            message = f"client {number} message {i}".encode()
            await loop.sock_sendall(sock, message)
            answer = await asyncio.wait_for(loop.sock_recv(sock, 66000), 5)
            if answer != message:
                return f"client {number}: wrong echo {answer!r}"
    return f"client {number}: ok"


async def main(clients):
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_TIPC, socket.SOCK_SEQPACKET)
    listener.bind((socket.TIPC_ADDR_NAMESEQ, 18891, 0, 0))
    listener.listen(clients)
    listener.setblocking(False)
    server = asyncio.create_task(serve(loop, listener))
    try:
        results = await asyncio.gather(*(client(loop, n) for n in range(clients)))
    finally:
        server.cancel()
        try:
            await server
        except asyncio.CancelledError:
            pass
        listener.close()
    for line in results:
        print(line)
    return 0 if all(line.endswith(": ok") for line in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
