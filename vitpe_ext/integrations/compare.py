"""Choose a resize mode on evidence: resize a checkpoint's position table in
every mode, load it into a model built at the new size, evaluate each.

    rows = compare_modes(model, state_dict, loader, image_size=384)
    print(format_table(rows))

The article this project serves (its §4) claims bicubic > bilinear > nearest
after resizing, with bicubic costing the most memory; on a user's own data and
checkpoint the spread may be larger, smaller or within noise. compare_modes
measures it: for each Variant (a mode with its flags, or a library profile) it
resizes the table with the op, loads the state dict strictly, and records
accuracy, mean cross-entropy, an optional user metric, the resize time, the
evaluation time and the peak memory of the whole step.

The table is resized with the op directly, not through the torchvision/timm
drop-ins: those fix their library's convention (torchvision always aligns
corners, timm always computes in float32 and antialiases by default), so
"bicubic" would mean different things per model. A library's own convention
is one more row: profiles=("torchvision",).

Works for torchvision's VisionTransformer (encoder.pos_embedding) and timm's
ViTs (pos_embed, class/register tokens in the table or not); other models
name their table with key= and their new grid with new_grid=.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..op import MODES, PROFILES, interpolate_pos_embed, mode_info, resolve

__all__ = ["Variant", "ModeResult", "default_variants", "parse_variant", "compare_modes", "resized_state_dict",
           "table_layout", "format_table", "mcnemar_p"]

Pair = Tuple[int, int]


# -- what to compare ---------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One way to resize: a mode with its flags, or a library profile (whose
    settings a mode/flag given here adjusts where that library allows)."""
    mode: Optional[str] = None
    align_corners: Optional[bool] = None
    antialias: Optional[bool] = None
    profile: Optional[str] = None

    def __post_init__(self):
        if self.profile is None and self.mode is None:
            raise ValueError("a Variant needs a mode or a profile")
        settings = self.settings()  # ValueError for an unknown mode/profile or a contradiction
        info = mode_info(settings["mode"])
        if settings["align_corners"] and not info.align_corners:
            raise ValueError(f"mode {settings['mode']!r} does not take align_corners=True")
        if settings["antialias"] and not info.antialias_allowed:
            raise ValueError(f"mode {settings['mode']!r} does not take antialias=True")

    def settings(self) -> Dict[str, Any]:
        return resolve(self.profile, self.mode, self.align_corners, self.antialias).settings()

    @property
    def label(self) -> str:
        """'bicubic', 'bicubic+aa', 'bilinear+ac', or the profile's name: what
        parse_variant (and `vitpe compare --modes`) reads back. A profile
        with overrides shows them: 'timm[mode=bilinear, antialias=False]'
        (a library call, not a --modes name)."""
        if self.profile is not None:
            given = [f"{name}={value}" for name, value in (("mode", self.mode), ("align_corners", self.align_corners),
                                                           ("antialias", self.antialias)) if value is not None]
            return f"{self.profile}[{', '.join(given)}]" if given else self.profile
        text = self.mode
        if self.align_corners:
            text += "+ac"
        if self.antialias and mode_info(self.mode).antialias == "optional":
            text += "+aa"
        return text

    @property
    def description(self) -> str:
        """The settings that run, e.g. 'bicubic, align_corners, float32'."""
        s = self.settings()
        parts = [s["mode"]]
        if s["align_corners"]:
            parts.append("align_corners")
        if s["antialias"] or mode_info(s["mode"]).antialias == "always":
            parts.append("antialias")
        if s.get("scale_offset"):
            parts.append(f"scale (n+{s['scale_offset']:g})/old")
        if s.get("compute_dtype"):
            parts.append(f"in {s['compute_dtype']}")
        return ", ".join(parts)

    def resize(self, table: torch.Tensor, new_grid: Pair, old_grid: Pair, prefix: int) -> torch.Tensor:
        return interpolate_pos_embed(table, new_grid, old_grid, prefix, mode=self.mode,
                                     align_corners=self.align_corners, antialias=self.antialias,
                                     profile=self.profile)


def default_variants() -> List[Variant]:
    """Every mode of the op's table in its order: as it comes, corner-aligned
    where the mode takes align_corners=True, antialiased where antialias is
    optional (the flags the libraries use: torchvision aligns corners, timm
    and DINOv2-reg antialias). A mode added to the C table shows up here."""
    rows = []
    for mode in MODES:
        info = mode_info(mode)
        rows.append(Variant(mode))
        if info.align_corners:
            rows.append(Variant(mode, align_corners=True))
        if info.antialias == "optional":
            rows.append(Variant(mode, antialias=True))
    return rows


