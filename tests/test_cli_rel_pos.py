"""`vitpe resize` / `vitpe inspect` on relative-position-bias tables of tiny
random timm models (Swin v1, BEiT; no downloads): the output loads into the
model built at the new size with strict=True, and the keys are what timm's
checkpoint_filter_fn keeps. Each table equals what timm's checkpoint_filter_fn
makes of the original (its geometric resize_rel_pos_bias_table, to float32
rounding) by default, and timm's plain-bicubic resize_rel_pos_bias_table_simple
with --rel-pos even."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
from timm.layers import pos_embed_rel  # noqa: E402
from timm.models import beit, swin_transformer, swin_transformer_v2  # noqa: E402

from vitpe_ext.command import cli  # noqa: E402

from test_cli import assert_one_line_error, run  # noqa: E402


def timm_simple():
    fn = pos_embed_rel.resize_rel_pos_bias_table_simple
    assert fn.__module__.startswith("timm"), "timm's function was replaced (vitpe_ext.timm.patch())"
    return fn


def tiny_beit(img_size):
    torch.manual_seed(0)
    return beit.Beit(img_size=img_size, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0,
                     use_abs_pos_emb=False, use_rel_pos_bias=True).eval()


def tiny_swin(img_size, window_size):
    torch.manual_seed(0)
    return swin_transformer.SwinTransformer(img_size=img_size, patch_size=2, window_size=window_size, embed_dim=16,
                                            depths=(2, 2, 2), num_heads=(1, 2, 2), num_classes=0).eval()


def with_old_buffers(model):
    """The state dict as original BEiT/Swin checkpoints store it: index buffers (and Swin's
    attn_mask) included, which timm >= 0.9 keeps non-persistent."""
    sd = dict(model.state_dict())
    for name, buf in model.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")) and buf is not None:
            sd[name] = buf.clone()
    for name, p in sd.items():  # a random table: BEiT initialises it to zeros, which any resize keeps
        if name.endswith("relative_position_bias_table"):
            sd[name] = torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name)))
    return sd


def resize(tmp_path, capsys, sd, *argv):
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(sd, src)
    code, stdout, err = run(["resize", src, out, *argv], capsys)
    assert code == 0, err
    return torch.load(out, weights_only=True), stdout


def check_against_timm(old_sd, new_sd, new_model, filter_fn, even=False):
    new_model.load_state_dict(new_sd, strict=True)
    filtered = filter_fn(dict(old_sd), new_model)
    assert set(new_sd) == set(filtered)
    simple = timm_simple()
    for name, table in new_sd.items():
        if name.endswith("relative_position_bias_table"):
            module = new_model.get_submodule(name[:-len(".relative_position_bias_table")])
            # timm's geometric resize (float32 distance arithmetic) and the op's at its positions: 3e-6 x max
            want = simple(old_sd[name], tuple(module.window_size), tuple(table.shape)) if even else filtered[name]
            scale = old_sd[name].abs().max()
            torch.testing.assert_close(table, want, atol=(2e-6 if even else 3e-6) * scale, rtol=0)
        else:
            assert torch.equal(table, old_sd[name]), name  # every other key bit for bit
    with torch.no_grad():
        new_model(torch.randn(1, 3, *new_model.patch_embed.img_size))


def test_beit_image_size_resizes_every_table(tmp_path, capsys):
    old_sd = with_old_buffers(tiny_beit(32))
    assert any(k.endswith("relative_position_index") for k in old_sd)
    new_sd, stdout = resize(tmp_path, capsys, old_sd, "--image-size", "48")
    assert "window 4x4 -> 6x6" in stdout and "buffers dropped" in stdout
    assert new_sd["blocks.0.attn.relative_position_bias_table"].shape == (11 * 11 + 3, 2)
    check_against_timm(old_sd, new_sd, tiny_beit(48), beit.checkpoint_filter_fn)


def test_swin_window_clamped_per_stage_like_timm(tmp_path, capsys):
    old_sd = with_old_buffers(tiny_swin(32, 4))
    assert any(k.endswith("attn_mask") for k in old_sd)
    # grid 24: stages 24, 12, 6; window 8 fits the first two, the last is clamped to 6
    new_sd, stdout = resize(tmp_path, capsys, old_sd, "--image-size", "48", "--window", "8")
    model = tiny_swin(48, 8)
    assert [tuple(layer.blocks[0].window_size) for layer in model.layers] == [(8, 8), (8, 8), (6, 6)]
    assert "window 4x4 -> 6x6" in stdout and "window 4x4 -> 8x8" in stdout
    check_against_timm(old_sd, new_sd, model, swin_transformer.checkpoint_filter_fn)


@pytest.mark.parametrize("family", ["beit", "swin"])
def test_rel_pos_even_is_timms_simple_resize(tmp_path, capsys, family):
    old_sd = with_old_buffers(tiny_beit(32) if family == "beit" else tiny_swin(32, 4))
    argv = ["--image-size", "48", "--rel-pos", "even"] + ([] if family == "beit" else ["--window", "6"])
    new_sd, stdout = resize(tmp_path, capsys, old_sd, *argv)
    assert "per-axis bicubic of the offset grid" in stdout
    model = tiny_beit(48) if family == "beit" else tiny_swin(48, 6)
    check_against_timm(old_sd, new_sd, model,
                       (beit if family == "beit" else swin_transformer).checkpoint_filter_fn, even=True)
    # --mode applies with --rel-pos even: bilinear is another table
    new_bilinear, _ = resize(tmp_path, capsys, old_sd, *argv, "--mode", "bilinear", "--force")
    name = next(k for k in new_sd if k.endswith("relative_position_bias_table"))
    assert not torch.equal(new_bilinear[name], new_sd[name])


def test_swin_default_window_is_the_checkpoints(tmp_path, capsys):
    old_sd = with_old_buffers(tiny_swin(32, 4))
    # grid 12: stages 12, 6, 3; window 4 stays except the last stage, clamped to 3
    new_sd, _ = resize(tmp_path, capsys, old_sd, "--image-size", "24")
    check_against_timm(old_sd, new_sd, tiny_swin(24, 4), swin_transformer.checkpoint_filter_fn)


def test_dry_run_and_inspect(tmp_path, capsys):
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(with_old_buffers(tiny_swin(32, 4)), src)
    code, stdout, err = run(["resize", src, out, "--image-size", "48", "--window", "8", "--dry-run"], capsys)
    assert code == 0 and "would write" in stdout and not out.exists(), err
    code, stdout, err = run(["inspect", src], capsys)
    assert code == 0, err
    assert "layers.2.blocks.0.attn.relative_position_bias_table: swin" in stdout and "window 4x4" in stdout


@pytest.mark.parametrize("case", ["beit-window", "swinv2", "window-without-tables", "patch-size", "mode-without-rel-pos",
                                  "rel-pos-without-tables", "mode-for-no-absolute-table"])
def test_refused_with_one_line(tmp_path, capsys, case):
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    argv = ["--image-size", "48"]
    if case == "beit-window":
        sd, argv, needle = with_old_buffers(tiny_beit(32)), argv + ["--window", "6"], \
            "--window: BEiT's attention window is its patch grid (image / patch); give --image-size only"
    elif case == "swinv2":
        sd = swin_transformer_v2.SwinTransformerV2(img_size=32, patch_size=2, window_size=4, embed_dim=16,
                                                   depths=(1, 1), num_heads=(1, 2), num_classes=0).state_dict()
        needle = "continuous position bias"
    elif case == "window-without-tables":
        sd = {"pos_embed": torch.randn(1, 17, 8), "cls_token": torch.zeros(1, 1, 8),
              "patch_embed.proj.weight": torch.randn(8, 3, 8, 8)}
        argv, needle = argv + ["--window", "6"], "has none"
    elif case == "mode-without-rel-pos":
        sd, argv = with_old_buffers(tiny_beit(32)), argv + ["--mode", "bilinear"]
        needle = ("--mode with relative-position-bias tables (blocks.0.attn.relative_position_bias_table, ...): "
                  "timm's recipe for them (--rel-pos timm, the default) is bilinear at fixed offsets; pass "
                  "--rel-pos even to resize them with --mode, or --rel-pos timm to apply it to the absolute "
                  "table alone")
    elif case == "mode-for-no-absolute-table":
        sd, argv = with_old_buffers(tiny_beit(32)), argv + ["--rel-pos", "timm", "--mode", "bilinear"]
        needle = ("--mode with --rel-pos timm applies to absolute tables, and", "has none (only "
                  "relative-position-bias tables); drop it, or pass --rel-pos even")
    elif case == "rel-pos-without-tables":
        sd = {"pos_embed": torch.randn(1, 17, 8), "cls_token": torch.zeros(1, 1, 8),
              "patch_embed.proj.weight": torch.randn(8, 3, 8, 8)}
        argv, needle = argv + ["--rel-pos", "even"], "--rel-pos chooses how relative-position-bias tables are resized"
    else:
        sd, argv, needle = with_old_buffers(tiny_beit(32)), ["--patch-size", "4"], "--patch-size with relative"
    torch.save(sd, src)
    code, _, err = run(["resize", src, out, *argv], capsys)
    assert_one_line_error(code, err, *([needle] if isinstance(needle, str) else needle))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.pth"]
