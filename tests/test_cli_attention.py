"""`vitpe plot --attention CKPT [IMAGE]` end to end on tiny random ViT
checkpoints (torchvision and timm), the models it rebuilds, and its errors
(one line, nothing written)."""
from __future__ import annotations

import struct

import pytest
import timm
import torch
from PIL import Image
from torchvision.models import VisionTransformer

import vitpe_ext
from vitpe_ext.command import cli
from vitpe_ext.command.attention_plot import correlation, fit_image, load_image
from vitpe_ext.command.checkpoint import describe, load_checkpoint, select_keys
from vitpe_ext.command.rebuild import rebuild
from vitpe_ext.command.resizing import Method
from vitpe_ext.integrations.attention import class_token_attention

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tv_model(seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                             num_classes=5).eval()


@pytest.fixture
def tv_ckpt(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save({"model": {"module." + k: v for k, v in tv_model().state_dict().items()}, "num_heads": 2}, path)
    return path


@pytest.fixture
def timm_ckpt(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=16,
                              depth=2, num_heads=2, reg_tokens=2, num_classes=3)
    path = tmp_path / "timm.safetensors"
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(path))
    return path


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as image:  # the whole file decodes
        image.load()
        assert image.size == (width, height)
    return width, height


def no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".vitpe-tmp")]


# -- end to end -------------------------------------------------------------------------

def test_random_image_torchvision(tmp_path, tv_ckpt, capsys):
    out = tmp_path / "att.png"
    code, stdout, err = run(["plot", "--attention", tv_ckpt, "-o", out, "--modes", "nearest,bicubic,torchvision"],
                            capsys)
    assert code == 0, err
    width, height = png_size(out)
    assert 600 <= width <= 4000 and 400 <= height <= 2000 and width > height  # 4 columns x 3 rows
    assert "random image" in stdout and "2 heads (recorded in the checkpoint)" in stdout
    assert "grid 4x4 -> 8x8" in stdout  # default: twice the grid
    lines = {line.split("  ")[0]: line.split() for line in stdout.splitlines()}
    assert {"checkpoint size", "nearest", "bicubic", "torchvision: bicubic ac"} <= set(lines)
    assert no_temp_files(tmp_path)

    # the checkpoint-size row is the model's own attention on the same image
    model = tv_model()
    _, x = fit_image(load_image(None, (64, 64)), (32, 32), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 3)
    maps = class_token_attention(model, x)
    row = lines["checkpoint size"]
    assert row[3] == f"{float(maps.last.sum()):.3f}" and row[5] == f"{float(maps.rollout.sum()):.3f}"


def test_user_image_non_square_size(tmp_path, tv_ckpt, capsys):
    image = tmp_path / "cat.png"
    Image.new("RGB", (50, 30), (200, 40, 40)).save(image)  # a red picture, wider than tall
    out = tmp_path / "att.png"
    code, stdout, err = run(["plot", "--attention", tv_ckpt, image, "-o", out, "--image-size", "48x64"], capsys)
    assert code == 0, err
    png_size(out)
    assert "image cat.png" in stdout and "random" not in stdout
    assert "grid 4x4 -> 6x8" in stdout
    # default methods: the checkpoint's profile, then a few plain modes
    assert "torchvision: bicubic ac" in stdout and "\nnearest " in stdout and "\nbicubic " in stdout


def test_timm_checkpoint_inferred_and_by_name(tmp_path, timm_ckpt, capsys):
    out = tmp_path / "t.png"
    code, stdout, err = run(["plot", "--attention", timm_ckpt, "-o", out, "--modes", "bilinear",
                             "--num-heads", "2", "--image-size", "40x24"], capsys)
    assert code == 0, err
    png_size(out)
    assert "reg_tokens=2" in stdout and "3 prefix token(s)" in stdout and "grid 4x4 -> 5x3" in stdout


def test_timm_arch_by_name(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4)
    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "t.png"
    code, stdout, err = run(["plot", "--attention", ckpt, "--arch", "vit_tiny_patch16_224", "-o", out,
                             "--modes", "bicubic"], capsys)
    assert code == 0, err
    assert "timm vit_tiny_patch16_224(img_size=32x32, num_classes=4)" in stdout
    png_size(out)


# -- the rebuilt models use the table `vitpe resize` would write ---------------------------

@pytest.mark.parametrize("which", ["tv", "timm"])
def test_resized_models_carry_the_method_table(which, tv_ckpt, timm_ckpt):
    ckpt = load_checkpoint(tv_ckpt if which == "tv" else timm_ckpt)
    emb = describe(ckpt, select_keys(ckpt, None)[0])
    rebuilt = rebuild(ckpt, emb, None, 2)
    method = Method(mode="lanczos3")
    model = rebuilt.resized((5, 3), method)
    expected = vitpe_ext.interpolate_pos_embed(ckpt.get(emb.key), (5, 3), emb.grid, emb.prefix_tokens,
                                               mode="lanczos3")
    if which == "tv":
        got = model._vitpe_resizer(model.encoder.pos_embedding, (5, 3))
    else:
        got = model.pos_embed
    assert torch.equal(got.detach(), expected)
    maps = class_token_attention(model, torch.randn(1, 3, 40, 24))
    assert maps.grid == (5, 3)


