"""How a table is resized: a library profile, explicit op settings, or a
fixed sin-cos table regenerated; and the plan of what a resize replaces in a
checkpoint. Every check (sizes against memory included) runs before any table
is computed, so --dry-run refuses exactly what a real run would."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import op
from .checkpoint import (FAMILY_BY_NAME, Checkpoint, CheckpointError, Embedding, Key, Pair, format_pair, key_name,
                         new_grid_for, nonfinite_summary)


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024:
            break
        nbytes /= 1024
    return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"


def physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def resized_shape(shape: Sequence[int], new_grid: Pair, prefix: int) -> Tuple[int, ...]:
    return (*shape[:-2], prefix + math.prod(new_grid), shape[-1])  # any rank: HxW or TxHxW


def check_fits(shape: Sequence[int], dtype: torch.dtype, what: str = "the resized table") -> None:
    """Refuse an output larger than the machine's memory, before computing
    anything (Python ints: no overflow)."""
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise CheckpointError(f"{what} {tuple(shape)} {str(dtype).replace('torch.', '')} would take {nbytes} "
                              f"bytes ({_human(nbytes)}), more than this machine's memory ({_human(memory)}); "
                              f"choose a smaller --image-size")


# -- methods ---------------------------------------------------------------------

def mode_variants() -> List[Tuple[str, Optional[bool], bool]]:
    """(mode, align_corners, antialias) for every mode of the op's table, in
    its order: as it comes, then corner-aligned where the mode takes
    align_corners=True, then antialiased where antialias is optional (a mode
    that always antialiases has no separate row). The demo and the benchmark
    run these, so a mode added to the table shows up in both."""
    rows: List[Tuple[str, Optional[bool], bool]] = []
    for mode in op.MODES:
        info = op.mode_info(mode)
        rows.append((mode, None, False))
        if info.align_corners:
            rows.append((mode, True, False))
        if info.antialias == "optional":
            rows.append((mode, None, True))
    return rows


@dataclass(frozen=True)
class Method:
    """How to resize: a library profile, explicit op settings, or (for fixed
    sin-cos tables) regeneration at the new grid."""
    profile: Optional[str] = None
    mode: Optional[str] = None
    align_corners: Optional[bool] = None
    antialias: Optional[bool] = None
    sincos: bool = False

    def resolved(self) -> Dict[str, Any]:
        """The settings that will run: mode, align_corners, antialias (+ profile extras)."""
        if self.sincos:
            return {"sincos": True}
        try:
            return op.resolve(self.profile, self.mode, self.align_corners, self.antialias).settings()
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None

    @property
    def label(self) -> str:
        if self.sincos:
            return "sincos regenerated"
        settings = self.resolved()
        text = settings["mode"]
        if settings.get("align_corners"):
            text += " ac"
        if settings.get("antialias"):
            text += " aa"
        if settings.get("scale_offset"):
            text += f" +{settings['scale_offset']:g}"
        if settings.get("compute_dtype"):
            text += f" ({settings['compute_dtype']})"
        return f"{self.profile}: {text}" if self.profile else text

    def apply(self, table: torch.Tensor, new_grid: Pair, old_grid: Pair, prefix: int) -> torch.Tensor:
        check_fits(resized_shape(table.shape, new_grid, prefix), table.dtype)
        try:
            if self.sincos:
                return regenerate_sincos(table, new_grid, old_grid, prefix)
            return op.interpolate_pos_embed(table, new_grid, old_grid, prefix, mode=self.mode,
                                            align_corners=self.align_corners, antialias=self.antialias,
                                            profile=self.profile)
        except ValueError as exc:  # the op's argument checks: a clear message already
            raise CheckpointError(str(exc).splitlines()[0]) from None
        except (RuntimeError, MemoryError) as exc:  # e.g. an allocation failing
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"resizing to grid {format_pair(new_grid)} failed: {text}") from None


def method_given(args) -> bool:
    """Whether `vitpe resize`'s command line names a method; without one, a
    table's resize record (or else its family's profile) decides."""
    return bool(args.sincos or args.profile or args.mode is not None or args.align_corners is not None
                or args.antialias is not None)


def default_method(emb: Embedding) -> Method:
    """How emb's library resizes it: its family's profile, with what an HF model's recipe sets beside it."""
    return Method(profile=emb.profile, **emb.settings)


