"""The article's §4 experiment, measured: which interpolation mode should
resize a ViT's position table when fine-tuning at a higher resolution?

The article reports (ImageNet-1k, ViT at 224 -> 384 and -> 512)
bicubic > bilinear > nearest, a gap that grows with the resolution ratio, and
bicubic costing the most memory, from one run per mode. This reruns the
question on data anyone can run, with seeds:

1. pre-train a small torchvision ViT on scikit-learn's digits at low
   resolution: 8x8 digits upscaled to 32x32, patch 4, an 8x8 token grid;
2. resize its table to the article's two ratios, 8 -> 14 (x1.75, the
   article's 224 -> 384 is x1.71) and 8 -> 18 (x2.25; 224 -> 512 is x2.29),
   in each mode (nearest, bilinear, bicubic, bicubic+antialias, lanczos3);
   the images are upscaled to 56x56 and 72x72 (same patch size, more tokens);
3. zero-shot: evaluate the resized model on the held-out digits
   (vitpe_ext.integrations.compare.compare_modes, which also records the
   resize time and the peak memory per mode);
4. fine-tune each resized model briefly at the new resolution (the same
   batches for every mode) and evaluate again;
5. repeat for several seeds (pre-training included) and report mean +- std,
   and per-seed paired differences between modes.

    python experiments/modes.py                  # the full run (<= 15 min on a 2-core CPU)
    python experiments/modes.py --quick          # ~1 min: the same pipeline, smaller
    python experiments/modes.py --json docs/experiment-modes.json --plot docs/experiment-modes.png

Lab code: it lives outside the package and uses only its public pieces.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import vitpe_ext  # noqa: E402
from vitpe_ext.command.atomic import write_atomic  # noqa: E402
from vitpe_ext.command.compare import digits_data  # noqa: E402  (the split `vitpe compare --data digits` uses)
from vitpe_ext.integrations.compare import compare_modes, parse_variant, resized_state_dict  # noqa: E402

MODES = ("nearest", "bilinear", "bicubic", "bicubic+aa", "lanczos3")
PATCH = 4
BASE_GRID = 8
GRIDS = (14, 18)  # x1.75 and x2.25


@dataclass(frozen=True)
class Config:
    seeds: int
    pretrain_epochs: int
    finetune_steps: int
    batch_size: int = 64
    finetune_batch: int = 32
    width: int = 32
    depth: int = 4
    heads: int = 4
    train_limit: int = 0  # 0: every training image
    test_limit: int = 0   # 0: every held-out image


# Sized for <= 15 min on a 2-core CPU that other jobs share (one thread each);
# an idle machine runs it in a fraction of that.
FULL = Config(seeds=5, pretrain_epochs=15, finetune_steps=12)
QUICK = Config(seeds=3, pretrain_epochs=5, finetune_steps=2, train_limit=400, test_limit=200)


def build_vit(grid: int, cfg: Config, num_classes: int = 10):
    from torchvision.models import VisionTransformer
    return VisionTransformer(image_size=grid * PATCH, patch_size=PATCH, num_layers=cfg.depth, num_heads=cfg.heads,
                             hidden_dim=cfg.width, mlp_dim=2 * cfg.width, num_classes=num_classes)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, generator: torch.Generator):
    order = torch.randperm(len(y), generator=generator)
    for start in range(0, len(y) - size + 1, size):  # full batches only: equal steps for every mode
        idx = order[start:start + size]
        yield x[idx], y[idx]


def train(model, x, y, steps: int, lr: float, batch_size: int, generator: torch.Generator, warmup: int = 0) -> float:
    """AdamW with a linear warmup then cosine decay; returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    model.train()
    step, loss = 0, float("nan")
    while step < steps:
        for xb, yb in batches(x, y, batch_size, generator):
            loss_t = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            sched.step()
            loss, step = float(loss_t.detach()), step + 1
            if step == steps:
                break
    model.eval()
    return loss


def accuracy(model, x, y, batch: int = 256) -> float:
    model.eval()
    with torch.inference_mode():
        right = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return right / len(y)


