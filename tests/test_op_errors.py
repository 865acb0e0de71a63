"""Bad arguments raise a clear exception (ValueError unless noted) whose
message names the problem, and never crash the process.

All cases run in one child process (one torch import) that prints a result
line per case; a case that kills the child (segfault, abort) fails its own
test, and the remaining cases go on in a fresh child."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# id -> (code evaluated with f = the public function, op = the forward op,
#        bop = the backward op, x = a (2, 1 + 4*4, 3) float32 table,
#        expected exception type, substrings the message must contain)
CASES = {
    "ndim_1d": ("f(torch.randn(17), (5, 5))", "ValueError", ["3-D", "1-D"]),
    "ndim_4d": ("f(torch.randn(1, 2, 17, 3), (5, 5))", "ValueError", ["3-D", "4-D"]),
    "ndim_4d_op": ("op(torch.randn(1, 2, 17, 3), [5, 5])", "ValueError", ["3-D", "4-D"]),
    "prefix_negative": ("f(x, (5, 5), num_prefix_tokens=-1)", "ValueError", ["num_prefix_tokens", "-1"]),
    "prefix_above_tokens": ("f(x, (5, 5), num_prefix_tokens=18)", "ValueError", ["num_prefix_tokens", "18"]),
    "prefix_all_tokens": ("f(x, (5, 5), num_prefix_tokens=17)", "ValueError", ["old_size"]),
    "new_size_zero": ("f(x, (0, 5))", "ValueError", ["new_size"]),
    "new_size_negative": ("f(x, (5, -2))", "ValueError", ["new_size"]),
    "new_size_three_ints": ("f(x, (2, 3, 4))", "ValueError", ["new_size"]),
    "new_size_three_ints_op": ("op(x, [2, 3, 4])", "ValueError", ["new_size"]),
    "new_size_one_int_op": ("op(x, [2])", "ValueError", ["new_size"]),
    "output_overflows_int64": ("f(x, (2**31, 2**31))", "ValueError", ["overflow|too large"]),
    "grid_overflows_int64": ("f(x, (2**62, 2**62))", "ValueError", ["overflow|too large"]),
    "output_elements_overflow_int64": (
        "f(torch.randn(1, 17, 3).expand(2**40, 17, 3), (2**12, 2**12))", "ValueError", ["overflow|too large"]),
    "non_square_without_old_size": ("f(torch.randn(2, 1 + 3 * 4, 3), (5, 5))", "ValueError", ["old_size"]),
    "old_size_inconsistent": ("f(x, (5, 5), old_size=(3, 5))", "ValueError", ["old_size", "(3|15)"]),
    "old_size_zero": ("f(x, (5, 5), old_size=(0, 16))", "ValueError", ["old_size"]),
    "unknown_mode": ("f(x, (5, 5), mode='cubic')", "ValueError",
                     ["cubic", "nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos3"]),
    "antialias_nearest": ("f(x, (5, 5), mode='nearest', antialias=True)", "ValueError", ["antialias", "nearest"]),
    "antialias_nearest_exact": ("f(x, (5, 5), mode='nearest-exact', antialias=True)", "ValueError",
                                ["antialias", "nearest-exact"]),
    "antialias_area": ("f(x, (5, 5), mode='area', antialias=True)", "ValueError", ["antialias", "area"]),
    "align_corners_nearest": ("f(x, (5, 5), mode='nearest', align_corners=True)", "ValueError",
                              ["align_corners", "nearest"]),
    "align_corners_nearest_exact": ("f(x, (5, 5), mode='nearest-exact', align_corners=True)", "ValueError",
                                    ["align_corners", "nearest-exact"]),
    "align_corners_area": ("f(x, (5, 5), mode='area', align_corners=True)", "ValueError", ["align_corners", "area"]),
    "align_corners_lanczos3": ("f(x, (5, 5), mode='lanczos3', align_corners=True)", "ValueError",
                               ["align_corners", "lanczos3"]),
    "scale_factor_zero": ("f(x, (5, 5), scale_factor=0.0)", "ValueError", ["scale_factor"]),
    "scale_factor_negative": ("f(x, (5, 5), scale_factor=(-1.25, 1.25))", "ValueError", ["scale_factor"]),
    "scale_factor_nan": ("f(x, (5, 5), scale_factor=float('nan'))", "ValueError", ["scale_factor"]),
    "scale_factor_inf": ("f(x, (5, 5), scale_factor=float('inf'))", "ValueError", ["scale_factor"]),
    "scale_factor_inconsistent": ("f(x, (5, 5), scale_factor=1.0)", "ValueError", ["scale_factor", "new_size"]),
    "scale_factor_inconsistent_one_axis": ("f(x, (5, 6), scale_factor=(1.25, 1.25))", "ValueError",
                                           ["scale_factor", "new_size"]),
    "dtype_int64": ("f(x.to(torch.int64), (5, 5))", "ValueError", ["float32"]),
    "dtype_bool": ("f(x.bool(), (5, 5))", "ValueError", ["float32"]),
    "dtype_complex": ("f(x.to(torch.complex64), (5, 5))", "ValueError", ["float32"]),
    "backward_wrong_token_count": ("bop(torch.randn(2, 20, 3), 17, [5, 5])", "ValueError", ["grad_output", "26"]),
    "backward_ndim": ("bop(torch.randn(20, 3), 17, [5, 5])", "ValueError", ["grad_output", "3-D"]),
    "backward_bad_input_tokens": ("bop(torch.randn(2, 26, 3), 18, [5, 5])", "ValueError", ["old_size"]),
}

CHILD = textwrap.dedent("""
    import json, sys, traceback
    import torch
    import vitpe_ext
    f = vitpe_ext.interpolate_pos_embed
    op = torch.ops.vitpe.interpolate_pos_embed
    bop = torch.ops.vitpe.interpolate_pos_embed_backward
    x = torch.randn(2, 1 + 4 * 4, 3)
    for case_id, code in json.loads(sys.stdin.read()):
        print("START " + case_id, flush=True)
        try:
            eval(code)
            result = {"type": None, "message": ""}
        except Exception as e:
            result = {"type": type(e).__name__, "message": str(e)}
        print("RESULT " + json.dumps([case_id, result]), flush=True)
