"""Pictures of a resize: cosine-similarity maps and value histograms.

A position embedding is only useful through its geometry: the dot products
between tokens. So for a few reference patches (the same image locations in
every grid) each panel shows how similar that patch's embedding is to every
other patch's, before resizing and after each method; a good resize keeps the
same smooth blob, nearest makes it blocky, corner-aligned modes shift it. The
bottom panel shows the distribution of table values (interpolation with
negative lobes overshoots, averaging shrinks). With a known exact table (the
demo's sin-cos field) an extra row shows where each method's error lives.

Headless: matplotlib with the Agg backend, imported only here. The image is
written atomically (atomic.py), in the format its extension names.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

def check_plot_output(path) -> str:
    """The image format for path (from its extension), refusing one matplotlib
    cannot write and an OUT that must not be replaced, before any work."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from .atomic import check_output
    from .checkpoint import CheckpointError
    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in formats:
        what = f".{fmt} files" if fmt else "a file without an extension"
        raise CheckpointError(f"{path}: matplotlib cannot write the plot as {what}; give -o one of the extensions "
                              f".{', .'.join(sorted(formats))}")
    check_output(path, overwrite=True)  # an existing image is replaced, but never a link, device or folder
    return fmt


# Reference patches as fractions of the image (row, column): centre, near the
# top-left corner (where align_corners differs most), and off-centre.
REFERENCES = ((0.5, 0.5), (0.07, 0.07), (0.3, 0.8))


def _reference_index(grid: Sequence[int], where: Tuple[float, float]) -> Tuple[int, int]:
    return (min(int(where[0] * grid[0]), grid[0] - 1), min(int(where[1] * grid[1]), grid[1] - 1))


