"""The sans-IO rule, checked: the protocol core and the wire codecs import nothing that
does I/O, keeps time or shares memory. Only pure standard-library modules,
``tipcshm.wire`` and ``tipcshm.core`` may appear in their import statements, so a test or
the simulator can drive every protocol object with frames and a ``now`` of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tipcshm

PACKAGE = Path(tipcshm.__file__).parent
PURE_DIRS = ("core", "wire")

# Standard-library modules that compute and nothing else. ``random`` is allowed because
# objects take a ``random.Random`` instance from their owner (seeded in tests); ``sys`` only
# for facts such as byteorder.
PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "heapq",
        "ipaddress",
        "itertools",
        "math",
        "operator",
        "random",
        "struct",
        "sys",
        "types",
        "typing",
        "zlib",
    }
)
ALLOWED_PACKAGES = ("tipcshm.wire", "tipcshm.core")


def _modules() -> list[Path]:
    files = sorted(p for d in PURE_DIRS for p in (PACKAGE / d).glob("*.py"))
    assert len(files) >= 6, "the core and wire packages moved: update this test"
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("__import__", "exec", "eval"):
                found.append((node.lineno, f"<{node.func.id}()>"))
    return found


def _allowed(name: str) -> bool:
    top = name.split(".", 1)[0]
    return top in PURE_STDLIB or any(
        name == pkg or name.startswith(pkg + ".") for pkg in ALLOWED_PACKAGES
    )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_and_wire_import_only_pure_modules(path: Path) -> None:
    bad = [f"line {line}: {name}" for line, name in _imports(path) if not _allowed(name)]
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports impure modules: {bad}"


def test_the_checker_catches_an_impure_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom socket import socket\nimport tipcshm.sock\n")
    assert [name for _, name in _imports(sample) if not _allowed(name)] == [
        "time",
        "socket",
        "tipcshm.sock",
    ]
