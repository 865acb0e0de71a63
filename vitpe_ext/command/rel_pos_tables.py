"""Relative-position-bias tables in timm checkpoints, for `vitpe resize` and
`vitpe inspect`: find them, work out each one's new attention window, resize it,
and drop the index buffers that timm rebuilds itself.

    Swin v1  layers.{i}.blocks.{j}.attn.relative_position_bias_table  (2W-1)^2 x heads
    BEiT     blocks.{j}.attn.relative_position_bias_table             (2G-1)^2 + 3 x heads
             rel_pos_bias.relative_position_bias_table (shared)       the same
    EVA      blocks.{j}.attn.rel_pos.relative_position_bias_table     the same (timm's RelPosBias with a
             class token: BEiT's layout, so BEiT's rules apply)

BEiT's window is its patch grid (image / patch), so --image-size alone sets
it. Swin's window is a model setting (timm's window_size=), given with
--window (default: the checkpoint's own); timm clamps it per stage to the
stage's feature map, so each stage's window also depends on --image-size.

The resize (--rel-pos) is by default timm's own: resize_rel_pos_bias_table,
BEiT's geometric-progression offsets read bilinearly, which the Swin and BEiT
checkpoint_filter_fn run when they load a table at another window, so the
output is what timm would have made of the original (to float32 rounding).
--rel-pos even is the op's evenly spaced per-axis resize of the (2W-1) x
(2W-1) offset grid with the command's --mode (bicubic by default: timm's
_simple); README, "Relative-position-bias tables", measures the difference.

timm's checkpoint_filter_fn for both families drops every
relative_position_index buffer (and Swin's attn_mask): timm >= 0.9 keeps them
non-persistent and rebuilds them for its window, so a state dict holding them
fails load_state_dict(strict=True). This module drops them the same way.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from ..integrations.rel_pos import resize_rel_pos_bias, resize_rel_pos_bias_table
from .checkpoint import Checkpoint, CheckpointError, Key, find_embedding_keys, Pair, format_pair, key_name, nonfinite_summary
from .resizing import Change, check_fits

TABLE = "relative_position_bias_table"
# Swin first: its keys also end in "blocks.{j}.attn.relative_position_bias_table"
SWIN = re.compile(r"^(?P<prefix>.*?)layers\.(?P<layer>\d+)\.blocks\.\d+\.attn\." + TABLE + "$")
BEIT = re.compile(r"^(?P<prefix>.*?)(?:blocks\.\d+\.attn\.(?P<module>rel_pos\.)?|rel_pos_bias\.)" + TABLE + "$")
ROPE = re.compile(r"(?:^|\.)rope\w*\.")  # a rotary embedding's module: rope., rope_embed., ...
BEIT_EXTRA = 3  # BEiT's class-to-token, token-to-class and class-to-class biases, after the grid


@dataclass
class RelPosTable:
    key: Key
    family: str              # 'swin' or 'beit'
    model_prefix: str        # e.g. 'module.' before the model's own key names
    layer: Optional[int]     # Swin: the stage index
    window: Pair             # the current attention window (from the table's shape)
    heads: int
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return key_name(self.key)

    @property
    def extra(self) -> int:
        return BEIT_EXTRA if self.family == "beit" else 0


def _square_window(rows: int) -> Optional[int]:
    """W for a (2W-1)^2-row offset grid, else None."""
    side = math.isqrt(rows) if rows > 0 else 0
    return (side + 1) // 2 if side * side == rows and side % 2 == 1 else None


def _unknown(ckpt: Checkpoint, key: Key) -> CheckpointError:
    return CheckpointError(f"{ckpt.path}: {key_name(key)}: a relative-position-bias table that vitpe resize "
                           f"does not know (it knows timm's Swin v1 layers.*.blocks.*.attn.{TABLE} and "
                           f"BEiT blocks.*.attn./rel_pos_bias.{TABLE}); resize it in Python with "
                           f"vitpe_ext.resize_rel_pos_bias")


def find_rel_pos_tables(ckpt: Checkpoint) -> List[RelPosTable]:
    """Every Swin-v1/BEiT relative-position-bias table; refuses one of a layout it does not know
    (resizing the rest would leave that one at the old window)."""
    tables = []
    for key, value in ckpt.items():
        name = key[-1]
        if not isinstance(name, str) or not name.endswith(TABLE):
            continue
        match, family = SWIN.match(name), "swin"
        if match is None:
            match, family = BEIT.match(name), "beit"
        if match is None:
            raise _unknown(ckpt, key)
        extra = BEIT_EXTRA if family == "beit" else 0
        window = _square_window(value.shape[0] - extra) if value.dim() == 2 else None
        if family == "beit" and match["module"] and window is None:
            # timm's RelPosBias is also GCViT's, whose window is a model setting, not the patch grid:
            # only the class-token layout (3 extra rows) is EVA's
            raise _unknown(ckpt, key)
        if window is None or not value.is_floating_point():
            want = "(2W-1)^2 + 3" if extra else "(2W-1)^2"
            raise CheckpointError(f"{ckpt.path}: {key_name(key)} has shape {tuple(value.shape)} "
                                  f"{str(value.dtype).replace('torch.', '')}, not a {family} table of "
                                  f"{want} rows x heads (floating point)")
        layer = int(match["layer"]) if family == "swin" else None
        tables.append(RelPosTable(key, family, match["prefix"], layer, (window, window), value.shape[1], value.dtype))
    return tables


def continuous_bias_key(ckpt: Checkpoint) -> Optional[str]:
    """A Swin-v2 continuous-position-bias MLP's key, if the checkpoint has one."""
    for key, _ in ckpt.items():
        if isinstance(key[-1], str) and ".attn.cpb_mlp." in key[-1]:
            return key_name(key)
    return None


