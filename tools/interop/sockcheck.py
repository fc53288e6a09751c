#!/usr/bin/env python3
"""Ask a real Linux kernel's TIPC what tipcshm's conformance suite expects, in a VM.

Builds ``sockcheck.c`` (and ``groupcheck.c``, which tests/kernelvm.py's VMs use) statically,
appends them to the kernel-TIPC harness's initramfs (the harness in
``../shared/tools/kernel-tipc`` next to this repository, as ``conncheck.sh`` does), boots
one VM, runs ``sockcheck`` there and collects its JSON lines.

    sudo tools/interop/sockcheck.py --write tests/data/kernel_answers.jsonl   # record
    sudo tools/interop/sockcheck.py --compare tests/data/kernel_answers.jsonl # re-check
    sudo tools/interop/sockcheck.py                                           # print

A missing prerequisite (root, /dev/kvm, the harness or its build cache, a tool) prints
``SKIPPED: <reason>`` and exits 0 (1 with ``--require``). ``--compare`` exits 3 when the
kernel now answers differently from the file, and names each step that changed.
Environment: TIPCVM_HARNESS, TIPCVM_CACHE, TIPCVM_RUN as for conncheck.sh.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EXIT_SKIPPED = 0
EXIT_DIFFERS = 3


class Skipped(Exception):
    """A prerequisite is missing: nothing was run."""


def prerequisites() -> tuple[Path, Path, Path]:
    """The harness directory, the base cache and its initramfs, or Skipped saying why."""
    if not os.path.exists("/dev/kvm"):
        raise Skipped("/dev/kvm is missing (the kernel-TIPC VM harness needs it)")
    harness = Path(os.environ.get("TIPCVM_HARNESS", REPO.parent / "shared/tools/kernel-tipc"))
    if not (harness / "tipcvm.py").is_file():
        raise Skipped(f"kernel-TIPC harness not found at {harness} (set TIPCVM_HARNESS)")
    if os.geteuid() != 0:
        raise Skipped("needs root, as the harness does (namespaces, tap devices)")
    cache = Path(os.environ.get("TIPCVM_CACHE", Path.home() / ".cache/tipcshm-kernel-vm"))
    env = cache / "build.env"
    if not env.is_file():
        raise Skipped(f"harness cache {cache} is missing: build it once with {harness}/build.sh")
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    kernel, initrd = Path(values.get("KERNEL", "")), Path(values.get("INITRD", ""))
    if not (kernel.is_absolute() and kernel.is_file() and initrd.is_absolute()):
        raise Skipped(f"harness cache {cache} is incomplete (KERNEL/INITRD in build.env)")
    if not initrd.is_file():
        raise Skipped(f"harness cache {cache} has no initramfs {initrd}")
    for tool in ("gcc", "cpio", "ip", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            raise Skipped(f"{tool} is not installed (the harness's build.sh installs it)")
    return harness, env, initrd


#: The project's static AF_TIPC programs the VM's initramfs carries, as /bin/<name>.
VM_TOOLS = ("sockcheck", "groupcheck")


def build_cache(work: Path, base_env: Path, base_initrd: Path) -> Path:
    """A cache directory whose initramfs is the harness's plus /bin/sockcheck and
    /bin/groupcheck (:data:`VM_TOOLS`, each compiled statically from its .c here)."""
    overlay = work / "overlay"
    (overlay / "bin").mkdir(parents=True)
    for tool in VM_TOOLS:
        binary = overlay / "bin" / tool
        source = HERE / f"{tool}.c"
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-static", "-s", "-o", str(binary), str(source)], check=True
        )
    names = subprocess.run(["find", "."], cwd=overlay, check=True, capture_output=True).stdout
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet", "--owner=0:0"],
        cwd=overlay,
        input=names,
        check=True,
        capture_output=True,
    ).stdout
    cache = work / "cache"
    cache.mkdir()
    initrd = cache / "initramfs.cpio.gz"
    # the kernel unpacks concatenated initramfs archives one after the other
    with open(initrd, "wb") as out:
        out.write(base_initrd.read_bytes())
        out.write(gzip.compress(archive, 6))
    lines = [
        f"INITRD={initrd}" if line.startswith("INITRD=") else line
        for line in base_env.read_text().splitlines()
    ]
    (cache / "build.env").write_text("\n".join(lines) + "\n")
    return cache


def run_in_vm(harness: Path, cache: Path, keep_logs: bool) -> list[dict[str, Any]]:
    ns = f"sockchk{os.getpid()}"
    env = dict(os.environ, TIPCVM_CACHE=str(cache))

    def tipcvm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "tipcvm.py", "--ns", ns, *args],
            cwd=harness,
            env=env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    started = False
    try:
        started = True
        up = tipcvm("up", "-n", "1", "--echo", "none", "--status", "0")
        if up.returncode != 0:
            raise RuntimeError(f"the VM did not boot:\n{up.stdout}{up.stderr}")
        run = tipcvm("exec", "--timeout", "150", "1", "sockcheck", timeout=200)
        if run.returncode != 0:
            raise RuntimeError(f"sockcheck failed (rc {run.returncode}):\n{run.stdout}{run.stderr}")
        return parse(run.stdout)
    finally:
        if started:
            down = tipcvm("down", *(["--keep-logs"] if keep_logs else []), timeout=60)
            if down.returncode != 0:
                print(f"WARNING: tipcvm down failed:\n{down.stdout}{down.stderr}", file=sys.stderr)
            last = Path(os.environ.get("TIPCVM_RUN", "/run/tipcvm")) / f"{ns}.last"
            if not keep_logs and last.is_dir():
                shutil.rmtree(last)


def parse(text: str) -> list[dict[str, Any]]:
    """sockcheck's lines, checked whole: a meta line first, an end line last, unique ids."""
    answers = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    if not answers or answers[0].get("id") != "meta" or answers[-1].get("id") != "end":
        raise RuntimeError(f"sockcheck's output is incomplete:\n{text[-2000:]}")
    fatal = [a for a in answers if a["id"] == "fatal"]
    if fatal:
        raise RuntimeError(f"sockcheck stopped: {fatal[0]}")
    ids = [a["id"] for a in answers]
    if len(ids) != len(set(ids)):
        raise RuntimeError("sockcheck printed a step twice")
    return answers[:-1]


