"""Position embeddings for any input resolution, resized per forward and cached.

timm (dynamic_img_size), DINOv2 and HF resize the table on every forward
and keep nothing (docs/anchors.md §7): at inference that is the same resize of
the same parameter, again and again. Here the resized table is kept per
(grid, dtype, device) while no gradient is wanted, and recomputed through
the op, with autograd, while one is.

    pe = DynamicPosEmbed(model_pos_embed, grid_size=(14, 14), profile="timm")
    x = tokens + pe((24, 32))        # (1, 1 + 24*32, C)

The cache must never hand back a table made from old weights. An entry is
stamped with the parameter it came from (a weak reference to the tensor
object, its data_ptr and its autograd version counter). Optimizer steps,
in-place edits, load_state_dict (in-place copy or assign=True) and .to()
all change one of them, and the cache is dropped. The one write it cannot
see is through `.data` (param.data.add_(...)): `.data` has its own version
counter. Call clear() after such an edit.

Nor can it see FSDP2's machinery (fully_shard, and replicate from
torch.distributed._composable.replicate_with_fsdp) or FSDP1: the table a
wrapped model's forward sees is the all-gathered parameter, rewritten in
place each forward with its version counter deliberately kept (torch's
_fsdp_collectives.py) and often at the same address, while optimizer
steps and checkpoint loads change only the shards. Such a table is
therefore never cached: FSDP1 and fully_shard mark every module they
manage (_is_fsdp_managed_module); replicate marks none, so the modules
FSDP2 wraps (FSDPModule subclasses, registered with torch's composable
state) are searched for the table itself, once per table object.
"""
from __future__ import annotations

import sys
import weakref
from collections import OrderedDict
from typing import Optional, Tuple

import torch
from torch import nn

from ..op import interpolate_pos_embed, resolve  # a global: tests count calls by patching it
from ..op.function import as_size, is_traced

__all__ = ["DynamicPosEmbed", "PosEmbedResizer"]