def rope_key(ckpt: Checkpoint) -> Optional[str]:
    """A rotary embedding's stored key (EVA-02 rope.freqs_cos, a RoPE-mixed rope.freqs, ...), if any."""
    for key, _ in ckpt.items():
        if isinstance(key[-1], str) and ROPE.search(key[-1]):
            return key_name(key)
    return None


def refuse_tableless(ckpt: Checkpoint) -> None:
    """Where a checkpoint has no absolute table either, say why there is nothing to resize:
    its positions are computed for any grid (Swin v2's bias MLP, RoPE)."""
    if find_embedding_keys(ckpt):
        return
    refuse_continuous_bias(ckpt)
    name = rope_key(ckpt)
    if name is not None:
        raise CheckpointError(f"{ckpt.path}: {name}: a rotary position embedding (RoPE, as EVA-02's) is computed "
                              f"for any grid, not a table: there is nothing to resize; create the model with the "
                              f"new img_size and load the checkpoint as it is (timm's checkpoint_filter_fn drops "
                              f"stored rope buffers)")


def refuse_continuous_bias(ckpt: Checkpoint) -> None:
    """Where a checkpoint has no absolute table either, say why there is nothing to resize."""
    name = continuous_bias_key(ckpt)
    if name is not None and not find_embedding_keys(ckpt):
        raise CheckpointError(f"{ckpt.path}: {name}: Swin-v2's continuous position bias is an MLP of the "
                              f"log-spaced offsets, not a table: there is nothing to resize; timm builds it for "
                              f"any window (create the model with the new img_size/window_size and load the "
                              f"checkpoint as it is)")


def _patch(ckpt: Checkpoint, table: RelPosTable) -> Pair:
    container = ckpt.container(table.key)
    weight = container.get(table.model_prefix + "patch_embed.proj.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise CheckpointError(f"{ckpt.path}: no patch-embedding kernel {table.model_prefix}patch_embed.proj.weight "
                              f"(out, in, ph, pw) beside {table.name}; the new window comes from the patch grid")
    return int(weight.shape[-2]), int(weight.shape[-1])


def _grid(ckpt: Checkpoint, table: RelPosTable, image_size: Pair) -> Pair:
    patch = _patch(ckpt, table)
    for axis, size, p in (("height", image_size[0], patch[0]), ("width", image_size[1], patch[1])):
        if size % p:
            raise CheckpointError(f"{ckpt.path}: image {axis} {size} is not a multiple of the patch size {p} of "
                                  f"{table.model_prefix}patch_embed.proj.weight; choose {size - size % p} or "
                                  f"{size - size % p + p}")
    return image_size[0] // patch[0], image_size[1] // patch[1]


