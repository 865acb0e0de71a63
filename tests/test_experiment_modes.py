"""experiments/modes.py --quick (the article's §4 experiment, reduced) runs
end to end and writes a well-formed table: every mode x ratio row, accuracies
in [0, 1] with a standard deviation over seeds, paired differences that agree
with the per-seed rows, peak memory and times, and the plot."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # one thread: a test run shares the machine with other tests (OpenMP threads then wait on each other)
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "modes.py"), "--quick", "--threads", "1",
                           "--json", str(out / "r.json"), "--plot", str(out / "r.png")],
                          cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "r.json").read_text()), done.stdout, out


def test_every_mode_and_ratio_has_a_row(quick):
    record, stdout, _ = quick
    cfg = record["config"]
    assert cfg["quick"] is True and cfg["seeds"] >= 2
    table = record["summary"]["table"]
    assert [(e["grid"], e["mode"]) for e in table] == [(g, m) for g in cfg["grids"] for m in cfg["modes"]]
    assert set(cfg["modes"]) == {"nearest", "bilinear", "bicubic", "bicubic+aa", "lanczos3"}
    assert [g / cfg["base_grid"] for g in cfg["grids"]] == [1.75, 2.25]
    for e in table:
        assert e["seeds"] == cfg["seeds"]
        for metric in ("zero_shot_accuracy", "finetuned_accuracy"):
            assert 0.0 <= e[metric] <= 1.0 and 0.0 <= e[metric + "_std"] <= 0.5
            per_seed = [r[metric] for r in record["rows"] if r["grid"] == e["grid"] and r["mode"] == e["mode"]]
            assert len(per_seed) == cfg["seeds"]
            assert e[metric] == pytest.approx(statistics.fmean(per_seed))
            assert e[metric + "_std"] == pytest.approx(statistics.stdev(per_seed))
        assert e["resize_ms"] > 0 and e["eval_s"] > 0 and e["finetune_s"] > 0
        assert e["peak_bytes"] is None or e["peak_bytes"] > 0
    # the printed Markdown table has the same rows, each with a +- std
    lines = [line for line in stdout.splitlines() if line.startswith("| 8→")]
    assert len(lines) == len(table) and all(line.count("±") >= 2 for line in lines)


def test_paired_differences_agree_with_the_rows(quick):
    record, _, _ = quick
    rows = record["rows"]
    for p in record["summary"]["paired"]:
        a = {r["seed"]: r[p["metric"]] for r in rows if r["grid"] == p["grid"] and r["mode"] == p["a"]}
        b = {r["seed"]: r[p["metric"]] for r in rows if r["grid"] == p["grid"] and r["mode"] == p["b"]}
        diffs = [a[s] - b[s] for s in sorted(a)]
        assert p["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
        assert p["wins"] + p["ties"] + p["losses"] == p["seeds"] == len(diffs)


def test_plot_written(quick):
    _, _, out = quick
    png = (out / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
