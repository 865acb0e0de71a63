"""What the `vitpe` subcommands' options share: the argument types and
groups of their parsers, and the tables those options select in a
checkpoint."""
from __future__ import annotations

import argparse
import sys
from typing import List

from ..op import MODES, PROFILES, mode_info
from .atomic import OutputError
from .checkpoint import (Checkpoint, CheckpointError, Embedding, describe, find_embedding_keys, format_pair,
                         load_checkpoint, parse_grid, parse_pair, select_keys)

USER_ERRORS = (CheckpointError, OutputError)  # one line for the user, status 1


def pair_arg(what, parser=parse_pair):
    def parse(text):
        try:
            return parser(text, what)
        except CheckpointError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_layout_args(parser: argparse.ArgumentParser,
                     patch_help: str = "patch size in pixels (default: from the patch-embedding weight)",
                     old_length: bool = False) -> None:
    group = parser.add_argument_group("table layout (detected when not given)")
    group.add_argument("--key", action="append", metavar="KEY",
                       help="the table's key (nested dicts as model/pos_embed); repeat for several tables")
    group.add_argument("--prefix-tokens", type=int, metavar="N",
                       help="class/distillation/register tokens at the start of the table")
    group.add_argument("--old-grid", type=pair_arg("--old-grid", parse_grid), metavar="HxW|TxHxW",
                       help="the table's current patch grid (needed for non-square grids, and as TxHxW for "
                            "a video/volume table)")
    group.add_argument("--patch-size", type=pair_arg("--patch-size"), metavar="P|PHxPW", help=patch_help)
    if old_length:
        # its own option: --old-grid N has always meant NxN, so a 1-D length cannot be spelled there
        group.add_argument("--old-length", type=positive_count("--old-length"), metavar="L",
                           help="a 1-D table's current length: L tokens after the prefix (--old-grid N means NxN)")


def positive_count(what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number of tokens, got {text!r}")
        return value
    return parse


def modes_taking(flag: str) -> str:
    """'bilinear/bicubic': the modes that take align_corners=True, or an optional antialias."""
    return "/".join(m for m in MODES if (mode_info(m).align_corners if flag == "align_corners"
                                         else mode_info(m).antialias == "optional"))


def add_method_args(parser: argparse.ArgumentParser) -> None:
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
                       help=f"{modes_taking('align_corners')}: map corner centres to corner centres")
    group.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=None,
                       help=f"{modes_taking('antialias')}: Pillow-style antialiased kernel")
    group.add_argument("--sincos", action="store_true",
                       help="fixed sin-cos table (MAE): regenerate it exactly at the new grid instead of interpolating")


def grid3(text: str, what: str):
    grid = parse_grid(text, what)
    if len(grid) != 3:
        raise CheckpointError(f"{what} is a 3-D token grid TxHxW (e.g. 16x14x14), got {text!r}; "
                              f"a 2-D table takes --image-size")
    return grid


def load_tables(path, args, strict_single: bool = True, patch_from_args: bool = True):
    """patch_from_args=False: --patch-size is the output's patch size (resize),
    so the tables' patch size comes from their kernels only."""
    ckpt = load_checkpoint(path)
    return ckpt, describe_tables(ckpt, args, strict_single, patch_from_args)


def old_grid_of(args):
    """--old-grid, or --old-length L as the 1-D grid (L,)."""
    length = getattr(args, "old_length", None)
    return (length,) if length is not None else args.old_grid


def describe_tables(ckpt: Checkpoint, args, strict_single: bool = True, patch_from_args: bool = True,
                     optional: bool = False) -> List[Embedding]:
    """The absolute tables to work on; optional=True: none is fine (a checkpoint whose only
    tables are relative-position-bias ones, e.g. Swin)."""
    if optional and not args.key and not find_embedding_keys(ckpt):
        return []
    keys = select_keys(ckpt, args.key) if strict_single or args.key else find_embedding_keys(ckpt)
    if not keys:
        keys = select_keys(ckpt, None)  # raises the "no key, candidates: ..." error
    patch = args.patch_size if patch_from_args else None
    return [describe(ckpt, key, args.prefix_tokens, old_grid_of(args), patch) for key in keys]


def note(command: str, line: str) -> None:
    print(f"vitpe {command}: note: {line}", file=sys.stderr)


def refuse_two_old_grids(args) -> None:
    if args.old_length is not None and args.old_grid is not None:
        raise CheckpointError(f"--old-length is a 1-D table's length and --old-grid a 2-D/3-D grid; give one "
                              f"(--old-grid {format_pair(args.old_grid)} means that grid, not a length)")
