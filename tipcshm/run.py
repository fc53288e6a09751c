"""Run a program written for ``socket.AF_TIPC`` on tipcshm, unchanged.

    python -m tipcshm.run [--node NAME] PROGRAM.py [ARGS...]

The program runs as ``__main__`` (as ``python PROGRAM.py ARGS...`` would run it), except
that its own ``import socket`` (and ``from socket import ...``) gives it :mod:`tipcshm`.
Only the program's own code is redirected: the script itself and modules loaded from its
directory. The standard library and installed packages keep the real :mod:`socket`, because
they depend on it in ways a program does not (asyncio's event loop checks address families
and builds its self-pipe from a real socketpair, for instance), and tipcshm sockets work with
them as they are. A program that imports socket some other way (``importlib``, ``exec``)
gets the real module; change its import line to ``import tipcshm as socket`` instead.

``--node`` picks the tipcshm node (default: ``$TIPCSHM_NODE``, else ``default``).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import os
import runpy
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType

__all__ = ["main", "program_imports_tipcshm"]


def _is_program_code(globals_: Mapping[str, object] | None, program_dir: str) -> bool:
    if not globals_:
        return False
    if globals_.get("__name__") == "__main__":
        return True
    filename = globals_.get("__file__")
    if not isinstance(filename, str):
        return False
    return os.path.dirname(os.path.abspath(filename)) == program_dir


@contextlib.contextmanager
def program_imports_tipcshm(program_dir: str) -> Iterator[None]:
    """While active, ``import socket`` in ``__main__`` or in a module whose file lies in
    ``program_dir`` yields tipcshm; every other importer gets the real socket module."""
    import tipcshm

    program_dir = os.path.abspath(program_dir)
    real_import = builtins.__import__

    def importing(
        name: str,
        globals: Mapping[str, object] | None = None,  # noqa: A002 - __import__'s own names
        locals: Mapping[str, object] | None = None,  # noqa: A002
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if name == "socket" and level == 0 and _is_program_code(globals, program_dir):
            return tipcshm
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = importing
    try:
        yield
    finally:
        builtins.__import__ = real_import


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tipcshm.run",
        description="Run a program written for socket.AF_TIPC on tipcshm, unchanged.",
    )
    ap.add_argument("--node", help="the tipcshm node (default: $TIPCSHM_NODE, else 'default')")
    ap.add_argument("program", help="the Python file to run")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    args = ap.parse_args(argv)
    if args.node:
        os.environ["TIPCSHM_NODE"] = args.node
    program = os.path.abspath(args.program)
    if not os.path.isfile(program):
        ap.error(f"no such program: {args.program}")
    program_dir = os.path.dirname(program)
    sys.argv = [args.program, *args.args]
    sys.path.insert(0, program_dir)  # as `python PROGRAM.py` puts the script's directory first
    with program_imports_tipcshm(program_dir):
        try:
            runpy.run_path(program, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
            if code is None:
                return 0
            if isinstance(code, int):
                return code
            print(code, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
