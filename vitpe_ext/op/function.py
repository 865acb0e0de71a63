"""The public function, interpolate_pos_embed, and what it does before it
calls the op: argument types checked for what they are, defaults filled in
from the mode table, a library profile resolved to plain settings. Every
other check of the arguments runs in C++ (csrc/shim.cpp), once, for this
function, torch.ops.vitpe.* and the fake kernels alike."""
from __future__ import annotations

import numbers
from typing import List, Optional, Tuple, Union

import torch

from .modes import DEFAULT_MODE, MODES
from .profiles import Profile, get_profile
from .registration import _forward


# -- argument types --------------------------------------------------------------
# The schema takes plain ints, floats, str and bool. Python's duck typing would
# let True pass as 1, a dict as its keys and "12" as two scale factors, so each
# argument is checked for what it is; NumPy scalars and 0-d tensors are numbers.

def _is_numpy_bool(value) -> bool:
    kind = type(value)  # numpy.bool_ (named "bool" from NumPy 2 on); not an int, but truth-valued
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def _size(value, name: str):
    """One grid size: an int, SymInt, NumPy integer or 0-d integer tensor."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and not (value.dtype.is_floating_point or value.dtype.is_complex
                                     or value.dtype == torch.bool):
            return int(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return int(value)
    raise ValueError(f"{name} must be ints (the grid's sides), got {value!r} of type {type(value).__name__}")


def _factor(value, name: str) -> float:
    """One scale factor: a real number (not a bool), NumPy scalar or 0-d tensor."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and not (value.dtype.is_complex or value.dtype == torch.bool):
            return float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return float(value)
    raise ValueError(f"{name} must be one float or one per axis of the grid, got {value!r} of type "
                     f"{type(value).__name__}")


def _sizes(value, name: str, kind: str = "ints", rank: int = 2) -> list:
    """One number, or one per axis of the grid (a list, tuple, torch.Size,
    1-D tensor or array) -> a list; one number stands for every axis of a
    grid of `rank` axes (new_size's: 2, a square grid). How many values a
    grid may have (1, 2 or 3) and whether old_size, new_size and
    scale_factor agree is the op's check."""
    if kind == "ints":  # the common calls, (h, w) or h as plain ints, without the checks below
        if type(value) is int:
            return [value] * rank
        if type(value) in (tuple, list) and all(type(v) is int for v in value):
            return list(value)
    one = _size if kind == "ints" else _factor
    if isinstance(value, (list, tuple)) or (getattr(value, "ndim", None) == 1
                                            and type(value).__name__ in ("Tensor", "Parameter", "ndarray")):
        return [one(v, name) for v in value]
    if isinstance(value, (torch.Tensor, numbers.Number, torch.SymInt)) or _is_numpy_bool(value):
        return [one(value, name)] * rank
    raise ValueError(f"{name} must be one {kind[:-1]} or one per axis of the grid (1, 2 or 3 {kind}), got "
                     f"{value!r} of type {type(value).__name__}")


def _flag(value, name: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise ValueError(f"{name} must be True, False or None, got {value!r} of type {type(value).__name__}")


def _count(value, name: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return int(value)
    raise ValueError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")


def _check_table(pos_embed) -> None:
    if not isinstance(pos_embed, torch.Tensor):
        raise ValueError(f"interpolate_pos_embed: pos_embed must be a torch.Tensor, got "
                         f"{type(pos_embed).__name__}")
    if pos_embed.layout != torch.strided or pos_embed.is_nested or pos_embed.is_quantized:
        kind = ("nested" if pos_embed.is_nested else "quantized" if pos_embed.is_quantized
                else str(pos_embed.layout).replace("torch.", ""))
        raise ValueError(f"interpolate_pos_embed: pos_embed must be a dense strided tensor, got a {kind} "
                         f"tensor; convert it first (.to_dense(), .dequantize(), ...)")


def _positions(value, new_size: list) -> List[float]:
    """sample_positions, one sequence per axis of the grid (lists, tuples,
    1-D tensors or arrays of real numbers) of new_size[i] positions each, as
    the op's flat list: the outermost axis first. Which values are valid is
    the op's check; the op sees only the total, so the count per axis is
    checked here."""
    def position(v, i):
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and not _is_numpy_bool(v):
            return float(v)
        if isinstance(v, torch.Tensor) and v.dim() == 0 and not (v.dtype.is_complex or v.dtype == torch.bool):
            return float(v)
        raise ValueError(f"sample_positions[{i}] must hold real numbers (old-grid positions), got {v!r} of type "
                         f"{type(v).__name__}")

    def axis(values, i):
        if isinstance(values, torch.Tensor) and values.dim() == 1 and not (
                values.dtype.is_complex or values.dtype == torch.bool):
            return values.detach().to("cpu", torch.float64).tolist()
        if isinstance(values, (list, tuple)) or (getattr(values, "ndim", None) == 1
                                                 and type(values).__name__ == "ndarray"):
            return [position(v, i) for v in values]
        raise ValueError(f"sample_positions[{i}] must be a sequence of floats (one position per output of that "
                         f"axis), got {values!r} of type {type(values).__name__}")
    rank = len(new_size)
    if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)) or len(value) != rank:
        if isinstance(value, (list, tuple)):
            kind = f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
        else:
            kind = f"a {type(value).__name__}"
        raise ValueError(f"sample_positions must be a list of {rank} sequence{'s' if rank > 1 else ''}, one per "
                         f"axis of new_size (outermost first), got {kind}")
    axes = [axis(values, i) for i, values in enumerate(value)]
    for i, (positions, size) in enumerate(zip(axes, new_size)):
        if not isinstance(size, torch.SymInt) and len(positions) != size:
            raise ValueError(f"sample_positions[{i}] has {len(positions)} positions but new_size[{i}] is {size}: "
                             f"one position per output of that axis")
    return [p for positions in axes for p in positions]


