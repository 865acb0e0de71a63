"""The `vitpe` command line (also `python -m vitpe_ext`).

    vitpe resize IN OUT --image-size 384     resize a checkpoint's position embedding
    vitpe resize IN OUT --old-length 8 --length 16   a 1-D table (prefix + L tokens)
    vitpe inspect CKPT                       its table(s): layout, dtype, norms, sin-cos?, NaN/Inf
    vitpe plot CKPT -o fig.png               similarity maps and value histograms, every mode
    vitpe demo [CKPT]                        every mode against the exact answer, a forward pass, a plot
    vitpe bench ...                          the benchmark (vitpe_ext/command/bench.py)

A problem with the input (missing file, no embedding key, a size that is not a
multiple of the patch, an OUT that must not be written, ...) ends the process
with status 1 and one line on stderr (status 2 for a malformed command line);
nothing is written then. SIGINT/SIGTERM/SIGHUP remove any temporary file and
end with status 128 + the signal's number and one line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence, Set

import torch  # noqa: F401  (load libtorch before vitpe_ext._C)

from ..op import MODES, PROFILES, backends, mode_info
from .atomic import Interrupted, OutputError, check_output, cleanup_on_signals, sweep_stale_temps, write_atomic
from .checkpoint import (CHECKPOINT_SUFFIXES, Checkpoint, CheckpointError, Embedding, NoEmbeddingKey, check_storable,
                         describe, find_embedding_keys, format_pair, key_name, load_checkpoint, new_grid_for,
                         nonfinite_summary, output_format, parse_grid, parse_pair, save_checkpoint, select_keys)
from ..integrations.provenance import RECORD_KEY
from .records import describe_record, method_from_record, mismatch_warning, step_for, store_records, table_record
from .rel_pos_tables import find_rel_pos_tables, inspect_lines as rel_pos_lines, plan_rel_pos, refuse_tableless
from .resizing import default_method, method_from_args, method_given, plan_patch, plan_resize

USER_ERRORS = (CheckpointError, OutputError)  # one line for the user, status 1


# -- shared arguments ------------------------------------------------------------

def _pair_arg(what, parser=parse_pair):
    def parse(text):
        try:
            return parser(text, what)
        except CheckpointError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _add_layout_args(parser: argparse.ArgumentParser,
                     patch_help: str = "patch size in pixels (default: from the patch-embedding weight)",
                     old_length: bool = False) -> None:
    group = parser.add_argument_group("table layout (detected when not given)")
    group.add_argument("--key", action="append", metavar="KEY",
                       help="the table's key (nested dicts as model/pos_embed); repeat for several tables")
    group.add_argument("--prefix-tokens", type=int, metavar="N",
                       help="class/distillation/register tokens at the start of the table")
    group.add_argument("--old-grid", type=_pair_arg("--old-grid", parse_grid), metavar="HxW|TxHxW",
                       help="the table's current patch grid (needed for non-square grids, and as TxHxW for "
                            "a video/volume table)")
    group.add_argument("--patch-size", type=_pair_arg("--patch-size"), metavar="P|PHxPW", help=patch_help)
    if old_length:
        # its own option: --old-grid N has always meant NxN, so a 1-D length cannot be spelled there
        group.add_argument("--old-length", type=_positive("--old-length"), metavar="L",
                           help="a 1-D table's current length: L tokens after the prefix (--old-grid N means NxN)")


def _positive(what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number of tokens, got {text!r}")
        return value
    return parse


def _modes_taking(flag: str) -> str:
    """'bilinear/bicubic': the modes that take align_corners=True, or an optional antialias."""
    return "/".join(m for m in MODES if (mode_info(m).align_corners if flag == "align_corners"
                                         else mode_info(m).antialias == "optional"))


def _add_method_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "resize method",
        "Default: the profile of the checkpoint's library (torchvision, timm, hf, mae, dinov2...; hf's plain "
        "bicubic for a --key of unknown origin). "
        "--mode/--align-corners/--antialias without --profile run the op with exactly those settings; "
        "with --profile they adjust it where that library allows.")
    group.add_argument("--profile", choices=sorted(PROFILES), help="reproduce this library's resize")
    # "linear"/"trilinear": F.interpolate's names for 1-D/3-D linear; the op takes them on an L/TxHxW grid only
    group.add_argument("--mode", choices=(*MODES, "linear", "trilinear"), help="interpolation mode")
    group.add_argument("--align-corners", action=argparse.BooleanOptionalAction, default=None,
                       help=f"{_modes_taking('align_corners')}: map corner centres to corner centres")
    group.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=None,
                       help=f"{_modes_taking('antialias')}: Pillow-style antialiased kernel")
    group.add_argument("--sincos", action="store_true",
                       help="fixed sin-cos table (MAE): regenerate it exactly at the new grid instead of interpolating")


def _load_tables(path, args, strict_single: bool = True, patch_from_args: bool = True):
    """patch_from_args=False: --patch-size is the output's patch size (resize),
    so the tables' patch size comes from their kernels only."""
    ckpt = load_checkpoint(path)
    return ckpt, _describe_tables(ckpt, args, strict_single, patch_from_args)