def _grid(size, name) -> Tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(as_size(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"{name} must be an int or two ints (height, width), got {size!r}")
    return size


def _held_by_fsdp2(table: torch.Tensor) -> bool:
    """Whether a module fully_shard or replicate wrapped holds the table as a
    parameter (during its forward: the gathered one). The wrapped module may
    be any ancestor of the table's owner."""
    fsdp, states = sys.modules.get("torch.distributed.fsdp"), sys.modules.get("torch.distributed._composable_state")
    if fsdp is None or states is None:
        return False  # never imported: nothing in this process is wrapped
    wrapped = [m for m in list(getattr(states, "_module_state_mapping", {}).keys()) if isinstance(m, fsdp.FSDPModule)]
    return any(p is table for module in wrapped for p in module.parameters())


class PosEmbedResizer:
    """Resize settings for one table plus the cache of its resized copies.

    Not a module: it holds no parameter, so a model can keep its table where
    its state_dict expects it (torchvision's encoder.pos_embedding) and pass
    it in on every call.

    old_size: the table's own grid. Resizing to it returns the table itself.
    mode/align_corners/antialias/profile: as vitpe_ext.interpolate_pos_embed.
    cache: False resizes on every call (for measuring what caching saves).
    max_entries: resolutions kept, least recently used dropped first.
    """

    def __init__(self, old_size, num_prefix_tokens: int = 1, *, mode: Optional[str] = None,
                 align_corners: Optional[bool] = None, antialias: Optional[bool] = None,
                 profile: Optional[str] = None, cache: bool = True, max_entries: int = 8):
        self.old_size = _grid(old_size, "old_size")
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.settings = {"mode": mode, "align_corners": align_corners, "antialias": antialias,
                         "profile": profile}
        if profile is not None:  # fail at construction, not at the first odd-sized input
            resolve(profile, mode, align_corners, antialias)
        self.cache = bool(cache)
        self.max_entries = int(max_entries)
        self._entries: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._stamp = None
        self._fsdp2 = None  # (weak reference to a table, whether FSDP2 holds it)

    def clear(self) -> None:
        self._entries.clear()
        self._stamp = None

    def scripted_settings(self) -> tuple:
        """The settings as vitpe_ext.op.function.interpolate_resolved takes
        them after the sizes: for TorchScript callers, which cannot read a
        profile."""
        p = resolve(self.settings["profile"], self.settings["mode"], self.settings["align_corners"],
                    self.settings["antialias"])
        return (p.mode, p.align_corners, p.antialias, p.compute_dtype, p.scale_offset, p.cast_prefix)

    def resize(self, table: torch.Tensor, new_size) -> torch.Tensor:
        """Through the op, every time (autograd follows)."""
        return interpolate_pos_embed(table, new_size, self.old_size, self.num_prefix_tokens, **self.settings)

    def _cacheable(self, table: torch.Tensor, owner: Optional[nn.Module]) -> bool:
        if not self.cache or (torch.is_grad_enabled() and table.requires_grad):
            return False
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False  # a cached constant would be baked into the graph
        if table.is_inference():
            return False  # inference tensors have no version counter
        # FSDP refills the table in place unseen (module doc)
        if getattr(owner, "_is_fsdp_managed_module", False):
            return False
        if self._fsdp2 is None or self._fsdp2[0]() is not table:
            # FSDP2 gathers into the same parameter object every step, and
            # wrapping a model replaces its parameters: one search per object
            self._fsdp2 = (weakref.ref(table), _held_by_fsdp2(table))
        return not self._fsdp2[1]

    def __call__(self, table: torch.Tensor, new_size, owner: Optional[nn.Module] = None) -> torch.Tensor:
        """The table resized to new_size; owner: the module the table is a
        parameter of (one FSDP1 or fully_shard manages is never cached)."""
        new_size = _grid(new_size, "new_size")
        if is_traced(new_size):
            # No branch on the size: it would guard a compiled or exported
            # program against one side (the native grid or the others). The op
            # leaves a finite table unchanged on its own grid.
            return self.resize(table, new_size)
        if new_size == self.old_size:
            return table  # what the model adds at its native size: the parameter itself
        if not self._cacheable(table, owner):
            return self.resize(table, new_size)
        stamp = (table.data_ptr(), table._version, tuple(table.shape), table.stride())
        if self._stamp is None or self._stamp[0]() is not table or self._stamp[1:] != stamp:
            self._entries.clear()
            self._stamp = (weakref.ref(table),) + stamp
        key = (new_size, table.dtype, table.device)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        out = self.resize(table, new_size)
        if torch.is_inference_mode_enabled():
            return out  # an inference tensor would fail later in an autograd-recording forward
        self._entries[key] = out
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return out


class DynamicPosEmbed(nn.Module):
    """A position-embedding parameter that answers for any patch grid.

    pos_embed: (1, P + H*W, C) (or any batch of tables), the learned table,
        wrapped into an nn.Parameter unless it is one already.
    grid_size: its grid (H, W). num_prefix_tokens: P (0 for tables that have
        no class-token slot, like timm's no_embed_class or big_vision).
    mode/align_corners/antialias/profile: how to resize (default bicubic).
    cache: keep resized tables while gradients are off (see module doc).

    forward(grid_size=None) -> (B, P + h*w, C): the table for that grid;
    the parameter itself for its own grid.
    """

    def __init__(self, pos_embed: torch.Tensor, grid_size, num_prefix_tokens: int = 1, *,
                 mode: Optional[str] = None, align_corners: Optional[bool] = None,
                 antialias: Optional[bool] = None, profile: Optional[str] = None,
                 cache: bool = True, max_entries: int = 8):
        super().__init__()
        self.grid_size = _grid(grid_size, "grid_size")
        self.num_prefix_tokens = int(num_prefix_tokens)
        if pos_embed.dim() not in (2, 3):
            raise ValueError(f"pos_embed must be (P + H*W, C) or (B, P + H*W, C), got shape {tuple(pos_embed.shape)}")
        expected = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        if pos_embed.shape[-2] != expected:
            raise ValueError(f"pos_embed has {pos_embed.shape[-2]} tokens but grid_size {self.grid_size} with "
                             f"num_prefix_tokens={self.num_prefix_tokens} needs {expected}")
        self.pos_embed = pos_embed if isinstance(pos_embed, nn.Parameter) else nn.Parameter(pos_embed)
        self.resizer = PosEmbedResizer(self.grid_size, self.num_prefix_tokens, mode=mode,
                                       align_corners=align_corners, antialias=antialias, profile=profile,
                                       cache=cache, max_entries=max_entries)

    def forward(self, grid_size=None) -> torch.Tensor:
        return self.resizer(self.pos_embed, self.grid_size if grid_size is None else grid_size, self)

    def clear_cache(self) -> None:
        """Drop the cached tables (needed only after a write through .data)."""
        self.resizer.clear()

    def extra_repr(self) -> str:
        set_ = {k: v for k, v in self.resizer.settings.items() if v is not None}
        return (f"grid_size={self.grid_size}, num_prefix_tokens={self.num_prefix_tokens}, "
                f"dim={self.pos_embed.shape[-1]}" + "".join(f", {k}={v!r}" for k, v in set_.items())
                + ("" if self.resizer.cache else ", cache=False"))
