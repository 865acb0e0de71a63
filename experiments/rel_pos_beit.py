"""timm's BEiT-style relative-position-bias resize, computed by the op at
BEiT's sample positions, against timm's own code, BEiT's original spline and
a plain even resize (issue #17).

timm 1.0.31's resize_rel_pos_bias_table (called by Swin, BEiT, MaxViT and
vit_relpos when a window changes) comes from BEiT's fine-tuning code:

1. per axis, source offsets are placed on a geometric progression
   0, ±1, ±(1+q), ±(1+q+q²), ... with q found by bisection in [1.01, 1.5]
   so that the outermost one lands near the new table's edge (dst // 2);
   q never goes below 1.01, so when the window shrinks the outer offsets
   fall beyond the new edge and the result is close to a central crop;
2. the table is sampled at the new integer offsets -dst//2 .. dst//2:
   by default (TIMM_USE_SCIPY_INTERP unset) piecewise-linearly,
   separably per axis (timm.layers.RegularGridInterpolator); with
   TIMM_USE_SCIPY_INTERP=1, BEiT's original scipy interp2d(kind="cubic"),
   which SciPy 1.14 removed (timm then raises NotImplementedError).
   SciPy's documented bit-for-bit replacement on a regular grid is
   RectBivariateSpline(kx=ky=3, s=0): an interpolating bicubic B-spline,
   used here.

vitpe_ext.timm.resize_rel_pos_bias_table gives the op those positions
(sample_positions, beit_sample_positions): bilinear there is timm's default
path. This script measures, on tables of several kinds: vitpe against timm's
default; vitpe's bicubic at the same positions against BEiT's spline (the
kernel's share: Keys' 4-tap cubic, a = -0.75, in index space, against a
global C² spline through the uneven offsets); and, for scale, how far the
geometric recipe is from a plain even resize. Then the time of one resize,
timm's against the op's.

    python experiments/rel_pos_beit.py            # prints a markdown table
    python experiments/rel_pos_beit.py --json out.json

Lab code: outside the package, uses its public pieces and timm's own function.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import vitpe_ext  # noqa: E402
import vitpe_ext.timm as vitpe_ext_timm  # noqa: E402
from vitpe_ext.integrations.rel_pos import beit_sample_positions  # noqa: E402

# (name, old window, new window): BEiT-B/16 224 -> 384 and back, Swin-T window 7 -> 12 and back, 7 -> 8
CASES = [("BEiT 224->384", 14, 24), ("BEiT 384->224", 24, 14), ("Swin 7->12", 7, 12), ("Swin 12->7", 12, 7),
         ("Swin 7->8", 7, 8)]
HEADS = 8


def geometric_offsets(src: int, dst: int) -> List[float]:
    """timm's _calc (BEiT's run_class_finetuning.py): the source table's
    offsets, one per row of a side of `src` rows, for a new side of `dst`."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0.0] + dis