def _old_grid(args):
    """--old-grid, or --old-length L as the 1-D grid (L,)."""
    length = getattr(args, "old_length", None)
    return (length,) if length is not None else args.old_grid


def _describe_tables(ckpt: Checkpoint, args, strict_single: bool = True, patch_from_args: bool = True,
                     optional: bool = False) -> List[Embedding]:
    """The absolute tables to work on; optional=True: none is fine (a checkpoint whose only
    tables are relative-position-bias ones, e.g. Swin)."""
    if optional and not args.key and not find_embedding_keys(ckpt):
        return []
    keys = select_keys(ckpt, args.key) if strict_single or args.key else find_embedding_keys(ckpt)
    if not keys:
        keys = select_keys(ckpt, None)  # raises the "no key, candidates: ..." error
    patch = args.patch_size if patch_from_args else None
    return [describe(ckpt, key, args.prefix_tokens, _old_grid(args), patch) for key in keys]


# -- resize ----------------------------------------------------------------------

def _grid3(text: str, what: str):
    grid = parse_grid(text, what)
    if len(grid) != 3:
        raise CheckpointError(f"{what} is a 3-D token grid TxHxW (e.g. 16x14x14), got {text!r}; "
                              f"a 2-D table takes --image-size")
    return grid


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _note(command: str, line: str) -> None:
    print(f"vitpe {command}: note: {line}", file=sys.stderr)


