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
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch  # noqa: F401  (load libtorch before vitpe_ext._C)

from ..op import backends
from .atomic import Interrupted, cleanup_on_signals
from .checkpoint import CheckpointError, format_pair, new_grid_for, nonfinite_summary
from .options import USER_ERRORS, add_layout_args, add_method_args, grid3, load_tables, pair_arg, positive_count
from .resize import cmd_resize
from .inspect_tables import cmd_inspect


# -- plot ------------------------------------------------------------------------

def cmd_plot(args) -> int:
    from .demo import DEMO_METHODS
    from .plot import check_plot_output, plot_resize

    if args.attention or args.image or args.arch or args.modes or args.num_heads is not None:
        from .attention_plot import run as run_attention  # says which options need --attention
        return run_attention(args)
    check_plot_output(args.output)  # before any work
    ckpt, embs = load_tables(Path(args.checkpoint), args)
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
    p.add_argument("--image-size", type=pair_arg("--image-size"), metavar="S|HxW",
                   help="new image size in pixels, e.g. 384 or 512x384 (height x width); without it, "
                        "--patch-size keeps the checkpoint's image size")
    p.add_argument("--grid", type=pair_arg("--grid", grid3), metavar="TxHxW",
                   help="the new token grid of a video/volume table (T*H*W tokens, VideoMAE, UNETR), e.g. "
                        "16x14x14; needs --old-grid TxHxW; instead of --image-size, which cannot say the frames")
    p.add_argument("--length", type=positive_count("--length"), metavar="L",
                   help="the new length of a 1-D table (prefix + L tokens: a TimeSformer time_embed, an "
                        "audio/sequence ViT), e.g. 16; needs --old-length L")
    add_layout_args(p, patch_help="the output's patch size: a patch-embedding kernel of another size is "
                                   "resampled to it (FlexiViT) and the table resized to IMAGE/P, so both agree; "
                                   "without a kernel in the checkpoint, the table's patch size", old_length=True)
    p.add_argument("--window", type=pair_arg("--window"), metavar="W|WHxWW",
                   help="Swin: the new attention window (timm's window_size=), clamped per stage to the "
                        "feature map as timm does; the relative-position-bias tables are resized to it "
                        "(default: the checkpoint's window). BEiT's window is the patch grid: --image-size sets it")
    p.add_argument("--rel-pos", choices=("timm", "even"), default=None,
                   help="how timm relative-position-bias tables (Swin v1, BEiT, EVA) are resized: timm "
                        "(default): as timm's checkpoint_filter_fn does when it loads them at another size "
                        "(BEiT's geometric-progression offsets, bilinear, float32); even: an evenly spaced "
                        "per-axis resize of the offset grid with --mode/--align-corners/--antialias (default "
                        "bicubic, timm's resize_rel_pos_bias_table_simple)")
    add_method_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--allow-nonfinite", action="store_true", help="resize a table that holds NaN/Inf anyway")
    p.set_defaults(run=cmd_resize)

    p = sub.add_parser("inspect", help="describe a checkpoint's position-embedding table(s)",
                       description="A table of the position-embedding key(s): layout, dtype, norms, whether "
                                   "the table is a fixed sin-cos one, and NaN/Inf values (exit status 1 if any).")
    p.add_argument("checkpoint", metavar="CKPT")
    add_layout_args(p, old_length=True)
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("plot", help="similarity maps and value histograms before/after resizing, every mode")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--image-size", type=pair_arg("--image-size"), metavar="S|HxW",
                   help="new image size (default: twice the current grid)")
    p.add_argument("-o", "--output", default="vitpe-plot.png", metavar="PNG")
    add_layout_args(p)
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
    p.add_argument("--image-size", type=pair_arg("--image-size"), action="append", metavar="S|HxW",
                   help="target image size (repeatable; default 384 and 512)")
    p.add_argument("-o", "--output", default="vitpe-demo.png", metavar="PNG", help="the plot (default %(default)s)")
    p.add_argument("--no-forward", action="store_true", help="skip the forward pass")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("--num-heads", type=int, metavar="N",
                   help="attention heads of CKPT's model, for the forward pass (default: a num_heads/"
                        "num_attention_heads entry in CKPT, else torchvision's for that width)")
    add_layout_args(p)
    p.set_defaults(run=cmd_demo)

    from .compare import add_parser as add_compare_parser
    add_compare_parser(sub, pair_arg)  # `vitpe compare`, in compare.py

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
