"""`vitpe resize`: a checkpoint file, or a folder of them, to a new grid
(cli.py parses the command line; hf_folder.py takes Hugging Face model
folders). Every check runs before anything is written; the output is
written atomically."""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Set

from .atomic import check_output, sweep_stale_temps, write_atomic
from .checkpoint import (CHECKPOINT_SUFFIXES, Checkpoint, CheckpointError, NoEmbeddingKey, check_storable, format_pair,
                         key_name, load_checkpoint, output_format, save_checkpoint)
from ..integrations.provenance import RECORD_KEY
from .records import method_from_record, mismatch_warning, step_for, store_records, table_record
from .rel_pos_tables import find_rel_pos_tables, plan_rel_pos, refuse_tableless
from .resizing import method_from_args, method_given, plan_patch, plan_resize
from .options import USER_ERRORS, describe_tables, note, refuse_two_old_grids


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _sweep(folder: Path, swept: Set[Path]) -> None:
    """Report (and remove, when provably stale) temporary files that a killed run left in folder."""
    if folder in swept:
        return
    swept.add(folder)
    for line in sweep_stale_temps(folder):
        note("resize", line)


def resize_file(src: Path, out: Path, args, log=print, swept: Optional[Set[Path]] = None) -> None:
    """Resize one checkpoint file (or only plan it with --dry-run)."""
    if not src.exists():
        raise CheckpointError(f"{src}: no such file")
    if _same_file(src, out):
        raise CheckpointError(f"{out}: is the input file; write the result to another path")
    check_output(out, args.force, need_folder=not args.dry_run)
    fmt = output_format(out)
    ckpt = load_checkpoint(src)
    if args.grid is not None or args.length is not None:
        return _resize_given_grid(ckpt, src, out, fmt, args, log, swept)
    rel_tables = find_rel_pos_tables(ckpt) if not args.key else []
    if not rel_tables and not args.key:
        refuse_tableless(ckpt)  # Swin v2, RoPE: no absolute table and nothing relative to resize
    if args.window is not None and not rel_tables:
        raise CheckpointError(f"{src}: --window sets the attention window of Swin's relative-position-bias "
                              f"tables, and {src} has none")
    if args.rel_pos is not None and not rel_tables:
        raise CheckpointError(f"{src}: --rel-pos chooses how relative-position-bias tables are resized, and {src} "
                              f"has none")
    mode_flags = [flag for flag, value in (("--mode", args.mode), ("--align-corners", args.align_corners),
                                           ("--antialias", args.antialias)) if value is not None]
    if rel_tables and mode_flags and args.rel_pos is None:
        raise CheckpointError(f"{src}: {mode_flags[0]} with relative-position-bias tables ({rel_tables[0].name}, "
                              f"...): timm's recipe for them (--rel-pos timm, the default) is bilinear at fixed "
                              f"offsets; pass --rel-pos even to resize them with {mode_flags[0]}, or --rel-pos timm "
                              f"to apply it to the absolute table alone")
    if rel_tables and args.patch_size is not None:
        raise CheckpointError(f"{src}: --patch-size with relative-position-bias tables ({rel_tables[0].name}, ...) "
                              f"is not supported; resize the image size alone (--image-size)")
    embs = describe_tables(ckpt, args, patch_from_args=False, optional=bool(rel_tables))
    if rel_tables and mode_flags and args.rel_pos == "timm" and not embs:
        raise CheckpointError(f"{src}: {mode_flags[0]} with --rel-pos timm applies to absolute tables, and {src} "
                              f"has none (only relative-position-bias tables); drop it, or pass --rel-pos even")
    check_storable(ckpt, out)
    changes, kernels, steps, records = [], {}, {}, {}
    for emb in embs:
        # --patch-size: a kernel of another size is resampled; without one it is the table's patch size
        new_grid, kernel = plan_patch(ckpt, emb, args.image_size, args.patch_size,
                                      allow_nonfinite=args.allow_nonfinite, compute=not args.dry_run)
        new_patch = tuple(kernel.new_shape[-2:]) if kernel else emb.patch or tuple(args.patch_size)
        if kernel is not None and kernel.key not in kernels:
            kernels[kernel.key] = kernel
            log(f"{src}: {key_name(kernel.key)} {kernel.old_shape} -> {kernel.new_shape}: patch "
                f"{format_pair(emb.patch)} -> {format_pair(new_patch)} (FlexiViT: pseudo-inverse of bicubic aa)")
        emb = replace(emb, patch=emb.patch or new_patch)
        record = table_record(ckpt, emb, lambda line: note("resize", line))
        method, as_recorded = method_from_args(args, emb), ""
        if record is not None and not method_given(args) and method_from_record(record) is not None:
            method, as_recorded = method_from_record(record), " (as its resize record says)"
        layout = (f"prefix {emb.prefix_tokens}, patch {format_pair(new_patch)}, {emb.dtype}".replace("torch.", "")
                  + f", family {emb.family}")
        if new_grid == emb.grid:
            log(f"{src}: {emb.name} {tuple(emb.shape)}: already grid {format_pair(new_grid)} ({layout}); unchanged")
            continue
        step = step_for(method, emb, new_grid, new_patch)
        warning = mismatch_warning(record, step, emb)
        if warning:
            print(f"vitpe resize: warning: {src}: {warning}", file=sys.stderr)
        elif record is not None:
            note("resize", f"{src}: {emb.name} is already a resize of a {format_pair(record.source_grid)} table; "
                            f"each resize interpolates again, so resizing the original to "
                            f"{format_pair(new_grid)} is more exact (the record keeps the chain)")
        planned = plan_resize(ckpt, emb, new_grid, method, allow_nonfinite=args.allow_nonfinite,
                              compute=not args.dry_run)
        log(f"{src}: {emb.name} {tuple(emb.shape)} -> {planned[0].new_shape}: grid "
            f"{format_pair(emb.grid)} -> {format_pair(new_grid)} ({layout}); {method.label}{as_recorded}")
        for change in planned[1:]:
            log(f"{src}: {key_name(change.key)} {change.old_shape} -> {change.new_shape} (arange)")
        changes += planned
        steps[emb.key], records[emb.key] = step, record
        if emb.family.startswith("hf"):
            image = (new_grid[0] * new_patch[0], new_grid[1] * new_patch[1])
            log(f"note: transformers reads the image size from config.json: set \"image_size\": "
                f"{image[0] if image[0] == image[1] else list(image)}"
                + (f" and \"patch_size\": {new_patch[0] if new_patch[0] == new_patch[1] else list(new_patch)}"
                   if kernel else "") + " there")
    changes += kernels.values()
    drops = []
    if rel_tables:
        # the op's settings only: a --profile is an absolute table's library recipe
        settings = ({"mode": args.mode, "align_corners": args.align_corners, "antialias": args.antialias}
                    if args.rel_pos == "even" else None)
        rel_changes, drops = plan_rel_pos(ckpt, rel_tables, args.image_size, args.window, settings,
                                          args.allow_nonfinite, compute=not args.dry_run, log=log)
        changes += rel_changes
    _finish(ckpt, src, out, fmt, args, changes, drops, steps, records, log, swept)


