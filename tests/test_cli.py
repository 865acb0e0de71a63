"""The `vitpe` command line: resize, inspect, plot, bench routing, and every
input error (exit status 1, one line on stderr, no traceback, no OUT).

Most cases call cli.main([...]) directly; a few run the real entry points in a
child process. Tables are tiny, except one torchvision vit_b_16 round trip."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitpe_ext
from vitpe_ext.command import cli
from vitpe_ext.integrations.sincos import get_2d_sincos_pos_embed

from test_checkpoint import _evil_class, make_state

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vitpe ") and "error:" in lines[0] and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def save(tmp_path, obj, name="in.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# -- resize: numbers, structure, dtypes ---------------------------------------------

@pytest.mark.parametrize("family,key,profile,prefix", [
    ("torchvision", "encoder.pos_embedding", "torchvision", 1),
    ("timm", "pos_embed", "timm", 1),
    ("hf-deit", "embeddings.position_embeddings", "hf", 2),
    ("dinov2", "pos_embed", "dinov2", 1),
    ("openai-clip", "visual.positional_embedding", "hf", 1),
])
def test_resize_uses_the_family_profile_and_keeps_everything_else(tmp_path, capsys, family, key, profile, prefix):
    state = make_state(family, grid=(4, 4))
    obj = {"model": {"module." + k: v for k, v in state.items()}, "epoch": 5, "args": {"lr": 0.1}}
    src = save(tmp_path, obj)
    patch = 14 if family.startswith("dinov2") else 16
    code, out, err = run(["resize", src, tmp_path / "out.pth", "--image-size", f"{6 * patch}x{5 * patch}"], capsys)
    assert code == 0, err
    assert "grid 4x4 -> 6x5" in out and profile in out
    back = torch.load(tmp_path / "out.pth", weights_only=True)
    assert back["epoch"] == 5 and back["args"] == {"lr": 0.1}
    assert list(back["model"]) == list(obj["model"])          # same keys, same order
    table_key = "module." + key
    for k, v in obj["model"].items():
        if k != table_key:
            assert back["model"][k].dtype == v.dtype and torch.equal(back["model"][k], v), k
    expected = vitpe_ext.interpolate_pos_embed(state[key], (6, 5), (4, 4), prefix, profile=profile)
    assert torch.equal(back["model"][table_key], expected)
    assert back["model"][table_key].shape[-2] == prefix + 30


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_resize_preserves_dtype(tmp_path, capsys, dtype):
    state = {k: v.to(dtype) for k, v in make_state("timm").items()}
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128"], capsys)
    assert code == 0, err
    back = torch.load(tmp_path / "o.pth", weights_only=True)
    assert all(v.dtype == dtype for v in back.values())
    assert torch.equal(back["pos_embed"], vitpe_ext.interpolate_pos_embed(state["pos_embed"], (8, 8), profile="timm"))


def test_resize_safetensors_hf_clip(tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    state = make_state("hf-clip", grid=(4, 4))
    src = tmp_path / "clip.safetensors"
    save_file(dict(state), src, metadata={"format": "pt"})
    code, out, err = run(["resize", src, tmp_path / "big.safetensors", "--image-size", "96"], capsys)
    assert code == 0, err
    back = load_file(tmp_path / "big.safetensors")
    table = back["vision_model.embeddings.position_embedding.weight"]
    assert table.shape == (37, 16)  # 2-D table stays 2-D
    assert torch.equal(back["vision_model.embeddings.position_ids"], torch.arange(37).unsqueeze(0))
    assert torch.equal(back["text_model.embeddings.position_embedding.weight"],
                       state["text_model.embeddings.position_embedding.weight"])
    assert "position_ids" in out


def test_resize_explicit_mode_and_profile_flags(tmp_path, capsys):
    state = make_state("torchvision")
    src = save(tmp_path, state)
    table = state["encoder.pos_embedding"]
    code, _, err = run(["resize", src, tmp_path / "a.pth", "--image-size", "112", "--mode", "area"], capsys)
    assert code == 0, err
    got = torch.load(tmp_path / "a.pth", weights_only=True)["encoder.pos_embedding"]
    assert torch.equal(got, vitpe_ext.interpolate_pos_embed(table, (7, 7), mode="area"))
    # a profile with a setting its library allows changing ...
    code, _, err = run(["resize", src, tmp_path / "b.pth", "--image-size", "112", "--profile", "torchvision",
                        "--mode", "bilinear"], capsys)
    assert code == 0, err
    got = torch.load(tmp_path / "b.pth", weights_only=True)["encoder.pos_embedding"]
    assert torch.equal(got, vitpe_ext.interpolate_pos_embed(table, (7, 7), mode="bilinear", align_corners=True))
    # ... and one it does not
    code, _, err = run(["resize", src, tmp_path / "c.pth", "--image-size", "112", "--profile", "torchvision",
                        "--mode", "area"], capsys)
    assert_one_line_error(code, err, "torchvision")
    assert not (tmp_path / "c.pth").exists()
    code, _, err = run(["resize", src, tmp_path / "c.pth", "--image-size", "112", "--mode", "nearest",
                        "--align-corners"], capsys)
    assert_one_line_error(code, err, "align_corners")


def test_resize_sincos_regenerates_exactly(tmp_path, capsys):
    state = make_state("timm", grid=(4, 4))
    state["pos_embed"] = torch.from_numpy(get_2d_sincos_pos_embed(16, 4, cls_token=True)).float()[None]
    src = save(tmp_path, {"model": state})
    code, out, err = run(["resize", src, tmp_path / "s.pth", "--image-size", "96x160", "--sincos"], capsys)
    assert code == 0, err
    got = torch.load(tmp_path / "s.pth", weights_only=True)["model"]["pos_embed"]
    expected = torch.from_numpy(get_2d_sincos_pos_embed(16, (6, 10), cls_token=True)).float()[None]
    assert torch.equal(got, expected)
    assert "family mae" in out  # a sin-cos pos_embed is MAE's: default profile mae
    learned = save(tmp_path, make_state("timm"), "learned.pth")
    code, _, err = run(["resize", learned, tmp_path / "t.pth", "--image-size", "96", "--sincos"], capsys)
    assert_one_line_error(code, err, "not a fixed 2-D sin-cos table")


def test_dry_run_writes_nothing(tmp_path, capsys):
    src = save(tmp_path, make_state("hf"))
    code, out, _ = run(["resize", src, tmp_path / "o.pth", "--image-size", "384", "--dry-run"], capsys)
    assert code == 0
    assert "grid 4x4 -> 24x24" in out and "dry run" in out
    assert sorted(os.listdir(tmp_path)) == ["in.pth"]


def test_key_and_layout_flags(tmp_path, capsys):
    state = {"backbone": {"my_table": torch.randn(1, 1 + 3 * 5, 8)}, "ema": {"my_table": torch.randn(1, 16, 8)}}
    src = save(tmp_path, state)
    code, out, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "96x160", "--key", "backbone/my_table",
                          "--old-grid", "3x5", "--patch-size", "16"], capsys)
    assert code == 0, err
    back = torch.load(tmp_path / "o.pth", weights_only=True)
    assert torch.equal(back["backbone"]["my_table"],
                       vitpe_ext.interpolate_pos_embed(state["backbone"]["my_table"], (6, 10), (3, 5), 1, profile="hf"))
    assert torch.equal(back["ema"]["my_table"], state["ema"]["my_table"])


def test_resize_directory_with_progress(tmp_path, capsys):
    src = tmp_path / "ckpts"
    (src / "sub").mkdir(parents=True)
    torch.save(make_state("timm", seed=1), src / "a.pth")
    torch.save(make_state("torchvision", seed=2), src / "sub" / "b.pt")
    (src / "README.txt").write_text("not a checkpoint, skipped")
    code, out, err = run(["resize", src, tmp_path / "out", "--image-size", "96", "--dry-run"], capsys)
    assert code == 0, err
    assert out.count("dry run: would write") == 2 and not (tmp_path / "out").exists()
    code, out, err = run(["resize", src, tmp_path / "out", "--image-size", "96"], capsys)
    assert code == 0, err
    assert "2/2" in err and "[" in err
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        ["a.pth", os.path.join("sub", "b.pt")]
    assert torch.load(tmp_path / "out" / "sub" / "b.pt", weights_only=True)["encoder.pos_embedding"].shape == (1, 37, 16)
    # a file without a table (another shard of a sharded checkpoint) is copied unchanged
    torch.save({"blocks.3.mlp.fc1.weight": torch.randn(4, 4)}, src / "sub" / "shard2.bin")
    code, out, err = run(["resize", src, tmp_path / "out_shards", "--image-size", "96"], capsys)
    assert code == 0, err
    assert (tmp_path / "out_shards" / "sub" / "shard2.bin").read_bytes() == (src / "sub" / "shard2.bin").read_bytes()
    assert "shard2.bin: no position-embedding key; copied unchanged" in out
    (src / "sub" / "shard2.bin").unlink()
    # one bad file: the others are still written, the status says it failed
    (src / "c.pth").write_text("garbage")
    code, _, err = run(["resize", src, tmp_path / "out2", "--image-size", "96"], capsys)
    assert code == 1
    assert "c.pth: not a checkpoint" in err and "1 of 3 checkpoints failed" in err
    assert (tmp_path / "out2" / "a.pth").exists() and not (tmp_path / "out2" / "c.pth").exists()


def test_torchvision_vit_b_16_round_trip(tmp_path, capsys):
    from torchvision.models import vit_b_16
    from torchvision.models.vision_transformer import interpolate_embeddings
    state = vit_b_16(weights=None).state_dict()
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "384.pth", "--image-size", "384"], capsys)
    assert code == 0, err
    resized = torch.load(tmp_path / "384.pth", weights_only=True)
    model = vit_b_16(image_size=384)
    model.load_state_dict(resized, strict=True)
    # torchvision's own resize gives the same table (its profile: bicubic, align_corners=True)
    reference = interpolate_embeddings(384, 16, {k: v.clone() for k, v in state.items()})
    torch.testing.assert_close(resized["encoder.pos_embedding"], reference["encoder.pos_embedding"],
                               rtol=0, atol=1e-6)
    with torch.inference_mode():
        logits = model.eval()(torch.randn(1, 3, 384, 384))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


# -- errors: one line, status 1, no OUT ----------------------------------------------

def test_error_missing_file(tmp_path, capsys):
    code, _, err = run(["resize", tmp_path / "nope.pth", tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "nope.pth: no such file")
    assert not (tmp_path / "o.pth").exists()


def test_error_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "in.pth").write_text("hello\n")
    code, _, err = run(["resize", tmp_path / "in.pth", tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "not a checkpoint")


def test_error_truncated(tmp_path, capsys):
    src = save(tmp_path, make_state("timm"))
    src.write_bytes(src.read_bytes()[:-200])
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "truncated")
    assert not (tmp_path / "o.pth").exists()


def test_error_malicious_pickle_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = dict(make_state("timm"), payload=_evil_class(marker)())
    src = save(tmp_path, state)
    for argv in (["resize", src, tmp_path / "o.pth", "--image-size", "384"], ["inspect", src]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "refused to unpickle", "weights_only=True")
    assert not marker.exists() and not (tmp_path / "o.pth").exists()


def test_error_no_embedding_key_lists_candidates(tmp_path, capsys):
    src = save(tmp_path, {"blocks.0.weight": torch.zeros(3), "rel_pos_bias": torch.zeros(5, 2)})
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "no position-embedding key found", "candidates: rel_pos_bias (5, 2)", "--key")


def test_error_directory_without_any_table(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    torch.save({"w": torch.zeros(2)}, tmp_path / "d" / "a.pth")
    code, out, err = run(["resize", tmp_path / "d", tmp_path / "o", "--image-size", "384"], capsys)
    progress, message = err.strip().splitlines()
    assert progress.startswith("[") and "1/1 a.pth" in progress
    assert_one_line_error(code, message, "none of its 1 checkpoint files has a position-embedding key")
    assert not (tmp_path / "o").exists()


def test_error_ambiguous_keys(tmp_path, capsys):
    src = save(tmp_path, {"model": make_state("timm"), "model_ema": make_state("timm")})
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "model/pos_embed, model_ema/pos_embed", "--key")


def test_error_grid_cannot_be_inferred(tmp_path, capsys):
    state = make_state("torchvision")
    state["encoder.pos_embedding"] = torch.randn(1, 1 + 2 * 7, 16)
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, "cannot infer the grid", "--old-grid")


def test_error_size_not_a_multiple_of_the_patch(tmp_path, capsys):
    src = save(tmp_path, make_state("timm"))
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "390x384"], capsys)
    assert_one_line_error(code, err, "390 is not a multiple of the patch size 16", "crop", "384", "pad", "400",
                          "dynamic_img_pad")


def test_error_out_exists_and_force(tmp_path, capsys):
    src = save(tmp_path, make_state("timm"))
    out = tmp_path / "o.pth"
    out.write_bytes(b"precious")
    code, _, err = run(["resize", src, out, "--image-size", "128"], capsys)
    assert_one_line_error(code, err, "exists", "--force")
    assert out.read_bytes() == b"precious"
    code, _, err = run(["resize", src, out, "--image-size", "128", "--force"], capsys)
    assert code == 0, err
    assert torch.load(out, weights_only=True)["pos_embed"].shape == (1, 65, 16)


def test_error_out_is_in_even_with_force(tmp_path, capsys):
    src = save(tmp_path, make_state("timm"))
    before = src.read_bytes()
    for alias in (str(tmp_path) + "/./in.pth", tmp_path / "link.pth", tmp_path / "hard.pth"):
        if str(alias).endswith("link.pth"):
            alias.symlink_to(src)
        elif str(alias).endswith("hard.pth"):
            os.link(src, alias)
        code, _, err = run(["resize", src, alias, "--image-size", "128", "--force"], capsys)
        assert_one_line_error(code, err, "is the input file")
    assert src.read_bytes() == before


def test_error_nonfinite_table_refused(tmp_path, capsys):
    state = make_state("timm")
    state["pos_embed"][0, 5, 3] = float("nan")
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128"], capsys)
    assert_one_line_error(code, err, "pos_embed has non-finite values (1 NaN, 0 Inf in token 5); ",
                          "interpolation would spread them to their neighbours; ",
                          "fix the checkpoint (or pass --allow-nonfinite)")


def test_failed_write_leaves_no_partial_out(tmp_path, capsys, monkeypatch):
    src = save(tmp_path, make_state("timm"))
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", failing_save)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128"], capsys)
    assert_one_line_error(code, err, "No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["in.pth"]  # no OUT, no temporary file
    # with --force over an existing OUT, the old OUT survives the failure intact
    real_save({"old": torch.ones(1)}, tmp_path / "o.pth")
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128", "--force"], capsys)
    assert code == 1
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(tmp_path / "o.pth", weights_only=True)["old"], torch.ones(1))
    assert sorted(os.listdir(tmp_path)) == ["in.pth", "o.pth"]


# -- inspect and plot -----------------------------------------------------------------

def test_inspect_table(tmp_path, capsys):
    state = make_state("timm", grid=(4, 4))
    state["pos_embed"] = torch.from_numpy(get_2d_sincos_pos_embed(16, 4, cls_token=True)).to(torch.bfloat16)[None]
    src = save(tmp_path, {"model": state})
    code, out, err = run(["inspect", src], capsys)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("model/pos_embed"))
    for field in ("(1, 17, 16)", "bfloat16", "mae -> mae", "4x4", "16x16", "64x64", "mae (max diff"):
        assert field in row, (field, row)
    assert row.rstrip().endswith("none")


def test_inspect_reports_nonfinite(tmp_path, capsys):
    state = make_state("torchvision")
    state["encoder.pos_embedding"][0, 0, 1] = float("inf")
    state["encoder.pos_embedding"][0, 9, :2] = float("nan")
    code, out, err = run(["inspect", save(tmp_path, state)], capsys)
    assert code == 1
    assert "2 NaN, 1 Inf in tokens 0, 9 (tokens < 1 are prefix tokens)" in out
    assert "non-finite values" in err


def test_plot_writes_a_png(tmp_path, capsys):
    src = save(tmp_path, make_state("timm", grid=(5, 5), dim=32))
    code, out, err = run(["plot", src, "--image-size", "144x112", "-o", tmp_path / "fig.png"], capsys)
    assert code == 0, err
    data = (tmp_path / "fig.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


# -- routing and real entry points ------------------------------------------------------

def test_bench_is_routed_with_its_arguments(monkeypatch):
    import vitpe_ext.command.bench as bench
    seen = []
    monkeypatch.setattr(bench, "main", lambda argv=None: seen.append(argv) or 7)
    assert cli.main(["bench", "--device", "cpu", "--cases", "x"]) == 7
    assert seen == [["--device", "cpu", "--cases", "x"]]


def _child(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "vitpe_ext", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_entry_point_resize_and_error(tmp_path):
    src = save(tmp_path, make_state("hf"))
    done = _child(["resize", src, tmp_path / "o.pth", "--image-size", "128x96"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert torch.load(tmp_path / "o.pth", weights_only=True)["embeddings.position_embeddings"].shape == (1, 49, 16)
    failed = _child(["resize", src, tmp_path / "o.pth", "--image-size", "128x96"], tmp_path)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [f"vitpe resize: error: {tmp_path / 'o.pth'}: exists; "
                                                  f"pass --force to overwrite it"]


def test_timm_round_trip_matches_timm(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from timm.layers import resample_abs_pos_embed
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)
    state = model.state_dict()
    src = save(tmp_path, {"state_dict": {"module." + k: v for k, v in state.items()}})
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384x256"], capsys)
    assert code == 0, err
    resized = torch.load(tmp_path / "o.pth", weights_only=True)["state_dict"]
    resized = {k[len("module."):]: v for k, v in resized.items()}
    big = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=(384, 256))
    big.load_state_dict(resized, strict=True)
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=[24, 16], num_prefix_tokens=1)
    torch.testing.assert_close(resized["pos_embed"], expected, rtol=0, atol=1e-6)
    with torch.inference_mode():
        assert torch.isfinite(big.eval()(torch.randn(1, 3, 384, 256))).all()
