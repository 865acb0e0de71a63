"""The benchmark harness (vitpe_ext/command/bench.py): it runs end to end on the tiny
case, writes parseable JSON, and its verification catches a wrong op."""
from __future__ import annotations

import json

import pytest
import torch

import vitpe_ext  # noqa: F401  (loads torch.ops.vitpe.*)
from vitpe_ext.command import bench
from vitpe_ext.op import reference

FAST = ["--cases", "smoke", "--min-time", "0.002", "--repeats", "1"]


def test_smoke_case_end_to_end(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = bench.main(FAST + ["--modes", "bicubic-ac,nearest", "--dtypes", "float32,bfloat16",
                            "--threads", str(torch.get_num_threads()), "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("vitpe bench |") and "torch " + torch.__version__ in out
    assert "recipe/op" in out and "op/copy" in out
    data = json.loads(path.read_text())
    assert data["machine"]["torch"] == torch.__version__
    rows = data["rows"]
    # 2 modes x 2 dtypes x 2 passes, in that nesting order
    assert [(r["mode"], r["dtype"], r["passes"]) for r in rows] == [
        (m, d, p) for m in ("bicubic-ac", "nearest") for d in ("float32", "bfloat16")
        for p in ("fwd", "fwdbwd")]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["case"] == "smoke" and (r["grid_in"], r["grid_out"]) == ([5, 5], [7, 7])
        for name in ("op", "recipe", "copy"):
            assert r["seconds"][name] > 0, (name, r)
        assert r["recipe_over_op"] == pytest.approx(r["seconds"]["recipe"] / r["seconds"]["op"])
        assert r["op_over_copy"] == pytest.approx(r["seconds"]["op"] / r["seconds"]["copy"])
        # torchvision's convention: bicubic/bilinear with align_corners=True only
        assert (r["seconds"]["torchvision"] is not None) == (r["mode"] == "bicubic-ac")


def test_downsampling_rows_also_time_an_input_sized_copy(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = bench.main(FAST + ["--cases", "smoke,smoke-down", "--modes", "bilinear", "--dtypes", "float32",
                            "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {(r["case"], r["passes"]): r for r in json.loads(path.read_text())["rows"]}
    down = rows[("smoke-down", "fwd")]
    assert down["seconds"]["copy_in"] > 0
    assert down["op_over_copy_in"] == pytest.approx(down["seconds"]["op"] / down["seconds"]["copy_in"])
    # upsampling rows read less than they write; fwd+bwd rows already copy both shapes
    for key in [("smoke", "fwd"), ("smoke", "fwdbwd"), ("smoke-down", "fwdbwd")]:
        assert "copy_in" not in rows[key]["seconds"] and "op_over_copy_in" not in rows[key], key
    listed = out.split("against a copy of their input:\n")[1].splitlines()
    assert listed[0].startswith("  smoke-down bilinear float32 fwd: input-sized copy "), listed
    assert "op/copy_in" in listed[0] and not any(line.startswith("  smoke ") for line in listed)


def test_grid_of_rank_3_rows_verify_against_the_5d_recipe(tmp_path, capsys):
    """A (T, H, W) case is checked against reshape -> (B, C, T, H, W) -> F.interpolate
    (bilinear as trilinear) -> back, then timed; bicubic has no 3-D F.interpolate: n/a."""
    path = tmp_path / "bench.json"
    rc = bench.main(FAST[:1] + ["smoke-3d"] + FAST[2:] + ["--modes", "bilinear,nearest,bicubic",
                                                          "--dtypes", "float32,bfloat16", "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 12
    for r in rows:
        assert (r["grid_in"], r["grid_out"], r["prefix"]) == ([2, 3, 3], [3, 4, 5], 0)
        if r["mode"] == "bicubic":
            assert r["status"] == "n/a" and "rank 3" in r["note"] and r["seconds"] == {}, r
            continue
        assert r["status"] == "ok", r
        assert r["seconds"]["op"] > 0 and r["seconds"]["recipe"] > 0 and r["seconds"]["copy"] > 0, r
        assert r["recipe_over_op"] == pytest.approx(r["seconds"]["recipe"] / r["seconds"]["op"])
        # torchvision's and timm's functions take 2-D grids only
        assert r["seconds"]["torchvision"] is None and r["seconds"]["timm"] is None, r
    # the real 3-D cases are opt-in: not in a default run
    assert not any(len(bench.CASES[name].grid_in) == 3 for name in bench.DEFAULT_CASES)
    assert {"videomae-b-t32", "videomae-b-384", "volume-16"} <= set(bench.CASES)


def test_verification_catches_a_wrong_rank_3_result(monkeypatch, capsys):
    real = bench.op.interpolate_pos_embed
    # a slightly scaled result: the 5-D recipe must tell it apart
    monkeypatch.setattr(bench.op, "interpolate_pos_embed", lambda *a, **k: real(*a, **k) * (1 + 1e-4))
    rc = bench.main(FAST[:1] + ["smoke-3d"] + FAST[2:] + ["--modes", "bilinear", "--dtypes", "float32"])
    assert rc == 1 and "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("choice", ["steady", "default"])
def test_malloc_choice_is_applied_and_reported(tmp_path, capsys, choice):
    import platform
    path = tmp_path / "bench.json"
    rc = bench.main(FAST + ["--modes", "nearest", "--dtypes", "float32", "--passes", "fwd",
                            "--malloc", choice, "--json", str(path)])
    head = capsys.readouterr().out.splitlines()[0]
    setting = json.loads(path.read_text())["machine"]["malloc"]
    assert rc == 0 and head.endswith(f"| freed memory {setting}")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if choice == "steady" and glibc:
        assert setting == "kept (trim 1 GiB, mmap 32 MiB)"
    elif choice == "default":
        assert setting == "default"


# bf16: 2e-2 is several ulps, so the perturbation survives the rounding
@pytest.mark.parametrize("dtype,relative_error", [("float32", 1e-2), ("float32", 1e-4),
                                                  ("bfloat16", 2e-2)])
def test_verification_catches_a_wrong_result(monkeypatch, tmp_path, capsys, dtype, relative_error):
    real = bench.op.interpolate_pos_embed
    calls = []

    def perturbed(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        # a scaled result: the gradient of fwd+bwd rows is scaled with it
        return out * (1 + relative_error)

    monkeypatch.setattr(bench.op, "interpolate_pos_embed", perturbed)
    path = tmp_path / "bench.json"
    rc = bench.main(FAST + ["--modes", "bilinear", "--dtypes", dtype, "--json", str(path)])
    captured = capsys.readouterr()
    assert calls, "the harness did not call the op through vitpe_ext.op"
    rows = json.loads(path.read_text())["rows"]
    assert rc == 1
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"]
    assert all(r["seconds"] == {} for r in rows), "failed rows must not be timed"
    assert "FAILED" in captured.out and "FAILED verification" in captured.err


def test_the_op_raising_marks_the_row_failed(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench.op, "interpolate_pos_embed", broken)
    rc = bench.main(FAST + ["--modes", "area", "--dtypes", "float32", "--passes", "fwd"])
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED (RuntimeError: boom)" in out


def test_lanczos_rows_are_not_applicable_without_torch_lanczos(monkeypatch, capsys):
    monkeypatch.setattr(reference, "torch_has_lanczos", lambda: False)
    rc = bench.main(FAST + ["--modes", "lanczos3", "--dtypes", "float32", "--passes", "fwd"])
    out = capsys.readouterr().out
    assert rc == 0 and "n/a" in out


@pytest.mark.parametrize("argv", [["--cases", "vit-huge"], ["--modes", "bicubic,cubic"],
                                  ["--dtypes", "int8"], ["--passes", "bwd"]])
def test_unknown_names_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert "choose from" in capsys.readouterr().err
