"""Runs the C library's fuzz target (tests/c/fuzz_vitpe.c) from pytest.

The standalone driver (`make -C tests/c fuzz`) decodes a seeded random stream
of byte strings into resizes -- sizes up to far past the limits, every mode and
invalid ones, flags, scale factors, strides, row splits -- and holds the
library to its contract and to its references under AddressSanitizer and UBSan,
for VITPE_FUZZ_SECONDS seconds (30 by default; VITPE_FUZZ_SEED repeats a
stream). It needs a C compiler and make, no torch; clang/libFuzzer is not
needed (`make -C tests/c libfuzzer` runs the same target under libFuzzer).

A finding fails the test with the driver's report: what the input decoded to,
what was wrong, the input in hex and how to replay it.
"""
from __future__ import annotations

import os
import re
import subprocess

from test_c_kernels import make_command

SUMMARY = re.compile(r"^fuzz: (\d+) executions in [\d.]+ s \(seed (0x[0-9a-f]+)\), (\d+) findings$", re.M)


def test_c_fuzz(tmp_path):
    seconds = float(os.environ.get("VITPE_FUZZ_SECONDS", "30"))
    args, note = make_command("fuzz", tmp_path)
    args += [f"FUZZ_SECONDS={seconds:g}", f"FUZZ_DIR={tmp_path}"]
    if os.environ.get("VITPE_FUZZ_SEED"):
        args.append(f"FUZZ_SEED={os.environ['VITPE_FUZZ_SEED']}")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 600)
    output = note + proc.stdout + proc.stderr
    hint = ("\nreplay an input printed in hex: echo HEX | xxd -r -p > in.bin; "
            "make -C tests/c build/fuzz_vitpe && tests/c/build/fuzz_vitpe in.bin")
    assert proc.returncode == 0, f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{output}{hint}"
    summary = SUMMARY.findall(proc.stdout)
    assert summary, f"no summary line:\n{output}"
    executions, seed, findings = summary[-1]
    assert int(findings) == 0 and int(executions) > 0, f"{output}{hint}"
    print(note + "".join(line + "\n" for line in proc.stdout.splitlines() if line.startswith("fuzz:")), end="")
