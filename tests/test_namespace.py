"""``import tipcshm as socket``: one module for TIPC and every other family.

Addresses are read as CPython reads them, errors are the kernel's errnos, and no internal
exception is chained into what the program sees.
"""

from __future__ import annotations

import errno
import io
import re
import select
import socket as stdlib
import struct
import threading

import pytest

import tipcshm as socket
from tipcshm.testing import start_node, stop_node

pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file

TIPC = socket.AF_TIPC
SERVICE = 7300


class Index:
    """An integer-like object, as numpy scalars are: CPython takes it via __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_a_program_mixing_families_ports_by_the_import(node: str) -> None:
    """A TIPC request forwarded to a worker over a UNIX pair, answered through TCP."""
    server = socket.socket(TIPC, socket.SOCK_RDM, node=node)
    client = socket.socket(TIPC, socket.SOCK_RDM, node=node)
    front, back = socket.socketpair()  # AF_UNIX: the stdlib's
    tcp_listener = socket.socket()  # AF_INET, SOCK_STREAM: the stdlib's defaults
    tcp_client = socket.create_connection
    try:
        assert type(front) is stdlib.socket and type(tcp_listener) is stdlib.socket
        assert front.family == socket.AF_UNIX and tcp_listener.family == socket.AF_INET
        assert tcp_listener.type == socket.SOCK_STREAM
        for s in (server, client, front, tcp_listener):
            assert isinstance(s, socket.socket) and isinstance(s, socket.SocketType)
        tcp_listener.bind(("127.0.0.1", 0))
        tcp_listener.listen(1)
        server.bind((socket.TIPC_ADDR_NAME, SERVICE, 1, 0))
        client.sendto(b"ping", (socket.TIPC_ADDR_NAME, SERVICE, 1, 0))
        readable, _, _ = select.select([server, front], [], [], 10)
        assert readable == [server]
        data, sender = server.recvfrom(100)
        front.sendall(data)  # to the worker, over AF_UNIX
        assert back.recv(100) == b"ping"
        with tcp_client(tcp_listener.getsockname(), timeout=10) as out:
            conn, _ = tcp_listener.accept()
            with conn:
                out.sendall(b"pong")
                server.sendto(conn.recv(100), sender)
        assert client.recv(100) == b"pong"
    finally:
        for s in (server, client, front, back, tcp_listener):
            s.close()


def test_socket_takes_the_stdlib_signature_and_defaults(node: str) -> None:
    with socket.socket() as s:
        assert type(s) is stdlib.socket
        assert (s.family, s.type, s.proto) == (socket.AF_INET, socket.SOCK_STREAM, 0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        # fileno= for another family is the stdlib's
        with socket.socket(fileno=s.fileno()) as same:
            assert same.family == socket.AF_UNIX and same.type == socket.SOCK_DGRAM
            same.detach()
    with socket.socket(TIPC, node=node) as s:  # the stdlib's default type: SOCK_STREAM
        assert s.type is socket.SOCK_STREAM and s.family is socket.AF_TIPC
        assert repr(s.family) == "<AddressFamily.AF_TIPC: 30>"
    with socket.socket(TIPC, socket.SOCK_RDM | socket.SOCK_NONBLOCK, node=node) as s:
        assert s.type is socket.SOCK_RDM and s.gettimeout() == 0.0
        with pytest.raises(BlockingIOError):
            s.recv(10)
    with socket.socket(family=TIPC, type=socket.SOCK_DGRAM, proto=0, node=node) as s:
        assert s.type is socket.SOCK_DGRAM and s.proto == 0
    with pytest.raises(TypeError, match="node= .* AF_TIPC"):
        socket.socket(node=node)  # an AF_INET socket has no tipcshm node
    with pytest.raises(TypeError):
        socket.socket("AF_TIPC")  # the stdlib's TypeError


def test_setdefaulttimeout_governs_both_kinds(node: str) -> None:
    assert socket.getdefaulttimeout is stdlib.getdefaulttimeout
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.5)
    try:
        with socket.socket(TIPC, socket.SOCK_RDM, node=node) as t, socket.socket() as i:
            assert t.gettimeout() == 2.5 and i.gettimeout() == 2.5
    finally:
        socket.setdefaulttimeout(before)


def test_socket_types_and_protocols_as_the_kernel_refuses_them(node: str) -> None:
    cases = [
        ((TIPC, socket.SOCK_RAW), errno.EPROTOTYPE),  # tipc_sk_create
        ((TIPC, socket.SOCK_RDM, 1), errno.EPROTONOSUPPORT),
        ((TIPC, 11), errno.EINVAL),  # __sock_create: not a socket type at all
        ((TIPC, socket.SOCK_RDM | 0x100), errno.EINVAL),  # an unknown flag
    ]
    for args, code in cases:
        with pytest.raises(OSError) as info:
            socket.socket(*args, node=node)
        assert info.value.errno == code, args


def test_a_descriptor_cannot_become_a_tipc_socket(node: str) -> None:
    with socket.socket(TIPC, socket.SOCK_RDM, node=node) as s:
        fd = s.fileno()
        for make in (
            lambda: socket.socket(TIPC, socket.SOCK_RDM, 0, fd),
            lambda: socket.fromfd(fd, TIPC, socket.SOCK_RDM),
        ):
            with pytest.raises(io.UnsupportedOperation) as info:
                make()
            assert isinstance(info.value, OSError) and info.value.errno == errno.ENOTSOCK
            assert str(fd) in str(info.value)
    # A number this process's detach() gave is that socket again, with either call.
    c, d = socket.socketpair(TIPC, socket.SOCK_SEQPACKET, node=node)
    with d:
        number = c.detach()
        with socket.fromfd(number, TIPC, socket.SOCK_SEQPACKET) as handle:
            d.send(b"via fromfd")
            assert handle.recv(20) == b"via fromfd"
        with socket.socket(fileno=number) as again:
            assert again.type == socket.SOCK_SEQPACKET
            d.send(b"via fileno")
            assert again.recv(20) == b"via fileno"
    a, b = socket.socketpair()
    with a, b, socket.fromfd(a.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as dup:
        assert type(dup) is stdlib.socket  # the stdlib's for other families
        dup.sendall(b"x")
        assert b.recv(1) == b"x"


@pytest.mark.parametrize("kind", ["SOCK_RDM", "SOCK_DGRAM", "SOCK_SEQPACKET", "SOCK_STREAM"])
def test_socketpair_joins_two_tipc_sockets_back_to_back(node: str, kind: str) -> None:
    a, b = socket.socketpair(TIPC, getattr(socket, kind), node=node)
    with a, b:
        assert a.type == b.type == getattr(socket, kind)
        assert a.gettimeout() is None and b.gettimeout() is None
        a.send(b"ping")
        assert b.recv(10) == b"ping"
        b.send(b"pong")
        assert a.recv(10) == b"pong"
        if kind in ("SOCK_SEQPACKET", "SOCK_STREAM"):
            assert a.getpeername() == b.getsockname() and b.getpeername() == a.getsockname()


def test_subclasses_of_tipcshm_socket_are_tipc_sockets(node: str) -> None:
    class Tagged(socket.socket):
        def tag(self) -> str:
            return f"tagged {self.type!r}"

    for kind in (socket.SOCK_RDM, socket.SOCK_SEQPACKET):
        with Tagged(TIPC, kind, node=node) as s:
            assert isinstance(s, Tagged) and s.tag().startswith("tagged")
            assert isinstance(s, socket.Socket)
    with pytest.raises(TypeError, match="subclass the stdlib"):
        Tagged(socket.AF_INET, socket.SOCK_STREAM)

    class Named(socket.socket):
        """A subclass with its own constructor, as programs write them for the stdlib's."""

        def __init__(self, name: str, kind: int) -> None:
            super().__init__(TIPC, kind, node=node)
            self.name = name

    with Named("worker", socket.SOCK_DGRAM) as s:
        assert s.name == "worker" and isinstance(s, Named) and s.type == socket.SOCK_DGRAM
    with Named("nb", socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as s:
        assert s.type == socket.SOCK_STREAM and s.gettimeout() == 0.0
    listener = socket.socket(TIPC, socket.SOCK_SEQPACKET, node=node)
    with listener, Named("client", socket.SOCK_SEQPACKET) as client:
        listener.bind((socket.TIPC_ADDR_NAME, SERVICE, 5, 0))
        listener.listen()
        client.setblocking(False)
        assert client.connect_ex((socket.TIPC_ADDR_NAME, SERVICE, 5, 0)) == errno.EINPROGRESS
        conn, _ = listener.accept()
        with conn:
            client.setblocking(True)
            client.send(b"from a subclass")
            assert conn.recv(100) == b"from a subclass"
            assert client.name == "client"


def test_address_fields_are_masked_to_32_bits_as_cpython_does(node: str) -> None:
    srv = socket.socket(TIPC, socket.SOCK_RDM, node=node)
    cli = socket.socket(TIPC, socket.SOCK_RDM, node=node)
    with srv, cli:
        srv.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE, 0, ~0))  # every instance
        for instance, seen in [
            (-1, 0xFFFFFFFF),
            (1 << 32 | 7, 7),
            (Index(9), 9),
            (True, 1),
            (-(1 << 70) + 5, 5),
        ]:
            cli.sendto(b"x", (socket.TIPC_ADDR_NAME, SERVICE + (1 << 32), instance, 0))
            _, anc, _, _ = srv.recvmsg(10, 64)
            names = [d for level, kind, d in anc if kind == socket.TIPC_DESTNAME]
            assert names == [struct.pack("=III", SERVICE, seen, seen)], instance
        # an address type past 32 bits wraps too (4294967298 is 2, TIPC_ADDR_NAME)
        cli.sendto(b"y", ((1 << 32) + 2, SERVICE, 3, 0))
        assert srv.recv(10) == b"y"