@pytest.mark.parametrize("options", [
    dict(),
    dict(reg_tokens=4, class_token=True, init_values=1e-5, qk_norm=True),
    dict(class_token=True, global_pool="avg", fc_norm=True),
    dict(no_embed_class=True, qkv_bias=False),
    dict(pre_norm=True, final_norm=False, reg_tokens=1),
    dict(mlp_ratio=2.0, depth=3, num_classes=0),
])
def test_timm_layouts_read_off_the_weights(tmp_path, options):
    """The VisionTransformer read off the weights is the one that made them:
    the same state dict, the same output."""
    kwargs = dict(img_size=(32, 24), patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3)
    kwargs.update(options)
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    emb = describe(ckpt, select_keys(ckpt, None)[0], old_grid=(4, 3))
    rebuilt = rebuild(ckpt, emb, None, 2)
    assert rebuilt.model.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.model(x), model(x), rtol=0, atol=0)


def test_correlation():
    a = torch.arange(16.0).reshape(4, 4)
    assert correlation(a, a) == pytest.approx(1.0)
    assert correlation(-a, a) == pytest.approx(-1.0)
    up = a.repeat_interleave(2, 0).repeat_interleave(2, 1)  # the same map on a 2x finer grid
    assert correlation(up, a) == pytest.approx(1.0)
    assert correlation(torch.ones(4, 4), a) != correlation(torch.ones(4, 4), a)  # NaN: a constant map


# -- errors: one line, nothing written -------------------------------------------------------

def _one_line(code, err, status, *needles):
    lines = err.strip().splitlines()
    assert code == status and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vitpe plot: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", ["missing ckpt", "missing image", "unreadable image", "image is a folder",
                                  "not png", "image without --attention", "hf checkpoint", "heads",
                                  "arch does not fit", "heads unknown", "no class token"])
def test_errors(tmp_path, tv_ckpt, timm_ckpt, capsys, case):
    out = tmp_path / "o.png"
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    torch.manual_seed(0)
    pooled = tmp_path / "avg.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, class_token=False,
                                 global_pool="avg", reg_tokens=1).state_dict(), pooled)
    hf = tmp_path / "hf.pth"
    torch.save({"embeddings.position_embeddings": torch.randn(1, 17, 8),
                "embeddings.patch_embeddings.projection.weight": torch.randn(8, 3, 8, 8)}, hf)
    argv, status, needles = {
        "missing ckpt": (["plot", "--attention", tmp_path / "nope.pth", "-o", out], 1, ["nope.pth: no such file"]),
        "missing image": (["plot", "--attention", tv_ckpt, tmp_path / "x.jpg", "-o", out], 1,
                          ["x.jpg: no such image file"]),
        "unreadable image": (["plot", "--attention", tv_ckpt, text, "-o", out], 1,
                             ["notes.png: unreadable image (not an image file PIL can read)"]),
        "image is a folder": (["plot", "--attention", tv_ckpt, tmp_path, "-o", out], 1, ["is a directory"]),
        "not png": (["plot", "--attention", tv_ckpt, "-o", tmp_path / "o.pdf"], 1,
                    ["o.pdf: the attention plot is written as PNG"]),
        "image without --attention": (["plot", tv_ckpt, text, "-o", out], 1, ["IMAGE: only with --attention"]),
        "hf checkpoint": (["plot", "--attention", hf, "-o", out], 1,
                          ["hf table; vitpe runs torchvision and timm ViTs only"]),
        "heads": (["plot", "--attention", tv_ckpt, "--num-heads", "3", "-o", out], 1,
                  ["--num-heads 3 does not divide the model width 16"]),
        "arch does not fit": (["plot", "--attention", tv_ckpt, "--arch", "vit_b_16", "-o", out], 1,
                              ["the weights do not fit torchvision vit_b_16", "120 missing (e.g. encoder.layers.encoder_layer_2.ln_1.weight)", "of another shape, checkpoint vs model (e.g. class_token (1, 1, 16) vs (1, 1, 768))"]),
        "heads unknown": (["plot", "--attention", timm_ckpt, "-o", out], 1,
                          ["the head count is not in the weights", "width 16 has no standard one; pass --num-heads"]),
        "no class token": (["plot", "--attention", pooled, "-o", out], 1,
                           ["has no class token", "no class-token attention to map"]),
    }[case]
    code, _, err = run(argv, capsys)
    _one_line(code, err, status, *needles)
    assert not out.exists() and not (tmp_path / "o.pdf").exists() and no_temp_files(tmp_path)


@pytest.mark.parametrize("args,needle", [
    (["--arch", "vit_nonexistent_xyz"], "argument --arch: unknown architecture 'vit_nonexistent_xyz'"),
    (["--modes", "bicubic,cubic"], "argument --modes: unknown mode 'cubic'; give modes ("),
    (["--modes", ","], "argument --modes: no mode given"),
])
def test_malformed_command_line(tmp_path, tv_ckpt, capsys, args, needle):
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in ["plot", "--attention", tv_ckpt, "-o", out, *args]])
    _one_line(exc.value.code, capsys.readouterr().err, 2, needle, "(see vitpe plot --help)")
    assert not out.exists()
