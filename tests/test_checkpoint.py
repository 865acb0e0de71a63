"""vitpe_ext.command.checkpoint and vitpe_ext.integrations.sincos: safe loading, key detection,
layout inference, atomic saving, sin-cos tables. Small synthetic state dicts;
the CLI on top is tested in test_cli*.py (which reuses the builders here)."""
from __future__ import annotations

import builtins
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

import vitpe_ext  # noqa: F401  (loads the op)
from vitpe_ext.command.atomic import OutputError, write_atomic
from vitpe_ext.command.checkpoint import (Checkpoint, CheckpointError, describe, load_checkpoint, parse_pair,
                                  save_checkpoint, select_keys)
from vitpe_ext.integrations.sincos import get_2d_sincos_pos_embed, match_sincos, sincos_2d_resampled

DIM = 16


# -- builders: tiny state dicts in each library's key layout ----------------------

def _table(tokens, dim=DIM, seed=0, two_d=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(tokens, dim, generator=g)
    return t if two_d else t.unsqueeze(0)


def _conv(patch, dim=DIM):
    return torch.randn(dim, 3, patch, patch)


def make_state(family, grid=(4, 4), patch=16, dim=DIM, prefix="", seed=0):
    """A minimal state dict whose keys look like `family`'s; extra keys so that
    'every other key is kept' has something to check."""
    n = grid[0] * grid[1]
    p = prefix
    if family == "torchvision":
        return OrderedDict([(p + "class_token", torch.randn(1, 1, dim)),
                            (p + "conv_proj.weight", _conv(patch, dim)), (p + "conv_proj.bias", torch.randn(dim)),
                            (p + "encoder.pos_embedding", _table(1 + n, dim, seed)),
                            (p + "encoder.ln.weight", torch.ones(dim)),
                            (p + "heads.head.weight", torch.randn(10, dim))])
    if family == "timm":
        return OrderedDict([(p + "cls_token", torch.randn(1, 1, dim)), (p + "pos_embed", _table(1 + n, dim, seed)),
                            (p + "patch_embed.proj.weight", _conv(patch, dim)),
                            (p + "patch_embed.proj.bias", torch.randn(dim)), (p + "norm.weight", torch.ones(dim))])
    if family == "timm-deit":  # class + distillation token
        return OrderedDict([(p + "cls_token", torch.randn(1, 1, dim)), (p + "dist_token", torch.randn(1, 1, dim)),
                            (p + "pos_embed", _table(2 + n, dim, seed)),
                            (p + "patch_embed.proj.weight", _conv(patch, dim))])
    if family == "timm-noembedclass":  # DeiT-III / timm no_embed_class: no slot for the class token
        return OrderedDict([(p + "cls_token", torch.randn(1, 1, dim)), (p + "pos_embed", _table(n, dim, seed)),
                            (p + "patch_embed.proj.weight", _conv(patch, dim))])
    if family == "dinov2":
        return OrderedDict([(p + "cls_token", torch.randn(1, 1, dim)), (p + "pos_embed", _table(1 + n, dim, seed)),
                            (p + "mask_token", torch.zeros(1, dim)), (p + "patch_embed.proj.weight", _conv(14, dim)),
                            (p + "blocks.0.ls1.gamma", torch.ones(dim))])
    if family == "dinov2-reg":
        return OrderedDict([(p + "cls_token", torch.randn(1, 1, dim)), (p + "pos_embed", _table(1 + n, dim, seed)),
                            (p + "register_tokens", torch.randn(1, 4, dim)), (p + "mask_token", torch.zeros(1, dim)),
                            (p + "patch_embed.proj.weight", _conv(14, dim))])
    if family == "hf":
        return OrderedDict([(p + "embeddings.cls_token", torch.randn(1, 1, dim)),
                            (p + "embeddings.position_embeddings", _table(1 + n, dim, seed)),
                            (p + "embeddings.patch_embeddings.projection.weight", _conv(patch, dim)),
                            (p + "layernorm.weight", torch.ones(dim))])
    if family == "hf-deit":
        return OrderedDict([(p + "embeddings.cls_token", torch.randn(1, 1, dim)),
                            (p + "embeddings.distillation_token", torch.randn(1, 1, dim)),
                            (p + "embeddings.position_embeddings", _table(2 + n, dim, seed)),
                            (p + "embeddings.patch_embeddings.projection.weight", _conv(patch, dim))])
    if family == "hf-clip":
        v = p + "vision_model.embeddings."
        return OrderedDict([(v + "class_embedding", torch.randn(dim)),
                            (v + "patch_embedding.weight", _conv(patch, dim)),
                            (v + "position_embedding.weight", _table(1 + n, dim, seed, two_d=True)),
                            (v + "position_ids", torch.arange(1 + n).unsqueeze(0)),
                            # the text tower's table must never be touched
                            (p + "text_model.embeddings.position_embedding.weight", _table(7, dim, seed + 1, True))])
    if family == "siglip":  # HF SigLIP: no class token
        v = p + "vision_model.embeddings."
        return OrderedDict([(v + "patch_embedding.weight", _conv(patch, dim)),
                            (v + "position_embedding.weight", _table(n, dim, seed, two_d=True))])
    if family == "openai-clip":
        return OrderedDict([(p + "visual.class_embedding", torch.randn(dim)),
                            (p + "visual.conv1.weight", _conv(patch, dim)),
                            (p + "visual.positional_embedding", _table(1 + n, dim, seed, two_d=True)),
                            (p + "positional_embedding", _table(7, dim, seed + 1, two_d=True))])
    raise ValueError(family)


def as_ckpt(obj, name="mem.pth"):
    from pathlib import Path
    return Checkpoint(Path(name), "torch-zip", obj)


# -- sin-cos ------------------------------------------------------------------------

def _mae_reference(embed_dim, grid_size, cls_token=False):
    """facebookresearch/mae util/pos_embed.py, transcribed (np.float -> np.float64)."""
    def one_d(embed_dim, pos):
        omega = np.arange(embed_dim // 2, dtype=np.float64)
        omega /= embed_dim / 2.
        omega = 1. / 10000 ** omega
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


@pytest.mark.parametrize("dim,grid", [(768, 14), (16, 5), (1024, 16)])
def test_sincos_equals_mae_code(dim, grid):
    assert np.array_equal(get_2d_sincos_pos_embed(dim, grid, cls_token=True), _mae_reference(dim, grid, True))


def test_sincos_non_square_is_the_square_table_cropped():
    # Row-major tokens, x (column) in the first half: a 3x5 table is the 5x5
    # table's first three rows.
    wide = get_2d_sincos_pos_embed(32, (3, 5))
    square = get_2d_sincos_pos_embed(32, 5)
    assert wide.shape == (15, 32)
    assert np.array_equal(wide, square[:15])
    tall = get_2d_sincos_pos_embed(32, (5, 3))
    assert np.array_equal(tall, square.reshape(5, 5, 32)[:, :3].reshape(15, 32))


def test_sincos_big_vision_variant_equals_its_code():
    h, w, width = 4, 6, 32
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / 10000 ** (np.arange(width // 4) / (width // 4 - 1))
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    expected = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    assert np.allclose(get_2d_sincos_pos_embed(width, (h, w), variant="big_vision"), expected, rtol=0, atol=1e-15)


def test_match_sincos():
    table = get_2d_sincos_pos_embed(64, (3, 7))
    assert match_sincos(table, (3, 7)) == ("mae", 0.0)
    assert match_sincos(table.astype(np.float16), (3, 7))[0] == "mae"
    assert match_sincos(get_2d_sincos_pos_embed(64, (3, 7), variant="big_vision"), (3, 7))[0] == "big_vision"
    assert match_sincos(table, (7, 3))[0] is None            # right values, wrong layout
    assert match_sincos(table + 0.05, (3, 7))[0] is None
    assert match_sincos(np.random.default_rng(0).normal(size=(21, 64)) * 0.02, (3, 7))[0] is None


def test_sincos_resampled_identity_and_half_pixel():
    assert np.array_equal(sincos_2d_resampled(16, (4, 4), (4, 4)), get_2d_sincos_pos_embed(16, 4))
    # doubling the grid: new centre j sits at (j + 0.5) / 2 - 0.5 in old units
    doubled = sincos_2d_resampled(16, (4, 4), (8, 8)).reshape(8, 8, 16)
    assert np.allclose(doubled[0, 0, :4], np.sin(-0.25 * 1.0 / 10000 ** (np.arange(4) / 4)))


# -- sizes --------------------------------------------------------------------------

def test_parse_pair():
    assert parse_pair("384", "x") == (384, 384)
    assert parse_pair("512x384", "x") == (512, 384)
    for bad in ("", "0", "12x", "axb", "1x2x3", "-4"):
        with pytest.raises(CheckpointError):
            parse_pair(bad, "--image-size")


# -- detection and layout -----------------------------------------------------------

@pytest.mark.parametrize("family,key,prefix,profile,patch", [
    ("torchvision", "encoder.pos_embedding", 1, "torchvision", (16, 16)),
    ("timm", "pos_embed", 1, "timm", (16, 16)),
    ("timm-deit", "pos_embed", 2, "timm", (16, 16)),
    ("timm-noembedclass", "pos_embed", 0, "timm", (16, 16)),
    ("dinov2", "pos_embed", 1, "dinov2", (14, 14)),
    ("dinov2-reg", "pos_embed", 1, "dinov2-reg", (14, 14)),
    ("hf", "embeddings.position_embeddings", 1, "hf", (16, 16)),
    ("hf-deit", "embeddings.position_embeddings", 2, "hf", (16, 16)),
    ("hf-clip", "vision_model.embeddings.position_embedding.weight", 1, "hf", (16, 16)),
    ("siglip", "vision_model.embeddings.position_embedding.weight", 0, "hf", (16, 16)),
    ("openai-clip", "visual.positional_embedding", 1, "hf", (16, 16)),
])
def test_detect_each_family(family, key, prefix, profile, patch):
    for model_prefix in ("", "module.", "backbone.model."):
        ckpt = as_ckpt(make_state(family, grid=(5, 5), prefix=model_prefix))
        keys = select_keys(ckpt, None)
        assert keys == [(model_prefix + key,)]
        emb = describe(ckpt, keys[0])
        assert (emb.prefix_tokens, emb.grid, emb.profile, emb.patch) == (prefix, (5, 5), profile, patch)


def test_hf_clip_position_ids_travel_along():
    emb = describe(as_ckpt(make_state("hf-clip")), ("vision_model.embeddings.position_embedding.weight",))
    assert emb.extras == [("vision_model.embeddings.position_ids",)]


def test_nested_checkpoint_keys_and_mae_detection():
    state = make_state("timm")
    state["pos_embed"] = torch.from_numpy(get_2d_sincos_pos_embed(DIM, 4, cls_token=True)).float()[None]
    ckpt = as_ckpt({"model": state, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}, "epoch": 7})
    assert select_keys(ckpt, None) == [("model", "pos_embed")]
    emb = describe(ckpt, ("model", "pos_embed"))
    assert (emb.family, emb.profile, emb.name) == ("mae", "mae", "model/pos_embed")


def test_explicit_layout_and_non_square_grid():
    state = make_state("timm", grid=(4, 4))
    state["pos_embed"] = _table(1 + 3 * 6)          # 3x6 grid: not inferable
    ckpt = as_ckpt(state)
    with pytest.raises(CheckpointError, match="cannot infer the grid of pos_embed"):
        describe(ckpt, ("pos_embed",))
    emb = describe(ckpt, ("pos_embed",), old_grid=(3, 6))
    assert (emb.prefix_tokens, emb.grid) == (1, (3, 6))
    with pytest.raises(CheckpointError, match="needs 20 tokens"):
        describe(ckpt, ("pos_embed",), old_grid=(3, 6), prefix_tokens=2)
    assert describe(ckpt, ("pos_embed",), prefix_tokens=3).grid == (4, 4)  # 19 - 3 = 16


def test_key_selection_errors():
    ckpt = as_ckpt({"model": make_state("timm"), "model_ema": make_state("timm")})
    with pytest.raises(CheckpointError, match="2 position-embedding keys: model/pos_embed, model_ema/pos_embed"):
        select_keys(ckpt, None)
    assert select_keys(ckpt, ["model_ema/pos_embed"]) == [("model_ema", "pos_embed")]
    with pytest.raises(CheckpointError, match="ambiguous"):
        select_keys(ckpt, ["pos_embed"])
    plain = as_ckpt({"weight": torch.zeros(2), "my_pos_table": torch.zeros(1, 37, 4), "x": torch.zeros(1, 17, 4)})
    with pytest.raises(CheckpointError, match=r"candidates: my_pos_table \(1, 37, 4\)"):
        select_keys(plain, None)
    # an unknown key: any prefix count 0..8 that leaves a square grid, if only one does
    assert describe(plain, select_keys(plain, ["my_pos_table"])[0]).grid == (6, 6)
    with pytest.raises(CheckpointError, match=r"2 prefix-token counts leave a square grid \(1, 8\)"):
        describe(plain, ("x",))  # 17 = 1 + 4x4 = 8 + 3x3


def test_patch_size_conflict_and_missing():
    ckpt = as_ckpt(make_state("torchvision"))
    with pytest.raises(CheckpointError, match="contradicts conv_proj.weight"):
        describe(ckpt, ("encoder.pos_embedding",), patch_size=(14, 14))
    state = make_state("torchvision")
    del state["conv_proj.weight"]
    assert describe(as_ckpt(state), ("encoder.pos_embedding",)).patch is None


# -- loading ------------------------------------------------------------------------

def test_load_roundtrip_keeps_structure_and_bits(tmp_path):
    obj = {"model": make_state("torchvision", prefix="module."), "epoch": 3, "note": "hi"}
    path = tmp_path / "a.pth"
    torch.save(obj, path)
    ckpt = load_checkpoint(path)
    out = tmp_path / "b.pth"
    save_checkpoint(ckpt, out)
    back = torch.load(out, weights_only=True)
    assert back.keys() == obj.keys() and back["epoch"] == 3 and back["note"] == "hi"
    assert list(back["model"]) == list(obj["model"])
    for k, v in obj["model"].items():
        assert back["model"][k].dtype == v.dtype and torch.equal(back["model"][k], v)


def test_load_safetensors_keeps_metadata(tmp_path):
    from safetensors.torch import load_file, save_file
    state = make_state("hf-clip")
    path = tmp_path / "m.safetensors"
    save_file(dict(state), path, metadata={"format": "pt", "who": "test"})
    ckpt = load_checkpoint(path)
    assert ckpt.format == "safetensors" and ckpt.metadata == {"format": "pt", "who": "test"}
    save_checkpoint(ckpt, tmp_path / "n.safetensors")
    back = load_file(tmp_path / "n.safetensors")
    assert all(torch.equal(back[k], v) for k, v in state.items())


def _evil_class(marker):
    class Evil:
        def __reduce__(self):
            return (builtins.open, (str(marker), "w"))  # unpickling would create `marker`
    return Evil


def test_malicious_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_class(marker)()
    # the payload really works when unpickled the unsafe way ...
    pickle.loads(pickle.dumps(evil)).close()
    assert marker.exists()
    marker.unlink()
    # ... and vitpe refuses it without running it
    path = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1, 5, 4), "payload": evil}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle .*open"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind,message", [
    ("missing", "no such file"), ("empty", "empty file"), ("text", "not a checkpoint"),
    ("truncated-zip", "truncated or corrupt"), ("truncated-legacy", "truncated torch checkpoint"),
    ("truncated-safetensors", "truncated"), ("tensor", "not a state dict"), ("no-tensors", "without any tensors"),
])
def test_load_errors(tmp_path, kind, message):
    path = tmp_path / ("x.safetensors" if "safetensors" in kind else "x.pth")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("model weights: see the README\n")
    elif kind == "truncated-zip":
        torch.save(make_state("timm"), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-legacy":
        torch.save(make_state("timm"), path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "truncated-safetensors":
        from safetensors.torch import save_file
        save_file(dict(make_state("timm")), path)
        data = path.read_bytes()
        path.write_bytes(data[:-40])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no-tensors":
        torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out.pth"

    def fail(f):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")
    with pytest.raises(OutputError, match="out.pth: write failed: No space left on device"):
        write_atomic(out, fail)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(out, fail, overwrite=True)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.pth"]