def test_malformed_addresses_are_cpythons_type_errors(node: str) -> None:
    with socket.socket(TIPC, socket.SOCK_RDM, node=node) as s:
        cases = [
            ([2, SERVICE, 1, 0], "must be tuple, not list"),
            ((2, SERVICE, 1), re.escape("must be a tuple (addr_type, v1, v2, v3[, scope])")),
            ((2, SERVICE, 1, 0, 2, 9), "got 6 elements"),
            ((2, 1.5, 1, 0), "'float' object cannot be interpreted as an integer"),
            ((2, SERVICE, 1, None), "'NoneType' object"),
            ((2, SERVICE, 1, 0, "2"), "'str' object"),
            ((0, SERVICE, 1, 0), "Invalid address type 0"),
            ((4, SERVICE, 1, 0), "Invalid address type 4"),
            ((-1, SERVICE, 1, 0), "Invalid address type 4294967295"),
        ]
        for address, text in cases:
            for call in (
                lambda a=address: s.sendto(b"x", a),
                lambda a=address: s.bind(a),
                lambda a=address: s.connect(a),
            ):
                with pytest.raises(TypeError, match=text):
                    call()


def test_scopes_are_read_as_tipc_bind_reads_them(node: str) -> None:
    with socket.socket(TIPC, socket.SOCK_RDM, node=node) as s:
        for scope in (0, 1, 7, 2 + 256):  # all cluster scope (the byte that reaches it)
            s.bind((socket.TIPC_ADDR_NAME, SERVICE, 1, 0, scope))
            s.bind((socket.TIPC_ADDR_NAME, SERVICE, 1, 0, -2))  # unbinds it again
        s.bind((socket.TIPC_ADDR_NAME, SERVICE, 2, 0, 3 + 256))  # node scope
        assert s.statistics()["bindings"][0]["scope"] == socket.TIPC_NODE_SCOPE
        s.bind((socket.TIPC_ADDR_NAME, SERVICE, 2, 0, 0xFD))  # the signed char -3: unbind
        assert s.statistics()["bindings"] == []
        with pytest.raises(OSError) as info:  # nothing left to unbind: tipc_sk_withdraw
            s.bind((socket.TIPC_ADDR_NAME, SERVICE, 2, 0, -3))
        assert info.value.errno == errno.EINVAL