def _op_args(new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor,
             num_suffix_tokens, sample_positions=None) -> Tuple:
    """The caller's arguments in the op's types, defaults filled in."""
    if mode is None:
        mode = DEFAULT_MODE
    elif not isinstance(mode, str):
        raise ValueError(f"mode must be a str, one of {list(MODES)}, got {mode!r} of type {type(mode).__name__}")
    new = _sizes(new_size, "new_size")
    return (
        new,
        None if old_size is None else _sizes(old_size, "old_size", rank=len(new)),
        _count(num_prefix_tokens, "num_prefix_tokens"),
        mode,
        _flag(align_corners, "align_corners"),
        bool(_flag(antialias, "antialias")),
        None if scale_factor is None else _sizes(scale_factor, "scale_factor", "floats", rank=len(new)),
        _count(num_suffix_tokens, "num_suffix_tokens"),
        None if sample_positions is None else _positions(sample_positions, new),
    )


# -- sizes traced as symbols (torch.export, torch.compile(dynamic=True)) -------------

def as_size(size):
    """size as an int, or as it is when traced as a symbol: int() would
    specialise a SymInt to its example value."""
    return size if isinstance(size, torch.SymInt) else int(size)


def is_traced(sizes) -> bool:
    """Whether any of these sizes is traced rather than known. Dynamo shows
    a traced size to Python code as an int, hence is_compiling()."""
    return torch.compiler.is_compiling() or any(isinstance(s, torch.SymInt) for s in sizes)


def _check_concrete(sizes, prof: Profile, dtype: torch.dtype) -> None:
    """ValueError where an export (or symbolic tracing) would fix sizes
    traced as symbols that the profile's arithmetic needs as numbers: a
    scale factor from the sizes, or a narrowing compute dtype, whose round
    trip the unchanged grid must skip. torch.compile may fix them: it guards
    on the value and recompiles."""
    from torch.fx.experimental.symbolic_shapes import has_static_value  # loaded by any tracer; sympy: not at import
    if (torch.compiler.is_compiling() and not torch.compiler.is_exporting()) or all(
            has_static_value(s) for s in sizes):
        return
    if prof.scale_offset is not None:
        raise ValueError(f"interpolate_pos_embed: profile {prof.name!r} computes its scale factor from the grid "
                         f"sizes as floats ((new + {prof.scale_offset}) / old), which cannot follow a size traced "
                         f"as a symbol; export at a fixed size, or use a profile without the offset "
                         f"(\"dinov2-reg\", \"hf\")")
    raise ValueError(f"interpolate_pos_embed: profile {prof.name!r} resizes a {dtype} table in "
                     f"{prof.compute_dtype} but returns it unchanged on its own grid, a branch on sizes traced as "
                     f"symbols; export at a fixed size, or convert the table to {prof.compute_dtype} first")

def _infer_old_size(grid_tokens: int, rank: int) -> List[int]:
    """The old grid the op infers: the whole grid (rank 1), a square (2), a
    cube (3); a wrong guess is left for the op to report."""
    if rank == 1:
        return [grid_tokens]
    side = int(round(max(grid_tokens, 0) ** (1.0 / rank)))
    return [side] * rank


# -- profiles: a library's conventions, resolved to the op's settings ------------------

