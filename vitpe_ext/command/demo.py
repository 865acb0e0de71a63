"""`vitpe demo`: every resize method on one table, against the exact answer.

Without a checkpoint the demo builds torchvision's ViT-B/16 (random weights,
no download) and puts a 2-D sin-cos field (MAE's table, integer positions on
the 14x14 grid) in encoder.pos_embedding. The field is a known function of
position, so the exact table at any grid is known: the same field at the new
patch centres, (j + 0.5) * 14 / n - 0.5 in old-grid units (the half-pixel
convention: a patch covering the same part of the image gets the same
embedding). Each method's error against it is printed, with its time; the
resized state dict then loads strictly into vit_b_16(image_size=384) and runs
one forward pass; the plot shows similarity maps, error maps and histograms.

Corner-aligned methods (align_corners=True; torchvision, big_vision) map
corner centres onto corner centres, i.e. they stretch the grid slightly; their
error column measures that convention against the half-pixel one.

With a checkpoint there is no ground truth; the error columns then compare
each method with the checkpoint's own library profile instead.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..op import PROFILES
from .checkpoint import (Checkpoint, CheckpointError, Embedding, describe, format_pair, load_checkpoint,
                         nonfinite_summary, select_keys)
from .resizing import Method, default_method, mode_variants

DEMO_METHODS = tuple(Method(mode=mode, align_corners=ac, antialias=aa or None)
                     for mode, ac, aa in mode_variants()) + (
    Method(profile="dinov2"),  # the one library setting no plain mode covers: scale_factor (n + 0.1) / 14
)
DEFAULT_SIZES = ((384, 384), (512, 512))
_BUILT: dict = {}  # image size -> a vit_b_16 built for the built-in state dict, reused once
DEFAULT_NAME = "torchvision vit_b_16 (random weights) with a 2-D sin-cos encoder.pos_embedding"


def used_by(method: Method) -> str:
    """The library profiles whose numbers this method reproduces (up to their compute dtype)."""
    if method.profile is not None:
        return method.profile
    settings = method.resolved()
    names = [name for name, p in PROFILES.items()
             if p.mode == settings["mode"] and bool(p.align_corners) == bool(settings["align_corners"])
             and bool(p.antialias) == bool(settings["antialias"]) and p.scale_offset is None]
    return ", ".join(names)


def sincos_vit_b_16() -> Tuple[Checkpoint, Embedding]:
    """torchvision's ViT-B/16 state dict with MAE's sin-cos table (cls row zeros)."""
    from torchvision.models import vit_b_16

    from ..integrations.sincos import get_2d_sincos_pos_embed
    # Every weight but the table has the same shape at any image size, so one
    # model built for the first target size serves both as the 224 state dict
    # (with the 224 table put in) and, later, as the model the resized dict
    # loads into: one random initialisation of 86M parameters instead of two.
    model = vit_b_16(weights=None, image_size=DEFAULT_SIZES[0][0])
    _BUILT[DEFAULT_SIZES[0][0]] = model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    table = torch.from_numpy(get_2d_sincos_pos_embed(768, 14, cls_token=True)).float().unsqueeze(0)
    state["encoder.pos_embedding"] = table
    ckpt = Checkpoint(Path("<built-in vit_b_16 sin-cos>"), "torch-zip", state)
    return ckpt, describe(ckpt, ("encoder.pos_embedding",))


def _time_ms(fn, repeats: int = 15) -> float:
    """Best of `repeats` calls, in ms: on a shared machine the minimum is the
    least disturbed measurement (a sub-millisecond call otherwise picks up
    whole scheduler ticks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a table this small gains nothing from threads but wake-up jitter
    try:
        fn()  # warm-up: first-call dispatch and allocation
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * min(samples)


def _recipe(method: Method):
    """The anchors' permute + F.interpolate + cat recipe for the same settings, or None."""
    if method.profile is not None or method.sincos:
        return None
    from ..op.reference import has_recipe, recipe_interpolate
    settings = method.resolved()
    if not has_recipe(settings["mode"]):
        return None
    return lambda table, grid, old, prefix: recipe_interpolate(
        table.reshape(-1, table.shape[-2], table.shape[-1]), grid, old, prefix, settings["mode"],
        settings["align_corners"], settings["antialias"])


def _grid_part(table: torch.Tensor, prefix: int) -> torch.Tensor:
    return table.reshape(-1, table.shape[-2], table.shape[-1])[0, prefix:].double()


def _errors(result: torch.Tensor, truth: torch.Tensor) -> Tuple[float, float]:
    """(relative RMSE = |r - t|_F / |t|_F, max |r - t| / max |t|) over grid tokens."""
    diff = result - truth
    rel_rmse = float(diff.norm() / truth.norm().clamp_min(1e-300))
    rel_max = float(diff.abs().max() / truth.abs().max().clamp_min(1e-300))
    return rel_rmse, rel_max


def _table(header: List[str], rows: List[List[str]], right: set) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _sizes(args, emb: Embedding) -> List[Tuple[Tuple[int, int], Tuple[int, int], Optional[str]]]:
    """[(image size, grid, note)]: the requested sizes, or 384/512 rounded to the patch."""
    from .checkpoint import new_grid_for
    if args.image_size:
        return [(size, new_grid_for(emb, size, "demo"), None) for size in args.image_size]
    if emb.patch is None:
        raise CheckpointError("the checkpoint does not tell its patch size; pass --patch-size or --image-size")
    out = []
    for size in DEFAULT_SIZES:
        grid = tuple(max(1, round(s / p)) for s, p in zip(size, emb.patch))
        image = (grid[0] * emb.patch[0], grid[1] * emb.patch[1])
        note = None if image == size else f"{format_pair(size)} is not a multiple of the patch, using {format_pair(image)}"
        out.append((image, grid, note))
    return out


HEAD_KEYS = ("num_heads", "num_attention_heads", "n_heads", "nhead")
TORCHVISION_HEADS = {768: 12, 1024: 16, 1280: 16}  # vit_b_*, vit_l_*, vit_h_14: hidden width -> heads


def recorded_num_heads(obj) -> Optional[int]:
    """A head count the checkpoint records beside its weights (a config/args
    dict entry such as num_heads), or None. State dicts do not store it."""
    found = set()

    def walk(node):
        for name, value in node.items():
            if isinstance(value, dict):
                walk(value)
            elif name in HEAD_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                found.add(value)
    walk(obj)
    return found.pop() if len(found) == 1 else None


def known_num_heads(ckpt: Checkpoint, hidden: int, option: Optional[int]) -> Optional[Tuple[int, str]]:
    """(heads, where that number comes from) when it is known: --num-heads
    (checked against the width), else a count the checkpoint records; None
    where only an assumption is left (each command makes its own)."""
    if option is not None:
        if option < 1 or hidden % option:
            raise CheckpointError(f"--num-heads {option} does not divide the model width {hidden}")
        return option, "--num-heads"
    recorded = recorded_num_heads(ckpt.obj)
    if recorded is not None and hidden % recorded == 0:
        return recorded, "recorded in the checkpoint"
    return None


def num_heads_for(ckpt: Checkpoint, hidden: int, option: Optional[int]) -> Tuple[int, str]:
    """(heads, where that number comes from): --num-heads, the checkpoint, or
    an assumption that says so."""
    known = known_num_heads(ckpt, hidden, option)
    if known is not None:
        return known
    if hidden in TORCHVISION_HEADS:
        return TORCHVISION_HEADS[hidden], (f"assumed: torchvision's for width {hidden}, not recorded in the "
                                           f"checkpoint; pass --num-heads if it differs")
    heads = max(1, hidden // 64) if hidden % 64 == 0 else 1
    return heads, (f"assumed: not recorded in the checkpoint and no torchvision model has width {hidden}; "
                   f"pass --num-heads")


def _torchvision_model(ckpt: Checkpoint, state: dict, image_size: int, patch: int, default: bool,
                       num_heads: Optional[int]):
    """A torchvision VisionTransformer that the state dict fits, or (None, why)."""
    from torchvision.models import VisionTransformer, vit_b_16
    if default:
        model = _BUILT.pop(image_size, None) or vit_b_16(image_size=image_size)
        return model, "vit_b_16(image_size=%d)" % image_size
    layers = {k.split(".")[2] for k in state if k.startswith("encoder.layers.encoder_layer_")}
    if "conv_proj.weight" not in state or not layers or "heads.head.weight" not in state:
        return None, "the keys are not a bare torchvision VisionTransformer state dict"
    hidden = state["conv_proj.weight"].shape[0]
    heads, source = num_heads_for(ckpt, hidden, num_heads)  # the weights' shapes do not depend on it
    kwargs = dict(image_size=image_size, patch_size=patch, num_layers=len(layers), num_heads=heads,
                  hidden_dim=hidden, mlp_dim=state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0],
                  num_classes=state["heads.head.weight"].shape[0])
    if "heads.pre_logits.weight" in state:
        kwargs["representation_size"] = state["heads.pre_logits.weight"].shape[0]
    return VisionTransformer(**kwargs), (f"VisionTransformer({', '.join(f'{k}={v}' for k, v in kwargs.items())}) "
                                         f"(num_heads {source})")


def _forward(ckpt: Checkpoint, emb: Embedding, image: Tuple[int, int], grid, method: Method, default: bool,
             num_heads: Optional[int] = None) -> str:
    if emb.family != "torchvision":
        return f"skipped: only torchvision ViT checkpoints can be rebuilt without their config (this is {emb.family})"
    if image[0] != image[1] or emb.patch[0] != emb.patch[1]:
        return "skipped: torchvision's VisionTransformer takes square images and patches only"
    state = ckpt.container(emb.key)
    resized = dict(state)
    resized[emb.key[-1]] = method.apply(ckpt.get(emb.key), grid, emb.grid, emb.prefix_tokens)
    model, built = _torchvision_model(ckpt, resized, image[0], emb.patch[0], default, num_heads)
    if model is None:
        return f"skipped: {built}"
    start = time.perf_counter()
    try:
        model.load_state_dict(resized, strict=True)
    except RuntimeError as exc:
        return f"failed: load_state_dict into {built}: {str(exc).splitlines()[0]}"
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, image[0], image[1])
    with torch.inference_mode():
        logits = model(x)
    seconds = time.perf_counter() - start
    finite = "all finite" if torch.isfinite(logits).all() else "NOT FINITE"
    return (f"{built} loaded the {method.label} state dict strictly; one random {format_pair(image)} image "
            f"-> logits {tuple(logits.shape)}, {finite}, {seconds:.1f} s on the CPU")


