"""examples/finetune.py end to end, reduced: it trains, and what it saves loads back."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
tv_vit = pytest.importorskip("torchvision.models.vision_transformer")

from vitpe_ext.integrations.provenance import ProvenanceWarning, read_provenance  # noqa: E402
from vitpe_ext.integrations.torchvision import make_dynamic  # noqa: E402
from vitpe_ext.op.modes import MODES  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune.py"


def run(*args, cwd):
    # a tiny model on a shared CPU trains fastest on one thread (two contend for the cores)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def example_module():
    spec = importlib.util.spec_from_file_location("finetune_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    result = run("--quick", "--steps", 40, "--out-dir", out, cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_it_trains(quick_run):
    out, stdout = quick_run
    pretrained = torch.load(out / "pretrained.pth", weights_only=True)
    assert mean(pretrained["losses"][-10:]) < 0.5 * mean(pretrained["losses"][:10])
    finetuned = torch.load(out / "finetuned.pth", weights_only=True)
    losses = finetuned["losses"]
    assert len(losses) == 40 and all(map(torch.isfinite, torch.tensor(losses)))
    assert mean(losses[-10:]) < mean(losses[:10]), losses
    assert finetuned["test_accuracy"]["48"] > 0.3  # ten classes: chance is 0.1
    assert "wrote" in stdout and "fine-tuned 40 steps" in stdout


def test_the_checkpoint_loads_and_predicts_as_recorded(quick_run, example):
    out, _ = quick_run
    ckpt = torch.load(out / "finetuned.pth", weights_only=True)
    cfg, record = ckpt["config"], read_provenance(ckpt)["encoder.pos_embedding"]
    assert cfg["image_size"] == 48 and cfg["num_classes"] == 10
    assert record.source_grid == (4, 4) and record.grid == (6, 6) and len(record.steps) == 1
    assert record.last.mode in MODES and record.last.num_prefix_tokens == 1
    assert ckpt["model"]["encoder.pos_embedding"].shape == (1, 1 + 6 * 6, cfg["hidden_dim"])

    model = tv_vit.VisionTransformer(**cfg)
    # settings other than the recorded ones: the record warns as the weights load
    other = {"profile": "torchvision"} if record.last.align_corners is False else {"mode": "bilinear"}
    make_dynamic(model, **other)
    with pytest.warns(ProvenanceWarning, match="encoder.pos_embedding was made by resizing 4x4 -> 6x6"):
        model.load_state_dict(ckpt["model"])
    make_dynamic(model, profile=None, **record.last.arguments())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(ckpt["model"])  # strict: exactly a torchvision ViT's keys
    test = example.digits(0)["test"]
    for size, recorded in ckpt["test_accuracy"].items():
        # one thread or two may flip a borderline bf16 prediction, no more
        assert example.accuracy(model, test, int(size), True) == pytest.approx(recorded, abs=0.02), size


@pytest.fixture
def example():
    """The example's module, run in this process on one thread (see run())."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield example_module()
    torch.set_num_threads(threads)


def test_a_bare_state_dict_with_another_head(quick_run, tmp_path, example, capsys):
    out, _ = quick_run
    state = torch.load(out / "pretrained.pth", weights_only=True)["model"]
    state["heads.head.weight"], state["heads.head.bias"] = torch.randn(7, 64), torch.zeros(7)
    torch.save(state, tmp_path / "bare.pth")
    args = ["--checkpoint", str(tmp_path / "bare.pth"), "--out-dir", str(tmp_path), "--steps", "3"]
    with pytest.raises(SystemExit, match="2"):
        example.main(args)
    assert "pass --num-heads" in capsys.readouterr().err
    assert not (tmp_path / "finetuned.pth").exists()
    example.main(args + ["--num-heads", "4", "--image-size", "40"])
    ckpt = torch.load(tmp_path / "finetuned.pth", weights_only=True)
    assert ckpt["model"]["heads.head.weight"].shape == (10, 64)
    assert read_provenance(ckpt)["encoder.pos_embedding"].grid == (5, 5)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_resized_checkpoint_resized_again_keeps_its_history(quick_run, tmp_path, example):
    out, _ = quick_run
    example.main(["--checkpoint", str(out / "finetuned.pth"), "--image-size", "56", "--steps", "3",
                  "--out-dir", str(tmp_path)])
    first = read_provenance(out / "finetuned.pth")["encoder.pos_embedding"]
    record = read_provenance(tmp_path / "finetuned.pth")["encoder.pos_embedding"]
    assert record.steps[0] == first.steps[0] and len(record.steps) == 2
    assert record.source_grid == (4, 4) and record.last.old_grid == (6, 6) and record.grid == (7, 7)


def test_bad_arguments_and_existing_outputs(quick_run, example, capsys):
    out, _ = quick_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cases = [
        (["--quick"], "finetuned.pth exists; pass --force to overwrite it"),  # would overwrite both outputs
        (["--checkpoint", str(out / "pretrained.pth"), "--image-size", "50"],
         "--image-size 50 is not a multiple of the patch size 8"),
        (["--steps", "0"], "--steps: must be a positive integer, got '0'"),
        (["--lr", "-1"], "--lr: must be a positive number, got '-1'"),
        (["--pos-embed-lr", "nan"], "--pos-embed-lr: must be a positive number"),
        (["--image-size", "big"], "--image-size: must be a positive integer"),
    ]
    for args, message in cases:
        out_dir = out if "exists" in message else out / "y"
        with pytest.raises(SystemExit, match="2"):
            example.main(args + ["--out-dir", str(out_dir)])
        assert message in capsys.readouterr().err, args
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not (out / "y").exists()
