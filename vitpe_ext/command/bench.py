"""vitpe bench: time the op against the anchors' ways of resizing a table.

    vitpe bench --device cpu --threads 2 --cases vitb16-512 \
        --modes bicubic-ac --dtypes float32 --json bench.json

Every row is verified before it is timed, in the same process: the op's
output (and, for fwd+bwd rows, its input gradient) must match the recipe
(vitpe_ext.op.reference.recipe_interpolate) -- float32 at assert_close's
default tolerance against the float32 recipe, bfloat16/float16 within one
rounding of the float64 recipe. A row that does not match is marked FAILED
and the exit code is 1.

The modes are every mode of the op's table, also corner-aligned and
antialiased where it takes those flags ("bicubic-ac", "bicubic-aa").
Cases with grids of rank 3 (video, volumes) run only when named in --cases;
their recipe permutes to (B, C, T, H, W), where F.interpolate has nearest,
nearest-exact, area and "bilinear" as trilinear (its other modes and
antialias are 2-D only: those rows are n/a).

Each row times, for one case x mode x dtype x pass:
  op           vitpe_ext.interpolate_pos_embed
  recipe       split / permute / F.interpolate / permute / cat (what ViT
               code does inline); the "recipe/op" column is the speed-up
  torchvision  torchvision.models.vision_transformer.interpolate_embeddings,
               where its convention holds (bilinear/bicubic, align_corners=
               True, one class token, square grid, one table)
  timm         timm.layers.resample_abs_pos_embed (one table; its default
               convention is align_corners=False, antialias=True, but it
               forwards both flags, so it is timed for every F.interpolate mode)
  copy         the memory-traffic floor: out.copy_(src) with src shaped like
               the output (fwd+bwd: plus a copy shaped like the input, the
               gradient's write); "op/copy" says how far the op is from it
  copy_in      forward rows whose input is bigger than their output
               (downsampling) also time a copy shaped like the input: the op
               has to read all of it, which an output-sized copy does not;
               listed under the table as "op/copy_in"
On Linux/glibc the bench first keeps freed memory in the process
(--malloc steady, see steady_malloc): otherwise glibc's moving trim/mmap
thresholds can make one contender of one row pay page faults on every call.
Contenders are timed interleaved: each of `repeats` rounds times one batch of
calls of every contender in turn, and each reports its median batch, so a
slow spell of a shared machine lands on all of them alike and the ratios
stay put. CPU: time.perf_counter, after warm-up, with Python's garbage
collector off (as timeit). CUDA: CUDA events, after warm-up; and a second,
"GPU" set of columns for op, recipe and copy replays the same calls captured
in a CUDA graph, which removes the host's work (Python, autograd, launches):
what the op costs the GPU inside a training step whose host runs ahead.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import op
from ..op import PROFILES
from ..op.reference import has_recipe, recipe_interpolate, torch_mode
from .resizing import mode_variants


# -- what is benchmarked --------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A grid_in -> grid_out resize of a (B, P + prod(grid_in), C) table;
    grids of rank 2 ((H, W)) or 3 ((T, H, W))."""
    name: str
    what: str
    batch: int
    prefix: int
    grid_in: Tuple[int, ...]
    grid_out: Tuple[int, ...]
    channels: int


def _square(side: int) -> Tuple[int, int]:
    return (side, side)


