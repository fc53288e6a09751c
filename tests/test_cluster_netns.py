"""The network fixtures themselves (tests/netns.py): namespaces joined by a veth pair, a
Python function run inside one, the relay's loss, duplication, reordering and cut, and
nothing left behind. The cluster tests rely on every one of these."""

from __future__ import annotations

import socket
import subprocess
import time

import netns
import pytest
from netns import Namespace, VethPair, unavailable, veth_pair

netns_pair = netns.netns_pair
impaired_pair = netns.impaired_pair

PORT = 40123  # inside namespaces of this test only: no other test can hold it


def _udp_sink(addr: str, port: int, seconds: float, expect: int) -> list[int]:
    """Receive numbered datagrams for up to ``seconds``; the numbers in arrival order."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((addr, port))
    s.settimeout(0.3)
    got: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(got) < expect:
        try:
            data = s.recv(2048)
        except TimeoutError:
            continue
        got.append(int.from_bytes(data[:4], "big"))
    return got


def _send_numbered(ns: Namespace, dest: str, count: int, gap: float = 0.0) -> None:
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "time.sleep(0.3)\n"
        f"for i in range({count}):\n"
        f"    s.sendto(i.to_bytes(4,'big')+bytes(60),({dest!r},{PORT}))\n"
        f"    time.sleep({gap})\n"
    )
    run = ns.python(code)
    assert run.returncode == 0, run.stderr


def _transfer(pair: VethPair, count: int, gap: float = 0.0005) -> list[int]:
    """Datagrams 0..count-1 from a to b (the receiver runs inside b via ``call``)."""
    import threading

    box: list[list[int]] = []
    rx = threading.Thread(
        target=lambda: box.append(pair.b.call(_udp_sink, pair.b.addr, PORT, 8.0, count))
    )
    rx.start()
    _send_numbered(pair.a, pair.b.addr, count, gap)
    rx.join(30)
    return box[0]


def test_a_function_runs_inside_the_namespace(netns_pair: VethPair) -> None:
    def addresses() -> str:
        return subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout

    inside = netns_pair.a.call(addresses)
    assert netns_pair.a.addr in inside and netns_pair.a.dev in inside
    assert netns_pair.b.addr not in inside
    with pytest.raises(netns.NamespaceError, match="ZeroDivisionError"):
        netns_pair.a.call(divmod, 1, 0)


def test_the_veth_pair_carries_udp_both_ways(netns_pair: VethPair) -> None:
    assert sorted(_transfer(netns_pair, 200)) == list(range(200))
    back = VethPair(netns_pair.b, netns_pair.a)
    assert sorted(_transfer(back, 50)) == list(range(50))


def test_everything_is_removed_afterwards() -> None:
    if reason := unavailable():
        pytest.skip(f"no network namespaces: {reason}")
    with veth_pair(relay=True) as pair:
        names = [pair.a.name, pair.b.name, pair.middle]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(n in listed for n in names)
        relay = pair.relay
        assert relay is not None and relay.poll() is None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names if n)
    assert relay.poll() is not None


def test_the_relay_passes_everything_when_not_impaired(impaired_pair: VethPair) -> None:
    got = _transfer(impaired_pair, 300)
    assert got == list(range(300))


def test_the_relay_loses_duplicates_and_reorders(impaired_pair: VethPair) -> None:
    impaired_pair.impair(loss=20, duplicate=20, reorder=30, delay_ms=3, seed=7, one_way=True)
    got = _transfer(impaired_pair, 400, gap=0.001)
    impaired_pair.clear()
    counters = impaired_pair.relay_counters[-1]
    assert counters["lost"] > 20 and counters["duplicated"] > 20 and counters["reordered"] > 5
    assert len(set(got)) < 400  # lost
    assert len(got) > len(set(got))  # duplicated
    assert got != sorted(got)  # reordered


def test_a_cut_link_passes_nothing_until_healed(impaired_pair: VethPair) -> None:
    impaired_pair.impair(cut=True)
    assert _transfer(impaired_pair, 20) == []
    impaired_pair.clear()
    assert sorted(_transfer(impaired_pair, 20)) == list(range(20))
