"""`vitpe resize` / `vitpe inspect` on a Hugging Face model folder.

Tiny random transformers models (ViT, DeiT, Dinov2, Dinov2WithRegisters,
CLIP and SigLIP, vision-only and full) are saved with save_pretrained, resized
through cli.main, and loaded back with from_pretrained: the load must report
no missing, unexpected or mismatched key, and the model at the new size,
without interpolate_pos_encoding, must give what transformers' own model
gives at that size with interpolate_pos_encoding=True (Dinov2 interpolates in
every forward). Refusals are one line and leave no OUT."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import vitpe_ext  # noqa: E402
from vitpe_ext.command import atomic, hf_folder  # noqa: E402
from vitpe_ext.integrations.patch_embed import resample_patch_embed  # noqa: E402
from vitpe_ext.integrations.provenance import read_provenance  # noqa: E402

from test_cli import assert_one_line_error, run  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
             patch_size=8)
TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)

# interpolate_pos_embed's settings that reproduce each model's own interpolate_pos_encoding in
# transformers 5.24: bicubic in the table's dtype; Dinov2's in float32 with the class token untouched
# (the "timm" profile's arithmetic), without antialias, or with it (Dinov2WithRegisters)
HF, FLOAT32, FLOAT32_AA = {"profile": "hf"}, {"profile": "timm", "antialias": False}, {"profile": "timm"}

# model_type: (config, model class, prefix tokens, the table's key in its state dict, its settings)
KINDS = {
    "vit": (lambda **kw: transformers.ViTConfig(**{**SMALL, **kw}, num_labels=3),
            transformers.ViTForImageClassification, 1, "vit.embeddings.position_embeddings", HF),
    "deit": (lambda **kw: transformers.DeiTConfig(**{**SMALL, **kw}, num_labels=3),
             transformers.DeiTForImageClassificationWithTeacher, 2, "deit.embeddings.position_embeddings", HF),
    "dinov2": (lambda **kw: transformers.Dinov2Config(**{**SMALL, **kw}),
               transformers.Dinov2Model, 1, "embeddings.position_embeddings", FLOAT32),
    "dinov2_with_registers": (lambda **kw: transformers.Dinov2WithRegistersConfig(**{**SMALL, **kw}, num_register_tokens=2),
                              transformers.Dinov2WithRegistersModel, 1, "embeddings.position_embeddings",
                              FLOAT32_AA),
    "clip_vision_model": (lambda **kw: transformers.CLIPVisionConfig(**{**SMALL, **kw}),
                          transformers.CLIPVisionModel, 1, "embeddings.position_embedding.weight", HF),
    "siglip_vision_model": (lambda **kw: transformers.SiglipVisionConfig(**{**SMALL, **kw}),
                            transformers.SiglipVisionModel, 0, "embeddings.position_embedding.weight", HF),
    "clip": (lambda **kw: transformers.CLIPConfig(vision_config={**SMALL, **kw}, text_config=TEXT, projection_dim=16),
             transformers.CLIPModel, 1, "vision_model.embeddings.position_embedding.weight", HF),
    "siglip": (lambda **kw: transformers.SiglipConfig(vision_config={**SMALL, **kw}, text_config=TEXT),
               transformers.SiglipModel, 0, "vision_model.embeddings.position_embedding.weight", HF),
}
PAIR_SIZES = ("vit", "deit")  # their config holds [h, w] and they run a non-square table at its size
DINOV2 = ("dinov2", "dinov2_with_registers")


@pytest.fixture(autouse=True)
def _quiet_transformers():
    """save_pretrained's progress bar writes to stderr, where the command's one error line is checked."""
    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.utils.logging.enable_progress_bar()


def make_model(tmp_path, kind, name="model", seed=0, max_shard_size=None, **config):
    """A tiny random model of kind saved in tmp_path/name; its table is random (not an init's zeros)."""
    make_config, cls, *_ = KINDS[kind]
    torch.manual_seed(seed)
    model = cls(make_config(**config)).eval()
    with torch.no_grad():
        table(model, kind).normal_()
    folder = tmp_path / name
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return model, folder


def table(model, kind):
    return dict(model.named_parameters())[KINDS[kind][3]]


def load(folder, kind):
    model, info = KINDS[kind][1].from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected, mismatched key, no error
    return model.eval()


def features(model, kind, pixels, interpolate):
    """The last hidden state; interpolate_pos_encoding where the model has the flag (Dinov2 always does it)."""
    vision = model.vision_model if kind in ("clip", "siglip") else model
    extra = {} if kind in DINOV2 else {"interpolate_pos_encoding": interpolate}
    with torch.no_grad():
        return vision(pixel_values=pixels, output_hidden_states=True, **extra).hidden_states[-1]


def pixels(height, width, seed=1):
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(seed))