CASES: Dict[str, Case] = {c.name: c for c in (
    Case("vitb16-384", "ViT-B/16 224->384", 1, 1, _square(14), _square(24), 768),
    Case("vitb16-512", "ViT-B/16 224->512", 1, 1, _square(14), _square(32), 768),
    Case("vitl14-518", "ViT-L/14 224->518", 1, 1, _square(16), _square(37), 1024),
    Case("dinov2g14-1022", "DINOv2-g/14 +4 reg 518->1022", 1, 5, _square(37), _square(73), 1536),
    Case("vitb16-down", "ViT-B/16 384->224", 1, 1, _square(24), _square(14), 768),
    Case("vitb16-batch8", "8 x ViT-B/16 224->384", 8, 1, _square(14), _square(24), 768),
    # grids of rank 3 (T, H, W); VideoMAE has no class token
    Case("videomae-b-t32", "VideoMAE-B 16x14x14->32x14x14", 1, 0, (16, 14, 14), (32, 14, 14), 768),
    Case("videomae-b-384", "VideoMAE-B 16x14x14->16x24x24", 1, 0, (16, 14, 14), (16, 24, 24), 768),
    Case("volume-16", "3-D medical 8x8x8->16x16x16", 1, 0, (8, 8, 8), (16, 16, 16), 768),
    Case("smoke", "tiny (tests)", 1, 1, _square(5), _square(7), 16),
    Case("smoke-down", "tiny downsample (tests)", 1, 1, _square(7), _square(5), 16),
    Case("smoke-3d", "tiny grid of rank 3 (tests)", 1, 0, (2, 3, 3), (3, 4, 5), 16),
)}
# rank 3 is opt-in: its tables are 8-25x a ViT-B one, and on a 2-core CPU
# its 3-D recipe rows would about double the default run
DEFAULT_CASES = [name for name, c in CASES.items() if not name.startswith("smoke") and len(c.grid_in) == 2]

# name -> (the op's mode, align_corners, antialias): "bicubic", "bicubic-ac", "bicubic-aa", ...
MODES: Dict[str, tuple] = {mode + ("-ac" if ac else "-aa" if aa else ""): (mode, ac, aa)
                           for mode, ac, aa in mode_variants()}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "float64": torch.float64}
PASSES = {"fwd": "forward", "fwdbwd": "forward+backward"}


@dataclass
class Row:
    case: str
    what: str
    mode: str
    dtype: str
    passes: str
    batch: int
    prefix: int
    grid_in: Tuple[int, ...]
    grid_out: Tuple[int, ...]
    channels: int
    status: str = "ok"          # ok | FAILED | n/a
    note: str = ""
    seconds: Dict[str, Optional[float]] = field(default_factory=dict)  # op, recipe, ...

    def ratio(self, num, den):
        a, b = self.seconds.get(num), self.seconds.get(den)
        return a / b if a is not None and b else None


# -- timing ----------------------------------------------------------------------

def steady_malloc() -> str:
    """Keeps freed memory in the process (glibc: raises the heap-trim and mmap
    thresholds and pins them). By default glibc hands freed memory back to
    the kernel by thresholds that move with the allocation history, and a
    bench that allocates tables of a few MB per call can then land one row
    where every call of one contender gets fresh pages: measured here, 360
    to 1,500 page faults a call, 3-5x that row's time, on whichever
    contender (op, recipe or timm) the heap layout happened to hit. A
    training loop's steady state does not do that; this keeps the rows
    comparable. Returns what was set, for the machine info."""
    if not sys.platform.startswith("linux"):
        return "default"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "default"
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    if mallopt(m_trim_threshold, 1 << 30) != 1 or mallopt(m_mmap_threshold, 32 << 20) != 1:
        return "default"  # not glibc, or refused
    return "kept (trim 1 GiB, mmap 32 MiB)"


class Timer:
    """Interleaved medians: `repeats` rounds, each timing one batch of every
    contender; a batch lasts about min_time / repeats."""

    def __init__(self, device: str, min_time: float, repeats: int):
        self.device, self.min_time, self.repeats = device, min_time, repeats

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        return self.many({"fn": fn})["fn"]

    def many(self, fns: Dict[str, Callable[[], object]],
             calls_per_fn: Optional[Dict[str, int]] = None) -> Dict[str, float]:
        """Seconds per call of each function (a function standing for
        calls_per_fn[name] calls, as a replayed graph does, is divided)."""
        # Python's garbage collector is off while timing, as timeit does: a
        # collection triggered by whichever contender allocated the 700th
        # object would be charged to it at random
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._time(fns, calls_per_fn or {})
        finally:
            if gc_was_enabled:
                gc.enable()

    def _batch(self, fn, n: int) -> float:
        if self.device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    def _time(self, fns, calls_per_fn) -> Dict[str, float]:
        per_batch = {}
        for name, fn in fns.items():
            # warm-up: at least 3 calls and ~5% of the budget (allocator, caches, pool)
            self._sync()
            start, calls = time.perf_counter(), 0
            while calls < 3 or time.perf_counter() - start < 0.05 * self.min_time:
                fn()
                calls += 1
                self._sync()
            one = (time.perf_counter() - start) / calls
            per_batch[name] = max(1, int(self.min_time / self.repeats / max(one, 1e-9)))
        samples: Dict[str, List[float]] = {name: [] for name in fns}
        for _ in range(self.repeats):
            for name, fn in fns.items():
                n = per_batch[name]
                samples[name].append(self._batch(fn, n) / (n * calls_per_fn.get(name, 1)))
        return {name: statistics.median(v) for name, v in samples.items()}


