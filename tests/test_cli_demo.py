"""`vitpe demo`: the built-in sin-cos ViT-B/16 run end to end in a child
process (the README's main job), its error column recomputed independently,
and the checkpoint form."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

import vitpe_ext  # noqa: F401  (loads the op)
from vitpe_ext.command import cli
from vitpe_ext.op.reference import recipe_interpolate
from vitpe_ext.integrations.sincos import get_2d_sincos_pos_embed, sincos_2d_resampled

from test_checkpoint import make_state

REPO = Path(__file__).resolve().parents[1]
METHODS = ("nearest", "nearest-exact", "bilinear", "bilinear ac", "bicubic", "bicubic ac", "bicubic aa", "area",
           "lanczos3", "dinov2: bicubic +0.1 (float32)")


def _rows(text, heading):
    """{method: [columns...]} of the table under the line starting with `heading`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = {}
    for line in lines[start + 3:]:
        if not line.strip():
            break
        for name in sorted(METHODS, key=len, reverse=True):
            if line.startswith(name + " "):
                rows[name] = re.findall(r"\d+\.\d+(?:e[+-]\d+)?", line[len(name):])
                break
    return rows


def _recomputed_rel_rmse(mode, new, align_corners=False, antialias=False):
    table = torch.from_numpy(get_2d_sincos_pos_embed(768, 14, cls_token=True)).float()[None]
    out = recipe_interpolate(table, (new, new), (14, 14), 1, mode, align_corners, antialias)[0, 1:].double()
    exact = torch.from_numpy(sincos_2d_resampled(768, 14, new))
    return float((out - exact).norm() / exact.norm())


def test_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "vitpe_ext", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for size, new in ((384, 24), (512, 32)):
        rows = _rows(out, f"224x224 -> {size}x{size}")
        assert set(rows) == set(METHODS), out
        errors = {name: float(cols[0]) for name, cols in rows.items()}
        # the printed numbers are the real ones: recompute some through F.interpolate
        for name, kwargs in (("bicubic", {"mode": "bicubic"}), ("nearest", {"mode": "nearest"}),
                             ("bicubic ac", {"mode": "bicubic", "align_corners": True}),
                             ("bicubic aa", {"mode": "bicubic", "antialias": True})):
            assert abs(errors[name] - _recomputed_rel_rmse(new=new, **kwargs)) <= 0.006 * errors[name], name
        # a smooth field: every interpolating kernel beats nearest, and the
        # half-pixel bicubic beats torchvision's corner-aligned one
        assert max(errors[m] for m in ("bilinear", "bicubic", "bicubic aa", "lanczos3")) < errors["nearest"]
        assert errors["bicubic"] < errors["bicubic ac"]
        assert all(float(cols[2]) > 0 for cols in rows.values())  # a time for every method
    assert re.search(r"forward pass: vit_b_16\(image_size=384\) loaded .* strictly; .* logits \(1, 1000\), "
                     r"all finite", out), out
    png = (tmp_path / "vitpe-demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_demo_on_a_checkpoint_compares_with_its_profile(tmp_path, capsys):
    src = tmp_path / "timm.pth"
    torch.save({"model": make_state("timm", grid=(4, 4))}, src)
    code = cli.main(["demo", str(src), "--image-size", "96", "-o", str(tmp_path / "d.png")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "rel RMSE vs profile" in out and "rel RMSE exact" not in out
    rows = _rows(out, "64x64 -> 96x96")
    assert float(rows["bicubic aa"][0]) == 0.0       # timm's profile is bicubic + antialias (fp32 table)
    assert float(rows["nearest"][0]) > 0.0
    assert "forward pass: skipped" in out and (tmp_path / "d.png").exists()


def test_demo_on_a_torchvision_checkpoint_runs_the_model(tmp_path, capsys):
    from torchvision.models import VisionTransformer
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=3)
    src = tmp_path / "tiny_vit.pth"
    torch.save(model.state_dict(), src)
    code = cli.main(["demo", str(src), "--image-size", "96", "--no-plot"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "forward pass: VisionTransformer(image_size=96, patch_size=16, num_layers=1" in out
    assert "logits (1, 3), all finite" in out
