"""Child processes for multi-process tests: real interpreters, killed by pid only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import tipcshm


class Child:
    """A Python child running ``code`` with ``NODE`` set; speaks line by line on stdout."""

    def __init__(self, node: str, code: str) -> None:
        prelude = f"import tipcshm, sys, os, time\nNODE = {node!r}\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = 20.0) -> str:
        """The next line the child prints (fails the test on EOF or after ``timeout``)."""
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"child {self.pid} printed nothing for {timeout}s")
                if sel.select(remaining):
                    text = self.proc.stdout.readline()
                    if not text:
                        err = self.proc.stderr.read()
                        raise AssertionError(f"child {self.pid} ended early:\n{err}")
                    return text.rstrip("\n")
        finally:
            sel.close()

    def expect(self, text: str, timeout: float = 20.0) -> None:
        got = self.line(timeout)
        assert got == text, f"child {self.pid}: expected {text!r}, got {got!r}"

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def finish(self, timeout: float = 20.0) -> str:
        """Wait for the child to exit 0; returns its remaining output."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"child {self.pid} exited {self.proc.returncode}:\n{err}"
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def connected_trio(
    node: str, kind: int, service: int, instance: int = 1
) -> tuple[tipcshm.socket, tipcshm.socket, tipcshm.socket]:
    """(listener, client, accepted): a connection through the service {service, instance}."""
    srv = tipcshm.socket(tipcshm.AF_TIPC, kind, node=node)
    srv.bind((tipcshm.TIPC_ADDR_NAME, service, instance, 0))
    srv.listen(4)
    c = tipcshm.socket(tipcshm.AF_TIPC, kind, node=node)
    t = threading.Thread(target=c.connect, args=((tipcshm.TIPC_ADDR_NAME, service, instance, 0),))
    t.start()
    b, _ = srv.accept()
    t.join(10)
    return srv, c, b
