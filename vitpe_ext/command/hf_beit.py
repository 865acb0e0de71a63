"""The relative-position-bias tables of a Hugging Face BEiT or Data2VecVision
model folder, for `vitpe resize` and `vitpe inspect` (hf_folder.py does the
rest of the folder).

Each table is ((2Wh-1)(2Ww-1) + 3, heads): the offsets of the patch grid
(the window is the grid, image // patch) and, at the END, the class-to-token,
token-to-class and class-to-class biases. It is per layer, shared, or both:

    as saved    [beit.]encoder.layer.{i}.attention.attention.relative_position_bias.relative_position_bias_table
                [beit.]encoder.relative_position_bias.relative_position_bias_table
    BEiT's modules in transformers 5
                beit.layers.{i}.relative_position_bias.relative_position_bias_table
                beit.shared_position_bias.relative_position_bias_table

save_pretrained writes the first names (transformers 5 maps BEiT's to its
modules when loading); a file with the second loads too. Both are resized
where they are. What a resized table must be: at any input
size BeitRelativePositionBias.forward resizes the offset sub-table from the
config's window to the input's with F.interpolate(mode="bilinear",
align_corners=False), no antialias, in the table's dtype, and appends the 3
rows unchanged (interpolate_pos_encoding=True then only resizes the bias to
the token count it already has: an identity). The op's bilinear with the 3
rows as suffix tokens is that (the old model at the new size and the resized
one at its size agree to float32 rounding); at its own window the model's
resize is the identity, so the resized table is used as it is.

Older files also hold relative_position_index buffers at the old window;
transformers ignores them (_keys_to_ignore_on_load_unexpected) and builds the
index for each input, so they are dropped rather than left stale.
"""
from __future__ import annotations

import re
from typing import Callable, List, Tuple

import torch

from ..integrations.rel_pos import resize_rel_pos_bias
from .checkpoint import CheckpointError, Pair, format_pair, nonfinite_summary
from .hf_config import ModelConfig
from .resizing import Change, check_fits

TABLE = "relative_position_bias_table"
INDEX = "relative_position_index"
EXTRA = 3  # BEiT's class-token biases, after the offset grid
_PER_LAYER = re.compile(r"\.(layers?)\.\d+\.")  # a layer's own table; otherwise the shared one
# what BeitRelativePositionBias.forward calls (module docstring)
HF_SETTINGS = {"mode": "bilinear", "align_corners": False, "antialias": False}


def table_keys(keys: List[str]) -> List[str]:
    return [k for k in keys if k == TABLE or k.endswith("." + TABLE)]


def index_keys(keys: List[str]) -> List[str]:
    return [k for k in keys if k == INDEX or k.endswith("." + INDEX)]


def _check_flags(cfg: ModelConfig, tables: List[str], where) -> None:
    """The config's switches and the weights must agree: transformers would otherwise build the
    model without a table the weights hold (unexpected key) or with one they lack (a zero init)."""
    for flag, shared in (("use_relative_position_bias", False), ("use_shared_relative_position_bias", True)):
        found = [k for k in tables if (_PER_LAYER.search("." + k) is None) == shared]
        if bool(cfg.data.get(flag)) != bool(found):
            held = f"holds {found[0]}" if found else "holds no such table"
            raise CheckpointError(f"{cfg.path}: {flag} is {bool(cfg.data.get(flag))} but {where} {held}; "
                                  f"config.json and the weights disagree")


def new_grid(cfg: ModelConfig, image_size: Pair) -> Pair:
    """The patch grid (= the window) at image_size, refusing a size that is not a multiple of the patch."""
    for axis, size, patch in (("height", image_size[0], cfg.patch[0]), ("width", image_size[1], cfg.patch[1])):
        if size % patch:
            down = size - size % patch
            raise CheckpointError(f"{cfg.path}: image {axis} {size} is not a multiple of the patch size {patch}; "
                                  f"choose {down} or {down + patch}")
    return image_size[0] // cfg.patch[0], image_size[1] // cfg.patch[1]