def test_errors_carry_the_kernels_errno(node: str) -> None:
    rdm = socket.socket(TIPC, socket.SOCK_RDM, node=node)
    seq = socket.socket(TIPC, socket.SOCK_SEQPACKET, node=node)
    inverted = (socket.TIPC_ADDR_NAMESEQ, SERVICE, 5, 1)
    with rdm, seq:
        cases = [
            (lambda: rdm.bind(inverted), errno.EINVAL),  # tipc_uaddr_valid
            (lambda: rdm.sendto(b"x", inverted), errno.EINVAL),
            (lambda: rdm.connect(inverted), errno.EINVAL),  # tipc_sockaddr_is_sane
            (lambda: rdm.sendto(b"x" * 66001, inverted), errno.EMSGSIZE),  # size first
            (lambda: rdm.bind((socket.TIPC_ADDR_NAME, 63, 1, 0)), errno.EACCES),
            (lambda: rdm.bind((socket.TIPC_ADDR_NAME, 63, 1, 0, -2)), errno.EACCES),
            (lambda: rdm.bind((socket.TIPC_ADDR_ID, 1, 2, 0)), errno.EAFNOSUPPORT),
            (lambda: rdm.sendto(b"x", (socket.TIPC_ADDR_NAME, SERVICE, 9, 0)), errno.EHOSTUNREACH),
            (lambda: rdm.send(b"x"), errno.EDESTADDRREQ),
            (lambda: rdm.listen(1), errno.EOPNOTSUPP),  # sock_no_listen
            (lambda: rdm.accept(), errno.EOPNOTSUPP),  # sock_no_accept
            (lambda: seq.connect((socket.TIPC_ADDR_NAME, SERVICE, 9, 0)), errno.EHOSTUNREACH),
            (lambda: seq.connect(inverted), errno.EINVAL),
            (lambda: seq.connect((socket.TIPC_ADDR_NAMESEQ, SERVICE, 1, 2)), errno.EINVAL),
            (lambda: seq.accept(), errno.EINVAL),  # not listening
        ]
        join = socket.TIPC_GROUP_JOIN
        for request, code in [  # tipc_sk_join's checks
            (struct.pack("=IIII", 63, 1, 2, 0), errno.EACCES),
            (struct.pack("=IIII", 4711, 1, 4, 0), errno.EINVAL),
            (b"short", errno.EINVAL),
        ]:
            with pytest.raises(OSError) as info:
                rdm.setsockopt(socket.SOL_TIPC, join, request)
            assert info.value.errno == code
        for backlog, error in [("1", TypeError), (1.0, TypeError), (1 << 40, OverflowError)]:
            with pytest.raises(error):
                seq.listen(backlog)
        for call, code in cases:
            with pytest.raises(socket.error) as info:
                call()
            assert info.value.errno == code, (info.value, code)
        assert seq.connect_ex((socket.TIPC_ADDR_NAME, SERVICE, 9, 0)) == errno.EHOSTUNREACH
    a, b = socket.socketpair(TIPC, socket.SOCK_SEQPACKET, node=node)
    with a, b:  # connected: the kernel ignores the address, but CPython still parses it
        assert a.sendto(b"x", (socket.TIPC_ADDR_NAME, SERVICE, 9, 0)) == 1
        with pytest.raises(TypeError, match="must be tuple"):
            a.sendto(b"x", [socket.TIPC_ADDR_NAME, SERVICE, 9, 0])
        assert b.recv(10) == b"x"


