"""`vitpe` input checks: the output format follows OUT's extension (and what
safetensors cannot hold is refused before writing), format sniffing, layout
and size errors, plot/demo/bench arguments, `--help`, the demo's model
architecture, and the README's list of the command's errors."""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest
import torch

import vitpe_ext
from vitpe_ext.command import cli

from test_checkpoint import make_state
from test_cli import assert_one_line_error, run, save

REPO = Path(__file__).resolve().parents[1]


def listing(folder):
    return sorted(os.listdir(folder))


# -- the output format follows OUT's extension ---------------------------------------------

def test_torch_to_safetensors_and_back(tmp_path, capsys):
    from safetensors.torch import load_file
    state = make_state("timm")
    src = save(tmp_path, state)
    code, out, err = run(["resize", src, tmp_path / "o.safetensors", "--image-size", "128"], capsys)
    assert code == 0, err
    assert "wrote" in out and "(safetensors, converted from torch)" in out
    back = load_file(tmp_path / "o.safetensors")  # raises unless it really is safetensors
    expected = vitpe_ext.interpolate_pos_embed(state["pos_embed"], (8, 8), profile="timm")
    assert sorted(back) == sorted(state) and torch.equal(back["pos_embed"], expected)
    assert all(torch.equal(back[k], v) for k, v in state.items() if k != "pos_embed")
    for name in ("o.pth", "o.bin"):
        code, out, err = run(["resize", tmp_path / "o.safetensors", tmp_path / name, "--image-size", "128"], capsys)
        assert code == 0, err
        assert (tmp_path / name).read_bytes()[:4] == b"PK\x03\x04" and "converted from safetensors" in out
        again = torch.load(tmp_path / name, weights_only=True)
        assert all(torch.equal(again[k], back[k]) for k in back)


def test_tensors_sharing_storage_are_stored_as_copies(tmp_path, capsys):
    from safetensors.torch import load_file
    state = make_state("timm")
    shared = torch.randn(6, 4)
    state["head.weight"], state["tied.weight"], state["rows"] = shared, shared, shared[2:4]
    state["transposed"] = torch.randn(3, 5).t()
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.safetensors", "--image-size", "128"], capsys)
    assert code == 0, err
    back = load_file(tmp_path / "o.safetensors")
    for name in ("head.weight", "tied.weight", "rows", "transposed"):
        assert torch.equal(back[name], state[name]), name


@pytest.mark.parametrize("obj,listed", [
    (lambda s: {"model": s, "epoch": 5}, "model/ (nested dict), epoch (int)"),
    (lambda s: dict(s, step=3, note="x"), "step (int), note (str)"),
])
def test_safetensors_refuses_what_it_cannot_hold_before_writing(tmp_path, capsys, obj, listed):
    src = save(tmp_path, obj(make_state("timm")))
    before = listing(tmp_path)
    for flags in ([], ["--dry-run"]):
        code, _, err = run(["resize", src, tmp_path / "o.safetensors", "--image-size", "128"] + flags, capsys)
        assert_one_line_error(code, err, "o.safetensors: safetensors holds only a flat dict of named tensors, "
                                         f"and {src} also has {listed}; write a .pth/.pt/.bin instead")
        if "epoch" in listed:
            assert ("also has model/ (nested dict), epoch (int); write a .pth/.pt/.bin instead (or save the state "
                    "dict alone)") in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("name,what", [("o.pkl", "unknown output extension .pkl"), ("o", "no output extension"),
                                       ("o.safetensor", "unknown output extension .safetensor")])
def test_unknown_output_extension(tmp_path, capsys, name, what):
    src = save(tmp_path, make_state("timm"))
    for flags in ([], ["--dry-run"]):
        code, _, err = run(["resize", src, tmp_path / name, "--image-size", "128"] + flags, capsys)
        assert_one_line_error(code, err, f"{name}: {what}; the format follows OUT's extension: .safetensors, "
                                         f"or .pth/.pt/.bin/.ckpt for torch.save")
    assert listing(tmp_path) == ["in.pth"]