def config_of(folder):
    return json.loads((folder / "config.json").read_text())


def sizes_of(folder, kind):
    config = config_of(folder)
    sizes = config["vision_config"] if kind in ("clip", "siglip") else config
    return sizes["image_size"], sizes["patch_size"]


def assert_as_transformers(resized, model, kind, size):
    """resized (a table read from a file) is what the model's own interpolate_pos_encoding gives at
    size x size: the prefix tokens exact, the grid equal up to float32 rounding, and a float64
    grid that transformers computes in float32 (Dinov2's) in float32 values."""
    vision = model.vision_model if kind in ("clip", "siglip") else model
    prefix, dtype = KINDS[kind][2], resized.dtype
    with torch.no_grad():
        reference = vision.embeddings.interpolate_pos_encoding(
            torch.zeros(1, prefix + (size // 8) ** 2, 32, dtype=dtype), size, size)
    resized = resized.reshape(reference.shape)
    assert reference.dtype == dtype
    assert torch.equal(resized[:, :prefix], reference[:, :prefix])
    if kind in DINOV2:
        assert torch.equal(resized[:, prefix:], resized[:, prefix:].float().to(dtype))
    torch.testing.assert_close(resized.float(), reference.float(), **({"atol": 2 ** -8, "rtol": 2 ** -8}
                                                                      if dtype.itemsize < 4 else {}))


def assert_no_output(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(atomic.TMP_SUFFIX)]


# -- the resized folder runs at the new size as transformers' own interpolation does ------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_square_resize_matches_transformers_interpolation(tmp_path, capsys, kind):
    model, folder = make_model(tmp_path, kind)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    assert f"Hugging Face {kind}" in stdout and "grid 4x4 -> 6x6" in stdout and f"wrote {out}" in stdout
    assert sizes_of(out, kind) == (48, 8)
    resized = load(out, kind)
    prefix, settings = KINDS[kind][2], KINDS[kind][4]
    expected = vitpe_ext.interpolate_pos_embed(table(model, kind).detach(), (6, 6), (4, 4), prefix, **settings)
    assert torch.equal(table(resized, kind).detach(), expected)
    x = pixels(48, 48)
    torch.testing.assert_close(features(resized, kind, x, False), features(model, kind, x, True),
                               atol=2e-5, rtol=1e-5)
    # everything but the table is the original bit for bit
    original = dict(model.state_dict())
    for key, value in resized.state_dict().items():
        if key != KINDS[kind][3]:
            assert torch.equal(value, original[key]), key


@pytest.mark.parametrize("kind", PAIR_SIZES)
def test_non_square_resize_where_the_config_takes_a_pair(tmp_path, capsys, kind):
    model, folder = make_model(tmp_path, kind)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48x64"], capsys)
    assert code == 0, err
    assert "image_size 32 -> [48, 64]" in stdout
    assert sizes_of(out, kind) == ([48, 64], 8)
    resized = load(out, kind)
    x = pixels(48, 64)
    torch.testing.assert_close(features(resized, kind, x, False), features(model, kind, x, True),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in PAIR_SIZES])
def test_non_square_refused_where_the_model_cannot_hold_it(tmp_path, capsys, kind):
    _, folder = make_model(tmp_path, kind)
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--image-size", "48x64"], capsys)
    assert_one_line_error(code, err, "--image-size 48x64 gives an image 48x64, but a transformers",
                          f"{kind} model runs only square sizes", "choose a square size")
    assert_no_output(out)


def test_dinov2_default_is_transformers_size_interpolation_not_the_offset_profile(tmp_path, capsys):
    """transformers 5.24's Dinov2 interpolates to size= (no +0.1 scale factor): the "dinov2" profile
    (the original repository's) gives other numbers, so it is not the folder's default."""
    model, folder = make_model(tmp_path, "dinov2")
    x = pixels(48, 48)
    reference = features(model, "dinov2", x, True)
    code, stdout, err = run(["resize", folder, tmp_path / "offset", "--image-size", "48", "--profile", "dinov2"], capsys)
    assert code == 0, err
    offset = features(load(tmp_path / "offset", "dinov2"), "dinov2", x, False)
    assert (offset - reference).abs().max() > 1e-3
    code, stdout, err = run(["resize", folder, tmp_path / "default", "--image-size", "48"], capsys)
    assert code == 0, err
    assert "timm: bicubic (float32) (what transformers' dinov2 interpolate_pos_encoding computes)" in stdout
    torch.testing.assert_close(features(load(tmp_path / "default", "dinov2"), "dinov2", x, False), reference,
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", DINOV2)
@pytest.mark.parametrize("dtype,size", [(torch.float64, 48), (torch.float64, 24), (torch.bfloat16, 48)])
def test_dinov2_in_other_dtypes_as_transformers_interpolates(tmp_path, capsys, kind, dtype, size):
    """transformers' Dinov2 models interpolate the grid in float32 whatever the table's dtype and
    leave the class token as it is: the folder resized holds what interpolate_pos_encoding=True gives,
    a float64 class token exact, a float64 grid in float32 values."""
    from safetensors.torch import load_file
    model, _ = make_model(tmp_path, kind)
    model = model.to(dtype)
    with torch.no_grad():
        table(model, kind).normal_()  # values of the dtype's own precision (not float32 ones cast)
    model.save_pretrained(tmp_path / "typed")
    code, _, err = run(["resize", tmp_path / "typed", tmp_path / "out", "--image-size", size], capsys)
    assert code == 0, err
    assert_as_transformers(load_file(tmp_path / "out" / "model.safetensors")[KINDS[kind][3]], model, kind, size)


def test_dinov2_with_registers_shrinks_with_antialias(tmp_path, capsys):
    model, folder = make_model(tmp_path, "dinov2_with_registers", image_size=64)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "40"], capsys)
    assert code == 0, err
    assert "grid 8x8 -> 5x5" in stdout and "timm: bicubic aa (float32)" in stdout
    x = pixels(40, 40)
    torch.testing.assert_close(features(load(out, "dinov2_with_registers"), "dinov2_with_registers", x, False),
                               features(model, "dinov2_with_registers", x, True), atol=2e-5, rtol=1e-5)


# -- --patch-size ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vit", "dinov2", "clip"])
def test_patch_size_resamples_the_kernel_and_sets_the_config(tmp_path, capsys, kind):
    model, folder = make_model(tmp_path, kind)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--patch-size", "4"], capsys)
    assert code == 0, err
    assert "patch 8x8 -> 4x4 (FlexiViT" in stdout and "grid 4x4 -> 8x8" in stdout
    assert sizes_of(out, kind) == (32, 4)
    resized = load(out, kind)
    kernel_key = KINDS[kind][3].replace("position_embeddings", "patch_embeddings.projection.weight").replace(
        "position_embedding.weight", "patch_embedding.weight")
    old, new = dict(model.named_parameters()), dict(resized.named_parameters())
    assert torch.equal(new[kernel_key], resample_patch_embed(old[kernel_key].detach(), (4, 4)))
    expected = vitpe_ext.interpolate_pos_embed(table(model, kind).detach(), (8, 8), (4, 4), KINDS[kind][2],
                                               **KINDS[kind][4])
    assert torch.equal(table(resized, kind).detach(), expected)
    assert features(resized, kind, pixels(32, 32), False).shape[1] == KINDS[kind][2] + 64


def test_patch_and_image_size_together_non_square_vit(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48x64", "--patch-size", "16"], capsys)
    assert code == 0, err
    assert sizes_of(out, "vit") == ([48, 64], 16)
    assert features(load(out, "vit"), "vit", pixels(48, 64), False).shape[1] == 1 + 3 * 4


def test_patch_size_refused_for_a_masked_image_modeling_head(tmp_path, capsys):
    torch.manual_seed(0)
    folder = tmp_path / "mim"
    transformers.ViTForMaskedImageModeling(transformers.ViTConfig(**SMALL, encoder_stride=8)).save_pretrained(folder)
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--patch-size", "4"], capsys)
    assert_one_line_error(code, err, "a ViTForMaskedImageModeling decodes encoder_stride x encoder_stride pixels "
                          "per token and needs encoder_stride == patch_size; a new patch size breaks its decoder")
    assert_no_output(out)
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0  # a new image size is fine


def test_patch_size_not_dividing_the_image_is_refused(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--patch-size", "12"], capsys)
    assert_one_line_error(code, err, "is not a multiple of the new patch size 12")
    assert_no_output(out)


# -- weights files: shards, torch files, both ----------------------------------------------

def test_sharded_safetensors(tmp_path, capsys):
    from safetensors import safe_open
    model, folder = make_model(tmp_path, "vit", max_shard_size="10KB")
    key = KINDS["vit"][3]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "64x48"], capsys)
    assert code == 0, err
    x = pixels(64, 48)
    torch.testing.assert_close(features(load(out, "vit"), "vit", x, False), features(model, "vit", x, True),
                               atol=2e-5, rtol=1e-5)
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert new_index["weight_map"] == index["weight_map"]
    sizes, params = 0, 0
    for name in set(new_index["weight_map"].values()):
        with safe_open(out / name, "pt") as f:
            for tensor in map(f.get_tensor, f.keys()):
                sizes, params = sizes + tensor.numel() * tensor.element_size(), params + tensor.numel()
        if name == index["weight_map"][key]:
            with safe_open(out / name, "pt") as f:
                records = read_provenance(f.metadata())
            assert records[key].grid == (8, 6)
        else:
            assert (out / name).read_bytes() == (folder / name).read_bytes()  # copied untouched
    assert new_index["metadata"] == {"total_size": sizes, "total_parameters": params}


@pytest.mark.parametrize("kind", ["clip_vision_model", "siglip_vision_model", "dinov2", "dinov2_with_registers"])
def test_a_weights_file_alone_resizes_as_its_folder(tmp_path, capsys, kind):
    """save_pretrained's model.safetensors given alone: its table is found (CLIPVisionModel and
    SiglipVisionModel save it without a vision_model. prefix), its prefix tokens inferred (CLIP's
    class token beside it, SigLIP's none) and resized with the model's own arithmetic (Dinov2's
    float32 grid and untouched class token, in a float64 table), as the folder is."""
    from safetensors.torch import load_file
    model, _ = make_model(tmp_path, kind)
    model = model.double()
    with torch.no_grad():
        table(model, kind).normal_()
    model.save_pretrained(tmp_path / "f64")
    alone = tmp_path / "alone.safetensors"
    code, stdout, err = run(["resize", tmp_path / "f64" / "model.safetensors", alone, "--image-size", "48"], capsys)
    assert code == 0, err
    assert "grid 4x4 -> 6x6" in stdout and f"prefix {KINDS[kind][2]}," in stdout
    code, _, err = run(["resize", tmp_path / "f64", tmp_path / "out", "--image-size", "48"], capsys)
    assert code == 0, err
    alone, whole = load_file(alone), load_file(tmp_path / "out" / "model.safetensors")
    assert_as_transformers(alone[KINDS[kind][3]], model, kind, 48)
    assert alone.keys() == whole.keys()
    for key, value in alone.items():
        assert torch.equal(value, whole[key]), key


def test_a_clip_table_without_its_class_token_is_refused(tmp_path, capsys):
    """A CLIP table holds a class token exactly when class_embedding lies beside it (SigLIP has
    neither): without it, the token count is not taken as a hint."""
    from safetensors.torch import load_file, save_file
    _, folder = make_model(tmp_path, "clip_vision_model")
    state = load_file(folder / "model.safetensors")
    del state["embeddings.class_embedding"]
    save_file(state, tmp_path / "partial.safetensors")
    out = tmp_path / "out.safetensors"
    code, _, err = run(["resize", tmp_path / "partial.safetensors", out, "--image-size", "48"], capsys)
    assert_one_line_error(code, err, "cannot infer the grid of embeddings.position_embedding.weight (17 tokens): "
                          "no prefix-token count leaves a square grid (tried 0 prefix tokens)", "pass --old-grid HxW")
    assert not out.exists()


def test_pytorch_model_bin_and_safetensors_both_resized(tmp_path, capsys):
    model, folder = make_model(tmp_path, "dinov2")
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    assert "model.safetensors" in stdout and "pytorch_model.bin" in stdout
    os.remove(out / "model.safetensors")  # transformers then loads the torch file
    x = pixels(48, 48)
    torch.testing.assert_close(features(load(out, "dinov2"), "dinov2", x, False), features(model, "dinov2", x, True),
                               atol=2e-5, rtol=1e-5)
    records = read_provenance(torch.load(out / "pytorch_model.bin", weights_only=True))
    assert records["embeddings.position_embeddings"].last.new_grid == (6, 6)


def test_sharded_pytorch_model_bin(tmp_path, capsys):
    model, folder = make_model(tmp_path, "deit")
    os.remove(folder / "model.safetensors")
    state = model.state_dict()
    names = list(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for name, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folder / name)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": {k: name for name, keys in halves.items() for k in keys}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    x = pixels(48, 48)
    torch.testing.assert_close(features(load(out, "deit"), "deit", x, False), features(model, "deit", x, True),
                               atol=2e-5, rtol=1e-5)
    grown = (6 * 6 - 4 * 4) * 32 * 4  # 20 more float32 tokens of 32; nothing else changes size
    new_index = json.loads((out / "pytorch_model.bin.index.json").read_text())
    assert new_index["metadata"]["total_size"] == index["metadata"]["total_size"] + grown


def test_a_hub_cache_snapshot_of_links_is_read_through_them(tmp_path, capsys):
    model, folder = make_model(tmp_path, "vit")
    (folder / "README.md").write_text("readme")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for path in folder.iterdir():
        (snapshot / path.name).symlink_to(path)
    out = tmp_path / "out"
    code, _, err = run(["resize", snapshot, out, "--image-size", "48"], capsys)
    assert code == 0, err
    assert not any(p.is_symlink() for p in out.iterdir()) and (out / "README.md").read_text() == "readme"
    x = pixels(48, 48)
    torch.testing.assert_close(features(load(out, "vit"), "vit", x, False), features(model, "vit", x, True),
                               atol=2e-5, rtol=1e-5)


def test_a_resized_folder_resized_again_keeps_the_chain(tmp_path, capsys):
    _, folder = make_model(tmp_path, "dinov2_with_registers")
    assert run(["resize", folder, tmp_path / "a", "--image-size", "48"], capsys)[0] == 0
    code, stdout, err = run(["resize", tmp_path / "a", tmp_path / "b", "--image-size", "64"], capsys)
    assert code == 0, err
    assert "(as its resize record says)" in stdout
    code, stdout, err = run(["inspect", tmp_path / "b"], capsys)
    assert code == 0, err
    assert "Hugging Face dinov2_with_registers" in stdout and "image 64x64, patch 8x8, grid 8x8" in stdout
    assert "source grid 4x4, 2 resizes recorded" in stdout


# -- the other files ----------------------------------------------------------------

def test_other_files_are_copied_and_the_processor_follows(tmp_path, capsys):
    _, folder = make_model(tmp_path, "clip_vision_model")
    transformers.CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder)
    (folder / "README.md").write_text("# my model\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("kept\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref\n")
    (folder / "tf_model.h5").write_bytes(b"old table")
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "64"], capsys)
    assert code == 0, err
    assert ('preprocessor_config.json: crop_size {"height": 32, "width": 32} -> {"height": 64, "width": 64}, '
            'size {"shortest_edge": 36} -> {"shortest_edge": 72}') in stdout
    assert "not copied: .git/, tf_model.h5 (weights in a format vitpe does not rewrite" in stdout
    for rel in ("README.md", ".gitattributes", "extra/notes.txt"):
        assert (out / rel).read_bytes() == (folder / rel).read_bytes()
    assert not (out / ".git").exists() and not (out / "tf_model.h5").exists()
    import numpy as np
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype("uint8")
    x = processor(images=image, return_tensors="pt")["pixel_values"]
    assert tuple(x.shape[-2:]) == (64, 64)
    assert features(load(out, "clip_vision_model"), "clip_vision_model", x, False).shape[1] == 1 + 64


