"""torchvision drop-ins: its checkpoint resize through vitpe, and dynamic ViTs.

- interpolate_embeddings: torchvision.models.vision_transformer's function,
  same signature, same returned dict, same values (bicubic/bilinear with
  align_corners=True in the table's own dtype), same quirks: the caller's dict
  is written in place, reset_heads only acts when a resize happens, the same
  ValueErrors. Beyond it, without changing what an existing call returns:
  image_size/patch_size as (h, w), every vitpe mode (the ones torchvision
  rejects for align_corners=True run without it), any prefix-token count,
  non-square source grids (old_size=).
- patch(): make torchvision's own interpolate_embeddings this one.
- make_dynamic(model): a VisionTransformer that takes any H x W.
"""
from __future__ import annotations

import math
import sys
import types
import warnings
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..op import PROFILES, interpolate_pos_embed
from ..op.function import interpolate_resolved
from ._patching import Patcher, PatchHandle
from .dynamic import PosEmbedResizer
from .provenance import Provenance, ResizeStep, find_record, read_provenance, warn_mismatch

__all__ = ["interpolate_embeddings", "patch", "unpatch", "make_dynamic"]

_CONVENTION = PROFILES["torchvision"]  # torchvision's modes, corner-aligned, in the table's dtype


def _pair(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    try:
        h, w = value
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}") from None


def interpolate_embeddings(
    image_size,
    patch_size,
    model_state: "OrderedDict[str, torch.Tensor]",
    interpolation_mode: str = "bicubic",
    reset_heads: bool = False,
    *,
    num_prefix_tokens: int = 1,
    old_size=None,
) -> "OrderedDict[str, torch.Tensor]":
    """Resize model_state["encoder.pos_embedding"] for image_size, torchvision's way.

    image_size, patch_size: ints as in torchvision, or (h, w) pairs; the new
        grid is (h // ph, w // pw).
    model_state: a state dict; its "encoder.pos_embedding" (1, P + S, D) is
        replaced in place (torchvision does the same) when its size changes.
    interpolation_mode: any vitpe mode; torchvision's own (bilinear, bicubic)
        through the "torchvision" profile, corner-aligned, the others with
        their usual coordinate mapping.
    reset_heads: drop the "heads*" keys from the result, only when resized.
    num_prefix_tokens: P, the tokens copied unchanged (torchvision: 1).
    old_size: the checkpoint grid (h, w); None: a square one, as torchvision.
    """
    pos_embedding = model_state["encoder.pos_embedding"]
    n, seq_length, hidden_dim = pos_embedding.shape
    if n != 1:
        raise ValueError(f"Unexpected position embedding shape: {pos_embedding.shape}")

    image_hw, patch_hw = _pair(image_size, "image_size"), _pair(patch_size, "patch_size")
    new_grid = (image_hw[0] // patch_hw[0], image_hw[1] // patch_hw[1])
    new_seq_length = new_grid[0] * new_grid[1] + num_prefix_tokens

    grid_tokens = seq_length - num_prefix_tokens
    if old_size is None:
        # torchvision returns on a token-count match before looking at the
        # grid; a non-square request can match the count of a different grid.
        if new_seq_length == seq_length and new_grid[0] == new_grid[1]:
            return model_state
        side = int(math.sqrt(grid_tokens)) if grid_tokens >= 0 else 0
        if side * side != grid_tokens:
            raise ValueError(
                f"seq_length is not a perfect square! Instead got seq_length_1d * seq_length_1d = "
                f"{side * side} and seq_length = {grid_tokens}"
            )
        old_grid = (side, side)
    else:
        old_grid = _pair(old_size, "old_size")
        if old_grid[0] * old_grid[1] != grid_tokens:
            raise ValueError(f"old_size {old_grid} has {old_grid[0] * old_grid[1]} tokens but the table has "
                             f"{grid_tokens} after {num_prefix_tokens} prefix tokens")
    if new_grid == old_grid:
        return model_state

    if interpolation_mode in _CONVENTION.modes:
        resized = interpolate_pos_embed(pos_embedding, new_grid, old_grid, num_prefix_tokens,
                                        mode=interpolation_mode, profile=_CONVENTION.name)
    else:  # a mode torchvision lacks: its own coordinate mapping, as the op defines it
        resized = interpolate_pos_embed(pos_embedding, new_grid, old_grid, num_prefix_tokens,
                                        mode=interpolation_mode)
    model_state["encoder.pos_embedding"] = resized

    if reset_heads:
        model_state_copy: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for k, v in model_state.items():
            if not k.startswith("heads"):
                model_state_copy[k] = v
        model_state = model_state_copy
    return model_state


# -- patch: torchvision's own function routed here -------------------------------

_original = None   # torchvision's own function, once seen


def _restore() -> None:
    if _original is not None:
        import torchvision.models.vision_transformer as tv_vit
        tv_vit.interpolate_embeddings = _original


def patch() -> PatchHandle:
    """Route torchvision.models.vision_transformer.interpolate_embeddings
    through vitpe until the returned handle's unpatch() (or the end of the
    `with` block). Callers that bound the function before (from ... import)
    keep torchvision's."""
    global _original
    import torchvision.models.vision_transformer as tv_vit
    if tv_vit.interpolate_embeddings is not interpolate_embeddings:
        _original = tv_vit.interpolate_embeddings
    tv_vit.interpolate_embeddings = interpolate_embeddings
    return _patcher.opened()


def unpatch() -> None:
    """Put torchvision's own interpolate_embeddings back, whatever patches are open."""
    _patcher.unpatch_all()


_patcher = Patcher(_restore)


# -- make_dynamic: any input resolution --------------------------------------------

def _patch_grid(x: torch.Tensor, p: int, pad: bool) -> Tuple[int, int]:
    """The patch grid of images x: H/p x W/p, rounded up with pad=True,
    else H and W must be multiples of the patch size p."""
    h, w = x.shape[-2], x.shape[-1]
    if pad:  # not -(-h // p): ONNX's integer Div truncates, which makes that h // p
        return (h + p - 1) // p, (w + p - 1) // p
    if h % p or w % p:
        raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p}; "
                         f"crop/resize it, or make_dynamic(model, pad=True)")
    return h // p, w // p