def _swin_stage_size(ckpt: Checkpoint, table: RelPosTable, grid: Pair) -> Pair:
    """The feature map of table's stage: the patch grid halved (rounding up, as PatchMerging pads)
    once per downsample before that stage's blocks. timm puts downsample at a stage's start; the
    original checkpoints at its end (timm's filter tells them apart by layers.0.downsample)."""
    container = ckpt.container(table.key)
    has_down = lambda i: any(isinstance(k, str) and k.startswith(f"{table.model_prefix}layers.{i}.downsample.")  # noqa: E731
                             for k in container)
    at_end = has_down(0)
    halvings = sum(has_down(i) for i in (range(table.layer) if at_end else range(table.layer + 1)))
    return tuple(-(-g // (1 << halvings)) for g in grid)  # type: ignore[return-value]


def new_windows(ckpt: Checkpoint, tables: List[RelPosTable], image_size: Optional[Pair],
                window: Optional[Pair]) -> List[Pair]:
    """Each table's new window. BEiT: the new patch grid. Swin: --window (default: the largest
    window in the checkpoint, i.e. its window_size=) clamped per axis to the stage's feature map,
    as timm's SwinTransformerBlock._calc_window_shift does (always_partition=False, the default)."""
    families = {t.family for t in tables}
    if window is not None and "beit" in families:
        raise CheckpointError(f"{ckpt.path}: --window: BEiT's attention window is its patch grid (image / patch); "
                              f"give --image-size only")
    if image_size is None:
        raise CheckpointError(f"{ckpt.path}: has relative-position-bias tables ({tables[0].name}, ...), whose window "
                              f"follows the image size: give --image-size (a new patch size alone is not supported "
                              f"for them)")
    target = window
    if target is None:
        swin = [t.window for t in tables if t.family == "swin"]
        target = (max(w[0] for w in swin), max(w[1] for w in swin)) if swin else None
    out = []
    for table in tables:
        grid = _grid(ckpt, table, image_size)
        if table.family == "beit":
            out.append(grid)
        else:
            stage = _swin_stage_size(ckpt, table, grid)
            out.append((min(stage[0], target[0]), min(stage[1], target[1])))
    return out


def plan_rel_pos(ckpt: Checkpoint, tables: List[RelPosTable], image_size: Optional[Pair], window: Optional[Pair],
                 settings: Optional[dict], allow_nonfinite: bool, compute: bool, log: Callable[[str], None]
                 ) -> Tuple[List[Change], List[Key]]:
    """(the tables to replace, the buffers to drop). settings None: timm's recipe
    (resize_rel_pos_bias_table, what its checkpoint_filter_fn runs); else the
    op's settings for an even per-axis resize. Every check runs before any
    table is computed."""
    windows = new_windows(ckpt, tables, image_size, window)
    for table in tables:
        bad = nonfinite_summary(ckpt.get(table.key), 0)
        if bad and not allow_nonfinite:
            raise CheckpointError(f"{ckpt.path}: {table.name} has non-finite values "
                                  f"({bad.replace('token', 'offset row')}); interpolation would spread them; fix "
                                  f"the checkpoint (or pass --allow-nonfinite)")
    changes = []
    for table, new in zip(tables, windows):
        old_shape = tuple(ckpt.get(table.key).shape)
        if new == table.window:
            log(f"{ckpt.path}: {table.name} {old_shape}: already window {format_pair(new)}; unchanged")
            continue
        shape = ((2 * new[0] - 1) * (2 * new[1] - 1) + table.extra, table.heads)
        check_fits(shape, table.dtype, f"{ckpt.path}: {table.name}: the resized table")
        resized = None
        if compute:
            try:
                resized = (resize_rel_pos_bias_table(ckpt.get(table.key), new, shape, old_window_size=table.window)
                           if settings is None else
                           resize_rel_pos_bias(ckpt.get(table.key), table.window, new,
                                               num_extra_tokens=table.extra, **settings))
            except ValueError as exc:  # the op's argument checks (a mode it refuses, ...)
                raise CheckpointError(f"{ckpt.path}: {table.name}: {str(exc).splitlines()[0]}") from None
        extra = f", {table.extra} extra rows copied" if table.extra else ""
        how = ("timm's geometric-progression resize, as its checkpoint_filter_fn" if settings is None
               else f"per-axis {settings.get('mode') or 'bicubic'} of the offset grid")
        log(f"{ckpt.path}: {table.name} {old_shape} -> {shape}: {table.family} window {format_pair(table.window)} "
            f"-> {format_pair(new)} ({how}{extra})")
        changes.append(Change(table.key, old_shape, shape, resized))
    # timm's checkpoint_filter_fn drops these for both families (and attn_mask for Swin), whatever the window
    drops = []
    containers = {id(ckpt.container(t.key)): t.key[:-1] for t in tables}
    for path in containers.values():
        container = ckpt.get(path)
        for name in container:
            if isinstance(name, str) and ("relative_position_index" in name or name.endswith(".attn_mask")):
                drops.append(path + (name,))
    if drops:
        log(f"{ckpt.path}: {len(drops)} relative_position_index/attn_mask buffers dropped (timm rebuilds them for "
            f"its window; its checkpoint_filter_fn drops them too)")
    return changes, drops


def inspect_lines(ckpt: Checkpoint, tables: List[RelPosTable]) -> List[str]:
    rows = []
    for table in tables:
        container = ckpt.container(table.key)
        index = table.key[-1][: -len(TABLE)] + "relative_position_index"
        rows.append(f"{table.name}: {table.family} relative-position-bias table "
                    f"{tuple(ckpt.get(table.key).shape)} {str(table.dtype).replace('torch.', '')}, window "
                    f"{format_pair(table.window)}, {table.heads} heads"
                    + (f", {table.extra} extra rows" if table.extra else "")
                    + (", relative_position_index stored" if index in container else ""))
    return rows
