"""timm drop-ins: resample_abs_pos_embed through vitpe, and patch() for timm's ViT.

resample_abs_pos_embed has timm's signature (timm 1.0.x, align_corners
included) and gives timm's numbers: F.interpolate's mode with
antialias=True by default, computed in float32 whatever the table's dtype
(float64 included) and cast back, prefix tokens untouched, the same
early return when the size already matches. Beyond it: tables with B > 1
and "lanczos3".

patch() makes timm's VisionTransformer use it: dynamic_img_size forwards,
set_input_size and checkpoint_filter_fn all call the name
`resample_abs_pos_embed` bound in timm's modules at import time, so the
patch rebinds it in every loaded timm module that holds timm's function.
It routes timm's relative-position-bias resizers the same way (rel_pos.py):
_simple, _levit (TinyViT, EfficientViT-MSRA) and BEiT's geometric
resize_rel_pos_bias_table (Swin, BEiT, MaxViT checkpoint filters and
set_input_size), the latter unless TIMM_USE_SCIPY_INTERP selects timm's
scipy spline.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import List, Optional

import torch

from ..op import interpolate_pos_embed
from ..op.function import as_size, interpolate_resolved
from ._patching import Patcher, PatchHandle
from . import rel_pos
from .rel_pos import (beit_sample_positions, resize_rel_pos_bias_table, resize_rel_pos_bias_table_levit,
                      resize_rel_pos_bias_table_simple)

__all__ = ["resample_abs_pos_embed", "resize_rel_pos_bias_table_simple", "resize_rel_pos_bias_table_levit",
           "resize_rel_pos_bias_table", "beit_sample_positions", "patch", "unpatch"]

_logger = logging.getLogger("vitpe_ext.timm")  # the path users import it by


def _is_exporting() -> bool:
    # timm skips the size-match early return under torch.export so the graph
    # is not specialised to the example size; do the same.
    if torch.jit.is_scripting():
        return False
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: List[int],
    old_size: Optional[List[int]] = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
    verbose: bool = False,
    align_corners: Optional[bool] = None,
) -> torch.Tensor:
    """timm.layers.resample_abs_pos_embed, computed by vitpe.

    posemb: (B, P + H*W, C) with P = num_prefix_tokens; old_size (H, W), or
    None for a square grid. Returns (B, P + h*w, C) in posemb's dtype, or
    posemb itself when the grid already has the requested size.
    """
    num_pos_tokens = posemb.shape[1]
    num_new_tokens = new_size[0] * new_size[1] + num_prefix_tokens
    if not _is_exporting() and num_new_tokens == num_pos_tokens:
        if old_size is not None and old_size[0] == new_size[0] and old_size[1] == new_size[1]:
            return posemb
        if old_size is None and new_size[0] == new_size[1]:
            return posemb

    if old_size is None:
        hw = int(math.sqrt(num_pos_tokens - num_prefix_tokens))  # timm: no perfect-square check
        grid = [hw, hw]
    else:
        grid = [old_size[0], old_size[1]]

    if torch.jit.is_scripting():
        # The "timm" profile's settings (PROFILES["timm"]: float32 compute,
        # prefix not cast), which TorchScript cannot read.
        out = interpolate_resolved(posemb, [new_size[0], new_size[1]], grid, num_prefix_tokens, interpolation,
                                   align_corners, antialias, torch.float32, None, False)
    else:
        # The "timm" profile: float32 compute, cast back, prefix not cast.
        out = interpolate_pos_embed(posemb, (as_size(new_size[0]), as_size(new_size[1])),
                                    (as_size(grid[0]), as_size(grid[1])), num_prefix_tokens, mode=interpolation,
                                    align_corners=align_corners, antialias=antialias, profile="timm")
    if not torch.jit.is_scripting() and verbose:
        shown = tuple(grid) if old_size is None else old_size  # as timm logs it
        _logger.info(f"Resized position embedding: {shown} to {new_size}.")
    return out


# -- patch ------------------------------------------------------------------------

_original = None  # timm's own function, once seen


def _timm_modules():
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "timm" or name.startswith("timm."))]


def _rebind(old, new) -> int:
    count = 0
    for module in _timm_modules():
        if getattr(module, "resample_abs_pos_embed", None) is old:
            setattr(module, "resample_abs_pos_embed", new)
            count += 1
    return count


def _restore() -> None:
    if _original is not None:
        _rebind(resample_abs_pos_embed, _original)
    rel_pos.restore_in_timm()


_patcher = Patcher(_restore)


def patch() -> PatchHandle:
    """Rebind timm's resample_abs_pos_embed to vitpe's in every loaded timm
    module (timm.layers, timm.layers.pos_embed, timm.models.vision_transformer,
    eva, deit, ...), until unpatch() / the end of the `with` block. Modules
    imported while patched bind vitpe's through timm.layers; unpatch() finds
    them too. resample_abs_pos_embed_nhwc (SAM-style tables) is not routed.
    resize_rel_pos_bias_table_simple, _levit and resize_rel_pos_bias_table
    are rebound too (handle.rebound_rel_pos counts them); the last stays
    timm's under TIMM_USE_SCIPY_INTERP=1 (scipy's spline)."""
    global _original
    import timm.layers  # noqa: F401  (loads timm.layers.pos_embed)
    import timm.models.vision_transformer  # noqa: F401  (the ViT the patch is for)
    current = sys.modules["timm.layers.pos_embed"].resample_abs_pos_embed
    if current is not resample_abs_pos_embed:
        _original = current
    _register_fx_leaf()
    handle = _patcher.opened()
    handle.rebound = _rebind(_original, resample_abs_pos_embed)  # module globals that pointed at timm's
    handle.rebound_rel_pos = rel_pos.route_in_timm()
    return handle


def unpatch() -> None:
    """Give every timm module its own resample_abs_pos_embed (and rel-pos resizers) back, whatever patches are open."""
    _patcher.unpatch_all()


def _register_fx_leaf() -> None:
    # timm marks its function an FX leaf for feature extraction
    # (create_feature_extractor traces the model); ours branches on sizes too.
    try:
        from timm.layers._fx import register_notrace_function
    except ImportError:
        return
    register_notrace_function(resample_abs_pos_embed)