def plan_tables(cfg: ModelConfig, loaded, grid: Pair, args, log: Callable[[str], None]
                ) -> Tuple[List[Change], List[Tuple[str, int]]]:
    """(the resized tables, the index buffers to drop with their sizes in bytes). Every check
    runs before any table is computed; --mode/--align-corners/--antialias replace HF's bilinear."""
    keys = loaded.keys()
    where = loaded.folder / loaded.wset.name
    tables = table_keys(keys)
    _check_flags(cfg, tables, where)
    old = cfg.grid
    rows = (2 * old[0] - 1) * (2 * old[1] - 1) + EXTRA
    values = {}
    for key in tables:
        shard = loaded.shard(key)
        if shard is None:
            raise CheckpointError(f"{where}: lists {key} in {loaded.wset.file_of(key)}, which does not hold it")
        value = shard.obj[key]
        if value.dim() != 2 or value.shape[0] != rows or not value.is_floating_point():
            raise CheckpointError(f"{cfg.path}: a {format_pair(old)} grid makes ({rows}, heads) bias tables "
                                  f"((2*{old[0]}-1)*(2*{old[1]}-1) + {EXTRA}), but {shard.path.name}: {key} is "
                                  f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}; config.json and "
                                  f"the weights disagree")
        bad = nonfinite_summary(value, 0)
        if bad and not args.allow_nonfinite:
            raise CheckpointError(f"{shard.path}: {key} has non-finite values ({bad.replace('token', 'offset row')}); "
                                  f"interpolation would spread them; fix the checkpoint (or pass --allow-nonfinite)")
        values[key] = value
    given = {k: getattr(args, k) for k in HF_SETTINGS if getattr(args, k) is not None}
    settings = {**HF_SETTINGS, **given} if "mode" not in given else {"antialias": None, "align_corners": None, **given}
    how = "as given" if given else "what transformers' BeitRelativePositionBias computes"
    changes = []
    for key, value in values.items():
        if grid == old:
            log(f"{key} {tuple(value.shape)}: already window {format_pair(grid)}; unchanged")
            continue
        shape = ((2 * grid[0] - 1) * (2 * grid[1] - 1) + EXTRA, value.shape[1])
        check_fits(shape, value.dtype, f"{where}: {key}: the resized table")
        resized = None
        if not args.dry_run:
            try:
                resized = resize_rel_pos_bias(value, old, grid, num_extra_tokens=EXTRA, **settings)
            except ValueError as exc:  # the op's argument checks (a mode it refuses, ...)
                raise CheckpointError(f"{where}: {key}: {str(exc).splitlines()[0]}") from None
        log(f"{key} {tuple(value.shape)} -> {shape}: window {format_pair(old)} -> {format_pair(grid)} "
            f"({settings['mode']} of the offset grid, {EXTRA} class rows copied; {how})")
        changes.append(Change((key,), tuple(value.shape), shape, resized))
    drops = []
    for key in index_keys(keys):
        shard = loaded.shard(key)
        if shard is not None:
            drops.append((key, shard.obj[key].numel() * shard.obj[key].element_size()))
    if drops:
        log(f"{len(drops)} {INDEX} buffers dropped (transformers ignores them and builds the index for each "
            f"input; they hold the old window)")
    return changes, drops


def inspect_lines(cfg: ModelConfig, loaded) -> List[str]:
    rows = []
    for key in table_keys(loaded.keys()):
        shard = loaded.shard(key)
        value = shard.obj[key] if shard is not None else None
        if value is None:
            continue
        rows.append(f"{key}: beit relative-position-bias table {tuple(value.shape)} "
                    f"{str(value.dtype).replace('torch.', '')}, window {format_pair(cfg.grid)}, "
                    f"{value.shape[-1]} heads, {EXTRA} extra rows")
    return rows
