"""The mode table (csrc/vitpe_modes.h) is the one source of mode knowledge.

Fast tests: what Python sees (vitpe_ext.op.modes) is what the op enforces,
flag by flag, and the defaults agree. The slow test adds a filter mode to a
copy of the sources exactly as vitpe_modes.h says to (one filter function,
one table row), builds it, and checks that the C suite, the op, its argument
checks and the command pick the new mode up with no other edit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vitpe_ext
from vitpe_ext.op import modes

from test_c_kernels import make_command

ROOT = Path(__file__).resolve().parents[1]


def _call(mode, **kw):
    table = torch.randn(1, 1 + 4 * 4, 3, dtype=torch.float64)
    return vitpe_ext.interpolate_pos_embed(table, (6, 6), mode=mode, **kw)


def test_python_reads_the_c_table():
    assert modes.MODES == tuple(row[0] for row in vitpe_ext._C.modes)
    assert vitpe_ext.MODES == modes.MODES
    assert modes.DEFAULT_MODE in modes.MODES
    assert len(set(modes.MODES)) == len(modes.MODES)
    schema = torch.ops.vitpe.interpolate_pos_embed.default._schema
    default = next(a.default_value for a in schema.arguments if a.name == "mode")
    assert default == modes.DEFAULT_MODE


def test_default_mode_is_the_tables():
    table = torch.randn(1, 1 + 4 * 4, 3, dtype=torch.float64)
    assert torch.equal(vitpe_ext.interpolate_pos_embed(table, (6, 6)),
                       vitpe_ext.interpolate_pos_embed(table, (6, 6), mode=modes.DEFAULT_MODE))
    assert torch.equal(torch.ops.vitpe.interpolate_pos_embed(table, [6, 6]),
                       vitpe_ext.interpolate_pos_embed(table, (6, 6), mode=modes.DEFAULT_MODE))


@pytest.mark.parametrize("mode", modes.MODES)
def test_each_rows_flags_are_what_the_op_enforces(mode):
    info = modes.mode_info(mode)
    assert _call(mode).shape == (1, 37, 3)
    if info.align_corners:
        _call(mode, align_corners=True)
    else:
        with pytest.raises(ValueError, match="align_corners=True is only valid for"):
            _call(mode, align_corners=True)
    if info.antialias == "never":
        with pytest.raises(ValueError, match="antialias=True is only valid for"):
            _call(mode, antialias=True)
    else:
        aa = _call(mode, antialias=True)
        if info.antialias == "always":  # the flag changes nothing: the mode always antialiases
            torch.manual_seed(0)
            table = torch.randn(1, 1 + 9 * 9, 3, dtype=torch.float64)
            assert torch.equal(vitpe_ext.interpolate_pos_embed(table, (4, 5), mode=mode, antialias=True),
                               vitpe_ext.interpolate_pos_embed(table, (4, 5), mode=mode, antialias=False))
        assert aa.shape == (1, 37, 3)
    if info.scale_factor:
        assert _call(mode, scale_factor=1.5).shape == (1, 37, 3)
    else:
        with pytest.raises(ValueError, match="scale_factor"):
            _call(mode, scale_factor=1.5)


def test_unknown_modes_are_refused_everywhere():
    with pytest.raises(ValueError, match="unknown mode 'gaussian'; valid modes are " + ", ".join(modes.MODES)):
        _call("gaussian")
    with pytest.raises(ValueError, match="unknown mode"):
        modes.mode_info("gaussian")
    with pytest.raises(ValueError, match="unknown mode"):
        torch.ops.vitpe.interpolate_pos_embed_backward(torch.randn(1, 37, 3), 17, [6, 6], mode="Bicubic")


# -- a new mode, added as vitpe_modes.h says ------------------------------------

GAUSSIAN_FILTER = """
/* A Gaussian of sigma 1/2, cut at its support of 2 (added by the test). */
VITPE_HD double vitpe__filter_gaussian(double x, int dbl) {
    return x < 2.0 ? vitpe__r(exp(-2.0 * x * x), dbl) : 0.0;
}
"""
GAUSSIAN_ROW = 'X(GAUSSIAN, "gaussian", FILTER, vitpe__filter_gaussian, 2.0, 0, ALWAYS, 1, ALWAYS)'

PYTHON_CHECKS = r"""
import subprocess, sys, torch, vitpe_ext
from vitpe_ext.op import modes
assert vitpe_ext.__file__.startswith(sys.argv[1]), vitpe_ext.__file__
assert modes.MODES[-1] == "gaussian", modes.MODES
assert modes.mode_info("gaussian") == ("gaussian", False, "always", True)
torch.manual_seed(0)
table = torch.randn(2, 1 + 7 * 9, 5, dtype=torch.float64, requires_grad=True)
for new in [(12, 4), (3, 3), (7, 9)]:
    out = vitpe_ext.interpolate_pos_embed(table, new, old_size=(7, 9), mode="gaussian")
    assert out.shape == (2, 1 + new[0] * new[1], 5) and torch.isfinite(out).all()
    assert torch.autograd.gradcheck(
        lambda t: vitpe_ext.interpolate_pos_embed(t, new, old_size=(7, 9), mode="gaussian"), (table,))
    # normalised weights: a constant field stays constant
    const = torch.full((1, 1 + 7 * 9, 2), 3.0, dtype=torch.float64)
    flat = vitpe_ext.interpolate_pos_embed(const, new, old_size=(7, 9), mode="gaussian")
    assert torch.allclose(flat, torch.full_like(flat, 3.0)), flat
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        low = vitpe_ext.interpolate_pos_embed(table.detach().to(dtype), new, old_size=(7, 9), mode="gaussian")
        assert torch.allclose(low.double(), out.detach(), atol=0.05, rtol=0.05), dtype
