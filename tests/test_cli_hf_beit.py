"""`vitpe resize` / `vitpe inspect` on Hugging Face BEiT and Data2VecVision model
folders: relative-position-bias tables (per layer or shared, 3 class rows at
the end) and the optional absolute table. Tiny random models are saved with
save_pretrained, resized through cli.main and loaded back with
from_pretrained (no missing or unexpected key); at the new size, without
interpolate_pos_encoding, they must give what transformers' own original
model gives at that size with interpolate_pos_encoding=True."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

import vitpe_ext  # noqa: E402

from test_cli import assert_one_line_error, run  # noqa: E402
from test_cli_hf import assert_no_output, config_of, pixels  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32,
             patch_size=8)
KINDS = {  # model_type: (config class, model class, the base model's prefix in the state dict)
    "beit": (transformers.BeitConfig, transformers.BeitForImageClassification, "beit."),
    "data2vec-vision": (transformers.Data2VecVisionConfig, transformers.Data2VecVisionModel, ""),
}
LAYOUTS = {  # use_relative_position_bias (per layer), use_shared_relative_position_bias
    "per-layer": dict(use_relative_position_bias=True, use_shared_relative_position_bias=False),
    "shared": dict(use_relative_position_bias=False, use_shared_relative_position_bias=True),
}


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.utils.logging.enable_progress_bar()


def make_model(tmp_path, kind, layout="per-layer", absolute=False, name="model", **config):
    """A tiny random model; its tables random (transformers initialises them to zeros, which any resize keeps)."""
    config_cls, cls, _ = KINDS[kind]
    torch.manual_seed(0)
    model = cls(config_cls(**{**SMALL, **LAYOUTS[layout], **config},
                           use_absolute_position_embeddings=absolute)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("relative_position_bias_table", "position_embeddings")):
                p.normal_()
    folder = tmp_path / name
    model.save_pretrained(folder)
    return model, folder


def load(folder, kind):
    model, info = KINDS[kind][1].from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected, mismatched key, no error
    return model.eval()


def hidden(model, x, interpolate):
    with torch.no_grad():
        return model(pixel_values=x, output_hidden_states=True,
                     interpolate_pos_encoding=interpolate).hidden_states[-1]


def bias_tables(model):
    return {k: v.detach() for k, v in model.state_dict().items() if k.endswith("relative_position_bias_table")}


@pytest.mark.parametrize("absolute", [False, True], ids=["rel-only", "with-absolute"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("size", [48, 24])
def test_resized_folder_runs_as_transformers_interpolates(tmp_path, capsys, kind, layout, absolute, size):
    model, folder = make_model(tmp_path, kind, layout, absolute)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", size], capsys)
    assert code == 0, err
    grid = size // 8
    assert f"window 4x4 -> {grid}x{grid}" in stdout and "bilinear of the offset grid" in stdout
    assert config_of(out)["image_size"] == size
    resized = load(out, kind)
    x = pixels(size, size)
    torch.testing.assert_close(hidden(resized, x, False), hidden(model, x, True), atol=1e-5, rtol=1e-5)
    # each table is the op's bilinear of the offset grid, the 3 class rows copied bit for bit
    new_tables, old_tables = bias_tables(resized), bias_tables(model)
    assert len(new_tables) == (2 if layout == "per-layer" else 1)
    for key, new in new_tables.items():
        want = vitpe_ext.resize_rel_pos_bias(old_tables[key], 4, grid, num_extra_tokens=3, mode="bilinear",
                                             align_corners=False)
        assert torch.equal(new, want) and torch.equal(new[-3:], old_tables[key][-3:])
    prefix = KINDS[kind][2]
    if absolute:
        table = resized.state_dict()[prefix + "embeddings.position_embeddings"]
        want = vitpe_ext.interpolate_pos_embed(model.state_dict()[prefix + "embeddings.position_embeddings"],
                                               (grid, grid), (4, 4), 1, profile="hf")
        assert torch.equal(table, want)


def test_index_buffers_are_dropped(tmp_path, capsys):
    """A file with relative_position_index buffers at the old window (transformers 4 saved them): the
    buffers dropped, and transformers loads the output without a warning. (save_pretrained writes the
    older names, encoder.layer.*.attention.attention.*, which transformers 5 renames on loading.)"""
    model, folder = make_model(tmp_path, "beit", "per-layer")
    weights = folder / "model.safetensors"
    old = load_file(weights)
    for key in [k for k in old if k.endswith("relative_position_bias_table")]:
        old[key.replace("_bias_table", "_index")] = torch.zeros(17, 17, dtype=torch.long)
    save_file(old, weights, metadata={"format": "pt"})
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    assert "2 relative_position_index buffers dropped" in stdout
    written = load_file(out / "model.safetensors")
    assert not [k for k in written if "relative_position_index" in k]
    assert written["beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table"] \
        .shape == (11 * 11 + 3, 2)
    x = pixels(48, 48)
    torch.testing.assert_close(hidden(load(out, "beit"), x, False), hidden(model, x, True), atol=1e-5, rtol=1e-5)


def test_sharded_folder_drops_the_buffers_from_the_index(tmp_path, capsys):
    model, folder = make_model(tmp_path, "data2vec-vision", "shared", absolute=True)
    model.save_pretrained(folder, max_shard_size="20KB")
    (folder / "model.safetensors").unlink(missing_ok=True)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["encoder.relative_position_bias.relative_position_bias_table"]
    tensors = load_file(folder / shard)
    tensors["encoder.relative_position_bias.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    save_file(tensors, folder / shard, metadata={"format": "pt"})
    index["weight_map"]["encoder.relative_position_bias.relative_position_index"] = shard
    index["metadata"]["total_size"] += 17 * 17 * 8
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert code == 0, err
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert "encoder.relative_position_bias.relative_position_index" not in new_index["weight_map"]
    x = pixels(48, 48)
    torch.testing.assert_close(hidden(load(out, "data2vec-vision"), x, False), hidden(model, x, True),
                               atol=1e-5, rtol=1e-5)


def test_inspect_lists_the_bias_tables(tmp_path, capsys):
    _, folder = make_model(tmp_path, "beit", "shared")
    code, stdout, err = run(["inspect", folder], capsys)
    assert code == 0, err
    assert "Hugging Face beit (BeitForImageClassification): image 32x32, patch 8x8, grid 4x4, no absolute " \
           "position table" in stdout
    assert ("beit.encoder.relative_position_bias.relative_position_bias_table: beit relative-position-bias table (52, 2) "
            "float32, window 4x4, 2 heads, 3 extra rows") in stdout


def test_dry_run_writes_nothing(tmp_path, capsys):
    _, folder = make_model(tmp_path, "beit", absolute=True)
    out = tmp_path / "out"
    code, stdout, err = run(["resize", folder, out, "--image-size", "48", "--dry-run"], capsys)
    assert code == 0, err
    assert "(52, 2) -> (124, 2): window 4x4 -> 6x6" in stdout and "dry run: would write" in stdout
    assert_no_output(out)


def _edit_config(folder, **changes):
    config = config_of(folder)
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("edit,argv,needles", [
    ({}, ["--image-size", "48x64"], ["--image-size 48x64 gives an image 48x64, but a transformers beit model runs "
                                     "only square sizes (its relative position bias reads a non-square offset "
                                     "table transposed"]),
    ({}, ["--image-size", "48", "--patch-size", "16"], ["--patch-size with a beit model is not supported (its "
                                                        "relative-position-bias window is the patch grid); resize "
                                                        "the image size alone (--image-size)"]),
    ({}, ["--image-size", "44"], ["image height 44 is not a multiple of the patch size 8; choose 40 or 48"]),
    ({}, ["--image-size", "48", "--rel-pos", "timm"], ["--rel-pos is for timm checkpoints; a beit model folder's "
                                                       "tables are resized as transformers resizes them at another "
                                                       "size (evenly, bilinear)"]),
    (dict(use_shared_relative_position_bias=True), ["--image-size", "48"],
     ["use_shared_relative_position_bias is True but", "holds no such table; config.json and the weights disagree"]),
    (dict(use_absolute_position_embeddings=True), ["--image-size", "48"],
     ["no key ending in embeddings.position_embeddings, where a beit model keeps its position table"]),
    (dict(image_size=40), ["--image-size", "48"],
     ["a 5x5 grid makes (84, heads) bias tables ((2*5-1)*(2*5-1) + 3), but model.safetensors:",
      "is (52, 2) float32; config.json and the weights disagree"]),
])
def test_refusals_leave_nothing(tmp_path, capsys, edit, argv, needles):
    _, folder = make_model(tmp_path, "beit")
    _edit_config(folder, **edit)
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, *argv], capsys)
    assert_one_line_error(code, err, *needles)
    assert_no_output(out)


def test_absolute_table_without_its_switch_is_refused(tmp_path, capsys):
    _, folder = make_model(tmp_path, "data2vec-vision", absolute=True)
    _edit_config(folder, use_absolute_position_embeddings=False)
    out = tmp_path / "out"
    code, _, err = run(["resize", folder, out, "--image-size", "48"], capsys)
    assert_one_line_error(code, err, "use_absolute_position_embeddings is not true but",
                          "holds embeddings.position_embeddings; config.json and the weights disagree")
    assert_no_output(out)