def capture_graph(fn: Callable[[], object], calls: int):
    """`calls` calls of fn captured in one CUDA graph (after a warm-up on a
    side stream, as torch.cuda.graph asks); returns the graph's replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    torch.cuda.synchronize()
    return graph.replay


# -- the contenders ----------------------------------------------------------------

def _op(x, case, spec):
    mode, ac, aa = spec
    return op.interpolate_pos_embed(x, case.grid_out, case.grid_in,
                                    num_prefix_tokens=case.prefix, mode=mode,
                                    align_corners=ac, antialias=aa)


def _recipe(x, case, spec, compute_dtype=None):
    mode, ac, aa = spec
    return recipe_interpolate(x, case.grid_out, case.grid_in,
                              num_prefix_tokens=case.prefix, mode=mode, align_corners=ac,
                              antialias=aa, compute_dtype=compute_dtype)


def _torchvision_fn(case, spec):
    """torchvision's interpolate_embeddings, where its convention holds."""
    mode, ac, aa = spec
    convention = PROFILES["torchvision"]
    squares = len(case.grid_in) == 2 and case.grid_in == _square(case.grid_in[0]) \
        and case.grid_out == _square(case.grid_out[0])
    if not (squares and mode in convention.modes and bool(ac) == convention.align_corners
            and bool(aa) == convention.antialias and case.prefix == 1 and case.batch == 1):
        return None
    try:
        from torchvision.models.vision_transformer import interpolate_embeddings
    except ImportError:
        return None

    def run(x):  # patch_size 1: image_size is the new grid side
        return interpolate_embeddings(case.grid_out[0], 1, {"encoder.pos_embedding": x}, mode)["encoder.pos_embedding"]
    return run


def _timm_fn(case, spec):
    """timm's resample_abs_pos_embed (one table, F.interpolate modes)."""
    mode, ac, aa = spec
    if case.batch != 1 or len(case.grid_in) != 2 or torch_mode(mode) != mode:
        return None  # timm's tables are 2-D; it hands the mode to F.interpolate by name
    try:
        from timm.layers import resample_abs_pos_embed
    except ImportError:
        return None

    import inspect
    if ac and "align_corners" not in inspect.signature(resample_abs_pos_embed).parameters:
        return None  # timm < 1.0.31 always uses align_corners=False
    extra = {"align_corners": ac} if ac else {}

    def run(x):
        return resample_abs_pos_embed(x, list(case.grid_out), list(case.grid_in),
                                      num_prefix_tokens=case.prefix, interpolation=mode,
                                      antialias=aa, **extra)
    return run


def _forward_only(f, x):
    return lambda: f(x)


def _forward_backward(f, x, grad):
    leaf = x.detach().requires_grad_(True)

    def run():
        y = f(leaf)
        return torch.autograd.grad(y, leaf, grad)[0]
    return run


# -- verification ------------------------------------------------------------------

_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}
_MIN_NORMAL_EXP = {torch.float16: -14, torch.bfloat16: -126}


