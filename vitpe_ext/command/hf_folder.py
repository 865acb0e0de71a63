"""`vitpe resize` and `vitpe inspect` on a Hugging Face model folder: a
directory with config.json and the weights save_pretrained writes
(model.safetensors, or shards listed in model.safetensors.index.json, and/or
pytorch_model.bin the same ways).

resize writes a NEW folder that transformers loads and runs at the new size
without interpolate_pos_encoding: the position table resized (and the patch
kernel resampled for --patch-size) in every weights file that holds it, the
resize record kept where the existing machinery keeps it (records.py),
config.json's image_size/patch_size set, the image processor's output size
set, and every other file copied. The folder is built beside OUT and moved
into place whole (atomic.write_folder_atomic): a failure or a signal leaves
no OUT, or the old one with --force. Whatever cannot be rewritten correctly
(a model type vitpe does not know, a config that disagrees with the weights,
a size the model cannot state) is refused before anything is written.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .atomic import TMP_SUFFIX, OutputError, check_output_folder, sweep_stale_temps, write_folder_atomic
from .checkpoint import (Checkpoint, CheckpointError, Embedding, Pair, format_pair, load_checkpoint, recipe_defaults,
                         save_checkpoint)
from . import hf_beit
from .hf_config import CONFIG_NAME, PROCESSOR_NAMES, ModelConfig, json_text, read_config, read_json, updated_processor
from .records import method_from_record, mismatch_warning, step_for, store_records, table_record
from .resizing import Change, method_from_args, method_given, plan_patch, plan_resize

# save_pretrained's names: one file (with an optional variant, model.fp16.safetensors) or an index of shards
_WEIGHTS = re.compile(r"^(model|pytorch_model)(\.[\w-]+)?\.(safetensors|bin)$")
_INDEX = re.compile(r"^(model|pytorch_model)\.(safetensors|bin)\.index(\.[\w-]+)?\.json$")
# weights in formats vitpe cannot rewrite: copied, they would hold the old table
_NOT_REWRITTEN = (".h5", ".msgpack", ".onnx", ".onnx_data", ".gguf", ".tflite")
_LAYOUT_OPTIONS = (("key", "--key"), ("prefix_tokens", "--prefix-tokens"), ("old_grid", "--old-grid"),
                  ("grid", "--grid"), ("window", "--window"), ("length", "--length"),
                  ("old_length", "--old-length"))  # a weights file's layout; a folder's is its config.json


def is_model_folder(path: Path) -> bool:
    """A directory with config.json and save_pretrained's weights beside it."""
    if not path.is_dir() or not (path / CONFIG_NAME).is_file():
        return False
    return any(_WEIGHTS.match(name) or _INDEX.match(name) for name in os.listdir(path))


# -- the folder's weights --------------------------------------------------------

@dataclass
class WeightSet:
    """One copy of the weights: a single file, or the shards of an index."""
    name: str                         # the file, or the index file
    files: List[str]                  # the files holding tensors (relative to the folder)
    weight_map: Optional[Dict[str, str]] = None
    index: Optional[dict] = None      # the index JSON as read

    def file_of(self, key: str) -> Optional[str]:
        if self.weight_map is None:
            return self.files[0]
        return self.weight_map.get(key)


def _safe_name(folder: Path, index: str, name: object) -> str:
    if (not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts):
        raise CheckpointError(f"{folder / index}: weight_map names {name!r}, not a file of this folder")
    if not (folder / name).is_file():
        raise CheckpointError(f"{folder / index}: lists {name}, which is missing from the folder")
    return name


def weight_sets(folder: Path) -> List[WeightSet]:
    """Every copy of the weights in the folder, safetensors first (what transformers loads)."""
    names = sorted(os.listdir(folder))
    sets, sharded = [], set()
    for name in names:
        if _INDEX.match(name):
            index = read_json(folder / name, "weights index")
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{folder / name}: no weight_map; not a transformers weights index")
            files = list(dict.fromkeys(_safe_name(folder, name, f) for f in weight_map.values()))
            sets.append(WeightSet(name, files, weight_map, index))
            sharded.update(files)
    sets += [WeightSet(name, [name]) for name in names
             if _WEIGHTS.match(name) and name not in sharded and (folder / name).is_file()]
    if not sets:
        raise CheckpointError(f"{folder}: no weights file save_pretrained writes (model.safetensors, "
                              f"pytorch_model.bin, or an index of their shards)")
    return sorted(sets, key=lambda s: (".bin" in s.name, s.name))


