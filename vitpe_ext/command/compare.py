"""`vitpe compare CKPT --data ... --image-size S`: which resize mode works on
this checkpoint and this data? The checkpoint's table is resized to S in every
mode (or --modes), each result loads strictly into the model rebuilt at S and
is evaluated; one row per mode (accuracy, loss, paired McNemar p-value against
the best row, resize time, evaluation time, peak memory).

The model is the one `vitpe plot --attention` rebuilds (command/rebuild.py),
built at S: from --arch (a torchvision vit_* name or a timm model name, built
without weights) or from the checkpoint's keys, with the same head-count policy
(--num-heads, a recorded num_heads, the standard count for the width, or an
error asking for --num-heads).

Data: --data DIR (ImageFolder layout: DIR/<class>/<image>, classes sorted by
name are labels 0..K-1) or --data digits (scikit-learn's handwritten digits,
the held-out split experiments/modes.py evaluates on, upscaled to S).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..integrations.compare import ModeResult, check_fits, compare_modes, format_table, parse_variant, table_layout
from ..op import PROFILES
from .atomic import check_output, write_atomic
from .checkpoint import CheckpointError, describe, format_pair, load_checkpoint, new_grid_for, select_keys
from .rebuild import build_model, check_arch, model_prefix, model_state, require

Pair = Tuple[int, int]

# -- data ----------------------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.3   # of scikit-learn's 1797 digits: 540 held out, 1257 to train on
DIGITS_SPLIT_SEED = 0        # one fixed, class-stratified split for the command and the experiment
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_BYTES = 1 << 30        # an ImageFolder set up to this size is decoded once, not once per mode


def digits_data(image_size, split: str = "test", channels: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as (N, channels, H, W) float32 and (N,) labels.

    Pixel values 0..16 are scaled to [0, 1], upscaled bilinearly (half-pixel
    centres) to image_size, normalised to [-1, 1] as (x - 0.5) / 0.5, and the
    grey channel repeated. split: 'train' (1257) or 'test' (540), a fixed
    stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise CheckpointError("--data digits needs scikit-learn (pip install scikit-learn)") from None
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    digits = load_digits()
    index = list(range(len(digits.target)))
    train, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION, stratify=digits.target,
                                   random_state=DIGITS_SPLIT_SEED)
    chosen = sorted(train if split == "train" else test)
    images = torch.from_numpy(digits.images[chosen]).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, channels, -1, -1).contiguous()
    return images, torch.from_numpy(digits.target[chosen]).long()


class _Batches:
    """Re-iterable (images, targets) batches over tensors already in memory."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, mean=None, std=None):
        self.images, self.targets, self.batch_size = images, targets, batch_size
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self):
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.targets), self.batch_size):
            x = self.images[start:start + self.batch_size]
            if self.mean is not None:  # uint8 images cached from an ImageFolder
                x = (x.float() / 255.0 - self.mean) / self.std
            yield x, self.targets[start:start + self.batch_size]