def differences(recorded: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """Every step whose answer changed, appeared or disappeared (the meta line aside)."""
    old = {a["id"]: a for a in recorded if a["id"] != "meta"}
    new = {a["id"]: a for a in now if a["id"] != "meta"}
    out = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            out.append(f"{key}: recorded {old.get(key)} now {new.get(key)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", type=Path, help="record the answers in this file")
    ap.add_argument("--compare", type=Path, help="check the answers in this file are current")
    ap.add_argument("--require", action="store_true", help="a missing prerequisite is an error")
    ap.add_argument("--keep-logs", action="store_true", help="keep the VM's run directory")
    args = ap.parse_args(argv)
    try:
        harness, base_env, base_initrd = prerequisites()
    except Skipped as why:
        if args.require:
            print(f"ERROR (--require): {why}", file=sys.stderr)
            return 1
        print(f"SKIPPED: {why}")
        return EXIT_SKIPPED
    with tempfile.TemporaryDirectory(prefix="sockcheck.") as tmp:
        cache = build_cache(Path(tmp), base_env, base_initrd)
        answers = run_in_vm(harness, cache, args.keep_logs)
    print(f"kernel {answers[0]['kernel']}: {len(answers) - 1} answers", file=sys.stderr)
    if args.write:
        args.write.write_text("".join(json.dumps(a) + "\n" for a in answers))
    if args.compare:
        recorded = [json.loads(line) for line in args.compare.read_text().splitlines() if line]
        changed = differences(recorded, answers)
        for line in changed:
            print(line)
        if changed:
            print(f"{len(changed)} answers differ from {args.compare}")
            return EXIT_DIFFERS
        print(f"every answer in {args.compare} is still the kernel's")
    if not args.write and not args.compare:
        sys.stdout.write("".join(json.dumps(a) + "\n" for a in answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