def run(args) -> int:
    started = time.perf_counter()
    if not args.no_plot:
        from .plot import check_plot_output
        check_plot_output(args.output)  # before minutes of work
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        keys = select_keys(ckpt, args.key)
        emb = describe(ckpt, keys[0], args.prefix_tokens, args.old_grid, args.patch_size)
        source, default = f"{ckpt.path}: {emb.name}", False
        if args.num_heads is not None:
            num_heads_for(ckpt, emb.dim, args.num_heads)  # refuse a count that cannot fit, before any work
    else:
        if (args.key or args.prefix_tokens is not None or args.old_grid or args.patch_size
                or args.num_heads is not None):
            raise CheckpointError("--key/--prefix-tokens/--old-grid/--patch-size/--num-heads describe a "
                                  "checkpoint; give one")
        ckpt, emb = sincos_vit_b_16()
        source, default = DEFAULT_NAME, True
    table = ckpt.get(emb.key)
    bad = nonfinite_summary(table, emb.prefix_tokens)
    if bad:
        raise CheckpointError(f"{source} has non-finite values ({bad}); see vitpe inspect")
    profile_method = default_method(emb)
    old_image = format_pair((emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])) if emb.patch else "?"
    print(f"vitpe demo: {source}")
    print(f"table {tuple(emb.shape)} {str(emb.dtype).replace('torch.', '')}: {emb.prefix_tokens} prefix token(s) "
          f"+ grid {format_pair(emb.grid)} (image {old_image}, patch {format_pair(emb.patch) if emb.patch else '?'}),"
          f" family {emb.family}, default profile {profile_method.label}")
    print("times: best of 15 calls on one CPU thread, vitpe's op and the anchors' permute + F.interpolate "
          "+ cat recipe with the same settings")
    if default:
        print("error = against the exact table (the sin-cos field at the new patch centres, half-pixel): "
              "rel RMSE = |out - exact| / |exact| (Frobenius), max = max|out - exact| / max|exact|; "
              "the class row is copied exactly and left out")
    else:
        print(f"no exact table for a learned embedding: 'vs profile' columns compare each method with "
              f"{profile_method.label}, this checkpoint's library default (0 = identical)")

    plot_data = None
    for image, grid, note in _sizes(args, emb):
        if note:
            print(f"note: {note}")
        from ..integrations.sincos import sincos_2d_resampled
        truth = (torch.from_numpy(sincos_2d_resampled(emb.dim, emb.grid, grid)) if default
                 else _grid_part(profile_method.apply(table, grid, emb.grid, emb.prefix_tokens), emb.prefix_tokens))
        kind = "exact" if default else "vs profile"
        rows, results = [], []
        for method in DEMO_METHODS:
            out = method.apply(table, grid, emb.grid, emb.prefix_tokens)
            grid_out = _grid_part(out, emb.prefix_tokens)
            rel_rmse, rel_max = _errors(grid_out, truth)
            ms = _time_ms(lambda: method.apply(table, grid, emb.grid, emb.prefix_tokens))
            recipe = _recipe(method)
            recipe_ms = (f"{_time_ms(lambda: recipe(table, grid, emb.grid, emb.prefix_tokens)):.3f}"
                         if recipe else "-")
            rows.append([method.label, used_by(method), f"{rel_rmse:.2e}", f"{rel_max:.2e}", f"{ms:.3f}",
                         recipe_ms])
            results.append((method.label, grid_out))
        print()
        print(f"{format_pair((emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])) if emb.patch else '?'} -> "
              f"{format_pair(image)}: grid {format_pair(emb.grid)} -> {format_pair(grid)}, "
              f"{emb.prefix_tokens + emb.grid[0] * emb.grid[1]} -> {emb.prefix_tokens + grid[0] * grid[1]} tokens")
        print(_table(["method", "library profiles", f"rel RMSE {kind}", f"max {kind}", "vitpe ms",
                      "F.interpolate ms"], rows, {2, 3, 4, 5}))
        if default:
            errors = {row[0]: float(row[2]) for row in rows}
            best = min(errors, key=errors.get)
            mine = next((row for row in rows if emb.profile in row[1].split(", ")), None)
            if mine is not None and mine[0] != best:
                print(f"lowest error: {best}; this family's default ({emb.profile}: {mine[0]}) is "
                      f"{errors[mine[0]] / errors[best]:.1f}x that")
        if plot_data is None:
            plot_data = (image, grid, results, truth if default else None)

    if not args.no_forward:
        image, grid, _, _ = plot_data
        print()
        print("forward pass: " + _forward(ckpt, emb, image, grid, profile_method, default, args.num_heads))

    if not args.no_plot:
        from .plot import plot_resize
        image, grid, results, exact = plot_data
        title = (f"{source}\ngrid {format_pair(emb.grid)} -> {format_pair(grid)}: cosine similarity of three "
                 f"reference patches (x) to all patches, per method")
        plot_resize(_grid_part(table, emb.prefix_tokens), emb.grid, results, grid, args.output, title, exact=exact)
        print(f"plot: {args.output}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