def _pad_to_patch(x: torch.Tensor, p: int, pad: bool) -> torch.Tensor:
    """x padded bottom/right to its patch grid (pad=True, timm's
    dynamic_img_pad), or checked to fill it."""
    gh, gw = _patch_grid(x, p, pad)
    if pad:
        # Padded even by zero rows (a cheap copy): a branch on the amount would
        # tie an exported program to the example's case. The amount is written
        # from the grid, so the padded size is visibly grid * p to the tracer.
        x = F.pad(x, (0, gw * p - x.shape[-1], 0, gh * p - x.shape[-2]))
    return x


# torch.jit.script compiles an instance's own method only when it is exported,
# and torch.jit.trace refuses an exported method that the class defines too: so
# the forward calls this one, and _process_input (the class's name) calls it.
@torch.jit.export
def _patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision's _process_input without the image-size asserts."""
    x = self.conv_proj(_pad_to_patch(x, self.patch_size, self._vitpe_pad))  # (n, hidden_dim, h/p, w/p)
    return x.flatten(2).permute(0, 2, 1)


def _dynamic_process_input(self, x: torch.Tensor) -> torch.Tensor:
    """make_dynamic's _process_input, for callers other than the forward."""
    return self._vitpe_tokens(x)


def _dynamic_forward(self, x: torch.Tensor) -> torch.Tensor:
    """VisionTransformer.forward + Encoder.forward with the position table
    resized to this input's grid."""
    p = self.patch_size
    grid = _patch_grid(x, p, self._vitpe_pad)
    x = self._vitpe_tokens(x)
    n = x.shape[0]
    x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
    encoder = self.encoder
    if torch.jit.is_scripting():  # the resizer (a cache) is Python; the compiler gets its settings
        native = self._vitpe_grid
        if grid[0] == native and grid[1] == native:
            table = encoder.pos_embedding
        else:
            mode, align_corners, antialias, compute_dtype, scale_offset, cast_prefix = self._vitpe_scripted
            table = interpolate_resolved(encoder.pos_embedding, [grid[0], grid[1]], [native, native], 1, mode,
                                         align_corners, antialias, compute_dtype, scale_offset, cast_prefix)
    else:
        table = self._vitpe_resizer(encoder.pos_embedding, grid, encoder)
    x = x + table
    x = encoder.ln(encoder.layers(encoder.dropout(x)))
    return self.heads(x[:, 0])


def _clear_cache(self) -> None:
    """Drop the resized tables this model keeps for inference. Needed only
    after writing the table through `.data` (encoder.pos_embedding.data...),
    which bypasses the version counter the cache watches."""
    self._vitpe_resizer.clear()


_TABLE_KEY = "encoder.pos_embedding"


def _hint(step: ResizeStep) -> str:
    args = step.arguments()
    if args.get("sincos"):
        return "it is a fixed sin-cos table, which make_dynamic interpolates instead of regenerating"
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items()) or "profile=None"
    return f"make_dynamic(model, {shown}) resizes it the way it was made"


