"""`vitpe resize --old-grid TxHxW --grid TxHxW`: video/volume tables (prefix + T*H*W tokens,
MONAI UNETR, VideoMAE) through the op's rank-3 path, on synthetic checkpoints. The
output equals the op called directly, bit for bit; every refusal is one line and
writes nothing."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitpe_ext

from test_cli import assert_one_line_error, run

UNETR_KEY = "vit.patch_embedding.position_embeddings"  # MONAI: no prefix token


def unetr(tmp_path, name="unetr.pth"):
    torch.manual_seed(0)
    state = {UNETR_KEY: torch.randn(1, 2 * 3 * 4, 8), "vit.norm.weight": torch.randn(8)}
    path = tmp_path / name
    (save_file(state, path) if name.endswith(".safetensors") else torch.save(state, path))
    return path, state


def videomae(tmp_path):
    """timm-style learnable pos_embed with a class token in the table (prefix 1)."""
    torch.manual_seed(1)
    state = {"pos_embed": torch.randn(1, 1 + 2 * 3 * 3, 8), "cls_token": torch.randn(1, 1, 8)}
    path = tmp_path / "videomae.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("name", ["unetr.pth", "unetr.safetensors"])
def test_unetr_table_equals_the_op(tmp_path, capsys, name):
    src, state = unetr(tmp_path, name)
    out = tmp_path / ("out" + src.suffix)
    code, stdout, err = run(["resize", src, out, "--key", UNETR_KEY, "--old-grid", "2x3x4", "--grid", "4x6x5",
                             "--mode", "trilinear"], capsys)
    assert code == 0, err
    assert "grid 2x3x4 -> 4x6x5 (prefix 0" in stdout and "(1, 24, 8) -> (1, 120, 8)" in stdout
    got = load_file(out) if name.endswith(".safetensors") else torch.load(out, weights_only=True)
    want = vitpe_ext.interpolate_pos_embed(state[UNETR_KEY], [4, 6, 5], [2, 3, 4], 0, mode="bilinear")
    assert torch.equal(got[UNETR_KEY], want)
    assert torch.equal(got["vit.norm.weight"], state["vit.norm.weight"])  # the rest is kept


def test_default_method_is_the_families_profile(tmp_path, capsys):
    src, state = videomae(tmp_path)
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--old-grid", "2x3x3", "--grid", "4x3x5"], capsys)
    assert code == 0, err
    assert "prefix 1" in stdout and "timm:" in stdout
    want = vitpe_ext.interpolate_pos_embed(state["pos_embed"], [4, 3, 5], [2, 3, 3], 1, profile="timm")
    got = torch.load(out, weights_only=True)
    assert torch.equal(got["pos_embed"], want) and torch.equal(got["cls_token"], state["cls_token"])
    # a bicubic result differs from the trilinear one: the mode really reaches the op
    assert not torch.equal(want, vitpe_ext.interpolate_pos_embed(state["pos_embed"], [4, 3, 5], [2, 3, 3], 1,
                                                                   mode="bilinear"))


def test_dry_run_writes_nothing(tmp_path, capsys):
    src, _ = videomae(tmp_path)
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--old-grid", "2x3x3", "--grid", "4x3x5", "--dry-run"], capsys)
    assert code == 0, err
    assert "(1, 19, 8) -> (1, 61, 8): grid 2x3x3 -> 4x3x5" in stdout and "dry run: would write" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videomae.pth"]


@pytest.mark.parametrize("argv, message", [
    (["--old-grid", "2x3x3", "--image-size", "48"],
     "--image-size cannot set the frame count of a TxHxW table; give the new token grid with --grid TxHxW "
     "(and no --image-size)"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--image-size", "48"],
     "--image-size cannot set the frame count of a TxHxW table; give the new token grid with --grid TxHxW "
     "(and no --image-size)"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--patch-size", "16"],
     "--patch-size with a TxHxW grid is not supported (a 3-D patch kernel is not resampled); give the new "
     "token grid with --grid TxHxW alone"),
    (["--grid", "4x3x5"],
     "--grid needs the table's current grid: pass --old-grid TxHxW (a token count does not tell the frame "
     "count)"),
    (["--old-grid", "3x3", "--grid", "4x3x5"],
     "--old-grid 3x3 is a 2-D grid and --grid 4x3x5 a 3-D one; give both as TxHxW"),
    (["--old-grid", "2x3x4", "--grid", "4x3x5"], "videomae.pth: --old-grid 2x3x4 needs 24 tokens, but pos_embed has 19"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--prefix-tokens", "0"],
     "--old-grid 2x3x3 with --prefix-tokens 0 needs 18 tokens, but pos_embed has 19"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--sincos"],
     "--sincos is for 2-D tables; a TxHxW table is interpolated (drop it)"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--rel-pos", "even"],
     "--rel-pos is for 2-D tables; a TxHxW table is interpolated (drop it)"),
    (["--old-grid", "2x3x3", "--grid", "4x3x5", "--mode", "lanczos3", "--align-corners"],
     "align_corners=True is only valid for bilinear and bicubic, not mode 'lanczos3'"),
])
def test_refusals_write_nothing(tmp_path, capsys, argv, message):
    src, _ = videomae(tmp_path)
    code, _, err = run(["resize", src, tmp_path / "out.pth", *argv], capsys)
    assert_one_line_error(code, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videomae.pth"]


def test_malformed_grid_is_a_usage_error(tmp_path, capsys):
    src, _ = videomae(tmp_path)
    for argv, message in ((["--old-grid", "2x3x3", "--grid", "4x3"],
                           "--grid is a 3-D token grid TxHxW (e.g. 16x14x14), got '4x3'; a 2-D table takes "
                           "--image-size"),
                          (["--old-grid", "2x0x3", "--grid", "4x3x3"],
                           "--old-grid must be N, HxW or TxHxW with positive sizes, got '2x0x3'")):
        with pytest.raises(SystemExit) as exit_:
            run(["resize", src, tmp_path / "out.pth", *argv], capsys)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videomae.pth"]


def test_trilinear_on_a_2d_grid_is_refused(tmp_path, capsys):
    torch.manual_seed(2)
    src = tmp_path / "in.pth"
    torch.save({"pos_embed": torch.randn(1, 17, 8), "cls_token": torch.zeros(1, 1, 8)}, src)
    code, _, err = run(["resize", src, tmp_path / "out.pth", "--image-size", "48", "--patch-size", "8",
                        "--mode", "trilinear"], capsys)
    assert_one_line_error(code, err, "mode 'trilinear' is F.interpolate's name for grids of rank 3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pth"]


def test_inspect_reports_the_3d_grid(tmp_path, capsys):
    src, _ = videomae(tmp_path)
    code, stdout, err = run(["inspect", src, "--old-grid", "2x3x3"], capsys)
    assert code == 0, err
    row = next(line for line in stdout.splitlines() if line.startswith("pos_embed "))
    assert "(1, 19, 8)" in row and " 2x3x3 " in row and " 1 " in row  # 19 tokens = 1 prefix + 2*3*3