class _Loaded:
    """The files of one weight set that vitpe reads, each loaded once."""

    def __init__(self, folder: Path, wset: WeightSet):
        self.folder, self.wset, self.files = folder, wset, {}

    def file(self, name: str) -> Checkpoint:
        if name not in self.files:
            self.files[name] = load_checkpoint(self.folder / name)
        return self.files[name]

    def shard(self, key: str) -> Optional[Checkpoint]:
        """The loaded file holding key; None where no file does."""
        name = self.wset.file_of(key)
        ckpt = self.file(name) if name is not None else None
        return ckpt if ckpt is not None and key in ckpt.obj else None

    def keys(self) -> List[str]:
        if self.wset.weight_map is not None:
            return list(self.wset.weight_map)
        return list(self.file(self.wset.files[0]).obj)


def _find_table(cfg: ModelConfig, loaded: _Loaded) -> str:
    keys = loaded.keys()
    found = [k for k in keys if k == cfg.type.table or k.endswith("." + cfg.type.table)]
    where = loaded.folder / loaded.wset.name
    if len(found) != 1:
        what = "no key" if not found else f"{len(found)} keys ({', '.join(found)})"
        raise CheckpointError(f"{where}: {what} ending in {cfg.type.table}, where a {cfg.type.name} model keeps "
                              f"its position table; config.json and the weights do not belong together")
    return found[0]


@dataclass
class SetPlan:
    """What one weight set becomes: the changed tensors, by file."""
    wset: WeightSet
    emb: Optional[Embedding]      # None: a BEiT without an absolute table
    table_file: Optional[str]
    shards: Dict[str, Checkpoint] = field(default_factory=dict)  # the loaded files (changed ones rewritten)
    changes: List[Change] = field(default_factory=list)
    drops: List[Tuple[str, int]] = field(default_factory=list)  # (key, bytes): BEiT's stale index buffers
    new_grid: Pair = (0, 0)
    new_patch: Pair = (0, 0)


def _layout(cfg: ModelConfig, loaded: _Loaded) -> Tuple[Embedding, Checkpoint, Checkpoint]:
    """The table's Embedding, its file's Checkpoint and a view over every file
    it needs (table, kernel, position_ids may lie in different shards)."""
    key = _find_table(cfg, loaded)
    model_prefix = key[: len(key) - len(cfg.type.table)]
    table_ckpt = loaded.shard(key)
    if table_ckpt is None:
        raise CheckpointError(f"{loaded.folder / loaded.wset.name}: lists {key} in {loaded.wset.file_of(key)}, "
                              f"which does not hold it")
    view = {}
    kernel_key = model_prefix + cfg.type.kernel
    ids_key = model_prefix + cfg.type.ids if cfg.type.ids else None
    for extra in (kernel_key, ids_key):
        shard = loaded.shard(extra) if extra else None
        if shard is not None:
            view[extra] = shard.obj[extra]
    view[key] = table_ckpt.obj[key]
    table, name = view[key], f"{table_ckpt.path}: {key}"
    dims = 2 if cfg.type.recipe.embedding else 3  # nn.Embedding weight (tokens, dim); nn.Parameter (1, tokens, dim)
    if table.dim() != dims or (dims == 3 and table.shape[0] != 1) or not table.is_floating_point():
        raise CheckpointError(f"{name} is {tuple(table.shape)} {str(table.dtype).replace('torch.', '')}, not the "
                              f"floating-point {'(tokens, dim)' if dims == 2 else '(1, tokens, dim)'} table of a "
                              f"{cfg.type.name} model")
    prefix, grid = cfg.type.prefix_tokens, cfg.grid
    tokens, want = table.shape[-2], cfg.type.prefix_tokens + grid[0] * grid[1]
    if tokens != want:
        raise CheckpointError(f"{cfg.path}: image {format_pair(cfg.image)} and patch {format_pair(cfg.patch)} make "
                              f"a {format_pair(grid)} grid, {want} tokens with {prefix} prefix, but {name} has "
                              f"{tokens}; config.json and the weights disagree")
    kernel = view.get(kernel_key)
    if kernel is None:
        raise CheckpointError(f"{table_ckpt.path}: no {kernel_key}, the patch embedding of a {cfg.type.name} model")
    if kernel.dim() != 4 or tuple(kernel.shape[-2:]) != cfg.patch or kernel.shape[0] != table.shape[-1]:
        raise CheckpointError(f"{cfg.path}: patch {format_pair(cfg.patch)} and a {table.shape[-1]}-wide table, "
                              f"but {kernel_key} is {tuple(kernel.shape)}; config.json and the weights disagree")
    extras = [(ids_key,)] if ids_key in view and view[ids_key].shape[-1] == tokens else []
    profile, settings = recipe_defaults(cfg.type.recipe)
    emb = Embedding((key,), f"hf-{cfg.type.name}", profile, tuple(table.shape), table.dtype, prefix,
                    grid, cfg.patch, (kernel_key,), extras, settings)
    return emb, table_ckpt, Checkpoint(table_ckpt.path, table_ckpt.format, view, table_ckpt.metadata)