try:
    vitpe_ext.interpolate_pos_embed(table, (3, 3), old_size=(7, 9), mode="gaussian", align_corners=True)
    raise SystemExit("align_corners=True was accepted")
except ValueError as e:
    assert "only valid for bilinear and bicubic, not mode 'gaussian'" in str(e), e
help_text = subprocess.run([sys.executable, "-m", "vitpe_ext", "resize", "--help"],
                           capture_output=True, text=True).stdout
assert "gaussian" in help_text, help_text
print("python: ok")
"""


def _copy_sources(dst: Path):
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "build", "*.egg-info")
    for name in ("csrc", "vitpe_ext"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copytree(ROOT / "tests" / "c", dst / "tests" / "c", ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)


def _add_gaussian(src: Path):
    table = src / "csrc" / "vitpe_modes.h"
    text = table.read_text()
    last = next(line for line in text.splitlines() if line.lstrip().startswith("X(LANCZOS3,"))
    assert not last.rstrip().endswith("\\"), "LANCZOS3 is no longer the table's last row: update the test"
    table.write_text(text.replace(last, last + " \\\n    " + GAUSSIAN_ROW))
    taps = src / "csrc" / "vitpe_taps.h"
    text = taps.read_text()
    anchor = "#define VITPE__FILTER_OF"
    assert anchor in text
    taps.write_text(text.replace(anchor, GAUSSIAN_FILTER + "\n" + anchor))


def test_a_new_filter_mode_is_one_function_and_one_row(tmp_path):
    src = tmp_path / "src"
    _copy_sources(src)
    _add_gaussian(src)

    # C: the kernel suite iterates over the table, so it checks the new mode too
    args, note = make_command("test", tmp_path)
    args[2] = str(src / "tests" / "c")  # make -C <the copy>
    proc = subprocess.run(args + [f"CSRC={src / 'csrc'}"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, note + proc.stdout[-4000:] + proc.stderr[-4000:]
    covered = next((line for line in proc.stdout.splitlines() if line.startswith("c-kernels: modes")), "")
    assert covered.endswith(" gaussian"), "the C suite did not run the new mode:\n" + proc.stdout[-3000:]

    # Python: build the copy's extension in place (CPU kernels are enough) and use it
    env = dict(os.environ, VITPE_CUDA="0", MAX_JOBS="2")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_clib", "build_ext", "--inplace"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(src))
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(PYTHON_CHECKS), str(src)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "python: ok" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