def _resize_given_grid(ckpt: Checkpoint, src: Path, out: Path, fmt: str, args, log, swept) -> None:
    """A video/volume table (prefix + T*H*W tokens) to --grid TxHxW through the op's rank-3 path,
    or a 1-D one (prefix + L tokens) to --length L through its rank-1 path. The arguments were
    checked by _check_grid_args; describe() checks the token count."""
    check_storable(ckpt, out)
    new_grid, changes = (tuple(args.grid) if args.grid is not None else (args.length,)), []
    for emb in describe_tables(ckpt, args, patch_from_args=False):
        method = method_from_args(args, emb)
        layout = f"prefix {emb.prefix_tokens}, {emb.dtype}".replace("torch.", "") + f", family {emb.family}"
        if new_grid == emb.grid:
            log(f"{src}: {emb.name} {tuple(emb.shape)}: already grid {format_pair(new_grid)} ({layout}); unchanged")
            continue
        planned = plan_resize(ckpt, emb, new_grid, method, allow_nonfinite=args.allow_nonfinite,
                              compute=not args.dry_run)
        log(f"{src}: {emb.name} {tuple(emb.shape)} -> {planned[0].new_shape}: grid "
            f"{format_pair(emb.grid)} -> {format_pair(new_grid)} ({layout}); {method.label}")
        changes += planned
    # no resize record: records describe 2-D steps (records.py); the table is resized all the same
    _finish(ckpt, src, out, fmt, args, changes, [], {}, {}, log, swept)