def _note(line: str) -> None:
    print(f"vitpe resize: note: {line}", file=sys.stderr)


def _plan_set(cfg: ModelConfig, folder: Path, wset: WeightSet, args, log: Callable[[str], None]) -> SetPlan:
    """Every check first, as resize_file does; the tables only when not a dry run."""
    loaded = _Loaded(folder, wset)
    if getattr(args, "rel_pos", None) is not None:
        raise CheckpointError(f"{cfg.path}: --rel-pos is for timm checkpoints; a {cfg.type.name} model folder's "
                              f"tables are resized as transformers resizes them at another size (evenly, "
                              f"bilinear), which from_pretrained at the new size reproduces")
    if cfg.type.rel_pos and args.patch_size is not None:
        raise CheckpointError(f"{cfg.path}: --patch-size with a {cfg.type.name} model is not supported (its "
                              f"relative-position-bias window is the patch grid); resize the image size alone "
                              f"(--image-size)")
    if cfg.has_absolute:
        plan = _plan_absolute(cfg, loaded, args, log)
    else:
        stray = [k for k in loaded.keys() if k == cfg.type.table or k.endswith("." + cfg.type.table)]
        if stray:
            raise CheckpointError(f"{cfg.path}: {cfg.type.absolute_flag} is not true but {folder / wset.name} "
                                  f"holds {stray[0]}; config.json and the weights disagree")
        grid = hf_beit.new_grid(cfg, args.image_size)
        cfg.check_target((grid[0] * cfg.patch[0], grid[1] * cfg.patch[1]), cfg.patch,
                         f"--image-size {format_pair(args.image_size)}")
        plan = SetPlan(wset, None, None, loaded.files, new_grid=grid, new_patch=cfg.patch)
    if cfg.type.rel_pos:
        changes, plan.drops = hf_beit.plan_tables(cfg, loaded, plan.new_grid, args,
                                                  lambda line: log(f"{folder / wset.name}: {line}"))
        plan.changes += changes
    return plan


def _plan_absolute(cfg: ModelConfig, loaded: _Loaded, args, log: Callable[[str], None]) -> SetPlan:
    """The absolute table (and the patch kernel, for --patch-size)."""
    wset = loaded.wset
    emb, table_ckpt, view = _layout(cfg, loaded)
    compute = not args.dry_run
    new_grid, kernel = plan_patch(view, emb, args.image_size, args.patch_size, allow_nonfinite=args.allow_nonfinite,
                                  compute=False)
    new_patch = tuple(kernel.new_shape[-2:]) if kernel else cfg.patch
    cfg.check_target((new_grid[0] * new_patch[0], new_grid[1] * new_patch[1]), new_patch,
                     " and ".join(f"--{o.replace('_', '-')} {format_pair(getattr(args, o))}"
                                  for o in ("image_size", "patch_size") if getattr(args, o) is not None))
    plan = SetPlan(wset, emb, table_ckpt.path.name, loaded.files, new_grid=new_grid, new_patch=new_patch)
    if kernel is not None:
        _, kernel = plan_patch(view, emb, args.image_size, args.patch_size, allow_nonfinite=args.allow_nonfinite,
                               compute=compute)
        log(f"{table_ckpt.path}: {kernel.key[0]} {kernel.old_shape} -> {kernel.new_shape}: patch "
            f"{format_pair(cfg.patch)} -> {format_pair(new_patch)} (FlexiViT: pseudo-inverse of bicubic aa)")
    layout = f"prefix {emb.prefix_tokens}, patch {format_pair(new_patch)}, {str(emb.dtype).replace('torch.', '')}"
    if new_grid == emb.grid:
        log(f"{table_ckpt.path}: {emb.name} {emb.shape}: already grid {format_pair(new_grid)} ({layout}); unchanged")
    else:
        record = table_record(table_ckpt, emb, _note)
        method, how = method_from_args(args, emb), ""
        if not method_given(args):
            how = f" (what transformers' {cfg.type.name} interpolate_pos_encoding computes)"
            if record is not None and method_from_record(record) is not None:
                method, how = method_from_record(record), " (as its resize record says)"
        step = step_for(method, emb, new_grid, new_patch)
        warning = mismatch_warning(record, step, emb)
        if warning:
            print(f"vitpe resize: warning: {table_ckpt.path}: {warning}", file=sys.stderr)
        changes = plan_resize(view, emb, new_grid, method, allow_nonfinite=args.allow_nonfinite, compute=compute)
        log(f"{table_ckpt.path}: {emb.name} {emb.shape} -> {changes[0].new_shape}: grid {format_pair(emb.grid)} "
            f"-> {format_pair(new_grid)} ({layout}); {method.label}{how}")
        plan.changes += changes
        if compute:
            store_records(table_ckpt, {emb.key: step}, {emb.key: record},
                          "safetensors" if table_ckpt.format == "safetensors" else "torch")
    if kernel is not None:
        plan.changes.append(kernel)
    return plan