@pytest.mark.parametrize("processor,expected", [
    ({"size": {"height": 32, "width": 32}}, {"size": {"height": 48, "width": 64}}),
    ({"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True},
     {"size": {"height": 54, "width": 72}, "crop_size": {"height": 48, "width": 64}}),
    ({"size": 32}, {"size": {"height": 48, "width": 64}}),
    ({"image_processor": {"size": {"shortest_edge": 40}, "crop_size": 32, "do_center_crop": True}},
     {"image_processor": {"size": {"shortest_edge": 80}, "crop_size": {"height": 48, "width": 64},
                          "do_center_crop": True}}),
])
def test_processor_sizes(tmp_path, capsys, processor, expected):
    _, folder = make_model(tmp_path, "deit")
    name = "processor_config.json" if "image_processor" in processor else "preprocessor_config.json"
    (folder / name).write_text(json.dumps(processor))
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48x64"], capsys)
    assert code == 0, err
    assert {**processor, **expected} == json.loads((out / name).read_text())


def test_a_processor_without_a_fixed_size_is_left_as_it_is(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 32}}))
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    assert "does not fix the size of the images it makes; left as it is" in stdout
    assert (out / "preprocessor_config.json").read_bytes() == (folder / "preprocessor_config.json").read_bytes()


# -- refusals: one line, no OUT -------------------------------------------------------

