"""`vitpe resize` / `vitpe inspect` on timm EVA checkpoints (tiny random
timm.models.eva.Eva, no downloads): the absolute pos_embed with its prefix
tokens (class, registers), BEiT-layout relative-position-bias tables under
blocks.*.attn.rel_pos., and RoPE, which has no table and must come through
untouched. The output loads with strict=True into the Eva built at the new
size (through timm's checkpoint_filter_fn where timm's loader would use it)."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
from timm.layers.pos_embed_rel import RelPosBias  # noqa: E402
from timm.models import eva  # noqa: E402

import vitpe_ext  # noqa: E402
import vitpe_ext.timm as vitpe_timm  # noqa: E402

from test_cli import assert_one_line_error, run  # noqa: E402

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)


def tiny_eva(img_size, **kw):
    torch.manual_seed(0)
    return eva.Eva(img_size=img_size, **TINY, **kw).eval()


def resize(tmp_path, capsys, sd, *argv):
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(sd, src)
    code, stdout, err = run(["resize", src, out, *argv], capsys)
    assert code == 0, err
    return torch.load(out, weights_only=True), stdout


@pytest.mark.parametrize("kw,prefix", [({}, 1), (dict(num_reg_tokens=2), 3), (dict(no_embed_class=True), 0)])
def test_pos_embed_with_prefix_tokens(tmp_path, capsys, kw, prefix):
    old = dict(tiny_eva(32, **kw).state_dict())
    old["pos_embed"] = torch.randn(old["pos_embed"].shape)
    new, stdout = resize(tmp_path, capsys, old, "--image-size", "48")
    assert f"grid 4x4 -> 6x6 (prefix {prefix}" in stdout
    want = vitpe_ext.interpolate_pos_embed(old["pos_embed"], (6, 6), (4, 4), prefix, profile="timm")
    assert torch.equal(new["pos_embed"], want)
    model = tiny_eva(48, **kw)
    model.load_state_dict(new, strict=True)
    # timm's own loader leaves the resized table as it is (it is already at the model's grid)
    filtered = eva.checkpoint_filter_fn(dict(new), model)
    assert torch.equal(filtered["pos_embed"], new["pos_embed"])
    # and the op's "timm" profile is what that loader would have computed from the original
    torch.testing.assert_close(eva.checkpoint_filter_fn(dict(old), model)["pos_embed"], want)


def with_rel_pos(sd, window, heads=2):
    """The per-block tables of an EVA built with use_rel_pos_bias=True (timm's RelPosBias with a class
    token: (2W-1)^2 + 3 rows), and the index buffers older checkpoints stored. timm 1.0.31's Eva has
    no such option, so the tables are added to its state dict."""
    sd = dict(sd)
    for block in range(TINY["depth"]):
        bias = RelPosBias((window, window), heads, prefix_tokens=1)
        sd[f"blocks.{block}.attn.rel_pos.relative_position_bias_table"] = torch.randn(
            bias.relative_position_bias_table.shape, generator=torch.Generator().manual_seed(block))
        sd[f"blocks.{block}.attn.rel_pos.relative_position_index"] = bias.relative_position_index.clone()
    return sd


def test_rel_pos_tables_and_pos_embed_both_resized(tmp_path, capsys):
    old = with_rel_pos(tiny_eva(32).state_dict(), 4)
    new, stdout = resize(tmp_path, capsys, old, "--image-size", "48")
    assert "grid 4x4 -> 6x6" in stdout and "beit window 4x4 -> 6x6" in stdout
    assert "2 relative_position_index/attn_mask buffers dropped" in stdout
    assert not [k for k in new if k.endswith("relative_position_index")]
    for block in range(TINY["depth"]):
        key = f"blocks.{block}.attn.rel_pos.relative_position_bias_table"
        # BEiT's geometric resize (EVA's tables are BEiT's; timm's BEiT filter runs it), by default
        want = vitpe_timm.resize_rel_pos_bias_table(old[key], (6, 6), (11 * 11 + 3, 2), old_window_size=(4, 4))
        assert torch.equal(new[key], want)
        RelPosBias((6, 6), 2, prefix_tokens=1).load_state_dict(
            {"relative_position_bias_table": new.pop(key)}, strict=True)
    tiny_eva(48).load_state_dict(new, strict=True)


def test_a_rel_pos_table_without_the_class_rows_is_not_guessed(tmp_path, capsys):
    """timm's RelPosBias without a class token is GCViT's, whose window is not the patch grid."""
    sd = dict(tiny_eva(32).state_dict())
    sd["blocks.0.attn.rel_pos.relative_position_bias_table"] = torch.randn(7 * 7, 2)
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(sd, src)
    code, _, err = run(["resize", src, out, "--image-size", "48"], capsys)
    assert_one_line_error(code, err, "blocks.0.attn.rel_pos.relative_position_bias_table: a relative-position-bias "
                                     "table that vitpe resize does not know")
    assert not out.exists()


def with_stored_rope(sd, grid):
    """RoPE buffers as the original EVA-02 checkpoints store them (timm's checkpoint_filter_fn drops them)."""
    sd = dict(sd)
    sd["rope.freqs_cos"] = torch.randn(grid * grid, 16)
    sd["rope.freqs_sin"] = torch.randn(grid * grid, 16)
    return sd


def test_rope_beside_pos_embed_is_left_untouched(tmp_path, capsys):
    old = with_stored_rope(tiny_eva(32, use_rot_pos_emb=True).state_dict(), 4)
    new, stdout = resize(tmp_path, capsys, old, "--image-size", "48")
    assert new["pos_embed"].shape == (1, 37, 32) and "rope." not in stdout
    assert all(torch.equal(new[k], old[k]) for k in old if k != "pos_embed")
    model = tiny_eva(48, use_rot_pos_emb=True)
    model.load_state_dict(eva.checkpoint_filter_fn(new, model), strict=True)


@pytest.mark.parametrize("kw,stored", [
    (dict(use_rot_pos_emb=True, use_abs_pos_emb=False), "rope.freqs_cos"),
    (dict(use_rot_pos_emb=True, use_abs_pos_emb=False, rope_type="mixed"), "rope.freqs"),
    (dict(use_rot_pos_emb=True, use_abs_pos_emb=False), "rope.pos_embed"),  # not taken for a timm pos_embed
])
@pytest.mark.parametrize("command", ["resize", "inspect"])
def test_rope_only_checkpoint_is_refused_not_mangled(tmp_path, capsys, kw, stored, command):
    sd = dict(tiny_eva(32, **kw).state_dict())
    if stored not in sd:
        sd[stored] = torch.randn(16, 16)
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(sd, src)
    argv = ["resize", src, out, "--image-size", "48"] if command == "resize" else ["inspect", src]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, f"{src}: rope.", "a rotary position embedding (RoPE, as EVA-02's) is computed "
                          "for any grid, not a table: there is nothing to resize; create the model with the new "
                          "img_size and load the checkpoint as it is (timm's checkpoint_filter_fn drops stored "
                          "rope buffers)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pth"]


def test_inspect_lists_both_kinds(tmp_path, capsys):
    src = tmp_path / "in.pth"
    torch.save(with_rel_pos(tiny_eva(32).state_dict(), 4), src)
    code, stdout, err = run(["inspect", src], capsys)
    assert code == 0, err
    assert "blocks.1.attn.rel_pos.relative_position_bias_table: beit relative-position-bias table (52, 2)" in stdout
    assert any(line.startswith("pos_embed ") and "(1, 17, 32)" in line for line in stdout.splitlines())
