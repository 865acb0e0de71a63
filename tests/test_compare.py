"""compare_modes and `vitpe compare`: every row's numbers against an
independent evaluation (the table resized by the plain-PyTorch recipe of
op.reference, a fresh model, a hand-written loop), for torchvision and timm
ViTs; the memory column against a known allocation; the McNemar p-value
against scipy; the command end to end on digits and on an ImageFolder; and the
one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vitpe_ext  # noqa: F401
from vitpe_ext.command import cli
from vitpe_ext.integrations.compare import (Variant, compare_modes, default_variants, format_table, mcnemar_p,
                                            parse_variant, resized_state_dict)
from vitpe_ext.op import MODES, mode_info
from vitpe_ext.op.reference import recipe_interpolate

REPO = Path(__file__).resolve().parents[1]
torchvision = pytest.importorskip("torchvision")
from torchvision.models import VisionTransformer  # noqa: E402


def tv_vit(image, patch=4, width=16, classes=5, seed=0):
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=image, patch_size=patch, num_layers=1, num_heads=2, hidden_dim=width,
                              mlp_dim=2 * width, num_classes=classes)
    torch.nn.init.normal_(model.heads.head.weight, std=1.0)  # torchvision starts the head at zero: constant logits
    return model


def smooth_state(model, grid, prefix=1, key="encoder.pos_embedding"):
    """The model's state dict with a large, smooth table, so that modes differ."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dim = state[key].shape[-1]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij")
    freqs = torch.arange(1, dim + 1, dtype=torch.float32)
    field = torch.sin(3 * freqs * xs[..., None] + 2 * ys[..., None] * freqs.flip(0))
    state[key] = torch.cat([torch.randn(1, prefix, dim), 3 * field.reshape(1, grid * grid, dim)], dim=1)
    return state