def _sweep(folder: Path, swept: Set[Path]) -> None:
    """Report (and remove, when provably stale) temporary files that a killed run left in folder."""
    if folder in swept:
        return
    swept.add(folder)
    for line in sweep_stale_temps(folder):
        _note("resize", line)


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
    embs = _describe_tables(ckpt, args, patch_from_args=False, optional=bool(rel_tables))
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
        record = table_record(ckpt, emb, lambda line: _note("resize", line))
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
            _note("resize", f"{src}: {emb.name} is already a resize of a {format_pair(record.source_grid)} table; "
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
    for emb in _describe_tables(ckpt, args, patch_from_args=False):
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


def _refuse_two_old_grids(args) -> None:
    if args.old_length is not None and args.old_grid is not None:
        raise CheckpointError(f"--old-length is a 1-D table's length and --old-grid a 2-D/3-D grid; give one "
                              f"(--old-grid {format_pair(args.old_grid)} means that grid, not a length)")


def _check_length_args(args) -> None:
    """--length L and --old-length L: a 1-D table; refuse what they cannot mean, before any file is read."""
    _refuse_two_old_grids(args)
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


# -- inspect ---------------------------------------------------------------------

def _table_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def inspect_rows(ckpt: Checkpoint, embs: List[Embedding]):
    from ..integrations.sincos import match_sincos
    rows, problems = [], []
    for emb in embs:
        table = ckpt.get(emb.key)
        rows3 = table.reshape(-1, table.shape[-2], table.shape[-1])
        grid = rows3[:, emb.prefix_tokens:].double()
        bad = nonfinite_summary(table, emb.prefix_tokens)
        if bad:
            problems.append(f"{emb.name}: {bad}")
        finite = grid[torch.isfinite(grid).all(dim=-1)]
        token_norms = finite.norm(dim=-1) if finite.numel() else torch.zeros(1)
        prefix_norms = rows3[0, :emb.prefix_tokens].double().norm(dim=-1).tolist()
        flat = len(emb.grid) == 2  # a TxHxW table: no 2-D sin-cos match, no image size from a 2-D patch
        variant, diff = (match_sincos(grid[0].numpy(), emb.grid) if not bad and flat
                         else (None, float("nan")))
        sincos = f"{variant} (max diff {diff:.1e})" if variant else ("no" if diff == diff else "?" if flat else "-")
        image = (format_pair((emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1]))
                 if emb.patch and flat else "? (no patch size)" if flat else "-")
        rows.append([
            emb.name, str(tuple(emb.shape)), str(emb.dtype).replace("torch.", ""),
            f"{emb.family} -> {emb.profile}", str(emb.prefix_tokens), format_pair(emb.grid),
            format_pair(emb.patch) if emb.patch else "?" if flat else "-", image,
            f"{float(finite.norm()):.4g}" if finite.numel() else "-",
            f"{float(token_norms.mean()):.3g} [{float(token_norms.min()):.3g}, {float(token_norms.max()):.3g}]",
            ", ".join(f"{n:.3g}" for n in prefix_norms) or "-",
            sincos, bad or "none",
        ])
    header = ["key", "shape", "dtype", "family -> profile", "prefix", "grid", "patch", "image",
              "grid norm", "token norm mean [min, max]", "prefix norms", "sin-cos", "non-finite"]
    return header, rows, problems


def cmd_inspect(args) -> int:
    from .hf_folder import inspect_model_folder, is_model_folder
    path = Path(args.checkpoint)
    _refuse_two_old_grids(args)
    if is_model_folder(path):
        ckpt, embs = inspect_model_folder(path, args)  # the layout from config.json
    else:
        ckpt = load_checkpoint(path)
        rel_tables = find_rel_pos_tables(ckpt) if not args.key else []
        if not rel_tables and not args.key:
            refuse_tableless(ckpt)
        embs = _describe_tables(ckpt, args, strict_single=False, optional=bool(rel_tables))
    header, rows, problems = inspect_rows(ckpt, embs)
    print(f"{ckpt.path} ({ckpt.format}, {sum(1 for _ in ckpt.items())} tensors)")
    if rows:
        print(_table_rows(header, rows))
    if not is_model_folder(path):
        for line in rel_pos_lines(ckpt, rel_tables):
            print(line)
    for emb in embs:
        record = table_record(ckpt, emb, lambda line: _note("inspect", line))
        recorded = method_from_record(record) if record is not None else None
        default = f"{recorded.label} (as its resize record says)" if recorded else default_method(emb).label
        print(f"{emb.name}: default resize {default}"
              + (f"; patch size from {key_name(emb.patch_key)}" if emb.patch_key and emb.patch else ""))
        if record is not None:
            lines = describe_record(record)
            print(f"{emb.name}: resize record: {lines[0]}", *lines[1:], sep="\n")
    if problems:
        for line in problems:
            print(f"vitpe inspect: non-finite values: {line} (they usually come from the checkpoint, "
                  f"not the resize: fix them before interpolating)", file=sys.stderr)
        return 1
    return 0


# -- plot ------------------------------------------------------------------------