def method_from_args(args, emb: Embedding) -> Method:
    """The Method `vitpe resize`'s --profile/--mode/--align-corners/--antialias/
    --sincos name, emb's default_method where none is given."""
    explicit = args.mode is not None or args.align_corners is not None or args.antialias is not None
    if args.sincos:
        if explicit or args.profile:
            raise CheckpointError("--sincos regenerates the table; it takes no --profile/--mode/--align-corners/--antialias")
        return Method(sincos=True)
    method = (Method(profile=args.profile, mode=args.mode, align_corners=args.align_corners, antialias=args.antialias)
              if args.profile or explicit else default_method(emb))
    method.resolved()  # a contradiction with the profile fails here, before any work
    return method


def check_sincos(table: torch.Tensor, old_grid: Pair, prefix: int) -> str:
    """The sin-cos variant of the table's grid part; refuses a learned table."""
    from ..integrations.sincos import match_sincos
    rows = table.reshape(-1, table.shape[-2], table.shape[-1])
    variant, diff = match_sincos(rows[0, prefix:].double().numpy(), old_grid)
    if variant is None:
        raise CheckpointError(f"--sincos: the table is not a fixed 2-D sin-cos table at grid "
                              f"{format_pair(old_grid)} (max difference {diff:.3g} to the closest variant); "
                              f"interpolate it instead (drop --sincos)")
    return variant


def regenerate_sincos(table: torch.Tensor, new_grid: Pair, old_grid: Pair, prefix: int) -> torch.Tensor:
    """The fixed sin-cos table built anew at new_grid (no interpolation).

    Refuses a table that is not sin-cos at old_grid: replacing learned values
    would silently throw the training away. Prefix rows are kept (MAE's class
    row is zeros)."""
    import numpy as np

    from ..integrations.sincos import get_2d_sincos_pos_embed
    tokens, dim = table.shape[-2], table.shape[-1]
    rows = table.reshape(-1, tokens, dim)
    variant = check_sincos(table, old_grid, prefix)
    grid = torch.from_numpy(np.ascontiguousarray(get_2d_sincos_pos_embed(dim, new_grid, variant=variant)))
    grid = grid.to(table.dtype).expand(rows.shape[0], -1, -1)
    out = torch.cat([rows[:, :prefix], grid], dim=1).contiguous()
    return out.reshape(*table.shape[:-2], out.shape[-2], dim)


@dataclass
class Change:
    key: Key
    old_shape: Tuple[int, ...]
    new_shape: Tuple[int, ...]
    new: Optional[torch.Tensor]    # None when only planned (--dry-run)