def _apply(plan: SetPlan) -> Dict[str, Checkpoint]:
    """Put the new tensors into their files; the files that changed, by name."""
    changed = {plan.table_file: plan.shards[plan.table_file]} if plan.changes and plan.table_file else {}
    for change in plan.changes:
        name = plan.wset.file_of(change.key[0])
        plan.shards[name].set(change.key, change.new)
        changed[name] = plan.shards[name]
    for key, _ in plan.drops:
        name = plan.wset.file_of(key)
        del plan.shards[name].obj[key]
        changed[name] = plan.shards[name]
    return changed


def _updated_index(plan: SetPlan) -> Optional[dict]:
    """The index with its totals moved by the tensors that changed size."""
    if plan.wset.index is None:
        return None
    index = dict(plan.wset.index)
    metadata = dict(index.get("metadata") or {})
    for change in plan.changes:
        old, new = torch.Size(change.old_shape).numel(), torch.Size(change.new_shape).numel()
        dtype = change.new.dtype
        if isinstance(metadata.get("total_size"), int):
            metadata["total_size"] += (new - old) * dtype.itemsize
        if isinstance(metadata.get("total_parameters"), int) and dtype.is_floating_point:
            metadata["total_parameters"] += new - old
    if plan.drops:
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k not in dict(plan.drops)}
        if isinstance(metadata.get("total_size"), int):
            metadata["total_size"] -= sum(size for _, size in plan.drops)
    if "metadata" in index:
        index["metadata"] = metadata
    return index


# -- the other files -------------------------------------------------------------

def _other_files(folder: Path, skip: set, out: Path, log: Callable[[str], None]) -> List[Path]:
    """Files to copy as they are (relative paths): all but the weights, the
    JSON vitpe rewrites, hidden folders (.git, .cache: they describe the old
    files) and weights in formats vitpe cannot rewrite (stale after a resize)."""
    out = out.resolve()
    found, left = [], []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for name in sorted(dirs):
            path = here / name
            if name.startswith(".") or path.resolve() == out or path.is_symlink():
                dirs.remove(name)
                if path.resolve() != out and not name.endswith(TMP_SUFFIX):
                    left.append(f"{path.relative_to(folder)}/")
        for name in sorted(files):
            rel = (here / name).relative_to(folder)
            if str(rel) in skip or name.endswith(TMP_SUFFIX):
                continue
            if name.lower().endswith(_NOT_REWRITTEN):
                left.append(f"{rel} (weights in a format vitpe does not rewrite: they would hold the old table)")
                continue
            found.append(rel)
    if left:
        log(f"not copied: {', '.join(left)}")
    return found