def _edit_config(folder, **changes):
    config = config_of(folder)
    config.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("case,edit,argv,needles", [
    ("unknown model type", dict(model_type="swin"), [], ["model_type 'swin' is not one vitpe can rewrite (it knows",
                                                          "resize its weights file alone with --key, and set its "
                                                          "config yourself"]),
    ("no image size", dict(image_size=None), [], ["no image_size (transformers would take its class default"]),
    ("config and table disagree", dict(image_size=40), [],
     ["image 40x40 and patch 8x8 make a 5x5 grid, 26 tokens with 1 prefix, but", "has 17; config.json and the "
      "weights disagree"]),
    ("patch disagrees with kernel", dict(patch_size=4, image_size=16), [],
     ["patch 4x4 and a 32-wide table, but vit.embeddings.patch_embeddings.projection.weight is (32, 3, 8, 8)"]),
    ("odd image size", dict(image_size=[32, "x"]), [], ["image_size is [32, \"x\"]; a vit config takes a positive int "
                                                        "or [height, width]"]),
    ("layout option", {}, ["--image-size", "48", "--prefix-tokens", "1"], ["--prefix-tokens: a model folder's layout is its "
                                                     "config.json's; these options are for a weights file (give "
                                                     "the file itself to use them)"]),
    ("not a multiple", {}, ["--image-size", "50"], ["image height 50 is not a multiple of the patch size 8"]),
])
def test_refusals_leave_nothing(tmp_path, capsys, case, edit, argv, needles):
    _, folder = make_model(tmp_path, "vit")
    if edit:
        _edit_config(folder, **edit)
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, *(argv or ["--image-size", "48"])], capsys)
    assert_one_line_error(code, err, *needles)
    assert_no_output(out)