def parse_variant(text: str) -> Variant:
    """'bicubic', 'bicubic+aa', 'bilinear+ac', 'bicubic+ac+aa' (also with
    spaces for '+'), or a profile name ('timm', 'torchvision', ...)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty mode name; give a mode ({', '.join(MODES)}), a mode with +ac/+aa, "
                         f"or a profile ({', '.join(sorted(PROFILES))})")
    name = text.strip()
    if name in PROFILES:
        return Variant(profile=name)
    parts = name.replace(" ", "+").split("+")
    mode, flags = parts[0], [p for p in parts[1:] if p]
    if mode not in MODES:
        where = f" in {text!r}" if text.strip() != mode else ""
        raise ValueError(f"unknown mode {mode!r}{where}; valid: {', '.join(MODES)} (with +ac for "
                         f"align_corners, +aa for antialias) or a profile: {', '.join(sorted(PROFILES))}")
    unknown = [f for f in flags if f not in ("ac", "aa")]
    if unknown or len(set(flags)) != len(flags):
        raise ValueError(f"{text!r}: flags after the mode are +ac (align_corners) and +aa (antialias), "
                         f"each once; got {'+'.join(flags)}")
    return Variant(mode, align_corners=True if "ac" in flags else None,
                   antialias=True if "aa" in flags else None)


def _as_variants(modes, profiles) -> List[Variant]:
    if modes is None:
        variants = default_variants()
    elif isinstance(modes, (str, Variant)):
        raise ValueError(f"modes must be a sequence of mode names/Variants, got the single {modes!r}; "
                         f"wrap it in a list")
    else:
        variants = [m if isinstance(m, Variant) else parse_variant(m) for m in modes]
    if isinstance(profiles, str):
        raise ValueError(f"profiles must be a sequence of profile names, got the single {profiles!r}")
    variants += [Variant(profile=name) for name in (profiles or ())]
    if not variants:
        raise ValueError("nothing to compare: modes and profiles are both empty")
    labels = [v.label for v in variants]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ValueError(f"variants listed more than once: {', '.join(twice)}")
    return variants


# -- where the table is ------------------------------------------------------------

def _pair(value, name) -> Pair:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    try:
        h, w = value
        if isinstance(h, bool) or isinstance(w, bool):
            raise TypeError
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}") from None


def table_layout(model: torch.nn.Module, key: Optional[str] = None,
                 new_grid: Optional[Pair] = None) -> Tuple[str, Pair, int, Optional[Pair]]:
    """(state-dict key of the position table, the model's patch grid, prefix
    tokens in its table, image size the model was built for or None).

    torchvision VisionTransformer and timm ViTs are recognised; for other
    models pass key= and new_grid=."""
    state_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    image = None
    encoder = getattr(model, "encoder", None)
    if key is None and encoder is not None and hasattr(encoder, "pos_embedding") and hasattr(model, "patch_size"):
        key, p = "encoder.pos_embedding", int(model.patch_size)
        image = _pair(model.image_size, "model.image_size")
        new_grid = new_grid or (image[0] // p, image[1] // p)
    elif key is None and hasattr(model, "pos_embed") and hasattr(model, "patch_embed"):
        if getattr(model, "pos_embed", None) is None:
            raise ValueError(f"{type(model).__name__} has no learned position table (pos_embed is None: "
                             f"rotary or no position embedding); nothing to compare")
        key = "pos_embed"
        grid = getattr(model.patch_embed, "grid_size", None)
        img = getattr(model.patch_embed, "img_size", None)
        if new_grid is None and grid is not None:
            new_grid = _pair(tuple(grid), "patch_embed.grid_size")
        if img is not None:
            image = _pair(tuple(img), "patch_embed.img_size")
    if key is None:
        raise ValueError(f"cannot tell where {type(model).__name__} keeps its position table (not a torchvision "
                         f"or timm ViT); pass key= and new_grid=")
    if key not in state_shapes:
        raise ValueError(f"{type(model).__name__} has no state-dict entry {key!r}")
    if new_grid is None:
        raise ValueError(f"cannot tell the patch grid of {type(model).__name__}; pass new_grid=")
    new_grid = _pair(new_grid, "new_grid")
    shape = state_shapes[key]
    prefix = shape[-2] - new_grid[0] * new_grid[1]
    if len(shape) not in (2, 3) or prefix < 0:
        raise ValueError(f"{key} of the model has shape {shape}, not a table for grid "
                         f"{new_grid[0]}x{new_grid[1]}; check new_grid")
    return key, new_grid, prefix, image


def _old_grid(tokens: int, prefix: int, key: str, old_grid) -> Pair:
    grid_tokens = tokens - prefix
    if old_grid is not None:
        old_grid = _pair(old_grid, "old_grid")
        if old_grid[0] * old_grid[1] != grid_tokens:
            raise ValueError(f"old_grid {old_grid[0]}x{old_grid[1]} has {old_grid[0] * old_grid[1]} tokens, but "
                             f"the checkpoint's {key} has {grid_tokens} after {prefix} prefix tokens")
        return old_grid
    side = math.isqrt(max(grid_tokens, 0))
    if grid_tokens <= 0 or side * side != grid_tokens:
        raise ValueError(f"the checkpoint's {key} has {tokens} tokens: after the model's {prefix} prefix tokens "
                         f"{grid_tokens} are left, not a square grid; pass old_grid=(h, w)")
    return (side, side)


def resized_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], variant: Variant,
                       *, key: Optional[str] = None, new_grid: Optional[Pair] = None,
                       old_grid: Optional[Pair] = None, device=None) -> Dict[str, torch.Tensor]:
    """state_dict with its position table resized (by `variant`) to the grid
    of `model`; a new dict, the caller's is not changed. Every other entry is
    the caller's tensor itself."""
    if isinstance(variant, str):
        variant = parse_variant(variant)
    key, grid, prefix, _ = table_layout(model, key, new_grid)
    if key not in state_dict:
        near = [k for k in state_dict if "pos" in k.rsplit(".", 1)[-1].lower()][:4]
        raise ValueError(f"the state dict has no {key!r} (the model's position table)"
                         + (f"; position-like keys: {', '.join(near)}" if near else "")
                         + " (a 'module.' prefix or a nested 'model' dict? pass the bare state dict)")
    table = state_dict[key]
    if not isinstance(table, torch.Tensor) or table.dim() not in (2, 3) or not table.is_floating_point():
        raise ValueError(f"the state dict's {key} is not a floating-point (1, tokens, dim) table")
    old = _old_grid(table.shape[-2], prefix, key, old_grid)
    if device is not None:
        table = table.to(device)
    out = dict(state_dict)
    out[key] = variant.resize(table, grid, old, prefix)
    return out