def target_offsets(dst: int) -> np.ndarray:
    return np.arange(-(dst // 2), dst // 2 + 0.1, 1.0)


def geometric_linear(grid: np.ndarray, dst: Tuple[int, int]) -> np.ndarray:
    """timm's default path, written out separably: piecewise-linear in y at
    the geometric offsets, then in x. grid: (heads, S, S) float64."""
    y, x = geometric_offsets(grid.shape[1], dst[0]), geometric_offsets(grid.shape[2], dst[1])
    ty, tx = target_offsets(dst[0]), target_offsets(dst[1])
    rows = np.stack([[np.interp(ty, y, grid[h, :, j]) for j in range(grid.shape[2])] for h in range(len(grid))])
    return np.stack([[np.interp(tx, x, rows[h, :, i]) for i in range(len(ty))] for h in range(len(grid))])


def spline(grid: np.ndarray, y, x, ty, tx) -> np.ndarray:
    """interp2d(x, y, z, kind="cubic")(tx, ty) on a regular grid, per head."""
    from scipy.interpolate import RectBivariateSpline
    return np.stack([RectBivariateSpline(y, x, g, kx=3, ky=3, s=0)(ty, tx) for g in grid])


def geometric_spline(grid: np.ndarray, dst: Tuple[int, int]) -> np.ndarray:
    """BEiT's original: the cubic spline through the geometric offsets."""
    y, x = geometric_offsets(grid.shape[1], dst[0]), geometric_offsets(grid.shape[2], dst[1])
    return spline(grid, y, x, target_offsets(dst[0]), target_offsets(dst[1]))


def even_spline(grid: np.ndarray, dst: Tuple[int, int]) -> np.ndarray:
    """The same spline through evenly spaced offsets, read where bicubic with
    align_corners=True reads (edge to edge): isolates the kernel's share."""
    s, d = grid.shape[1] // 2, dst[0] // 2
    y = np.arange(-s, s + 0.1)
    t = target_offsets(dst[0]) * s / d
    return spline(grid, y, y, t, t)


def tables(window: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """(heads, 2W-1, 2W-1) float64 tables of four kinds for a window of W."""
    side = 2 * window - 1
    smooth = F.interpolate(torch.randn(HEADS, 1, 4, 4, dtype=torch.float64, generator=generator),
                           size=(side, side), mode="bicubic", align_corners=True)[:, 0]
    # local heads, as trained biases tend to look: a bump at offset 0 of a per-head width (1 to side/4 rows)
    r = torch.arange(side, dtype=torch.float64) - side // 2
    dist2 = r[:, None] ** 2 + r[None, :] ** 2
    width = 1 + torch.rand(HEADS, 1, 1, dtype=torch.float64, generator=generator) * (side / 4 - 1)
    local = torch.exp(-dist2 / (2 * width ** 2))
    return {"smooth": smooth, "local": local, **timm_init_tables(window)}


def timm_init_tables(window: int) -> Dict[str, torch.Tensor]:
    """The tables of freshly built timm attention layers (random init):
    Swin's is trunc_normal(std=.02) noise, BEiT's is zeros."""
    from timm.models.beit import Attention as BeitAttention
    from timm.models.swin_transformer import WindowAttention
    torch.manual_seed(0)
    swin = WindowAttention(dim=8 * HEADS, num_heads=HEADS, window_size=window).relative_position_bias_table
    beit = BeitAttention(dim=8 * HEADS, num_heads=HEADS, window_size=(window, window)).relative_position_bias_table
    beit = beit[:-3]  # its 3 class-token rows are copied by every method alike
    return {f"timm {name} init": t.detach().double().T.reshape(HEADS, 2 * window - 1, 2 * window - 1)
            for name, t in (("Swin", swin), ("BEiT", beit))}


def timm_default(grid: torch.Tensor, new_window: int) -> torch.Tensor:
    """timm's own resize_rel_pos_bias_table on the flat float32 table (its default path)."""
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table
    heads, side, _ = grid.shape
    flat = grid.reshape(heads, -1).T.float()
    d = 2 * new_window - 1
    with warnings.catch_warnings():  # its RegularGridInterpolator's indexing warns on torch 2.14
        warnings.simplefilter("ignore", UserWarning)
        out = resize_rel_pos_bias_table(flat, (new_window, new_window), (d * d, heads))
    return out.double().T.reshape(heads, d, d)


def vitpe_resize(grid: torch.Tensor, new_window: int, **settings) -> torch.Tensor:
    return vitpe_ext.resize_rel_pos_bias(grid, None, new_window, layout="heads_first", **settings)


def vitpe_geometric(grid: torch.Tensor, new_window: int, mode: str) -> torch.Tensor:
    """The op at BEiT's sample positions, in float64."""
    side, d = grid.shape[1], 2 * new_window - 1
    positions = [beit_sample_positions(side, d)] * 2
    out = vitpe_ext.interpolate_pos_embed(grid.flatten(1).unsqueeze(-1), (d, d), (side, side), 0, mode=mode,
                                          sample_positions=positions)
    return out.view(grid.shape[0], d, d)


PLAIN = {"bicubic": {}, "bicubic, align_corners": dict(align_corners=True),
         "bilinear, align_corners": dict(mode="bilinear", align_corners=True)}


def measure(seed: int = 0) -> List[dict]:
    """One row per (case, table): max |difference| of each pair of methods,
    absolute and over max |table|."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for case, old_w, new_w in CASES:
        d = 2 * new_w - 1
        for kind, grid in tables(old_w, generator).items():
            timm_linear = timm_default(grid, new_w)
            beit_spline = torch.from_numpy(geometric_spline(grid.numpy(), (d, d)))
            plain = {name: vitpe_resize(grid, new_w, **settings) for name, settings in PLAIN.items()}
            closest = min(plain, key=lambda name: (plain[name] - timm_linear).abs().max().item())
            ours_linear = vitpe_ext_timm.resize_rel_pos_bias_table(
                grid.float().flatten(1).T, (new_w, new_w), (d * d, grid.shape[0])).T.reshape(grid.shape[0], d, d)
            pairs = {
                "vitpe_vs_timm": (timm_linear, ours_linear.double()),
                "exact_linear_vs_timm": (timm_linear, vitpe_geometric(grid, new_w, "bilinear")),
                "cubic_vs_spline": (beit_spline, vitpe_geometric(grid, new_w, "bicubic")),
                "timm_vs_spline": (timm_linear, beit_spline),
                "timm_vs_bicubic": (timm_linear, plain["bicubic"]),
                "timm_vs_closest_plain": (timm_linear, plain[closest]),
                # the same spline through evenly spaced offsets against bicubic at the same positions
                "kernel_only": (torch.from_numpy(even_spline(grid.numpy(), (d, d))), plain["bicubic, align_corners"]),
            }
            scale = grid.abs().max().item()
            row = dict(case=case, table=kind, max_abs_table=scale, closest_plain=closest)
            for name, (a, b) in pairs.items():
                row[name] = (a - b).abs().max().item()
            rows.append(row)
    return rows


COLUMNS = [("vitpe_vs_timm", "vitpe (float32) vs timm default"),
           ("exact_linear_vs_timm", "exact (float64) vs timm default"),
           ("cubic_vs_spline", "vitpe bicubic vs BEiT spline, same positions"),
           ("timm_vs_spline", "timm default vs BEiT spline"),
           ("timm_vs_closest_plain", "timm default vs closest even resize"),
           ("kernel_only", "spline vs bicubic, even positions")]

# (name, old window, new window, heads): BEiT-L/16 224 -> 384, Swin-B window 7 -> 12 (stage 1)
TIMED = [("BEiT-L 14->24, 16 heads", 14, 24, 16), ("Swin-B 7->12, 4 heads", 7, 12, 4)]


def timings(repeats: int = 7, calls: int = 20) -> List[dict]:
    """Seconds per resize of a flat float32 table, best batch of `calls`,
    timm's function and vitpe's interleaved in one run."""
    import time
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table as timm_fn
    rows = []
    for name, old_w, new_w, heads in TIMED:
        d = 2 * new_w - 1
        table = torch.randn((2 * old_w - 1) ** 2 + 3, heads)
        args = ((new_w, new_w), (d * d + 3, heads))
        best = {"timm": float("inf"), "vitpe": float("inf")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(repeats):
                for who, fn in (("timm", timm_fn), ("vitpe", vitpe_ext_timm.resize_rel_pos_bias_table)):
                    start = time.perf_counter()
                    for _ in range(calls):
                        fn(table, *args)
                    best[who] = min(best[who], (time.perf_counter() - start) / calls)
        rows.append(dict(case=name, timm_s=best["timm"], vitpe_s=best["vitpe"]))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = measure(args.seed)
    print("max |difference| / max |table| (absolute in brackets)\n")
    print("| case | table | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for r in rows:
        cells = []
        for key, _ in COLUMNS:
            ratio = r[key] / r["max_abs_table"] if r["max_abs_table"] else 0.0
            rel = ("0 (all-zero table)" if not r["max_abs_table"] else f"{ratio:.1%}" if ratio >= 1e-3
                   else f"{ratio:.1e}")
            cells.append(f"{rel} ({r[key]:.2g})" + (f" {r['closest_plain']}" if key == "timm_vs_closest_plain" else ""))
        print(f"| {r['case']} | {r['table']} | " + " | ".join(cells) + " |")
    times = timings()
    print("\nOne resize of a flat float32 table (+3 extra rows), this machine's CPU, best of 7 x 20 calls\n")
    print("| case | timm | vitpe | ratio |\n|---|---|---|---|")
    for t in times:
        print(f"| {t['case']} | {t['timm_s'] * 1e6:.0f} us | {t['vitpe_s'] * 1e6:.0f} us | "
              f"{t['timm_s'] / t['vitpe_s']:.0f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "heads": HEADS, "rows": rows, "timings": times},
                                              indent=1))


if __name__ == "__main__":
    main()
