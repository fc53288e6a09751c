"""The programs in examples/ are written for ``import socket`` with AF_TIPC. Each runs on the
per-test node twice: through ``python -m tipcshm.run`` (the program's own ``import socket``
resolves to tipcshm) and with its import line rewritten to ``import tipcshm as socket``.

They cannot run under kernel TIPC here (the kernel VM has no Python); what they rely on of
the kernel is covered step by step by the conformance suite's recorded kernel answers.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMPORT_LINE = "import socket\n"

Launcher = Callable[[str, list[str]], list[str]]


def rewritten(tmp_path: Path, name: str) -> Path:
    """A copy of the example whose ``import socket`` line reads ``import tipcshm as socket``."""
    text = (EXAMPLES / name).read_text()
    lines = text.splitlines(keepends=True)
    assert lines.count(IMPORT_LINE) == 1, f"{name} must import socket on one line of its own"
    target = tmp_path / name
    target.write_text(
        "".join("import tipcshm as socket\n" if ln == IMPORT_LINE else ln for ln in lines)
    )
    return target


@pytest.fixture(params=["tipcshm.run", "import-rewritten"])
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Launcher:
    """The command line that runs an example one way or the other."""

    def command(name: str, args: list[str]) -> list[str]:
        if request.param == "tipcshm.run":
            return [sys.executable, "-m", "tipcshm.run", str(EXAMPLES / name), *args]
        return [sys.executable, str(rewritten(tmp_path, name)), *args]

    return command


def env_for(node: str) -> dict[str, str]:
    return dict(os.environ, TIPCSHM_NODE=node)


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, or a failure after ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"printed nothing in {timeout} s")
        return proc.stdout.readline().rstrip("\n")


def test_rdm_select_server_and_client(node: str, launcher: Launcher) -> None:
    server = subprocess.Popen(
        launcher("rdm_select_server.py", []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(node),
    )
    try:
        assert first_line(server, 30) == "serving"
        client = subprocess.run(
            launcher("rdm_client.py", ["25"]),
            capture_output=True,
            text=True,
            timeout=60,
            env=env_for(node),
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "25 answers\n"
        out, err = server.communicate(timeout=20)
        assert server.returncode == 0, err
        assert out == "answered 25 requests\n"
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


@pytest.mark.parametrize(
    ("name", "clients"), [("seqpacket_reqrep.py", 4), ("asyncio_server.py", 3)]
)
def test_self_contained_example(node: str, launcher: Launcher, name: str, clients: int) -> None:
    run = subprocess.run(
        launcher(name, [str(clients)]),
        capture_output=True,
        text=True,
        timeout=90,
        env=env_for(node),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [f"client {n}: ok" for n in range(clients)]
    assert run.stderr == ""


# ---------------------------------------------------------------- tipcshm.run itself
def run_program(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, "-m", "tipcshm.run", str(program), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_run_swaps_only_the_programs_own_import(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("import socket\nNAME = socket.__name__\n")
    run = run_program(
        tmp_path,
        """
        import socket
        from socket import AF_TIPC
        import asyncio.base_events, asyncio.selector_events, sys
        import helper
        print(socket.__name__, helper.NAME, AF_TIPC)
        print(asyncio.base_events.socket.__name__, asyncio.selector_events.socket.__name__)
        print(__name__, sys.argv[1:])
        """,
        "a",
        "b",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "tipcshm tipcshm 30",
        "socket socket",
        "__main__ ['a', 'b']",
    ]


def test_run_passes_the_exit_status_on(tmp_path: Path) -> None:
    assert run_program(tmp_path, "import sys\nsys.exit(3)\n").returncode == 3
    assert run_program(tmp_path, "raise SystemExit('bad input')\n").returncode == 1
    failed = run_program(tmp_path, "raise ValueError('boom')\n")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr


def test_run_refuses_a_missing_program(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tipcshm.run", str(tmp_path / "nothing.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "no such program" in run.stderr


def test_examples_are_written_for_the_stdlib_socket() -> None:
    """The examples import the stdlib's name, never tipcshm: they port nothing themselves."""
    programs = sorted(EXAMPLES.glob("*.py"))
    assert len(programs) == 4
    for program in programs:
        lines = program.read_text().splitlines(keepends=True)
        assert IMPORT_LINE in lines, program.name
        assert not [ln for ln in lines if "import tipcshm" in ln or "from tipcshm" in ln]