def plan_resize(ckpt: Checkpoint, emb: Embedding, new_grid: Pair, method: Method,
                allow_nonfinite: bool = False, compute: bool = True) -> List[Change]:
    """The tensors to replace (the table, and any position_ids buffer). Every
    check runs first, so a dry run (compute=False) refuses what a real run
    would, without computing the table."""
    table = ckpt.get(emb.key)
    bad = nonfinite_summary(table, emb.prefix_tokens)
    if bad and not allow_nonfinite:
        raise CheckpointError(f"{ckpt.path}: {emb.name} has non-finite values ({bad}); interpolation would "
                              f"spread them to their neighbours; fix the checkpoint (or pass --allow-nonfinite)")
    shape = resized_shape(table.shape, new_grid, emb.prefix_tokens)
    try:
        check_fits(shape, table.dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{ckpt.path}: {emb.name}: {exc}") from None
    if method.sincos and not compute:
        check_sincos(table, emb.grid, emb.prefix_tokens)
    new = method.apply(table, new_grid, emb.grid, emb.prefix_tokens) if compute else None
    assert new is None or (new.dtype == table.dtype and tuple(new.shape) == shape)  # every path casts back
    changes = [Change(emb.key, tuple(table.shape), shape, new)]
    tokens = shape[-2]
    for key in emb.extras:  # position_ids: arange(L) with L the new token count
        ids = ckpt.get(key)
        fresh = torch.arange(tokens, dtype=ids.dtype).reshape(*ids.shape[:-1], tokens) if compute else None
        changes.append(Change(key, tuple(ids.shape), (*ids.shape[:-1], tokens), fresh))
    return changes


# -- a new patch size ------------------------------------------------------------

def plan_patch(ckpt: Checkpoint, emb: Embedding, image_size: Optional[Pair], new_patch: Optional[Pair],
               allow_nonfinite: bool = False, compute: bool = True) -> Tuple[Pair, Optional[Change]]:
    """The table's new grid, and the patch-kernel change (None when the kernel
    stays), for --image-size and --patch-size (one of them may be None).

    --patch-size is the output model's patch size. A patch-embedding kernel of
    another size beside the table is resampled to it (FlexiViT's
    pseudo-inverse, integrations/patch_embed.py) and the grid becomes
    IMAGE / patch, so kernel and table agree; without --image-size the image
    size stays (grid x current patch). Without a kernel there is nothing to
    resample: --patch-size is then the table's patch size."""
    from ..integrations.patch_embed import resample_patch_embed
    if new_patch is None or (emb.patch is not None and tuple(new_patch) == emb.patch):
        if image_size is None:  # --patch-size alone, equal to the kernel's: the image size stays
            image_size = (emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])
        return new_grid_for(emb, image_size, ckpt.path), None
    new_patch = (int(new_patch[0]), int(new_patch[1]))
    kernel = ckpt.get(emb.patch_key) if emb.patch_key is not None else None
    if emb.patch is None:  # describe() found no (out, in, ph, pw) kernel beside the table
        if image_size is not None:
            return new_grid_for(replace(emb, patch=new_patch), image_size, ckpt.path), None
        found = (f"{key_name(emb.patch_key)} has shape {tuple(kernel.shape)}, not a conv kernel (out, in, ph, pw)"
                 if kernel is not None else f"no patch-embedding kernel beside {emb.name}"
                 + ("" if emb.family == "custom" else f" ({emb.family} keeps it in a key ending with "
                    f"{_patch_suffix(emb.family)})"))
        raise CheckpointError(f"{ckpt.path}: {found}; a new patch size resamples that kernel, and without it the "
                              f"image size is unknown too: pass --image-size to resize only the table for patch "
                              f"{format_pair(new_patch)}")
    if not kernel.is_floating_point() or kernel.shape[0] != emb.dim:
        raise CheckpointError(f"{ckpt.path}: {key_name(emb.patch_key)} {tuple(kernel.shape)} "
                              f"{str(kernel.dtype).replace('torch.', '')} is not the patch embedding of "
                              f"{emb.name} ({emb.dim}-wide tokens); pass --key for the right table")
    bad = nonfinite_summary(kernel.reshape(1, kernel.shape[0], -1), 0)
    if bad and not allow_nonfinite:
        raise CheckpointError(f"{ckpt.path}: {key_name(emb.patch_key)} has non-finite values "
                              f"({bad.replace('token', 'output channel')}); resampling the kernel would spread them "
                              f"over every pixel of the new patch; fix the checkpoint (or pass --allow-nonfinite)")
    if image_size is None:
        image_size = (emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])
        for axis, size, patch in (("height", image_size[0], new_patch[0]), ("width", image_size[1], new_patch[1])):
            if size % patch:
                raise CheckpointError(
                    f"{ckpt.path}: the image {axis} {size} (grid {format_pair(emb.grid)} x patch "
                    f"{format_pair(emb.patch)}) is not a multiple of the new patch size {patch}; pass --image-size "
                    f"(e.g. {size - size % patch} or {size - size % patch + patch})")
    new_grid = new_grid_for(replace(emb, patch=new_patch), image_size, ckpt.path)
    new = None
    if compute:
        try:
            new = resample_patch_embed(kernel, new_patch)
        except ValueError as exc:
            raise CheckpointError(f"{ckpt.path}: {key_name(emb.patch_key)}: {exc}") from None
    return new_grid, Change(emb.patch_key, tuple(kernel.shape), (*kernel.shape[:2], *new_patch), new)


def _patch_suffix(family: str) -> str:
    base = {"mae": "timm", "dinov2": "timm", "dinov2-reg": "timm", "hf-dinov2": "hf", "hf-dinov2-reg": "hf"}.get(family, family)
    return FAMILY_BY_NAME[base].patch_suffix if base in FAMILY_BY_NAME else "?"