def run_seed(seed: int, cfg: Config, data: Dict[int, tuple], log, save: Optional[Path] = None,
             force: bool = False) -> List[dict]:
    """One pre-training, then every grid x mode: zero-shot and fine-tuned."""
    torch.manual_seed(seed)
    model = build_vit(BASE_GRID, cfg)
    xtr, ytr, xte, yte = data[BASE_GRID]
    gen = torch.Generator().manual_seed(seed)
    steps = cfg.pretrain_epochs * (len(ytr) // cfg.batch_size)
    started = time.perf_counter()
    train(model, xtr, ytr, steps, 1e-3, cfg.batch_size, gen, warmup=max(1, steps // 10))
    base_acc = accuracy(model, xte, yte)
    log(f"seed {seed}: pre-trained at grid {BASE_GRID} ({steps} steps, {time.perf_counter() - started:.0f} s): "
        f"test accuracy {100 * base_acc:.1f}%")
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    if save is not None:
        buf = io.BytesIO()  # num_heads beside the weights: `vitpe compare` reads it (state dicts lack it)
        torch.save({"model": pretrained, "num_heads": cfg.heads, "image_size": BASE_GRID * PATCH}, buf)
        write_atomic(save, lambda f: f.write(buf.getvalue()), overwrite=force)
        log(f"seed {seed}: wrote the pre-trained checkpoint to {save}")
    rows = []
    for grid in GRIDS:
        xtr, ytr, xte, yte = data[grid]
        target = build_vit(grid, cfg)
        test_batches = [(xte[i:i + 256], yte[i:i + 256]) for i in range(0, len(yte), 256)]
        zero = compare_modes(target, pretrained, test_batches, grid * PATCH, modes=MODES)
        for variant_name, z in zip(MODES, zero):
            variant = parse_variant(variant_name)
            state = resized_state_dict(target, pretrained, variant)
            target.load_state_dict(state, strict=True)
            gen = torch.Generator().manual_seed(10_000 + seed)  # the same batches for every mode
            started = time.perf_counter()
            train(target, xtr, ytr, cfg.finetune_steps, 3e-4, cfg.finetune_batch, gen,
                  warmup=max(1, cfg.finetune_steps // 5))
            tuned_s = time.perf_counter() - started
            tuned = accuracy(target, xte, yte)
            rows.append({"seed": seed, "grid": grid, "ratio": grid / BASE_GRID, "mode": variant_name,
                         "settings": z.settings, "pretrained_accuracy": base_acc,
                         "zero_shot_accuracy": z.accuracy, "zero_shot_loss": z.loss,
                         "finetuned_accuracy": tuned, "resize_ms": z.resize_ms, "eval_s": z.eval_s,
                         "peak_bytes": z.peak_bytes, "memory_kind": z.memory_kind, "finetune_s": tuned_s})
        log(f"seed {seed}: grid {grid}: zero-shot " + ", ".join(
            f"{r['mode']} {100 * r['zero_shot_accuracy']:.1f}" for r in rows if r["grid"] == grid)
            + " | fine-tuned " + ", ".join(
            f"{r['mode']} {100 * r['finetuned_accuracy']:.1f}" for r in rows if r["grid"] == grid))
    return rows


# -- summary -------------------------------------------------------------------------

def _mean_std(values: Sequence[float]):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: List[dict]) -> Dict[str, list]:
    """Per (grid, mode): mean/std over seeds; per grid: paired differences."""
    table, paired = [], []
    for grid in GRIDS:
        for mode in MODES:
            sel = [r for r in rows if r["grid"] == grid and r["mode"] == mode]
            entry = {"grid": grid, "ratio": grid / BASE_GRID, "mode": mode, "seeds": len(sel),
                     "settings": sel[0]["settings"]}
            for metric in ("zero_shot_accuracy", "finetuned_accuracy", "zero_shot_loss", "resize_ms", "eval_s",
                           "finetune_s"):
                entry[metric], entry[metric + "_std"] = _mean_std([r[metric] for r in sel])
            mems = [r["peak_bytes"] for r in sel if r["peak_bytes"] is not None]
            entry["peak_bytes"], entry["peak_bytes_std"] = _mean_std(mems) if mems else (None, None)
            table.append(entry)
        for a, b in (("bicubic", "bilinear"), ("bilinear", "nearest"), ("bicubic", "nearest"),
                     ("bicubic+aa", "bicubic"), ("lanczos3", "bicubic")):
            for metric in ("zero_shot_accuracy", "finetuned_accuracy"):
                by_seed = {r["seed"]: r[metric] for r in rows if r["grid"] == grid and r["mode"] == b}
                diffs = [r[metric] - by_seed[r["seed"]] for r in rows if r["grid"] == grid and r["mode"] == a]
                mean, std = _mean_std(diffs)
                paired.append({"grid": grid, "a": a, "b": b, "metric": metric, "mean": mean, "std": std,
                               "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
                               "losses": sum(d < 0 for d in diffs), "seeds": len(diffs)})
    return {"table": table, "paired": paired}


def markdown(summary: Dict[str, list], rows: List[dict]) -> str:
    pre = _mean_std(sorted({r["seed"]: r["pretrained_accuracy"] for r in rows}.values()))
    lines = [f"pre-trained at grid {BASE_GRID}x{BASE_GRID} (32x32 images): test accuracy "
             f"{100 * pre[0]:.1f} ± {100 * pre[1]:.1f}%", "",
             "| grid (ratio) | mode | zero-shot accuracy % | after fine-tune % | resize ms | eval peak memory |",
             "|---|---|---|---|---|---|"]
    for e in summary["table"]:
        mem = "-" if e["peak_bytes"] is None else f"{e['peak_bytes'] / 2**20:.1f} ± {e['peak_bytes_std'] / 2**20:.1f} MiB"
        lines.append(f"| {BASE_GRID}→{e['grid']} (×{e['ratio']:.2f}) | {e['mode']} | "
                     f"{100 * e['zero_shot_accuracy']:.1f} ± {100 * e['zero_shot_accuracy_std']:.1f} | "
                     f"{100 * e['finetuned_accuracy']:.1f} ± {100 * e['finetuned_accuracy_std']:.1f} | "
                     f"{e['resize_ms']:.2f} | {mem} |")
    lines += ["", "| grid | difference (paired over seeds) | zero-shot, points | wins/ties/losses "
                  "| fine-tuned, points | wins/ties/losses |", "|---|---|---|---|---|---|"]
    for grid in GRIDS:
        for a, b in dict.fromkeys((p["a"], p["b"]) for p in summary["paired"] if p["grid"] == grid):
            z, f = (next(p for p in summary["paired"] if p["grid"] == grid and p["a"] == a and p["b"] == b
                         and p["metric"] == m) for m in ("zero_shot_accuracy", "finetuned_accuracy"))
            lines.append(f"| {grid} | {a} − {b} | {100 * z['mean']:+.1f} ± {100 * z['std']:.1f} | "
                         f"{z['wins']}/{z['ties']}/{z['losses']} | {100 * f['mean']:+.1f} ± {100 * f['std']:.1f} | "
                         f"{f['wins']}/{f['ties']}/{f['losses']} |")
    return "\n".join(lines)


def plot(summary: Dict[str, list], rows: List[dict], path: Path, title: str) -> None:
    """Top: accuracy per mode (mean ± std over seeds: the spread between
    pre-trained models). Bottom: each mode's gain over nearest within the same
    seed (mean ± std of the paired differences: what the mode itself does)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    width = 0.8 / len(GRIDS)
    for col, (metric, name) in enumerate((("zero_shot_accuracy", "zero-shot (table resized only)"),
                                          ("finetuned_accuracy", "after a short fine-tune"))):
        ax, gain_ax = axes[0][col], axes[1][col]
        for i, grid in enumerate(GRIDS):
            sel = [e for e in summary["table"] if e["grid"] == grid]
            xs = [j + (i - (len(GRIDS) - 1) / 2) * width for j in range(len(sel))]
            label = f"grid {BASE_GRID}→{grid} (×{grid / BASE_GRID:.2f})"
            ax.bar(xs, [100 * e[metric] for e in sel], width, yerr=[100 * e[metric + "_std"] for e in sel],
                   capsize=3, label=label)
            base = {r["seed"]: r[metric] for r in rows if r["grid"] == grid and r["mode"] == "nearest"}
            gains = [[100 * (r[metric] - base[r["seed"]]) for r in rows if r["grid"] == grid and r["mode"] == m]
                     for m in MODES]
            gain_ax.bar(xs, [statistics.fmean(g) for g in gains], width,
                        yerr=[statistics.stdev(g) if len(g) > 1 else 0 for g in gains], capsize=3, label=label)
        low = min(100 * (e[metric] - e[metric + "_std"]) for e in summary["table"])
        ax.set_ylim(max(0, low - 5), 100)
        ax.set_title(name)
        ax.set_ylabel("test accuracy %\n(mean ± std over seeds)")
        gain_ax.axhline(0, color="black", linewidth=0.8)
        gain_ax.set_ylabel("gain over nearest, same seed\n(points, mean ± std)")
        for a in (ax, gain_ax):
            a.set_xticks(range(len(MODES)))
            a.set_xticklabels(MODES, rotation=15)
            a.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, lambda f: f.write(buf.getvalue()), overwrite=True)


def plot_title(cfg: Config) -> str:
    return (f"digits ViT (patch {PATCH}) pre-trained at grid {BASE_GRID}x{BASE_GRID}, table resized per mode; "
            f"{cfg.seeds} seeds, {cfg.finetune_steps} fine-tune steps")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run of the same pipeline")
    parser.add_argument("--seeds", type=int, help=f"number of seeds (default {FULL.seeds}; --quick {QUICK.seeds})")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    parser.add_argument("--plot", type=Path, help="write the bar chart here (.png)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2; 1 on a machine other jobs keep busy)")
    parser.add_argument("--save-checkpoint", type=Path, metavar="PATH",
                        help="write seed 0's pre-trained model (a torchvision state dict) here, for vitpe compare")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --save-checkpoint file")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.seeds is not None:
        if args.seeds < 2:
            parser.error("--seeds must be >= 2 (a standard deviation needs two)")
        cfg = Config(**{**cfg.__dict__, "seeds": args.seeds})
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"--plot {args.plot}: give a .png file name")
    if args.save_checkpoint is not None and args.save_checkpoint.exists() and not args.force:
        parser.error(f"--save-checkpoint {args.save_checkpoint}: exists; pass --force to overwrite it")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    data = {}
    for grid in (BASE_GRID, *GRIDS):
        xtr, ytr = digits_data(grid * PATCH, "train")
        if cfg.train_limit:
            xtr, ytr = xtr[:cfg.train_limit], ytr[:cfg.train_limit]
        xte, yte = digits_data(grid * PATCH, "test")
        if cfg.test_limit:
            xte, yte = xte[:cfg.test_limit], yte[:cfg.test_limit]
        data[grid] = (xtr, ytr, xte, yte)
    rows = []
    for seed in range(cfg.seeds):
        rows += run_seed(seed, cfg, data, log, args.save_checkpoint if seed == 0 else None, args.force)
    summary = summarize(rows)
    seconds = time.perf_counter() - started
    table = markdown(summary, rows)
    print(table)
    print(f"\n{cfg.seeds} seeds, {seconds:.0f} s, torch {torch.__version__}, {args.threads} threads, "
          f"vitpe {vitpe_ext.__version__}")
    record = {"config": {**cfg.__dict__, "modes": MODES, "patch": PATCH, "base_grid": BASE_GRID, "grids": GRIDS,
                         "quick": args.quick, "threads": args.threads},
              "seconds": seconds, "torch": torch.__version__, "summary": summary, "rows": rows,
              "markdown": table}
    if args.json:
        data_json = (json.dumps(record, indent=1) + "\n").encode()
        write_atomic(args.json, lambda f: f.write(data_json), overwrite=True)
    if args.plot:
        plot(summary, rows, args.plot, plot_title(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