def test_safetensors_whose_header_length_starts_with_0x80(tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    state = make_state("timm")
    src = tmp_path / "x.safetensors"
    for pad in range(0, 400):  # the header is padded to 8 bytes: some length has low byte 0x80
        save_file(dict(state), src, metadata={"pad": "p" * pad})
        if src.read_bytes()[0] == 0x80:
            break
    assert struct.unpack("<Q", src.read_bytes()[:8])[0] % 256 == 0x80
    code, out, err = run(["resize", src, tmp_path / "y.safetensors", "--image-size", "128"], capsys)
    assert code == 0, err
    back = load_file(tmp_path / "y.safetensors")
    assert back["pos_embed"].shape == (1, 65, 16)
    code, out, err = run(["inspect", src], capsys)
    assert code == 0 and "(safetensors, 5 tensors)" in out


# -- layout and size errors ------------------------------------------------------------------

def test_old_grid_contradicting_the_family_prefix(tmp_path, capsys):
    state = make_state("torchvision", grid=(14, 14))
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384", "--old-grid", "14x13"], capsys)
    assert_one_line_error(code, err, "--old-grid 14x13 leaves 15 prefix tokens in encoder.pos_embedding (197 "
                                     "tokens), but this torchvision table has 1; check --old-grid (or pass "
                                     "--prefix-tokens 15 if the table really has that many)")
    # the user's explicit word overrides the family's
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384", "--old-grid", "14x13",
                        "--prefix-tokens", "15", "--dry-run"], capsys)
    assert code == 0, err


def test_empty_table(tmp_path, capsys):
    state = make_state("timm")
    state["pos_embed"] = torch.zeros(1, 17, 0)
    src = save(tmp_path, state)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128"], capsys)
    assert_one_line_error(code, err, "pos_embed has shape (1, 17, 0): an empty table (0 channels), nothing to resize")


@pytest.mark.parametrize("dry_run", [False, True])
def test_output_larger_than_memory_is_refused_before_computing(tmp_path, capsys, monkeypatch, dry_run):
    src = save(tmp_path, make_state("timm"))
    calls = []
    monkeypatch.setattr(vitpe_ext.op, "interpolate_pos_embed", lambda *a, **k: calls.append(a))
    side = 1 << 24  # a 2^20 x 2^20 grid: 2^40 tokens x 16 channels x 4 bytes
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", str(side)]
                       + (["--dry-run"] if dry_run else []), capsys)
    assert_one_line_error(code, err, f"pos_embed: the resized table (1, {(1 << 40) + 1}, 16) float32 would take "
                                     f"{((1 << 40) + 1) * 64} bytes (64.0 TiB), more than this machine's memory",
                          "; choose a smaller --image-size")
    assert calls == [] and listing(tmp_path) == ["in.pth"]


def test_dry_run_computes_no_table(tmp_path, capsys, monkeypatch):
    src = save(tmp_path, make_state("timm"))
    monkeypatch.setattr(vitpe_ext.op, "interpolate_pos_embed", lambda *a, **k: pytest.fail("computed"))
    code, out, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384", "--dry-run"], capsys)
    assert code == 0, err
    assert "(1, 17, 16) -> (1, 577, 16)" in out


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory\nmore"),
                                   ValueError("interpolate_pos_embed: output too large to allocate")])
def test_op_failures_are_one_line(tmp_path, capsys, monkeypatch, error):
    src = save(tmp_path, make_state("timm"))

    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(vitpe_ext.op, "interpolate_pos_embed", fail)
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "384"], capsys)
    assert_one_line_error(code, err, str(error).splitlines()[0] if str(error) else "MemoryError")
    assert listing(tmp_path) == ["in.pth"]


# -- plot, demo, bench arguments -------------------------------------------------------------

@pytest.mark.parametrize("command", ["plot", "demo"])
def test_plot_output_extension_is_checked_first(tmp_path, capsys, monkeypatch, command):
    src = save(tmp_path, make_state("timm"))
    monkeypatch.setattr(vitpe_ext.op, "interpolate_pos_embed", lambda *a, **k: pytest.fail("computed"))
    code, _, err = run([command, src, "-o", tmp_path / "x.pth"], capsys)
    assert_one_line_error(code, err, "x.pth: matplotlib cannot write the plot as .pth files; give -o one of the "
                                     "extensions", ".png", ".pdf", ".svg")
    assert listing(tmp_path) == ["in.pth"]