# -- measuring -----------------------------------------------------------------------

def _rss_bytes(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so that each
    row starts from the same resident set: otherwise the first row pays for
    pages later rows reuse, and the column measures the order of the rows."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _reset_peak_rss() -> bool:
    """Set the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _PeakMemory:
    """Peak memory of a block above what was in use when it began.

    CUDA: torch.cuda.max_memory_allocated (tensor bytes of the caching
    allocator). CPU: the process's peak resident set (Linux VmHWM, reset
    through /proc/self/clear_refs after the heap's free pages went back to
    the OS), which counts every allocation, torch's and Python's, at page
    granularity; None where the kernel offers neither."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"
        self.bytes: Optional[int] = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _rss_bytes("VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start is not None:
            peak = _rss_bytes("VmHWM")
            self.bytes = None if peak is None else max(0, peak - self._start)
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ModeResult:
    """One row of compare_modes."""
    label: str                     # Variant.label: 'bicubic+aa', 'timm', ...
    settings: str                  # what ran: 'bicubic, antialias, in float32'
    old_grid: Pair
    new_grid: Pair
    samples: int
    accuracy: float                # top-1, in [0, 1]
    loss: float                    # mean cross-entropy
    metric: Optional[float]        # metric(logits, targets) over the whole set, if given
    resize_ms: float               # the table's resize alone
    eval_s: float                  # load_state_dict + the pass over the loader
    peak_bytes: Optional[int]      # peak memory of resize + load + evaluation, above the start
    memory_kind: str               # what peak_bytes measures
    correct: List[bool] = field(default_factory=list, repr=False)  # per sample, for paired tests

    def to_dict(self, per_sample: bool = False) -> Dict[str, Any]:
        d = asdict(self)
        if not per_sample:
            d.pop("correct")
        return d


def _evaluate(model, loader, device, metric, expect_hw: Optional[Pair]):
    correct_all: List[bool] = []
    loss_sum, n = 0.0, 0
    logits_all, targets_all = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("the loader must yield (images, targets) batches")
        x, y = batch[0], batch[1]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"the loader's images must be (N, C, H, W) tensors, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if expect_hw is not None and tuple(x.shape[-2:]) != tuple(expect_hw):
            raise ValueError(f"the loader yields {x.shape[-2]}x{x.shape[-1]} images, but the model takes "
                             f"{expect_hw[0]}x{expect_hw[1]} (image_size); resize the data to the new size")
        y = torch.as_tensor(y)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
        logits = model(x)
        if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
            raise ValueError(f"the model returned {tuple(logits.shape)} for {y.shape[0]} targets; "
                             f"compare_modes evaluates classifiers ((N, classes) logits)")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
            raise ValueError(f"a target of {int(y.min())}..{int(y.max())} is outside the model's "
                             f"{logits.shape[1]} classes")
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct_all += (logits.argmax(dim=1) == y).tolist()
        n += y.shape[0]
        if metric is not None:
            logits_all.append(logits.float().cpu())
            targets_all.append(y.cpu())
    if n == 0:
        raise ValueError("the loader yielded no samples (a one-shot iterator is used up after the first "
                         "mode: pass a DataLoader or a list of batches)")
    value = None
    if metric is not None:
        value = float(metric(torch.cat(logits_all), torch.cat(targets_all)))
    return correct_all, loss_sum / n, value


def check_fits(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], table_key: str) -> None:
    """Refuse, before any work, a checkpoint that cannot load strictly into
    the model for reasons other than the table's grid: the wrong
    architecture, not the wrong resolution."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in state_dict]
    unexpected = [k for k in state_dict if k not in mine]
    shapes = [f"{k} {tuple(state_dict[k].shape)} (model: {tuple(mine[k].shape)})" for k in mine
              if k in state_dict and k != table_key and isinstance(state_dict[k], torch.Tensor)
              and tuple(state_dict[k].shape) != tuple(mine[k].shape)]
    if not (missing or unexpected or shapes):
        return
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)):
        if items:
            problems.append(f"{what}: {', '.join(items[:3])}" + (f" (+{len(items) - 3} more)" if len(items) > 3 else ""))
    raise ValueError(f"the checkpoint does not fit {type(model).__name__} (another architecture or "
                     f"configuration?): {'; '.join(problems)}")


def _warm_up(model, loader, device, expect_hw) -> None:
    """One untimed forward on the first batch, so that one-time costs (lazy
    initialisation, first-touch pages, thread pools) do not land on the first
    row's time and memory."""
    batch = next(iter(loader), None)
    if batch is None:
        raise ValueError("the loader yielded no batches")
    with torch.inference_mode():
        _evaluate(model, [batch], device, None, expect_hw)
    _sync(device)