def test_a_weights_file_without_the_table_is_refused(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    _edit_config(folder, model_type="clip_vision_model")
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert_one_line_error(code, err, "no key ending in embeddings.position_embedding.weight, where a "
                          "clip_vision_model model keeps its position table")
    assert_no_output(out)


# -- OUT: new, existing, --force, failures ---------------------------------------------------

def test_existing_out_needs_force_and_force_replaces_a_model_folder(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    out = tmp_path / "out"
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0
    (out / "stale.txt").write_text("from before")
    code, _, err = run(["resize", folder, out, "--image-size", "64"], capsys)
    assert_one_line_error(code, err, f"{out}: exists; pass --force to replace it")
    assert sizes_of(out, "vit") == (48, 8)
    code, _, err = run(["resize", folder, out, "--image-size", "64", "--force"], capsys)
    assert code == 0, err
    assert sizes_of(out, "vit") == (64, 8) and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # the replaced folder is gone


def test_force_without_renameat2_renames_aside(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(atomic, "_renameat2", lambda src, dst, flags: False)
    _, folder = make_model(tmp_path, "vit")
    out = tmp_path / "out"
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0
    code, _, err = run(["resize", folder, out, "--image-size", "64", "--force"], capsys)
    assert code == 0, err
    assert sizes_of(out, "vit") == (64, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


CRASH_BETWEEN_RENAMES = """
import os, sys
from vitpe_ext.command import atomic, cli
atomic._renameat2 = lambda src, dst, flags: False
rename, out = os.rename, os.path.abspath(sys.argv[2])

def rename_then_crash(src, dst):
    rename(src, dst)
    if os.path.abspath(src) == out:  # OUT moved aside, the new folder not yet in place
        os._exit(137)
os.rename = rename_then_crash
cli.main(["resize", sys.argv[1], sys.argv[2], "--image-size", "64", "--force"])
"""


def test_a_crash_between_the_renames_leaves_the_old_out_aside_and_reported(tmp_path, capsys):
    import subprocess
    import sys
    _, folder = make_model(tmp_path, "vit")
    out = tmp_path / "out"
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0
    crashed = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_RENAMES, folder, out], capture_output=True,
                             text=True, timeout=300)
    assert crashed.returncode == 137, crashed.stderr
    assert not out.exists()
    aside, = [p for p in tmp_path.iterdir() if p.name.endswith(atomic.ASIDE_SUFFIX)]
    assert sizes_of(aside, "vit") == (48, 8)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(atomic.TMP_SUFFIX)]  # the killed run's new folder
    for repeat in range(2):  # reported by every run in that folder, never removed
        code, _, err = run(["resize", folder, out, "--image-size", "32", *(["--force"] if repeat else [])], capsys)
        assert code == 0, err
        note = next(line for line in err.splitlines() if str(aside) in line)
        if repeat:
            assert note == (f"vitpe resize: note: {aside}: the previous {out}, moved aside by a vitpe run "
                            f"interrupted while replacing it; vitpe never deletes it: {out} is newer, delete this "
                            f"copy if you do not need it")
        else:
            assert note == (f"vitpe resize: note: {aside}: your folder {out}, moved aside by a vitpe run "
                            f"interrupted while replacing it; vitpe never deletes it: rename it back to {out}")
        assert sizes_of(aside, "vit") == (48, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([aside.name, "model", "out"])  # the temp swept


@pytest.mark.parametrize("setup,force,needles", [
    ("file", True, ["exists and is not a folder; the output is a folder"]),
    ("link", True, ["is a symbolic link (to"]),
    ("plain folder", True, ["exists and is not a model folder (no config.json); vitpe replaces only a model folder, "
                            "not even with --force: remove it or choose another"]),
    ("input", False, ["is the input folder; write the new model folder to another path"]),
    ("parent of input", True, ["holds the input folder"]),
])
def test_outputs_never_written(tmp_path, capsys, setup, force, needles):
    _, folder = make_model(tmp_path, "vit")
    out = {"input": folder, "parent of input": tmp_path}.get(setup, tmp_path / "out")
    if setup == "file":
        out.write_text("mine")
    elif setup == "link":
        out.symlink_to(tmp_path / "elsewhere")
    elif setup == "plain folder":
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    code, _, err = run(["resize", folder, out, "--image-size", "48", *(["--force"] if force else [])], capsys)
    assert_one_line_error(code, err, *needles)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_out_inside_the_input_folder_is_not_copied_into_itself(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    out = folder / "resized"
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0
    code, _, err = run(["resize", folder, out, "--image-size", "64", "--force"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_a_failed_write_leaves_no_out_and_an_existing_out_as_it_was(tmp_path, capsys, monkeypatch):
    import errno
    _, folder = make_model(tmp_path, "vit")
    (folder / "README.md").write_text("readme")
    out = tmp_path / "out"

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(hf_folder, "_copy", disk_full)
    code, _, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert_one_line_error(code, err, f"{out}: write failed: No space left on device (disk full); out not created")
    assert_no_output(out)
    monkeypatch.undo()
    assert run(["resize", folder, out, "--image-size", "48"], capsys)[0] == 0
    monkeypatch.setattr(hf_folder, "_copy", disk_full)
    code, _, err = run(["resize", folder, out, "--image-size", "64", "--force"], capsys)
    assert_one_line_error(code, err, "out left as it was")
    assert sizes_of(out, "vit") == (48, 8) and (out / "README.md").read_text() == "readme"


def test_a_signal_while_writing_leaves_no_partial_folder(tmp_path, capsys, monkeypatch):
    _, folder = make_model(tmp_path, "vit")
    (folder / "README.md").write_text("readme")
    out = tmp_path / "out"

    def interrupted(src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(hf_folder, "_copy", interrupted)
    code, _, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM; no partial output left" in err
    assert_no_output(out)


def test_a_killed_run_s_temporary_folder_is_removed_by_the_next(tmp_path, capsys):
    _, folder = make_model(tmp_path, "vit")
    name = atomic._temp_name("out")
    pid = name.split(".")[2].split("-")[0]
    dead = tmp_path / name.replace(f".{pid}-", ".999999999-", 1)  # no such process
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    code, _, err = run(["resize", folder, tmp_path / "out", "--image-size", "48"], capsys)
    assert code == 0, err
    assert "temporary folder of vitpe process 999999999, which ended without finishing it" in err
    assert not dead.exists()


def test_dry_run_writes_nothing(tmp_path, capsys):
    _, folder = make_model(tmp_path, "deit")
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48", "--dry-run"], capsys)
    assert code == 0, err
    assert "grid 4x4 -> 6x6" in stdout and "config.json: image_size 32 -> 48" in stdout
    assert f"dry run: would write {out}" in stdout
    assert_no_output(out)


def test_inspect_describes_the_folder(tmp_path, capsys):
    _, folder = make_model(tmp_path, "siglip")
    code, stdout, err = run(["inspect", folder], capsys)
    assert code == 0, err
    assert ("Hugging Face siglip (SiglipModel): image 32x32, patch 8x8, grid 4x4, 0 prefix tokens in the table"
            in stdout)
    assert "vision_model.embeddings.position_embedding.weight" in stdout and "(16, 32)" in stdout


def test_a_directory_of_checkpoints_is_still_resized_file_by_file(tmp_path, capsys):
    from test_checkpoint import make_state
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(make_state("timm"), folder / "a.pth")
    (folder / "config.json").write_text("{}")  # not a model folder: no save_pretrained weights
    code, stdout, err = run(["resize", folder, tmp_path / "out", "--image-size", "128"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "a.pth").exists()


def test_videomae_has_no_table_to_resize(tmp_path, capsys):
    """VideoMAE's position table is a sinusoid transformers computes from config.json (not in the
    weights): one line saying so and what to do, for resize and inspect, nothing written."""
    config = transformers.VideoMAEConfig(**SMALL, num_frames=4, tubelet_size=2)
    model = transformers.VideoMAEModel(config)
    assert not [k for k in model.state_dict() if "position" in k]  # the premise: no saved table
    folder = tmp_path / "videomae"
    model.save_pretrained(folder)
    out = tmp_path / "out"
    message = ("config.json: a videomae model's position table is a fixed 1-D sinusoid over its (num_frames // "
               "tubelet_size) * (image_size // patch_size)^2 tokens, computed from config.json when the model is "
               "built, not a saved weight: there is nothing to resize; set the new size in config.json (videomae "
               "reads image_size/num_frames) and load the weights as they are")
    for argv in (["resize", folder, out, "--image-size", "48"], ["inspect", folder]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, message)
    assert_no_output(out)