def cmd_plot(args) -> int:
    from .demo import DEMO_METHODS
    from .plot import check_plot_output, plot_resize

    if args.attention or args.image or args.arch or args.modes or args.num_heads is not None:
        from .attention_plot import run as run_attention  # says which options need --attention
        return run_attention(args)
    check_plot_output(args.output)  # before any work
    ckpt, embs = _load_tables(Path(args.checkpoint), args)
    emb = embs[0]
    if args.image_size is not None:
        new_grid = new_grid_for(emb, args.image_size, ckpt.path)
    else:
        new_grid = (2 * emb.grid[0], 2 * emb.grid[1])
    table = ckpt.get(emb.key)
    bad = nonfinite_summary(table, emb.prefix_tokens)
    if bad:
        raise CheckpointError(f"{ckpt.path}: {emb.name} has non-finite values ({bad}); see vitpe inspect")
    grid = table.reshape(-1, table.shape[-2], table.shape[-1])[0, emb.prefix_tokens:]
    results = [(m.label, m.apply(table, new_grid, emb.grid, emb.prefix_tokens)
                .reshape(-1, table.shape[-1])[-new_grid[0] * new_grid[1]:]) for m in DEMO_METHODS]
    title = (f"{ckpt.path.name}: {emb.name} {tuple(emb.shape)}, grid {format_pair(emb.grid)} -> "
             f"{format_pair(new_grid)}")
    plot_resize(grid, emb.grid, results, new_grid, args.output, title)
    print(f"wrote {args.output}")
    return 0


# -- demo ------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run  # lazy: the demo pulls in torchvision
    return run(args)