def resolve(profile: Optional[str], mode: Optional[str] = None, align_corners: Optional[bool] = None,
            antialias: Optional[bool] = None, scale_factor=None) -> Profile:
    """The settings interpolate_pos_embed runs with for these arguments (None:
    not given), as a Profile: the named profile with the caller's arguments
    merged in, or, without one, the op's defaults (name None). Raises
    ValueError where an argument contradicts the profile. Callers that keep
    settings for later (DynamicPosEmbed, the vitpe command) resolve them once
    here, so that a contradiction fails before any table is resized."""
    if profile is not None and not isinstance(profile, str):
        raise ValueError(f"profile must be a str, got {profile!r} of type {type(profile).__name__}")
    align_corners, antialias = _flag(align_corners, "align_corners"), _flag(antialias, "antialias")
    if profile is None:
        return Profile(None, "vitpe", DEFAULT_MODE if mode is None else mode, align_corners, bool(antialias),
                       None, None, free=("mode", "align_corners", "antialias"), modes=None)
    return get_profile(profile).merged(mode, align_corners, antialias, scale_factor)


def _interpolate_profile(pos_embed: torch.Tensor, new_size, old_size, num_prefix_tokens: int,
                         prof: Profile, num_suffix_tokens: int = 0) -> torch.Tensor:
    """The op with a resolved profile's settings, compute dtype and coordinate
    mapping. pos_embed is 3-D."""
    new_size = _sizes(new_size, "new_size")
    rank = len(new_size)
    num_prefix_tokens = _count(num_prefix_tokens, "num_prefix_tokens")
    num_suffix_tokens = _count(num_suffix_tokens, "num_suffix_tokens")
    if old_size is None:  # the op validates the guess
        old_size = _infer_old_size(pos_embed.shape[1] - num_prefix_tokens - num_suffix_tokens, rank)
    old_size = _sizes(old_size, "old_size", rank=rank)
    narrowing = (prof.compute_dtype is not None and pos_embed.dtype.is_floating_point
                 and torch.finfo(prof.compute_dtype).bits < torch.finfo(pos_embed.dtype).bits)
    traced = is_traced((*new_size, *old_size))
    needs_numbers = prof.scale_offset is not None or narrowing
    if traced and needs_numbers:
        _check_concrete((*new_size, *old_size), prof, pos_embed.dtype)
    if traced and not needs_numbers:
        # Sizes traced as symbols (torch.export, torch.compile(dynamic=True)):
        # a branch on them would specialise the program to the example size or
        # guard it against the table's own grid. None is needed: on an
        # unchanged grid the op returns a finite table unchanged, and so does a
        # widening cast and back (a NaN spreads in bicubic, as F.interpolate).
        pass
    elif [int(s) for s in new_size] == [int(s) for s in old_size]:
        # Every library returns the table itself when the grid does not
        # change; DINOv2's offset mapping and timm's float32 round trip
        # would otherwise alter it.
        return pos_embed.clone(memory_format=torch.contiguous_format)

    scale_factor = None
    if prof.scale_offset is not None and len(old_size) == len(new_size):
        # DINOv2's "historical kludge": F.interpolate(scale_factor=((h+0.1)/H,
        # (w+0.1)/W)). floor(H * sf) == h, and the mapping uses 1/sf, not H/h.
        scale_factor = [(int(n) + prof.scale_offset) / int(o) for n, o in zip(new_size, old_size)]

    orig_dtype = pos_embed.dtype
    table = pos_embed
    if prof.compute_dtype is not None and orig_dtype != prof.compute_dtype:
        table = pos_embed.to(prof.compute_dtype)
    out = _interpolate(table, new_size, old_size, num_prefix_tokens, prof.mode, prof.align_corners,
                       prof.antialias, scale_factor, None, num_suffix_tokens)
    if out.dtype != orig_dtype:
        out = out.to(orig_dtype)
        if (num_prefix_tokens or num_suffix_tokens) and narrowing and not prof.cast_prefix:
            # The libraries split the prefix off before casting, so a narrowing
            # compute dtype (timm's float32 for a float64 table) must not touch
            # it (nor the suffix tokens, copied the same way).
            grid_end = out.shape[1] - num_suffix_tokens
            out = torch.cat([pos_embed[:, :num_prefix_tokens], out[:, num_prefix_tokens:grid_end],
                             pos_embed[:, pos_embed.shape[1] - num_suffix_tokens:]], dim=1)
    return out


# -- the public function ------------------------------------------------------------

