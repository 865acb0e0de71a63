"""`vitpe resize` / `vitpe inspect` on MONAI ViT/UNETR state dicts (synthetic:
MONAI is not a dependency; the keys and shapes are its PatchEmbeddingBlock's):
vit.patch_embedding.position_embeddings (1, N, hidden), no class token, is
found without --key. Its grid is never guessed from N for a volume (216 =
6x6x6 = 12x6x3; 64 = 8x8 = 4x4x4): only a Conv2d patch kernel makes it a
square 2-D grid; otherwise --old-grid is asked for, in one line."""
from __future__ import annotations

import pytest
import torch

import vitpe_ext

from test_cli import assert_one_line_error, run

KEY = "vit.patch_embedding.position_embeddings"
KERNEL = "vit.patch_embedding.patch_embeddings.weight"


def unetr(tmp_path, tokens=216, kernel=(8, 1, 16, 16, 16), name="unetr.pth"):
    """kernel: the Conv3d/Conv2d weight of proj_type "conv"; None: a "perceptron" patch embedding
    (a Linear under patch_embeddings.1)."""
    torch.manual_seed(0)
    state = {KEY: torch.randn(1, tokens, 8), "vit.norm.weight": torch.randn(8)}
    if kernel is None:
        state["vit.patch_embedding.patch_embeddings.1.weight"] = torch.randn(8, 16 * 16 * 16)
    else:
        state[KERNEL] = torch.randn(kernel)
    path = tmp_path / name
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("mode", [None, "trilinear"])
def test_volume_table_found_without_key(tmp_path, capsys, mode):
    src, state = unetr(tmp_path)
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--old-grid", "6x6x6", "--grid", "8x8x8",
                             *(["--mode", mode] if mode else [])], capsys)
    assert code == 0, err
    assert f"{KEY} (1, 216, 8) -> (1, 512, 8): grid 6x6x6 -> 8x8x8 (prefix 0" in stdout and "family monai" in stdout
    settings = {"mode": "bilinear"} if mode else {"profile": "hf"}  # no library recipe: hf's plain bicubic
    want = vitpe_ext.interpolate_pos_embed(state[KEY], [8, 8, 8], [6, 6, 6], 0, **settings)
    got = torch.load(out, weights_only=True)
    assert torch.equal(got[KEY], want)
    assert all(torch.equal(got[k], state[k]) for k in state if k != KEY)


@pytest.mark.parametrize("tokens,kernel,what,example", [
    (216, (8, 1, 16, 16, 16), "a 3-D patch kernel", "6x6x6"),
    (64, (8, 1, 16, 16, 16), "a 3-D patch kernel", "4x4x4"),           # 64 = 8x8 too: not taken for 2-D
    (64, None, "no Conv2d patch kernel beside it", "4x4x4"),
    (144, None, "no Conv2d patch kernel beside it", "6x6x6 for a 96^3 volume in 16^3 patches"),  # 6x6x4 = 12x12
])
@pytest.mark.parametrize("command", ["resize", "inspect"])
def test_grid_not_guessed_from_the_token_count(tmp_path, capsys, tokens, kernel, what, example, command):
    src, _ = unetr(tmp_path, tokens, kernel)
    out = tmp_path / "out.pth"
    argv = ["resize", src, out, "--image-size", "128"] if command == "resize" else ["inspect", src]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, f"{KEY} is a MONAI table of {tokens} tokens ({what}), and a token count does "
                          f"not tell a volume's TxHxW from another (or from a 2-D HxW); pass --old-grid TxHxW "
                          f"(e.g. {example}) or --old-grid HxW")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unetr.pth"]


def test_2d_table_with_a_conv2d_kernel_is_a_square_grid(tmp_path, capsys):
    """spatial_dims=2: the Conv2d kernel says the grid is 2-D and gives the patch size."""
    src, state = unetr(tmp_path, 64, (8, 3, 16, 16))
    out = tmp_path / "out.pth"
    code, stdout, err = run(["resize", src, out, "--image-size", "192"], capsys)
    assert code == 0, err
    assert "grid 8x8 -> 12x12 (prefix 0, patch 16x16" in stdout
    want = vitpe_ext.interpolate_pos_embed(state[KEY], (12, 12), (8, 8), 0, profile="hf")
    assert torch.equal(torch.load(out, weights_only=True)[KEY], want)


def test_inspect_with_the_old_grid(tmp_path, capsys):
    src, _ = unetr(tmp_path)
    code, stdout, err = run(["inspect", src, "--old-grid", "6x6x6"], capsys)
    assert code == 0, err
    row = next(line for line in stdout.splitlines() if line.startswith(KEY))
    assert "(1, 216, 8)" in row and "monai -> hf" in row and " 6x6x6 " in row
    # a 3-D kernel gives no 2-D patch size: neither a "?" nor a footer claiming one
    assert " ? " not in row and "patch size from" not in stdout
