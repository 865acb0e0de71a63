"""`vitpe resize --patch-size`: the patch-embedding kernel resampled and the
table resized to the new grid in one checkpoint (torchvision and timm key
layouts, nested or bare, torch or safetensors OUT), and its one-line errors
(the README lists them; test_cli_formats.py checks that they are asserted
here). Tiny random models built at the new patch size load the result."""
from __future__ import annotations

import pytest
import torch

import vitpe_ext
from vitpe_ext.command import cli
from vitpe_ext.integrations.patch_embed import resample_patch_embed
from vitpe_ext.integrations.provenance import read_provenance

from test_checkpoint import make_state
from test_patch_embed import _timm_vit, _torchvision_vit


# -- vitpe resize --patch-size ------------------------------------------------------

def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("vitpe resize: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("library,out_name", [("torchvision", "out.pth"), ("timm", "out.safetensors"),
                                              ("timm-nested", "out.pt")])
def test_command_changes_the_patch_and_the_model_loads(tmp_path, capsys, library, out_name):
    if library == "torchvision":
        sd, kernel_key, table_key, profile = _torchvision_vit(64, 16).state_dict(), "conv_proj.weight", \
            "encoder.pos_embedding", "torchvision"
        new_model = _torchvision_vit(64, 8)
    else:
        sd, kernel_key, table_key, profile = _timm_vit(64, 16).state_dict(), "patch_embed.proj.weight", \
            "pos_embed", "timm"
        new_model = _timm_vit(64, 8)
    obj = {"model": sd, "epoch": 1} if library.endswith("nested") else sd
    torch.save(obj, tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / out_name, "--patch-size", "8"], capsys)
    assert code == 0 and err == "", err
    assert f"{kernel_key} (32, 3, 16, 16) -> (32, 3, 8, 8): patch 16x16 -> 8x8" in out and "grid 4x4 -> 8x8" in out
    if out_name.endswith(".safetensors"):
        from safetensors.torch import load_file
        back = load_file(str(tmp_path / out_name))
    else:
        back = torch.load(tmp_path / out_name, weights_only=True)
        back = back["model"] if library.endswith("nested") else back
    assert torch.equal(back[kernel_key], resample_patch_embed(sd[kernel_key], 8))
    assert torch.equal(back[table_key], vitpe_ext.interpolate_pos_embed(sd[table_key], (8, 8), (4, 4), 1,
                                                                        profile=profile))
    new_model.load_state_dict(back, strict=True)
    assert new_model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    step = read_provenance(tmp_path / out_name)[table_key].last
    assert (step.old_patch, step.new_patch, step.old_grid, step.new_grid) == ((16, 16), (8, 8), (4, 4), (8, 8))


def test_command_patch_and_image_size_together(tmp_path, capsys):
    sd = _timm_vit(64, 16).state_dict()
    torch.save(sd, tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth", "--patch-size", "8",
                           "--image-size", "48x40"], capsys)
    assert code == 0, err
    model = _timm_vit((48, 40), 8)
    model.load_state_dict(torch.load(tmp_path / "a.pth", weights_only=True), strict=True)
    assert model(torch.randn(1, 3, 48, 40)).shape == (1, 5)
    # the grid may stay while the patch changes: only the kernel is resampled
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "b.pth", "--patch-size", "8",
                           "--image-size", "32"], capsys)
    assert code == 0, err
    assert "already grid 4x4" in out and "(32, 3, 16, 16) -> (32, 3, 8, 8)" in out
    back = torch.load(tmp_path / "b.pth", weights_only=True)
    assert torch.equal(back["pos_embed"], sd["pos_embed"])
    _timm_vit(32, 8).load_state_dict(back, strict=True)


def test_command_dry_run_and_equal_patch(tmp_path, capsys):
    torch.save(_timm_vit(64, 16).state_dict(), tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth", "--patch-size", "8", "--dry-run"],
                          capsys)
    assert code == 0 and "patch 16x16 -> 8x8" in out and "dry run: would write" in out
    assert not (tmp_path / "a.pth").exists()
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth", "--patch-size", "16"], capsys)
    assert code == 0 and "already grid 4x4" in out and "->" not in out.split("already")[0]


def test_command_hf_note_names_the_patch_size(tmp_path, capsys):
    torch.save(make_state("hf"), tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth", "--patch-size", "8"], capsys)
    assert code == 0, err
    assert 'set "image_size": 64 and "patch_size": 8 there' in out


@pytest.mark.parametrize("state,flags,needles", [
    ({"my_table": torch.randn(1, 17, 32)}, ["--key", "my_table", "--prefix-tokens", "1", "--patch-size", "14"],
     ["no patch-embedding kernel beside my_table; a new patch size resamples that kernel, and without it the "
      "image size is unknown too: pass --image-size to resize only the table for patch 14x14"]),
    ("timm-no-kernel", ["--patch-size", "8"],
     ["no patch-embedding kernel beside pos_embed (timm keeps it in a key ending with patch_embed.proj.weight)"]),
    ("timm-flat-kernel", ["--patch-size", "8"],
     ["patch_embed.proj.weight has shape (32, 768), not a conv kernel (out, in, ph, pw)"]),
    ("vit-b-16", ["--patch-size", "24"],
     ["the image height 224 (grid 14x14 x patch 16x16) is not a multiple of the new patch size 24; "
      "pass --image-size (e.g. 216 or 240)"]),
    ("vit-b-16", ["--patch-size", "16x24"],
     ["the image width 224 (grid 14x14 x patch 16x16) is not a multiple of the new patch size 24"]),
    ("timm", ["--patch-size", "8", "--image-size", "60"],
     ["image height 60 is not a multiple of the patch size 8: crop the images to 56"]),
    ("timm-wide-kernel", ["--patch-size", "8"],
     ["patch_embed.proj.weight (48, 3, 16, 16) float32 is not the patch embedding of pos_embed (32-wide tokens)"]),
    ("timm-nan-kernel", ["--patch-size", "8"],
     ["patch_embed.proj.weight has non-finite values (1 NaN, 0 Inf in output channel 3)",
      "(or pass --allow-nonfinite)"]),
])
def test_command_patch_errors(tmp_path, capsys, state, flags, needles):
    if state == "vit-b-16":
        state = make_state("timm", grid=(14, 14))  # ViT-B/16's layout at 224, 16 channels
    if isinstance(state, str):
        sd = _timm_vit(64, 16).state_dict()
        if state == "timm-no-kernel":
            del sd["patch_embed.proj.weight"]
        elif state == "timm-flat-kernel":
            sd["patch_embed.proj.weight"] = torch.randn(32, 768)
        elif state == "timm-wide-kernel":
            sd["patch_embed.proj.weight"] = torch.randn(48, 3, 16, 16)
        elif state == "timm-nan-kernel":
            sd["patch_embed.proj.weight"][3, 0, 2, 2] = float("nan")
        state = sd
    torch.save(state, tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth", *flags], capsys)
    _one_line_error(code, err, *needles)
    assert not (tmp_path / "a.pth").exists()


def test_command_needs_a_size(tmp_path, capsys):
    torch.save(_timm_vit(64, 16).state_dict(), tmp_path / "in.pth")
    code, out, err = _run(["resize", tmp_path / "in.pth", tmp_path / "a.pth"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "vitpe resize: error: give --image-size, --patch-size or both (see vitpe resize --help)"]