def compare_modes(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], loader: Iterable,
                  image_size=None, modes: Optional[Sequence[Union[str, Variant]]] = None,
                  profiles: Sequence[str] = (), device=None,
                  metric: Optional[Callable[[torch.Tensor, torch.Tensor], float]] = None, *,
                  key: Optional[str] = None, new_grid: Optional[Pair] = None, old_grid: Optional[Pair] = None,
                  progress: Optional[Callable[[ModeResult], None]] = None) -> List[ModeResult]:
    """Evaluate `state_dict` (a checkpoint at its own resolution) resized to
    `model`'s resolution, once per resize variant.

    model: built at the new size (torchvision vit_*(image_size=...), timm
        create_model(..., img_size=...)); its weights are replaced by each
        variant's state dict (strict load) and left holding the last one.
    state_dict: the checkpoint's bare state dict; not changed.
    loader: re-iterable (images, targets) batches at image_size, e.g. a
        DataLoader; it is iterated once per variant.
    image_size: (h, w) or int; checked against the model (None: the model's).
    modes: mode names ('bicubic', 'bicubic+aa', 'bilinear+ac'), profile names
        or Variants; None: default_variants(), every mode with its flags.
    profiles: library profiles to add as rows ('torchvision', 'timm', ...).
    device: where the model and the evaluation run (None: the model's
        device); the table is resized where the state dict keeps it.
    metric: metric(logits (N, K) float32 CPU, targets (N,)) -> float, on the
        whole set at once (so AUC, F1, ... are exact, not batch means).
    key, new_grid, old_grid: the table's key, the model's grid, the
        checkpoint's grid, for models or checkpoints this cannot tell.
    progress: called with each row as it is done.

    Returns one ModeResult per variant, in order. Peak memory: see
    ModeResult.memory_kind (CUDA: max_memory_allocated; CPU: peak RSS).
    """
    variants = _as_variants(modes, profiles)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    table_key, grid, prefix, built_image = table_layout(model, key, new_grid)
    expect = built_image
    if image_size is not None:
        image = _pair(image_size, "image_size")
        if built_image is not None and image != built_image:
            raise ValueError(f"image_size {image[0]}x{image[1]} but the model was built for "
                             f"{built_image[0]}x{built_image[1]}; build it at the new size")
        expect = image
    check_fits(model, state_dict, table_key)
    table = state_dict[table_key]
    if not isinstance(table, torch.Tensor) or table.dim() not in (2, 3) or not table.is_floating_point():
        raise ValueError(f"the state dict's {table_key} is not a floating-point (1, tokens, dim) table")
    old = _old_grid(table.shape[-2], prefix, table_key, old_grid)
    model.to(device)
    was_training = model.training
    model.eval()
    rows: List[ModeResult] = []
    try:
        _warm_up(model, loader, device, expect)
        for variant in variants:
            with _PeakMemory(device) as memory:
                _sync(device)
                start = time.perf_counter()
                # resized where the checkpoint lives, as a user resizes before loading (a CPU-only
                # vitpe build cannot take CUDA tables); load_state_dict copies it to the model's device.
                # resize_ms times the op call alone
                new_table = variant.resize(table, grid, old, prefix)
                _sync(device)
                resize_ms = 1e3 * (time.perf_counter() - start)
                state = {**state_dict, table_key: new_table}
                del new_table
                start = time.perf_counter()
                try:
                    model.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                    raise ValueError(f"the resized state dict does not fit {type(model).__name__} "
                                     f"(strict load): {' '.join(lines[1:3]) or lines[0]}") from None
                del state
                with torch.inference_mode():
                    correct, loss, value = _evaluate(model, loader, device, metric, expect)
                _sync(device)
                eval_s = time.perf_counter() - start
            row = ModeResult(variant.label, variant.description, old, grid, len(correct),
                             sum(correct) / len(correct), loss, value, resize_ms, eval_s, memory.bytes,
                             memory.kind, correct)
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        model.train(was_training)
    return rows