def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Union[int, List[int]],
    old_size: Optional[Union[int, List[int]]] = None,
    num_prefix_tokens: int = 1,
    mode: Optional[str] = None,
    align_corners: Optional[bool] = None,
    antialias: Optional[bool] = None,
    scale_factor: Optional[Union[float, List[float]]] = None,
    profile: Optional[str] = None,
    num_suffix_tokens: int = 0,
    sample_positions: Optional[List[List[float]]] = None,
) -> torch.Tensor:
    """Resize a ViT position-embedding table to a new patch grid.

    pos_embed: (B, P + grid + S, C) or (P + grid + S, C); the first P =
        num_prefix_tokens tokens (class, distillation, registers) and the last
        S = num_suffix_tokens tokens (BEiT's extra relative-position rows) are
        copied unchanged; the tokens between are a row-major grid, the last
        axis fastest: Hin x Win, or Tin x Hin x Win (video, volumes), or Lin.
    new_size: the new grid: (Hout, Wout), one int for a square grid, or a
        list of 1 or 3 ints for a grid of rank 1 (Lout,) or 3 (Tout, Hout,
        Wout); its length is the grid's rank.
    old_size: the old grid, as many ints as new_size (one int: every side);
        None infers it: a square (rank 2), a cube (rank 3), the whole grid
        (rank 1).
    mode, align_corners, antialias, scale_factor: as F.interpolate on the grid
        (scale_factor as with recompute_scale_factor=False; it must give
        floor(old * scale) == new_size; one float or one per axis). mode: one
        of vitpe_ext.MODES, the C kernels' mode table (F.interpolate's modes
        and "lanczos3"); "bilinear"/"bicubic" are linear/cubic along every
        axis at any rank, and F.interpolate's "linear" (rank 1) and
        "trilinear" (rank 3) are accepted too. On grids of rank 1 and 3 the
        cubic, lanczos3 and antialiased modes, which F.interpolate has only
        in 2-D, are the 2-D filter applied along each axis (README, Modes).
        Unset (None): the default mode (DEFAULT_MODE, bicubic), antialias
        False, or the profile's.
    profile: reproduce one library's resize exactly: "torchvision", "timm",
        "hf", "mae", "dinov2", "dinov2-reg", "big_vision" (vitpe_ext.PROFILES).
        It sets mode/align_corners/antialias/coordinate mapping/compute dtype;
        an explicit argument contradicting it raises ValueError.
    sample_positions: instead of the uniform mapping, where each output
        samples the old grid: one sequence per axis of new_size (outermost
        first) of that axis's new_size[i] positions, in old-grid units
        (old token i sits at i), non-decreasing; positions past the ends
        repeat the edge token (F.grid_sample's values with
        padding_mode="border", align_corners=True). For the point samplers
        (nearest and nearest-exact take the nearest token, bilinear, bicubic) without
        align_corners, antialias, scale_factor or profile. BEiT's
        geometric-progression resize of relative-position tables is one
        (vitpe_ext.timm.beit_sample_positions).

    Returns (B, P + Hout*Wout + S, C) (the new grid's tokens; or 2-D if given
    2-D), contiguous, same dtype and device; differentiable to any order.

    Bad arguments raise ValueError naming the argument (README, Errors).
    TorchScript: torch.jit.script compiles callers of this function; there
    it takes ints/lists for sizes and no profile (pass the settings).
    """
    if torch.jit.is_scripting():
        return _interpolate_scripted(pos_embed, new_size, old_size, num_prefix_tokens, mode, align_corners,
                                     antialias, scale_factor, profile, num_suffix_tokens, sample_positions)
    else:
        return _interpolate(pos_embed, new_size, old_size, num_prefix_tokens, mode, align_corners,
                            antialias, scale_factor, profile, num_suffix_tokens, sample_positions)


@torch.jit.unused
def _interpolate(pos_embed: torch.Tensor, new_size: Union[int, List[int]],
                 old_size: Optional[Union[int, List[int]]], num_prefix_tokens: int, mode: Optional[str],
                 align_corners: Optional[bool], antialias: Optional[bool],
                 scale_factor: Optional[Union[float, List[float]]], profile: Optional[str],
                 num_suffix_tokens: int = 0, sample_positions=None) -> torch.Tensor:
    _check_table(pos_embed)
    if profile is not None and sample_positions is not None:
        raise ValueError(f"interpolate_pos_embed: sample_positions replace the uniform mapping that profile "
                         f"{profile!r} reproduces; pass one or the other")
    if profile is not None:
        resolved = resolve(profile, mode, align_corners, antialias, scale_factor)
        squeeze = pos_embed.dim() == 2
        table = pos_embed.unsqueeze(0) if squeeze else pos_embed
        out = _interpolate_profile(table, new_size, old_size, num_prefix_tokens, resolved, num_suffix_tokens)
        return out.squeeze(0) if squeeze else out
    args = _op_args(new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor,
                    num_suffix_tokens, sample_positions)
    squeeze = pos_embed.dim() == 2
    if squeeze:
        pos_embed = pos_embed.unsqueeze(0)
    out = _forward(pos_embed, *args)
    return out.squeeze(0) if squeeze else out