def _half_mismatch(ours, ref64, inputs64, ref32=None) -> Optional[str]:
    """None if the half-type result is within one rounding of the float64
    reference: 0.5 ulp plus a slack of a few fp32 ulps of the largest input
    (fp32 accumulation can push a value sitting on a midpoint to the other
    side). ref32, the recipe run in float32, widens the slack by its own
    distance from ref64: for half types ATen (and the op) compute the tap
    weights in float, not double, which alone moves lanczos3 results on large
    tables by ~1e-5. Else a description of the worst element."""
    mant, emin = _MANTISSA_BITS[ours.dtype], _MIN_NORMAL_EXP[ours.dtype]
    _, e = torch.frexp(ref64.abs())
    ulp = torch.exp2(torch.clamp(e.to(torch.float64) - 1, min=emin) - mant)
    scale = max(inputs64.abs().max().item(), ref64.abs().max().item(), 1.0)
    err = (ours.to(torch.float64) - ref64).abs()
    slack = 64 * 2.0 ** -24 * scale
    if ref32 is not None:
        slack = slack + (ref32.to(torch.float64) - ref64).abs()
    bad = err > 0.5 * ulp + slack
    if not bad.any():
        return None
    return (f"{int(bad.sum())} of {ref64.numel()} elements off by more than one {ours.dtype} "
            f"rounding (max {(err / ulp).max().item():.3g} ulp)")


def _mismatch(ours, x, grad, case, spec, backward) -> Optional[str]:
    """Compares the op's output (backward: the input gradient) with the recipe's."""
    if x.dtype in (torch.float32, torch.float64):
        ref = _recipe(x, case, spec) if not backward else _forward_backward(
            lambda t: _recipe(t, case, spec), x, grad)()
        try:
            torch.testing.assert_close(ours, ref)
        except AssertionError as err:
            return str(err).splitlines()[0] + " " + " ".join(str(err).splitlines()[1:3])
        return None
    x64, x32 = x.to(torch.float64), x.to(torch.float32)
    if backward:
        run = lambda t: _recipe(t, case, spec)  # noqa: E731
        ref64 = _forward_backward(run, x64, grad.to(torch.float64))()
        ref32 = _forward_backward(run, x32, grad.to(torch.float32))()
        return _half_mismatch(ours, ref64, grad.to(torch.float64), ref32)
    return _half_mismatch(ours, _recipe(x64, case, spec), x64, _recipe(x32, case, spec))


# -- one row -------------------------------------------------------------------------

def run_row(case: Case, mode_name: str, dtype_name: str, pass_name: str, device: str,
            timer: Timer, seed: int = 0) -> Row:
    spec, dtype = MODES[mode_name], DTYPES[dtype_name]
    row = Row(case.name, case.what, mode_name, dtype_name, pass_name, case.batch, case.prefix,
              case.grid_in, case.grid_out, case.channels)
    rank = len(case.grid_in)
    if not has_recipe(spec[0], rank, spec[2]):
        row.status, row.note = "n/a", (
            "the recipe needs F.interpolate(mode='lanczos') (torch >= 2.14)" if rank == 2 else
            f"F.interpolate has no {mode_name} for grids of rank {rank}")
        return row
    gen = torch.Generator().manual_seed(seed)
    tokens_in = case.prefix + math.prod(case.grid_in)
    tokens_out = case.prefix + math.prod(case.grid_out)
    x = torch.randn(case.batch, tokens_in, case.channels, generator=gen).to(device=device, dtype=dtype)
    grad = torch.randn(case.batch, tokens_out, case.channels, generator=gen).to(device=device, dtype=dtype)
    backward = pass_name == "fwdbwd"

    def make(f):
        return _forward_backward(f, x, grad) if backward else _forward_only(f, x)

    op = make(lambda t: _op(t, case, spec))
    # 1. verify
    try:
        problem = _mismatch(op(), x, grad, case, spec, backward)
    except Exception as err:  # the op raising is a failure too, not a crash of the harness
        problem = f"{type(err).__name__}: {err}"
    if problem:
        row.status, row.note = "FAILED", problem
        return row
    # 2. time, every contender interleaved with the others
    out_src = torch.randn_like(grad)
    out_dst = torch.empty_like(grad)
    if backward:
        in_src, in_dst = torch.randn_like(x), torch.empty_like(x)
        copy = lambda: (out_dst.copy_(out_src), in_dst.copy_(in_src))  # noqa: E731
    else:
        copy = lambda: out_dst.copy_(out_src)  # noqa: E731
    fns = {"op": op, "copy": copy}
    if not backward and tokens_in > tokens_out:
        in_src, in_dst = torch.randn_like(x), torch.empty_like(x)
        fns["copy_in"] = lambda: in_dst.copy_(in_src)
    for name, f in (("recipe", lambda t: _recipe(t, case, spec)),
                    ("torchvision", _torchvision_fn(case, spec)), ("timm", _timm_fn(case, spec))):
        row.seconds[name] = None
        if f is None:
            continue
        try:
            fn = make(f)
            fn()  # a dtype F.interpolate lacks on this device raises here
            fns[name] = fn
        except Exception as err:
            row.note += f"{name}: {type(err).__name__}: {str(err).splitlines()[0]}; "
    calls = {}
    if device == "cuda":
        # the same calls in CUDA graphs: GPU time, no host work. Enough calls
        # per graph for ~2 ms of GPU work, at most 20.
        for name in ("op", "recipe", "copy"):
            if name not in fns:
                continue
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(3):
                fns[name]()
            torch.cuda.synchronize()
            n = max(1, min(20, int(2e-3 / max((time.perf_counter() - start) / 3, 1e-9))))
            try:
                fns[name + "_gpu"] = capture_graph(fns[name], n)
                calls[name + "_gpu"] = n
            except Exception as err:
                row.note += f"{name} in a CUDA graph: {type(err).__name__}: {str(err).splitlines()[0]}; "
    row.seconds.update(timer.many(fns, calls))
    return row