def _finish(ckpt: Checkpoint, src: Path, out: Path, fmt: str, args, changes, drops, steps, records, log,
            swept) -> None:
    """Write the planned changes to OUT atomically (or say what a dry run would write)."""
    source_kind = "safetensors" if ckpt.format == "safetensors" else "torch"
    converted = f", converted from {source_kind}" if fmt != source_kind else ""
    if fmt == "torch" and ckpt.format == "safetensors" and set(ckpt.metadata or {}) - {"format", RECORD_KEY}:
        kept = {RECORD_KEY}  # the resize record moves into the torch file (records.py)
        log(f"note: a torch file has no place for the safetensors metadata of {src} "
            f"({', '.join(k for k in sorted(ckpt.metadata) if k not in kept)}); it is not kept")
    if args.dry_run:
        log(f"dry run: would write {out} ({fmt}{converted})" if changes or drops else
            f"dry run: nothing to change, would copy to {out} ({fmt}{converted})")
        return
    for change in changes:
        ckpt.set(change.key, change.new)
    for key in drops:
        del ckpt.container(key)[key[-1]]
    store_records(ckpt, steps, records, fmt)
    _sweep(out.parent, swept if swept is not None else set())
    save_checkpoint(ckpt, out, overwrite=args.force)
    log(f"wrote {out} ({fmt}{converted})")


class Progress:
    """A plain progress bar on stderr; one line per step when stderr is not a terminal."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        filled = self.width * self.done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _makedirs(path: Path, made: List[Path]) -> None:
    """mkdir -p, remembering the folders it made (to remove them if they stay empty)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir()
        made.append(folder)


def resize_dir(src: Path, out: Path, args) -> int:
    if _same_file(src, out):
        raise CheckpointError(f"{out}: is the input directory; write the results to another directory")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory (IN is a directory, so OUT must be one)")
    out_resolved = out.resolve()
    files = sorted(p for p in src.rglob("*")
                   if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
                   and out_resolved not in p.resolve().parents)
    if not files:
        raise CheckpointError(f"{src}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in this directory")
    made: List[Path] = []
    try:
        return _resize_files(src, out, files, args, made)
    finally:
        for folder in reversed(made):  # never leave an empty OUT behind (all failed, or interrupted)
            if not any(folder.iterdir()):
                folder.rmdir()


