#!/usr/bin/env python3
"""Run CPython's own AF_TIPC tests (Lib/test/test_socket.py: TIPCTest and
TIPCThreadableTest) against tipcshm, as a ported program would see it.

The stdlib's test module is loaded from this Python (``test.test_socket``; some
distributions ship it separately, e.g. Debian's ``libpython3.X-testsuite``), its module
global ``socket`` is replaced by ``tipcshm``, the two TIPC classes are un-skipped (their
skip asks /proc/modules for the kernel's tipc module, which tipcshm does not need), and only
those classes run. Nothing of theirs is copied here.

    python tools/cpython/run_tipc_tests.py              # on $TIPCSHM_NODE (or "default")
    python tools/cpython/run_tipc_tests.py --start      # on a node of its own, removed after

Exit status: 0 all passed (or SKIPPED: this Python has no test.test_socket), 1 a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import unittest

TIPC_CLASSES = ("TIPCTest", "TIPCThreadableTest")


def load_suite() -> unittest.TestSuite:
    import test.test_socket as stdlib_tests

    import tipcshm

    stdlib_tests.socket = tipcshm  # type: ignore[attr-defined]
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for name in TIPC_CLASSES:
        cls = getattr(stdlib_tests, name)
        cls.__unittest_skip__ = False
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", action="store_true", help="run on a temporary node of its own")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        suite = load_suite()
    except ImportError as exc:
        print(f"SKIPPED: this Python has no test.test_socket ({exc})")
        return 0
    with contextlib.ExitStack() as stack:
        if args.start:
            from tipcshm.testing import running_node

            os.environ["TIPCSHM_NODE"] = stack.enter_context(running_node())
        # attach to the node before the tests count threads: attaching starts the process's
        # one supervisor-watch thread, which lives as long as the process
        import tipcshm

        tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM).close()
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
    print(f"ran {result.testsRun} of CPython's TIPC tests against tipcshm")
    return 0 if result.wasSuccessful() and result.testsRun == suite.countTestCases() else 1


if __name__ == "__main__":
    sys.exit(main())