def data(n, size, classes=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def independent_eval(model, state, key, variant, new_grid, old_grid, prefix, x, y):
    """Resize with the recipe, load into a copy of the model, evaluate by hand."""
    s = variant.settings()
    table = state[key]
    resized = recipe_interpolate(table, new_grid, old_grid, prefix, s["mode"], s["align_corners"], s["antialias"])
    fresh = {**state, key: resized}
    model.load_state_dict(fresh, strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return (logits.argmax(1) == y).tolist(), float(F.cross_entropy(logits, y))


def test_torchvision_rows_match_an_independent_evaluation():
    src, dst = tv_vit(16), tv_vit(28)
    state = smooth_state(src, 4)
    before = {k: v.clone() for k, v in state.items()}
    x, y = data(48, 28)
    loader = [(x[:20], y[:20]), (x[20:], y[20:])]
    rows = compare_modes(dst, state, loader, 28)
    assert [r.label for r in rows] == [v.label for v in default_variants()]
    check = tv_vit(28)
    for row, variant in zip(rows, default_variants()):
        if variant.settings()["mode"] == "lanczos3" and not hasattr(torch.nn.functional, "interpolate"):
            continue
        try:
            correct, loss = independent_eval(check, state, "encoder.pos_embedding", variant, (7, 7), (4, 4), 1, x, y)
        except (RuntimeError, ValueError, NotImplementedError):
            continue  # a mode this torch's F.interpolate lacks (lanczos3 before 2.14)
        assert row.correct == correct, row.label
        assert row.accuracy == pytest.approx(sum(correct) / len(correct))
        assert row.loss == pytest.approx(loss, rel=1e-5), row.label
        assert (row.old_grid, row.new_grid, row.samples) == ((4, 4), (7, 7), 48)
        assert row.resize_ms > 0 and row.eval_s > 0
    assert len({round(r.loss, 6) for r in rows}) > 3  # the modes really gave different tables
    assert all(torch.equal(state[k], before[k]) for k in state)  # the caller's state dict is untouched


def test_timm_with_register_tokens_and_no_embed_class():
    timm = pytest.importorskip("timm")
    for kwargs, prefix in (({"reg_tokens": 2}, 3), ({"no_embed_class": True}, 0)):
        make = lambda size: timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size,  # noqa: E731
                                              patch_size=4, num_classes=5, embed_dim=24, depth=1, num_heads=2,
                                              **kwargs)
        torch.manual_seed(0)
        src, dst, check = make(16), make(24), make(24)
        state = smooth_state(src, 4, prefix=prefix, key="pos_embed")
        x, y = data(24, 24)
        rows = compare_modes(dst, state, [(x, y)], modes=["nearest", "bicubic+aa", "lanczos3"], profiles=["timm"])
        assert [r.label for r in rows] == ["nearest", "bicubic+aa", "lanczos3", "timm"]
        for row in rows[:2]:
            correct, loss = independent_eval(check, state, "pos_embed", parse_variant(row.label), (6, 6), (4, 4),
                                             prefix, x, y)
            assert row.correct == correct and row.loss == pytest.approx(loss, rel=1e-5), (kwargs, row.label)
        # the timm profile is timm's own resample: bicubic, antialias, float32
        assert rows[3].settings == "bicubic, antialias, in float32"
        assert rows[3].loss == pytest.approx(rows[1].loss, rel=1e-5)


def test_non_square_source_grid_and_resized_state_dict():
    src, dst = tv_vit(16), tv_vit(24)
    state = src.state_dict()
    state["encoder.pos_embedding"] = torch.randn(1, 1 + 3 * 5, 16)
    with pytest.raises(ValueError, match=r"15 are left, not a square grid; pass old_grid"):
        resized_state_dict(dst, state, Variant("bilinear"))
    out = resized_state_dict(dst, state, "bilinear", old_grid=(3, 5))
    expect = recipe_interpolate(state["encoder.pos_embedding"], (6, 6), (3, 5), 1, "bilinear", None, False)
    assert torch.allclose(out["encoder.pos_embedding"], expect, atol=1e-6)
    assert out["conv_proj.weight"] is state["conv_proj.weight"] and out is not state


def test_metric_sees_the_whole_set_once():
    src, dst = tv_vit(16), tv_vit(20)
    x, y = data(30, 20)
    calls = []

    def metric(logits, targets):
        calls.append((logits.shape, targets.shape, logits.dtype, logits.device.type))
        return float((logits.argmax(1) == targets).float().mean())

    rows = compare_modes(dst, src.state_dict(), [(x[:7], y[:7]), (x[7:], y[7:])], modes=["bilinear"], metric=metric)
    assert calls == [((30, 5), (30,), torch.float32, "cpu")]
    assert rows[0].metric == pytest.approx(rows[0].accuracy)
    assert "metric" in format_table(rows)


def test_peak_memory_sees_an_allocation():
    src, dst = tv_vit(16), tv_vit(20)
    x, y = data(8, 20)
    held = []

    def metric(logits, targets):  # touches 256 MiB during the row
        big = torch.ones(256 << 18)
        held.append(float(big[-1]))
        return 0.0

    quiet = compare_modes(dst, src.state_dict(), [(x, y)], modes=["bilinear"])[0]
    loud = compare_modes(dst, src.state_dict(), [(x, y)], modes=["bilinear"], metric=metric)[0]
    if quiet.peak_bytes is None:
        pytest.skip("no /proc/self/clear_refs here: peak memory is not measured")
    assert loud.memory_kind == "peak RSS (VmHWM)"
    # the kernel's RSS counters are batched per CPU, and the process has other threads: margins, not equalities
    mib = (loud.peak_bytes >> 20, quiet.peak_bytes >> 20)
    assert loud.peak_bytes >= 240 << 20 and loud.peak_bytes - quiet.peak_bytes >= 192 << 20, mib


def test_mcnemar_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = [True] * 30 + [False] * 10 + [True] * 12 + [False] * 48
    b = [True] * 30 + [True] * 10 + [False] * 12 + [False] * 48
    only_b, only_a = 10, 12
    assert mcnemar_p(a, b) == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9)
    big_a, big_b = [True] * 900 + [False] * 600, [True] * 600 + [False] * 900
    assert mcnemar_p(big_a, big_b) == pytest.approx(stats.binomtest(0, 300, 0.5).pvalue, rel=1e-6)
    assert mcnemar_p(a, a) == 1.0
    with pytest.raises(ValueError, match="different lengths"):
        mcnemar_p(a, a[:-1])