def _image_transform(size: Pair, channels: int):
    T = require("torchvision.transforms.v2")
    return T.Compose([
        T.Lambda(lambda im: im.convert("L" if channels == 1 else "RGB")),
        T.PILToTensor(),
        # shorter side to the target's longer side, then the centre: no distortion, nothing padded
        T.Resize(max(size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(size),
    ])


def image_folder_data(root: Path, size: Pair, channels: int, mean, std, batch_size: int,
                      limit: Optional[int], num_classes: int, log):
    """An ImageFolder as batches, and what the user should know about it."""
    ImageFolder = require("torchvision.datasets").ImageFolder
    if not root.is_dir():
        raise CheckpointError(f"--data {root}: no such directory (give an ImageFolder directory or 'digits')")
    try:
        dataset = ImageFolder(str(root), transform=_image_transform(size, channels))
    except (FileNotFoundError, RuntimeError) as exc:
        raise CheckpointError(f"--data {root}: {str(exc).splitlines()[0]} (the layout is DIR/<class>/<image>)") \
            from None
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != channels:
            raise CheckpointError(f"{name} has {len(values)} values; the model takes {channels} channel(s)")
    if min(std) <= 0:
        raise CheckpointError(f"--std must be positive, got {','.join(f'{v:g}' for v in std)}")
    if len(dataset.classes) > num_classes:
        raise CheckpointError(f"--data {root}: {len(dataset.classes)} class folders, but the model has "
                              f"{num_classes} outputs")
    index = list(range(len(dataset)))
    if limit is not None and limit < len(index):
        # evenly spaced over the sorted samples, so every class keeps its share
        index = sorted({round(i * (len(dataset) - 1) / max(limit - 1, 1)) for i in range(limit)})
    subset = torch.utils.data.Subset(dataset, index)
    nbytes = len(index) * channels * size[0] * size[1]
    log(f"data: {root}: {len(index)} of {len(dataset)} images, {len(dataset.classes)} classes "
        f"({', '.join(dataset.classes[:5])}{', ...' if len(dataset.classes) > 5 else ''}) = labels 0.."
        f"{len(dataset.classes) - 1}; shorter side resized to {max(size)} (bicubic), centre {format_pair(size)}, "
        f"normalised with mean {tuple(mean)}, std {tuple(std)}")
    loader = torch.utils.data.DataLoader(subset, batch_size=256, shuffle=False, num_workers=0)
    if nbytes > CACHE_BYTES:
        log(f"note: {nbytes / 2**30:.1f} GiB of decoded images: decoding them again for every mode "
            f"(--limit N makes the set smaller)")
        return _Streamed(loader, mean, std, batch_size)
    images, targets = [], []
    try:
        for x, y in loader:
            images.append(x)
            targets.append(y)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise CheckpointError(f"--data {root}: {str(exc).splitlines()[0]}") from None
    return _Batches(torch.cat(images), torch.cat(targets), batch_size, mean, std)


class _Streamed:
    def __init__(self, loader, mean, std, batch_size):
        self.loader, self.batch_size = loader, batch_size
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def __iter__(self):
        for x, y in self.loader:
            for start in range(0, len(y), self.batch_size):
                chunk = x[start:start + self.batch_size]
                yield (chunk.float() / 255.0 - self.mean) / self.std, y[start:start + self.batch_size]


# -- the model -----------------------------------------------------------------------

def _arch(text: str) -> str:
    """argparse type of --arch: a torchvision vit_* builder or a timm model name."""
    try:
        check_arch(text)
    except (ValueError, CheckpointError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _channels(model) -> int:
    conv = getattr(model, "conv_proj", None) or getattr(getattr(model, "patch_embed", None), "proj", None)
    return conv.weight.shape[1] if conv is not None else 3


def _num_classes(model) -> int:
    head = getattr(getattr(model, "heads", None), "head", None) or getattr(model, "head", None)
    return head.weight.shape[0] if isinstance(getattr(head, "weight", None), torch.Tensor) else 0


# -- the command ---------------------------------------------------------------------

def _variant_list(text: str):
    """argparse type of --modes: comma-separated names (parse_variant's)."""
    try:
        return [parse_variant(name) for name in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (e.g. 0.5,0.5,0.5), got {text!r}")
    return values


def add_parser(sub, pair_arg) -> None:
    p = sub.add_parser(
        "compare", help="evaluate a checkpoint resized in every mode; choose the mode on evidence",
        description="Resize CKPT's position table to --image-size in every mode (or --modes), load each result "
                    "strictly into the model rebuilt at that size, evaluate it on --data, and print accuracy, "
                    "loss, the paired McNemar p-value against the best mode, times and peak memory per mode.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, metavar="DIR|digits",
                   help="an ImageFolder directory (DIR/<class>/<image>; sorted class names = labels 0..K-1), or "
                        "'digits': scikit-learn's digits, the held-out 540, upscaled to the image size")
    p.add_argument("--image-size", type=pair_arg("--image-size"), required=True, metavar="S|HxW",
                   help="the new image size; the model is built for it")
    p.add_argument("--arch", type=_arch, metavar="NAME",
                   help="torchvision vit_* or timm model name, built without weights (default: rebuilt from "
                        "CKPT's keys)")
    p.add_argument("--num-heads", type=int, metavar="N", help="attention heads, when rebuilding from the keys")
    p.add_argument("--modes", type=_variant_list, metavar="LIST",
                   help="comma-separated: modes (nearest, bilinear, bicubic, ...), a mode with +ac "
                        "(align_corners) / +aa (antialias), e.g. bicubic+aa, or a profile; default: every mode "
                        "with its flags")
    p.add_argument("--profiles", metavar="LIST", type=lambda s: [x for x in s.split(",") if x],
                   help=f"library profiles to add as rows: {', '.join(sorted(PROFILES))}")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate N images of DIR, evenly spread")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--mean", type=_floats, default=IMAGENET_MEAN, metavar="M,M,M",
                   help="ImageFolder normalisation (default ImageNet's)")
    p.add_argument("--std", type=_floats, default=IMAGENET_STD, metavar="S,S,S")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON (atomically)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--key", metavar="KEY", help="the table's key, where detection cannot tell")
    p.set_defaults(run=run)


def _check_args(args) -> None:
    if args.batch_size < 1:
        raise CheckpointError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CheckpointError(f"--limit must be >= 1, got {args.limit}")
    unknown = [p for p in (args.profiles or []) if p not in PROFILES]
    if unknown:
        raise CheckpointError(f"--profiles: unknown {', '.join(unknown)}; choose from {', '.join(sorted(PROFILES))}")
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise CheckpointError(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"--device {args.device}: no CUDA device here")
    if args.json:
        if Path(args.json).suffix.lower() != ".json":
            raise CheckpointError(f"--json {args.json}: give a .json file name")
        check_output(Path(args.json), args.force)


def verdict(rows: List[ModeResult]) -> str:
    """One line: the best mode, and which modes chance cannot tell from it."""
    from ..integrations.compare import mcnemar_p
    best = max(rows, key=lambda r: (r.accuracy, -r.loss))
    tied = [r.label for r in rows if r is not best and mcnemar_p(r.correct, best.correct) >= 0.05]
    head = f"best: {best.label} ({100 * best.accuracy:.2f}%)"
    if len(rows) == 1:
        return head
    if len(tied) == len(rows) - 1:
        return (f"{head}, but no mode differs from it by more than chance on these {best.samples} images "
                f"(McNemar p >= 0.05 for all): the mode does not matter here; more data would tell smaller gaps")
    if tied:
        return f"{head}; within chance of it (p >= 0.05): {', '.join(tied)}; the others are worse"
    return f"{head}; every other mode is worse by more than chance (p < 0.05)"


def run(args, out=None) -> int:
    log = (lambda line: print(line, file=out)) if out is not None else print
    _check_args(args)
    ckpt = load_checkpoint(args.checkpoint)
    key = select_keys(ckpt, [args.key] if args.key else None)[0]
    emb = describe(ckpt, key)
    image = tuple(args.image_size)
    if emb.patch is not None:
        new_grid_for(emb, image, ckpt.path)  # refuses a size that is not a multiple of the patch
    # the model `vitpe plot --attention` runs, built at the new size (its head-count policy, its errors)
    state, prefix = model_state(ckpt, emb), model_prefix(emb)
    try:
        _, model, built = build_model(ckpt, emb, state, args.arch, args.num_heads, image)
    except (AssertionError, ValueError, TypeError, RuntimeError) as exc:  # the library's own checks
        what = f"--arch {args.arch}" if args.arch else "the model rebuilt from the checkpoint's keys"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{what}: cannot be built at {format_pair(image)}: {text}") from None
    try:  # before any work: data loading is the slow part for an ImageFolder
        check_fits(model, state, table_layout(model)[0])
    except ValueError as exc:
        raise CheckpointError(str(exc).splitlines()[0]) from None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    channels, classes = _channels(model), _num_classes(model)
    if args.data == "digits":
        if classes < 10:
            raise CheckpointError(f"--data digits has 10 classes, but the model has {classes} outputs")
        images, targets = digits_data(image, "test", channels)
        loader = _Batches(images, targets, args.batch_size)
        if args.limit is not None:
            loader = _Batches(images[:args.limit], targets[:args.limit], args.batch_size)
        log(f"data: scikit-learn digits, held-out split ({len(loader.targets)} images, labels 0..9), 8x8 upscaled "
            f"bilinearly to {format_pair(image)}, values (x/16 - 0.5) / 0.5")
    else:
        loader = image_folder_data(Path(args.data), image, channels, args.mean, args.std, args.batch_size,
                                   args.limit, classes, log)
    log(f"checkpoint: {ckpt.path}: {emb.name} {tuple(emb.shape)}, {emb.prefix_tokens} prefix token(s), grid "
        f"{format_pair(emb.grid)}" + (f" (model prefix {prefix!r} stripped)" if prefix else ""))
    log(f"model: {built}, on {device}")

    def progress(row: ModeResult) -> None:
        print(f"  {row.label}: {100 * row.accuracy:.2f}%", file=sys.stderr, flush=True)

    try:
        rows = compare_modes(model, state, loader, image, modes=args.modes, profiles=args.profiles or (),
                             device=device, progress=progress)
    except ValueError as exc:
        raise CheckpointError(str(exc).splitlines()[0]) from None
    log("")
    log(format_table(rows))
    log(verdict(rows))
    if args.json:
        record = {"checkpoint": str(ckpt.path), "table": emb.name, "image_size": list(image), "model": built,
                  "data": args.data, "device": str(device), "rows": [r.to_dict() for r in rows]}
        data = (json.dumps(record, indent=2) + "\n").encode()
        write_atomic(Path(args.json), lambda f: f.write(data), overwrite=args.force)
        log(f"wrote {args.json}")
    return 0