def _copy(src: Path, dst: Path) -> None:
    """src's bytes (through links: a hub cache's snapshot is links) into a new dst, synced."""
    try:
        f = open(src, "rb")
    except OSError as exc:
        raise CheckpointError(f"{src}: cannot read it ({exc.strerror})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with f, open(dst, "xb") as g:
        shutil.copyfileobj(f, g, 1 << 20)
        g.flush()
        os.fsync(g.fileno())


def _write_text(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# -- resize ----------------------------------------------------------------------

def _refuse_layout_options(args, command: str) -> None:
    given = [flag for name, flag in _LAYOUT_OPTIONS if getattr(args, name, None) is not None]
    if command == "inspect" and args.patch_size is not None:
        given.append("--patch-size")
    if given:
        raise CheckpointError(f"{', '.join(given)}: a model folder's layout is its config.json's; these options are "
                              f"for a weights file (give the file itself to use them)")


def _check_out(src: Path, out: Path, force: bool, dry_run: bool) -> None:
    try:
        same = out.resolve() == src.resolve() or (out.exists() and os.path.samefile(src, out))
    except OSError:
        same = False
    if same:
        raise CheckpointError(f"{out}: is the input folder; write the new model folder to another path")
    if force and src.resolve().is_relative_to(out.resolve()):
        raise CheckpointError(f"{out}: holds the input folder {src}; replacing it would delete the input")
    if check_output_folder(out, force, need_folder=not dry_run) and not (out / CONFIG_NAME).is_file():
        raise OutputError(f"{out}: exists and is not a model folder (no {CONFIG_NAME}); vitpe replaces only a model "
                          f"folder, not even with --force: remove it or choose another OUT")


def resize_model_folder(src: Path, out: Path, args) -> int:
    """`vitpe resize` on a model folder; raises CheckpointError/OutputError (one line) on bad input."""
    _refuse_layout_options(args, "resize")
    cfg = read_config(src / CONFIG_NAME)
    _check_out(src, out, args.force, args.dry_run)
    sets = weight_sets(src)
    log = print
    log(f"{src}: {cfg.describe()}")
    plans = [_plan_set(cfg, src, wset, args, log) for wset in sets]
    grids = {(p.new_grid, p.new_patch) for p in plans}
    assert len(grids) == 1  # every weight set is checked against the same config
    new_grid, new_patch = grids.pop()
    image = (new_grid[0] * new_patch[0], new_grid[1] * new_patch[1])
    if new_grid == cfg.grid and new_patch == cfg.patch:
        image = cfg.image  # unchanged: keep even an image_size that is not a multiple of the patch
    config, config_changes = cfg.updated(image, new_patch)
    log(f"{CONFIG_NAME}: {', '.join(config_changes)}" if config_changes else f"{CONFIG_NAME}: unchanged")
    processors = {}
    for name in PROCESSOR_NAMES:
        if (src / name).is_file():
            data, lines = updated_processor(read_json(src / name, "processor config"), image)
            if data is not None:
                processors[name] = data
            if lines:
                log(f"{name}: {', '.join(lines)}")
    skip = {CONFIG_NAME, *processors} | {s.name for s in sets} | {f for s in sets for f in s.files}
    others = _other_files(src, skip, out, log)
    if args.dry_run:
        log(f"dry run: would write {out} ({len(sets)} weight set{'s' * (len(sets) > 1)}, "
            f"{len(others)} other file{'s' * (len(others) != 1)} copied)")
        return 0

    def fill(tmp: Path) -> None:
        for plan in plans:
            changed = _apply(plan)
            for name in plan.wset.files:
                if name in changed:
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    save_checkpoint(changed[name], tmp / name)
                else:
                    _copy(src / name, tmp / name)
            index = _updated_index(plan)
            if index is not None:
                _write_text(tmp / plan.wset.name, json_text(index))
        _write_text(tmp / CONFIG_NAME, json_text(config))
        for name, data in processors.items():
            _write_text(tmp / name, json_text(data))
        for rel in others:
            _copy(src / rel, tmp / rel)

    for line in sweep_stale_temps(out.parent):
        _note(line)
    write_folder_atomic(out, fill, overwrite=args.force)
    log(f"wrote {out} ({', '.join(s.name for s in sets)}, {CONFIG_NAME}"
        + "".join(f", {n}" for n in processors) + f", {len(others)} other file{'s' * (len(others) != 1)})")
    return 0


# -- inspect ---------------------------------------------------------------------

def inspect_model_folder(path: Path, args) -> Tuple[Checkpoint, List[Embedding]]:
    """The model line, then what `vitpe inspect` shows of a file: the table of
    the weights transformers loads (safetensors before .bin)."""
    _refuse_layout_options(args, "inspect")
    cfg = read_config(path / CONFIG_NAME)
    sets = weight_sets(path)
    print(f"{path}: {cfg.describe()}; weights: {', '.join(s.name for s in sets)}")
    loaded = _Loaded(path, sets[0])
    if cfg.type.rel_pos:
        for line in hf_beit.inspect_lines(cfg, loaded):
            print(line)
    if not cfg.has_absolute:
        return loaded.file(sets[0].files[0]), []
    emb, table_ckpt, _ = _layout(cfg, loaded)
    return table_ckpt, [emb]