def cosine_map(table: np.ndarray, grid: Sequence[int], where: Tuple[float, float]) -> np.ndarray:
    """(H, W) cosine similarity of the patch at `where` to every patch. table: (H*W, C)."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    row, col = _reference_index(grid, where)
    return (unit @ unit[row * grid[1] + col]).reshape(grid[0], grid[1])


def _numpy(table) -> np.ndarray:
    if isinstance(table, torch.Tensor):
        table = table.detach().to(torch.float64).cpu().numpy()
    return np.asarray(table, dtype=np.float64)


def plot_resize(original, old_grid: Sequence[int], results: List[Tuple[str, object]], new_grid: Sequence[int],
                out_path, title: str, exact=None) -> None:
    """original: (H*W, C) grid tokens (no prefix); results: [(label, (H'*W', C))];
    exact: optional (H'*W', C) ground truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    original = _numpy(original)
    results = [(label, _numpy(t)) for label, t in results]
    exact = None if exact is None else _numpy(exact)

    columns = [(f"original {old_grid[0]}x{old_grid[1]}", original, old_grid)]
    if exact is not None:
        columns.append((f"exact {new_grid[0]}x{new_grid[1]}", exact, new_grid))
    columns += [(label, table, new_grid) for label, table in results]
    n_cols = len(columns)
    n_maps = len(REFERENCES) + (exact is not None)

    fig = plt.figure(figsize=(1.7 * n_cols + 1.6, 1.8 * n_maps + 3.3), dpi=110)
    outer = fig.add_gridspec(n_maps + 1, 1, height_ratios=[1.0] * n_maps + [1.5], hspace=0.34,
                             left=0.05, right=0.975, top=0.89, bottom=0.07)
    fig.suptitle(title, fontsize=12)
    widths = [1.0] * n_cols + [0.07]  # the last, narrow column holds the row's colour bar

    for r, where in enumerate(REFERENCES):
        maps = [cosine_map(table, grid, where) for _, table, grid in columns]
        # One scale per row, from the row's lowest similarity to 1: a high-dimensional
        # table's similarities often stay far above -1, and a fixed [-1, 1] would hide them.
        low = min(float(m.min()) for m in maps)
        row = outer[r].subgridspec(1, n_cols + 1, wspace=0.08, width_ratios=widths)
        for c, ((label, table, grid), sim) in enumerate(zip(columns, maps)):
            ax = fig.add_subplot(row[c])
            image = ax.imshow(sim, cmap="viridis", vmin=low, vmax=1.0, interpolation="nearest")
            ref_r, ref_c = _reference_index(grid, where)
            ax.plot(ref_c, ref_r, marker="x", color="w", markersize=6, mew=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8.5)
            if c == 0:
                ax.set_ylabel(f"patch at\n({where[0]:.2g}, {where[1]:.2g})\nof the image", fontsize=8)
        cbar = fig.colorbar(image, cax=fig.add_subplot(row[n_cols]))
        cbar.ax.tick_params(labelsize=7)
        cbar.set_label("cosine sim.", fontsize=7.5)

    if exact is not None:
        # Token-wise RMS error against the exact table, one log scale for the row:
        # errors differ by orders of magnitude between methods.
        errors = [np.sqrt(((table - exact) ** 2).mean(axis=1)).reshape(grid[0], grid[1])
                  for _, table, grid in columns[2:]]
        positive = np.concatenate([e[e > 0] for e in errors] + [np.array([1e-7])])
        norm = LogNorm(vmin=max(np.percentile(positive, 1), 1e-8), vmax=max(positive.max(), 1e-7))
        row = outer[len(REFERENCES)].subgridspec(1, n_cols + 1, wspace=0.08, width_ratios=widths)
        scale = np.sqrt((exact ** 2).mean())
        for c, err in enumerate(errors, start=2):
            ax = fig.add_subplot(row[c])
            image = ax.imshow(np.maximum(err, norm.vmin), cmap="magma", norm=norm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"rel. RMSE {np.sqrt((err ** 2).mean()) / scale:.1e}", fontsize=8)
        for c in (0, 1):
            ax = fig.add_subplot(row[c])
            ax.axis("off")
        ax.text(0.0, 0.5, "error vs exact:\nRMS over channels\nper token\n(log scale)", ha="center",
                va="center", fontsize=8.5, transform=ax.transAxes)
        cbar = fig.colorbar(image, cax=fig.add_subplot(row[n_cols]))
        cbar.ax.tick_params(labelsize=7)
        cbar.set_label("|error|", fontsize=7.5)

    # value distribution before/after; the legend takes the right part of the row
    row = outer[n_maps].subgridspec(1, 2, width_ratios=[2.4, 1.0], wspace=0.03)
    ax = fig.add_subplot(row[0])
    low = min(t.min() for _, t, _ in columns)
    high = max(t.max() for _, t, _ in columns)
    bins = np.linspace(low, high, 121)
    ax.hist(original.ravel(), bins=bins, density=True, color="0.8",
            label=f"original: std {original.std():.3g}, [{original.min():.3g}, {original.max():.3g}]")
    colors = matplotlib.colormaps["tab10"]
    for i, (label, table, _) in enumerate(columns[1:]):
        style = {"color": "k", "linestyle": "--"} if (exact is not None and i == 0) else {"color": colors(i % 10)}
        ax.hist(table.ravel(), bins=bins, density=True, histtype="step", linewidth=1.1,
                label=f"{label}: std {table.std():.3g}, [{table.min():.3g}, {table.max():.3g}]", **style)
    ax.set_yscale("log")
    ax.set_xlabel("table value (grid tokens, all channels)", fontsize=9)
    ax.set_ylabel("density (log)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title("value distribution before / after", fontsize=9.5)
    handles, labels = ax.get_legend_handles_labels()
    legend_ax = fig.add_subplot(row[1])
    legend_ax.axis("off")
    legend_ax.legend(handles, labels, fontsize=7.5, loc="center left", frameon=False, ncol=1,
                     title="values: std, [min, max]", title_fontsize=8)
    from .atomic import write_atomic
    fmt = check_plot_output(out_path)
    try:
        write_atomic(out_path, lambda f: fig.savefig(f, format=fmt), overwrite=True)
    finally:
        plt.close(fig)
