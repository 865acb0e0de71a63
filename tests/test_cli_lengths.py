"""`vitpe resize --old-length L --length L`: 1-D tables (prefix + L tokens: a
TimeSformer time_embed, an audio/sequence ViT) through the op's rank-1 path,
on synthetic checkpoints. The output equals the op called directly with a
1-element grid, bit for bit; `--old-grid N` keeps meaning NxN; every refusal
is one line and writes nothing."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitpe_ext

from test_cli import assert_one_line_error, run


def time_embed(tmp_path, name="timesformer.pth"):
    """TimeSformer's (1, T, C) time table, no prefix token, under a key vitpe does not know."""
    torch.manual_seed(0)
    state = {"time_embed": torch.randn(1, 8, 16), "pos_embed": torch.randn(1, 17, 16),
             "cls_token": torch.randn(1, 1, 16)}
    path = tmp_path / name
    (save_file(state, path) if name.endswith(".safetensors") else torch.save(state, path))
    return path, state


def audio_vit(tmp_path):
    """A timm-style 1-D sequence table with a class token in it (prefix 1), found without --key."""
    torch.manual_seed(1)
    state = {"pos_embed": torch.randn(1, 1 + 20, 16), "cls_token": torch.randn(1, 1, 16)}
    path = tmp_path / "audio.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("mode", ["linear", "nearest", "bicubic", "area", "lanczos3"])
@pytest.mark.parametrize("name", ["timesformer.pth", "timesformer.safetensors"])
def test_time_embed_equals_the_op(tmp_path, capsys, mode, name):
    src, state = time_embed(tmp_path, name)
    out = tmp_path / ("out" + src.suffix)
    code, stdout, err = run(["resize", src, out, "--key", "time_embed", "--old-length", "8", "--length", "12",
                             "--mode", mode], capsys)
    assert code == 0, err
    assert "(1, 8, 16) -> (1, 12, 16): grid 8 -> 12 (prefix 0" in stdout
    got = load_file(out) if name.endswith(".safetensors") else torch.load(out, weights_only=True)
    want = vitpe_ext.interpolate_pos_embed(state["time_embed"], (12,), (8,), 0, mode=mode)
    assert torch.equal(got["time_embed"], want)
    for key in ("pos_embed", "cls_token"):  # the rest is kept, the 2-D pos_embed too
        assert torch.equal(got[key], state[key])


def test_shrinking_with_antialias_and_a_table_without_batch(tmp_path, capsys):
    torch.manual_seed(2)
    table = torch.randn(2 + 30, 8)  # (P + L, C): two prefix tokens, no batch dimension
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save({"seq_pos": table}, src)
    code, stdout, err = run(["resize", src, out, "--key", "seq_pos", "--old-length", "30", "--length", "12",
                             "--mode", "bicubic", "--antialias"], capsys)
    assert code == 0, err
    assert "prefix 2" in stdout
    want = vitpe_ext.interpolate_pos_embed(table, (12,), (30,), 2, mode="bicubic", antialias=True)
    assert torch.equal(torch.load(out, weights_only=True)["seq_pos"], want) and want.shape == (14, 8)


def test_default_method_is_the_families_profile(tmp_path, capsys):
    src, state = audio_vit(tmp_path)
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--old-length", "20", "--length", "32"], capsys)
    assert code == 0, err
    assert "grid 20 -> 32 (prefix 1" in stdout and "timm:" in stdout
    want = vitpe_ext.interpolate_pos_embed(state["pos_embed"], (32,), (20,), 1, profile="timm")
    got = torch.load(out, weights_only=True)
    assert torch.equal(got["pos_embed"], want) and torch.equal(got["cls_token"], state["cls_token"])


def test_dry_run_writes_nothing(tmp_path, capsys):
    src, _ = audio_vit(tmp_path)
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--old-length", "20", "--length", "32", "--dry-run"], capsys)
    assert code == 0, err
    assert "(1, 21, 16) -> (1, 33, 16): grid 20 -> 32" in stdout and "dry run: would write" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.pth"]


@pytest.mark.parametrize("argv, message", [
    (["--length", "32"],
     "--length needs the table's current length: pass --old-length L (the token count does not tell the prefix "
     "tokens from the sequence)"),
    (["--old-length", "20", "--image-size", "48"],
     "--old-length is the current length of a 1-D table; give the new one with --length L (--image-size and "
     "--grid are for 2-D/3-D grids)"),
    (["--old-length", "20", "--length", "32", "--image-size", "48"],
     "--image-size does not apply to a 1-D table (--length/--old-length); drop it"),
    (["--old-length", "20", "--length", "32", "--grid", "2x3x3"],
     "--grid does not apply to a 1-D table (--length/--old-length); drop it"),
    (["--old-length", "20", "--length", "32", "--sincos"],
     "--sincos does not apply to a 1-D table (--length/--old-length); drop it"),
    (["--old-length", "8", "--length", "16", "--rel-pos", "even"],
     "--rel-pos does not apply to a 1-D table (--length/--old-length); drop it"),
    (["--old-length", "20", "--old-grid", "20", "--length", "32"],
     "--old-length is a 1-D table's length and --old-grid a 2-D/3-D grid; give one (--old-grid 20x20 means that "
     "grid, not a length)"),
    (["--old-length", "24", "--length", "32"], "audio.pth: --old-length 24 needs 24 tokens, but pos_embed has 21"),
    (["--old-length", "20", "--length", "32", "--mode", "trilinear"],
     "mode 'trilinear' is F.interpolate's name for grids of rank 3"),
])
def test_refusals_write_nothing(tmp_path, capsys, argv, message):
    src, _ = audio_vit(tmp_path)
    code, _, err = run(["resize", src, tmp_path / "out.pth", *argv], capsys)
    assert_one_line_error(code, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.pth"]


def test_old_grid_n_still_means_n_by_n(tmp_path, capsys):
    """--old-grid 20 is a 20x20 grid (400 tokens), never a length of 20."""
    src, _ = audio_vit(tmp_path)
    code, _, err = run(["resize", src, tmp_path / "out.pth", "--old-grid", "20", "--image-size", "48",
                        "--patch-size", "8"], capsys)
    assert_one_line_error(code, err, "--old-grid 20x20 needs 400 tokens, but pos_embed has 21")


@pytest.mark.parametrize("argv", [["--length", "0"], ["--length", "x"], ["--old-length", "-3"]])
def test_malformed_length_is_a_usage_error(tmp_path, capsys, argv):
    src, _ = audio_vit(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run(["resize", src, tmp_path / "out.pth", *argv], capsys)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "must be a positive number of tokens, got" in err
    assert len(err.strip().splitlines()) == 1


def test_inspect_reports_the_1d_grid(tmp_path, capsys):
    src, _ = audio_vit(tmp_path)
    code, stdout, err = run(["inspect", src, "--old-length", "20"], capsys)
    assert code == 0, err
    row = next(line for line in stdout.splitlines() if line.startswith("pos_embed "))
    assert "(1, 21, 16)" in row and " 20 " in row and " 1 " in row  # 21 tokens = 1 prefix + 20