# -- report ----------------------------------------------------------------------------

def machine_info(device: str) -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: Dict[str, object] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    try:
        import timm
        info["timm"] = timm.__version__
    except ImportError:
        info["timm"] = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    if hasattr(os, "getloadavg"):
        info["loadavg_1min_at_start"] = round(os.getloadavg()[0], 2)
    return info


def _t(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _x(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def format_table(rows: Sequence[Row], info: Dict[str, object]) -> str:
    head = (f"vitpe bench | {info['cpu']} ({info['cpu_count']} CPUs) | device {info['device']}"
            + (f" ({info['gpu']})" if info.get("gpu") else "")
            + f" | torch {info['torch']}, {info['torch_threads']} threads"
            + f" | torchvision {info['torchvision'] or '-'} | timm {info['timm'] or '-'}"
            + (f" | load {info['loadavg_1min_at_start']}" if "loadavg_1min_at_start" in info else "")
            + (f" | freed memory {info['malloc']}" if "malloc" in info else ""))
    gpu = info["device"] == "cuda"
    cols = ["case", "mode", "dtype", "pass", "op", "recipe", "recipe/op", "copy", "op/copy"]
    if gpu:
        cols += ["op gpu", "recipe gpu", "recipe/op gpu", "op/copy gpu"]
    cols += ["torchvision", "timm", "status"]
    body = []
    for r in rows:
        s = r.seconds
        line = [r.case, r.mode, r.dtype, r.passes, _t(s.get("op")), _t(s.get("recipe")),
                _x(r.ratio("recipe", "op")), _t(s.get("copy")), _x(r.ratio("op", "copy"))]
        if gpu:
            line += [_t(s.get("op_gpu")), _t(s.get("recipe_gpu")), _x(r.ratio("recipe_gpu", "op_gpu")),
                     _x(r.ratio("op_gpu", "copy_gpu"))]
        line += [_t(s.get("torchvision")), _t(s.get("timm")),
                 r.status + (f" ({r.note.strip('; ')})" if r.status != "ok" and r.note else "")]
        body.append(line)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)).rstrip() for b in body]
    notes = [f"  {r.case} {r.mode} {r.dtype} {r.passes}: {r.note.strip('; ')}"
             for r in rows if r.status == "ok" and r.note]
    reads = [f"  {r.case} {r.mode} {r.dtype} {r.passes}: input-sized copy {_t(r.seconds['copy_in'])}, "
             f"op/copy_in {_x(r.ratio('op', 'copy_in'))}"
             for r in rows if r.status == "ok" and r.seconds.get("copy_in")]
    if reads:
        lines += ["rows that read more than they write, against a copy of their input:"] + reads
    if notes:
        lines += ["notes (contenders that could not run):"] + notes
    return "\n".join(lines)


