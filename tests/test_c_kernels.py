"""Runs the pure-C kernel tests (tests/c: `make -C tests/c test`) from pytest.

The C program checks the separable passes against the naive references, the
backward gather against the scatter, the adjoint identity, identity resizes,
constant fields, float16/bfloat16 rounding and the API's error codes, under
AddressSanitizer and UBSan. It needs a C compiler and make, no torch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

C_DIR = Path(__file__).resolve().parent / "c"
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all"


def _compiler():
    cc = os.environ.get("CC")
    if cc:
        return cc if shutil.which(cc.split()[0]) else None
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _sanitizers_work(cc, tmp_path):
    """Whether `cc` links and runs a program with ASan/UBSan (some toolchains
    lack the runtimes; some sandboxes forbid what LeakSanitizer needs)."""
    src, exe = tmp_path / "probe.c", tmp_path / "probe"
    src.write_text("#include <stdlib.h>\nint main(void) { free(malloc(8)); return 0; }\n")
    try:
        subprocess.run([*cc.split(), *SANITIZE.split(), "-o", str(exe), str(src)],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([str(exe)], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def make_command(target, tmp_path):
    """`make -C tests/c TARGET` with a compiler that works here, under the
    sanitizers where they run; skips the test without a compiler or make.
    Returns (args, note), the note saying when the sanitizers were left out."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler found (set CC)")
    if shutil.which("make") is None:
        pytest.skip("make not found")
    # A private build directory: other runs of this test may build at the same time.
    args = ["make", "-C", str(C_DIR), target, f"CC={cc}", f"BUILD={tmp_path / 'build'}"]
    note = ""
    if not _sanitizers_work(cc, tmp_path):
        args.append("SANITIZE=")
        note = f"({cc} cannot build/run with {SANITIZE}: ran without sanitizers)\n"
    return args, note


def test_c_kernels(tmp_path):
    args, note = make_command("test", tmp_path)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    output = note + proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{output}"
    summary = [line for line in proc.stdout.splitlines() if line.startswith("c-kernels:") and "passed" in line]
    assert summary and summary[-1].endswith(" 0 failed"), f"no clean summary line:\n{output}"
    if note:
        print(note, end="")