""")


def run_cases(cases):
    """Runs [(id, code)] in child processes; returns {id: result}, where a case
    that killed its child gets {"type": "CRASH", ...}."""
    results, todo = {}, list(cases)
    while todo:
        proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(todo), capture_output=True,
                              text=True, timeout=300)
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = line[6:]
            elif line.startswith("RESULT "):
                case_id, result = json.loads(line[7:])
                results[case_id] = result
        if proc.returncode != 0 and started is not None and started not in results:
            results[started] = {"type": "CRASH",
                                "message": f"child exited with {proc.returncode}: {proc.stderr[-2000:]}"}
        remaining = [c for c in todo if c[0] not in results]
        if len(remaining) == len(todo):  # no progress: the child dies before any case
            for case_id, _ in remaining:
                results[case_id] = {"type": "CRASH", "message": proc.stderr[-2000:]}
            break
        todo = remaining
    return results


# Two cases that check the harness itself, run in the middle of the real ones:
# one that must come back as "no error", one that kills its child (the cases
# after it then run in a second child).
HARNESS = [("_harness_no_error", "f(x, (2, 2))"),
           ("_harness_crash", "__import__('os').kill(__import__('os').getpid(), 11)")]


@pytest.fixture(scope="module")
def results():
    cases = [(case_id, code) for case_id, (code, _, _) in CASES.items()]
    middle = len(cases) // 2
    return run_cases(cases[:middle] + HARNESS + cases[middle:])


@pytest.mark.parametrize("case_id", list(CASES))
def test_error(case_id, results):
    import re

    code, expected_type, needles = CASES[case_id]
    got = results[case_id]
    assert got["type"] != "CRASH", f"{code} crashed the process: {got['message']}"
    assert got["type"] is not None, f"{code} raised nothing"
    assert got["type"] == expected_type, f"{code} raised {got['type']}: {got['message']}"
    for needle in needles:
        assert re.search(needle, got["message"]), f"{code}: message does not name {needle!r}: {got['message']}"


def test_harness_reports_a_crash(results):
    """A case that kills the child fails as CRASH, the cases after it still
    run, and a call that succeeds is reported as such."""
    assert results["_harness_no_error"]["type"] is None
    assert results["_harness_crash"]["type"] == "CRASH"
    assert all(results[case_id]["type"] != "CRASH" for case_id in CASES), "a real case crashed (see its test)"