def _interpolate_scripted(pos_embed: torch.Tensor, new_size: Union[int, List[int]],
                          old_size: Optional[Union[int, List[int]]], num_prefix_tokens: int,
                          mode: Optional[str], align_corners: Optional[bool], antialias: Optional[bool],
                          scale_factor: Optional[Union[float, List[float]]],
                          profile: Optional[str], num_suffix_tokens: int = 0,
                          sample_positions: Optional[List[List[float]]] = None) -> torch.Tensor:
    """The public function as TorchScript compiles it: the types are the
    annotations' (the compiler checks them), the op checks the rest, and
    autograd is the op's own registration."""
    if profile is not None:
        raise ValueError("interpolate_pos_embed: profile= is not available in TorchScript; pass mode, "
                         "align_corners and antialias (vitpe_ext.PROFILES lists each profile's)")
    squeeze = pos_embed.dim() == 2
    table = pos_embed.unsqueeze(0) if squeeze else pos_embed
    new: List[int] = [new_size, new_size] if isinstance(new_size, int) else new_size
    old: Optional[List[int]] = None
    if old_size is not None:
        old = [old_size] * len(new) if isinstance(old_size, int) else old_size
    factors: Optional[List[float]] = None
    if scale_factor is not None:
        factors = [scale_factor] * len(new) if isinstance(scale_factor, float) else scale_factor
    antialias_: bool = False if antialias is None else antialias
    positions: Optional[List[float]] = None
    if sample_positions is not None:
        if len(sample_positions) != len(new):
            raise ValueError("sample_positions must be a list of sequences, one per axis of new_size")
        flat: List[float] = []
        for i in range(len(new)):
            if len(sample_positions[i]) != new[i]:
                raise ValueError("sample_positions[i] must hold new_size[i] positions, one per output of that axis")
            flat.extend(sample_positions[i])
        positions = flat
    if mode is None:  # the schema's default mode (DEFAULT_MODE): TorchScript cannot read a global str
        out = torch.ops.vitpe.interpolate_pos_embed(table, new, old, num_prefix_tokens, align_corners=align_corners,
                                                    antialias=antialias_, scale_factor=factors,
                                                    num_suffix_tokens=num_suffix_tokens, sample_positions=positions)
    else:
        out = torch.ops.vitpe.interpolate_pos_embed(table, new, old, num_prefix_tokens, mode, align_corners,
                                                    antialias_, factors, num_suffix_tokens, positions)
    return out.squeeze(0) if squeeze else out


def interpolate_resolved(pos_embed: torch.Tensor, new_size: List[int], old_size: List[int], num_prefix_tokens: int,
                         mode: str, align_corners: Optional[bool], antialias: bool,
                         compute_dtype: Optional[torch.dtype], scale_offset: Optional[float],
                         cast_prefix: bool) -> torch.Tensor:
    """A resolved Profile's resize (resolve(...)'s fields) in types
    TorchScript reads: what interpolate_pos_embed(..., profile=) computes,
    for scripted callers such as a make_dynamic ViT. pos_embed is 3-D."""
    if new_size[0] == old_size[0] and new_size[1] == old_size[1]:
        return pos_embed.clone(memory_format=torch.contiguous_format)  # as _interpolate_profile
    factors: Optional[List[float]] = None
    if scale_offset is not None:  # DINOv2's offset mapping, as _interpolate_profile
        factors = [(new_size[0] + scale_offset) / old_size[0], (new_size[1] + scale_offset) / old_size[1]]
    table = pos_embed
    if compute_dtype is not None and compute_dtype != pos_embed.dtype:
        table = pos_embed.to(compute_dtype)
    out = torch.ops.vitpe.interpolate_pos_embed(table, new_size, old_size, num_prefix_tokens, mode, align_corners,
                                                antialias, factors)
    if out.dtype != pos_embed.dtype:
        narrowing = out.element_size() < pos_embed.element_size()  # compute dtypes are float32/float64
        out = out.to(pos_embed.dtype)
        if num_prefix_tokens > 0 and narrowing and not cast_prefix:
            out = torch.cat([pos_embed[:, :num_prefix_tokens], out[:, num_prefix_tokens:]], dim=1)
    return out