def _chains_nothing(exc: BaseException) -> bool:
    """What a traceback shows beside the error itself: nothing."""
    return exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_failures_do_not_chain_internal_exceptions(node_name: str) -> None:
    start_node(node_name)
    stopped = False
    try:
        rdm = socket.socket(TIPC, socket.SOCK_RDM, node=node_name)
        seq = socket.socket(TIPC, socket.SOCK_SEQPACKET, node=node_name)
        waiting = socket.socket(TIPC, socket.SOCK_RDM, node=node_name)
        closed = socket.socket(TIPC, socket.SOCK_RDM, node=node_name)
        closed.close()
        rdm.settimeout(0.05)
        failures = [
            lambda: rdm.sendto(b"x", [2, SERVICE, 1, 0]),  # unhashable: missed the route cache
            lambda: rdm.sendto(b"x", (2, SERVICE, 1, 0)),  # in the cache's miss path
            lambda: rdm.sendto(b"x", (1, SERVICE, 5, 1)),
            lambda: rdm.sendto(b"x", (9, SERVICE, 1, 0)),
            lambda: rdm.sendto(b"x", (2, 1.0, 1, 0)),
            lambda: rdm.recv(10),  # timeout
            lambda: rdm.recv(0),
            lambda: rdm.bind((2, 1, 1, 0)),
            lambda: rdm.setsockopt(socket.SOL_TIPC, socket.TIPC_IMPORTANCE, 9),
            lambda: closed.recv(10),
            lambda: closed.sendto(b"x", (2, SERVICE, 1, 0)),
            lambda: seq.connect((2, SERVICE, 1, 0)),
            lambda: seq.send(b"x"),
            lambda: socket.socket(TIPC, socket.SOCK_RDM, fileno=0),
            lambda: socket.socket(TIPC, 3, node=node_name),
        ]
        for fail in failures:
            with pytest.raises((OSError, TypeError)) as info:
                fail()
            assert _chains_nothing(info.value), repr(info.value)
        # calls blocked when the node stops (whether they were asleep yet or not, each
        # ends in an error), and calls after it
        pa, pb = socket.socketpair(TIPC, socket.SOCK_SEQPACKET, node=node_name)
        errors: list[BaseException] = []
        started = threading.Barrier(3)

        def blocked(sock: socket.Socket) -> None:
            started.wait(10)
            try:
                sock.recv(10)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
                errors.append(exc)

        threads = [threading.Thread(target=blocked, args=(s,)) for s in (waiting, pb)]
        for t in threads:
            t.start()
        started.wait(10)
        stop_node(node_name)
        stopped = True
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        assert len(errors) == 2
        after = [
            lambda: waiting.recv(10),
            lambda: rdm.sendto(b"x", (3, 0, waiting.port, 0)),
            lambda: pa.send(b"x"),
            lambda: pb.recv(10),
        ]
        for fail in after:
            try:
                fail()
            except OSError as exc:
                errors.append(exc)
        for exc in errors:
            assert isinstance(exc, OSError) and _chains_nothing(exc), repr(exc)
        for s in (rdm, seq, waiting, pa, pb):
            s.close()
    finally:
        if not stopped:
            stop_node(node_name)