def to_json(rows: Sequence[Row], info: Dict[str, object]) -> Dict[str, object]:
    out = []
    for r in rows:
        d = asdict(r)
        d["recipe_over_op"] = r.ratio("recipe", "op")
        d["op_over_copy"] = r.ratio("op", "copy")
        if "copy_in" in r.seconds:
            d["op_over_copy_in"] = r.ratio("op", "copy_in")
        if "op_gpu" in r.seconds:
            d["recipe_over_op_gpu"] = r.ratio("recipe_gpu", "op_gpu")
            d["op_over_copy_gpu"] = r.ratio("op_gpu", "copy_gpu")
        out.append(d)
    return {"machine": info, "rows": out}


# -- command line -------------------------------------------------------------------------

def _names(text: str, valid: Sequence[str], what: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(valid)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vitpe bench",
        description="Verify, then time, vitpe's interpolate_pos_embed against the F.interpolate "
                    "recipe, torchvision, timm and a same-size copy.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) (default: torch's own choice)")
    p.add_argument("--cases", type=lambda s: _names(s, list(CASES), "case"), default=DEFAULT_CASES,
                   help=f"comma-separated, from: {', '.join(CASES)} (default: {', '.join(DEFAULT_CASES)}; "
                        "the grids of rank 3 run only when named)")
    p.add_argument("--modes", type=lambda s: _names(s, list(MODES), "mode"), default=list(MODES),
                   help=f"comma-separated, from: {', '.join(MODES)} (default: all)")
    p.add_argument("--dtypes", type=lambda s: _names(s, list(DTYPES), "dtype"),
                   default=["float32", "bfloat16"],
                   help=f"comma-separated, from: {', '.join(DTYPES)} (default: float32,bfloat16)")
    p.add_argument("--passes", type=lambda s: _names(s, list(PASSES), "pass"), default=list(PASSES),
                   help="comma-separated, from: fwd (forward), fwdbwd (forward+backward)")
    p.add_argument("--min-time", type=float, default=0.25,
                   help="seconds spent timing each contender of each row (default 0.25)")
    p.add_argument("--repeats", type=int, default=7,
                   help="timed batches per measurement; the median is reported (default 7)")
    p.add_argument("--malloc", choices=("steady", "default"), default="steady",
                   help="steady (default): keep freed memory in the process (glibc mallopt), so "
                        "no row pays page faults on every call because of an earlier row's heap "
                        "layout; default: leave the C allocator as it is")
    p.add_argument("--json", metavar="PATH", help="also write the machine and rows as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("vitpe bench: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("vitpe bench: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or not (math.isfinite(args.min_time) and args.min_time > 0):
        print(f"vitpe bench: --repeats must be >= 1 and --min-time a positive finite number of seconds "
              f"(got --repeats {args.repeats}, --min-time {args.min_time})", file=sys.stderr)
        return 2
    if args.json:  # checked now, not after minutes of timing
        folder = os.path.dirname(os.path.abspath(args.json))
        why = ("is a directory" if os.path.isdir(args.json) else
               f"no such directory {folder}" if not os.path.isdir(folder) else
               f"cannot write in {folder}" if not os.access(folder, os.W_OK) else None)
        if why:
            print(f"vitpe bench: --json {args.json}: {why}", file=sys.stderr)
            return 2
    info = machine_info(args.device)
    info["malloc"] = steady_malloc() if args.malloc == "steady" else "default"
    timer = Timer(args.device, args.min_time, args.repeats)
    rows = []
    for case in args.cases:
        for mode in args.modes:
            for dtype in args.dtypes:
                for pass_name in args.passes:
                    rows.append(run_row(CASES[case], mode, dtype, pass_name, args.device, timer))
    print(format_table(rows, info), flush=True)
    failed = [r for r in rows if r.status == "FAILED"]
    if failed:
        print(f"\n{len(failed)} row(s) FAILED verification against the recipe", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(rows, info), f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
