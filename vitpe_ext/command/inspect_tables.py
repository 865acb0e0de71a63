"""`vitpe inspect`: a checkpoint's position tables as a table of layout,
dtype, norms, sin-cos match and non-finite values, and its
relative-position-bias tables."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence

import torch

from .checkpoint import Checkpoint, Embedding, format_pair, key_name, load_checkpoint, nonfinite_summary
from .records import describe_record, method_from_record, table_record
from .rel_pos_tables import find_rel_pos_tables, inspect_lines as rel_pos_lines, refuse_tableless
from .resizing import default_method
from .options import describe_tables, note, refuse_two_old_grids


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
    refuse_two_old_grids(args)
    if is_model_folder(path):
        ckpt, embs = inspect_model_folder(path, args)  # the layout from config.json
    else:
        ckpt = load_checkpoint(path)
        rel_tables = find_rel_pos_tables(ckpt) if not args.key else []
        if not rel_tables and not args.key:
            refuse_tableless(ckpt)
        embs = describe_tables(ckpt, args, strict_single=False, optional=bool(rel_tables))
    header, rows, problems = inspect_rows(ckpt, embs)
    print(f"{ckpt.path} ({ckpt.format}, {sum(1 for _ in ckpt.items())} tensors)")
    if rows:
        print(_table_rows(header, rows))
    if not is_model_folder(path):
        for line in rel_pos_lines(ckpt, rel_tables):
            print(line)
    for emb in embs:
        record = table_record(ckpt, emb, lambda line: note("inspect", line))
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