def test_variants_follow_the_mode_table():
    variants = default_variants()
    assert {v.settings()["mode"] for v in variants} == set(MODES)
    for mode in MODES:
        info = mode_info(mode)
        labels = {v.label for v in variants if v.mode == mode}
        assert labels == {mode} | ({mode + "+ac"} if info.align_corners else set()) | \
            ({mode + "+aa"} if info.antialias == "optional" else set())
    for v in variants:
        assert parse_variant(v.label) == v
    assert parse_variant("bicubic ac aa") == Variant("bicubic", True, True)
    assert parse_variant("dinov2").settings()["scale_offset"] == 0.1


@pytest.mark.parametrize("text, message", [
    ("cubic", "unknown mode 'cubic'"),
    ("bicubic+xx", r"flags after the mode are \+ac"),
    ("bicubic+aa+aa", "each once"),
    ("nearest+aa", "does not take antialias"),
    ("lanczos3+ac", "does not take align_corners"),
    ("", "empty mode name"),
])
def test_bad_variant_names(text, message):
    with pytest.raises(ValueError, match=message):
        parse_variant(text)


def test_errors_are_one_clear_line():
    src, dst = tv_vit(16), tv_vit(20)
    x, y = data(4, 20)
    state = src.state_dict()
    cases = [
        (dict(loader=[(x[:, :, :16, :16], y)]), "yields 16x16 images, but the model takes 20x20"),
        (dict(loader=iter([(x, y)])), "one-shot iterator"),
        (dict(loader=[]), "yielded no batches"),
        (dict(loader=[(x, y + 10)]), "outside the model's 5 classes"),
        (dict(loader=[(x, y)], image_size=24), "built for 20x20"),
        (dict(loader=[(x, y)], modes="bicubic"), "wrap it in a list"),
        (dict(loader=[(x, y)], modes=["bicubic", "bicubic"]), "more than once: bicubic"),
        (dict(loader=[(x, y)], modes=[], profiles=()), "nothing to compare"),
        (dict(loader=[(x, y)], profiles=["jax"]), "unknown profile 'jax'"),
    ]
    for kwargs, message in cases:
        loader = kwargs.pop("loader")
        with pytest.raises(ValueError, match=message) as info:
            compare_modes(dst, state, loader, **{"modes": ["bilinear"], **kwargs})
        assert "\n" not in str(info.value)
    other = tv_vit(16, width=24).state_dict()
    with pytest.raises(ValueError, match=r"does not fit VisionTransformer .*shape differs: class_token"):
        compare_modes(dst, other, [(x, y)], modes=["bilinear"])
    with pytest.raises(ValueError, match="not a torchvision or timm ViT"):
        compare_modes(torch.nn.Linear(2, 2), state, [(x, y)])


# -- the command ------------------------------------------------------------------------