# -- reading the rows ------------------------------------------------------------------

def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value: do two classifiers' per-sample
    correctness differ more than chance, counting only the samples where
    exactly one of them is right? 1.0 when none differ."""
    if len(a) != len(b):
        raise ValueError(f"per-sample results of different lengths: {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled; in logs so large n stays finite
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def _human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_table(rows: Sequence[ModeResult], metric_name: str = "metric") -> str:
    """The rows as a text table, with each row's accuracy against the best
    row's: the difference and the exact McNemar p-value over the same samples
    (p < 0.05: the two differ by more than chance on this data)."""
    if not rows:
        return "(no rows)"
    best = max(rows, key=lambda r: (r.accuracy, -r.loss))
    has_metric = any(r.metric is not None for r in rows)
    paired = all(len(r.correct) == len(best.correct) and r.correct for r in rows)
    header = ["mode", "settings", "accuracy", "loss"] + ([metric_name] if has_metric else []) + \
             (["vs best", "p (McNemar)"] if paired else []) + ["resize ms", "eval s", "peak mem"]
    table = []
    for r in rows:
        cells = [r.label, r.settings, f"{100 * r.accuracy:.2f}%", f"{r.loss:.4f}"]
        if has_metric:
            cells.append("-" if r.metric is None else f"{r.metric:.4g}")
        if paired:
            if r is best:
                cells += ["best", "-"]
            else:
                cells += [f"{100 * (r.accuracy - best.accuracy):+.2f}", f"{mcnemar_p(r.correct, best.correct):.3g}"]
        cells += [f"{r.resize_ms:.2f}", f"{r.eval_s:.2f}", _human_bytes(r.peak_bytes)]
        table.append(cells)
    right = {i for i, h in enumerate(header) if h not in ("mode", "settings")}
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    lines = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, table)]
    r0 = rows[0]
    n = r0.samples
    se = math.sqrt(max(best.accuracy * (1 - best.accuracy), 1e-12) / n) if n else float("nan")
    lines.append(f"{n} samples, grid {r0.old_grid[0]}x{r0.old_grid[1]} -> {r0.new_grid[0]}x{r0.new_grid[1]}; "
                 f"one accuracy's standard error ~{100 * se:.2f} points; peak mem: {r0.memory_kind} above the "
                 f"start of each row")
    return "\n".join(lines)