@pytest.mark.parametrize("kind", ["SOCK_RDM", "SOCK_SEQPACKET", "SOCK_STREAM"])
def test_send_checks_its_arguments_as_the_stdlib_does(node: str, kind: str) -> None:
    import array

    a, b = socket.socketpair(TIPC, getattr(socket, kind), node=node)
    lone = socket.socket(TIPC, getattr(socket, kind), node=node)
    with a, b, lone:
        for data, flags, error in [
            ("text", 0, TypeError),
            (None, 0, TypeError),
            (b"x", "0", TypeError),
            (b"x", 1.5, TypeError),
            (b"x", 1 << 40, OverflowError),
        ]:
            for s in (a, lone):  # connected or not, the arguments are checked first
                with pytest.raises(error):
                    s.send(data, flags)
                with pytest.raises(error):
                    s.sendall(data, flags)
        assert a.send(array.array("i", [1, 2])) == 8  # any buffer, counted in bytes
        assert b.recv(100) == struct.pack("=ii", 1, 2)


@pytest.mark.parametrize("kind", ["SOCK_RDM", "SOCK_SEQPACKET", "SOCK_STREAM"])
def test_the_rest_of_the_socket_object_surface(node: str, kind: str) -> None:
    """Methods and attributes of the stdlib's socket objects a program may touch."""
    a, b = socket.socketpair(TIPC, getattr(socket, kind), node=node)
    with a, b:
        assert a.timeout is None
        a.settimeout(1.5)
        assert a.timeout == 1.5
        assert a.get_inheritable() is False  # as the stdlib creates its descriptors
        a.set_inheritable(True)
        assert a.get_inheritable() is True
        a.send(b"0123456789")
        first, second = bytearray(4), bytearray(10)
        n, _anc, msg_flags, _address = b.recvmsg_into([first, memoryview(second)])
        assert n == 10 and first == b"0123" and second[:6] == b"456789"
        assert msg_flags & socket.MSG_TRUNC == 0
        with pytest.raises(TypeError):
            b.recvmsg_into([b"read-only"])
        with pytest.raises(TypeError):
            b.recvmsg_into(5)
        # Nothing public of the stdlib's socket objects is missing but sendmsg_afalg,
        # which is for AF_ALG sockets only.
        missing = {n for n in dir(stdlib.socket) if not n.startswith("_") and not hasattr(a, n)}
        assert missing == {"sendmsg_afalg"}