def run_cli(argv):
    """cli.main's status; argparse ends a malformed command line with SystemExit(2)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def digits_ckpt(tmp_path):
    pytest.importorskip("sklearn")
    model = tv_vit(32, classes=10)
    path = tmp_path / "tv.pth"
    torch.save({"model": {"module." + k: v for k, v in smooth_state(model, 8).items()}, "num_heads": 2}, path)
    return path


def test_cli_digits_matches_the_library(digits_ckpt, tmp_path, capsys):
    from vitpe_ext.command.compare import digits_data
    out = tmp_path / "rows.json"
    code = cli.main(["compare", str(digits_ckpt), "--data", "digits", "--image-size", "40", "--modes",
                     "nearest,bicubic+aa", "--profiles", "torchvision", "--json", str(out), "--limit", "100"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "2 heads (recorded in the checkpoint)" in text and "model prefix 'module.' stripped" in text
    for label in ("nearest", "bicubic+aa", "torchvision"):
        assert any(line.startswith(label + " ") for line in text.splitlines()), label
    record = json.loads(out.read_text())
    assert [r["label"] for r in record["rows"]] == ["nearest", "bicubic+aa", "torchvision"]
    # the same numbers from the library on the same 100 images
    state = torch.load(digits_ckpt)["model"]
    state = {k[len("module."):]: v for k, v in state.items()}
    x, y = digits_data(40, "test")
    rows = compare_modes(tv_vit(40, classes=10), state, [(x[:100], y[:100])], 40,
                         modes=["nearest", "bicubic+aa"], profiles=["torchvision"])
    for mine, theirs in zip(rows, record["rows"]):
        assert theirs["accuracy"] == mine.accuracy and theirs["loss"] == pytest.approx(mine.loss, rel=1e-6)
        assert theirs["samples"] == 100


def test_cli_image_folder(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = (torch.rand(30 + 2 * i, 26, 3, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    model = tv_vit(16, classes=3)
    ckpt = tmp_path / "m.pth"
    torch.save(model.state_dict(), ckpt)
    code = cli.main(["compare", str(ckpt), "--data", str(root), "--image-size", "24", "--num-heads", "2",
                     "--modes", "bilinear,bicubic"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "9 of 9 images, 3 classes (cat, dog, eel) = labels 0..2" in text
    assert "9 samples, grid 4x4 -> 6x6" in text
    (root / "dog" / "0.png").write_bytes(b"not a png")
    code = cli.main(["compare", str(ckpt), "--data", str(root), "--image-size", "24", "--num-heads", "2"])
    assert code == 1 and "cannot identify image file" in capsys.readouterr().err


@pytest.mark.parametrize("extra, status, message", [
    (["--modes", "cubic"], 2, "argument --modes: unknown mode 'cubic'"),
    (["--arch", "vit_nope_16"], 2, "unknown architecture 'vit_nope_16'"),
    (["--image-size", "42"], 1, "image height 42 is not a multiple of the patch size 4"),
    (["--data", "/nonexistent/dir"], 1, "--data /nonexistent/dir: no such directory"),
    (["--profiles", "jax"], 1, "--profiles: unknown jax"),
    (["--num-heads", "3"], 1, "--num-heads 3 does not divide the model width 16"),
    (["--json", "rows.txt"], 1, "give a .json file name"),
    (["--arch", "vit_b_16"], 1, "--arch vit_b_16: cannot be built at 40x40: Input shape indivisible by patch size"),
    (["--arch", "vit_b_16", "--image-size", "48"], 1, "does not fit VisionTransformer"),
])
def test_cli_errors(digits_ckpt, tmp_path, monkeypatch, capsys, extra, status, message):
    monkeypatch.chdir(tmp_path)
    args = ["compare", str(digits_ckpt), "--data", "digits", "--image-size", "40"]
    # argparse keeps the last of a repeated option: extra overrides the defaults above
    code = run_cli(args + extra)
    err = capsys.readouterr().err
    assert code == status and message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_refuses_an_existing_json_without_force(digits_ckpt, tmp_path, capsys):
    out = tmp_path / "rows.json"
    out.write_text("keep me")
    code = cli.main(["compare", str(digits_ckpt), "--data", "digits", "--image-size", "40", "--json", str(out)])
    assert code == 1 and "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_equal_cpu_rows_and_memory_is_the_allocators():
    src, x, y = tv_vit(16).state_dict(), *data(32, 28)
    loader = [(x[:16], y[:16]), (x[16:], y[16:])]
    cpu = compare_modes(tv_vit(28), src, loader, 28, modes=["nearest", "bicubic+aa"], device="cpu")
    held = []

    def metric(logits, targets):  # 256 MiB on the GPU during the row
        held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda").shape)
        return 0.0

    gpu = compare_modes(tv_vit(28), src, loader, 28, modes=["nearest", "bicubic+aa"], device="cuda", metric=metric)
    for a, b in zip(cpu, gpu):
        assert a.correct == b.correct and b.loss == pytest.approx(a.loss, rel=1e-4, abs=1e-5)
        assert b.memory_kind == "cuda max_memory_allocated" and b.peak_bytes >= 256 << 20


# -- the reviewer's findings (each test fails without its fix) ------------------------------------

def timm_ckpt(tmp_path, name="timm.pth", **kwargs):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2,
                                                              num_heads=4, num_classes=10, **kwargs)
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("kwargs", [dict(global_pool="avg"), dict(qk_norm=True)])
def test_cli_rebuilds_avg_pooled_and_qk_norm_timm_vits(tmp_path, capsys, kwargs):
    """compare builds the model `vitpe plot --attention` builds: fc_norm and q/k norms load."""
    pytest.importorskip("sklearn")
    path = timm_ckpt(tmp_path, **kwargs)
    code = cli.main(["compare", str(path), "--data", "digits", "--image-size", "48", "--num-heads", "4",
                     "--modes", "bilinear", "--limit", "20"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert ("fc_norm=True" if "global_pool" in kwargs else "qk_norm=True") in text


def test_cli_one_head_count_policy(tmp_path, capsys):
    """Width 16, no count recorded, no --num-heads: refused (rebuild's policy), not a guessed count."""
    pytest.importorskip("sklearn")
    path = tmp_path / "bare.pth"
    torch.save(tv_vit(32, classes=10).state_dict(), path)
    code = run_cli(["compare", str(path), "--data", "digits", "--image-size", "40"])
    err = capsys.readouterr().err
    assert code == 1 and "pass --num-heads" in err and len(err.strip().splitlines()) == 1, err


def test_verdict_with_one_row_says_nothing_about_ties():
    from vitpe_ext.command.compare import verdict
    model = tv_vit(24)
    x, y = data(8, 24)
    rows = compare_modes(model, smooth_state(tv_vit(16), 4), [(x, y)], modes=["bilinear"])
    line = verdict(rows)
    assert line.startswith("best: bilinear") and "differs" not in line and "matter" not in line


def test_cli_missing_timm_is_one_line(tmp_path, monkeypatch, capsys):
    path = timm_ckpt(tmp_path)
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "timm.models.vision_transformer", None)
    code = run_cli(["compare", str(path), "--data", "digits", "--image-size", "48", "--num-heads", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install timm" in err and len(err.strip().splitlines()) == 1, err


def test_profile_with_a_mode_override_is_its_own_row():
    from vitpe_ext.integrations.compare import _as_variants
    override = Variant(profile="timm", mode="bilinear")
    assert override.label != "timm" and "bilinear" in override.label
    assert [v.label for v in _as_variants([override], ["timm"])] == [override.label, "timm"]


def test_cli_key_is_one_option(digits_ckpt, capsys):
    """--key is a plain option: the last one given is used, not silently the first."""
    code = run_cli(["compare", str(digits_ckpt), "--data", "digits", "--image-size", "40", "--modes", "bilinear",
                    "--limit", "10", "--key", "bogus", "--key", "model/module.encoder.pos_embedding"])
    text, err = capsys.readouterr()
    assert code == 0, err


def test_resize_ms_times_the_op_alone(monkeypatch):
    """model.state_dict() (table_layout) is outside the timed resize."""
    model = tv_vit(24)
    x, y = data(4, 24)
    state = smooth_state(tv_vit(16), 4)
    slow = torch.nn.Module.state_dict

    def state_dict(self, *a, **k):
        time.sleep(0.05)
        return slow(self, *a, **k)
    monkeypatch.setattr(torch.nn.Module, "state_dict", state_dict)
    rows = compare_modes(model, state, [(x, y)], modes=["bilinear"])
    assert rows[0].resize_ms < 40


def test_cli_refuses_a_misfit_before_loading_data(digits_ckpt, monkeypatch, capsys):
    from vitpe_ext.command import compare as command
    loaded = []
    monkeypatch.setattr(command, "digits_data", lambda *a, **k: loaded.append(1) or (_ for _ in ()).throw(
        AssertionError("data loaded")))
    code = run_cli(["compare", str(digits_ckpt), "--data", "digits", "--image-size", "48", "--arch", "vit_b_16"])
    err = capsys.readouterr().err
    assert code == 1 and "does not fit" in err and not loaded, err


def test_experiment_refuses_an_existing_checkpoint_without_force(tmp_path):
    existing = tmp_path / "ckpt.pth"
    existing.write_bytes(b"keep me")
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "modes.py"), "--quick", "--save-checkpoint",
                           str(existing)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pass --force" in done.stderr, done.stderr[-2000:]
    assert existing.read_bytes() == b"keep me"
