"""`vitpe plot --attention CKPT [IMAGE]`: where the class token looks, before
and after resizing the position table.

The checkpoint's model (rebuild.py) runs once at its own image size and once
per method at --image-size, on the same image (center-cropped to each
size's aspect ratio, then resized), and the figure shows the class token's
attention to the grid tokens: the last layer averaged over heads, and the
attention rollout through all layers (vitpe_ext.integrations.attention). A
resize that keeps the geometry the model learned keeps the maps; one that
distorts it moves, smears or grids them (the article's §6: look at the
attention after interpolating).

Beside the figure, one line per method: how much of the class token's
attention reaches the grid (the rest goes to prefix tokens) and the Pearson
correlation of each map with the checkpoint-size map, the resized map
averaged down to the checkpoint's grid first.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..op import DEFAULT_MODE, MODES, PROFILES
from .checkpoint import (CheckpointError, describe, format_pair, load_checkpoint, new_grid_for, nonfinite_summary,
                         select_keys)
from .resizing import Method

DEFAULT_METHODS = tuple(dict.fromkeys(m for m in ("nearest", "bilinear", DEFAULT_MODE, "lanczos3") if m in MODES))
RANDOM_SEED = 0


# -- arguments --------------------------------------------------------------------

def _arch(text: str) -> str:
    from .rebuild import check_arch
    try:
        check_arch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _methods(text: str) -> List[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in MODES and n not in PROFILES]
    if not names or unknown:
        what = f"unknown mode {unknown[0]!r}" if unknown else "no mode given"
        raise argparse.ArgumentTypeError(f"{what}; give modes ({', '.join(MODES)}) or library profiles "
                                         f"({', '.join(sorted(PROFILES))}), comma-separated")
    return list(dict.fromkeys(names))


def add_attention_args(parser: argparse.ArgumentParser) -> None:
    """The `vitpe plot` options of the attention view."""
    group = parser.add_argument_group(
        "attention (--attention)",
        "Plot the class token's attention on an image (last layer and rollout), at the checkpoint's image size "
        "and at --image-size per method, for torchvision and timm ViT checkpoints.")
    group.add_argument("--attention", action="store_true",
                       help="plot attention maps instead of similarity maps (a PNG)")
    parser.add_argument("image", nargs="?", metavar="IMAGE",
                        help="with --attention: the image to look at (default: random pixels, seed 0)")
    group.add_argument("--arch", type=_arch, metavar="NAME",
                       help="the model: a torchvision vit_* name or a timm model name (default: read off the "
                            "weights, torchvision and timm VisionTransformer layouts)")
    group.add_argument("--modes", type=_methods, metavar="M,M,...",
                       help=f"resize methods: modes or library profiles (default: the checkpoint's profile, "
                            f"{', '.join(DEFAULT_METHODS)})")
    group.add_argument("--num-heads", type=int, metavar="N",
                       help="attention heads, when the weights are read off without --arch (default: a num_heads "
                            "entry in the checkpoint, else the standard count for the width)")


def _check_usage(args) -> None:
    if not args.attention:
        given = [name for name, value in (("IMAGE", args.image), ("--arch", args.arch), ("--modes", args.modes),
                                          ("--num-heads", args.num_heads)) if value is not None]
        if given:
            raise CheckpointError(f"{', '.join(given)}: only with --attention")


def _check_png(path) -> None:
    from .plot import check_plot_output
    if Path(path).suffix.lower() != ".png":
        raise CheckpointError(f"{path}: the attention plot is written as PNG; give -o a name ending in .png")
    check_plot_output(path)


# -- the image --------------------------------------------------------------------

def load_image(path: Optional[str], size: Tuple[int, int]):
    """A PIL image: the file, or random pixels (seed 0) of at least size."""
    from PIL import Image, UnidentifiedImageError
    if path is None:
        generator = torch.Generator().manual_seed(RANDOM_SEED)
        pixels = torch.randint(0, 256, (size[0], size[1], 3), generator=generator, dtype=torch.uint8)
        return Image.fromarray(pixels.numpy(), "RGB")
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{path}: no such image file")
    if p.is_dir():
        raise CheckpointError(f"{path}: is a directory, not an image")
    try:
        with Image.open(p) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        detail = "not an image file PIL can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise CheckpointError(f"{path}: unreadable image ({detail})") from None


def fit_image(image, size: Tuple[int, int], mean_std, channels: int) -> Tuple[np.ndarray, torch.Tensor]:
    """(what the model sees as an RGB array in [0, 1], the normalised (1, C, h, w)
    input): the largest centered crop of the target aspect ratio, resized."""
    from PIL import Image
    h, w = size
    scale = min(image.width / w, image.height / h)
    cw, ch = w * scale, h * scale
    left, top = (image.width - cw) / 2, (image.height - ch) / 2
    fitted = image.resize((w, h), Image.BICUBIC, box=(left, top, left + cw, top + ch))
    rgb = np.asarray(fitted, dtype=np.float32) / 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    if channels == 1:
        x = x.mean(dim=0, keepdim=True)
    elif channels != 3:
        raise CheckpointError(f"the model takes {channels}-channel images; vitpe feeds it RGB or grey")
    mean, std = (torch.tensor(v[:1] if channels == 1 else v).view(-1, 1, 1) for v in mean_std)
    return rgb, ((x - mean) / std).unsqueeze(0)


# -- comparing maps ----------------------------------------------------------------

def correlation(resized: torch.Tensor, native: torch.Tensor) -> float:
    """Pearson r of a map with the native one, the map averaged down (or
    spread up) to the native grid; NaN where a map is constant."""
    pooled = F.adaptive_avg_pool2d(resized.double()[None, None], native.shape)[0, 0].flatten()
    ref = native.double().flatten()
    a, b = pooled - pooled.mean(), ref - ref.mean()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 1e-300 else float("nan")


def _r(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


# -- the run --------------------------------------------------------------------------

def run(args) -> int:
    from ..integrations.attention import class_token_attention
    from .rebuild import rebuild

    _check_usage(args)
    _check_png(args.output)  # before any work
    ckpt = load_checkpoint(args.checkpoint)
    emb = describe(ckpt, select_keys(ckpt, args.key)[0], args.prefix_tokens, args.old_grid, args.patch_size)
    bad = nonfinite_summary(ckpt.get(emb.key), emb.prefix_tokens)
    if bad:
        raise CheckpointError(f"{ckpt.path}: {emb.name} has non-finite values ({bad}); see vitpe inspect")
    if emb.patch is None:
        raise CheckpointError(f"{ckpt.path}: no patch-embedding weight beside {emb.name}; not a ViT vitpe can run")
    new_grid = (new_grid_for(emb, args.image_size, ckpt.path) if args.image_size is not None
                else (2 * emb.grid[0], 2 * emb.grid[1]))
    new_size = (new_grid[0] * emb.patch[0], new_grid[1] * emb.patch[1])
    rebuilt = rebuild(ckpt, emb, args.arch, args.num_heads)
    channels = rebuilt.model.patch_embed.proj.in_channels if rebuilt.library == "timm" else 3
    source = load_image(args.image, (max(rebuilt.image_size[0], new_size[0]), max(rebuilt.image_size[1], new_size[1])))
    names = args.modes or [emb.profile, *DEFAULT_METHODS]
    methods = [Method(profile=n) if n in PROFILES else Method(mode=n) for n in names]
    what = f"image {Path(args.image).name}" if args.image else f"a random image (uniform noise, seed {RANDOM_SEED})"
    print(f"vitpe plot --attention: {ckpt.path}: {rebuilt.description}")
    print(f"on {what}, center-cropped to each size's aspect ratio and resized")

    def attend(model, size):
        rgb, x = fit_image(source, size, rebuilt.mean_std, channels)
        try:
            maps = class_token_attention(model, x)
        except ValueError as exc:
            raise CheckpointError(f"{ckpt.path}: {str(exc).splitlines()[0]}") from None
        return rgb, maps

    rgb, native = attend(rebuilt.model, rebuilt.image_size)
    columns = [(f"checkpoint {format_pair(rebuilt.image_size)}", rgb, native)]
    rows = []
    for method in methods:
        model = rebuilt.resized(new_grid, method)
        rgb, maps = attend(model, new_size)
        columns.append((method.label, rgb, maps))
        rows.append([method.label, format_pair(maps.grid), f"{float(maps.last.sum()):.3f}",
                     _r(correlation(maps.last[0], native.last[0])), f"{float(maps.rollout.sum()):.3f}",
                     _r(correlation(maps.rollout[0], native.rollout[0]))])
    print(f"grid {format_pair(emb.grid)} -> {format_pair(new_grid)} ({format_pair(rebuilt.image_size)} -> "
          f"{format_pair(new_size)} pixels), {native.layers} attention layers, {emb.prefix_tokens} prefix token(s); "
          f"'to grid': the class token's attention on grid tokens; r: correlation with the checkpoint-size map")
    header = ["method", "grid", "last: to grid", "last: r", "rollout: to grid", "rollout: r"]
    rows.insert(0, ["checkpoint size", format_pair(native.grid), f"{float(native.last.sum()):.3f}", "1",
                    f"{float(native.rollout.sum()):.3f}", "1"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())

    title = (f"{ckpt.path.name}: class-token attention on {what}\n{rebuilt.library}, grid {format_pair(emb.grid)} "
             f"-> {format_pair(new_grid)}, per resize method")
    plot_attention(columns, args.output, title)
    print(f"wrote {args.output}")
    return 0


def plot_attention(columns, out_path, title: str) -> None:
    """columns: [(label, rgb (h, w, 3) in [0, 1], ClassTokenAttention)]; rows:
    the image, the last layer's map over it, the rollout's map over it. Each
    map on its own scale, 0 to its maximum: a larger grid spreads attention
    over more tokens, so the values shrink while the pattern should not."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import write_atomic
    native = columns[0][2]
    n = len(columns)
    fig, axes = plt.subplots(3, n, figsize=(2.3 * n + 0.6, 7.6), dpi=100, squeeze=False)
    fig.suptitle(title, fontsize=10)
    for c, (label, rgb, maps) in enumerate(columns):
        h, w = rgb.shape[:2]
        axes[0][c].imshow(rgb, interpolation="bilinear")
        axes[0][c].set_title(label, fontsize=8.5)
        axes[0][c].set_xlabel(f"{h}x{w} px, grid {format_pair(maps.grid)}", fontsize=7.5)
        for r, (name, field) in enumerate((("last layer", "last"), ("rollout", "rollout")), start=1):
            values = getattr(maps, field)[0].double().cpu().numpy()
            ax = axes[r][c]
            ax.imshow(rgb.mean(axis=2), cmap="gray", extent=(0, w, h, 0), interpolation="bilinear")
            ax.imshow(values, cmap="inferno", alpha=0.65, extent=(0, w, h, 0), interpolation="nearest",
                      vmin=0.0, vmax=max(float(values.max()), 1e-12))
            text = f"to grid {values.sum():.2f}"
            if c:
                text += f", r {_r(correlation(getattr(maps, field)[0], getattr(native, field)[0]))}"
            ax.set_xlabel(text, fontsize=7.5)
            if c == 0:
                ax.set_ylabel(f"{name}\n(class token,\nmean of heads)" if r == 1 else "rollout\n(all layers)",
                              fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    try:
        write_atomic(out_path, lambda f: fig.savefig(f, format="png"), overwrite=True)
    finally:
        plt.close(fig)