def _resize_files(src: Path, out: Path, files: List[Path], args, made: List[Path]) -> int:
    progress = Progress(len(files))
    failed, copied = [], []
    notes: List[str] = []
    swept: Set[Path] = set()
    for path in files:
        target = out / path.relative_to(src)
        try:
            if not args.dry_run:
                _makedirs(target.parent, made)
            try:
                resize_file(path, target, args, log=notes.append, swept=swept)
            except NoEmbeddingKey:
                # e.g. the other shards of a sharded checkpoint: copied unchanged at the end
                copied.append((path, target))
        except USER_ERRORS as exc:
            failed.append(str(exc))
        except OSError as exc:
            failed.append(f"{path}: {exc}")
        progress.step(path.name)
    if len(copied) == len(files):
        raise CheckpointError(f"{src}: none of its {len(files)} checkpoint files has a position-embedding key; "
                              f"pass --key")
    for path, target in copied:
        try:
            if _same_file(path, target):
                raise CheckpointError(f"{target}: is the input file {path}; write the results to another directory")
            if not args.dry_run:
                _sweep(target.parent, swept)
                with open(path, "rb") as f:
                    write_atomic(target, lambda g: shutil.copyfileobj(f, g, 1 << 20), overwrite=args.force)
            notes.append(f"{path}: no position-embedding key; {'would copy' if args.dry_run else 'copied'} "
                         f"unchanged to {target}")
        except USER_ERRORS as exc:
            failed.append(str(exc))
        except OSError as exc:
            failed.append(f"{path}: {exc}")
    for line in notes:
        print(line)
    for line in failed:
        print(f"vitpe resize: error: {line}", file=sys.stderr)
    if failed:
        print(f"vitpe resize: {len(failed)} of {len(files)} checkpoints failed", file=sys.stderr)
        return 1
    return 0


def _check_length_args(args) -> None:
    """--length L and --old-length L: a 1-D table; refuse what they cannot mean, before any file is read."""
    refuse_two_old_grids(args)
    if args.length is None and args.old_length is None:
        return
    if args.length is None:
        raise CheckpointError("--old-length is the current length of a 1-D table; give the new one with "
                              "--length L (--image-size and --grid are for 2-D/3-D grids)")
    if args.old_length is None:
        raise CheckpointError("--length needs the table's current length: pass --old-length L (the token count "
                              "does not tell the prefix tokens from the sequence)")
    given = [flag for flag, value in (("--image-size", args.image_size), ("--patch-size", args.patch_size),
                                      ("--grid", args.grid), ("--old-grid", args.old_grid),
                                      ("--window", args.window), ("--sincos", args.sincos or None),
                                      ("--rel-pos", args.rel_pos))
             if value is not None]
    if given:
        raise CheckpointError(f"{given[0]} does not apply to a 1-D table (--length/--old-length); drop it")


def _check_grid_args(args) -> None:
    """--grid TxHxW and a 3-D --old-grid: refuse what they cannot mean, before any file is read."""
    _check_length_args(args)
    if args.length is not None:
        return
    old, new = args.old_grid, args.grid
    if new is None and (old is None or len(old) == 2):
        return
    if args.image_size is not None:
        raise CheckpointError("--image-size cannot set the frame count of a TxHxW table; give the new token grid "
                              "with --grid TxHxW (and no --image-size)")
    if args.patch_size is not None:
        raise CheckpointError("--patch-size with a TxHxW grid is not supported (a 3-D patch kernel is not "
                              "resampled); give the new token grid with --grid TxHxW alone")
    if old is None:
        raise CheckpointError("--grid needs the table's current grid: pass --old-grid TxHxW (a token count does "
                              "not tell the frame count)")
    if len(old) != len(new):
        raise CheckpointError(f"--old-grid {format_pair(old)} is a 2-D grid and --grid {format_pair(new)} a 3-D "
                              f"one; give both as TxHxW")
    flag = next((f for f, v in (("--sincos", args.sincos or None), ("--window", args.window),
                                ("--rel-pos", args.rel_pos)) if v is not None), None)
    if flag:
        raise CheckpointError(f"{flag} is for 2-D tables; a TxHxW table is interpolated (drop it)")


def cmd_resize(args) -> int:
    if args.image_size is None and args.patch_size is None and args.grid is None and args.length is None:
        print("vitpe resize: error: give --image-size, --patch-size or both (see vitpe resize --help)",
              file=sys.stderr)
        return 2
    _check_grid_args(args)
    src, out = Path(args.input), Path(args.output)
    if src.is_dir():
        from .hf_folder import is_model_folder, resize_model_folder
        if is_model_folder(src):  # config.json + save_pretrained's weights: a new model folder
            return resize_model_folder(src, out, args)
        return resize_dir(src, out, args)
    resize_file(src, out, args)
    return 0