@pytest.mark.parametrize("argv,message", [
    (["--json", "/nonexistent/x.json"], "vitpe bench: --json /nonexistent/x.json: no such directory /nonexistent"),
    (["--min-time", "inf"], "vitpe bench: --repeats must be >= 1 and --min-time a positive finite number of seconds "
                            "(got --repeats 7, --min-time inf)"),
    (["--min-time", "nan"], "--min-time a positive finite number of seconds (got --repeats 7, --min-time nan)"),
])
def test_bench_arguments_are_checked_before_it_runs(capsys, monkeypatch, argv, message):
    from vitpe_ext.command import bench
    monkeypatch.setattr(bench, "run_row", lambda *a: pytest.fail("the benchmark ran"))  # --min-time inf: forever
    code = cli.main(["bench", "--cases", "smoke"] + argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    listed = re.findall(r"^    (\w+) ", capsys.readouterr().out, re.M)
    assert listed == ["resize", "inspect", "plot", "demo", "compare", "bench"]


def test_command_line_mistakes_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["resize", "x.pth"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "vitpe resize: error: the following arguments are required: OUT (see vitpe resize --help)"]


# -- the demo rebuilds the checkpoint's real architecture ----------------------------------------

def _tiny_vit(tmp_path, heads, wrap):
    from torchvision.models import VisionTransformer
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=heads, hidden_dim=32, mlp_dim=64,
                              num_classes=3)
    return save(tmp_path, wrap(model.state_dict()), "vit.pth")


def test_demo_takes_num_heads_from_the_checkpoint(tmp_path, capsys):
    src = _tiny_vit(tmp_path, 4, lambda s: {"model": s, "config": {"num_heads": 4, "depth": 1}})
    code, out, err = run(["demo", src, "--image-size", "96", "--no-plot"], capsys)
    assert code == 0, err
    assert "num_heads=4, hidden_dim=32" in out and "(num_heads recorded in the checkpoint)" in out


def test_demo_says_what_it_assumes_and_takes_num_heads(tmp_path, capsys):
    src = _tiny_vit(tmp_path, 4, lambda s: s)
    code, out, err = run(["demo", src, "--image-size", "96", "--no-plot"], capsys)
    assert code == 0, err
    assert "num_heads=1," in out and "(num_heads assumed: not recorded in the checkpoint" in out
    assert "pass --num-heads" in out
    code, out, err = run(["demo", src, "--image-size", "96", "--no-plot", "--num-heads", "4"], capsys)
    assert code == 0, err
    assert "num_heads=4, hidden_dim=32" in out and "(num_heads --num-heads)" in out
    code, _, err = run(["demo", src, "--image-size", "96", "--no-plot", "--num-heads", "3"], capsys)
    assert_one_line_error(code, err, "--num-heads 3 does not divide the model width 32")


# -- the README's list of errors is what the command prints ----------------------------------------

def test_readme_errors_section_matches_the_messages():
    """Every fixed piece of every message the README lists is asserted, against
    the command's real output, by a test of test_cli*.py."""
    section = (REPO / "README.md").read_text().split("### Errors of the `vitpe` command", 1)[1].split("\n## ", 1)[0]
    messages = re.findall(r"`(vitpe [a-z]+: [^`]+)`", section)
    assert len(messages) >= 15, messages
    tests = "".join(path.read_text() for path in sorted((REPO / "tests").glob("test_cli*.py")))
    tests = re.sub(r'"\s*\n\s*f?"', "", tests)  # join implicitly concatenated string literals
    pieces = [piece.strip(" :;,()") for message in messages
              for piece in re.split(r"\b(?:OUT|IN|DIR|PATH|PID|N|M|HxW)\b|\.\.\.|; ",
                                    re.sub(r"^vitpe [a-z]+: (error|note): ", "", message))]
    assert [piece for piece in pieces if len(piece) >= 12 and piece not in tests] == []