# -- parser and entry point ------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the message and where the usage is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """--version: one line, unwrapped (argparse's "version" action wraps it at the terminal's width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(backends.describe())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vitpe", description="Resize, inspect and plot Vision Transformer position embeddings.",
        epilog="Checkpoints: .pth/.pt/.bin/.ckpt (loaded with torch.load(weights_only=True), never executing a "
               "pickle) and .safetensors; an output's format follows its extension.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="vitpe's version, torch's, and whether vitpe's CUDA kernels are loaded")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("resize", help="resize a checkpoint's position embedding to a new image size",
                       description="Resize the position-embedding table(s) of a checkpoint (or of every "
                                   "checkpoint in a directory) for a new image size. Every other entry is "
                                   "copied bit for bit; OUT is written atomically.")
    p.add_argument("input", metavar="IN", help="checkpoint file, a directory of checkpoints, or a Hugging Face "
                                               "model folder (config.json + weights: OUT is a new model folder)")
    p.add_argument("output", metavar="OUT", help="output file (a directory when IN is one)")
    p.add_argument("--image-size", type=_pair_arg("--image-size"), metavar="S|HxW",
                   help="new image size in pixels, e.g. 384 or 512x384 (height x width); without it, "
                        "--patch-size keeps the checkpoint's image size")
    p.add_argument("--grid", type=_pair_arg("--grid", _grid3), metavar="TxHxW",
                   help="the new token grid of a video/volume table (T*H*W tokens, VideoMAE, UNETR), e.g. "
                        "16x14x14; needs --old-grid TxHxW; instead of --image-size, which cannot say the frames")
    p.add_argument("--length", type=_positive("--length"), metavar="L",
                   help="the new length of a 1-D table (prefix + L tokens: a TimeSformer time_embed, an "
                        "audio/sequence ViT), e.g. 16; needs --old-length L")
    _add_layout_args(p, patch_help="the output's patch size: a patch-embedding kernel of another size is "
                                   "resampled to it (FlexiViT) and the table resized to IMAGE/P, so both agree; "
                                   "without a kernel in the checkpoint, the table's patch size", old_length=True)
    p.add_argument("--window", type=_pair_arg("--window"), metavar="W|WHxWW",
                   help="Swin: the new attention window (timm's window_size=), clamped per stage to the "
                        "feature map as timm does; the relative-position-bias tables are resized to it "
                        "(default: the checkpoint's window). BEiT's window is the patch grid: --image-size sets it")
    p.add_argument("--rel-pos", choices=("timm", "even"), default=None,
                   help="how timm relative-position-bias tables (Swin v1, BEiT, EVA) are resized: timm "
                        "(default): as timm's checkpoint_filter_fn does when it loads them at another size "
                        "(BEiT's geometric-progression offsets, bilinear, float32); even: an evenly spaced "
                        "per-axis resize of the offset grid with --mode/--align-corners/--antialias (default "
                        "bicubic, timm's resize_rel_pos_bias_table_simple)")
    _add_method_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--allow-nonfinite", action="store_true", help="resize a table that holds NaN/Inf anyway")
    p.set_defaults(run=cmd_resize)

    p = sub.add_parser("inspect", help="describe a checkpoint's position-embedding table(s)",
                       description="A table of the position-embedding key(s): layout, dtype, norms, whether "
                                   "the table is a fixed sin-cos one, and NaN/Inf values (exit status 1 if any).")
    p.add_argument("checkpoint", metavar="CKPT")
    _add_layout_args(p, old_length=True)
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("plot", help="similarity maps and value histograms before/after resizing, every mode")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--image-size", type=_pair_arg("--image-size"), metavar="S|HxW",
                   help="new image size (default: twice the current grid)")
    p.add_argument("-o", "--output", default="vitpe-plot.png", metavar="PNG")
    _add_layout_args(p)
    from .attention_plot import add_attention_args
    add_attention_args(p)  # --attention CKPT [IMAGE]
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("demo", help="every mode against the exact answer, a forward pass and a plot",
                       description="Without CKPT: a torchvision ViT-B/16 state dict whose table is a 2-D "
                                   "sin-cos field, so the exact table at any grid is known; resize it "
                                   "224->384 and ->512 in every mode, print each mode's error and time, run "
                                   "the resized model once, and plot. With CKPT: the same on its table, "
                                   "without the exact-error columns.")
    p.add_argument("checkpoint", nargs="?", metavar="CKPT")
    p.add_argument("--image-size", type=_pair_arg("--image-size"), action="append", metavar="S|HxW",
                   help="target image size (repeatable; default 384 and 512)")
    p.add_argument("-o", "--output", default="vitpe-demo.png", metavar="PNG", help="the plot (default %(default)s)")
    p.add_argument("--no-forward", action="store_true", help="skip the forward pass")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("--num-heads", type=int, metavar="N",
                   help="attention heads of CKPT's model, for the forward pass (default: a num_heads/"
                        "num_attention_heads entry in CKPT, else torchvision's for that width)")
    _add_layout_args(p)
    p.set_defaults(run=cmd_demo)

    from .compare import add_parser as add_compare_parser
    add_compare_parser(sub, _pair_arg)  # `vitpe compare`, in compare.py

    # listed for --help; main() hands its arguments to the bench's own parser unparsed
    sub.add_parser("bench", add_help=False, help="verify, then time the op against the anchors (vitpe bench --help)")
    return parser


def _interrupted(command: str, exc: Interrupted) -> int:
    print(f"vitpe {command}: interrupted by {exc}; no partial output left", file=sys.stderr)
    return 128 + exc.signum


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with cleanup_on_signals():
        if argv and argv[0] == "bench":
            try:
                from .bench import main as bench_main  # lazy: the benchmark pulls in more
                return bench_main(argv[1:])
            except Interrupted as exc:
                return _interrupted("bench", exc)
        command = argv[0] if argv and not argv[0].startswith("-") else "?"
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            return args.run(args)
        except USER_ERRORS as exc:
            print(f"vitpe {command}: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # permission denied reading IN, ...: still one line, and no partial OUT
            print(f"vitpe {command}: error: {exc}", file=sys.stderr)
            return 1
        except Interrupted as exc:
            return _interrupted(command, exc)


if __name__ == "__main__":
    sys.exit(main())