def _check_record(model, record: Optional[Provenance], stacklevel: int) -> None:
    if record is not None:
        warn_mismatch(record, model._vitpe_step, _TABLE_KEY, _hint(record.last), "make_dynamic resizes with",
                      stacklevel=stacklevel)


def _load_caller_level() -> int:
    """warnings stacklevel, counted from _check_loaded_record, of the frame
    that called load_state_dict (torch calls the hook a few frames down)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and not (frame.f_code.co_name == "load_state_dict"
                                     and "torch" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level + 1 if frame is not None else 2


def _check_loaded_record(model, state_dict, prefix, *_):
    """load_state_dict pre-hook: a state dict with a vitpe record for the
    table warns if make_dynamic's settings differ from the recorded ones."""
    try:
        records = read_provenance(state_dict)
    except ValueError as exc:
        warnings.warn(f"ignoring the state dict's resize record: {exc}", stacklevel=_load_caller_level())
        return
    record = find_record(records, prefix + _TABLE_KEY)
    if record is not None and record.grid == model._vitpe_resizer.old_size:  # else stale: another table's
        _check_record(model, record, stacklevel=2 + _load_caller_level())


def make_dynamic(model, pad: bool = False, *, profile: Optional[str] = "torchvision",
                 mode: Optional[str] = None, align_corners: Optional[bool] = None,
                 antialias: Optional[bool] = None, cache: bool = True, provenance=None):
    """Let a torchvision VisionTransformer take any H x W (in place; returns it).

    H and W must be multiples of the patch size, or with pad=True are
    zero-padded bottom/right to the next multiple. The position table
    (still model.encoder.pos_embedding, so state dicts are unchanged) is
    resized to the input's grid through the op on every forward: with
    autograd when training, from a cache when gradients are off (see
    vitpe_ext.DynamicPosEmbed). The native size uses the table itself.

    profile/mode/...: how to resize; the default "torchvision" profile gives
    what interpolate_embeddings would give for that size (bicubic,
    align_corners=True).

    With gradients off, resized tables are cached per (grid, dtype, device)
    and dropped when the table changes (optimizer steps, in-place edits,
    load_state_dict), as in DynamicPosEmbed. A write through `.data` is not
    seen: call model.clear_cache() after one.

    A table resized by `vitpe resize` carries a record of how it was made
    (vitpe_ext.integrations.provenance). When the settings here differ from
    it (say the table was made with bicubic + antialias, and this resizes
    with torchvision's corner-aligned bicubic), a ProvenanceWarning says so:
    for a state dict loaded after make_dynamic (model.load_state_dict), and
    for provenance= (the state dict or checkpoint loaded before, or a
    Provenance). A record for another grid than the model's raises
    ValueError.
    """
    from torchvision.models.vision_transformer import VisionTransformer
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"make_dynamic expects a torchvision VisionTransformer, got {type(model).__name__}")
    grid = model.image_size // model.patch_size
    tokens = model.encoder.pos_embedding.shape[1]
    if tokens != grid * grid + 1:
        raise ValueError(f"encoder.pos_embedding has {tokens} tokens, but image_size {model.image_size} and "
                         f"patch_size {model.patch_size} give 1 + {grid}*{grid}; load matching weights first")
    model._vitpe_pad = bool(pad)
    model._vitpe_resizer = PosEmbedResizer((grid, grid), 1, profile=profile, mode=mode,
                                           align_corners=align_corners, antialias=antialias, cache=cache)
    model._vitpe_grid = grid  # these two for torch.jit.script, which compiles the forward below
    model._vitpe_scripted = model._vitpe_resizer.scripted_settings()
    model._vitpe_tokens = types.MethodType(_patch_tokens, model)
    model._process_input = types.MethodType(_dynamic_process_input, model)
    model.forward = types.MethodType(_dynamic_forward, model)
    model.clear_cache = types.MethodType(_clear_cache, model)
    model._vitpe_step = ResizeStep.from_settings((grid, grid), (grid, grid), 1, profile=profile, mode=mode,
                                                 align_corners=align_corners, antialias=antialias)
    if getattr(model, "_vitpe_record_hook", None) is not None:
        model._vitpe_record_hook.remove()  # made dynamic again: one check per load, with the new settings
    model._vitpe_record_hook = model.register_load_state_dict_pre_hook(_check_loaded_record)
    if provenance is not None:
        record = provenance if isinstance(provenance, Provenance) else find_record(read_provenance(provenance),
                                                                                   _TABLE_KEY)
        if record is not None and record.grid != (grid, grid):
            raise ValueError(f"provenance describes a {record.grid[0]}x{record.grid[1]} table, but this model's "
                             f"{_TABLE_KEY} is {grid}x{grid}: it is another table's record")
        _check_record(model, record, stacklevel=4)
    return model
